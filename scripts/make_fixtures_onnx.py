"""Regenerate tests/data/onnx/ with the real `onnx` library (not a test dependency).

    python3 -m venv /tmp/fx-onnx && /tmp/fx-onnx/bin/pip install numpy onnx
    /tmp/fx-onnx/bin/python scripts/make_fixtures_onnx.py

Writes small models and expected.json: for each model, the initializers the library says hold
raw_data in the file (name, canonical dtype, shape, SHA-256 of the raw bytes, in file order)
and its metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "onnx"

CANONICAL = {TensorProto.FLOAT: "F32", TensorProto.FLOAT16: "F16", TensorProto.BFLOAT16: "BF16",
             TensorProto.DOUBLE: "F64", TensorProto.INT64: "I64", TensorProto.INT32: "I32",
             TensorProto.INT16: "I16", TensorProto.INT8: "I8", TensorProto.UINT8: "U8",
             TensorProto.BOOL: "BOOL", TensorProto.FLOAT8E4M3FN: "F8_E4M3",
             TensorProto.FLOAT8E5M2: "F8_E5M2", TensorProto.INT4: "I4"}


def mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    f32 = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)  # noqa: E731
    inits = [
        numpy_helper.from_array(f32(32, 16), "fc1.weight"),
        numpy_helper.from_array(f32(32), "fc1.bias"),
        numpy_helper.from_array(f32(8, 32).astype(np.float16), "fc2.weight"),
        numpy_helper.from_array(f32(8).astype(np.float16), "fc2.bias"),
        numpy_helper.from_array(np.array([1, 8], dtype=np.int64), "out.shape"),
        numpy_helper.from_array(np.arange(-5, 5, dtype=np.int8), "unused.int8"),
        numpy_helper.from_array(np.array([True, False, True]), "unused.mask"),
        numpy_helper.from_array(np.array(3.25, dtype=np.float64), "unused.scalar"),
        numpy_helper.from_array(np.zeros((0, 4), dtype=np.float32), "unused.empty"),
        numpy_helper.from_array(np.arange(12, dtype=np.int32).reshape(3, 4), "unused.int32"),
        helper.make_tensor("unused.bf16", TensorProto.BFLOAT16, [4],
                           (f32(4).view(np.uint32) >> 16).astype(np.uint16).tobytes(), raw=True),
        helper.make_tensor("unused.f8", TensorProto.FLOAT8E4M3FN, [6], bytes(range(6)), raw=True),
        helper.make_tensor("unused.int4", TensorProto.INT4, [5], b"\x12\x34\x05", raw=True),
    ]
    nodes = [
        # A Constant node holds its own TensorProto (with raw_data): it stays opaque.
        helper.make_node("Constant", [], ["one"],
                         value=numpy_helper.from_array(np.ones(32, np.float32), "c")),
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("Add", ["h", "one"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r"]),
        helper.make_node("Cast", ["r"], ["r16"], to=TensorProto.FLOAT16),
        helper.make_node("Gemm", ["r16", "fc2.weight", "fc2.bias"], ["y16"], transB=1),
        helper.make_node("Cast", ["y16"], ["y32"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["y32", "out.shape"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    model = helper.make_model(graph, producer_name="gitmodel-fixtures", producer_version="1.0",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.doc_string = "A small MLP for gitmodel's tests."
    helper.set_model_props(model, {"author": "gitmodel", "license": "CC0"})
    return model


def float_data() -> onnx.ModelProto:
    """Initializers written as typed lists (float_data, int64_data) beside one raw_data."""
    inits = [
        helper.make_tensor("w.listed", TensorProto.FLOAT, [2, 3], [0.5, 1, 1.5, 2, 2.5, 3], raw=False),
        numpy_helper.from_array(np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3), "w.raw"),
        helper.make_tensor("shape.listed", TensorProto.INT64, [2], [3, 2], raw=False),
    ]
    nodes = [helper.make_node("Add", ["x", "w.listed"], ["a"]),
             helper.make_node("Mul", ["a", "w.raw"], ["b"]),
             helper.make_node("Reshape", ["b", "shape.listed"], ["y"])]
    graph = helper.make_graph(nodes, "listed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], inits)
    return helper.make_model(graph, producer_name="gitmodel-fixtures",
                             opset_imports=[helper.make_opsetid("", 17)])


def expected(path: Path) -> dict:
    model = onnx.load(str(path), load_external_data=False)
    tensors, opaque = [], []
    for t in model.graph.initializer:
        inline = t.HasField("raw_data") and t.data_location != TensorProto.EXTERNAL
        (tensors if inline else opaque).append(t.name)
    by_name = {t.name: t for t in model.graph.initializer}
    return {
        "tensors": [{"name": n, "dtype": CANONICAL[by_name[n].data_type], "shape": list(by_name[n].dims),
                     "sha256": hashlib.sha256(by_name[n].raw_data).hexdigest()} for n in tensors],
        "opaque_initializers": opaque,
        "metadata": {"ir_version": str(model.ir_version), "producer_name": model.producer_name,
                     "opset": ", ".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in model.opset_import)},
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(mlp())
    onnx.save_model(mlp(), str(OUT / "mlp.onnx"))
    onnx.save_model(float_data(), str(OUT / "float_data.onnx"))
    # External data: tensors of 1 KiB or more go to external.onnx.data, smaller stay inline.
    if (OUT / "external.onnx.data").exists():
        os.remove(OUT / "external.onnx.data")
    onnx.save_model(mlp(), str(OUT / "external.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="external.onnx.data", size_threshold=1024)
    result = {name: expected(OUT / name) for name in ("mlp.onnx", "float_data.onnx", "external.onnx")}
    (OUT / "expected.json").write_text(json.dumps(result, indent=1) + "\n")
    for p in sorted(OUT.iterdir()):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
