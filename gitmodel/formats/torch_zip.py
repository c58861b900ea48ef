"""PyTorch `torch.save` zip archives, read front to back without the central directory; the
pickle is decoded into inert values, never executed.
Segmentation, tensor names and metrics: docs/formats.md §2.6."""

from __future__ import annotations

import heapq
import math
import re
import struct
from typing import Iterator

from gitmodel.formats import Layout, Segment, Tensor
from gitmodel.formats.stream import PeekableStream
from gitmodel.pointer import MAX_POINTER_SIZE

FORMAT = "pytorch"
MAX_PICKLE = 64 << 20            # bytes of data.pkl we accept
MAX_OPS = 5_000_000              # pickle opcodes decoded: bounds a hostile pickle's cost, far
                                 # above a real state_dict's (docs/benchmarks.md)
MAX_DEPTH = 100                  # nesting walked in the decoded object
MAX_STRING = 1 << 20             # longer strings in the pickle become opaque values
MAX_LEADING = 16                 # entries allowed before data.pkl
MAX_RECORD = 1 << 20             # largest small record whose size we search a descriptor for
MAX_ENTRIES = 1 << 20            # zip entries walked
MAX_SUMMARY = 50                 # metrics, and metadata entries, taken from the pickle
MAX_VALUE = 200                  # characters of a metadata value
MAX_NAME = 1 << 16               # characters of a metric's or metadata key's name kept (the
                                 # pointer shows 200); bounds what the summary holds
FLUSH = 4096                     # opaque bytes gathered before they are yielded

# Errors that say how much memory or stack this process has, not what the file holds: taking
# them for "not a torch file" made the pointer depend on the machine (a ulimit turned a file
# opaque). They propagate: clean fails, and no pointer is written.
_ENVIRONMENT = (MemoryError, RecursionError)

_LOCAL, _CENTRAL, _DESCRIPTOR = b"PK\x03\x04", b"PK\x01\x02", b"PK\x07\x08"
_NEXT = (_LOCAL, _CENTRAL, b"PK\x05\x06", b"PK\x06\x06")   # what may follow an entry

# torch dtype name -> (canonical dtype, bytes per element)
_DTYPES = {
    "float32": ("F32", 4), "float": ("F32", 4), "float64": ("F64", 8), "double": ("F64", 8),
    "float16": ("F16", 2), "half": ("F16", 2), "bfloat16": ("BF16", 2),
    "int64": ("I64", 8), "long": ("I64", 8), "int32": ("I32", 4), "int": ("I32", 4),
    "int16": ("I16", 2), "short": ("I16", 2), "int8": ("I8", 1), "uint8": ("U8", 1),
    "bool": ("BOOL", 1), "uint16": ("U16", 2), "uint32": ("U32", 4), "uint64": ("U64", 8),
    "complex64": ("C64", 8), "cfloat": ("C64", 8), "complex128": ("C128", 16),
    "cdouble": ("C128", 16), "complex32": ("C32", 4), "chalf": ("C32", 4),
    "float8_e4m3fn": ("F8_E4M3", 1), "float8_e5m2": ("F8_E5M2", 1),
    "float8_e8m0fnu": ("F8_E8M0", 1), "float8_e4m3fnuz": ("F8_E4M3FNUZ", 1),
    "float8_e5m2fnuz": ("F8_E5M2FNUZ", 1), "float4_e2m1fn_x2": ("F4_E2M1FN_X2", 1),
    "qint8": ("QI8", 1), "quint8": ("QU8", 1), "qint32": ("QI32", 4),
    "quint4x2": ("QU4X2", 1), "quint2x4": ("QU2X4", 1),
}
# legacy storage class -> torch dtype name
_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8",
}
# struct codes for reading a one-element tensor as a metric
_SCALAR = {"F32": "f", "F64": "d", "F16": "e", "I64": "q", "I32": "i", "I16": "h", "I8": "b",
           "U8": "B", "BF16": "bf16"}
_MODULE_PARTS = ("_parameters", "_buffers", "_modules")
_NUMPY = {"f8": "d", "f4": "f", "f2": "e", "i8": "q", "i4": "i", "i2": "h", "i1": "b",
          "u8": "Q", "u4": "I", "u2": "H", "u1": "B"}


# ----------------------------------------------------------------------------- entry point

def read_layout(stream: PeekableStream) -> Layout | None:
    try:
        return _read(stream)
    except _ENVIRONMENT:         # the machine's limits, not the file's: never a pointer of them
        raise
    except Exception:            # hostile input never escapes: the file is just opaque
        return None


