"""Git plumbing, in one place: running `git`, its configuration, finding the repository and
its store, and reading commits and pointer blobs in-process (pygit2)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NamedTuple

from gitmodel import pointer as pointers
from gitmodel.errors import GitmodelError
from gitmodel.process import child_environment, outside_environment


class NotARepository(GitmodelError):
    pass


class DubiousOwnership(NotARepository):
    """A repository git refuses until `safe.directory` names it (another user owns it)."""


class Sha256Repository(GitmodelError):
    def __init__(self):
        super().__init__("this repository names its objects by SHA-256 (`git init "
                         "--object-format=sha256`), which gitmodel cannot read yet (nor can "
                         "libgit2, which it reads git objects with)",
                         "Nothing was done. Keep checkpoints in a repository with git's "
                         "default SHA-1 ids")


class GitError(GitmodelError):
    pass


def run_git(*args: str, cwd: str | Path | None = None, input: bytes | None = None,
            env: dict[str, str] | None = None, check: bool = True,
            capture: bool = True) -> subprocess.CompletedProcess:
    """Run `git ARGS`; stdout and stderr as bytes. With `check`, a failure raises GitError
    carrying git's own message."""
    try:
        result = subprocess.run(["git", *args], cwd=cwd, input=input,
                                env=child_environment() if env is None else env,
                                capture_output=capture)
    except OSError as err:
        raise GitError(f"cannot run git: {err.strerror}") from None
    if check and result.returncode != 0:
        message = (result.stderr or b"").decode(errors="replace").strip()
        raise GitError(f"git {args[0]} failed: {message or f'exit status {result.returncode}'}")
    return result


def write_blob(blob: str, target, cwd: str | Path | None = None) -> None:
    """Write a blob's bytes as git stores them into the open binary file `target`, streamed
    (a raw checkpoint may not fit in memory)."""
    try:
        result = subprocess.run(["git", "cat-file", "blob", blob], cwd=cwd, stdout=target,
                                stderr=subprocess.PIPE, env=child_environment())
    except OSError as err:
        raise GitError(f"cannot run git: {err.strerror}") from None
    if result.returncode != 0:
        raise GitError(f"git cat-file failed: {result.stderr.decode(errors='replace').strip()}")


def _rev_parse(*args: str, cwd: str | Path | None = None) -> list[str]:
    result = run_git("rev-parse", *args, cwd=cwd, check=False)
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip()
        if "dubious ownership" in said:     # git's own message names its fix (safe.directory)
            raise DubiousOwnership(said.removeprefix("fatal: "))
        raise NotARepository("not inside a git repository")
    return result.stdout.decode(errors="surrogateescape").splitlines()


def toplevel(cwd: str | Path | None = None) -> Path:
    git_dir, top = _rev_parse("--absolute-git-dir", "--show-toplevel", cwd=cwd)[:2]
    if cwd is None:
        _pin(git_dir, top)
    return Path(top)


def main_toplevel(cwd: str | Path | None = None) -> Path:
    """The top of the repository's main work tree, from any of its linked worktrees (the one
    it runs in when the main one is bare)."""
    listed = run_git("worktree", "list", "--porcelain", cwd=cwd, check=False).stdout.decode()
    first = listed.split("\n\n", 1)[0].splitlines()
    if first and first[0].startswith("worktree ") and "bare" not in first[1:]:
        return Path(first[0][len("worktree "):])
    return toplevel(cwd)


def common_dir(cwd: str | Path | None = None) -> Path:
    """The git directory shared by every worktree of the repository."""
    return Path(_rev_parse("--path-format=absolute", "--git-common-dir", cwd=cwd)[0])


def locations(cwd: str | Path | None = None) -> tuple[Path, Path]:
    """(common git directory, hooks directory), in one call."""
    common, hooks = _rev_parse("--path-format=absolute", "--git-common-dir", "--git-path",
                               "hooks", cwd=cwd)[:2]
    return Path(common), Path(hooks)


