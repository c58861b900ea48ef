"""Remote backends: the few operations gitmodel needs of a place that holds packs, one
implementation of them over fsspec, retries as a wrapper around any backend, and the one
factory that opens a backend from a remote's URL. Layout: docs/formats.md §5.

A backend moves bytes and names; it never decides what to move (that is transfer.py) and
never retries (that is `Retrying`, so every backend gets the same bounded, visible retries).
"""

from __future__ import annotations

import errno
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol

from gitmodel.errors import GitmodelError

PACK_NAME = re.compile(r"pack-[0-9a-f]{64}")
TEMPORARY = re.compile(r"(pack-[0-9a-f]{64})\.(pack|idx)\.tmp-.+")
COLLECTING = re.compile(r"gc-[0-9a-f]{16}\.running")     # a gc removing packs (remote/collect.py)
PUSHING = re.compile(r"push-[0-9a-f]{16}\.pending")      # a push's checkpoints (sync.push)
MARKER_FILE = "config"
# A name `gitmodel remote add` takes; a remote named by its URL or folder (on the command line,
# in GITMODEL_REMOTE) has none, and no configuration to correct.
REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class RemoteError(GitmodelError):
    pass


class RangesUnsupported(RemoteError):
    """A server that answers a request for part of a file with the whole file (`python -m
    http.server` does): a pack's records are read by ranges, so nothing can be read there,
    and nothing there is damaged for it."""


RANGES_HINT = ("Nothing on it is damaged for that, but gitmodel reads a pack's records by "
               "range requests. Serve the store with a web server that "
               "supports them (nginx, Apache, Caddy and other production servers do; `python -m "
               "http.server` does not), or reach it as a folder or an S3 remote instead "
               "(`gitmodel remote add --local NAME URL`)")


class ReadOnlyRemote(RemoteError):
    """A remote that refuses this client's writes: a read-only folder or mount, a web server
    that serves files and takes no uploads, credentials that may only read. Waiting does not
    change that."""


READ_ONLY_HINT = ("Nothing was changed there: it is read-only to this client (a read-only folder, "
                  "a web server that only serves files, credentials that may only read). Write "
                  "through a URL or credentials that may write there")


@dataclass
class RemoteSpec:
    """A configured remote: its name, URL and fsspec options (and where it was configured)."""
    name: str
    url: str
    options: dict = field(default_factory=dict)
    source: str = ""


@dataclass
class Listing:
    published: set[str] = field(default_factory=set)         # packs whose index and file are there
    orphan_indexes: set[str] = field(default_factory=set)    # indexes whose pack file is not
    collecting: dict[str, float | None] = field(default_factory=dict)   # gcs at work, since when
    pushing: dict[str, float | None] = field(default_factory=dict)   # pushes' notes, written when
    sizes: dict[str, int | None] = field(default_factory=dict)  # every pack file, and its size
    mtimes: dict[str, float | None] = field(default_factory=dict)  # and when it was written
    temporaries: list[str] = field(default_factory=list)     # files of interrupted uploads
    exists: bool = True                                       # False: no packs folder at all


class Backend(Protocol):
    """Where a remote's packs live. Paths are pack names (`pack-<hex>`), never URLs; a missing
    file raises FileNotFoundError, anything else an exception `is_permanent` classifies. Each
    call should give up after `timeout` seconds where it can."""
    name: str
    url: str

    def list_packs(self, timeout: float | None = None) -> Listing: ...
    def read_marker(self, timeout: float | None = None) -> str | None: ...
    def write_marker(self, text: str, timeout: float | None = None) -> None: ...
    def read_index(self, pack: str, timeout: float | None = None) -> bytes: ...
    def read_range(self, pack: str, start: int, end: int, timeout: float | None = None) -> bytes: ...
    def open_pack(self, pack: str, timeout: float | None = None) -> BinaryIO: ...
    def put_pack(self, path: Path, pack: str, timeout: float | None = None) -> None: ...
    def put_index(self, pack: str, data: bytes, timeout: float | None = None) -> None: ...
    def remove_pack(self, pack: str, timeout: float | None = None) -> None: ...
    def sweep(self, listing: Listing, timeout: float | None = None) -> int: ...
    def put_note(self, name: str, data: bytes, timeout: float | None = None) -> None: ...
    def read_note(self, name: str, timeout: float | None = None) -> bytes: ...
    def remove_note(self, name: str, timeout: float | None = None) -> None: ...
    def is_permanent(self, err: BaseException) -> bool: ...


