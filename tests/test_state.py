"""`gitmodel ls-files` and `gitmodel status`, through real git and a folder remote."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import Repo, make_repo, random_model, user, write_safetensors
from test_gc import age_packs

MODEL = "model.safetensors"


def small(seed: int) -> dict:
    return random_model(seed, layers=2, width=64)


def test_ls_files_says_where_each_checkpoint_is(tmp_path: Path, git_env):
    env = user(tmp_path, git_env, "ann")
    work = make_repo(tmp_path / "ann", env)
    write_safetensors(work.path / MODEL, small(1))
    write_safetensors(work.path / "b.safetensors", small(2))
    work.commit("two", MODEL, "b.safetensors")
    work.gitmodel("remote", "add", "origin", str(tmp_path / "store"))
    work.commit("remote", ".gitmodel")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    work.git("remote", "add", "origin", str(tmp_path / "hub.git"))
    work.git("push", "-q", "origin", "main")

    listed = json.loads(work.gitmodel("ls-files", "--json").stdout)
    assert [item["path"] for item in listed] == ["b.safetensors", MODEL]
    mine = listed[1]
    pointer = work.out("cat-file", "-p", f"HEAD:{MODEL}")
    assert f"content {mine['content']}" in pointer
    assert mine["size"] == (work.path / MODEL).stat().st_size
    assert (mine["work_tree"], mine["store"]) == ("file", "complete")
    text = work.gitmodel("ls-files").stdout.splitlines()
    assert text[1].split() == [mine["content"][:12], *_human(mine["size"]), "file", "complete", MODEL]

    # A clone that left pointers: the work tree and its store have nothing yet.
    clone_env = dict(env, GITMODEL_SKIP_SMUDGE="1")
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(tmp_path / "bob")],
                   env=clone_env, check=True, capture_output=True)
    bob = Repo(tmp_path / "bob", env)
    states = {i["path"]: (i["work_tree"], i["store"]) for i in json.loads(bob.gitmodel("ls-files", "--json").stdout)}
    assert states == {MODEL: ("pointer", "missing"), "b.safetensors": ("pointer", "missing")}
    bob.gitmodel("pull")
    states = {i["path"]: (i["work_tree"], i["store"]) for i in json.loads(bob.gitmodel("ls-files", "--json").stdout)}
    assert states == {MODEL: ("file", "complete"), "b.safetensors": ("file", "complete")}

    # A revision: what its tree held.
    write_safetensors(work.path / MODEL, small(3))
    work.commit("v2", MODEL)
    old = {i["path"]: i for i in json.loads(work.gitmodel("ls-files", "HEAD~2", "--json").stdout)}
    assert old[MODEL]["content"] == mine["content"]
    assert (old[MODEL]["work_tree"], old["b.safetensors"]["work_tree"]) == ("modified", "file")
    write_safetensors(work.path / "b.safetensors", small(4))          # not staged
    now = {i["path"]: i["work_tree"] for i in json.loads(work.gitmodel("ls-files", "--json").stdout)}
    assert now == {MODEL: "file", "b.safetensors": "modified"}
    assert "unknown revision" in work.gitmodel("ls-files", "nope", check=False).stderr


def _human(size: int) -> list[str]:
    return [f"{size / 1024:.1f}", "KiB"] if size < 1 << 20 else [f"{size / (1 << 20):.1f}", "MiB"]


def test_status_reports_staged_modified_unpushed_and_reclaimable(tmp_path: Path, git_env):
    repo = make_repo(tmp_path / "repo", git_env)
    write_safetensors(repo.path / MODEL, small(1))
    repo.commit("v1", MODEL)
    first = json.loads(repo.gitmodel("status", "--json").stdout)
    assert first["staged"] == [] and first["modified"] == []
    assert [u["path"] for u in first["unpushed"]] == [MODEL]          # no remote yet
    assert first["store_bytes"] > 0 and first["reclaimable_bytes"] == 0

    (repo.path / MODEL).unlink()                     # said as git says it: deleted, not modified
    (repo.path / "sub").mkdir()
    write_safetensors(repo.path / "sub" / "new.safetensors", small(3))
    gone = json.loads(repo.gitmodel("status", "--json").stdout)
    assert gone["modified"] == [] and gone["deleted"] == [MODEL], gone
    assert gone["untracked"] == ["sub/new.safetensors"], gone
    text = repo.gitmodel("status").stdout
    assert "deleted, not staged:\n  model.safetensors" in text and "untracked (`git add`" in text, text
    (repo.path / "sub" / "new.safetensors").unlink()
    write_safetensors(repo.path / MODEL, small(2))
    assert json.loads(repo.gitmodel("status", "--json").stdout)["modified"] == [MODEL]
    repo.git("add", MODEL)
    staged = json.loads(repo.gitmodel("status", "--json").stdout)
    assert [s["path"] for s in staged["staged"]] == [MODEL] and staged["modified"] == []
    assert staged["staged"][0]["old"] == first["unpushed"][0]["content"]
    text = repo.gitmodel("status").stdout
    assert "staged:" in text and MODEL in text and "reclaimable" in text

    repo.git("reset", "-q", "--hard")                # the staged version becomes garbage
    age_packs(repo.store)
    after = json.loads(repo.gitmodel("status", "--json").stdout)
    assert after["staged"] == [] and after["reclaimable_bytes"] > 10_000
    freed_before = after["store_bytes"]
    repo.gitmodel("gc")
    assert json.loads(repo.gitmodel("status", "--json").stdout)["store_bytes"] <= \
        freed_before - after["reclaimable_bytes"] + 64

    hub = tmp_path / "hub.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(hub)], check=True)
    repo.git("remote", "add", "origin", str(hub))
    repo.gitmodel("remote", "add", "team", str(tmp_path / "team-store"), "--local")
    lacking = json.loads(repo.gitmodel("status", "--json").stdout)
    assert [u["path"] for u in lacking["not_on_remote"]] == [MODEL]      # nothing uploaded yet
    assert lacking["not_on_remote"][0]["in_local_store"]
    assert "not on the gitmodel remote team" in repo.gitmodel("status").stdout
    repo.gitmodel("push", "team", "main")
    assert json.loads(repo.gitmodel("status", "--json").stdout)["not_on_remote"] == []
    repo.git("push", "-q", "origin", "main")
    done = json.loads(repo.gitmodel("status", "--json").stdout)
    assert done["unpushed"] == [] and done["not_on_remote"] == [] and done["remote"] == "team"
    assert "no checkpoint staged, modified or unpushed" in repo.gitmodel("status").stdout


def test_status_of_a_store_with_a_damaged_live_manifest_still_reports(tmp_path: Path, git_env):
    """gc's estimate stops at a live manifest it cannot read; status stopped with it and showed
    nothing else."""
    repo = make_repo(tmp_path / "repo", git_env)
    write_safetensors(repo.path / MODEL, small(1))
    repo.commit("v1", MODEL)
    write_safetensors(repo.path / MODEL, small(2))
    repo.commit("v2", MODEL)
    write_safetensors(repo.path / MODEL, small(3))
    newest = max((repo.store / "packs").glob("*.pack"), key=lambda p: p.stat().st_mtime)
    newest.chmod(0o644)
    with open(newest, "r+b") as f:
        f.truncate(newest.stat().st_size // 2)
    done = repo.gitmodel("status", check=False)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"modified, not staged:\n  {MODEL}" in done.stdout, done.stdout
    assert "damaged (`gitmodel fsck` says where)" in done.stdout, done.stdout
    assert json.loads(repo.gitmodel("status", "--json").stdout)["store_error"]


def _with_remotes(tmp_path: Path, git_env) -> tuple[Repo, Path]:
    """A repository with v1 committed, gitmodel remote `team` and git remote origin (a bare
    repository, also returned) beside it, nothing pushed."""
    repo = make_repo(tmp_path / "repo", git_env)
    repo.gitmodel("remote", "add", "team", str(tmp_path / "team-store"))
    write_safetensors(repo.path / MODEL, small(1))
    repo.commit("v1", MODEL, ".gitmodel")
    hub = tmp_path / "hub.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(hub)], check=True)
    repo.git("remote", "add", "origin", str(hub))
    return repo, hub


def test_status_in_a_clone_tells_checkpoints_it_cannot_push_from_those_it_can(tmp_path: Path, git_env):
    """A checkpoint pushed without its data (GITMODEL_SKIP_PUSH) is on neither the remote nor
    in a clone: status told the clone that `gitmodel push` uploads it."""
    repo, hub = _with_remotes(tmp_path, git_env)
    repo.env = dict(repo.env, GITMODEL_SKIP_PUSH="1")
    repo.git("push", "-q", "origin", "main")
    reader = dict(git_env, GITMODEL_SKIP_SMUDGE="1")
    subprocess.run(["git", "clone", "-q", str(hub), str(tmp_path / "clone")], env=reader, check=True)
    clone = Repo(tmp_path / "clone", reader)
    clone.gitmodel("install")
    found = json.loads(clone.gitmodel("status", "--json").stdout)
    assert [(u["path"], u["in_local_store"]) for u in found["not_on_remote"]] == [(MODEL, False)]
    text = clone.gitmodel("status").stdout
    assert "on neither the gitmodel remote team nor here" in text and "(`gitmodel push --all` uploads them)" not in text, text


def test_status_sees_a_remote_that_lost_the_chunks_of_a_manifest_it_lists(tmp_path: Path, git_env):
    """Regression (an exploratory run): with a remote pack of chunks gone, status said
    "no checkpoint … unpushed" because the remote still listed each checkpoint's manifest."""
    repo = make_repo(tmp_path / "repo", git_env)
    store = tmp_path / "team-store"
    repo.gitmodel("remote", "add", "team", str(store))
    model = small(2)
    write_safetensors(repo.path / MODEL, model, metadata={"step": "1"})
    repo.commit("v1", MODEL, ".gitmodel")
    repo.gitmodel("push")
    first = set((store / "packs").glob("pack-*"))
    write_safetensors(repo.path / MODEL, model, metadata={"step": "2"})     # the same chunks
    repo.commit("v2", MODEL)
    repo.gitmodel("push")                      # sends the new manifest only
    for path in first:                         # the remote loses v1's pack: its chunks
        path.chmod(0o644)
        path.unlink()
    found = json.loads(repo.gitmodel("status", "--json").stdout)
    assert len(found["not_on_remote"]) == 2 and all(u["in_local_store"] for u in found["not_on_remote"]), found
    repo.gitmodel("push", "--all")
    assert json.loads(repo.gitmodel("status", "--json").stdout)["not_on_remote"] == []


