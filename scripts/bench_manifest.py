"""Reading manifests of many entries (docs/benchmarks.md, "Manifests of millions of chunks").

  python scripts/bench_manifest.py DIR build N     a store DIR/store-N holding a manifest of N
                                                   entries (256 distinct 2-byte chunks, cycled:
                                                   a dense file within its pointer's bound)
  /usr/bin/time -v python scripts/bench_manifest.py DIR read|needed|smudge|fetch N
                                                   one operation on it, in this process
  python scripts/bench_manifest.py - small         the common case: manifests of a few hundred
                                                   to a few thousand entries (µs, the fastest
                                                   of 15 runs of 20)
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import time
from pathlib import Path

import blake3

from gitmodel.store import codec
from gitmodel.store.objects import CHUNK, MANIFEST, Store


def build(base: Path, n: int) -> None:
    root = base / f"store-{n}"
    shutil.rmtree(root, ignore_errors=True)
    store = Store(root)
    writer = store.writer()
    block = []
    for i in range(256):
        data = bytes([i, 255 - i])
        cid = blake3.blake3(data).digest()
        writer.add(cid, CHUNK, codec.RAW, 2, data)
        block.append(struct.pack("<32sI", cid, 2))
    entries = b"".join(block) * (n // 256) + b"".join(block[:n % 256])
    manifest = struct.pack("<8sQQ", b"GMMANIF1", 2 * n, n) + entries
    mid = blake3.blake3(manifest).digest()
    encoding, payload = codec.encode(manifest)
    writer.add(mid, MANIFEST, encoding, len(manifest), payload)
    store.publish(writer)
    (root / "mid").write_text(mid.hex())


class _Sink:
    total = 0

    def writelines(self, buffers) -> None:
        self.total += sum(len(b) for b in buffers)


def run(base: Path, op: str, n: int) -> None:
    root = base / f"store-{n}"
    mid = bytes.fromhex((root / "mid").read_text())
    start = time.perf_counter()
    if op == "read":
        print(len(Store(root).read_manifest(mid).chunks))
    elif op == "needed":
        from gitmodel import stored
        store = Store(root)
        print(len(stored.needed([mid], store.read_manifest).chunks))
    elif op == "smudge":
        from gitmodel import checkpoint
        from gitmodel.pointer import Pointer
        sink = _Sink()
        checkpoint.smudge(Pointer(2 * n, mid.hex()), Store(root), sink)
        print(sink.total)
    elif op == "fetch":
        from gitmodel import sync
        from gitmodel.remote.backend import RemoteSpec, open_backend
        from gitmodel.remote.view import RemoteView
        dest = base / f"fetched-{n}"
        shutil.rmtree(dest, ignore_errors=True)
        store = Store(dest)
        view = RemoteView(open_backend(RemoteSpec(str(root), str(root))), dest)
        result = sync.fetch(store, view, {mid.hex(): "m"}, quiet=True, sizes={mid.hex(): 2 * n})
        print(result.stats.objects, dict(result.failed))
        shutil.rmtree(dest, ignore_errors=True)
    print(f"{op} {n}: {time.perf_counter() - start:.3f} s", file=sys.stderr)


def small() -> None:
    from gitmodel import stored
    from gitmodel.store.manifest import Manifest
    for n in (300, 2000, 5000):
        chunks = [(os.urandom(32), 190_000) for _ in range(n)]
        data = Manifest(190_000 * n, chunks).encode()
        for name, fn in [("decode", lambda: Manifest.decode(data)),
                         ("decode+iterate", lambda: [cid for cid, _ in Manifest.decode(data).chunks]),
                         ("decode+needed", lambda: stored.needed([b"m"], lambda _: Manifest.decode(data))),
                         ("encode", lambda: Manifest(190_000 * n, chunks).encode())]:
            times = []
            for _ in range(15):
                start = time.perf_counter()
                for _ in range(20):
                    fn()
                times.append((time.perf_counter() - start) / 20)
            print(f"{n:>5} entries {name:<15} {min(times) * 1e6:8.1f} µs")


if __name__ == "__main__":
    if sys.argv[2] == "small":
        small()
    elif sys.argv[2] == "build":
        build(Path(sys.argv[1]), int(sys.argv[3]))
    else:
        run(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
