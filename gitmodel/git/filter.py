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
from typing import BinaryIO

from gitmodel import checkpoint, pointer as pointers
from gitmodel.errors import GitmodelError
from gitmodel.git.pktline import ContentReader, PacketReader, PacketWriter, ProtocolError, widen_pipe
from gitmodel.git.session import Session
from gitmodel.store.objects import MissingObjects, Store, StoreError
from gitmodel.quoting import quote_path

CAPABILITIES = ("clean", "smudge", "delay")
NO_STORE = "GITMODEL_NO_STORE"
NOTHING_WRITTEN = "Nothing was written for this file"
RETRY = ("Once that is fixed, `git checkout -- PATH` writes it (after a clone or checkout that "
         "stopped here: `git reset --hard`, which puts the committed `.gitmodel` back first: a "
         "remote's URL is set for it with `gitmodel remote add NAME URL --local`); meanwhile `GITMODEL_SKIP_SMUDGE=1` before a git "
         "command (a `git merge --abort`, say) leaves pointers in the work tree instead")


def warn(message: str) -> None:
    sys.stderr.write(f"gitmodel: {message}\n")
    sys.stderr.flush()


def _after_failed_clean() -> str:
    """What git does with a file the clean failed on: refuses it, unless told the filter is
    optional, when it stores the file's own bytes."""
    from gitmodel.git import repo
    try:
        required = repo.config_bool("filter.gitmodel.required", True)
    except GitmodelError:
        required = True
    if required:
        return "Nothing was committed; git keeps the file as it is in the work tree"
    return ("filter.gitmodel.required is false, so git stores the file's own bytes instead: "
            "the raw file would be committed. Set it back with `gitmodel install` and `git add` "
            "the file again once the cause is fixed")


