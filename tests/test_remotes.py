"""Remotes: folder, memory:// (in process) and a real S3 API server on 127.0.0.1 (moto), through git itself."""

from __future__ import annotations

import functools
import http.server
import io
import json
import re
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import Repo, make_repo, random_model, sha256, team, user, write_safetensors
from gitmodel import checkpoint, stored, sync
from gitmodel.remote import transfer
from gitmodel.remote.backend import RemoteError, RemoteSpec, open_backend
from gitmodel.remote.view import RemoteView
from gitmodel.store.objects import MissingObjects, Store


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "2"}


@pytest.fixture
def s3(s3_server, request):
    """A fresh bucket; returns (bucket URL, fsspec options)."""
    import s3fs
    for key, value in S3_ENV.items():
        os.environ.setdefault(key, value)
    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    bucket = "b-" + request.node.name.lower().replace("_", "-")[:40]
    fs.mkdir(bucket)
    return f"s3://{bucket}", {"endpoint_url": s3_server}


class Files(http.server.SimpleHTTPRequestHandler):
    """A folder served read-only over HTTP as production web servers serve one: with Range
    requests (http.server itself ignores them), and refusing an upload after reading it (http.server
    answers before, and a large upload's sender may then see a broken pipe instead) with
    http.server's answer to a method it lacks."""
    refusal = 501

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if not asked or not os.path.isfile(path):
            return super().send_head()
        with open(path, "rb") as f:
            data = f.read()
        start, end = int(asked[1]), min(int(asked[2] or len(data) - 1), len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return io.BytesIO(data[start:end + 1])

    def do_PUT(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                self.rfile.read(size + 2)
            self.rfile.readline()
        else:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_error(self.refusal, f"Unsupported method ({self.command!r})" if self.refusal == 501 else None)

    do_POST = do_PUT


class Forbidden(Files):
    """The same, answering uploads 403 (a server whose writes need credentials)."""
    refusal = 403


class NotFound(Files):
    """The same, answering uploads 404 (a static host: no upload is found at any path)."""
    refusal = 404


@pytest.fixture
def web():
    """serve(folder, handler=Files) -> the URL of an HTTP server on 127.0.0.1 serving it in
    this process; stopped at the end of the test."""
    servers = []

    def serve(folder: Path, handler=Files) -> str:
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"
    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain_web():
    """serve(folder) -> the URL of `python -m http.server` serving it on 127.0.0.1 (which
    ignores Range requests, answering with the whole file); stopped at the end of the test."""
    servers = []

    def serve(folder: Path) -> str:
        server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                   "--directory", str(folder)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        servers.append(server)
        port = re.search(r" port (\d+)", server.stdout.readline())[1]   # once it listens
        return f"http://127.0.0.1:{port}"
    yield serve
    for server in servers:
        server.terminate()
        server.wait(10)
        server.stdout.close()


@pytest.fixture
def env(git_env) -> dict[str, str]:
    """git_env with S3 test credentials (the endpoint goes into each remote's options)."""
    return {**git_env, **S3_ENV}


def clone(url: Path | str, dest: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", "clone", "-q", str(url), str(dest)], env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def publish(tmp_path: Path, env: dict[str, str], url: str, options: dict | None = None,
            files: int = 1) -> tuple[Repo, Path, dict[str, str]]:
    """A repository with `files` checkpoints, a gitmodel remote at `url`, pushed to a bare repo."""
    repo = make_repo(tmp_path / "origin-work", env)
    args = [f"--option=endpoint_url={v}" for k, v in (options or {}).items() if k == "endpoint_url"]
    repo.gitmodel("remote", "add", "origin", url, *args)
    sums = {}
    for i in range(files):
        path = write_safetensors(repo.path / f"model{i}.safetensors", random_model(i, layers=6))
        sums[path.name] = sha256(path)
    repo.commit("models and remote")
    bare = tmp_path / "shared.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    repo.git("remote", "add", "origin", str(bare))
    push = repo.git("push", "-q", "origin", "main")
    assert b"uploaded" in push.stderr
    return repo, bare, sums


def assert_exact(work: Path, sums: dict[str, str]) -> None:
    for name, digest in sums.items():
        assert sha256(work / name) == digest, name


# ----------------------------------------------------------------------------- folder remotes

def test_folder_remote_push_clone_checkout(tmp_path: Path, env):
    store_url = str(tmp_path / "team-store")
    repo, bare, sums = publish(tmp_path, env, store_url, files=2)
    assert (repo.path / ".gitmodel").read_text().count(store_url) == 1
    files = sorted(p.name for p in Path(store_url, "packs").iterdir())
    assert files and all(p.endswith((".pack", ".idx", ".pending")) for p in files)
    assert sum(p.startswith("push-") for p in files) == 1    # the push's note (formats.md §5)

    other = user(tmp_path, env, "bob")
    clone(bare, tmp_path / "bob", other)
    assert_exact(tmp_path / "bob", sums)
    assert Repo(tmp_path / "bob", other).status() == ""
    assert (tmp_path / "bob/.git/hooks/pre-push").is_file(), "a clone gets the hook from the filter"

    # A second version: only the new chunks travel, and a fetch brings them to the clone.
    model = random_model(0, layers=6)
    model["layers.3.weight"] = model["layers.3.weight"] * 2
    write_safetensors(repo.path / "model0.safetensors", model)
    repo.commit("v2")
    before = sum(p.stat().st_size for p in Path(store_url, "packs").iterdir())
    repo.git("push", "-q", "origin", "main")
    grown = sum(p.stat().st_size for p in Path(store_url, "packs").iterdir()) - before
    assert 0 < grown < 0.5 * (repo.path / "model0.safetensors").stat().st_size
    bob = Repo(tmp_path / "bob", other)
    bob.git("pull", "-q")
    assert sha256(bob.path / "model0.safetensors") == sha256(repo.path / "model0.safetensors")
    assert bob.status() == ""

    # Bob's own push, through the hook his clone got, reaches a third person.
    write_safetensors(bob.path / "bob.safetensors", random_model(12))
    bob.commit("bob's model")
    pushed = bob.git("push", "-q", "origin", "main")
    assert b"uploaded" in pushed.stderr
    carol = user(tmp_path, env, "carol")
    clone(bare, tmp_path / "carol", carol)
    assert sha256(tmp_path / "carol/bob.safetensors") == sha256(bob.path / "bob.safetensors")


def test_embedded_default_is_the_bare_repositorys_store(tmp_path: Path, env):
    repo = make_repo(tmp_path / "work", env)
    path = write_safetensors(repo.path / "m.safetensors", random_model(3))
    repo.commit("m")
    bare = tmp_path / "hub.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    repo.git("remote", "add", "origin", str(bare))
    assert str(bare / "gitmodel") in repo.gitmodel("remote", "list").stdout
    repo.git("push", "-q", "origin", "main")
    assert list((bare / "gitmodel" / "packs").glob("pack-*.idx"))

    other = user(tmp_path, env, "carol")
    clone(bare, tmp_path / "carol", other)
    assert sha256(tmp_path / "carol/m.safetensors") == sha256(path)


def test_percent_encoded_file_urls_name_the_folders_git_and_rfc_8089_mean(tmp_path: Path, env):
    """`file:///a/my%20models` is the folder `/a/my models` (RFC 8089, and git): fsspec took
    it as written, so a push went to a new folder named `my%20models`, exit 0, and the clones
    of a repository cloned by such a URL found no store."""
    from urllib.parse import quote
    repo = make_repo(tmp_path / "work", env)
    path = write_safetensors(repo.path / "m.safetensors", random_model(3))
    repo.commit("m")
    store = tmp_path / "my models" / "modèles" / "store"
    store.parent.mkdir(parents=True)
    url = "file://" + quote(str(store))
    assert "%20" in url and "%C3%A8" in url
    chosen = Repo(repo.path, dict(env, GITMODEL_REMOTE=url))
    chosen.gitmodel("push")
    assert list((store / "packs").glob("pack-*.idx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "my models", "work"]
    assert "not on" not in chosen.gitmodel("status").stdout

    # A git remote given by such a URL: git pushes to the folder, and so does the hook, to the
    # store inside it; a clone by that URL checks out from there with nothing configured.
    hub = tmp_path / "sp ü" / "m x.git"
    hub.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(hub)], check=True)
    hub_url = "file://" + quote(str(hub))
    repo.git("remote", "add", "hub", hub_url)
    repo.git("push", "-q", "hub", "main")
    assert list((hub / "gitmodel" / "packs").glob("pack-*.idx"))
    clone(hub_url, tmp_path / "carol", user(tmp_path, env, "carol"))
    assert sha256(tmp_path / "carol/m.safetensors") == sha256(path)

    # Named on the command line, in git config (here with the host RFC 8089 allows), and
    # refused with a host git would ignore (another machine's folder).
    fsck = repo.gitmodel("fsck", "--remote", url)
    assert "1 complete" in fsck.stdout, fsck.stdout
    repo.gitmodel("remote", "add", "--local", "team", "file://localhost" + quote(str(store)))
    assert "1 complete" in repo.gitmodel("fsck", "--remote", "team").stdout
    other = repo.gitmodel("remote", "add", "--local", "typo", "file:/" + quote(str(store)), check=False)
    host = str(store).split("/")[1]
    assert (other.returncode, other.stderr) == (1, f"gitmodel: error: file:/{quote(str(store))} names a "
                                                f"folder on another machine ({host}); a folder here is "
                                                "file:///PATH (three slashes) or its path\n")


def test_a_push_whose_upload_has_no_remote_says_what_to_do_in_one_sentence(tmp_path: Path, env):
    """Another branch's .gitmodel names a remote, which a read takes and an upload does not:
    its explanation was spliced into the middle of the refusal's sentence."""
    repo = make_repo(tmp_path / "work", env)
    write_safetensors(repo.path / "m.safetensors", random_model(4))
    repo.commit("m")
    repo.git("switch", "-q", "-c", "team")
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "store"))
    repo.commit("remote", ".gitmodel")
    repo.git("switch", "-q", "main")
    bare = tmp_path / "elsewhere.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    repo.git("config", "protocol.ext.allow", "always")       # no embedded default applies
    repo.git("remote", "add", "origin", f"ext::git %s {bare}")
    refused = repo.git("push", "origin", "main", check=False)
    assert refused.returncode != 0
    said = refused.stderr.decode().splitlines()[0]
    assert said == ("gitmodel: this push carries 1 checkpoint(s) but no gitmodel remote is "
                    "configured, so nobody could check them out; this commit has no .gitmodel "
                    "(refs/heads/team:.gitmodel names a remote, but an upload takes its remote "
                    "only from the work tree's .gitmodel, HEAD's, a branch of the git remote it "
                    "goes to, or git config: another remote's branch may name another team's "
                    "store). Check out a branch that has the file, or name the remote in git "
                    "config (`gitmodel remote add --local NAME URL`), or push without them: "
                    "GITMODEL_SKIP_PUSH=1 git push")
    assert not (tmp_path / "store").exists()


def test_skip_smudge_then_fetch_and_pull(tmp_path: Path, env):
    repo, bare, sums = publish(tmp_path, env, str(tmp_path / "store"), files=2)
    other = dict(user(tmp_path, env, "dan"), GITMODEL_SKIP_SMUDGE="1")
    clone(bare, tmp_path / "dan", other)
    dan = Repo(tmp_path / "dan", other)
    for name in sums:
        assert (dan.path / name).read_bytes().startswith(b"gitmodel pointer v1\n")
    assert dan.status() == ""
    assert not (dan.store / "packs").exists()

    fetched = dan.gitmodel("fetch")
    assert "fetched" in fetched.stderr
    assert list((dan.store / "packs").glob("*.idx"))
    dan.gitmodel("pull")
    assert_exact(dan.path, sums)
    assert dan.status() == ""
    again = dan.gitmodel("fetch")
    assert "fetched 0 object(s)" in again.stderr


def test_push_without_a_remote_refuses_to_push_pointers(tmp_path: Path, env):
    repo = make_repo(tmp_path / "work", env)
    write_safetensors(repo.path / "m.safetensors", random_model(4))
    repo.commit("m")
    bare = tmp_path / "elsewhere.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    # A transport URL, not a folder path: no embedded default applies.
    repo.git("config", "protocol.ext.allow", "always")
    repo.git("remote", "add", "origin", f"ext::git %s {bare}")
    refused = repo.git("push", "origin", "main", check=False)
    assert refused.returncode != 0
    assert b"no gitmodel remote is configured" in refused.stderr
    # Commits without checkpoints still push freely; an explicit skip pushes pointers only.
    repo.git("remote", "set-url", "origin", str(bare))
    skip = Repo(repo.path, dict(env, GITMODEL_SKIP_PUSH="1"))
    skip.git("push", "-q", "origin", "main")
    assert not (bare / "gitmodel").exists()


