"""Regenerate tests/data/gguf/: GGUF files written by the `gguf` package (llama.cpp's own Python
writer) and expected.json, what gguf.GGUFReader reports for each file: the tensors in data
order (name, ggml type, shape in numpy order, bytes, absolute data offset) and the general.*
scalar metadata.

    python3 -m venv /tmp/fx-gguf && /tmp/fx-gguf/bin/pip install numpy gguf==0.19.0
    /tmp/fx-gguf/bin/python scripts/make_fixtures_gguf.py
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "gguf"
rng = np.random.default_rng(4321)

# ggml types the reader reports under a canonical dtype name; the rest keep ggml's name
CANONICAL = {"F32": "F32", "F16": "F16", "BF16": "BF16", "F64": "F64",
             "I8": "I8", "I16": "I16", "I32": "I32", "I64": "I64"}


def randn(*shape, dtype=np.float32):
    return (rng.standard_normal(shape) * 0.02).astype(dtype)


def vocab(n: int) -> list[str]:
    return ["<unk>", "<s>", "</s>"] + [f"tok{i}_{'▁' * (i % 3)}x" for i in range(n - 3)]


def writer(path: Path, arch: str, name: str, tokens: int) -> gguf.GGUFWriter:
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    w.add_author("gitmodel tests")
    w.add_description("A fixture: random weights.\nSecond line.")
    w.add_license("mit")
    w.add_quantization_version(2)
    w.add_uint32("general.file_type", 1)
    w.add_bool("general.sampling.flag", True)
    w.add_float32("general.some_ratio", 0.25)
    w.add_array("general.tags", ["test", "fixture"])
    w.add_context_length(256)
    w.add_embedding_length(32)
    w.add_block_count(1)
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab(tokens))
    w.add_token_scores([float(-i) for i in range(tokens)])
    w.add_token_types([1] * tokens)
    return w


def quantized(array: np.ndarray, qtype: Q) -> np.ndarray:
    """Real quantization where gguf.quants implements it, else random bytes of the right size."""
    try:
        return quants.quantize(array, qtype)
    except NotImplementedError:
        shape = quants.quant_shape_to_byte_shape(array.shape, qtype)
        return rng.integers(0, 256, size=shape, dtype=np.uint8)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)

    w = writer(OUT / "tiny_f32_f16.gguf", "llama", "tiny-f32-f16", 100)
    w.add_tensor("token_embd.weight", randn(100, 32))
    w.add_tensor("blk.0.attn_norm.weight", randn(32))
    w.add_tensor("blk.0.attn_q.weight", randn(32, 32, dtype=np.float16))
    w.add_tensor("blk.0.ffn_up.weight", randn(2, 64, 32, dtype=np.float16))
    w.add_tensor("blk.0.ffn_bf16.weight", quants.quantize(randn(16, 32), Q.BF16), raw_dtype=Q.BF16)
    w.add_tensor("rope_freqs.f64", randn(16, dtype=np.float64))
    w.add_tensor("positions.i32", np.arange(24, dtype=np.int32).reshape(4, 6))
    w.add_tensor("ids.i8", rng.integers(-100, 100, size=(5,), dtype=np.int8))
    w.add_tensor("output.weight", randn(100, 32, dtype=np.float16))
    finish(w)

    w = writer(OUT / "quantized.gguf", "llama", "tiny-quantized", 1000)
    w.add_tensor("token_embd.weight", randn(64, 256))
    for qtype in (Q.Q8_0, Q.Q4_0, Q.Q5_1, Q.TQ2_0, Q.MXFP4, Q.Q2_K, Q.Q4_K, Q.Q6_K,
                  Q.IQ2_XS, Q.IQ4_XS, Q.IQ1_M):
        w.add_tensor(f"blk.0.{qtype.name.lower()}.weight", quantized(randn(8, 256), qtype),
                     raw_dtype=qtype)
    w.add_tensor("blk.0.attn_norm.weight", randn(256))
    finish(w)

    w = writer(OUT / "aligned64.gguf", "gpt2", "aligned-64", 10)
    w.add_custom_alignment(64)
    w.add_tensor("a", randn(3))
    w.add_tensor("b", randn(5, 7, dtype=np.float16))
    w.add_tensor("c", quantized(randn(2, 32), Q.Q8_0), raw_dtype=Q.Q8_0)
    finish(w)

    expected = {path.name: describe(path) for path in sorted(OUT.glob("*.gguf"))}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")


def finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def describe(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    tensors = sorted(reader.tensors, key=lambda t: t.data_offset)
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("general.") and field.types[0] != gguf.GGUFValueType.ARRAY:
            value = field.contents()
            metadata[key] = value.item() if isinstance(value, np.generic) else value
    return {
        "version": int(reader.fields["GGUF.version"].contents()),
        "alignment": int(reader.alignment),
        "data_start": int(reader.data_offset),
        "metadata": metadata,
        "tensors": [{"name": t.name, "ggml_type": t.tensor_type.name,
                     "dtype": CANONICAL.get(t.tensor_type.name, t.tensor_type.name),
                     "shape": [int(d) for d in reversed(t.shape.tolist())],
                     "n_bytes": int(t.n_bytes), "data_offset": int(t.data_offset)}
                    for t in tensors],
    }


if __name__ == "__main__":
    main()