class _Entry:
    __slots__ = ("name", "method", "header", "size")

    def __init__(self, name: bytes, method: int, header: int, size: int | None):
        self.name, self.method, self.header, self.size = name, method, header, size


def _entry(stream: PeekableStream, at: int) -> _Entry | None:
    """The local header `at` bytes ahead; size None when a data descriptor gives it."""
    head = stream.peek(at + 30)
    if len(head) < at + 30 or head[at:at + 4] != _LOCAL:
        return None
    _, _, flags, method, _, _, _, csize, _, nlen, xlen = struct.unpack_from("<IHHHHHIIIHH", head, at)
    header = 30 + nlen + xlen
    full = stream.peek(at + header)
    if len(full) < at + header or flags & 1:        # truncated, or encrypted
        return None
    name = full[at + 30:at + 30 + nlen]
    size: int | None = None
    if not flags & 8:
        size = csize
        if csize == 0xFFFFFFFF:
            size = _zip64_size(full[at + 30 + nlen:at + header])
            if size is None:
                return None
    return _Entry(name, method, header, size)


def _zip64_size(extra: bytes) -> int | None:
    """Compressed size from a local header's zip64 extra field (id 1: usize, csize)."""
    i = 0
    while i + 4 <= len(extra):
        tag, n = struct.unpack_from("<HH", extra, i)
        if tag == 1 and n >= 16:
            return struct.unpack_from("<Q", extra, i + 12)[0]
        i += 4 + n
    return None


def _descriptor_at(buf: bytes, i: int, size: int, eof: bool) -> int:
    """Length of a data descriptor for `size` bytes at buf[i:] (0 when there is none)."""
    if buf[i:i + 4] != _DESCRIPTOR:
        return 0
    for fmt, n in (("<II", 16), ("<QQ", 24)):
        if i + n <= len(buf) and struct.unpack_from(fmt, buf, i + 8) == (size, size):
            after = buf[i + n:i + n + 4]
            if after in _NEXT or (eof and not after):
                return n
    return 0


def _find_descriptor(stream: PeekableStream, start: int, least: int, most: int) -> tuple[int, int] | None:
    """(data length, descriptor length) of a stored bit-3 entry whose data starts `start` bytes
    ahead: the first distance in [least, most] followed by a matching descriptor. torch sets
    bit 3, so sizes come only after the data; a search (bytes.find) rather than decoding the
    pickle to its STOP keeps the pickle decoded once."""
    window = 4096
    while True:
        span = min(window, most - least, stream.max_peek - 28 - start - least)
        if span < 0:
            return None
        want = start + least + span + 28
        buf = stream.peek(want)
        eof = len(buf) < want
        i = buf.find(_DESCRIPTOR, start + least, start + least + span + 4)
        while i >= 0:
            n = _descriptor_at(buf, i, i - start, eof)
            if n:
                return i - start, n
            i = buf.find(_DESCRIPTOR, i + 1, start + least + span + 4)
        if eof or span >= most - least or span < window:
            return None          # searched all we may, or the peek limit stopped us
        window *= 16


def _skip(stream: PeekableStream, at: int, entry: _Entry) -> int | None:
    """Total length of an entry we only pass over."""
    if entry.size is not None:
        return entry.header + entry.size
    if entry.method != 0:
        return None              # compressed with unknown size: cannot find its end
    found = _find_descriptor(stream, at + entry.header, 0, MAX_RECORD)
    return None if found is None else entry.header + sum(found)


def _read(stream: PeekableStream) -> Layout | None:
    if stream.peek(4) != _LOCAL:
        return None
    at = 0
    for _ in range(MAX_LEADING + 1):
        entry = _entry(stream, at)
        if entry is None:
            return None
        if entry.name.endswith(b"/data.pkl"):
            break
        if entry.name.partition(b"/")[2].startswith(b"data/"):
            return None          # storages before the pickle (TorchScript): sizes unknown
        length = _skip(stream, at, entry)
        if length is None or length > MAX_RECORD + 4096:
            return None
        at += length
    else:
        return None
    if entry.method != 0:
        return None
    prefix = entry.name[:-len(b"/data.pkl")]
    start = at + entry.header
    if entry.size is not None:                       # size in the header
        size, descriptor = entry.size, 0
    else:                                            # size in a descriptor after the data
        found = _find_descriptor(stream, start, 0, MAX_PICKLE)
        if found is None:
            return None
        size, descriptor = found
    if size > MAX_PICKLE:
        return None
    data = stream.peek(start + size)[start:]
    if len(data) < size:
        return None
    root, machine, _ = _decode(data)
    end = start + size + descriptor
    layout = Layout(FORMAT, iter(()))
    plan = _Plan(root, machine, prefix, layout)
    layout.segments = _segments(stream, plan, end)
    return layout


