"""Merging tracked checkpoints in git: the merge driver git calls, finishing a conflicted merge
later (`gitmodel merge --resolve`), and the strategy chosen for a path.

Git hands the driver three pointers (%O base, %A ours, %B theirs) and stores whatever is left
in %A without cleaning it, so the driver stores the merged checkpoint itself and writes its
pointer to %A. On a conflict %A keeps ours (the work tree keeps a loadable checkpoint) and the
index keeps the three versions. Git's -X options do not reach merge drivers, so the strategy
comes from the environment, .gitattributes or git config (docs/merge.md).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import BinaryIO

from gitmodel import merge, pointer as pointers
from gitmodel.errors import GitmodelError
from gitmodel.git import merge_shards, repo
from gitmodel.git.session import Session
from gitmodel.store import files
from gitmodel.pointer import Pointer

# (attribute / config / environment suffix, Strategy field, parser)
_PARAMETERS = (("strategy", "name", str), ("density", "density", float), ("scale", "scale", float),
               ("seed", "seed", int),
               ("weights", "weights", lambda text: tuple(float(w) for w in text.split(","))))


def strategy_for(path: str, cwd: Path | None = None, **given) -> merge.Strategy:
    """The strategy for `path`: what the command gave, else GITMODEL_MERGE_STRATEGY (and
    GITMODEL_MERGE_DENSITY, ...), else the path's `merge-strategy` attribute (and
    `merge-density`, ...), else git config gitmodel.merge.strategy (...), else conflict."""
    attributes = _attributes(path, cwd)
    configured: dict[str, str] | None = None

    def config(suffix: str) -> str | None:       # one `git config` for every key, if any is asked
        nonlocal configured
        if configured is None:                   # the last value of a key wins, as in git
            configured = dict(repo.config_entries(r"^gitmodel\.merge\.", cwd=cwd))
        return configured.get(f"gitmodel.merge.{suffix}")

    values = {}
    for suffix, field, parse in _PARAMETERS:
        if given.get(field) is not None:
            values[field] = given[field]
            continue
        text = os.environ.get(f"GITMODEL_MERGE_{suffix.upper()}")
        if not text and attributes.get(f"merge-{suffix}") == "":
            raise merge.MergeError(f"the merge-{suffix} attribute of {path} has no value",
                                   f"Give it one in .gitattributes (merge-{suffix}=VALUE), or "
                                   f"unset it (-merge-{suffix})")
        text = text or attributes.get(f"merge-{suffix}") or config(suffix)
        if text:
            try:
                values[field] = parse(text)
            except ValueError:
                raise merge.MergeError(f"merge {suffix} {text!r} for {path} is not a valid value") from None
    return merge.Strategy(**values)


def _attributes(path: str, cwd: Path | None) -> dict[str, str]:
    names = [f"merge-{suffix}" for suffix, _, _ in _PARAMETERS]
    out = repo.run_git("check-attr", "-z", *names, "--", path, cwd=cwd, check=False).stdout
    fields = out.split(b"\0")
    found = {}
    for i in range(0, len(fields) - 2, 3):
        value = fields[i + 2].decode(errors="replace")
        if value not in ("unspecified", "unset"):
            found[fields[i + 1].decode()] = "" if value == "set" else value   # "": no value
    return found


def _pointer_of(data: bytes, what: str) -> Pointer | None:
    try:
        return pointers.sniff(data)
    except pointers.PointerError as err:
        raise merge.MergeError(f"{what} is a damaged pointer: {err}") from None


def _pointer_in(file: BinaryIO, what: str, session: Session) -> Pointer | None:
    """The pointer a side's file holds. A file that is no pointer (a version committed before
    its path was tracked) is stored as a clean would store it, read as it streams, and its
    pointer is the side's. None for an empty file (absent on that side)."""
    head = file.read(pointers.MAX_POINTER_SIZE + 1)
    ptr = _pointer_of(head, what)
    if ptr is None and head:
        from gitmodel import checkpoint
        file.seek(0)
        ptr = pointers.sniff(checkpoint.clean(file, session.store))
    return ptr


