"""ONNX models: not yet implemented."""

from __future__ import annotations

from gitmodel.formats import Layout
from gitmodel.formats.stream import PeekableStream


def read_layout(stream: PeekableStream) -> Layout | None:
    return None
