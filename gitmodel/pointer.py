"""The pointer: the small UTF-8 text git stores in place of a checkpoint, a pure function of
the file's bytes that doubles as its summary in `git diff`. Layout: docs/formats.md §1."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from gitmodel.errors import GitmodelError

MAGIC = "gitmodel pointer v1"
MAGIC_PREFIX = b"gitmodel pointer v"
MAX_POINTER_SIZE = 64 << 20         # larger input is never taken for a pointer
DIGEST_CHARS = 16
# No reader describes a dimension of 2**64 or more (GGUF's are u64, the others' below 2**63),
# nor a tensor of more than 2**64 elements (its bytes would not fit in a file).
MAX_DIM = MAX_ELEMENTS = 1 << 64

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_DIM = r"(?:0|[1-9][0-9]{0,19})"
_SHAPE = re.compile(rf"\[{_DIM}(?:,{_DIM})*\]|\[\]")
_DIGEST = re.compile(r"[0-9a-f]{%d}" % DIGEST_CHARS)
_TOKEN = re.compile(r"[A-Za-z0-9_]+")
_STAT = re.compile(r"[a-z_]+=[!-~]+")       # key=value, printable ASCII, no spaces
# A tensor line after its name, checked in one match: walks of history parse every line of
# every version (the fields' own patterns above, joined by single spaces)
_TENSOR_FIELDS = re.compile(rf"([A-Za-z0-9_]+) (\[(?:{_DIM}(?:,{_DIM})*)?\]) ([0-9a-f]{{{DIGEST_CHARS}}})"
                            r"((?: [a-z_]+=[!-~]+)*)")


class PointerError(GitmodelError, ValueError):
    pass


@dataclass(frozen=True)
class TensorLine:
    name: str
    dtype: str
    shape: tuple[int, ...]
    digest: str             # DIGEST_CHARS hex digits
    stats: tuple[str, ...] = ()   # `key=value` fields (gitmodel.stats), shown as they are


@dataclass(frozen=True)
class Pointer:
    size: int
    content: str            # manifest id, 64 hex digits
    format: str = "opaque"
    tensors: tuple[TensorLine, ...] = field(default_factory=tuple)
    metadata: tuple[tuple[str, str], ...] = ()     # the format's key-values, sorted by key
    metrics: tuple[tuple[str, float], ...] = ()    # scalars found in the file, sorted by key

    def params(self) -> dict[str, int]:
        """Element count per dtype, in order of first appearance."""
        counts: dict[str, int] = {}
        for t in self.tensors:
            counts[t.dtype] = counts.get(t.dtype, 0) + elements(t.shape)
        return counts

    def render(self) -> bytes:
        lines = [MAGIC, f"size {self.size}", f"content {self.content}", f"format {self.format}"]
        if self.tensors:
            lines.append(f"tensors {len(self.tensors)}")
            counts = self.params()
            lines.append(f"params {sum(counts.values())} ("
                         + ", ".join(f"{dtype} {n}" for dtype, n in counts.items()) + ")")
        if self.metadata:
            lines += ["", "[metadata]"]
            lines += [f"{quote_name(k)} {_quote_value(v)}" for k, v in self.metadata]
        if self.metrics:
            lines += ["", "[metrics]"]
            lines += [f"{quote_name(k)} {format_number(v)}" for k, v in self.metrics]
        if self.tensors:
            lines += ["", "[tensors]"]
            lines += [" ".join((quote_name(t.name), t.dtype, _shape(t.shape), t.digest) + t.stats)
                      for t in self.tensors]
        return ("\n".join(lines) + "\n").encode("utf-8")


def elements(shape: tuple[int, ...]) -> int | None:
    """The element count of a shape; None past MAX_ELEMENTS (worked out in time linear in the
    number of dimensions, whatever they are)."""
    if 0 in shape:
        return 0
    count = 1
    for d in shape:
        count *= d
        if count > MAX_ELEMENTS:
            return None
    return count


def format_number(value: float) -> str:
    """Metrics as they read best: integers whole, others to 6 significant digits."""
    if isinstance(value, bool):
        return str(int(value))
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".6g")


def note_size(sizes: dict[str, int], ptr: Pointer) -> None:
    """Record in `sizes` (content id -> bytes) the file size a pointer gives its content, the
    larger where two pointers disagree (one was edited): what bounds its manifest read from a
    remote (docs/formats.md §3, "Bounds"), so that no pointer's manifest is refused for
    another's size."""
    sizes[ptr.content] = max(ptr.size, sizes.get(ptr.content, 0))


def is_pointer_prefix(head: bytes) -> bool:
    """Whether bytes starting with `head` claim to be a pointer (of any version)."""
    return head.startswith(MAGIC_PREFIX)


def newer_version(data: bytes) -> bool:
    """Whether `data` starts like a pointer of a later version than this gitmodel reads: what
    it names may be written in a form unknown here."""
    first = bytes(data[:64]).split(b"\n", 1)[0].rstrip(b"\r")
    number = first[len(MAGIC_PREFIX):]
    return first.startswith(MAGIC_PREFIX) and number.isdigit() and int(number) > int(MAGIC[len(MAGIC_PREFIX):])


def sniff(data: bytes) -> Pointer | None:
    """The pointer `data` holds, or None when it is not one (it does not start like a pointer,
    or is too large to be one). Data that starts like a pointer but does not parse raises
    PointerError: callers decide whether that is damage or merely a file that looks alike."""
    if len(data) > MAX_POINTER_SIZE or not is_pointer_prefix(data):
        return None
    return parse(data)