def test_the_push_status_names_uploads_what_it_lists(tmp_path: Path, git_env):
    """A branch pushed with `git push --no-verify` (the hook skipped): status said `gitmodel
    push` uploads its checkpoint, which uploaded nothing (it pushes HEAD's history)."""
    repo, _ = _with_remotes(tmp_path, git_env)
    repo.git("push", "-q", "origin", "main")
    repo.git("checkout", "-q", "-b", "feat")
    write_safetensors(repo.path / MODEL, small(2))
    repo.commit("v2", MODEL)
    repo.git("push", "-q", "--no-verify", "origin", "feat")
    repo.git("checkout", "-q", "main")
    text = repo.gitmodel("status").stdout
    hint = re.search(r"not on the gitmodel remote team \(`([^`]+)` uploads them\)", text)
    assert hint, text
    repo.gitmodel(*hint.group(1).split()[1:])
    assert "not on the gitmodel remote" not in repo.gitmodel("status").stdout


def test_pointers_at_paths_no_longer_tracked_are_named_not_restored(tmp_path: Path, git_env):
    """After a rewrite dropped the .gitattributes line of a path (filter-branch
    --subdirectory-filter), status said `gitmodel pull` restores its pointer, and pull wrote the
    checkpoint where git would not clean it: `git status` clean, and the next `commit -a`
    stored the whole file in git."""
    repo = make_repo(tmp_path / "repo", git_env)
    write_safetensors(repo.path / MODEL, small(1))
    repo.commit("v1", MODEL)
    (repo.path / ".gitattributes").write_text("")
    repo.commit("untrack", ".gitattributes")
    pointer = repo.git("show", f"HEAD:{MODEL}").stdout
    (repo.path / MODEL).write_bytes(pointer)            # the pointer, as a skip-smudge clone has it
    text = repo.gitmodel("status").stdout
    assert "(`gitmodel pull` restores them)" not in text, text
    assert f"no `filter=gitmodel` attribute names (`gitmodel track PATTERN`, then `gitmodel pull`):\n  {MODEL}" in text, text
    pulled = repo.gitmodel("pull", check=False)
    assert pulled.returncode == 1 and "gitmodel track PATTERN" in pulled.stderr, pulled.stderr
    assert (repo.path / MODEL).read_bytes() == pointer


