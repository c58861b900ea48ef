"""Reviewing checkpoint changes: pointer diffs in git, `gitmodel diff`, `show` and `log`."""

from __future__ import annotations

import json
import os
import subprocess
import math
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import Repo, random_model, write_safetensors
from gitmodel import report, review, stored
from gitmodel.pointer import Pointer, TensorLine
from gitmodel.store.objects import Store


def two_versions(repo: Repo) -> tuple[dict, dict]:
    v1 = random_model(0, layers=3)
    v1["bf"] = (np.random.default_rng(5).standard_normal(3000).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    v1["half"] = np.random.default_rng(6).standard_normal(500).astype(np.float16)
    write_safetensors(repo.path / "m.safetensors", v1, dtypes={"bf": "BF16"})
    repo.commit("v1")
    v2 = {k: v.copy() for k, v in v1.items()}
    v2["layers.1.weight"] *= np.float32(1.01)
    v2["layers.2.bias"][:10] = 0
    v2["half"][7] = np.float16(np.inf)
    v2["bf"][:300] ^= 1                                  # flip the last mantissa bit
    del v2["layers.0.bias"]
    v2["head"] = np.ones((4, 4), np.float32)
    write_safetensors(repo.path / "m.safetensors", v2, dtypes={"bf": "BF16"})
    return v1, v2


def bf16(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def test_gitmodel_diff_numbers(repo: Repo):
    v1, v2 = two_versions(repo)
    out = json.loads(repo.gitmodel("diff", "--format", "json").stdout)["checkpoints"]   # index vs work tree
    assert [d["path"] for d in out] == ["m.safetensors"]
    tensors = {t["name"]: t for t in out[0]["tensors"]}
    assert tensors["layers.0.bias"]["status"] == "removed"
    assert tensors["head"]["status"] == "added"
    assert tensors["embed.weight"]["status"] == "unchanged" and tensors["embed.weight"]["change"] is None

    def expect(name, old, new):
        got = tensors[name]["change"]
        finite = np.isfinite(old) & np.isfinite(new)
        d = (new - old)[finite]
        assert tensors[name]["status"] == "changed"
        unbounded = int(np.count_nonzero((old != new) & ~finite & ~(np.isnan(old) & np.isnan(new))))
        assert got["unbounded"] == unbounded
        if unbounded and not np.any(d):    # only to or from NaN or ±Inf: no finite size
            assert got["relative_l2"] is None and got["max_abs"] is None and got["cosine"] is None
        else:
            assert got["relative_l2"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(old[finite]), rel=1e-9)
            assert got["max_abs"] == pytest.approx(np.abs(d).max(), rel=1e-12)
        assert got["changed_fraction"] == pytest.approx(np.count_nonzero(old != new) / old.size)
        assert got["new_nonfinite"] == int(np.count_nonzero(np.isfinite(old) & ~np.isfinite(new)))

    f64 = lambda a: a.astype(np.float64).ravel()                       # noqa: E731
    expect("layers.1.weight", f64(v1["layers.1.weight"]), f64(v2["layers.1.weight"]))
    expect("layers.2.bias", f64(v1["layers.2.bias"]), f64(v2["layers.2.bias"]))
    expect("half", f64(v1["half"]), f64(v2["half"]))
    expect("bf", bf16(v1["bf"]), bf16(v2["bf"]))
    assert tensors["half"]["change"]["new_nonfinite"] == 1 and tensors["half"]["change"]["unbounded"] == 1
    assert tensors["layers.1.weight"]["change"]["relative_l2"] == pytest.approx(0.01, rel=1e-6)
    assert tensors["layers.1.weight"]["change"]["cosine"] == pytest.approx(1.0, abs=1e-12)

    # The same comparison between commits, as text and as Markdown.
    repo.commit("v2")
    text = repo.gitmodel("diff", "HEAD~1", "HEAD").stdout
    words = " ".join(text.split())                      # the paragraph is wrapped
    assert "4 of 9 tensors changed" in words and "1 added, 1 removed" in words
    assert "embed.weight" not in text, "unchanged tensors are not listed"
    md = repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "markdown", "--", "m.safetensors").stdout
    assert "| `layers.1.weight` | changed | F32 [256,256] | 0.01 |" in md
    assert "| max\\|Δ\\| |" in md and "|---|---|" in md
    assert repo.gitmodel("diff", "HEAD", "HEAD").stdout == ""
    assert repo.gitmodel("diff", "HEAD~1..HEAD").stdout == text        # git's range forms
    repo.git("switch", "-q", "-c", "side", "HEAD~1")
    assert repo.gitmodel("diff", "side...main").stdout == text         # a pull request's change
    assert repo.gitmodel("diff", "main...side").stdout == ""
    repo.git("switch", "-q", "main")


def test_diff_reads_only_changed_tensors(tmp_path: Path, repo: Repo, monkeypatch):
    two_versions(repo)
    repo.commit("v2")
    from gitmodel.git import repo as git_repo, revisions
    repository = git_repo.open_repository(repo.path)
    store = Store(repo.store)
    old = revisions.pointer_at(repository, "HEAD~1", "m.safetensors", store)
    new = revisions.pointer_at(repository, "HEAD", "m.safetensors", store)
    # The chunks of the tensors that did not change (located before counting reads).
    file = stored.StoredFile(store, old.content)
    places = stored.locate_tensors(file)
    chunks, offset, untouched = store.read_manifest(bytes.fromhex(old.content)).chunks, 0, set()
    for cid, length in chunks:
        for name in ("embed.weight", "layers.0.weight", "layers.2.weight"):
            p = places[name]
            if p.offset <= offset and offset + length <= p.offset + p.length:
                untouched.add(cid)
        offset += length
    assert len(untouched) >= 6          # enough unchanged chunks for the check to mean something
    reads, real = [], Store.read
    monkeypatch.setattr(Store, "read", lambda self, oid, *out: reads.append(oid) or real(self, oid, *out))
    diff = review.diff_pointers("m.safetensors", old, new, store)
    assert sum(t.change is not None for t in diff.tensors) == 4
    assert reads and not untouched & set(reads), "an unchanged tensor's chunks were read"


def test_metrics_and_parameters_tables_and_json_without_nan():
    a = Pointer(10, "a" * 64, "pytorch", (TensorLine("w", "F32", (2,), "0" * 16),),
                metrics=(("epoch", 3.0), ("val_loss", 0.5)))
    b = Pointer(10, "b" * 64, "pytorch", (TensorLine("w", "F32", (2,), "1" * 16),),
                metrics=(("epoch", 4.0), ("val_loss", 0.4125), ("step", 1200.0)))
    diff = review.diff_pointers("ckpt.pt", a, b, store=None)
    assert diff.tensors[0].note == "store unavailable"
    md = report.markdown(review.Review([diff]))
    assert "| Metric | Old | New | Change |  |" in md
    assert "| val_loss | 0.5 | 0.4125 | -0.0875 (-17.5%) | better |" in md
    assert "| Parameter | Old | New | Change |" in md
    assert "| epoch | 3 | 4 | +1 (+33.3%) |" in md and "| step | – | 1200 | – |" in md
    assert md.index("| Metric |") < md.index("| Parameter |") < md.index("<details>")
    diff.tensors[0].change = review.Change(relative_l2=math.inf, max_abs=math.nan)
    out = json.loads(report.to_json(review.Review([diff])))["checkpoints"][0]
    assert out["tensors"][0]["change"]["relative_l2"] is None
    assert {n["key"]: (n["kind"], n["verdict"]) for n in out["numbers"]} == {
        "val_loss": ("metric", "better"), "epoch": ("param", ""), "step": ("param", "")}


def test_git_diff_shows_only_pointer_lines_of_changed_tensors(repo: Repo):
    two_versions(repo)
    repo.commit("v2")
    patch = repo.out("diff", "HEAD~1", "HEAD", "-U0")
    changed = [l for l in patch.splitlines() if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    names = {line[1:].split(" ")[0] for line in changed}
    assert names == {"size", "content", "params", "layers.0.bias", "layers.1.weight",
                     "layers.2.bias", "half", "bf", "head"}
    assert re.search(r"^@@ -\S+ \+\S+ @@ \[tensors\]$", patch, re.M), "hunks name their section"


def test_show_and_log(repo: Repo):
    two_versions(repo)
    repo.commit("v2")
    shown = repo.gitmodel("show", "HEAD~1:m.safetensors").stdout
    assert shown.startswith("gitmodel pointer v1\n") and "layers.0.bias F32 [256]" in shown
    assert "layers.0.bias" not in repo.gitmodel("show", "m.safetensors").stdout
    log = repo.gitmodel("log", "m.safetensors").stdout.splitlines()
    assert len(log) == 2 and log[0].endswith("v2") and log[1].endswith("v1")
    assert "(4 changed, 1 added, 1 removed)" in log[0] and "(first version)" in log[1]
    missing = repo.gitmodel("show", "HEAD:nope.safetensors", check=False)
    assert missing.returncode == 1 and "not a tracked checkpoint" in missing.stderr
    # A link in the work tree is no checkpoint (git keeps the link): show followed it anywhere.
    (repo.path / "link.safetensors").symlink_to(repo.path / "m.safetensors")
    linked = repo.gitmodel("show", "link.safetensors", check=False)
    assert linked.returncode == 1 and "not a tracked checkpoint" in linked.stderr, linked.stdout
    bad = repo.gitmodel("diff", "nosuchrev", check=False)
    assert bad.returncode == 1 and "unknown revision 'nosuchrev'" in bad.stderr


def test_log_follows_a_renamed_checkpoint(repo: Repo):
    _, v2 = two_versions(repo)
    repo.commit("v2")
    repo.git("mv", "m.safetensors", "n.safetensors")
    repo.commit("moved")                                  # the same bytes: not a new version
    repo.git("mv", "n.safetensors", "o.safetensors")
    v2["head"] *= 2
    write_safetensors(repo.path / "o.safetensors", v2, dtypes={"bf": "BF16"})
    repo.commit("moved and changed")
    log = [line for line in repo.gitmodel("log", "o.safetensors").stdout.splitlines() if line[0] != " "]
    assert [line.split("  ")[-1] for line in log] == ["moved and changed", "v2", "v1"]
    assert "(renamed from m.safetensors; 1 changed)" in log[0]      # where v2 was
    assert "(4 changed, 1 added, 1 removed)" in log[1]


def test_ten_thousand_tensors_keep_a_small_pointer_and_a_fast_diff(repo: Repo):
    rng = np.random.default_rng(9)
    model = {f"blocks.{i // 10}.w{i % 10}": rng.standard_normal(16).astype(np.float32)
             for i in range(10_000)}
    write_safetensors(repo.path / "big.safetensors", model)
    repo.commit("v1")
    model["blocks.500.w3"] = model["blocks.500.w3"] * 2
    write_safetensors(repo.path / "big.safetensors", model)
    repo.commit("v2")
    blob = repo.git("show", "HEAD:big.safetensors").stdout
    assert len(blob) < 3_000_000 and blob.count(b"\n") > 10_000
    import time
    started = time.perf_counter()
    patch = repo.out("diff", "-U0", "HEAD~1", "HEAD")
    assert time.perf_counter() - started < 2.0           # generous: the point is no smudge
    changed = [line for line in patch.splitlines() if line.startswith(("+blocks", "-blocks"))]
    assert [line[1:].split(" ")[0] for line in changed] == ["blocks.500.w3", "blocks.500.w3"]


def test_log_lists_metrics_and_plots_them(tmp_path: Path, git_env):
    from conftest import make_repo
    import shutil
    repo = make_repo(tmp_path / "w", git_env, track="*.pt")
    data = Path(__file__).parent / "data" / "torch"
    shutil.copy(data / "checkpoint.pt", repo.path / "ckpt.pt")
    repo.commit("epoch 7")
    shutil.copy(data / "dedup_v1.pt", repo.path / "ckpt.pt")
    repo.commit("another run")
    log = repo.gitmodel("log", "ckpt.pt", "--plot", str(tmp_path / "m.png")).stdout.splitlines()
    first = next(i for i, line in enumerate(log) if line.endswith("epoch 7"))
    assert log[first + 1].split()[0] == "metrics" and "val_loss=0.123" in log[first + 1].split()
    assert log[first + 2].split()[:1] == ["params"] and "epoch=7" in log[first + 2]
    png = (tmp_path / "m.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_show_and_log_take_paths_from_the_current_directory(repo: Repo):
    (repo.path / "models").mkdir()
    write_safetensors(repo.path / "models/m.safetensors", random_model(2))
    repo.commit("m")
    sub = Repo(repo.path / "models", repo.env)
    assert "embed.weight" in sub.gitmodel("show", "m.safetensors").stdout
    assert "embed.weight" in sub.gitmodel("show", "HEAD:./m.safetensors").stdout
    assert "embed.weight" in sub.gitmodel("show", "HEAD:models/m.safetensors").stdout
    assert len(sub.gitmodel("log", "m.safetensors").stdout.splitlines()) == 1
    outside = sub.gitmodel("log", "../../x.safetensors", check=False)
    assert outside.returncode == 1 and "outside the repository" in outside.stderr


def test_changes_to_or_from_nan_or_inf_are_not_reported_as_no_change(repo: Repo):
    """Where every change is to or from NaN or ±Inf, the sizes over finite elements were 0 and
    the cosine 1: a tensor that changed read as one that did not."""
    v1 = {"inf": np.array([np.inf, -np.inf, 0], np.float32), "allnan": np.full(4, np.nan, np.float32),
          "w": np.ones(8, np.float32)}
    write_safetensors(repo.path / "n.safetensors", v1)
    repo.commit("v1")
    v2 = {"inf": np.array([np.inf, 5, 0], np.float32), "allnan": np.ones(4, np.float32),
          "w": np.full(8, np.inf, np.float32)}
    write_safetensors(repo.path / "n.safetensors", v2)
    repo.commit("v2")
    out = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)["checkpoints"]
    tensors = {t["name"]: t for t in out[0]["tensors"]}
    for name in v1:
        change = tensors[name]["change"]
        assert tensors[name]["status"] == "changed" and change["unbounded"] > 0, name
        assert change["relative_l2"] is None and change["cosine"] is None, name   # ∞: null in JSON
    rows = {line.split()[0]: line for line in repo.gitmodel("diff", "HEAD~1", "HEAD").stdout.splitlines()
            if line.split() and line.split()[0] in v1}
    assert all("NaN/Inf" in row and "1.000000" not in row for row in rows.values()), rows


def test_files_without_readable_tensors_say_what_happened_to_their_bytes(repo: Repo):
    """A compressed npz that gained an Inf, a file of no known format deleted, another added:
    each was reported as "no tensors, none added or removed"."""
    repo.gitmodel("track", "*.npz", "*.pt")
    with open(repo.path / "c.npz", "wb") as f:
        np.savez_compressed(f, x=np.zeros((32, 32)))
    (repo.path / "r.pt").write_bytes(b"\x01" * 5000)
    repo.commit("a", "c.npz", "r.pt", ".gitattributes")
    x = np.zeros((32, 32))
    x[3, 3] = np.inf
    with open(repo.path / "c.npz", "wb") as f:
        np.savez_compressed(f, x=x)
    repo.git("rm", "-q", "r.pt")
    (repo.path / "new.pt").write_bytes(b"\x02" * 4000)
    repo.commit("b", "c.npz", "new.pt")
    text = " ".join(repo.gitmodel("diff", "HEAD~1", "HEAD").stdout.split())
    assert "no tensors, none added or removed" not in text, text
    assert "c.npz (npz) Content changed (" in text and "r.pt (opaque, deleted) Deleted: it had 5,000 bytes" in text, text
    assert "new.pt (opaque, new file) New file of 4,000 bytes" in text, text
    md = repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "markdown").stdout
    assert "**Content changed (" in md
    data = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)["checkpoints"]
    assert {d["path"]: (d["old_size"], d["new_size"]) for d in data}["r.pt"] == (5000, None)


