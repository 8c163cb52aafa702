"""The on-disk format of a :class:`gpu_trader.vectors.VectorIndex`: one file, written atomically.

Layout (little-endian)::

    magic        8 bytes  b"GTVECIDX"
    header_len   uint64   bytes of the JSON header
    header_crc   uint32   CRC-32 of the JSON header
    header       JSON     {"format_version", "config", "sections": [...]}
    sections     raw      each at a 64-byte aligned offset; the header lists
                          name, offset, nbytes, dtype, shape and CRC-32 of each

Sections: ``vectors`` (``(n, dim)`` float32 or int8; uint8 binary or PQ codes), ``scales`` (int8
and binary storage only), ``codebooks`` (PQ storage, once trained),
``norms``, ``ids`` (int64), ``metadata`` (UTF-8 JSON of the metadata columns) and ``ann``
(the approximate index's own serialization, possibly empty). Array sections are one of
:data:`ARRAY_DTYPES` (little-endian on every machine); the others are ``"bytes"``.

:func:`write` resolves a symbolic link to the file it names (the link stays), writes a
temporary file in that file's directory (created with mode ``0o666`` less the umask, or
given the permission bits of the file it replaces), fsyncs it, renames it over the target
and fsyncs the directory, so a crash never leaves a half-written index under the target
name and a completed save survives one.

:func:`read` opens the path without blocking and refuses anything but a regular file (a
FIFO or a device is a :class:`VectorIndexFileError`, not a hang). Every length in the file
is bounded by the size of the opened file (``os.fstat``), and before any section is read
it checks the magic, the header checksum, the format version, the header's structure
(types and ranges of every field; sections of a known dtype, whose ``nbytes`` match their
shape, inside the file, not overlapping the header or each other) and every section's
checksum (streamed through the file in 16 MiB chunks). Only then are the sections read;
with ``mmap=True`` the vectors are a read-only ``numpy.memmap`` of the opened file. What
the config and the sections *mean* is checked by :meth:`VectorIndex.load`.
"""
from __future__ import annotations

import json
import math
import os
import struct
import zlib
from typing import Any, BinaryIO

import numpy as np

from .file_io import file_name, open_regular, regular_target, replace_atomically

__all__ = ["FORMAT_VERSION", "ARRAY_DTYPES", "VectorIndexFileError", "write", "read"]

MAGIC = b"GTVECIDX"
FORMAT_VERSION = 1
ARRAY_DTYPES = ("<f4", "|i1", "|u1", "<i8")  # the dtypes an array section may have
BYTES = "bytes"  # the dtype of a raw byte section
_PREFIX = struct.Struct("<8sQI")
_ALIGN = 64
_CHUNK = 16 << 20
_MAX_SECTIONS = 64
_SECTION_KEYS = frozenset({"name", "dtype", "shape", "nbytes", "crc32", "offset"})


class VectorIndexFileError(ValueError):
    """A vector index file is not one, is of an unknown version, is truncated, corrupt or malformed."""


def _byte_view(data) -> memoryview:
    """A flat unsigned-byte view of a C-contiguous array or a bytes object (any shape, also empty)."""
    if isinstance(data, np.ndarray):
        return memoryview(data.reshape(-1).view(np.uint8))
    return memoryview(data).cast("B")


def _crc(data) -> int:
    mv = _byte_view(data)
    crc = 0
    for start in range(0, len(mv), _CHUNK):
        crc = zlib.crc32(mv[start:start + _CHUNK], crc)
    return crc


# -- writing ------------------------------------------------------------------------------
def write(path: str | os.PathLike, config: dict[str, Any], arrays: dict[str, np.ndarray], blobs: dict[str, bytes]) -> None:
    """Write ``arrays`` (host NumPy, dtypes in :data:`ARRAY_DTYPES` up to byte order) and
    ``blobs`` (bytes) with ``config`` (JSON-serializable, finite numbers) to ``path`` atomically.

    ``ValueError`` if ``path`` exists and is not a regular file (nor a link to one)."""
    target = regular_target(path)
    payloads = _payloads(arrays, blobs)
    header = _header(config, payloads)
    replace_atomically(target, lambda fh: _write_body(fh, header, payloads))


