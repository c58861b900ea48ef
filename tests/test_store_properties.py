"""Property and unit tests for the store: chunker, codec, manifest, pack index, Store."""

from __future__ import annotations

import dataclasses

import os
import struct
import tempfile
import threading
from pathlib import Path

import blake3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyfastcdc import FastCDC

from gitmodel.store import chunker, codec, files, table
from gitmodel.store.chunker import MAX_SIZE, MIN_SIZE, BufferPool, Cutter, cut_all
from gitmodel.store.fsck import check as fsck_check
from gitmodel.store.manifest import MAGIC as MANIFEST_MAGIC
from gitmodel.store.manifest import (UNNAMED, UNNAMED_MAX_ENTRIES, Manifest, ManifestError, check_head,
                                     max_entries)
from gitmodel.store.objects import CHUNK, MANIFEST, CorruptObject, MissingObjects, Store, StoreError
from gitmodel.store.pack import (
    INDEX_MAGIC, PACK_MAGIC, Entry, PackError, PackWriter, decode_index, encode_index, publish_into,
    record_head,
)

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- helpers

def _random_bytes(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _floats(seed: int, n: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n, dtype=np.float32) * 0.02).astype(np.float32)


def _bf16_bits(seed: int, n: int) -> bytes:
    return (_floats(seed, n).view(np.uint32) >> 16).astype(np.uint16).tobytes()


