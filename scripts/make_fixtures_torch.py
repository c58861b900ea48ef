"""Regenerate tests/data/torch/: small `torch.save` files and, beside each, a JSON of what
torch itself reports about it (tensors by dotted name with dtype, shape, offset, stride and the
archive key of their storage; expected metrics and metadata), so the tests need no torch.

    python3 -m venv /tmp/fx-torch && /tmp/fx-torch/bin/pip install numpy torch==2.13.0
    /tmp/fx-torch/bin/python scripts/make_fixtures_torch.py
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "torch"

DTYPE_NAMES = {
    torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.uint16: "U16", torch.complex64: "C64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


# --- what torch says about a saved file -------------------------------------------------------

def _recording_pickle_module(keys: dict[int, str]) -> types.ModuleType:
    """A pickle module whose Unpickler notes which storage each persistent id key loads into."""
    class Unpickler(pickle.Unpickler):
        def __setattr__(self, name, value):
            if name == "persistent_load":
                inner = value

                def value(saved_id):
                    storage = inner(saved_id)
                    untyped = getattr(storage, "_untyped_storage", storage)
                    keys[untyped.data_ptr()] = saved_id[2]
                    return storage
            super().__setattr__(name, value)

    module = types.ModuleType("pickle")
    module.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
    module.Unpickler = Unpickler
    return module


def _walk(value, path, out):
    if isinstance(value, nn.Module):
        for name, t in value.state_dict(keep_vars=True).items():
            out.append((".".join(path + [name]), t))
    elif isinstance(value, torch.Tensor):
        out.append((".".join(path), value))
    elif isinstance(value, dict):
        for k, v in value.items():
            _walk(v, path + [str(k)], out)
    elif isinstance(value, (list, tuple)):
        for n, v in enumerate(value):
            _walk(v, path + [str(n)], out)


def describe(path: Path) -> list[dict]:
    keys: dict[int, str] = {}
    loaded = torch.load(path, weights_only=False, pickle_module=_recording_pickle_module(keys))
    found: list = []
    _walk(loaded, [], found)
    tensors = []
    for name, t in found:
        storage = t.untyped_storage()
        tensors.append({
            "name": name, "dtype": DTYPE_NAMES[t.dtype], "torch_dtype": str(t.dtype),
            "shape": list(t.shape), "storage_offset": t.storage_offset(), "stride": list(t.stride()),
            "storage_key": keys[storage.data_ptr()], "storage_nbytes": storage.nbytes(),
        })
    return tensors


def storage_entries(path: Path) -> list[str]:
    """Storage keys in file order, as the zip lists them."""
    with zipfile.ZipFile(path) as z:
        names = [i.filename for i in z.infolist()]
    prefix = names[0].rsplit("/", 1)[0]
    return [n[len(prefix) + len("/data/"):] for n in names if n.startswith(prefix + "/data/")]


def save(name: str, obj, metrics=None, metadata=None, buffer=False, **kwargs) -> None:
    """Save and describe. The archive's inner folder is named after the file, or `archive`
    when saved through a buffer (so versions of a file have the same entry names)."""
    path = OUT / name
    if buffer:
        out = io.BytesIO()
        torch.save(obj, out, **kwargs)
        path.write_bytes(out.getvalue())
    else:
        torch.save(obj, path, **kwargs)
    legacy = not zipfile.is_zipfile(path)
    info = {
        "file": name,
        "torch_version": torch.__version__,
        "format": "opaque" if legacy else "pytorch",
        "tensors": describe(path),
        "storage_order": [] if legacy else storage_entries(path),
        "metrics": metrics or {},
        "metadata": metadata or {},
    }
    (OUT / (name + ".json")).write_text(json.dumps(info, indent=1) + "\n")
    print(f"{name}: {path.stat().st_size} bytes, {len(info['tensors'])} tensors")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = mlp()
    save("mlp_fp32.pt", model.state_dict())
    save("mlp_bf16.pt", mlp().to(torch.bfloat16).state_dict())
    save("mlp_proto4.pt", model.state_dict(), pickle_protocol=4)
    save("dataparallel.pt", nn.DataParallel(mlp()).state_dict())

    # A training checkpoint: Adam state after two steps, scalars of several kinds.
    torch.manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        loss = model(torch.randn(8, 32)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint = {
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "epoch": 7,
        "global_step": 1400,
        "val_loss": 0.123,
        "best_acc": np.float64(0.9375),
        "loss": torch.tensor(0.25),
        "history": [0.5, 0.4, 0.3],
        "config": {"lr": 0.001, "batch_size": 32, "name": "mlp", "dtype": torch.bfloat16},
        "args": argparse.Namespace(seed=1234, model="mlp-3"),
        "note": "trained on synthetic data",
    }
    save("checkpoint.pt", checkpoint,
         metrics={"epoch": 7, "global_step": 1400, "val_loss": 0.123, "best_acc": 0.9375,
                  "loss": 0.25, "config.lr": 0.001, "config.batch_size": 32, "args.seed": 1234},
         metadata={"config.name": "mlp", "config.dtype": "torch.bfloat16", "args.model": "mlp-3",
                   "note": "trained on synthetic data"})

    # Storages shared by several tensors or only partly covered.
    base = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    other = torch.arange(24, dtype=torch.int64)
    square = torch.randn(6, 6)
    save("shared.pt", OrderedDict([
        ("embed.weight", base), ("head.weight", base),      # tied: one tensor, two names
        ("rows", base[2:5]),                                  # a slice of the same storage
        ("tail", other[8:]),                                  # only part of its storage
        ("square_t", square.t()),                             # whole storage, not contiguous
        ("alone", torch.ones(3, 5, dtype=torch.float16)),
    ]))

    # One tensor per dtype (float8 and uint16 are saved as untyped storages + a dtype).
    dtypes = OrderedDict()
    for dtype in DTYPE_NAMES:
        dtypes[str(dtype).removeprefix("torch.")] = torch.arange(6).reshape(2, 3).to(dtype)
    save("dtypes.pt", dtypes)

    save("tensor_root.pt", torch.linspace(0, 1, 7))
    whole = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 4))
    save("whole_model.pt", {"model": whole, "epoch": 2}, metrics={"epoch": 2})   # a pickled nn.Module
    save("legacy.pt", model.state_dict(), _use_new_zipfile_serialization=False)

    # Two versions of a model differing in one layer (for the dedup test).
    big = nn.Sequential(*[nn.Linear(96, 96) for _ in range(7)])
    save("dedup_v1.pt", {"model": big.state_dict(), "epoch": 1}, metrics={"epoch": 1}, buffer=True)
    with torch.no_grad():
        big[3].weight.mul_(1.5)
    save("dedup_v2.pt", {"model": big.state_dict(), "epoch": 2}, metrics={"epoch": 2}, buffer=True)


if __name__ == "__main__":
    main()
