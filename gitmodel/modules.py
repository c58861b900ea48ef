"""Where a tensor sits in a model, read from its name: which stack of layers and which layer,
its role inside the layer, and the kind of block (attention, MLP, norm, embeddings, head).

Names follow a few families (Hugging Face `model.layers.3.self_attn.q_proj.weight`, BERT
`encoder.layer.3.attention.self.query.weight`, GPT-2 `transformer.h.3.attn.c_attn.weight`,
GGUF `blk.3.attn_q.weight`); the first number in a name is taken as the layer. The rules are
keyword lists, kept in docs/review.md; a name that matches none is "other", never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EMBEDDINGS, ATTENTION, MLP, NORM, HEAD, OTHER = "embeddings", "attention", "MLP", "norm", "head", "other"
BLOCK_ORDER = (EMBEDDINGS, ATTENTION, MLP, NORM, HEAD, OTHER)

_NORM = re.compile(r"norm|^ln(_|\d|f|$)|layernorm|^rms")
_ATTENTION = re.compile(r"attn|attention|^(q|k|v|o|qkv|out)_proj$|^(query|key|value|wq|wk|wv|wo)$"
                        r"|^c_attn$|^attn_")
_MLP = re.compile(r"mlp|ffn|feed_?forward|intermediate|^(up|down|gate|gate_up)_proj$|^w[123]$"
                  r"|^fc\d?$|^c_fc$|expert|moe|^dense_(h_to_4h|4h_to_h)$")
_EMBEDDINGS = re.compile(r"embed|^wte$|^wpe$|^token_embd$|^shared$|^tok_embeddings$")
_HEAD = re.compile(r"^lm_head$|head|classifier|^pooler$|^score$|^cls$|^output$|^logits$")


@dataclass(frozen=True)
class Place:
    stack: str | None          # the names before the layer number ("model.layers"), or None
    layer: int | None
    role: str                  # the name inside its layer, later numbers as * ("mlp.experts.*.w1.weight")
    block: str                 # one of BLOCK_ORDER


def place(name: str) -> Place:
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit() and i < len(parts) - 1:
            inner = ["*" if p.isdigit() else p for p in parts[i + 1:]]
            return Place(".".join(parts[:i]), int(part), ".".join(inner), _layer_block(inner))
    return Place(None, None, name, _top_block(parts))


# The first rule with a pattern some word of the name matches gives the block.
_IN_LAYER = ((NORM, _NORM), (ATTENTION, _ATTENTION), (MLP, _MLP),
             (MLP, re.compile(r"^output$")))       # BERT: layer.N.output.dense, the MLP's down projection
_OUTSIDE = ((EMBEDDINGS, _EMBEDDINGS), (NORM, _NORM), (HEAD, _HEAD))


def _block(parts: list[str], rules: tuple) -> str:
    words = [p.lower() for p in parts[:-1]] or [p.lower() for p in parts]   # not weight/bias
    for block, pattern in rules:
        if any(pattern.search(w) for w in words):
            return block
    return OTHER


def _layer_block(parts: list[str]) -> str:
    return _block(parts, _IN_LAYER)


def _top_block(parts: list[str]) -> str:
    return _block(parts, _OUTSIDE)


def layer_span(layers: list[int]) -> str:
    """"3", "0–5", or "0–3, 7, 9–11" for the layers given."""
    runs: list[list[int]] = []
    for n in sorted(set(layers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in runs)