@st.composite
def cdc_data(draw) -> bytes:
    """Mixtures of incompressible, constant and periodic runs, up to ~1.5 MiB: enough to give
    many chunks, max-size cuts (constant runs) and short tails."""
    parts = []
    for kind, length, seed in draw(st.lists(
            st.tuples(st.sampled_from(["random", "zeros", "pattern", "floats"]),
                      st.integers(0, 400_000), st.integers(0, 2**32 - 1)),
            min_size=1, max_size=4)):
        if kind == "random":
            parts.append(_random_bytes(seed, length))
        elif kind == "zeros":
            parts.append(bytes(length))
        elif kind == "pattern":
            unit = _random_bytes(seed, 1 + seed % 997)
            parts.append((unit * (length // len(unit) + 1))[:length])
        else:
            parts.append(_floats(seed, length // 4).tobytes())
    return b"".join(parts)


def _put(store: Store, items: list[tuple[bytes, int]], writer: PackWriter | None = None) -> list[bytes]:
    """Write (data, width) chunks through a writer and publish it; returns their ids."""
    writer = writer or store.writer()
    oids = []
    for data, width in items:
        oid = blake3.blake3(data).digest()
        encoding, payload = codec.encode(data, width)
        writer.add(oid, CHUNK, encoding, len(data), payload)
        oids.append(oid)
    store.publish(writer)
    return oids


def _mixed_items() -> list[tuple[bytes, int]]:
    """Objects that take each encoding: RAW, ZSTD, GROUPED."""
    items = [
        (_random_bytes(1, 3000), 1),                       # RAW
        (b"the quick brown fox " * 200, 1),                # ZSTD
        (_floats(2, 2048).tobytes(), 4),                   # GROUPED (f32)
        (_bf16_bits(3, 2048), 2),                          # GROUPED (bf16)
        (b"", 1),                                          # empty
    ]
    encodings = {codec.encode(d, w)[0] for d, w in items}
    assert encodings == {codec.RAW, codec.ZSTD, codec.GROUPED}
    return items


# ----------------------------------------------------------------------------- chunker

def _feed(cutter: Cutter, pool: BufferPool, block: bytes, keep: list | None = None) -> list:
    """Write `block` into the cutter through space()/filled(), as clean does. Completed chunks
    are copied and their buffer handed back to the pool (so reuse is exercised) - unless `keep`
    is given: then the views are returned as they are and the buffers kept out of the pool."""
    out, view = [], memoryview(block)
    while len(view):
        space = cutter.space()
        assert len(space) > 0, "space() is never empty"
        n = min(len(space), len(view))
        space[:n] = view[:n]
        chunks, buffer = cutter.filled(n)
        if keep is None:
            out += [bytes(c) for c in chunks]
            pool.give(buffer)
        else:
            out += chunks
            keep.append(buffer)
        view = view[n:]
    return out


def _finish(cutter: Cutter, pool: BufferPool, keep: list | None = None) -> list:
    chunks, buffer = cutter.finish()
    if keep is None:
        out = [bytes(c) for c in chunks]
        pool.give(buffer)
        return out
    keep.append(buffer)
    return list(chunks)


def _fastcdc(data: bytes) -> list[bytes]:
    cdc = FastCDC(chunker.AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE, seed=chunker.SEED)
    return [bytes(memoryview(data)[c.offset:c.offset + c.length]) for c in cdc.cut_buf(data)] \
        if data else []


buffer_sizes = st.one_of(st.just(None), st.integers(MAX_SIZE + 1, 3 * MAX_SIZE))


@SETTINGS
@given(data=cdc_data(), size=buffer_sizes, st_data=st.data())
def test_cutter_block_splits_do_not_change_chunks(data, size, st_data):
    cuts = sorted(st_data.draw(st.lists(st.integers(0, len(data)), max_size=12), label="cuts"))
    bounds = [0, *cuts, len(data)]
    pool = BufferPool(size) if size else BufferPool()
    cutter, chunks = Cutter(pool), []
    for a, b in zip(bounds, bounds[1:]):
        chunks += _feed(cutter, pool, data[a:b])
    chunks += _finish(cutter, pool)

    assert chunks == cut_all(data)                   # the same bytes written at once
    assert chunks == _fastcdc(data)                  # pyfastcdc over the whole buffer
    assert b"".join(chunks) == data
    assert all(chunks), "no empty chunks"
    for c in chunks[:-1]:
        assert MIN_SIZE <= len(c) <= MAX_SIZE
    if chunks:
        assert 0 < len(chunks[-1]) <= MAX_SIZE


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(data=cdc_data(), size=buffer_sizes, step=st.integers(1, 300_000))
def test_cutter_views_stay_valid_until_their_buffer_is_given_back(data, size, step):
    """Chunks are views into pool buffers: while the caller holds a buffer, the cutter must not
    write into it again."""
    pool = BufferPool(size) if size else BufferPool()
    cutter, held, views = Cutter(pool), [], []
    for i in range(0, len(data), step):
        views += _feed(cutter, pool, data[i:i + step], keep=held)
    views += _finish(cutter, pool, keep=held)
    assert [bytes(v) for v in views] == _fastcdc(data)
    buffers = [b for b in held if b is not None]
    assert len({id(b) for b in buffers}) == len(buffers), "a buffer was handed out twice"


def test_cutter_runs_and_reuse():
    data = _random_bytes(7, 3 * MAX_SIZE)
    expected = _fastcdc(data)
    assert len(expected) > 3
    pool = BufferPool(MAX_SIZE + 1)
    for _ in range(3):                         # buffers come back from the pool each time
        cutter = Cutter(pool)
        got = []
        for i in range(0, len(data), 4099):    # odd block size, many blocks per chunk
            got += _feed(cutter, pool, data[i:i + 4099])
        got += _finish(cutter, pool)
        assert got == expected


def test_cutter_small_and_empty_inputs():
    pool = BufferPool()
    assert cut_all(b"") == [] and _finish(Cutter(pool), pool) == []
    cutter = Cutter(pool)
    assert _feed(cutter, pool, b"x") == [] and _finish(cutter, pool) == [b"x"]
    assert cut_all(bytes(MIN_SIZE - 1)) == [bytes(MIN_SIZE - 1)]
    zeros = cut_all(bytes(3 * MAX_SIZE + 5))
    assert [len(c) for c in zeros] == [MAX_SIZE] * 3 + [5]
    assert _fastcdc(bytes(3 * MAX_SIZE + 5)) == zeros


# ----------------------------------------------------------------------------- codec

WIDTHS = [1, 2, 3, 4, 8, 16]


def _check_round_trip(data: bytes, width: int) -> tuple[int, bytes]:
    encoding, payload = codec.encode(data, width)
    assert encoding in (codec.RAW, codec.ZSTD, codec.GROUPED)
    if encoding == codec.RAW:
        assert payload == data
    else:
        assert len(payload) < len(data), "a non-RAW encoding must be smaller"
    assert codec.decode(encoding, payload, len(data)) == data
    assert codec.decode(encoding, memoryview(payload), len(data)) == data      # as Store.read does
    for start in (0, 3):                   # decoded into a caller's buffer, aligned or not
        out = np.full(len(data) + start, 0xA5, np.uint8)[start:]
        assert codec.decode(encoding, payload, len(data), out=out) is out
        assert out.tobytes() == data
    return encoding, payload


@SETTINGS
@given(data=st.binary(max_size=3000), width=st.sampled_from(WIDTHS))
def test_codec_round_trip_arbitrary_bytes(data, width):
    _check_round_trip(data, width)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 5000), width=st.sampled_from(WIDTHS),
       kind=st.sampled_from(["floats", "bf16", "zeros", "repeat", "random"]))
def test_codec_round_trip_structured(seed, n, width, kind):
    if kind == "floats":
        data = _floats(seed, n // 4).tobytes() + _random_bytes(seed, n % 4)
    elif kind == "bf16":
        data = _bf16_bits(seed, n // 2) + _random_bytes(seed, n % 2)
    elif kind == "zeros":
        data = bytes(n)
    elif kind == "repeat":
        data = (b"\x01\x02\x03\x04\x05\x06\x07" * (n // 7 + 1))[:n]
    else:
        data = _random_bytes(seed, n)
    _check_round_trip(data, width)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("n", list(range(0, 20)) + [31, 33, 63, 65])
def test_codec_round_trip_tiny_and_odd_lengths(width, n):
    for data in (bytes(n), _random_bytes(n, n), bytes(range(n)) * 3):
        _check_round_trip(data, width)


@pytest.mark.parametrize("kind,width", [("f32", 4), ("bf16", 2)])
@pytest.mark.parametrize("extra", [0, 1, 3])
def test_codec_float_data_is_grouped_and_smaller(kind, width, extra):
    n = 16384
    data = (_floats(11, n).tobytes() if kind == "f32" else _bf16_bits(11, n)) + b"\x7f" * extra
    encoding, payload = _check_round_trip(data, width)
    assert encoding == codec.GROUPED
    assert payload[0] == width
    # Byte grouping must beat both the raw bytes and plain zstd of the same bytes.
    zstd_encoding, zstd_payload = codec.encode(data, 1)
    assert zstd_encoding in (codec.ZSTD, codec.RAW)
    assert len(payload) < len(zstd_payload) < len(data) + 1
    assert len(payload) < 0.95 * len(data)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 3000), width=st.sampled_from(WIDTHS[1:]),
       start=st.integers(0, 7))
def test_grouped_payload_follows_the_documented_layout(seed, n, width, start):
    """Read a GROUPED payload the way docs/formats.md describes it, independently of the codec's
    own decoder: u8 width, width x (u8 mode, u32le length), the planes (plane k = bytes k,
    k+w, ... of the body), the tail raw. The chunk sits at an odd offset in its buffer, as
    chunks cut from a read buffer do."""
    import struct
    import zstandard
    data = _bf16_bits(seed, n // 2) + _random_bytes(seed, n % 2) if width == 2 else \
        (_floats(seed, n // 4).tobytes() + _random_bytes(seed, n % 4))
    buffer = bytearray(start) + bytearray(data)
    encoding, payload = codec.encode(memoryview(buffer)[start:], width)
    if encoding != codec.GROUPED:
        return
    assert payload[0] == width
    body = len(data) - len(data) % width
    pos = 1 + 5 * width
    for k in range(width):
        mode, stored = struct.unpack_from("<BI", payload, 1 + 5 * k)
        plane = payload[pos:pos + stored]
        pos += stored
        if mode == 1:
            plane = zstandard.ZstdDecompressor().decompress(plane)
        assert plane == data[k:body:width], f"plane {k}"
    assert payload[pos:] == data[body:]


@st.composite
def damaged(draw):
    """(encoding, payload, raw_length, original data, damage kind)."""
    kind = draw(st.sampled_from(["floats", "text", "binary"]))
    seed = draw(st.integers(0, 2**32 - 1))
    if kind == "floats":
        width = draw(st.sampled_from([2, 4, 8]))
        data = _floats(seed, draw(st.integers(0, 600))).tobytes() + _random_bytes(seed, draw(st.integers(0, 7)))
    elif kind == "text":
        width = draw(st.sampled_from(WIDTHS))
        data = b"tensor data %d " % seed * draw(st.integers(0, 200))
    else:
        width = draw(st.sampled_from(WIDTHS))
        data = draw(st.binary(max_size=600))
    encoding, payload = codec.encode(data, width)
    raw_length = len(data)
    damage = draw(st.sampled_from(["truncate", "flip", "flips", "append", "length", "encoding",
                                   "unknown", "none"]))
    if damage == "truncate" and payload:
        payload = payload[:draw(st.integers(0, len(payload) - 1))]
    elif damage in ("flip", "flips") and payload:
        buf = bytearray(payload)
        for _ in range(1 if damage == "flip" else draw(st.integers(2, 8))):
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= draw(st.integers(1, 255))
        payload = bytes(buf)
    elif damage == "append":
        payload += draw(st.binary(min_size=1, max_size=20))
    elif damage == "length":
        raw_length = draw(st.one_of(st.integers(0, 2 * len(data) + 16),
                                    st.integers(0, 2**32 - 1)))
    elif damage == "encoding":
        encoding = draw(st.sampled_from([e for e in (codec.RAW, codec.ZSTD, codec.GROUPED) if e != encoding]))
    elif damage == "unknown":
        encoding = draw(st.one_of(st.just(codec.DELTA), st.integers(4, 255)))
    return encoding, payload, raw_length, data, damage


@settings(max_examples=300, deadline=None)
@given(case=damaged())
def test_codec_decode_damaged_payload_fails_cleanly(case):
    encoding, payload, raw_length, data, damage = case
    try:
        out = codec.decode(encoding, payload, raw_length)
    except codec.CodecError:
        return
    # Anything returned has exactly the promised length (wrong bytes of the right length are
    # left to the caller's BLAKE3 check); an undamaged payload decodes to the original.
    assert isinstance(out, (bytes, bytearray, memoryview))
    assert len(bytes(out)) == raw_length
    if damage == "none":
        assert out == data


def test_codec_decode_specific_damage():
    data = _floats(5, 4096).tobytes()
    encoding, payload = codec.encode(data, 4)
    assert encoding == codec.GROUPED
    with pytest.raises(codec.CodecError):
        codec.decode(encoding, b"", len(data))
    with pytest.raises(codec.CodecError):
        codec.decode(encoding, payload[:5], len(data))            # truncated plane table
    with pytest.raises(codec.CodecError):
        codec.decode(encoding, payload[:-1], len(data))           # truncated last plane
    with pytest.raises(codec.CodecError):
        codec.decode(encoding, payload + b"\0", len(data))        # stray tail byte
    with pytest.raises(codec.CodecError):
        codec.decode(encoding, bytes([1]) + payload[1:], len(data))   # width 1 is not grouped
    with pytest.raises(codec.CodecError):
        codec.decode(encoding, bytes([17]) + payload[1:], len(data))  # width too large
    bad_mode = bytearray(payload)
    bad_mode[1] = 2                                               # plane mode 2 does not exist
    with pytest.raises(codec.CodecError):
        codec.decode(encoding, bytes(bad_mode), len(data))
    for wrong in (0, len(data) - 1, len(data) + 1, len(data) + 4):
        with pytest.raises(codec.CodecError):
            codec.decode(encoding, payload, wrong)
    with pytest.raises(codec.CodecError):                        # not a delta payload
        codec.decode(codec.DELTA, payload, len(data), lambda ids: [b""])
    with pytest.raises(codec.UnknownEncoding):
        codec.decode(4, payload, len(data))
    with pytest.raises(codec.CodecError):
        codec.decode(99, payload, len(data))

    text = b"abc" * 1000
    encoding, payload = codec.encode(text)
    assert encoding == codec.ZSTD
    for bad in (b"", payload[:10], payload[:-1], b"\0" * len(payload)):
        with pytest.raises(codec.CodecError):
            codec.decode(codec.ZSTD, bad, len(text))
    for wrong in (0, len(text) - 1, len(text) + 1):
        with pytest.raises(codec.CodecError):
            codec.decode(codec.ZSTD, payload, wrong)
    with pytest.raises(codec.CodecError):
        codec.decode(codec.RAW, text, len(text) - 1)


def _huge_frame(payload: bytes) -> bytes:
    """The same zstd frame with its header rewritten to declare 2**60 bytes of content (single
    segment, 8-byte frame content size) - what one damaged header byte can do."""
    assert payload[:4] == b"\x28\xb5\x2f\xfd"
    fhd = payload[4]
    fcs_size = {0: 1 if fhd & 0x20 else 0, 1: 2, 2: 4, 3: 8}[fhd >> 6]
    window = 0 if fhd & 0x20 else 1
    dict_id = {0: 0, 1: 1, 2: 2, 3: 4}[fhd & 3]
    assert window == 0 and dict_id == 0
    return payload[:4] + bytes([0xE0]) + struct.pack("<Q", 1 << 60) + payload[5 + fcs_size:]


def test_decode_frame_declaring_huge_size_raises_codec_error():
    """Regression: a damaged zstd header declaring 2**60 bytes made decode raise MemoryError."""
    text = b"hello world " * 1000
    encoding, payload = codec.encode(text)
    assert encoding == codec.ZSTD
    with pytest.raises(codec.CodecError):
        codec.decode(codec.ZSTD, _huge_frame(payload), len(text))


def test_decode_frame_declaring_huge_size_in_grouped_plane_raises_codec_error():
    """Regression: the same MemoryError through a byte-group plane."""
    data = _floats(5, 4096).tobytes()
    encoding, payload = codec.encode(data, 4)
    assert encoding == codec.GROUPED
    head = struct.Struct("<BI")
    width = payload[0]
    pos = 1 + width * head.size
    planes = []
    for k in range(width):
        mode, stored = head.unpack_from(payload, 1 + k * head.size)
        planes.append([mode, payload[pos:pos + stored]])
        pos += stored
    k = next(i for i, (mode, _) in enumerate(planes) if mode == 1)
    planes[k][1] = _huge_frame(planes[k][1])
    rebuilt = bytes([width]) + b"".join(head.pack(m, len(p)) for m, p in planes) \
        + b"".join(p for _, p in planes) + payload[pos:]
    with pytest.raises(codec.CodecError):
        codec.decode(codec.GROUPED, rebuilt, len(data))


# ----------------------------------------------------------------------------- manifest

chunk_ids = st.binary(min_size=32, max_size=32)
any_manifests = st.lists(st.tuples(chunk_ids, st.integers(0, 2**32 - 1)), max_size=40).map(
    lambda chunks: Manifest(sum(n for _, n in chunks), chunks))
# What writers give: chunks of 1 byte to the chunker's maximum, no more than a file has.
manifests = st.lists(st.tuples(chunk_ids, st.integers(1, MAX_SIZE)), max_size=40).map(
    lambda chunks: Manifest(sum(n for _, n in chunks), chunks)).filter(
    lambda m: len(m.chunks) <= max_entries(m.size))


@SETTINGS
@given(m=manifests)
def test_manifest_round_trip(m):
    data = m.encode()
    assert len(data) == 24 + 36 * len(m.chunks)
    back = Manifest.decode(data)
    assert back == m
    assert back.encode() == data


@SETTINGS
@given(m=any_manifests)
def test_manifest_that_no_writer_gives_is_refused_or_reads_back(m):
    data = m.encode()
    lawful = len(m.chunks) <= max_entries(m.size) and all(0 < n <= MAX_SIZE for _, n in m.chunks)
    if lawful:
        assert Manifest.decode(data) == m
    else:
        with pytest.raises(ManifestError):
            Manifest.decode(data)


@SETTINGS
@given(m=manifests, st_data=st.data())
def test_manifest_damage_is_rejected(m, st_data):
    data = m.encode()
    cut = st_data.draw(st.integers(0, len(data) - 1), label="cut")
    with pytest.raises(ManifestError):
        Manifest.decode(data[:cut])
    with pytest.raises(ManifestError):
        Manifest.decode(data + st_data.draw(st.binary(min_size=1, max_size=40), label="extra"))
    # Any change to the magic, the size or the count is caught; a change to a chunk id is not
    # (the manifest's own BLAKE3 id covers that).
    i = st_data.draw(st.integers(0, 23), label="pos")
    bad = bytearray(data)
    bad[i] ^= st_data.draw(st.integers(1, 255), label="mask")
    with pytest.raises(ManifestError):
        Manifest.decode(bytes(bad))


@SETTINGS
@given(data=st.one_of(st.binary(max_size=200),
                      st.binary(max_size=200).map(lambda b: MANIFEST_MAGIC + b)))
def test_manifest_decode_arbitrary_bytes(data):
    try:
        m = Manifest.decode(data)
    except ManifestError:
        return
    assert m.encode() == data            # whatever is accepted is canonical


@SETTINGS
@given(pairs=st.lists(st.tuples(chunk_ids, st.integers(2, MAX_SIZE)), max_size=40),
       start=st.integers(-45, 45) | st.none(), stop=st.integers(-45, 45) | st.none(),
       step=st.sampled_from([None, 1, 2, 3, -1, -2]))
def test_manifest_entries_answer_as_the_list_they_encode(pairs, start, stop, step):
    """A decoded manifest keeps its entries encoded and reads them when asked: they answer as
    the list of (id, length) tuples they encode, by length, index from either end, slice and
    iteration, and a slice of them is a manifest's entries in turn."""
    chunks = Manifest.decode(Manifest(sum(n for _, n in pairs), pairs).encode()).chunks
    assert len(chunks) == len(pairs) and list(chunks) == pairs and chunks == pairs
    assert [chunks[i] for i in range(-len(pairs), len(pairs))] == pairs + pairs
    for outside in (len(pairs), -len(pairs) - 1):
        with pytest.raises(IndexError):
            chunks[outside]
    assert list(chunks[start:stop:step]) == pairs[start:stop:step]
    assert chunks[start:stop] == Manifest(0, pairs[start:stop]).chunks
    assert chunks.lengths().tolist() == [n for _, n in pairs]


def test_a_manifest_of_a_million_chunks_is_read_in_place():
    """Each entry was decoded into a tuple of two objects as the manifest was read: a million
    took some 200 MiB and most of a second, and ten million (the most a 20 MB file's pointer
    allows) 2 GiB and 7 s, where its bytes are 36 MB and 360 MB. Now they stay in the bytes;
    what it needs (stored.needed) is each distinct chunk once."""
    import tracemalloc
    from gitmodel import stored
    n, mid = 1_000_000, bytes(32)
    ids = [blake3.blake3(bytes([i, 255 - i])).digest() for i in range(256)]
    block = b"".join(struct.pack("<32sI", cid, 2) for cid in ids)
    data = struct.pack("<8sQQ", MANIFEST_MAGIC, 2 * n, n) + block * (n // 256) + block[:36 * (n % 256)]
    tracemalloc.start()
    try:
        m = Manifest.decode(data)
        need = stored.needed([mid], lambda _: m)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak >> 10} KiB"
    assert (m.size, len(m.chunks), m.chunks[-1]) == (2 * n, n, (ids[(n - 1) % 256], 2))
    assert need.chunks == ids and need.manifests == [mid]
    assert need.needed_by == {cid: [mid] for cid in ids}


def test_manifest_specific_rejections():
    cid = bytes(range(32))
    good = Manifest(10, [(cid, 4), (cid, 6)])
    data = good.encode()
    assert Manifest.decode(data) == good
    cases = [
        b"",
        data[:23],
        b"GMMANIF2" + data[8:],
        Manifest(11, [(cid, 4), (cid, 6)]).encode(),                       # sizes disagree
        struct.pack("<8sQQ", MANIFEST_MAGIC, 10, 3) + data[24:],            # count too high
        struct.pack("<8sQQ", MANIFEST_MAGIC, 10, 1) + data[24:],            # count too low
        struct.pack("<8sQQ", MANIFEST_MAGIC, 0, 2**64 - 1),                 # absurd count
    ]
    for bad in cases:
        with pytest.raises(ManifestError):
            Manifest.decode(bad)
    assert Manifest.decode(Manifest(0, []).encode()) == Manifest(0, [])


@SETTINGS
@given(declared=st.integers(0, 2**64 - 1), count=st.integers(0, 2**40),
       size=st.one_of(st.none(), st.just(UNNAMED), st.integers(0, 2**64 - 1)))
def test_a_manifest_head_is_bounded_by_its_pointer_or_as_one_no_pointer_names(declared, count, size):
    """check_head accepts a count within its own size field's bound and, when a pointer names
    it, its file's; a manifest read from a remote that no pointer names lists at most
    UNNAMED_MAX_ENTRIES, whatever its own size field says."""
    head = struct.pack("<8sQQ", MANIFEST_MAGIC, declared, count)
    limits = [max_entries(declared)]
    if size == UNNAMED:
        limits.append(UNNAMED_MAX_ENTRIES)
    elif size is not None:
        limits.append(max_entries(size))
    if count <= min(limits):
        assert check_head(head, 24 + 36 * count, size) == (declared, count)
    else:
        with pytest.raises(ManifestError, match=f"manifest lists {count} chunks, more than"):
            check_head(head, 24 + 36 * count, size)


def test_the_bound_of_a_manifest_no_pointer_names():
    head = struct.pack("<8sQQ", MANIFEST_MAGIC, 2**63, UNNAMED_MAX_ENTRIES + 1)
    with pytest.raises(ManifestError) as err:
        check_head(head, 24 + 36 * (UNNAMED_MAX_ENTRIES + 1), UNNAMED)
    assert str(err.value) == ("manifest lists 4194305 chunks, more than is read from a remote for a "
                              "checkpoint no pointer here names (at most 4194304); not decoded")
    assert check_head(head, 24 + 36 * (UNNAMED_MAX_ENTRIES + 1)) == (2**63, UNNAMED_MAX_ENTRIES + 1)
    assert check_head(head, 24 + 36 * (UNNAMED_MAX_ENTRIES + 1), 2**63) == (2**63, UNNAMED_MAX_ENTRIES + 1)


# ----------------------------------------------------------------------------- pack index

index_entries = st.dictionaries(
    chunk_ids,
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
              st.integers(0, 255), st.integers(0, 255)),
    max_size=30,
).map(lambda d: {oid: Entry("pack-x", *fields) for oid, fields in d.items()})


@SETTINGS
@given(entries=index_entries)
def test_index_round_trip(entries):
    name, data = encode_index(entries)
    assert data[:8] == INDEX_MAGIC
    assert len(data) == 12 + 50 * len(entries) + 32
    assert name == "pack-" + data[-32:].hex()          # the pack is named by its index
    decoded = decode_index(name, data)
    assert {oid: dataclasses.replace(e, pack="pack-x") for oid, e in decoded.items()} == entries
    assert all(e.pack == name for e in decoded.values())
    # Sorted by id: the same entries in another insertion order encode identically.
    assert encode_index(dict(reversed(list(entries.items())))) == (name, data)
    # An index under another pack's name is refused.
    with pytest.raises(PackError):
        decode_index("pack-" + "0" * 64, data)


@SETTINGS
@given(entries=index_entries, st_data=st.data())
def test_index_damage_raises_pack_error(entries, st_data):
    name, data = encode_index(entries)
    i = st_data.draw(st.integers(0, len(data) - 1), label="pos")
    bad = bytearray(data)
    bad[i] ^= st_data.draw(st.integers(1, 255), label="mask")
    with pytest.raises(PackError):
        decode_index("pack-x", bytes(bad))
    with pytest.raises(PackError):
        decode_index("pack-x", data[:st_data.draw(st.integers(0, len(data) - 1), label="cut")])
    with pytest.raises(PackError):
        decode_index("pack-x", data + b"\0")


@SETTINGS
@given(data=st.binary(max_size=300))
def test_index_arbitrary_bytes_raise_pack_error(data):
    with pytest.raises(PackError):
        decode_index("pack-x", data)


def test_index_with_valid_checksum_but_wrong_count():
    body = INDEX_MAGIC + struct.pack("<I", 5)
    digest = blake3.blake3(body).digest()
    with pytest.raises(PackError, match="wrong length"):
        decode_index("pack-" + digest.hex(), body + digest)
    body = INDEX_MAGIC + struct.pack("<I", 0)
    digest = blake3.blake3(body).digest()
    assert decode_index("pack-" + digest.hex(), body + digest) == {}


# ----------------------------------------------------------------------------- Store

@settings(max_examples=40, deadline=None)
@given(items=st.lists(st.tuples(st.one_of(st.binary(max_size=2000),
                                           st.integers(0, 5000).map(lambda n: _floats(n, n).tobytes())),
                                 st.sampled_from(WIDTHS)), max_size=8))
def test_payloads_written_as_parts_make_the_same_packs(items):
    """Clean hands PackWriter each payload as a list of buffers (planes, views of the chunk),
    written by writev without joining: the packs are byte for byte those of joined payloads."""
    with tempfile.TemporaryDirectory() as root:
        packs = []
        for parts in (False, True):
            store = Store(Path(root) / str(parts))
            writer = store.writer()
            for data, width in items:
                encoding, payload = codec.encode_batch([memoryview(data)], width, parts=parts)[0]
                assert isinstance(payload, list) == (parts and encoding in (codec.RAW, codec.GROUPED))
                writer.add(blake3.blake3(data).digest(), CHUNK, encoding, len(data), payload)
            store.publish(writer)
            packs.append({p.name: p.read_bytes() for p in store.pack_dir.glob("*")})
            for data, _ in items:
                assert store.read(blake3.blake3(data).digest()) == data
        assert packs[0] == packs[1]


def test_short_writes_are_resumed(tmp_path: Path, monkeypatch):
    """writev may write less than asked; the writer goes on from where it stopped."""
    import gitmodel.store.pack as pack
    real = os.writev

    def short(fd, buffers):                   # at most 7 bytes a call, cut mid-buffer
        return real(fd, [bytes(memoryview(b"".join(bytes(b) for b in buffers))[:7])])
    items = _mixed_items()
    expected = Store(tmp_path / "whole")
    _put(expected, items)
    monkeypatch.setattr(pack.os, "writev", short)
    store = Store(tmp_path / "short")
    oids = _put(store, items)
    assert {p.name: p.read_bytes() for p in store.pack_dir.glob("*")} == \
        {p.name: p.read_bytes() for p in expected.pack_dir.glob("*")}
    assert [Store(tmp_path / "short").read(oid) for oid in oids] == [d for d, _ in items]


@settings(max_examples=40, deadline=None)
@given(items=st.lists(st.tuples(st.one_of(st.binary(max_size=2000),
                                           st.integers(0, 5000).map(lambda n: _floats(n, n).tobytes())),
                                 st.sampled_from(WIDTHS)), max_size=12),
       target=st.sampled_from([64 << 20, 1, 3000]))
def test_store_round_trip_through_fresh_store(items, target):
    with tempfile.TemporaryDirectory() as root:
        store = Store(root)
        writer = PackWriter(store.tmp_dir, publish_into(store.pack_dir), target=target)
        oids = _put(store, items, writer)
        for oid, (data, _) in zip(oids, items):
            assert store.read(oid) == data            # visible to the publishing Store at once
        store.close()

        fresh = Store(root)
        try:
            for oid, (data, _) in zip(oids, items):
                assert fresh.has(oid)
                assert fresh.read(oid) == data
            assert fresh.missing(oids) == []
            distinct = len(set(oids))
            # every copy is listed (fsck checks each); an object written twice may be in two packs
            assert {oid for oid, _ in fresh.entries()} == set(oids)
            assert len(fresh.entries()) >= distinct
            assert all(entry.pack in fresh.packs() for _, entry in fresh.entries())
            if target == 1:
                # one record per pack; identical one-record packs share their name
                records = {(blake3.blake3(d).digest(), *codec.encode(d, w)) for d, w in items}
                assert len(fresh.packs()) == len(records)
            if fresh.tmp_dir.exists():
                assert os.listdir(fresh.tmp_dir) == []
            assert fsck_check(fresh).problems == []
        finally:
            fresh.close()


def test_store_manifest_objects(tmp_path):
    store = Store(tmp_path)
    chunk = b"chunk bytes" * 50
    cid = _put(store, [(chunk, 1)])[0]
    m = Manifest(len(chunk), [(cid, len(chunk))])
    raw = m.encode()
    mid = blake3.blake3(raw).digest()
    encoding, payload = codec.encode(raw)
    writer = store.writer()
    writer.add(mid, MANIFEST, encoding, len(raw), payload)
    store.publish(writer)
    store.close()
    fresh = Store(tmp_path)
    assert fresh.read_manifest(mid) == m
    with pytest.raises(CorruptObject, match="not a manifest"):
        fresh.read_manifest(cid)
    with pytest.raises(MissingObjects) as err:
        fresh.read(bytes(32))
    assert err.value.oids == [bytes(32)]
    assert fresh.missing([bytes(32), cid, mid]) == [bytes(32)]
    fresh.close()


def test_store_sees_packs_published_by_another_store(tmp_path):
    reader = Store(tmp_path)                       # opened before anything exists
    other = Store(tmp_path)
    oids = _put(other, _mixed_items())
    for oid, (data, _) in zip(oids, _mixed_items()):
        assert reader.read(oid) == data            # read() refreshes on a miss
    reader.close()
    other.close()


def _records(pack_path: Path) -> list[tuple[int, int, bytes, int]]:
    """(start, end, oid, encoding) of each record, walking the pack."""
    data = pack_path.read_bytes()
    assert data[:8] == PACK_MAGIC
    out, pos = [], 8
    while pos < len(data):
        oid, _kind, encoding, _raw, stored = record_head.unpack_from(data, pos)
        end = pos + record_head.size + stored
        out.append((pos, end, oid, encoding))
        pos = end
    assert pos == len(data)
    return out


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    store = Store(root)
    items = _mixed_items()
    oids = _put(store, items)
    store.close()
    (pack,) = (root / "packs").glob("*.pack")
    return root, pack, dict(zip(oids, (d for d, _ in items)))


@settings(max_examples=200, deadline=None)
@given(st_data=st.data())
def test_store_flipped_byte_in_pack_never_returns_wrong_bytes(pristine_store, st_data):
    root, pack, objects = pristine_store
    original = pack.read_bytes()
    records = _records(pack)
    pos = st_data.draw(st.integers(0, len(original) - 1), label="pos")
    mask = st_data.draw(st.integers(1, 255), label="mask")
    damaged_bytes = bytearray(original)
    damaged_bytes[pos] ^= mask
    hit = next((r for r in records if r[0] <= pos < r[1]), None)
    try:
        pack.write_bytes(bytes(damaged_bytes))
        store = Store(root)
        try:
            for oid, data in objects.items():
                if hit is not None and oid == hit[2]:
                    in_header = pos < hit[0] + record_head.size
                    if in_header or hit[3] == codec.RAW:
                        with pytest.raises(CorruptObject):
                            store.read(oid)
                    else:
                        try:
                            assert store.read(oid) == data     # an inert bit of a zstd frame
                        except CorruptObject:
                            pass
                else:
                    assert store.read(oid) == data
        finally:
            store.close()
    finally:
        pack.write_bytes(original)


def test_store_corrupt_byte_raises_corrupt_object(tmp_path):
    store = Store(tmp_path)
    items = _mixed_items()
    oids = _put(store, items)
    store.close()
    (pack,) = (tmp_path / "packs").glob("*.pack")
    records = {r[2]: r for r in _records(pack)}
    original = pack.read_bytes()
    for oid in oids:
        start, end, _, _ = records[oid]
        if end - start == record_head.size:
            continue                                     # the empty object has no payload
        for pos in (start + 40, (start + record_head.size + end) // 2, end - 1):
            bad = bytearray(original)
            bad[pos] ^= 0x55
            pack.write_bytes(bytes(bad))
            fresh = Store(tmp_path)
            with pytest.raises(CorruptObject) as err:
                fresh.read(oid)
            assert err.value.oid == oid
            assert isinstance(err.value, StoreError)
            fresh.close()
    pack.write_bytes(original)
    # Truncated pack: the objects past the cut are corrupt, the others still read.
    cut = records[oids[2]][0] + 10
    pack.write_bytes(original[:cut])
    fresh = Store(tmp_path)
    for oid, (data, _) in zip(oids, items):
        if records[oid][1] <= cut:
            assert fresh.read(oid) == data
        else:
            with pytest.raises(CorruptObject):
                fresh.read(oid)
    problems = fsck_check(fresh).problems
    assert len(problems) == sum(records[oid][1] > cut for oid in set(oids))
    fresh.close()


def test_store_deleted_pack_and_index_gives_missing_objects(tmp_path):
    store = Store(tmp_path)
    keep = _put(store, [(b"kept object" * 10, 1)])
    lose = _put(store, [(b"lost object" * 10, 1), (b"another", 1)])
    store.close()
    packs = sorted(p for p in (tmp_path / "packs").glob("*.pack"))
    assert len(packs) == 2
    fresh = Store(tmp_path)
    doomed = fresh.locate(lose[0]).pack
    fresh.close()
    (tmp_path / "packs" / f"{doomed}.pack").unlink()
    (tmp_path / "packs" / f"{doomed}.idx").unlink()
    fresh = Store(tmp_path)
    assert fresh.read(keep[0]) == b"kept object" * 10
    for oid in lose:
        with pytest.raises(MissingObjects) as err:
            fresh.read(oid)
        assert err.value.oids == [oid]
    assert fresh.missing(lose + keep) == lose
    fresh.close()


def test_store_deleted_pack_file_only_raises_store_error(tmp_path):
    """Regression: an index whose pack is gone made read raise FileNotFoundError."""
    store = Store(tmp_path)
    (oid,) = _put(store, [(b"lost object" * 10, 1)])
    store.close()
    (pack,) = (tmp_path / "packs").glob("*.pack")
    pack.unlink()
    fresh = Store(tmp_path)
    try:
        with pytest.raises(StoreError):
            fresh.read(oid)
        assert len(fsck_check(fresh).problems) == 1      # reported, not a crash
    finally:
        fresh.close()


@pytest.mark.parametrize("same_order", [True, False])
@pytest.mark.parametrize("shared_store", [True, False])
def test_store_concurrent_writers_of_the_same_objects(tmp_path, same_order, shared_store):
    items = _mixed_items() + [(_random_bytes(i, 5000 + i), 1) for i in range(20)]
    expected = {blake3.blake3(d).digest(): d for d, _ in items}
    for round_ in range(8):
        root = tmp_path / f"r{round_}"
        stores = [Store(root)] * 2 if shared_store else [Store(root), Store(root)]
        barrier = threading.Barrier(2)
        errors = []

        def work(i):
            try:
                order = items if same_order or i == 0 else list(reversed(items))
                writer = PackWriter(stores[i].tmp_dir, publish_into(stores[i].pack_dir), target=40_000)
                barrier.wait()
                _put(stores[i], order, writer)
                for oid, data in expected.items():
                    assert stores[i].read(oid) == data
            except BaseException as err:      # reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for s in {id(s): s for s in stores}.values():
            s.close()

        fresh = Store(root)
        try:
            for oid, data in expected.items():
                assert fresh.read(oid) == data
            assert fsck_check(fresh).problems == []
            assert list((root / "tmp").iterdir()) == []
            names = {p.stem for p in (root / "packs").iterdir()}
            assert {p.stem for p in (root / "packs").glob("*.pack")} == names
            assert {p.stem for p in (root / "packs").glob("*.idx")} == names
        finally:
            fresh.close()


# ----------------------------------------------------------------------------- batch encoding

@SETTINGS
@given(parts=st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=40),
       width=st.sampled_from([1, 2, 4, 8]), st_data=st.data())
def test_encode_batch_round_trips_whatever_is_skipped(parts, width, st_data):
    wanted = st_data.draw(st.lists(st.booleans(), min_size=len(parts), max_size=len(parts)))
    encoded = codec.encode_batch(parts, width, wanted)
    assert len(encoded) == len(parts)
    for part, want, enc in zip(parts, wanted, encoded):
        if not want:
            assert enc is None
            continue
        encoding, payload = enc
        assert bytes(codec.decode(encoding, payload, len(part))) == part


@SETTINGS
@given(chunks=st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=20),
       width=st.sampled_from([2, 4, 8]))
def test_encode_batch_in_place_gives_the_same_payloads(chunks, width):
    """The clean's encoding moves raw planes into the chunk's own memory (`in_place`): the
    payloads are those of the plain encoding, byte for byte."""
    chunks = [bytes(x if j % width == 0 else 0 for j, x in enumerate(c)) if i % 2 else c
              for i, c in enumerate(chunks)]      # planes of zeros beside noise, and all noise
    plain = codec.encode_batch(chunks, width)
    buffers = [bytearray(c) for c in chunks]
    moved = codec.encode_batch([memoryview(b) for b in buffers], width, parts=True, in_place=True)
    for chunk, (encoding, payload), (moved_encoding, pieces) in zip(chunks, plain, moved):
        joined = b"".join(bytes(p) for p in pieces)
        assert (moved_encoding, joined) == (encoding, payload)
        assert bytes(codec.decode(moved_encoding, joined, len(chunk))) == chunk


def test_encode_batch_reprobes_planes_that_become_compressible():
    """Random floats first (every plane noise), then small integers as float32 (mantissa
    bytes zero): the later chunks must still get their zero planes compressed."""
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, 64 * 1024 * 20, dtype=np.uint8).tobytes()
    smooth = rng.integers(0, 4, 16 * 1024 * 20).astype(np.float32).tobytes()
    chunks = [noise[i:i + 65536] for i in range(0, len(noise), 65536)]
    chunks += [smooth[i:i + 65536] for i in range(0, len(smooth), 65536)]
    encoded = codec.encode_batch(chunks, 4)
    for chunk, (encoding, payload) in zip(chunks, encoded):
        assert bytes(codec.decode(encoding, payload, len(chunk))) == chunk
    late = encoded[-5:]
    assert all(encoding == codec.GROUPED and len(payload) < 0.3 * 65536 for encoding, payload in late)


# ----------------------------------------------------------------------------- object table

@st.composite
def table_packs(draw):
    """Packs of entries whose ids often share their first 8 bytes, and sometimes whole ids."""
    prefixes = draw(st.lists(st.binary(min_size=8, max_size=8), min_size=1, max_size=4))
    packs = []
    for p in range(draw(st.integers(1, 2 * table.MAX_RUNS + 3))):
        entries = {}
        for _ in range(draw(st.integers(0, 6))):
            oid = draw(st.sampled_from(prefixes)) + draw(st.binary(min_size=24, max_size=24))
            if packs and draw(st.booleans()):
                earlier = draw(st.sampled_from(packs))[1]
                oid = draw(st.sampled_from(sorted(earlier))) if earlier else oid
            entries[oid] = Entry("", draw(st.integers(8, 2**40)), draw(st.integers(0, 2**31)),
                                 draw(st.integers(0, 2**31)), draw(st.integers(0, 1)), draw(st.integers(0, 3)))
        packs.append((f"pack-{p:064x}", entries))
    return packs


@SETTINGS
@given(packs=table_packs(), bulk=st.booleans(), shuffled=st.booleans())
def test_object_table_agrees_with_a_dict(packs, bulk, shuffled):
    """Lookups through runs, merges (more than MAX_RUNS additions) and duplicate ids give what
    a plain dict of every pack's entries gives; index bodies in any order are found too (a
    remote's index is verified by its name, not trusted to be sorted)."""
    reference: dict[bytes, set] = {}
    for name, entries in packs:
        for oid, e in entries.items():
            reference.setdefault(oid, set()).add(dataclasses.replace(e, pack=name))
    t = table.ObjectTable()
    indexes = []
    for name, entries in packs:
        body = encode_index(entries)[1][12:-32]
        if shuffled:
            rows = [body[i:i + 50] for i in range(0, len(body), 50)]
            body = b"".join(reversed(rows))
        if bulk:
            indexes.append((name, body, len(entries)))
        else:
            t.add_indexes([(name, body, len(entries))])
    t.add_indexes(indexes)
    assert len(t) == sum(len(entries) for _, entries in packs)
    for oid, copies in reference.items():
        assert oid in t
        assert t.get(oid) in copies
    for name, _ in packs:
        stranger = bytes.fromhex(name[5:])[:32]
        assert (stranger in t) == (stranger in reference)
    assert sorted((oid, e.pack) for oid, e in t.items()) == \
        sorted((oid, e.pack) for oid, copies in reference.items() for e in copies)


def test_object_table_entries_written_by_this_process():
    t = table.ObjectTable()
    oid = bytes(range(32))
    t.add_entries("pack-" + "0" * 64, {oid: Entry("", 8, 5, 7, 1, 2)})
    assert t[oid] == Entry("pack-" + "0" * 64, 8, 5, 7, 1, 2)
    assert bytes(32) not in t and t.get(bytes(32)) is None
    with pytest.raises(KeyError):
        t[bytes(32)]


def test_a_damaged_copy_is_passed_over_for_a_good_one(tmp_path: Path):
    """Two processes that add the same chunk at once both store it. If one copy rots, reads
    use the other; fsck still names the damaged copy; with both damaged, reads fail."""
    x, y = _floats(1, 20_000).tobytes(), _floats(2, 20_000).tobytes()
    store = Store(tmp_path)
    [oid] = _put(store, [(x, 4)])
    _put(store, [(x, 4), (y, 4)])
    copies = store._index.copies(oid)
    assert len(copies) == 2 and {c.pack for c in copies} == set(store.packs())

    def damage(entry):
        path = store.pack_dir / f"{entry.pack}.pack"
        data = bytearray(path.read_bytes())
        data[entry.offset + record_head.size + entry.stored_length // 2] ^= 0x10
        path.write_bytes(bytes(data))

    damage(copies[0])
    out = np.zeros(len(x), np.uint8)           # decoding into a buffer: the bad copy's bytes
    assert Store(tmp_path).read(oid, out) is out and out.tobytes() == x   # are overwritten
    wrong = np.zeros(len(x) - 1, np.uint8)     # a buffer of another length is not used
    assert Store(tmp_path).read(oid, wrong) == x and not wrong.any()
    fresh = Store(tmp_path)
    assert fresh.read(oid) == x
    entry, record, data = fresh.read_checked(oid)
    assert data == x and entry.pack == copies[1].pack
    report = fsck_check(fresh)
    assert len(report.problems) == 1 and copies[0].pack in str(report.problems[0])
    damage(copies[1])
    with pytest.raises(CorruptObject):
        Store(tmp_path).read(oid)


def test_temporary_packs_of_killed_processes_are_swept(tmp_path: Path):
    import time as _time
    store = Store(tmp_path)
    store.tmp_dir.mkdir(parents=True)
    dead, live = store.tmp_dir / "pack-dead", store.tmp_dir / "pack-live"
    dead.write_bytes(b"GMPACK01 left by a killed git add")
    live.write_bytes(b"GMPACK01 being written right now")
    old = _time.time() - 2 * 24 * 3600
    os.utime(dead, (old, old))
    _put(store, [(b"some bytes", 1)])
    assert not dead.exists() and live.exists()


def test_threads_refreshing_at_once_add_each_pack_once(tmp_path: Path, monkeypatch):
    from gitmodel.store import objects
    reader = Store(tmp_path)                   # opened before the pack exists
    [oid] = _put(Store(tmp_path), [(b"published by another process", 1)])
    real = objects.verify_index

    def slow(*args):                           # widen the window between looking and adding
        threading.Event().wait(0.1)
        return real(*args)
    monkeypatch.setattr(objects, "verify_index", slow)
    threads = [threading.Thread(target=reader.missing, args=([oid],)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reader._index.copies(oid)) == 1 and len(reader.entries()) == 1


def test_object_table_leaves_a_large_old_run_alone():
    """Publishing small packs one by one into a large table must not rewrite the large run
    each time (that made 1,000 small publishes into 600,000 objects take 5.5 s)."""
    t = table.ObjectTable()
    big = {os.urandom(32): Entry("", i, 1, 1, 0, 0) for i in range(5000)}
    t.add_entries("pack-big", big)
    base = t._runs[0]
    small = []
    for i in range(10 * table.MAX_RUNS):
        small.append({os.urandom(32): Entry("", 8, 1, 1, 0, 0)})
        t.add_entries(f"pack-{i}", small[-1])
        assert len(t._runs) <= table.MAX_RUNS
    assert t._runs[0] is base
    assert all(oid in t for entries in small for oid in entries) and all(oid in t for oid in list(big)[:50])
    assert len(t) == 5000 + len(small)


def test_removing_a_pack_while_another_process_adopts_it_leaves_no_index_behind(tmp_path, monkeypatch):
    """Regression (CI, gc racing adds): remove_packs unlinks a pack's index, then the pack. A
    store opened in between saw a pack without an index, took it for one a crash had left,
    indexed it again, and the index outlived the pack: later stores listed objects that were
    gone (an add would not store them again) and gc failed on the missing file."""
    store = Store(tmp_path)
    kept = _put(store, [(b"kept object" * 10, 1)])
    doomed = _put(store, [(b"removed object" * 10, 1)])
    name = store.locate(doomed[0]).pack
    adopters = []
    unlink = Path.unlink

    def unlink_then_open_a_store(path, missing_ok=False):
        unlink(path, missing_ok=missing_ok)
        if path.name == f"{name}.idx":       # the moment between the index and the pack
            adopters.append(Store(tmp_path))

    monkeypatch.setattr(Path, "unlink", unlink_then_open_a_store)
    store.remove_packs([name])
    monkeypatch.undo()
    assert len(adopters) == 1 and not adopters[0].has(doomed[0])
    assert sorted(p.name for p in (tmp_path / "packs").iterdir()) == \
        sorted(f"{store.locate(kept[0]).pack}.{ext}" for ext in ("idx", "pack"))
    fresh = Store(tmp_path)
    assert not fresh.has(doomed[0]) and fresh.read(kept[0]) == b"kept object" * 10
    for s in (store, fresh, *adopters):
        s.close()


def test_an_index_whose_pack_is_gone_is_not_trusted_to_hold_objects(tmp_path):
    """An add asks the store which chunks it already holds; an index left without its pack
    must not answer for them, or the add would not store them and they would be lost."""
    store = Store(tmp_path)
    (oid,) = _put(store, [(b"lost object" * 10, 1)])
    (pack,) = (tmp_path / "packs").glob("*.pack")
    store.close()
    pack.unlink()
    fresh = Store(tmp_path)
    assert not fresh.has(oid) and fresh.missing([oid]) == [oid]
    (again,) = _put(fresh, [(b"lost object" * 10, 1)])
    assert again == oid and fresh.read(oid) == b"lost object" * 10
    fresh.close()


@pytest.mark.parametrize("removed", [False, True])
def test_a_reload_on_another_thread_does_not_close_a_pack_being_read(tmp_path, monkeypatch, removed):
    """Regression (a review): a pool thread that met a removed pack reloads the pack list, and
    reload closed every pack file, including one another thread had just been handed and was
    about to read. That read failed (or, the descriptor reused, read another file), a good
    copy was marked damaged for good, and later checkouts took the object for missing. Also
    when the pack being read is the one removed (its object copied to a new pack first)."""
    store = Store(tmp_path)
    data = b"an object read while the store reloads" * 50
    (oid,) = _put(store, [(data, 1)])
    store.release()
    reader = Store(tmp_path)
    pread, interrupted = os.pread, []

    def reload_then_read(fd, n, offset):
        if not interrupted:                  # between handing out the descriptor and reading it
            if removed:                      # a repack in another process
                other = Store(tmp_path)
                old = other.locate(oid).pack
                _put(other, [(data, 1), (b"and another" * 20, 1)])
                other.remove_packs([old])
                other.release()
            interrupted.append(reader.reload())
            interrupted.append(os.open(tmp_path / "config", os.O_RDONLY))   # takes a free number
        return pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", reload_then_read)
    assert reader.read(oid) == data
    monkeypatch.undo()
    os.close(interrupted[1])
    assert not (tmp_path / "damaged").exists() and Store(tmp_path).has(oid)
    reader.close()


def test_fsck_does_not_call_a_pack_removed_while_it_runs_damaged(tmp_path, monkeypatch):
    """Regression (a review): a repack or gc in another process removed a pack after fsck had
    listed it; fsck reported its objects as damaged and remembered them so."""
    store = Store(tmp_path)
    data = b"an object a repack moves" * 40
    (oid,) = _put(store, [(data, 1)])
    old = store.locate(oid).pack
    store.release()
    checker = Store(tmp_path)
    entries = Store.entries

    def a_repack_meanwhile(self):
        listed = entries(self)
        if self is checker:
            other = Store(tmp_path)
            _put(other, [(data, 1), (b"another" * 30, 1)])      # the object's new copy
            other.remove_packs([old])
            other.release()
        return listed

    monkeypatch.setattr(Store, "entries", a_repack_meanwhile)
    report = fsck_check(checker)
    monkeypatch.undo()
    assert report.problems == [] and not (tmp_path / "damaged").exists()
    assert Store(tmp_path).read(oid) == data
    checker.close()


def test_removing_packs_keeps_what_other_processes_found_damaged(tmp_path):
    """Regression (a review): remove_packs (every gc, and the repack before each push) wrote
    `damaged` back from what its own process had read when it opened the store, erasing the
    copies other processes had found bad since: an add would then trust a bad copy again
    instead of storing a good one."""
    store = Store(tmp_path)
    (bad,) = _put(store, [(b"a copy found bad" * 30, 1)])
    (gone,) = _put(store, [(b"garbage" * 30, 1)])
    store.release()
    remover, reader = Store(tmp_path), Store(tmp_path)
    reader.mark_damaged(bad, reader.locate(bad).pack)        # after the remover opened the store
    remover.remove_packs([remover.locate(gone).pack])
    assert not Store(tmp_path).has(bad)
    for s in (remover, reader):
        s.close()


def test_a_sweep_while_a_pack_is_published_leaves_its_index_alone(tmp_path, monkeypatch):
    """A pack's index waits under a temporary name until the pack is renamed into place. A
    sweep of `tmp/` in that moment (another process's, or `fsck --repair`'s, which does not
    wait) took the index for a dead leftover when its writer was slow, and the add failed."""
    store = Store(tmp_path)
    replace = os.replace
    swept = []

    def sweep_then_replace(source, destination):
        if str(destination).endswith(".pack"):           # the index is written, not yet renamed
            swept.append(files.sweep(store.tmp_dir, grace=0))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", sweep_then_replace)
    (oid,) = _put(store, [(b"published object" * 10, 1)])
    monkeypatch.undo()
    assert swept == [0]
    fresh = Store(tmp_path)
    assert fresh.read(oid) == b"published object" * 10
    assert sorted(p.suffix for p in (tmp_path / "packs").iterdir()) == [".idx", ".pack"]
    store.close()
    fresh.close()
