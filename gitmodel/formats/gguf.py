"""GGUF v2/v3 (llama.cpp): the header is parsed by peeking, the tensors follow in offset order.
Segmentation: docs/formats.md §2.7."""

from __future__ import annotations

import math
import struct
from typing import Iterator

from gitmodel.formats import Layout, Segment, Tensor
from gitmodel.formats.stream import PeekableStream

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
FIRST_PEEK = 1 << 20
MAX_DIMS = 8                    # ggml itself has 4
MAX_TENSORS = 1 << 18
MAX_NAME = 1 << 16              # tensor names and keys (llama.cpp allows 64-byte tensor names)
MAX_ARRAY_DEPTH = 4
MAX_METADATA = 64               # general.* entries kept
MAX_VALUE_BYTES = 800           # of a string value looked at (200 characters are shown)
MAX_BYTES = 1 << 62

# ggml type id -> (dtype, elements per block, bytes per block). Plain types use canonical
# dtype names; quantized types keep ggml's names. Ids absent here (removed or future types)
# are unknown.
QK_K = 256
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 2 + 16),
    3: ("Q4_1", 32, 2 + 2 + 16),
    6: ("Q5_0", 32, 2 + 4 + 16),
    7: ("Q5_1", 32, 2 + 2 + 4 + 16),
    8: ("Q8_0", 32, 2 + 32),
    9: ("Q8_1", 32, 4 + 4 + 32),
    10: ("Q2_K", QK_K, QK_K // 16 + QK_K // 4 + 2 + 2),
    11: ("Q3_K", QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),
    12: ("Q4_K", QK_K, 2 + 2 + 12 + QK_K // 2),
    13: ("Q5_K", QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),
    14: ("Q6_K", QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
    15: ("Q8_K", QK_K, 4 + QK_K + QK_K // 16 * 2),
    16: ("IQ2_XXS", QK_K, 2 + QK_K // 4),
    17: ("IQ2_XS", QK_K, 2 + QK_K // 4 + QK_K // 32),
    18: ("IQ3_XXS", QK_K, 2 + QK_K // 4 + QK_K // 8),
    19: ("IQ1_S", QK_K, 2 + QK_K // 8 + QK_K // 16),
    20: ("IQ4_NL", 32, 2 + 16),
    21: ("IQ3_S", QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    22: ("IQ2_S", QK_K, 2 + QK_K // 4 + QK_K // 16),
    23: ("IQ4_XS", QK_K, 2 + 2 + QK_K // 64 + QK_K // 2),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", QK_K, 2 + 4 * 13),
    35: ("TQ2_0", QK_K, 2 + QK_K // 4),
    39: ("MXFP4", 32, 1 + 16),
    40: ("NVFP4", 64, 4 + 32),
    41: ("Q1_0", 128, 2 + 16),
}

# Metadata value types: id -> struct format of a scalar.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B",
            10: "<Q", 11: "<q", 12: "<d"}
_SIZES = {k: struct.calcsize(v) for k, v in _SCALARS.items()}
STRING, ARRAY, UINT32, BOOL, FLOAT32 = 8, 9, 4, 7, 6
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class _Malformed(Exception):
    pass


class _Cursor:
    """Reads the header out of ever larger peeks (doubling, up to the stream's max_peek)."""

    def __init__(self, stream: PeekableStream):
        self._stream = stream
        self._asked = min(FIRST_PEEK, stream.max_peek)
        self.buf = stream.peek(self._asked)
        self.pos = 0

    def need(self, n: int) -> None:
        end = self.pos + n
        if end <= len(self.buf):
            return
        if len(self.buf) < self._asked or end > self._stream.max_peek:
            raise _Malformed("header runs past the end of the file or the peek limit")
        self._asked = min(max(end, 2 * self._asked), self._stream.max_peek)
        self.buf = self._stream.peek(self._asked)
        if end > len(self.buf):
            raise _Malformed("header runs past the end of the file")

    def take(self, n: int) -> bytes:
        self.need(n)
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def skip(self, n: int) -> None:
        self.need(n)
        self.pos += n

    def u32(self) -> int:
        self.need(4)
        self.pos += 4
        return _U32.unpack_from(self.buf, self.pos - 4)[0]

    def u64(self) -> int:
        self.need(8)
        self.pos += 8
        return _U64.unpack_from(self.buf, self.pos - 8)[0]

    def string(self, limit: int) -> bytes:
        n = self.u64()
        if n > limit:
            raise _Malformed("string too long")
        return self.take(n)

    def room(self, item_size: int) -> int:
        """How many items of at least `item_size` bytes could still fit under the peek limit."""
        return (self._stream.max_peek - self.pos) // item_size

    def skip_strings(self, count: int) -> None:
        """Pass over `count` strings: each has its own length, so an array of them (a
        tokenizer vocabulary) is walked string by string."""
        buf, pos = self.buf, self.pos
        for _ in range(count):
            if pos + 8 > len(buf):
                self.pos = pos
                self.need(8)
                buf = self.buf
            pos += 8 + _U64.unpack_from(buf, pos)[0]
        self.pos = pos
        self.need(0)


def read_layout(stream: PeekableStream) -> Layout | None:
    head = stream.peek(8) if stream.max_peek >= 8 else b""
    if len(head) < 8 or head[:4] != MAGIC or _U32.unpack_from(head, 4)[0] not in VERSIONS:
        return None
    try:
        data_start, tensors, metadata = parse_header(_Cursor(stream))
    except _Malformed:
        return None
    return Layout("gguf", _segments(data_start, tensors), metadata)


TensorEntry = tuple[int, int, "Tensor | None"]      # offset, bytes, tensor (None: unknown type)


def parse_header(cur: _Cursor) -> tuple[int, list[TensorEntry], dict[str, str]]:
    """(data section start, tensors sorted by offset, general.* metadata)."""
    cur.skip(8)                                      # magic and version, already checked
    n_tensors, n_kv = cur.u64(), cur.u64()
    if n_tensors > MAX_TENSORS or n_kv > cur.room(13):      # a key-value takes >= 13 bytes
        raise _Malformed("too many tensors or key-values")
    metadata: dict[str, str] = {}
    alignment = DEFAULT_ALIGNMENT
    seen_alignment = False
    for _ in range(n_kv):
        key = cur.string(MAX_NAME)
        vtype = cur.u32()
        if key == b"general.alignment":
            if vtype != UINT32 or seen_alignment:
                raise _Malformed("bad general.alignment")
            alignment, seen_alignment = cur.u32(), True
            if alignment <= 0 or alignment & (alignment - 1):
                raise _Malformed("alignment is not a power of two")
            shown: str | None = str(alignment)
        else:
            shown = _value(cur, vtype, 0, key.startswith(b"general."))
        if shown is not None and len(metadata) < MAX_METADATA:
            metadata[key.decode("utf-8", "replace")] = shown

    entries: list[TensorEntry] = []
    for _ in range(n_tensors):
        try:
            name = cur.string(MAX_NAME).decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed("tensor name is not UTF-8") from None
        n_dims = cur.u32()
        if n_dims > MAX_DIMS:
            raise _Malformed("too many dimensions")
        dims = [cur.u64() for _ in range(n_dims)]
        ggml_type, offset = cur.u32(), cur.u64()
        entries.append((offset, *_tensor(name, dims, ggml_type)))
    data_start = -(-cur.pos // alignment) * alignment
    entries.sort(key=lambda e: (e[0], e[1]))
    return data_start, entries, metadata


def _tensor(name: str, dims: list[int], ggml_type: int) -> tuple[int, Tensor | None]:
    """(bytes, tensor) of one tensor info; tensor None when its size cannot be known."""
    known = GGML_TYPES.get(ggml_type)
    if known is None:
        return 0, None
    dtype, block, block_bytes = known
    if block > 1 and (not dims or dims[0] % block):
        return 0, None                               # rows must be whole blocks
    size = math.prod(dims) // block * block_bytes
    if size >= MAX_BYTES:
        return 0, None
    return size, Tensor(name, dtype, tuple(reversed(dims)))


def _value(cur: _Cursor, vtype: int, depth: int, show: bool) -> str | None:
    """Skip one value; returns it as text when `show` and it is a scalar or a string."""
    if vtype in _SCALARS:
        size = _SIZES[vtype]
        raw = cur.take(size)
        if not show:
            return None
        if vtype == BOOL:
            return "true" if raw[0] else "false"
        (value,) = struct.unpack(_SCALARS[vtype], raw)
        if vtype == FLOAT32:
            return format(value, ".7g")
        return repr(value) if isinstance(value, float) else str(value)
    if vtype == STRING:
        n = cur.u64()
        if not show:
            cur.skip(n)
            return None
        cur.need(n)
        raw = cur.buf[cur.pos:cur.pos + min(n, MAX_VALUE_BYTES)]
        cur.pos += n
        return raw.decode("utf-8", "replace")
    if vtype == ARRAY:
        if depth >= MAX_ARRAY_DEPTH:
            raise _Malformed("arrays nested too deep")
        item_type, count = cur.u32(), cur.u64()
        if item_type in _SIZES:
            cur.skip(count * _SIZES[item_type])
        elif item_type == STRING:
            if count > cur.room(8):
                raise _Malformed("array longer than the header can hold")
            cur.skip_strings(count)
        elif item_type == ARRAY:
            if count > cur.room(12):
                raise _Malformed("array longer than the header can hold")
            for _ in range(count):
                _value(cur, ARRAY, depth + 1, False)
        else:
            raise _Malformed("unknown array element type")
        return None
    raise _Malformed("unknown value type")


def _segments(data_start: int, entries: list[TensorEntry]) -> Iterator[Segment]:
    yield Segment(data_start)                        # header, tensor infos and padding
    cursor = 0
    for offset, size, tensor in entries:
        if tensor is None or offset < cursor or data_start + offset + size >= MAX_BYTES:
            return                                   # unknown type or overlap: the rest is tail
        if offset > cursor:
            yield Segment(offset - cursor)           # padding (or anything) between tensors
        yield Segment(size, tensor)
        cursor = offset + size