def test_plot_names_that_matplotlib_cannot_write_are_refused_first(repo: Repo):
    two_versions(repo)
    repo.commit("v2")
    for name in ("out.txt", "nodir/out.png"):
        done = repo.gitmodel("diff", "HEAD~1", "HEAD", "--plot", name, check=False)
        assert done.returncode == 1 and "internal error" not in done.stderr and "--plot" in done.stderr, done.stderr
        assert done.stdout == "", "refused before the report"
    assert repo.gitmodel("log", "m.safetensors", "--plot", "x.txt", check=False).returncode == 1


def test_tensor_names_with_control_characters_cannot_forge_report_lines(repo: Repo):
    """A newline in a tensor's name split its table row (and could print a fake WARNING line),
    a tab broke the columns, a backtick broke Markdown's code span."""
    names = ["", "tab\tname", "n\nWARNING: fake", "x`y"]
    write_safetensors(repo.path / "u.safetensors", {n: np.ones(i + 1, np.float32) for i, n in enumerate(names)})
    repo.commit("a")
    write_safetensors(repo.path / "u.safetensors", {n: np.full(i + 1, 2, np.float32) for i, n in enumerate(names)})
    repo.commit("b")
    text = repo.gitmodel("diff", "HEAD~1", "HEAD").stdout
    assert not any(line.startswith("WARNING: fake") for line in text.splitlines()), text
    assert "\t" not in text and '"n\\nWARNING: fake"' in text and '"tab\\tname"' in text, text
    md = repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "markdown").stdout
    assert "`` x`y ``" in md, md


