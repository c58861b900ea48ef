"""`gitmodel install` / `uninstall`: git configuration for the filter and drivers, and the
pre-push hook.

Git runs gitmodel through commands recorded here. They name the Python interpreter that ran
`gitmodel install` (so a virtual environment need not be active, as pre-commit does with its
hooks), fall back to `gitmodel` on PATH, and otherwise fail saying what to do.

Install writes only keys that are unset or already hold a value gitmodel wrote; a key someone
else set is reported and left alone unless `force` is given. Uninstall removes only gitmodel's
values. Both are idempotent.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gitmodel.git import repo

# Hunk headers in `git diff` of a pointer name the section the change is in.
XFUNCNAME = r"^\[[a-z]+\]$"

GONE = ("gitmodel: cannot run gitmodel: {python} is gone and gitmodel is not on PATH. Install "
        "gitmodel again (pip install gitmodel), then run: gitmodel install")


def command(args: str, python: str | None = None) -> str:
    """A shell command running `gitmodel ARGS` with the recorded interpreter."""
    python = shlex.quote(python or sys.executable)
    gone = shlex.quote(GONE.format(python=python.strip("'")))
    # -P: the current directory (git runs filters at the top of the work tree, or in a bare
    # repository, whose store folder is named gitmodel) must not shadow the package.
    return (f"if [ -x {python} ]; then exec {python} -P -m gitmodel {args}; "
            f"elif command -v gitmodel >/dev/null 2>&1; then exec gitmodel {args}; "
            f"else echo {gone} >&2; exit 127; fi")


def settings(python: str | None = None) -> dict[str, str]:
    return {
        "filter.gitmodel.process": command("filter-process", python),
        "filter.gitmodel.clean": command("clean -- %f", python),
        "filter.gitmodel.smudge": command("smudge -- %f", python),
        "filter.gitmodel.required": "true",
        "diff.gitmodel.xfuncname": XFUNCNAME,
        "merge.gitmodel.name": "gitmodel checkpoint merge",
        "merge.gitmodel.driver": command("merge-driver %O %A %B %L -- %P", python),  # %P may start with -
        # A merge with several merge bases first merges the bases into a virtual one, with
        # this driver unless told otherwise; a conflict there leaves ours, which the real
        # merge would then take for the base, taking theirs silently. Git's binary driver
        # makes the virtual base the bases' own ancestor instead.
        "merge.gitmodel.recursive": "binary",
    }


SETTINGS = settings()

# Values gitmodel wrote with another interpreter, or before interpreters were recorded.
_OURS = re.compile(r"^(if \[ -x \S+ \]; then exec \S+ (-P )?-m gitmodel .*|gitmodel [a-z-]+( .*)?)$")


def _ours(key: str, value: str) -> bool:
    return value == SETTINGS[key] or bool(_OURS.match(value))


@dataclass
class Report:
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)       # set by someone else, left alone
    by_hand: list[str] = field(default_factory=list)    # what only the user can do


def install(scope: str = "local", force: bool = False, cwd: Path | None = None) -> Report:
    report = Report()
    for key, value in SETTINGS.items():
        current = repo.config_get(key, scope, cwd)
        if current == value:
            continue
        if current is not None and not force and not _ours(key, current):
            report.kept.append(f"{key} = {current}")
            continue
        repo.config_edit("--replace-all", key, value, scope=scope, cwd=cwd)
        report.changed.append(key)
    return report


def uninstall(scope: str = "local", cwd: Path | None = None) -> Report:
    report = Report()
    for key in SETTINGS:
        current = repo.config_get(key, scope, cwd)
        if current is None:
            continue
        if not _ours(key, current):
            report.kept.append(f"{key} = {current}")
            continue
        repo.config_edit("--unset-all", key, scope=scope, cwd=cwd)
        report.changed.append(key)
    for section in ("filter.gitmodel", "diff.gitmodel", "merge.gitmodel"):
        if not repo.config_entries("^" + section.replace(".", r"\.") + r"\.", f"--{scope}", cwd=cwd):
            repo.config_edit("--remove-section", section, scope=scope, cwd=cwd, check=False)
    return report


def installed(cwd: Path | None = None) -> bool:
    """Whether git would run gitmodel's filter here (from any configuration scope)."""
    return repo.config_get("filter.gitmodel.process", cwd=cwd) is not None


# ----------------------------------------------------------------------------- hooks

