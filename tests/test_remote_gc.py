"""`gitmodel gc --remote`: a folder remote and a real S3 API server (moto) on 127.0.0.1, through
git itself."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import Repo, make_repo, random_model, sha256, team, write_safetensors
from test_gc import age_packs
from test_remotes import S3_ENV, s3, s3_server  # noqa: F401  (fixtures)

MODEL = "model.safetensors"


def remote_bytes(url: str, options: dict | None) -> int:
    import fsspec
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    fs.invalidate_cache()
    return sum(info["size"] for info in fs.ls(f"{path}/packs", detail=True)
               if info["name"].endswith(".pack"))


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_remote_gc_removes_what_no_branch_or_tag_needs(tmp_path: Path, git_env, request, where):
    if where == "s3":
        url, options = request.getfixturevalue("s3")
        env = {**git_env, **S3_ENV}
    else:
        url, options, env = str(tmp_path / "store"), None, git_env
    repo = team(tmp_path, env, url, options)
    repo.git("config", "gitmodel.delta", "false")
    sums = []
    for v in range(4):
        sums.append(sha256(write_safetensors(repo.path / MODEL, random_model(v, layers=3, width=256))))
        repo.commit(f"v{v}", MODEL)
        repo.git("push", "-q", "origin", "main")
    repo.git("tag", "v0", "HEAD~3")
    repo.git("push", "-q", "origin", "v0")
    before = remote_bytes(url, options)
    repo.git("reset", "-q", "--hard", "HEAD~2")          # drop v2 and v3 from the branch
    repo.git("push", "-q", "-f", "origin", "main")

    expire_push_notes(url, options)
    dry = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0", "--dry-run")
    reclaimable = float(re.search(r"\(([\d.]+) MiB reclaimable\)", dry.stdout).group(1))
    assert remote_bytes(url, options) == before
    out = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    after = remote_bytes(url, options)
    assert after < before * 0.6
    assert abs((before - after) / (1 << 20) - reclaimable) < 0.1
    assert "2 pack(s) removed (nothing in them needed)" in out.stdout
    assert "warning" not in out.stderr + dry.stderr

    clone = Repo(tmp_path / "clone", env)
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(clone.path)], env=env,
                   check=True, capture_output=True)
    clone.gitmodel("install")
    for rev, digest in [("main", sums[1]), ("main~1", sums[0]), ("v0", sums[0])]:
        clone.git("checkout", "-q", rev)
        (clone.path / MODEL).unlink()
        clone.git("checkout", "--", MODEL)
        assert sha256(clone.path / MODEL) == digest, rev
    assert "0 problem(s)" in clone.gitmodel("fsck", "--remote", "origin", "--all").stdout


def age(folder: Path, days: float = 2.0) -> None:
    """The remote's packs, and pushes' notes, as if written `days` ago."""
    then = time.time() - days * 86400
    for path in [*(folder / "packs").glob("pack-*"), *(folder / "packs").glob("push-*")]:
        os.utime(path, (then, then))


def expire_push_notes(url: str, options: dict | None) -> None:
    """What an hour does to pushes' notes, on a remote whose files cannot be dated back."""
    import fsspec
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    fs.invalidate_cache()
    for info in fs.ls(f"{path}/packs", detail=True):
        if info["name"].rsplit("/", 1)[-1].startswith("push-"):
            fs.rm_file(info["name"])


def push_notes(url: str, options: dict | None) -> list[str]:
    import fsspec
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    fs.invalidate_cache()
    return sorted(name for name in (info["name"].rsplit("/", 1)[-1] for info in fs.ls(f"{path}/packs", detail=True))
                  if name.startswith("push-"))


def pre_push(repo: Repo, branch: str, hub: Path, env: dict) -> None:
    """What `git push origin BRANCH` runs before it updates the remote's ref."""
    hook = subprocess.run(["gitmodel", "pre-push", "origin", str(hub)],
                          input=f"refs/heads/{branch} {repo.out('rev-parse', branch).strip()} "
                                f"refs/heads/{branch} {'0' * 40}\n",
                          cwd=repo.path, env=env, capture_output=True, text=True)
    assert hook.returncode == 0, hook.stderr


def assert_branch_checks_out(tmp_path: Path, env: dict, branch: str, digest: str,
                             hub: str = "hub.git") -> None:
    """A fresh clone of tmp_path/`hub` on `branch` checks MODEL out with sha256 `digest`."""
    clone = Repo(tmp_path / "clone", env)
    subprocess.run(["git", "clone", "-q", "-b", branch, str(tmp_path / hub), str(clone.path)],
                   env=env, check=True, capture_output=True)
    clone.gitmodel("install")
    (clone.path / MODEL).unlink()
    clone.git("checkout", "--", MODEL)
    assert sha256(clone.path / MODEL) == digest


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_remote_gc_keeping_nothing_recent_spares_a_push_whose_ref_has_not_arrived(
        tmp_path: Path, git_env, request, where):
    """Regression: `gc --remote --keep-recent 0` between the end of a push's pre-push hook and
    git's update of the remote's ref removed the checkpoint the push had just uploaded (no ref
    named it, its pack was not recent enough), and the push exited 0. The push's note now
    names it for an hour."""
    if where == "s3":
        url, options = request.getfixturevalue("s3")
        env = {**git_env, **S3_ENV}
    else:
        url, options, env = str(tmp_path / "store"), None, git_env
    repo = team(tmp_path, env, url, options)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    repo.git("checkout", "-q", "-b", "exp")
    digest = sha256(write_safetensors(repo.path / MODEL, random_model(2)))
    repo.commit("exp", MODEL)

    pre_push(repo, "exp", tmp_path / "hub.git", env)
    out = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert "kept that pushes of the last hour sent or relied on" in out.stdout + out.stderr
    repo.git("push", "-q", "origin", "exp")             # the ref arrives
    assert_branch_checks_out(tmp_path, env, "exp", digest)


def test_pushes_notes_expire_after_an_hour_and_are_removed(tmp_path: Path, git_env):
    """A checkpoint a push sent and no ref names is garbage once the push's note is an hour
    old; gc and push remove notes a day old."""
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    repo.git("checkout", "-q", "-b", "exp")
    write_safetensors(repo.path / MODEL, random_model(2))
    repo.commit("exp", MODEL)
    pre_push(repo, "exp", tmp_path / "hub.git", git_env)   # never followed by its ref
    size = remote_bytes(str(store), None)
    assert len(push_notes(str(store), None)) == 2

    kept = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert "removed 0 object(s)" in kept.stdout
    assert abs(remote_bytes(str(store), None) - size) < size * 0.01     # two small packs became one
    age(store, days=1 / 24 + 0.001)
    out = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert re.search(r"removed [1-9]\d* object", out.stdout), out.stdout
    assert remote_bytes(str(store), None) < size * 0.7
    assert len(push_notes(str(store), None)) == 2     # another gc may still honour them
    age(store, days=1.01)
    repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert push_notes(str(store), None) == []

    repo.git("checkout", "-q", "main")
    write_safetensors(repo.path / MODEL, random_model(3))
    repo.commit("v3", MODEL)
    repo.git("push", "-q", "origin", "main")
    first = push_notes(str(store), None)
    assert len(first) == 1
    age(store, days=1 / 24 + 0.001)
    write_safetensors(repo.path / MODEL, random_model(5))
    repo.commit("v4", MODEL)
    repo.git("push", "-q", "origin", "main")
    assert len(push_notes(str(store), None)) == 2       # a push leaves notes under a day old
    age(store, days=1.01)
    write_safetensors(repo.path / MODEL, random_model(4))
    repo.commit("v5", MODEL)
    repo.git("push", "-q", "origin", "main")
    notes = push_notes(str(store), None)
    assert len(notes) == 1 and notes[0] not in first