def test_a_name_that_occurs_twice_is_compared_occurrence_by_occurrence(repo: Repo):
    """An npz with two entries of one name: the diff matched the wrong pair and reported the
    changed one as moved by 0."""
    import io
    import warnings
    import zipfile
    repo.gitmodel("track", "*.npz")

    def write(second: float) -> None:
        with zipfile.ZipFile(repo.path / "d.npz", "w") as z, warnings.catch_warnings():
            warnings.simplefilter("ignore")                  # zipfile warns of the duplicate
            for value in (1.0, second):
                buffer = io.BytesIO()
                np.save(buffer, np.full(16, value, np.float32))
                z.writestr("w.npy", buffer.getvalue())

    write(2.0)
    repo.commit("a", "d.npz", ".gitattributes")
    write(3.0)
    repo.commit("b", "d.npz")
    data = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)["checkpoints"][0]
    assert sorted((t["name"], t["status"]) for t in data["tensors"]) == [("w", "changed"), ("w", "unchanged")]
    changed = next(t for t in data["tensors"] if t["status"] == "changed")
    assert changed["change"] is None and "repeated" in changed["note"]


def test_show_of_a_revision_that_does_not_exist_says_so(repo: Repo):
    done = repo.gitmodel("show", "nosuch:m.safetensors", check=False)
    assert done.returncode == 1 and "unknown revision 'nosuch'" in done.stderr, done.stderr


def test_a_renamed_checkpoint_is_compared_with_its_old_self(repo: Repo):
    """`git mv`: every tensor was reported removed from the old path and added at the new."""
    model = random_model(3, layers=2)
    write_safetensors(repo.path / "a.safetensors", model)
    repo.commit("a")
    (repo.path / "sub dir").mkdir()
    repo.git("mv", "a.safetensors", "sub dir/zé ro.safetensors")
    repo.git("commit", "-q", "-m", "moved")
    text = " ".join(repo.gitmodel("diff", "HEAD~1", "HEAD").stdout.split())
    assert "a.safetensors → sub dir/zé ro.safetensors (safetensors, identical)" in text, text
    assert "0 of 5 tensors changed" in text and "none added or removed" in text, text
    model["layers.1.weight"] = model["layers.1.weight"] * np.float32(2)
    write_safetensors(repo.path / "sub dir/zé ro.safetensors", model)
    repo.git("mv", "sub dir/zé ro.safetensors", "b.safetensors")
    repo.git("add", "b.safetensors")                     # moved and changed
    data = json.loads(repo.gitmodel("diff", "--cached", "--format", "json").stdout)["checkpoints"]
    assert [d["path"] for d in data] == ["sub dir/zé ro.safetensors → b.safetensors"], data
    assert [t["name"] for t in data[0]["tensors"] if t["status"] != "unchanged"] == ["layers.1.weight"]


