"""The torch.save zip reader: fixtures written by torch (scripts/make_fixtures_torch.py, each with
a JSON of what torch reports), round trips through clean and restore, real git, fuzzing, dedup,
and torch-like archives built here (pickles from the stdlib pickler against a stand-in `torch`
module, zipped the way torch does) to cover protocols, zip variants and hostile pickles."""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import subprocess
import sys
import tempfile
import types
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import make_repo, sha256
from format_helpers import assert_checkout_restores, clean_restore, damage, tensor_lines, walk_layout
from gitmodel import checkpoint, pointer
from gitmodel.formats import DTYPE_BITS, detect
from gitmodel.formats import torch_zip as reader
from gitmodel.store.objects import Store

DATA = Path(__file__).parent / "data" / "torch"
INFO = {p.name[:-len(".json")]: json.loads(p.read_text("utf-8")) for p in sorted(DATA.glob("*.pt.json"))}
ZIPPED = sorted(name for name, info in INFO.items() if info["format"] == "pytorch")
FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def expected_lines(tensors: list[dict], storage_order: list[str]) -> list[tuple[str, str, tuple]]:
    """The documented rule, from torch's own account of each tensor: a storage used by one view
    that covers it exactly is that tensor; otherwise the first tensor's name and dtype with the
    storage's element count as shape."""
    by_key: dict[str, list[dict]] = {}
    for t in tensors:
        by_key.setdefault(t["storage_key"], []).append(t)
    out = []
    for key in storage_order:
        views = by_key[key]
        first = views[0]
        width = DTYPE_BITS[first["dtype"]] // 8
        facts = lambda t: (t["dtype"], t["shape"], t["storage_offset"], t["stride"])   # noqa: E731
        contiguous, expect = True, 1
        for size, stride in zip(reversed(first["shape"]), reversed(first["stride"])):
            contiguous &= size == 1 or stride == expect
            expect *= size
        covers = (first["storage_offset"] == 0 and contiguous
                  and math.prod(first["shape"]) * width == first["storage_nbytes"])
        name = first["name"] or f"data/{key}"
        if covers and all(facts(v) == facts(first) for v in views):
            out.append((name, first["dtype"], tuple(first["shape"])))
        else:
            out.append((name, first["dtype"], (first["storage_nbytes"] // width,)))
    return out


def walk(data: bytes, max_peek: int = 128 << 20, read=detect):
    """Consume the stream as clean does: (layout, [(position, segment)], tail length)."""
    return walk_layout(data, max_peek, read)


lines = tensor_lines


# ----------------------------------------------------------------------------- fixtures

@pytest.mark.parametrize("name", ZIPPED)
def test_fixture_tensors_match_torch(name):
    data, info = (DATA / name).read_bytes(), INFO[name]
    layout, segments, tail = walk(data)
    assert layout.format == "pytorch"
    assert lines(segments) == expected_lines(info["tensors"], info["storage_order"])
    # Contiguous from byte 0; each tensor segment is exactly its storage entry's bytes.
    archive = zipfile.ZipFile(io.BytesIO(data))
    prefix = archive.namelist()[0].rsplit("/", 1)[0]
    position, keys = 0, iter(info["storage_order"])
    for at, segment in segments:
        assert at == position
        if segment.tensor:
            assert data[at:at + segment.length] == archive.read(f"{prefix}/data/{next(keys)}")
        position += segment.length
    assert position + tail == len(data) and tail > 0
    assert data[position:position + 2] == b"PK"            # the tail starts at a zip record
    assert layout.metrics == pytest.approx(info["metrics"])
    assert layout.metadata == info["metadata"]


@pytest.mark.parametrize("name", ["mlp_fp32.pt", "mlp_bf16.pt", "mlp_proto4.pt", "dataparallel.pt",
                                  "checkpoint.pt", "dtypes.pt", "dedup_v1.pt", "whole_model.pt"])
def test_whole_storage_tensors_are_listed_as_torch_reports_them(name):
    info = INFO[name]
    _, segments, _ = walk((DATA / name).read_bytes())
    assert lines(segments) == [(t["name"], t["dtype"], tuple(t["shape"])) for t in info["tensors"]]


def test_names_dtypes_and_prefixes():
    _, segments, _ = walk((DATA / "dataparallel.pt").read_bytes())
    want = [f"module.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    assert [n for n, _, _ in lines(segments)] == want
    _, segments, _ = walk((DATA / "mlp_bf16.pt").read_bytes())
    assert {d for _, d, _ in lines(segments)} == {"BF16"}
    _, segments, _ = walk((DATA / "dtypes.pt").read_bytes())
    assert [d for _, d, _ in lines(segments)] == ["F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8",
                                                  "U8", "BOOL", "U16", "C64", "F8_E4M3", "F8_E5M2"]
    _, segments, _ = walk((DATA / "tensor_root.pt").read_bytes())
    assert lines(segments) == [("data/0", "F32", (7,))]


def test_shared_and_partial_storages_are_named_after_their_first_tensor():
    _, segments, _ = walk((DATA / "shared.pt").read_bytes())
    assert lines(segments) == [("embed.weight", "F32", (40,)),   # tied twice, and sliced
                               ("tail", "I64", (24,)),           # a slice of a larger storage
                               ("square_t", "F32", (36,)),       # transposed: not contiguous
                               ("alone", "F16", (3, 5))]


def test_checkpoint_nested_names_metrics_and_metadata():
    layout, segments, _ = walk((DATA / "checkpoint.pt").read_bytes())
    names = [n for n, _, _ in lines(segments)]
    assert names[:2] == ["model_state_dict.0.weight", "model_state_dict.0.bias"]
    assert "optimizer_state_dict.state.0.exp_avg_sq" in names and names[-1] == "loss"
    # Numbers through lists (history), integer keys (optimizer state) or bools are not metrics.
    assert layout.metrics == pytest.approx({"epoch": 7, "global_step": 1400, "val_loss": 0.123,
                                            "best_acc": 0.9375, "loss": 0.25, "config.lr": 0.001,
                                            "config.batch_size": 32, "args.seed": 1234})
    assert layout.metadata["config.dtype"] == "torch.bfloat16"


def test_pointer_text_shows_format_metrics_and_tensors(tmp_path):
    text, restored = clean_restore((DATA / "checkpoint.pt").read_bytes(), str(tmp_path))
    ptr = pointer.parse(text)
    assert ptr.format == "pytorch" and len(ptr.tensors) == len(INFO["checkpoint.pt"]["tensors"])
    rendered = text.decode()
    assert "\nepoch 7\n" in rendered and "\nval_loss 0.123\n" in rendered
    assert "\nmodel_state_dict.2.weight F32 [64,64] " in rendered


def big_endian(data: bytes) -> bytes:
    """The archive as a big-endian machine saves it: `byteorder` says big, and every float32
    storage holds its words byte-swapped (torch.load reads both back to the same tensors)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as z, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        for info in z.infolist():
            member = z.read(info)
            if info.filename.endswith("/byteorder"):
                member = b"big"
            elif "/data/" in info.filename and not info.filename.endswith(".pkl"):
                member = np.frombuffer(member, "<f4").byteswap().tobytes()
            w.writestr(info, member)
    return out.getvalue()


def test_big_endian_archives_list_no_tensors(tmp_path):
    """Their words were read little-endian: statistics of byte-swapped floats (norm=1e+39,
    nan counts) in the review, and merges that averaged them wrote garbage. They are
    pytorch files with opaque data now, exact as ever, their storages still chunked apart."""
    data = big_endian((DATA / "mlp_fp32.pt").read_bytes())
    text, restored = clean_restore(data, str(tmp_path))
    assert restored == data
    ptr = pointer.parse(text)
    assert ptr.format == "pytorch" and ptr.tensors == ()
    layout, segments, _ = walk(data)
    assert layout.values_unreadable and len(segments) >= 6   # the six storages stay segments
    little = pointer.parse(clean_restore((DATA / "mlp_fp32.pt").read_bytes(), str(tmp_path / "l"))[0])
    assert len(little.tensors) == 6 and not walk((DATA / "mlp_fp32.pt").read_bytes())[0].values_unreadable


@pytest.mark.parametrize("last", [False, True])
def test_big_endian_metrics_are_right_or_absent_wherever_byteorder_is(last, tmp_path):
    """torch.load finds `byteorder` by name: after the storages it still says big. The reader
    learnt it only there, after reading the loss little-endian (8.82818e-44, not 0.5): values
    read before a big `byteorder` are dropped now; read after it, they are right."""
    loss = _Storage("0", "FloatStorage", np.array([0.5], dtype=">f4"))
    steps = _Storage("1", "LongStorage", np.array([12], dtype=">i8"))
    obj = {"loss": _View(loss, 0, (), ()), "step": _View(steps, 0, (), ()), "epoch": 3}
    data = build_archive(torch_pickle(obj), [loss, steps], byteorder=b"big", byteorder_last=last)
    assert zipfile.ZipFile(io.BytesIO(data)).read("archive/byteorder") == b"big"
    text, restored = clean_restore(data, str(tmp_path))
    assert restored == data
    ptr = pointer.parse(text)
    assert ptr.format == "pytorch" and ptr.tensors == ()
    want = {"epoch": 3.0} if last else {"epoch": 3.0, "loss": 0.5, "step": 12.0}
    assert dict(ptr.metrics) == want
    assert text.decode().split("\n\n")[1] == "[metrics]\n" + "".join(
        f"{k} {v:g}\n" for k, v in sorted(want.items()))


def test_a_big_endian_archive_committed_with_its_tensors_listed_still_pushes(tmp_path, git_env):
    """A review of the fix above: such a file committed by an earlier version (its pointer
    lists the tensors) was refused by the pre-push hook and flagged by `gitmodel status` as a
    pointer of two versions, whose advice was to rewrite history."""
    from gitmodel import formats
    repo = make_repo(tmp_path / "repo", git_env, track="*.pt")
    data = big_endian((DATA / "mlp_fp32.pt").read_bytes())
    listing = property(lambda self: False, lambda self, value: None)    # as earlier versions read it
    store = Store(repo.store)
    with mock.patch.object(formats.Layout, "values_unreadable", listing):
        text = checkpoint.clean(io.BytesIO(data), store)
    store.close()
    assert len(pointer.parse(text).tensors) == 6
    blob = repo.git("hash-object", "-w", "--stdin", input=text).stdout.decode().strip()
    repo.git("update-index", "--add", "--cacheinfo", f"100644,{blob},m.pt")
    (repo.path / "m.pt").write_bytes(data)
    assert "do not describe one checkpoint" not in repo.gitmodel("status").stdout
    repo.git("commit", "-q", "-m", "an earlier version's pointer")
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "store"))
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "hub.git")], check=True)
    repo.git("remote", "add", "origin", str(tmp_path / "hub.git"))
    repo.git("push", "-q", "origin", "HEAD:main")
    assert list((tmp_path / "store" / "packs").glob("*.idx"))


def test_legacy_torch_pickles_are_opaque(tmp_path):
    data = (DATA / "legacy.pt").read_bytes()
    layout, segments, tail = walk(data)
    assert layout.format == "opaque" and not segments and tail == len(data)
    text, restored = clean_restore(data, str(tmp_path))
    assert restored == data and pointer.parse(text).format == "opaque"


@pytest.mark.parametrize("name", sorted(INFO))
def test_clean_restore_round_trip(name, tmp_path):
    data = (DATA / name).read_bytes()
    text, restored = clean_restore(data, str(tmp_path))
    assert restored == data
    ptr = pointer.parse(text)
    assert ptr.size == len(data) and ptr.format == INFO[name]["format"]


def test_git_add_commit_checkout(tmp_path, git_env):
    repo = make_repo(tmp_path / "repo", git_env, track="*.pt")
    target = repo.path / "ckpt.pt"
    target.write_bytes((DATA / "checkpoint.pt").read_bytes())
    digest = sha256(target)
    repo.commit("checkpoint", "ckpt.pt")
    shown = repo.out("show", "HEAD:ckpt.pt")
    assert shown.startswith("gitmodel pointer v1\n") and "\nformat pytorch\n" in shown
    assert "\nmodel_state_dict.0.weight F32 [64,32] " in shown
    assert "\noptimizer_state_dict.state.4.exp_avg F32 [10,64] " in shown
    assert_checkout_restores(repo, {"ckpt.pt": digest})


def test_changing_one_tensor_shares_most_chunks(tmp_path):
    store = Store(tmp_path / "store")
    try:
        old = pointer.parse(checkpoint.clean(io.BytesIO((DATA / "dedup_v1.pt").read_bytes()), store))
        new = pointer.parse(checkpoint.clean(io.BytesIO((DATA / "dedup_v2.pt").read_bytes()), store))
        old_chunks = {c for c, _ in store.read_manifest(bytes.fromhex(old.content)).chunks}
        new_chunks = [c for c, _ in store.read_manifest(bytes.fromhex(new.content)).chunks]
    finally:
        store.close()
    fresh = [c for c in new_chunks if c not in old_chunks]
    # The changed tensor, the descriptor after it (CRC), the pickle (epoch) and the tail.
    assert len(fresh) <= 4 and len(new_chunks) >= 25
    changed = [b.name for a, b in zip(old.tensors, new.tensors) if a.digest != b.digest]
    assert changed == ["model.3.weight"]
    assert dict(new.metrics)["epoch"] == 2


# ----------------------------------------------------------------------------- fuzzing

FUZZ_FILES = {name: (DATA / name).read_bytes()
              for name in ("mlp_fp32.pt", "checkpoint.pt", "shared.pt", "dtypes.pt", "whole_model.pt")}


@st.composite
def damaged(draw):
    return damage(draw, FUZZ_FILES[draw(st.sampled_from(sorted(FUZZ_FILES)))], ops=4)


@FUZZ
@given(data=damaged())
def test_damaged_files_never_raise_and_restore_exactly(data):
    walk(data)
    with tempfile.TemporaryDirectory() as root:
        _, restored = clean_restore(data, root)
    assert restored == data


@FUZZ
@given(data=damaged(), max_peek=st.sampled_from([1, 30, 100, 1000, 5000, 40000]))
def test_damaged_files_with_a_small_peek_limit(data, max_peek):
    walk(data, max_peek=max_peek, read=reader.read_layout)


@FUZZ
@given(name=st.sampled_from(sorted(FUZZ_FILES)), garbage=st.binary(max_size=3000))
def test_any_pickle_in_a_real_archive_never_raises(name, garbage):
    """data.pkl replaced by arbitrary bytes (sizes then unknown but for the descriptor)."""
    data = FUZZ_FILES[name]
    start = 30 + sum(struct.unpack_from("<HH", data, 26))
    end = data.index(b"PK\x07\x08", start)
    walk(data[:start] + garbage + data[end:])


# ----------------------------------------------------------------------------- built here

class _Storage:
    def __init__(self, key: str, cls: str, array: np.ndarray):
        self.key, self.cls, self.array = key, cls, array


class _View:
    """Pickles as torch's tensor rebuild call on a storage."""

    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple, dtype=None):
        self.storage, self.offset, self.shape, self.stride, self.dtype = storage, offset, shape, stride, dtype

    def __reduce__(self):
        fake = sys.modules["torch._utils"]
        if self.dtype is not None:                     # float8 & co: untyped storage + dtype
            return fake._rebuild_tensor_v3, (self.storage, self.offset, self.shape, self.stride,
                                             False, OrderedDict(), self.dtype)
        return fake._rebuild_tensor_v2, (self.storage, self.offset, self.shape, self.stride,
                                         False, OrderedDict())


class _Dtype:
    __module__ = "torch"

    def __init__(self, name: str):
        self.name = name

    def __reduce__(self):
        return self.name                               # pickled as the global torch.<name>


FLOAT8 = _Dtype("float8_e4m3fn")


def _stand_in_torch() -> dict[str, types.ModuleType]:
    """Modules named like torch's, holding just the globals a torch.save pickle names."""
    torch_mod, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for cls in ("FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "ByteStorage",
                "BoolStorage", "UntypedStorage"):
        setattr(torch_mod, cls, type(cls, (), {"__module__": "torch"}))
    for name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3"):
        def rebuild(*args):
            raise AssertionError("never called")
        rebuild.__module__, rebuild.__name__, rebuild.__qualname__ = "torch._utils", name, name
        setattr(utils, name, rebuild)
    torch_mod.float8_e4m3fn = FLOAT8
    torch_mod._utils = utils
    return {"torch": torch_mod, "torch._utils": utils}


def torch_pickle(obj, protocol: int = 2) -> bytes:
    """Pickle `obj` as torch.save would: storages become persistent ids."""
    fakes = _stand_in_torch()

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                numel = o.array.size if o.cls != "UntypedStorage" else o.array.nbytes
                return ("storage", getattr(fakes["torch"], o.cls), o.key, "cpu", numel)
            return None

    buf = io.BytesIO()
    with mock.patch.dict(sys.modules, fakes):
        Pickler(buf, protocol).dump(obj)
    return buf.getvalue()


def build_archive(pkl: bytes, storages: list[_Storage], prefix: str = "archive", wide: bool = False,
                  descriptors: bool = True, compress: frozenset = frozenset(),
                  byteorder: bytes = b"little", byteorder_last: bool = False) -> bytes:
    """An archive laid out like torch's writer: stored entries, data 64-byte aligned through an
    'FB' extra field, sizes in data descriptors (24-byte ones when `wide`), central directory.
    `byteorder_last` puts that record after the storages (torch.load finds it by name)."""
    records = [("data.pkl", pkl), (".format_version", b"1"), (".storage_alignment", b"64")]
    order = [("byteorder", byteorder)]
    records += [] if byteorder_last else order
    records += [(f"data/{s.key}", s.array.tobytes()) for s in storages]
    records += [("version", b"3"), (".data/serialization_id", b"0123456789" * 4)]
    records += order if byteorder_last else []
    out, central = bytearray(), bytearray()
    for name, payload in records:
        raw, method, crc, usize = f"{prefix}/{name}".encode(), 0, zlib.crc32(payload), len(payload)
        if name in compress:
            payload, method = zlib.compress(payload)[2:-4], 8          # raw deflate
        size, offset = len(payload), len(out)
        pad = -(offset + 30 + len(raw) + 4) % 64
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        flags = 0x808 if descriptors else 0x800
        known = (0, 0, 0) if descriptors else (crc, size, usize)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0x21, *known,
                           len(raw), len(extra)) + raw + extra + payload
        if descriptors:
            out += struct.pack("<IIQQ" if wide else "<IIII", 0x08074B50, crc, size, usize)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, method, 0, 0x21,
                               crc, size, usize, len(raw), 0, 0, 0, 0, 0, offset) + raw
    count = len(records)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central),
                                 len(out), 0)
    return bytes(out)


