"""`gitmodel gc`: the local store keeps what the repository's git still references.

Order matters: the gc lock is taken first (waiting for writers), and only then are the live
checkpoints listed, so everything a finished git command stored is in its index or refs by
the time it is looked for. The rules and the contract with writers: docs/design.md
("Garbage collection").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from gitmodel.errors import GitmodelError
from gitmodel.process import outside_environment
from gitmodel.git import liveness, repacking, repo
from gitmodel.store import files, gc

DEFAULT_KEEP_RECENT_DAYS = 1.0
DEFAULT_WAIT_SECONDS = 60.0
MIB = 1 << 20


def _warn(line: str) -> None:
    """What a gc must tell even when quiet (`-q` silences progress, `say`): notes of damage
    it went past, repacks that failed."""
    print(f"gitmodel: gc: {line}", file=sys.stderr)


def keep_recent_days(given: float | None, cwd=None) -> float:
    """--keep-recent, else git config gitmodel.gc.keepRecent (days), else one day."""
    if given is None:
        setting = repo.config_get("gitmodel.gc.keepRecent", cwd=cwd)
        if not setting:
            return DEFAULT_KEEP_RECENT_DAYS
        try:
            given = float(setting)
        except ValueError:
            raise GitmodelError(f"git config gitmodel.gc.keepRecent is {setting!r}, not a number "
                                "of days", "Set it to a number such as 1 or 0.5") from None
    if not given >= 0:                                 # also refuses nan
        raise GitmodelError(f"--keep-recent must be zero or more days, not {given}")
    return given


def collect_local(session, keep_recent: float | None = None, dry_run: bool = False,
                  wait: float = DEFAULT_WAIT_SECONDS,
                  say: Callable[[str], None] = lambda line: None,
                  warn: Callable[[str], None] = _warn) -> gc.GcReport:
    days = keep_recent_days(keep_recent, session.cwd)
    store = session.store
    if not dry_run:
        store.lock_for_gc(wait, say)
    try:
        if not dry_run and store.tmp_dir.is_dir():
            swept = files.sweep(store.tmp_dir)         # what killed writers left (nobody's lock)
            if swept:
                say(f"removed {swept} temporary file(s) a killed command left")
        recent = gc.recent_objects(store, days)        # before a repack gives them new packs
        before = gc.store_bytes(store)
        if not dry_run and repacking.deltas_enabled(session.cwd):
            # Versions that survive get their deltas against surviving keyframes, so the
            # keyframes of dropped versions stop being needed as bases.
            done = repacking.repack_or_warn(session, "first", warn)
            if done is not None and done.encoded:   # else its freed bytes would look unexplained
                say(f"repacked first: {done.encoded} chunk(s) re-encoded, "
                    f"{done.bytes_before / MIB:.1f} MiB became {done.bytes_after / MIB:.1f} MiB")
        damaged: list = []
        found = liveness.live_checkpoints(session.cwd, damaged=damaged)
        say(f"{len(found)} checkpoint(s) referenced by refs, reflogs, indexes and worktrees")
        say_damaged(damaged, warn)
        report = gc.collect(store, [bytes.fromhex(c) for c in found], recent, dry_run, say)
        report.live_checkpoints = len(found)
        report.bytes_before = before
        return report
    finally:
        store.release()



def collect_remote(session, name: str, refs: list[str] | None = None,
                   keep_recent: float | None = None, dry_run: bool = False,
                   say: Callable[[str], None] = lambda line: None,
                   warn: Callable[[str], None] = _warn) -> gc.GcReport:
    """gc of the gitmodel remote that goes with git remote `name`: live is what the history
    of the refs the git remote (and every git remote pushing there) has now references, and
    that of `refs` too (the only live commits when the git remote has no refs)."""
    from gitmodel.remote import collect
    days = keep_recent_days(keep_recent, session.cwd)
    url = repo.run_git("remote", "get-url", name, cwd=session.cwd, check=False)
    if url.returncode != 0:
        raise GitmodelError(f"{name!r} is not a git remote of this repository",
                            "Nothing was removed. `git remote -v` lists them")
    view = session.view_for_push(name, url.stdout.decode().strip())
    if view is None:
        raise GitmodelError(f"git remote {name} has no gitmodel remote",
                            "Nothing was removed. `gitmodel remote list` shows what is configured")
    working = _working_store_of(view.backend.url)
    if working is not None:
        raise GitmodelError(f"the gitmodel remote of {name} is the store of the repository "
                            f"{working}, which has a work tree: its stash, reflogs, index and "
                            "unpushed branches need what a gc from here would count as garbage",
                            f"Nothing was removed. Run `gitmodel gc` in {working}: it keeps "
                            "everything that repository holds, and what was pushed to it")
    # --ref adds to what the git remote's refs keep, never replaces it: a commit named from a
    # clone whose branches are behind the remote's would otherwise make their newer
    # checkpoints garbage.
    shallow = repo.run_git("rev-parse", "--is-shallow-repository", cwd=session.cwd, check=False)
    if shallow.stdout.strip() == b"true":        # the history behind its tips is not here
        raise GitmodelError(f"this clone is shallow, so it cannot tell which checkpoints the "
                            f"history of {name}'s refs references",
                            f"Nothing was removed. Run `git fetch --unshallow {name}` first, "
                            "or gc from a full clone")
    refs_read = time.monotonic()          # pushes' notes since an hour before this count
    sharing = _sharing(session, name, view.backend.url)
    tips = sorted({tip for other in sharing
                   for tip in remote_tips(session.cwd, other, none_is_fine=bool(refs) or other != name)})
    tips += list(refs or [])
    damaged: list = []
    sizes: dict[str, int] = {}
    found = liveness.live_checkpoints(session.cwd, tips, damaged=damaged, sizes=sizes)
    if not dry_run and repacking.deltas_enabled(session.cwd):
        # The rewrite sends the local store's copies: re-encoded against surviving keyframes
        # first, they let the remote's dropped keyframes go.
        repacking.repack_or_warn(session, "first", warn)
    say(f"{len(found)} checkpoint(s) referenced by {len(tips)} ref(s) of {', '.join(sharing)}"
        + (" (git remotes whose pushes go to this gitmodel remote)" if len(sharing) > 1 else ""))
    say_damaged(damaged, warn)
    report = collect.collect(view, session.store, [bytes.fromhex(c) for c in found], days,
                             dry_run, say, refs_read, {bytes.fromhex(c): n for c, n in sizes.items()})
    report.live_checkpoints = len(found)
    return report


def say_damaged(damaged: list, say: Callable[[str], None]) -> None:
    """Damaged pointers without a content id: nothing to keep for them, and the gc goes on
    (as fsck and status name them and go on); said, so that none goes unnoticed."""
    for item in damaged:
        say(f"note: {item}; it names no checkpoint, so there is nothing to keep for it (the "
            "checkpoint of every pointer that can be read is kept). A branch that holds it: "
            "`gitmodel status` says how to rewrite its commit; a reflog entry expires with "
            "the reflog")


def _working_store_of(url: str) -> Path | None:
    """The work tree of the non-bare repository whose own store the remote at `url` is (a
    folder git remote's embedded default), if it is one."""
    from gitmodel.git import remotes
    if "://" in url and not url.startswith("file://"):
        return None
    git_dir = Path(remotes.place(url)).parent          # a link or trailing slash: the same folder
    if not (git_dir / "HEAD").is_file() or not (git_dir / "objects").is_dir():
        return None
    bare = repo.run_git(f"--git-dir={git_dir}", "rev-parse", "--is-bare-repository",
                        env=outside_environment(), check=False)
    if bare.returncode != 0:
        return None
    if bare.stdout.strip() == b"true":      # unless linked work trees have indexes and reflogs
        return git_dir if any((git_dir / "worktrees").glob("*")) else None
    return git_dir.parent


def _sharing(session, name: str, url: str) -> list[str]:
    """Git remote `name` and the others whose refs may need the gitmodel remote at `url`:
    those whose pushes go there now (a git remote without a gitmodel remote of its own name
    pushes to the default), and those with a branch (as this clone last saw it) whose own
    .gitmodel sends its clones there (pushed there before the routing changed). The refs of
    each of them keep what is there."""
    from gitmodel.git import remotes
    listed = repo.run_git("remote", cwd=session.cwd, check=False).stdout.decode().split()
    here = remotes.place(url)
    out = [name]
    for other in listed:
        address = repo.run_git("remote", "get-url", other, cwd=session.cwd, check=False)
        if other == name or address.returncode != 0:
            continue
        spec = remotes.for_git_remote(other, address.stdout.decode().strip(), session.cwd)
        if spec is not None and remotes.place(spec.url) == here:
            out.append(other)
            continue
        tracking = repo.run_git("for-each-ref", "--format=%(refname)", f"refs/remotes/{other}/",
                                cwd=session.cwd, check=False).stdout.decode().split()
        for ref in tracking:
            reader = remotes.read_from(ref, other, session.cwd)
            if reader is not None and remotes.place(reader.url) == here:
                out.append(other)
                break
    return out


def _present(cwd, shas: list[str]) -> list[bool]:
    """Whether each object (a commit, or what a tag names: a tree or a file) is here, in one
    git command for them all (a remote with thousands of refs)."""
    if not shas:
        return []
    checked = repo.run_git("cat-file", "--batch-check=%(objectname)", cwd=cwd, check=False,
                           input="".join(f"{sha}\n" for sha in shas).encode())
    lines = checked.stdout.decode(errors="replace").splitlines()
    if len(lines) != len(shas):
        raise GitmodelError(f"git cat-file failed: {checked.stderr.decode(errors='replace').strip()}",
                            "Nothing was removed")
    return [not line.endswith(" missing") for line in lines]


def remote_tips(cwd, name: str, none_is_fine: bool = False) -> list[str]:
    """The commits every ref of the git remote points at now (branches and tags, and refs
    such as a review system's refs/pull/* or refs/for/*, which serve commits too), all present
    here (an error if it has none, unless `none_is_fine`)."""
    listed = repo.run_git("ls-remote", name, cwd=cwd, check=False)
    if listed.returncode != 0:
        raise GitmodelError(f"git ls-remote {name} failed: "
                            f"{listed.stderr.decode(errors='replace').strip()}",
                            "Nothing was removed. Check that the git remote is reachable")
    tips = {}
    for line in listed.stdout.decode().splitlines():
        sha, _, ref = line.partition("\t")
        tips[ref.removesuffix("^{}")] = sha       # a tag's peeled line comes after it
    if not tips and not none_is_fine:
        raise GitmodelError(f"git remote {name} has no refs, so nothing says which "
                            "checkpoints on its gitmodel remote are live",
                            "Nothing was removed. Name the commits to keep with --ref")
    absent = [ref for ref, here in zip(tips, _present(cwd, list(tips.values()))) if not here]
    if absent:
        # `git fetch NAME` brings branches and tags; other refs only when named, and naming
        # one replaces the configured refspec: both fetches, when both kinds are missing
        others = [ref for ref in absent if not ref.startswith(("refs/heads/", "refs/tags/", "HEAD"))]
        from shlex import quote
        fetches = [f"git fetch {quote(name)}"] if len(others) < len(absent) else []
        if others:
            fetches.append(f"git fetch {quote(name)} " + " ".join(quote(ref) for ref in others[:3]))
        more = (f" (and fetch the {len(others) - 3} other refs `git ls-remote {name}` lists that "
                "this clone lacks likewise)" if len(others) > 3 else "")
        raise GitmodelError(f"git remote {name} has commits this clone lacks ({absent[0]}"
                            f"{f' and {len(absent) - 1} more' if len(absent) > 1 else ''})",
                            f"Nothing was removed. Run `{' && '.join(fetches)}` first{more}, "
                            "then gc again")
    return sorted(set(tips.values()))
