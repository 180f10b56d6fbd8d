"""A disk that fills, for in-process tests: writes that run out of room part-way.

`Disk.room` is the bytes left (None: no limit). A write through `Disk.stream` (a
buffered file, as `open` gives) or, once `Disk.patch_os_write` is on, through
`os.write` to a file under a folder, takes from it; when the room runs out the write
stops short and the next one raises ENOSPC — what a full filesystem does, so the file
is left with a torn line and a buffered stream keeps what it could not write. The
real thing, a full tmpfs, is in tests/integration/test_full_disk.py.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import BinaryIO

import pytest

__all__ = ["Disk"]


class Disk:
    """The room left on a pretend disk, and files whose writes take from it."""

    def __init__(self, room: int | None = None) -> None:
        self.room = room
        self.refused = 0  # writes refused with ENOSPC

    def fill(self, room: int) -> None:
        """Leave only `room` bytes."""
        self.room = room

    def free(self) -> None:
        self.room = None

    def take(self, wanted: int) -> int:
        """How many of `wanted` bytes fit; ENOSPC if none does."""
        if self.room is None:
            return wanted
        if self.room == 0:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fits = min(wanted, self.room)
        self.room -= fits
        return fits

    def stream(self, path: str | Path, mode: str) -> BinaryIO:
        """`open(path, mode)` (binary) with its writes on this disk."""
        raw = _Raw(self, path, mode.replace("b", ""))
        if "+" in mode:
            return io.BufferedRandom(raw)
        return io.BufferedWriter(raw)

    def patch_os_write(self, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        """Put `os.write` to files under `folder` on this disk (others write as ever)."""
        real = os.write
        prefix = os.path.realpath(folder) + os.sep

        def write(fd: int, data: bytes | memoryview) -> int:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if not target.startswith(prefix):
                return real(fd, data)
            return real(fd, memoryview(data)[: self.take(len(data))])

        monkeypatch.setattr(os, "write", write)


class _Raw(io.FileIO):
    def __init__(self, disk: Disk, path: str | Path, mode: str) -> None:
        super().__init__(path, mode)
        self._disk = disk

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        return super().write(view[: self._disk.take(len(view))]) or 0
