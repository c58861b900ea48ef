"""ONNX models (one protobuf ModelProto): each initializer's raw_data is a tensor, found by a
bounded forward walk of the protobuf fields. Segmentation: docs/formats.md §2.8."""

from __future__ import annotations

import math
from typing import Iterator

from gitmodel.formats import Layout, Segment, Tensor
from gitmodel.formats.stream import PeekableStream

# ONNX TensorProto.DataType -> (canonical dtype, bits per element). Types outside DTYPE_BITS
# are tokens (stored with element width 1); STRING (8) has no raw_data form.
DTYPES: dict[int, tuple[str, int]] = {
    1: ("F32", 32), 2: ("U8", 8), 3: ("I8", 8), 4: ("U16", 16), 5: ("I16", 16),
    6: ("I32", 32), 7: ("I64", 64), 9: ("BOOL", 8), 10: ("F16", 16), 11: ("F64", 64),
    12: ("U32", 32), 13: ("U64", 64), 14: ("C64", 64), 15: ("C128", 128), 16: ("BF16", 16),
    17: ("F8_E4M3", 8), 18: ("F8_E4M3FNUZ", 8), 19: ("F8_E5M2", 8), 20: ("F8_E5M2FNUZ", 8),
    21: ("U4", 4), 22: ("I4", 4), 23: ("F4", 4), 24: ("F8_E8M0", 8), 25: ("U2", 2),
    26: ("I2", 2), 27: ("F6_E2M3", 6), 28: ("F6_E3M2", 6),
}

MAX_AHEAD = 48 << 20          # furthest the walk peeks past the consumed position
READ_AHEAD = 64 << 10         # extra bytes peeked at once, so small fields cost one peek
DETECT_SPAN = 4 << 20         # the graph field must start within this
# Writers serialize fields in number order, so a TensorProto's dims, type and name come before
# its raw_data: a large one is parsed only up to there, without peeking over its data.
SMALL_MESSAGE = 1 << 20       # TensorProtos up to this are parsed whole
HEADER_SPAN = 64 << 10        # a larger one's fields before raw_data: looked for here first
LATE_PEEK = 32 << 20          # ...and larger ones whole when their header lacks something
MAX_GRAPH = 1 << 31           # protobuf's own 2 GiB limit
MAX_IR_VERSION = 1000
MAX_STRING = 64 << 10         # metadata strings, names: longer ones are not read
MAX_DIMS = 64
MAX_TOP_FIELDS = 100_000
MAX_GRAPH_FIELDS = 2_000_000
MAX_TENSOR_FIELDS = 10_000
MAX_METADATA = 200
HEAD = 15                     # a tag (<= 5 bytes) and a length (<= 10 bytes)

_TOP_WIRE = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_TOP_STRINGS = {2: "producer_name", 3: "producer_version", 4: "domain"}
_GRAPH_FIELDS = {1, 2, 5, 10, 11, 12, 13, 14, 15, 16}


def read_layout(stream: PeekableStream) -> Layout | None:
    try:
        walk = _Walk(stream)
        if not walk.detect():
            return None
    except (MemoryError, RecursionError):
        raise                   # the machine's limits, not the file's (as torch_zip)
    except Exception:           # never let a malformed file escape as an error
        return None
    return Layout("onnx", walk.segments(), walk.metadata)


# ----------------------------------------------------------------------------- wire format

def _varint(buf: bytes, i: int, end: int) -> tuple[int, int] | None:
    """(value, next index) of the varint at buf[i:end], or None when cut short or too long."""
    value = shift = 0
    for j in range(i, min(end, i + 10)):
        byte = buf[j]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value, j + 1) if value < 1 << 64 else None
        shift += 7
    return None