def test_paths_holding_terminal_escapes_are_printed_as_git_quotes_them(tmp_path: Path, git_env):
    """A committed checkpoint path holding ESC sequences (git prints it quoted) went out raw
    in the pre-push error, the clone's smudge error, `gitmodel status` and `gitmodel fsck`."""
    repo, hub = _with_remotes(tmp_path, git_env)
    name = "evil\x1b]0;TITLE\x07\x1b[31mred.safetensors"
    shown = '"evil\\033]0;TITLE\\a\\033[31mred.safetensors"'       # as `git status` shows it
    (repo.path / name).write_text(f"gitmodel pointer v1\nsize 5\ncontent {'cd' * 32}\nformat opaque\n")
    repo.commit("evil", name)
    assert repo.out("-c", "core.quotePath=false", "ls-files", name).strip() == shown
    printed = []
    push = repo.git("push", "origin", "main", check=False)
    assert push.returncode != 0 and shown.encode() in push.stderr, push.stderr
    printed.append(push.stderr)
    repo.env = dict(repo.env, GITMODEL_SKIP_PUSH="1")
    repo.git("push", "-q", "origin", "main")
    reader = user(tmp_path, git_env, "reader")
    clone = subprocess.run(["git", "clone", "-q", str(hub), str(tmp_path / "clone")], env=reader,
                           capture_output=True)
    assert f"error: {shown}: could not fetch it".encode() in clone.stderr, clone.stderr
    printed.append(clone.stderr)
    clone_repo = Repo(tmp_path / "clone", reader)
    status = subprocess.run(["gitmodel", "status"], cwd=clone_repo.path, env=reader, capture_output=True)
    assert f"  {shown}  {'cd' * 6}\n".encode() in status.stdout, status.stdout
    fsck = subprocess.run(["gitmodel", "fsck"], cwd=clone_repo.path, env=reader, capture_output=True)
    assert f"lost: {shown} (".encode() in fsck.stdout + fsck.stderr, fsck.stdout + fsck.stderr
    listed = subprocess.run(["gitmodel", "ls-files"], cwd=clone_repo.path, env=reader, capture_output=True)
    printed += [status.stdout, status.stderr, fsck.stdout, fsck.stderr, listed.stdout, listed.stderr]
    for out in printed:
        assert b"\x1b" not in out and b"\x07" not in out, out


