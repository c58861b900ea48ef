"""`gitmodel migrate`: real git-lfs repositories, converted in a new commit or by rewriting
history."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import Repo, random_model, sha256, write_safetensors

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None,
                                reason="git-lfs is not installed (scripts/test.sh installs it)")

MODEL = "model.safetensors"


def lfs_repo(path: Path, env: dict, versions: int = 2) -> tuple[Repo, list[str]]:
    """A git-lfs repository: `versions` commits of a checkpoint, a README beside it."""
    path.mkdir()
    repo = Repo(path, env)
    repo.git("init", "-q", "-b", "main")
    repo.git("lfs", "install", "--local")
    repo.git("lfs", "track", "*.safetensors")
    (path / "README").write_text("not a checkpoint\n")
    sums = []
    for v in range(versions):
        sums.append(sha256(write_safetensors(path / MODEL, random_model(v, layers=3, width=128))))
        repo.commit(f"v{v}")
    assert repo.out("cat-file", "-p", f"HEAD:{MODEL}").startswith("version https://git-lfs")
    return repo, sums


def restored(repo: Repo, rev: str) -> str:
    repo.git("checkout", "-q", rev)
    (repo.path / MODEL).unlink()
    repo.git("checkout", "--", MODEL)
    return sha256(repo.path / MODEL)


def test_migrate_converts_the_current_files_in_a_new_commit(tmp_path: Path, git_env):
    repo, sums = lfs_repo(tmp_path / "repo", git_env)
    # The work tree holds git-lfs's pointer, not the bytes: they come from .git/lfs/objects.
    (repo.path / MODEL).write_bytes(repo.git("cat-file", "blob", f"HEAD:{MODEL}").stdout)
    before = repo.out("rev-parse", "HEAD").strip()
    out = repo.gitmodel("migrate")
    assert "1 file(s) now stored with gitmodel" in out.stderr
    assert repo.out("rev-parse", "HEAD~1").strip() == before
    assert repo.out("cat-file", "-p", f"HEAD:{MODEL}").startswith("gitmodel pointer v1")
    assert repo.out("cat-file", "-p", f"HEAD~1:{MODEL}").startswith("version https://git-lfs")
    assert "filter=gitmodel" in repo.out("cat-file", "-p", "HEAD:.gitattributes")
    assert "filter=lfs" not in repo.out("cat-file", "-p", "HEAD:.gitattributes")
    assert repo.out("cat-file", "-p", "HEAD:README") == "not a checkpoint\n"
    assert sha256(repo.path / MODEL) == sums[-1]
    assert repo.status() == ""
    assert restored(repo, "main") == sums[-1]


def test_migrate_rewrite_converts_every_commit_and_prints_the_map(tmp_path: Path, git_env):
    repo, sums = lfs_repo(tmp_path / "repo", git_env, versions=3)
    repo.git("tag", "first", "HEAD~2")
    old = repo.out("rev-list", "--reverse", "main").split()
    out = repo.gitmodel("migrate", "--rewrite")
    pairs = [line.split() for line in out.stdout.splitlines()]
    assert [p[0] for p in pairs] == old
    new = repo.out("rev-list", "--reverse", "main").split()
    assert [p[1] for p in pairs] == new and set(new).isdisjoint(old)
    assert repo.out("rev-parse", "refs/original/refs/heads/main").strip() == old[-1]
    for rev in new:
        assert repo.out("cat-file", "-p", f"{rev}:{MODEL}").startswith("gitmodel pointer v1")
        assert "filter=lfs" not in repo.out("cat-file", "-p", f"{rev}:.gitattributes")
    assert repo.out("rev-parse", "first^{commit}").strip() == new[0]
    for back, digest in enumerate(reversed(sums)):
        assert restored(repo, f"main~{back}") == digest
    repo.git("checkout", "-q", "main")
    assert repo.status() == ""
    # Again (an exploratory run: git's own "Force overwriting the backup with -f", an option
    # gitmodel has not, which would drop the only copy of the history before the first run).
    again = repo.gitmodel("migrate", "--rewrite", check=False)
    assert again.returncode != 0 and "refs/original/" in again.stderr, again.stderr
    assert "git update-ref -d refs/original/refs/heads/main" in again.stderr, again.stderr
    assert repo.out("rev-parse", "refs/original/refs/heads/main").strip() == old[-1]


def test_migrate_rewrite_runs_again_after_one_killed_midway(tmp_path: Path, git_env):
    """A rewrite killed while filter-branch worked left its scratch folder (.git-rewrite) and
    the next run failed with git's "... already exists, please remove it". The scratch
    folder is gitmodel's own now, under the store's tmp/, and a run clears what a killed one
    left there."""
    repo, sums = lfs_repo(tmp_path / "repo", git_env, versions=2)
    for leftover in (repo.path / ".git-rewrite" / "t", repo.store / "tmp" / "filter-branch" / "t"):
        leftover.mkdir(parents=True)            # as a killed run leaves them
    repo.gitmodel("migrate", "--rewrite")
    for back, digest in enumerate(reversed(sums)):
        assert restored(repo, f"main~{back}") == digest
    assert not (repo.store / "tmp" / "filter-branch").exists()


def test_migrate_with_a_global_install_leaves_a_hook_that_pushes_checkpoints(tmp_path: Path, git_env):
    """git-lfs left its pre-push hook; with gitmodel installed globally, migrate installed no
    hook of its own, and the first `git push` exited 0 with no checkpoint uploaded."""
    from conftest import user
    env = user(tmp_path, git_env, "ann")
    repo, sums = lfs_repo(tmp_path / "repo", env)
    repo.gitmodel("migrate", "--rewrite")
    hooks = repo.path / ".git/hooks"
    assert "gitmodel pre-push hook" in (hooks / "pre-push").read_text()
    assert "git lfs pre-push" in (hooks / "pre-push.before-gitmodel").read_text()
    store = tmp_path / "store"
    repo.gitmodel("remote", "add", "origin", str(store))
    repo.commit("remote", ".gitmodel")
    hub = tmp_path / "hub.git"
    repo.git("init", "-q", "--bare", "-b", "main", str(hub))
    repo.git("remote", "add", "origin", str(hub))
    repo.git("push", "-q", "origin", "main")
    assert list((store / "packs").glob("*.idx")), "git push uploaded nothing"
    Repo(tmp_path, user(tmp_path, git_env, "bob")).git("clone", "-q", "-b", "main", str(hub), "other")
    assert sha256(tmp_path / "other" / MODEL) == sums[-1]


def test_migrate_without_the_lfs_objects_says_what_to_run_and_changes_nothing(tmp_path: Path, git_env):
    repo, _ = lfs_repo(tmp_path / "repo", git_env)
    (repo.path / MODEL).write_bytes(repo.git("cat-file", "blob", f"HEAD:{MODEL}").stdout)
    shutil.rmtree(repo.path / ".git" / "lfs" / "objects")
    before = repo.out("rev-parse", "HEAD").strip()
    result = repo.gitmodel("migrate", check=False)
    assert result.returncode == 1 and "git lfs fetch" in result.stderr
    assert "Traceback" not in result.stderr
    assert repo.out("rev-parse", "HEAD").strip() == before
    assert "filter=lfs" in (repo.path / ".gitattributes").read_text()


def test_migrate_refuses_an_unstaged_edit_of_the_same_size(tmp_path: Path, git_env):
    """The edit would have gone into the conversion commit: only the size was compared."""
    repo, sums = lfs_repo(tmp_path / "repo", git_env)
    edited = sha256(write_safetensors(repo.path / MODEL, random_model(7, layers=3, width=128)))
    assert edited != sums[-1]
    before = repo.out("rev-parse", "HEAD").strip()
    result = repo.gitmodel("migrate", check=False)
    assert result.returncode == 1 and "differs from what git-lfs committed" in result.stderr
    assert repo.out("rev-parse", "HEAD").strip() == before and sha256(repo.path / MODEL) == edited


def test_migrate_that_cannot_commit_leaves_git_lfs_as_it_was(tmp_path: Path, git_env):
    """A failing `git add` or commit (a full disk, a hook) left .gitattributes converted and
    staged with the files still git-lfs's, and a second migrate refused to run."""
    repo, sums = lfs_repo(tmp_path / "repo", git_env)
    attributes = (repo.path / ".gitattributes").read_text()
    hook = repo.path / ".git/hooks/pre-commit"
    hook.write_text("#!/bin/sh\necho 'no commits today' >&2\nexit 1\n")
    hook.chmod(0o755)
    result = repo.gitmodel("migrate", check=False)
    assert result.returncode == 1 and "Nothing was converted" in result.stderr
    assert (repo.path / ".gitattributes").read_text() == attributes
    assert repo.out("diff", "--cached", "--name-only") == ""
    hook.unlink()
    assert "1 file(s) now stored with gitmodel" in repo.gitmodel("migrate").stderr
    assert sha256(repo.path / MODEL) == sums[-1]