def forgotten_branch(tmp_path: Path, env: dict) -> tuple[Path, Repo, str]:
    """A folder remote holding branch exp's checkpoint, which no remote ref names any more
    (pushed, then the branch deleted there): the store, the repository and its sha256."""
    store = tmp_path / "store"
    repo = team(tmp_path, env, str(store), None)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    repo.git("checkout", "-q", "-b", "exp")
    digest = sha256(write_safetensors(repo.path / MODEL, random_model(2)))
    repo.commit("exp", MODEL)
    repo.git("push", "-q", "origin", "exp")
    repo.git("push", "-q", "origin", ":exp")            # the remote forgets the branch
    return store, repo, digest


def test_a_push_relying_on_old_objects_is_protected_from_a_concurrent_remote_gc(tmp_path: Path, git_env):
    """The race: a clone pushes a checkpoint whose objects the remote holds only as garbage
    (no remote ref names it) while a remote gc runs. The push re-sends the manifest, in a
    recent pack, before git updates the ref; the gc keeps what recent manifests need."""
    store, repo, digest = forgotten_branch(tmp_path, git_env)
    age(store)                                          # and its packs are old

    # Without a re-sent manifest, a gc now would remove exp's checkpoint:
    dry = repo.gitmodel("gc", "--remote", "origin", "--dry-run")
    assert re.search(r"would remove [1-9]\d* object", dry.stdout)

    # The pre-push of `git push origin exp` runs (its ref update has not happened yet) ...
    pre_push(repo, "exp", tmp_path / "hub.git", git_env)
    # ... a gc with the default grace period runs meanwhile ...
    out = repo.gitmodel("gc", "--remote", "origin")
    assert "removed 0 object(s)" in out.stdout
    # ... and the ref arrives: the checkpoint is whole on the remote.
    repo.git("push", "-q", "origin", "exp")
    assert_branch_checks_out(tmp_path, git_env, "exp", digest)


def test_a_remote_gc_marks_a_remote_older_versions_wrote_and_keeps_what_their_pushes_rely_on(
        tmp_path: Path, git_env):
    """gitmodel versions from before push notes (store version 1) push a checkpoint the remote
    holds only as garbage by sending nothing (the objects are there) and no note: a gc between
    their hook and git's ref update removed the checkpoint, both exited 0, and every clone
    failed. The first gc of such a remote marks it version 2 (which those versions refuse,
    asking to be upgraded) and keeps every checkpoint it holds for the hour such a push may
    still take."""
    store, repo, digest = forgotten_branch(tmp_path, git_env)
    for note in (store / "packs").glob("push-*"):
        note.unlink()                                   # as if older versions had pushed
    (store / "config").write_text("gitmodel store 1\n")
    age(store)

    dry = repo.gitmodel("gc", "--remote", "origin", "--dry-run")
    assert "would first mark it 2" in dry.stdout + dry.stderr and "would remove 0 object(s)" in dry.stdout
    assert (store / "config").read_text() == "gitmodel store 1\n"
    # An older version's `git push origin exp` finds exp's objects there and sends nothing;
    # a gc runs before its ref update ...
    out = repo.gitmodel("gc", "--remote", "origin")
    assert f"marked remote origin ({store}) as store version 2" in out.stdout + out.stderr
    assert "removed 0 object(s)" in out.stdout
    assert (store / "config").read_text() == "gitmodel store 2\n"
    again = repo.gitmodel("gc", "--remote", "origin")   # a second gc within the hour
    assert "removed 0 object(s)" in again.stdout and "marked" not in again.stdout + again.stderr
    # ... and the ref arrives: the checkpoint is whole on the remote.
    env = {**git_env, "GITMODEL_SKIP_PUSH": "1"}
    subprocess.run(["git", "push", "-q", "origin", "exp"], cwd=repo.path, env=env, check=True)
    assert_branch_checks_out(tmp_path, git_env, "exp", digest)


def test_a_graft_in_one_clone_does_not_make_the_remote_drop_what_it_hides(tmp_path: Path, git_env):
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    sums = []
    for seed in range(3):
        sums.append(sha256(write_safetensors(repo.path / MODEL, random_model(seed))))
        repo.commit(f"v{seed}", MODEL)
    repo.git("push", "-q", "origin", "main")
    age(store)
    expire_push_notes(str(store), None)
    repo.git("replace", "--graft", "HEAD~1")           # refs/replace/ stays in this clone
    out = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert "removed 0 object(s)" in out.stdout, out.stdout
    clone = Repo(tmp_path / "clone", git_env)
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(clone.path)], env=git_env,
                   check=True, capture_output=True)
    clone.gitmodel("install")
    clone.git("checkout", "-q", "HEAD~2", "--", MODEL)
    assert sha256(clone.path / MODEL) == sums[0]


def test_remote_gc_keeps_what_refs_outside_branches_and_tags_serve(tmp_path: Path, git_env):
    """A review system's refs (Gerrit's refs/for/*, GitHub's refs/pull/*) serve commits as
    branches do: gc took only branches and tags, and removed a pushed review's checkpoint."""
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    review = sha256(write_safetensors(repo.path / MODEL, random_model(2)))
    repo.commit("v2 for review", MODEL)
    repo.git("push", "-q", "origin", "HEAD:refs/for/main")
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.git("reflog", "expire", "--expire=now", "--all")
    age(store)
    expire_push_notes(str(store), None)
    out = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert "removed 0 object(s)" in out.stdout, out.stdout
    clone = Repo(tmp_path / "clone", git_env)
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(clone.path)], env=git_env,
                   check=True, capture_output=True)
    clone.gitmodel("install")
    clone.git("fetch", "-q", "origin", "refs/for/main")
    clone.git("checkout", "-q", "FETCH_HEAD")
    assert sha256(clone.path / MODEL) == review

    # A clone that lacks such a ref's commit is told how to fetch it (`git fetch origin`
    # alone brings branches and tags only)
    other = Repo(tmp_path / "other", git_env)
    subprocess.run(["git", "clone", "-q", "--no-local", str(tmp_path / "hub.git"), str(other.path)],
                   env=git_env, check=True, capture_output=True)
    other.gitmodel("install")
    refused = other.gitmodel("gc", "--remote", "origin", check=False)
    assert refused.returncode == 1 and "`git fetch origin refs/for/main`" in refused.stderr, refused.stderr
    other.git("fetch", "-q", "origin", "refs/for/main")
    assert "removed 0 object(s)" in other.gitmodel("gc", "--remote", "origin", "--keep-recent", "0").stdout


def with_backup(tmp_path: Path, git_env: dict, store: Path) -> Repo:
    """A team repository (gitmodel remote origin at `store`) with a second bare git remote,
    `backup`, at tmp_path/backup.git."""
    repo = team(tmp_path, git_env, str(store), None)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "backup.git")], check=True)
    repo.git("remote", "add", "backup", str(tmp_path / "backup.git"))
    return repo


def test_remote_gc_keeps_what_every_git_remote_pushing_there_serves(tmp_path: Path, git_env):
    """Git remote `backup` has no gitmodel remote of its name, so its pushes go to the default
    one, origin's: a gc for backup took only backup's refs and removed what origin serves."""
    store = tmp_path / "store"
    repo = with_backup(tmp_path, git_env, store)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    repo.git("push", "-q", "backup", "main")
    repo.git("checkout", "-q", "-b", "exp")
    digest = sha256(write_safetensors(repo.path / MODEL, random_model(2)))
    repo.commit("exp", MODEL)
    repo.git("push", "-q", "origin", "exp")             # to origin only
    age(store)
    expire_push_notes(str(store), None)
    out = repo.gitmodel("gc", "--remote", "backup", "--keep-recent", "0")
    assert "removed 0 object(s)" in out.stdout, out.stdout
    assert "of backup, origin (git remotes whose pushes go to this gitmodel remote)" in out.stderr
    assert_branch_checks_out(tmp_path, git_env, "exp", digest)