def test_quote_path_quotes_as_git_does_for_ascii():
    from gitmodel.quoting import quote_path
    assert quote_path("a/b c.pt") == "a/b c.pt" and quote_path("modèle.pt") == "modèle.pt"
    assert quote_path('a"b\\c\td\n\x7f\x1b') == '"a\\"b\\\\c\\td\\n\\177\\033"'
    assert quote_path("x\u009by\u202e") == '"x\\302\\233y\\342\\200\\256"'      # C1 CSI, bidi override
    assert quote_path(os.fsdecode(b"mod\xe8le")) == '"mod\\350le"'


def _history_with_a_damaged_pointer(tmp_path: Path, env: dict) -> tuple[Repo, str, str, str]:
    """v1 pushed; then a commit of a pointer edited by hand, one restoring it, and v2: the
    repository, the damaged commit and the sha256s of v1 and v2."""
    from conftest import sha256, team
    repo = team(tmp_path, env, str(tmp_path / "remote"))
    path = repo.path / "m.safetensors"
    write_safetensors(path, random_model(1))
    v1 = sha256(path)
    repo.commit("v1", "m.safetensors")
    repo.git("push", "-q", "origin", "main")
    bad = repo.git("hash-object", "-w", "--stdin", input=b"gitmodel pointer v1\nsize abc\ncontent zz\n").stdout.decode().strip()
    repo.git("update-index", "--cacheinfo", f"100644,{bad},m.safetensors")
    repo.git("commit", "-q", "-m", "edited pointer")
    damaged = repo.out("rev-parse", "HEAD").strip()
    repo.git("checkout", "HEAD~1", "--", "m.safetensors")
    repo.git("commit", "-q", "-m", "restore pointer")
    write_safetensors(path, random_model(2))
    v2 = sha256(path)
    repo.commit("v2", "m.safetensors")
    return repo, damaged, v1, v2


def test_commits_with_a_damaged_pointer_pushed_knowingly_carry_every_readable_checkpoint(tmp_path: Path, git_env):
    """GITMODEL_ALLOW_DAMAGED_POINTERS=1 publishes the commits as they are (shared elsewhere
    already, say): the push names the damaged pointer, exits 0, and a clone of the newest
    version is exact."""
    from conftest import sha256
    repo, damaged, _, v2 = _history_with_a_damaged_pointer(tmp_path, git_env)
    pushed = Repo(repo.path, dict(git_env, GITMODEL_ALLOW_DAMAGED_POINTERS="1")).git("push", "origin", "main")
    assert f"m.safetensors in commit {damaged[:12]}" in pushed.stderr.decode(), pushed.stderr
    clone = Repo(tmp_path, user(tmp_path, git_env, "bob"))
    clone.git("clone", "-q", str(tmp_path / "hub.git"), "other")
    assert sha256(tmp_path / "other" / "m.safetensors") == v2


