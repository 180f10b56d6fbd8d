"""Small filesystem helpers: durable names, and the roots a server's jobs may touch."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from velostream.errors import ConfigurationError

__all__ = ["PathRoots", "client_folder", "fsync_directory", "write_all"]

_GLOB = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class PathRoots:
    """The folders a server's jobs may read and write under (`--allow-path`).

    A path is checked after `~`, `..` and symbolic links are resolved, so neither a
    `../../etc/passwd` nor a link planted under a root leads out of it. A relative path
    is taken from the server's working directory, as connectors open it; a pattern is
    checked by the folder before its first wildcard.
    """

    roots: tuple[Path, ...]

    @classmethod
    def of(cls, paths: Iterable[str | Path]) -> PathRoots:
        return cls(tuple(dict.fromkeys(Path(p).expanduser().resolve() for p in paths)))

    def check(self, path: str | Path, what: str) -> Path:
        """`path` resolved; ConfigurationError naming it and the roots when outside them."""
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = Path.cwd() / candidate
        parts = candidate.parts
        fixed = next((i for i, part in enumerate(parts) if _GLOB & set(part)), len(parts))
        resolved = Path(*parts[:fixed]).resolve() if fixed else candidate.resolve()
        if not any(resolved == root or resolved.is_relative_to(root) for root in self.roots):
            listed = ", ".join(str(root) for root in self.roots) or "none"
            raise ConfigurationError(
                f"{what} {str(path)!r} is outside the server's roots ({listed}); "
                "the operator can add one with --allow-path"
            )
        return resolved


def client_folder(folder: str, roots: PathRoots | None) -> Path:
    """The folder a client sent for its application's relative paths (a deploy's
    `base_dir`: the folder of its file), resolved; ConfigurationError unless it is an
    absolute path to a folder here, under `roots` (when given).

    The roots are checked first, so that a refusal says nothing of what lies outside them.
    """
    if not Path(folder).is_absolute():
        raise ConfigurationError(
            f"base_dir {folder!r} is not an absolute path: send the application file's "
            "folder as the server sees it"
        )
    elsewhere = "; `velo-cli deploy --server-paths` sends none (relative paths are then the "
    elsewhere += "server's working directory's)"
    try:
        path = Path(folder).resolve() if roots is None else roots.check(folder, "base_dir")
    except ConfigurationError as exc:
        raise ConfigurationError(exc.message + elsewhere) from None
    if not path.is_dir():
        raise ConfigurationError(f"base_dir {folder!r} is not a folder on the server{elsewhere}")
    return path


def fsync_directory(directory: str | Path) -> None:
    """Make the names in `directory` durable: a new file, a rename, a removal.

    fsync on a file makes its bytes durable, not its name; after a crash, a file
    created or renamed without this may be missing although its data was synced.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (os.write may write less) and fsync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)
