"""Sharded models in git merges. A model saved in shards (`model-00001-of-00004.safetensors`
..., with `model.safetensors.index.json`, whose weight_map names the file holding each
tensor) is one model, but git merges it file by file. A tensor that one side moved to another
shard (a re-shard) is gone from its old file there, so where the other side changed it in
that file, neither side's version of the file is right: keeping the change leaves the name in
two shards, and loading by weight_map takes the moved, unchanged copy; dropping it loses the
change. The driver says where such tensors went, and --resolve of the shard refuses both;
`gitmodel merge --resolve` of the model's index file merges it as one (`resolve_model`).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from gitmodel import merge, pointer as pointers
from gitmodel.errors import GitmodelError
from gitmodel.git import repo
from gitmodel.git.session import Session
from gitmodel.pointer import Pointer

MOVED = "moved to"       # starts the reason of a conflict whose tensor went to another shard


def _theirs_revision(cwd: Path | None = None) -> str | None:
    """The commit whose changes are merged in (theirs), while git runs the driver or after it
    stopped; None where git does not tell (a cherry-pick, while it runs)."""
    for key in os.environ:                   # git merge names it so for merge drivers
        if key.startswith("GITHEAD_"):
            return key[len("GITHEAD_"):]
    try:
        git_dir = Path(repo.run_git("rev-parse", "--absolute-git-dir", cwd=cwd).stdout.decode().strip())
        for head, theirs in (("MERGE_HEAD", "{}"), ("CHERRY_PICK_HEAD", "{}"), ("REBASE_HEAD", "{}"),
                             ("REVERT_HEAD", "{}^")):    # a revert merges in the parent
            if (git_dir / head).exists():
                return theirs.format((git_dir / head).read_text().split()[0])
        done = git_dir / "rebase-merge" / "done"        # a rebase picking, before REBASE_HEAD
        if done.exists():
            lines = done.read_text().split("\n")
            last = [line for line in lines if line.strip() and not line.startswith("#")][-1].split()
            if len(last) > 1 and last[0] in ("pick", "p", "reword", "r", "edit", "e", "squash", "s", "fixup", "f"):
                return last[1]
    except (OSError, IndexError, GitmodelError):
        pass
    return None


def _blob_pointer(blob: str, size: int, cwd: Path | None) -> Pointer | None:
    """The pointer a blob holds; None for a raw file (committed before it was tracked)."""
    if size > pointers.MAX_POINTER_SIZE:
        return None
    try:
        return pointers.sniff(repo.run_git("cat-file", "blob", blob, cwd=cwd).stdout)
    except pointers.PointerError:
        return None


def _model_files(path: str, entries: list[tuple[str, str, int]], cwd: Path | None) -> dict[str, Pointer]:
    """The other files of `path`'s sharded model among `entries` ((path, blob, size), one
    folder's), by path: same folder, stem and extension, any shard count (a re-shard changes
    it). Raw files, whose tensors no pointer lists, are left out."""
    key = shard_key(path)
    found = {}
    for other, blob, size in entries:
        if other != path and shard_key(other) == key:
            ptr = _blob_pointer(blob, size, cwd)
            if ptr is not None:
                found[other] = ptr
    return found


def shard_key(path: str):
    from gitmodel.git import revisions          # (pygit2: only where shards are concerned)
    return revisions.shard_key(path)


def _folder_at(path: str, rev: str, cwd: Path | None) -> list[tuple[str, str, int]]:
    """(path, blob, size) of the files in `path`'s folder at a revision."""
    folder = path.rpartition("/")[0]
    out = repo.run_git("--literal-pathspecs", "ls-tree", "-z", "-l", rev, "--", f"{folder}/" if folder else ".",
                       cwd=cwd, check=False).stdout
    found = []
    for record in out.split(b"\0"):
        info, _, name = record.partition(b"\t")
        fields = info.decode().split()
        if len(fields) == 4 and fields[1] == "blob":
            found.append((os.fsdecode(name), fields[2], int(fields[3])))
    return found