def report(result: merge.Result, path: str, out=sys.stderr, in_git: bool = True,
           resolve: str | None = None) -> None:
    """Say what a merge did, or which tensors conflict and how far each side moved them (and,
    `in_git`, how to finish the git merge, `--resolve` of `resolve` or `path`; else that
    nothing was written)."""
    if result.conflicts:
        print(f"gitmodel: {path}: {len(result.conflicts)} conflict(s):", file=out)
        for c in result.conflicts:
            moved = ", ".join(f"{label} moved it {change:.3g}" if change is not None else f"{label}: –"
                              for label, change in zip(("ours", "theirs"), c.changes))
            print(f"  {c.name}: {c.reason}" + (f" (relative L2 against the base: {moved})" if moved else ""),
                  file=out)
        # The file as a whole (unreadable, or a layout no strategy can merge): keep a side.
        whole = any(c.name in ("(format)", "(layout)") for c in result.conflicts)
        if not in_git:
            print(f"gitmodel: nothing was written to {path}" + ("" if whole else
                  "; choose how to merge what several inputs changed with --strategy "
                  "ours|theirs|average|task-arithmetic|ties|dare"), file=out)
            return
        if any(c.reason.startswith(merge_shards.MOVED) for c in result.conflicts):
            operation = _operation()
            print(f"gitmodel: the work tree keeps ours. {merge_shards.whole_model(path)}; or abandon it: " +
                  (f"`{operation} --abort`" if operation else _ABORTS), file=out)
            return
        quoted = shlex.quote(resolve or path)
        if whole:
            finish = f"keep a side with `git checkout --ours -- {quoted}` (or --theirs) and `git add`"
        else:
            arithmetic = all(c.reason == merge.CHANGED_BOTH or c.name == "(metadata)"
                             for c in result.conflicts)
            choices = "ours|theirs|average|task-arithmetic|ties|dare" if arithmetic else "ours|theirs"
            named = f"={quoted}" if (resolve or path).startswith("-") else f" {quoted}"
            finish = f"finish with `gitmodel merge --resolve{named} --strategy {choices}`"
        operation = _operation()
        if operation is None:          # git does not tell a driver what runs it (merge-tree?)
            print(f"gitmodel: if git left this conflict in the work tree (it keeps ours), {finish}, "
                  f"or abandon what stopped: its --abort ({_ABORTS}); `git merge-tree` changes "
                  "nothing", file=out)
        else:
            print(f"gitmodel: the work tree keeps ours; {finish}, or `{operation} --abort`",
                  file=out)
        return
    counts: dict[str, int] = {}
    for d in result.decisions:
        key = {"keep": "unchanged", "take": "taken from one side", "compute": "merged",
               "remove": "removed"}[d.action]
        counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    print(f"gitmodel: {path}: merged tensor by tensor ({summary}; {result.how})" if summary else
          f"gitmodel: {path}: merged; it holds no tensors ({result.how})", file=out)
    for note in result.notes:
        print(f"gitmodel: {path}: {note}", file=out)


_ABORTS = ("`git merge --abort`, `git cherry-pick --abort` or `git revert --abort`; after "
           "`git stash pop`: `git reset --merge`, the stash is kept")


def _operation() -> str | None:
    """The git command whose --abort abandons the operation that ran the driver, if it can
    be told (git does not tell a driver which)."""
    try:
        git_dir = Path(repo.run_git("rev-parse", "--absolute-git-dir").stdout.decode().strip())
        if (git_dir / "rebase-apply" / "applying").exists():
            return "git am"                              # git am keeps its state there too
        if (git_dir / "rebase-merge").is_dir() or (git_dir / "rebase-apply").is_dir():
            return "git rebase"
        for head, command in (("MERGE_HEAD", "merge"), ("CHERRY_PICK_HEAD", "cherry-pick"),
                              ("REVERT_HEAD", "revert")):      # an operation stopped earlier
            if (git_dir / head).exists():
                return f"git {command}"
    except (OSError, GitmodelError):
        pass
    if os.environ.get("GIT_REFLOG_ACTION", "").startswith(("merge", "pull")):
        return "git merge"
    return None


