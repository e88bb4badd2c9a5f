"""The one way this package writes files and folders: never half-written.

A file is written to a temporary sibling, flushed to disk, then moved over its destination (`atomic_save` and its
text/bytes shorthands). A folder is filled as a temporary sibling that then replaces the destination
(`staged_folder`); a folder in the way is replaced only when it is empty or holds the marker file of an earlier
write of the same kind. On any failure the previous file or folder is left as it was and no temporary remains.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a folder (its entries) to disk; a no-op where the platform cannot open folders."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(path: str | os.PathLike, save: Callable[[str], None]) -> Path:
    """Calls `save(tmp_path)` on a temporary sibling of `path`, then moves it over `path`; cleans up on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save(tmp)
        with open(tmp, "rb+") as handle:  # on disk before the rename, so a crash cannot leave an empty file
            os.fsync(handle.fileno())
        # mkstemp creates 0600; keep the permissions of the file being replaced, or the usual 0644.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` (UTF-8, `\\n` line ends) to `path` atomically. Raises `TypeError` before touching anything
    when `text` is not a string."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")

    def save(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)

    return atomic_save(path, save)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return atomic_save(path, lambda tmp: Path(tmp).write_bytes(bytes(data)))


def save_npy(path: str | os.PathLike, array) -> None:
    """`numpy.save` to exactly `path` (no `.npy` appended), without pickles."""
    import numpy as np

    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike, marker: str, *, error: type[Exception] = FileExistsError,
                  durable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out_dir` to fill; on success it replaces `out_dir` (never half-written).

    An existing `out_dir` is replaced only when it is empty or holds `marker` (an earlier write of the same kind);
    otherwise `error` is raised before anything is written. With `durable`, every file is flushed to disk before
    the swap. The swap is two renames (old folder to a backup name, new one into place), so a concurrent reader can
    see no folder for an instant, but never a partially written one."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / marker).exists())):
        raise error(f"{out_dir} exists and is not an earlier export (no {marker}); choose another folder")
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    suffix = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = parent / f".{out_dir.name}.tmp-{suffix}"
    tmp.mkdir()
    try:
        yield tmp
        if durable:
            for path in tmp.rglob("*"):
                fsync_path(path)
            fsync_path(tmp)
        if out_dir.exists():
            backup = parent / f".{out_dir.name}.old-{suffix}"
            os.rename(out_dir, backup)
            try:
                os.rename(tmp, out_dir)
            except BaseException:
                os.rename(backup, out_dir)
                raise
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
        if durable:
            fsync_path(parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
