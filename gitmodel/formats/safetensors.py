"""safetensors: an 8-byte header length, a JSON header, then the tensors' bytes.
Segmentation: docs/formats.md §2.3."""

from __future__ import annotations

import json
import math
import struct
from typing import Iterator

from gitmodel.formats import DTYPE_BITS, Layout, Segment, Tensor
from gitmodel.formats.stream import PeekableStream

MAX_HEADER = 100_000_000        # the safetensors specification's own limit


def read_layout(stream: PeekableStream) -> Layout | None:
    head = stream.peek(9)
    if len(head) < 9:
        return None
    (header_len,) = struct.unpack("<Q", head[:8])
    if not 2 <= header_len <= MAX_HEADER or head[8:9] != b"{":
        return None
    header = stream.peek(8 + header_len)
    if len(header) < 8 + header_len:
        return None
    tensors = parse_header(header[8:])
    if tensors is None:
        return None
    return Layout("safetensors", _segments(8 + header_len, tensors), _metadata(header[8:]))


def _metadata(raw: bytes) -> dict[str, str]:
    """The header's `__metadata__` map (string to string, by the specification)."""
    found = json.loads(raw.decode("utf-8")).get("__metadata__")
    if not isinstance(found, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in found.items()}


def parse_header(raw: bytes) -> list[tuple[int, int, Tensor]] | None:
    """(begin, end, tensor) sorted by begin, or None when the header is not valid."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tensor = _tensor(name, info)
        if tensor is None:
            return None
        tensors.append(tensor)
    tensors.sort(key=lambda t: (t[0], t[1]))
    previous_end = 0
    for begin, end, _ in tensors:
        if begin < previous_end:        # overlapping tensors: not a layout we can segment
            return None
        previous_end = end
    return tensors


def _tensor(name: str, info: object) -> tuple[int, int, Tensor] | None:
    if not isinstance(info, dict):
        return None
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        return None
    if not isinstance(shape, list) or not isinstance(offsets, list):
        return None
    if not all(type(d) is int and 0 <= d < 1 << 63 for d in shape):
        return None
    if len(offsets) != 2 or not all(type(o) is int for o in offsets):
        return None
    begin, end = offsets
    if not 0 <= begin <= end < 1 << 62:
        return None
    if end - begin != (math.prod(shape) * DTYPE_BITS[dtype] + 7) // 8:
        return None
    return begin, end, Tensor(name, dtype, tuple(shape))


def _segments(data_start: int, tensors: list[tuple[int, int, Tensor]]) -> Iterator[Segment]:
    yield Segment(data_start)                      # length prefix and JSON header
    cursor = 0
    for begin, end, tensor in tensors:
        if begin > cursor:
            yield Segment(begin - cursor)          # a hole between tensors
        yield Segment(end - begin, tensor)
        cursor = end


def header(tensors: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str] | None) -> bytes:
    """The bytes before the data of a safetensors file holding these (name, dtype, shape,
    byte length) tensors in this order: the 8-byte length and the JSON header, padded with
    spaces so the data starts on an 8-byte boundary (as the safetensors library writes)."""
    entries: dict[str, object] = {}
    if metadata:
        entries["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, length in tensors:
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + length]}
        offset += length
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text