def test_remote_gc_of_a_repository_s_own_store_refuses(tmp_path: Path, git_env):
    """A clone of a non-bare repository A pushes to A's own store (the embedded default): a
    gc from the clone kept only what A's branches reference, and removed what A's stash and
    reflog needed, exit 0."""
    a = make_repo(tmp_path / "A", git_env)
    write_safetensors(a.path / MODEL, random_model(0))
    a.commit("v0", MODEL)
    reflog = sha256(write_safetensors(a.path / MODEL, random_model(1)))
    a.commit("v1", MODEL)
    lost = a.out("rev-parse", "HEAD").strip()
    a.git("reset", "-q", "--hard", "HEAD~1")
    stashed = sha256(write_safetensors(a.path / MODEL, random_model(2)))
    a.git("stash", "-q")
    age_packs(a.store)
    b = Repo(tmp_path / "B", git_env)
    subprocess.run(["git", "clone", "-q", str(a.path), str(b.path)], env=git_env, check=True,
                   capture_output=True)
    b.gitmodel("install")
    refused = b.gitmodel("gc", "--remote", "origin", "--keep-recent", "0", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"Run `gitmodel gc` in {a.path}" in refused.stderr, refused.stderr
    a.git("stash", "pop", "-q")
    assert sha256(a.path / MODEL) == stashed
    a.git("checkout", "-q", lost, "--", MODEL)
    assert sha256(a.path / MODEL) == reflog


def test_remote_gc_refuses_when_the_remote_has_commits_this_clone_lacks(tmp_path: Path, git_env):
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    other = Repo(tmp_path / "other", git_env)
    subprocess.run(["git", "clone", "-q", "--no-local", str(tmp_path / "hub.git"), str(other.path)],
                   env=git_env, check=True, capture_output=True)
    other.gitmodel("install")
    write_safetensors(other.path / MODEL, random_model(2))
    other.commit("v2", MODEL)
    other.git("push", "-q", "origin", "main")
    age(store)
    size = remote_bytes(str(store), None)
    result = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0", check=False)
    assert result.returncode == 1 and "git fetch origin" in result.stderr
    assert "Traceback" not in result.stderr
    # --ref adds to the remote's refs: it replaced them, and this clone's stale main made the
    # remote's newer checkpoint garbage (removed, exit 0).
    named = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0", "--ref", "main", check=False)
    assert named.returncode == 1 and "git fetch origin" in named.stderr, named.stdout
    assert remote_bytes(str(store), None) == size
    repo.git("fetch", "-q", "origin")
    out = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert "removed 0 object(s)" in out.stdout           # both versions are live


def test_remote_gc_lets_a_dropped_keyframe_go(tmp_path: Path, git_env):
    """Versions pushed as deltas against the newest version, which is then dropped: the
    rewrite sends the local store's copies (re-encoded by the push's repack against the
    newest survivor), so the remote ends the size of the survivors pushed alone."""
    from test_deltas import series
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    sums = series(repo, 6)
    repo.git("push", "-q", "origin", "main")            # v0-v4 pushed as deltas against v5
    repo.git("reset", "-q", "--hard", "HEAD~2")
    repo.git("push", "-q", "-f", "origin", "main")      # its repack: v0-v2 against v3 locally
    expire_push_notes(str(store), None)                 # the first push's names v4 and v5
    before = remote_bytes(str(store), None)
    out = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert "from the local store" in out.stderr
    after = remote_bytes(str(store), None)

    alone = make_repo(tmp_path / "alone", git_env)
    alone.gitmodel("remote", "add", "origin", str(tmp_path / "alone-store"))
    alone.commit("remote", ".gitmodel")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "alone.git")], check=True)
    alone.git("remote", "add", "origin", str(tmp_path / "alone.git"))
    for back in (3, 2, 1, 0):
        repo.git("checkout", f"HEAD~{back}", "--", MODEL)
        (alone.path / MODEL).write_bytes((repo.path / MODEL).read_bytes())
        alone.commit(f"v{3 - back}", MODEL)
    repo.git("checkout", "HEAD", "--", MODEL)
    alone.git("push", "-q", "origin", "main")
    reference = remote_bytes(str(tmp_path / "alone-store"), None)
    assert after < before and after <= reference * 1.05, (before, after, reference)

    clone = Repo(tmp_path / "clone", git_env)
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(clone.path)], env=git_env,
                   check=True, capture_output=True)
    clone.gitmodel("install")
    for back, digest in enumerate(reversed(sums[:4])):
        clone.git("checkout", "-q", f"main~{back}")
        (clone.path / MODEL).unlink()
        clone.git("checkout", "--", MODEL)
        assert sha256(clone.path / MODEL) == digest, back
    assert "0 problem(s)" in clone.gitmodel("fsck", "--remote", "origin", "--all").stdout


# ----------------------------------------------------------------------------- races, in one process

def _stored_checkpoint(store, n: int) -> bytes:
    """n random chunks and the manifest listing them, stored; the manifest's id."""
    import blake3

    from gitmodel.store import codec
    from gitmodel.store.manifest import Manifest
    from gitmodel.store.objects import CHUNK, MANIFEST
    writer, chunks = store.writer(), []
    for _ in range(n):
        data = os.urandom(4000)
        oid = blake3.blake3(data).digest()
        encoding, payload = codec.encode(data)
        writer.add(oid, CHUNK, encoding, len(data), payload)
        chunks.append((oid, len(data)))
    manifest = Manifest(4000 * n, chunks).encode()
    mid = blake3.blake3(manifest).digest()
    encoding, payload = codec.encode(manifest)
    writer.add(mid, MANIFEST, encoding, len(manifest), payload)
    store.publish(writer)
    return mid


def _remote_view(url: str, root: Path):
    from gitmodel.remote.backend import RemoteSpec, open_backend
    from gitmodel.remote.view import RemoteView
    return RemoteView(open_backend(RemoteSpec(url, url)), root)


def _on_remote(url: str, root: Path, store, mid: bytes) -> tuple[bool, int, int]:
    """(manifest listed, chunks listed, chunks) as a fresh client sees the remote."""
    view = _remote_view(url, root).refresh()
    chunks = store.read_manifest(mid).chunks
    return mid in view.entries, sum(cid in view.entries for cid, _ in chunks), len(chunks)


def test_a_remote_gc_during_a_push_does_not_take_what_the_push_relies_on(tmp_path: Path, monkeypatch):
    """Regression (a review of the remote protocol): a checkpoint the remote holds only in old
    packs, named by no remote ref, is pushed again with a new one. The push sends none of its
    chunks (the remote lists them) and re-sends its manifest so that a gc sees it. A gc whose
    last look at the remote came before that manifest arrived removed the old packs, and the
    push succeeded with the checkpoint's chunks gone from the remote."""
    from gitmodel import sync
    from gitmodel.remote import collect, transfer
    from gitmodel.store.objects import Store
    url = str(tmp_path / "remote")
    store = Store(tmp_path / "local")
    old = _stored_checkpoint(store, 3)
    sync.push(store, _remote_view(url, store.root), {old.hex(): "old.bin"})
    age(Path(url))
    new = _stored_checkpoint(store, 2)
    put, collected = transfer._Uploader._put, []

    def gc_before_the_first_upload(self, path, name, index):
        if not collected:             # another clone's remote gc: no ref names either checkpoint
            other = Store(tmp_path / "other")
            collected.append(collect.collect(_remote_view(url, other.root), other, [], grace_days=1.0))
        return put(self, path, name, index)

    monkeypatch.setattr(transfer._Uploader, "_put", gc_before_the_first_upload)
    sync.push(store, _remote_view(url, store.root), {old.hex(): "old.bin", new.hex(): "new.bin"})
    monkeypatch.undo()
    assert collected and collected[0].count("remove") > 0       # the gc did remove old packs
    for mid in (old, new):
        listed, present, total = _on_remote(url, tmp_path / "client", store, mid)
        assert listed and present == total, (mid == old, present, total)


