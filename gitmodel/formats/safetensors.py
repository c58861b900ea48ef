"""safetensors: an 8-byte header length, a JSON header, then the tensors' bytes.
Segmentation: docs/formats.md §2.3."""

from __future__ import annotations

import json
import math
import struct
from typing import Iterator

import numpy as np

from gitmodel.formats import DTYPE_BITS, Layout, Segment, Tensor
from gitmodel.formats.stream import PeekableStream

MAX_HEADER = 100_000_000        # the safetensors specification's own limit
# Arrays and objects nested deeper than this (the header object counts as 1) are refused before
# parsing: json.loads recurses once per level, so near Python's recursion limit its answer would
# depend on how deep the caller's stack is (git add, the merge driver), not on the bytes. Real
# headers nest 3 deep; the safetensors library's own parser (serde_json) stops at 128.
MAX_NESTING = 64
_SCAN_CHUNK = 1 << 20
_STEP = np.zeros(256, np.int8)         # +1 opens an array or object, -1 closes one
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


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
    parsed = _parse(header[8:])            # parsed once: the JSON takes ~30x its size
    tensors = None if parsed is None else _tensors(parsed)
    if tensors is None:
        return None
    return Layout("safetensors", _segments(8 + header_len, tensors), _metadata(parsed))


def _metadata(header: dict) -> dict[str, str]:
    """The header's `__metadata__` map (string to string, by the specification)."""
    found = header.get("__metadata__")
    if not isinstance(found, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in found.items()}


def parse_header(raw: bytes) -> list[tuple[int, int, Tensor]] | None:
    """(begin, end, tensor) sorted by begin, or None when the header is not valid."""
    parsed = _parse(raw)
    return None if parsed is None else _tensors(parsed)


def _parse(raw: bytes) -> dict | None:
    """The header's JSON object, or None when it is none (or nests too deep)."""
    if nesting_exceeds(raw, MAX_NESTING):
        return None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def _tensors(header: dict) -> list[tuple[int, int, Tensor]] | None:
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


def nesting_exceeds(raw: bytes, limit: int, chunk: int = _SCAN_CHUNK) -> bool:
    """Whether arrays and objects nest more than `limit` deep in this JSON text, outside its
    strings. Exact wherever the text is valid JSON, which is all json.loads reaches before it
    fails, so a text within the limit never nests json.loads deeper. Linear, in C and numpy."""
    # Backslashes appear only inside strings; pairs escape each other, so what is left of a
    # run is one backslash at most, and with the quote it escapes it goes: every quote left
    # opens or closes a string.
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    depth, in_string = 0, False
    for start in range(0, len(text), chunk):              # pieces: bounded numpy arrays
        part = np.frombuffer(text, np.uint8, min(chunk, len(text) - start), start)
        quotes = np.cumsum(part == ord('"'), dtype=np.int64)
        inside = (quotes & 1).astype(bool) ^ in_string     # after an odd count: in a string
        steps = np.where(inside, 0, _STEP[part]).astype(np.int64)
        levels = np.cumsum(steps) + depth
        if levels.max() > limit:
            return True
        depth, in_string = int(levels[-1]), in_string ^ bool(quotes[-1] & 1)
    return False


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


def header(tensors: list[tuple[str, str, tuple[int, ...], int]], metadata: object) -> bytes:
    """The bytes before the data of a safetensors file holding these (name, dtype, shape,
    byte length) tensors in this order: the 8-byte length and the JSON header, padded with
    spaces so the data starts on an 8-byte boundary (as the safetensors library writes).
    `metadata` (a map by the specification, any JSON value kept) is left out when None or {}."""
    entries: dict[str, object] = {}
    if metadata is not None and metadata != {}:
        entries["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, length in tensors:
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + length]}
        offset += length
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text
