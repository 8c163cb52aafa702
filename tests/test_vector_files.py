"""VectorIndex files under hostile edits: every malformed file is a VectorIndexFileError (never
another exception, a hang, a crash or a huge allocation); saving is atomic, durable and keeps
links and permission bits.

Forged files get *valid* checksums (``forge``), so what is tested is the content validation,
not the CRC. A load that succeeds must give an index that answers exactly (checked against a
NumPy brute force over the vectors it holds)."""
from __future__ import annotations

import copy
import json
import math
import os
import stat
import struct
import threading
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gpu_trader._internal import ann, vector_io
from gpu_trader.vectors import MAX_ID, VectorIndex, VectorIndexFileError

PREFIX = vector_io._PREFIX


# -- forging files ------------------------------------------------------------------------
def split(data: bytes) -> tuple[dict, dict[str, bytes]]:
    """A file's parsed header and each section's raw bytes."""
    _, header_len, _ = PREFIX.unpack_from(data)
    head = json.loads(data[PREFIX.size:PREFIX.size + header_len])
    return head, {s["name"]: data[s["offset"]:s["offset"] + s["nbytes"]] for s in head["sections"]}


def forge(head: dict, blobs: dict[str, bytes], holes: dict[str, tuple[int, int]] | None = None) -> bytes:
    """A file with this header whose sections hold ``blobs``, laid out after the header with
    offsets, sizes and CRCs that match (and shapes, for byte sections; array shapes stay as
    the header says, so only the content can be wrong). ``holes``: sections
    (name -> (nbytes, crc32)) placed after the others but not written: the caller extends
    the file (sparse) to ``file_end(forged)``."""
    head = copy.deepcopy(head)
    holes = holes or {}
    table = head["sections"] if isinstance(head.get("sections"), list) else []
    entries = {s["name"]: s for s in table if isinstance(s, dict) and isinstance(s.get("name"), str)}
    sizes = {**{n: (len(b), zlib.crc32(b)) for n, b in blobs.items()}, **holes}
    for name, (nbytes, crc) in sizes.items():
        entry = entries.setdefault(name, {})  # a section the table lacks is placed only
        entry.update(nbytes=nbytes, crc32=crc)
        if entry.get("dtype") == vector_io.BYTES:
            entry["shape"] = [nbytes]
    header = b""
    while True:  # offsets depend on the header length: fix point
        pos = PREFIX.size + len(header)
        for name, (nbytes, _) in sizes.items():
            pos = -(-pos // 64) * 64
            entries[name]["offset"] = pos
            pos += nbytes
        new = json.dumps(head).encode()
        if new == header:
            break
        header = new
    out = bytearray(PREFIX.pack(vector_io.MAGIC, len(header), zlib.crc32(header)) + header)
    for name, blob in blobs.items():
        out += b"\0" * (entries[name]["offset"] - len(out)) + blob
    return bytes(out)


def file_end(data: bytes) -> int:
    """Where the last section of a file ends, by its header."""
    head, _ = split(data)
    return max(s["offset"] + s["nbytes"] for s in head["sections"])


def forge_table(original: bytes, head: dict) -> bytes:
    """The original file with its header replaced by ``head`` (valid CRC), data left in
    place: the new header is padded with spaces to the old length when shorter."""
    _, header_len, _ = PREFIX.unpack_from(original)
    header = json.dumps(head).encode()
    if len(header) < header_len:
        header += b" " * (header_len - len(header))
    prefix = PREFIX.pack(vector_io.MAGIC, len(header), zlib.crc32(header))
    return prefix + header + original[PREFIX.size + header_len:]


def small_index(kind="exact", metric="ip", dtype="float32", n=24, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    index = VectorIndex(dim, metric, kind=kind, dtype=dtype, M=4, ef_construction=8, ef_search=8)
    index.add(rng.standard_normal((n, dim)), ids=rng.permutation(10 * n)[:n],
              metadata={"sym": rng.choice(["a", "b"], n), "w": rng.integers(0, 9, n), "x": rng.standard_normal(n)})
    index.remove(index.vectors()[0][:3])
    return index


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Bytes of saved files: ``{(kind, metric, dtype): bytes}``."""
    out = {}
    path = tmp_path_factory.mktemp("saved") / "i.gtv"
    for key in (("exact", "ip", "float32"), ("exact", "cosine", "int8"), ("exact", "l2", "float32")):
        small_index(*key).save(path)
        out[key] = path.read_bytes()
    if _has_faiss():
        small_index("hnsw", "cosine").save(path)
        out[("hnsw", "cosine", "float32")] = path.read_bytes()
    return out


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def brute_force(vectors: np.ndarray, q: np.ndarray, k: int, metric: str):
    """float64 reference scores (best first) of the stored vectors (as the index reports them)."""
    v, q = vectors.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = ((v[None] - q[:, None]) ** 2).sum(-1) if metric == "l2" else q @ v.T
    return np.sort(s, axis=1)[:, :k] if metric == "l2" else -np.sort(-s, axis=1)[:, :k]


def assert_answers_exactly(index: VectorIndex) -> None:
    """A loaded index: its exact search equals a brute force over the vectors it holds."""
    ids, vectors = index.vectors()
    assert ids.shape == (len(index),) and np.unique(ids).size == ids.size and (ids >= 0).all()
    assert np.isfinite(vectors).all()
    if not len(index):
        return
    q = np.random.default_rng(1).standard_normal((3, index.dim))
    k = min(3, len(index))
    exact = VectorIndex(index.dim, index.metric)
    exact.add(vectors, ids=ids)
    scores, found = (index if index.kind == "exact" else exact).search(q, k)
    assert np.isin(found, ids).all()
    np.testing.assert_allclose(scores, brute_force(vectors, q, k, index.metric), rtol=1e-4, atol=1e-4)


def _written(tmp_path, data: bytes):
    path = tmp_path / "f.gtv"
    path.write_bytes(data)
    return path


def load_outcome(path, data: bytes, mmap: bool = False) -> VectorIndex | None:
    """Write ``data`` and load it: the index, or None for a VectorIndexFileError (any
    other exception propagates and fails the test)."""
    path.write_bytes(data)
    try:
        index = VectorIndex.load(path, mmap=mmap)
    except VectorIndexFileError:
        return None
    assert_answers_exactly(index)
    return index


def fuzz_outcome(path, data: bytes, mmap: bool = False) -> VectorIndex | None:
    """:func:`load_outcome`, counted in hypothesis's statistics (``--hypothesis-show-statistics``)."""
    index = load_outcome(path, data, mmap)
    event("refused" if index is None else "loaded")
    return index


# -- explicit cases: each exception the old loader leaked ----------------------------------
def _with(head: dict, where: tuple, value) -> dict:
    head = copy.deepcopy(head)
    node = head
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    return head


@pytest.mark.parametrize("where,value", [
    (("config",), [1, 2]),  # TypeError before
    (("config", "dim"), "4"),
    (("config", "params"), 7),
    (("config", "params", "M"), 2**70),
    (("config", "count"), 2**70),  # OverflowError before
    (("config", "dim"), 2**70),
    (("config", "next_id"), float("nan")),
    (("config", "meta_types"), {"sym": "complex"}),
    (("config", "meta_types"), ["sym"]),
    (("sections",), {"vectors": 1}),
    (("format_version",), True),  # accepted as 1 before
])
def test_malformed_header_fields(tmp_path, saved, where, value):
    head, blobs = split(saved[("exact", "ip", "float32")])
    with pytest.raises(VectorIndexFileError):
        VectorIndex.load(_written(tmp_path, forge(_with(head, where, value), blobs)))


def test_header_not_an_object(tmp_path):
    """AttributeError before: the header must be a JSON object."""
    for header in (b"[1, 2]", b"3", b'"x"', b"null"):
        data = PREFIX.pack(vector_io.MAGIC, len(header), zlib.crc32(header)) + header
        with pytest.raises(VectorIndexFileError, match="not an object|version"):
            VectorIndex.load(_written(tmp_path, data))


def test_missing_config_keys_and_sections(tmp_path, saved):
    """KeyError before: every config key and every section is required."""
    head, blobs = split(saved[("exact", "ip", "float32")])
    for key in ("dim", "metric", "kind", "dtype", "params", "count", "next_id"):
        bad = copy.deepcopy(head)
        del bad["config"][key]
        with pytest.raises(VectorIndexFileError, match=key):
            VectorIndex.load(_written(tmp_path, forge(bad, blobs)))
    for name in blobs:
        bad = copy.deepcopy(head)
        bad["sections"] = [s for s in bad["sections"] if s["name"] != name]
        with pytest.raises(VectorIndexFileError, match="sections"):
            VectorIndex.load(_written(tmp_path, forge(bad, {n: b for n, b in blobs.items() if n != name})))


def test_header_not_json_and_deeply_nested(tmp_path, saved):
    """JSONDecodeError, UnicodeDecodeError and RecursionError before."""
    for header in (b"{not json", b"\xff\xfe{}", b"[" * 200_000 + b"]" * 200_000,
                   b'{"format_version": 1, "config": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001):
        data = PREFIX.pack(vector_io.MAGIC, len(header), zlib.crc32(header)) + header
        with pytest.raises(VectorIndexFileError):
            VectorIndex.load(_written(tmp_path, data))


def test_deeply_nested_metadata_section(tmp_path, saved):
    head, blobs = split(saved[("exact", "ip", "float32")])
    for meta in (b"[" * 100_000 + b"]" * 100_000, b"{\"sym\": " + b"[" * 100_000 + b"]" * 100_000 + b"}", b"{bad"):
        with pytest.raises(VectorIndexFileError):
            VectorIndex.load(_written(tmp_path, forge(head, {**blobs, "metadata": meta})))


@pytest.mark.parametrize("field,value", [
    ("offset", -64), ("offset", 2**70), ("nbytes", -8), ("nbytes", 2**64), ("offset", 1.5), ("nbytes", None),
    ("shape", [2**40, 2**40]), ("shape", [-1, 4]), ("shape", "x"), ("shape", [[1]]), ("shape", [1, 1, 1, 1]),
    ("dtype", ">f4"), ("dtype", "<U1000000000"), ("dtype", "(1000000000,)f4"), ("dtype", 4), ("crc32", -1),
    ("crc32", 2**32), ("name", 3), ("name", "vectors"),
])
def test_malformed_section_entries(tmp_path, saved, field, value):
    """Section offsets, sizes, shapes and dtypes are checked before any seek or allocation
    (OverflowError, TypeError or a huge allocation before)."""
    data = saved[("exact", "ip", "float32")]
    head, _ = split(data)
    for i in range(len(head["sections"])):
        if head["sections"][i][field] == value:
            continue  # ("name", "vectors") is a duplicate name everywhere but on the vectors section
        bad = copy.deepcopy(head)
        bad["sections"][i][field] = value
        assert load_outcome(tmp_path / "f.gtv", forge_table(data, bad)) is None


def test_swapped_section_sizes_and_overlaps(tmp_path, saved):
    data = saved[("exact", "ip", "float32")]
    head, _ = split(data)
    by_name = {s["name"]: s for s in head["sections"]}
    for a, b in (("vectors", "ids"), ("norms", "ids"), ("metadata", "ann"), ("vectors", "metadata")):
        bad = copy.deepcopy(head)
        sa, sb = (next(s for s in bad["sections"] if s["name"] == n) for n in (a, b))
        for key in ("nbytes", "shape", "crc32"):
            sa[key], sb[key] = by_name[b][key], by_name[a][key]
        assert load_outcome(tmp_path / "f.gtv", forge_table(data, bad)) is None
    bad = copy.deepcopy(head)
    first, second = sorted(bad["sections"], key=lambda s: s["offset"])[:2]
    second["offset"] = first["offset"]  # two sections over the same bytes
    with pytest.raises(VectorIndexFileError):
        VectorIndex.load(_written(tmp_path, forge_table(data, bad)))


# -- content validation ----------------------------------------------------------------------
def _array_blob(arr) -> bytes:
    return np.ascontiguousarray(arr).tobytes()


def test_content_checks(tmp_path, saved):
    """Valid checksums, wrong content: each is refused, naming what is wrong."""
    head, blobs = split(saved[("exact", "ip", "float32")])
    n, dim = head["config"]["count"], head["config"]["dim"]
    ids = np.frombuffer(blobs["ids"], "<i8")
    vec = np.frombuffer(blobs["vectors"], "<f4").reshape(n, dim)
    meta = json.loads(blobs["metadata"])
    cases = {
        "unique": {"ids": _array_blob(np.r_[ids[:-1], ids[0]])},
        "non-negative": {"ids": _array_blob(np.r_[ids[:-1], -5])},
        "next_id": {"ids": _array_blob(np.r_[ids[:-1], head["config"]["next_id"]])},
        "NaN": {"vectors": _array_blob(np.where(np.arange(n * dim).reshape(n, dim) == 5, np.nan, vec).astype("<f4"))},
        "list of": {"metadata": json.dumps({**meta, "w": meta["w"][:-1]}).encode()},
        "mixes": {"metadata": json.dumps({**meta, "w": [True] + meta["w"][1:]}).encode()},
        "JSON scalar": {"metadata": json.dumps({**meta, "w": [[1]] + meta["w"][1:]}).encode()},
        "int64": {"metadata": json.dumps({**meta, "w": [2**64] + meta["w"][1:]}).encode()},
        "graph": {"ann": b"\0" * 96},
    }
    for what, change in cases.items():
        with pytest.raises(VectorIndexFileError, match=what):
            VectorIndex.load(_written(tmp_path, forge(head, {**blobs, **change})))
    big = copy.deepcopy(head)
    next(s for s in big["sections"] if s["name"] == "vectors")["dtype"] = ">f4"
    with pytest.raises(VectorIndexFileError, match="dtype"):  # the same numbers, big-endian: not silently misread
        VectorIndex.load(_written(tmp_path, forge(big, {**blobs, "vectors": vec.astype(">f4").tobytes()})))
    typed = copy.deepcopy(head)
    typed["config"]["meta_types"]["w"] = "str"
    with pytest.raises(VectorIndexFileError, match="'w'"):
        VectorIndex.load(_written(tmp_path, forge(typed, blobs)))


def test_cosine_vectors_must_be_unit_and_scales_positive(tmp_path, saved):
    head, blobs = split(saved[("exact", "cosine", "int8")])
    scales = np.frombuffer(blobs["scales"], "<f4")
    for bad in (scales * 3, np.r_[scales[:-1], 0.0], np.r_[scales[:-1], np.inf]):
        with pytest.raises(VectorIndexFileError):
            VectorIndex.load(_written(tmp_path, forge(head, {**blobs, "scales": _array_blob(bad.astype("<f4"))})))
    assert load_outcome(tmp_path / "f.gtv", forge(head, blobs)) is not None


def test_norms_are_recomputed(tmp_path, saved):
    """A norms section that does not belong to the vectors cannot skew l2 scores."""
    head, blobs = split(saved[("exact", "l2", "float32")])
    wrong = np.full(head["config"]["count"], 123.0, "<f4")
    index = load_outcome(tmp_path / "f.gtv", forge(head, {**blobs, "norms": wrong.tobytes()}))
    assert index is not None  # assert_answers_exactly compared its l2 scores with a brute force


# -- the fuzzer ---------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6)
CONFIG_PATHS = [("config", k) for k in ("dim", "metric", "kind", "dtype", "params", "count", "next_id",
                                         "meta_types", "meta_dtypes")] + [
    ("config", "params", p) for p in ("M", "ef_construction", "ef_search")] + [("format_version",), ("config",)]
SECTION_FIELDS = ("name", "dtype", "shape", "nbytes", "crc32", "offset")
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@FUZZ
@given(key=st.sampled_from([("exact", "ip", "float32"), ("exact", "cosine", "int8"), ("exact", "l2", "float32")]),
       where=st.sampled_from(CONFIG_PATHS), value=json_values | st.sampled_from([0, 1, 2**31, 2**63, -1, 1e308]))
def test_fuzz_header_fields(tmp_path, saved, key, where, value):
    head, blobs = split(saved[key])
    fuzz_outcome(tmp_path / "f.gtv", forge(_with(head, where, value), blobs))


@FUZZ
@given(section=st.integers(0, 5), field=st.sampled_from(SECTION_FIELDS),
       value=json_values | st.integers(0, 5000) | st.sampled_from(["<f4", "|i1", "<i8", "bytes"]))
def test_fuzz_section_table(tmp_path, saved, section, field, value):
    data = saved[("exact", "cosine", "int8")]
    head, _ = split(data)
    bad = copy.deepcopy(head)
    bad["sections"][section % len(bad["sections"])][field] = value
    fuzz_outcome(tmp_path / "f.gtv", forge_table(data, bad))


@FUZZ
@given(key=st.sampled_from([("exact", "ip", "float32"), ("exact", "cosine", "int8"), ("exact", "l2", "float32")]),
       name=st.sampled_from(["vectors", "scales", "norms", "ids", "metadata", "ann"]), data=st.data())
def test_fuzz_section_bytes(tmp_path, saved, key, name, data):
    """Random bytes written into one section (or it cut or extended), checksums recomputed."""
    head, blobs = split(saved[key])
    if name not in blobs:
        name = "ids"
    blob = bytearray(blobs[name])
    action = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if action == "flip" and blob:
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(blob) - 1))
            blob[pos] = data.draw(st.integers(0, 255))
    elif action == "cut":
        del blob[data.draw(st.integers(0, len(blob))):]
    else:
        blob += data.draw(st.binary(min_size=1, max_size=16))
    fuzz_outcome(tmp_path / "f.gtv", forge(head, {**blobs, name: bytes(blob)}), mmap=data.draw(st.booleans()))


@FUZZ
@given(data=st.data())
def test_fuzz_whole_file(tmp_path, saved, data):
    """Truncated, extended or byte-flipped anywhere, header checksum recomputed when the header was hit."""
    raw = bytearray(saved[("exact", "l2", "float32")])
    action = data.draw(st.sampled_from(["cut", "extend", "flip"]))
    if action == "cut":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif action == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=200))
    else:
        for _ in range(data.draw(st.integers(1, 3))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        _, header_len, _ = PREFIX.unpack_from(raw)
        if PREFIX.size + header_len <= len(raw):
            struct.pack_into("<I", raw, 16, zlib.crc32(raw[PREFIX.size:PREFIX.size + header_len]))
    fuzz_outcome(tmp_path / "f.gtv", bytes(raw))


# -- the HNSW graph ------------------------------------------------------------------------------
def _graph_blob(g: dict, **head) -> bytes:
    """A graph in ann's saved layout from ``g`` (the fields of an ``ann.HnswGraph`` plus dim, M,
    magic, and the header's counts), any header field overridden by ``head``."""
    fields = {"magic": ann._MAGIC, "n": g["labels"].size, "dim": g["dim"], "M": g["M"], "entry": g["entry_point"],
              "max_level": g["max_level"], "n_links": g["neighbors"].size, **head}
    parts = (g["labels"].astype("<i8"), g["live"].astype("u1"), g["vectors"].astype("<f4"),
             g["levels"].astype("<i4"), g["offsets"].astype("<u8"), g["neighbors"].astype("<i4"))
    return ann._HEAD.pack(*fields.values()) + b"".join(p.tobytes() for p in parts)


def _graph_dict(blob: bytes, dim: int, params, ids, vectors) -> dict:
    graph = ann.check_hnsw_graph(blob, dim, params, ids, vectors)
    g = {name: np.array(value) for name, value in graph._asdict().items() if isinstance(value, np.ndarray)}
    return {**g, "entry_point": graph.entry_point, "max_level": graph.max_level, "dim": dim, "M": params["M"]}


def _variant(g: dict, name: str, index, value) -> dict:
    out = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in g.items()}
    if index is None:
        out[name] = value
    else:
        out[name][index] = value
    return out