def _holders(files: dict[str, Pointer]) -> dict[str, str]:
    """{tensor name: the file holding it} over a model's files (the first, where several do)."""
    out: dict[str, str] = {}
    for file, ptr in files.items():
        for t in ptr.tensors:
            out.setdefault(t.name, file)
    return out


def _moved_on(path: str, rev: str | None, names: list[str], cwd: Path | None) -> dict[str, str]:
    """{name: the other file of the model holding it at `rev`} for those of `names` it holds."""
    if rev is None or not names:
        return {}
    held = _holders(_model_files(path, _folder_at(path, rev, cwd), cwd))
    return {name: held[name] for name in names if name in held}


def explain_moves(path: str, ours: Pointer, theirs: Pointer, conflicts: list[merge.Conflict],
                  cwd: Path | None = None) -> None:
    """Reword the conflicts of a shard whose tensor one side removed from this file and the
    other changed: where the remover holds it in another shard of the model, say so."""
    removed = [c for c in conflicts if c.reason == merge.REMOVED_AND_CHANGED]
    if not removed or shard_key(path) is None:
        return
    in_ours = {t.name for t in ours.tensors}
    for remover, changer, rev in (("ours", "theirs", "HEAD"), ("theirs", "ours", None)):
        mine = [c for c in removed if (c.name not in in_ours) == (remover == "ours")]
        if mine and rev is None:
            rev = _theirs_revision(cwd)
        moved = _moved_on(path, rev, [c.name for c in mine], cwd)
        for c in mine:
            if c.name in moved:
                c.reason = f"{MOVED} {moved[c.name]} on {remover}, changed in this file on {changer}"


def _staged_model(path: str, cwd: Path | None) -> dict[str, list[Pointer]]:
    """The other files of `path`'s sharded model in the index: {path: its pointers}, the
    merged one (stage 0), or ours' and theirs' while it is conflicted (either may be kept)."""
    folder = path.rpartition("/")[0]
    out = repo.run_git("--literal-pathspecs", "ls-files", "-s", "-z", "--", f"{folder}/" if folder else ".",
                       cwd=cwd).stdout
    entries = []
    for record in out.split(b"\0"):
        info, _, name = record.partition(b"\t")
        fields = info.decode().split()
        if len(fields) == 3 and fields[2] in ("0", "2", "3") and shard_key(os.fsdecode(name)) == shard_key(path):
            size = int(repo.run_git("cat-file", "-s", fields[1], cwd=cwd).stdout)
            entries.append((os.fsdecode(name), fields[1], size))
    found: dict[str, list[Pointer]] = {}
    for entry in entries:
        for file, ptr in _model_files(path, [entry], cwd).items():
            found.setdefault(file, []).append(ptr)
    return found


def _changed(base: Pointer | None, side: Pointer) -> dict[str, str]:
    """{name: digest} of the tensors a side changed or added against the base."""
    was = {t.name: t.digest for t in (base.tensors if base else ())}
    return {t.name: t.digest for t in side.tensors if was.get(t.name) != t.digest}


def lost_to_a_move(path: str, base: Pointer | None, sides: dict[str, Pointer], merged: Pointer,
                    strategy: str, cwd: Path) -> list[str]:
    """Why staging `merged` for a shard would lose a change to a tensor, or leave a name in two
    shards of the model (the weight_map names one file per tensor: the other copy never
    loads): one line per tensor, none when it loses nothing."""
    staged = _staged_model(path, cwd)
    elsewhere = {}                                # name: [(file, digest)] in the other shards
    for file, versions in staged.items():
        for ptr in versions:
            for t in ptr.tensors:
                elsewhere.setdefault(t.name, []).append((file, t.digest))
    revs = {"ours": "HEAD", "theirs": _theirs_revision(cwd)}
    kept = {t.name for t in merged.tensors}
    problems = []
    in_base = {t.name for t in base.tensors} if base is not None else set()
    for remover, changer in (("ours", "theirs"), ("theirs", "ours")):
        changes = _changed(base, sides[changer])
        gone = [n for n in changes if n in in_base and n not in {t.name for t in sides[remover].tensors}]
        for name, file in _moved_on(path, revs[remover], gone, cwd).items():
            if name in kept:
                problems.append(f"  {name}: {remover} moved it to {file}, {changer} changed it here; "
                                f"--strategy {strategy} keeps {changer}' change in this file, but the "
                                f"tensor loads from {file}, which holds the unchanged one")
            elif not any(digest == changes[name] for _, digest in elsewhere.get(name, ())):
                problems.append(f"  {name}: {remover} moved it to {file}, {changer} changed it here; "
                                f"--strategy {strategy} drops {changer}' change")
    named = {line.split(":")[0].strip() for line in problems}
    for name in sorted(kept - named):
        if name in elsewhere:
            problems.append(f"  {name}: also in {elsewhere[name][0][0]}: a name in two shards, of "
                            "which loading reads one")
    return problems