# ----------------------------------------------------------------------------- fsspec

# Errors that retrying cannot fix, whatever the backend (and botocore's, by name, so that
# botocore is imported only by those who use S3).
_PERMANENT = (PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError,
              AttributeError, KeyError, NotImplementedError, ImportError)
_PERMANENT_NAMES = {"NoCredentialsError", "PartialCredentialsError", "ParamValidationError",
                    "SSLError", "NoRegionError", "InvalidRegionError",
                    "error_perm",            # ftplib: a 5xx reply (login refused, ...)
                    "PermissionDenied"}      # asyncssh (sshfs): authentication refused

# A full remote does not heal by waiting: not retried, and said as such.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# A write refused as such (read-only, not permitted): not retried, and said as such.
_REFUSED_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
# HTTP answers that the same request gets again, however long one waits: a bad request,
# credentials missing or refused, no such place, a method the server does not take (a server
# that only serves files answers 501 or 405 to an upload). Any other status (5xx, 408, 429)
# may pass.
_REFUSED_STATUSES = {400, 401, 403, 404, 405, 501}


def http_status(err: BaseException) -> int | None:
    """The HTTP status an error carries: aiohttp's (fsspec's http) or requests' (webdav)."""
    status = getattr(err, "status", None)
    if status is None:
        status = getattr(getattr(err, "response", None), "status_code", None)
    return status if isinstance(status, int) and 100 <= status < 600 else None

# Object stores have no folders to make, and their makedirs creates the bucket: a typo in its
# name would get a bucket of its own, and the push would succeed there. Their owners make them.
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss"}

# Per-request bounds (socket inactivity, not transfer time) for S3; see docs/design.md.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 15


def _s3_options(options: dict) -> dict:
    """Bounded waits and no retries of its own for s3fs (ours are visible and bounded). Its
    uploads would otherwise wait forever for a `100 Continue` a silent server never sends,
    and each read would be tried up to 125 times (three nested retry loops). Options the
    user gave win."""
    import aiobotocore.session
    import botocore.handlers
    options = dict(options)
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("connect_timeout", CONNECT_TIMEOUT)
    config.setdefault("read_timeout", READ_TIMEOUT)
    config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
    options["config_kwargs"] = config
    if "session" not in options:
        session = aiobotocore.session.AioSession(profile=options.pop("profile", None))
        session.unregister("before-call.s3", botocore.handlers.add_expect_header)
        options["session"] = session
    options.setdefault("skip_instance_cache", True)      # its retries are set per instance
    return options


def folder_of(url: str, any_host: bool = False) -> str | None:
    """The folder a `file://` URL names, percent-decoded as RFC 8089 and git read it
    (`file:///srv/my%20models` is the folder `/srv/my models`); None for any other URL.
    fsspec takes the path as written (it would make a folder named `my%20models`) and reads
    `file://localhost/srv` as the relative path `localhost/srv`. A host other than localhost
    names another machine: ValueError, unless `any_host`, which reads the URL as git does (a
    git remote's URL: git ignores the host)."""
    if not url.startswith("file://"):
        return None
    from urllib.parse import unquote
    host, _, path = url[len("file://"):].partition("/")
    if host and host.lower() != "localhost" and not any_host:
        raise ValueError(f"{url} names a folder on another machine ({host}); a folder here is "
                         f"file:///PATH (three slashes) or its path")
    return unquote("/" + path, errors="surrogateescape")    # bytes as git and os paths keep them