def test_crafted_hnsw_graphs_are_refused(tmp_path, saved):
    """FAISS trusts a graph (a link out of range crashes the interpreter): a saved graph is
    checked, sizes against its length first, then against the index's own ids and vectors,
    before FAISS sees any of it."""
    pytest.importorskip("faiss")
    head, blobs = split(saved[("hnsw", "cosine", "float32")])
    dim, params = head["config"]["dim"], head["config"]["params"]
    ids = np.frombuffer(blobs["ids"], "<i8")
    vectors = np.frombuffer(blobs["vectors"], "<f4").reshape(len(ids), dim)
    graph = blobs["ann"]
    g = _graph_dict(graph, dim, params, ids, vectors)
    n = g["labels"].size
    assert n > len(ids) and not g["live"].all()  # removed vectors stay in the graph, marked
    live = np.flatnonzero(g["live"])
    used = np.flatnonzero(g["neighbors"] >= 0)
    variants = {
        "link out of range": _variant(g, "neighbors", used[0], n + 10**6),
        "link below -1": _variant(g, "neighbors", used[0], -7),
        "unknown label": _variant(g, "labels", live[0], 2**40),
        "duplicate label": _variant(g, "labels", live[1], g["labels"][live[0]]),
        "live flag bits": _variant(g, "live", 2, 4),
        "other vector": _variant(g, "vectors", (live[1], 0), 2.0),
        "NaN vector": _variant(g, "vectors", (0, 0), np.nan),
        "deleted made live": _variant(g, "live", slice(None), True),
        "too many levels": _variant(g, "levels", 0, 1000),
        "no level": _variant(g, "levels", 0, 0),
        "offsets shifted": _variant(g, "offsets", 1, g["offsets"][1] + 1),
        "entry point out of range": _variant(g, "entry_point", None, n),
        "top level wrong": _variant(g, "max_level", None, g["max_level"] + 1),
    }
    blobs_by = {what: _graph_blob(v) for what, v in variants.items()}
    for what, override in (("magic", {"magic": b"HNSWLIB0"}), ("dim", {"dim": dim + 1}), ("M", {"M": params["M"] + 1}),
                           ("count claimed 2**40", {"n": 2**40}), ("links claimed 2**40", {"n_links": 2**40})):
        blobs_by[f"header {what}"] = _graph_blob(g, **override)
    blobs_by["truncated"] = graph[:-4]
    blobs_by["trailing bytes"] = graph + b"\0\0\0\0"
    blobs_by["header only"] = graph[:ann._HEAD.size - 1]
    assert _graph_blob(g) == graph  # the forging helper writes the layout ann writes
    for what, blob in blobs_by.items():
        with pytest.raises(ValueError):  # checked first: if this let one through, FAISS could crash
            ann.check_hnsw_graph(blob, dim, params, ids, vectors)
        with pytest.raises(VectorIndexFileError):
            VectorIndex.load(_written(tmp_path, forge(head, {**blobs, "ann": blob})))
    index = load_outcome(tmp_path / "f.gtv", forge(head, blobs))
    scores, found = index.search(vectors[:2], 3)
    assert found[0, 0] == ids[0] and found[1, 0] == ids[1]