def test_hook_chains_an_existing_pre_push_hook(tmp_path: Path, env):
    repo = Repo(tmp_path / "w", env)
    repo.path.mkdir()
    repo.git("init", "-q", "-b", "main")
    hook = repo.path / ".git/hooks/pre-push"
    hook.write_text("#!/bin/sh\ncat > \"$(dirname \"$0\")/../seen\"\necho \"$1 $2\" >> \"$(dirname \"$0\")/../seen\"\n")
    hook.chmod(0o755)
    repo.gitmodel("install")
    assert "gitmodel pre-push hook" in hook.read_text()
    assert (repo.path / ".git/hooks/pre-push.before-gitmodel").is_file()
    repo.gitmodel("track", "*.safetensors")
    write_safetensors(repo.path / "m.safetensors", random_model(5))
    repo.commit("m")
    bare = tmp_path / "b.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    repo.git("remote", "add", "origin", str(bare))
    repo.git("push", "-q", "origin", "main")
    seen = (repo.path / ".git/seen").read_text()
    assert "refs/heads/main" in seen and f"origin {bare}" in seen, seen
    assert list((bare / "gitmodel/packs").glob("*.idx")), "gitmodel's upload ran too"

    repo.gitmodel("install")                            # idempotent: no second chaining
    assert not (repo.path / ".git/hooks/pre-push.before-gitmodel.before-gitmodel").exists()
    repo.gitmodel("uninstall")
    assert hook.read_text().startswith("#!/bin/sh\ncat >")
    assert not (repo.path / ".git/hooks/pre-push.before-gitmodel").exists()


def test_a_clone_checks_out_commits_made_before_the_remote_was_committed(tmp_path: Path, env):
    """The remote is named in the committed `.gitmodel`, read from the work tree or HEAD. A
    checkout from one commit older than that file to another had neither, so the clone looked
    in the wrong place and failed, leaving the file deleted."""
    repo = make_repo(tmp_path / "w", env)
    sums = []
    for seed in (1, 2):
        sums.append(sha256(write_safetensors(repo.path / "m.safetensors", random_model(seed, layers=3))))
        repo.commit(f"v{seed}", "m.safetensors")
    store = tmp_path / "team-store"
    repo.gitmodel("remote", "add", "origin", str(store))
    repo.commit("remote", ".gitmodel")
    hub = tmp_path / "hub.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(hub)], check=True)
    repo.git("remote", "add", "origin", str(hub))
    repo.git("push", "-q", "origin", "main")
    assert list(store.glob("packs/*.idx"))

    reader = user(tmp_path, env, "reader")
    clone(hub, tmp_path / "r", reader)
    r = Repo(tmp_path / "r", reader)
    # A newer branch not built on these commits (a fork's) names another remote: not theirs.
    r.git("switch", "-q", "--orphan", "fork")
    (r.path / ".gitmodel").write_text(f'[gitmodel "elsewhere"]\n\turl = {tmp_path / "elsewhere"}\n')
    r.git("add", ".gitmodel")
    r.git("commit", "-q", "-m", "fork")
    r.git("switch", "-q", "main")
    r.git("checkout", "-q", "HEAD~1")
    assert sha256(r.path / "m.safetensors") == sums[1]
    r.git("checkout", "-q", "HEAD~1")
    assert sha256(r.path / "m.safetensors") == sums[0]
    assert r.status() == ""


def forked_before_the_remote(tmp_path: Path, env) -> tuple[Repo, dict[str, str]]:
    """A branch `feature` forked from main before main committed `.gitmodel` (naming
    tmp_path/team-store), both pushed to tmp_path/hub.git; returns a reader's clone of the
    hub and the sha256 of main~2 (the fork point) and of feature."""
    repo = make_repo(tmp_path / "w", env)
    sums = {}
    write_safetensors(repo.path / "m.safetensors", random_model(1, layers=2))
    repo.commit("v0", "m.safetensors")
    sums["main~2"] = sha256(repo.path / "m.safetensors")
    repo.git("switch", "-q", "-c", "feature")
    write_safetensors(repo.path / "m.safetensors", random_model(5, layers=2))
    repo.commit("f1", "m.safetensors")
    sums["feature"] = sha256(repo.path / "m.safetensors")
    repo.git("switch", "-q", "main")
    write_safetensors(repo.path / "m.safetensors", random_model(2, layers=2))
    repo.commit("v1", "m.safetensors")
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "team-store"))
    repo.commit("remote", ".gitmodel")
    hub = tmp_path / "hub.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(hub)], check=True)
    repo.git("remote", "add", "origin", str(hub))
    repo.git("push", "-q", "origin", "main", "feature")
    reader = user(tmp_path, env, "reader")
    clone(hub, tmp_path / "r", reader)
    return Repo(tmp_path / "r", reader), sums


def test_a_clone_checks_out_a_branch_forked_before_the_remote_was_committed(tmp_path: Path, env):
    """`.gitmodel` committed on main after a branch forked (as after `migrate --rewrite` and
    `remote add`): in a clone, on that branch, no commit had the file and no branch built on
    HEAD did, so every checkout from there looked in the wrong place and failed."""
    r, sums = forked_before_the_remote(tmp_path, env)
    r.git("checkout", "-q", "feature")
    assert sha256(r.path / "m.safetensors") == sums["feature"]
    r.git("checkout", "-q", "main~2")                   # from the branch without the file
    assert sha256(r.path / "m.safetensors") == sums["main~2"]
    r.git("checkout", "-q", "feature")
    (r.path / "m.safetensors").unlink()
    r.git("checkout", "-q", "--", "m.safetensors")
    assert sha256(r.path / "m.safetensors") == sums["feature"]


def test_a_push_from_a_branch_forked_before_the_remote_goes_where_its_readers_look(tmp_path: Path, env):
    """Regression (a review of the two fixes around this one): on a branch forked before
    `.gitmodel`, reads found the team's store through origin/main's file, while a push, which
    read no other ref's file, took the embedded default of the local git remote (the hub's own
    store): exit 0, and a teammate's clone of the branch could not check it out. A push reads
    the file of a branch of the git remote it goes to, where that remote's readers find it."""
    r, _ = forked_before_the_remote(tmp_path, env)
    r.git("checkout", "-q", "feature")
    digest = sha256(write_safetensors(r.path / "m.safetensors", random_model(9, layers=2)))
    r.commit("more work", "m.safetensors")
    r.git("push", "-q", "origin", "feature")
    assert not (tmp_path / "hub.git" / "gitmodel").exists()
    assert "0 problem(s)" in r.gitmodel("fsck", "--remote", "origin").stdout
    other = user(tmp_path, env, "other")
    clone(tmp_path / "hub.git", tmp_path / "b", other)
    b = Repo(tmp_path / "b", other)
    b.git("checkout", "-q", "feature")
    assert sha256(b.path / "m.safetensors") == digest


def test_a_branch_forked_before_the_remote_is_not_pushed_where_its_clones_do_not_read(tmp_path: Path, env):
    """Outside a clone (no `origin/HEAD`), main pushed with `.gitmodel`, then a branch forked
    before the file: its push uploaded to the hub's own store, exit 0, while its clones read
    the team's store through origin/main's file and could not check it out. Refused, with
    the way out, which works."""
    repo = make_repo(tmp_path / "w", env)
    write_safetensors(repo.path / "m.safetensors", random_model(1, layers=2))
    repo.commit("v1", "m.safetensors")
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "team-store"))
    repo.commit("remote", ".gitmodel")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    repo.git("remote", "add", "origin", str(tmp_path / "hub.git"))
    repo.git("push", "-q", "-u", "origin", "main")
    repo.git("switch", "-q", "-c", "exp", "HEAD~1")
    digest = sha256(write_safetensors(repo.path / "m.safetensors", random_model(2, layers=2)))
    repo.commit("v2", "m.safetensors")
    refused = repo.git("push", "-q", "-u", "origin", "exp", check=False)
    said = refused.stderr.decode()
    assert refused.returncode != 0 and "refs/heads/exp has no .gitmodel" in said, said
    way_out = re.search(r"`git switch exp && (git checkout .*?) && (git commit .*?)`", said)
    repo.git(*way_out.group(1).split()[1:])
    repo.git("commit", "-q", "-m", "gitmodel remote", ".gitmodel")
    repo.git("push", "-q", "-u", "origin", "exp")
    assert not (tmp_path / "hub.git" / "gitmodel").exists()
    other = user(tmp_path, env, "other")
    subprocess.run(["git", "clone", "-q", "-b", "exp", str(tmp_path / "hub.git"), str(tmp_path / "b")],
                   env=other, check=True, capture_output=True)
    assert sha256(tmp_path / "b" / "m.safetensors") == digest


def test_a_forks_checkpoints_never_go_to_its_upstreams_store(tmp_path: Path, env):
    """A review of the fallback above, whose first version read any branch sharing history
    with HEAD: a team's fork of a public repository (forked before upstream committed a
    `.gitmodel`, its own store the embedded default) fetched upstream to follow its fixes,
    and its next push uploaded the team's weights to upstream's bucket, exit 0. Only a branch
    of HEAD's own git remote is read, and a push never reads one."""
    up = make_repo(tmp_path / "upstream", env)
    (up.path / "README").write_text("public model\n")
    up.commit("A", "README")
    subprocess.run(["git", "clone", "-q", "--bare", str(up.path), str(tmp_path / "team.git")],
                   check=True, env=env)
    up.gitmodel("remote", "add", "origin", str(tmp_path / "upstream-bucket"))
    up.commit("their remote", ".gitmodel")
    clone(tmp_path / "team.git", tmp_path / "team", env)
    t = Repo(tmp_path / "team", env)
    t.gitmodel("install")
    write_safetensors(t.path / "m.safetensors", random_model(3, layers=2))
    t.commit("our private weights", "m.safetensors")
    t.git("remote", "add", "upstream", str(up.path))
    t.git("fetch", "-q", "upstream")
    assert "upstream-bucket" not in t.gitmodel("remote", "list").stdout
    t.git("push", "-q", "origin", "main")
    assert not (tmp_path / "upstream-bucket").exists()
    assert list((tmp_path / "team.git" / "gitmodel").rglob("*.idx"))
    # A second review: detached at the shared commit (upstream's branch contains it), with the
    # branch tracking upstream (a triangular setup), `gitmodel push`, and a repair by
    # `fsck --remote --repair`: each found upstream's file and uploaded there, exit 0.
    write_safetensors(t.path / "m.safetensors", random_model(4, layers=2))
    t.commit("more private weights", "m.safetensors")
    t.git("checkout", "-q", "main~2")
    t.git("push", "-q", "origin", "main")
    t.git("checkout", "-q", "main")
    t.git("branch", "-q", "-u", "upstream/main")
    t.gitmodel("push", check=False)
    t.gitmodel("fsck", "--remote", "origin", "--repair", check=False)
    assert not (tmp_path / "upstream-bucket").exists()
    assert len(list((tmp_path / "team.git" / "gitmodel").rglob("*.idx"))) >= 2


def test_a_branch_tracking_a_local_branch_finds_the_remote_through_it(tmp_path: Path, env):
    """`git worktree add --track -b mine ../wt feature`: `mine` tracks the local `feature`
    (`branch.mine.remote = .`), and the fallback looked for `refs/remotes/.`, found nothing,
    and read from the git remote's folder."""
    r, sums = forked_before_the_remote(tmp_path, env)
    r.git("branch", "-q", "--track", "feature", "origin/feature")
    r.git("worktree", "add", "-q", "--track", "-b", "mine", str(tmp_path / "wt"), "feature")
    wt = Repo(tmp_path / "wt", r.env)
    assert "team-store" in wt.gitmodel("remote", "list").stdout
    (wt.path / "m.safetensors").unlink()
    wt.git("checkout", "--", "m.safetensors")
    assert sha256(wt.path / "m.safetensors") == sums["feature"]