def without_crlf(data: bytes) -> bytes:
    """Pointer text as committed, from text git may have given CRLF line ends (a later
    .gitattributes line turning text conversion on for the path: `* text=auto` with
    core.autocrlf, or eol=crlf). A pointer holds no carriage return of its own."""
    return data.replace(b"\r\n", b"\n") if is_pointer_prefix(data) and b"\r\n" in data else data


def sniff_file(path) -> Pointer | None:
    """`sniff` of a file's bytes, reading a large file only as far as its first bytes."""
    with open(path, "rb") as f:
        if not is_pointer_prefix(f.read(len(MAGIC_PREFIX))):
            return None
        f.seek(0)
        return sniff(without_crlf(f.read(MAX_POINTER_SIZE + 1)))


def parse(data: bytes) -> Pointer:
    if len(data) > MAX_POINTER_SIZE:
        raise PointerError("too large to be a pointer")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PointerError("not UTF-8") from None
    lines = text.split("\n")
    if lines[0] != MAGIC:
        if lines[0].startswith(MAGIC_PREFIX.decode()):
            raise PointerError(f"unsupported pointer version {lines[0][len(MAGIC_PREFIX):]!r}; "
                               "upgrade gitmodel")
        raise PointerError("not a gitmodel pointer")
    if lines[-1] != "":
        raise PointerError("pointer does not end with a newline")
    lines.pop()

    header: dict[str, str] = {}
    i = 1
    while i < len(lines) and lines[i] != "":
        key, _, value = lines[i].partition(" ")
        if not _TOKEN.fullmatch(key) or key in header:
            raise PointerError(f"bad header line {i + 1}")
        header[key] = value
        i += 1
    size, content = header.get("size"), header.get("content")
    if size is None or not _SIZE.fullmatch(size):
        raise PointerError("missing or bad size")
    if content is None or not _HEX64.fullmatch(content):
        raise PointerError("missing or bad content id")
    fmt = header.get("format", "opaque")
    if not _TOKEN.fullmatch(fmt):
        raise PointerError("bad format name")

    tensors: list[TensorLine] = []
    metadata: list[tuple[str, str]] = []
    metrics: list[tuple[str, float]] = []
    section = None
    for number, line in enumerate(lines[i:], start=i + 1):
        if line == "":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[tensors]":
            tensors.append(_parse_tensor(line, number))
        elif section == "[metadata]":
            key, value = _split_key(line, number)
            metadata.append((key, _unquote_value(value, number)))
        elif section == "[metrics]":
            key, value = _split_key(line, number)
            try:
                metrics.append((key, float(value)))
            except ValueError:
                raise PointerError(f"bad metric line {number}") from None
        # lines of sections this version does not know are skipped
    if "tensors" in header and header["tensors"] != str(len(tensors)):
        raise PointerError("tensor count disagrees with the tensor table")
    return Pointer(int(size), content, fmt, tuple(tensors), tuple(metadata), tuple(metrics))


def quote_name(name: str) -> str:
    """A tensor name as the pointer writes it: as it is, or JSON-quoted if it is empty, has
    spaces or control characters, or starts like a quote (docs/formats.md)."""
    plain = name and name.isprintable() and not any(c.isspace() for c in name) \
        and name[0] not in '"['
    return name if plain else json.dumps(name)


def _quote_value(value: str) -> str:
    """Metadata values stay as they are unless they would not survive as one line."""
    plain = value.isprintable() and value == value.strip() and not value.startswith('"')
    return value if plain and value else json.dumps(value)


def _unquote_value(text: str, number: int) -> str:
    if not text.startswith('"'):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        raise PointerError(f"bad metadata line {number}") from None
    if not isinstance(value, str):
        raise PointerError(f"bad metadata line {number}")
    return value


def _split_key(line: str, number: int) -> tuple[str, str]:
    """A `key value` line whose key may be JSON-quoted."""
    try:
        if line.startswith('"'):
            key, end = json.JSONDecoder().raw_decode(line)
            if not isinstance(key, str) or line[end:end + 1] != " ":
                raise ValueError
            return key, line[end + 1:]
    except ValueError:
        raise PointerError(f"bad line {number}") from None
    key, sep, value = line.partition(" ")
    if not sep or not key:
        raise PointerError(f"bad line {number}")
    return key, value


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _parse_tensor(line: str, number: int) -> TensorLine:
    try:
        if line.startswith('"'):
            name, end = json.JSONDecoder().raw_decode(line)
            rest = line[end:]
            if not isinstance(name, str) or not rest.startswith(" "):
                raise ValueError
            rest = rest[1:]
        else:
            name, _, rest = line.partition(" ")
    except ValueError:
        raise PointerError(f"bad tensor line {number}") from None
    match = _TENSOR_FIELDS.fullmatch(rest)
    if match is None:
        raise PointerError(f"bad tensor line {number}")
    dtype, shape, digest, stats = match.groups()
    stats = tuple(stats[1:].split(" ")) if stats else ()
    dims = tuple(map(int, shape[1:-1].split(","))) if shape != "[]" else ()
    if max(dims, default=0) >= MAX_DIM or elements(dims) is None:
        raise PointerError(f"bad tensor line {number}: a shape no checkpoint has (a dimension of "
                           "2^64 or more, or more than 2^64 elements)")
    return TensorLine(name, dtype, dims, digest, stats)