def test_a_new_file_is_summarised_as_new_not_as_none_changed(repo: Repo):
    """A new checkpoint (a commit adding it, or ours deleted it in a conflicted merge) read
    "0 of 5 tensors changed (… of … weights), 5 added": none changed, yet every weight."""
    write_safetensors(repo.path / "a.safetensors", random_model(3, layers=2))
    repo.commit("a")
    text = " ".join(repo.gitmodel("diff", "HEAD~1", "HEAD").stdout.split())
    assert "5 tensors, all new (" in text and "0 of 5" not in text, text
    model = random_model(3, layers=2)
    model["extra"] = np.ones(4, np.float32)
    write_safetensors(repo.path / "a.safetensors", model)
    text = " ".join(repo.gitmodel("diff").stdout.split())
    assert "0 of 6 tensors changed" in text and "weights changed or new), 1 added" in text, text


def test_a_file_committed_before_it_was_tracked_is_compared_with_its_raw_bytes(tmp_path: Path, git_env):
    """A checkpoint committed raw, then tracked and renormalized: the review called it a new
    file (all tensors added). Its raw version in git is read instead: identical, then the
    numbers of a later change against it; the diffs store nothing."""
    repo = Repo(tmp_path / "raw", git_env)
    repo.path.mkdir()
    repo.git("init", "-q", "-b", "main")
    model = random_model(4, layers=2)
    write_safetensors(repo.path / "m.safetensors", model)
    repo.commit("raw")
    repo.gitmodel("install")
    repo.gitmodel("track", "*.safetensors")
    repo.git("add", ".gitattributes")
    repo.git("add", "--renormalize", ".")

    def diff(*args: str) -> str:
        packs = sorted((repo.store / "packs").iterdir())
        out = repo.gitmodel("diff", *args).stdout
        assert sorted((repo.store / "packs").iterdir()) == packs
        return out

    text = " ".join(diff("--cached").split())
    assert "m.safetensors (safetensors, identical)" in text and "0 of 5 tensors changed" in text, text
    repo.git("commit", "-q", "-m", "tracked")
    model["layers.0.bias"] = model["layers.0.bias"] + np.float32(1)
    write_safetensors(repo.path / "m.safetensors", model)
    repo.commit("changed")
    checkpoints = json.loads(diff("HEAD~2", "HEAD", "--format", "json"))["checkpoints"]
    assert [d["path"] for d in checkpoints] == ["m.safetensors"], checkpoints
    changed = [t for t in checkpoints[0]["tensors"] if t["status"] != "unchanged"]
    assert [t["name"] for t in changed] == ["layers.0.bias"], changed
    assert changed[0]["change"]["max_abs"] == pytest.approx(1.0, abs=1e-6), changed[0]   # both read


def test_a_file_name_that_is_not_utf8_plots_and_output_to_a_closed_descriptor(repo: Repo, tmp_path: Path):
    """`diff --plot` of a Latin-1 file name was an internal error (matplotlib refused the
    name's escaped bytes), and so was `show` with its output closed (`>&-`)."""
    name = os.fsdecode(b"mod\xe8le.safetensors")
    model = random_model(1)
    write_safetensors(repo.path / name, model)
    repo.commit("v1", name)
    model["layers.0.weight"] = model["layers.0.weight"] * np.float32(2)
    write_safetensors(repo.path / name, model)
    repo.commit("v2", name)
    plotted = subprocess.run(["gitmodel", "diff", "--no-numbers", "HEAD~1", "HEAD", "--plot", str(tmp_path / "d.png")],
                             cwd=repo.path, env=repo.env, capture_output=True)     # bytes: the name is not UTF-8
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    closed = subprocess.run(["gitmodel", "show", f"HEAD:{name}"], cwd=repo.path, env=repo.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))
    assert closed.returncode == 0 and b"internal error" not in closed.stderr, closed.stderr


def test_numbers_at_the_edges_of_float64_and_int64_and_changes_of_layout_alone(repo: Repo):
    """An exploration checked the review against numpy: tiny float64 values crashed `gitmodel
    diff` (the product of two sums underflowed to 0), and tinier or huge ones gave 0 or NaN
    (their squares underflow or overflow: the sums are scaled now), int64 values past 2**53
    that moved by one read as unchanged (also when the new version is float64), a tensor whose bytes stayed while its shape or dtype changed read as
    unchanged ("0 of 3 changed", no alarm), and an exact doubling of a norm raised "norm
    jumped" (its four-digit norms read 2.0003)."""
    def write(tensors, dtypes=None):
        write_safetensors(repo.path / "e.safetensors", tensors, dtypes=dtypes)
        repo.commit("version")
    f16 = np.arange(8, dtype=np.float16)
    write({"tiny": np.array([1e-100, 2e-100]), "big": np.array([2**62, 2**53], np.int64),
           "w": np.arange(16, dtype=np.float32).reshape(4, 4), "h": f16,
           "double": np.array([3.60026], np.float32), "tinier": np.array([1e-170, 3e-170]),
           "huge": np.full(4, 3e160), "step": np.array([2**53 + 1, 2**62 + 1], np.int64)})
    write({"tiny": np.array([2e-100, 1e-100]), "big": np.array([2**62 + 1, 2**53 + 1], np.int64),
           "w": np.arange(16, dtype=np.float32).reshape(16), "h": f16.view(np.uint16),
           "double": np.array([7.20052], np.float32), "tinier": np.array([3e-170, 1e-170]),
           "huge": np.array([3e160, 3e160, 3e160, 6e160]), "step": np.array([2.0**53, 2.0**62])},
          dtypes={"h": "BF16"})
    done = repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json")
    assert "overflow" not in done.stderr, done.stderr
    tensors = {t["name"]: t for t in json.loads(done.stdout)["checkpoints"][0]["tensors"]}
    for name, relative, cosine in (("tiny", math.sqrt(0.4), 0.8), ("tinier", math.sqrt(0.8), 0.6),
                                   ("huge", 0.5, 15 / math.sqrt(252))):
        change = tensors[name]["change"]
        assert math.isclose(change["cosine"], cosine) and math.isclose(change["relative_l2"], relative), name
    for name in ("big", "step"):                    # int64 to int64, and int64 to float64
        change = tensors[name]["change"]
        assert change["changed_fraction"] == 1.0 and change["max_abs"] == 1.0, name
    assert tensors["w"]["status"] == "changed" and tensors["h"]["status"] == "changed"
    text = repo.gitmodel("diff", "HEAD~1", "HEAD").stdout
    jumped = re.search(r"norm jumped in ([^;]*);", text)
    assert jumped and "h (" in jumped.group(1) and "double" not in jumped.group(1), text
    assert "dtype or shape changed in w (F32 [4,4] →" in text and "h (F16 [8] → BF16 [8])" in text, text
    assert "(8 changed)" in repo.gitmodel("log", "e.safetensors").stdout


