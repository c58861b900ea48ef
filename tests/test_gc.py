"""Garbage collection of the local store, through real git: what git keeps stays exact, what it
dropped goes, and a gc racing adds loses nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import Repo, make_repo, random_model, sha256, write_safetensors
from test_deltas import MODEL, assert_versions_exact, fine_tune, packs_size, series


def age_packs(store: Path, days: float = 2.0) -> None:
    """Make every pack look written `days` ago (older than gc's default grace)."""
    then = time.time() - days * 86400
    for pack in (store / "packs").glob("pack-*"):
        os.utime(pack, (then, then))


def drop_newest(repo: Repo, count: int) -> None:
    """Forget the newest `count` commits everywhere git keeps them."""
    repo.git("reset", "-q", "--hard", f"HEAD~{count}")
    repo.git("reflog", "expire", "--expire=now", "--all")


def gc(repo: Repo, *args: str) -> subprocess.CompletedProcess:
    return repo.gitmodel("gc", *args)


@pytest.mark.parametrize("deltas", [False, True])
def test_gc_returns_the_store_to_the_size_of_the_surviving_versions(tmp_path: Path, git_env, deltas):
    repo = make_repo(tmp_path / "repo", git_env)
    repo.git("config", "gitmodel.delta", "true" if deltas else "false")
    sums = series(repo, 6)
    if deltas:
        repo.gitmodel("repack")
    drop_newest(repo, 3)
    before = packs_size(repo.store)
    out = gc(repo, "--keep-recent", "0")
    assert "removed" in out.stdout
    # The repack it runs first (the keyframe is dropped) is said, so the bytes freed add up.
    assert ("repacked first: " in out.stderr) == deltas, out.stderr
    assert_versions_exact(repo, sums[:3])

    # The same three versions added to a fresh repository (and repacked alike).
    alone = make_repo(tmp_path / "alone", git_env)
    alone.git("config", "gitmodel.delta", "true" if deltas else "false")
    for v, (digest, rev) in enumerate(zip(sums[:3], ["HEAD~2", "HEAD~1", "HEAD"])):
        repo.git("checkout", rev, "--", MODEL)
        (alone.path / MODEL).write_bytes((repo.path / MODEL).read_bytes())
        alone.commit(f"v{v}", MODEL)
    repo.git("checkout", "HEAD", "--", MODEL)
    if deltas:
        alone.gitmodel("repack")
    after, reference = packs_size(repo.store), packs_size(alone.store)
    assert after < before * 0.6
    assert after <= reference * 1.05, (after, reference)
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all").stdout


def test_a_repack_does_not_make_old_garbage_recent_again(tmp_path: Path, git_env):
    """Every push repacks, and a repack copies the records of the packs it rewrites into new
    packs: the dropped versions' records counted as stored that day, so a gc with the default
    --keep-recent freed nothing, day after day."""
    repo = make_repo(tmp_path / "repo", git_env)
    sums = series(repo, 6)
    repo.gitmodel("repack")
    drop_newest(repo, 3)
    age_packs(repo.store)
    for seed in (77, 78):                         # that day, two pushes (each repacks first):
        write_safetensors(repo.path / MODEL, fine_tune(random_model(0, layers=4, width=384), seed))
        repo.commit(f"version {seed}", MODEL)     # the second's repack rewrote the old pack
        repo.gitmodel("repack")                   # and the morning's into one (a review's case)
    out = gc(repo)                                # keeps what was stored in the last day
    assert int(re.search(r"removed (\d+) object", out.stdout).group(1)) > 0, out.stdout
    left = gc(repo, "--keep-recent", "0", "--dry-run").stdout
    assert "removed 0 object(s)" in left or "would remove 0 object(s)" in left, left
    repo.git("checkout", "HEAD~2", "--", MODEL)
    assert sha256(repo.path / MODEL) == sums[2]


def test_gc_keeps_what_was_stored_recently_and_dry_run_removes_nothing(repo: Repo):
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v0", MODEL)
    write_safetensors(repo.path / MODEL, random_model(2))
    repo.git("add", MODEL)                        # stored, then dropped: garbage, but recent
    repo.git("reset", "-q", "--hard")
    size = packs_size(repo.store)

    assert "removed 0 object(s)" in gc(repo).stdout      # inside the grace period
    size = packs_size(repo.store)                 # (its small packs merged into one)

    age_packs(repo.store)
    dry = gc(repo, "--dry-run")
    assert "would remove" in dry.stdout and packs_size(repo.store) == size
    reclaimable = float(re.search(r"\(([\d.]+) MiB reclaimable\)", dry.stdout).group(1))
    assert reclaimable > 1.0

    gc(repo)
    freed = (size - packs_size(repo.store)) / (1 << 20)
    assert abs(freed - reclaimable) < 0.2, (freed, reclaimable)
    repo.git("checkout", "--", MODEL)
    assert sha256(repo.path / MODEL) == sha256(write_safetensors(repo.path / "x.bin", random_model(1)))


def test_what_is_stored_while_gc_waits_for_writers_is_recent(repo: Repo, tmp_path: Path):
    """gc decided what was stored recently from the packs it listed before waiting for the
    processes writing: a checkpoint a script stored meanwhile (`git hash-object -w`, to
    commit later) was removed as garbage, and the sizes it reported were off by its pack."""
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v0", MODEL)
    age_packs(repo.store)
    holder = subprocess.Popen(                       # a git command still writing
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.flock(fd, fcntl.LOCK_SH); print('held', flush=True); sys.stdin.read()",
         str(repo.store / "gc.lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    waiting = subprocess.Popen(["gitmodel", "gc"], cwd=repo.path, env=repo.env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert "waiting for the processes writing" in waiting.stderr.readline()
        model = write_safetensors(tmp_path / "v1.safetensors", random_model(2))
        blob = repo.git("hash-object", "-w", "--path", MODEL, str(model)).stdout.decode().strip()
    finally:
        holder.stdin.close()
        holder.wait()
        out, err = waiting.communicate()
    assert waiting.returncode == 0, err
    assert "removed 0 object(s)" in out and "more:" not in out, out
    repo.git("update-index", "--cacheinfo", f"100644,{blob},{MODEL}")
    repo.git("commit", "-q", "-m", "v1 from a script")
    repo.git("checkout", "--", MODEL)
    assert sha256(repo.path / MODEL) == sha256(model)


def test_gc_keeps_stash_index_reflog_worktrees_and_other_branches(repo: Repo):
    digests = _held_everywhere(repo)
    out = gc(repo)
    removed = int(re.search(r"removed (\d+) object", out.stdout).group(1))
    assert removed > 0                            # the dropped file's chunks went
    _assert_held_everywhere(repo, digests)


def _held_everywhere(repo: Repo) -> dict[str, str]:
    """A checkpoint in each place git keeps one (committed, stashed, staged, only in a reflog,
    in another worktree's index, on another branch), one dropped (the only garbage), every
    pack old enough for gc: each kept checkpoint's sha256."""
    models = {name: random_model(seed) for seed, name in enumerate(
        ["committed", "stashed", "staged", "reflog", "worktree", "branch"], start=10)}
    digests = {}

    def put(name: str, path: Path) -> None:
        digests[name] = sha256(write_safetensors(path / MODEL, models[name]))

    put("reflog", repo.path)
    repo.commit("reflog", MODEL)                  # kept only by the reflog after the reset
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.git("checkout", "-q", "-b", "side")
    put("branch", repo.path)
    repo.commit("branch", MODEL)
    repo.git("checkout", "-q", "main")
    put("committed", repo.path)
    repo.commit("committed", MODEL)
    put("stashed", repo.path)
    repo.git("stash", "-q")
    repo.git("worktree", "add", "-q", "-b", "wt", str(repo.path.parent / "wt"))
    put("worktree", repo.path.parent / "wt")
    Repo(repo.path.parent / "wt", repo.env).git("add", MODEL)     # the other worktree's index
    write_safetensors(repo.path / "staged.safetensors", models["staged"])
    digests["staged"] = sha256(repo.path / "staged.safetensors")
    repo.git("add", "staged.safetensors")
    write_safetensors(repo.path / "dropped.safetensors", random_model(99))
    repo.git("add", "dropped.safetensors")        # the only garbage
    repo.git("rm", "-q", "--cached", "dropped.safetensors")
    (repo.path / "dropped.safetensors").unlink()
    age_packs(repo.store)
    return digests


def _assert_held_everywhere(repo: Repo, digests: dict[str, str]) -> None:
    """Each checkpoint _held_everywhere put somewhere checks out exact from there."""
    repo.git("rm", "-q", "--cached", "staged.safetensors")
    (repo.path / "staged.safetensors").unlink()
    repo.git("stash", "pop", "-q")
    assert sha256(repo.path / MODEL) == digests["stashed"]
    repo.git("reset", "-q", "--hard")
    assert sha256(repo.path / MODEL) == digests["committed"]
    repo.git("checkout", "-q", "side", "--", MODEL)
    assert sha256(repo.path / MODEL) == digests["branch"]
    reflog = repo.out("reflog", "--format=%H %s").splitlines()
    lost = next(line.split()[0] for line in reflog if line.endswith(" reflog"))
    repo.git("checkout", "-q", lost, "--", MODEL)
    assert sha256(repo.path / MODEL) == digests["reflog"]
    wt = Repo(repo.path.parent / "wt", repo.env)
    (wt.path / MODEL).unlink()
    wt.git("checkout", "--", MODEL)
    assert sha256(wt.path / MODEL) == digests["worktree"]


def test_gc_goes_on_past_a_damaged_pointer_that_names_nothing_and_keeps_what_git_keeps(repo: Repo):
    """A pointer edited by hand down to no content line, committed on a branch and in a
    commit only a reflog holds (mended as `gitmodel status` said: the old commit stays in
    the reflog): gc removed nothing ("the checkpoint it was meant to name is unknown") until
    every reflog holding it expired, which `git reflog expire --expire=now --all` hastens
    only by dropping the reflogs' protection of everything else. It names nothing gc could
    keep, so gc says so and goes on: every checkpoint a readable pointer names, wherever
    git keeps it, stays exact, and the garbage goes."""
    commits, blobs = [], []
    for size in (1, 2):
        blobs.append(repo.git("hash-object", "-w", "--stdin",
                              input=f"gitmodel pointer v1\nsize {size}\n".encode()).stdout.decode().strip())
        repo.git("update-index", "--add", "--cacheinfo", f"100644,{blobs[-1]},{MODEL}")
        repo.git("commit", "-q", "-m", "edited")
        commits.append(repo.out("rev-parse", "HEAD").strip())
        if size == 1:
            repo.git("branch", "edited")          # a branch holds the first
        repo.git("reset", "-q", "--hard", "HEAD~1")
    digests = _held_everywhere(repo)
    status = repo.gitmodel("status").stdout
    assert re.search(r"^store: [\d.]+ \S+, [\d.]+ \S+ reclaimable by `gitmodel gc`$", status, re.M), status
    out = gc(repo)
    for commit, blob in zip(commits, blobs):
        assert (f"gitmodel: gc: note: {MODEL} in commit {commit[:12]} is a damaged pointer (blob "
                f"{blob[:12]}): missing or bad content id; it names no checkpoint, so there is nothing "
                "to keep for it (the checkpoint of every pointer that can be read is kept). A branch "
                "that holds it: `gitmodel status` says how to rewrite its commit; a reflog entry "
                "expires with the reflog\n") in out.stderr, out.stderr
    assert int(re.search(r"removed (\d+) object", out.stdout).group(1)) > 0, out.stdout
    _assert_held_everywhere(repo, digests)


def test_a_quiet_gc_still_names_the_damaged_pointer_it_went_past(repo: Repo):
    """`gitmodel gc -q` silenced the note naming a damaged pointer along with its progress:
    exit 0, and nothing told the user a branch held a pointer that names no checkpoint."""
    blob = repo.git("hash-object", "-w", "--stdin",
                    input=b"gitmodel pointer v1\nsize 1\n").stdout.decode().strip()
    repo.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{MODEL}")
    repo.git("commit", "-q", "-m", "edited")
    commit = repo.out("rev-parse", "HEAD").strip()
    quiet = repo.gitmodel("gc", "-q")
    assert quiet.returncode == 0
    assert quiet.stderr == (f"gitmodel: gc: note: {MODEL} in commit {commit[:12]} is a damaged pointer "
                            f"(blob {blob[:12]}): missing or bad content id; it names no checkpoint, so "
                            "there is nothing to keep for it (the checkpoint of every pointer that can "
                            "be read is kept). A branch that holds it: `gitmodel status` says how to "
                            "rewrite its commit; a reflog entry expires with the reflog\n"), quiet.stderr


def test_gc_removes_nothing_while_a_pointer_of_a_newer_gitmodel_is_kept(repo: Repo):
    """What a newer version's pointer names cannot be read here: not damage, and gc must not
    take it for a pointer that names nothing."""
    write_safetensors(repo.path / "dropped.safetensors", random_model(5))
    repo.git("add", "dropped.safetensors")
    repo.git("rm", "-q", "--cached", "dropped.safetensors")       # garbage, were gc to go on
    newer = repo.git("hash-object", "-w", "--stdin", input=b"gitmodel pointer v2\nmanifest x\n").stdout.decode().strip()
    repo.git("update-index", "--add", "--cacheinfo", f"100644,{newer},{MODEL}")
    repo.git("commit", "-q", "-m", "from a newer gitmodel")
    age_packs(repo.store)
    packs = sorted(p.name for p in (repo.store / "packs").iterdir())
    refused = repo.gitmodel("gc", check=False)
    assert refused.returncode == 1, refused
    assert refused.stderr.startswith(f"gitmodel: error: {MODEL} in commit {repo.out('rev-parse', 'HEAD')[:12]} "
                                     f"is a pointer of a newer gitmodel (blob {newer[:12]}): "), refused.stderr
    assert refused.stderr.endswith("Nothing was removed: what it names cannot be read here. Run `pip "
                                   "install --upgrade gitmodel`, then gc again\n"), refused.stderr
    assert sorted(p.name for p in (repo.store / "packs").iterdir()) == packs


@pytest.mark.parametrize("operation", ["rebase", "merge", "rebase in a linked worktree"])
def test_gc_keeps_the_work_an_autostash_holds(repo: Repo, operation: str):
    """`git rebase --autostash` (or `merge --autostash`) stopped on a conflict keeps the work
    tree's changes in a commit only `.git/rebase-merge/autostash` (`MERGE_AUTOSTASH`) names:
    a gc meanwhile removed the edited checkpoint, and the stash git made of it when the
    operation ended could never be applied."""
    (repo.path / "notes.txt").write_text("base\n")
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("base")
    repo.git("checkout", "-q", "-b", "side")
    (repo.path / "notes.txt").write_text("side\n")
    repo.commit("side")
    repo.git("checkout", "-q", "main")
    (repo.path / "notes.txt").write_text("main\n")
    repo.commit("main")
    where = repo
    if operation.endswith("worktree"):
        where = Repo(repo.path.parent / "wt", repo.env)
        repo.git("worktree", "add", "-q", "-b", "wt", str(where.path))
    edited = sha256(write_safetensors(where.path / MODEL, random_model(2)))
    where.git("add", MODEL)                   # stored now, and back out of the index: only the
    where.git("reset", "-q")                  # work tree and, soon, the autostash hold it
    command = ["rebase", "--autostash", "side"] if operation.startswith("rebase") else \
        ["merge", "--autostash", "side"]
    assert where.git(*command, check=False).returncode != 0          # notes.txt conflicts
    assert sha256(where.path / MODEL) != edited                       # stashed away
    age_packs(repo.store)
    gc(repo)
    (where.path / "notes.txt").write_text("both\n")
    where.git("add", "notes.txt")
    if operation.startswith("rebase"):
        where.env = dict(where.env, GIT_EDITOR="true")
        where.git("rebase", "--continue")
    else:
        where.git("commit", "-q", "--no-edit")
    assert sha256(where.path / MODEL) == edited                       # the autostash applied


def test_gc_keeps_the_history_a_graft_hides(repo: Repo):
    """`git replace --graft` hides the history before a commit, which git keeps (and which a
    clone without the replace refs reads): gc walked the replacements and removed it, exit 0."""
    sums = []
    for seed in range(3):
        sums.append(sha256(write_safetensors(repo.path / MODEL, random_model(seed))))
        repo.commit(f"v{seed}", MODEL)
    repo.git("replace", "--graft", "HEAD~1")
    repo.git("reflog", "expire", "--expire=now", "--all")
    age_packs(repo.store)
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all").stdout
    out = gc(repo, "--keep-recent", "0")
    assert "removed 0 object(s)" in out.stdout, out.stdout
    repo.git("replace", "-d", repo.out("replace", "-l").strip())
    repo.git("checkout", "-q", "HEAD~2", "--", MODEL)
    assert sha256(repo.path / MODEL) == sums[0]
    # The same with the old graft file, which git's gc also reads past
    repo.git("reset", "-q", "--hard")                  # the index no longer holds v0
    graft = repo.path / ".git" / "info" / "grafts"
    graft.parent.mkdir(exist_ok=True)
    graft.write_text(repo.out("rev-parse", "HEAD~1"))
    age_packs(repo.store)
    out = gc(repo, "--keep-recent", "0")
    assert "removed 0 object(s)" in out.stdout, out.stdout
    graft.unlink()
    repo.git("checkout", "-q", "HEAD~2", "--", MODEL)
    assert sha256(repo.path / MODEL) == sums[0]


def test_gc_racing_twenty_concurrent_adds_loses_nothing(repo: Repo):
    """The dangerous case: adds whose chunks the store already holds as garbage (so they store
    nothing new for them) while gc, with no grace period, removes garbage in a loop."""
    base = random_model(5, layers=6, width=256)
    write_safetensors(repo.path / MODEL, base)
    repo.git("add", MODEL)
    repo.git("reset", "-q", "--hard")             # base's chunks: garbage from here
    workers = []
    for i in range(20):
        path = repo.path.parent / f"w{i}"
        repo.git("worktree", "add", "-q", "-b", f"w{i}", str(path))
        model = dict(base)
        model[f"layers.{i % 6}.bias"] = model[f"layers.{i % 6}.bias"] + np.float32(i + 1)
        write_safetensors(path / MODEL, model)
        workers.append((Repo(path, repo.env), sha256(path / MODEL)))

    stop = time.monotonic() + 120
    log = repo.path.parent / "gc.log"
    collector = subprocess.Popen(
        ["bash", "-c", "while [ ! -e ../stop-gc ]; do gitmodel gc -q --keep-recent 0 --wait 120 || exit 1; done"],
        cwd=repo.path, env=repo.env, stdout=log.open("w"), stderr=subprocess.PIPE)
    try:
        # Staggered, so that gc runs between adds as well as while they run.
        script = f"git add {MODEL} && git commit -q -m add"
        adds = [subprocess.Popen(["bash", "-c", f"sleep {0.25 * i}; {script}"], cwd=w.path,
                                 env=repo.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for i, (w, _) in enumerate(workers)]
        for add in adds:
            add.wait(timeout=max(1, stop - time.monotonic()))
            assert add.returncode == 0, add.stderr.read().decode()
        # Several gcs around the adds (on a loaded machine fewer fit among them: wait for them).
        while log.read_text().count("object(s); packs") < 3 and time.monotonic() < stop \
                and collector.poll() is None:
            time.sleep(0.2)
    finally:
        (repo.path.parent / "stop-gc").touch()
        collector.wait(timeout=120)
    runs = log.read_text().count("object(s); packs")
    assert collector.returncode == 0, collector.stderr.read().decode()
    assert runs >= 3, runs
    gc(repo, "--keep-recent", "0")
    for w, digest in workers:
        (w.path / MODEL).unlink()
        w.git("checkout", "--", MODEL)
        assert sha256(w.path / MODEL) == digest, w.path.name
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all").stdout


def test_gc_keeps_the_bases_of_deltas_it_does_not_re_encode(tmp_path: Path, git_env):
    """With deltas off, a version dropped from history still serves as the base of older ones."""
    repo = make_repo(tmp_path / "repo", git_env)
    sums = series(repo, 3)
    repo.gitmodel("repack")                       # v0, v1: deltas against v2
    repo.git("config", "gitmodel.delta", "false")
    drop_newest(repo, 1)
    gc(repo, "--keep-recent", "0")
    assert_versions_exact(repo, sums[:2])


def test_gc_keeps_a_whole_copy_of_every_base_a_kept_delta_needs(tmp_path: Path):
    """A repack cut short, then a revert and a second repack, left two chunks stored whole in
    one pack and as deltas of each other in two others. gc kept a copy of each (the deltas,
    in packs it kept) and dropped the whole copies from the pack it rewrote: a cycle of
    deltas, both chunks lost, exit 0."""
    import blake3
    from gitmodel.store import codec
    from gitmodel.store.gc import collect
    from gitmodel.store.manifest import Manifest
    from gitmodel.store.objects import CHUNK, MANIFEST, Store

    rng = np.random.default_rng(1)
    x = rng.standard_normal(1 << 14).astype(np.float32)
    y = (x + np.float32(1e-4) * rng.standard_normal(x.size).astype(np.float32)).tobytes()
    x = x.tobytes()
    ids = {data: blake3.blake3(data).digest() for data in (x, y)}
    fillers = [rng.bytes(1 << 20) for _ in range(18)]      # 9 MiB a pack: big enough to keep it
    chunks = [(blake3.blake3(d).digest(), len(d)) for d in (x, y, *fillers)]
    manifest = Manifest(sum(n for _, n in chunks), chunks).encode()
    root = blake3.blake3(manifest).digest()
    store = Store(tmp_path / "store")

    def pack(*records):
        writer = store.writer()
        for oid, kind, (encoding, payload), length in records:
            writer.add(oid, kind, encoding, length, payload)
        store.publish(writer)

    def whole(data, kind=CHUNK):
        return blake3.blake3(data).digest(), kind, codec.encode(data, 4), len(data)

    def delta(data, base):
        return ids[data], CHUNK, (codec.DELTA, codec.encode_delta(data, base, [ids[base]], 0, 4)), len(data)

    garbage = rng.bytes(1 << 20)
    pack(whole(x), whole(y), whole(garbage), whole(manifest, MANIFEST))    # rewritten by gc
    pack(delta(x, y), *map(whole, fillers[:9]))
    pack(delta(y, x), *map(whole, fillers[9:]))
    report = collect(store, [root])
    assert report.count("rewrite") == 1 and report.count("keep") == 2, report.packs
    store.close()
    store = Store(tmp_path / "store")
    for data in (x, y, *fillers):
        assert store.read(blake3.blake3(data).digest()) == data
    assert not store.has(blake3.blake3(garbage).digest())
    store.close()


def test_gc_rewriting_a_delta_then_a_whole_copy_into_one_pack_keeps_both(tmp_path: Path):
    """The same copies in small packs, all rewritten into one, the deltas' pack first: the
    pack writer kept the delta copy it met first and dropped the whole copy after it."""
    import blake3
    from gitmodel.store import codec
    from gitmodel.store.gc import collect
    from gitmodel.store.manifest import Manifest
    from gitmodel.store.objects import CHUNK, MANIFEST, Store

    rng = np.random.default_rng(2)
    x = rng.standard_normal(1 << 14).astype(np.float32)
    y = (x + np.float32(1e-4) * rng.standard_normal(x.size).astype(np.float32)).tobytes()
    x = x.tobytes()
    ids = {data: blake3.blake3(data).digest() for data in (x, y)}
    manifest = Manifest(len(x) + len(y), [(ids[x], len(x)), (ids[y], len(y))]).encode()
    root = blake3.blake3(manifest).digest()
    for attempt in range(64):                 # pack names are hashes: find an order
        store = Store(tmp_path / f"store{attempt}")
        writer = store.writer()
        for data, base in ((x, y), (y, x)):   # deltas of each other
            writer.add(ids[data], CHUNK, codec.DELTA, len(data),
                       codec.encode_delta(data, base, [ids[base]], 0, 4))
        garbage = bytes([attempt]) * 64
        writer.add(blake3.blake3(garbage).digest(), CHUNK, codec.RAW, len(garbage), garbage)
        store.publish(writer)
        deltas = store.packs()[0]
        writer = store.writer()
        for data, kind, width in ((x, CHUNK, 4), (y, CHUNK, 4), (manifest, MANIFEST, 1)):
            encoding, payload = codec.encode(data, width)
            writer.add(blake3.blake3(data).digest(), kind, encoding, len(data), payload)
        store.publish(writer)
        if store.packs()[0] == deltas:
            break
        store.close()
    else:
        pytest.fail("no order found")
    report = collect(store, [root])
    assert report.count("rewrite") == 2, report.packs
    store.close()
    store = Store(tmp_path / f"store{attempt}")
    assert store.read(ids[x]) == x and store.read(ids[y]) == y
    store.close()


def test_gc_refuses_when_a_live_checkpoint_cannot_be_read(repo: Repo):
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v0", MODEL)
    pointer = repo.out("cat-file", "-p", f"HEAD:{MODEL}")
    content = next(line.split()[1] for line in pointer.splitlines() if line.startswith("content "))
    from gitmodel.store.objects import Store
    store = Store(repo.store)
    entry = store.locate(bytes.fromhex(content))
    store.close()
    pack = repo.store / "packs" / f"{entry.pack}.pack"
    os.chmod(pack, 0o644)
    data = bytearray(pack.read_bytes())
    data[entry.offset + 60] ^= 0xFF               # inside the manifest's record
    pack.write_bytes(bytes(data))
    age_packs(repo.store)
    size = packs_size(repo.store)
    result = repo.gitmodel("gc", "--keep-recent", "0", check=False)
    assert result.returncode == 1
    assert "cannot be read" in result.stderr and "Nothing was removed" in result.stderr
    assert "Traceback" not in result.stderr
    assert packs_size(repo.store) == size


def test_a_git_add_waits_for_a_running_gc_and_says_so(repo: Repo):
    import fcntl
    write_safetensors(repo.path / MODEL, random_model(3))
    repo.commit("v0", MODEL)                      # the store and its gc.lock exist
    fd = os.open(repo.store / "gc.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)                # as gc holds it
    try:
        digest = sha256(write_safetensors(repo.path / MODEL, random_model(4)))
        add = subprocess.Popen(["git", "add", MODEL], cwd=repo.path, env=repo.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The lock is held until the add says it waits: a fixed sleep failed on a loaded
        # machine, where the filter had not reached the store before the lock was let go.
        said, waiting = [], threading.Event()

        def read_stderr():
            for line in add.stderr:
                said.append(line.decode())
                waiting.set() if "waiting for a gc" in said[-1] else None
            waiting.set()                     # the add ended: whatever it said is in
        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        waiting.wait(timeout=60)
        assert "waiting for a gc" in "".join(said), f"the add never said it waits: {''.join(said)!r}"
        time.sleep(0.5)
        assert add.poll() is None, "the add went on while gc held the store"
    finally:
        os.close(fd)
    assert add.wait(timeout=60) == 0
    reader.join(timeout=10)
    (repo.path / MODEL).unlink()
    repo.git("checkout", "--", MODEL)             # from the index: what the add stored
    assert sha256(repo.path / MODEL) == digest
    repo.commit("v1", MODEL)
    assert "0 problem(s)" in repo.gitmodel("fsck").stdout


def test_a_writer_opened_before_a_gc_does_not_count_removed_objects_as_stored(repo: Repo):
    """A filter process reads the store's table when it opens the store, and may wait for the
    gc lock meanwhile; what gc removed must then count as absent, or its add would not store
    those chunks again (the CI failure of the race test above)."""
    from gitmodel.store.objects import Store
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v0", MODEL)
    write_safetensors(repo.path / MODEL, random_model(2))
    repo.git("add", MODEL)
    repo.git("reset", "-q", "--hard")             # the second version: garbage
    early = Store(repo.store)                     # its table read before the gc
    before = {oid: entry.pack for oid, entry in early.entries()}
    gc(repo, "--keep-recent", "0")
    after = Store(repo.store)
    removed = [oid for oid in before if not after.has(oid)]
    after.release()
    assert removed
    try:
        early.writer().abort()                    # takes the writers' lock, as an add does
        assert not any(early.has(oid) for oid in removed)
    finally:
        early.release()


def test_gc_refuses_while_a_pack_has_no_usable_index(repo: Repo):
    """A pack whose index is damaged (or that another process is indexing) hides which
    checkpoints it holds: the chunks of a live checkpoint whose manifest is in it would look
    like garbage. gc stops and names the repair instead of removing anything."""
    model = random_model(4)
    repo.git("checkout", "-q", "-b", "side")
    write_safetensors(repo.path / MODEL, model, metadata={"run": "old"})
    repo.commit("old", MODEL)                     # its chunks: in the packs of this commit
    repo.git("checkout", "-q", "main")
    write_safetensors(repo.path / MODEL, model, metadata={"run": "new"})   # the same chunks
    before = set((repo.store / "packs").glob("*.idx"))
    repo.commit("new", MODEL)
    (index,) = set((repo.store / "packs").glob("*.idx")) - before      # the new manifest's
    repo.git("branch", "-q", "-D", "side")        # `old` is garbage; its chunks are not
    drop_newest(repo, 0)
    os.chmod(index, 0o644)
    index.write_bytes(index.read_bytes()[:-7])                          # damaged
    age_packs(repo.store)
    size = packs_size(repo.store)
    result = repo.gitmodel("gc", "--keep-recent", "0", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "fsck --repair" in result.stderr and "Nothing was removed" in result.stderr
    assert packs_size(repo.store) == size
    # The dry run and status say the same (they promised MiB the gc then refused to free).
    dry = repo.gitmodel("gc", "--keep-recent", "0", "--dry-run", check=False)
    assert dry.returncode == 1 and "no usable index" in dry.stderr, dry.stdout + dry.stderr
    status = repo.gitmodel("status").stdout
    assert "no usable index" in status and "MiB reclaimable" not in status, status
    on_disk = sum(p.stat().st_size for p in (repo.store / "packs").glob("*.pack"))
    assert json.loads(repo.gitmodel("status", "--json").stdout)["store_bytes"] == on_disk
    repo.gitmodel("fsck", "--repair")
    gc(repo, "--keep-recent", "0")
    (repo.path / MODEL).unlink()
    repo.git("checkout", "--", MODEL)
    assert sha256(repo.path / MODEL) == sha256(write_safetensors(repo.path.parent / "expected", model,
                                                                 metadata={"run": "new"}))


def test_gc_options_refs_and_leftovers_say_what_is_wrong(repo: Repo, tmp_path: Path):
    """`--keep-recent nan` behaved as 0 and `--wait -5` was taken; a misspelt `--ref` said to
    check the repository with git fsck; a `--local` remote could not be removed without being
    told so; a killed writer's temporary file in the store survived every gc."""
    write_safetensors(repo.path / MODEL, random_model(5, layers=1))
    repo.commit("v1")
    for option, value in (("--keep-recent", "nan"), ("--keep-recent", "-1"), ("--wait", "-5")):
        refused = repo.gitmodel("gc", option, value, check=False)
        assert refused.returncode == 2 and "is not a number of 0 or more" in refused.stderr
    repo.gitmodel("remote", "add", "--local", "backup", str(tmp_path / "backup"))
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    repo.git("remote", "add", "backup", str(tmp_path / "hub.git"))
    typo = repo.gitmodel("gc", "--remote", "backup", "--ref", "mian", check=False)
    assert typo.returncode == 1 and "unknown revision 'mian'" in typo.stderr and "fsck" not in typo.stderr
    kept = repo.gitmodel("remote", "remove", "backup", check=False)
    assert kept.returncode == 1 and "gitmodel remote remove --local backup" in kept.stderr
    dead = repo.store / "tmp" / "pack-leftover.tmp"
    dead.parent.mkdir(exist_ok=True)
    dead.write_bytes(b"\0" * 1000)
    os.utime(dead, (time.time() - 60, time.time() - 60))
    swept = repo.gitmodel("gc")
    assert not dead.exists() and "removed 1 temporary file(s)" in swept.stderr
