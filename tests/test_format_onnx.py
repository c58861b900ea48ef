"""The ONNX reader: fixtures written by the `onnx` package (scripts/make_fixtures_onnx.py; the
expected initializer lists come from onnx.load), hand-encoded ModelProtos for field orders and
sizes the library never writes, round trips through clean and restore, real git, fuzzing, and
dedup across versions of a model."""

from __future__ import annotations

import hashlib
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_repo, sha256
from format_helpers import assert_checkout_restores, clean_restore, damage, tensor_lines, walk_layout
from gitmodel import checkpoint, pointer
from gitmodel.formats import detect, onnx
from gitmodel.formats.stream import PeekableStream
from gitmodel.store.objects import Store

DATA = Path(__file__).parent / "data" / "onnx"
EXPECTED: dict[str, dict] = json.loads((DATA / "expected.json").read_text("utf-8"))


def walk(data: bytes, max_peek: int = 128 << 20):
    """Consume the stream as clean does: (format, [(position, segment)], metadata, tail)."""
    layout, segments, tail = walk_layout(data, max_peek, onnx.read_layout)
    return layout.format, segments, layout.metadata, tail


tensors = tensor_lines


# ----------------------------------------------------------------------------- a tiny encoder

def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def fld(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def tensor_proto(name: str | None, data_type: int | None, dims, raw: bytes | None, order="ndtr",
                 packed=False, extra: bytes = b"") -> bytes:
    """A TensorProto with its fields in `order`: n(ame), d(ims), t(ype), r(aw_data), x(extra)."""
    parts = {"n": fld(8, name.encode()) if name is not None else b"",
             "d": fld(1, b"".join(varint(d) for d in dims)) if packed else b"".join(fld(1, d) for d in dims),
             "t": fld(2, data_type) if data_type is not None else b"",
             "r": fld(9, raw) if raw is not None else b"",
             "x": extra}
    return b"".join(parts[c] for c in order)


def model(initializers: list[bytes], nodes: bytes = b"", ir_version: int = 9, after_graph: bytes = b"",
          before_graph: bytes = b"") -> bytes:
    graph = nodes + fld(2, b"g") + b"".join(fld(5, t) for t in initializers)
    head = fld(1, ir_version) + fld(2, b"hand") + fld(3, b"0.1") + before_graph
    return head + fld(7, graph) + fld(8, fld(1, b"") + fld(2, 18)) + after_graph


def f32(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).standard_normal(n, dtype=np.float32).tobytes()


# ----------------------------------------------------------------------------- fixtures

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_tensors_match_the_onnx_library(name):
    data = (DATA / name).read_bytes()
    fmt, segments, metadata, _ = walk(data)
    want = EXPECTED[name]
    assert fmt == "onnx"
    assert tensors(segments) == [(t["name"], t["dtype"], tuple(t["shape"])) for t in want["tensors"]]
    for (position, segment), t in zip([p for p in segments if p[1].tensor], want["tensors"]):
        assert hashlib.sha256(data[position:position + segment.length]).hexdigest() == t["sha256"]
    for key, value in want["metadata"].items():
        assert metadata[key] == value
    # Covers the file from 0 in order.
    position = 0
    for at, segment in segments:
        assert at == position
        position += segment.length
    assert position <= len(data)


def test_fixture_metadata_and_opaque_initializers():
    _, _, metadata, _ = walk((DATA / "mlp.onnx").read_bytes())
    assert metadata["producer_version"] == "1.0" and metadata["graph_name"] == "mlp"
    assert metadata["author"] == "gitmodel" and metadata["license"] == "CC0"     # metadata_props
    assert EXPECTED["float_data.onnx"]["opaque_initializers"] == ["w.listed", "shape.listed"]
    assert EXPECTED["external.onnx"]["opaque_initializers"] == ["fc1.weight"]
    _, _, metadata, _ = walk((DATA / "external.onnx").read_bytes())
    assert metadata["external_initializers"] == "1"


def test_external_data_file_and_other_files_are_not_onnx():
    for data in [(DATA / "external.onnx.data").read_bytes(), (DATA / "expected.json").read_bytes(),
                 b"", b"\x08", b"\x08\x07", fld(1, 9) + fld(2, b"no graph"), b"PK\x03\x04" + bytes(100),
                 fld(1, 0) + fld(7, b""), fld(1, 5000) + fld(7, b""),          # ir_version out of range
                 fld(2, b"x") + fld(1, 9) + fld(7, b""),                       # ir_version not first
                 fld(1, 9) + fld(2, b"\xff\xfe") + fld(7, b""),                # producer not UTF-8
                 fld(1, 9) + fld(7, fld(3, 1)),                                # not a GraphProto field
                 fld(1, 9) + fld(7, fld(1, b"x" * 50)[:10]),                   # graph field too long
                 fld(1, 9) + fld(99, 1) + fld(7, b""),                         # unknown field first
                 fld(1, 9) + fld(6, b"d" * (5 << 20)) + fld(7, b"")]:          # graph starts too late
        assert walk(data)[0] == "opaque"
        assert detect(PeekableStream(io.BytesIO(data))).format != "onnx"
    assert walk(fld(1, 9) + fld(7, b""))[0] == "onnx"                         # an empty graph


def test_random_bytes_are_not_claimed():
    rng = np.random.default_rng(1)
    claimed = sum(walk(rng.bytes(4096))[0] == "onnx" for _ in range(2000))
    assert claimed == 0


# ----------------------------------------------------------------------------- field orders, sizes

def test_field_orders_and_packed_dims():
    raw = f32(6)
    for order in ["ndtr", "dtnr", "rndt", "ntrd", "trnd"]:
        for packed in (False, True):
            data = model([tensor_proto("w", 1, [2, 3], raw, order, packed)])
            fmt, segments, _, _ = walk(data)
            assert fmt == "onnx" and tensors(segments) == [("w", "F32", (2, 3))], (order, packed)
            ((at, seg),) = [p for p in segments if p[1].tensor]
            assert data[at:at + seg.length] == raw


_CODES = {1: ("F32", 4), 10: ("F16", 2), 16: ("BF16", 2), 11: ("F64", 8), 7: ("I64", 8), 6: ("I32", 4),
          5: ("I16", 2), 3: ("I8", 1), 2: ("U8", 1), 9: ("BOOL", 1), 17: ("F8_E4M3", 1), 19: ("F8_E5M2", 1)}


@st.composite
def initializers(draw):
    """(TensorProto bytes, expected (name, dtype, shape) or None, raw bytes)."""
    code = draw(st.sampled_from(sorted(_CODES)))
    dims = draw(st.lists(st.integers(0, 5), max_size=3))
    nbytes = math.prod(dims) * _CODES[code][1]
    raw = draw(st.binary(min_size=nbytes, max_size=nbytes))
    name = draw(st.text(min_size=1, max_size=20).filter(lambda s: "\ufffd" not in s))
    order = "".join(draw(st.permutations("ndtrx")))
    extra = draw(st.sampled_from([b"", fld(12, b"doc"), fld(3, fld(1, 0) + fld(2, 4)),
                                  fld(16, fld(1, b"k"))]))
    if draw(st.booleans()):              # a listed initializer: no raw_data, stays opaque
        return tensor_proto(name, code, dims, None, order, extra=fld(4, bytes(8)) + extra), None, b""
    proto = tensor_proto(name, code, dims, raw, order, draw(st.booleans()), extra)
    return proto, (name, _CODES[code][0], tuple(dims)), raw


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inits=st.lists(initializers(), max_size=6), nodes=st.binary(max_size=50))
def test_hand_encoded_models_list_exactly_their_raw_initializers(inits, nodes):
    data = model([p for p, _, _ in inits], nodes=fld(1, nodes))
    fmt, segments, _, _ = walk(data)
    assert fmt == "onnx"
    assert tensors(segments) == [want for _, want, _ in inits if want]
    found = [data[at:at + s.length] for at, s in segments if s.tensor]
    assert found == [raw for _, want, raw in inits if want]


