"""`gitmodel filter-process`: git's long-running filter protocol, version 2.

One process serves a whole git command. Git sends `command=clean|smudge` with `pathname=` and
the content; we answer `status=success` with the result, or `status=error` (git, with
`filter.gitmodel.required=true`, then fails the command instead of committing raw bytes or
leaving a pointer in the work tree). The `delay` capability is not advertised yet; requests
are dispatched by command name so `list_available_blobs` can join them.
"""

from __future__ import annotations

import sys
import tempfile
from typing import BinaryIO, Callable

from gitmodel import checkpoint, pointer as pointers
from gitmodel.git.pktline import ContentReader, PacketReader, PacketWriter, ProtocolError, widen_pipe
from gitmodel.store.objects import CorruptObject, MissingObjects, Store, StoreError

CAPABILITIES = ("clean", "smudge")


class FilterError(Exception):
    """A failure to report for one file; the process goes on serving others."""


def warn(message: str) -> None:
    sys.stderr.write(f"gitmodel: {message}\n")
    sys.stderr.flush()


class FilterServer:
    def __init__(self, stdin: BinaryIO, stdout: BinaryIO, open_store: Callable[[], Store]):
        self._in = PacketReader(stdin)
        self._out = PacketWriter(stdout)
        self._open_store = open_store
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def serve(self) -> None:
        self._handshake()
        handlers = {"clean": self._clean, "smudge": self._smudge}
        while True:
            try:
                headers = dict(item.partition("=")[::2] for item in self._in.text_list())
            except EOFError:
                return
            content = ContentReader(self._in)
            handler = handlers.get(headers.get("command", ""))
            if handler is None:
                content.drain()
                self._out.text("status=error")
                self._out.flush()
                continue
            handler(headers.get("pathname", "?"), content)

    def _handshake(self) -> None:
        if self._in.text_list() != ["git-filter-client", "version=2"]:
            raise ProtocolError("expected a version 2 git-filter-client handshake")
        self._out.text("git-filter-server", "version=2")
        self._out.flush()
        offered = {item.removeprefix("capability=") for item in self._in.text_list()}
        self._out.text(*(f"capability={c}" for c in CAPABILITIES if c in offered))
        self._out.flush()

    def _fail(self, path: str, message: str) -> None:
        warn(f"error: {path}: {message}")
        self._out.text("status=error")
        self._out.flush()

    def _clean(self, path: str, content: ContentReader) -> None:
        try:
            result = checkpoint.clean(content, self.store)
        except (StoreError, OSError, ValueError) as err:
            content.drain()
            return self._fail(path, f"could not store the file: {err}")
        content.drain()
        self._out.text("status=success")
        self._out.flush()
        self._out.content(result)
        self._out.flush()
        self._out.flush()       # empty trailing status list: success stands

    def _smudge(self, path: str, content: ContentReader) -> None:
        data = content.read(pointers.MAX_POINTER_SIZE + 1)
        if len(data) > pointers.MAX_POINTER_SIZE or not pointers.is_pointer_prefix(data):
            return self._pass_through(path, data, content)
        try:
            ptr = pointers.parse(data)
            restore = checkpoint.Restore(ptr, self.store)
        except pointers.PointerError as err:
            return self._fail(path, f"damaged pointer ({err})")
        except MissingObjects as err:
            return self._fail(path, missing_message(err, self.store))
        except (CorruptObject, StoreError, OSError) as err:
            return self._fail(path, f"{err}. {REPAIR_HINT}")
        self._out.text("status=success")
        self._out.flush()
        try:
            restore.write_to(self._out.content)
        except (CorruptObject, StoreError, OSError) as err:
            # Git discards what it got so far when the final status is an error.
            warn(f"error: {path}: {err}. {REPAIR_HINT}")
            self._out.flush()
            self._out.text("status=error")
            self._out.flush()
            return
        self._out.flush()
        self._out.flush()

    def _pass_through(self, path: str, head: bytes, content: ContentReader) -> None:
        """Content that is not a pointer goes back unchanged. It must all be read before the
        answer starts, so what does not fit in memory is spooled to a temporary file."""
        if head:
            warn(f"warning: {path} is not a gitmodel pointer; leaving it as it is")
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            spool.write(head)
            while block := content.read(1 << 20):
                spool.write(block)
            spool.seek(0)
            self._out.text("status=success")
            self._out.flush()
            while block := spool.read(1 << 20):
                self._out.content(block)
        self._out.flush()
        self._out.flush()


REPAIR_HINT = ("Nothing was written for this file. Run `gitmodel fsck` to list damaged objects, "
               "then add the checkpoint again from a good copy")


def missing_message(err: MissingObjects, store: Store) -> str:
    return (f"{len(err.oids)} object(s) of this checkpoint are missing from the local store "
            f"{store.root} (first: {err.oids[0].hex()}). Nothing was written for this file. "
            "Add it again from a good copy, or copy the store from a machine that has it; "
            "`gitmodel fsck` checks the store")


def serve(open_store: Callable[[], Store]) -> None:
    widen_pipe(sys.stdin.buffer)
    widen_pipe(sys.stdout.buffer)
    FilterServer(sys.stdin.buffer, sys.stdout.buffer, open_store).serve()