def test_an_array_that_changed_element_order_alone_is_not_reported_with_wrong_numbers(repo: Repo):
    """An .npy saved in C order, then the same values in Fortran order: the review compared
    bytes position by position and reported 83% of the elements changed. The layout change
    is named and no numbers are given; two versions in Fortran order still compare."""
    repo.gitmodel("track", "*.npy", "*.npz")
    values = np.arange(1, 13, dtype="<f4").reshape(3, 4)
    np.save(repo.path / "w.npy", values)
    np.savez(repo.path / "z.npz", a=np.asfortranarray(values), b=values)
    repo.commit("c order", "w.npy", "z.npz", ".gitattributes")
    np.save(repo.path / "w.npy", np.asfortranarray(values))
    np.savez(repo.path / "z.npz", a=np.asfortranarray(values * 2), b=np.asfortranarray(values))
    repo.commit("fortran order", "w.npy", "z.npz")
    done = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)
    tensors = {(c["path"], t["name"]): t for c in done["checkpoints"] for t in c["tensors"]}
    for key in (("w.npy", "array"), ("z.npz", "b")):
        assert tensors[key]["status"] == "changed" and tensors[key].get("change") is None, key
        assert tensors[key]["note"] == "element order changed (Fortran/C): no numbers", key
    assert tensors[("z.npz", "a")]["change"]["changed_fraction"] == 1.0    # both Fortran order
    assert math.isclose(tensors[("z.npz", "a")]["change"]["relative_l2"], 1.0)
    # A review of the fix: where a pointer cannot tell an array's order (a name with commas,
    # a list of Fortran-order arrays cut short), it gave no numbers even for unchanged orders.
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    many = {f"w{i}": np.asfortranarray(rng.standard_normal((8, 8)).astype(np.float32)) for i in range(60)}
    np.savez(repo.path / "comma.npz", **{"layer.weight": w, "a,b": w[:4]})
    np.savez(repo.path / "many.npz", **many)
    repo.commit("v1", "comma.npz", "many.npz")
    np.savez(repo.path / "comma.npz", **{"layer.weight": w * np.float32(2), "a,b": w[:4]})
    np.savez(repo.path / "many.npz", **{k: np.asfortranarray(v * np.float32(2)) for k, v in many.items()})
    repo.commit("v2", "comma.npz", "many.npz")
    done = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)
    tensors = {(c["path"], t["name"]): t for c in done["checkpoints"] for t in c["tensors"]}
    for key in [("comma.npz", "layer.weight"), *(("many.npz", f"w{i}") for i in range(60))]:
        assert math.isclose(tensors[key]["change"]["relative_l2"], 1.0, rel_tol=1e-6), key


def _exactly(x: list[float], y: list[float]) -> tuple[float, float]:
    """‖y − x‖ / ‖x‖ and cos(x, y) in exact arithmetic, rounded once."""
    from decimal import Decimal, localcontext
    from fractions import Fraction
    xs, ys = [Fraction(v) for v in x], [Fraction(v) for v in y]
    sums = [sum(p) for p in ([(b - a) ** 2 for a, b in zip(xs, ys)], [a * a for a in xs],
                             [b * b for b in ys], [a * b for a, b in zip(xs, ys)])]
    with localcontext() as context:
        context.prec = 60
        dd, xx, yy, xy = (Decimal(f.numerator) / Decimal(f.denominator) for f in sums)
        return float(dd.sqrt() / xx.sqrt()), float(xy / (xx * yy).sqrt())


def test_changes_beside_float64_extremes_have_their_sizes(repo: Repo):
    """DBL_MAX as a "no value" sentinel beside an element that moved: `gitmodel diff` died with
    OverflowError (the sums' scale, 2**1024, is no float64). And the one scale of all the sums,
    set by the largest value, made a change tiny beside the values vanish (‖Δ‖/‖W‖ 0 for
    1.0 → 2.0 next to 1e200, or for 0 → 1e-300 next to 1.0)."""
    big = float(np.finfo(np.float64).max)
    versions = {"sentinel": ([big, 1.0], [big, 2.0]), "beside": ([1e200, 1.0], [1e200, 2.0]),
                "across": ([-big, 1.0], [big, 1.0]), "tiny": ([1.0, 0.0], [1.0, 1e-300])}
    for i in range(2):
        write_safetensors(repo.path / "e.safetensors", {k: np.array(v[i]) for k, v in versions.items()})
        repo.commit(f"v{i}")
    done = repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json")
    assert done.stderr == ""
    tensors = {t["name"]: t["change"] for t in json.loads(done.stdout)["checkpoints"][0]["tensors"]}
    for name, (x, y) in versions.items():
        relative, cosine = _exactly(x, y)
        change = tensors[name]
        assert math.isclose(change["relative_l2"], relative, rel_tol=1e-14), (name, change, relative)
        assert math.isclose(change["cosine"], cosine, rel_tol=1e-14), (name, change, cosine)
        moved = abs(y[0] - x[0]) + abs(y[1] - x[1])              # one element moved
        assert change["max_abs"] == (moved if moved < math.inf else None), name   # (JSON: no inf)
    assert tensors["sentinel"]["relative_l2"] == 2.0 ** -1024 and tensors["tiny"]["relative_l2"] == 1e-300
    text = repo.gitmodel("diff", "HEAD~1", "HEAD").stdout
    assert re.search(r"sentinel +changed +F64 \[2\] +5\.56e-309 +1 +1\.000000 +50%", text), text


EVIL = "\x1b]0;PWNED\x07\x1b[41m<img src=x onerror=alert(1)>**[click](http://evil.example)**"


def _outside_code_spans(md: str) -> str:
    """The Markdown with every code span removed: what GitHub renders as Markdown and HTML."""
    return re.sub(r"(`+)(.+?)\1", " ", md)