class FilterServer:
    def __init__(self, stdin: BinaryIO, stdout: BinaryIO, session: Session):
        self._in = PacketReader(stdin)
        self._out = PacketWriter(stdout)
        self._session = session
        self._view = None                                # the remote, opened on first need
        self._delayed: dict[str, pointers.Pointer] = {}  # path -> pointer awaiting the batch
        self._failed: dict[str, str] = {}                # path -> why its fetch failed
        # What a write finds damaged here mid-file is fetched from the remote (opened then).
        self._fetch_objects = session.fetcher()
        # Set by read-only commands that run git (gitmodel diff): compute pointers, store nothing.
        self._no_store = os.environ.get(NO_STORE, "") not in ("", "0")

    @property
    def store(self) -> Store:
        return self._session.store

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
            if command in ("clean", "smudge"):
                self._check_hook()
            handler(headers.get("pathname", "?"), content, headers)

    def _handshake(self) -> None:
        if self._in.text_list() != ["git-filter-client", "version=2"]:
            raise ProtocolError("expected a version 2 git-filter-client handshake")
        self._out.text("git-filter-server", "version=2")
        self._out.flush()
        offered = {item.removeprefix("capability=") for item in self._in.text_list()}
        self._out.text(*(f"capability={c}" for c in CAPABILITIES if c in offered))
        self._out.flush()

    def _check_hook(self) -> None:
        """Every repository the filter works in gets its pre-push hook (checked once)."""
        try:
            warning = self._session.ensure_hook()
        except GitmodelError:
            return
        if warning:
            warn(warning)

    def _fail(self, path: str, message: str) -> None:
        warn(f"error: {quote_path(path)}: {message}")
        self._out.text("status=error")
        self._out.flush()

    def _clean(self, path: str, content: ContentReader, headers: dict) -> None:
        try:
            result = checkpoint.clean(content, self.store, write=not self._no_store,
                                      notice=lambda what: warn(f"warning: {quote_path(path)}: {what}"))
        except checkpoint.ConflictedPointers as err:
            content.drain()
            return self._fail(path, f"{err.full()}. Nothing was stored")
        except (GitmodelError, OSError, ValueError, MemoryError) as err:
            content.drain()
            detail = err.full() if isinstance(err, GitmodelError) else f"{err}"
            if isinstance(err, MemoryError):      # a pointer must not depend on the memory left
                detail = "out of memory"
            return self._fail(path, f"could not store the file: {detail}. {_after_failed_clean()}")
        content.drain()
        self._out.text("status=success")
        self._out.flush()
        self._out.content(result)
        self._out.flush()
        self._out.flush()       # empty trailing status list: success stands

    def _smudge(self, path: str, content: ContentReader, headers: dict) -> None:
        data = content.read(pointers.MAX_POINTER_SIZE + 1)
        if not data and path in self._delayed:          # git asking again after the batch
            return self._restore(path, self._delayed.pop(path), headers)
        if os.environ.get("GITMODEL_SKIP_SMUDGE", "") not in ("", "0"):
            return self._pass_through(path, data, content, quiet=True)
        try:
            ptr = pointers.sniff(pointers.without_crlf(data))
        except pointers.PointerError as err:
            return self._fail(path, damaged_pointer(err))
        if ptr is None:
            return self._pass_through(path, data, content)
        try:
            restore = checkpoint.Restore(ptr, self.store)
        except MissingObjects as err:
            try:
                view = self._remote()
            except GitmodelError as config_error:
                return self._fail(path, missing_message(err, self.store, unopened=config_error))
            if view is None:
                return self._fail(path, missing_message(err, self.store))
            if headers.get("can-delay") == "1":
                self._delayed[path] = ptr
                self._out.text("status=delayed")
                self._out.flush()
                return
            self._fetch({path: ptr})
            return self._restore(path, ptr, headers)
        except (StoreError, OSError) as err:
            return self._fail(path, _describe(err))
        self._emit(path, restore, headers)

    def _restore(self, path: str, ptr: pointers.Pointer, headers: dict) -> None:
        """Restore after a fetch: the fetch's error for this file, if it had one, is its."""
        if path in self._failed:
            return self._fail(path, self._failed.pop(path))
        try:
            restore = checkpoint.Restore(ptr, self.store)
        except MissingObjects as err:
            return self._fail(path, missing_message(err, self.store, self._view))
        except (StoreError, OSError) as err:
            return self._fail(path, _describe(err))
        self._emit(path, restore, headers)

    def _emit(self, path: str, restore: checkpoint.Restore, headers: dict) -> None:
        # A checkout names the blob it writes: a pointer git holds, made by a clean. What
        # `git apply` writes (checkout -p, restore -p, stash -p) comes with no blob, and may
        # be hunks of two pointers: only those are checked (the check reads the headers again).
        if "blob" not in headers:
            warn_if_mixed(path, restore.pointer, self.store)
        self._out.text("status=success")
        self._out.flush()
        try:
            restore.write_to(self._out.content, fetch=self._fetch_objects)
        except BrokenPipeError:
            raise                       # git went away: nobody to tell, nothing to repair
        except (StoreError, OSError) as err:
            # Git discards what it got so far when the final status is an error.
            warn(f"error: {quote_path(path)}: {_describe(err)}")
            self._out.flush()
            self._out.text("status=error")
            self._out.flush()
            return
        self._out.flush()
        self._out.flush()

    def _list_available_blobs(self) -> None:
        """Fetch every delayed file's objects in one batch, then name them all: git asks for
        each again and gets its bytes, or the error its own fetch ran into."""
        ready = list(self._delayed)
        if ready:
            self._fetch(dict(self._delayed))
        self._out.text(*(f"pathname={path}" for path in ready))
        self._out.flush()
        self._out.text("status=success")
        self._out.flush()

    def _remote(self):
        if self._view is None:
            self._view = self._session.default_view() or False
        return self._view or None

    def _fetch(self, wanted: dict[str, pointers.Pointer]) -> None:
        """Fetch the objects of {path: pointer}. Each file's failure is kept for it alone, to
        be reported when git asks for that file; the others are stored."""
        self._failed.update(fetch_for(self._session, self._view, wanted))

    def _pass_through(self, path: str, head: bytes, content: ContentReader, quiet: bool = False) -> None:
        """Content that is not a pointer goes back unchanged. It must all be read before the
        answer starts, so what does not fit in memory is spooled to a temporary file."""
        if head and not quiet:
            warn(f"warning: {quote_path(path)} is not a gitmodel pointer (committed before it was tracked?); "
                 "leaving it as it is. `git add --renormalize PATH` stores it with gitmodel")
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


