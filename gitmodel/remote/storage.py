"""One remote: an fsspec filesystem and a root path in it, with retries on transient errors.

Every call that touches the network goes through `Remote.call`, which retries with exponential
backoff and, when it gives up, raises RemoteError naming the remote. Errors that retrying cannot
fix (no such file, no permission, bad arguments) are not retried.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

import fsspec

from gitmodel.store.pack import PackError, decode_index

PACK_NAME = re.compile(r"pack-[0-9a-f]{64}")
_PERMANENT = (PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError,
              AttributeError, KeyError, NotImplementedError, ImportError)


class RemoteError(Exception):
    pass


def _attempts() -> int:
    return max(1, int(os.environ.get("GITMODEL_RETRIES", "4")) + 1)


BACKOFF = float(os.environ.get("GITMODEL_RETRY_BACKOFF", "0.5"))   # seconds, doubled per retry


class Remote:
    def __init__(self, url: str, options: dict[str, Any] | None = None, name: str | None = None):
        self.url, self.options = url, dict(options or {})
        self.name = name or url
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        except ImportError as err:
            raise RemoteError(f"remote {self.name} ({url}): {err}. Install the fsspec backend "
                              "for this URL, e.g. `pip install 'gitmodel[s3]'`") from None
        except (ValueError, TypeError) as err:
            raise RemoteError(f"remote {self.name} ({url}): {err}") from None
        self.root = root.rstrip("/")
        self.pack_dir = f"{self.root}/packs"
        self._made_dir = False
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._local = "file" in protocols or "local" in protocols
        self.pack_sizes: dict[str, int | None] = {}   # pack files seen by the last listing

    def __str__(self) -> str:
        return self.name if self.name == self.url else f"{self.name} ({self.url})"

    def call(self, what: str, fn: Callable, *args, **kwargs):
        attempts = _attempts()
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except FileNotFoundError:
                raise                             # callers expect it (an empty remote, ...)
            except _PERMANENT as err:             # retrying cannot help: say so at once
                raise RemoteError(f"remote {self}: {what} failed: {type(err).__name__}: "
                                  f"{err}") from None
            except Exception as err:          # network, server and timeout errors of any backend
                if attempt + 1 == attempts:
                    raise RemoteError(f"remote {self}: {what} failed after {attempts} "
                                      f"attempt(s): {type(err).__name__}: {err}") from None
                time.sleep(BACKOFF * 2 ** attempt)

    # ----- packs -----

    def pack_names(self) -> set[str]:
        """Packs whose index is published (one listing request). The listing's pack sizes
        are kept for `put_pack`, so resuming an upload costs no extra request."""
        self.fs.invalidate_cache(self.pack_dir)      # s3fs and others cache listings
        try:
            listing = self.call("listing packs", self.fs.ls, self.pack_dir, detail=True)
        except FileNotFoundError:
            return set()
        names, self.pack_sizes = set(), {}
        for entry in listing:
            base = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            stem, _, ext = base.rpartition(".")
            if PACK_NAME.fullmatch(stem):
                if ext == "idx":
                    names.add(stem)
                elif ext == "pack":
                    self.pack_sizes[stem] = entry.get("size")
        return names

    def read_index(self, name: str) -> bytes:
        """A pack's index bytes, verified (trailer and name). PackError if damaged or partial."""
        data = self.call(f"reading {name}.idx", self.fs.cat_file, f"{self.pack_dir}/{name}.idx")
        decode_index(name, data)
        return data

    def read_range(self, name: str, start: int, end: int) -> bytes:
        data = self.call(f"reading {name}.pack", self.fs.cat_file, f"{self.pack_dir}/{name}.pack",
                         start=start, end=end)
        if len(data) != end - start:
            raise PackError(f"remote {self}: {name}.pack is shorter than its index says")
        return data

    def open_pack(self, name: str):
        return self.call(f"opening {name}.pack", self.fs.open, f"{self.pack_dir}/{name}.pack", "rb")

    def put_pack(self, path: Path, name: str, index: bytes) -> None:
        """Upload a pack, then its index: readers see the pack only once both are complete."""
        self.put_pack_file(path, name)
        self.put_index(name, index)

    def put_pack_file(self, path: Path, name: str) -> None:
        """Upload a pack file (invisible until its index follows). One the last listing
        showed at full size (an interrupted earlier transfer) is not sent again."""
        if self.pack_sizes.get(name) != path.stat().st_size:
            self.call(f"uploading {name}.pack", self._put, str(path), f"{self.pack_dir}/{name}.pack")

    def put_index(self, name: str, index: bytes) -> None:
        self.call(f"uploading {name}.idx", self.fs.pipe_file, f"{self.pack_dir}/{name}.idx", index)

    def _put(self, local: str, remote: str) -> None:
        if not self._made_dir:                     # folders need it; object stores ignore it
            self.fs.makedirs(self.pack_dir, exist_ok=True)
            self._made_dir = True
        if self._local:
            # A folder shows a file while it is written (an object store does not): write
            # under a temporary name, then rename, so a crash never leaves a full-size but
            # wrong pack for a later push to trust.
            temporary = f"{remote}.tmp-{os.getpid()}-{threading.get_ident()}"
            self.fs.put_file(local, temporary)
            self.fs.mv(temporary, remote)
        else:
            self.fs.put_file(local, remote)