def test_large_tensor_with_name_after_raw_data_is_reread_whole():
    raw = f32(600_000)                                     # 2.4 MB: larger than SMALL_MESSAGE
    data = model([tensor_proto("big", 1, [600_000], raw, "rndt")])
    assert tensors(walk(data)[1]) == [("big", "F32", (600_000,))]


def test_huge_tensor_with_header_after_raw_data_is_named_by_position(monkeypatch):
    monkeypatch.setattr(onnx, "LATE_PEEK", 1 << 20)
    data = model([tensor_proto("a", 1, [4], f32(4)),
                  tensor_proto("late", 1, [600_000], f32(600_000), "rndt"),
                  tensor_proto(None, 10, [], bytes(3 << 20), "tr"),        # F16, no dims
                  tensor_proto("odd", 1, [], bytes((2 << 20) + 1), "tnr")])  # no whole elements
    assert tensors(walk(data)[1]) == [("a", "F32", (4,)), ("initializer#1", "U8", (2_400_000,)),
                                      ("initializer#2", "F16", (3 << 19,)), ("odd", "U8", ((2 << 20) + 1,))]


def test_inconsistent_or_unknown_types_fall_back_to_bytes():
    data = model([tensor_proto("short", 1, [2, 3], f32(5)),                # 20 bytes for 6 floats
                  tensor_proto("future", 99, [4], bytes(4)),
                  tensor_proto("string", 8, [2], b"ab"),
                  tensor_proto("neg", 1, [-1], f32(1)),
                  tensor_proto("", 1, [1], f32(1)),
                  tensor_proto("c128", 15, [2], bytes(32)),
                  tensor_proto("u2", 25, [5], bytes(2))])
    assert tensors(walk(data)[1]) == [("short", "F32", (5,)), ("future", "U8", (4,)), ("string", "U8", (2,)),
                                      ("neg", "F32", (1,)), ("initializer#4", "F32", (1,)),
                                      ("c128", "C128", (2,)), ("u2", "U2", (5,))]