def _state(seed: int = 0) -> tuple[dict, list[_Storage], list[tuple]]:
    rng = np.random.default_rng(seed)
    w = _Storage("0", "FloatStorage", rng.standard_normal(12, dtype=np.float32))
    b = _Storage("1", "HalfStorage", np.arange(4, dtype=np.float16))
    obj = {"net": OrderedDict([("w", _View(w, 0, (3, 4), (4, 1))), ("b", _View(b, 0, (4,), (1,)))]),
           "epoch": 3, "lr": 0.5, "tag": "run-1"}
    return obj, [w, b], [("net.w", "F32", (3, 4)), ("net.b", "F16", (4,))]


def test_stand_in_archives_are_valid_zips():
    obj, storages, _ = _state()
    for wide in (False, True):
        archive = zipfile.ZipFile(io.BytesIO(build_archive(torch_pickle(obj), storages, wide=wide)))
        assert archive.testzip() is None
        assert archive.read("archive/data/1") == storages[1].array.tobytes()


@pytest.mark.parametrize("protocol", [1, 2, 3, 4, 5])
def test_every_binary_pickle_protocol(protocol):
    obj, storages, want = _state()
    layout, segments, _ = walk(build_archive(torch_pickle(obj, protocol), storages))
    assert layout.format == "pytorch" and lines(segments) == want
    assert layout.metrics == {"epoch": 3.0, "lr": 0.5} and layout.metadata == {"tag": "run-1"}