def test_an_index_on_a_remote_whose_pack_is_gone_is_not_trusted(tmp_path: Path, monkeypatch):
    """Regression, the remote's side of the race CI found locally: a remote gc removes a pack's
    index, then the pack. A mirror run in between found the pack file there, whole, so sent
    only the index; the gc then removed the pack. Clients believed the objects were on the
    remote: pushes skipped them and fetches failed."""
    from gitmodel import stored, sync
    from gitmodel.remote import collect, transfer
    from gitmodel.remote.backend import FsspecBackend, RemoteSpec, open_backend
    from gitmodel.store.objects import Store
    source, dest = str(tmp_path / "source"), str(tmp_path / "dest")
    store = Store(tmp_path / "local")
    mid = _stored_checkpoint(store, 3)
    for url in (source, dest):
        sync.push(store, _remote_view(url, store.root), {mid.hex(): "m.bin"})
    age(Path(dest))
    # The mirror runs inside the gc's removal here, so it must not wait for that gc to end
    # (apart, it would, and then find the pack gone: the test below).
    monkeypatch.setattr(transfer, "GC_NOTE_STALE", 0.0)

    def mirror_between_the_two_deletions(self, pack, timeout=None):
        self._call("rm_file", self._path(pack, "idx"))
        transfer.mirror(open_backend(RemoteSpec(source, source)), open_backend(RemoteSpec(dest, dest)),
                        tmp_path / "tmp", stored.references, quiet=True)
        self._call("rm_file", self._path(pack, "pack"))

    monkeypatch.setattr(FsspecBackend, "remove_pack", mirror_between_the_two_deletions)
    other = Store(tmp_path / "other")
    collect.collect(_remote_view(dest, other.root), other, [], grace_days=1.0)   # nothing is live
    monkeypatch.undo()
    assert _on_remote(dest, tmp_path / "client", store, mid) == (False, 0, 3)
    assert sync.push(store, _remote_view(dest, store.root), {mid.hex(): "m.bin"}).objects == 4
    assert _on_remote(dest, tmp_path / "client", store, mid) == (True, 3, 3)
    fresh = Store(tmp_path / "fresh")
    assert not sync.fetch(fresh, _remote_view(dest, fresh.root), {mid.hex(): "m.bin"}).failed
    assert fresh.read(mid) == store.read(mid)
    # The push sent the same records in the same order: the same pack, whose file it sent
    # again since the listing lacked it. No index is left without its pack.
    names = {p.name for p in (Path(dest) / "packs").iterdir()}
    assert {n.rsplit(".", 1)[0] for n in names if n.endswith(".idx")} == \
        {n.rsplit(".", 1)[0] for n in names if n.endswith(".pack")}


def test_a_mirror_whose_copy_a_gc_removes_meanwhile_fails(tmp_path: Path, monkeypatch):
    """A mirror sends only the index of a pack whose file it finds whole at the destination (a
    mirror interrupted before). If a gc of the destination removes that file meanwhile, the
    mirror says so instead of exiting 0 with the pack missing."""
    import shutil

    from gitmodel import stored, sync
    from gitmodel.remote import transfer
    from gitmodel.remote.backend import FsspecBackend, RemoteError, RemoteSpec, open_backend
    from gitmodel.store.objects import Store
    source, dest = tmp_path / "source", tmp_path / "dest"
    store = Store(tmp_path / "local")
    mid = _stored_checkpoint(store, 2)
    sync.push(store, _remote_view(str(source), store.root), {mid.hex(): "m.bin"})
    (dest / "packs").mkdir(parents=True)
    shutil.copy(source / "config", dest / "config")
    for pack in (source / "packs").glob("*.pack"):
        shutil.copy(pack, dest / "packs" / pack.name)           # files arrived, indexes did not
    put_index = FsspecBackend.put_index

    def then_a_gc_removes_the_pack(self, pack, data, timeout=None):
        put_index(self, pack, data, timeout)
        if self.url == str(dest):
            (dest / "packs" / f"{pack}.pack").unlink()

    monkeypatch.setattr(FsspecBackend, "put_index", then_a_gc_removes_the_pack)
    with pytest.raises(RemoteError, match="removed from it while the mirror ran"):
        transfer.mirror(open_backend(RemoteSpec(str(source), str(source))),
                        open_backend(RemoteSpec(str(dest), str(dest))), tmp_path / "tmp",
                        stored.references, quiet=True)
    monkeypatch.undo()
    transfer.mirror(open_backend(RemoteSpec(str(source), str(source))),
                    open_backend(RemoteSpec(str(dest), str(dest))), tmp_path / "tmp",
                    stored.references, quiet=True)                 # run again: whole
    assert _on_remote(str(dest), tmp_path / "client", store, mid) == (True, 2, 2)


def test_a_remote_gc_refuses_while_an_index_on_the_remote_is_damaged(tmp_path: Path):
    """The chunks of a live checkpoint whose manifest sits in a pack with a damaged index
    would look like garbage: the remote gc stops and says what to do."""
    from gitmodel import sync
    from gitmodel.remote import collect
    from gitmodel.store.gc import GcError
    from gitmodel.store.objects import Store
    url = tmp_path / "remote"
    store = Store(tmp_path / "local")
    kept, dropped = _stored_checkpoint(store, 2), _stored_checkpoint(store, 2)
    for mid in (kept, dropped):
        sync.push(store, _remote_view(str(url), store.root), {mid.hex(): "m.bin"})
    index = sorted((url / "packs").glob("*.idx"))[0]
    index.write_bytes(index.read_bytes()[:-3])
    age(url)
    before = sorted(p.name for p in (url / "packs").iterdir())
    with pytest.raises(GcError, match="damaged") as err:
        collect.collect(_remote_view(str(url), tmp_path / "other"), store, [kept], grace_days=1.0)
    assert "Nothing was removed" in err.value.hint
    assert sorted(p.name for p in (url / "packs").iterdir()) == before


def test_a_remote_gc_bounds_a_manifest_no_pointer_names(tmp_path: Path, monkeypatch):
    """A manifest in a recent pack that no ref names (a push whose ref has not arrived, or a
    hostile writer) has only its own size field to bound it, which its writer chooses: a gc
    reads it only up to UNNAMED_MAX_ENTRIES chunks, and past that stops, removing nothing. Named
    by a pointer, the pointer's size bounds it instead."""
    from gitmodel import sync
    from gitmodel.remote import collect
    from gitmodel.store import manifest
    from gitmodel.store.gc import GcError
    from gitmodel.store.objects import Store
    from test_failures import _hostile_manifest
    monkeypatch.setattr(manifest, "UNNAMED_MAX_ENTRIES", 100)
    url = tmp_path / "remote"
    store = Store(tmp_path / "local")
    kept = _stored_checkpoint(store, 2)
    sync.push(store, _remote_view(str(url), store.root), {kept.hex(): "m.bin"})
    age(url)
    unnamed = _hostile_manifest(url / "packs", 101)             # 202 bytes: its own bound holds
    (url / "config").write_text("gitmodel store 2\n")
    before = sorted(p.name for p in (url / "packs").iterdir())
    with pytest.raises(GcError) as err:
        collect.collect(_remote_view(str(url), tmp_path / "other"), Store(tmp_path / "other"), [kept],
                        grace_days=1.0, pointer_sizes={kept: 8000})
    assert (f"the checkpoint {unnamed.hex()[:16]} is live but its manifest cannot be read from remote "
            f"{url} or the local store") in str(err.value), str(err.value)
    assert ("manifest lists 101 chunks, more than is read from a remote for a checkpoint no pointer "
            "here names (at most 100); not decoded") in str(err.value), str(err.value)
    assert err.value.hint.startswith("Nothing was removed. `git fetch` the commits that name it")
    assert sorted(p.name for p in (url / "packs").iterdir()) == before
    done = collect.collect(_remote_view(str(url), tmp_path / "other"), Store(tmp_path / "other"),
                           [kept, unnamed], grace_days=1.0, pointer_sizes={kept: 8000, unnamed: 202})
    assert done.live_objects == 3 + 2 and not done.damaged


