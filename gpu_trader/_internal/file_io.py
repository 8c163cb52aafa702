"""Safe file access shared by everything that reads or writes a user-named file (vector
index files, bench JSON and reports).

* :func:`file_name`: a ``str``/``bytes``/``os.PathLike`` path as a checked ``str``;
* :func:`open_regular`: open for reading without blocking (a FIFO would block a plain
  open) and refuse anything but a regular file;
* :func:`regular_target`: the file a path names through symbolic links (the link is
  kept when the file is replaced), refusing an existing non-regular file;
* :func:`replace_atomically`: write a temporary file next to the target (created with
  mode ``0o666`` less the umask, or given the permission bits of the file it replaces),
  fsync it, rename it over the target and fsync the directory, so a crash never leaves a
  half-written file under the target name and a completed write survives one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from typing import BinaryIO, Callable

__all__ = ["file_name", "open_regular", "regular_target", "replace_atomically"]


def file_name(path) -> str:
    """``path`` (``str``, ``bytes`` or ``os.PathLike``) as a ``str`` file name: ``TypeError`` for
    anything else, ``ValueError`` for an empty name or one holding a NUL character."""
    try:
        name = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"path must be a str, bytes or os.PathLike file name, got {type(path).__name__}") from None
    if not name or "\0" in name:
        raise ValueError(f"path must be a non-empty file name without NUL characters, got {name!r}")
    return name


def open_regular(name: str, error: Callable[[str], BaseException]) -> BinaryIO:
    """``name`` opened for binary reading without blocking; ``error(message)`` is raised
    unless it is a regular file (``OSError`` where it cannot be opened at all)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(name, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{name}: not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def regular_target(path) -> str:
    """The file ``path`` names, through symbolic links; ``ValueError`` for an existing
    non-regular file (see :func:`file_name` for the accepted path types)."""
    name = file_name(path)
    target = os.path.realpath(name)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"path {name!r} exists and is not a regular file")
    return target


def replace_atomically(target: str, write_body: Callable[[BinaryIO], object]) -> None:
    """Write a temporary file next to ``target`` with ``write_body(fh)`` (binary), fsync it,
    rename it over ``target`` and fsync the directory; the temporary file is removed on any
    failure, which leaves ``target`` as it was. ``target`` is a resolved file name (see
    :func:`regular_target`); ``OSError`` where it cannot be written."""
    directory = os.path.dirname(target)
    mode = _existing_mode(target)
    fd, tmp = _create_temporary(directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            write_body(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _existing_mode(target: str) -> int | None:
    """Permission bits of the file about to be replaced (None: there is none)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return None


def _create_temporary(directory: str) -> tuple[int, str]:
    """A new file in ``directory`` opened for writing, created with mode ``0o666`` (the
    kernel applies the umask, as for any new file). Returns ``(fd, path)``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".gpu-trader-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - a 64-bit random name collided
            continue


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX; Windows cannot open a directory, and a
    file system that cannot sync a directory says EINVAL: nothing more can be done there)."""
    if os.name == "nt":  # pragma: no cover
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)