def _field(buf: bytes, i: int, end: int) -> tuple[int, int, int, int, int] | None:
    """(number, wire type, value, content index, next index) of the field at buf[i:end].
    For wire type 2 the value is the length and the content may extend past `end`; for types
    1 and 5 the value is 0 (the fixed bytes are not needed here)."""
    got = _varint(buf, i, min(end, i + 5))
    if got is None:
        return None
    tag, i = got
    number, wire = tag >> 3, tag & 7
    if number == 0 or tag >= 1 << 32:
        return None
    if wire == 0:
        got = _varint(buf, i, end)
        return None if got is None else (number, 0, got[0], i, got[1])
    if wire == 2:
        got = _varint(buf, i, end)
        return None if got is None else (number, 2, got[0], got[1], got[1] + got[0])
    if wire in (1, 5):
        size = 8 if wire == 1 else 4
        return (number, wire, 0, i, i + size) if i + size <= end else None
    return None                 # groups (3, 4) and wire types 6, 7: not in ONNX


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


# ----------------------------------------------------------------------------- the walk

class _Walk:
    """Walks the model forward, peeking through a cached window addressed by file position."""

    def __init__(self, stream: PeekableStream):
        self.stream = stream
        self.base = stream.position
        self.limit = min(MAX_AHEAD, stream.max_peek)
        self.buf, self.at = b"", self.base
        self.metadata: dict[str, str] = {}
        self.initializers = self.external = 0

    def view(self, start: int, end: int) -> tuple[bytes, int] | None:
        """(buffer, index of `start` in it) holding [start, end), or less where the file ends
        first; None when that needs a peek further than `limit` from the consumed position."""
        if self.at <= start and end <= self.at + len(self.buf):
            return self.buf, start - self.at
        here = self.stream.position
        if start < here or end - here > self.limit:
            return None
        self.buf = self.stream.peek(min(self.limit, max(end, start + READ_AHEAD) - here))
        self.at = here
        return self.buf, start - here

    def need(self, start: int, end: int) -> Iterator[Segment]:
        """Generator returning view(start, end) complete, first yielding the opaque bytes before
        `start` when the window is too far; None when the file ends first or it is too large.
        Callers only pass a `start` with nothing but opaque bytes before it."""
        got = self.view(start, end)
        if got is None and start > self.stream.position:
            yield Segment(start - self.stream.position)
            got = self.view(start, end)
        if got is None or len(got[0]) - got[1] < end - start:
            return None
        return got

    def head(self, pos: int) -> Iterator[Segment]:
        """Generator returning the field at `pos` as (number, wire, value, content, next) in file
        positions, or None at the end of the file or on malformed bytes."""
        got = self.view(pos, pos + HEAD)
        if got is None and pos > self.stream.position:
            yield Segment(pos - self.stream.position)    # opaque bytes, to move the window
            got = self.view(pos, pos + HEAD)
        if got is None:
            return None
        buf, i = got
        field = _field(buf, i, min(len(buf), i + HEAD))
        if field is None:
            return None
        number, wire, value, content, nxt = field
        return number, wire, value, pos + content - i, pos + nxt - i

    # -- detection: only views, no segments

    def detect(self) -> bool:
        pos, first = self.base, True
        while pos - self.base < DETECT_SPAN:
            field = self._peek_field(pos)
            if field is None:
                return False
            number, wire, value, content, nxt = field
            if first and (number, wire) != (1, 0) or _TOP_WIRE.get(number) != wire:
                return False
            first = False
            if number == 1 and not 1 <= value <= MAX_IR_VERSION:
                return False
            if number == 7:
                return value < MAX_GRAPH and self._graph_opens(content, nxt)
            if wire == 2:
                if nxt - self.base > DETECT_SPAN:
                    return False
                if number in _TOP_STRINGS or number == 6:
                    got = self.view(content, nxt)
                    if got is None or len(got[0]) - got[1] < nxt - content:
                        return False
                    try:
                        bytes(got[0][got[1]:got[1] + nxt - content]).decode("utf-8")
                    except UnicodeDecodeError:
                        return False
            pos = nxt
        return False

    def _graph_opens(self, start: int, end: int) -> bool:
        if start == end:
            return True
        field = self._peek_field(start)
        if field is None:
            return False
        number, wire, _, _, nxt = field
        return wire == 2 and number in _GRAPH_FIELDS and nxt <= end

    def _peek_field(self, pos: int):
        """The field at `pos` as (number, wire, value, content, next) in file positions, from
        the window alone (no segments: for detection); None if not readable there."""
        got = self.view(pos, pos + HEAD)
        if got is None:
            return None
        buf, i = got
        field = _field(buf, i, len(buf))
        if field is None:
            return None
        number, wire, value, content, nxt = field
        return number, wire, value, pos + content - i, pos + nxt - i

    # -- segments

    def segments(self) -> Iterator[Segment]:
        try:
            yield from self._model()
        except (MemoryError, RecursionError):
            raise
        except Exception:        # a safety net: stop here, the rest is an opaque tail
            return
        finally:
            if self.external:
                self.metadata["external_initializers"] = str(self.external)

    def _model(self) -> Iterator[Segment]:
        pos = self.base
        for _ in range(MAX_TOP_FIELDS):
            field = yield from self.head(pos)
            if field is None:
                return
            number, wire, value, content, nxt = field
            if wire == 0 and number == 1:
                self.metadata["ir_version"] = str(value)
            elif wire == 0 and number == 5:
                self.metadata["model_version"] = str(value)
            elif wire == 2 and number == 7:
                if value >= MAX_GRAPH or not (yield from self._graph(content, nxt)):
                    return
            elif wire == 2 and number in (2, 3, 4, 8, 14) and value <= MAX_STRING:
                got = yield from self.need(content, nxt)
                if got is None:
                    return
                raw = bytes(got[0][got[1]:got[1] + value])
                if number in _TOP_STRINGS:
                    self.metadata[_TOP_STRINGS[number]] = _text(raw)
                elif number == 8:
                    self._opset(raw)
                else:
                    self._property(raw)
            pos = nxt

    def _opset(self, raw: bytes) -> None:
        fields = _small_message(raw)
        domain = _text(fields.get(1, b"")) or "ai.onnx"
        version = fields.get(2)
        old = self.metadata.get("opset")
        if isinstance(version, int) and len(old or "") < MAX_STRING:
            entry = f"{domain}:{version}"
            self.metadata["opset"] = f"{old}, {entry}" if old else entry

    def _property(self, raw: bytes) -> None:
        fields = _small_message(raw)
        key, value = fields.get(1), fields.get(2, b"")
        if isinstance(key, bytes) and isinstance(value, bytes) and len(self.metadata) < MAX_METADATA:
            self.metadata.setdefault(_text(key), _text(value))

    def _graph(self, start: int, end: int) -> Iterator[Segment]:
        """Generator returning whether the GraphProto at [start, end) was walked to its end."""
        pos = start
        for _ in range(MAX_GRAPH_FIELDS):
            if pos >= end:
                return pos == end
            field = yield from self.head(pos)
            if field is None or field[4] > end:
                return False
            number, wire, value, content, nxt = field
            if wire == 2 and number == 5:
                yield from self._initializer(content, nxt)
            elif wire == 2 and number == 2 and value <= MAX_STRING and "graph_name" not in self.metadata:
                got = yield from self.need(content, nxt)
                if got is None:
                    return False
                self.metadata["graph_name"] = _text(got[0][got[1]:got[1] + value])
            pos = nxt
        return False

    def _initializer(self, start: int, end: int) -> Iterator[Segment]:
        """Yields the opaque bytes up to the TensorProto's raw_data and the raw_data as a tensor
        segment; yields nothing when it has none (or cannot be planned)."""
        index = self.initializers
        self.initializers += 1
        size = end - start
        info = None
        for span in (size,) if size <= SMALL_MESSAGE else (HEADER_SPAN, SMALL_MESSAGE):
            got = yield from self.need(start, start + span)
            if got is None:
                return
            info = _tensor_fields(got[0], got[1], start, span, size)
            if info is not None:
                break
        if info is None:
            return
        if size > SMALL_MESSAGE and info.raw is not None and not info.complete() and size <= LATE_PEEK:
            got = yield from self.need(start, end)
            if got is not None:
                info = _tensor_fields(got[0], got[1], start, size, size) or info
        if info.external:
            self.external += 1
        if info.raw is None:
            return
        raw_start, raw_len = info.raw
        if raw_start > self.stream.position:
            yield Segment(raw_start - self.stream.position)
        yield Segment(raw_len, info.describe(index, raw_len))