def _push_while_a_remote_gc_removes(tmp_path: Path, monkeypatch, url: str, store, checkpoints: dict,
                                    removal) -> None:
    """A remote gc (nothing named live) on a thread, each of whose pack removals is
    `removal(backend, pack, pause)`; `pause()` lets the push run until its last check.
    The push starts at the first pause, when the gc has looked at the remote for the last
    time; the gc goes on while the push checks."""
    import threading

    from gitmodel import sync
    from gitmodel.remote import collect, transfer
    from gitmodel.remote.backend import FsspecBackend
    from gitmodel.store.objects import Store
    monkeypatch.setattr(transfer, "GC_POLL", 0.05)
    paused, checking, errors = threading.Event(), threading.Event(), []
    check = sync._check_arrived

    def pause():
        paused.set()
        checking.wait(20)                               # the push's last look happens now
        time.sleep(0.2)

    def checking_now(*args, **kwargs):
        checking.set()
        return check(*args, **kwargs)

    def remote_gc():
        try:
            other = Store(tmp_path / "other")
            collect.collect(_remote_view(url, other.root), other, [], grace_days=1.0)
        except BaseException as err:                    # reported below
            errors.append(err)

    monkeypatch.setattr(FsspecBackend, "remove_pack", lambda self, pack, timeout=None: removal(self, pack, pause))
    monkeypatch.setattr(sync, "_check_arrived", checking_now)
    gc_thread = threading.Thread(target=remote_gc)
    gc_thread.start()
    assert paused.wait(20)
    sync.push(store, _remote_view(url, store.root), checkpoints)
    gc_thread.join(30)
    monkeypatch.undo()
    assert not errors and not gc_thread.is_alive()


def test_a_push_that_finishes_while_a_remote_gc_removes_packs_waits_and_checks(tmp_path: Path, monkeypatch):
    """Regression (a review of the fix above): the push's last look could come while a gc that
    had listed the remote before the pins arrived was still removing packs, and find them
    there still. The gc now leaves a note while it removes; the push waits for it to go,
    then checks, and sends again what was taken."""
    from gitmodel import sync
    from gitmodel.remote.backend import FsspecBackend
    from gitmodel.store.objects import Store
    url = str(tmp_path / "remote")
    store = Store(tmp_path / "local")
    old = [_stored_checkpoint(store, 3), _stored_checkpoint(store, 3)]
    for mid in old:                                     # two old packs, named by no ref
        sync.push(store, _remote_view(url, store.root), {mid.hex(): "old.bin"})
    age(Path(url))
    remove = FsspecBackend.remove_pack

    def pause_then_remove(backend, pack, pause):
        pause()
        remove(backend, pack)

    _push_while_a_remote_gc_removes(tmp_path, monkeypatch, url, store,
                                    {m.hex(): "old.bin" for m in old}, pause_then_remove)
    for mid in old:
        listed, present, total = _on_remote(url, tmp_path / "client", store, mid)
        assert listed and present == total, (present, total)


def test_a_pin_is_sent_again_even_when_the_remote_holds_its_old_pack(tmp_path: Path, monkeypatch):
    """Regression (a review): pinning the same manifest again builds the same pack, whose old
    copy the push found there whole and did not send again, so it stayed old: a gc protects
    only recent packs, and the pin pinned nothing."""
    from gitmodel import sync
    from gitmodel.store.objects import Store
    url = tmp_path / "remote"
    store = Store(tmp_path / "local")
    mid = _stored_checkpoint(store, 2)
    for _ in range(3):                    # pushed, then pinned twice, the store old each time
        sync.push(store, _remote_view(str(url), store.root), {mid.hex(): "m.bin"})
        age(url)
        with monkeypatch.context() as patch:
            patch.setattr(sync, "PIN_AGE", 0.0)         # the manifest counts as old: pinned
            sync.push(store, _remote_view(str(url), store.root), {mid.hex(): "m.bin"})
        view = _remote_view(str(url), tmp_path / "client").refresh()
        newest = max(view.listing.mtimes[e.pack] for e in view.entries.copies(mid))
        assert time.time() - newest < 600
        age(url)


def test_a_push_in_the_moment_a_gc_removes_the_same_pack_sends_it_again(tmp_path: Path, monkeypatch):
    """Regression (a review): a push that lists the remote between a gc's removal of a pack's
    index and of its file sends the same objects, builds the same pack, and may find its
    file there: it sent the index alone, and the gc then removed the file. The push's last
    look, after the gc, sees the pack gone and sends it again."""
    from gitmodel import sync
    from gitmodel.remote import transfer
    from gitmodel.store.objects import Store
    monkeypatch.setattr(transfer, "RECENT_PACK", 10 * 86400.0)   # the old file counts as whole
    url = str(tmp_path / "remote")
    store = Store(tmp_path / "local")
    mid = _stored_checkpoint(store, 3)
    sync.push(store, _remote_view(url, store.root), {mid.hex(): "m.bin"})
    age(Path(url))

    def index_then_pause_then_file(backend, pack, pause):
        backend._call("rm_file", backend._path(pack, "idx"))
        pause()
        backend._call("rm_file", backend._path(pack, "pack"))

    _push_while_a_remote_gc_removes(tmp_path, monkeypatch, url, store, {mid.hex(): "m.bin"},
                                    index_then_pause_then_file)
    assert _on_remote(url, tmp_path / "client", store, mid) == (True, 3, 3)


def test_a_remote_gc_from_a_shallow_clone_refuses(tmp_path: Path, git_env):
    """Regression (an exploratory run): from a `git clone --depth 1` (a CI checkout), a remote
    gc saw only the tips' checkpoints as live and removed every older version from the
    remote, exit 0; a full clone then could not check them out."""
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    sums = []
    for v in range(3):
        sums.append(sha256(write_safetensors(repo.path / MODEL, random_model(v))))
        repo.commit(f"v{v}", MODEL)
    repo.git("push", "-q", "origin", "main")
    age(store)
    size = remote_bytes(str(store), None)
    ci = Repo(tmp_path / "ci", git_env)
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{tmp_path / 'hub.git'}", str(ci.path)],
                   env=git_env, check=True, capture_output=True)
    ci.gitmodel("install")
    for dry in ([], ["--dry-run"]):
        result = ci.gitmodel("gc", "--remote", "origin", *dry, check=False)
        assert result.returncode == 1, result.stdout
        assert "shallow" in result.stderr and "git fetch --unshallow origin" in result.stderr
        assert "Traceback" not in result.stderr
    assert remote_bytes(str(store), None) == size
    ci.git("fetch", "-q", "--unshallow", "origin")
    assert "removed 0 object(s)" in ci.gitmodel("gc", "--remote", "origin").stdout
    ci.git("checkout", "-q", "HEAD~2")
    assert sha256(ci.path / MODEL) == sums[0]


def test_pushes_notes_are_aged_on_the_remotes_clock(tmp_path: Path, monkeypatch):
    """Regression (a review of the notes): a client whose clock ran two hours fast took every
    note on the remote for an hour old: its push removed them, and its gc ignored them, so a
    checkpoint another push had just sent (its ref not yet updated) was removed, exit 0. Ages
    are now read against a file just written on the remote, and a push removes only notes a
    day old."""
    from gitmodel import sync
    from gitmodel.remote import collect
    from gitmodel.store.objects import Store
    url = str(tmp_path / "remote")
    store = Store(tmp_path / "local")
    first, second = _stored_checkpoint(store, 3), _stored_checkpoint(store, 3)
    sync.push(store, _remote_view(url, store.root), {first.hex(): "a.bin"})
    age(Path(url), days=2 / 24)                 # its pack and note: written two hours ago
    notes = sorted((Path(url) / "packs").glob("push-*"))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 2 * 3600)
    sync.push(store, _remote_view(url, store.root), {second.hex(): "b.bin"})
    assert all(note.exists() for note in notes)      # not a day old: kept
    for note in notes:                               # and the first push's note is recent
        os.utime(note, (real() - 60, real() - 60))
    other = Store(tmp_path / "other")
    collect.collect(_remote_view(url, other.root), other, [], grace_days=0.0)
    monkeypatch.undo()
    for mid in (first, second):
        listed, present, total = _on_remote(url, tmp_path / "client", store, mid)
        assert listed and present == total, mid == first
    # Two hours later on the remote's clock both notes are void: the gc takes both
    # checkpoints, and removes the notes once they are a day old.
    age(Path(url), days=2 / 24)
    report = collect.collect(_remote_view(url, other.root), other, [], grace_days=0.0)
    assert report.objects_removed == 8
    assert len(list((Path(url) / "packs").glob("push-*"))) == 2
    age(Path(url), days=1.01)
    collect.collect(_remote_view(url, other.root), other, [], grace_days=0.0)
    assert not list((Path(url) / "packs").glob("push-*"))


