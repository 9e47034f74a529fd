"""Atomic file writes: a failure or interruption leaves nothing half-written on disk."""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

import numpy as np


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path``; rename it into place only on success.

    An existing ``path`` is removed just before the rename: renaming over a file makes ext4
    flush the new file's data first (its replace-via-rename safeguard), which took longer than
    writing a 90 MB binary. Readers may miss the file for that instant, never see it partial.
    The file gets mode 0666 minus the umask, as open() would give it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600
        with os.fdopen(fd, mode) as f:
            yield f
        if path.is_file() and not path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only set it, and setting it
    to read it races with other threads creating files); /proc/self/status has it on Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path) as f:
        np.savez(f, **arrays)


DIRECT_MIN_BYTES = 256 << 20  # below this, buffered writes are as fast and simpler


class StreamWriter:
    """Writes ``(offset, bytes)`` regions in increasing offset order into an open file, the
    gaps as zeros. Large files go through direct I/O (``O_DIRECT``) from a page-aligned
    staging buffer: a compiled model's weights are GBs written once, and buffered writes of
    that much cost 3-4x the device time here (page-cache reclaim and dirty throttling, all
    system time; bench/scale.py measured 10.9 s against 3.6 s for 4.4 GB); the file's pages
    are then not cached twice beside the model's own. Falls back to buffered writes where
    the file system refuses direct I/O (tmpfs)."""

    STAGE = 16 << 20

    def __init__(self, f: IO[bytes], size: int):
        self.file, self._pos, self._fd = f, 0, -1
        if size >= DIRECT_MIN_BYTES and hasattr(os, "O_DIRECT"):
            f.flush()
            fd = f.fileno()
            self._flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, self._flags | os.O_DIRECT)
                self._fd = fd
            except OSError:
                pass
        if self._fd >= 0:
            # Two page-aligned stages (as O_DIRECT needs): one fills while a thread writes the
            # other (pwrite releases the GIL), so copying overlaps the device's time. They are
            # filled through numpy, whose copies release the GIL too (slice assignment into an
            # mmap does not), so a thread streaming weights leaves the passes their interpreter.
            self._maps = [mmap.mmap(-1, self.STAGE) for _ in range(2)]
            self._stages = [np.frombuffer(m, np.uint8) for m in self._maps]
            self._stage = 0  # the one filling, with the file's bytes from _base
            self._base = self._filled = 0
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="aimcc-write")
            self._pending: Future[None] | None = None

    def write(self, offset: int, data: memoryview | bytes) -> None:
        if offset < self._pos:
            raise ValueError("StreamWriter: regions must come in increasing offset order")
        data = memoryview(data).cast("B")
        if self._fd < 0:
            self.file.seek(offset)
            self.file.write(data)
            self._pos = offset + len(data)
            return
        self._stage_bytes(None, offset - self._pos)  # the gap: zeros
        if offset % mmap.PAGESIZE or _address(data) % mmap.PAGESIZE or len(data) < self.STAGE:
            self._stage_bytes(data, len(data))
        else:
            # Page-aligned in memory and in the file (a mapped model's weights): written from
            # where they are, in one call without the GIL; only the tail goes through a stage.
            if self._filled:
                self._flush()  # whole pages: the stage ends at ``offset``
            self._wait()
            bulk = len(data) // mmap.PAGESIZE * mmap.PAGESIZE
            _pwrite_all(self._fd, data, bulk, offset)
            self._base = offset + bulk
            self._stage_bytes(data[bulk:], len(data) - bulk)
        self._pos = offset + len(data)

    def _stage_bytes(self, data: memoryview | None, n: int) -> None:
        """Copy ``n`` bytes of ``data`` (None: zeros) into the stage, flushing it when full."""
        done = 0
        while done < n:
            take = min(self.STAGE - self._filled, n - done)
            part = self._stages[self._stage][self._filled : self._filled + take]
            if data is None:
                part[:] = 0
            else:
                np.copyto(part, np.frombuffer(data[done : done + take], np.uint8))
            self._filled, done = self._filled + take, done + take
            if self._filled == self.STAGE:
                self._flush()

    def _flush(self) -> None:
        """Hand the stage to the writing thread (to be written at ``_base``, padded with zeros
        to whole pages: only the last flush pads, :meth:`close` truncates it away) and fill
        the other stage once its own write is done."""
        length = -(-self._filled // mmap.PAGESIZE) * mmap.PAGESIZE
        stage = self._stages[self._stage]
        stage[self._filled : length] = 0
        self._wait()
        self._pending = self._pool.submit(_pwrite_all, self._fd, stage, length, self._base)
        self._stage = 1 - self._stage
        self._base += self._filled
        self._filled = 0

    def _wait(self) -> None:
        """Until the write in flight (if any) is done."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def close(self, size: int) -> None:
        """Flush and make the file ``size`` bytes long (zeros after the last region)."""
        if self._fd >= 0:
            if self._filled:
                self._flush()
            self._wait()
            self._pool.shutdown()
            fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags)  # buffered again, for the header
            self._stages.clear()
            for stage in self._maps:
                stage.close()
            self._fd = -1
        self.file.truncate(size)


def _address(view: memoryview) -> int:
    return np.frombuffer(view, np.uint8).ctypes.data if len(view) else 0


def _pwrite_all(fd: int, buffer: np.ndarray | memoryview, length: int, offset: int) -> None:
    with memoryview(buffer) as whole:
        view = whole[:length]
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