def test_text_from_a_checkpoint_reaches_no_terminal_or_pull_request_raw(repo: Repo):
    """Tensor names and metadata keys holding terminal escapes, HTML and Markdown links: the
    module label ("Changed: ESC]0;…") and the Parameter table's keys went out raw, sending OSC
    and CSI sequences to the terminal and an <img onerror> and a link into the PR comment.
    Metric keys of a metrics file, and those `gitmodel log` lists, the same."""
    (repo.path / ".gitmodel").write_text("[review]\n\tmetrics-file = m.json\n")
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        write_safetensors(repo.path / "m.safetensors",
                          {EVIL + ".0.weight": rng.standard_normal((16, 16)).astype(np.float32),
                           EVIL + ".1.weight": rng.standard_normal(8).astype(np.float32),
                           "top" + EVIL + ".weight": rng.standard_normal(8).astype(np.float32),
                           "tex$\\frac{$.0.w": rng.standard_normal(8).astype(np.float32)},
                          metadata={"lr" + EVIL: str(0.001 * (seed + 1)), "epochs": str(seed + 3),
                                    "tex$\\frac{$": str(seed)})
        (repo.path / "m.json").write_text(json.dumps({"val_loss" + EVIL: 1.0 - seed / 4}))
        repo.commit(f"v{seed}")
    outputs = {}
    for fmt in ("text", "markdown", "json"):
        done = subprocess.run(["gitmodel", "diff", "HEAD~1", "HEAD", "--format", fmt], cwd=repo.path,
                              env=repo.env, capture_output=True)
        assert done.returncode == 0, done.stderr
        assert b"\x1b" not in done.stdout + done.stderr and b"\x07" not in done.stdout + done.stderr, done.stdout
        outputs[fmt] = done.stdout.decode()
    log = subprocess.run(["gitmodel", "log", "m.safetensors"], cwd=repo.path, env=repo.env, capture_output=True)
    assert log.returncode == 0 and b"\x1b" not in log.stdout + log.stderr, log.stdout
    quoted = json.dumps(EVIL)[1:-1]                  # \u001b]0;PWNED\u0007\u001b[41m<img ...
    text = outputs["text"]
    assert f'Changed: "{quoted}" 0–1 (2/2' in " ".join(text.split()), text
    assert f'  "lr{quoted}"  0.001  0.002  +0.001 (+100%)' in text, text
    md = outputs["markdown"]
    rendered = _outside_code_spans(md)
    for raw in ("<img", "onerror", "](http", "PWNED", "**[click]"):
        assert raw not in rendered, (raw, md)
    assert f'**Changed**: `"{quoted}"` 0–1 (2/2' in md, md
    assert f'| `"lr{quoted}"` | 0.001 | 0.002 | +0.001 (+100%) |' in md, md
    assert f'`"val_loss{quoted}"` 1 → 0.75 (better)' in md, md
    # ordinary keys stay as they were
    assert "| epochs | 3 | 4 | +1 (+33.3%) |" in md, md
    assert json.loads(outputs["json"])["checkpoints"][0]["summary"]["modules"][0]["stack"] == EVIL
    # `$` would start a matplotlib formula, and one that does not parse failed the picture
    for args in (["diff", "HEAD~1", "HEAD", "--plot", "d.png"], ["log", "m.safetensors", "--plot", "l.png"]):
        done = repo.gitmodel(*args, check=False)
        assert done.returncode == 0 and "\x1b" not in done.stdout + done.stderr, done.stderr


@pytest.mark.parametrize("dims", [300, 20_000])
def test_a_pointer_with_shapes_no_checkpoint_has_is_refused_naming_the_file(repo: Repo, dims: int):
    """300 dimensions of 99999999999999999999: `diff` was an internal error (OverflowError),
    `show` too (a sum of 6000 digits); many more kept `diff` busy for minutes."""
    write_safetensors(repo.path / "m.safetensors", {"w": np.ones(4, np.float32)})
    repo.commit("v1")
    shape = ",".join(["99999999999999999999"] * dims)
    crafted = (f"gitmodel pointer v1\nsize 5\ncontent {'ab' * 32}\nformat safetensors\ntensors 1\n\n"
               f"[tensors]\nt F32 [{shape}] {'0' * 16}\n").encode()
    blob = repo.git("hash-object", "-w", "--stdin", input=crafted).stdout.decode().strip()
    repo.git("update-index", "--cacheinfo", f"100644,{blob},m.safetensors")    # as committed elsewhere
    repo.git("commit", "-q", "-m", "crafted")
    for args in (["diff", "HEAD~1", "HEAD"], ["show", "HEAD:m.safetensors"]):
        done = repo.gitmodel(*args, check=False)
        assert done.returncode == 1 and "internal error" not in done.stderr, done.stderr
        assert "m.safetensors" in done.stderr and "a shape no checkpoint has" in done.stderr, done.stderr


def test_shapes_at_the_readers_limits_still_parse():
    from gitmodel.pointer import Pointer, TensorLine, parse
    big = (1 << 64) - 1
    for shape in [(big,), (0,) + (1 << 63,) * 200, (1,) * 1000, (1 << 32, 1 << 32)]:
        ptr = Pointer(1, "a" * 64, "safetensors", (TensorLine("t", "F32", shape, "0" * 16),))
        assert parse(ptr.render()) == ptr


def test_a_tensor_whose_digest_another_chunking_changed_is_unchanged(repo: Repo):
    """v1 committed by a gitmodel of before d265326 (other chunk sizes: other digests for the
    same bytes), v2 by this one with one tensor changed: the others' bytes, compared anyway,
    are equal, so they are unchanged, not "changed ... up to 0"."""
    from conftest import commit_old_chunking
    v1 = random_model(0, layers=2)
    write_safetensors(repo.path / "m.safetensors", v1)
    old = commit_old_chunking(repo, "m.safetensors", "v1 (old chunking)")
    v2 = dict(v1, **{"layers.1.weight": v1["layers.1.weight"] * np.float32(1.01)})
    write_safetensors(repo.path / "m.safetensors", v2)
    repo.commit("v2")
    new = repo.out("show", "HEAD:m.safetensors")
    digest = lambda text, name: next(line.split()[3] for line in text.splitlines() if line.startswith(name + " "))
    assert digest(old, "layers.0.weight") != digest(new, "layers.0.weight")
    out = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)["checkpoints"][0]
    status = {t["name"]: t["status"] for t in out["tensors"]}
    assert status == {name: "changed" if name == "layers.1.weight" else "unchanged" for name in v1}
    text = repo.gitmodel("diff", "HEAD~1", "HEAD").stdout
    assert "1 of 5 tensors changed" in text and "up to 0\n" not in text and "up to 0 " not in text