def fetch_for(session: Session, view, wanted: dict[str, pointers.Pointer]) -> dict[str, str]:
    """Fetch the objects of {path: pointer} from `view` in one batch, each checkpoint verified
    as it is stored. Returns {path: why} for the files whose fetch failed; the others are stored."""
    from gitmodel import sync
    try:
        sizes: dict[str, int] = {}
        for ptr in wanted.values():
            pointers.note_size(sizes, ptr)
        result = sync.fetch(session.store, view, {ptr.content: path for path, ptr in wanted.items()},
                            sizes=sizes)
        failures = result.failed
    except (GitmodelError, OSError) as err:
        reason = err.full() if isinstance(err, GitmodelError) else str(err)
        failures = {ptr.content: reason for ptr in wanted.values()}
    elsewhere = session.elsewhere(view) if failures else ""
    return {path: f"could not fetch it: {failures[ptr.content]}{elsewhere}. {NOTHING_WRITTEN}. {RETRY}"
            for path, ptr in wanted.items() if ptr.content in failures}


def restore_fetching(session: Session, path: str, ptr: pointers.Pointer) -> checkpoint.Restore:
    """A Restore for one file outside the filter (the one-shot `gitmodel smudge`): objects the
    store lacks are fetched from the default remote first, as the filter fetches them."""
    try:
        return checkpoint.Restore(ptr, session.store)
    except MissingObjects as err:
        try:
            view = session.default_view()
        except GitmodelError as config_error:
            raise GitmodelError(f"{quote_path(path)}: "
                                f"{missing_message(err, session.store, unopened=config_error)}") from None
        if view is None:
            raise GitmodelError(f"{quote_path(path)}: {missing_message(err, session.store)}") from None
    failed = fetch_for(session, view, {path: ptr})
    if path in failed:
        raise GitmodelError(f"{quote_path(path)}: {failed[path]}")
    try:
        return checkpoint.Restore(ptr, session.store)
    except MissingObjects as err:
        raise GitmodelError(f"{quote_path(path)}: {missing_message(err, session.store, view)}") from None


def warn_if_mixed(path: str, ptr: pointers.Pointer, store: Store) -> None:
    """Say so when a pointer being restored does not describe one checkpoint (reads the
    format's headers only). Not refused: git applies a `checkout -p` by removing the file
    first, so a failed smudge would leave it empty."""
    why = checkpoint.pointer_mismatch(ptr, store)
    if why is not None:
        warn(f"warning: {quote_path(path)}: the pointer does not describe one checkpoint: {why}. Wrote the "
             f"checkpoint its content line names ({ptr.content[:16]}…). Its lines come from two "
             "versions (a pointer's hunks taken apart, as `git checkout -p`, `git restore -p` or "
             "`git stash -p` do) or were edited: a checkpoint is taken whole (`git checkout REV "
             "-- PATH`); `gitmodel merge` combines tensors of two versions")


def damaged_pointer(err: pointers.PointerError) -> str:
    """What a smudge of a pointer that does not parse says (it names no checkpoint)."""
    return (f"damaged pointer ({err}). {NOTHING_WRITTEN}; restore the pointer from another "
            "commit, or add the checkpoint again")


def _describe(err: Exception) -> str:
    text = err.full() if isinstance(err, GitmodelError) else f"cannot read the store: {err}"
    return f"{text}. {NOTHING_WRITTEN}"


def missing_message(err: MissingObjects, store: Store, view=None,
                    unopened: GitmodelError | None = None) -> str:
    where = (f"and the gitmodel remote could not be opened to fetch them: {unopened.full()}"
             if unopened is not None else f"and remote {view} lacks them too" if view else
             "and no gitmodel remote is configured (`gitmodel remote add`)")
    damaged = (f" ({len(store.damaged_indexes)} pack index(es) here are damaged: `gitmodel fsck "
               "--repair` rebuilds them)") if store.damaged_indexes else ""
    bad = store.damaged()
    spoiled = sum(oid in bad for oid in err.oids)
    state = ("are missing from" if not spoiled else
             "are damaged in" if spoiled == len(err.oids) else
             f"are missing from or damaged ({spoiled} of them: their copies failed their check) in")
    return (f"{len(err.oids)} object(s) of this checkpoint {state} the local store "
            f"{store.root} (first: {err.oids[0].hex()}) {where}{damaged}. {NOTHING_WRITTEN}. "
            "Fetch it from a remote that has it (`gitmodel fetch REMOTE`), or add the file again "
            "from a good copy (`git add --renormalize PATH`); `gitmodel fsck` checks the store. "
            f"{RETRY}")


def serve(session: Session) -> None:
    widen_pipe(sys.stdin.buffer)
    widen_pipe(sys.stdout.buffer)
    try:
        FilterServer(sys.stdin.buffer, sys.stdout.buffer, session).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass                           # git went away (killed, or finished early)