def test_a_remote_gc_honours_the_notes_of_pushes_since_an_hour_before_it_read_the_refs(tmp_path: Path):
    """Regression (a review of the notes): a gc that read the remote's refs, then spent more
    than an hour (a repack) before listing the remote, took a note written just after it read
    the refs for void, though the refs it read did not name that push's checkpoint."""
    from gitmodel import sync
    from gitmodel.remote import collect
    from gitmodel.store.objects import Store
    url = str(tmp_path / "remote")
    store = Store(tmp_path / "local")
    mid = _stored_checkpoint(store, 3)
    sync.push(store, _remote_view(url, store.root), {mid.hex(): "a.bin"})
    age(Path(url), days=1.5 / 24)                # the push ended 90 minutes ago ...
    other = Store(tmp_path / "other")
    kept = collect.collect(_remote_view(url, other.root), other, [], grace_days=0.0,
                           refs_read=time.monotonic() - 2 * 3600)   # ... after the refs were read
    assert kept.objects_removed == 0
    assert _on_remote(url, tmp_path / "client", store, mid) == (True, 3, 3)
    gone = collect.collect(_remote_view(url, other.root), other, [], grace_days=0.0)
    assert gone.objects_removed == 4


def test_a_second_remote_gc_leaves_the_notes_a_first_one_still_honours(tmp_path: Path):
    """Regression (a review): gc B removed a 90-minute-old note, void by its own fresh refs,
    that gc A, which had read the refs two hours before, still needed: A then removed the
    push's checkpoint. A gc removes only notes a day old, as a push does."""
    from gitmodel import sync
    from gitmodel.remote import collect
    from gitmodel.store.objects import Store
    url = str(tmp_path / "remote")
    store = Store(tmp_path / "local")
    garbage, mid = _stored_checkpoint(store, 2), _stored_checkpoint(store, 3)
    for one in (garbage, mid):
        sync.push(store, _remote_view(url, store.root), {one.hex(): "m.bin"})
    age(Path(url), days=1.5 / 24)
    other = Store(tmp_path / "other")
    # B's refs name mid; garbage's note is void for B, which removes garbage
    b = collect.collect(_remote_view(url, other.root), other, [mid], grace_days=0.0)
    assert b.objects_removed == 3
    assert len(list((Path(url) / "packs").glob("push-*"))) == 2      # neither is a day old
    a = collect.collect(_remote_view(url, other.root), other, [], grace_days=0.0,
                        refs_read=time.monotonic() - 2 * 3600)
    assert a.objects_removed == 0
    assert _on_remote(url, tmp_path / "client", store, mid) == (True, 3, 3)


def test_a_remote_gc_with_credentials_that_cannot_delete_or_write(tmp_path: Path, monkeypatch):
    """Regression (a review): the gc's clock probe (an empty note) made every gc fail when the
    credentials could write but not delete, leaving a probe each time, and when they could
    not write, though such a gc had nothing to remove."""
    from gitmodel import sync
    from gitmodel.remote import collect
    from gitmodel.remote.backend import FsspecBackend
    from gitmodel.store.objects import Store
    url = str(tmp_path / "remote")
    store = Store(tmp_path / "local")
    mid = _stored_checkpoint(store, 3)
    sync.push(store, _remote_view(url, store.root), {mid.hex(): "m.bin"})

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")
    other = Store(tmp_path / "other")
    monkeypatch.setattr(FsspecBackend, "remove_note", refused)
    assert collect.collect(_remote_view(url, other.root), other, [mid], grace_days=0.0).objects_removed == 0
    monkeypatch.setattr(FsspecBackend, "put_note", refused)
    assert collect.collect(_remote_view(url, other.root), other, [mid], grace_days=0.0).objects_removed == 0
    monkeypatch.undo()
    assert _on_remote(url, tmp_path / "client", store, mid) == (True, 3, 3)


def test_waiting_for_a_remote_gc_reads_the_remotes_clock(tmp_path: Path, monkeypatch):
    """Regression (a review): a client whose clock ran 20 minutes fast took a running gc's
    note for a dead gc's and went on (a mirror then checked for its packs before the gc
    removed them). The wait reads the time of a note of its own there."""
    import threading

    from gitmodel.remote import transfer
    from gitmodel.remote.backend import RemoteSpec, open_backend
    url = str(tmp_path / "remote")
    backend = open_backend(RemoteSpec(url, url))
    backend.put_note("gc-0123456789abcdef.running", b"host 1\n")
    probe = transfer.announce_push(backend, [])
    monkeypatch.setattr(transfer, "GC_POLL", 0.05)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 20 * 60)
    threading.Timer(0.5, lambda: backend.remove_note("gc-0123456789abcdef.running")).start()
    start = time.monotonic()
    transfer.settled_listing(backend, clock=probe)
    assert time.monotonic() - start >= 0.4


def test_a_remote_gc_whose_packs_another_gc_removes_meanwhile_begins_again(tmp_path: Path, monkeypatch):
    """Two remote gcs at once (an exploration, 10 of 45 runs): the later one read a live
    manifest from a pack the other had just rewritten and removed, and said the checkpoint's
    manifest could not be read (exit 1, "fsck says what is damaged": nothing was damaged).
    It now lists the remote again and finishes; both checkpoints stay whole there."""
    from gitmodel import sync
    from gitmodel.remote import collect, transfer
    from gitmodel.store.objects import Store
    url = str(tmp_path / "remote")
    store = Store(tmp_path / "local")
    live, dead = _stored_checkpoint(store, 3), _stored_checkpoint(store, 2)
    sync.push(store, _remote_view(url, store.root), {live.hex(): "live.bin", dead.hex(): "dead.bin"})
    age(Path(url))                           # one pack, half garbage: a gc rewrites it
    read_manifests, first = transfer.read_manifests, []
    lines: list[str] = []

    def after_another_gc(view, oids, failed, sizes=None):
        if not first:
            first.append(True)
            other = Store(tmp_path / "a")
            report = collect.collect(_remote_view(url, other.root), other, [live], grace_days=0.0)
            first.append(report)
        return read_manifests(view, oids, failed, sizes)

    monkeypatch.setattr(transfer, "read_manifests", after_another_gc)
    later = Store(tmp_path / "b")
    report = collect.collect(_remote_view(url, later.root), later, [live], grace_days=0.0,
                             progress=lines.append)
    monkeypatch.undo()
    assert first[1].count("rewrite") == 1 and not first[1].damaged      # the other gc's work
    assert any("another gc of this remote removed them; listing it again" in line for line in lines), lines
    assert not report.damaged, report.damaged
    assert _on_remote(url, tmp_path / "client", store, live) == (True, 3, 3)
    assert _on_remote(url, tmp_path / "client", store, dead)[:2] == (False, 0)