def index_of(path: str) -> str:
    """The index file of a shard's model: `model.safetensors.index.json` for
    `model-00001-of-00004.safetensors`."""
    folder, stem, ext = shard_key(path)
    return f"{folder + '/' if folder else ''}{stem}{ext}{INDEX_SUFFIX}"


def whole_model(path: str) -> str:
    """What to do instead when no version of a shard keeps both a move and a change."""
    index = index_of(path)
    named = f"={shlex.quote(index)}" if index.startswith("-") else f" {shlex.quote(index)}"
    return ("No version of this one file keeps both the move and the change: merge the model as a "
            f"whole with `gitmodel merge --resolve{named}` (the re-sharded side's shards, each "
            "tensor merged by name: a tensor changed on one side and moved on the other is the "
            "change, where the move put it; add --strategy for tensors both sides changed)")


def refuse_deleted_shard(path: str, found: dict[int, tuple[str, str]], cwd: Path) -> None:
    """Refuse `git add`/`git rm` advice for a shard one side deleted and the other changed,
    where the deleting side holds changed tensors in another shard of the model (a re-shard):
    keeping the file leaves them in two shards, deleting it drops the change."""
    if 1 not in found:
        return
    def pointer(stage: int) -> Pointer | None:
        return _blob_pointer(found[stage][1], int(repo.run_git("cat-file", "-s", found[stage][1],
                                                                cwd=cwd).stdout), cwd)
    changer, remover, rev = ("theirs", "ours", "HEAD") if 3 in found else ("ours", "theirs", _theirs_revision(cwd))
    base, changed = pointer(1), pointer(3 if 3 in found else 2)
    if base is None or changed is None:
        return
    moved = _moved_on(path, rev, list(_changed(base, changed)), cwd)
    if moved:
        lines = "\n".join(f"  {name}: {remover} moved it to {file}, {changer} changed it here"
                          for name, file in moved.items())
        raise merge.MergeError(f"{path} was deleted on {remover} (a re-shard) and changed on "
                               f"{changer}, and {remover} holds tensors {changer} changed in other "
                               f"shards:\n{lines}\n`git add` would keep them in two shards (loading "
                               f"reads the unchanged copies the index file names), `git rm` would drop "
                               f"{changer}' change", whole_model(path))


# A model's index file names it: `model.safetensors.index.json` for `model-*-of-*.safetensors`
INDEX_SUFFIX = ".index.json"


def _merge_revisions(cwd: Path) -> tuple[str, str]:
    """(base, theirs) of the merge, cherry-pick, rebase or revert stopped in this work tree."""
    git_dir = Path(repo.run_git("rev-parse", "--absolute-git-dir", cwd=cwd).stdout.decode().strip())
    head = lambda name: (git_dir / name).read_text().split()[0]
    if (git_dir / "MERGE_HEAD").exists():
        theirs = head("MERGE_HEAD")
        bases = repo.run_git("merge-base", "--all", "HEAD", theirs, cwd=cwd, check=False).stdout.split()
        if len(bases) != 1:
            raise merge.MergeError("this merge has several merge bases (or none): gitmodel cannot tell "
                                   "which tensors each side changed in the model as a whole")
        return bases[0].decode(), theirs
    for name in ("CHERRY_PICK_HEAD", "REBASE_HEAD"):
        if (git_dir / name).exists():
            return f"{head(name)}^", head(name)
    if (git_dir / "REVERT_HEAD").exists():
        return head("REVERT_HEAD"), f"{head('REVERT_HEAD')}^"
    raise merge.MergeError("no merge, cherry-pick, rebase or revert is stopped here",
                           "`gitmodel merge --resolve` finishes one that conflicted")


