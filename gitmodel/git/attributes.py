"""`gitmodel track`: the .gitattributes lines that route files through gitmodel."""

from __future__ import annotations

import posixpath
from pathlib import Path

from gitmodel.errors import GitmodelError

ATTRIBUTES = "filter=gitmodel diff=gitmodel merge=gitmodel -text"
DEFAULT_PATTERNS = ("*.safetensors", "*.pt", "*.pth", "*.bin", "*.ckpt", "*.npy", "*.npz",
                    "*.gguf", "*.onnx", "*.h5", "*.keras")


class PatternError(GitmodelError, ValueError):
    pass


def from_directory(pattern: str, prefix: str) -> str:
    """A pattern given in the directory `prefix` (relative to the top, "" at the top), as a
    line of the top-level .gitattributes must say it to match the same files: `./` and a
    leading `/` anchor it here, a pattern with a slash is relative to here, and one without
    (`*.pt`) matches at any depth below here, as it would in a .gitattributes of this
    directory."""
    here = pattern.startswith(("./", "/", "../"))
    rest = pattern
    while rest.startswith("./"):
        rest = rest[2:]
    rest = rest.lstrip("/")
    if not here and "/" not in rest.rstrip("/"):
        return f"{prefix}/**/{rest}" if prefix else rest
    joined = posixpath.normpath(posixpath.join(prefix, rest)) + ("/" if rest.endswith("/") else "")
    if joined.startswith("../") or joined in ("..", "."):
        raise PatternError(f"cannot track {pattern!r}: it is outside the repository")
    return joined if "/" in joined.rstrip("/") else "/" + joined


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def tracked(path: Path) -> list[str]:
    """Patterns whose attributes send them through the gitmodel filter."""
    patterns = []
    for line in _lines(path):
        fields = line.split()
        if fields and not fields[0].startswith("#") and "filter=gitmodel" in fields[1:]:
            patterns.append(fields[0])
    return patterns


def track(path: Path, patterns: list[str]) -> list[str]:
    """Append a line for each pattern not tracked yet; returns the patterns added."""
    for pattern in patterns:
        if not pattern or any(c.isspace() for c in pattern) or pattern.startswith(("#", "!")):
            raise PatternError(f"cannot track {pattern!r}: patterns may not hold whitespace "
                               "or start with '#' or '!'")
    have = set(tracked(path))
    added = [p for p in dict.fromkeys(patterns) if p not in have]
    if added:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        text += "".join(f"{p} {ATTRIBUTES}\n" for p in added)
        path.write_text(text, encoding="utf-8")
    return added


def untrack(path: Path, patterns: list[str]) -> list[str]:
    """Remove the gitmodel lines for these patterns; returns the patterns removed."""
    wanted, removed, kept = set(patterns), [], []
    for line in _lines(path):
        fields = line.split()
        if fields and fields[0] in wanted and "filter=gitmodel" in fields[1:]:
            removed.append(fields[0])
        else:
            kept.append(line)
    if removed:
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return removed