def _payloads(arrays: dict[str, np.ndarray], blobs: dict[str, bytes]) -> list[tuple[dict[str, Any], Any]]:
    """``(section metadata without offset, data)`` for every array (little-endian, contiguous) and blob."""
    payloads: list[tuple[dict[str, Any], Any]] = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr, dtype=np.dtype(arr.dtype).newbyteorder("<"))
        if arr.dtype.str not in ARRAY_DTYPES:
            raise TypeError(f"section {name!r} has dtype {arr.dtype}; the format stores {ARRAY_DTYPES}")
        payloads.append(({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)}, arr))
    for name, blob in blobs.items():
        payloads.append(({"name": name, "dtype": BYTES, "shape": [len(blob)]}, blob))
    for meta, data in payloads:
        meta["nbytes"] = len(_byte_view(data))
        meta["crc32"] = _crc(data)
    return payloads


def _header(config: dict[str, Any], payloads) -> bytes:
    """The JSON header; sets each section's ``offset`` (64-byte aligned, after the header)."""
    # offsets depend on the header length, which depends on the offsets' digits: fix point
    offsets = [0] * len(payloads)
    while True:
        for (meta, _), off in zip(payloads, offsets):
            meta["offset"] = off
        header = json.dumps({"format_version": FORMAT_VERSION, "config": config,
                             "sections": [m for m, _ in payloads]}, allow_nan=False).encode()
        pos = _PREFIX.size + len(header)
        new = []
        for meta, _ in payloads:
            pos = -(-pos // _ALIGN) * _ALIGN
            new.append(pos)
            pos += meta["nbytes"]
        if new == offsets:
            return header
        offsets = new


def _write_body(fh: BinaryIO, header: bytes, payloads) -> None:
    fh.write(_PREFIX.pack(MAGIC, len(header), zlib.crc32(header)))
    fh.write(header)
    for meta, data in payloads:
        fh.write(b"\0" * (meta["offset"] - fh.tell()))
        fh.write(_byte_view(data))


# -- reading ------------------------------------------------------------------------------
def read(path: str | os.PathLike, mmap: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and validate a file written by :func:`write` (see the module docstring).

    Returns ``(config, sections)``: the header's config dict and a dict mapping section
    names to NumPy arrays (``vectors`` is a read-only memmap when ``mmap`` and not empty)
    or bytes. Raises :class:`VectorIndexFileError` saying what is wrong; ``OSError`` (e.g.
    ``FileNotFoundError``) where the path cannot be opened at all.
    """
    name = file_name(path)
    with open_regular(name, VectorIndexFileError) as fh:
        size = os.fstat(fh.fileno()).st_size
        head, header_end = _read_header(fh, size, name)
        table = _section_table(head, size, header_end, name)
        for meta in table:
            if _file_crc(fh, meta["offset"], meta["nbytes"], name) != meta["crc32"]:
                raise VectorIndexFileError(f"{name}: corrupt section {meta['name']!r} (checksum mismatch)")
        sections = {meta["name"]: _read_section(fh, meta, mmap, name) for meta in table}
    return head["config"], sections


def _read_header(fh: BinaryIO, size: int, name: str) -> tuple[dict[str, Any], int]:
    """The parsed JSON header (its top-level structure checked) and the byte where it ends."""
    prefix = fh.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise VectorIndexFileError(f"{name}: truncated (only {size} bytes)")
    magic, header_len, header_crc = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise VectorIndexFileError(f"{name}: not a gpu-trader vector index (bad magic bytes)")
    if header_len > size - _PREFIX.size:  # a corrupt length field must not drive a huge read
        raise VectorIndexFileError(
            f"{name}: corrupt or truncated header (says {header_len} bytes, the file has {size - _PREFIX.size})")
    header = fh.read(header_len)
    if len(header) != header_len or zlib.crc32(header) != header_crc:
        raise VectorIndexFileError(f"{name}: corrupt header (checksum mismatch)")
    try:
        head = json.loads(header)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise VectorIndexFileError(f"{name}: the header is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(head, dict):
        raise VectorIndexFileError(f"{name}: the header is a JSON {type(head).__name__}, not an object")
    version = head.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise VectorIndexFileError(
            f"{name}: format version {version!r} is not supported (this gpu-trader reads {FORMAT_VERSION})")
    if not isinstance(head.get("config"), dict):
        raise VectorIndexFileError(f"{name}: the header has no config object")
    return head, _PREFIX.size + header_len


def _is_int(value) -> bool:
    """A JSON integer (``bool`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _section_table(head: dict[str, Any], size: int, header_end: int, name: str) -> list[dict[str, Any]]:
    """The header's sections, each checked, sorted by offset (see the module docstring)."""
    table = head.get("sections")
    if not isinstance(table, list) or len(table) > _MAX_SECTIONS:
        raise VectorIndexFileError(f"{name}: the header's sections are not a list of at most {_MAX_SECTIONS}")
    seen: set[str] = set()
    for meta in table:
        _check_section(meta, size, header_end, name)
        if meta["name"] in seen:
            raise VectorIndexFileError(f"{name}: section {meta['name']!r} appears twice")
        seen.add(meta["name"])
    table = sorted(table, key=lambda m: m["offset"])
    for before, after in zip(table, table[1:]):
        if before["offset"] + before["nbytes"] > after["offset"]:
            raise VectorIndexFileError(f"{name}: sections {before['name']!r} and {after['name']!r} overlap")
    return table


def _check_section(meta, size: int, header_end: int, name: str) -> None:
    """One section entry: its fields, types and ranges, and that it lies inside the file."""
    if not isinstance(meta, dict) or set(meta) != _SECTION_KEYS:
        raise VectorIndexFileError(f"{name}: a section entry is not an object with keys {sorted(_SECTION_KEYS)}")
    label = meta["name"]
    if not isinstance(label, str):
        raise VectorIndexFileError(f"{name}: a section name is not a string: {label!r}")
    dtype, shape, nbytes, offset, crc = meta["dtype"], meta["shape"], meta["nbytes"], meta["offset"], meta["crc32"]
    if dtype != BYTES and dtype not in ARRAY_DTYPES:
        raise VectorIndexFileError(f"{name}: section {label!r} has dtype {dtype!r}, not one of "
                                   f"{(*ARRAY_DTYPES, BYTES)}")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 3 or not all(_is_int(d) and d >= 0 for d in shape):
        raise VectorIndexFileError(f"{name}: section {label!r} has shape {shape!r}, not 1 to 3 non-negative ints")
    if not all(_is_int(v) and v >= 0 for v in (nbytes, offset, crc)) or crc >= 1 << 32:
        raise VectorIndexFileError(f"{name}: section {label!r} has a malformed offset, size or checksum")
    itemsize = 1 if dtype == BYTES else np.dtype(dtype).itemsize
    if (dtype == BYTES and len(shape) != 1) or math.prod(shape) * itemsize != nbytes:
        raise VectorIndexFileError(f"{name}: section {label!r} has {nbytes} bytes, which its shape {shape} "
                                   f"and dtype {dtype} contradict")
    if offset < header_end:
        raise VectorIndexFileError(f"{name}: section {label!r} starts inside the header")
    if offset + nbytes > size:
        raise VectorIndexFileError(
            f"{name}: truncated: section {label!r} ends at byte {offset + nbytes}, the file has {size}")


def _file_crc(fh: BinaryIO, offset: int, nbytes: int, name: str) -> int:
    """CRC-32 of ``nbytes`` of the file at ``offset``, read in chunks (no allocation of their size)."""
    buf = memoryview(bytearray(min(nbytes, _CHUNK)))
    fh.seek(offset)
    crc, left = 0, nbytes
    while left:
        got = fh.readinto(buf[:min(left, _CHUNK)])
        if not got:
            raise VectorIndexFileError(f"{name}: truncated while reading (the file shrank)")
        crc = zlib.crc32(buf[:got], crc)
        left -= got
    return crc


def _read_section(fh: BinaryIO, meta: dict[str, Any], mmap: bool, name: str):
    """The bytes or the (writable) array of one checked section; a read-only memmap of the
    opened file for ``vectors`` when ``mmap`` (and it is not empty)."""
    offset, nbytes, shape = meta["offset"], meta["nbytes"], tuple(meta["shape"])
    if mmap and meta["name"] == "vectors" and nbytes:
        return np.memmap(fh, dtype=np.dtype(meta["dtype"]), mode="r", offset=offset, shape=shape)
    fh.seek(offset)
    if meta["dtype"] == BYTES:
        data: Any = fh.read(nbytes)
        got = len(data)
    else:
        data = bytearray(nbytes)
        got = fh.readinto(data)
    if got != nbytes:
        raise VectorIndexFileError(f"{name}: truncated while reading (the file shrank)")
    return data if meta["dtype"] == BYTES else np.frombuffer(data, dtype=np.dtype(meta["dtype"])).reshape(shape)
