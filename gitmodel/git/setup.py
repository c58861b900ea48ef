"""`gitmodel install` / `uninstall`: git configuration for the filter and drivers.

Install writes only keys that are unset or already hold gitmodel's value; a key someone else
set is reported and left alone unless `force` is given. Uninstall removes only keys that still
hold gitmodel's value. Both are idempotent.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

# Hunk headers in `git diff` of a pointer name the section the change is in.
XFUNCNAME = r"^\[[a-z]+\]$"

SETTINGS: dict[str, str] = {
    "filter.gitmodel.process": "gitmodel filter-process",
    "filter.gitmodel.clean": "gitmodel clean -- %f",
    "filter.gitmodel.smudge": "gitmodel smudge -- %f",
    "filter.gitmodel.required": "true",
    "diff.gitmodel.xfuncname": XFUNCNAME,
    "merge.gitmodel.name": "gitmodel checkpoint merge",
    "merge.gitmodel.driver": "gitmodel merge-driver %O %A %B %P",
}


@dataclass
class Report:
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)       # set by someone else, left alone


def _config(scope: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "config", f"--{scope}", *args], capture_output=True,
                          text=True, check=check)


def _get(scope: str, key: str) -> str | None:
    result = _config(scope, "--get", key, check=False)
    return result.stdout.rstrip("\n") if result.returncode == 0 else None


def install(scope: str = "local", force: bool = False) -> Report:
    report = Report()
    for key, value in SETTINGS.items():
        current = _get(scope, key)
        if current == value:
            continue
        if current is not None and not force:
            report.kept.append(f"{key} = {current}")
            continue
        _config(scope, "--replace-all", key, value)
        report.changed.append(key)
    return report


def uninstall(scope: str = "local") -> Report:
    report = Report()
    for key, value in SETTINGS.items():
        current = _get(scope, key)
        if current is None:
            continue
        if current != value:
            report.kept.append(f"{key} = {current}")
            continue
        _config(scope, "--unset-all", key)
        report.changed.append(key)
    for section in ("filter.gitmodel", "diff.gitmodel", "merge.gitmodel"):
        if _config(scope, "--get-regexp", "^" + section.replace(".", r"\.") + r"\.",
                   check=False).returncode != 0:
            _config(scope, "--remove-section", section, check=False)
    return report


# ----------------------------------------------------------------------------- hooks

HOOK = "pre-push"
HOOK_MARK = "gitmodel pre-push hook"
CHAINED_SUFFIX = ".before-gitmodel"


def hook_source() -> str:
    from importlib import resources
    return (resources.files("gitmodel.git") / "hooks" / HOOK).read_text()


def hooks_dir(cwd=None):
    from pathlib import Path
    out = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-path", "hooks"],
                         cwd=cwd, capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _is_ours(path) -> bool:
    try:
        return HOOK_MARK in path.read_text(errors="replace")
    except OSError:
        return False


def _shared_hooks(cwd=None) -> str | None:
    """core.hooksPath, when set: a hooks folder that may serve many repositories."""
    out = subprocess.run(["git", "config", "--get", "core.hooksPath"], cwd=cwd,
                         capture_output=True, text=True)
    return out.stdout.strip() or None if out.returncode == 0 else None


def install_hook(report: Report, cwd=None, chain: bool = True) -> None:
    """Write the pre-push hook. One that is already there (not ours) is kept and chained:
    renamed to pre-push.before-gitmodel, which our hook runs first. With core.hooksPath set
    (hooks shared by many repositories, often managed by a tool) nothing is written: the
    report says to call `gitmodel pre-push "$@"` from that hook."""
    shared = _shared_hooks(cwd)
    if shared:
        report.kept.append(f"core.hooksPath is {shared}: add `gitmodel pre-push \"$@\"` "
                           "(reading the same standard input) to its pre-push hook")
        return
    directory = hooks_dir(cwd)
    path, chained = directory / HOOK, directory / (HOOK + CHAINED_SUFFIX)
    source = hook_source()
    if path.exists() and path.read_text(errors="replace") == source:
        return
    if path.exists() and not _is_ours(path):
        if not chain or chained.exists():
            report.kept.append(f"hook {path}")
            return
        path.rename(chained)
        report.changed.append(f"hook {path} (the existing one now runs from {chained.name})")
    else:
        report.changed.append(f"hook {path}")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{HOOK}.gitmodel-tmp")
    tmp.write_text(source)
    tmp.chmod(0o755)
    tmp.replace(path)


def ensure_hook(cwd=None) -> None:
    """Install the hook if the repository has none (a clone made with a global install). One
    `git rev-parse`; nothing is written when hooks live outside the repository (core.hooksPath)."""
    from pathlib import Path
    try:
        out = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir",
                              "--git-path", "hooks"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.splitlines()
        common, hooks = Path(out[0]), Path(out[1])
        if hooks == common / "hooks" and not (hooks / HOOK).exists():
            install_hook(Report(), cwd, chain=False)
    except (OSError, IndexError, subprocess.CalledProcessError):
        pass


def uninstall_hook(report: Report, cwd=None) -> None:
    directory = hooks_dir(cwd)
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