def test_migrate_leaves_a_pointer_git_lfs_no_longer_tracks_and_says_so(tmp_path: Path, git_env):
    """`git lfs untrack '*.bin'` leaves old.bin's pointer committed: migrate put the file's
    bytes in place, and with no gitmodel attribute for the path `git add` stored the whole
    file in git, while migrate said it was now stored with gitmodel."""
    repo, sums = lfs_repo(tmp_path / "repo", git_env)
    repo.git("lfs", "track", "*.bin")
    write_safetensors(repo.path / "old.bin", random_model(9, layers=1, width=64))
    repo.commit("old.bin")
    pointer = repo.git("cat-file", "blob", "HEAD:old.bin").stdout
    repo.git("lfs", "untrack", "*.bin")
    repo.commit("stop tracking *.bin", ".gitattributes")
    out = repo.gitmodel("migrate")
    assert "1 file(s) now stored with gitmodel" in out.stderr, out.stderr
    assert "left 1 git-lfs pointer(s) as they are" in out.stderr and "old.bin" in out.stderr, out.stderr
    assert repo.git("cat-file", "blob", "HEAD:old.bin").stdout == pointer
    assert repo.out("cat-file", "-p", f"HEAD:{MODEL}").startswith("gitmodel pointer v1")
    assert restored(repo, "main") == sums[-1]


