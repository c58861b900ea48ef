"""`gitmodel migrate`: from git-lfs to gitmodel, reading the objects git-lfs keeps locally.

Without `--rewrite`, one new commit converts the current files: `.gitattributes` lines that
route files through git-lfs route them through gitmodel instead, and each file git-lfs
stored is added again (its bytes from the work tree, or from `.git/lfs/objects` where the
work tree holds an LFS pointer), so the commit holds gitmodel pointers. History is untouched:
older commits still need git-lfs to check out.

With `--rewrite`, every commit is rewritten by git's own `git filter-branch --index-filter`:
in each commit's tree, LFS pointers become the gitmodel pointers of the same bytes and
`.gitattributes` files are converted. Each LFS object is cleaned once (a map from LFS object
to pointer blob is kept under the store while the rewrite runs). The old-to-new commit map
is printed; the old refs stay under refs/original/ as filter-branch leaves them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from gitmodel import checkpoint
from gitmodel.errors import GitmodelError
from gitmodel.store import files
from gitmodel.git import repo, revisions
from gitmodel.process import child_environment

LFS_SPEC = b"version https://git-lfs.github.com/spec/v1\n"
_LFS_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})$", re.M)
_LFS_SIZE = re.compile(rb"^size (\d+)$", re.M)


class MigrateError(GitmodelError):
    pass


def lfs_pointer(data: bytes) -> tuple[str, int] | None:
    """(sha256 hex, size) of a git-lfs pointer's object, or None if `data` is not one."""
    if not data.startswith(LFS_SPEC) or len(data) > 1024:
        return None
    oid, size = _LFS_OID.search(data), _LFS_SIZE.search(data)
    return (oid.group(1).decode(), int(size.group(1))) if oid and size else None


