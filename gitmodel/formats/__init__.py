"""Checkpoint formats: readers that divide a file into segments (tensors and the opaque bytes
between them) by peeking, never executing anything; what they do not understand stays opaque,
byte for byte. The rules every reader shares: docs/formats.md §2.2."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from gitmodel.formats.stream import PeekableStream

# Element width in bits of each dtype, by its safetensors name (the canonical vocabulary that
# every reader maps its own dtype names onto).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str                  # canonical name, a key of DTYPE_BITS
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Segment:
    length: int
    tensor: Tensor | None = None   # None: opaque bytes

    @property
    def element_width(self) -> int:
        """Bytes per element when this segment is a tensor of whole-byte elements, else 1."""
        if self.tensor is None:
            return 1
        bits = DTYPE_BITS.get(self.tensor.dtype, 8)
        return bits // 8 if bits % 8 == 0 else 1


@dataclass
class Layout:
    format: str                  # "safetensors", ... or "opaque"
    segments: Iterator[Segment]  # advanced only after the previous segment has been consumed
    # Shown in the pointer header. Readers may fill these while segments are consumed (e.g.
    # from a trailing section), so they are read only after the last segment.
    metadata: dict[str, str] = field(default_factory=dict)   # the format's own key-values
    metrics: dict[str, float] = field(default_factory=dict)  # scalars: epoch, step, loss ...
    # Set by a reader that learns while reading that the tensors it gives cannot be read as
    # their dtypes say (a big-endian torch archive): the pointer then lists none, as for a
    # file of opaque segments. Read after the last segment too.
    values_unreadable: bool = False
    # Set by a reader whose tensor names, given whole, would add up to more than a pointer
    # holds (memo sharing in a torch pickle): it stops building them, and the pointer is
    # opaque, as it would be with them (§2.2). Read after the last segment too.
    names_oversized: bool = False


# A reader returns a Layout when the stream is in its format, else None. It may only peek.
Reader = Callable[[PeekableStream], "Layout | None"]


def _readers() -> list[Reader]:
    from gitmodel.formats import gguf, numpy_files, onnx, safetensors, torch_zip
    # numpy before torch: both take zip files, and the npz check (first entry *.npy) is
    # cheap, while the torch reader may walk several leading entries before giving up.
    return [safetensors.read_layout, numpy_files.read_layout, torch_zip.read_layout,
            gguf.read_layout, onnx.read_layout]


def detect(stream: PeekableStream) -> Layout:
    """The layout of the file at the stream's current position (opaque when no reader knows it)."""
    for read_layout in _readers():
        layout = read_layout(stream)
        if layout is not None:
            return layout
    return Layout("opaque", iter(()))


__all__ = ["DTYPE_BITS", "Layout", "PeekableStream", "Segment", "Tensor", "detect"]
