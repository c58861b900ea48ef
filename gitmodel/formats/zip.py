"""A zip archive's directory, read from its end: where each entry's data and CRC-32 fields are,
so a checkpoint whose entries' data changed can be written with correct CRCs (torch.save
archives and .npz files store their entries uncompressed)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

_EOCD = struct.Struct("<4sHHHHIIH")               # end of central directory record
_EOCD64_LOCATOR = struct.Struct("<4sIQI")
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")   # central directory file header
_LOCAL = struct.Struct("<4sHHHHHIIIHH")           # local file header
UNKNOWN32 = 0xFFFFFFFF


class ZipError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    name: str
    data_offset: int          # first byte of the entry's (stored) data
    size: int                 # bytes of data
    stored: bool              # not compressed: the data is the file's bytes
    crc_fields: tuple[int, ...]   # offsets of the 4-byte CRC-32 fields that describe it
    stamp_fields: tuple[int, ...]  # offsets of its 4-byte DOS time and date fields


ReadAt = Callable[[int, int], bytes]


def entries(read_at: ReadAt, size: int) -> list[Entry]:
    """Every entry of the archive (`read_at(offset, n)` reads the file). Raises ZipError."""
    tail_at = max(0, size - (_EOCD.size + 0xFFFF))
    tail = read_at(tail_at, size - tail_at)
    at = _eocd(tail)
    _, _, _, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
    if UNKNOWN32 in (cd_offset, cd_size) or count == 0xFFFF:
        locator = tail[at - _EOCD64_LOCATOR.size:at]
        if len(locator) != _EOCD64_LOCATOR.size or locator[:4] != b"PK\x06\x07":
            raise ZipError("zip64 locator missing")
        eocd64_at = _EOCD64_LOCATOR.unpack(locator)[2]
        record = read_at(eocd64_at, _EOCD64.size)
        if len(record) != _EOCD64.size or record[:4] != b"PK\x06\x06":
            raise ZipError("zip64 end of central directory record missing")
        *_, count, cd_size, cd_offset = _EOCD64.unpack(record)[4:]
    directory = read_at(cd_offset, cd_size)
    if len(directory) != cd_size:
        raise ZipError("central directory cut short")
    found, pos = [], 0
    for _ in range(count):
        if directory[pos:pos + 4] != b"PK\x01\x02" or pos + _CENTRAL.size > len(directory):
            raise ZipError("bad central directory entry")
        fields = _CENTRAL.unpack_from(directory, pos)
        flags, method, csize, usize = fields[3], fields[4], fields[8], fields[9]
        nlen, elen, clen, local_at = fields[10], fields[11], fields[12], fields[16]
        name = directory[pos + _CENTRAL.size:pos + _CENTRAL.size + nlen].decode("utf-8", "replace")
        extra = directory[pos + _CENTRAL.size + nlen:pos + _CENTRAL.size + nlen + elen]
        usize, csize, local_at = _zip64(extra, usize, csize, local_at)
        local = read_at(local_at, _LOCAL.size)
        if len(local) != _LOCAL.size or local[:4] != b"PK\x03\x04":
            raise ZipError(f"bad local header for {name}")
        lnlen, lelen = _LOCAL.unpack(local)[9:11]
        data_at = local_at + _LOCAL.size + lnlen + lelen
        crcs = [cd_offset + pos + 16]
        if flags & 0x08:                        # a data descriptor follows the data
            sig = read_at(data_at + csize, 4)
            crcs.append(data_at + csize + (4 if sig == b"PK\x07\x08" else 0))
        else:
            crcs.append(local_at + 14)
        stamps = (cd_offset + pos + 12, local_at + 10)
        found.append(Entry(name, data_at, csize, method == 0 and csize == usize, tuple(crcs), stamps))
        pos += _CENTRAL.size + nlen + elen + clen
    return found


def _eocd(tail: bytes) -> int:
    """Where the end of central directory record starts in the file's last bytes. Its
    signature may also appear in the archive's comment (which follows the record): the last
    one whose record and comment end exactly at the end of the file is it, else the last
    whole record (bytes appended after an archive are tolerated)."""
    whole, at = None, len(tail)
    while (at := tail.rfind(b"PK\x05\x06", 0, at)) >= 0:
        if at + _EOCD.size <= len(tail):
            if at + _EOCD.size + _EOCD.unpack_from(tail, at)[7] == len(tail):
                return at
            whole = at if whole is None else whole
    if whole is None:
        raise ZipError("no end of central directory record")
    return whole


def _zip64(extra: bytes, usize: int, csize: int, local_at: int) -> tuple[int, int, int]:
    """Sizes and offset from the zip64 extra field, for those the header marks unknown."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 1:
            values, at = [], pos + 4
            for value in (usize, csize, local_at):
                if value == UNKNOWN32:
                    if at + 8 > pos + 4 + length or at + 8 > len(extra):
                        raise ZipError("zip64 extra field cut short")
                    values.append(struct.unpack_from("<Q", extra, at)[0])
                    at += 8
                else:
                    values.append(value)
            return values[0], values[1], values[2]
        pos += 4 + length
    return usize, csize, local_at