def test_remote_add_list_remove_and_precedence(tmp_path: Path, env):
    repo = make_repo(tmp_path / "w", env)
    repo.gitmodel("remote", "add", "team", "s3://bucket/models", "--option", "endpoint_url=http://h:1",
                  "--option", "client_kwargs.region_name=eu-west-1", "--option", "anon=false")
    text = (repo.path / ".gitmodel").read_text()
    assert '[gitmodel "team"]' in text and "remote = team" in text
    typo = repo.gitmodel("remote", "add", "typo", "s3://bucket/x", "--option", "endpoint_ur=http://h:1",
                         "--option", "anon=true", "--local")
    assert "no option named 'endpoint_ur'" in typo.stdout and "'anon'" not in typo.stdout, typo.stdout
    # Keys s3fs hands on to botocore, and fsspec's own, are no typos (a review).
    passed = repo.gitmodel("remote", "add", "passed", "s3://bucket/y", "--option", "profile=dev",
                           "--option", "skip_instance_cache=true", "--local")
    assert "no option named" not in passed.stdout, passed.stdout
    repo.gitmodel("remote", "remove", "--local", "passed")
    repo.gitmodel("remote", "remove", "--local", "typo")
    listed = repo.gitmodel("remote", "list").stdout
    assert "* team\ts3://bucket/models\t(.gitmodel)" in listed
    from gitmodel.git import remotes
    spec = remotes.resolve(None, cwd=repo.path)
    assert spec.options == {"endpoint_url": "http://h:1", "client_kwargs": {"region_name": "eu-west-1"},
                            "anon": False}
    # git config overrides the committed file; the environment overrides the default.
    repo.git("config", "gitmodel.team.url", "/srv/override")
    assert remotes.resolve(None, cwd=repo.path).url == "/srv/override"
    os.environ["GITMODEL_REMOTE"] = "s3://elsewhere/x"
    try:
        assert remotes.resolve(None, cwd=repo.path).url == "s3://elsewhere/x"
        assert remotes.resolve("team", cwd=repo.path).url == "/srv/override"
    finally:
        del os.environ["GITMODEL_REMOTE"]
    bad = repo.gitmodel("remote", "add", "x", "s3://b", "--option", "novalue", check=False)
    assert bad.returncode == 1 and "not key=value" in bad.stderr
    unknown = repo.gitmodel("push", "nosuchremote", check=False)
    assert unknown.returncode == 1 and "no gitmodel remote named 'nosuchremote'" in unknown.stderr
    repo.gitmodel("remote", "remove", "team")
    assert "team" not in (repo.path / ".gitmodel").read_text()


# ----------------------------------------------------------------------------- in-process

def _store_with(tmp_path: Path, seeds: list[int]) -> tuple[Store, list[bytes], list[bytes]]:
    """A store holding checkpoints; returns it, their manifest ids and their files' bytes."""
    store = Store(tmp_path / "local")
    manifests, files = [], []
    for seed in seeds:
        path = write_safetensors(tmp_path / f"m{seed}.safetensors", random_model(seed, layers=8))
        with open(path, "rb") as f:
            text = checkpoint.clean(f, store)
        manifests.append(bytes.fromhex(text.split(b"\ncontent ")[1][:64].decode()))
        files.append(path.read_bytes())
    return store, manifests, files


def _view(url, store: Store) -> RemoteView:
    return RemoteView(open_backend(RemoteSpec(str(url), str(url))), store.root)


def _fetch(store: Store, view: RemoteView, manifests: list[bytes]) -> sync.FetchResult:
    return sync.fetch(store, view, {m.hex(): m.hex()[:8] for m in manifests})


def _pushed(tmp_path: Path, seeds: list[int]):
    """_store_with, then everything uploaded to a folder remote: (store, manifest ids, file
    bytes, the remote's folder)."""
    store, manifests, files = _store_with(tmp_path, seeds)
    folder = tmp_path / "remote"
    transfer.upload(store, _view(folder, store), _objects(store, manifests))
    return store, manifests, files, folder


def _objects(store: Store, manifests: list[bytes]) -> list[bytes]:
    return stored.needed(manifests, store.read_manifest).objects


def _restore(store: Store, manifest: bytes) -> bytes:
    return b"".join(store.read(c) for c, _ in store.read_manifest(manifest).chunks)


def test_a_memory_remote_is_refused_where_its_data_would_die_with_the_command(tmp_path: Path, env):
    """A committed .gitmodel naming memory://: `git push` said "uploaded 9 object(s)" and
    exited 0, the data lived only in the hook's process, and every clone failed. The push is
    refused now, and so is `gitmodel remote add` of such a URL."""
    repo = make_repo(tmp_path / "w", env)
    (repo.path / ".gitmodel").write_text('[gitmodel "team"]\n\turl = memory://team/models\n')
    write_safetensors(repo.path / "m.safetensors", random_model(1, layers=1))
    repo.commit("v1")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    repo.git("remote", "add", "origin", str(tmp_path / "hub.git"))
    push = repo.git("push", "-q", "origin", "main", check=False)
    assert push.returncode != 0 and b"uploaded" not in push.stderr
    assert b"memory://team/models (.gitmodel): a memory:// remote keeps its data only inside one process" \
        in push.stderr
    assert repo.git("ls-remote", str(tmp_path / "hub.git")).stdout == b""
    for url in ("memory://x/y", "simplecache::memory://x/y"):
        added = repo.gitmodel("remote", "add", "other", url, "--local", check=False)
        assert added.returncode == 1 and "keeps its data only inside one process" in added.stderr


def test_memory_remote_upload_download_and_dedup(tmp_path: Path):
    store, manifests, files = _store_with(tmp_path, [10, 11])
    view = _view("memory://gitmodel-test/team", store)
    first = transfer.upload(store, view, _objects(store, manifests), target=1 << 20)
    assert first.packs >= 2 and first.objects == len(set(_objects(store, manifests)))
    again = transfer.upload(store, view, _objects(store, manifests))
    assert again.objects == 0 and again.packs == 0, "nothing the remote has is sent twice"

    fresh = Store(tmp_path / "fresh")
    got = _fetch(fresh, _view("memory://gitmodel-test/team", fresh), manifests)
    assert got.stats.objects == first.objects and not got.failed
    for manifest, data in zip(manifests, files):
        assert _restore(fresh, manifest) == data


def test_interrupted_upload_resumes_without_resending(tmp_path: Path):
    store, manifests, files = _store_with(tmp_path, [20])
    oids = _objects(store, manifests)
    view = _view("memory://gitmodel-test/resume", store)
    backend = view.backend.backend
    real_put, sent = backend.put_pack, []

    def failing_put(path, name, **kwargs):
        if len(sent) == 2:
            raise RemoteError("connection dropped")
        sent.append(name)
        real_put(path, name, **kwargs)

    backend.put_pack = failing_put
    with pytest.raises(RemoteError):
        transfer.upload(store, view, oids, target=256 << 10)
    assert len(backend.list_packs().published) == 2
    assert not any(store.tmp_dir.iterdir()), "no temporary packs left behind"
    fresh = Store(tmp_path / "early")
    early = _fetch(fresh, _view("memory://gitmodel-test/resume", fresh), manifests)
    assert set(early.failed) == {manifests[0].hex()}, "no manifest is visible before its chunks"

    backend.put_pack = real_put
    total = sum(store.locate(o).stored_length for o in set(oids))
    resumed = transfer.upload(store, view, oids, target=256 << 10)
    assert 0 < resumed.bytes < total, "packs that arrived are not sent again"
    got = transfer.download(fresh, _view("memory://gitmodel-test/resume", fresh), oids)
    assert got.objects > 0 and not got.failed and not fresh.missing(oids)
    assert _restore(fresh, manifests[0]) == files[0]


def test_corrupt_remote_pack_costs_only_its_damaged_objects(tmp_path: Path):
    store, manifests, files, folder = _pushed(tmp_path, [30])
    pack = next((folder / "packs").glob("*.pack"))
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x40
    os.chmod(pack, 0o644)
    pack.write_bytes(bytes(data))
    fresh = Store(tmp_path / "fresh")
    result = _fetch(fresh, _view(folder, fresh), manifests)
    assert "corrupt" in result.failed[manifests[0].hex()]
    needed = stored.needed(manifests, fresh.read_manifest)
    missing = fresh.missing(needed.chunks)
    assert len(missing) == 1, "only the damaged object is not stored"
    with pytest.raises(MissingObjects):
        checkpoint.Restore(checkpoint.pointers.Pointer(len(files[0]), manifests[0].hex()), fresh)
    with pytest.raises(RemoteError, match="are damaged or gone"):
        transfer.mirror(open_backend(RemoteSpec("r", str(folder))),
                        open_backend(RemoteSpec("c", str(tmp_path / "copy"))), tmp_path / "tmp",
                        stored.references)
    assert not list((tmp_path / "copy").glob("packs/*.idx"))


def test_pack_without_index_is_invisible(tmp_path: Path):
    store, manifests, _, folder = _pushed(tmp_path, [31])
    idx = next((folder / "packs").glob("*.idx"))
    os.chmod(idx, 0o644)
    idx.write_bytes(idx.read_bytes()[:-5])              # an index caught mid-upload
    fresh = Store(tmp_path / "fresh")
    view = _view(folder, fresh).refresh()
    assert not view.entries and list(view.damaged) == [idx.stem]


# ----------------------------------------------------------------------------- S3 (moto)

def test_s3_push_clone_checkout_many_files(tmp_path: Path, env, s3):
    url, options = s3
    repo, bare, sums = publish(tmp_path, env, f"{url}/models", options, files=3)
    other = user(tmp_path, env, "erin")
    done = clone(bare, tmp_path / "erin", dict(other, GIT_TRACE_PACKET="1"))
    assert_exact(tmp_path / "erin", sums)
    # The checkout delayed every file, then fetched them all in one batch.
    assert done.stderr.count("clone< status=delayed") == 3, done.stderr[-3000:]
    assert "clone> command=list_available_blobs" in done.stderr
    erin = Repo(tmp_path / "erin", other)
    assert erin.status() == ""
    assert len(list((erin.store / "packs").glob("*.idx"))) == 1, "one batch, one local pack"


def test_s3_mirror_to_folder_and_back(tmp_path: Path, env, s3):
    url, options = s3
    repo, bare, sums = publish(tmp_path, env, f"{url}/models", options, files=2)
    folder = tmp_path / "backup"
    opt = f"--option=endpoint_url={options['endpoint_url']}"
    repo.gitmodel("remote", "add", "src", f"{url}/models", opt, "--local")
    repo.gitmodel("remote", "add", "dst", f"{url}/copy", opt, "--local")
    first = repo.gitmodel("mirror", "src", str(folder))
    assert "mirrored" in first.stderr
    again = repo.gitmodel("mirror", "src", str(folder))
    assert "mirrored 0 pack(s)" in again.stderr, "incremental: nothing twice"
    repo.gitmodel("mirror", str(folder), "dst")

    # A clone reading only from the copy in the second prefix gets the exact weights.
    other = dict(user(tmp_path, env, "fay"))
    clone(bare, tmp_path / "fay", dict(other, GITMODEL_SKIP_SMUDGE="1"))
    fay = Repo(tmp_path / "fay", other)
    fay.gitmodel("remote", "add", "copy", f"{url}/copy", opt, "--local")
    fay.gitmodel("pull", "copy")
    assert_exact(fay.path, sums)


def test_s3_concurrent_pushes_from_two_clones(tmp_path: Path, env, s3):
    url, options = s3
    repo, bare, sums = publish(tmp_path, env, f"{url}/models", options, files=1)
    people = []
    for name, seed in (("gil", 40), ("hal", 41)):
        e = user(tmp_path, env, name)
        clone(bare, tmp_path / name, e)
        person = Repo(tmp_path / name, e)
        write_safetensors(person.path / f"{name}.safetensors", random_model(seed, layers=8))
        person.commit(name)
        person.git("checkout", "-q", "-b", name)
        people.append(person)
    runs = [subprocess.Popen(["git", "push", "-q", "origin", p.path.name], cwd=p.path, env=p.env,
                             stderr=subprocess.PIPE) for p in people]
    for run in runs:
        assert run.wait() == 0, run.stderr.read()
    for person in people:
        name = person.path.name
        e = user(tmp_path, env, f"{name}-reader")
        result = subprocess.run(["git", "clone", "-q", "-b", name, str(bare), str(tmp_path / f"{name}-copy")],
                                env=e, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert sha256(tmp_path / f"{name}-copy/{name}.safetensors") == sha256(person.path / f"{name}.safetensors")


def test_s3_remote_down_fails_clearly_and_writes_nothing(tmp_path: Path, env, s3):
    url, options = s3
    repo, bare, sums = publish(tmp_path, env, f"{url}/models", options)
    import socket
    with socket.socket() as s:                           # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    other = dict(user(tmp_path, env, "ivy"), GITMODEL_REMOTE_TIMEOUT="2", GITMODEL_RETRY_BACKOFF="0.05")
    subprocess.run(["git", "config", "--global", "gitmodel.origin.option", f"endpoint_url={dead}"],
                   env=other, check=True)
    result = clone(bare, tmp_path / "ivy", other, check=False)
    assert result.returncode != 0
    assert "model0.safetensors" in result.stderr and "remote origin" in result.stderr, result.stderr
    assert "Nothing was written" in result.stderr
    assert not (tmp_path / "ivy/model0.safetensors").exists()


def test_s3_push_to_a_bucket_that_does_not_exist_fails_and_creates_none(tmp_path: Path, env, s3):
    """A typo in the bucket's name: the push created a bucket of that name and exited 0."""
    import s3fs
    url, options = s3
    repo = make_repo(tmp_path / "w", env)
    missing = url.replace("s3://b-", "s3://typo-", 1)
    repo.gitmodel("remote", "add", "origin", f"{missing}/models", f"--option=endpoint_url={options['endpoint_url']}")
    write_safetensors(repo.path / "m.safetensors", random_model(3, layers=2))
    repo.commit("m", "m.safetensors", ".gitmodel")
    done = repo.gitmodel("push", check=False)
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr and missing.removeprefix("s3://") in done.stderr, done.stderr
    assert "bucket must exist" in done.stderr, done.stderr
    fs = s3fs.S3FileSystem(endpoint_url=options["endpoint_url"], key="testing", secret="testing",
                           skip_instance_cache=True)
    assert not fs.exists(missing.removeprefix("s3://")), "the push created the bucket"


def test_transient_errors_are_retried(tmp_path: Path, monkeypatch):
    store, manifests, files = _store_with(tmp_path, [50])
    folder = tmp_path / "remote"
    transfer.upload(store, _view(folder, store), _objects(store, manifests))
    monkeypatch.setenv("GITMODEL_RETRY_BACKOFF", "0.01")
    fresh = Store(tmp_path / "fresh")
    view = _view(folder, fresh)
    fs = view.backend.backend.fs
    real, failures = fs.cat_file, []

    def flaky(path, *args, **kwargs):
        if len(failures) < 3:
            failures.append(path)
            raise ConnectionResetError("connection reset by peer")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fs, "cat_file", flaky)     # fsspec shares fs instances: undone after
    result = _fetch(fresh, view, manifests)
    assert len(failures) == 3 and not result.failed
    assert _restore(fresh, manifests[0]) == files[0]

    monkeypatch.setattr(fs, "cat_file", lambda *a, **k: (_ for _ in ()).throw(TimeoutError("timed out")))
    monkeypatch.setenv("GITMODEL_REMOTE_TIMEOUT", "0.3")
    view = _view(folder, fresh)
    with pytest.raises(RemoteError, match=r"failed after \d+ attempt\(s\) in \d+ s: TimeoutError"):
        view.backend.read_range(next(iter(_view(folder, fresh).refresh().packs)), 0, 8)
    with pytest.raises(RemoteError, match="failed after"):     # unreachable now: at once
        view.backend.read_index("pack-" + "0" * 64)