# The package extra that installs each protocol's fsspec backend (pyproject.toml).
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
           "abfss": "azure", "ssh": "ssh", "sftp": "ssh"}


def _install_hint(protocol: str) -> str:
    """The pip command that installs a protocol's fsspec backend: gitmodel's extra, else
    fsspec's own extra of that name (`fsspec[http]` installs aiohttp), else none known."""
    if protocol in _EXTRAS:
        return f": `pip install 'gitmodel[{_EXTRAS[protocol]}]'`"
    extra = "http" if protocol == "https" else protocol
    from importlib.metadata import PackageNotFoundError, metadata
    try:
        offered = metadata("fsspec").get_all("Provides-Extra") or []
    except PackageNotFoundError:
        offered = []
    if extra not in offered:
        return ""
    return (": `pip install aiohttp` (what `pip install 'fsspec[http]'` installs)" if extra == "http"
            else f": `pip install 'fsspec[{extra}]'`")


class FsspecBackend:
    """A remote on any fsspec filesystem, under a root path. Calls on asynchronous filesystems
    (S3, GCS, Azure, SSH) take a deadline, past which the request is cancelled."""

    def __init__(self, spec: RemoteSpec):
        import fsspec
        self.name, self.url = spec.name, spec.url
        protocol = spec.url.split("://", 1)[0] if "://" in spec.url else "file"
        options = spec.options
        try:
            if protocol in ("s3", "s3a"):
                options = _s3_options(options)
            folder = folder_of(spec.url)
            if folder is None and "://" in spec.url:
                self.fs, root = fsspec.core.url_to_fs(spec.url, **options)
            else:           # a folder, as it is: in a URL, fsspec reads `::` as a chain of filesystems
                self.fs = fsspec.filesystem("file", **options)
                root = self.fs._strip_protocol(folder or spec.url)
        except ImportError as err:
            raise RemoteError(f"remote {self}: {err}", "Nothing was read or written there. Install "
                              "the fsspec backend for this URL" + _install_hint(protocol)) from None
        except (ValueError, TypeError) as err:
            raise RemoteError(f"remote {self}: {err}") from None
        if hasattr(self.fs, "retries"):
            self.fs.retries = 1                  # s3fs's own retry loop
        self.root = root.rstrip("/")
        self.pack_dir = f"{self.root}/packs"
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols or "local" in protocols
        self.buckets = bool(OBJECT_STORES.intersection(protocols))
        self.web = bool({"http", "https"}.intersection(protocols))
        from fsspec.asyn import AsyncFileSystem
        self._async = isinstance(self.fs, AsyncFileSystem)
        self._made_dir = False
        self._permissions = None
        self._no_ranges: RangesUnsupported | None = None   # once found: every request would
                                                            # bring a whole pack

    def __str__(self) -> str:
        return self.name if self.name == self.url else f"{self.name} ({self.url})"

    def _call(self, method: str, *args, timeout: float | None = None, **kwargs):
        """fs.<method>, cancelled after `timeout` seconds where the filesystem allows it."""
        if self._async and timeout is not None:
            from fsspec.asyn import sync
            return sync(self.fs.loop, getattr(self.fs, "_" + method), *args,
                        timeout=max(timeout, 0.1), **kwargs)
        return getattr(self.fs, method)(*args, **kwargs)

    def _path(self, pack: str, ext: str) -> str:
        return f"{self.pack_dir}/{pack}.{ext}"

    def list_packs(self, timeout: float | None = None) -> Listing:
        self.fs.invalidate_cache(self.pack_dir)      # s3fs and others cache listings
        try:
            entries = self._call("ls", self.pack_dir, detail=True, timeout=timeout)
        except FileNotFoundError:
            return Listing(exists=False)
        listing = Listing()
        for entry in entries:
            base = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            stem, _, ext = base.rpartition(".")
            if PACK_NAME.fullmatch(stem) and ext == "idx":
                listing.published.add(stem)
            elif PACK_NAME.fullmatch(stem) and ext == "pack":
                listing.sizes[stem] = entry.get("size")
                listing.mtimes[stem] = _mtime(entry)
            elif TEMPORARY.fullmatch(base):
                listing.temporaries.append(base)
            elif COLLECTING.fullmatch(base):
                listing.collecting[base] = _mtime(entry)
            elif PUSHING.fullmatch(base):
                listing.pushing[base] = _mtime(entry)
        # An index is published after its pack and removed before it, so one without its pack
        # is what a removal racing a writer that found the pack there left: what it lists is
        # not on the remote, and trusting it would let a push skip sending it.
        listing.orphan_indexes = listing.published - set(listing.sizes)
        listing.published -= listing.orphan_indexes
        return listing

    def read_marker(self, timeout: float | None = None) -> str | None:
        try:
            return self._call("cat_file", f"{self.root}/{MARKER_FILE}", timeout=timeout).decode(errors="replace")
        except FileNotFoundError:
            return None

    def write_marker(self, text: str, timeout: float | None = None) -> None:
        self._make_dir()
        if self.local:      # the modes a group-shared repository gives its files, and fsynced
            self._write_local(f"{self.root}/{MARKER_FILE}", [text.encode()])
            return
        self._call("pipe_file", f"{self.root}/{MARKER_FILE}", text.encode(), timeout=timeout)

    def read_index(self, pack: str, timeout: float | None = None) -> bytes:
        return self._call("cat_file", self._path(pack, "idx"), timeout=timeout)

    def read_range(self, pack: str, start: int, end: int, timeout: float | None = None) -> bytes:
        if self._no_ranges is not None:
            raise self._no_ranges
        data = self._call("cat_file", self._path(pack, "pack"), start=start, end=end, timeout=timeout)
        if len(data) > end - start:         # the whole file: the server ignored the range
            raise self._without_ranges(pack)
        return data

    def open_pack(self, pack: str, timeout: float | None = None) -> BinaryIO:
        return _PackReader(self.fs.open(self._path(pack, "pack"), "rb"), lambda: self._without_ranges(pack))

    def _without_ranges(self, pack: str) -> RangesUnsupported:
        self._no_ranges = RangesUnsupported(
            f"remote {self}: its server does not support range requests (it answered a request "
            f"for part of {pack}.pack with the whole file)", RANGES_HINT)
        return self._no_ranges

    def put_pack(self, path: Path, pack: str, timeout: float | None = None) -> None:
        self._make_dir()
        remote = self._path(pack, "pack")
        if not self.local:
            self._call("put_file", str(path), remote, timeout=timeout)
            return
        with open(path, "rb") as src:
            self._write_local(remote, iter(lambda: src.read(8 << 20), b""))

    def put_index(self, pack: str, data: bytes, timeout: float | None = None) -> None:
        self._make_dir()
        if self.local:
            self._write_local(self._path(pack, "idx"), [data])
        else:
            self._call("pipe_file", self._path(pack, "idx"), data, timeout=timeout)

    def remove_pack(self, pack: str, timeout: float | None = None) -> None:
        """The index first: the pack is invisible before its bytes go."""
        for ext in ("idx", "pack"):
            try:
                self._call("rm_file", self._path(pack, ext), timeout=timeout)
            except FileNotFoundError:
                pass

    def put_note(self, name: str, data: bytes, timeout: float | None = None) -> None:
        """A small file beside the packs (a gc's note that it is at work, a push's)."""
        self._make_dir()
        if self.local:
            self._write_local(f"{self.pack_dir}/{name}", [data])
        else:
            self._call("pipe_file", f"{self.pack_dir}/{name}", data, timeout=timeout)

    def read_note(self, name: str, timeout: float | None = None) -> bytes:
        return self._call("cat_file", f"{self.pack_dir}/{name}", timeout=timeout)

    def remove_note(self, name: str, timeout: float | None = None) -> None:
        try:
            self._call("rm_file", f"{self.pack_dir}/{name}", timeout=timeout)
        except FileNotFoundError:
            pass

    def sweep(self, listing: Listing, timeout: float | None = None) -> int:
        """Remove what killed uploads left (folders only: an object store shows an object
        only once it is complete)."""
        if not self.local:
            return 0
        from gitmodel.store import files
        return sum(files.remove_if_dead(Path(self.pack_dir) / name) for name in listing.temporaries)

    def is_permanent(self, err: BaseException) -> bool:
        if isinstance(err, OSError) and err.errno in (errno.EINVAL, *_REFUSED_ERRNOS, *_FULL):
            return True
        return isinstance(err, _PERMANENT) or type(err).__name__ in _PERMANENT_NAMES \
            or http_status(err) in _REFUSED_STATUSES

    def _make_dir(self) -> None:
        if self._made_dir:
            return
        if self.local:
            from gitmodel.store import files
            self._permissions = files.Permissions.inherit(Path(self.pack_dir))
            self._permissions.make_dir(Path(self.pack_dir))
        elif not self.buckets:
            self.fs.makedirs(self.pack_dir, exist_ok=True)
        self._made_dir = True

    def _write_local(self, remote: str, blocks) -> None:
        """A folder shows a file while it is written (an object store does not): write under
        a temporary name, locked while written, fsynced, then renamed, so a crash never leaves
        a full-size but wrong file for a later push to trust, and a sweep can tell a dead
        upload from a live one."""
        from gitmodel.store import files
        temporary = Path(f"{remote}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            with open(temporary, "wb") as out:
                files.lock(out.fileno())
                for block in blocks:
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
                os.chmod(temporary, self._permissions.file())
                os.replace(temporary, remote)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        files.fsync_dir(Path(remote).parent)


class _PackReader:
    """A remote pack open for reading (a mirror's source), whose reads say so of a server that
    ignores range requests: fsspec's http file raises a ValueError past its first block."""

    def __init__(self, file: BinaryIO, refused: Callable[[], RangesUnsupported]):
        self.file, self.refused = file, refused

    def read(self, size: int = -1) -> bytes:
        try:
            return self.file.read(size)
        except ValueError as err:
            if "range" not in str(err).lower():
                raise
            raise self.refused() from None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "_PackReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- retries

def _mtime(entry: dict) -> float | None:
    """When a listed file was written, as a POSIX time: folders give `mtime`, object stores
    a datetime (`LastModified` on S3) or a string."""
    value = entry.get("mtime", entry.get("LastModified", entry.get("last_modified")))
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "timestamp"):
        return value.timestamp()
    if isinstance(value, str):
        from datetime import datetime
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _seconds(variable: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(variable, default)))
    except ValueError:
        return default


