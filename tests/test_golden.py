"""The contract of docs/formats.md, pinned: golden pointers, and a store an older gitmodel wrote.

A reader, the chunker or the statistics that changes what a fixture cleans to fails here. If
the change is meant, `python scripts/make_golden.py` re-makes tests/data/golden/*.pointer and
the diff of those files is what a reviewer reads (and the pointer version may need a bump:
every existing checkpoint would show as modified).
"""

from __future__ import annotations

import difflib
import hashlib
import io
import shutil
from pathlib import Path

import pytest

from gitmodel import checkpoint, pointer
from gitmodel.store import fsck
from gitmodel.store.objects import Store

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
STORE_V1 = DATA / "store-v1"
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


# ----------------------------------------------------------------------------- store-v1

def _store_v1_files() -> list[tuple[str, str]]:
    """(name, sha256) of each file the store holds."""
    rows = (STORE_V1 / "SHA256SUMS").read_text().splitlines()
    return [(name, digest) for digest, name in (row.split("  ", 1) for row in rows)]


def test_store_v1_still_reads_and_verifies(tmp_path: Path) -> None:
    """tests/data/store-v1 is a store written by gitmodel at commit 9c99798 (packs, indexes and
    stats-cache, by scripts/make_golden.py --store-v1): every later version must smudge its
    pointers to the original bytes and find nothing wrong in it. It has no version marker:
    stores from before markers existed count as version 1. It is never re-made; work on a
    copy, so nothing writes into tests/data."""
    root = shutil.copytree(STORE_V1 / "store", tmp_path / "store")
    store = Store(root)
    try:
        files = _store_v1_files()
        assert len(files) == 3
        for name, digest in files:
            ptr = pointer.parse((STORE_V1 / "pointers" / f"{name}.pointer").read_bytes())
            out = io.BytesIO()
            checkpoint.smudge(ptr, store, out)
            assert len(out.getvalue()) == ptr.size, name
            assert hashlib.sha256(out.getvalue()).hexdigest() == digest, name
        report = fsck.check(store)
        assert report.problems == []
        assert report.manifests == len(files)
    finally:
        store.close()


def test_store_v1_versions_share_chunks(tmp_path: Path) -> None:
    """The two versions of the model in store-v1 differ in one tensor: the fixture keeps a
    store where one chunk serves two files."""
    root = shutil.copytree(STORE_V1 / "store", tmp_path / "store")
    store = Store(root)
    try:
        chunks = []
        for name in ("model_v1.safetensors", "model_v2.safetensors"):
            ptr = pointer.parse((STORE_V1 / "pointers" / f"{name}.pointer").read_bytes())
            chunks.append({cid for cid, _ in store.read_manifest(bytes.fromhex(ptr.content)).chunks})
        assert chunks[0] & chunks[1] and chunks[0] != chunks[1]
    finally:
        store.close()