def test_an_upload_refused_at_once_is_retried_for_the_timeout_not_its_size(tmp_path: Path, monkeypatch):
    """An upload's attempts get a second per 256 KiB to move their data, and that allowance
    stretched the retries too: with GITMODEL_REMOTE_TIMEOUT=8 a 96 MiB pack whose server
    refused every connection was retried for 260 s, the waits growing to 128 s."""
    store, manifests, _ = _store_with(tmp_path, [30])
    monkeypatch.setenv("GITMODEL_REMOTE_TIMEOUT", "1")
    monkeypatch.setenv("GITMODEL_RETRY_BACKOFF", "0.05")
    view = _view(tmp_path / "remote", store)
    waits = []
    monkeypatch.setattr(view.backend, "_say", waits.append)

    def refused(*args, **kwargs):
        raise ConnectionRefusedError("connection refused")

    big = tmp_path / "big.pack"
    big.write_bytes(bytes(8 << 20))                  # 32 s of allowance at 256 KiB/s
    monkeypatch.setattr(view.backend.backend, "put_pack", refused)
    started = time.monotonic()
    with pytest.raises(RemoteError, match="failed after"):
        view.backend.put_pack(big, "pack-" + "0" * 64)
    assert time.monotonic() - started < 3, waits
    assert all(float(w.rsplit("retrying in ", 1)[1].split()[0]) <= 1.0 for w in waits), waits

    # A server that hangs: every attempt runs until it is cancelled. A review caught the first
    # version of this fix retrying it forever (each long attempt opened a new window).
    def hung(*args, timeout=None, **kwargs):
        time.sleep(timeout)
        raise TimeoutError()

    monkeypatch.setenv("GITMODEL_REMOTE_TIMEOUT", "2")
    view = _view(tmp_path / "remote", store)
    monkeypatch.setattr(view.backend.backend, "put_pack", hung)
    small = tmp_path / "small.pack"
    small.write_bytes(bytes(64 << 10))               # 0.25 s of allowance
    started = time.monotonic()
    with pytest.raises(RemoteError, match="failed after"):
        view.backend.put_pack(small, "pack-" + "1" * 64)
    assert time.monotonic() - started < 2.25 + 0.5


def test_push_all_and_push_mirror(tmp_path: Path, env):
    repo = make_repo(tmp_path / "w", env)
    write_safetensors(repo.path / "a.safetensors", random_model(60))
    repo.commit("a")
    repo.git("switch", "-q", "-c", "side")
    write_safetensors(repo.path / "b.safetensors", random_model(61))
    repo.commit("b")
    repo.git("switch", "-q", "main")
    folder = tmp_path / "remote"
    repo.gitmodel("remote", "add", "origin", str(folder))
    head_only = repo.gitmodel("push")
    assert "1 checkpoint(s)" in head_only.stderr
    every = repo.gitmodel("push", "--all")
    assert "2 checkpoint(s)" in every.stderr
    copy = tmp_path / "copy"
    repo.gitmodel("push", "--mirror", str(copy))
    local = {p.name for p in (repo.store / "packs").glob("*.idx")}
    assert local and local == {p.name for p in (copy / "packs").glob("*.idx")}
    for name in local:
        pack = name.replace(".idx", ".pack")
        assert (copy / "packs" / pack).read_bytes() == (repo.store / "packs" / pack).read_bytes()


def test_a_git_remotes_name_means_the_store_its_pushes_go_to(tmp_path: Path, env):
    """`gitmodel push origin`, where git remote origin's pushes go to the default gitmodel
    remote `team`, uploaded to origin's embedded store instead (exit 0), and `fsck --remote
    origin` checked that store: clones, which read `team`, failed."""
    repo = make_repo(tmp_path / "w", env)
    repo.gitmodel("remote", "add", "team", str(tmp_path / "store"))
    repo.commit("remote", ".gitmodel")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    repo.git("remote", "add", "origin", str(tmp_path / "hub.git"))
    write_safetensors(repo.path / "m.safetensors", random_model(70))
    repo.commit("v1")
    repo.git("push", "-q", "origin", "main")
    write_safetensors(repo.path / "m.safetensors", random_model(71))
    repo.commit("v2")
    digest = sha256(repo.path / "m.safetensors")
    pushed = repo.gitmodel("push", "origin")
    assert "to team" in pushed.stderr, pushed.stderr
    Repo(repo.path, dict(env, GITMODEL_SKIP_PUSH="1")).git("push", "-q", "origin", "main")
    assert "on remote team" in repo.gitmodel("fsck", "--remote", "origin").stdout
    assert not (tmp_path / "hub.git" / "gitmodel").exists()
    clone(tmp_path / "hub.git", tmp_path / "c", user(tmp_path, env, "bob"))
    assert sha256(tmp_path / "c" / "m.safetensors") == digest


def test_fsck_remote_reads_the_remotes_own_indexes_and_its_repair_restores_them(tmp_path: Path, env):
    """The remote's index damaged after this clone pushed: `fsck --remote` and its `--repair`
    read the copy this clone cached when it pushed, said the remote was complete, exit 0,
    while every fresh clone failed."""
    folder = tmp_path / "store"
    repo, bare, sums = publish(tmp_path, env, str(folder))
    index = next((folder / "packs").glob("*.idx"))
    index.chmod(0o644)
    data = bytearray(index.read_bytes())
    data[100] ^= 1
    index.write_bytes(bytes(data))
    found = repo.gitmodel("fsck", "--remote", "origin", "--all", check=False)
    assert found.returncode == 1 and f"damaged index {index.stem}" in found.stdout, found.stdout
    assert "1 lost" in found.stdout and "(or `gitmodel push" not in found.stdout, found.stdout
    repaired = repo.gitmodel("fsck", "--remote", "origin", "--all", "--repair")
    assert "uploaded this clone's copy of 1 damaged pack index(es)" in repaired.stdout
    assert "0 problem(s)" in repaired.stdout
    clone(bare, tmp_path / "bob", user(tmp_path, env, "bob"))
    assert_exact(tmp_path / "bob", sums)


def test_fsck_remote_takes_a_pack_a_gc_removes_meanwhile_for_gone_not_damaged(tmp_path: Path, env):
    """A review of the fix above: re-reading every index, fsck --remote met the index of a
    pack a remote gc removed since the listing and reported it damaged, exit 1."""
    import sys
    folder = tmp_path / "store"
    repo, bare, sums = publish(tmp_path, env, str(folder))
    repo.git("switch", "-q", "-c", "tmp")
    write_safetensors(repo.path / "t.safetensors", random_model(33))
    repo.commit("garbage soon")
    before = {p.stem for p in (folder / "packs").glob("*.idx")}
    repo.git("push", "-q", "origin", "tmp")
    newest, = {p.stem for p in (folder / "packs").glob("*.idx")} - before     # only tmp needs it
    repo.git("switch", "-q", "main")
    repo.git("push", "-q", "origin", ":tmp")
    checked = subprocess.run(
        [sys.executable, "-c", "import sys\n"
         "from gitmodel.remote.backend import FsspecBackend\n"
         "read = FsspecBackend.read_index\n"
         "def removed_first(self, pack, timeout=None):\n"
         f"    if pack == {newest!r}:\n"
         "        self.remove_pack(pack)\n"
         "    return read(self, pack, timeout=timeout)\n"
         "FsspecBackend.read_index = removed_first\n"
         "from gitmodel.cli import main\n"
         "sys.exit(main(['fsck', '--remote', 'origin']))"],
        cwd=repo.path, env=env, capture_output=True, text=True)
    assert checked.returncode == 0 and "damaged" not in checked.stdout, checked.stdout + checked.stderr
    assert "1 complete" in checked.stdout and not (folder / "packs" / f"{newest}.idx").exists()


def test_a_repaired_remote_mirrors_whole_though_its_damaged_pack_stays(tmp_path: Path, env):
    """A byte flipped in a remote pack: `fsck --remote --repair` uploaded the damaged objects
    and said 0 problems, but the pack's good records stayed the only copies there, so every
    mirror refused the pack and named that repair, which changed nothing, for good. The
    repair uploads them too, and a mirror leaves the damaged pack behind."""
    folder = tmp_path / "store"
    repo, bare, sums = publish(tmp_path, env, str(folder), files=3)
    pack = next((folder / "packs").glob("*.pack"))
    pack.chmod(0o644)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x40
    pack.write_bytes(bytes(data))
    assert repo.gitmodel("fsck", "--remote", "origin", "--all", check=False).returncode == 1
    repaired = repo.gitmodel("fsck", "--remote", "origin", "--all", "--repair")
    assert "0 problem(s)" in repaired.stdout and "more object(s) held in the damaged" in repaired.stdout
    copy = tmp_path / "copy"
    for _ in range(2):
        mirrored = repo.gitmodel("mirror", "origin", str(copy))
        assert "1 damaged pack(s) left behind" in mirrored.stderr, mirrored.stderr
    assert not list((copy / "packs").glob(f"{pack.stem}.*")), "neither the pack nor its index"
    reader = dict(user(tmp_path, env, "bob"), GITMODEL_REMOTE=str(copy))
    clone(bare, tmp_path / "bob", reader)
    assert_exact(tmp_path / "bob", sums)


def test_a_folder_whose_name_holds_two_colons_is_that_folder(tmp_path: Path, env):
    """fsspec reads `a::b` in a URL as a chain of filesystems: a folder remote `…/a::b`
    stored the packs in `…/a`, though `remote add` named `…/a::b`."""
    folder = tmp_path / "a::b"
    repo, bare, sums = publish(tmp_path, env, str(folder))
    assert list((folder / "packs").glob("*.idx")) and not (tmp_path / "a").exists()
    clone(bare, tmp_path / "bob", user(tmp_path, env, "bob"))
    assert_exact(tmp_path / "bob", sums)


from hypothesis import given, settings, strategies as st   # noqa: E402
from gitmodel.store.pack import Entry, record_head           # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40 << 20), st.integers(1, 3 << 20)),
                min_size=1, max_size=60, unique_by=lambda t: (t[0], t[1])))
def test_coalesced_ranges_cover_each_record_once(records):
    located = [(i.to_bytes(32, "little"), Entry(f"pack-{p}", off, length, length, 0, 0))
               for i, (p, off, length) in enumerate(records)]
    ranges = transfer._coalesce(located)
    seen = [oid for r in ranges for oid, _ in r.records]
    assert sorted(seen) == sorted(oid for oid, _ in located)
    for r in ranges:
        assert len(r.records) == 1 or r.end - r.start <= transfer.MAX_RANGE
        for _, e in r.records:
            assert e.pack == r.pack and r.start <= e.offset
            assert e.offset + record_head.size + e.stored_length <= r.end


