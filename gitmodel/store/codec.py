"""How one chunk's bytes are encoded inside a pack: RAW, ZSTD, GROUPED (byte planes of
fixed-width elements, each plane its own zstd frame or raw), or DELTA (the difference from
bytes of other chunks, its bases, encoded as one of the first three). Layout: docs/formats.md
§3.

Float bytes gain from Huffman-coded literals and hardly from matches, so planes use zstd's fast
strategy with matching all but switched off; any zstd decoder reads these frames. Figures:
docs/benchmarks.md."""

from __future__ import annotations

import struct
import threading
from typing import Callable

import zstandard

from gitmodel.errors import GitmodelError
from gitmodel.scratch import scratch
from gitmodel.store import planes

RAW, ZSTD, GROUPED, DELTA = 0, 1, 2, 3
LEVEL = 1

_plane_head = struct.Struct("<BI")
_delta_head = struct.Struct("<IBB")          # skip, element width, lead
MAX_BASES = 255
_local = threading.local()


Bases = Callable[[list[bytes]], list]        # base chunk ids -> each one's bytes


class CodecError(GitmodelError, ValueError):
    pass


class UnknownEncoding(CodecError):
    """An encoding this version does not know: written by a newer gitmodel, not damage."""


class NoBases(CodecError):
    """A DELTA payload decoded without a way to read its bases (a caller's mistake)."""


_PLANE_PARAMETERS = dict(strategy=zstandard.STRATEGY_FAST, min_match=7, hash_log=6,
                        window_log=16, search_log=1, write_checksum=0)


def _per_thread(name: str, make: Callable[[], object]):
    """This thread's zstandard object `name`: they are not safe to share between threads."""
    made = getattr(_local, name, None)
    if made is None:
        made = make()
        setattr(_local, name, made)
    return made


def _compressor() -> zstandard.ZstdCompressor:
    return _per_thread("compressor", _make_compressor)


def _make_compressor() -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=LEVEL, write_checksum=False)


# Planes of differences that the fast pass packs below SPARSE of their size are mostly runs
# of zeros: the fast pass codes them as many short matches, slow to decode. A lazy search
# finds longer ones: a seventh smaller, and a third faster to decode, for five times the
# compression time, spent by a repack, never by `git add` (docs/benchmarks.md).
SPARSE = 0.3
_SPARSE_PARAMETERS = dict(strategy=zstandard.STRATEGY_LAZY, min_match=6, hash_log=14,
                          chain_log=14, search_log=4, target_length=64, window_log=16,
                          write_checksum=0)


def _with(parameters: dict) -> Callable[[], zstandard.ZstdCompressor]:
    return lambda: zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters(**parameters))


_make_sparse, _make_plane = _with(_SPARSE_PARAMETERS), _with(_PLANE_PARAMETERS)


def _sparse_compressor() -> zstandard.ZstdCompressor:
    return _per_thread("sparse_compressor", _make_sparse)


def _plane_compressor() -> zstandard.ZstdCompressor:
    return _per_thread("plane_compressor", _make_plane)


def _decompressor() -> zstandard.ZstdDecompressor:
    return _per_thread("decompressor", zstandard.ZstdDecompressor)


def encode(data: bytes | memoryview, width: int = 1, thorough: bool = False) -> tuple[int, bytes]:
    """(encoding, payload) for a chunk whose elements are `width` bytes wide (1: unknown);
    `thorough` packs sparse planes harder (see SPARSE)."""
    return encode_batch([data], width, thorough=thorough)[0]


# Every PROBE_EVERY-th chunk of a batch tries zstd on all its planes; until the next probe,
# element bytes whose planes did not shrink below INCOMPRESSIBLE of their size stay raw.
PROBE_EVERY = 8
INCOMPRESSIBLE = 0.98