def test_a_lossless_cast_reads_values_equal_and_a_change_after_it_gives_its_number(repo: Repo):
    """bf16 weights saved again as fp32 (the same numbers, other bytes) changed dtype but no
    value: the opening said "up to 0", which reads as a change too small to print."""
    rng = np.random.default_rng(3)
    high = (rng.standard_normal((64, 64), dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    widened = (high.astype(np.uint32) << 16).view(np.float32)
    write_safetensors(repo.path / "m.safetensors", {"w": high, "b": np.ones(4, np.float32)},
                      dtypes={"w": "BF16"})
    repo.commit("bf16")
    write_safetensors(repo.path / "m.safetensors", {"w": widened, "b": np.ones(4, np.float32)})
    repo.commit("the same weights as fp32")
    write_safetensors(repo.path / "m.safetensors", {"w": widened * np.float32(1.001),
                                                    "b": np.ones(4, np.float32)})
    repo.commit("trained on in fp32")
    cast = " ".join(repo.gitmodel("diff", "HEAD~2", "HEAD~1").stdout.split())   # unwrapped
    assert "dtype or shape changed in w (BF16 [64,64] → F32 [64,64])" in cast, cast
    assert "(1/2, values equal)" in cast and "up to 0" not in cast, cast
    trained = " ".join(repo.gitmodel("diff", "HEAD~1", "HEAD").stdout.split())
    assert "(1/2, up to 0.001)" in trained, trained


# ----------------------------------------------------------------------------- sharded checkpoints

def write_shards(repo: Repo, model: dict[str, np.ndarray], sizes: list[int], stem: str = "model") -> None:
    """The model as Hugging Face shards it: `sizes[i]` tensors, in order, in shard i + 1 of
    `STEM-0000I-of-0000N.safetensors`, with the index file naming each tensor's shard; the
    shards of before removed."""
    for old in repo.path.glob(f"{stem}-*-of-*.safetensors"):
        old.unlink()
    names, weight_map, start = list(model), {}, 0
    for i, size in enumerate(sizes, 1):
        file = f"{stem}-{i:05d}-of-{len(sizes):05d}.safetensors"
        write_safetensors(repo.path / file, {n: model[n] for n in names[start:start + size]})
        weight_map.update((n, file) for n in names[start:start + size])
        start += size
    assert start == len(names)
    (repo.path / f"{stem}.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}, indent=2))


def sharded_model() -> dict[str, np.ndarray]:
    return random_model(8, layers=5, width=32)        # embed.weight, then layers.0-4 weight and bias


def test_a_fine_tune_across_three_shards_is_one_model(repo: Repo):
    """An 80-layer model in 35 shards gave 35 sections, and its NaN alarm stood in the section
    of shard 34, hundreds of lines down. A sharded checkpoint is now reviewed as one model:
    one section, its alarms first, numbers for every changed tensor."""
    v1 = sharded_model()
    write_shards(repo, v1, [5, 4, 2])
    repo.commit("v1")
    rng = np.random.default_rng(1)
    v2 = {k: v + np.float32(0.001) * rng.standard_normal(v.shape, dtype=np.float32) if k.startswith("layers.") else v
          for k, v in v1.items()}
    v2["layers.4.weight"][0, 0] = np.nan
    write_shards(repo, v2, [5, 4, 2])
    repo.commit("v2")
    text = repo.gitmodel("diff", "HEAD~1", "HEAD").stdout
    assert text.splitlines()[:6] == [
        "model-*-of-00003.safetensors (safetensors, 3 shards)",
        "  WARNING: new NaN/Inf in layers.4.weight (1 element). 10 of 11 tensors changed (5.28k of 37.3k",
        "  weights), none added or removed. Changed: layers 0–4 (10/10, up to 0.0569 in layer 0). Unchanged:",
        "  embeddings. Largest ‖Δ‖/‖W‖: layers.0.bias 0.0569, layers.1.weight 0.0567, layers.2.bias 0.054.",
        "",
        "  tensor           status   dtype/shape  ‖Δ‖/‖W‖  max|Δ|   cosine    changed  new NaN/Inf"], text
    assert [line for line in text.splitlines() if line[:1] not in ("", " ")] == [text.splitlines()[0]], "one section"
    assert "shard" not in text.split("\n\n", 1)[1], "no tensor moved: no shard column"
    md = repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "markdown").stdout
    assert md.splitlines()[2:5] == ["### `model-*-of-00003.safetensors` (safetensors, 3 shards)", "",
                                    "⚠ **new NaN/Inf** in `layers.4.weight` (1 element). **10 of 11 tensors "
                                    "changed** (5.28k of 37.3k weights), none added or removed. **Changed**: "
                                    "layers 0–4 (10/10, up to 0.0569 in layer 0). Unchanged: embeddings. "
                                    "**Largest** ‖Δ‖/‖W‖: `layers.0.bias` 0.0569, `layers.1.weight` 0.0567, "
                                    "`layers.2.bias` 0.054."], md
    data = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)["checkpoints"]
    assert len(data) == 1 and data[0]["shards"] == [3, 3]
    for t in data[0]["tensors"]:
        if t["name"] == "embed.weight":
            assert t["status"] == "unchanged" and t["shard"] == "model-00001-of-00003.safetensors"
            continue
        old, new = v1[t["name"]].astype(np.float64), v2[t["name"]].astype(np.float64)
        finite = np.isfinite(new)
        assert t["status"] == "changed" and t["moved_from"] == "", t
        assert t["change"]["relative_l2"] == pytest.approx(
            np.linalg.norm((new - old)[finite]) / np.linalg.norm(old[finite]), rel=1e-9), t["name"]


def test_a_shard_path_given_alone_stays_a_file(repo: Repo):
    """The grouping takes in only the files the diff's paths name: a shard named alone is
    reviewed as the file it is, as before, its JSON as before."""
    v1 = sharded_model()
    write_shards(repo, v1, [5, 4, 2])
    repo.commit("v1")
    v2 = dict(v1, **{"layers.2.weight": v1["layers.2.weight"] * np.float32(1.5),
                     "layers.4.bias": v1["layers.4.bias"] * np.float32(1.5)})
    write_shards(repo, v2, [5, 4, 2])
    repo.commit("v2")
    alone = repo.gitmodel("diff", "HEAD~1", "HEAD", "--", "model-00002-of-00003.safetensors").stdout
    assert alone.splitlines()[:3] == [
        "model-00002-of-00003.safetensors (safetensors)",
        "  1 of 4 tensors changed (1.02k of 2.11k weights), none added or removed. Changed: layers 2–3 (1/4",
        "  in layer 2, up to 0.5). Largest ‖Δ‖/‖W‖: layers.2.weight 0.5."], alone
    data = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json", "--",
                                    "model-00002-of-00003.safetensors").stdout)["checkpoints"]
    assert [d["path"] for d in data] == ["model-00002-of-00003.safetensors"]
    assert "shards" not in data[0] and "moved_from" not in data[0]["tensors"][0]
    assert "moved" not in data[0]["summary"]["counts"]
    # Two shards named, or their folder: the model, as far as the paths reach.
    both = repo.gitmodel("diff", "HEAD~1", "HEAD", "--", "model-0000[23]-of-00003.safetensors").stdout
    assert both.startswith("model-*-of-00003.safetensors (safetensors, 2 shards)\n"
                           "  2 of 6 tensors changed"), both
    assert repo.gitmodel("diff", "HEAD~1", "HEAD", "--", ".").stdout.startswith(
        "model-*-of-00003.safetensors (safetensors, 3 shards)\n  2 of 11 tensors changed")


def test_a_reshard_with_no_weight_changed_reads_unchanged_and_moved(repo: Repo):
    """`save_pretrained` with another max_shard_size: every tensor was reported removed from one
    file and added to another ("15 tensors, all new"), and git's rename detection paired
    unrelated shards ("model-00003-of-00004 → model-00002-of-00002: 0 of 89 tensors changed,
    39 added, 9 removed")."""
    model = sharded_model()
    write_shards(repo, model, [3, 3, 3, 2])
    repo.commit("4 shards")
    write_shards(repo, model, [5, 6])
    repo.commit("2 shards")
    assert repo.gitmodel("diff", "HEAD~1", "HEAD").stdout == (
        "model-*-of-00004.safetensors → model-*-of-00002.safetensors (safetensors, 4 shards → 2 shards)\n"
        "  0 of 11 tensors changed (0 of 37.3k weights), none added or removed; 11 moved to another shard.\n")
    every = repo.gitmodel("diff", "HEAD~1", "HEAD", "--all", "--sort", "order").stdout.splitlines()
    assert every[3].split() == ["tensor", "status", "dtype/shape", "‖Δ‖/‖W‖", "max|Δ|", "cosine",
                                "changed", "new", "NaN/Inf", "shard"]
    # Every file was written anew: a tensor in shard 1 of 4 and of 2 is in another file too
    assert every[4].split() == ["embed.weight", "unchanged", "F32", "[1000,32]",
                                "00001-of-00004", "→", "00001-of-00002"]
    assert every[7].split() == ["layers.1.weight", "unchanged", "F32", "[32,32]",
                                "00002-of-00004", "→", "00001-of-00002"]
    data = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)["checkpoints"]
    assert len(data) == 1 and data[0]["shards"] == [4, 2] and data[0]["summary"]["counts"]["moved"] == 11
    assert {t["status"] for t in data[0]["tensors"]} == {"unchanged"}
    moved = {t["name"]: (t["moved_from"], t["shard"]) for t in data[0]["tensors"] if t["moved_from"]}
    assert moved["layers.4.bias"] == ("model-00004-of-00004.safetensors", "model-00002-of-00002.safetensors")
    assert len(moved) == 11 and moved["embed.weight"] == ("model-00001-of-00004.safetensors",
                                                          "model-00001-of-00002.safetensors")