def test_initializers_without_raw_data_stay_opaque():
    listed = fld(1, 2) + fld(2, 1) + fld(8, b"listed") + fld(4, np.ones(2, np.float32).tobytes())
    external = (fld(1, 4) + fld(2, 1) + fld(8, b"ext") + fld(13, fld(1, b"location") + fld(2, b"x.bin"))
                + fld(14, 1))
    data = model([listed, external, tensor_proto("w", 7, [2], bytes(16))])
    fmt, segments, metadata, _ = walk(data)
    assert tensors(segments) == [("w", "I64", (2,))] and metadata["external_initializers"] == "1"


def test_metadata_fields():
    props = fld(14, fld(1, b"k") + fld(2, b"v")) + fld(14, fld(1, b"ir_version") + fld(2, b"spoof"))
    data = model([], ir_version=10, before_graph=fld(4, b"com.example") + fld(5, 7),
                 after_graph=fld(8, fld(1, b"com.microsoft") + fld(2, 1)) + props)
    _, _, metadata, _ = walk(data)
    assert metadata == {"ir_version": "10", "producer_name": "hand", "producer_version": "0.1",
                        "domain": "com.example", "model_version": "7", "graph_name": "g",
                        "opset": "ai.onnx:18, com.microsoft:1", "k": "v"}