def _segments(stream: PeekableStream, plan: "_Plan", pending: int) -> Iterator[Segment]:
    """Segments from the start; `pending` opaque bytes are known to precede the next entry."""
    try:
        expected = stream.position
        for _ in range(MAX_ENTRIES):
            if pending > FLUSH:
                yield Segment(pending)
                expected += pending
                pending = 0
                if stream.position != expected:
                    return
            entry = _entry(stream, pending)
            if entry is None:
                return           # central directory, or what we do not know: the tail
            found = plan.storages.get(entry.name)
            if found is None:
                length = _skip(stream, pending, entry)
                if length is None:
                    return
                if entry.name == plan.prefix + b"/byteorder":
                    at = pending + entry.header
                    plan.big_endian = stream.peek(at + 3)[at:] == b"big"
                    # Statistics and merges read little-endian words: list no tensors (the
                    # storages stay segments of their own, so versions still share chunks)
                    plan.layout.values_unreadable = plan.big_endian
                    if plan.big_endian:
                        plan.drop_scalars_read()
                pending += length
                continue
            storage = found
            if entry.method != 0 or entry.size not in (None, storage.nbytes):
                return
            pending += entry.header
            plan.read_scalars(stream, pending, storage)
            yield Segment(pending)
            yield Segment(storage.nbytes, plan.tensor(storage))
            expected += pending + storage.nbytes
            pending = 0
            if stream.position != expected:
                return
            if entry.size is None:                   # a descriptor follows the data
                buf = stream.peek(28)
                pending = _descriptor_at(buf, 0, storage.nbytes, len(buf) < 28)
                if not pending:
                    return
    except _ENVIRONMENT:
        raise
    except Exception:            # malformed input: the rest is an opaque tail
        return


# ----------------------------------------------------------------------------- pickle values

class _Bad(Exception):
    """The pickle is not one we decode (malformed, truncated, too large)."""


class _Dict:
    __slots__ = ("items",)

    def __init__(self, items: list | None = None):
        self.items = items if items is not None else []


class _Global:
    __slots__ = ("module", "name")

    def __init__(self, module: object, name: object):
        self.module, self.name = module, name


class _Obj:
    """An object we do not build: what was given to it, kept to walk for tensors and names."""
    __slots__ = ("cls", "args", "items", "elems", "state")

    def __init__(self, cls: object, args: object = ()):
        self.cls, self.args, self.items, self.elems, self.state = cls, args, [], [], None


class _Storage:
    __slots__ = ("key", "dtype", "esize", "nbytes")

    def __init__(self, key: str, dtype: str, esize: int, nbytes: int):
        self.key, self.dtype, self.esize, self.nbytes = key, dtype, esize, nbytes


class _View:
    __slots__ = ("storage", "dtype", "esize", "offset", "shape", "stride")

    def __init__(self, storage: _Storage, dtype: str, esize: int, offset: int,
                 shape: tuple, stride: tuple):
        self.storage, self.dtype, self.esize = storage, dtype, esize
        self.offset, self.shape, self.stride = offset, shape, stride


class _NumpyDtype:
    __slots__ = ("code", "order")

    def __init__(self, code: str):
        self.code, self.order = code, "<"


_UNKNOWN = _Obj(None)            # a value we keep nothing of


def _is_int(x: object) -> bool:
    return type(x) is int


def _ints(x: object) -> bool:
    return type(x) is tuple and all(type(d) is int and 0 <= d < 1 << 63 for d in x)