@pytest.mark.parametrize("variant", ["wide", "sizes_in_headers"])
def test_zip64_descriptors_and_sizes_in_headers(variant):
    obj, storages, want = _state()
    data = build_archive(torch_pickle(obj), storages, wide=variant == "wide",
                         descriptors=variant != "sizes_in_headers")
    _, segments, _ = walk(data)
    assert lines(segments) == want


def test_python_zipfile_rewrite_of_a_torch_file():
    """Rewritten by zipfile (sizes in headers, no alignment): same tensors."""
    source = (DATA / "checkpoint.pt").read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item))
    _, want, _ = walk(source)
    layout, segments, _ = walk(out.getvalue())
    assert lines(segments) == lines(want) and layout.metrics["epoch"] == 7


def test_compressed_entries():
    obj, storages, want = _state()
    layout, _, _ = walk(build_archive(torch_pickle(obj), storages, compress=frozenset({"data.pkl"})))
    assert layout.format == "opaque"
    # A compressed storage stops the segments there: the rest is the tail.
    data = build_archive(torch_pickle(obj), storages, compress=frozenset({"data/1"}))
    layout, segments, tail = walk(data)
    assert layout.format == "pytorch" and lines(segments) == want[:1] and tail > 0
    with tempfile.TemporaryDirectory() as root:
        assert clean_restore(data, root)[1] == data