def encode_batch(chunks: list, width: int, wanted: list[bool] | None = None,
                 parts: bool = False, thorough: bool = False, in_place: bool = False) -> list:
    """Encode consecutive chunks of one run of `width`-byte elements; returns (encoding,
    payload) for each chunk whose `wanted` flag is set (default all), None for the others.
    With `parts`, a payload may be a list of buffers to be written one after the other
    (PackWriter.add takes it as it is), some of them views of the chunk: the chunk's memory
    must stay as it is until they are written. That spares copying each payload whole. With
    `in_place` too, the chunks are writable and their bytes no longer needed as they are: the
    planes stored raw are moved into the chunk's own memory, which the payload then views,
    instead of being held in fresh arrays until written (most of an fp32 chunk: that memory
    grew with the tensors' size).

    Float mantissa bytes are mostly noise: zstd on them costs time and saves nothing (for
    typical fp32 weights three of four planes). Every
    PROBE_EVERY-th encoded chunk tries every plane; until the next probe, byte positions within
    the element whose planes saved less than 2% in it are kept raw without trying. (Position,
    not plane number: a chunk may start mid-element, so its plane k holds element byte
    (offset + k) % width.) Re-probing follows tensors whose statistics change along their
    length, e.g. embedding rows. Deterministic for a given batch."""
    wanted = wanted if wanted is not None else [True] * len(chunks)
    if width <= 1:
        return [_encode_plain(c, parts) if w else None for c, w in zip(chunks, wanted)]
    done, skip, offset, encoded = 0, frozenset(), 0, []
    for chunk, want in zip(chunks, wanted):
        result = None
        if want:
            data = chunk
            if len(data) < 2 * width:
                result = _encode_plain(data, parts)
            else:
                trials = [[0, 0] for _ in range(width)] if done % PROBE_EVERY == 0 else None
                result = _encode_grouped(data, width, offset % width, skip if trials is None else frozenset(),
                                         trials, parts, thorough, in_place)
                if trials is not None:       # per element byte: raw size, packed size
                    skip = frozenset(j for j, (raw, packed) in enumerate(trials)
                                     if packed >= INCOMPRESSIBLE * raw)
                done += 1
        encoded.append(result)
        offset += len(chunk)
    return encoded


def _encode_plain(data, parts: bool = False) -> tuple[int, bytes | list]:
    packed = _compressor().compress(data)
    if len(packed) < len(data):
        return ZSTD, packed
    return RAW, [data] if parts else bytes(data)


def _encode_grouped(data, width: int, phase: int, skip: frozenset, trials, parts: bool = False,
                    thorough: bool = False, in_place: bool = False) -> tuple[int, bytes | list]:
    body = len(data) - len(data) % width
    rows = _split(data, width, body, fresh=parts and not in_place)  # parts keep raw planes
    heads, stored_planes, raw = [bytes([width])], [], []
    compress = _plane_compressor().compress
    for k in range(width):
        plane = rows[k]
        position = (phase + k) % width
        packed = None if position in skip else compress(plane)
        if thorough and packed is not None and len(packed) < SPARSE * len(plane):
            packed = min(packed, _sparse_compressor().compress(plane), key=len)
        if trials is not None:
            trials[position][0] += len(plane)
            trials[position][1] += len(packed)
        mode, stored = (1, packed) if packed is not None and len(packed) < len(plane) else (0, plane)
        heads.append(_plane_head.pack(mode, len(stored)))
        stored_planes.append(stored)
        raw.append(mode == 0)
    pieces = [b"".join(heads), *stored_planes, bytes(data[body:])]
    if sum(map(len, pieces)) >= len(data):
        return RAW, [data] if parts else bytes(data)
    if parts and in_place:             # the raw planes (at most `body` bytes) into data's memory
        view, at = memoryview(data).cast("B"), 0
        for k in (k for k, is_raw in enumerate(raw) if is_raw):
            size = len(stored_planes[k])
            view[at:at + size] = stored_planes[k]
            pieces[1 + k] = view[at:at + size]
            at += size
    return GROUPED, pieces if parts else b"".join(pieces)


def _split(data, width: int, body: int, fresh: bool = False):
    """The byte planes of data[:body] as the rows of a (width, body // width) array in a
    per-thread scratch buffer (a new array if `fresh`)."""
    import numpy as np
    n = body // width
    out = np.empty((width, n), np.uint8) if fresh else scratch("codec.planes", body, "u1").reshape(width, n)
    return planes.split(data, width, out)


# ----------------------------------------------------------------------------- delta

def encode_delta(data, base, base_ids: list[bytes], skip: int, width: int, lead: int = 0) -> bytes:
    """The DELTA payload of `data` against `ref = base[skip:skip + len(data)]`, where `base`
    is the concatenated bytes of the chunks `base_ids`. For elements `width` bytes wide (2, 4
    or 8) whose first whole one starts at byte `lead`, each element is stored as the zigzag of
    its integer difference from ref's (a weight that moved a little differs in its low bits
    only, even across a carry, where an XOR would flip a run of bits; zigzag keeps the high
    bytes zero when it moved down too); bytes outside whole elements, and everything for other
    widths, as the XOR. Its byte planes compress."""
    if not 1 <= len(base_ids) <= MAX_BASES or skip + len(data) > len(base):
        raise ValueError("delta base does not cover the chunk")
    width, lead = (width, lead % width) if width in planes.WORDS else (1, 0)
    out = bytearray(data)
    _difference(out, memoryview(base)[skip:skip + len(data)], width, lead)
    encoding, inner = encode(out, width, thorough=True)
    return b"".join([bytes([len(base_ids)]), *base_ids, _delta_head.pack(skip, width, lead),
                     bytes([encoding]), inner])


