"""Paths as gitmodel prints them: the way git prints a path (core.quotePath), so that a path
holding a terminal escape or a newline cannot drive the terminal or forge a line."""

from __future__ import annotations

_LETTERS = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f",
            "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def quote_path(path: str) -> str:
    """`path` as git's C-style quoting shows it: as it is, or, when it holds a control
    character, `"` or `\\`, in double quotes with `\\n`, `\\t`, `\\"`, `\\\\` ... and other
    bytes as three-digit octal escapes (`\\033` for ESC), as `git status` and `git diff` do.

    The rule chosen for bytes past ASCII: git's default (core.quotePath true) escapes every
    one, so `modèle.pt` reads `"mod\\303\\250le.pt"`; here printable UTF-8 stays readable
    (as with core.quotePath false), since those characters cannot drive a terminal, while
    what can still mislead is escaped: characters Python's `str.isprintable()` refuses (C1
    controls such as U+009B, a CSI to some terminals; bidirectional overrides; line and
    paragraph separators; spaces other than U+0020) and bytes that are not UTF-8 (the
    surrogate escapes of `os.fsdecode`), each by the octal of its bytes."""
    if path.isprintable() and '"' not in path and "\\" not in path:
        return path
    out = []
    for c in path:
        if c in _LETTERS:
            out.append(_LETTERS[c])
        elif "\udc80" <= c <= "\udcff":                    # a byte that is not UTF-8
            out.append(f"\\{ord(c) - 0xdc00:03o}")
        elif c.isprintable():
            out.append(c)
        else:
            out.append("".join(f"\\{b:03o}" for b in c.encode("utf-8", "surrogatepass")))
    return '"' + "".join(out) + '"'