class _Machine:
    """Pickle opcodes to inert values; records storages in order of appearance."""

    def __init__(self) -> None:
        self.storages: dict[str, _Storage] = {}

    def persistent(self, pid: object) -> object:
        if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
            return _UNKNOWN
        _, cls, key, _, numel = pid
        if (type(cls) is not _Global or not isinstance(cls.module, str)
                or not cls.module.startswith("torch") or cls.name not in _STORAGES
                or type(key) is not str or not _is_int(numel) or numel < 0):
            return _UNKNOWN
        known = self.storages.get(key)
        if known is None:
            dtype, esize = _DTYPES[_STORAGES[cls.name]]
            known = self.storages[key] = _Storage(key, dtype, esize, numel * esize)
        return known

    def reduce(self, func: object, args: object, depth: int = 0) -> object:
        if type(func) is not _Global or type(args) is not tuple:
            return _Obj(func, args)
        module, name = func.module, func.name
        if module == "collections" and name == "OrderedDict" and not args:
            return _Dict()
        if module == "torch._utils":
            if name in ("_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_tensor_v3"):
                return self.view(func, args, name == "_rebuild_tensor_v3")
            if name in ("_rebuild_parameter", "_rebuild_parameter_with_state") and args:
                if type(args[0]) is _View:
                    return args[0]
        elif module == "torch._tensor" and name in ("_rebuild_from_type_v2", "_rebuild_from_type"):
            if len(args) == 4 and type(args[2]) is tuple and depth < 4:
                return self.reduce(args[0], args[2], depth + 1)
        elif module == "torch" and name == "Size" and len(args) == 1 and _ints(args[0]):
            return args[0]
        elif module == "_codecs" and name == "encode" and len(args) == 2:
            text = args[0]
            if type(text) is str and len(text) <= 64 and args[1] in ("latin1", "latin-1"):
                return text.encode("latin-1", "replace")
        elif module == "numpy" and name == "dtype" and args and type(args[0]) is str:
            return _NumpyDtype(args[0])
        elif name == "scalar" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            if len(args) == 2 and type(args[0]) is _NumpyDtype and type(args[1]) is bytes:
                code = _NUMPY.get(args[0].code)
                if code and struct.calcsize(code) == len(args[1]):
                    return struct.unpack(args[0].order + code, args[1])[0]
        return _Obj(func, args)

    def view(self, func: _Global, args: tuple, v3: bool) -> object:
        if len(args) < (7 if v3 else 4):
            return _Obj(func, args)
        storage, offset, shape, stride = args[:4]
        if (type(storage) is not _Storage or not _is_int(offset) or offset < 0
                or not _ints(shape) or not _ints(stride) or len(shape) != len(stride)):
            return _Obj(func, args)
        dtype, esize = storage.dtype, storage.esize
        if v3:                   # untyped storage, dtype given as torch.<dtype>
            given = args[6]
            if type(given) is not _Global or given.module != "torch" or given.name not in _DTYPES:
                return _Obj(func, args)
            dtype, esize = _DTYPES[given.name]
        return _View(storage, dtype, esize, offset, shape, stride)


def _text(raw: bytes) -> object:
    if len(raw) > MAX_STRING:
        return _UNKNOWN
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return _UNKNOWN


# What C's strtol(s, &end, 0) reads: spaces, a sign, then hex (0x), octal (0...) or decimal.
_STRTOL = re.compile(rb"[ \t\n\v\f\r]*([+-]?)(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))")


def _c_string(text: bytes) -> bytes:
    """A line as the C unpickler parses it: a C string, ended by its first NUL."""
    return text.partition(b"\0")[0]


def _int_line(line: bytes) -> int:
    """INT's argument (protocol 0) as pickle.loads, the C unpickler, reads it: strtol with base
    0 when that takes the whole line and fits a C long (a 2-character line of value 0 or 1 is
    False or True), else Python's int(text, 0). Text-line numbers mostly come from old pickles;
    what matters is reading the value torch.load reads, or refusing the file."""
    if not line:
        raise _Bad("empty INT line")
    text = _c_string(line)
    found = _STRTOL.match(text)
    if found is None:                     # no digits: strtol stops at the line's first byte
        value = 0 if not text else None
    elif found.end() == len(text):
        sign, hexa, octal, decimal = found.groups()
        value = int(hexa, 16) if hexa else int(octal, 8) if octal else int(decimal)
        value = -value if sign == b"-" else value
        if not -1 << 63 <= value < 1 << 63:
            value = None                  # out of range: Python's int() takes over
    else:
        value = None
    if value is None:
        return int(text, 0)
    return bool(value) if len(line) == 2 and value in (0, 1) else value


def _build(target: object, state: object) -> None:
    if type(target) is _Obj and target is not _UNKNOWN:
        target.state = state
    elif type(target) is _NumpyDtype and type(state) is tuple and len(state) > 1:
        if state[1] in ("<", ">"):
            target.order = state[1]
    # BUILD on a dict (an OrderedDict's __dict__, e.g. a state_dict's _metadata): ignored


def _extend(target: object, values: list) -> None:
    if type(target) is list:
        target.extend(values)
    elif type(target) is _Obj and target is not _UNKNOWN:
        target.elems.extend(values)


def _setitems(target: object, flat: list) -> None:
    pairs = list(zip(flat[::2], flat[1::2]))
    if type(target) is _Dict:
        target.items.extend(pairs)
    elif type(target) is _Obj and target is not _UNKNOWN:
        target.items.extend(pairs)