def test_pack_that_arrived_without_its_index_is_not_sent_again(tmp_path: Path, monkeypatch):
    store, manifests, files = _store_with(tmp_path, [21])
    oids = _objects(store, manifests)
    folder = tmp_path / "remote"
    view = _view(folder, store)
    backend = view.backend.backend
    real_put, sent_packs = backend.put_pack, []

    def put_pack(path, name, **kwargs):
        sent_packs.append(name)
        return real_put(path, name, **kwargs)

    def no_index(name, data, **kwargs):
        raise ConnectionResetError("dropped before the index")

    monkeypatch.setenv("GITMODEL_REMOTE_TIMEOUT", "0.2")
    monkeypatch.setenv("GITMODEL_RETRY_BACKOFF", "0.01")
    view = _view(folder, store)
    backend = view.backend.backend
    monkeypatch.setattr(backend, "put_pack", put_pack)
    monkeypatch.setattr(backend, "put_index", no_index)
    with pytest.raises(RemoteError):
        transfer.upload(store, view, oids, target=256 << 10)
    assert len(sent_packs) >= 1 and not backend.list_packs().published
    first = sent_packs[0]
    sent_packs[:] = []
    view = _view(folder, store)
    monkeypatch.setattr(view.backend.backend, "put_pack", put_pack)
    transfer.upload(store, view, oids, target=256 << 10)
    assert first not in sent_packs, "the pack that had arrived was sent again"
    fresh = Store(tmp_path / "fresh")
    transfer.download(fresh, _view(folder, fresh), oids)
    assert _restore(fresh, manifests[0]) == files[0]


def test_interrupted_fetch_keeps_what_arrived(tmp_path: Path, monkeypatch):
    store, manifests, files = _store_with(tmp_path, [22])
    oids = _objects(store, manifests)
    folder = tmp_path / "remote"
    transfer.upload(store, _view(folder, store), oids, target=256 << 10)
    monkeypatch.setattr(transfer, "MAX_RANGE", 128 << 10)        # many small reads
    monkeypatch.setattr(transfer, "READS_IN_FLIGHT", 1)
    fresh = Store(tmp_path / "fresh")
    view = _view(folder, fresh)
    backend = view.backend.backend
    real, reads = backend.read_range, []

    def interrupted(name, start, end, **kwargs):
        if len(reads) == 6:
            raise KeyboardInterrupt
        reads.append((name, start))
        return real(name, start, end, **kwargs)

    monkeypatch.setattr(backend, "read_range", interrupted)
    with pytest.raises(KeyboardInterrupt):
        transfer.download(fresh, view, oids)
    kept = len(oids) - len(fresh.missing(oids))
    assert kept > 0, "objects that arrived before the interruption are kept"
    assert fresh.missing(manifests) == manifests, "no manifest without its chunks"
    monkeypatch.setattr(backend, "read_range", real)
    again = transfer.download(fresh, view, oids)
    assert again.objects == len(set(oids)) - kept
    assert _restore(fresh, manifests[0]) == files[0]


def test_a_read_that_fails_for_good_keeps_its_hint_in_what_the_fetch_says(tmp_path: Path, monkeypatch):
    """read_objects wrapped a failed read's RemoteError in another by its text alone: the
    fetch said "remote R: remote R: reading pack-….pack failed after N attempt(s) …", and
    what to do about it (check the URL, the network, GITMODEL_REMOTE_TIMEOUT) was lost."""
    store, manifests, _ = _store_with(tmp_path, [23])
    oids = _objects(store, manifests)
    folder = tmp_path / "remote"
    transfer.upload(store, _view(folder, store), oids)
    monkeypatch.setenv("GITMODEL_REMOTE_TIMEOUT", "1")
    monkeypatch.setenv("GITMODEL_RETRY_BACKOFF", "0.1")
    fresh = Store(tmp_path / "fresh")
    view = _view(folder, fresh)
    view.refresh()

    def down(*args, **kwargs):
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(view.backend.backend, "read_range", down)
    failed = transfer.download(fresh, view, oids, quiet=True).failed
    assert set(failed) == set(oids), failed
    why = failed[oids[0]]
    assert re.fullmatch(rf"remote {re.escape(str(folder))}: reading pack-[0-9a-f]+\.pack failed after \d+ "
                        r"attempt\(s\) in \d+ s: ConnectionResetError: connection reset by peer\. Nothing "
                        r"was changed for what could not be transferred\. Check the URL, the network and "
                        r"credentials; GITMODEL_REMOTE_TIMEOUT sets how long to keep trying", why), why


# ----------------------------------------------------------------------------- review findings

def test_delayed_checkout_of_a_non_utf8_path(tmp_path: Path, env):
    import os as _os
    repo = make_repo(tmp_path / "w", env)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "store"))
    odd = _os.fsdecode(b"caf\xe9.safetensors")
    write_safetensors(repo.path / odd, random_model(70))
    write_safetensors(repo.path / "ok.safetensors", random_model(71))
    repo.commit("odd names")
    repo.gitmodel("push")
    bare = tmp_path / "b.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    repo.git("remote", "add", "hub", str(bare))
    repo.git("push", "-q", "hub", "main")
    other = user(tmp_path, env, "jo")
    clone(bare, tmp_path / "jo", other)
    assert sha256(tmp_path / "jo" / odd) == sha256(repo.path / odd)
    assert sha256(tmp_path / "jo/ok.safetensors") == sha256(repo.path / "ok.safetensors")


def test_pull_takes_paths_literally_and_keeps_edits(tmp_path: Path, env):
    repo, bare, _ = publish(tmp_path, env, str(tmp_path / "store"), files=1)
    for name, seed in (("a[1].safetensors", 80), ("a1.safetensors", 81)):
        write_safetensors(repo.path / name, random_model(seed))
    repo.commit("glob-like names")
    repo.git("push", "-q", "origin", "main")
    other = dict(user(tmp_path, env, "kim"), GITMODEL_SKIP_SMUDGE="1")
    clone(bare, tmp_path / "kim", other)
    kim = Repo(tmp_path / "kim", other)
    edited = write_safetensors(kim.path / "a1.safetensors", random_model(99))   # the user's work
    mine = sha256(edited)
    kim.gitmodel("pull")
    assert sha256(kim.path / "a1.safetensors") == mine, "pull overwrote an uncommitted change"
    assert sha256(kim.path / "a[1].safetensors") == sha256(repo.path / "a[1].safetensors")


def test_diff_does_not_store_untracked_files(repo: Repo):
    (repo.path / "notes.txt").write_text("v1\n")
    write_safetensors(repo.path / "m.safetensors", random_model(1))
    repo.commit("v1")
    (repo.path / "notes.txt").write_text("v2\n" * 100000)
    before = sum(p.stat().st_size for p in repo.store.rglob("*") if p.is_file())
    out = json.loads(repo.gitmodel("diff", "--format", "json").stdout)
    assert out == {"checkpoints": [], "numbers": []}
    after = sum(p.stat().st_size for p in repo.store.rglob("*") if p.is_file())
    assert after == before


def test_remote_names_paths_and_relative_urls(tmp_path: Path, env):
    repo = make_repo(tmp_path / "w", env)
    write_safetensors(repo.path / "m.safetensors", random_model(2))
    repo.commit("m")
    refused = repo.gitmodel("push", "origin/main", check=False)
    assert refused.returncode == 1 and "no gitmodel remote named 'origin/main'" in refused.stderr
    assert not (repo.path / "origin").exists()
    repo.gitmodel("remote", "add", "origin", "../team-store")
    (repo.path / "sub").mkdir()
    sub = Repo(repo.path / "sub", env)
    sub.gitmodel("push")
    assert list((tmp_path / "team-store" / "packs").glob("*.idx")), "relative to the work tree's top"
    # Given from a subfolder, a relative folder means the one the user named: kept relative to the top.
    (repo.path / "sub/mystore").mkdir()
    added = sub.gitmodel("remote", "add", "here", "./mystore")
    assert "remote here -> sub/mystore" in added.stdout
    sub.gitmodel("push", "here")
    assert list((repo.path / "sub/mystore/packs").glob("*.idx"))
    assert not (repo.path / "mystore").exists()

    # A bare repository reads the remote from HEAD's .gitmodel: what it holds is not "lost".
    repo.commit("remote", ".gitmodel")
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(tmp_path / "hub.git")], check=True)
    hub = Repo(tmp_path / "hub.git", env)
    listed = json.loads(hub.gitmodel("ls-files", "main", "--json").stdout)
    assert [(i["path"], i["work_tree"], i["store"]) for i in listed] == [("m.safetensors", "absent", "missing")]
    fsck = hub.gitmodel("fsck", check=False)
    assert "1 fetchable" in fsck.stdout and "remote origin has them" in fsck.stdout, fsck.stdout


def test_shared_hooks_path_is_left_alone(tmp_path: Path, env):
    shared = tmp_path / "shared-hooks"
    shared.mkdir()
    e = dict(env)
    subprocess.run(["git", "config", "--global", "core.hooksPath", str(shared)], env=e, check=True)
    repo = Repo(tmp_path / "w", e)
    repo.path.mkdir()
    repo.git("init", "-q")
    result = repo.gitmodel("install", check=False)
    assert "core.hooksPath" in result.stdout and not (shared / "pre-push").exists()
    assert result.returncode == 1 and "to do by hand: core.hooksPath" in result.stdout, result.stdout
    assert "--force replaces it" not in result.stdout, result.stdout    # --force could not
    (shared / "pre-push").write_text('#!/bin/sh\ngitmodel pre-push "$@"\n')   # what it asks for
    (shared / "pre-push").chmod(0o755)
    done = repo.gitmodel("install")
    assert "core.hooksPath" not in done.stdout, done.stdout
    (shared / "pre-push").unlink()
    repo.gitmodel("track", "*.safetensors")
    write_safetensors(repo.path / "m.safetensors", random_model(3))
    repo.commit("m")
    (repo.path / "m.safetensors").unlink()
    repo.git("checkout", "--", "m.safetensors")     # a smudge, where clones get their hook
    assert not (shared / "pre-push").exists()
    assert not (repo.path / ".git/hooks/pre-push").exists()


def test_mirror_publishes_an_index_after_the_packs_its_manifests_need(tmp_path: Path):
    from gitmodel.store.pack import decode_index
    store = Store(tmp_path / "local")
    model = random_model(40, layers=8)
    for step in range(4):                             # each add: new chunks + manifest, one pack
        model[f"layers.{step}.weight"] = model[f"layers.{step}.weight"] + 1
        path = write_safetensors(tmp_path / f"v{step}.safetensors", model)
        with open(path, "rb") as f:
            checkpoint.clean(f, store)
    source = open_backend(RemoteSpec("local", str(store.root)))
    dest = open_backend(RemoteSpec("copy", str(tmp_path / "copy")))
    published = []
    real = dest.backend.put_index
    dest.backend.put_index = lambda name, index, **kw: (published.append(name), real(name, index, **kw))
    transfer.mirror(source, dest, tmp_path / "tmp", stored.references)
    seen: set[bytes] = set()
    for name in published:
        entries = decode_index(name, (tmp_path / "copy/packs" / f"{name}.idx").read_bytes())
        seen.update(entries)
        for oid, entry in entries.items():
            if entry.kind == 1:
                chunks = {c for c, _ in Store(tmp_path / "copy").read_manifest(oid).chunks}
                assert chunks <= seen, f"{name} was visible before the chunks it needs"


