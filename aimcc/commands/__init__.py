"""One module per `aimcc` command, each with ``parser()`` and ``main(argv)``; shared helpers."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from aimcc.arch import DEFAULT_ARCH, preset_names
from aimcc.errors import AimccError, first_line

if TYPE_CHECKING:  # numpy and the runtime (torch) are imported where used: --help stays fast
    import numpy as np

    from aimcc.runtime import Executable

_IMPORTED = time.perf_counter()

TIME_UNITS = {
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "month": 2629800.0,
    "y": 31557600.0,
}


MAX_TIME_S = 1000 * TIME_UNITS["y"]  # beyond any device's retention; the drift model is a fit
MAX_SEED = 2**63 - 1  # torch and numpy seeds


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``aimcc: error: ...``, exit 1), like every other error."""

    def error(self, message: str) -> NoReturn:
        raise AimccError(f"{self.prog}: {message} (see '{self.prog} --help')")


def parse_time(text: str) -> float:
    """'1d', '10y', '3600', '1month' -> seconds (finite, at most 1000 years)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z]*)\s*", text.lower())
    if not match or match.group(2) not in ("", *TIME_UNITS):
        raise AimccError(
            f"bad time '{text}': use a number with s, min, h, d, w, month or y (e.g. 1d, 10y)"
        )
    seconds = float(match.group(1)) * TIME_UNITS.get(match.group(2) or "s", 1.0)
    if not seconds <= MAX_TIME_S:
        raise AimccError(f"bad time '{text}': at most 1000 years ({MAX_TIME_S:.4g} s)")
    return seconds


def seed(text: str) -> int:
    """An argparse type: a seed in [0, 2^63 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed '{text}' is not an integer") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed {value} is outside 0 .. 2^63-1")
    return value


def output_file(text: str) -> Path:
    """An argparse type: a file path that can be written (checked before any work starts)."""
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("empty output path")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory (name a file)")
    _writable_folder(path.parent, text)
    return path


def output_dir(text: str) -> Path:
    """An argparse type: a folder to write into (made if missing; its parent must exist)."""
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("empty output path")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    _writable_folder(path if path.is_dir() else path.parent, text)
    return path


def _writable_folder(folder: Path, text: str) -> None:
    """Missing folders are made when writing; the nearest existing one must be a writable
    directory (not a file)."""
    folder = folder if str(folder) else Path(".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: folder {folder} is not writable")


def random_inputs(exe: Executable, seed: int) -> dict[str, np.ndarray]:
    """Random feeds: ids below the size of the table they index, masks of ones, floats normal."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bounds = exe.index_bounds()
    feeds = {}
    for spec in exe.inputs:
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        if spec["name"] in bounds:
            feeds[spec["name"]] = rng.integers(0, bounds[spec["name"]], shape).astype(dtype)
        elif dtype.kind in "iub":
            feeds[spec["name"]] = np.ones(shape, dtype)
        else:
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dtype)
    return feeds


def read_npz(path: Path) -> dict:
    import numpy as np

    if not path.is_file():
        raise AimccError(f"{path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise AimccError(
                f"{path}: a single array, not an .npz archive of named inputs "
                "(save them with numpy.savez(path, name=array, ...))"
            )
        with data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise AimccError(f"{path}: not a readable .npz file ({first_line(exc)})") from None


def warn(message: str) -> None:
    """One line on stderr for an option that is accepted but has no effect."""
    print(f"aimcc: warning: {message}", file=sys.stderr)


def process_seconds() -> float:
    """Wall time since this process started (from /proc on Linux; elsewhere since the commands
    were imported), so reported times include start-up, as a user's stopwatch does."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


def shows_progress(quiet: bool = False) -> bool:
    """Progress goes to stderr only for a person watching: a terminal, and not --quiet."""
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def status(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner line on stderr naming what runs now (``update(text)``), cleared at the end;
    a no-op when disabled, so piped output carries no progress noise."""
    if not enabled:
        yield lambda text: None
        return
    from rich.console import Console

    with Console(stderr=True).status("starting") as live:
        yield lambda text: live.update(text)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--arch, --set and --input-shape: how a model is compiled, for every command that does."""
    p.add_argument(
        "--arch",
        help=f"architecture preset ({', '.join(preset_names())}) or a .toml file "
        f"(default {DEFAULT_ARCH}; textual IR: the one it records)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an architecture value, e.g. --set tile.count=256 (repeatable)",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D0xD1...",
        help="static shape for a dynamic input (repeatable); dims sharing a symbolic "
        "name follow; default: batch 1, other dynamic dims 128",
    )