def test_migrate_converts_paths_already_tracked_with_gitmodel(tmp_path: Path, git_env):
    """`gitmodel track` before `gitmodel migrate` routes the paths to gitmodel already: they
    are converted like those git-lfs tracks (a first fix of the case above skipped them)."""
    repo, sums = lfs_repo(tmp_path / "repo", git_env)
    repo.gitmodel("track", "*.safetensors")
    out = repo.gitmodel("migrate")
    assert "1 file(s) now stored with gitmodel" in out.stderr and "left" not in out.stderr, out.stderr
    assert repo.out("cat-file", "-p", f"HEAD:{MODEL}").startswith("gitmodel pointer v1")
    assert restored(repo, "main") == sums[-1]


def test_migrate_rewrite_converts_by_role_and_path_not_by_blob_alone(tmp_path: Path, git_env):
    """The rewrite's map was by blob alone: a blob met first as a plain file and then as a
    .gitattributes file was left unconverted there (filter=lfs over a gitmodel pointer: every
    checkout wrote the pointer's text, fsck passed), a plain file identical to a converted
    .gitattributes file was converted too, and a git-lfs pointer at a path no longer routed
    to git-lfs was converted (its checkout turned from git-lfs's pointer into gitmodel's)."""
    repo, sums = lfs_repo(tmp_path / "repo", git_env)
    attributes = (repo.path / ".gitattributes").read_text()
    (repo.path / "templates").mkdir()
    (repo.path / "templates" / "lfs-attributes").write_text(attributes + "*.bin filter=lfs diff=lfs merge=lfs -text\n")
    repo.commit("a template, first")
    shutil.copy(repo.path / "templates" / "lfs-attributes", repo.path / ".gitattributes")
    bin_sum = sha256(write_safetensors(repo.path / "w.bin", random_model(7, layers=1, width=64)))
    repo.commit("the template in use, and a .bin")
    shutil.copy(repo.path / ".gitattributes", repo.path / "example-attributes")
    write_safetensors(repo.path / "old.pt", random_model(8, layers=1, width=64))
    repo.git("lfs", "track", "*.pt")
    repo.commit("old.pt with git-lfs")
    old_pointer = repo.git("cat-file", "blob", "HEAD:old.pt").stdout
    repo.git("lfs", "untrack", "*.pt")
    repo.commit("stop tracking *.pt", ".gitattributes")
    (repo.path / "old.pt").write_bytes(old_pointer)      # what git now checks out there
    # and the index's stat of it: git had the smudged file's size, so unless the entry had
    # been left racily clean, git took the pointer for a change (the test failed 3 in 30)
    repo.git("add", "old.pt")
    template = repo.git("cat-file", "blob", "HEAD:templates/lfs-attributes").stdout
    example = repo.git("cat-file", "blob", "HEAD:example-attributes").stdout
    repo.gitmodel("migrate", "--rewrite")
    for rev in repo.out("rev-list", "main").split():
        assert "filter=lfs" not in repo.out("cat-file", "-p", f"{rev}:.gitattributes"), rev
    assert repo.git("cat-file", "blob", "HEAD:templates/lfs-attributes").stdout == template
    assert repo.git("cat-file", "blob", "HEAD:example-attributes").stdout == example
    assert repo.git("cat-file", "blob", "HEAD:old.pt").stdout == old_pointer
    assert sha256(repo.path / "w.bin") == bin_sum and restored(repo, "main") == sums[-1]
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all").stdout


