"""The one base of every error gitmodel reports to a person."""

from __future__ import annotations


class GitmodelError(Exception):
    """What went wrong, naming the file or remote. `hint` says what happened to the data and
    what to run next; the command line prints both, never a traceback."""

    hint = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def full(self) -> str:
        """The message and its hint, as one text."""
        text = str(self)
        return f"{text}. {self.hint}" if self.hint and not text.endswith(self.hint) else text
