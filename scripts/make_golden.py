"""Re-make the golden pointers that pin docs/formats.md §1-§2 (tests/test_golden.py).

    python scripts/make_golden.py               # write tests/data/golden/*.pointer
    python scripts/make_golden.py --check       # compare only: exit 1 when a pointer differs
    python scripts/make_golden.py --store-v1    # write tests/data/store-v1, only if absent

The fixtures are listed in tests/data/golden/FIXTURES. The ones made here (safetensors written
by tests/conftest.py's hand-written writer, and random bytes) are written only when missing:
a fixture's bytes are the input its pointer pins, so they never change. A change to a reader,
the chunker or the statistics shows up as a diff of the .pointer files, reviewed like code.

tests/data/store-v1 is a store as the code of its day wrote it, which every later version must
still read. It is never re-made over an existing one: delete it only to make a new fixture on
purpose (under another name, e.g. store-v2, when the store format changes).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

import blake3
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
GOLDEN = DATA / "golden"
STORE_V1 = DATA / "store-v1"

sys.path.insert(0, str(ROOT / "tests"))
from conftest import write_safetensors  # noqa: E402  (the tests' hand-written writer)

from gitmodel import checkpoint  # noqa: E402
from gitmodel.store.objects import Store  # noqa: E402


def fixtures() -> list[str]:
    """FIXTURES: paths relative to tests/data, one a line; `#` starts a comment."""
    lines = (GOLDEN / "FIXTURES").read_text().splitlines()
    names = [line.split("#")[0].strip() for line in lines]
    return [name for name in names if name]


def pointer_path(fixture: str) -> Path:
    return GOLDEN / (Path(fixture).name + ".pointer")


def clean(data: bytes) -> bytes:
    """The pointer of `data` through the real clean path, into a throwaway store."""
    with tempfile.TemporaryDirectory() as root:
        store = Store(root)
        try:
            return checkpoint.clean(io.BytesIO(data), store)
        finally:
            store.close()


# ----------------------------------------------------------------------------- new fixtures

def _bf16(values: np.ndarray) -> np.ndarray:
    """float32 to bfloat16 bits by truncation (numpy has no bfloat16)."""
    return (np.ascontiguousarray(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _small_safetensors(path: Path) -> None:
    """Every dtype the writer knows, a scalar, an empty tensor, NaN/Inf/zeros, a name that
    needs quoting, and `__metadata__` holding numbers, a bool and a list next to strings."""
    rng = np.random.default_rng(20261124)
    weight = rng.standard_normal((64, 48), dtype=np.float32) * np.float32(0.02)
    tensors = {
        "embed.weight": weight,
        "norm.weight": (1 + rng.standard_normal(48) * 0.01).astype(np.float16),
        "proj.weight": _bf16(weight[:16] * 4),
        "layer 0.scale": rng.standard_normal(12),                       # F64; name quoted
        "special": np.array([0, 0, 1.5, -2.25, np.nan, np.inf, -np.inf, 0, 3e-3, 7], np.float32),
        "steps": np.array(1400, np.int64),                              # a scalar: shape []
        "empty": np.zeros((0, 4), np.float32),
        "ids": np.arange(10, dtype=np.int32),
        "mask": np.array([1, 0, 1, 1], np.uint8),
    }
    metadata = {"format": "pt", "epoch": 3, "lr": 0.0003, "ema": True, "layers": [2, 4],
                "note": "two words"}
    write_safetensors(path, tensors, dtypes={"proj.weight": "BF16"}, metadata=metadata)


def _large_safetensors(path: Path) -> None:
    """A tensor over 1 MiB, so it spans several chunks, and a small one after it."""
    rng = np.random.default_rng(20261125)
    write_safetensors(path, {
        "embed.weight": rng.standard_normal((576, 512), dtype=np.float32) * np.float32(0.02),
        "head.bias": rng.standard_normal(512, dtype=np.float32) * np.float32(0.02),
    })


def _random_bin(path: Path) -> None:
    """1.125 MiB of random bytes (BLAKE3's output stream, the same on every machine)."""
    path.write_bytes(blake3.blake3(b"gitmodel golden: opaque bytes").digest(length=1_179_648))


MAKERS = {"golden/small.safetensors": _small_safetensors,
          "golden/large.safetensors": _large_safetensors,
          "golden/random.bin": _random_bin}


# ----------------------------------------------------------------------------- store-v1

def _store_v1_inputs() -> dict[str, bytes]:
    """Two versions of a model sharing all but one tensor, and an npz: a few hundred KB."""
    rng = np.random.default_rng(20261126)
    model = {
        "embed.weight": rng.standard_normal((320, 256), dtype=np.float32) * np.float32(0.02),
        "layers.0.weight": rng.standard_normal((128, 128), dtype=np.float32) * np.float32(0.02),
        "layers.0.bias": rng.standard_normal(128, dtype=np.float32) * np.float32(0.02),
        "layers.1.weight": _bf16(rng.standard_normal((128, 128), dtype=np.float32) * 0.02),
    }
    retrained = dict(model, **{"layers.0.weight": model["layers.0.weight"]
                               + rng.standard_normal((128, 128), dtype=np.float32) * np.float32(1e-3)})
    out = {}
    with tempfile.TemporaryDirectory() as work:
        for name, tensors in (("model_v1.safetensors", model), ("model_v2.safetensors", retrained)):
            path = write_safetensors(Path(work) / name, tensors, dtypes={"layers.1.weight": "BF16"},
                                     metadata={"format": "pt"})
            out[name] = path.read_bytes()
    out["model.npz"] = (DATA / "numpy" / "model.npz").read_bytes()
    return out


def make_store_v1(dest: Path) -> None:
    if dest.exists():
        sys.exit(f"{dest} exists: it is what an older gitmodel wrote, and is never re-made")
    with tempfile.TemporaryDirectory() as work:
        stage = Path(work) / dest.name
        (stage / "pointers").mkdir(parents=True)
        store = Store(stage / "store")
        sums = []
        try:
            for name, data in _store_v1_inputs().items():
                (stage / "pointers" / f"{name}.pointer").write_bytes(checkpoint.clean(io.BytesIO(data), store))
                sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
        finally:
            store.close()
        shutil.rmtree(stage / "store" / "tmp", ignore_errors=True)     # empty once published
        (stage / "SHA256SUMS").write_text("".join(sums))
        shutil.copytree(stage, dest)
    print(f"wrote {dest}")


# ----------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    parser.add_argument("--store-v1", action="store_true",
                        help=f"write {STORE_V1.relative_to(ROOT)} (only if it does not exist)")
    args = parser.parse_args()
    if args.store_v1:
        make_store_v1(STORE_V1)
        return 0

    names = fixtures()
    stems = [pointer_path(name).name for name in names]
    duplicates = {stem for stem in stems if stems.count(stem) > 1}
    if duplicates:
        sys.exit(f"fixtures share a file name, so a pointer file: {sorted(duplicates)}")
    differ = 0
    for name in names:
        path = DATA / name
        if not path.exists():
            if args.check or name not in MAKERS:
                sys.exit(f"missing fixture {path}")
            MAKERS[name](path)
            print(f"made {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")
        text = clean(path.read_bytes())
        target = pointer_path(name)
        old = target.read_bytes() if target.exists() else b""
        if text == old:
            continue
        differ += 1
        sys.stdout.writelines(difflib.unified_diff(
            old.decode().splitlines(keepends=True), text.decode().splitlines(keepends=True),
            f"a/{target.relative_to(ROOT)}", f"b/{target.relative_to(ROOT)}"))
        if not args.check:
            target.write_bytes(text)
    print(f"{len(names)} fixtures, {differ} pointer(s) {'differ' if args.check else 'rewritten'}")
    return 1 if args.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