def test_mirror_copies_what_is_whole_names_what_is_not_and_replaces_a_cut_copy(tmp_path: Path):
    """One damaged pack on the source stopped the mirror before any other was copied; a pack
    cut short at the destination was taken as copied for good (exit 0)."""
    from gitmodel.store.pack import decode_index
    store = Store(tmp_path / "local")
    model = random_model(41, layers=8)
    for step in range(4):                             # four packs, later manifests citing earlier chunks
        model[f"layers.{step}.weight"] = model[f"layers.{step}.weight"] + 1
        with open(write_safetensors(tmp_path / f"v{step}.safetensors", model), "rb") as f:
            checkpoint.clean(f, store)
    packs = sorted((store.root / "packs").glob("*.pack"))
    newest = max(packs, key=lambda p: p.stat().st_mtime_ns)       # the last add's pack
    whole = newest.read_bytes()
    newest.chmod(0o644)
    newest.write_bytes(whole[:len(whole) // 2])
    source = open_backend(RemoteSpec("local", str(store.root)))
    dest = open_backend(RemoteSpec("copy", str(tmp_path / "copy")))
    with pytest.raises(RemoteError, match="1 pack\\(s\\) are damaged or gone") as raised:
        transfer.mirror(source, dest, tmp_path / "tmp", stored.references)
    assert "The other 3 pack(s) were copied" in raised.value.full()
    copied = sorted((tmp_path / "copy/packs").glob("*.idx"))
    assert len(copied) == 3 and newest.stem not in {i.stem for i in copied}

    newest.write_bytes(whole)                          # repaired: the mirror completes
    transfer.mirror(source, dest, tmp_path / "tmp", stored.references)
    cut = tmp_path / "copy/packs" / newest.name
    cut.chmod(0o644)
    cut.write_bytes(whole[:100])                       # the destination's copy cut short
    stats = transfer.mirror(source, dest, tmp_path / "tmp", stored.references)
    assert stats.packs == 1 and cut.read_bytes() == whole
    assert decode_index(newest.stem, (tmp_path / "copy/packs" / f"{newest.stem}.idx").read_bytes())

    # The first add's pack holds chunks every later manifest cites: the later packs are copied
    # but stay invisible, so the destination shows no checkpoint it cannot give whole.
    oldest = min(packs, key=lambda p: p.stat().st_mtime_ns)
    oldest.chmod(0o644)
    oldest.write_bytes(oldest.read_bytes()[:200])
    other = open_backend(RemoteSpec("other", str(tmp_path / "other")))
    with pytest.raises(RemoteError, match="3 pack\\(s\\) that need them were copied but not published"):
        transfer.mirror(source, other, tmp_path / "tmp", stored.references)
    assert not list((tmp_path / "other/packs").glob("*.idx"))


def test_mirror_withholds_what_needs_a_withheld_pack(tmp_path: Path):
    """v1 cites v0's chunks, v2 only v1's: with v0's pack damaged, v1's pack stays
    unpublished, and so must v2's, or v2 shows at the destination without its chunks."""
    rng = np.random.default_rng(3)
    a, b, c = (rng.standard_normal(50_000).astype(np.float32) for _ in range(3))
    store = Store(tmp_path / "local")
    for i, tensors in enumerate([{"a": a}, {"a": a, "b": b}, {"b": b, "c": c}]):
        time.sleep(0.01)
        with open(write_safetensors(tmp_path / f"v{i}.safetensors", tensors), "rb") as f:
            checkpoint.clean(f, store)
    first = min((store.root / "packs").glob("*.pack"), key=lambda p: p.stat().st_mtime_ns)
    first.chmod(0o644)
    first.write_bytes(first.read_bytes()[:100])
    source = open_backend(RemoteSpec("local", str(store.root)))
    dest = open_backend(RemoteSpec("copy", str(tmp_path / "copy")))
    with pytest.raises(RemoteError, match="2 pack\\(s\\) that need them were copied but not published"):
        transfer.mirror(source, dest, tmp_path / "tmp", stored.references)
    assert not list((tmp_path / "copy/packs").glob("*.idx"))


def test_permission_errors_name_the_remote(tmp_path: Path, monkeypatch):
    remote = open_backend(RemoteSpec(str(tmp_path / "locked"), str(tmp_path / "locked")))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Access Denied")

    monkeypatch.setattr(remote.backend.fs, "ls", denied)
    with pytest.raises(RemoteError, match=r"remote .*locked: listing packs failed: PermissionError"):
        remote.list_packs()


def test_diff_in_a_pointer_only_clone_fetches_only_changed_tensors(tmp_path: Path, env):
    import numpy as np
    repo, bare, _ = publish(tmp_path, env, str(tmp_path / "store"), files=1)
    model = random_model(0, layers=6)
    model["layers.4.weight"] = model["layers.4.weight"] * np.float32(1.5)
    write_safetensors(repo.path / "model0.safetensors", model)
    repo.commit("v2")
    repo.git("push", "-q", "origin", "main")
    other = dict(user(tmp_path, env, "lee"), GITMODEL_SKIP_SMUDGE="1")
    clone(bare, tmp_path / "lee", other)
    lee = Repo(tmp_path / "lee", other)
    out = json.loads(lee.gitmodel("diff", "HEAD~1", "HEAD", "--format", "json").stdout)
    changed = [t for t in out["checkpoints"][0]["tensors"] if t["status"] == "changed"]
    assert [t["name"] for t in changed] == ["layers.4.weight"]
    assert changed[0]["change"]["relative_l2"] == pytest.approx(0.5, rel=1e-6)
    fetched = sum(p.stat().st_size for p in (lee.store / "packs").glob("*.pack"))
    whole = (repo.path / "model0.safetensors").stat().st_size
    assert 0 < fetched < 0.4 * whole, "only headers and the changed tensor's chunks travel"


def test_fetch_takes_another_copy_when_one_is_damaged(tmp_path: Path):
    """Clients that pushed at once may both have sent a chunk. A fetch that finds one copy
    damaged reads the other; with every copy damaged it fails and stores nothing of it."""
    from gitmodel.store.pack import PackWriter, decode_index, publish_into, record_head
    store, manifests, files, folder = _pushed(tmp_path, [33])
    # The same chunks again, in small packs of another composition (so other names).
    writer = PackWriter(tmp_path / "tmp", publish_into(folder / "packs"), target=300 << 10)
    chunks = [c for c, _ in store.read_manifest(manifests[0]).chunks]
    for oid in chunks:
        entry, record, _ = store.read_checked(oid)
        writer.add(oid, entry.kind, entry.encoding, entry.raw_length, record[record_head.size:])
    writer.finish()
    assert len(list((folder / "packs").glob("*.pack"))) > 2
    victim = chunks[len(chunks) // 2]

    def damage(pack: Path):
        entry = decode_index(pack.stem, pack.with_suffix(".idx").read_bytes())[victim]
        data = bytearray(pack.read_bytes())
        data[entry.offset + record_head.size + entry.stored_length // 2] ^= 0x10
        os.chmod(pack, 0o644)
        pack.write_bytes(bytes(data))

    fresh = Store(tmp_path / "fresh")
    view = _view(folder, fresh).refresh()
    copies = [folder / "packs" / f"{e.pack}.pack" for e in view.entries.copies(victim)]
    assert len(copies) == 2
    damage(copies[0])                        # the copy a fetch reads first
    assert not _fetch(fresh, view, manifests).failed
    assert _restore(fresh, manifests[0]) == files[0]
    damage(copies[1])
    other = Store(tmp_path / "other")
    result = _fetch(other, _view(folder, other), manifests)
    assert "corrupt" in result.failed[manifests[0].hex()]
    assert other.missing([victim]) == [victim]


def test_fetch_reads_each_manifest_once(tmp_path: Path, monkeypatch):
    """A fetch reads the manifests it lacks to learn their chunks, and stores those same
    reads (after the chunks) instead of asking the remote again."""
    from gitmodel.remote.backend import FsspecBackend
    store, manifests, files, folder = _pushed(tmp_path, [34, 35])
    reads, real = [], FsspecBackend.read_range
    monkeypatch.setattr(FsspecBackend, "read_range",
                        lambda self, pack, start, end, **kw: reads.append((pack, start, end)) or real(self, pack, start, end, **kw))
    fresh = Store(tmp_path / "fresh")
    view = _view(folder, fresh)
    result = sync.fetch(fresh, view, {m.hex(): f"m{i}.safetensors" for i, m in enumerate(manifests)}, quiet=True)
    assert result.stats.objects == len(set(_objects(store, manifests)))
    for m in manifests:
        entry = view.entries[m]
        covering = [r for r in reads if r[0] == entry.pack and r[1] <= entry.offset < r[2]]
        assert len(covering) == 1, "each manifest is read from the remote once"
        assert _restore(fresh, m) == files[manifests.index(m)]


def test_a_sweep_while_a_mirror_uploads_a_pack_leaves_the_copy_alone(tmp_path: Path):
    """A mirror copies each pack to a temporary file, verifying it, then uploads that file. A
    sweep of the temporary folder (another command opening the store) took the file for a
    dead leftover once its writer had closed it, and an upload that started, or retried,
    after it found nothing to send."""
    from gitmodel.store import files
    store = Store(tmp_path / "local")
    with open(write_safetensors(tmp_path / "m.safetensors", random_model(41, layers=4)), "rb") as f:
        checkpoint.clean(f, store)
    source = open_backend(RemoteSpec("local", str(store.root)))
    dest = open_backend(RemoteSpec("copy", str(tmp_path / "copy")))
    swept = []
    real = dest.backend.put_pack

    def sweep_then_put(path, pack, **kw):
        swept.append(files.sweep(tmp_path / "tmp", grace=0))
        return real(path, pack, **kw)

    dest.backend.put_pack = sweep_then_put
    transfer.mirror(source, dest, tmp_path / "tmp", stored.references)
    assert swept and not any(swept)
    copied = sorted(p.name for p in (tmp_path / "copy/packs").iterdir())
    assert copied == sorted(p.name for p in store.pack_dir.iterdir())
    for name in copied:
        assert (tmp_path / "copy/packs" / name).read_bytes() == (store.pack_dir / name).read_bytes()


def test_a_full_folder_remote_is_said_at_once_not_retried(tmp_path: Path, monkeypatch):
    """A full (or read-only) remote was retried for minutes as if the network were down, and
    the advice was to check the network."""
    import errno
    store, manifests, _ = _store_with(tmp_path, [50])
    view = _view(tmp_path / "remote", store)
    calls = []

    def full(*args, **kwargs):
        calls.append(args)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(view.backend.backend, "_write_local", full)
    monkeypatch.setenv("GITMODEL_REMOTE_TIMEOUT", "60")
    with pytest.raises(RemoteError) as raised:
        transfer.upload(store, view, _objects(store, manifests))
    assert len(calls) == 1 and "No space left on device" in str(raised.value)
    assert "Free space on the remote" in raised.value.full()


@pytest.mark.parametrize("handler", [Files, Forbidden, NotFound], ids=["501", "403", "404"])
def test_a_push_to_a_read_only_web_server_fails_at_once_saying_what_to_do(tmp_path: Path, env, web, handler):
    """A default remote served read-only over HTTP: its refusal (501 to an upload, or 403) was
    retried for 46 s as if the network were down, then the advice was to check the network.
    A static host's 404 to an upload said only "Check its URL", and lost the push's advice."""
    site = tmp_path / "site"
    site.mkdir()
    url = web(site, handler) + "/store"
    repo = team(tmp_path, env, url)
    path = write_safetensors(repo.path / "m.safetensors", random_model(5))
    repo.commit("m")
    repo.gitmodel("push", str(site / "store"))          # the store's writers reach its folder

    def refused() -> tuple[float, str]:
        started = time.monotonic()
        pushed = repo.git("push", "origin", "main", check=False)
        assert pushed.returncode != 0
        said = pushed.stderr.decode().splitlines()[0]
        return time.monotonic() - started, re.sub(r"(pack|push)-[0-9a-f]+", r"\1-X", said)

    status = {Files: "501 Unsupported method ('POST')", Forbidden: "403 Forbidden",
              NotFound: "404 Not Found (a web server that only serves files answers uploads so, as "
                        "does one at a wrong URL: `gitmodel remote list` shows it)"}[handler]
    where = ("Push through a URL of this store that takes writes (`GITMODEL_REMOTE=URL git push`, "
             "or `gitmodel remote add --local NAME URL` for git remote NAME)")
    seconds, said = refused()
    assert seconds < 10
    assert said == (f"gitmodel: error: remote origin ({url}) refuses writes: uploading pack-X.pack "
                    f"failed: HTTP {status}. The push was refused. The remote holds every checkpoint "
                    "it carries, but a push must also write there what keeps them from a remote gc "
                    "until git's refs name them (a note, fresh copies of old file lists: "
                    f"docs/formats.md §5). {where}, or, since nothing needs uploading, push the "
                    "commits without the note: `GITMODEL_SKIP_PUSH=1 git push` (clones check them "
                    "out from the remote)")
    # As it says: the commits go, and a clone checks them out from the remote.
    Repo(repo.path, dict(env, GITMODEL_SKIP_PUSH="1")).git("push", "-q", "origin", "main")
    clone(tmp_path / "hub.git", tmp_path / "carol", user(tmp_path, env, "carol"))
    assert sha256(tmp_path / "carol/m.safetensors") == sha256(path)

    # A checkpoint the remote lacks: skipping its upload would leave clones without it.
    write_safetensors(repo.path / "n.safetensors", random_model(6))
    repo.commit("n")
    seconds, said = refused()
    assert seconds < 10
    content = repo.out("show", "HEAD:n.safetensors").split("content ")[1][:12]
    assert said.endswith(f"The push was refused. The remote lacks 1 of its checkpoint(s) "
                         f"(n.safetensors ({content})). {where}. `GITMODEL_SKIP_PUSH=1 git push` "
                         "would push the commits without them, and clones could not check those "
                         "out until a push uploads them"), said
    # As it says: the store's writable URL for git remote origin, and the push completes.
    repo.gitmodel("remote", "add", "--local", "origin", str(site / "store"))
    repo.git("push", "-q", "origin", "main")
    carol = Repo(tmp_path / "carol", user(tmp_path, env, "carol2"))
    carol.git("pull", "-q")
    assert sha256(carol.path / "n.safetensors") == sha256(repo.path / "n.safetensors")


def test_a_read_only_folder_remote_is_said_at_once_not_retried(tmp_path: Path, monkeypatch):
    """A read-only mount gave the raw `OSError: [Errno 30] Read-only file system:
    …/push-….pending.tmp-…`; refusals are said as such, once, while a server error other than
    501 is still retried."""
    import errno
    import aiohttp
    import yarl
    store, manifests, _ = _store_with(tmp_path, [50])
    view = _view(tmp_path / "remote", store)
    calls = []

    def read_only(*args, **kwargs):
        calls.append(args)
        raise OSError(errno.EROFS, "Read-only file system", args[0])

    monkeypatch.setattr(view.backend.backend, "_write_local", read_only)
    monkeypatch.setenv("GITMODEL_REMOTE_TIMEOUT", "60")
    with pytest.raises(RemoteError) as raised:
        transfer.upload(store, view, _objects(store, manifests))
    assert len(calls) == 1
    assert re.fullmatch(rf"remote {re.escape(str(tmp_path))}/remote refuses writes: writing its "
                        r"version marker failed: Read-only file system", str(raised.value)), raised.value
    assert "it is read-only to this client" in raised.value.full()

    monkeypatch.setenv("GITMODEL_RETRY_BACKOFF", "0.01")
    answers = [503, 502, 501]
    waits = []
    monkeypatch.setattr(view.backend, "_say", waits.append)

    def server(*args, timeout=None):
        url = yarl.URL("http://127.0.0.1:9/store/packs/pack-X.idx")
        raise aiohttp.ClientResponseError(aiohttp.RequestInfo(url, "PUT", {}, url), (),
                                          status=answers.pop(0), message="no")
    with pytest.raises(RemoteError, match="refuses writes: uploading pack-X.idx failed: HTTP 501 no$"):
        view.backend._write("uploading pack-X.idx", server)
    assert len(waits) == 2 and not answers


def test_a_web_server_without_range_requests_is_named_never_called_damaged(tmp_path: Path, env, plain_web):
    """`python -m http.server` answers a request for part of a pack with the whole pack (200):
    a checkout said the pack "is shorter than its index says", `fsck --remote` called healthy
    checkpoints damaged (and its --repair contradicted it), and a mirror ended in an internal
    error (fsspec's ValueError)."""
    site = tmp_path / "site"
    site.mkdir()
    url = plain_web(site) + "/store"
    repo = team(tmp_path, env, url)
    path = write_safetensors(repo.path / "m.safetensors", random_model(7, layers=8, width=512))
    repo.commit("m")
    repo.gitmodel("push", str(site / "store"))            # 8 MiB: more than fsspec's first block
    Repo(repo.path, dict(env, GITMODEL_SKIP_PUSH="1")).git("push", "-q", "origin", "main")
    said = (f"remote origin ({url}): its server does not support range requests (it answered a "
            "request for part of pack-X.pack with the whole file). Nothing on it is damaged for "
            "that, but gitmodel reads a pack's records by range requests. Serve the store with a "
            "web server that supports them (nginx, Apache, Caddy and other production servers "
            "do; `python -m http.server` does not), or reach it as a folder or an S3 remote "
            "instead (`gitmodel remote add --local NAME URL`)")

    def first_line(result) -> str:
        return re.sub(r"pack-[0-9a-f]{64}", "pack-X", result.stderr.splitlines()[0])

    carol = user(tmp_path, env, "carol")
    cloned = clone(tmp_path / "hub.git", tmp_path / "carol", carol, check=False)
    assert first_line(cloned).startswith(f"gitmodel: error: m.safetensors: could not fetch it: {said}. "
                                         "Nothing was written for this file. ")
    for args in (["fsck", "--remote", "origin"], ["fsck", "--remote", "origin", "--repair"]):
        checked = repo.gitmodel(*args, check=False)
        assert (checked.returncode, checked.stdout, first_line(checked)) == (1, "", f"gitmodel: error: {said}")
    mirrored = repo.gitmodel("mirror", url, str(tmp_path / "copy"), check=False)
    named = said.replace(f"origin ({url})", url)           # given as a URL
    assert (mirrored.returncode, first_line(mirrored)) == (1, f"gitmodel: error: {named}")

    # As it says: the store reached as a folder, and the checkout completes.
    fixed = Repo(tmp_path / "carol", carol)
    fixed.gitmodel("remote", "add", "--local", "origin", str(site / "store"))
    fixed.git("reset", "-q", "--hard")
    assert sha256(fixed.path / "m.safetensors") == sha256(path)


def test_a_remote_named_by_its_url_is_not_told_to_be_configured(tmp_path: Path, env):
    """`gitmodel fetch URL` with a wrong URL printed `gitmodel remote add URL URL --local`,
    which fails: a URL is not a remote's name. There is nothing configured to correct."""
    repo, bare, sums = publish(tmp_path, env, str(tmp_path / "store"))
    dan = Repo(tmp_path / "dan", dict(user(tmp_path, env, "dan"), GITMODEL_SKIP_SMUDGE="1"))
    clone(bare, dan.path, dan.env)
    wrong = tmp_path / "nothere"
    tail = ("has no packs at all (is the URL right? has anything been pushed there?); it was "
            "named by its URL here, not configured: if that is wrong, run the command again with "
            "the right one. Everything that arrived is kept; a repeated fetch asks only for the rest\n")
    for args, env_more in (([str(wrong)], {}), ([], {"GITMODEL_REMOTE": f"file://{wrong}"})):
        fetched = Repo(dan.path, dict(dan.env, **env_more)).gitmodel("fetch", *args, check=False)
        assert (fetched.returncode, fetched.stderr) == (
            1, "gitmodel: error: 1 checkpoint(s) could not be fetched completely (e.g. "
               f"model0.safetensors): remote {args[0] if args else env_more['GITMODEL_REMOTE']} {tail}")
    # A configured name is told how to correct it, which works as printed.
    dan.gitmodel("remote", "add", "--local", "origin", str(wrong))
    fetched = dan.gitmodel("fetch", check=False)
    assert "`gitmodel remote add origin URL --local`" in fetched.stderr, fetched.stderr
    dan.gitmodel("remote", "add", "origin", str(tmp_path / "store"), "--local")
    dan.gitmodel("pull")
    assert_exact(dan.path, sums)


def test_a_missing_fsspec_backend_is_named_with_its_pip_command(tmp_path: Path, env):
    """Without aiohttp, fsspec's "HTTPFileSystem requires "requests" and "aiohttp"" came with
    "Install the fsspec backend for this URL" and no command."""
    repo = make_repo(tmp_path / "w", env)
    blocked = tmp_path / "without" / "aiohttp"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError(\"No module named 'aiohttp'\")\n")
    without = Repo(repo.path, dict(env, PYTHONPATH=str(blocked.parent)))
    fetched = without.gitmodel("fetch", "http://127.0.0.1:9/store", check=False)
    assert fetched.returncode == 1
    assert fetched.stderr.startswith("gitmodel: error: remote http://127.0.0.1:9/store: "), fetched.stderr
    assert fetched.stderr.endswith(". Nothing was read or written there. Install the fsspec backend "
                                   "for this URL: `pip install aiohttp` (what `pip install "
                                   "'fsspec[http]'` installs)\n"), fetched.stderr


def test_a_full_local_disk_is_named_with_what_to_do(tmp_path: Path, env):
    """A write to this machine's disk that failed said only "File too large". (The push
    builds its upload pack in the store's tmp/ first: that write is the one the limit stops.)"""
    repo = make_repo(tmp_path / "w", env)
    write_safetensors(repo.path / "m.safetensors", random_model(2))
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "store"))
    repo.commit("m")
    result = subprocess.run(["bash", "-c", "ulimit -f 200 && exec gitmodel push"], cwd=repo.path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "File too large" in result.stderr, result.stderr
    assert "nothing half-written is used" in result.stderr and "Traceback" not in result.stderr
    assert repo.gitmodel("push").returncode == 0                  # room again: it completes


def test_a_push_of_a_misspelt_revision_fails(tmp_path: Path, env):
    """Regression (an exploratory run): `gitmodel push origin mian` said "0 checkpoint(s):
    uploaded 0 object(s)" and exited 0 (`fetch` refused the same revision)."""
    repo = make_repo(tmp_path / "w", env)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "store"))
    write_safetensors(repo.path / "m.safetensors", random_model(1, layers=1))
    repo.commit("v1", "m.safetensors", ".gitmodel")
    result = repo.gitmodel("push", "origin", "mian", check=False)
    assert result.returncode == 1 and "unknown revision 'mian'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "store").exists()
    assert "1 checkpoint(s)" in repo.gitmodel("push", "origin", "main").stderr


def test_a_relative_folder_remote_means_the_same_folder_in_every_linked_worktree(tmp_path: Path, env):
    """Regression (an exploratory run): `.gitmodel` naming `../store` was read relative to the
    top of whichever worktree a command ran in, so a push from a linked worktree at another
    depth went to a second store, exit 0, and clones could not check out what it pushed."""
    repo = make_repo(tmp_path / "w", env)
    repo.gitmodel("remote", "add", "origin", "../store")
    write_safetensors(repo.path / "m.safetensors", random_model(1, layers=1))
    repo.commit("v1", "m.safetensors", ".gitmodel")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    repo.git("remote", "add", "origin", str(tmp_path / "hub.git"))
    repo.git("push", "-q", "-u", "origin", "main")
    repo.git("worktree", "add", "-q", "-b", "feature", str(tmp_path / "trees" / "feature"))
    tree = Repo(tmp_path / "trees" / "feature", env)
    assert str(tmp_path / "store") in tree.gitmodel("remote", "list").stdout
    digest = sha256(write_safetensors(tree.path / "m.safetensors", random_model(2, layers=1)))
    tree.commit("v2", "m.safetensors")
    tree.git("push", "-q", "origin", "feature")
    assert not (tmp_path / "trees" / "store").exists()
    clone(tmp_path / "hub.git", tmp_path / "c", env)
    c = Repo(tmp_path / "c", env)
    c.gitmodel("install")
    c.git("checkout", "-q", "feature")
    assert sha256(c.path / "m.safetensors") == digest
    # `remote add` from the linked worktree keeps the folder meant (a review: it was written
    # relative to the worktree and read relative to the main one)
    (tmp_path / "trees" / "mine").mkdir()
    tree.gitmodel("remote", "add", "--local", "mine", "../mine")
    assert f"{tmp_path / 'trees' / 'mine'}\t" in tree.gitmodel("remote", "list").stdout


def test_gitmodel_push_to_a_git_repositorys_folder_uses_the_store_inside_it(tmp_path: Path, env):
    """Regression (an exploratory run): `gitmodel push /path/to/repo.git` read git's own
    `config` as the store's version marker (and failed), and `gitmodel push /path/to/clone`
    wrote `config` and `packs/` into that clone's work tree, exit 0. A git repository's folder
    means the store inside it, as `git push FOLDER` does."""
    repo = make_repo(tmp_path / "w", env)
    write_safetensors(repo.path / "m.safetensors", random_model(1, layers=1))
    repo.commit("v1", "m.safetensors")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "b.git")], check=True)
    subprocess.run(["git", "init", "-q", str(tmp_path / "other")], check=True)
    repo.gitmodel("push", str(tmp_path / "b.git"))
    assert list((tmp_path / "b.git" / "gitmodel" / "packs").glob("*.idx"))
    repo.gitmodel("push", "../other")
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == [".git"]
    assert list((tmp_path / "other" / ".git" / "gitmodel" / "packs").glob("*.idx"))


