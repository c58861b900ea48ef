"""The .npy / .npz reader: fixtures written by numpy (scripts/make_fixtures_numpy.py), round
trips through clean and restore, real git, fuzzing, and dedup across versions of an archive."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import make_repo, sha256
from format_helpers import (assert_checkout_restores, assert_survives, clean_restore, damage,
                            pointers_shallow_and_deep, tensor_lines, walk_layout)
from gitmodel import checkpoint, pointer
from gitmodel.formats import Segment, detect, numpy_files
from gitmodel.formats.stream import PeekableStream
from gitmodel.store.objects import Store

DATA = Path(__file__).parent / "data" / "numpy"
EXPECTED: dict[str, list[dict]] = json.loads((DATA / "expected.json").read_text("utf-8"))


def walk(data: bytes, max_peek: int = 128 << 20, reader=detect):
    """Consume the stream as clean does: (format, [(position, segment)], metadata, tail)."""
    layout, segments, tail = walk_layout(data, max_peek, reader)
    return layout.format, segments, layout.metadata, tail


tensors = tensor_lines


# ----------------------------------------------------------------------------- fixtures

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_tensors_match_numpy(name):
    data = (DATA / name).read_bytes()
    fmt, segments, metadata, tail = walk(data)
    assert fmt == name[-3:]
    want = [(a["name"], a["dtype"], tuple(a["shape"])) for a in EXPECTED[name] if a["dtype"]]
    assert tensors(segments) == want
    # Segments are contiguous from byte 0 and each tensor's bytes are the array's own bytes.
    position = 0
    for at, segment in segments:
        assert at == position
        position += segment.length
    assert position + tail == len(data)
    fortran = {a["name"] for a in EXPECTED[name] if a["fortran_order"] and a["dtype"]}
    listed = metadata.get("fortran_order", "")
    assert set(filter(None, listed.split(","))) == fortran
    if name == "object.npy":
        return                                   # np.load would need allow_pickle
    loaded = np.load(DATA / name)
    arrays = {"array": loaded} if name.endswith(".npy") else dict(loaded)
    for at, segment in segments:
        if segment.tensor:
            array = arrays[segment.tensor.name]
            assert list(array.shape) == list(segment.tensor.shape)
            order = "F" if segment.tensor.name in fortran else "C"
            assert data[at:at + segment.length] == array.tobytes(order=order)


def test_expected_json_agrees_with_numpy():
    """expected.json is what numpy says about each file (names, dtypes, shapes)."""
    for name, arrays in EXPECTED.items():
        if name == "object.npy":
            continue
        loaded = np.load(DATA / name)
        found = {"array": loaded} if name.endswith(".npy") else dict(loaded)
        assert [a["name"] for a in arrays] == list(found)
        for a in arrays:
            array = found[a["name"]]
            assert (a["numpy_dtype"], a["shape"]) == (array.dtype.str, list(array.shape))


def test_npy_header_is_opaque_and_data_is_one_tensor():
    data = (DATA / "f32.npy").read_bytes()
    _, segments, _, tail = walk(data)
    assert [s for _, s in segments] == [Segment(128), Segment(64 * 128 * 4, segments[1][1].tensor)]
    assert segments[1][1].tensor.name == numpy_files.ARRAY_NAME and tail == 0


@pytest.mark.parametrize("name", ["big_endian.npy", "structured.npy", "strings.npy", "object.npy"])
def test_undescribed_arrays_are_header_then_opaque_tail(name):
    data = (DATA / name).read_bytes()
    fmt, segments, _, tail = walk(data)
    assert fmt == "npy" and len(segments) == 1 and segments[0][1].tensor is None
    assert tail == len(data) - segments[0][1].length > 0


def test_compressed_entries_are_opaque_and_descriptors_stop_the_walk():
    _, segments, _, tail = walk((DATA / "compressed.npz").read_bytes())
    assert tensors(segments) == [] and len(segments) == 2          # one opaque segment per entry
    _, segments, _, tail = walk((DATA / "descriptor.npz").read_bytes())
    assert segments == [] and tail == (DATA / "descriptor.npz").stat().st_size


def test_trailing_bytes_after_an_npy_are_the_tail():
    data = (DATA / "f16.npy").read_bytes() + b"trailing junk"
    fmt, segments, _, tail = walk(data)
    assert fmt == "npy" and tensors(segments) == [("array", "F16", (3, 5, 7))] and tail == 13


# ----------------------------------------------------------------------------- other zips and hostile headers

def _zip(entries: list[tuple[str, bytes]], compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, payload in entries:
            z.writestr(name, payload)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_zips_that_are_not_npz_are_left_to_other_readers():
    torch_like = _zip([("archive/data.pkl", b"\x80\x02}q\x00."), ("archive/data/0", b"\0" * 64)])
    assert numpy_files.read_layout(PeekableStream(io.BytesIO(torch_like))) is None
    npy_second = _zip([("readme.txt", b"hi"), ("a.npy", _npy(np.ones(4, "<f4")))])
    assert numpy_files.read_layout(PeekableStream(io.BytesIO(npy_second))) is None
    assert numpy_files.read_layout(PeekableStream(io.BytesIO(b"PK\x03\x04short"))) is None


def test_npz_with_other_entries_between_arrays():
    data = _zip([("a.npy", _npy(np.ones(4, "<f4"))), ("notes.txt", b"x" * 100),
                 ("sub/b.npy", _npy(np.zeros((2, 2), "<i8"))), ("c.npy", b"not an npy at all")])
    fmt, segments, _, tail = walk(data)
    assert fmt == "npz"
    assert tensors(segments) == [("a", "F32", (4,)), ("sub/b", "I64", (2, 2))]
    assert tail > 0                                  # the central directory


def test_zip64_sizes_are_read_and_a_missing_zip64_field_stops_the_walk():
    data = (DATA / "positional.npz").read_bytes()      # numpy writes zip64 local headers
    assert data[26:28] == b"\t\x00" and data[30 + 9:30 + 11] == b"\x01\x00"
    assert len(tensors(walk(data)[1])) == 2
    broken = data[:30 + 9] + b"\x99\x99" + data[30 + 11:]          # retag the zip64 extra field
    fmt, segments, _, tail = walk(broken)
    assert fmt == "npz" and segments == [] and tail == len(data)


def _npy_with_header(header: bytes, data: bytes = b"", version: int = 1) -> bytes:
    if version == 1:
        return numpy_files.MAGIC + bytes([1, 0]) + struct.pack("<H", len(header)) + header + data
    return numpy_files.MAGIC + bytes([version, 0]) + struct.pack("<I", len(header)) + header + data


@pytest.mark.parametrize("header", [
    b"{'descr': __import__('os').system('echo pwned'), 'fortran_order': False, 'shape': (1,)}",
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,)}",
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (True,)}",
    b"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
    b"{'descr': '<f4', 'fortran_order': False}",
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
    b"{'descr': '<f4', 'fortran_order': False, 'shape': [1]}",
    b"['descr', '<f4']",
    b"{" * 5000 + b"}" * 5000,
    b"(" * 100000,
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (" + b"9" * 5000 + b",)}",
    b"{'descr': '\\x3cf4', 'fortran_order': False, 'shape': (1,)}",
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
    b"\xff\xfe{'descr'",
    b"",
])
def test_hostile_npy_headers_never_raise_and_list_nothing(header):
    for version in (1, 2, 3):
        if version == 1 and len(header) > 0xFFFF:
            continue
        data = _npy_with_header(header, b"\0" * 16, version)
        fmt, segments, _, _ = walk(data)
        assert tensors(segments) == []
        text, restored = clean_restore(data)
        assert restored == data


def test_huge_shapes_are_not_tensors():
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 2)}"
    _, segments, _, _ = walk(_npy_with_header(header, b"\0" * 64))
    assert tensors(segments) == []
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (0, 9223372036854775807)}"
    _, segments, _, _ = walk(_npy_with_header(header))
    assert tensors(segments) == [("array", "F64", (0, 2**63 - 1))]


@pytest.mark.parametrize("levels, found", [(64, "npy"), (65, "opaque"), (150, "opaque")])
def test_npy_nesting_limit_does_not_depend_on_the_stack(levels, found):
    # 150 levels parsed near the top of the stack but not from a deep caller (the merge
    # driver): the pointer depended on who computed it. Now 64 is the limit, wherever.
    lists = levels - 1                                     # the header's dict is one level
    data = _npy_with_header(b"{'descr': " + b"[" * lists + b"]" * lists
                            + b", 'fortran_order': False, 'shape': (2,)}", b"\0" * 8)
    shallow, deep = pointers_shallow_and_deep(data)
    assert deep == shallow
    assert shallow.splitlines()[3:] == [f"format {found}"]     # a list descr: no tensor


@pytest.mark.parametrize("text, depth", [
    ("{'a': (1,)}", 2),
    ("{'a': '([{', \"b'[\": [()]}", 3),
    ("{'a': '''x'[('''}", 1),                    # a triple-quoted string holds quotes
    ('{"a": """(""", \'\'\'"\'\'\': [{}]}', 3),
    ("{'a': 1, # ((((\n 'b': [1]}", 2),          # a comment runs to the end of its line
    ("{'a': 1, # ((((", 1),
])
def test_npy_nesting_scan_skips_strings_and_comments(text, depth):
    assert not numpy_files._nesting_exceeds(text, depth)
    assert numpy_files._nesting_exceeds(text, depth - 1)


@pytest.mark.parametrize("text", ["{'a': 'x}", "{'a': '''x}", "{'a': 'x\n'}", "{'a': 'x\r'}",
                                  "{'a': ()))}"])
def test_npy_nesting_scan_refuses_what_python_does_not_tokenize(text):
    assert numpy_files._nesting_exceeds(text, 64)
    with pytest.raises(SyntaxError):
        compile(text, "header", "eval")


def _literal_depth(value: object) -> int:
    if isinstance(value, (list, tuple)):
        return 1 + max(map(_literal_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_literal_depth, value.values()), default=0)
    return 0


_literal_texts = st.text(st.sampled_from("'\"()[]{}#, ab"), max_size=6)
_literals = st.recursive(
    st.one_of(st.integers(-5, 5), st.booleans(), _literal_texts),
    lambda ch: st.one_of(st.lists(ch, max_size=3), st.lists(ch, max_size=3).map(tuple),
                         st.dictionaries(_literal_texts, ch, max_size=3)), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(_literal_texts, _literals, min_size=1, max_size=3))
def test_npy_nesting_scan_matches_the_literal_structure(value):
    text = repr(value)
    assume("\\" not in text)                     # headers with a backslash are refused first
    depth = _literal_depth(value)
    assert not numpy_files._nesting_exceeds(text, depth)
    assert numpy_files._nesting_exceeds(text, depth - 1)


def test_oversized_header_length_is_opaque():
    data = numpy_files.MAGIC + bytes([2, 0]) + struct.pack("<I", 2**31) + b"{" + b" " * 100
    assert walk(data)[0] == "opaque"
    assert walk(numpy_files.MAGIC + bytes([9, 0]) + b"\0" * 40)[0] == "opaque"


def test_truncated_array_data_gives_an_opaque_pointer(tmp_path):
    data = (DATA / "f32.npy").read_bytes()[:1000]
    text, restored = clean_restore(data, str(tmp_path))
    assert restored == data and b"format opaque" in text


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_clean_restore_round_trip(name, tmp_path):
    data = (DATA / name).read_bytes()
    text, restored = clean_restore(data, str(tmp_path))
    assert restored == data
    parsed = pointer.parse(text)
    assert parsed.format == name[-3:] and parsed.size == len(data)
    want = [(a["name"], a["dtype"], tuple(a["shape"])) for a in EXPECTED[name] if a["dtype"]]
    assert [(t.name, t.dtype, t.shape) for t in parsed.tensors] == want


def test_git_add_commit_checkout(tmp_path, git_env):
    repo = make_repo(tmp_path / "repo", git_env, track="*.npy *.npz")
    for name in ("model.npz", "f32.npy", "compressed.npz"):
        (repo.path / name).write_bytes((DATA / name).read_bytes())
    digests = {name: sha256(repo.path / name) for name in ("model.npz", "f32.npy", "compressed.npz")}
    repo.commit("arrays")

    shown = repo.git("show", "HEAD:model.npz").stdout.decode()
    assert shown.startswith("gitmodel pointer v1\n") and "format npz" in shown
    assert "embed F32 [200,64]" in shown and "layer.0.weight F16 [64,64]" in shown
    assert "steps I64 []" in shown and "col_major F32 [8,12]" in shown
    assert "fortran_order col_major" in shown
    shown = repo.git("show", "HEAD:f32.npy").stdout.decode()
    assert "format npy" in shown and "array F32 [64,128]" in shown

    assert_checkout_restores(repo, digests)


# ----------------------------------------------------------------------------- fuzzing

FUZZ_FILES = ["model.npz", "positional.npz", "compressed.npz", "f16.npy", "fortran.npy", "v3.npy"]


@st.composite
def damaged(draw):
    return damage(draw, (DATA / draw(st.sampled_from(FUZZ_FILES))).read_bytes())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged())
def test_damaged_files_never_raise_and_restore_exactly(data):
    assert_survives(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged(), max_peek=st.sampled_from([1, 8, 20, 64, 200, 4096]))
def test_damaged_files_with_a_small_peek_limit(data, max_peek):
    # Peeks beyond the limit must be avoided, not raised.
    walk(data, max_peek=max_peek, reader=numpy_files.read_layout)


# ----------------------------------------------------------------------------- dedup

def test_changing_one_array_shares_most_chunks(tmp_path):
    rng = np.random.default_rng(7)
    arrays = {f"layer{i}": rng.standard_normal((256, 256)).astype("<f4") for i in range(20)}
    before, after = tmp_path / "v1.npz", tmp_path / "v2.npz"
    np.savez(before, **arrays)
    arrays["layer7"] = arrays["layer7"] * np.float32(1.5)
    np.savez(after, **arrays)
    store = Store(tmp_path / "store")
    try:
        old = pointer.parse(checkpoint.clean(open(before, "rb"), store))
        new = pointer.parse(checkpoint.clean(open(after, "rb"), store))
        old_chunks = {c for c, _ in store.read_manifest(bytes.fromhex(old.content)).chunks}
        new_chunks = [c for c, _ in store.read_manifest(bytes.fromhex(new.content)).chunks]
    finally:
        store.close()
    shared = sum(c in old_chunks for c in new_chunks) / len(new_chunks)
    assert shared > 0.9, shared
    changed = [a.name for a, b in zip(old.tensors, new.tensors) if a.digest != b.digest]
    assert changed == ["layer7"]