def lfs_object(common_dir: Path, oid: str) -> Path:
    return common_dir / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def convert_attributes(text: str) -> str:
    """`.gitattributes` with git-lfs's filter, diff and merge drivers replaced by gitmodel's."""
    def line(text_line: str) -> str:
        fields = text_line.split()
        if not fields or fields[0].startswith("#") or "filter=lfs" not in fields[1:]:
            return text_line
        out = [fields[0]] + [{"filter=lfs": "filter=gitmodel", "diff=lfs": "diff=gitmodel",
                              "merge=lfs": "merge=gitmodel"}.get(f, f) for f in fields[1:]]
        return " ".join(out)
    return "\n".join(line(t) for t in text.split("\n"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: Path, oid: str, outcome: str = "Nothing was rewritten") -> None:
    if _sha256(path) != oid:
        raise MigrateError(f"the git-lfs object {path} does not match its id {oid[:16]}…",
                           f"{outcome}. `git lfs fsck` checks git-lfs's objects")


def _verified_copy(source: Path, target: Path, oid: str) -> None:
    """Copy an LFS object, checking its sha256 (the id git-lfs gave it) on the way."""
    digest = hashlib.sha256()
    with open(source, "rb") as src, files.replacing(target) as dst:
        while block := src.read(8 << 20):
            digest.update(block)
            dst.write(block)
        if digest.hexdigest() != oid:           # raising here leaves the target as it was
            raise MigrateError(f"the git-lfs object {source} does not match its id {oid[:16]}…",
                               "Nothing was converted. `git lfs fsck` checks git-lfs's objects")


# ----------------------------------------------------------------------------- the current files

def migrate_head(session, message: str, say=lambda line: None) -> tuple[list[str], str]:
    """Convert the current files in a new commit; returns (paths converted, the commit)."""
    top = repo.toplevel(session.cwd)
    common = session.locations[0]
    if repo.run_git("diff", "--cached", "--quiet", cwd=top, check=False).returncode != 0:
        raise MigrateError("the index has staged changes",
                           "Nothing was converted. Commit or unstage them first (`git restore "
                           "--staged .`: an interrupted migrate leaves what it had staged, and "
                           "the files' bytes in the work tree), then migrate again")
    listing = repo.run_git("ls-files", "-s", "-z", cwd=top).stdout.split(b"\0")
    # Converted attributes give gitmodel the paths filter=lfs names now; a pointer elsewhere
    # (its path untracked from git-lfs since) would be committed as its whole file: left alone
    names = [os.fsdecode(item.partition(b"\t")[2]) for item in filter(None, listing)]
    routed = revisions.tracked_paths(top, names, drivers=("lfs", "gitmodel"))
    converted, attributes, skipped, to_copy = [], [], [], []
    for item in filter(None, listing):
        meta, _, path = item.partition(b"\t")
        mode, blob, _stage = meta.split()
        name = os.fsdecode(path)
        if name == ".gitattributes" or name.endswith("/.gitattributes"):
            attributes.append(name)
            continue
        if mode not in (b"100644", b"100755"):
            continue
        found = lfs_pointer(repo.run_git("cat-file", "blob", blob.decode(), cwd=top).stdout) \
            if int(repo.run_git("cat-file", "-s", blob.decode(), cwd=top).stdout) <= 1024 else None
        if found is None:
            continue
        if name not in routed:
            skipped.append(name)
            continue
        oid, size = found
        target = top / name
        if not target.is_file() or lfs_pointer(_head(target)) is not None:
            source = lfs_object(common, oid)
            if not source.is_file():
                raise MigrateError(f"{name}: git-lfs's object {oid[:16]}… is not in "
                                   f"{common / 'lfs' / 'objects'}",
                                   "Nothing was converted. Run `git lfs fetch` (or `git lfs "
                                   "pull`), then migrate again")
            to_copy.append((source, target, oid))
        elif target.stat().st_size != size or _sha256(target) != oid:   # an edit not yet staged
            raise MigrateError(f"{name} differs from what git-lfs committed",
                               "Nothing was converted. Commit or restore it first")
        converted.append(name)
    for source, _, oid in to_copy:      # every object there and whole before a file changes
        _check_sha256(source, oid, "Nothing was converted")
    for source, target, oid in to_copy:
        _verified_copy(source, target, oid)
    # Staged whenever the index's version is not the converted one: the work tree's may be
    # converted already (by hand, or by a migrate killed before it staged it), and a commit of
    # the gitmodel pointers under git-lfs's attributes would check out as pointer text.
    changed: dict[str, str] = {}                     # name -> its work-tree text before
    for name in attributes:
        path = top / name
        text = path.read_text(encoding="utf-8")
        new = convert_attributes(text)
        staged = repo.run_git("--literal-pathspecs", "cat-file", "blob", f":{name}", cwd=top,
                              check=False).stdout.decode("utf-8", errors="surrogateescape")
        if new != text:
            path.write_text(new, encoding="utf-8")
        if new != text or new != staged:
            changed[name] = text
    if not converted and not changed:
        raise MigrateError("no file here is stored with git-lfs", "Nothing was converted")
    if skipped:
        say(f"warning: left {len(skipped)} git-lfs pointer(s) as they are, at paths no filter=lfs "
            f"or filter=gitmodel attribute names (untracked from git-lfs since?): {', '.join(skipped[:5])}"
            f"{' …' if len(skipped) > 5 else ''}. To store them with gitmodel: `gitmodel track` "
            "their paths, put their files in place (`git lfs smudge < PATH`), and `git add` them")
    say(f"converting {len(converted)} file(s) and {len(changed)} .gitattributes file(s)")
    try:
        repo.run_git("--literal-pathspecs", "add", "--", *changed, cwd=top)
        if converted:
            paths = b"".join(os.fsencode(p) + b"\0" for p in converted)
            repo.run_git("--literal-pathspecs", "add", "--renormalize", "--pathspec-from-file=-",
                         "--pathspec-file-nul", cwd=top, input=paths, capture=False)
        # What the commit will say: each converted path routed through gitmodel by the
        # index's own .gitattributes (what a checkout of the commit reads)
        stray = sorted(set(converted) - revisions.tracked_paths(top, converted, cached=True))
        if stray:
            raise MigrateError(f"{len(stray)} converted file(s) would be committed under "
                               f"attributes that do not name gitmodel: {', '.join(stray[:5])}")
        repo.run_git("commit", "-q", "-m", message, cwd=top)
    except GitmodelError as err:          # a full disk...: back to git-lfs's attributes and index
        for name, text in changed.items():
            (top / name).write_text(text, encoding="utf-8")
        listing = b"".join(os.fsencode(p) + b"\0" for p in [*changed, *converted])
        undone = repo.run_git("reset", "-q", "--pathspec-from-file=-", "--pathspec-file-nul",
                              cwd=top, input=listing, check=False).returncode == 0
        raise MigrateError(f"{err}", "Nothing was converted: .gitattributes " + (
            "and the index are as they were" if undone else "is as it was, but the index could "
            "not be put back (`git reset` does it)") + ", and the work tree holds the files' "
            "bytes. Fix the cause (space, permissions), then migrate again") from None
    head = repo.run_git("rev-parse", "HEAD", cwd=top).stdout.decode().strip()
    return converted, head


# ----------------------------------------------------------------------------- history

def migrate_history(session, refs: list[str], say=lambda line: None) -> list[tuple[str, str]]:
    """Rewrite `refs` (default: every branch and tag) with git filter-branch; returns the
    (old, new) commit pairs."""
    top = repo.toplevel(session.cwd)
    status = repo.run_git("status", "--porcelain", "--untracked-files=no", cwd=top).stdout
    if status.strip():
        lines = status.decode(errors="replace").splitlines()      # paths as git quotes them
        named = ", ".join(line[3:] for line in lines[:5]) + (" and more" if len(lines) > 5 else "")
        raise MigrateError(f"the work tree has changes ({named})",
                           "Nothing was rewritten. Commit or stash them first")
    backup = repo.run_git("for-each-ref", "--format=%(refname)", "refs/original/", cwd=top).stdout.decode().split()
    if backup:            # filter-branch would want -f, which drops the history before the first rewrite
        raise MigrateError(f"an earlier rewrite's backup of the history is in refs/original/ "
                           f"({len(backup)} ref(s), e.g. {backup[0]})",
                           "Nothing was rewritten. Once the migrated history is checked (and "
                           "pushed), delete the backup: `git update-ref -d REF` for each, e.g. "
                           f"`git update-ref -d {backup[0]}`, then run again")
    refs = refs or ["--branches", "--tags"]
    old = _commits(top, refs)
    if not old:
        raise MigrateError("nothing to rewrite", "Name the branches to rewrite")
    store_root = session.store.root
    session.store._create()
    map_dir = store_root / "migrate-map"
    # A killed run's map may name checkpoints a gc removed since (nothing referred to them)
    shutil.rmtree(map_dir, ignore_errors=True)
    map_dir.mkdir()
    # filter-branch's scratch folder, ours rather than .git-rewrite in the work tree: what a
    # killed run leaves is cleared here (filter-branch refuses to start over it).
    scratch = session.store.tmp_dir / "filter-branch"
    shutil.rmtree(scratch, ignore_errors=True)
    env = child_environment(FILTER_BRANCH_SQUELCH_WARNING="1", GITMODEL_MIGRATE_MAP=str(map_dir))
    index_filter = f"{_quote(sys.executable)} -P -m gitmodel migrate --index-filter"
    say(f"rewriting {len(old)} commit(s) with git filter-branch")
    result = subprocess.run(["git", "filter-branch", "-d", str(scratch), "--index-filter",
                             index_filter, "--tag-name-filter", "cat", "--", *refs], cwd=top,
                            env=env, capture_output=True, text=True)
    shutil.rmtree(map_dir, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode != 0:
        raise MigrateError(f"git filter-branch failed: {result.stderr.strip()[-500:]}",
                           "Nothing was rewritten (filter-branch moves refs only at the end)")
    new = _commits(top, refs)
    if len(new) != len(old):
        raise MigrateError("the rewritten history has a different shape", "Compare with refs/original/")
    repo.run_git("reset", "-q", "--hard", cwd=top)        # the work tree: gitmodel's view
    return list(zip(old, new))


def _quote(text: str) -> str:
    import shlex
    return shlex.quote(text)


def _commits(top: Path, refs: list[str]) -> list[str]:
    out = repo.run_git("rev-list", "--topo-order", "--reverse", *refs, cwd=top).stdout.decode()
    return out.split()


def index_filter(store) -> None:
    """Inside filter-branch, for one commit: convert its index (GIT_INDEX_FILE)."""
    map_dir = Path(os.environ["GITMODEL_MIGRATE_MAP"])
    common = Path(repo.run_git("rev-parse", "--path-format=absolute", "--git-common-dir").stdout.decode().strip())
    listing = repo.run_git("ls-files", "-s", "-z").stdout.split(b"\0")
    updates = []
    for item in filter(None, listing):
        meta, _, path = item.partition(b"\t")
        mode, blob, stage = meta.split()
        if mode not in (b"100644", b"100755"):
            continue                    # a submodule's commit, a symbolic link: not ours
        name = os.fsdecode(path)
        # The map is by blob, and by role: a blob is converted one way as a .gitattributes
        # file, another as a checkpoint's git-lfs pointer, and left alone elsewhere
        attributes = name == ".gitattributes" or name.endswith("/.gitattributes")
        cached = map_dir / (f"attributes-{blob.decode()}" if attributes else blob.decode())
        if cached.is_file():
            new = cached.read_text().strip()
        elif attributes:
            text = repo.run_git("cat-file", "blob", blob.decode()).stdout.decode("utf-8")
            converted = convert_attributes(text)
            new = _write_blob(converted.encode()) if converted != text else blob.decode()
            cached.write_text(new)
        else:
            size = int(repo.run_git("cat-file", "-s", blob.decode()).stdout)
            found = lfs_pointer(repo.run_git("cat-file", "blob", blob.decode()).stdout) if size <= 1024 else None
            if found is None:
                new = blob.decode()
            else:
                source = lfs_object(common, found[0])
                if not source.is_file():
                    raise MigrateError(f"{name}: git-lfs's object {found[0][:16]}… is not here",
                                       "Run `git lfs fetch --all`, then migrate again")
                _check_sha256(source, found[0])
                with open(source, "rb") as f:
                    pointer_text = checkpoint.clean(f, store)
                new = _write_blob(pointer_text)
            cached.write_text(new)
        if new != blob.decode():
            updates.append((name, attributes, f"{mode.decode()} {new} {stage.decode()}\t".encode() + path + b"\0"))
    # A git-lfs pointer at a path no filter=lfs (or gitmodel) attribute names in this commit
    # (untracked from git-lfs since) is left as it is, as plain migrate leaves it
    routed = revisions.tracked_paths(None, [name for name, attributes, _ in updates if not attributes],
                                     drivers=("lfs", "gitmodel"), cached=True)
    kept = [line for name, attributes, line in updates if attributes or name in routed]
    if kept:
        repo.run_git("update-index", "-z", "--index-info", input=b"".join(kept))


def _head(path: Path) -> bytes:
    """The first bytes of a file, enough to tell a git-lfs pointer."""
    with open(path, "rb") as f:
        return f.read(1025)


def _write_blob(data: bytes) -> str:
    return repo.run_git("hash-object", "-w", "--no-filters", "--stdin", input=data).stdout.decode().strip()
