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
