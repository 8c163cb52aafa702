"""Output files of the bench CLI (``--json``, ``--report``): checked before a run, written atomically.

A benchmark run takes minutes, so its output paths are checked before it starts
(:func:`output_problem`): the target must not be a directory or another non-file,
and its directory must exist and accept a new file (tested by creating and removing
one, which is what the write needs). The write itself (:func:`write_text_atomic`)
goes through :func:`gpu_trader._internal.file_io.replace_atomically`: a temporary file in the
same directory, flushed to disk, then renamed over the target, so a failure never
leaves a truncated file; a symbolic link is followed (its target is replaced, the link
kept) and an existing file keeps its permission bits.
"""
from __future__ import annotations

import os
import stat
import tempfile

from .._internal.file_io import regular_target, replace_atomically

__all__ = ["output_problem", "write_text_atomic"]


def output_problem(path: str) -> str | None:
    """Why ``path`` cannot be written as an output file, or ``None`` when it can."""
    if not path or "\0" in path:
        return f"{path!r} is not a valid file name"
    target = os.path.realpath(path)
    if os.path.isdir(target):
        return f"{path!r} is a directory"
    if os.path.exists(target) and not stat.S_ISREG(os.stat(target).st_mode):
        return f"{path!r} is not a regular file"
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        return f"directory of {path!r} does not exist"
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        return f"cannot create files in the directory of {path!r} ({exc.strerror or exc})"
    return None


def write_text_atomic(path: str, text: str) -> None:
    """Replace the file at ``path`` (a link: its target) by ``text`` (UTF-8) in one rename
    (:func:`gpu_trader._internal.file_io.replace_atomically`). Raises ``OSError`` when the file
    cannot be written; the old content is then intact."""
    data = text.encode("utf-8")
    replace_atomically(regular_target(path), lambda fh: fh.write(data))