def test_a_configured_folder_that_is_a_git_repository_means_the_store_inside_it(tmp_path: Path, env):
    """Regression (a review): `gitmodel push ../E` used E's own store (.git/gitmodel), while a
    remote configured with the same folder wrote config and packs/ into E's work tree (and
    one naming a bare repository read git's config as the store's marker)."""
    repo = make_repo(tmp_path / "w", env)
    write_safetensors(repo.path / "m.safetensors", random_model(1, layers=1))
    repo.commit("v1", "m.safetensors")
    subprocess.run(["git", "init", "-q", str(tmp_path / "E")], check=True)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "D.git")], check=True)
    repo.gitmodel("remote", "add", "--local", "peer", "../E")
    repo.gitmodel("remote", "add", "--local", "team", str(tmp_path / "D.git"))
    repo.gitmodel("push", "peer")
    repo.gitmodel("push", "team")
    assert sorted(p.name for p in (tmp_path / "E").iterdir()) == [".git"]
    assert list((tmp_path / "E" / ".git" / "gitmodel" / "packs").glob("*.idx"))
    assert list((tmp_path / "D.git" / "gitmodel" / "packs").glob("*.idx"))
    assert f"{tmp_path / 'E' / '.git' / 'gitmodel'}" in repo.gitmodel("remote", "list").stdout