def test_other_zips_and_torchscript_order_are_not_ours():
    obj, storages, _ = _state()
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("a.npy", b"\x93NUMPY" + b"\0" * 100)
    assert walk(plain.getvalue())[0].format != "pytorch"
    script = io.BytesIO()                               # storages before data.pkl, as torch.jit
    with zipfile.ZipFile(script, "w") as z:
        z.writestr("archive/data/0", storages[0].array.tobytes())
        z.writestr("archive/data.pkl", torch_pickle(obj))
    assert walk(script.getvalue())[0].format == "opaque"


def test_float8_via_untyped_storage_and_dtype():
    raw = _Storage("0", "UntypedStorage", np.arange(8, dtype=np.uint8))
    obj = {"q": _View(raw, 0, (2, 4), (4, 1), FLOAT8)}
    _, segments, _ = walk(build_archive(torch_pickle(obj), [raw]))
    assert lines(segments) == [("q", "F8_E4M3", (2, 4))]


def test_scalar_tensors_become_metrics():
    loss = _Storage("0", "FloatStorage", np.array([0.75], dtype=np.float32))
    steps = _Storage("1", "LongStorage", np.array([11, 12], dtype=np.int64))
    half = _Storage("2", "BFloat16Storage", np.array([0x3FC0], dtype=np.uint16))   # 1.5
    obj = {"loss": _View(loss, 0, (), ()), "step": _View(steps, 1, (), ()),
           "scale": _View(half, 0, (1,), (1,)), "rows": [_View(loss, 0, (), ())]}
    layout, _, _ = walk(build_archive(torch_pickle(obj), [loss, steps, half]))
    assert layout.metrics == {"loss": 0.75, "step": 12.0, "scale": 1.5}