def _decode(data: bytes) -> tuple[object, _Machine, int]:
    """(root value, machine, bytes up to and including STOP); raises _Bad."""
    machine = _Machine()
    try:
        return _run(data, machine)
    except (_Bad, *_ENVIRONMENT):
        raise
    except Exception as e:       # IndexError, KeyError, struct.error, ...: not a pickle of ours
        raise _Bad(type(e).__name__) from None


def _run(data: bytes, machine: _Machine) -> tuple[object, _Machine, int]:
    stack: list = []
    marks: list[int] = []
    # As pickle's: a dict, and MEMOIZE stores at len(memo), the count of entries, whatever
    # indexes PUT used (a list numbered by its own length named other values than torch.load
    # sees: renamed tensors and metrics).
    memo: dict[int, object] = {}

    def put(k: int, v: object) -> None:
        if k < 0:
            raise _Bad("negative PUT argument")
        memo[k] = v

    get = memo.__getitem__

    push, pop = stack.append, stack.pop
    unpack = struct.unpack_from
    end = len(data)
    i = 0

    def take(n: int) -> bytes:
        if n < 0 or i + n > end:
            raise _Bad("truncated")
        return data[i:i + n]

    def line() -> bytes:
        j = data.index(b"\n", i, min(end, i + 4096))
        return data[i:j]

    def mark() -> list:
        m = marks.pop()
        items = stack[m:]
        del stack[m:]
        return items

    for _ in range(MAX_OPS):
        op = data[i]
        i += 1
        if op == 0x71:                                   # BINPUT
            put(data[i], stack[-1])
            i += 1
        elif op == 0x68:                                 # BINGET
            push(get(data[i]))
            i += 1
        elif op == 0x58:                                 # BINUNICODE
            (n,) = unpack("<I", data, i)
            i += 4
            push(_text(take(n)))
            i += n
        elif op == 0x8C:                                 # SHORT_BINUNICODE
            n = data[i]
            i += 1
            push(_text(take(n)))
            i += n
        elif op == 0x4B:                                 # BININT1
            push(data[i])
            i += 1
        elif op == 0x28:                                 # MARK
            marks.append(len(stack))
        elif op == 0x74:                                 # TUPLE
            push(tuple(mark()))
        elif op == 0x85:                                 # TUPLE1
            stack[-1] = (stack[-1],)
        elif op == 0x86:                                 # TUPLE2
            b = pop()
            stack[-1] = (stack[-1], b)
        elif op == 0x87:                                 # TUPLE3
            c, b = pop(), pop()
            stack[-1] = (stack[-1], b, c)
        elif op == 0x29:                                 # EMPTY_TUPLE
            push(())
        elif op == 0x52:                                 # REDUCE
            args = pop()
            stack[-1] = machine.reduce(stack[-1], args)
        elif op == 0x51:                                 # BINPERSID
            stack[-1] = machine.persistent(stack[-1])
        elif op == 0x89:                                 # NEWFALSE
            push(False)
        elif op == 0x88:                                 # NEWTRUE
            push(True)
        elif op == 0x4E:                                 # NONE
            push(None)
        elif op == 0x63:                                 # GLOBAL
            module = line()
            i += len(module) + 1
            name = line()
            i += len(name) + 1
            push(_Global(module.decode("utf-8"), name.decode("utf-8")))
        elif op == 0x93:                                 # STACK_GLOBAL
            name = pop()
            if type(name) is not str or type(stack[-1]) is not str:
                raise _Bad("STACK_GLOBAL requires strings")   # as pickle; a deep tuple there
            stack[-1] = _Global(stack[-1], name)                # would crash a hash of it
        elif op == 0x7D:                                 # EMPTY_DICT
            push(_Dict())
        elif op == 0x5D:                                 # EMPTY_LIST
            push([])
        elif op == 0x75:                                 # SETITEMS
            items = mark()
            _setitems(stack[-1], items)
        elif op == 0x73:                                 # SETITEM
            v = pop()
            k = pop()
            _setitems(stack[-1], [k, v])
        elif op == 0x65:                                 # APPENDS
            items = mark()
            _extend(stack[-1], items)
        elif op == 0x61:                                 # APPEND
            v = pop()
            _extend(stack[-1], [v])
        elif op == 0x72:                                 # LONG_BINPUT
            put(unpack("<I", data, i)[0], stack[-1])
            i += 4
        elif op == 0x6A:                                 # LONG_BINGET
            push(get(unpack("<I", data, i)[0]))
            i += 4
        elif op == 0x94:                                 # MEMOIZE
            memo[len(memo)] = stack[-1]
        elif op == 0x4A:                                 # BININT
            push(unpack("<i", data, i)[0])
            i += 4
        elif op == 0x4D:                                 # BININT2
            push(unpack("<H", data, i)[0])
            i += 2
        elif op == 0x47:                                 # BINFLOAT
            push(unpack(">d", data, i)[0])
            i += 8
        elif op == 0x8A:                                 # LONG1
            n = data[i]
            i += 1
            push(int.from_bytes(take(n), "little", signed=True))
            i += n
        elif op == 0x8B:                                 # LONG4
            (n,) = unpack("<i", data, i)
            i += 4
            take(n)
            push(int.from_bytes(data[i:i + n], "little", signed=True) if n <= 64 else _UNKNOWN)
            i += n
        elif op == 0x2E:                                 # STOP
            if len(stack) != 1:
                raise _Bad("stack at STOP")
            return stack[0], machine, i
        elif op == 0x80:                                 # PROTO
            i += 1
        elif op == 0x95:                                 # FRAME
            i += 8
        elif op == 0x81:                                 # NEWOBJ
            args = pop()
            stack[-1] = _Obj(stack[-1], args)
        elif op == 0x92:                                 # NEWOBJ_EX
            pop()
            args = pop()
            stack[-1] = _Obj(stack[-1], args)
        elif op == 0x62:                                 # BUILD
            state = pop()
            _build(stack[-1], state)
        elif op == 0x6C:                                 # LIST
            push(mark())
        elif op == 0x64:                                 # DICT
            d = _Dict()
            _setitems(d, mark())
            push(d)
        elif op == 0x8F:                                 # EMPTY_SET
            push([])
        elif op == 0x90:                                 # ADDITEMS
            items = mark()
            _extend(stack[-1], items)
        elif op == 0x91:                                 # FROZENSET
            push(tuple(mark()))
        elif op in (0x42, 0x43, 0x8E, 0x96, 0x54, 0x55):  # bytes, bytearray, py2 strings
            size = {0x42: "<I", 0x43: "B", 0x8E: "<Q", 0x96: "<Q", 0x54: "<i", 0x55: "B"}[op]
            (n,) = unpack(size, data, i)
            i += struct.calcsize(size)
            raw = take(n)
            i += n
            if op in (0x54, 0x55):
                push(raw.decode("latin-1") if n <= MAX_STRING else _UNKNOWN)
            else:
                push(raw if n <= 64 else _UNKNOWN)
        elif op in (0x49, 0x4C, 0x46, 0x56, 0x53, 0x50, 0x70, 0x67):   # text-line opcodes
            text = line()
            i += len(text) + 1
            if op == 0x49:                               # INT
                push(_int_line(text))
            elif op == 0x4C:                             # LONG: one trailing L at most
                push(int(_c_string(text[:-1] if text.endswith(b"L") else text), 0))
            elif op == 0x46:                             # FLOAT
                push(float(text))
            elif op == 0x56:                             # UNICODE
                push(text.decode("raw_unicode_escape"))
            elif op in (0x53, 0x50):                     # STRING (quoted), PERSID
                push(_UNKNOWN)
            elif op == 0x70:                             # PUT
                put(int(_c_string(text)), stack[-1])
            else:                                        # GET
                push(get(int(_c_string(text))))
        elif op in (0x69, 0x6F):                         # INST, OBJ
            if op == 0x69:
                module = line()
                i += len(module) + 1
                name = line()
                i += len(name) + 1
                cls: object = _Global(module.decode("utf-8"), name.decode("utf-8"))
                args = tuple(mark())
            else:
                items = mark()
                cls, args = items[0], tuple(items[1:])
            push(_Obj(cls, args))
        elif op == 0x30:                                 # POP
            if stack and not (marks and marks[-1] == len(stack)):
                pop()
            else:
                mark()
        elif op == 0x31:                                 # POP_MARK
            mark()
        elif op == 0x32:                                 # DUP
            push(stack[-1])
        elif op in (0x82, 0x83, 0x84):                   # EXT1, EXT2, EXT4
            i += {0x82: 1, 0x83: 2, 0x84: 4}[op]
            push(_UNKNOWN)
        elif op == 0x97:                                 # NEXT_BUFFER
            push(_UNKNOWN)
        elif op == 0x98:                                 # READONLY_BUFFER
            pass
        else:
            raise _Bad(f"opcode {op:#x}")
    raise _Bad("too many opcodes")