def store_dir(cwd: str | Path | None = None) -> Path:
    return common_dir(cwd) / "gitmodel"


def prefix(cwd: str | Path | None = None) -> str:
    """Where `cwd` is below the top of the work tree ("" at the top), as git names paths."""
    lines = _rev_parse("--show-prefix", cwd=cwd)
    return lines[0] if lines else ""


# ----------------------------------------------------------------------------- config

def config_get(key: str, scope: str | None = None, cwd: str | Path | None = None,
               file: str | Path | None = None) -> str | None:
    """A single-valued key, or None when unset. `scope`: local, global, system; `file`: a
    config-syntax file (such as .gitmodel) instead."""
    where = [f"--{scope}"] if scope else (["-f", str(file)] if file else [])
    result = run_git("config", *where, "--get", key, cwd=cwd, check=False)
    return result.stdout.decode(errors="replace").rstrip("\n") if result.returncode == 0 else None


def config_bool(key: str, default: bool, cwd: str | Path | None = None) -> bool:
    """A boolean key as git reads one (true/yes/on/1, false/no/off/0, ...); a value git cannot
    read as a boolean is an error naming it, never taken for either."""
    result = run_git("config", "--type=bool", "--get", key, cwd=cwd, check=False)
    if result.returncode == 1:
        return default
    if result.returncode != 0:
        raise GitmodelError(f"git config {key}: {result.stderr.decode(errors='replace').strip()}",
                            f"Set it to true or false: `git config {key} false`")
    return result.stdout.strip() == b"true"


def config_edit(*args: str, scope: str | None = None, cwd: str | Path | None = None,
                file: str | Path | None = None, check: bool = True) -> bool:
    """`git config [--scope | -f file] ARGS...`; True when git succeeded."""
    where = [f"--{scope}"] if scope else (["-f", str(file)] if file else [])
    return run_git("config", *where, *args, cwd=cwd, check=check).returncode == 0


def config_entries(pattern: str, *where: str, cwd: str | Path | None = None) -> list[tuple[str, str]]:
    """(key, value) of every key matching the regular expression, in the order git reads them
    (`where`: extra arguments such as `-f FILE` or `--blob REV:FILE`)."""
    result = run_git("config", "-z", *where, "--get-regexp", pattern, cwd=cwd, check=False)
    if result.returncode not in (0, 1):          # 1: no such keys
        return []
    pairs = []
    for item in result.stdout.decode("utf-8", "replace").split("\0"):
        if item:
            key, _, value = item.partition("\n")
            pairs.append((key, value))
    return pairs


# ----------------------------------------------------------------------------- objects

def open_repository(cwd: Path | str | None = None):
    """The repository git itself would use here: found by git, so GIT_DIR, GIT_WORK_TREE
    (`git --git-dir X --work-tree Y`, which hooks inherit as variables), core.worktree and a
    `.git` file (`--separate-git-dir`) count, as libgit2's own discovery does not make them."""
    import pygit2
    found = run_git("rev-parse", "--absolute-git-dir", "--show-toplevel", cwd=cwd, check=False)
    lines = found.stdout.decode(errors="surrogateescape").splitlines()
    if found.returncode != 0:                          # no work tree: a bare repository?
        lines = _rev_parse("--absolute-git-dir", cwd=cwd)
    if len(lines) > 1 and cwd is None:
        _pin(lines[0], lines[1])
    # git found it, so git's ownership rule (safe.directory, which libgit2 reads only from
    # its own idea of the global config) has passed
    pygit2.option(pygit2.GIT_OPT_SET_OWNER_VALIDATION, 0)
    try:
        repository = pygit2.Repository(lines[0])
    except pygit2.GitError as err:
        if "object format" in str(err):
            raise Sha256Repository() from None
        raise
    if len(lines) > 1 and (repository.workdir is None or
                           os.path.realpath(repository.workdir) != os.path.realpath(lines[1])):
        repository.workdir = lines[1]
    return repository