class Retrying:
    """Any backend with retries: transient errors are retried with exponential backoff (saying
    so on stderr, each wait at most a quarter of the timeout). A call gives up, failing with a
    RemoteError naming the remote, once GITMODEL_REMOTE_TIMEOUT seconds (default 60) have
    passed since its first attempt, or since the end of an attempt that ran longer than that
    (it may have been moving data: a transfer of `size` bytes gets a second more per
    MIN_UPLOAD_RATE bytes); and in any case once the timeout plus that allowance has passed
    since the first attempt, so a server that hangs cannot keep it going. Each attempt is
    cancelled at the time left. Once one call has given up, the remote counts as unreachable
    and later calls fail at once (a checkout of many files waits for one timeout, not one per
    file)."""

    MIN_UPLOAD_RATE = 256 << 10       # bytes per second an upload is given time for

    def __init__(self, backend: Backend, say: Callable[[str], None] | None = None):
        self.backend = backend
        self.name, self.url = backend.name, backend.url
        self.timeout = _seconds("GITMODEL_REMOTE_TIMEOUT", 60.0)
        self.backoff = _seconds("GITMODEL_RETRY_BACKOFF", 0.5)
        self._say = say or (lambda line: print(f"gitmodel: {line}", file=sys.stderr, flush=True))
        self._unreachable: RemoteError | None = None

    def __str__(self) -> str:
        return str(self.backend)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def call(self, what: str, fn: Callable, *args, size: int = 0, write: bool = False, **kwargs):
        if self._unreachable is not None:
            raise self._unreachable
        start = window = time.monotonic()   # retries stop self.timeout after `window`
        deadline = start + self.timeout + size / self.MIN_UPLOAD_RATE
        attempt = 0
        while True:
            attempt += 1
            began = time.monotonic()
            try:
                return fn(*args, timeout=deadline - began, **kwargs)
            except FileNotFoundError:
                raise                             # callers expect it (an empty remote, ...)
            except GitmodelError:
                raise
            except Exception as err:
                now = time.monotonic()
                reason = f"{type(err).__name__}: {err}" if str(err) else \
                    f"{type(err).__name__} (no answer within {now - began:.0f} s)"
                if self.backend.is_permanent(err):
                    if write and _refused(err):
                        raise ReadOnlyRemote(
                            f"remote {self} refuses writes: {what} failed: {_refusal(err)}",
                            READ_ONLY_HINT) from None
                    full = isinstance(err, OSError) and err.errno in _FULL
                    raise RemoteError(f"remote {self}: {what} failed: {reason}",
                                      "Nothing was changed for what could not be transferred. "
                                      "Free space on the remote, then run the command again"
                                      if full else None) from None
                if size and now - began > self.timeout:
                    window = now                  # a long upload failed: a new window for it
                wait = min(self.backoff * 2 ** (attempt - 1), max(1.0, self.timeout / 4))
                if now + wait - window >= self.timeout or now + wait >= deadline:
                    self._unreachable = RemoteError(
                        f"remote {self}: {what} failed after {attempt} attempt(s) in "
                        f"{now - start:.0f} s: {reason}",
                        "Nothing was changed for what could not be transferred. Check the URL, "
                        "the network and credentials; GITMODEL_REMOTE_TIMEOUT sets how long to "
                        "keep trying")
                    raise self._unreachable from None
                self._say(f"remote {self}: {what} failed ({reason}); retrying in {wait:.1f} s")
                time.sleep(wait)

    def list_packs(self) -> Listing:
        return self.call("listing packs", self.backend.list_packs)

    def read_marker(self) -> str | None:
        return self.call("reading its version marker", self.backend.read_marker)

    def write_marker(self, text: str) -> None:
        self._write("writing its version marker", self.backend.write_marker, text)

    def read_index(self, pack: str) -> bytes:
        return self.call(f"reading {pack}.idx", self.backend.read_index, pack)

    def read_range(self, pack: str, start: int, end: int) -> bytes:
        return self.call(f"reading {pack}.pack", self.backend.read_range, pack, start, end,
                         size=end - start)

    def open_pack(self, pack: str) -> BinaryIO:
        return self.call(f"opening {pack}.pack", self.backend.open_pack, pack)

    def put_pack(self, path: Path, pack: str) -> None:
        self._write(f"uploading {pack}.pack", self.backend.put_pack, path, pack,
                    size=path.stat().st_size)

    def put_index(self, pack: str, data: bytes) -> None:
        self._write(f"uploading {pack}.idx", self.backend.put_index, pack, data, size=len(data))

    def remove_pack(self, pack: str) -> None:
        self.call(f"removing {pack}", self.backend.remove_pack, pack)

    def sweep(self, listing: Listing) -> int:
        return self.call("removing leftovers of interrupted uploads", self.backend.sweep, listing)

    def put_note(self, name: str, data: bytes) -> None:
        self._write(f"writing {name}", self.backend.put_note, name, data)

    def _write(self, what: str, fn: Callable, *args, **kwargs) -> None:
        """`call` for a write, where "not found" is not an answer but a remote that is not
        there: a bucket that does not exist (gitmodel makes folders, not buckets)."""
        try:
            self.call(what, fn, *args, write=True, **kwargs)
        except FileNotFoundError as err:
            if getattr(self.backend, "web", False):
                # fsspec's http raises FileNotFoundError for a 404. To an upload, a static host
                # answers so at every path (nothing there takes uploads), which is no missing
                # bucket or folder; a wrong URL gets the same answer, so the message names it too.
                raise ReadOnlyRemote(f"remote {self} refuses writes: {what} failed: HTTP 404 Not "
                                     "Found (a web server that only serves files answers uploads "
                                     "so, as does one at a wrong URL: `gitmodel remote list` "
                                     "shows it)",
                                     READ_ONLY_HINT) from None
            hint = "; a bucket must exist: its owner creates it" if getattr(self.backend, "buckets", False) else ""
            raise RemoteError(f"remote {self}: {what} failed: {err.strerror or err}",
                              "Nothing was uploaded there. Check its URL (`gitmodel remote "
                              f"list`){hint}") from None

    def read_note(self, name: str) -> bytes:
        return self.call(f"reading {name}", self.backend.read_note, name)

    def remove_note(self, name: str) -> None:
        self.call(f"removing {name}", self.backend.remove_note, name)