class _Fields:
    """What a TensorProto says about itself."""

    def __init__(self):
        self.dims: list[int] = []
        self.data_type: int | None = None
        self.name: str | None = None
        self.raw: tuple[int, int] | None = None      # file position and length of raw_data
        self.external = False

    def complete(self) -> bool:
        return bool(self.name) and self._shape(self.raw[1] if self.raw else 0) is not None

    def _shape(self, nbytes: int) -> tuple[int, ...] | None:
        dtype = DTYPES.get(self.data_type or 0)
        if dtype is None or len(self.dims) > MAX_DIMS or not all(0 <= d < 1 << 63 for d in self.dims):
            return None
        return tuple(self.dims) if (math.prod(self.dims) * dtype[1] + 7) // 8 == nbytes else None

    def describe(self, index: int, nbytes: int) -> Tensor:
        name = self.name or f"initializer#{index}"
        shape = self._shape(nbytes)
        dtype, bits = DTYPES.get(self.data_type or 0, ("U8", 8))
        if shape is not None:
            return Tensor(name, dtype, shape)
        if bits % 8 == 0 and nbytes % (bits // 8) == 0:
            return Tensor(name, dtype, (nbytes // (bits // 8),))
        return Tensor(name, "U8", (nbytes,))


def _tensor_fields(buf: bytes, i: int, pos: int, span: int, size: int) -> _Fields | None:
    """Parse the TensorProto of `size` bytes at file position `pos`, of which buf[i:i+span]
    is given: all of it when span == size, else up to its raw_data. None when malformed or
    when a field runs past what was given."""
    out, end, j, whole = _Fields(), i + span, i, span == size
    for _ in range(MAX_TENSOR_FIELDS):
        if j >= end:
            return out if whole else None           # a header region with no raw_data
        field = _field(buf, j, end)
        if field is None:
            return None
        number, wire, value, content, nxt = field
        if number == 9 and wire == 2:
            if nxt - i > size:
                return None
            if out.raw is None:
                out.raw = (pos + content - i, value)
            if not whole:
                return out
        if nxt > end:
            return None
        if number == 1 and wire == 0:
            out.dims.append(value)
        elif number == 1 and wire == 2:
            k = content
            while k < nxt and len(out.dims) <= MAX_DIMS:
                got = _varint(buf, k, nxt)
                if got is None:
                    return None
                out.dims.append(got[0])
                k = got[1]
        elif number == 2 and wire == 0:
            out.data_type = value
        elif number == 8 and wire == 2 and value <= MAX_STRING:
            out.name = _text(buf[content:nxt])
        elif number == 14 and wire == 0:
            out.external = value == 1
        j = nxt
    return None


def _small_message(raw: bytes) -> dict[int, int | bytes]:
    """Varint and length-delimited fields of a small message (last one wins)."""
    out: dict[int, int | bytes] = {}
    j = 0
    for _ in range(64):
        if j >= len(raw):
            break
        field = _field(raw, j, len(raw))
        if field is None or field[4] > len(raw):
            break
        number, wire, value, content, nxt = field
        out[number] = raw[content:nxt] if wire == 2 else value
        j = nxt
    return out