def test_a_damaged_pointer_in_history_is_named_with_its_commit_and_a_repair_that_works(tmp_path: Path, git_env):
    """A pointer edited by hand and committed, then restored in the next commit as the
    message said: every push, `gitmodel status` and `gitmodel fsck --all` kept failing on
    the blob (named without its commit). History reports now name the commit and go on; a
    push refuses with a rewrite that works, after which it pushes and a clone is exact."""
    from conftest import sha256
    env = dict(git_env, GIT_EDITOR="true")
    repo, damaged, v1, v2 = _history_with_a_damaged_pointer(tmp_path, env)
    path = repo.path / "m.safetensors"
    pushed = repo.git("push", "origin", "main", check=False)
    said = pushed.stderr.decode()
    assert pushed.returncode != 0 and f"m.safetensors in commit {damaged[:12]}" in said, said
    assert f"git rebase -i {damaged[:12]}^" in said and "nothing was pushed" in said, said
    status = repo.gitmodel("status")
    assert f"m.safetensors in commit {damaged[:12]}" in status.stdout, status.stdout
    fsck = repo.gitmodel("fsck", "--all")
    assert f"m.safetensors in commit {damaged[:12]}" in fsck.stdout and "0 problem(s)" in fsck.stdout, fsck.stdout

    # The repair the message gives, as given
    skip = dict(env, GITMODEL_SKIP_SMUDGE="1",
                GIT_SEQUENCE_EDITOR=f"sed -i 's/^pick {damaged[:7]}/edit {damaged[:7]}/'")
    Repo(repo.path, skip).git("rebase", "-i", f"{damaged[:12]}^")
    repo.git("checkout", f"{damaged[:12]}^", "--", "m.safetensors")
    repo.git("commit", "-q", "--amend", "--no-edit", "--allow-empty")
    going = Repo(repo.path, skip).git("rebase", "--continue", check=False)
    while going.returncode != 0:            # the restoring commit, now empty
        going = Repo(repo.path, skip).git("rebase", "--skip", check=False)
        assert "could not apply" not in going.stderr.decode().lower() or going.returncode != 0
    repo.gitmodel("pull")
    assert sha256(path) == v2 and repo.status() == ""
    repo.git("push", "-q", "origin", "main")
    clone = Repo(tmp_path, user(tmp_path, git_env, "bob"))
    clone.git("clone", "-q", str(tmp_path / "hub.git"), "other")
    assert sha256(tmp_path / "other" / "m.safetensors") == v2
    other = Repo(tmp_path / "other", clone.env)
    other.git("checkout", "-q", "HEAD~1")
    assert sha256(tmp_path / "other" / "m.safetensors") == v1


@pytest.mark.parametrize("opening", ["", "<<<<<<< HEAD\n"])
def test_gc_keeps_every_checkpoint_pointers_merged_as_text_name(tmp_path: Path, git_env, opening):
    """Two pointers git merged as text, committed as they were (by a clone without gitmodel,
    say): gc kept only the first content line's checkpoint, or, with the opening marker, none
    (not a pointer at all), and removed the other side's once its branch was gone, exit 0.
    Every content line's checkpoint is kept now."""
    from gitmodel.store.objects import Store
    repo = make_repo(tmp_path / "repo", git_env)
    write_safetensors(repo.path / "m.safetensors", random_model(1))
    repo.commit("v1", "m.safetensors")
    repo.git("checkout", "-q", "-b", "side")
    write_safetensors(repo.path / "m.safetensors", random_model(2))
    repo.commit("v2", "m.safetensors")
    ours, theirs = (repo.git("show", f"{rev}:m.safetensors").stdout for rev in ("main", "side"))
    lost = re.search(rb"^content ([0-9a-f]{64})$", theirs, re.M).group(1).decode()
    repo.git("checkout", "-q", "main")
    text = opening.encode() + ours + b"=======\n" + theirs + b">>>>>>> side\n"
    blob = repo.git("hash-object", "-w", "--stdin", input=text).stdout.decode().strip()
    repo.git("update-index", "--cacheinfo", f"100644,{blob},m.safetensors")
    Repo(repo.path, dict(git_env, GITMODEL_SKIP_SMUDGE="1")).git("commit", "-q", "-m", "merged as text")
    repo.git("branch", "-D", "-q", "side")
    repo.git("reflog", "expire", "--expire=now", "--all")
    age_packs(repo.store)
    repo.gitmodel("gc", "--keep-recent", "0")
    store = Store(repo.store)
    try:
        assert store.read_manifest(bytes.fromhex(lost)).size > 0
    finally:
        store.close()