# ----------------------------------------------------------------------------- the plan

def _component(key: object) -> tuple[str, bool]:
    """A dict key as a name part, and whether it keeps a path eligible for the summary."""
    if type(key) is str:
        return key, True
    if type(key) in (int, float, bool) or key is None:
        return str(key), False
    return "?", False


class _Path:
    """A name as a chain of parts, joined with `.` only when needed: a key (up to 1 MiB) that
    the memo shares between 100 levels would otherwise make every name under it 100 MiB."""
    __slots__ = ("parent", "part", "count", "length")

    def __init__(self, parent: "_Path | None", part: str):
        self.parent, self.part = parent, part
        self.count = 1 if parent is None else parent.count + 1             # parts
        self.length = len(part) if parent is None else parent.length + 1 + len(part)

    def text(self, limit: int | None = None) -> str:
        """The name, cut to its first `limit` characters (the parts beyond are never read)."""
        parts, node = [], self
        while node is not None:
            parts.append(node.part)
            node = node.parent
        parts.reverse()
        if limit is None or self.length <= limit:
            return ".".join(parts)
        out, size = [], 0
        for part in parts:
            if out:
                out.append(".")
                size += 1
            out.append(part[:max(0, limit - size)])
            size += len(out[-1])
            if size >= limit:
                break
        return "".join(out)[:limit]