def _pin(git_dir: str, top: str) -> None:
    """Name the repository to the git commands this process runs when git would not find it
    again from its work tree, where they run: a work tree set by core.worktree lies apart
    from its repository (and may lie inside another one, whose index they would read)."""
    if "GIT_DIR" in os.environ or (git_dir, top) in _FOUND_AGAIN:
        return
    dot_git = Path(top) / ".git"
    if dot_git.is_dir() and os.path.samefile(dot_git, git_dir):
        return                              # found again from there
    if dot_git.is_file():                   # a worktree's link, or another repository's
        again = run_git("rev-parse", "--absolute-git-dir", cwd=top, env=outside_environment(), check=False)
        found = os.fsdecode(again.stdout.strip())
        if again.returncode == 0 and found and os.path.samefile(found, git_dir):
            _FOUND_AGAIN.add((git_dir, top))
            return
    os.environ["GIT_DIR"], os.environ["GIT_WORK_TREE"] = git_dir, top


_FOUND_AGAIN: set[tuple[str, str]] = set()    # per process: asked once


class IndexEntry(NamedTuple):
    path: str
    id: object               # pygit2.Oid
    mode: int
    stage: int               # 0, or 1-3 (base, ours, theirs) during a conflict

    @property
    def is_file(self) -> bool:
        return self.mode in (0o100644, 0o100755)     # not a submodule (gitlink) or a symlink


_INDEX_READ: dict[str, tuple[tuple, list]] = {}     # git dir -> (the index file's stat, entries)


def index_entries(repository, path: str | None = None) -> list[IndexEntry]:
    """The index's entries (only `path`'s, when given), read by git itself: libgit2 cannot
    read every index git writes (a sparse index), and a submodule's entry names a commit of
    another repository. Read once while the index file stays as it is."""
    if repository.workdir is None:
        return []                                        # a bare repository: no index
    try:
        st = os.stat(os.path.join(repository.path, "index"))
        key = (st.st_mtime_ns, st.st_size, st.st_ino) if "GIT_INDEX_FILE" not in os.environ else None
    except OSError:
        key = None
    cached = _INDEX_READ.get(repository.path)
    if key is None or cached is None or cached[0] != key:
        cached = (key, _read_index(repository))
        _INDEX_READ[repository.path] = cached
    return cached[1] if path is None else [e for e in cached[1] if e.path == path]


def _read_index(repository) -> list[IndexEntry]:
    import pygit2
    out = run_git("ls-files", "-s", "-z", cwd=repository.workdir).stdout
    entries = []
    for record in out.split(b"\0"):
        if record:
            head, path = record.split(b"\t", 1)
            mode, oid, stage = head.split()
            entries.append(IndexEntry(os.fsdecode(path), pygit2.Oid(hex=oid.decode()),
                                      int(mode, 8), int(stage)))
    return entries


def commit(repository, rev: str):
    """The commit a revision names, or None."""
    import pygit2
    try:
        return repository.revparse_single(rev).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        return None


# Pointers read, by blob id (a blob's bytes never change): status and push walk the history
# several times, and parsing every version's tensor table again was most of their time. Emptied
# past a bound, so it never holds more than a walk would.
_read_pointers: dict = {}
_READ_POINTERS_MAX = 100_000