def test_a_damaged_pointer_that_still_names_its_checkpoint_keeps_it_from_gc(tmp_path: Path, git_env):
    """gc keeps what a damaged pointer's content line names (the commit may need it once the
    pointer is mended); one with no readable content line names nothing to keep: gc names it
    and goes on."""
    repo = make_repo(tmp_path / "repo", git_env)
    path = repo.path / "m.safetensors"
    write_safetensors(path, random_model(3))
    repo.git("add", "m.safetensors")
    good = repo.git("cat-file", "blob", ":m.safetensors").stdout
    assert good.startswith(b"gitmodel pointer v1\nsize ")
    edited = re.sub(rb"^size \d+", b"size abc", good, flags=re.M)
    bad = repo.git("hash-object", "-w", "--stdin", input=edited).stdout.decode().strip()
    repo.git("update-index", "--cacheinfo", f"100644,{bad},m.safetensors")
    repo.git("commit", "-q", "-m", "edited")
    repo.git("rm", "-q", "--cached", "m.safetensors")
    repo.git("commit", "-q", "-m", "gone")
    path.unlink()
    age_packs(repo.store)
    repo.gitmodel("gc", "--keep-recent", "0")
    good_blob = repo.git("hash-object", "-w", "--stdin", input=good).stdout.decode().strip()
    repo.git("update-index", "--add", "--cacheinfo", f"100644,{good_blob},m.safetensors")
    repo.git("checkout", "--", "m.safetensors")
    assert path.read_bytes() == write_safetensors(tmp_path / "again.safetensors", random_model(3)).read_bytes()
    # No content line at all: it names nothing to keep; gc says so, naming its commit
    worse = repo.git("hash-object", "-w", "--stdin", input=b"gitmodel pointer v1\nsize 1\n").stdout.decode().strip()
    repo.git("update-index", "--cacheinfo", f"100644,{worse},m.safetensors")
    repo.git("commit", "-q", "-m", "worse")
    went_on = repo.gitmodel("gc", "--keep-recent", "0")
    assert (f"gitmodel: gc: note: m.safetensors in commit {repo.out('rev-parse', 'HEAD')[:12]} is a "
            f"damaged pointer (blob {worse[:12]}): missing or bad content id; it names no checkpoint"
            ) in went_on.stderr, went_on.stderr


def _damaged_at_head(tmp_path: Path, env: dict) -> tuple[Repo, str, str, str]:
    """a.safetensors and b.safetensors pushed; then a commit whose a.safetensors is a pointer
    edited by hand, with no content line: the repository, that commit, the damaged blob and
    the sha256 of b."""
    from conftest import sha256, team
    repo = team(tmp_path, env, str(tmp_path / "remote"))
    write_safetensors(repo.path / "a.safetensors", small(1))
    write_safetensors(repo.path / "b.safetensors", small(2))
    repo.commit("two", "a.safetensors", "b.safetensors")
    repo.git("push", "-q", "origin", "main")
    bad = repo.git("hash-object", "-w", "--stdin", input=b"gitmodel pointer v1\nsize abc\n").stdout.decode().strip()
    repo.git("update-index", "--cacheinfo", f"100644,{bad},a.safetensors")
    repo.git("commit", "-q", "-m", "edited pointer")
    return repo, repo.out("rev-parse", "HEAD").strip(), bad, sha256(repo.path / "b.safetensors")


