"""The compiled plane loops (gitmodel/store/_planes.c) against their numpy versions: the same
bytes for any input, and clear errors for buffers that do not fit."""

import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gitmodel.store import planes

try:
    from gitmodel.store import _planes as native
except ImportError:
    native = None

needs_native = pytest.mark.skipif(native is None, reason="the C extension was not built")


def test_compiled_loops_are_built_where_a_compiler_is():
    # scripts/test.sh asks for this when a C compiler is on PATH: an install that silently
    # fell back to numpy would otherwise pass every other test here by skipping them.
    if os.environ.get("GITMODEL_REQUIRE_NATIVE") != "1":
        pytest.skip("GITMODEL_REQUIRE_NATIVE is not set")
    assert native is not None, "gitmodel/store/_planes.c was not built: run `pip install -e .`"
    assert planes.compiled() == (os.environ.get("GITMODEL_NATIVE") != "0")


@pytest.fixture
def numpy_only(monkeypatch):
    monkeypatch.setattr(planes, "_native", None)


def _split_both(data: bytes, width: int, monkeypatch):
    n = len(data) // width
    compiled = np.full((width, n), 0xA5, np.uint8)
    native.split(data, width, compiled)
    with monkeypatch.context() as m:
        m.setattr(planes, "_native", None)
        reference = planes.split(data, width, np.empty((width, n), np.uint8))
    return compiled, reference


@needs_native
@settings(max_examples=300, deadline=None)
@given(width=st.integers(2, 16), data=st.binary(max_size=2000), spare=st.integers(0, 15))
def test_split_and_join_match_numpy(width, data, spare):
    with pytest.MonkeyPatch.context() as monkeypatch:
        body = len(data) - len(data) % width
        compiled, reference = _split_both(data, width, monkeypatch)
        assert compiled.tobytes() == reference.tobytes()
        rows = [bytes(row) for row in compiled]           # planes arrive as separate buffers
        joined = bytearray(b"\x5a" * (body + spare))
        native.join(rows, joined)
        expected = bytearray(b"\x5a" * (body + spare))
        monkeypatch.setattr(planes, "_native", None)
        planes.join(rows, expected)
        assert joined == expected
        assert joined[:body] == data[:body] and joined[body:] == b"\x5a" * spare


@needs_native
@settings(max_examples=300, deadline=None)
@given(width=st.sampled_from([2, 4, 8]), data=st.data())
def test_zigzag_words_match_numpy_at_any_offset(width, data):
    at = data.draw(st.integers(0, 2 * width + 1))
    count = data.draw(st.integers(0, 64))
    extra = data.draw(st.integers(0, 7))
    size = at + count * width + extra
    target = bytearray(data.draw(st.binary(min_size=size, max_size=size)))
    ref = data.draw(st.binary(min_size=size, max_size=size))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(planes, "_native", None)
        delta = bytearray(target)
        planes.zigzag_subtract(delta, ref, width, at, count)
        expected = bytearray(delta)
        planes.unzigzag_add(expected, ref, width, at, count)
    assert expected == target                                  # numpy round trip
    restored = bytearray(delta)
    native.unzigzag_add(restored, ref, width, at, count)
    assert restored == target                                  # compiled, same bytes
    assert restored[:at] == delta[:at] and restored[at + count * width:] == delta[at + count * width:]


@needs_native
def test_small_moves_make_small_zigzag_words():
    # The reason for the zigzag: a weight one ULP away, either way, differs by a small word.
    ref = np.array([1.0, 2.5, 3e-3, 7.0], np.float32)
    moved = np.nextafter(ref, np.array([0, np.inf, 0, np.inf], np.float32))
    delta = bytearray(moved.tobytes())
    planes.zigzag_subtract(delta, ref.tobytes(), 4, 0, 4)
    assert np.frombuffer(bytes(delta), "<u4").tolist() == [1, 2, 1, 2]    # -1, +1, -1, +1
    native.unzigzag_add(delta, ref.tobytes(), 4, 0, 4)
    assert bytes(delta) == moved.tobytes()


