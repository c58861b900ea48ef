"""The contract of docs/formats.md, pinned: golden pointers.

A reader, the chunker or the statistics that changes what a fixture cleans to fails here. If
the change is meant, `python scripts/make_golden.py` re-makes tests/data/golden/*.pointer and
the diff of those files is what a reviewer reads (and the pointer version may need a bump:
every existing checkpoint would show as modified).
"""

from __future__ import annotations

import difflib
import io
from pathlib import Path

import pytest

from gitmodel import checkpoint, pointer
from gitmodel.store.objects import Store

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
FORMATS = {"safetensors", "npy", "npz", "pytorch", "gguf", "onnx", "opaque"}


def fixtures() -> list[str]:
    lines = (GOLDEN / "FIXTURES").read_text().splitlines()
    names = [line.split("#")[0].strip() for line in lines]
    return [name for name in names if name]


def golden_pointer(fixture: str) -> Path:
    return GOLDEN / (Path(fixture).name + ".pointer")


def assert_same_pointer(got: bytes, expected: bytes, label: str) -> None:
    if got != expected:
        diff = "".join(difflib.unified_diff(
            expected.decode().splitlines(keepends=True), got.decode().splitlines(keepends=True),
            f"{label} (committed)", f"{label} (cleaned now)"))
        pytest.fail(f"{label} no longer cleans to its golden pointer "
                    f"(if meant: python scripts/make_golden.py)\n{diff}", pytrace=False)


@pytest.mark.parametrize("fixture", fixtures())
def test_fixture_cleans_to_its_golden_pointer(fixture: str, tmp_path: Path) -> None:
    data = (DATA / fixture).read_bytes()
    expected = golden_pointer(fixture).read_bytes()
    store = Store(tmp_path / "store")
    try:
        assert_same_pointer(checkpoint.clean(io.BytesIO(data), store), expected, fixture)
        # Again into the store that now holds the file and its statistics: the pointer is a
        # function of the bytes alone, whatever the store holds.
        assert_same_pointer(checkpoint.clean(io.BytesIO(data), store), expected, fixture)
    finally:
        store.close()


def test_golden_fixtures_cover_every_format_and_nothing_is_stale() -> None:
    names = fixtures()
    pointers = [golden_pointer(name) for name in names]
    assert len({p.name for p in pointers}) == len(pointers), "two fixtures share a file name"
    assert sorted(GOLDEN.glob("*.pointer")) == sorted(pointers), "a .pointer file without fixture"
    formats = {pointer.parse(p.read_bytes()).format for p in pointers}
    assert formats == FORMATS


def test_golden_fixtures_stay_small() -> None:
    total = sum((DATA / name).stat().st_size for name in fixtures())
    assert total < 4 << 20