def test_a_damaged_pointer_in_head_is_named_and_every_other_file_goes_on(tmp_path: Path, git_env):
    """A damaged pointer in HEAD's tree stopped `gitmodel fetch` (and fsck, ls-files, pull)
    at it, fetching nothing at all, and the one-shot smudge said only "error: missing or bad
    size". Each now names the path and the commit that holds it (or the index), says nothing
    was done for it and how to mend it, does all the rest, and exits 1 where it could not do
    what it says."""
    from conftest import sha256
    repo, damaged, blob, b = _damaged_at_head(tmp_path, git_env)
    said = (f"a.safetensors in commit {damaged[:12]} is a damaged pointer (blob {blob[:12]}): "
            "missing or bad size")
    rewrite = f"`GITMODEL_SKIP_SMUDGE=1 git rebase -i {damaged[:12]}^`, mark {damaged[:12]} `edit`"
    import shutil
    shutil.rmtree(repo.store / "packs")                 # a fresh store: fetch must bring b
    fetched = repo.gitmodel("fetch", check=False)
    lines = fetched.stderr.splitlines()
    assert fetched.returncode == 1, fetched.stderr
    assert re.fullmatch(r"gitmodel: 1 checkpoint\(s\): fetched [1-9]\d* object\(s\), [\d.]+ MiB from "
                        rf"origin \({re.escape(str(tmp_path / 'remote'))}\)", lines[0]), fetched.stderr
    assert lines[1].startswith(f"gitmodel: error: {said}. It names no checkpoint, so nothing was "
                               "fetched for it; a checkout of that commit fails on it, and a push "
                               "of it is refused. Rewrite that commit"), fetched.stderr
    assert rewrite in lines[1] and len(lines) == 2, fetched.stderr
    fsck = repo.gitmodel("fsck")
    assert f"note: {said}; it names no checkpoint" in fsck.stdout, fsck.stdout
    assert "checkpoints needed by HEAD and the index: 1 complete\n0 problem(s)." in fsck.stdout, fsck.stdout

    listed = repo.gitmodel("ls-files", "HEAD", check=False)
    assert listed.returncode == 1 and len(listed.stdout.splitlines()) == 1, listed
    assert listed.stdout.split()[-3:] == ["file", "complete", "b.safetensors"], listed.stdout
    assert listed.stderr.startswith(f"gitmodel: error: {said}. It names no checkpoint, so it is not listed"), listed.stderr

    one_shot = subprocess.run(["gitmodel", "smudge", "--", "a.safetensors"], cwd=repo.path, env=repo.env,
                              input=repo.git("cat-file", "blob", blob).stdout, capture_output=True)
    assert (one_shot.returncode, one_shot.stdout) == (1, b""), one_shot
    assert one_shot.stderr.decode() == ("gitmodel: error: a.safetensors: damaged pointer (missing or bad "
                                        "size). Nothing was written for this file; restore the pointer "
                                        "from another commit, or add the checkpoint again\n")

    # A checkout that left pointers: pull restores b and names a, left as it is
    (repo.path / "a.safetensors").unlink()
    (repo.path / "b.safetensors").unlink()
    Repo(repo.path, dict(git_env, GITMODEL_SKIP_SMUDGE="1")).git("checkout", "--", ".")
    pulled = repo.gitmodel("pull", check=False)
    assert pulled.returncode == 1 and sha256(repo.path / "b.safetensors") == b, pulled.stderr
    assert (repo.path / "a.safetensors").read_bytes() == b"gitmodel pointer v1\nsize abc\n"
    assert (f"gitmodel: error: a.safetensors in the index is a damaged pointer (blob {blob[:12]}): "
            "missing or bad size. It names no checkpoint, so the file was left as it is; a checkout "
            "of the file from the index fails on it, and a commit would put it in history. Restore "
            "the pointer from a commit that holds a good one (`git checkout REV -- a.safetensors`), "
            "or add the checkpoint again\n") in pulled.stderr, pulled.stderr


def test_status_of_a_good_pointer_staged_over_a_damaged_one_in_head_says_head_s_is_damaged(tmp_path: Path,
                                                                                          git_env):
    """HEAD's pointer damaged, a good one staged over it (the repair's `git checkout REV --
    PATH`): status listed the file as `new -> …`, as if HEAD had no such file. It now says
    HEAD's pointer is damaged, and names it with its repair among the damaged pointers."""
    repo, damaged, blob, _ = _damaged_at_head(tmp_path, git_env)
    repo.git("checkout", "HEAD~1", "--", "a.safetensors")
    good = repo.out("show", ":a.safetensors").split("content ")[1][:12]
    status = repo.gitmodel("status")
    staged = status.stdout.split("staged:\n", 1)[1].split("\n", 1)[0]
    assert staged == f"  a.safetensors  damaged pointer in HEAD -> {good}", status.stdout
    assert (f"  a.safetensors in commit {damaged[:12]}: missing or bad size. Rewrite that commit"
            ) in status.stdout, status.stdout
    assert " new -> " not in status.stdout, status.stdout
    found = json.loads(repo.gitmodel("status", "--json").stdout)["staged"]
    assert [(s["path"], s["old"], s["old_damaged"]) for s in found] == [("a.safetensors", None, True)], found
    repo.git("rm", "-q", "--cached", "a.safetensors")          # the damaged pointer's deletion, staged
    staged = repo.gitmodel("status").stdout.split("staged:\n", 1)[1].split("\n", 1)[0]
    assert staged == "  a.safetensors  damaged pointer in HEAD -> deleted", staged


