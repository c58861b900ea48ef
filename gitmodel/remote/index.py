"""What a remote holds: the union of its pack indexes, cached locally.

Pack indexes are immutable and named by their content, so the cache never goes stale: a
refresh lists the remote's packs once and downloads only indexes not seen before. Packs that
disappeared from the listing drop out of the index. Cache layout:
    <store>/remotes/<first 16 hex of BLAKE3(url)>/pack-<hex>.idx
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from gitmodel.remote.storage import Remote
from gitmodel.store.pack import PackError, verify_index
from gitmodel.store.table import ObjectTable

PARALLEL = 8


class RemoteIndex:
    def __init__(self, remote: Remote, store_root: Path):
        self.remote = remote
        key = blake3.blake3(remote.url.encode()).hexdigest()[:16]
        self.cache_dir = Path(store_root) / "remotes" / key
        self.entries = ObjectTable()
        self.packs: set[str] = set()
        self.damaged: list[str] = []       # listed indexes that failed verification

    def refresh(self) -> "RemoteIndex":
        names = self.remote.pack_names()
        fresh = sorted(n for n in names if not (self.cache_dir / f"{n}.idx").is_file())
        with ThreadPoolExecutor(PARALLEL) as pool:
            for name, data in zip(fresh, pool.map(self._fetch, fresh)):
                if data is not None:
                    self._cache(name, data)
        self.entries, self.packs, self.damaged = ObjectTable(), set(), []
        indexes = []
        for name in sorted(names):
            path = self.cache_dir / f"{name}.idx"
            try:
                indexes.append((name, *verify_index(name, path.read_bytes())))
            except (OSError, PackError):
                self.damaged.append(name)
                path.unlink(missing_ok=True)
                continue
            self.packs.add(name)
        self.entries.add_indexes(indexes)
        return self

    def add(self, name: str, index: bytes) -> None:
        """Record a pack this client just published."""
        self._cache(name, index)
        self.entries.add_indexes([(name, *verify_index(name, index))])
        self.packs.add(name)

    def _fetch(self, name: str) -> bytes | None:
        try:
            return self.remote.read_index(name)
        except (PackError, FileNotFoundError):
            return None           # being written by another client, or damaged: not visible

    def _cache(self, name: str, data: bytes) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, self.cache_dir / f"{name}.idx")