def _undo() -> str:
    """How to abandon the operation that ran the driver."""
    operation = _operation()
    return f"`{operation} --abort`" if operation else f"abandon it: {_ABORTS}"


def driver(base_file: Path, ours_file: Path, theirs_file: Path, path: str) -> int:
    """git's merge driver: 0 with the merged pointer in `ours_file`, 1 for a conflict (ours
    left as it is)."""
    try:
        session = Session()
        sides = []
        for file, side in ((base_file, "base"), (ours_file, "ours"), (theirs_file, "theirs")):
            with open(file, "rb") as f:
                sides.append(_pointer_in(f, f"{path} ({side})", session))
        base, ours, theirs = sides
        if ours is None or theirs is None:
            print(f"gitmodel: {path}: one side is an empty file; keep one with `git checkout "
                  "--ours/--theirs -- PATH`", file=sys.stderr)
            return 1
        result = merge.merge(base, [ours, theirs], ["ours", "theirs"], session.store,
                             strategy_for(path), session.fetcher())
        merge_shards.explain_moves(path, ours, theirs, result.conflicts)
    except GitmodelError as err:
        print(f"gitmodel: {path}: cannot merge: {err.full()}. The work tree keeps ours; to undo, "
              f"{_undo()}", file=sys.stderr)
        return 1
    report(result, path)
    if result.pointer is None:
        return 1
    ours_file.write_bytes(result.pointer.render())
    return 0


def stages(path: str, cwd: Path | None = None) -> dict[int, tuple[str, str]]:
    """The conflicted index entries of `path`: {stage: (mode, blob id)} (1 base, 2 ours, 3 theirs)."""
    out = repo.run_git("--literal-pathspecs", "ls-files", "-u", "-z", "--", path, cwd=cwd).stdout
    found = {}
    for record in out.split(b"\0"):
        if record:
            info, _, _ = record.partition(b"\t")
            mode, blob, stage = info.decode().split()
            found[int(stage)] = (mode, blob)
    return found


def resolve(path: str, strategy: merge.Strategy, cwd: Path | None = None) -> merge.Result:
    """Merge a conflicted checkpoint (`path` from the top of the work tree) with `strategy`,
    stage the result and write it to the work tree. Nothing is staged if it still conflicts."""
    top = repo.toplevel(cwd)
    cwd = top                                    # git reads `path` from where it runs
    found = stages(path, cwd)
    if found and (2 in found) != (3 in found):
        if merge_shards.shard_key(path) is not None:
            merge_shards.refuse_deleted_shard(path, found, cwd)
        raise merge.MergeError(f"{path} was deleted on one side and changed on the other: there "
                               "is nothing to merge tensor by tensor",
                               f"Keep it with `git add {shlex.quote(path)}`, or delete it with "
                               f"`git rm {shlex.quote(path)}`")
    if 2 not in found or 3 not in found:
        raise merge.MergeError(f"{path} is not a conflicted checkpoint (no ours and theirs in the "
                               "index)", "`git status` lists the conflicted paths")
    session = Session(cwd)

    def read(stage: int) -> Pointer | None:
        import tempfile
        os.makedirs(session.store.tmp_dir, exist_ok=True)       # a raw side may be large
        with tempfile.TemporaryFile(dir=session.store.tmp_dir) as f:
            repo.write_blob(found[stage][1], f, cwd)
            f.seek(0)
            return _pointer_in(f, f"{path} (stage {stage})", session)
    base = read(1) if 1 in found else None
    ours, theirs = read(2), read(3)
    if ours is None or theirs is None:
        raise merge.MergeError(f"{path}: a side is an empty file",
                               "Keep one with `git checkout --ours/--theirs -- PATH`")
    result = merge.merge(base, [ours, theirs], ["ours", "theirs"], session.store, strategy,
                         session.fetcher())
    if merge_shards.shard_key(path) is not None:
        merge_shards.explain_moves(path, ours, theirs, result.conflicts, cwd)
        if result.pointer is not None:
            lost = merge_shards.lost_to_a_move(path, base, {"ours": ours, "theirs": theirs}, result.pointer,
                                   strategy.name, cwd)
            if lost:
                raise merge.MergeError(f"{path} is a shard of a model that one side re-sharded; "
                                       f"nothing was staged, as this resolution would lose "
                                       "changes:\n" + "\n".join(lost), merge_shards.whole_model(path))
    if result.pointer is None:
        return result
    blob = repo.run_git("hash-object", "-w", "--no-filters", "--stdin", cwd=cwd,
                        input=result.pointer.render()).stdout.decode().strip()
    repo.run_git("update-index", "--cacheinfo", f"{found[2][0]},{blob},{path}", cwd=cwd)
    (top / path).unlink(missing_ok=True)
    repo.run_git("--literal-pathspecs", "checkout", "--", path, cwd=top, env=repo.without_skip_smudge(),
                 capture=False)
    return result


