"""NumPy .npy files and .npz archives (`np.save`, `np.savez`, `np.savez_compressed`); headers are
read as literals, never evaluated. Segmentation: docs/formats.md §2.4 (.npy) and §2.5 (.npz)."""

from __future__ import annotations

import ast
import math
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Iterator

from gitmodel.formats import Layout, Segment, Tensor
from gitmodel.formats.stream import PeekableStream

MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 16            # longest .npy header we will parse (numpy's own limit is 10000)
MAX_DIMS = 64                   # numpy's limit
# Brackets nested deeper than this (the header's dict counts as 1) are refused before parsing:
# ast.literal_eval recurses once per level, so near Python's recursion limit its answer would
# depend on how deep the caller's stack is (git add, the merge driver), not on the bytes. Real
# headers nest 3 deep, structured dtypes 2 more per nested struct; Python's parser stops at 200.
MAX_NESTING = 64
# Where the nesting scan stops: brackets, comments and string literals (a header holds no
# backslash, so a string ends at the next quote of its kind).
_LEXEMES = re.compile(r"""[][(){}#]|'''|\"\"\"|'|\"""")
MAX_BYTES = 1 << 62
ARRAY_NAME = "array"            # the tensor name of a lone .npy

# descr -> (canonical dtype, bytes per element). Only little-endian (or byte-order free)
# fixed-width numbers; everything else is kept as opaque bytes.
DTYPES: dict[str, tuple[str, int]] = {
    "<f2": ("F16", 2), "<f4": ("F32", 4), "<f8": ("F64", 8),
    "|i1": ("I8", 1), "<i2": ("I16", 2), "<i4": ("I32", 4), "<i8": ("I64", 8),
    "|u1": ("U8", 1), "<u2": ("U16", 2), "<u4": ("U32", 4), "<u8": ("U64", 8),
    "|b1": ("BOOL", 1), "<c8": ("C64", 8),
}

ZIP_LOCAL = b"PK\x03\x04"
ZIP_LOCAL_SIZE = 30
ZIP64_EXTRA = 0x0001
ZIP_UNKNOWN = 0xFFFFFFFF         # size stored in the zip64 extra field instead
FLAG_ENCRYPTED, FLAG_DESCRIPTOR, FLAG_UTF8 = 0x1, 0x8, 0x800
STORED = 0
MAX_ENTRIES = 1 << 20
MAX_LISTED = 50                 # names listed under "fortran_order"


@dataclass(frozen=True)
class NpyHeader:
    size: int                    # bytes from the magic to the first data byte
    dtype: str | None            # canonical dtype, None when the data is not described
    shape: tuple[int, ...]
    data_size: int | None        # prod(shape) * itemsize when dtype is known
    fortran_order: bool


def read_layout(stream: PeekableStream) -> Layout | None:
    head = _peek(stream, ZIP_LOCAL_SIZE)
    if head.startswith(MAGIC):
        return _npy_layout(stream)
    if head.startswith(ZIP_LOCAL):
        return _npz_layout(stream)
    return None


def _peek(stream: PeekableStream, n: int) -> bytes:
    """Up to n upcoming bytes; none at all when n is over the stream's peek limit (whatever
    needed them is then not understood, and stays opaque)."""
    return stream.peek(n) if n <= stream.max_peek else b""


# ----------------------------------------------------------------------------- .npy

def npy_header_size(prefix: bytes) -> int | None:
    """Bytes from the magic to the data, from the first 12 bytes of a .npy file."""
    if len(prefix) < 10 or not prefix.startswith(MAGIC):
        return None
    major, minor = prefix[6], prefix[7]
    if (major, minor) == (1, 0):
        return 10 + struct.unpack_from("<H", prefix, 8)[0]
    if (major, minor) in ((2, 0), (3, 0)) and len(prefix) >= 12:
        length = struct.unpack_from("<I", prefix, 8)[0]
        return 12 + length if length <= MAX_HEADER else None
    return None