def test_hnsw_upper_level_links_are_checked(tmp_path):
    """A link on an upper level to a node that does not reach that level is refused."""
    pytest.importorskip("faiss")
    index = VectorIndex(4, "ip", kind="hnsw", M=2, ef_construction=4)
    index.add(np.random.default_rng(2).standard_normal((300, 4)))
    blob = index._ann.dump()
    ids, vectors = index.vectors()
    g = _graph_dict(blob, 4, index._params, ids, vectors)
    cum = ann._links_per_level(2)
    assert g["levels"].max() >= 2
    low = int(np.flatnonzero(g["levels"] == 1)[0])
    owner = int(np.flatnonzero(g["levels"] >= 2)[0])
    at = int(g["offsets"][owner]) + int(cum[1])  # the owner's first link on level 1 ...
    forged = _graph_blob(_variant(g, "neighbors", at, low))  # ... to a node only on level 0
    with pytest.raises(ValueError, match="above its level"):
        ann.check_hnsw_graph(forged, 4, index._params, ids, vectors)
    ann.check_hnsw_graph(blob, 4, index._params, ids, vectors)  # the original passes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_hnsw_graph_bytes(tmp_path, saved, data):
    """Random bytes in the graph (checksums recomputed): refused, or loaded and searchable."""
    pytest.importorskip("faiss")
    head, blobs = split(saved[("hnsw", "cosine", "float32")])
    blob = bytearray(blobs["ann"])
    for _ in range(data.draw(st.integers(1, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    index = fuzz_outcome(tmp_path / "f.gtv", forge(head, {**blobs, "ann": bytes(blob)}))
    if index is not None:
        index.search(np.ones(index.dim), min(3, len(index)))  # the graph answers without crashing


# -- reads bounded by the opened file --------------------------------------------------------
def test_sizes_claimed_beyond_the_file_allocate_nothing(tmp_path, saved):
    """A small file whose header claims a 2.8 GB vectors section (valid header CRC) is refused
    by the size of the opened file, before any allocation."""
    data = saved[("exact", "ip", "float32")]
    head, _ = split(data)
    bad = copy.deepcopy(head)
    vec = next(s for s in bad["sections"] if s["name"] == "vectors")
    vec["shape"] = [175_000_000, 4]
    vec["nbytes"] = 175_000_000 * 16
    bad["config"]["count"] = 175_000_000
    path = _written(tmp_path, forge_table(data, bad))
    tracemalloc.start()
    try:
        with pytest.raises(VectorIndexFileError):
            VectorIndex.load(path)
        assert tracemalloc.get_traced_memory()[1] < 32 << 20
    finally:
        tracemalloc.stop()


def test_sparse_file_is_checksummed_before_allocating(tmp_path, saved):
    """A sparse file of 256 MiB (a few KiB on disk) whose header describes it consistently but
    whose checksums are wrong: each section's checksum is streamed through the file in
    chunks before the section is allocated."""
    head, blobs = split(saved[("exact", "l2", "float32")])
    n = (256 << 20) // 16
    bad = _with(head, ("config", "count"), n)
    for s in bad["sections"]:
        if s["name"] in ("vectors", "norms", "ids"):
            s["shape"] = [n, 4] if s["name"] == "vectors" else [n]
    holes = {"vectors": (16 * n, 1), "norms": (4 * n, 2), "ids": (8 * n, 3)}
    forged = forge(bad, {"metadata": blobs["metadata"], "ann": blobs["ann"]}, holes)
    path = _written(tmp_path, forged)
    with open(path, "r+b") as fh:
        fh.truncate(file_end(forged))
    assert os.path.getsize(path) > 256 << 20
    tracemalloc.start()
    try:
        with pytest.raises(VectorIndexFileError, match="checksum"):
            VectorIndex.load(path)
        assert tracemalloc.get_traced_memory()[1] < 40 << 20  # the 16 MiB chunk buffer, not the sections
    finally:
        tracemalloc.stop()


def test_non_regular_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.gtv"
    os.mkfifo(fifo)
    outcome: list = []

    def load():
        try:
            VectorIndex.load(fifo)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "load blocked on a FIFO"
    assert isinstance(outcome[0], VectorIndexFileError) and "regular" in str(outcome[0])
    for other in (tmp_path, os.devnull):
        with pytest.raises(VectorIndexFileError, match="regular"):
            VectorIndex.load(other)
    with pytest.raises(FileNotFoundError):
        VectorIndex.load(tmp_path / "missing.gtv")


# -- saving ------------------------------------------------------------------------------------
def test_save_through_a_symlink_keeps_the_link(tmp_path):
    target = tmp_path / "real.gtv"
    link = tmp_path / "link.gtv"
    small_index().save(target)
    link.symlink_to(target)
    bigger = small_index(n=40, seed=3)
    bigger.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(VectorIndex.load(target)) == len(bigger) == len(VectorIndex.load(link))
    assert sorted(os.listdir(tmp_path)) == ["link.gtv", "real.gtv"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_save_keeps_the_permission_bits(tmp_path, mode):
    path = tmp_path / "i.gtv"
    small_index().save(path)
    os.chmod(path, mode)
    small_index(seed=5).save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_file_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        small_index().save(tmp_path / "new.gtv")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.gtv").st_mode) == 0o666 & ~umask


def test_save_fsyncs_the_file_then_the_directory_after_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(vector_io.os, "fsync", fsync)
    monkeypatch.setattr(vector_io.os, "replace", replace)
    small_index().save(tmp_path / "i.gtv")
    assert events == ["fsync file", "replace", "fsync dir"]


def test_save_refuses_to_replace_a_non_regular_file(tmp_path):
    fifo = tmp_path / "pipe.gtv"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        small_index().save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and sorted(os.listdir(tmp_path)) == ["pipe.gtv"]


# -- compatibility ------------------------------------------------------------------------------
def test_files_without_meta_types_still_load(tmp_path, saved):
    """Files written before ``meta_types`` existed: column types are inferred from the values
    (a column that mixed types then loads as an object column), the rest is as before."""
    head, blobs = split(saved[("exact", "ip", "float32")])
    old = copy.deepcopy(head)
    del old["config"]["meta_types"]
    meta = json.loads(blobs["metadata"])
    meta["mixed"] = [1, "a"] + [None] * (len(meta["w"]) - 2)
    old["config"]["meta_dtypes"]["mixed"] = "|O"
    index = load_outcome(tmp_path / "f.gtv", forge(old, {**blobs, "metadata": json.dumps(meta).encode()}))
    assert index is not None
    assert index._meta_types == {"sym": "str", "w": "int", "x": "float", "mixed": "object"}
    assert index._snap.meta["mixed"][:2].tolist() == [1, "a"]
    got = index.search(np.ones(4), 2, filter={"mixed": "a"})[1]
    assert got[0] == index.vectors()[0][1] and got[1] == -1
    index.save(tmp_path / "again.gtv")  # JSON scalars in an object column still save
    assert VectorIndex.load(tmp_path / "again.gtv")._meta_types["mixed"] == "object"


def test_id_bounds_in_files(tmp_path, saved):
    head, blobs = split(saved[("exact", "ip", "float32")])
    ids = np.frombuffer(blobs["ids"], "<i8").copy()
    for next_id in (MAX_ID + 2, 2**63, -1):
        with pytest.raises(VectorIndexFileError, match="next_id"):
            VectorIndex.load(_written(tmp_path, forge(_with(head, ("config", "next_id"), next_id), blobs)))
    ids[0] = MAX_ID
    fine = forge(_with(head, ("config", "next_id"), MAX_ID + 1), {**blobs, "ids": ids.tobytes()})
    loaded = load_outcome(tmp_path / "f.gtv", fine)
    with pytest.raises(ValueError, match="used up"):
        loaded.add(np.ones(4))
    assert math.isfinite(float(loaded.search(np.ones(4), 1)[0][0]))


# -- compressed storage (binary scales, PQ codebooks) -----------------------------------------
def _compressed_file(tmp_path, dtype: str, metric: str = "l2") -> bytes:
    rng = np.random.default_rng(5)
    index = VectorIndex(8, metric, dtype=dtype)
    index.add(rng.standard_normal((300, 8)))
    index.save(tmp_path / "c.gtv")
    return (tmp_path / "c.gtv").read_bytes()


def _edited(data: bytes, name: str, edit) -> bytes:
    """``data`` with section ``name``'s array (as the header types it) replaced by ``edit(array)``."""
    head, blobs = split(data)
    meta = next(s for s in head["sections"] if s["name"] == name)
    arr = np.frombuffer(blobs[name], dtype=meta["dtype"]).reshape(meta["shape"]).copy()
    new = edit(arr)
    meta["shape"], meta["dtype"] = list(new.shape), new.dtype.str
    blobs[name] = new.tobytes()
    return forge(head, blobs)


@pytest.mark.parametrize("dtype", ["pq16", "pq32", "binary"])
def test_compressed_file_round_trip_answers_exactly(tmp_path, dtype):
    data = _compressed_file(tmp_path, dtype)
    path = tmp_path / "c.gtv"
    back = VectorIndex.load(path, mmap=True)
    vectors = back.vectors()[1].astype(np.float64)
    q = np.random.default_rng(6).standard_normal((3, 8))
    scores, ids = back.search(q, 5)
    d = ((vectors[None] - q[:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(scores, np.sort(d, axis=1)[:, :5], rtol=1e-4, atol=1e-4)
    assert data == path.read_bytes()


@pytest.mark.parametrize("dtype,name,edit,message", [
    ("pq16", "codebooks", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, np.nan, a).astype("<f4"),
     "codebooks must be finite"),
    ("pq16", "codebooks", lambda a: a[:, :128].copy(), "codebooks"),
    ("pq32", "vectors", lambda a: a.astype("<f4"), "vectors"),
    ("binary", "scales", lambda a: -a, "not negative"),
    ("binary", "vectors", lambda a: a[:, :0].copy(), "vectors"),
])
def test_compressed_file_with_bad_codes_is_refused(tmp_path, dtype, name, edit, message):
    path = tmp_path / "bad.gtv"
    path.write_bytes(_edited(_compressed_file(tmp_path, dtype), name, edit))
    with pytest.raises(VectorIndexFileError, match=message):
        VectorIndex.load(path)


def test_pq_file_without_codebooks_is_refused(tmp_path):
    head, blobs = split(_compressed_file(tmp_path, "pq16"))
    head["sections"] = [s for s in head["sections"] if s["name"] != "codebooks"]
    del blobs["codebooks"]
    path = tmp_path / "bad.gtv"
    path.write_bytes(forge(head, blobs))
    with pytest.raises(VectorIndexFileError, match="sections"):
        VectorIndex.load(path)