def test_a_reshard_keeps_the_alarms_and_numbers_of_the_tensors_it_moved(repo: Repo):
    """A re-shard with a ×3 norm jump and a NaN in tensors that also moved: each was "removed"
    from one file and "added" to another, with no numbers and no norm alarm."""
    v1 = sharded_model()
    write_shards(repo, v1, [5, 6])
    repo.commit("2 shards")
    v2 = dict(v1, **{"layers.3.weight": v1["layers.3.weight"] * np.float32(3)})
    v2["layers.4.bias"] = v1["layers.4.bias"].copy()
    v2["layers.4.bias"][3] = np.nan
    write_shards(repo, v2, [3, 3, 3, 2])
    repo.commit("re-sharded, two tensors changed")
    text = repo.gitmodel("diff", "HEAD~1", "HEAD").stdout
    assert text.splitlines()[:6] == [
        "model-*-of-00002.safetensors → model-*-of-00004.safetensors (safetensors, 2 shards → 4 shards)",
        "  WARNING: new NaN/Inf in layers.4.bias (1 element); norm jumped in layers.3.weight (0.633 → 1.9,",
        "  ×3). 2 of 11 tensors changed (1.06k of 37.3k weights), none added or removed; 11 moved to another",
        "  shard. Changed: layers 0–4 (2/10 in layers 3–4, layers.4.bias to or from NaN/Inf). Unchanged:",
        "  embeddings. Largest ‖Δ‖/‖W‖: layers.4.bias (to or from NaN/Inf), layers.3.weight 2.",
        ""], text
    rows = [line.split() for line in text.splitlines()[7:]]
    assert rows == [["layers.4.bias", "changed", "F32", "[32]", "NaN/Inf", "NaN/Inf", "–", "3.12%", "1",
                     "00002-of-00002", "→", "00004-of-00004"],
                    ["layers.3.weight", "changed", "F32", "[32,32]", "2", "0.122", "1.000000", "100%", "0",
                     "00002-of-00002", "→", "00003-of-00004"]], text
    md = repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "markdown").stdout
    assert md.splitlines()[4].startswith("⚠ **new NaN/Inf** in `layers.4.bias` (1 element); **norm jumped** in "
                                         "`layers.3.weight` (0.633 → 1.9, ×3)."), md
    assert "| `layers.3.weight` | changed | F32 [32,32] | 2 | 0.122 | 1.000000 | 100% | 0 | 00002-of-00002 → " \
           "00003-of-00004 |" in md, md
    data = json.loads(repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)["checkpoints"][0]
    assert [(a["kind"], a["tensor"]) for a in data["summary"]["alarms"]] == [("nonfinite", "layers.4.bias"),
                                                                             ("norm", "layers.3.weight")]
    head = next(t for t in data["tensors"] if t["name"] == "layers.3.weight")
    assert head["change"]["relative_l2"] == pytest.approx(2.0, rel=1e-6)
    assert head["moved_from"] == "model-00002-of-00002.safetensors"


def _crafted(repo: Repo, files: dict[str, tuple[str, list[str]]], message: str) -> None:
    """Commit pointers written by hand: {path: (format, tensor lines)}, of contents no store has."""
    import hashlib
    for path, (fmt, lines) in files.items():
        content = hashlib.sha256(f"{message} {path}".encode()).hexdigest()
        text = (f"gitmodel pointer v1\nsize 64\ncontent {content}\nformat {fmt}\n"
                f"tensors {len(lines)}\n\n[tensors]\n" + "".join(f"{line}\n" for line in lines)).encode()
        blob = repo.git("hash-object", "-w", "--stdin", input=text).stdout.decode().strip()
        repo.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
    repo.git("commit", "-q", "-m", message)


def test_dtype_and_format_names_from_a_pointer_are_quoted_in_markdown(repo: Repo):
    """A dtype or format name is any [A-Za-z0-9_]+ a pointer gives: `__x__` went into the
    pull-request comment raw, in the heading, the dtype/shape cells, the note and the alarms,
    and rendered bold. Such names are code spans now, as tensor names that are not plain
    words are; real dtypes and formats read as before."""
    digest = lambda i: f"{i:016x}"                                    # noqa: E731
    _crafted(repo, {"a.safetensors": ("safetensors", [f"w F32 [4] {digest(1)}", f"b BF16 [2] {digest(2)}"]),
                    "b.safetensors": ("safetensors", [f"t{i} F32 [3] {digest(10 + i)}" for i in range(4)])},
             "v1")
    _crafted(repo, {"a.safetensors": ("__evil__", [f"w __x__ [4] {digest(3)}", f"b F8_E4M3 [3] {digest(4)}"]),
                    "b.safetensors": ("safetensors", [f"t{i} __x__ [3] {digest(20 + i)}" for i in range(4)])},
             "v2")
    md = repo.gitmodel("diff", "HEAD~1", "HEAD", "--format", "markdown").stdout
    for raw in ("__x__", "__evil__"):
        assert raw not in _outside_code_spans(md), md
    assert "### `a.safetensors` (safetensors → `__evil__`)" in md, md
    assert "**dtype or shape changed** in `w` (F32 [4] → `__x__` [4]), `b` (BF16 [2] → F8_E4M3 [3])" in md, md
    assert "**dtype or shape changed**: F32 → `__x__` in 4 tensors" in md, md
    assert "| `w` | changed | F32 [4] → `__x__` [4] | no numbers for `__x__` |" in md, md
    assert "| `b` | changed | BF16 [2] → F8_E4M3 [3] | shape changed |" in md, md
    assert "| `t0` | changed | F32 [3] → `__x__` [3] | no numbers for `__x__` |" in md, md
    text = repo.gitmodel("diff", "HEAD~1", "HEAD").stdout                 # the terminal's: as it was
    assert "a.safetensors (safetensors → __evil__)" in text, text
    assert re.search(r"w +changed +F32 \[4\] → __x__ \[4\] +no numbers for __x__", text), text