def test_migrate_rewrite_after_a_killed_run_and_a_gc_converts_again(tmp_path: Path, git_env):
    """A killed rewrite left its map (blob -> pointer); a gc then removed the checkpoints it
    had stored (nothing referred to them), and the next rewrite took the map's pointers:
    exit 0, a version lost (fsck: lost; its checkout empty)."""
    repo, sums = lfs_repo(tmp_path / "repo", git_env, versions=2)
    first = repo.out("rev-list", "--reverse", "main").split()[0]
    stale = repo.store / "migrate-map"
    stale.mkdir(parents=True)
    blob = repo.out("rev-parse", f"{first}:{MODEL}").strip()
    gone = "gitmodel pointer v1\nsize 1\ncontent " + "ab" * 32 + "\nformat opaque\n"
    stale_blob = repo.git("hash-object", "-w", "--stdin", input=gone.encode()).stdout.decode().strip()
    (stale / blob).write_text(stale_blob)          # a converted pointer whose data a gc removed
    repo.gitmodel("migrate", "--rewrite")
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all").stdout
    for back, digest in enumerate(reversed(sums)):
        assert restored(repo, f"main~{back}") == digest


@pytest.mark.parametrize("fault", ["missing", "damaged"])
def test_migrate_finds_every_object_before_it_writes_a_file(tmp_path: Path, git_env, fault):
    """Plain migrate put each file's bytes in place as it went: an object missing (or, later,
    damaged) for a later file left the earlier ones replaced, under "Nothing was converted"."""
    repo, sums = lfs_repo(tmp_path / "repo", git_env)
    write_safetensors(repo.path / "z.safetensors", random_model(5, layers=1, width=64))
    repo.commit("z")
    for name in (MODEL, "z.safetensors"):
        (repo.path / name).write_bytes(repo.git("cat-file", "blob", f"HEAD:{name}").stdout)
    oid = repo.out("cat-file", "-p", "HEAD:z.safetensors").split("sha256:")[1].split()[0]
    lfs_object = repo.path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    if fault == "missing":
        lfs_object.rename(tmp_path / "aside")
    else:
        damaged = bytearray(lfs_object.read_bytes())
        damaged[-1] ^= 1
        lfs_object.chmod(0o644)
        lfs_object.write_bytes(damaged)
    failed = repo.gitmodel("migrate", check=False)
    assert failed.returncode != 0 and "Nothing was converted" in failed.stderr
    assert (repo.path / MODEL).read_bytes() == repo.git("cat-file", "blob", f"HEAD:{MODEL}").stdout


def test_migrate_rewrite_leaves_a_submodule_as_it_is(tmp_path: Path, git_env):
    """The rewrite's index filter asked git for the size of every entry's object: a
    submodule's commit, never in the superproject, failed the whole rewrite."""
    repo, sums = lfs_repo(tmp_path / "repo", git_env)
    gitlink = "1234567890123456789012345678901234567890"
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{gitlink},lib")
    repo.git("commit", "-q", "-m", "a submodule")
    (repo.path / "lib").mkdir()
    repo.gitmodel("migrate", "--rewrite")
    assert repo.out("rev-parse", "HEAD:lib").strip() == gitlink
    assert restored(repo, "main") == sums[-1]


