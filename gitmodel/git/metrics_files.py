"""The numbers of a review that live in git: the `[review]` settings and the metrics and
params files they name, read at a revision, in the index or in the work tree.

    [review]
        metrics-file = results/metrics.json   # every number in it is a metric (repeatable)
        params-file = params.yaml             # every number in it is a parameter (repeatable)
        metric = *_score                      # keys that are metrics whatever their name (glob)
        param = eval_steps                    # keys that are parameters (glob)

Paths are relative to the top of the work tree (never outside it, nor through a symbolic
link there). A file absent on a side has no numbers there;
one that does not parse is named on stderr and counts as absent, so a review still runs.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pygit2

from gitmodel import metrics
from gitmodel.git import remotes
from gitmodel.git.repo import blob_data, commit as find_commit
from gitmodel.git.revisions import INDEX, index_entry   # a side: a revision, INDEX, or None (work tree)
from gitmodel.metrics import METRIC, PARAM, NumberDiff, Rules
from gitmodel.quoting import quote_path


@dataclass(frozen=True)
class Settings:
    rules: Rules
    files: tuple[tuple[str, str], ...]      # (path, METRIC or PARAM)


def settings(cwd: Path | None = None) -> Settings:
    metric, param, files = [], [], []
    for key, value in remotes.settings("review", cwd):
        name = key.split(".", 1)[1]
        if name == "metric":
            metric.append(value)
        elif name == "param":
            param.append(value)
        elif name in ("metrics-file", "params-file"):
            files.append((value.strip().lstrip("/"), METRIC if name == "metrics-file" else PARAM))
    return Settings(Rules(tuple(metric), tuple(param)), tuple(dict.fromkeys(files)))


def _bytes_at(repository: pygit2.Repository, side, path: str) -> bytes | None:
    try:
        if side is None:
            return _work_tree_bytes(Path(repository.workdir), path)
        if side == INDEX:
            entry = index_entry(repository, path)
            return blob_data(repository, entry.id) if entry is not None else None
        found = find_commit(repository, side) if isinstance(side, str) else side
        return blob_data(repository, found.tree[path].id) if found is not None else None
    except (KeyError, OSError):
        return None


def _work_tree_bytes(top: Path, path: str) -> bytes | None:
    """The file at `path` in the work tree, read only if it is there as git would commit it:
    inside the work tree and reached through no symbolic link. The path comes from a
    committed `.gitmodel`, and a review is posted where others read it (a pull request), so
    it must not become a way to read, say, ~/.aws from the reviewer's machine."""
    parts = PurePosixPath(path).parts
    if not parts or ".." in parts:
        return _refused(path, "goes outside the work tree")
    here = top
    for part in parts:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(mode):
            return _refused(path, "is reached through a symbolic link")
    if not stat.S_ISREG(mode):
        return None
    fd = os.open(here, os.O_RDONLY | os.O_NOFOLLOW)
    with open(fd, "rb") as file:
        return file.read()


def _refused(path: str, why: str) -> None:
    print(f"gitmodel: the review file {quote_path(path)} {why}; its numbers are left out "
          f"(name a file in the work tree in .gitmodel's [review] section)", file=sys.stderr)
    return None


def numbers_at(repository: pygit2.Repository, side, path: str) -> dict[str, float]:
    """The numbers of one metrics or params file on one side (a revision or commit, INDEX,
    or None for the work tree); {} when it is absent or does not parse."""
    data = _bytes_at(repository, side, path)
    if data is None:
        return {}
    try:
        return metrics.from_document(data, path)
    except metrics.MetricsFileError as err:
        where = "the work tree" if side is None else ("the index" if side == INDEX else str(side)[:10])
        print(f"gitmodel: {err} (in {where}); its numbers are left out. {err.hint}", file=sys.stderr)
        return {}


def compare(repository: pygit2.Repository, old_side, new_side, chosen: Settings) -> list[NumberDiff]:
    """The numbers of every named file, old side against new."""
    rows: list[NumberDiff] = []
    for path, kind in chosen.files:
        rows += metrics.compare(numbers_at(repository, old_side, path),
                                numbers_at(repository, new_side, path), path, chosen.rules, kind)
    return sorted(rows, key=lambda r: r.kind != METRIC)


def of_version(repository: pygit2.Repository, commit, ptr, chosen: Settings) -> dict[str, tuple[float, str]]:
    """{key: (value, kind)} of one version in `gitmodel log`: the checkpoint's numbers, then
    those of the named files at the same commit (a key both have is shown as `file:key`)."""
    out = {key: (value, chosen.rules.kind(key)) for key, value in metrics.from_pointer(ptr).items()}
    for path, kind in chosen.files:
        for key, value in numbers_at(repository, commit, path).items():
            out[key if key not in out else f"{path}:{key}"] = (value, kind)
    return dict(sorted(out.items(), key=lambda item: item[1][1] != METRIC))