def test_a_push_to_a_fork_reads_the_file_of_the_branch_its_readers_use(tmp_path: Path, env):
    """Regression (a review): a push from a branch without `.gitmodel` took the file of the
    newest branch of the git remote it went to; in a team's fork, a newer branch copied from
    the public upstream named upstream's store, and the push uploaded the team's weights
    there, exit 0. Only the branch HEAD tracks, else the remote's default branch, counts.
    A clone of that branch read the newer branch's file (upstream's store, which lacks the
    weights) and failed: readers take the default branch's first too."""
    up = make_repo(tmp_path / "up", env)
    (up.path / "README").write_text("public\n")
    up.commit("base", "README")
    up.gitmodel("remote", "add", "pub", str(tmp_path / "upstore"))
    up.commit("their store", ".gitmodel")
    subprocess.run(["git", "clone", "-q", "--bare", str(up.path), str(tmp_path / "fork.git")], check=True, env=env)
    clone(tmp_path / "fork.git", tmp_path / "team", env)
    team = Repo(tmp_path / "team", env)
    team.gitmodel("install")
    team.gitmodel("remote", "remove", "pub")
    team.gitmodel("remote", "add", "team", str(tmp_path / "teamstore"))
    team.commit("our store", ".gitmodel")
    team.git("push", "-q", "origin", "main")
    team.git("checkout", "-q", "-b", "sync", "main~1")               # upstream's file, newer
    team.git("commit", "-q", "--allow-empty", "-m", "sync", "--date", "2030-01-01T00:00:00")
    subprocess.run(["git", "commit", "-q", "--amend", "--allow-empty", "--no-edit"], cwd=team.path,
                   env={**env, "GIT_COMMITTER_DATE": "2030-01-01T00:00:00"}, check=True)
    team.git("push", "-q", "origin", "sync")
    clone(tmp_path / "fork.git", tmp_path / "dev", env)
    dev = Repo(tmp_path / "dev", env)
    dev.gitmodel("install")
    dev.git("checkout", "-q", "-b", "feat", "main~2")                # before either file
    write_safetensors(dev.path / "m.safetensors", random_model(3, layers=1))
    dev.gitmodel("track", "*.safetensors")
    dev.commit("weights", ".gitattributes", "m.safetensors")
    digest = sha256(dev.path / "m.safetensors")
    dev.git("push", "-q", "origin", "feat")
    assert not (tmp_path / "upstore").exists()
    assert list((tmp_path / "teamstore" / "packs").glob("*.idx"))
    reader = user(tmp_path, env, "reader")
    subprocess.run(["git", "clone", "-q", "-b", "feat", str(tmp_path / "fork.git"), str(tmp_path / "r")],
                   env=reader, check=True, capture_output=True)
    assert sha256(tmp_path / "r" / "m.safetensors") == digest


def test_a_remote_that_is_the_repositorys_own_store_is_refused(tmp_path: Path, env):
    """Regression (an exploratory run): `gitmodel remote add origin "$URL"` with URL unset
    named ".", the repository's own folder, whose store is its own: `git push` said "1
    checkpoint(s) on origin: uploaded 0 object(s)" and exited 0, and every clone failed."""
    repo = make_repo(tmp_path / "w", env)
    empty = repo.gitmodel("remote", "add", "origin", "", check=False)
    assert empty.returncode != 0 and "an empty URL names no remote" in empty.stderr, empty.stderr
    hub = tmp_path / "hub.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(hub)], check=True)
    repo.git("remote", "add", "origin", str(hub))
    for url in (".", str(repo.path), str(repo.store)):
        repo.gitmodel("remote", "add", "origin", url)
        write_safetensors(repo.path / "m.safetensors", random_model(len(url), layers=1))
        repo.commit(url, "m.safetensors", ".gitmodel")
        for push in (["git", "push", "-q", "origin", "main"], ["gitmodel", "push"]):
            result = subprocess.run(push, cwd=repo.path, env=repo.env, capture_output=True, text=True)
            assert result.returncode != 0, (url, push, result.stderr)
            assert "is this repository's own store" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
    assert not (hub / "gitmodel").exists()


def test_a_clone_whose_checkpoints_went_to_another_gitmodel_remote_is_told_where(tmp_path: Path, env):
    """A push through git remote `backup` goes to gitmodel remote `backup`; a clone of
    backup.git reads from the default one, which lacks them: the error said only that they
    were never pushed there."""
    repo = make_repo(tmp_path / "a", env)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "store-origin"))
    repo.gitmodel("remote", "add", "backup", str(tmp_path / "store-backup"))
    digest = sha256(write_safetensors(repo.path / "m.safetensors", random_model(1)))
    repo.commit("v1", "m.safetensors", ".gitmodel")
    for name in ("origin", "backup"):
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / f"{name}.git")], check=True)
        repo.git("remote", "add", name, str(tmp_path / f"{name}.git"))
    repo.git("push", "-q", "backup", "main")
    bob = user(tmp_path, env, "bob")
    cloned = subprocess.run(["git", "clone", "-q", str(tmp_path / "backup.git"), str(tmp_path / "c")],
                            env=bob, capture_output=True, text=True)
    assert cloned.returncode != 0 and "`gitmodel fetch backup`" in cloned.stderr, cloned.stderr
    clone = Repo(tmp_path / "c", bob)
    clone.gitmodel("fetch", "backup")
    clone.git("reset", "-q", "--hard")
    assert sha256(clone.path / "m.safetensors") == digest


def test_a_push_of_a_branch_whose_gitmodel_names_another_store_checks_that_store(tmp_path: Path, env):
    """Branch feat moves the team's store (its .gitmodel names storeB); pushed from main, the
    hook uploaded to main's storeA, exit 0, and every clone of feat failed."""
    repo = make_repo(tmp_path / "r", env)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "storeA"))
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    repo.git("remote", "add", "origin", str(tmp_path / "hub.git"))
    write_safetensors(repo.path / "m.safetensors", random_model(0))
    repo.commit("v0", "m.safetensors", ".gitmodel")
    repo.git("push", "-q", "-u", "origin", "main")
    repo.git("switch", "-q", "-c", "feat")
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "storeB"))
    digest = sha256(write_safetensors(repo.path / "m.safetensors", random_model(1)))
    repo.commit("v1, store moved", "m.safetensors", ".gitmodel")
    repo.git("switch", "-q", "main")
    refused = repo.git("push", "origin", "feat", check=False)
    err = refused.stderr.decode()
    assert refused.returncode != 0 and "Nothing was pushed" in err and "storeB" in err, err
    hint = re.search(r"`(git switch [^`]+)`", err).group(1)
    subprocess.run(["bash", "-c", hint], cwd=repo.path, env=env, check=True, capture_output=True)
    repo.git("switch", "-q", "main")
    repo.git("push", "-q", "origin", "feat")

    # The same folder spelled another way is the same store: no refusal
    repo.git("switch", "-q", "-c", "slash")
    subprocess.run(["git", "config", "-f", ".gitmodel", "gitmodel.origin.url", f"{tmp_path / 'storeA'}/"],
                   cwd=repo.path, check=True)
    write_safetensors(repo.path / "m.safetensors", random_model(3))
    repo.commit("v3", "m.safetensors", ".gitmodel")
    repo.git("switch", "-q", "main")
    repo.git("push", "-q", "origin", "slash")
    bob = user(tmp_path, env, "bob")
    subprocess.run(["git", "clone", "-q", "-b", "feat", str(tmp_path / "hub.git"), str(tmp_path / "c")],
                   env=bob, check=True)
    assert sha256(tmp_path / "c" / "m.safetensors") == digest


def test_a_pushed_branch_that_names_a_store_where_the_push_runs_without_one(tmp_path: Path, env):
    """Pushed from a checkout that uses the git remote's embedded store, a branch whose new
    .gitmodel names a team store, with an older commit of its own history checked too."""
    hub = tmp_path / "hub.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(hub)], check=True)
    repo = make_repo(tmp_path / "r", env)
    repo.git("remote", "add", "origin", str(hub))
    write_safetensors(repo.path / "m.safetensors", random_model(0))
    repo.commit("v0", "m.safetensors")
    repo.git("push", "-q", "-u", "origin", "main")
    repo.git("switch", "-q", "-c", "feat")
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "storeB"))
    write_safetensors(repo.path / "m.safetensors", random_model(1))
    repo.commit("team store, v1", "m.safetensors", ".gitmodel")
    write_safetensors(repo.path / "other.safetensors", random_model(2))
    repo.commit("another file", "other.safetensors")
    repo.git("switch", "-q", "main")
    refused = repo.git("push", "origin", "feat", check=False)
    assert refused.returncode != 0 and b"Nothing was pushed" in refused.stderr, refused.stderr
    assert b"m.safetensors" in refused.stderr and b"other.safetensors" in refused.stderr, refused.stderr


def test_a_remote_that_refuses_the_connection_when_opened_is_retried_and_named(tmp_path: Path, env):
    """An ftp remote (whose filesystem connects when it is created) on a closed port: push,
    fetch, fsck --remote, mirror and checkout printed only `gitmodel: error: Connection
    refused`, at once, with no remote named; in checkout the filter process died."""
    import socket
    with socket.socket() as s:                           # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"ftp://127.0.0.1:{s.getsockname()[1]}/models"
    env = dict(env, GITMODEL_REMOTE_TIMEOUT="1", GITMODEL_RETRY_BACKOFF="0.05")
    repo = make_repo(tmp_path / "w", env)
    write_safetensors(repo.path / "a.safetensors", random_model(1, layers=1))
    write_safetensors(repo.path / "b.safetensors", random_model(2, layers=1))
    repo.commit("m", "a.safetensors", "b.safetensors")
    repo.gitmodel("remote", "add", "dead", url, "--local")
    repo.git("config", "gitmodel.remote", "dead")
    said = (f"remote dead ({url}): connecting failed after ")
    hint = "Check the URL, the network and credentials"
    for args in (["push", "dead", "--all"], ["fetch", "dead"], ["fsck", "--remote", "dead"],
                 ["mirror", "dead", str(tmp_path / "copy")]):
        result = repo.gitmodel(*args, check=False)
        assert result.returncode == 1, result
        assert said in result.stderr and hint in result.stderr, (args, result.stderr)
        attempts = int(re.search(r"failed after (\d+) attempt", result.stderr).group(1))
        assert attempts > 1 and "retrying" in result.stderr, result.stderr
    for pack in (repo.store / "packs").iterdir():
        os.chmod(pack, 0o644)
        pack.unlink()
    (repo.path / "a.safetensors").unlink()
    result = repo.git("checkout", "--", "a.safetensors", check=False)
    err = result.stderr.decode()
    assert result.returncode != 0 and not (repo.path / "a.safetensors").exists()
    assert "external filter" not in err, err                 # the filter process answered
    assert ("error: a.safetensors: 1 object(s) of this checkpoint are missing from the local "
            "store") in err, err
    assert f"and the gitmodel remote could not be opened to fetch them: {said}" in err, err
    assert "no gitmodel remote is configured" not in err, err


def test_a_remote_that_could_not_be_opened_is_not_waited_for_again(tmp_path: Path, monkeypatch):
    """The filter serves a whole checkout with one session: each file waited for the remote's
    timeout again when its filesystem could not be created."""
    import socket
    from gitmodel.git.session import Session
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"ftp://127.0.0.1:{s.getsockname()[1]}/models"
    monkeypatch.setenv("GITMODEL_REMOTE_TIMEOUT", "1")
    monkeypatch.setenv("GITMODEL_RETRY_BACKOFF", "0.05")
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True)
    session = Session(tmp_path / "r")
    with pytest.raises(RemoteError, match=r"connecting failed after \d+ attempt\(s\)"):
        session.view(RemoteSpec("dead", url))
    began = time.monotonic()
    with pytest.raises(RemoteError, match=r"connecting failed after \d+ attempt\(s\)"):
        session.view(RemoteSpec("dead", url))
    assert time.monotonic() - began < 0.5


def test_a_clone_whose_committed_remote_url_is_wrong_is_repaired_as_the_error_says(tmp_path: Path, env):
    """The error said to fix the URL with `gitmodel remote add origin URL`, then `git reset
    --hard`: the reset put the committed `.gitmodel`, wrong URL and all, back first."""
    repo, bare, sums = publish(tmp_path, env, str(tmp_path / "right"))
    wrong = tmp_path / "wrong"
    repo.gitmodel("remote", "add", "origin", str(wrong))
    repo.commit("typo", ".gitmodel")
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=repo.path, check=True,
                   env=dict(env, GITMODEL_SKIP_PUSH="1"))
    ivy = user(tmp_path, env, "ivy")
    result = clone(bare, tmp_path / "ivy", ivy, check=False)
    assert result.returncode != 0
    assert (f"remote origin ({wrong}) has no packs at all (is the URL right? has anything been "
            "pushed there?); if its URL is wrong, set the right one for this clone with "
            "`gitmodel remote add origin URL --local` (a checkout or `git reset --hard` puts the "
            "committed `.gitmodel` back before it restores files) and commit the right one "
            "later (`gitmodel remote add origin URL`)") in result.stderr, result.stderr
    assert ("after a clone or checkout that stopped here: `git reset --hard`, which puts the "
            "committed `.gitmodel` back first: a remote's URL is set for it with `gitmodel remote "
            "add NAME URL --local`") in result.stderr, result.stderr
    work = Repo(tmp_path / "ivy", ivy)
    work.gitmodel("remote", "add", "origin", str(tmp_path / "right"), "--local")
    work.git("reset", "-q", "--hard")
    assert_exact(work.path, sums)