def _refused(err: BaseException) -> bool:
    """Whether an error refuses a write as such (see _REFUSED_ERRNOS, _REFUSED_STATUSES)."""
    return (isinstance(err, OSError) and err.errno in _REFUSED_ERRNOS) or \
        http_status(err) in _REFUSED_STATUSES


def _refusal(err: BaseException) -> str:
    """A refusal in a few words: the server's status and reason, or the system's (not the name
    of the temporary file a folder's write was refused for)."""
    status = http_status(err)
    if status is not None:
        said = getattr(err, "message", None) or getattr(getattr(err, "response", None), "reason", "")
        return f"HTTP {status} {said}".strip()
    return getattr(err, "strerror", None) or f"{type(err).__name__}: {err}"


def marker_repair(backend) -> dict:
    """check_version's arguments for a remote's marker: where it is, whether a shell command
    here can write it (a folder), and the fsck that then checks the remote."""
    import shlex
    inner = getattr(backend, "backend", backend)
    root = getattr(inner, "root", None) if getattr(inner, "local", False) else None
    path = f"{root}/{MARKER_FILE}" if root else f"{backend.url.rstrip('/')}/{MARKER_FILE}"
    fsck = ("gitmodel fsck --all" if backend.name == LOCAL_STORE else
            f"gitmodel fsck --remote {shlex.quote(backend.name)} --all")
    return {"path": path, "local": root is not None, "fsck": fsck}


LOCAL_STORE = "local store"         # the name a store gets as the source of a mirror


# ----------------------------------------------------------------------------- factory

# URL scheme -> backend class; anything else goes through fsspec.
BACKENDS: dict[str, Callable[[RemoteSpec], Backend]] = {}


class _Opening:
    """A remote whose backend is being created, for `Retrying`: some filesystems connect when
    they are created (ftp; sshfs for ssh://), so creating one is a call to the remote like any
    other, retried and reported as such."""

    def __init__(self, spec: RemoteSpec):
        self.name, self.url = spec.name, spec.url

    __str__ = FsspecBackend.__str__
    is_permanent = FsspecBackend.is_permanent


def open_backend(spec: RemoteSpec) -> Retrying:
    """The backend for a remote, with retries (of its creation too, where that connects)."""
    scheme = spec.url.split("://", 1)[0] if "://" in spec.url else "file"
    factory = BACKENDS.get(scheme, FsspecBackend)
    backend = Retrying(_Opening(spec)).call("connecting", lambda timeout: factory(spec))
    return Retrying(backend)
