"""The simulated runtime: loads an .aimcb binary and executes it (``load(path).run(feeds)``)."""

from aimcc.runtime.executor import Executable, load

__all__ = ["Executable", "load"]