def parse_npy_header(raw: bytes) -> NpyHeader | None:
    """The header of a .npy file, given its bytes up to the data (see npy_header_size)."""
    start = 10 if raw[6] == 1 else 12
    try:
        text = raw[start:].decode("utf-8" if raw[6] == 3 else "latin-1")
    except UnicodeDecodeError:
        return None
    text = text.strip()
    if not text.startswith("{") or "\\" in text or _nesting_exceeds(text, MAX_NESTING):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        # Within MAX_NESTING a literal's syntax tree is shallow, so a RecursionError (chains
        # such as 1+1+...+1) or the parser's MemoryError ("too complex") comes only from text
        # that is no literal: refused at any stack depth.
        return None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        return None
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(fortran, bool) or not isinstance(shape, tuple) or len(shape) > MAX_DIMS:
        return None
    if not all(type(d) is int and 0 <= d < 1 << 63 for d in shape):
        return None
    known = DTYPES.get(descr) if isinstance(descr, str) else None
    if known is None:
        return NpyHeader(len(raw), None, shape, None, fortran)
    dtype, itemsize = known
    data_size = math.prod(shape) * itemsize
    if data_size >= MAX_BYTES:
        return NpyHeader(len(raw), None, shape, None, fortran)
    return NpyHeader(len(raw), dtype, shape, data_size, fortran)


def _nesting_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside string literals and comments nest more than `limit` deep in
    this Python source without backslashes, or a string literal in it never ends (no literal
    then). Exact for text Python tokenizes, and literal_eval parses nothing else."""
    depth = pos = 0
    while True:
        found = _LEXEMES.search(text, pos)
        if found is None:
            return False
        token, pos = found.group(), found.end()
        if token in "([{":
            depth += 1
            if depth > limit:
                return True
        elif token in ")]}":
            depth -= 1
            if depth < 0:                        # unmatched: Python refuses it
                return True
        elif token == "#":                       # a comment, to the end of its line
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
        else:                                    # a string, to the next quote of its kind
            end = text.find(token, pos)
            if end < 0 or (len(token) == 1 and ("\n" in text[pos:end] or "\r" in text[pos:end])):
                return True
            pos = end + len(token)


def _peek_npy_header(stream: PeekableStream, at: int, limit: int) -> NpyHeader | None:
    """The .npy header starting `at` bytes ahead, when it ends within `limit` bytes."""
    size = npy_header_size(_peek(stream, at + 12)[at:])
    if size is None or size > limit:
        return None
    raw = _peek(stream, at + size)[at:]
    return parse_npy_header(raw) if len(raw) == size else None


def _npy_layout(stream: PeekableStream) -> Layout | None:
    header = _peek_npy_header(stream, 0, 12 + MAX_HEADER)
    if header is None:
        return None
    metadata = {"fortran_order": ARRAY_NAME} if header.fortran_order and header.dtype else {}
    return Layout("npy", _npy_segments(header), metadata)


def _npy_segments(header: NpyHeader) -> Iterator[Segment]:
    yield Segment(header.size)
    if header.dtype is not None:
        yield Segment(header.data_size, Tensor(ARRAY_NAME, header.dtype, header.shape))
    # whatever follows (trailing bytes, or an undescribed array) is the opaque tail


# ----------------------------------------------------------------------------- .npz

@dataclass(frozen=True)
class ZipEntry:
    header_size: int             # local header, name and extra field
    name: str
    method: int
    flags: int
    size: int                    # bytes of (compressed) data after the header


def local_header_size(raw: bytes) -> int | None:
    """Bytes of a local file header with its name and extra field, from its first 30 bytes."""
    if len(raw) < ZIP_LOCAL_SIZE or not raw.startswith(ZIP_LOCAL):
        return None
    name_len, extra_len = struct.unpack_from("<HH", raw, 26)
    return ZIP_LOCAL_SIZE + name_len + extra_len


def parse_entry(raw: bytes) -> ZipEntry | None:
    """A whole local file header (fixed part, name, extra field); None when its data size is
    not known from it (a data descriptor follows the data, or a zip64 size is missing)."""
    _, _, flags, method, _, _, _, csize, usize, name_len, extra_len = struct.unpack_from(
        "<IHHHHHIIIHH", raw)
    if flags & FLAG_DESCRIPTOR:
        return None
    name_raw = raw[ZIP_LOCAL_SIZE:ZIP_LOCAL_SIZE + name_len]
    extra = raw[ZIP_LOCAL_SIZE + name_len:ZIP_LOCAL_SIZE + name_len + extra_len]
    if ZIP_UNKNOWN in (csize, usize):
        sizes = _zip64_sizes(extra, usize == ZIP_UNKNOWN, csize == ZIP_UNKNOWN)
        if sizes is None:
            return None
        usize = sizes[0] if usize == ZIP_UNKNOWN else usize
        csize = sizes[-1] if csize == ZIP_UNKNOWN else csize
    if method == STORED and csize != usize:
        return None
    name = name_raw.decode("utf-8" if flags & FLAG_UTF8 else "cp437", errors="replace")
    return ZipEntry(len(raw), name, method, flags, csize)


def _zip64_sizes(extra: bytes, has_usize: bool, has_csize: bool) -> list[int] | None:
    """The 8-byte sizes the zip64 extra field holds (uncompressed first, then compressed; each
    present only when the local header's own field is 0xFFFFFFFF)."""
    wanted = has_usize + has_csize
    i = 0
    while i + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, i)
        body = extra[i + 4:i + 4 + size]
        if tag == ZIP64_EXTRA:
            if len(body) < 8 * wanted:
                return None
            return [struct.unpack_from("<Q", body, 8 * k)[0] for k in range(wanted)]
        i += 4 + size
    return None