def test_summary_is_bounded():
    obj = {f"k{i:03d}": i for i in range(500)} | {f"s{i:03d}": "x" * 1000 for i in range(500)}
    obj["nested"] = {"deep": 1.0}
    layout, _, _ = walk(build_archive(torch_pickle(obj), []))
    assert len(layout.metrics) == reader.MAX_SUMMARY and "nested.deep" not in layout.metrics
    assert len(layout.metadata) == reader.MAX_SUMMARY
    assert all(len(v) == reader.MAX_VALUE for v in layout.metadata.values())


def test_hostile_pickles_are_never_executed(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    obj, storages, want = _state()
    obj["x"] = Evil()
    layout, segments, _ = walk(build_archive(torch_pickle(obj), storages))
    assert lines(segments) == want and not marker.exists()
    with tempfile.TemporaryDirectory() as root:
        clean_restore(build_archive(torch_pickle(obj), storages), root)
    assert not marker.exists()


def test_deep_nesting_and_long_pickles_are_bounded(monkeypatch):
    _, storages, _ = _state()
    marks = b"\x80\x02}q\x00" + b"(" * 100000 + b"."          # many marks, never closed
    assert lines(walk(build_archive(marks, storages))[1]) == []
    nested = b"\x80\x02" + b"]" * 20000 + b"a" * 19999 + b"."   # lists nested 20000 deep
    assert walk(build_archive(nested, []))[0].format == "pytorch"
    monkeypatch.setattr(reader, "MAX_OPS", 50)
    obj, storages, _ = _state()
    assert walk(build_archive(torch_pickle(obj), storages))[0].format == "opaque"


def test_storage_without_a_tensor_and_unknown_storage_entries():
    used = _Storage("0", "FloatStorage", np.ones(3, dtype=np.float32))
    bare = _Storage("1", "LongStorage", np.arange(2, dtype=np.int64))
    obj = {"t": _View(used, 0, (3,), (1,)), "raw": bare}
    extra = _Storage("9", "ByteStorage", np.arange(5, dtype=np.uint8))      # not in the pickle
    data = build_archive(torch_pickle(obj), [used, extra, bare])
    _, segments, _ = walk(data)
    # A storage saved on its own is named where it sits; an entry the pickle does not name is
    # passed over as opaque bytes (its descriptor gives its size).
    assert lines(segments) == [("t", "F32", (3,)), ("raw", "I64", (2,))]


@FUZZ
@given(st.data())
def test_random_state_dicts(data):
    """Random nested state dicts with tied, sliced and partial tensors, any protocol: the
    listing follows the documented rule and the file round-trips."""
    kinds = {"F32": ("FloatStorage", np.float32), "F16": ("HalfStorage", np.float16),
             "I64": ("LongStorage", np.int64), "U8": ("ByteStorage", np.uint8)}
    storages, views = [], []
    for i in range(data.draw(st.integers(1, 6))):
        dtype = data.draw(st.sampled_from(sorted(kinds)))
        shape = tuple(data.draw(st.lists(st.integers(1, 4), max_size=3)))
        numel = math.prod(shape)
        cls, np_dtype = kinds[dtype]
        storage = _Storage(str(i), cls, np.arange(numel + data.draw(st.integers(0, 2))).astype(np_dtype))
        storages.append(storage)
        stride = tuple(math.prod(shape[j + 1:]) for j in range(len(shape)))
        views.append(_View(storage, data.draw(st.integers(0, storage.array.size - numel)), shape, stride))
        if data.draw(st.booleans()):                   # a second, flat view of the same storage
            start = data.draw(st.integers(0, storage.array.size - 1))
            views.append(_View(storage, start, (storage.array.size - start,), (1,)))
    views += data.draw(st.lists(st.sampled_from(views), max_size=3))      # tied: same object
    obj: dict = {}
    records: list[dict] = []
    for view in data.draw(st.permutations(views)):
        path = data.draw(st.lists(st.sampled_from(["a", "b", "layer", "0", "w.x"]), min_size=1, max_size=3))
        node = obj
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            if path[-1] not in node:
                node[path[-1]] = view
    def collect(value, path):                          # walk order = pickling order
        if isinstance(value, _View):
            s = value.storage
            records.append({"name": ".".join(path), "storage_key": s.key, "storage_nbytes": s.array.nbytes,
                            "dtype": next(k for k, v in kinds.items() if v[0] == s.cls),
                            "shape": list(value.shape), "stride": list(value.stride),
                            "storage_offset": value.offset})
        elif isinstance(value, dict):
            for k, v in value.items():
                collect(v, path + [k])
    collect(obj, [])
    used = [s for s in storages if any(r["storage_key"] == s.key for r in records)]
    blob = build_archive(torch_pickle(obj, data.draw(st.integers(1, 5))), used)
    _, segments, _ = walk(blob)
    assert lines(segments) == expected_lines(records, [s.key for s in used])   # in file order
    with tempfile.TemporaryDirectory() as root:
        assert clean_restore(blob, root)[1] == blob


# ----------------------------------------------------------------------------- pickle semantics

def _tagged(value):
    """A value with the type of every part spelled out (True and 1 compare equal otherwise);
    the decoder's dicts as pickle builds them (a repeated key keeps its last value)."""
    if type(value) is reader._Dict:
        value = dict(value.items)
    if isinstance(value, dict):
        return ("dict", sorted((repr(_tagged(k)), _tagged(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_tagged(v) for v in value])
    return (type(value).__name__, value)


def _short_text(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw                      # SHORT_BINUNICODE


@st.composite
def memo_pickles(draw):
    """Protocol-4 pickles of a dict of scalars and lists of scalars that store and fetch memo
    entries every way pickle can: BINPUT, LONG_BINPUT and PUT at any index, MEMOIZE (at the
    count of entries), the three GETs, and values memoized then dropped (POP). Only scalars
    are memoized, so no value can contain itself whatever the numbering."""
    memo: set[int] = set()                  # which indexes exist (for valid GETs only)

    def scalar() -> bytes:
        kind = draw(st.sampled_from(["text", "int1", "int", "long", "get"] if memo else
                                    ["text", "int1", "int", "long"]))
        if kind == "get":
            k = draw(st.sampled_from(sorted(memo)))
            how = draw(st.sampled_from(["binget", "long_binget", "get"] if k < 256 else
                                       ["long_binget", "get"]))
            return {"binget": lambda: b"h" + bytes([k]), "long_binget": lambda: b"j" + struct.pack("<I", k),
                    "get": lambda: b"g" + str(k).encode() + b"\n"}[how]()
        out = {"text": lambda: _short_text(draw(st.text("ab_.", max_size=4))),
               "int1": lambda: b"K" + bytes([draw(st.integers(0, 255))]),
               "int": lambda: b"I" + draw(st.sampled_from([b"7", b"00", b"01", b"-3", b"0x1f", b"010",
                                                           b"1_000", b" 5", b"99999999999999999999"])) + b"\n",
               "long": lambda: b"L" + draw(st.sampled_from([b"7L", b"0x10L", b"-2", b"12_3L"])) + b"\n"}[kind]()
        if draw(st.booleans()):
            how = draw(st.sampled_from(["memoize", "binput", "long_binput", "put"]))
            k = len(memo) if how == "memoize" else draw(st.integers(0, 6))
            out += {"memoize": b"\x94", "binput": b"q" + bytes([k]), "long_binput": b"r" + struct.pack("<I", k),
                    "put": b"p" + str(k).encode() + b"\n"}[how]
            memo.add(k)
        return out

    body = b"\x80\x04}"
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            body += scalar() + b"0"                                 # memoized, then dropped
        body += scalar()                                            # the key
        if draw(st.booleans()):
            body += scalar()
        else:
            body += b"](" + b"".join(scalar() for _ in range(draw(st.integers(0, 3)))) + b"e"
        body += b"s"
    return body + b"."


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pkl=memo_pickles())
def test_the_decoder_reads_what_pickle_loads_reads(pkl):
    """The names and numbers the pointer shows are those torch.load would see: the decoder
    agrees with pickle.loads on every pickle it loads."""
    try:
        want = pickle.loads(pkl)
    except Exception:                  # e.g. a numbering that makes a GET miss
        return
    assert _tagged(reader._decode(pkl)[0]) == _tagged(want)


def test_memoize_numbers_entries_as_pickle_does():
    """MEMOIZE stores at the count of memo entries: after a BINPUT at index 1, the next
    MEMOIZE overwrites index 1. The decoder numbered by its own list (index 0), so a pickle
    that loads as {'real_loss': 7} showed `fake_loss 7` (and the trick renames tensors)."""
    text = lambda t: b"X" + struct.pack("<I", len(t)) + t           # noqa: E731
    pkl = (b"\x80\x04}" + text(b"fake_loss") + b"q\x010" + text(b"real_loss") + b"\x940"
           + b"h\x01K\x07s.")
    assert pickle.loads(pkl) == {"real_loss": 7}
    data = build_archive(pkl, [])
    assert walk(data)[0].metrics == {"real_loss": 7.0}
    text_, restored = clean_restore(data)
    assert restored == data
    assert text_.decode().split("\n\n")[1] == "[metrics]\nreal_loss 7\n"


@pytest.mark.parametrize("line, value", [(b"0x1f", 31), (b"010", 8), (b"01", True), (b"+0", False),
                                         (b"1_000", 1000), (b" 5", 5), (b"12\0junk", 12)])
def test_int_text_lines_read_as_pickle_reads_them(line, value):
    """INT's text is read by C's strtol (base 0: hex, octal) as pickle.loads does; the decoder
    read it with int(), so `0x1f` made the pickle undecodable and `010` read 10."""
    pkl = b"}" + _short_text("n") + b"I" + line + b"\ns."
    assert pickle.loads(pkl) == {"n": value} and type(pickle.loads(pkl)["n"]) is type(value)
    got = dict(reader._decode(pkl)[0].items)["n"]
    assert got == value and type(got) is type(value)


@settings(max_examples=400, deadline=None)
@given(line=st.binary(max_size=6) | st.text("0178xXab +-_L\t\0", max_size=7).map(str.encode),
       op=st.sampled_from([b"I", b"L"]))
def test_int_and_long_lines_match_pickle(line, op):
    assume(b"\n" not in line)
    pkl = b"}" + _short_text("n") + op + line + b"\ns."
    try:
        want = pickle.loads(pkl)["n"]
    except Exception:
        with pytest.raises(reader._Bad):
            reader._decode(pkl)
        return
    got = dict(reader._decode(pkl)[0].items)["n"]
    assert got == want and type(got) is type(want)


# ----------------------------------------------------------------------------- bounded work

def _shared_key_bomb(key: bytes, depth: int, pairs: int) -> bytes:
    """A pickle whose one memoized key names the dict at every level (BINGET), with `pairs`
    (key, 0) pairs innermost: a name per number of depth x len(key) characters."""
    pkl = b"\x80\x02}X" + struct.pack("<I", len(key)) + key + b"q\x00"
    pkl += b"}h\x00" * (depth - 2)
    pkl += b"}(" + b"h\x00K\x00" * pairs + b"u"
    return pkl + b"s" * (depth - 1) + b"."


def test_summary_names_under_a_memo_shared_key_are_bounded():
    """Every number under a memoized 8 KiB key 60 levels deep got a 480 KiB name, joined
    before the summary was cut to 50 (a 1 MiB file took 2 GB, then all memory). Candidates
    are kept 50 at a time and named once chosen, cut to MAX_NAME characters."""
    import tracemalloc
    key = b"k" * 8192
    data = build_archive(_shared_key_bomb(key, 60, 300), [])
    tracemalloc.start()
    try:
        layout, _, _ = walk(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    name = ".".join([key.decode()] * 60)
    assert layout.format == "pytorch"
    assert layout.metrics == {name[:reader.MAX_NAME]: 0.0}
    assert peak < 16 << 20, f"{peak >> 20} MiB"                  # was 140 MiB
    text, restored = clean_restore(data)
    assert restored == data
    assert text.decode().split("\n\n")[1] == "[metrics]\n" + name[:200] + " 0\n"


def test_tensor_names_past_the_pointer_limit_are_not_built(monkeypatch):
    """Tensor names are written whole, so once they add up to more than a pointer may hold
    the pointer is opaque whatever the later names are: those are not built (memo sharing
    made each name here 41 KiB of a file's 5 bytes). The pointer is what it was."""
    key = "k" * 4096
    storages = [_Storage(str(i), "FloatStorage", np.full(2, i, dtype=np.float32)) for i in range(40)]
    inner = {f"w{i}": _View(s, 0, (2,), (1,)) for i, s in enumerate(storages)}
    obj = inner
    for _ in range(9):
        obj = {key: obj}                           # one string object: pickled once, then BINGET
    data = build_archive(torch_pickle(obj), storages)
    prefix = ".".join([key] * 9) + "."
    unbounded = 1 << 40
    monkeypatch.setattr(reader, "MAX_POINTER_SIZE", unbounded)
    full = [t for t, _, _ in lines(walk(data)[1])]
    assert full == [prefix + f"w{i}" for i in range(40)]
    monkeypatch.setattr(pointer, "MAX_POINTER_SIZE", 300_000)
    unbudgeted = clean_restore(data)[0]
    monkeypatch.setattr(reader, "MAX_POINTER_SIZE", 300_000)
    names = [t for t, _, _ in lines(walk(data)[1])]
    fit = 300_000 // len(full[0])                # 8 names of 36,875 characters
    assert fit == 8 and names == full[:fit] + [f"data/{i}" for i in range(fit, 40)]
    text, restored = clean_restore(data)
    assert restored == data and text == unbudgeted
    assert pointer.parse(text).format == "opaque"


def test_memory_errors_are_not_taken_for_an_opaque_file(monkeypatch):
    """Out of memory (a ulimit) is the machine's limit, not the file's: it made a torch file's
    pointer opaque, so the pointer depended on the memory left. It propagates now (clean
    fails, no pointer)."""
    obj, storages, want = _state()
    data = build_archive(torch_pickle(obj), storages)
    assert lines(walk(data)[1]) == want
    for where in ("_run", "_covers"):
        with monkeypatch.context() as patch:
            patch.setattr(reader, where, mock.Mock(side_effect=MemoryError()))
            with pytest.raises(MemoryError):
                walk(data)


def test_a_class_name_nested_a_million_deep_does_not_crash_the_reader(tmp_path: Path, git_env):
    """A 1 MB pickle can give STACK_GLOBAL a tuple nested a million deep for a storage class's
    name; looking it up among torch's storages hashes it, which CPython does without a
    recursion guard: the filter died of SIGSEGV and the file could never be added (a review).
    Class names must be strings, as pickle itself requires."""
    import subprocess
    deep = b"K\x00" + b"\x85" * 1_000_000
    pkl = b"\x80\x02(\x8c\x07storage\x8c\x05torch" + deep + b"\x93\x8c\x010\x8c\x03cpuK\x01tQ."
    subprocess.run(["git", "init", "-q", str(tmp_path)], env=git_env, check=True)
    path = tmp_path / "m.pt"
    path.write_bytes(build_archive(pkl, []))
    with open(path, "rb") as stdin:               # in a process of its own: a crash is a signal
        done = subprocess.run(["gitmodel", "clean", "--", "m.pt"], stdin=stdin, capture_output=True,
                              cwd=tmp_path, env=git_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"gitmodel pointer v1\n")
