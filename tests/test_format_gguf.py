"""The GGUF reader: fixtures written by the `gguf` package (scripts/make_fixtures_gguf.py; the
expected tensor lists come from gguf.GGUFReader), hand-built edge cases, round trips through
clean and restore, real git, fuzzing, and dedup across versions of a model."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_repo, sha256
from format_helpers import assert_checkout_restores, assert_survives, clean_restore, damage, tensor_lines, walk_layout
from gitmodel import checkpoint, pointer
from gitmodel.formats import Segment, Tensor, detect, gguf
from gitmodel.store.objects import Store

DATA = Path(__file__).parent / "data" / "gguf"
EXPECTED: dict[str, dict] = json.loads((DATA / "expected.json").read_text("utf-8"))


def walk(data: bytes, max_peek: int = 128 << 20, reader=detect):
    """Consume the stream as clean does: (format, [(position, segment)], metadata, tail)."""
    layout, segments, tail = walk_layout(data, max_peek, reader)
    return layout.format, segments, layout.metadata, tail


tensors = tensor_lines


# ----------------------------------------------------------------------------- a GGUF writer for edge cases

def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return u64(len(raw)) + raw


def kv_str(key: str, value: str) -> bytes:
    return gstr(key) + u32(8) + gstr(value)


def kv_u32(key: str, value: int) -> bytes:
    return gstr(key) + u32(4) + u32(value)


def kv_strings(key: str, values: list[str]) -> bytes:
    return gstr(key) + u32(9) + u32(8) + u64(len(values)) + b"".join(gstr(v) for v in values)


def build(tensors: list[tuple[str, int, list[int], bytes]], kvs: list[bytes] = (), version: int = 3,
          alignment: int = 32, offsets: list[int] | None = None) -> bytes:
    """A GGUF file: tensors as (name, ggml type, dims innermost first, data), laid out in order
    at aligned offsets (or at the given offsets)."""
    infos, section = [], bytearray()
    for i, (name, ggml_type, dims, raw) in enumerate(tensors):
        at = offsets[i] if offsets else -(-len(section) // alignment) * alignment
        section[len(section):] = bytes(max(0, at + len(raw) - len(section)))
        section[at:at + len(raw)] = raw
        infos.append(gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(ggml_type) + u64(at))
    head = b"GGUF" + u32(version) + u64(len(tensors)) + u64(len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += bytes(-len(head) % alignment)
    return head + bytes(section)


def f32(*dims: int, seed: int = 0) -> bytes:
    """F32 data for GGUF dims (innermost first)."""
    return np.random.default_rng(seed).standard_normal(int(np.prod(dims))).astype("<f4").tobytes()


# ----------------------------------------------------------------------------- fixtures

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_tensors_match_gguf_reader(name):
    data = (DATA / name).read_bytes()
    expected = EXPECTED[name]
    fmt, segments, metadata, tail = walk(data)
    assert fmt == "gguf"
    assert segments[0] == (0, Segment(expected["data_start"]))
    got = [{"name": s.tensor.name, "dtype": s.tensor.dtype, "shape": list(s.tensor.shape),
            "n_bytes": s.length, "data_offset": at} for at, s in segments if s.tensor]
    want = [{k: t[k] for k in ("name", "dtype", "shape", "n_bytes", "data_offset")}
            for t in expected["tensors"]]
    assert got == want
    # Everything between the tensors is opaque; the segments cover the file from byte 0.
    position = 0
    for at, segment in segments:
        assert at == position
        position += segment.length
    assert position + tail == len(data) and tail < expected["alignment"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_general_metadata(name):
    _, _, metadata, _ = walk((DATA / name).read_bytes())
    want = {}
    for key, value in EXPECTED[name]["metadata"].items():
        if isinstance(value, bool):
            want[key] = "true" if value else "false"
        elif isinstance(value, float):
            want[key] = format(value, ".7g")
        else:
            want[key] = str(value)
    assert metadata == want
    assert metadata["general.name"] and metadata["general.architecture"]
    assert "general.tags" not in metadata                  # arrays are skipped


def test_fixture_shapes_are_numpy_order():
    t = {x["name"]: x for x in EXPECTED["tiny_f32_f16.gguf"]["tensors"]}
    assert t["token_embd.weight"]["shape"] == [100, 32]          # written from a (100, 32) array
    assert t["blk.0.ffn_up.weight"]["shape"] == [2, 64, 32]


def test_quantized_sizes_follow_the_block_table():
    for t in EXPECTED["quantized.gguf"]["tensors"]:
        ggml_type = next(k for k, v in gguf.GGML_TYPES.items() if v[0] == t["dtype"])
        _, block, block_bytes = gguf.GGML_TYPES[ggml_type]
        assert t["n_bytes"] == int(np.prod(t["shape"])) // block * block_bytes


def test_known_block_sizes():
    # bytes per block, from ggml's block structs
    sizes = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34, "Q8_1": 40,
             "Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210, "Q8_K": 292,
             "IQ2_XXS": 66, "IQ2_XS": 74, "IQ3_XXS": 98, "IQ1_S": 50, "IQ4_NL": 18, "IQ3_S": 110,
             "IQ2_S": 82, "IQ4_XS": 136, "IQ1_M": 56, "TQ1_0": 54, "TQ2_0": 66, "MXFP4": 17}
    table = {name: block_bytes for name, _, block_bytes in gguf.GGML_TYPES.values()}
    for name, size in sizes.items():
        assert table[name] == size, name


# ----------------------------------------------------------------------------- edge cases

def test_version_2_is_read_and_version_1_is_opaque():
    data = build([("w", 0, [4, 2], f32(4, 2))], [kv_str("general.name", "v2")], version=2)
    fmt, segments, metadata, _ = walk(data)
    assert fmt == "gguf" and tensors(segments) == [("w", "F32", (2, 4))]
    assert metadata == {"general.name": "v2"}
    assert walk(build([("w", 0, [4], f32(4))], version=1))[0] == "opaque"
    big_endian = b"GGUF" + struct.pack(">I", 3) + build([("w", 0, [4], f32(4))])[8:]
    assert walk(big_endian)[0] == "opaque"


def test_tensors_listed_in_offset_order_with_holes_opaque():
    data = build([("late", 0, [8], f32(8)), ("early", 1, [4], bytes(8))], offsets=[64, 0])
    _, segments, _, tail = walk(data)
    start = segments[0][1].length
    assert [s for _, s in segments] == [
        Segment(start), Segment(8, Tensor("early", "F16", (4,))), Segment(56),
        Segment(32, Tensor("late", "F32", (8,)))]
    assert tail == 0


def test_unknown_type_ends_the_listing():
    data = build([("a", 0, [4], f32(4)), ("odd", 31, [4], bytes(64)), ("b", 0, [4], f32(4))])
    fmt, segments, _, tail = walk(data)
    assert fmt == "gguf" and tensors(segments) == [("a", "F32", (4,))] and tail > 0


def test_rows_not_whole_blocks_end_the_listing():
    data = build([("a", 0, [4], f32(4)), ("q", 8, [33, 1], bytes(68))])
    assert tensors(walk(data)[1]) == [("a", "F32", (4,))]
    data = build([("a", 0, [4], f32(4)), ("q", 8, [], bytes(34))])       # a quantized scalar
    assert tensors(walk(data)[1]) == [("a", "F32", (4,))]


def test_overlapping_tensors_end_the_listing():
    data = build([("a", 0, [16], f32(16)), ("b", 0, [16], f32(16))], offsets=[0, 32])
    assert tensors(walk(data)[1]) == [("a", "F32", (16,))]


@pytest.mark.parametrize("kvs", [
    [kv_u32("general.alignment", 48)],
    [kv_u32("general.alignment", 0)],
    [gstr("general.alignment") + u32(10) + u64(32)],            # u64: llama.cpp wants u32
    [kv_u32("general.alignment", 32), kv_u32("general.alignment", 32)],
    [gstr("x") + u32(13) + u32(0)],                             # no value type 13
    [gstr("x") + u32(9) + u32(13) + u64(1)],                    # nor array element type 13
    [gstr("x") + u32(9) + u32(0) + u64(1 << 60)],               # an array longer than the file
    [gstr("x") + u32(9) + u32(8) + u64(1 << 60)],
    [gstr("x") + u32(8) + u64(1 << 40)],                        # a string longer than the file
    [gstr(b"k" * (gguf.MAX_NAME + 1)) + u32(4) + u32(0)],
])
def test_malformed_headers_are_opaque(kvs):
    data = build([("w", 0, [4], f32(4))], kvs)
    assert walk(data)[0] == "opaque"
    text, restored = clean_restore(data)
    assert restored == data and b"format opaque" in text


def test_alignment_is_honoured():
    data = build([("a", 0, [3], f32(3)), ("b", 0, [5], f32(5))], [kv_u32("general.alignment", 256)],
                 alignment=256)
    _, segments, metadata, _ = walk(data)
    assert segments[0][1].length % 256 == 0 and segments[2][1].length == 256 - 12
    assert metadata["general.alignment"] == "256"


def test_bad_tensor_infos_are_opaque():
    too_many_dims = gstr("w") + u32(9) + u64(1) * 9 + u32(0) + u64(0)
    head = b"GGUF" + u32(3) + u64(1) + u64(0) + too_many_dims
    assert walk(head + bytes(64))[0] == "opaque"
    assert walk(build([(b"\xff\xfe", 0, [4], f32(4))]))[0] == "opaque"       # name not UTF-8
    assert walk(b"GGUF" + u32(3) + u64(gguf.MAX_TENSORS + 1) + u64(0))[0] == "opaque"
    assert walk(b"GGUF" + u32(3) + u64(1) + u64(1 << 62))[0] == "opaque"   # runs off the end


def test_large_vocabulary_is_walked_past():
    vocab = [f"token-{i}-" + "x" * (i % 40) for i in range(150_000)]      # about 5 MB
    kvs = [kv_str("general.architecture", "llama"), kv_strings("tokenizer.ggml.tokens", vocab),
           gstr("tokenizer.ggml.scores") + u32(9) + u32(6) + u64(len(vocab)) + bytes(4 * len(vocab)),
           kv_str("general.name", "big vocab")]
    data = build([("w", 0, [4, 2], f32(4, 2))], kvs)
    assert len(data) > 4 * gguf.FIRST_PEEK
    fmt, segments, metadata, _ = walk(data)
    assert fmt == "gguf" and tensors(segments) == [("w", "F32", (2, 4))]
    assert metadata == {"general.architecture": "llama", "general.name": "big vocab"}
    # A header that does not fit in the peek limit leaves the file opaque.
    assert walk(data, max_peek=2 << 20, reader=gguf.read_layout)[0] == "opaque"


def test_nested_arrays_are_skipped_and_depth_is_bounded():
    inner = u32(4) + u64(2) + u32(1) + u32(2)                           # array of 2 u32
    nested = gstr("nested") + u32(9) + u32(9) + u64(2) + inner + inner
    data = build([("w", 0, [4], f32(4))], [nested, kv_str("general.name", "n")])
    assert walk(data)[2] == {"general.name": "n"}
    deep = u32(4) + u64(0)
    for _ in range(10):
        deep = u32(9) + u64(1) + deep
    assert walk(build([("w", 0, [4], f32(4))], [gstr("deep") + u32(9) + deep]))[0] == "opaque"


def test_metadata_is_bounded():
    kvs = [kv_str(f"general.k{i:03}", "v" * 5000) for i in range(200)]
    kvs += [gstr("general.n") + u32(11) + struct.pack("<q", -5), gstr("other.key") + u32(8) + gstr("no")]
    _, _, metadata, _ = walk(build([("w", 0, [4], f32(4))], kvs))
    assert len(metadata) == gguf.MAX_METADATA
    assert all(len(v) <= gguf.MAX_VALUE_BYTES for v in metadata.values())
    text, _ = clean_restore(build([("w", 0, [4], f32(4))], kvs))
    assert pointer.parse(text).metadata[0][0] == "general.k000"


def test_zero_element_and_scalar_tensors():
    data = build([("empty", 0, [0, 7], b""), ("scalar", 0, [], f32(1)), ("huge", 0, [0, 2**64 - 1], b"")])
    _, segments, _, _ = walk(data)
    assert tensors(segments) == [("empty", "F32", (7, 0)), ("scalar", "F32", ()),
                                 ("huge", "F32", (2**64 - 1, 0))]
    text, restored = clean_restore(data)
    assert restored == data and pointer.parse(text).render() == text


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_clean_restore_round_trip(name, tmp_path):
    data = (DATA / name).read_bytes()
    text, restored = clean_restore(data, str(tmp_path))
    assert restored == data
    parsed = pointer.parse(text)
    assert parsed.format == "gguf" and parsed.size == len(data)
    assert [(t.name, t.dtype, list(t.shape)) for t in parsed.tensors] == \
        [(t["name"], t["dtype"], t["shape"]) for t in EXPECTED[name]["tensors"]]
    assert dict(parsed.metadata)["general.name"] == EXPECTED[name]["metadata"]["general.name"]


def test_git_add_commit_checkout(tmp_path, git_env):
    repo = make_repo(tmp_path / "repo", git_env, track="*.gguf")
    names = ["quantized.gguf", "tiny_f32_f16.gguf"]
    for name in names:
        (repo.path / name).write_bytes((DATA / name).read_bytes())
    digests = {name: sha256(repo.path / name) for name in names}
    repo.commit("models")

    shown = repo.git("show", "HEAD:quantized.gguf").stdout.decode()
    assert shown.startswith("gitmodel pointer v1\n") and "format gguf" in shown
    assert "blk.0.q4_k.weight Q4_K [8,256]" in shown and "blk.0.q8_0.weight Q8_0 [8,256]" in shown
    assert "token_embd.weight F32 [64,256]" in shown
    assert "general.name tiny-quantized" in shown and "general.architecture llama" in shown
    shown = repo.git("show", "HEAD:tiny_f32_f16.gguf").stdout.decode()
    assert "blk.0.ffn_up.weight F16 [2,64,32]" in shown and "blk.0.ffn_bf16.weight BF16 [16,32]" in shown

    assert_checkout_restores(repo, digests)


# ----------------------------------------------------------------------------- fuzzing

@st.composite
def damaged(draw):
    # Damage lands in the header most of the time: that is where the parsing is.
    name = draw(st.sampled_from(sorted(EXPECTED)))
    return damage(draw, (DATA / name).read_bytes(), focus=EXPECTED[name]["data_start"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged())
def test_damaged_files_never_raise_and_restore_exactly(data):
    assert_survives(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged(), max_peek=st.sampled_from([1, 8, 100, 4096]))
def test_damaged_files_with_a_small_peek_limit(data, max_peek):
    walk(data, max_peek=max_peek, reader=gguf.read_layout)


# ----------------------------------------------------------------------------- dedup

def test_changing_one_tensor_shares_most_chunks(tmp_path):
    vocab = kv_strings("tokenizer.ggml.tokens", [f"t{i}" for i in range(5000)])
    model = [(f"blk.{i}.weight", 0, [256, 256], f32(256, 256, seed=i)) for i in range(20)]
    before = build(model, [kv_str("general.name", "v1"), vocab])
    model[7] = (model[7][0], 0, [256, 256], f32(256, 256, seed=99))
    after = build(model, [kv_str("general.name", "v2 with a longer name"), vocab])
    store = Store(tmp_path / "store")
    try:
        old = pointer.parse(checkpoint.clean(io.BytesIO(before), store))
        new = pointer.parse(checkpoint.clean(io.BytesIO(after), store))
        old_chunks = {c for c, _ in store.read_manifest(bytes.fromhex(old.content)).chunks}
        new_chunks = [c for c, _ in store.read_manifest(bytes.fromhex(new.content)).chunks]
    finally:
        store.close()
    shared = sum(c in old_chunks for c in new_chunks) / len(new_chunks)
    assert shared > 0.9, shared
    assert [a.name for a, b in zip(old.tensors, new.tensors) if a.digest != b.digest] == ["blk.7.weight"]