@pytest.mark.parametrize("max_peek", [64, 200, 5000, 1 << 16])
def test_small_peek_limits_flush_opaque_bytes_and_keep_offsets(max_peek):
    nodes = b"".join(fld(1, fld(1, b"in%d" % i) + fld(4, b"Relu")) for i in range(3000))
    raws = [f32(50 * (i + 1), i) for i in range(6)]
    protos = [tensor_proto(f"t{i}", 1, [len(r) // 4], r) for i, r in enumerate(raws)]
    data = model(protos, nodes=nodes)
    fmt, segments, _, _ = walk(data, max_peek=max_peek)
    assert fmt == "onnx"
    found = [(data[at:at + s.length], s.tensor.name) for at, s in segments if s.tensor]
    assert all(raws[int(name[1:])] == raw for raw, name in found)
    # a TensorProto bigger than the peek limit cannot be planned and stays opaque
    assert [name for _, name in found] == [f"t{i}" for i, p in enumerate(protos) if len(p) <= max_peek]


def test_huge_opaque_node_list_is_walked_past():
    nodes = fld(1, bytes(60 << 20))                       # beyond MAX_AHEAD: flushed, never peeked
    data = model([tensor_proto("w", 1, [3], f32(3))], nodes=nodes)
    fmt, segments, _, _ = walk(data)
    assert tensors(segments) == [("w", "F32", (3,))]


def test_truncated_and_overlong_lengths():
    good = model([tensor_proto("a", 1, [256], f32(256)), tensor_proto("b", 1, [300_000], f32(300_000))])
    # Cut inside b's data: b, larger than SMALL_MESSAGE, is claimed from its header, so clean
    # finds the file shorter than its layout and gives an opaque pointer; bytes stay intact.
    cut = good[:-40]
    assert tensors(walk(cut)[1]) == [("a", "F32", (256,)), ("b", "F32", (300_000,))]
    with tempfile.TemporaryDirectory() as root:
        text, restored = clean_restore(cut, root)
    assert restored == cut and pointer.parse(text).format == "opaque"
    # A small TensorProto is only planned when all of it is there.
    small = model([tensor_proto("a", 1, [256], f32(256)), tensor_proto("b", 1, [256], f32(256))])[:-40]
    with tempfile.TemporaryDirectory() as root:
        text, restored = clean_restore(small, root)
    assert restored == small and [t.name for t in pointer.parse(text).tensors] == ["a"]
    # raw_data longer than its TensorProto: that tensor is not claimed.
    bad = model([tensor_proto("a", 1, [2], f32(2))])
    i = bad.index(fld(9, f32(2))[:2])
    bad = bad[:i + 1] + bytes([9]) + bad[i + 2:]
    assert tensors(walk(bad)[1]) == []


def test_nesting_and_counts_are_bounded(monkeypatch):
    monkeypatch.setattr(onnx, "MAX_GRAPH_FIELDS", 10)
    nodes = b"".join(fld(1, b"n") for _ in range(20))
    data = model([tensor_proto("w", 1, [1], f32(1))], nodes=nodes)
    fmt, segments, _, tail = walk(data)
    assert fmt == "onnx" and tensors(segments) == [] and tail > 0
    many_dims = tensor_proto("d", 2, [1] * 100, b"\x01")
    assert tensors(walk(model([many_dims]))[1]) == [("d", "U8", (1,))]


# ----------------------------------------------------------------------------- clean, git

@pytest.mark.parametrize("name", ["mlp.onnx", "float_data.onnx", "external.onnx", "external.onnx.data"])
def test_clean_restore_round_trip(name, tmp_path):
    data = (DATA / name).read_bytes()
    text, restored = clean_restore(data, str(tmp_path))
    assert restored == data
    ptr = pointer.parse(text)
    if name in EXPECTED:
        assert ptr.format == "onnx"
        assert [(t.name, t.dtype, list(t.shape)) for t in ptr.tensors] == \
            [(t["name"], t["dtype"], t["shape"]) for t in EXPECTED[name]["tensors"]]
        assert dict(ptr.metadata)["opset"] == "ai.onnx:17"


def test_git_add_commit_checkout(tmp_path, git_env):
    repo = make_repo(tmp_path / "repo", git_env, track="*.onnx")
    target = repo.path / "mlp.onnx"
    target.write_bytes((DATA / "mlp.onnx").read_bytes())
    want = sha256(target)
    repo.commit("add model", "mlp.onnx")
    shown = repo.out("show", "HEAD:mlp.onnx")
    assert "format onnx" in shown and "tensors 13" in shown
    assert "\nfc1.weight F32 [32,16] " in shown and "\nfc2.weight F16 [8,32] " in shown
    assert "producer_name gitmodel-fixtures" in shown
    assert_checkout_restores(repo, {"mlp.onnx": want})


# ----------------------------------------------------------------------------- fuzzing

def _samples() -> list[bytes]:
    return [(DATA / "mlp.onnx").read_bytes(), (DATA / "float_data.onnx").read_bytes(),
            model([tensor_proto("a", 1, [8], f32(8), "rndt"),
                   tensor_proto("b", 10, [2, 2], bytes(8), packed=True)],
                  nodes=fld(1, fld(4, b"Relu")))]


@st.composite
def damaged(draw):
    return damage(draw, draw(st.sampled_from(_samples())), ops=4, insert_max=12)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=damaged())
def test_damaged_files_never_raise_and_restore_exactly(data):
    walk(data)
    detect(PeekableStream(io.BytesIO(data)))
    with tempfile.TemporaryDirectory() as root:
        text, restored = clean_restore(data, root)
    assert restored == data
    assert pointer.parse(text).size == len(data) if data else text == b""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged(), max_peek=st.integers(16, 4096))
def test_damaged_files_with_a_small_peek_limit(data, max_peek):
    walk(data, max_peek=max_peek)


# ----------------------------------------------------------------------------- dedup

def test_changing_one_tensor_shares_most_chunks(tmp_path):
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(256 * 1024, dtype=np.float32) for _ in range(8)]   # 1 MiB each

    def build(arrays, doc: bytes) -> bytes:
        inits = [tensor_proto(f"layer{i}.weight", 1, [512, 512], a.tobytes()) for i, a in enumerate(arrays)]
        return model(inits, nodes=fld(1, fld(4, b"MatMul") + fld(6, doc)))

    one = build(arrays, b"first")
    changed = list(arrays)
    changed[3] = changed[3] + 1
    two = build(changed, b"second version, longer")      # bytes before every tensor shift too
    store = Store(tmp_path / "store")
    try:
        first = pointer.parse(checkpoint.clean(io.BytesIO(one), store))
        size = lambda name: (store.pack_dir / f"{name}.pack").stat().st_size  # noqa: E731
        packs = {name: size(name) for name in store.packs()}
        second = pointer.parse(checkpoint.clean(io.BytesIO(two), store))
        added = sum(size(name) for name in store.packs() if name not in packs)
    finally:
        store.close()
    assert first.format == second.format == "onnx" and len(second.tensors) == 8
    differ = [a.name for a, b in zip(first.tensors, second.tensors) if a.digest != b.digest]
    assert differ == ["layer3.weight"]
    assert added < 0.25 * sum(packs.values())