def merge_files(specs: list[str], base_spec: str | None, output: Path, strategy: merge.Strategy) -> merge.Result:
    """`gitmodel merge`: merge files (or REV:PATH of tracked checkpoints) into `output`. In a
    repository its store serves; elsewhere a temporary one, removed after."""
    import tempfile
    from gitmodel import checkpoint
    from gitmodel.store.objects import Store
    try:
        session = Session()
        store, fetch = session.store, session.fetcher()
        workspace = None
    except GitmodelError:
        workspace = tempfile.TemporaryDirectory(prefix="gitmodel-merge-")
        store, fetch = Store(workspace.name), None
    try:
        def load(spec: str) -> Pointer:
            if ":" in spec and not Path(spec).exists():
                from gitmodel.git import revisions
                side, path = revisions.split_spec(spec)
                repository = repo.open_repository()
                if side not in (revisions.WORK_TREE, revisions.INDEX) and repo.commit(repository, side) is None:
                    raise merge.MergeError(f"{spec}: this repository has no revision {side!r}")
                ptr = revisions.pointer_at(repository, side, path, store)
                if ptr is None:
                    at = "" if side is revisions.INDEX else side
                    if repo.run_git("cat-file", "-e", f"{at}:{path}", check=False).returncode:
                        where = "the index" if side is revisions.INDEX else side
                        raise merge.MergeError(f"{spec}: {where} has no file {path}")
                    raise merge.MergeError(f"{spec} is not a tracked checkpoint (committed before "
                                           "its path was tracked?)", "Give the file itself instead: "
                                           f"`git show {spec} > FILE`")
                return ptr
            try:
                with open(spec, "rb") as f:
                    text = checkpoint.clean(f, store)
            except OSError as err:
                raise merge.MergeError(f"cannot read {spec}: {err.strerror}") from None
            if not text:
                raise merge.MergeError(f"{spec} is empty")
            return pointers.parse(text)

        if not output.parent.is_dir():
            raise merge.MergeError(f"cannot write {output}: there is no folder {output.parent}")
        if output.is_dir():
            raise merge.MergeError(f"cannot write {output}: it is a folder (nothing was written)",
                                   f"Name the merged file: -o {output / 'merged'}{Path(specs[0]).suffix}")
        base = load(base_spec) if base_spec else None
        inputs = [load(spec) for spec in specs]
        result = merge.merge(base, inputs, [Path(s).name for s in specs], store, strategy, fetch)
        if result.pointer is not None:
            with files.replacing(output) as out:
                checkpoint.smudge(result.pointer, store, out)
        return result
    finally:
        if workspace is not None:
            store.close()
            workspace.cleanup()
