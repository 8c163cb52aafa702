"""The on-disk format of a :class:`gpu_trader.vectors.VectorIndex`: one file, written atomically.

Layout (little-endian)::

    magic        8 bytes  b"GTVECIDX"
    header_len   uint64   bytes of the JSON header
    header_crc   uint32   CRC-32 of the JSON header
    header       JSON     {"format_version", "config", "sections": [...]}
    sections     raw      each at a 64-byte aligned offset; the header lists
                          name, offset, nbytes, dtype, shape and CRC-32 of each

Sections: ``vectors`` (``(n, dim)`` float32 or int8), ``scales`` (int8 storage only),
``norms``, ``ids`` (int64), ``metadata`` (UTF-8 JSON of the metadata columns) and ``ann``
(the approximate index's own serialization, possibly empty). :func:`write` writes a
temporary file in the target's directory, fsyncs it and renames it over the target, so a
crash never leaves a half-written index under the target name. :func:`read` checks the
magic, the format version, the header checksum, that every section lies inside the file
(a truncated file is refused) and every section's checksum (a corrupt one is refused),
all before returning anything; with ``mmap=True`` the vectors are a read-only
``numpy.memmap`` (the checksum pass streams through the file in 16 MiB chunks).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from typing import Any

import numpy as np

__all__ = ["FORMAT_VERSION", "VectorIndexFileError", "write", "read"]

MAGIC = b"GTVECIDX"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sQI")
_ALIGN = 64
_CHUNK = 16 << 20


class VectorIndexFileError(ValueError):
    """A vector index file is not one, is of an unknown version, is truncated or corrupt."""


def _crc(buf) -> int:
    mv = memoryview(buf).cast("B")
    crc = 0
    for start in range(0, len(mv), _CHUNK):
        crc = zlib.crc32(mv[start:start + _CHUNK], crc)
    return crc


def write(path: str | os.PathLike, config: dict[str, Any], arrays: dict[str, np.ndarray], blobs: dict[str, bytes]) -> None:
    """Write ``arrays`` (host NumPy) and ``blobs`` (bytes) with ``config`` to ``path`` atomically."""
    path = os.fspath(path)
    payloads: list[tuple[dict[str, Any], Any]] = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        payloads.append(({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)}, arr))
    for name, blob in blobs.items():
        payloads.append(({"name": name, "dtype": "bytes", "shape": [len(blob)]}, blob))
    for meta, data in payloads:
        meta["nbytes"] = memoryview(data).nbytes
        meta["crc32"] = _crc(data)
    # offsets depend on the header length, which depends on the offsets' digits: fix point
    offsets = [0] * len(payloads)
    while True:
        for (meta, _), off in zip(payloads, offsets):
            meta["offset"] = off
        header = json.dumps({"format_version": FORMAT_VERSION, "config": config,
                             "sections": [m for m, _ in payloads]}).encode()
        pos = _PREFIX.size + len(header)
        new = []
        for meta, _ in payloads:
            pos = -(-pos // _ALIGN) * _ALIGN
            new.append(pos)
            pos += meta["nbytes"]
        if new == offsets:
            break
        offsets = new
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gtvec-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_PREFIX.pack(MAGIC, len(header), zlib.crc32(header)))
            fh.write(header)
            for (meta, data) in payloads:
                fh.write(b"\0" * (meta["offset"] - fh.tell()))
                fh.write(memoryview(data).cast("B"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path: str | os.PathLike, mmap: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and validate a file written by :func:`write`.

    Returns ``(config, sections)`` where ``sections`` maps names to NumPy arrays (``vectors``
    is a read-only memmap when ``mmap``) or bytes. Raises :class:`VectorIndexFileError`
    saying what is wrong.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        prefix = fh.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise VectorIndexFileError(f"{path}: truncated (only {size} bytes)")
        magic, header_len, header_crc = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise VectorIndexFileError(f"{path}: not a gpu-trader vector index (bad magic bytes)")
        if header_len > size - _PREFIX.size:  # a corrupt length field must not drive a huge read
            raise VectorIndexFileError(
                f"{path}: corrupt or truncated header (says {header_len} bytes, the file has {size - _PREFIX.size})")
        header = fh.read(header_len)
        if zlib.crc32(header) != header_crc:
            raise VectorIndexFileError(f"{path}: corrupt header (checksum mismatch)")
        head = json.loads(header)
        version = head.get("format_version")
        if version != FORMAT_VERSION:
            raise VectorIndexFileError(
                f"{path}: format version {version} is not supported (this gpu-trader reads {FORMAT_VERSION})")
        for meta in head["sections"]:
            if meta["offset"] + meta["nbytes"] > size:
                raise VectorIndexFileError(
                    f"{path}: truncated: section {meta['name']!r} ends at byte {meta['offset'] + meta['nbytes']}, "
                    f"the file has {size}")
        sections: dict[str, Any] = {}
        for meta in head["sections"]:
            name, off, nbytes = meta["name"], meta["offset"], meta["nbytes"]
            if meta["dtype"] == "bytes":
                fh.seek(off)
                data: Any = fh.read(nbytes)
            elif mmap and name == "vectors" and nbytes:
                data = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r", offset=off, shape=tuple(meta["shape"]))
            else:
                fh.seek(off)
                dtype = np.dtype(meta["dtype"])
                data = np.fromfile(fh, dtype=dtype, count=nbytes // dtype.itemsize).reshape(meta["shape"])
            if _crc(data) != meta["crc32"]:
                raise VectorIndexFileError(f"{path}: corrupt section {name!r} (checksum mismatch)")
            sections[name] = data
    return head["config"], sections