def _peek_entry(stream: PeekableStream) -> ZipEntry | None:
    size = local_header_size(_peek(stream, ZIP_LOCAL_SIZE))
    if size is None:
        return None
    raw = _peek(stream, size)
    return parse_entry(raw) if len(raw) == size else None


def _npz_layout(stream: PeekableStream) -> Layout | None:
    head = _peek(stream, ZIP_LOCAL_SIZE)
    if local_header_size(head) is None:
        return None
    name_end = ZIP_LOCAL_SIZE + struct.unpack_from("<H", head, 26)[0]
    if not _peek(stream, name_end)[ZIP_LOCAL_SIZE:name_end].endswith(b".npy"):
        return None              # a zip, but not numpy's
    metadata: dict[str, str] = {}
    return Layout("npz", _npz_segments(stream, metadata), metadata)


def _npz_segments(stream: PeekableStream, metadata: dict[str, str]) -> Iterator[Segment]:
    fortran: list[str] = []
    expected = stream.position
    for _ in range(MAX_ENTRIES):
        if stream.position != expected:       # the consumer stopped short (a truncated file)
            return
        entry = _peek_entry(stream)
        if entry is None:        # the central directory, a data descriptor, or damage
            return
        header = _entry_npy_header(stream, entry)
        if header is None:
            yield Segment(entry.header_size + entry.size)
        else:
            name = entry.name[:-len(".npy")]
            yield Segment(entry.header_size + header.size)
            yield Segment(header.data_size, Tensor(name, header.dtype, header.shape))
            rest = entry.size - header.size - header.data_size
            if rest:
                yield Segment(rest)
            if header.fortran_order and len(fortran) < MAX_LISTED:
                fortran.append(name)
                metadata["fortran_order"] = ",".join(fortran)
        expected += entry.header_size + entry.size


def _entry_npy_header(stream: PeekableStream, entry: ZipEntry) -> NpyHeader | None:
    """The header of the array a stored "*.npy" entry holds, when it describes the entry."""
    if entry.method != STORED or entry.flags & FLAG_ENCRYPTED or not entry.name.endswith(".npy"):
        return None
    header = _peek_npy_header(stream, entry.header_size, entry.size)
    if header is None or header.dtype is None or header.size + header.data_size > entry.size:
        return None
    return header
