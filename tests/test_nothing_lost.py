"""Issue 9, "nothing silently lost": each numbered item of the issue, black box.

Real `git` and the `gitmodel` command in temporary repositories, real files, byte-exact sha256
of every checkout. Only the CLI is driven, so the same file runs against any version of the
package (the only internals read are Store.entries() and the pack record head, to find the
byte to damage).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import BIN_DIR, Repo, make_repo, random_model, sha256, user, write_safetensors

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}
POINTER = b"gitmodel pointer v1\n"


# ----------------------------------------------------------------------------- helpers

def small(seed: int, layers: int = 2) -> dict:
    return random_model(seed, layers=layers, width=64)


def bare(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    return path


def clone(url: Path | str, dest: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", "clone", "-q", str(url), str(dest)], env=env, capture_output=True,
                            text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def no_traceback(result: subprocess.CompletedProcess) -> None:
    text = f"{result.stdout}\n{result.stderr}"
    assert "Traceback" not in text and "internal error" not in text, text


def idx_names(repo_or_root: Repo | Path) -> set[str]:
    root = repo_or_root.store if isinstance(repo_or_root, Repo) else repo_or_root
    return {p.stem for p in (root / "packs").glob("pack-*.idx")}


def writable(path: Path) -> Path:
    os.chmod(path, 0o644)
    return path


def flip_byte(root: Path, pack: str | None = None) -> tuple[Path, bytes]:
    """Damage one payload byte of the largest record (a chunk) of `pack` (any pack if None) in
    a store or folder remote at `root`; returns (pack file, the object's id)."""
    from gitmodel.store.objects import Store
    from gitmodel.store.pack import record_head
    entries = [(o, e) for o, e in Store(root).entries() if pack is None or e.pack == pack]
    oid, entry = max(entries, key=lambda item: item[1].stored_length)
    path = writable(root / "packs" / f"{entry.pack}.pack")
    data = bytearray(path.read_bytes())
    data[entry.offset + record_head.size + entry.stored_length // 2] ^= 0x40
    path.write_bytes(bytes(data))
    return path, oid


def checkout_exact(repo: Repo, name: str, digest: str) -> None:
    (repo.path / name).unlink(missing_ok=True)
    repo.git("checkout", "--", name)
    assert sha256(repo.path / name) == digest, name


def versions_exact(work: Repo, expected: dict[str, dict[str, str]]) -> None:
    """{rev: {path: sha256}}: check out each revision in turn and compare every file."""
    for rev, sums in expected.items():
        work.git("checkout", "-q", rev)
        for name, digest in sums.items():
            assert sha256(work.path / name) == digest, f"{rev}:{name}"


def commit_new_version(repo: Repo, seed: int, expected: dict[str, dict[str, str]]) -> None:
    """Commit a new m.safetensors and record its sha256 under the new commit."""
    path = write_safetensors(repo.path / "m.safetensors", small(seed, layers=5))
    repo.commit(f"v{seed}")
    expected[repo.out("rev-parse", "HEAD").strip()] = {"m.safetensors": sha256(path)}


def read_back(tmp_path: Path, git_env: dict[str, str], hub: Path,
              expected: dict[str, dict[str, str]]) -> None:
    """A new user clones `hub`: every version checks out exact."""
    reader = Repo(tmp_path / "reader", user(tmp_path, git_env, "reader"))
    clone(hub, reader.path, reader.env)
    versions_exact(reader, expected)


def history_repo(tmp_path: Path, env: dict[str, str], store: Path, commits: int = 2,
                 git_remote: Path | None = None) -> tuple[Repo, dict[str, dict[str, str]]]:
    """A repository with a gitmodel remote `origin` at `store` (committed in .gitmodel) and
    `commits` commits, each changing m.safetensors to a model sharing nothing with the
    others; returns (repo, {commit id: {path: sha256}})."""
    repo = make_repo(tmp_path / "work", env)
    repo.gitmodel("remote", "add", "origin", str(store))
    repo.commit("remote", ".gitmodel")
    if git_remote is not None:
        repo.git("remote", "add", "origin", str(git_remote))
    expected = {}
    for i in range(commits):
        path = write_safetensors(repo.path / "m.safetensors", small(100 + i, layers=2 + i))
        repo.commit(f"v{i}")
        expected[repo.out("rev-parse", "HEAD").strip()] = {"m.safetensors": sha256(path)}
    return repo, expected


# ----------------------------------------------------------------------------- 1: every repository gets its hook

def test_1_git_init_with_only_a_global_install_pushes_its_checkpoints(tmp_path: Path, git_env):
    env = user(tmp_path, git_env, "ann")
    work = Repo(tmp_path / "ann", env)
    work.path.mkdir()
    work.git("init", "-q", "-b", "main")
    work.gitmodel("track", "*.safetensors")
    path = write_safetensors(work.path / "m.safetensors", small(1))
    work.git("add", ".gitattributes", "m.safetensors")
    assert (work.path / ".git/hooks/pre-push").is_file(), "the first clean installs the hook"
    work.git("commit", "-q", "-m", "m")
    _push_then_clone(tmp_path, git_env, work, path)


def _push_then_clone(tmp_path: Path, git_env, work: Repo, path: Path) -> None:
    """Name a team store, `git push` to a bare hub, and check that the push uploaded the
    checkpoint and that another user's clone holds its exact bytes."""
    store = tmp_path / "team-store"
    work.gitmodel("remote", "add", "origin", str(store))
    work.commit("remote", ".gitmodel")
    hub = bare(tmp_path / "hub.git")
    work.git("remote", "add", "origin", str(hub))
    work.git("push", "-q", "origin", "main")
    assert idx_names(store), "git push uploaded nothing"
    clone(hub, tmp_path / "bob", user(tmp_path, git_env, "bob"))
    assert sha256(tmp_path / "bob/m.safetensors") == sha256(path)


def test_1_a_global_install_chains_the_pre_push_hook_a_repository_already_has(tmp_path: Path, git_env):
    """With only a global install, the filter gives each repository its hook; one that had
    a pre-push hook of its own (a tool's, git-lfs's) was left with it alone, and `git push`
    exited 0 having uploaded no checkpoint."""
    env = user(tmp_path, git_env, "ann")
    work = Repo(tmp_path / "ann", env)
    work.path.mkdir()
    work.git("init", "-q", "-b", "main")
    hook = work.path / ".git/hooks/pre-push"
    hook.write_text("#!/bin/sh\necho ran >> \"$(dirname \"$0\")/../own-hook-ran\"\n")
    hook.chmod(0o755)
    work.gitmodel("track", "*.safetensors")
    path = write_safetensors(work.path / "m.safetensors", small(2))
    added = work.git("add", ".gitattributes", "m.safetensors")
    assert "pre-push.before-gitmodel" in added.stderr.decode(), added.stderr
    work.git("commit", "-q", "-m", "m")
    _push_then_clone(tmp_path, git_env, work, path)
    assert (work.path / ".git/own-hook-ran").read_text() == "ran\n", "the repository's own hook ran too"


def test_1_clone_made_before_any_checkpoint_pushes_its_first_one(tmp_path: Path, git_env):
    ann = Repo(tmp_path / "ann", user(tmp_path, git_env, "ann"))
    ann.path.mkdir()
    ann.git("init", "-q", "-b", "main")
    ann.gitmodel("track", "*.safetensors")
    store = tmp_path / "team-store"
    ann.gitmodel("remote", "add", "origin", str(store))
    ann.commit("setup", ".gitattributes", ".gitmodel")
    hub = bare(tmp_path / "hub.git")
    ann.git("remote", "add", "origin", str(hub))
    ann.git("push", "-q", "origin", "main")

    bob = Repo(tmp_path / "bob", user(tmp_path, git_env, "bob"))
    clone(hub, bob.path, bob.env)                          # no checkpoint: no smudge ran
    path = write_safetensors(bob.path / "m.safetensors", small(2))
    bob.commit("first model", "m.safetensors")
    bob.git("push", "-q", "origin", "main")
    assert idx_names(store), "bob's git push uploaded nothing"

    carol = user(tmp_path, git_env, "carol")
    clone(hub, tmp_path / "carol", carol)
    assert sha256(tmp_path / "carol/m.safetensors") == sha256(path)


# ----------------------------------------------------------------------------- 2: push decides from the remote

def test_2a_push_uploads_checkpoints_pushed_earlier_without_them(tmp_path: Path, git_env):
    store, hub = tmp_path / "store", bare(tmp_path / "hub.git")
    repo, expected = history_repo(tmp_path, git_env, store, commits=2, git_remote=hub)
    Repo(repo.path, dict(git_env, GITMODEL_SKIP_PUSH="1")).git("push", "-q", "origin", "main")
    assert not idx_names(store)
    commit_new_version(repo, 150, expected)
    repo.git("push", "-q", "origin", "main")

    read_back(tmp_path, git_env, hub, expected)


def test_2b_push_refills_a_gitmodel_remote_recreated_empty(tmp_path: Path, git_env):
    store, hub = tmp_path / "store", bare(tmp_path / "hub.git")
    repo, expected = history_repo(tmp_path, git_env, store, commits=2, git_remote=hub)
    repo.git("push", "-q", "origin", "main")
    assert idx_names(store)
    shutil.rmtree(store)
    store.mkdir()
    commit_new_version(repo, 151, expected)
    repo.git("push", "-q", "origin", "main")

    read_back(tmp_path, git_env, hub, expected)


def test_2b_push_refills_a_git_remote_recreated_empty(tmp_path: Path, git_env):
    """No gitmodel remote configured: the store inside the bare repository is the remote, and
    re-creating the repository empties it while origin/main still says it had everything."""
    hub = bare(tmp_path / "hub.git")
    repo = make_repo(tmp_path / "work", git_env)
    repo.git("remote", "add", "origin", str(hub))
    expected = {}
    for i in range(2):
        path = write_safetensors(repo.path / "m.safetensors", small(110 + i, layers=2 + i))
        repo.commit(f"v{i}")
        expected[repo.out("rev-parse", "HEAD").strip()] = {"m.safetensors": sha256(path)}
    repo.git("push", "-q", "origin", "main")
    assert idx_names(hub / "gitmodel")
    shutil.rmtree(hub)
    bare(hub)
    repo.git("push", "-q", "origin", "main")

    read_back(tmp_path, git_env, hub, expected)


def test_2c_push_fills_a_newly_configured_gitmodel_remote(tmp_path: Path, git_env):
    hub = bare(tmp_path / "hub.git")
    first, second = tmp_path / "store-a", tmp_path / "store-b"
    repo = make_repo(tmp_path / "work", git_env)
    repo.gitmodel("remote", "add", "team", str(first))
    repo.commit("remote", ".gitmodel")
    repo.git("remote", "add", "origin", str(hub))
    expected = {}
    for i in range(2):
        path = write_safetensors(repo.path / "m.safetensors", small(120 + i, layers=2 + i))
        repo.commit(f"v{i}")
        expected[repo.out("rev-parse", "HEAD").strip()] = {"m.safetensors": sha256(path)}
    repo.git("push", "-q", "origin", "main")
    assert idx_names(first)

    repo.gitmodel("remote", "add", "backup", str(second), "--local")
    repo.git("config", "gitmodel.remote", "backup")
    commit_new_version(repo, 152, expected)
    repo.git("push", "-q", "origin", "main")

    reader = Repo(tmp_path / "reader", dict(user(tmp_path, git_env, "reader"), GITMODEL_REMOTE=str(second)))
    clone(hub, reader.path, reader.env)
    versions_exact(reader, expected)


def test_2d_a_tag_naming_a_file_or_a_tree_carries_its_checkpoint(tmp_path: Path, git_env):
    """`git tag best side:m.safetensors` (a blob) and `git tag snap side~1^{tree}`, pushed
    without the branch they came from: the push uploads their checkpoints, a clone restores
    both through the filter, `gitmodel fetch --all` takes them in, and a remote gc keeps them."""
    store, hub = tmp_path / "store", bare(tmp_path / "hub.git")
    repo, expected = history_repo(tmp_path, git_env, store, commits=1, git_remote=hub)
    repo.git("switch", "-q", "-c", "side")
    sums = {}
    for seed, tag in ((160, "snap"), (161, "best")):
        path = write_safetensors(repo.path / "m.safetensors", small(seed, layers=4))
        repo.commit(f"v{seed}")
        sums[tag] = sha256(path)
    repo.git("tag", "-a", "-m", "best so far", "best", "side:m.safetensors")
    repo.git("tag", "snap", "side~1^{tree}")
    repo.git("switch", "-q", "main")
    repo.git("push", "-q", "origin", "main", "best", "snap")      # never `side` itself
    named = repo.gitmodel("push", "origin", "best")
    assert "1 checkpoint(s): uploaded 0 object(s)" in named.stdout + named.stderr

    def restores(clone: Repo) -> None:
        for rev, tag in (("best^{}", "best"), ("snap:m.safetensors", "snap")):
            out = clone.git("cat-file", "--filters", "--path=m.safetensors", rev).stdout
            assert hashlib.sha256(out).hexdigest() == sums[tag], rev

    reader = Repo(tmp_path / "reader", user(tmp_path, git_env, "reader"))
    clone(hub, reader.path, reader.env)
    restores(reader)
    assert "0 problem(s)" in reader.gitmodel("fsck", "--remote", "origin", "--all").stdout

    fetcher = Repo(tmp_path / "fetcher", reader.env)
    clone(hub, fetcher.path, fetcher.env)
    shutil.rmtree(fetcher.store / "packs")
    fetcher.gitmodel("fetch", "--all")
    Repo(fetcher.path, dict(fetcher.env, GITMODEL_REMOTE=str(tmp_path / "nowhere"))).git(
        "cat-file", "--filters", "--path=m.safetensors", "best^{}")   # from its store alone

    repo.git("branch", "-q", "-D", "side")
    repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    late = Repo(tmp_path / "late", reader.env)
    clone(hub, late.path, late.env)
    restores(late)


# ----------------------------------------------------------------------------- 3: install and track

def test_3_track_before_install_stores_a_pointer(tmp_path: Path, git_env):
    work = Repo(tmp_path / "w", git_env)
    work.path.mkdir()
    work.git("init", "-q", "-b", "main")
    tracked = work.gitmodel("track", "*.safetensors")
    assert "install" in tracked.stdout + tracked.stderr, "track says it installed gitmodel"
    path = write_safetensors(work.path / "m.safetensors", small(3))
    digest = sha256(path)
    work.commit("m", ".gitattributes", "m.safetensors")
    assert work.git("cat-file", "-p", ":m.safetensors").stdout.startswith(POINTER)
    assert work.git("cat-file", "-p", "HEAD:m.safetensors").stdout.startswith(POINTER)
    checkout_exact(work, "m.safetensors", digest)


def test_3_filter_runs_without_gitmodel_on_path(tmp_path: Path, git_env):
    repo = make_repo(tmp_path / "w", git_env)
    value = repo.out("config", "filter.gitmodel.process")
    assert sys.executable in value or str(Path(BIN_DIR) / "python") in value, value
    bare_env = dict(git_env, PATH="/usr/bin:/bin")
    assert shutil.which("gitmodel", path=bare_env["PATH"]) is None
    plain = Repo(repo.path, bare_env)
    path = write_safetensors(repo.path / "m.safetensors", small(4))
    digest = sha256(path)
    plain.commit("m", "m.safetensors")
    assert plain.git("cat-file", "-p", "HEAD:m.safetensors").stdout.startswith(POINTER)
    assert plain.status() == ""
    write_safetensors(repo.path / "m.safetensors", small(5))
    assert plain.status().strip() == "M m.safetensors"
    plain.git("checkout", "--", "m.safetensors")
    assert sha256(path) == digest
    checkout_exact(plain, "m.safetensors", digest)
    hub = bare(tmp_path / "hub.git")                    # the hook runs without PATH too
    plain.git("remote", "add", "origin", str(hub))
    plain.git("push", "-q", "origin", "main")
    reader = user(tmp_path, git_env, "reader")
    clone(hub, tmp_path / "reader", reader)
    assert sha256(tmp_path / "reader/m.safetensors") == digest


def test_3_gone_interpreter_says_what_to_do(tmp_path: Path, git_env):
    repo = make_repo(tmp_path / "w", git_env)
    value = repo.out("config", "filter.gitmodel.process").strip()
    python = sys.executable if sys.executable in value else str(Path(BIN_DIR) / "python")
    repo.git("config", "filter.gitmodel.process", value.replace(python, "/nonexistent/venv/bin/python"))
    plain = Repo(repo.path, dict(git_env, PATH="/usr/bin:/bin"))
    write_safetensors(repo.path / "m.safetensors", small(6))
    added = plain.git("add", "m.safetensors", check=False)
    assert added.returncode != 0
    err = added.stderr.decode()
    assert "is gone" in err and "gitmodel install" in err, err
    assert plain.git("ls-files", "-s").stdout.count(b"m.safetensors") == 0


# ----------------------------------------------------------------------------- 4: a damaged index

def _damage_index(path: Path, how: str) -> None:
    data = writable(path).read_bytes()
    if how == "flipped":
        data = data[:20] + bytes([data[20] ^ 0xFF]) + data[21:]
    elif how == "truncated":
        data = data[:len(data) // 2]
    else:
        data = b""
    path.write_bytes(data)


def _two_packs(tmp_path: Path, git_env, remote: Path | None = None) -> tuple[Repo, str, dict[str, str]]:
    """a.safetensors and b.safetensors committed apart (so in two packs); returns (repo, b's
    pack, {path: sha256})."""
    repo = make_repo(tmp_path / "w", git_env)
    if remote is not None:
        repo.gitmodel("remote", "add", "origin", str(remote))
    a = write_safetensors(repo.path / "a.safetensors", small(10))
    repo.commit("a")
    before = idx_names(repo)
    b = write_safetensors(repo.path / "b.safetensors", small(11, layers=3))
    repo.commit("b")
    (b_pack,) = idx_names(repo) - before
    if remote is not None:
        repo.gitmodel("push")
    sums = {"a.safetensors": sha256(a), "b.safetensors": sha256(b)}
    # Out of the work tree, so no racy-clean check adds it again (which rewrites its index).
    b.unlink()
    return repo, b_pack, sums


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty"])
def test_4_damaged_index_costs_only_its_objects(tmp_path: Path, git_env, how):
    repo, b_pack, sums = _two_packs(tmp_path, git_env)
    _damage_index(repo.store / "packs" / f"{b_pack}.idx", how)

    checkout_exact(repo, "a.safetensors", sums["a.safetensors"])
    c = write_safetensors(repo.path / "c.safetensors", small(12))
    repo.commit("c", "c.safetensors")
    checkout_exact(repo, "c.safetensors", sha256(c))

    fsck = repo.gitmodel("fsck", check=False)
    no_traceback(fsck)
    assert fsck.returncode == 1 and "damaged index" in fsck.stdout, fsck.stdout + fsck.stderr
    assert b_pack in fsck.stdout, fsck.stdout
    # b's checkpoint is missing here: the repair that finds it is named before re-adding it.
    assert "may hold what is missing: `gitmodel fsck --repair` indexes them again first" in fsck.stdout, fsck.stdout

    repaired = repo.gitmodel("fsck", "--repair", check=False)
    no_traceback(repaired)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    after = repo.gitmodel("fsck", check=False)
    assert after.returncode == 0, after.stdout + after.stderr
    assert b_pack in idx_names(repo), "the index was rebuilt from its pack"
    for name, digest in sums.items():
        checkout_exact(repo, name, digest)


def test_4_fetch_with_a_damaged_index_brings_what_it_hid(tmp_path: Path, git_env):
    repo, b_pack, sums = _two_packs(tmp_path, git_env, remote=tmp_path / "remote")
    _damage_index(repo.store / "packs" / f"{b_pack}.idx", "truncated")
    fetched = repo.gitmodel("fetch", check=False)
    no_traceback(fetched)
    assert fetched.returncode == 0, fetched.stderr
    offline = Repo(repo.path, dict(git_env, GITMODEL_REMOTE=str(tmp_path / "nowhere")))
    for name, digest in sums.items():
        checkout_exact(offline, name, digest)


# ----------------------------------------------------------------------------- 5: repairs that repair

def _damaged_checkout(tmp_path: Path, git_env, remote: bool = False) -> tuple[Repo, Path, str]:
    repo = make_repo(tmp_path / "w", git_env)
    if remote:
        repo.gitmodel("remote", "add", "origin", str(tmp_path / "remote"))
    path = write_safetensors(repo.path / "m.safetensors", small(20))
    digest = sha256(path)
    repo.commit("m")
    if remote:
        repo.gitmodel("push")
    flip_byte(repo.store)
    path.unlink()
    offline = Repo(repo.path, dict(git_env, GITMODEL_REMOTE=str(tmp_path / "nowhere")))
    failed = offline.git("checkout", "--", "m.safetensors", check=False)
    assert failed.returncode != 0 and not path.exists()
    if not remote:                             # no remote at all: the store's own account
        again = repo.git("checkout", "--", "m.safetensors", check=False)     # known damaged now
        said = again.stderr.decode()
        assert again.returncode != 0 and "missing from" not in said and "damaged in the local store" in said, said
    return repo, path, digest


def test_5_adding_a_good_copy_again_repairs(tmp_path: Path, git_env):
    repo, path, digest = _damaged_checkout(tmp_path, git_env)
    write_safetensors(path, small(20))
    assert sha256(path) == digest
    repo.git("add", "m.safetensors")
    repo.git("commit", "-q", "--allow-empty", "-m", "re-added")
    checkout_exact(repo, "m.safetensors", digest)
    # The damaged copy is still in its pack: fsck says so, and --repair moves it aside.
    fsck = repo.gitmodel("fsck", check=False)
    no_traceback(fsck)
    assert fsck.returncode == 1 and "damaged object" in fsck.stdout, fsck.stdout
    repo.gitmodel("fsck", "--repair")
    assert repo.gitmodel("fsck", check=False).returncode == 0
    checkout_exact(repo, "m.safetensors", digest)


def test_5_repairing_a_pack_cut_short_counts_what_the_cut_lost(tmp_path: Path, git_env):
    """The records past the cut were counted neither good nor damaged ("22 good, 0 damaged"
    for a pack whose index lists 39)."""
    from gitmodel.store.pack import decode_index
    repo, b_pack, _ = _two_packs(tmp_path, git_env)
    listed = len(decode_index(b_pack, (repo.store / "packs" / f"{b_pack}.idx").read_bytes()))
    pack = writable(repo.store / "packs" / f"{b_pack}.pack")
    pack.write_bytes(pack.read_bytes()[:pack.stat().st_size // 2])
    repaired = repo.gitmodel("fsck", "--repair", check=False)
    no_traceback(repaired)
    said = next(line for line in (repaired.stdout + repaired.stderr).splitlines()
                if "good object(s) copied" in line)
    good, lost = (int(n) for n in re.findall(r"(\d+) (?:good|damaged)", said))
    assert good + lost == listed and 0 < lost < listed, said


def test_5_new_version_sharing_a_damaged_chunk_checks_out(tmp_path: Path, git_env):
    repo, path, _ = _damaged_checkout(tmp_path, git_env)
    model = small(20)
    model["layers.1.bias"] = model["layers.1.bias"] + 1          # shares every other chunk
    write_safetensors(path, model)
    digest = sha256(path)
    repo.commit("v2", "m.safetensors")
    checkout_exact(repo, "m.safetensors", digest)


@pytest.mark.parametrize("command", [["fsck", "--repair"], ["fetch"]])
def test_5_fetching_from_a_remote_with_good_copies_repairs(tmp_path: Path, git_env, command):
    repo, path, digest = _damaged_checkout(tmp_path, git_env, remote=True)
    fixed = repo.gitmodel(*command, check=False)
    no_traceback(fixed)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    offline = Repo(repo.path, dict(git_env, GITMODEL_REMOTE=str(tmp_path / "nowhere")))
    checkout_exact(offline, "m.safetensors", digest)


# ----------------------------------------------------------------------------- 6: fsck checks what commits need

def test_6_fsck_names_a_checkpoint_whose_pack_is_gone(tmp_path: Path, git_env):
    repo = make_repo(tmp_path / "w", git_env)
    write_safetensors(repo.path / "a.safetensors", small(30))
    repo.commit("a")
    (pack,) = idx_names(repo)
    for ext in ("pack", "idx"):
        (repo.store / "packs" / f"{pack}.{ext}").unlink()
    fsck = repo.gitmodel("fsck", check=False)
    no_traceback(fsck)
    assert fsck.returncode == 1, fsck.stdout
    assert "lost" in fsck.stdout and "a.safetensors" in fsck.stdout, fsck.stdout

    store = tmp_path / "remote"
    other = make_repo(tmp_path / "other", git_env)           # the same file, pushed from elsewhere
    other.gitmodel("remote", "add", "origin", str(store))
    write_safetensors(other.path / "a.safetensors", small(30))
    other.commit("a")
    other.gitmodel("push")
    repo.gitmodel("remote", "add", "origin", str(store))
    fetchable = repo.gitmodel("fsck", check=False)
    assert fetchable.returncode == 0, fetchable.stdout
    assert "fetchable" in fetchable.stdout and "a.safetensors" in fetchable.stdout, fetchable.stdout


def test_6_a_pack_whose_index_is_gone_is_indexed_again(tmp_path: Path, git_env):
    repo = make_repo(tmp_path / "w", git_env)
    path = write_safetensors(repo.path / "a.safetensors", small(31))
    repo.commit("a")
    (pack,) = idx_names(repo)
    (repo.store / "packs" / f"{pack}.idx").unlink()
    fsck = repo.gitmodel("fsck", check=False)
    no_traceback(fsck)
    assert fsck.returncode == 0, fsck.stdout
    assert idx_names(repo) == {pack}
    checkout_exact(repo, "a.safetensors", sha256(path))


def test_6_fsck_all_covers_history(tmp_path: Path, git_env):
    repo = make_repo(tmp_path / "w", git_env)
    write_safetensors(repo.path / "m.safetensors", small(32))
    repo.commit("v1")
    (old,) = idx_names(repo)
    write_safetensors(repo.path / "m.safetensors", small(33, layers=3))
    repo.commit("v2")
    for ext in ("pack", "idx"):
        (repo.store / "packs" / f"{old}.{ext}").unlink()
    head_only = repo.gitmodel("fsck", check=False)
    assert head_only.returncode == 0, head_only.stdout
    every = repo.gitmodel("fsck", "--all", check=False)
    no_traceback(every)
    assert every.returncode == 1 and "lost" in every.stdout and "m.safetensors" in every.stdout, every.stdout


def test_6_fsck_reports_unindexed_packs_and_leftovers(tmp_path: Path, git_env):
    repo = make_repo(tmp_path / "w", git_env)
    write_safetensors(repo.path / "m.safetensors", small(34))
    repo.commit("m")
    clean = repo.gitmodel("fsck", check=False)
    assert clean.returncode == 0, clean.stdout
    (pack,) = idx_names(repo)
    # A pack a full disk cut short, without its index (not indexable again), and a temporary
    # pack a killed process left.
    cut = repo.store / "packs" / f"pack-{'ab' * 32}.pack"
    cut.write_bytes((repo.store / "packs" / f"{pack}.pack").read_bytes()[:5000])
    leftover = repo.store / "tmp" / "pack-leftover"
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_bytes(b"GMPACK01" + b"\0" * 4096)
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    os.utime(cut, (old, old))
    fsck = repo.gitmodel("fsck", check=False)
    no_traceback(fsck)
    assert fsck.returncode == 1, fsck.stdout
    assert "pack without index" in fsck.stdout and cut.stem in fsck.stdout, fsck.stdout
    assert "pack-leftover" in fsck.stdout, fsck.stdout


def test_6_fsck_after_a_partial_fetch_sees_no_damage(tmp_path: Path, git_env):
    store, hub = tmp_path / "store", bare(tmp_path / "hub.git")
    repo = make_repo(tmp_path / "work", git_env)
    repo.gitmodel("remote", "add", "origin", str(store))
    model = random_model(35, layers=4, width=128)
    write_safetensors(repo.path / "m.safetensors", model)
    repo.commit("v1")
    model["layers.2.weight"] = model["layers.2.weight"] * 2
    write_safetensors(repo.path / "m.safetensors", model)
    repo.commit("v2")
    repo.git("remote", "add", "origin", str(hub))
    repo.git("push", "-q", "origin", "main")
    lee = Repo(tmp_path / "lee", dict(user(tmp_path, git_env, "lee"), GITMODEL_SKIP_SMUDGE="1"))
    clone(hub, lee.path, lee.env)
    assert "layers.2.weight" in lee.gitmodel("diff", "HEAD~1", "HEAD").stdout
    assert idx_names(lee), "the diff fetched part of the checkpoints"
    fsck = lee.gitmodel("fsck", check=False)
    no_traceback(fsck)
    assert fsck.returncode == 0, fsck.stdout
    assert "fetchable" in fsck.stdout and "damaged" not in fsck.stdout.replace("0 damaged", ""), fsck.stdout


def test_6_fsck_remote_checks_the_remote(tmp_path: Path, git_env):
    store = tmp_path / "store"
    repo, _ = history_repo(tmp_path, git_env, store, commits=1)
    repo.gitmodel("push")
    good = repo.gitmodel("fsck", "--remote", "origin", check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    flip_byte(store)
    bad = repo.gitmodel("fsck", "--remote", "origin", check=False)
    no_traceback(bad)
    assert bad.returncode == 1 and "damaged" in bad.stdout and "m.safetensors" in bad.stdout, bad.stdout
    every = repo.gitmodel("fsck", "--remote", "origin", "--all", check=False)
    assert "`gitmodel fsck --remote origin --all --repair` uploads them" in every.stdout, every.stdout
    # The repair it suggests repairs: the rebuilt pack has the damaged one's name and size, and
    # was taken for a copy that had arrived whole and left as it was.
    repaired = repo.gitmodel("fsck", "--remote", "origin", "--repair", check=False)
    assert repaired.returncode == 0 and "0 problem(s)" in repaired.stdout, repaired.stdout + repaired.stderr
    again = repo.gitmodel("fsck", "--remote", "origin", check=False)
    assert again.returncode == 0 and "1 complete" in again.stdout and "damaged" not in again.stdout, again.stdout


def test_6_fsck_remote_says_how_to_upload_a_branch_never_pushed(tmp_path: Path, git_env):
    """`fsck --remote --all` counts a local branch's checkpoints the remote never received:
    it says the local store has them and which command uploads them, and that command does."""
    store = tmp_path / "store"
    repo, _ = history_repo(tmp_path, git_env, store, commits=1)
    repo.gitmodel("push")
    repo.git("switch", "-q", "-c", "experiment")
    path = write_safetensors(repo.path / "m.safetensors", small(170, layers=3))
    repo.commit("experiment")
    every = repo.gitmodel("fsck", "--remote", "origin", "--all", check=False)
    assert every.returncode == 1, every.stdout + every.stderr
    assert "never pushed there" in every.stdout and "the local store has it: `gitmodel fsck " \
           "--remote origin --all --repair` (or `gitmodel push origin --all`) uploads it" in every.stdout, \
        every.stdout
    repaired = repo.gitmodel("fsck", "--remote", "origin", "--all", "--repair", check=False)
    assert repaired.returncode == 0 and "0 problem(s)" in repaired.stdout, repaired.stdout
    reader = Repo(tmp_path / "reader", dict(git_env, GITMODEL_REMOTE=str(store)))
    reader.path.mkdir()
    reader.git("init", "-q", "-b", "main")
    reader.gitmodel("install")
    reader.git("fetch", "-q", str(repo.path), "experiment")
    reader.git("checkout", "-q", "FETCH_HEAD")
    assert sha256(reader.path / "m.safetensors") == sha256(path)


# ----------------------------------------------------------------------------- 7: durability

def test_7_pack_and_index_reach_the_disk_before_they_are_published(repo: Repo, tmp_path: Path):
    """`git add` under strace: the pack and its index are fsynced under temporary names before
    either is renamed into packs/, and packs/ is fsynced after; nothing is left in tmp/."""
    path = write_safetensors(repo.path / "m.safetensors", small(41))
    trace = tmp_path / "trace"
    strace = shutil.which("strace")
    prefix = [strace, "-f", "-y", "-qq", "-o", str(trace), "-e",
              "trace=fsync,fdatasync,rename,renameat,renameat2"] if strace else []
    done = subprocess.run([*prefix, "git", "add", "m.safetensors"], cwd=repo.path, env=repo.env,
                          capture_output=True, text=True)
    traced = done.returncode == 0 or "ptrace" not in done.stderr
    if not traced:
        repo.git("add", "m.safetensors")
    else:
        assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (repo.store / "packs").iterdir())
    stems = {n.rsplit(".", 1)[0] for n in names}
    assert names and sorted(f"{s}.{e}" for s in stems for e in ("idx", "pack")) == names
    tmp = repo.store / "tmp"
    assert not tmp.exists() or not list(tmp.iterdir()), list(tmp.iterdir())
    checkout_exact(repo, "m.safetensors", sha256(path))
    if not strace or not traced:
        pytest.skip("strace is not installed or cannot trace here: fsyncs not checked")
    packs = str(repo.store / "packs")
    synced: set[str] = set()
    published, dir_synced_after = [], False
    for line in trace.read_text().splitlines():
        if "fsync(" in line or "fdatasync(" in line:
            start = line.find("<") + 1
            target = line[start:line.find(">", start)]
            synced.add(target)
            if target == packs and published:
                dir_synced_after = True
        elif "rename" in line and f'"{packs}/pack-' in line:
            source = line.split('"')[1]
            assert source in synced, f"{source} renamed into packs/ before it was fsynced"
            published.append(source)
    assert len(published) >= 2, trace.read_text()[-2000:]       # a pack and its index
    assert dir_synced_after, "packs/ was not fsynced after the renames"


# ----------------------------------------------------------------------------- 8: full disks and killed pushes

@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _pack_size(tmp_path: Path, git_env, model: dict) -> int:
    """The size of the pack this model makes, measured on a roomy disk."""
    probe = make_repo(tmp_path / "probe", git_env)
    write_safetensors(probe.path / "m.safetensors", model)
    probe.git("add", "m.safetensors")
    (pack,) = idx_names(probe)
    return (probe.store / "packs" / f"{pack}.pack").stat().st_size


def _add_on_a_full_disk(disk: Path, name: str, git_env, source: Path, room: int) -> tuple[Repo, int]:
    """A repository on `disk`, filled up to leave `room` bytes for gitmodel's store once the
    file to add is in the work tree; returns (repo, exit status of `git add`)."""
    repo = make_repo(disk / name, git_env)
    page = os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, _free(disk) - room - (-(-source.stat().st_size // page) * page)))
    shutil.copyfile(source, repo.path / "m.safetensors")
    return repo, repo.git("add", "m.safetensors", check=False).returncode


def _assert_packs_paired(repo: Repo, when: str) -> None:
    packs = repo.store / "packs"
    names = {p.name for p in packs.iterdir()} if packs.exists() else set()
    for name in names:
        stem, _, ext = name.rpartition(".")
        assert ext in ("pack", "idx") and {f"{stem}.pack", f"{stem}.idx"} <= names, \
            f"{when}: {name} is alone in packs/: {sorted(names)}"


def test_8_full_disk_never_leaves_an_invisible_pack(tmp_path: Path, git_env, small_disk: Path):
    model = random_model(42, layers=4, width=160)
    pack_size = _pack_size(tmp_path, git_env, model)
    assert 512 << 10 < pack_size < 2 << 20
    source = write_safetensors(tmp_path / "m.safetensors", model)
    page = os.statvfs(small_disk).f_frsize
    outcomes = []
    # Room for the pack and 0, 1, 2 pages more: the disk fills while the pack is written,
    # while its index is written, or after (git's own object).
    for slack in range(3):
        room = -(-pack_size // page) * page + slack * page
        repo, status = _add_on_a_full_disk(small_disk, f"w{slack}", git_env, source, room)
        outcomes.append(status)
        _assert_packs_paired(repo, f"room for the pack + {slack} page(s)")
        # With space again, the next add stores the file and removes what a dead process left
        # (once it is older than the grace period).
        (small_disk / "filler").unlink()
        tmp = repo.store / "tmp"
        for leftover in (tmp.iterdir() if tmp.exists() else []):
            os.utime(leftover, (time.time() - 60, time.time() - 60))
        repo.git("add", "m.safetensors")
        _assert_packs_paired(repo, "after the next add")
        assert not tmp.exists() or not list(tmp.iterdir()), list(tmp.iterdir())
        checkout_exact(repo, "m.safetensors", sha256(source))
        shutil.rmtree(repo.path)
    assert any(outcomes), f"no run ran out of space: {outcomes}"


def test_8_pack_write_cut_short_by_a_full_disk_leaves_nothing_in_tmp(tmp_path: Path, git_env,
                                                                       small_disk: Path):
    model = random_model(42, layers=4, width=160)
    source = write_safetensors(tmp_path / "m.safetensors", model)
    pack_size = _pack_size(tmp_path, git_env, model)
    page = os.statvfs(small_disk).f_frsize
    # Room for all but the last 0-2 pages of the pack: the disk fills while it is written.
    for short in range(3):
        room = (-(-pack_size // page) - short) * page
        repo, status = _add_on_a_full_disk(small_disk, f"w{short}", git_env, source, room)
        assert status != 0
        _assert_packs_paired(repo, "after ENOSPC")
        tmp = repo.store / "tmp"
        left = [(p.name, p.stat().st_size) for p in tmp.iterdir()] if tmp.exists() else []
        assert not left, f"room for the pack but its last {short} page(s): left {left} in tmp/"
        (small_disk / "filler").unlink()
        shutil.rmtree(repo.path)


def test_8_killed_push_leaves_no_temporary_pack_on_a_folder_remote(tmp_path: Path, git_env):
    store, hub = tmp_path / "store", bare(tmp_path / "hub.git")
    repo = make_repo(tmp_path / "work", git_env)
    repo.gitmodel("remote", "add", "origin", str(store))
    repo.commit("remote", ".gitmodel")
    path = write_safetensors(repo.path / "big.safetensors", random_model(43, layers=8, width=1024))
    repo.commit("big")
    repo.git("remote", "add", "origin", str(hub))
    leftovers: list[Path] = []
    for _ in range(5):                 # kill -9 while a temporary pack is being written there
        shutil.rmtree(store, ignore_errors=True)
        push = subprocess.Popen(["gitmodel", "push"], cwd=repo.path, env=repo.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while push.poll() is None:
            try:
                if any(".tmp-" in n for n in os.listdir(store / "packs")):
                    push.kill()
                    break
            except FileNotFoundError:
                pass
        push.wait()
        leftovers = [p for p in (store / "packs").glob("*.tmp-*")] if (store / "packs").is_dir() else []
        if leftovers:
            break
    if not leftovers:
        pytest.skip("the push was never caught mid-upload")
    old = time.time() - 60
    for p in leftovers:
        os.utime(p, (old, old))
    again = repo.gitmodel("push", check=False)
    assert again.returncode == 0, again.stderr
    repo.git("push", "-q", "origin", "main")
    assert not [p.name for p in (store / "packs").iterdir() if ".tmp-" in p.name]
    reader = user(tmp_path, git_env, "reader")
    clone(hub, tmp_path / "reader", reader)
    assert sha256(tmp_path / "reader/big.safetensors") == sha256(path)


def _kill_when(process: subprocess.Popen, folder: Path) -> bool:
    """kill -9 the process group once a file appears in `folder`; whether it was caught."""
    while process.poll() is None:
        try:
            if any(folder.iterdir()):
                os.killpg(process.pid, 9)
                process.wait()
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    return False


def _assert_recovers(repo: Repo) -> None:
    """After a kill: no pack without its index, and the leftover in tmp/ (aged past its grace
    period) is gone after the next command that writes."""
    packs = repo.store / "packs"
    stems = lambda ext: {p.stem for p in packs.glob(f"*.{ext}")} if packs.is_dir() else set()
    assert stems("pack") <= stems("idx"), "a pack without its index"
    old = time.time() - 60
    for leftover in (repo.store / "tmp").iterdir():
        os.utime(leftover, (old, old))


def test_8_add_killed_mid_write_leaves_no_half_published_pack(tmp_path: Path, git_env):
    repo = make_repo(tmp_path / "work", git_env)
    path = write_safetensors(repo.path / "big.safetensors", random_model(44, layers=8, width=1024))
    caught = False
    for _ in range(5):
        add = subprocess.Popen(["git", "add", "big.safetensors"], cwd=repo.path, env=repo.env,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        caught = _kill_when(add, repo.store / "tmp")
        if caught:
            break
        repo.git("rm", "-q", "--cached", "big.safetensors")
        shutil.rmtree(repo.store)
    if not caught:
        pytest.skip("the add was never caught writing")
    (repo.path / ".git" / "index.lock").unlink(missing_ok=True)
    _assert_recovers(repo)
    repo.git("add", "big.safetensors")
    repo.git("commit", "-q", "-m", "big")
    assert not list((repo.store / "tmp").iterdir()), "the dead writer's file was removed"
    checkout_exact(repo, "big.safetensors", sha256(path))


def test_8_fetch_killed_mid_write_keeps_what_arrived_and_finishes(tmp_path: Path, git_env):
    store, hub = tmp_path / "store", bare(tmp_path / "hub.git")
    repo = make_repo(tmp_path / "work", git_env)
    repo.gitmodel("remote", "add", "origin", str(store))
    repo.commit("remote", ".gitmodel")
    path = write_safetensors(repo.path / "big.safetensors", random_model(45, layers=8, width=1024))
    repo.commit("big")
    repo.git("remote", "add", "origin", str(hub))
    repo.git("push", "-q", "origin", "main")
    reader = Repo(tmp_path / "reader", dict(user(tmp_path, git_env, "reader"), GITMODEL_SKIP_SMUDGE="1"))
    clone(hub, reader.path, reader.env)
    fetch = subprocess.Popen(["gitmodel", "fetch"], cwd=reader.path, env=reader.env,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not _kill_when(fetch, reader.store / "tmp"):
        pytest.skip("the fetch was never caught writing")
    _assert_recovers(reader)
    reader.gitmodel("fetch")
    assert not list((reader.store / "tmp").iterdir())
    reader.gitmodel("pull")
    assert sha256(reader.path / "big.safetensors") == sha256(path)
    assert "0 problem(s)" in reader.gitmodel("fsck").stdout


# ----------------------------------------------------------------------------- 9: each file on its own

def test_9_one_damaged_remote_object_fails_only_its_file(tmp_path: Path, git_env):
    store, hub = tmp_path / "store", bare(tmp_path / "hub.git")
    repo = make_repo(tmp_path / "work", git_env)
    repo.gitmodel("remote", "add", "origin", str(store))
    repo.git("remote", "add", "origin", str(hub))
    write_safetensors(repo.path / "a.safetensors", small(50))
    repo.commit("a")
    repo.git("push", "-q", "origin", "main")
    a_packs = idx_names(store)
    b = write_safetensors(repo.path / "b.safetensors", small(51, layers=3))
    repo.commit("b")
    repo.git("push", "-q", "origin", "main")
    assert idx_names(store) - a_packs
    (a_pack,) = a_packs
    flip_byte(store, a_pack)

    reader = user(tmp_path, git_env, "reader")
    done = clone(hub, tmp_path / "reader", reader, check=False)
    assert done.returncode != 0
    assert "a.safetensors" in done.stderr and "b.safetensors" not in done.stderr, done.stderr
    assert not (tmp_path / "reader/a.safetensors").exists()
    # git stops at the first file that fails; b's checkpoint arrived with the same batch, and
    # is checked out without asking the remote again.
    offline = Repo(tmp_path / "reader", dict(reader, GITMODEL_REMOTE=str(tmp_path / "nowhere")))
    if (offline.path / "b.safetensors").exists():
        assert sha256(offline.path / "b.safetensors") == sha256(b)
    offline.git("checkout", "HEAD", "--", "b.safetensors")
    assert sha256(offline.path / "b.safetensors") == sha256(b)
    again = offline.git("checkout", "HEAD", "--", "a.safetensors", check=False)
    assert again.returncode != 0 and b"a.safetensors" in again.stderr
    assert not (offline.path / "a.safetensors").exists()


# ----------------------------------------------------------------------------- 10: silent and refused endpoints

@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def _s3_push(tmp_path: Path, git_env, endpoint: str, limit: float) -> tuple[subprocess.CompletedProcess | None, float]:
    env = {**git_env, **S3_ENV, "GITMODEL_REMOTE_TIMEOUT": "4"}
    env.pop("AWS_MAX_ATTEMPTS", None)
    repo = make_repo(tmp_path / "w", env)
    repo.gitmodel("remote", "add", "origin", "s3://bucket/x", f"--option=endpoint_url={endpoint}")
    write_safetensors(repo.path / "m.safetensors", small(60))
    repo.commit("m")
    start = time.monotonic()
    push = subprocess.Popen(["gitmodel", "push"], cwd=repo.path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = push.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(push.pid, 9)
        push.communicate()
        return None, time.monotonic() - start
    return subprocess.CompletedProcess(push.args, push.returncode, out, err), time.monotonic() - start


def test_10_silent_s3_endpoint_fails_in_bounded_time(tmp_path: Path, git_env, silent_server):
    result, elapsed = _s3_push(tmp_path, git_env, silent_server, limit=45)
    assert result is not None, f"gitmodel push was still silent after {elapsed:.0f} s"
    assert elapsed < 20, elapsed
    assert result.returncode != 0
    no_traceback(result)
    assert "retrying" in result.stderr or "failed after" in result.stderr, result.stderr
    assert "origin" in result.stderr or "s3://bucket/x" in result.stderr, result.stderr


def test_10_refused_s3_endpoint_fails_fast(tmp_path: Path, git_env):
    with socket.socket() as s:                           # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    result, elapsed = _s3_push(tmp_path, git_env, dead, limit=30)
    assert result is not None and elapsed < 15, f"took {elapsed:.0f} s"
    assert result.returncode != 0
    no_traceback(result)
    assert "origin" in result.stderr or "s3://bucket/x" in result.stderr, result.stderr


# ----------------------------------------------------------------------------- 11: messages

def _pointer_clone(tmp_path: Path, git_env) -> tuple[Repo, Path, Repo]:
    store, hub = tmp_path / "store", bare(tmp_path / "hub.git")
    repo, _ = history_repo(tmp_path, git_env, store, commits=1, git_remote=hub)
    repo.git("push", "-q", "origin", "main")
    reader = Repo(tmp_path / "reader", dict(user(tmp_path, git_env, "reader"), GITMODEL_SKIP_SMUDGE="1"))
    clone(hub, reader.path, reader.env)
    return repo, store, reader


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_11_fetch_of_a_broken_remote_pack_names_the_remote(tmp_path: Path, git_env, damage):
    _, store, reader = _pointer_clone(tmp_path, git_env)
    (pack,) = (store / "packs").glob("*.pack")
    if damage == "truncated":
        writable(pack).write_bytes(pack.read_bytes()[:len(pack.read_bytes()) // 2])
    else:
        pack.unlink()
    fetched = reader.gitmodel("fetch", check=False)
    no_traceback(fetched)
    assert fetched.returncode != 0
    assert "origin" in fetched.stderr or str(store) in fetched.stderr, fetched.stderr


def test_11_missing_remote_folder_says_it_has_no_packs(tmp_path: Path, git_env):
    _, store, reader = _pointer_clone(tmp_path, git_env)
    shutil.rmtree(store)
    fetched = reader.gitmodel("fetch", check=False)
    no_traceback(fetched)
    assert fetched.returncode != 0
    assert "no packs" in fetched.stderr, fetched.stderr
    assert "was the commit pushed" not in fetched.stderr, fetched.stderr


def test_11_remote_add_refuses_an_unknown_protocol(repo: Repo):
    added = repo.gitmodel("remote", "add", "x", "notaprotocol://foo", check=False)
    no_traceback(added)
    assert added.returncode == 1
    assert "notaprotocol" in added.stdout + added.stderr
    assert "notaprotocol" not in repo.gitmodel("remote", "list").stdout
    assert not (repo.path / ".gitmodel").exists()


def test_11_mirror_from_a_missing_folder_fails(repo: Repo, tmp_path: Path):
    mirrored = repo.gitmodel("mirror", str(tmp_path / "nonexistent"), str(tmp_path / "copy"), check=False)
    no_traceback(mirrored)
    assert mirrored.returncode != 0
    assert "nonexistent" in mirrored.stderr, mirrored.stderr


def _commit_pointer(repo: Repo, name: str, blob: bytes) -> None:
    oid = repo.git("hash-object", "-w", "--stdin", input=blob).stdout.decode().strip()
    repo.git("update-index", "--cacheinfo", f"100644,{oid},{name}")
    repo.git("commit", "-q", "-m", f"edited {name}")


def test_11_pointer_that_lies_about_its_size(repo: Repo):
    path = write_safetensors(repo.path / "m.safetensors", small(70))
    repo.commit("m")
    pointer = repo.git("cat-file", "-p", "HEAD:m.safetensors").stdout
    size = path.stat().st_size
    assert f"\nsize {size}\n".encode() in pointer
    _commit_pointer(repo, "m.safetensors", pointer.replace(f"\nsize {size}\n".encode(),
                                                           f"\nsize {size + 8}\n".encode()))
    path.unlink()
    checkout = repo.git("checkout", "--", "m.safetensors", check=False)
    err = checkout.stderr.decode()
    assert checkout.returncode != 0 and not path.exists()
    assert "m.safetensors" in err and "pointer" in err and "corrupt" not in err, err


def test_11_undecodable_pointer_names_the_file(repo: Repo):
    write_safetensors(repo.path / "m.safetensors", small(71))
    repo.commit("m")
    pointer = repo.git("cat-file", "-p", "HEAD:m.safetensors").stdout
    _commit_pointer(repo, "m.safetensors", pointer.replace(b"format safetensors", b"format safe\xfftensors"))
    for command in (["diff", "HEAD~1", "HEAD"], ["show", "HEAD:m.safetensors"], ["log", "m.safetensors"]):
        result = repo.gitmodel(*command, check=False)
        no_traceback(result)
        assert result.returncode != 0
        assert "UTF-8" in result.stderr and "m.safetensors" in result.stderr, (command, result.stderr)
    (repo.path / "m.safetensors").unlink()
    checkout = repo.git("checkout", "--", "m.safetensors", check=False)
    err = checkout.stderr.decode(errors="replace")
    assert checkout.returncode != 0
    assert "UTF-8" in err and "m.safetensors" in err, err
    assert not (repo.path / "m.safetensors").exists()


def test_11_dangling_store_symlink_gives_a_clear_error(repo: Repo, tmp_path: Path):
    link = repo.path / ".git" / "gitmodel"
    shutil.rmtree(link, ignore_errors=True)
    link.symlink_to(tmp_path / "unmounted-disk" / "store")
    write_safetensors(repo.path / "m.safetensors", small(72))
    added = repo.git("add", "m.safetensors", check=False)
    err = added.stderr.decode()
    assert added.returncode != 0
    assert "File exists" not in err and "Traceback" not in err, err
    assert str(link) in err and "symbolic link" in err, err
    assert not (tmp_path / "unmounted-disk").exists(), "nothing is created behind the link"


def _pkt(*lines: bytes) -> bytes:
    return b"".join(b"%04x%s" % (len(line) + 4, line) for line in lines)


def test_11_git_going_away_is_not_store_damage(repo: Repo):
    """git killed while the filter writes a file to it: a broken pipe, not damage."""
    path = write_safetensors(repo.path / "m.safetensors", random_model(73, layers=4, width=512))
    repo.commit("m")
    pointer = repo.git("cat-file", "-p", "HEAD:m.safetensors").stdout
    server = subprocess.Popen(["gitmodel", "filter-process"], cwd=repo.path, env=repo.env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server.stdin.write(_pkt(b"git-filter-client\n", b"version=2\n") + b"0000"
                       + _pkt(b"capability=clean\n", b"capability=smudge\n") + b"0000"
                       + _pkt(b"command=smudge\n", b"pathname=m.safetensors\n") + b"0000"
                       + _pkt(pointer) + b"0000")
    server.stdin.flush()
    first = server.stdout.read(4096)                 # handshake, status=success, some content
    assert b"status=success" in first, first
    server.stdout.close()                            # git goes away mid-file
    server.stdin.close()
    err = server.stderr.read().decode(errors="replace")
    server.wait(timeout=60)
    assert path.stat().st_size > 1 << 20
    assert "corrupt" not in err and "damaged" not in err and "gitmodel fsck" not in err, err
    assert "Traceback" not in err, err
    fsck = repo.gitmodel("fsck", check=False)
    assert fsck.returncode == 0, fsck.stdout


def test_11_failed_clone_checkout_names_the_fix(tmp_path: Path, git_env):
    store, hub = tmp_path / "store", bare(tmp_path / "hub.git")
    repo, _ = history_repo(tmp_path, git_env, store, commits=1, git_remote=hub)
    repo.git("push", "-q", "origin", "main")
    flip_byte(store)
    done = clone(hub, tmp_path / "reader", user(tmp_path, git_env, "reader"), check=False)
    assert done.returncode != 0
    assert "m.safetensors" in done.stderr
    assert "git reset --hard" in done.stderr or "gitmodel pull" in done.stderr, done.stderr
    # ... and how to run git commands meanwhile (a merge's abort needs ours' data too)
    assert "`GITMODEL_SKIP_SMUDGE=1` before a git command" in done.stderr, done.stderr


# ----------------------------------------------------------------------------- 12: shared repositories

def test_12_group_shared_repository_gets_group_modes(tmp_path: Path, git_env):
    work = Repo(tmp_path / "w", git_env)
    work.path.mkdir()
    work.git("init", "-q", "--shared=group", "-b", "main")
    work.gitmodel("install")
    work.gitmodel("track", "*.safetensors")
    path = write_safetensors(work.path / "m.safetensors", small(80))
    work.commit("m")
    files = list((work.store / "packs").iterdir())
    assert files
    for f in files:
        mode = f.stat().st_mode
        assert mode & stat.S_IRGRP, f"{f.name}: {oct(mode)}"
    for d in (work.store, work.store / "packs", work.store / "tmp"):
        if d.exists():
            mode = d.stat().st_mode
            assert mode & stat.S_IWGRP and mode & stat.S_ISGID, f"{d}: {oct(mode)}"
    checkout_exact(work, "m.safetensors", sha256(path))


def test_12_group_shared_store_lock_files_open_to_the_group_whatever_the_umask(tmp_path: Path, git_env):
    """Every writer opens `gc.lock` (gc and repack too, `damaged.lock` and `repack.lock`): in
    a group-shared store another member must be able to, or their add fails. Created under
    the process's umask, a user with umask 077 locked the group out."""
    work = Repo(tmp_path / "w", git_env)
    work.path.mkdir()
    work.git("init", "-q", "--shared=group", "-b", "main")
    work.gitmodel("install")
    work.gitmodel("track", "*.safetensors")
    mask = os.umask(0o077)
    try:
        write_safetensors(work.path / "m.safetensors", small(82))
        work.commit("m")
        work.gitmodel("repack")
        work.gitmodel("gc")
    finally:
        os.umask(mask)
    locks = sorted(work.store.glob("*.lock"))
    assert "gc.lock" in [p.name for p in locks]
    for path in locks:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o060 == 0o060, f"{path.name}: {oct(mode)}"


def test_12_a_push_to_a_group_shared_repository_leaves_its_store_readable_by_the_group(
        tmp_path: Path, git_env):
    """The first push to a group-shared bare repository, by a user with umask 077, wrote the
    store's version marker for the pusher alone: exit 0, and every teammate's clone or push
    then failed reading it."""
    hub = tmp_path / "hub.git"
    subprocess.run(["git", "init", "-q", "--bare", "--shared=group", "-b", "main", str(hub)], check=True)
    work = make_repo(tmp_path / "w", git_env)
    work.git("remote", "add", "origin", str(hub))
    write_safetensors(work.path / "m.safetensors", small(83))
    work.commit("m")
    mask = os.umask(0o077)
    try:
        work.git("push", "-q", "origin", "main")
    finally:
        os.umask(mask)
    written = [p for p in (hub / "gitmodel").rglob("*") if p.is_file()]
    assert any(p.name == "config" for p in written) and any(p.suffix == ".pack" for p in written)
    for path in written:
        assert path.stat().st_mode & stat.S_IRGRP, f"{path.relative_to(hub)}: {oct(path.stat().st_mode)}"


def test_12_default_pack_modes_follow_the_umask(repo: Repo):
    write_safetensors(repo.path / "m.safetensors", small(81))
    repo.commit("m")
    mask = os.umask(0)
    os.umask(mask)
    files = list((repo.store / "packs").iterdir())
    assert files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o444 & ~mask, f"{f.name}: {oct(f.stat().st_mode)}"


def test_11_fsck_repair_says_when_the_remotes_only_copy_is_damaged(tmp_path: Path, git_env):
    """Regression (an exploratory run): in a clone without the file, with the remote's only
    copy of a chunk damaged, `fsck --all --repair` fetched what it could, still called the
    checkpoint "fetchable" and said "0 problem(s)", exit 0, every time it was run."""
    repo, store, reader = _pointer_clone(tmp_path, git_env)
    _, oid = flip_byte(store)
    repaired = reader.gitmodel("fsck", "--all", "--repair", check=False)
    no_traceback(repaired)
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert "1 damaged" in repaired.stdout and "fetching it failed" in repaired.stdout, repaired.stdout
    assert oid.hex() in repaired.stdout, repaired.stdout
    assert "0 problem(s)" not in repaired.stdout
    # The repair the remote's own check suggests, from the clone that has the file, repairs.
    repo.gitmodel("fsck", "--remote", "origin", "--repair")
    again = reader.gitmodel("fsck", "--all", "--repair", check=False)
    assert again.returncode == 0 and "1 complete" in again.stdout, again.stdout