def _lfs_checkout_without_bytes(tmp_path: Path, env: dict) -> tuple[Repo, dict[str, str]]:
    """Two checkpoints committed with git-lfs; the work tree holds git-lfs's pointers (as a
    clone with GIT_LFS_SKIP_SMUDGE leaves them), their bytes in .git/lfs/objects."""
    repo, sums = lfs_repo(tmp_path / "repo", env, versions=1)
    other = "other.safetensors"
    digests = {MODEL: sums[-1], other: sha256(write_safetensors(repo.path / other, random_model(7, layers=3, width=128)))}
    repo.commit("other", other)
    for name in digests:
        (repo.path / name).write_bytes(repo.git("cat-file", "blob", f"HEAD:{name}").stdout)
    repo.gitmodel("install")
    return repo, digests


def _consistent(repo: Repo, digests: dict[str, str], where: Path) -> None:
    """HEAD routes every converted path through gitmodel, holds gitmodel pointers, and a
    fresh checkout of it (another worktree) writes the original bytes."""
    attributes = repo.out("cat-file", "-p", "HEAD:.gitattributes")
    assert "filter=gitmodel" in attributes and "filter=lfs" not in attributes, attributes
    for name in digests:
        assert repo.out("cat-file", "-p", f"HEAD:{name}").startswith("gitmodel pointer v1")
    repo.git("worktree", "add", "-q", "--detach", str(where), "HEAD")
    for name, digest in digests.items():
        assert sha256(where / name) == digest, name
    assert repo.status() == ""


def test_migrate_stages_gitattributes_converted_in_the_work_tree_only(tmp_path: Path, git_env):
    """The work tree's .gitattributes already said gitmodel (edited by hand, or left by an
    interrupted migrate), the index's still said lfs: migrate exited 0 and committed the
    gitmodel pointers under git-lfs's attributes, so a checkout wrote pointer text."""
    repo, digests = _lfs_checkout_without_bytes(tmp_path, git_env)
    path = repo.path / ".gitattributes"
    path.write_text(path.read_text().replace("filter=lfs diff=lfs merge=lfs",
                                             "filter=gitmodel diff=gitmodel merge=gitmodel"))
    out = repo.gitmodel("migrate")
    assert "2 file(s) now stored with gitmodel" in out.stderr, out.stderr
    _consistent(repo, digests, tmp_path / "fresh")


KILLER = """#!/bin/sh
# git, except that the call named by KILL_AT kills the gitmodel that made it (SIGKILL)
case "$KILL_WHEN:$*" in
  before:*"$KILL_AT"*) kill -9 $PPID; exit 1 ;;
  after:*"$KILL_AT"*) "$REAL_GIT" "$@"; kill -9 $PPID; exit 1 ;;
esac
exec "$REAL_GIT" "$@"
"""


@pytest.mark.parametrize("moment", [("before", "add -- .gitattributes"), ("after", "add -- .gitattributes"),
                                    ("before", "--renormalize"), ("after", "--renormalize"),
                                    ("after", "commit -q")])
def test_migrate_killed_at_any_step_ends_in_a_consistent_commit(tmp_path: Path, git_env, moment):
    """migrate killed (SIGKILL) at each git command it runs: a rerun, or the repair the rerun
    names, ends in a commit whose .gitattributes routes the converted files through gitmodel,
    and whose fresh checkout holds the original bytes. Killed while staging, the rerun's
    repair (`git restore --staged .`) used to lead to an exit-0 migrate committing the pointers
    under filter=lfs."""
    repo, digests = _lfs_checkout_without_bytes(tmp_path, git_env)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(KILLER)
    (bin_dir / "git").chmod(0o755)
    killing = dict(git_env, PATH=f"{bin_dir}:{git_env['PATH']}", REAL_GIT=shutil.which("git", path=git_env["PATH"]),
                   KILL_WHEN=moment[0], KILL_AT=moment[1])
    killed = Repo(repo.path, killing).gitmodel("migrate", check=False)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    again = repo.gitmodel("migrate", check=False)
    if again.returncode != 0 and "staged changes" in again.stderr:
        assert "git restore --staged ." in again.stderr, again.stderr
        repo.git("restore", "--staged", ".")
        again = repo.gitmodel("migrate", check=False)
    if moment == ("after", "commit -q"):        # the commit was made: nothing left to convert
        assert again.returncode != 0 and "no file here is stored with git-lfs" in again.stderr, again.stderr
    else:
        assert again.returncode == 0, again.stderr
        assert "2 file(s) now stored with gitmodel" in again.stderr, again.stderr
    _consistent(repo, digests, tmp_path / "fresh")