_child = _Path


class _Plan:
    """What the pickle says: the tensor named for each storage entry, and the summary."""

    def __init__(self, root: object, machine: _Machine, prefix: bytes, layout: Layout):
        self.prefix = prefix
        self.layout = layout
        self.big_endian = False
        # Per storage: the first view's path, the view, and whether every later view equals it.
        self.views: dict[str, list] = {}
        self.refs: dict[str, _Path | None] = {}
        # The first MAX_SUMMARY candidates by (parts, walk order), kept in heaps of at most
        # that many while walking, so a pickle of millions of candidates holds 50.
        self.numbers: list[tuple[tuple[int, int], _Path, object]] = []
        self.strings: list[tuple[tuple[int, int], _Path, object]] = []
        self.order = 0
        self.seen: set[int] = set()
        self._walk(root, None, True, 0)
        self.seen = set()
        # Characters of tensor names left before they add up to more than a pointer holds:
        # each is written whole, so past that the pointer is opaque (§2.2) and the names are
        # not built (memo sharing makes them far longer than the file: 1 MiB keys x 100).
        self.name_budget = MAX_POINTER_SIZE
        self.storages: dict[bytes, _Storage] = {}
        for key, storage in machine.storages.items():
            name = (prefix.decode("utf-8", "surrogateescape") + "/data/" + key)
            try:
                raw = name.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                continue
            self.storages.setdefault(raw, storage)
        self.scalars: dict[str, list[tuple[str, _View]]] = {}
        self.scalars_read: list[str] = []          # metrics read from storages so far
        self.dropped: set[str] = set()
        for _, path, value in sorted(self.numbers, reverse=True):
            name = path.text(MAX_NAME)
            if type(value) is _View:
                self.scalars.setdefault(value.storage.key, []).append((name, value))
            else:
                try:
                    layout.metrics.setdefault(name, float(value))
                except OverflowError:
                    pass
        for _, path, text in sorted(self.strings, reverse=True):
            layout.metadata.setdefault(path.text(MAX_NAME), text[:MAX_VALUE])
        self.numbers, self.strings = [], []

    def _walk(self, value: object, path: _Path | None, plain: bool, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        kind = type(value)
        if kind is _View:
            known = self.views.get(value.storage.key)
            if known is None:
                self.views[value.storage.key] = [path, value, True]
            elif known[2] and value is not known[1]:
                first = known[1]
                known[2] = ((value.dtype, value.offset, value.shape, value.stride)
                            == (first.dtype, first.offset, first.shape, first.stride))
            if (plain and path is not None and len(value.shape) <= 1
                    and math.prod(value.shape) == 1 and value.dtype in _SCALAR):
                self._note(self.numbers, path, value)
        elif kind is _Storage:
            self.refs.setdefault(value.key, path)
        elif kind is int or kind is float:
            if plain and path is not None:
                self._note(self.numbers, path, value)
        elif kind is str:
            if plain and path is not None:
                self._note(self.strings, path, value)
        elif kind is _Global:
            if plain and path is not None and value.module == "torch" and value.name in _DTYPES:
                self._note(self.strings, path, f"torch.{value.name}")
        elif kind in (_Dict, list, tuple, _Obj):
            if id(value) in self.seen:
                return
            self.seen.add(id(value))
            if kind is _Dict:
                self._items(value.items, path, plain, depth)
            elif kind is _Obj:
                args = value.args if type(value.args) is tuple else (value.args,)
                for arg in args:                          # constructor arguments: same name
                    self._walk(arg, path, False, depth + 1)
                for n, elem in enumerate(value.elems):
                    self._walk(elem, _child(path, str(n)), False, depth + 1)
                self._items(value.items, path, plain, depth)
                state = value.state
                parts = state if type(state) is tuple and len(state) == 2 else (state,)
                for part in parts:                        # __dict__ (and slots) state
                    if type(part) is _Dict:
                        self._state(part.items, path, plain, depth)
                    elif part is not None:
                        self._walk(part, path, False, depth + 1)
            else:
                for n, elem in enumerate(value):
                    self._walk(elem, _child(path, str(n)), False, depth + 1)

    def _state(self, items: list, path: _Path | None, plain: bool, depth: int) -> None:
        """An object's attributes. A whole nn.Module (torch.save(model)) is named as its
        state_dict would be: `_parameters`, `_buffers` and `_modules` add no name part, and its
        other attributes (sizes, flags) are not metrics."""
        if not any(key in _MODULE_PARTS for key, _ in items):
            self._items(items, path, plain, depth)
            return
        for key, item in items:
            if key in _MODULE_PARTS and type(item) is _Dict:
                self._items(item.items, path, False, depth + 1)
            else:
                part, _ = _component(key)
                self._walk(item, _child(path, part), False, depth + 1)

    def _items(self, items: list, path: _Path | None, plain: bool, depth: int) -> None:
        for key, item in items:
            part, keeps = _component(key)
            self._walk(item, _child(path, part), plain and keeps, depth + 1)

    def _note(self, into: list, path: _Path, value: object) -> None:
        """A candidate, kept when among the first MAX_SUMMARY by (parts, walk order): a
        max-heap on negated keys, whose top is the last kept."""
        self.order += 1
        key = (-path.count, -self.order)
        if len(into) < MAX_SUMMARY:
            heapq.heappush(into, (key, path, value))
        elif key > into[0][0]:
            heapq.heapreplace(into, (key, path, value))

    def tensor(self, storage: _Storage) -> Tensor:
        """The tensor of a storage whose entry is reached (named only then: see name_budget)."""
        known = self.views.get(storage.key)
        path = known[0] if known else self.refs.get(storage.key)
        fallback = f"data/{storage.key}"
        length = path.length if path is not None else len(fallback)
        if length > self.name_budget:
            name = fallback                       # never shown: the pointer is opaque
            self.layout.names_oversized = True
        else:
            name = (path.text() if path is not None else "") or fallback
        self.name_budget = max(-1, self.name_budget - length)
        if known:
            _, first, same = known
            if same and _covers(first, storage.nbytes):
                return Tensor(name, first.dtype, first.shape)
            dtype, esize = first.dtype, first.esize
        else:
            dtype, esize = storage.dtype, storage.esize
        if storage.nbytes % esize:
            dtype, esize = "U8", 1
        return Tensor(name, dtype, (storage.nbytes // esize,))

    def read_scalars(self, stream: PeekableStream, at: int, storage: _Storage) -> None:
        """Metrics held in one-element tensors of the storage whose data is `at` bytes ahead."""
        wanted = self.scalars.get(storage.key)
        if not wanted or storage.nbytes > 4096:
            return
        data = stream.peek(at + storage.nbytes)[at:]
        order = ">" if self.big_endian else "<"
        for name, view in wanted:
            begin = view.offset * view.esize
            raw = data[begin:begin + view.esize]
            if len(raw) != view.esize:
                continue
            code = _SCALAR[view.dtype]
            if code == "bf16":                            # the high half of a float32
                raw, code = (raw + b"\0\0" if self.big_endian else b"\0\0" + raw), "f"
            if name not in self.layout.metrics and name not in self.dropped:
                self.layout.metrics[name] = float(struct.unpack(order + code, raw)[0])
                self.scalars_read.append(name)

    def drop_scalars_read(self) -> None:
        """A `byteorder` saying big after storages were read (torch.load finds it by name,
        wherever it is): their values were read little-endian, so they are no metrics, and
        their names are not taken again."""
        for name in self.scalars_read:
            del self.layout.metrics[name]
            self.dropped.add(name)
        self.scalars_read = []


def _covers(view: _View, nbytes: int) -> bool:
    """Whether the view is the whole storage, contiguous, from its first byte."""
    if view.offset != 0 or math.prod(view.shape) * view.esize != nbytes:
        return False
    expected = 1
    for size, stride in zip(reversed(view.shape), reversed(view.stride)):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True