@needs_native
@pytest.mark.parametrize("call, message", [
    (lambda: native.join([b"ab", b"abc"], bytearray(8)), "different lengths"),
    (lambda: native.join([b"ab", b"cd"], bytearray(3)), "shorter"),
    (lambda: native.join([b"ab"], bytearray(4)), "1 planes"),
    (lambda: native.join([b"a"] * 17, bytearray(17)), "17 planes"),
    (lambda: native.split(b"abcd", 2, bytearray(5)), "whole number"),
    (lambda: native.split(b"abc", 2, bytearray(4)), "shorter"),
    (lambda: native.split(b"abcd", 1, bytearray(4)), "width 1"),
    (lambda: native.unzigzag_add(bytearray(8), bytes(8), 3, 0, 1), "width 3"),
    (lambda: native.unzigzag_add(bytearray(8), bytes(8), 4, 1, 2), "outside"),
    (lambda: native.unzigzag_add(bytearray(8), bytes(4), 4, 0, 2), "outside"),
    (lambda: native.unzigzag_add(bytearray(8), bytes(8), 4, -1, 1), "outside"),
    (lambda: native.unzigzag_add(bytearray(8), bytes(8), 8, 0, 1 << 61), "outside"),
])
def test_buffers_that_do_not_fit_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@needs_native
def test_plane_lengths_whose_total_overflows_are_refused():
    # Planes claiming 2**60 + 1 bytes each: 16 of them make 2**64 + 16, which wraps to 16 in
    # a signed 64-bit size. The check must refuse them before anything is read; the memory
    # behind the claimed length does not exist, so reading it would crash the test.
    import ctypes
    out = bytearray(16)
    address = ctypes.addressof((ctypes.c_char * 16).from_buffer(out))
    claimed = (ctypes.c_char * (2**60 + 1)).from_address(address + 4096)
    with pytest.raises(ValueError, match="shorter"):
        native.join([claimed] * 16, out)


@needs_native
@pytest.mark.skipif(sys.version_info < (3, 12), reason="buffer exports written in Python need 3.12")
def test_a_list_of_planes_changed_while_it_is_read():
    # A plane whose export empties the list: join must go on with the items it was given (the
    # list read in place would have its remaining items freed under it).
    planes = []

    class Clearing:
        def __buffer__(self, flags):
            planes.clear()
            return memoryview(b"ab")
    planes.extend([Clearing(), b"cd", b"ef"])
    out = bytearray(6)
    native.join(planes, out)
    assert bytes(out) == b"acebdf"


@needs_native
def test_overlapping_buffers_are_refused():
    whole = bytearray(64)
    view = memoryview(whole)
    with pytest.raises(ValueError, match="overlaps"):
        native.join([view[0:8], view[8:16]], view[4:20])
    with pytest.raises(ValueError, match="overlaps"):
        native.split(view[0:16], 2, view[8:24])
    with pytest.raises(ValueError, match="overlaps"):
        native.unzigzag_add(view[0:16], view[8:24], 4, 0, 4)
    with pytest.raises(BufferError):
        native.join([b"ab", b"cd"], b"read-only")                  # output must be writable
    native.join([view[0:8], view[8:16]], view[16:32])               # side by side: fine
    assert bytes(view[16:32]) == bytes(16)


def test_numpy_fallback_round_trips(numpy_only):
    assert not planes.compiled()
    data = bytes(range(256)) * 3
    rows = planes.split(data, 4, np.empty((4, 192), np.uint8))
    out = bytearray(768)
    planes.join([bytes(r) for r in rows], out)
    assert bytes(out) == data


@needs_native
@settings(max_examples=200, deadline=None)
@given(width=st.sampled_from([2, 4, 8, 3, 16]), data=st.binary(max_size=3000),
       noise=st.binary(min_size=64, max_size=64))
def test_codec_writes_and_reads_the_same_bytes_either_way(width, data, noise):
    # A store written with the compiled loops reads back without them, and the other way.
    from gitmodel.store import codec
    base = (noise * (len(data) // 64 + 1))[:len(data)]
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(planes, "_native", None)
        slow = codec.encode(data, width)
        slow_delta = codec.encode_delta(data, base, [b"b" * 32], 0, width, 1)
    fast = codec.encode(data, width)
    assert fast == slow
    assert codec.encode_delta(data, base, [b"b" * 32], 0, width, 1) == slow_delta
    bases = lambda ids: [base]                                       # noqa: E731
    for encoding, payload in (fast, (codec.DELTA, slow_delta)):
        assert bytes(codec.decode(encoding, payload, len(data), bases)) == data
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(planes, "_native", None)
            assert bytes(codec.decode(encoding, payload, len(data), bases)) == data
