"""`gitmodel filter-process`: git's long-running filter protocol, version 2.

One process serves a whole git command. Git sends `command=clean|smudge` with `pathname=` and
the content; we answer `status=success` with the result, or `status=error` (git, with
`filter.gitmodel.required=true`, then fails the command instead of committing raw bytes or
leaving a pointer in the work tree).

Smudge of a checkpoint whose objects are not in the local store fetches them from the remote.
When git allows it (`can-delay=1`, as in checkout, clone and reset) the file is answered
`status=delayed`; when git then asks `list_available_blobs`, everything delayed is fetched in
one batch and git asks for each file again, with empty content. GITMODEL_SKIP_SMUDGE=1 leaves
pointers in the work tree (`gitmodel pull` restores them later).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import BinaryIO, Callable

from gitmodel import checkpoint, pointer as pointers
from gitmodel.git.pktline import ContentReader, PacketReader, PacketWriter, ProtocolError, widen_pipe
from gitmodel.store.objects import CorruptObject, MissingObjects, Store, StoreError

CAPABILITIES = ("clean", "smudge", "delay")


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
        self._remote = None                              # RemoteIndex, opened on first need
        self._delayed: dict[str, pointers.Pointer] = {}  # path -> pointer awaiting the batch
        self._failed: dict[str, str] = {}                # path -> why its fetch failed
        self._hook_checked = False

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
            command = headers.get("command", "")
            if command == "list_available_blobs":     # the only command without content
                self._list_available_blobs()
                continue
            content = ContentReader(self._in)
            handler = handlers.get(command)
            if handler is None:
                content.drain()
                self._out.text("status=error")
                self._out.flush()
                continue
            handler(headers.get("pathname", "?"), content, headers)

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

    def _clean(self, path: str, content: ContentReader, headers: dict) -> None:
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

    def _smudge(self, path: str, content: ContentReader, headers: dict) -> None:
        if not self._hook_checked:
            # A clone made with `gitmodel install --global` gets its pre-push hook here, so
            # its pushes upload checkpoints too (checked once, on the first smudge only).
            self._hook_checked = True
            from gitmodel.git import setup
            setup.ensure_hook()
        data = content.read(pointers.MAX_POINTER_SIZE + 1)
        if not data and path in self._delayed:          # git asking again after the batch
            return self._restore(path, self._delayed.pop(path))
        if len(data) > pointers.MAX_POINTER_SIZE or not pointers.is_pointer_prefix(data):
            return self._pass_through(path, data, content)
        try:
            ptr = pointers.parse(data)
        except pointers.PointerError as err:
            return self._fail(path, f"damaged pointer ({err})")
        if os.environ.get("GITMODEL_SKIP_SMUDGE", "") not in ("", "0"):
            return self._pass_through(path, data, content, quiet=True)
        try:
            restore = checkpoint.Restore(ptr, self.store)
        except MissingObjects as err:
            if self._remote_or_none() is None:
                return self._fail(path, missing_message(err, self.store))
            if headers.get("can-delay") == "1":
                self._delayed[path] = ptr
                self._out.text("status=delayed")
                self._out.flush()
                return
            self._fetch({ptr.content: path}, [path])
            return self._restore(path, ptr)
        except (CorruptObject, StoreError, OSError) as err:
            return self._fail(path, f"{err}. {REPAIR_HINT}")
        self._emit(path, restore)

    def _restore(self, path: str, ptr: pointers.Pointer) -> None:
        """Restore after a fetch: the fetch's error, if it had one, is this file's."""
        if path in self._failed:
            return self._fail(path, self._failed.pop(path))
        try:
            restore = checkpoint.Restore(ptr, self.store)
        except MissingObjects as err:
            return self._fail(path, missing_message(err, self.store, self._remote))
        except (CorruptObject, StoreError, OSError) as err:
            return self._fail(path, f"{err}. {REPAIR_HINT}")
        self._emit(path, restore)

    def _emit(self, path: str, restore: checkpoint.Restore) -> None:
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

    def _list_available_blobs(self) -> None:
        """Fetch every delayed file's objects in one batch, then name them all: git asks for
        each again and gets its bytes, or the error its fetch ran into."""
        ready = list(self._delayed)
        if ready:
            self._fetch({ptr.content: path for path, ptr in self._delayed.items()}, ready)
        self._out.text(*(f"pathname={path}" for path in ready))
        self._out.flush()
        self._out.text("status=success")
        self._out.flush()

    def _remote_or_none(self):
        if self._remote is None:
            from gitmodel.git import remotes, sync
            try:
                spec = remotes.resolve(None)
                self._remote = sync.connect(spec, self.store) if spec is not None else False
            except Exception as err:              # bad configuration: say so, per file
                warn(f"error: cannot open the gitmodel remote: {err}")
                self._remote = False
        return self._remote or None

    def _fetch(self, wanted: dict[str, str], paths: list[str]) -> None:
        """Fetch objects for {content id: path}; a failure is kept for each path, to be
        reported when git asks for it."""
        from gitmodel.git import sync
        from gitmodel.remote.storage import RemoteError
        try:
            sync.fetch(self.store, self._remote, wanted)
        except (RemoteError, StoreError, OSError, ValueError) as err:
            for path in paths:
                self._failed[path] = f"could not fetch it: {err}. Nothing was written for this file"

    def _pass_through(self, path: str, head: bytes, content: ContentReader, quiet: bool = False) -> None:
        """Content that is not a pointer goes back unchanged. It must all be read before the
        answer starts, so what does not fit in memory is spooled to a temporary file."""
        if head and not quiet:
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


def missing_message(err: MissingObjects, store: Store, remote=None) -> str:
    where = (f"and remote {remote.remote} lacks them too" if remote else
             "and no gitmodel remote is configured (`gitmodel remote add`)")
    return (f"{len(err.oids)} object(s) of this checkpoint are missing from the local store "
            f"{store.root} (first: {err.oids[0].hex()}) {where}. Nothing was written for this "
            "file. Add it again from a good copy, or fetch it from a remote that has it; "
            "`gitmodel fsck` checks the store")


def serve(open_store: Callable[[], Store]) -> None:
    widen_pipe(sys.stdin.buffer)
    widen_pipe(sys.stdout.buffer)
    FilterServer(sys.stdin.buffer, sys.stdout.buffer, open_store).serve()
