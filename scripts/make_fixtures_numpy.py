"""Regenerate tests/data/numpy/: .npy and .npz files written by numpy itself, and expected.json
(what np.load reports for each: the arrays' names, dtypes and shapes).

    python scripts/make_fixtures_numpy.py          # any Python with numpy
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "numpy"
rng = np.random.default_rng(1234)


def randn(*shape, dtype="<f4"):
    return rng.standard_normal(shape).astype(dtype)


class Unseekable:
    """A write-only stream: zipfile then puts each entry's sizes in a data descriptor."""

    def __init__(self):
        self.buffer = io.BytesIO()

    def write(self, data):
        return self.buffer.write(data)

    def flush(self):
        pass

    def read(self, n=-1):
        raise io.UnsupportedOperation("write only")

    def tell(self):
        raise io.UnsupportedOperation("not seekable")

    def seekable(self):
        return False


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    arrays = {
        "f32.npy": randn(64, 128),
        "f16.npy": randn(3, 5, 7, dtype="<f2"),
        "f64.npy": randn(100, dtype="<f8"),
        "i64.npy": rng.integers(-2**40, 2**40, size=(10, 10), dtype="<i8"),
        "i32.npy": rng.integers(-1000, 1000, size=(7,), dtype="<i4"),
        "i16.npy": rng.integers(-1000, 1000, size=(4, 4), dtype="<i2"),
        "i8.npy": rng.integers(-100, 100, size=(33,), dtype="i1"),
        "u8.npy": rng.integers(0, 255, size=(2, 3, 4), dtype="u1"),
        "u16.npy": rng.integers(0, 60000, size=(9,), dtype="<u2"),
        "u32.npy": rng.integers(0, 2**31, size=(9,), dtype="<u4"),
        "u64.npy": rng.integers(0, 2**62, size=(9,), dtype="<u8"),
        "bool.npy": rng.random((5, 6)) > 0.5,
        "c64.npy": (randn(6) + 1j * randn(6)).astype("<c8"),
        "scalar.npy": np.float32(3.5),
        "empty.npy": np.zeros((0, 4), "<f4"),
        "fortran.npy": np.asfortranarray(randn(16, 24)),
        # Not described as tensors (opaque data): big-endian, structured, strings, objects.
        "big_endian.npy": randn(8, 8, dtype=">f4"),
        "structured.npy": np.zeros(4, dtype=[("x", "<f4"), ("y", "<i8")]),
        "strings.npy": np.array(["alpha", "beta"]),
        "object.npy": np.array([{"a": 1}, None, "x"], dtype=object),
    }
    expected: dict[str, dict] = {}
    for name, array in arrays.items():
        np.save(OUT / name, array, allow_pickle=True)
    # Format versions 2.0 and 3.0 (u32 header length; 3.0 has a UTF-8 header).
    for version in ((2, 0), (3, 0)):
        name = f"v{version[0]}.npy"
        with open(OUT / name, "wb") as f:
            np.lib.format.write_array(f, randn(5, 3), version=version)

    model = {"embed": randn(200, 64), "layer.0.weight": randn(64, 64, dtype="<f2"),
             "layer.0.bias": randn(64), "steps": np.int64(1000),
             "mask": rng.random(64) > 0.3, "col_major": np.asfortranarray(randn(8, 12)),
             "labels": np.array(["cat", "dog"]), "ünïcode": randn(3)}
    np.savez(OUT / "model.npz", **model)
    np.savez(OUT / "positional.npz", randn(10), randn(2, 2, dtype="<f8"))
    np.savez_compressed(OUT / "compressed.npz", a=randn(50, 20), b=np.arange(10, dtype="<i4"))
    stream = Unseekable()
    np.savez(stream, a=randn(16), b=randn(4, 4))
    (OUT / "descriptor.npz").write_bytes(stream.buffer.getvalue())

    for path in sorted(OUT.glob("*.np[yz]")):
        if path.suffix == ".npy":
            found = {"array": np.load(path, allow_pickle=True)}      # our own files: trusted
            expected[path.name] = [_entry(k, v, None) for k, v in found.items()]
        else:
            with np.load(path) as archive:
                infos = {i.filename: i for i in archive.zip.infolist()}
                expected[path.name] = [_entry(k, archive[k], infos[k + ".npy"]) for k in archive.files]
    lines = [f" {json.dumps(name)}: [\n"
             + ",\n".join("  " + json.dumps(a, ensure_ascii=False) for a in arrays) + "\n ]"
             for name, arrays in expected.items()]
    (OUT / "expected.json").write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")


# numpy dtype -> the canonical dtype the reader should report (others are opaque bytes)
CANONICAL = {"<f2": "F16", "<f4": "F32", "<f8": "F64", "|i1": "I8", "<i2": "I16", "<i4": "I32",
             "<i8": "I64", "|u1": "U8", "<u2": "U16", "<u4": "U32", "<u8": "U64", "|b1": "BOOL",
             "<c8": "C64"}


def _entry(name: str, array: np.ndarray, info) -> dict:
    """What numpy says about one array, and what the reader should list for it."""
    fortran = array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous
    compressed = info is not None and info.compress_type != 0
    descriptor = info is not None and bool(info.flag_bits & 0x8)   # sizes after the data
    listed = CANONICAL.get(array.dtype.str) if not compressed and not descriptor else None
    return {"name": name, "numpy_dtype": array.dtype.str, "shape": list(array.shape),
            "fortran_order": bool(fortran), "compressed": compressed, "data_descriptor": descriptor,
            "dtype": listed}


if __name__ == "__main__":
    main()