def _model_at(index: str, rev: str, cwd: Path) -> dict[str, Pointer]:
    """{path: pointer} of the shards of the model `index` names at a revision, in shard order."""
    folder, _, name = index.rpartition("/")
    stem, ext = os.path.splitext(name[:-len(INDEX_SUFFIX)])
    found = {}
    for path, blob, size in _folder_at(index, rev, cwd):
        if shard_key(path) == (folder, stem, ext):
            ptr = _blob_pointer(blob, size, cwd)
            if ptr is None or ptr.format != "safetensors":
                raise merge.MergeError(f"{path} at {rev} is not a tracked safetensors checkpoint: gitmodel "
                                       "merges only safetensors shards as one model")
            found[path] = ptr
    from gitmodel.review import SHARD
    number = lambda path, part: int(SHARD.fullmatch(path.rpartition("/")[2])[part])
    return {path: found[path] for path in sorted(found, key=lambda p: (number(p, "count"), number(p, "index")))}


def _placement(files: dict[str, Pointer], label: str) -> dict[str, str]:
    """{tensor name: its file} of one side of a model; a name in two shards is refused."""
    out: dict[str, str] = {}
    for file, ptr in files.items():
        for t in ptr.tensors:
            if t.name in out:
                raise merge.MergeError(f"{label} holds {t.name} in two shards, {out[t.name]} and {file}: "
                                       "a merge by name could drop a change to one of them")
            out[t.name] = file
    return out


def resolve_model(index: str, strategy: merge.Strategy, cwd: Path | None = None) -> list[tuple[str, merge.Result]]:
    """Merge a sharded safetensors model as one, its index file (`model.safetensors.index.json`,
    from the top of the work tree) naming it: the layout (which tensor in which file) of the
    side that changed it, a re-shard, with every tensor merged by name by the usual rule, so a
    tensor one side moved and the other changed is the change, where the move put it. Stages
    the shards, removes those the layout no longer has, stages the layout side's index file
    where the index does not already hold its weight_map, and writes them to the work tree.
    (file, result) for each file of the layout; nothing is staged if any conflicts. A tensor
    the other side added or changed that no file of the layout holds is refused (MergeError):
    gitmodel does not choose a file for it."""
    top = repo.toplevel(cwd)
    cwd = top
    revs = {"base": None, "ours": "HEAD", "theirs": None}
    revs["base"], revs["theirs"] = _merge_revisions(cwd)
    models = {label: _model_at(index, rev, cwd) for label, rev in revs.items()}
    if not models["ours"] or not models["theirs"]:
        raise merge.MergeError(f"{index} names no shards on {'ours' if not models['ours'] else 'theirs'} "
                               "(`model-00001-of-0000N.safetensors` ... beside it)")
    placed = {label: _placement(files, label) for label, files in models.items()}
    # A re-shard moves tensors the base has, or renames the files; added tensors are not one
    layout = {label: ({n: f for n, f in placed[label].items() if n in placed["base"]}, set(models[label]))
              for label in models}
    if layout["ours"] == layout["base"]:
        laid = "theirs"
    elif layout["theirs"] in (layout["base"], layout["ours"]):
        laid = "ours"
    elif strategy.name in ("ours", "theirs"):
        laid = strategy.name
    else:
        raise merge.MergeError(f"both sides re-sharded the model of {index}, differently: gitmodel keeps "
                               "one side's layout", "Choose it with --strategy ours or theirs (which "
                               "also settles tensors both sides changed)")
    other = "theirs" if laid == "ours" else "ours"
    session = Session(cwd)
    store, fetch = session.store, session.fetcher()
    digest = lambda label, name: next(t.digest for t in models[label][placed[label][name]].tensors if t.name == name)
    homeless = []             # what the other side has that no file of the layout holds
    for name in placed[other]:
        if name in placed[laid]:
            continue
        if name not in placed["base"]:
            homeless.append(f"  {name}: added on {other}; gitmodel does not choose a shard for it")
        elif digest(other, name) != digest("base", name) and strategy.name != laid:
            homeless.append(f"  {name}: removed on {laid}, changed on {other} (--strategy {laid} drops "
                            "the change)")
    if homeless:
        raise merge.MergeError(f"no shard of {laid}' layout of the model holds tensors that {other} "
                               "added or changed:\n" + "\n".join(homeless),
                               "Nothing was staged. Write the model by hand (each such tensor in the "
                               "shard you choose, and in the index file's weight_map), `git add` its "
                               "files and commit; or abandon the merge")

    def laid_out(label: str, names: list[str]) -> Pointer | None:
        """That side's tensors of a file of the layout, as such a file (None: it has none)."""
        present = [n for n in names if n in placed[label]]
        if not present:
            return None
        files = [models[label][f] for f in dict.fromkeys(placed[label][n] for n in present)]
        return merge.gathered(present, files, store, fetch)

    results = []
    for file, ptr in models[laid].items():
        names = [t.name for t in ptr.tensors]
        sides = {laid: ptr, other: laid_out(other, names)}
        if sides[other] is None:                 # the other side removed them all
            sides[other] = merge.gathered([], [ptr], store, fetch)
        results.append((file, merge.merge(laid_out("base", names), [sides["ours"], sides["theirs"]],
                                          ["ours", "theirs"], store, strategy, fetch)))
    if any(result.pointer is None for _, result in results):
        return results
    _stage_model(index, models, laid, revs[laid], results, cwd)
    return results