def _split_elements(n: int, width: int, lead: int) -> tuple[int, int]:
    """(first byte, count) of the whole elements of a chunk of n bytes."""
    count = max(0, (n - lead) // width) if width > 1 else 0
    return lead, count


def _difference(out: bytearray, ref, width: int, lead: int) -> None:
    """out := the delta of out against ref (in place)."""
    import numpy as np
    n = len(out)
    at, count = _split_elements(n, width, lead)
    view, reference = np.frombuffer(out, np.uint8), np.frombuffer(ref, np.uint8, count=n)
    if not count:
        np.bitwise_xor(view, reference, out=view)
        return
    end = at + count * width
    np.bitwise_xor(view[:at], reference[:at], out=view[:at])
    np.bitwise_xor(view[end:], reference[end:], out=view[end:])
    planes.zigzag_subtract(out, ref, width, at, count)


def undo_differences(out, ref, pieces: list[tuple[int, int, int, int]]) -> None:
    """Undo the deltas of chunks decoded side by side (decode_differences): `out` holds each
    chunk's differences at its place, `ref` what each was taken against at the same place, and
    `pieces` gives (start, length, width, lead) per chunk, in order of start. Adjacent chunks
    whose elements continue one grid are undone by one pass of word arithmetic, not a pass
    each: every pass is a trip away from the GIL (five in numpy, one compiled), and two
    threads making many short trips spend more time handing the GIL to each other than
    computing (docs/benchmarks.md). The
    bytes outside each chunk's own whole elements (XORed, see encode_delta) are set aside
    before that pass and put back XORed after it."""
    import numpy as np
    stretches: list[_Stretch] = []
    for start, length, width, lead in pieces:
        first, count = _split_elements(length, width, lead)
        if not count:                                  # no whole element: XORed throughout
            piece = np.frombuffer(out, np.uint8, count=length, offset=start)
            np.bitwise_xor(piece, np.frombuffer(ref, np.uint8, count=length, offset=start), out=piece)
            continue
        begin, end = start + first, start + first + count * width
        last = stretches[-1] if stretches else None
        if last and last.end == start and last.width == width and (begin - last.begin) % width == 0:
            last.loose.append((last.elements_end, begin))
        else:
            last = _Stretch(width, begin)
            stretches.append(last)
            last.loose.append((start, begin))
        last.end, last.elements_end = start + length, end
    whole = memoryview(out)
    for stretch in stretches:
        loose = [(a, b) for a, b in stretch.loose + [(stretch.elements_end, stretch.end)] if b > a]
        kept = [bytes(whole[a:b]) for a, b in loose]
        planes.unzigzag_add(out, ref, stretch.width, stretch.begin,
                            (stretch.elements_end - stretch.begin) // stretch.width)
        for (a, b), data in zip(loose, kept):
            mixed = int.from_bytes(data, "little") ^ int.from_bytes(memoryview(ref)[a:b], "little")
            whole[a:b] = mixed.to_bytes(b - a, "little")


class _Stretch:
    """Adjacent delta chunks on one grid of elements, from the first one's first whole element
    (`begin`) to the last one's last (`elements_end`) and its end (`end`). `loose`: the byte
    ranges in it outside their own chunk's whole elements (the parts of an element split
    between two chunks, each XORed), and the first chunk's bytes before `begin`."""
    __slots__ = ("width", "begin", "end", "elements_end", "loose")

    def __init__(self, width: int, begin: int):
        self.width, self.begin, self.end, self.elements_end = width, begin, begin, begin
        self.loose: list[tuple[int, int]] = []


def delta_header_length(bases: int) -> int:
    """Bytes of a DELTA payload before its inner payload, for a delta of `bases` bases."""
    return 1 + 32 * bases + _delta_head.size + 1


def delta_bases(payload: bytes | memoryview) -> list[bytes]:
    """The ids of the chunks a DELTA payload is a difference from."""
    return _parse_delta(payload)[0]


def delta_elements(payload: bytes | memoryview) -> tuple[int, int]:
    """(width, lead) of a DELTA payload: its chunk's element width and where the chunk's first
    whole element starts."""
    return _parse_delta(payload)[2:4]


def _parse_delta(payload) -> tuple[list[bytes], int, int, int, int, memoryview]:
    payload = memoryview(payload)
    count = payload[0] if len(payload) else 0
    head = delta_header_length(count)
    if count == 0 or len(payload) < head:
        raise CodecError("truncated delta header")
    ids = [bytes(payload[1 + 32 * i:33 + 32 * i]) for i in range(count)]
    skip, width, lead = _delta_head.unpack_from(payload, 1 + 32 * count)
    if not (width == 1 and lead == 0 or width in planes.WORDS and lead < width):
        raise CodecError(f"bad delta element width {width} or lead {lead}")
    return ids, skip, width, lead, payload[head - 1], payload[head:]


def _decode_delta(payload, raw_length: int, bases, out=None) -> memoryview:
    parsed = _parse_delta(payload)
    lead = parsed[3]
    # The differences are taken on whole elements: buffers where they start aligned make
    # numpy's arithmetic three times faster than on unaligned words.
    if out is None or (_address(out) + lead) % 8:      # else decode aligned, then copy
        out = uninitialised(raw_length, aligned_at=lead)
    width, lead, ref = _differences(parsed, raw_length, bases, out)
    undo_differences(out, ref, [(0, raw_length, width, lead)])
    return out


def decode_differences(payload, raw_length: int, bases: Bases | None, out, ref) -> tuple[int, int]:
    """The first half of decoding a DELTA payload, for undo_differences to finish: the chunk's
    differences into `out` and the bytes of its bases they were taken against into `ref` (both
    writable, raw_length bytes). Returns the chunk's (width, lead)."""
    width, lead, _ = _differences(_parse_delta(payload), raw_length, bases, out, ref)
    return width, lead


def _differences(parsed, raw_length: int, bases, out, ref=None) -> tuple[int, int, memoryview]:
    """(width, lead, reference) after decoding the differences into out. The reference is
    copied into `ref` if given; if not, it is a view of the base when one base covers it."""
    ids, skip, width, lead, encoding, inner = parsed
    if encoding == DELTA:
        raise CodecError("a delta of a delta payload")
    if bases is None:
        raise NoBases("a delta decoded without its bases")
    decode(encoding, inner, raw_length, out=out)
    pieces, at = [], -skip              # at: where the current base starts, relative to the chunk
    for base in bases(ids):
        start, end = max(at, 0), min(at + len(base), raw_length)
        if start < end:
            pieces.append(memoryview(base)[start - at:end - at])
        at += len(base)
    if at < raw_length:
        raise CodecError(f"delta reaches past its bases ({skip} + {raw_length} > {at + skip})")
    if ref is None and len(pieces) == 1:
        return width, lead, pieces[0]
    ref = uninitialised(raw_length, aligned_at=lead) if ref is None else ref
    target, at = memoryview(ref).cast("B"), 0
    for piece in pieces:                 # copies without the GIL: the pool's threads overlap
        _copy(target[at:at + len(piece)], piece)
        at += len(piece)
    return width, lead, ref


def decode(encoding: int, payload: bytes | memoryview, raw_length: int,
           bases: Bases | None = None, out=None) -> bytes | bytearray | memoryview:
    """The chunk's bytes. Raises CodecError on any inconsistency (never returns wrong-sized
    data). `bases` gives the bytes of a DELTA's base chunks. With `out`, a writable buffer of
    raw_length bytes, the bytes are decoded into it (planes interleaved straight into place)
    and `out` is returned."""
    if out is not None and len(out) != raw_length:
        raise ValueError("decode: the output buffer is not the chunk's length")
    try:
        if encoding == RAW:
            data = payload
        elif encoding == ZSTD:
            data = _decompress(payload, raw_length)
        elif encoding == GROUPED:
            data = _decode_grouped(payload, raw_length, out)
        elif encoding == DELTA:
            data = _decode_delta(payload, raw_length, bases, out)
        else:
            raise UnknownEncoding(f"unknown chunk encoding {encoding}")
    except zstandard.ZstdError as err:
        raise CodecError(f"zstd: {err}") from None
    if len(data) != raw_length:
        raise CodecError(f"decoded {len(data)} bytes, expected {raw_length}")
    if out is not None and data is not out:
        _copy(out, data)
        return out
    return data


def _copy(out, data) -> None:
    """out[:] = data, by numpy, which lets go of the GIL for the copy."""
    import numpy as np
    np.copyto(np.frombuffer(out, np.uint8), np.frombuffer(data, np.uint8))


def _decompress(frame: bytes | memoryview, expected: int) -> bytes:
    """One zstd frame that must hold exactly `expected` bytes. A damaged header claiming more
    is refused before any memory is allocated for it."""
    declared = zstandard.frame_content_size(frame)
    if declared not in (expected, -1):
        raise CodecError(f"zstd frame declares {declared} bytes, expected {expected}")
    return _decompressor().decompress(frame, max_output_size=expected)


def head(encoding: int, payload: bytes | memoryview, raw_length: int, n: int) -> bytes:
    """The first n bytes (fewer if raw_length is smaller) of what a RAW, ZSTD or GROUPED
    payload of raw_length bytes decodes to, inflating no more than that: to check what a
    record says of itself before decoding it whole. Raises CodecError (UnknownEncoding)."""
    n = min(n, raw_length)
    payload = memoryview(payload).cast("B")
    try:
        if encoding == RAW:
            return bytes(payload[:n])
        if encoding == ZSTD:
            return _inflate_head(payload, n)
        if encoding == GROUPED:
            return _grouped_head(payload, raw_length, n)
    except zstandard.ZstdError as err:
        raise CodecError(f"zstd: {err}") from None
    if encoding == DELTA:
        raise CodecError("a delta read without its bases")
    raise UnknownEncoding(f"unknown chunk encoding {encoding}")


def _inflate_head(frame, n: int) -> bytes:
    reader = _decompressor().stream_reader(frame)
    parts, got = [], 0
    while got < n:
        part = reader.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _grouped_head(payload, raw_length: int, n: int) -> bytes:
    width = payload[0] if len(payload) else 0
    if not 2 <= width <= 16 or len(payload) < 1 + width * _plane_head.size:
        raise CodecError(f"bad byte-group width {width} or truncated header")
    body = raw_length - raw_length % width
    pos, rows = 1 + width * _plane_head.size, []
    for k in range(width):
        mode, stored = _plane_head.unpack_from(payload, 1 + k * _plane_head.size)
        plane = payload[pos:pos + stored]
        pos += stored
        want = -(-min(n, body) // width)
        rows.append(_inflate_head(plane, want) if mode else bytes(plane[:want]))
    tail = payload[pos:]
    out = bytearray()
    for i in range(n):
        row = rows[i % width] if i < body else tail
        j = i // width if i < body else i - body
        if j >= len(row):
            break
        out.append(row[j])
    return bytes(out)


def _decode_grouped(payload: bytes | memoryview, raw_length: int, out=None) -> memoryview:
    width = payload[0] if payload else 0
    if not 2 <= width <= 16:
        raise CodecError(f"bad byte-group width {width}")
    body = raw_length - raw_length % width
    plane_length = body // width
    pos = 1 + width * _plane_head.size
    if pos > len(payload):
        raise CodecError("truncated byte-group header")
    decoded = []
    for k in range(width):
        mode, stored = _plane_head.unpack_from(payload, 1 + k * _plane_head.size)
        chunk = payload[pos:pos + stored]
        pos += stored
        plane = _decompress(chunk, plane_length) if mode else chunk
        if len(plane) != plane_length or mode > 1:
            raise CodecError("byte-group plane of the wrong size")
        decoded.append(plane)
    tail = payload[pos:]
    if len(tail) != raw_length - body:
        raise CodecError("byte-group tail of the wrong size")
    out = uninitialised(raw_length) if out is None else out
    if plane_length:
        planes.join(decoded, out)
    if len(tail):
        memoryview(out).cast("B")[body:] = tail
    return out


def _address(buffer) -> int:
    import numpy as np
    return np.frombuffer(buffer, np.uint8).ctypes.data


def uninitialised(n: int, aligned_at: int = 0) -> memoryview:
    """A writable buffer of n bytes, not zeroed (bytearray(n) zeroes it while holding the GIL,
    which serialises the threads decoding chunks), whose byte `aligned_at` is 8-byte aligned
    (numpy allocates its arrays aligned to at least 16 bytes)."""
    import numpy as np
    if not aligned_at % 8:
        return memoryview(np.empty(n, np.uint8))
    start = -aligned_at % 8
    return memoryview(np.empty(n + start, np.uint8)[start:])