def test_a_mirror_whose_source_a_gc_rewrites_meanwhile_says_so_and_finishes_when_run_again(
        tmp_path: Path, monkeypatch):
    """A pack the source's gc removed between the mirror's listing and its copy ended the
    mirror with a bare "No such file or directory" and no index published at the
    destination. The mirror now copies the rest, publishes what is whole, says a gc removed
    packs meanwhile, and a second run completes the copy."""
    from gitmodel import stored, sync
    from gitmodel.remote import collect, transfer
    from gitmodel.remote.backend import FsspecBackend, RemoteError, RemoteSpec, open_backend
    from gitmodel.store.objects import Store
    source, dest = tmp_path / "source", tmp_path / "dest"
    store = Store(tmp_path / "local")
    kept = _stored_checkpoint(store, 2)
    sync.push(store, _remote_view(str(source), store.root), {kept.hex(): "kept.bin"})
    live, dead = _stored_checkpoint(store, 3), _stored_checkpoint(store, 2)
    sync.push(store, _remote_view(str(source), store.root), {live.hex(): "live.bin", dead.hex(): "dead.bin"})
    age(source)
    open_pack, gcs = FsspecBackend.open_pack, []

    def a_gc_first(self, pack, timeout=None):
        if self.url == str(source) and not gcs:
            other = Store(tmp_path / "other")
            gcs.append(collect.collect(_remote_view(str(source), other.root), other, [kept, live],
                                       grace_days=0.0))
        return open_pack(self, pack, timeout)

    monkeypatch.setattr(FsspecBackend, "open_pack", a_gc_first)
    with pytest.raises(RemoteError, match="removed from it while the mirror ran") as raised:
        transfer.mirror(open_backend(RemoteSpec(str(source), str(source))),
                        open_backend(RemoteSpec(str(dest), str(dest))), tmp_path / "tmp",
                        stored.references, quiet=True)
    monkeypatch.undo()
    assert "run the mirror again" in raised.value.full()
    assert gcs and gcs[0].count("rewrite") >= 1
    for mid, chunks in ((kept, 2), (live, 3)):         # each whole at the destination, or absent
        listed, present, _ = _on_remote(str(dest), tmp_path / "client", store, mid)
        assert not listed or present == chunks
    transfer.mirror(open_backend(RemoteSpec(str(source), str(source))),
                    open_backend(RemoteSpec(str(dest), str(dest))), tmp_path / "tmp",
                    stored.references, quiet=True)
    for mid, chunks in ((kept, 2), (live, 3)):
        assert _on_remote(str(dest), tmp_path / "client2", store, mid) == (True, chunks, chunks)


def test_a_pack_whose_index_is_missing_is_noted_and_never_deleted(tmp_path: Path, git_env):
    """A push killed between a pack and its index leaves the pack, which no reader uses:
    fsck --remote said nothing. It notes it now; gc leaves it, since such a pack cannot be
    told from one whose index was lost (its objects the only copies), nor from an upload
    whose index is on its way."""
    import sys
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    killed = subprocess.run(
        [sys.executable, "-c", "import os, signal, sys\n"
         "from gitmodel.remote import backend\n"
         "backend.FsspecBackend.put_index = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
         "from gitmodel.cli import main\n"
         "sys.exit(main(['push', 'origin', 'main']))"], cwd=repo.path, env=git_env, capture_output=True)
    assert killed.returncode == -9
    stray = list((store / "packs").glob("*.pack"))
    assert len(stray) == 1 and not list((store / "packs").glob("*.idx"))
    write_safetensors(repo.path / MODEL, random_model(2))
    repo.commit("v2", MODEL)
    repo.git("push", "-q", "origin", "main")            # other packs: nothing completes the first
    noted = repo.gitmodel("fsck", "--remote", "origin")
    assert "1 pack file(s) without an index" in noted.stdout, noted.stdout
    age(store)
    expire_push_notes(str(store), None)
    repo.gitmodel("gc", "--remote", "origin")
    assert stray[0].exists()
    assert_branch_checks_out(tmp_path, git_env, "main", sha256(repo.path / MODEL))


def test_remote_gc_of_a_bare_repository_with_linked_work_trees_refuses(tmp_path: Path, git_env):
    """A bare repository with linked work trees (their indexes, HEADs and reflogs its own):
    a clone's gc --remote of its store removed what a work tree had staged, exit 0."""
    seed = make_repo(tmp_path / "seed", git_env)
    subprocess.run(["git", "clone", "-q", "--bare", str(seed.path), str(tmp_path / "hub.git")],
                   env=git_env, check=True)
    subprocess.run(["git", "-C", str(tmp_path / "hub.git"), "worktree", "add", "-q", str(tmp_path / "wt"), "main"],
                   env=git_env, check=True, capture_output=True)
    wt = Repo(tmp_path / "wt", git_env)
    wt.gitmodel("install")
    write_safetensors(wt.path / MODEL, random_model(1))
    wt.commit("v1", MODEL)
    staged = sha256(write_safetensors(wt.path / MODEL, random_model(2)))
    wt.git("add", MODEL)
    clone = Repo(tmp_path / "clone", git_env)
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(clone.path)], env=git_env,
                   check=True, capture_output=True)
    clone.gitmodel("install")
    refused = clone.gitmodel("gc", "--remote", "origin", "--keep-recent", "0", check=False)
    assert refused.returncode == 1 and "which has a work tree" in refused.stderr, refused.stderr
    (wt.path / MODEL).unlink()
    wt.git("checkout", "--", MODEL)
    assert sha256(wt.path / MODEL) == staged


def test_remote_gc_counts_a_git_remote_naming_the_same_store_another_way(tmp_path: Path, git_env):
    """`.gitmodel` names the store /x/models, git config names it /x/models/ for git remote
    fork: the same folder, but gc compared the spellings and left fork's refs out."""
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "fork.git")], check=True)
    repo.git("remote", "add", "fork", str(tmp_path / "fork.git"))
    repo.gitmodel("remote", "add", "--local", "fork", f"{store}/")
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    repo.git("checkout", "-q", "-b", "feature")
    write_safetensors(repo.path / MODEL, random_model(2))
    repo.commit("v2", MODEL)
    repo.git("push", "-q", "fork", "feature")
    repo.git("checkout", "-q", "main")
    repo.git("branch", "-q", "-D", "feature")
    repo.git("fetch", "-q", "fork")
    age(store)
    expire_push_notes(str(store), None)
    out = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert "removed 0 object(s)" in out.stdout and "of origin, fork" in out.stderr, out.stdout + out.stderr


def test_remote_gc_counts_a_git_remote_whose_branches_still_read_from_this_store(tmp_path: Path, git_env):
    """A branch pushed through git remote `backup` when its pushes went to this store; then
    backup got a store of its own. The branch's .gitmodel still sends its clones here, and
    a gc of origin's store removed its checkpoint, exit 0."""
    store = tmp_path / "storeA"
    repo = with_backup(tmp_path, git_env, store)
    write_safetensors(repo.path / MODEL, random_model(0))
    repo.commit("v0", MODEL)
    repo.git("push", "-q", "origin", "main")
    repo.git("switch", "-q", "-c", "exp")
    digest = sha256(write_safetensors(repo.path / MODEL, random_model(1)))
    repo.commit("exp v1", MODEL)
    repo.git("push", "-q", "backup", "exp")             # to storeA: backup has no store of its own
    repo.git("switch", "-q", "main")
    repo.git("branch", "-q", "-D", "exp")
    repo.gitmodel("remote", "add", "backup", str(tmp_path / "storeB"))
    repo.commit("backup gets its own store", ".gitmodel")
    repo.git("push", "-q", "origin", "main")
    age(store)
    expire_push_notes(str(store), None)
    out = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert "removed 0 object(s)" in out.stdout and "of origin, backup" in out.stderr, out.stdout + out.stderr
    assert_branch_checks_out(tmp_path, git_env, "exp", digest, hub="backup.git")


