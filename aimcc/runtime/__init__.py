"""The simulated runtime: loads an .aimcb binary and executes it (``load(path).run(feeds)``)."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aimcc.runtime.executor import Executable, load

__all__ = ["Executable", "load"]


def __getattr__(name: str) -> Any:
    """The executor is imported on first use: the compiler imports the op library
    (``aimcc.runtime.onnx_ops``) without the executor and tile simulator."""
    if name in __all__:
        from aimcc.runtime import executor

        return getattr(executor, name)
    raise AttributeError(f"module 'aimcc.runtime' has no attribute '{name}'")