def _stage_model(index: str, models: dict, laid: str, rev: str, results: list, top: Path) -> None:
    import json
    written = []
    for file, result in results:
        blob = repo.run_git("hash-object", "-w", "--no-filters", "--stdin", cwd=top,
                            input=result.pointer.render()).stdout.decode().strip()
        repo.run_git("update-index", "--add", "--cacheinfo", f"100644,{blob},{file}", cwd=top)
        written.append(file)
    folder = index.rpartition("/")[0]
    listed = repo.run_git("--literal-pathspecs", "ls-files", "-z", "--", f"{folder}/" if folder else ".",
                          cwd=top).stdout
    key = shard_key(written[0])
    for path in dict.fromkeys(os.fsdecode(p) for p in listed.split(b"\0") if p):
        if shard_key(path) == key and path not in models[laid]:
            repo.run_git("--literal-pathspecs", "rm", "-q", "--cached", "--", path, cwd=top)
            (top / path).unlink(missing_ok=True)
    entry = repo.run_git("--literal-pathspecs", "ls-tree", rev, "--", index, cwd=top).stdout.decode().split()
    if entry:                                     # mode, type, blob, path
        def weight_map(text: bytes):
            try:
                return json.loads(text).get("weight_map")
            except (ValueError, AttributeError):
                return None
        wanted = weight_map(repo.run_git("cat-file", "blob", entry[2], cwd=top).stdout)
        staged = repo.run_git("--literal-pathspecs", "ls-files", "-s", "--", index, cwd=top).stdout.decode()
        merged = [line for line in staged.splitlines() if line.split()[2] == "0"]
        if not merged or weight_map(repo.run_git("cat-file", "blob", merged[0].split()[1], cwd=top).stdout) != wanted:
            repo.run_git("update-index", "--add", "--cacheinfo", f"{entry[0]},{entry[2]},{index}", cwd=top)
            written.append(index)
    for path in written:
        (top / path).unlink(missing_ok=True)
    repo.run_git("--literal-pathspecs", "checkout", "--", *written, cwd=top, env=repo.without_skip_smudge(),
                 capture=False)