HOOK = "pre-push"
HOOK_MARK = "gitmodel pre-push hook"
CHAINED_SUFFIX = ".before-gitmodel"


def hook_source(python: str | None = None) -> str:
    from importlib import resources
    template = (resources.files("gitmodel.git") / "hooks" / HOOK).read_text()
    return template.replace("INSTALL_PYTHON=python3", f"INSTALL_PYTHON={shlex.quote(python or sys.executable)}")


def _is_ours(path: Path) -> bool:
    try:
        return HOOK_MARK in path.read_text(errors="replace")
    except OSError:
        return False


def install_hook(report: Report, cwd: Path | None = None) -> None:
    """Write the pre-push hook. One that is already there (not ours) is kept and chained:
    renamed to pre-push.before-gitmodel, which our hook runs first. With core.hooksPath set
    (hooks shared by many repositories, often managed by a tool) nothing is written: the
    report says to call gitmodel from that hook."""
    shared = repo.config_get("core.hooksPath", cwd=cwd)
    if shared:
        try:
            text = (repo.locations(cwd)[1] / HOOK).read_text(errors="replace")
        except OSError:
            text = ""
        if HOOK_MARK not in text and "gitmodel pre-push" not in text:
            report.by_hand.append(f"core.hooksPath is {shared}: add `gitmodel pre-push \"$@\"` "
                                  "(reading the same standard input) to its pre-push hook, or "
                                  "pushes will not upload checkpoints")
        return
    directory = repo.locations(cwd)[1]
    path, chained = directory / HOOK, directory / (HOOK + CHAINED_SUFFIX)
    source = hook_source()
    if path.exists() and path.read_text(errors="replace") == source:
        return
    if path.exists() and not _is_ours(path):
        # Chained by a link, which fails if the name is taken, then replaced: two filters
        # doing this at once never move one's hook over the other's.
        try:
            os.link(path, chained)
        except FileExistsError:
            if not chained.samefile(path):      # else another process is chaining it now
                report.kept.append(f"hook {path}")
            return
        report.changed.append(f"hook {path} (the existing one now runs from {chained.name})")
    else:
        report.changed.append(f"hook {path}")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{HOOK}.gitmodel-tmp-{os.getpid()}")
    tmp.write_text(source)
    tmp.chmod(0o755)
    tmp.replace(path)


def ensure_hook(common: Path, hooks: Path, cwd: Path | None = None) -> str | None:
    """Give a repository made with only a global install (a `git init`, a clone) the hook:
    called by the filter, so every repository it works in pushes its checkpoints. A pre-push
    hook of the repository's own that does not call gitmodel (a tool's, git-lfs's) is chained
    as `gitmodel install` chains it. Returns what to tell the user: that, or a warning when
    pushes cannot be covered (a shared hooks folder whose pre-push hook does not call
    gitmodel)."""
    try:
        hook = hooks / HOOK
        text = hook.read_text(errors="replace") if hook.exists() else ""
        calls = HOOK_MARK in text or "gitmodel pre-push" in text
        if hooks == common / "hooks":
            if not calls:
                report = Report()
                install_hook(report, cwd)
                if report.by_hand:
                    return f"warning: {report.by_hand[0]}"
                if report.kept:
                    return (f"warning: {hook} does not call gitmodel and {HOOK}{CHAINED_SUFFIX} "
                            "is taken: `git push` will not upload checkpoints. Add `gitmodel "
                            "pre-push \"$@\"` (with the same standard input) to it")
                if text and report.changed:
                    return (f"installed gitmodel's pre-push hook in {hooks}; the one that was "
                            f"there runs first, from {HOOK}{CHAINED_SUFFIX}")
            return None
        if not calls:
            return (f"warning: git runs hooks from {hooks} (core.hooksPath), whose pre-push hook "
                    "does not call gitmodel: `git push` will not upload checkpoints. Add "
                    "`gitmodel pre-push \"$@\"` (with the same standard input) to it, or run "
                    "`gitmodel push` after each push")
    except OSError:
        pass
    return None


def uninstall_hook(report: Report, cwd: Path | None = None) -> None:
    directory = repo.locations(cwd)[1]
    path, chained = directory / HOOK, directory / (HOOK + CHAINED_SUFFIX)
    if not path.exists():
        return
    if not _is_ours(path):
        report.kept.append(f"hook {path}")
        return
    path.unlink()
    report.changed.append(f"hook {path}")
    if chained.exists():
        chained.rename(path)
        report.changed.append(f"hook {path} (restored from {chained.name})")
