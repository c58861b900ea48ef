"""`gitmodel gc --remote`: a folder remote and a real S3 API server (moto) on 127.0.0.1, through
git itself."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Repo, make_repo, random_model, sha256, write_safetensors
from test_remotes import S3_ENV, s3, s3_server  # noqa: F401  (fixtures)

MODEL = "model.safetensors"


def remote_bytes(url: str, options: dict | None) -> int:
    import fsspec
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    fs.invalidate_cache()
    return sum(info["size"] for info in fs.ls(f"{path}/packs", detail=True)
               if info["name"].endswith(".pack"))


def team(tmp_path: Path, env: dict, url: str, options: dict | None) -> Repo:
    repo = make_repo(tmp_path / "work", env)
    args = [f"--option=endpoint_url={options['endpoint_url']}"] if options else []
    repo.gitmodel("remote", "add", "origin", url, *args)
    repo.commit("remote", ".gitmodel")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    repo.git("remote", "add", "origin", str(tmp_path / "hub.git"))
    return repo


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

    dry = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0", "--dry-run")
    reclaimable = float(re.search(r"\(([\d.]+) MiB reclaimable\)", dry.stdout).group(1))
    assert remote_bytes(url, options) == before
    out = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    after = remote_bytes(url, options)
    assert after < before * 0.6
    assert abs((before - after) / (1 << 20) - reclaimable) < 0.1
    assert "2 pack(s) removed" in out.stdout

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
    then = time.time() - days * 86400
    for pack in (folder / "packs").glob("pack-*"):
        os.utime(pack, (then, then))


def test_a_push_relying_on_old_objects_is_protected_from_a_concurrent_remote_gc(tmp_path: Path, git_env):
    """The race: a clone pushes a checkpoint whose objects the remote holds only as garbage
    (no remote ref names it) while a remote gc runs. The push re-sends the manifest, in a
    recent pack, before git updates the ref; the gc keeps what recent manifests need."""
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    repo.git("checkout", "-q", "-b", "exp")
    digest = sha256(write_safetensors(repo.path / MODEL, random_model(2)))
    repo.commit("exp", MODEL)
    repo.git("push", "-q", "origin", "exp")
    repo.git("push", "-q", "origin", ":exp")            # the remote forgets the branch
    age(store)                                          # and its packs are old

    # Without a re-sent manifest, a gc now would remove exp's checkpoint:
    dry = repo.gitmodel("gc", "--remote", "origin", "--dry-run")
    assert re.search(r"would remove [1-9]\d* object", dry.stdout)

    # The pre-push of `git push origin exp` runs (its ref update has not happened yet) ...
    hook = subprocess.run(["gitmodel", "pre-push", "origin", str(tmp_path / "hub.git")],
                          input=f"refs/heads/exp {repo.out('rev-parse', 'exp').strip()} "
                                f"refs/heads/exp {'0' * 40}\n",
                          cwd=repo.path, env=git_env, capture_output=True, text=True)
    assert hook.returncode == 0, hook.stderr
    # ... a gc with the default grace period runs meanwhile ...
    out = repo.gitmodel("gc", "--remote", "origin")
    assert "removed 0 object(s)" in out.stdout
    # ... and the ref arrives: the checkpoint is whole on the remote.
    repo.git("push", "-q", "origin", "exp")
    clone = Repo(tmp_path / "clone", git_env)
    subprocess.run(["git", "clone", "-q", "-b", "exp", str(tmp_path / "hub.git"), str(clone.path)],
                   env=git_env, check=True, capture_output=True)
    clone.gitmodel("install")
    (clone.path / MODEL).unlink()
    clone.git("checkout", "--", MODEL)
    assert sha256(clone.path / MODEL) == digest


def test_remote_gc_refuses_when_the_remote_has_commits_this_clone_lacks(tmp_path: Path, git_env):
    store = tmp_path / "store"
    repo = team(tmp_path, git_env, str(store), None)
    write_safetensors(repo.path / MODEL, random_model(1))
    repo.commit("v1", MODEL)
    repo.git("push", "-q", "origin", "main")
    other = Repo(tmp_path / "other", git_env)
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(other.path)], env=git_env,
                   check=True, capture_output=True)
    other.gitmodel("install")
    write_safetensors(other.path / MODEL, random_model(2))
    other.commit("v2", MODEL)
    other.git("push", "-q", "origin", "main")
    age(store)
    size = remote_bytes(str(store), None)
    result = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0", check=False)
    assert result.returncode == 1 and "git fetch origin" in result.stderr
    assert "Traceback" not in result.stderr
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