def pointer_blob(repository, oid, path: str = "", fetch: bool = True) -> pointers.Pointer | None:
    """The pointer a blob holds, or None when it is not a pointer. A blob that starts like a
    pointer but does not parse raises PointerError naming `path`. In a partial clone, a blob
    git has not fetched yet is fetched by git (`fetch`), or taken for no pointer: walks of the
    whole history (push, status, repack) must not download every old blob, and this clone
    cannot have made a checkpoint whose pointer it never held."""
    import pygit2
    if oid in _read_pointers:
        found = _read_pointers[oid]
    else:
        try:
            kind, size = repository.odb.read_header(oid)
        except KeyError:
            data = blob_data(repository, oid, fetch)
            if data is None:
                return None                     # not fetched: not remembered either
            kind, size = pygit2.GIT_OBJECT_BLOB, len(data)
        else:
            data = None
        if kind != pygit2.GIT_OBJECT_BLOB or size > pointers.MAX_POINTER_SIZE:
            found = None
        else:
            try:
                found = pointers.sniff(repository[oid].data if data is None else data)
            except pointers.PointerError as err:
                found = err
        if len(_read_pointers) >= _READ_POINTERS_MAX:
            _read_pointers.clear()
        _read_pointers[oid] = found
    if isinstance(found, pointers.PointerError):
        raise pointers.PointerError(f"{path or 'blob'} ({oid}) is a damaged pointer: {found}") from None
    return found


def blob_data(repository, oid, fetch: bool = True) -> bytes | None:
    """A blob's bytes. In a partial clone one that is not here yet is fetched by git from
    the promisor remote (`fetch`), or None; elsewhere a missing blob is damage."""
    try:
        return repository[oid].data
    except KeyError:
        if not partial_clone(repository):
            raise GitError(f"the repository lacks object {oid}: `git fsck` says more") from None
    if not fetch:
        return None
    found = run_git("cat-file", "blob", str(oid), cwd=repository.workdir or repository.path, check=False)
    if found.returncode != 0:
        raise GitError(f"git could not fetch object {oid} of this partial clone: "
                       f"{found.stderr.decode(errors='replace').strip()}")
    return found.stdout


def partial_clone(repository) -> bool:
    """Whether objects may be missing on purpose (`git clone --filter`: a promisor remote)."""
    return _promisor(repository) is not None


def _promisor(repository) -> str | None:
    config = repository.config
    if "extensions.partialclone" in config:
        return config["extensions.partialclone"]
    for entry in config:
        if entry.name.startswith("remote.") and entry.name.endswith(".promisor") and \
                entry.value.lower() in ("true", "yes", "on", "1"):
            return entry.name[len("remote."):-len(".promisor")]
    return None


def prefetch_pointers(repository, blobs: list[tuple[str, object]]) -> None:
    """In a partial clone, fetch in one request the blobs (path, id) at paths gitmodel tracks
    that git has not fetched yet: what one lazy fetch per blob would do, in one round trip
    (other paths' blobs, source files or raw data, stay on the server)."""
    remote = _promisor(repository) if blobs else None
    if remote is None:
        return
    missing = {path: oid for path, oid in blobs if oid not in repository}
    if not missing or repository.workdir is None:
        return
    listing = b"".join(os.fsencode(p) + b"\0" for p in missing)
    fields = run_git("check-attr", "-z", "--stdin", "filter", cwd=repository.workdir,
                     input=listing, check=False).stdout.split(b"\0")
    tracked = {os.fsdecode(fields[i]) for i in range(0, len(fields) - 2, 3) if fields[i + 2] == b"gitmodel"}
    wanted = sorted({str(missing[p]) for p in tracked})
    if not wanted:
        return
    done = run_git("-c", "fetch.negotiationAlgorithm=noop", "fetch", remote, "--no-tags",
                   "--no-write-fetch-head", "--recurse-submodules=no", "--filter=blob:none",
                   "--stdin", cwd=repository.workdir, input="\n".join(wanted).encode(), check=False)
    if done.returncode != 0:
        raise GitError(f"git could not fetch {len(wanted)} pointer(s) of this partial clone from "
                       f"{remote}: {done.stderr.decode(errors='replace').strip()}")


def without_skip_smudge() -> dict[str, str]:
    """This process's environment for a git command that must restore files."""
    env = child_environment()
    env.pop("GITMODEL_SKIP_SMUDGE", None)
    return env