def test_two_remote_gcs_at_once_never_leave_versions_deltas_of_each_other(tmp_path: Path, git_env):
    """Regression (an exploration of concurrent commands): clone A's repack holds V2 as a
    delta of V1, clone B's V1 as a delta of V2. A's gc planned to rewrite the pack holding V2
    with its delta (V1 whole in another pack); meanwhile B's gc rewrote that other pack the
    other way round and removed it; then A rewrote and removed its own: both exit 0, both
    versions left there only as deltas of each other, every clone failed. A's last look now
    finds V2 readable only through V1's delta, which reads only through V2's, and keeps
    V2's old pack."""
    import sys
    rng = np.random.default_rng(1)                # packs over SMALL_PACK: not merged by size
    v1 = {"w": rng.standard_normal((2048, 1024)).astype(np.float32)}
    v2 = {"w": v1["w"] + rng.standard_normal((2048, 1024)).astype(np.float32) * 1e-4}
    seed = team(tmp_path, git_env, str(tmp_path / "store"), None)
    seed.git("config", "gitmodel.delta", "false")
    commits = {}
    for name, version, extra in (("V1", v1, 11), ("V2", v2, 12)):
        write_safetensors(seed.path / MODEL, version)
        seed.commit(name, MODEL)
        commits[name] = seed.out("rev-parse", "HEAD").strip()
        seed.git("switch", "-q", "-c", f"tmp{extra}")
        write_safetensors(seed.path / "g.safetensors",
                          {"g": rng.standard_normal((2048, 1024)).astype(np.float32)})
        seed.commit(f"G{extra}", "g.safetensors")
        commits[f"G{extra}"] = seed.out("rev-parse", "HEAD").strip()
        seed.git("push", "-q", "origin", f"tmp{extra}")       # one pack: V and G
        seed.git("switch", "-q", "main")
    seed.git("push", "-q", "origin", "main", ":tmp11", ":tmp12")
    age(tmp_path / "store")
    expire_push_notes(str(tmp_path / "store"), None)
    clones = {}
    for who in ("A", "B"):
        subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(tmp_path / who)],
                       env=git_env, check=True, capture_output=True)
        clones[who] = Repo(tmp_path / who, git_env)
        clones[who].gitmodel("install")
        clones[who].git("fetch", "-q", "origin", commits["G11"], commits["G12"])
        clones[who].gitmodel("fetch", "origin", commits["V1"], commits["V2"])
    a, b = clones["A"], clones["B"]
    a.git("switch", "-q", "-c", "back")
    a.git("checkout", commits["V1"], "--", MODEL)
    a.commit("back to V1", MODEL)
    a.gitmodel("repack")                                         # V2 a delta of V1
    b.gitmodel("repack")                                         # V1 a delta of V2
    b_gc = ["gitmodel", "gc", "--remote", "origin", "--keep-recent", "0", "--ref", commits["G12"]]
    done = subprocess.run(          # A plans, then B's whole gc runs, then A rewrites and removes
        [sys.executable, "-c", "import subprocess, sys\n"
         "from gitmodel.remote import collect\n"
         "real = collect._rewrite\n"
         "def b_first(*args, **kwargs):\n"
         f"    subprocess.run({b_gc!r}, cwd={str(b.path)!r}, check=True)\n"
         "    return real(*args, **kwargs)\n"
         "collect._rewrite = b_first\n"
         "from gitmodel.cli import main\n"
         f"sys.exit(main(['gc', '--remote', 'origin', '--keep-recent', '0', '--ref', {commits['G11']!r}]))"],
        cwd=a.path, env=git_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    fresh = Repo(tmp_path / "fresh", git_env)
    subprocess.run(["git", "clone", "-q", "-n", str(tmp_path / "hub.git"), str(fresh.path)],
                   env=git_env, check=True, capture_output=True)
    fresh.gitmodel("install")
    for name in ("V1", "V2"):
        fresh.git("checkout", "-q", commits[name])
        assert sha256(fresh.path / MODEL) == sha256(write_safetensors(tmp_path / f"{name}.st", v1 if name == "V1" else v2)), (fresh.path / MODEL).read_bytes()[:200]


def test_remote_gcs_after_force_pushes_that_reorder_versions_leave_no_chain(tmp_path: Path, git_env):
    """Three versions force-pushed in three orders, a remote gc after each (a pack of the
    day before still recent): the rewrite sent local deltas against bases the remote held
    only as deltas, and the second gc closed a cycle (A of B, B of C, C of A), both exit 0:
    every clone failed. Now a rewrite sends a delta only against a base the remote holds
    whole, and never turns a base that remote deltas use into a delta."""
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    start = repo.out("rev-parse", "HEAD").strip()
    rng = np.random.default_rng(0)
    weights = {"a": rng.standard_normal((768, 512)).astype(np.float32),
               "b": rng.standard_normal((384, 512)).astype(np.float32)}
    versions = {}
    for v in (1, 2, 3):
        weights = {k: w + (1e-3 * np.random.default_rng(100 + v).standard_normal(w.shape)).astype(np.float32)
                   for k, w in weights.items()}
        versions["ABC"[v - 1]] = dict(weights)

    def push(order: str) -> None:
        repo.git("reset", "-q", "--hard", start)
        for name in order:
            write_safetensors(repo.path / MODEL, versions[name])
            repo.commit(name, MODEL)
        repo.git("push", "-q", "-f", "origin", "main")
        repo.git("reflog", "expire", "--expire=now", "--all")
        repo.gitmodel("repack")

    def gc_keeping_recent(pack: Path) -> None:
        age(store, 3)
        os.utime(pack, None)
        os.utime(pack.with_suffix(".idx"), None)
        expire_push_notes(str(store), None)
        repo.gitmodel("gc", "--remote", "origin")

    push("CA")
    first = next((store / "packs").glob("*.pack"))
    age(store, 3)
    push("ABC")
    gc_keeping_recent(first)
    newest = max((store / "packs").glob("*.pack"), key=lambda p: p.stat().st_mtime)
    push("ACB")
    gc_keeping_recent(newest)
    sums = [sha256(write_safetensors(tmp_path / f"{name}.safetensors", versions[name])) for name in "ACB"]
    clone = Repo(tmp_path / "clone", git_env)
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(clone.path)], env=git_env,
                   check=True, capture_output=True)
    clone.gitmodel("install")
    for back, digest in enumerate(reversed(sums)):
        clone.git("checkout", "-q", f"main~{back}")
        (clone.path / MODEL).unlink()
        clone.git("checkout", "--", MODEL)
        assert sha256(clone.path / MODEL) == digest, back
    assert "0 problem(s)" in clone.gitmodel("fsck", "--remote", "origin", "--all").stdout


def test_the_fetch_gc_names_for_missing_branches_and_review_refs_brings_them_all(tmp_path: Path, git_env):
    """A branch and a review ref both missing here: gc said `git fetch origin refs/pull/1/head`,
    whose explicit refspec replaces the configured one, so the branch was still missing."""
    repo = team(tmp_path, git_env, str(tmp_path / "store"), None)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    clone = Repo(tmp_path / "clone", git_env)
    subprocess.run(["git", "clone", "-q", "--no-local", str(tmp_path / "hub.git"), str(clone.path)],
                   env=git_env, check=True, capture_output=True)
    clone.gitmodel("install")
    repo.git("checkout", "-q", "-b", "feature")
    write_safetensors(repo.path / MODEL, random_model(2))
    repo.commit("review", MODEL)
    repo.git("push", "-q", "origin", "HEAD:refs/pull/1/head")
    write_safetensors(repo.path / MODEL, random_model(3))
    repo.commit("feature", MODEL)
    repo.git("push", "-q", "origin", "feature")
    refused = clone.gitmodel("gc", "--remote", "origin", "--dry-run", check=False)
    assert refused.returncode == 1, refused.stderr
    assert ("Nothing was removed. Run `git fetch origin && git fetch origin refs/pull/1/head` "
            "first, then gc again") in refused.stderr, refused.stderr
    command = refused.stderr.split("Run `", 1)[1].split("`", 1)[0]
    subprocess.run(command, shell=True, cwd=clone.path, env=git_env, check=True, capture_output=True)
    assert clone.gitmodel("gc", "--remote", "origin", "--dry-run").returncode == 0


def test_gc_of_a_remote_with_a_damaged_index_names_the_remote_in_its_repair(tmp_path: Path, git_env):
    """The repair said `gitmodel fsck --remote NAME --all --repair`, NAME literally."""
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    index = next((store / "packs").glob("*.idx"))
    os.chmod(index, 0o644)
    index.write_bytes(index.read_bytes()[:50])
    clone = Repo(tmp_path / "clone", dict(git_env, GITMODEL_SKIP_SMUDGE="1"))   # reads it afresh
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(clone.path)], env=clone.env,
                   check=True, capture_output=True)
    clone.gitmodel("install")
    refused = clone.gitmodel("gc", "--remote", "origin", "--dry-run", check=False)
    assert refused.returncode == 1, refused.stderr
    assert "run `gitmodel fsck --remote origin --all --repair` to upload again" in refused.stderr, \
        refused.stderr