def test_diff_and_show_of_a_damaged_pointer_name_it_with_its_repair(tmp_path: Path, git_env):
    """`gitmodel diff` and `gitmodel show` of a damaged pointer said only "error: a.safetensors
    (BLOB) is a damaged pointer: missing or bad size" (in the work tree: "error: missing or bad
    size"), with nothing to run. They now say where it is, what it breaks and its repair, as
    the other damaged-pointer messages do; the repairs printed work."""
    repo, damaged, blob, _ = _damaged_at_head(tmp_path, git_env)
    repo.git("commit", "-q", "--allow-empty", "-m", "later")      # named by the commit that brought it in
    said = (f"gitmodel: error: a.safetensors in commit {damaged[:12]} is a damaged pointer (blob "
            f"{blob[:12]}): missing or bad size. It names no checkpoint, so there is nothing to read "
            "for it; a checkout of that commit fails on it, and a push of it is refused. Rewrite that "
            f"commit (a checkout of it fails, so the rebase leaves pointers in the work tree): "
            f"`GITMODEL_SKIP_SMUDGE=1 git rebase -i {damaged[:12]}^`, mark {damaged[:12]} `edit`;")
    for command in (["diff", "HEAD~2", "HEAD"], ["show", "HEAD:a.safetensors"], ["show", ":a.safetensors"]):
        result = repo.gitmodel(*command, check=False)
        assert (result.returncode, result.stdout) == (1, ""), result
        assert result.stderr.startswith(said), result.stderr

    restore = ("Restore the pointer from a commit that holds a good one (`git checkout REV -- "
               "a.safetensors`), or add the checkpoint again\n")
    repo.git("reset", "-q", "HEAD~2")                        # the damaged pointer only in the index
    repo.git("update-index", "--cacheinfo", f"100644,{blob},a.safetensors")
    staged = repo.gitmodel("show", ":a.safetensors", check=False)
    assert staged.returncode == 1 and staged.stderr == (
        f"gitmodel: error: a.safetensors in the index is a damaged pointer (blob {blob[:12]}): missing "
        "or bad size. It names no checkpoint, so there is nothing to read for it; a checkout of the "
        f"file from the index fails on it, and a commit would put it in history. {restore}"), staged.stderr
    repo.git("checkout", "HEAD", "--", "a.safetensors")     # as printed, REV a commit with a good one
    assert repo.gitmodel("show", ":a.safetensors").stdout.startswith("gitmodel pointer v1\n")
    (repo.path / "a.safetensors").write_bytes(b"gitmodel pointer v1\nsize abc\n")
    for command in (["diff"], ["show", "a.safetensors"]):
        result = repo.gitmodel(*command, check=False)
        assert (result.returncode, result.stdout) == (1, ""), result
        assert result.stderr == (
            "gitmodel: error: a.safetensors in the work tree is a damaged pointer: missing or bad size. "
            "It names no checkpoint, so there is nothing to read for it; `git add` would store its text "
            f"as a file of its own, not the checkpoint. {restore}"), result.stderr
    repo.git("checkout", "HEAD", "--", "a.safetensors")
    assert repo.gitmodel("show", "a.safetensors").stdout.startswith("gitmodel pointer v1\n")


def test_a_damaged_pointer_in_the_index_is_named_by_status_and_the_repair_it_prints_works(tmp_path: Path, git_env):
    """`gitmodel status` stopped at a damaged pointer staged in the index ("error: … is a
    damaged pointer", exit 1, nothing else said). It now lists it, apart from what is
    staged, with a repair that works as printed, and reports everything else."""
    from conftest import sha256
    repo, damaged, blob, _ = _damaged_at_head(tmp_path, git_env)
    repo.git("reset", "-q", "--hard", "HEAD~1")
    a = sha256(repo.path / "a.safetensors")
    write_safetensors(repo.path / "b.safetensors", small(3))
    repo.git("add", "b.safetensors")
    repo.git("update-index", "--cacheinfo", f"100644,{blob},a.safetensors")
    status = repo.gitmodel("status")
    repair = re.search(r"^  a\.safetensors in the index: missing or bad size\. Restore the pointer from "
                       r"a commit that holds a good one \(`(git checkout REV -- a\.safetensors)`\), or add "
                       r"the checkpoint again$", status.stdout, re.M)
    assert repair, status.stdout
    staged = status.stdout.split("staged:\n", 1)[1].split("\n", 1)[0]
    assert staged.startswith("  b.safetensors  "), status.stdout        # a is not "deleted"
    assert "a.safetensors  " not in status.stdout, status.stdout
    listed = json.loads(repo.gitmodel("status", "--json").stdout)["damaged_pointers"]
    assert listed == [{"path": "a.safetensors", "commit": None, "where": "a.safetensors in the index",
                       "blob": blob, "why": "missing or bad size",
                       "repair": "Restore the pointer from a commit that holds a good one (`git "
                                 "checkout REV -- a.safetensors`), or add the checkpoint again"}]
    fsck = repo.gitmodel("fsck")
    assert f"note: a.safetensors in the index is a damaged pointer (blob {blob[:12]})" in fsck.stdout, fsck.stdout
    assert "0 problem(s)." in fsck.stdout, fsck.stdout
    (repo.path / "a.safetensors").unlink()
    repo.git(*repair.group(1).replace("REV", "HEAD").split()[1:])
    assert sha256(repo.path / "a.safetensors") == a
    assert "damaged pointers" not in repo.gitmodel("status").stdout
