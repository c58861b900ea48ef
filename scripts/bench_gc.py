"""Benchmark `gitmodel gc`: does a store return to the size of what survives?

One run:

* repository (a): 10 versions of a 256 MiB fp32 safetensors checkpoint committed in order,
  each a "training step" of the one before (every weight moves a little, so chunk dedup saves
  nothing between versions); then the newest 5 are dropped from every ref and reflog
  (`git reset --hard HEAD~5`, `git reflog expire --expire=now --all`) and
  `gitmodel gc --keep-recent 0` runs (timed);
* repository (b): the 5 surviving versions alone, committed in order into a fresh repository,
  and `gitmodel gc --keep-recent 0` there too (which repacks them the same way: like for
  like).

Then the same on a gitmodel remote in S3 (moto on 127.0.0.1), deltas off and on: all versions
pushed, the newest dropped by a force-push, `gitmodel gc --remote origin --keep-recent 0`,
against the survivors pushed alone.

It prints the sizes and checks the targets: (a) after gc <= 1.05x (b), locally and on S3
(deltas off: with deltas on, the remote keeps the dropped keyframe the survivors' deltas were
pushed against, see docs/benchmarks.md); every surviving version sha256-exact after the gc;
`gitmodel fsck --remote` clean.

Run:  python scripts/bench_gc.py [--size-mib 256] [--versions 10]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_foundation import make_env, run, sha256_file  # noqa: E402

TENSORS = 64
TARGET = 1.05


def write_versions(folder: Path, size: int, count: int) -> list[Path]:
    """`count` safetensors files of `size` bytes of fp32, each version's weights the previous
    ones plus noise of 1e-3 of their scale."""
    rng = np.random.default_rng(20261130)
    per = size // 4 // TENSORS
    cols = 1024
    rows = max(1, per // cols)
    weights = [rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02)
               for _ in range(TENSORS)]
    header = {f"layers.{i}.weight": {"dtype": "F32", "shape": [rows, cols],
                                     "data_offsets": [i * rows * cols * 4, (i + 1) * rows * cols * 4]}
              for i in range(TENSORS)}
    import json
    import struct
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    paths = []
    for v in range(count):
        if v:
            for w in weights:
                w += rng.standard_normal(w.shape, dtype=np.float32) * np.float32(2e-5)
        path = folder / f"v{v}.safetensors"
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for w in weights:
                f.write(w.tobytes())
        paths.append(path)
    return paths


def store_size(repo: Path) -> int:
    packs = repo / ".git" / "gitmodel" / "packs"
    return sum(p.stat().st_size for p in packs.glob("*.pack"))


def new_repo(path: Path, env: dict) -> Path:
    path.mkdir()
    run(["git", "init", "-q", "-b", "main"], path, env)
    run(["gitmodel", "install"], path, env)
    run(["gitmodel", "track", "*.safetensors"], path, env)
    run(["git", "add", ".gitattributes"], path, env)
    run(["git", "commit", "-q", "-m", "track"], path, env)
    return path


def commit_versions(repo: Path, versions: list[Path], env: dict) -> list[float]:
    times = []
    for i, source in enumerate(versions):
        target = repo / "model.safetensors"
        target.unlink(missing_ok=True)
        shutil.copyfile(source, target)
        start = time.perf_counter()
        run(["git", "add", "model.safetensors"], repo, env)
        times.append(time.perf_counter() - start)
        run(["git", "commit", "-q", "-m", f"v{i}"], repo, env)
    return times


def gc(repo: Path, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(["gitmodel", "gc", "--keep-recent", "0"], cwd=repo, env=env,
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout.strip()


def bench_s3(work: Path, env: dict, versions: list[Path], keep: int, delta: bool) -> dict:
    """The same drop-and-collect on a gitmodel remote in S3 (moto on 127.0.0.1): all versions
    pushed, the newest dropped by a force-push, `gitmodel gc --remote origin --keep-recent 0`,
    against the survivors pushed alone to another prefix."""
    from bench_remote import AWS_ENV, start_server
    import s3fs
    global _s3
    if "_s3" not in globals():
        _s3 = start_server()
    endpoint = f"http://127.0.0.1:{_s3[1].server_address[1]}"
    env = dict(env, **AWS_ENV, FSSPEC_S3_ENDPOINT_URL=endpoint)
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
    if not fs.exists("gcbench"):
        fs.mkdir("gcbench")
    tag = "delta" if delta else "whole"

    def remote_bytes(prefix: str) -> int:
        fs.invalidate_cache()
        return sum(i["size"] for i in fs.ls(f"gcbench/{prefix}/packs", detail=True)
                   if i["name"].endswith(".pack"))

    def pushing_repo(name: str, items: list[Path]) -> Path:
        repo = new_repo(work / name, env)
        run(["git", "config", "gitmodel.delta", "true" if delta else "false"], repo, env)
        run(["gitmodel", "remote", "add", "origin", f"s3://gcbench/{name}"], repo, env)
        run(["git", "init", "-q", "--bare", "-b", "main", str(work / f"{name}.git")], work, env)
        run(["git", "remote", "add", "origin", str(work / f"{name}.git")], repo, env)
        commit_versions(repo, items, env)
        run(["git", "push", "-q", "origin", "main"], repo, env)
        return repo

    a = pushing_repo(f"all-{tag}", versions)
    full = remote_bytes(f"all-{tag}")
    run(["git", "reset", "-q", "--hard", f"HEAD~{len(versions) - keep}"], a, env)
    run(["git", "push", "-q", "-f", "origin", "main"], a, env)
    start = time.perf_counter()
    run(["gitmodel", "gc", "--remote", "origin", "--keep-recent", "0"], a, env)
    seconds = time.perf_counter() - start
    after = remote_bytes(f"all-{tag}")
    clean = "0 problem(s)" in run(["gitmodel", "fsck", "--remote", "origin", "--all"], a, env)
    pushing_repo(f"alone-{tag}", versions[:keep])
    return {"delta": delta, "full": full, "after": after, "seconds": seconds, "clean": clean,
            "alone": remote_bytes(f"alone-{tag}")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    keep = args.versions - args.versions // 2
    work = Path(tempfile.mkdtemp(prefix="bench-gc-", dir=args.workdir))
    try:
        env = dict(make_env(work), GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
                   GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
        files = work / "versions"
        files.mkdir()
        versions = write_versions(files, args.size_mib << 20, args.versions)
        sums = [sha256_file(p) for p in versions]
        mib = versions[0].stat().st_size / (1 << 20)
        print(f"{args.versions} versions of a {mib:.0f} MiB fp32 checkpoint; keeping the oldest {keep}")

        a = new_repo(work / "a", env)
        adds = commit_versions(a, versions, env)
        full = store_size(a)
        run(["git", "reset", "-q", "--hard", f"HEAD~{args.versions - keep}"], a, env)
        run(["git", "reflog", "expire", "--expire=now", "--all"], a, env)
        seconds, said = gc(a, env)
        after = store_size(a)
        exact = True
        for back in range(keep):
            (a / "model.safetensors").unlink()
            run(["git", "checkout", f"HEAD~{back}", "--", "model.safetensors"], a, env)
            exact &= sha256_file(a / "model.safetensors") == sums[keep - 1 - back]

        b = new_repo(work / "b", env)
        commit_versions(b, versions[:keep], env)
        alone_added = store_size(b)
        gc(b, env)
        alone = store_size(b)

        remote = [bench_s3(work, env, versions, keep, delta) for delta in (False, True)]

        ratio = after / alone
        print(f"adds: {min(adds):.2f}-{max(adds):.2f} s each")
        print(f"(a) store with all {args.versions} versions: {full / (1 << 20):.1f} MiB")
        print(f"(a) after dropping {args.versions - keep} and gc: {after / (1 << 20):.1f} MiB "
              f"(gc took {seconds:.2f} s)")
        print(f"    {said.splitlines()[-1] if said else ''}")
        print(f"(b) the {keep} survivors alone: {alone_added / (1 << 20):.1f} MiB as added, "
              f"{alone / (1 << 20):.1f} MiB after its own gc (repacked)")
        print(f"(a) / (b): {ratio:.3f} (target <= {TARGET}); survivors sha256-exact: {exact}")
        for r in remote:
            print(f"S3 remote, deltas {'on' if r['delta'] else 'off'}: all {args.versions} pushed "
                  f"{r['full'] / (1 << 20):.1f} MiB; after dropping {args.versions - keep}, "
                  f"force-push and gc --remote {r['after'] / (1 << 20):.1f} MiB (gc {r['seconds']:.2f} s); "
                  f"the survivors pushed alone {r['alone'] / (1 << 20):.1f} MiB; "
                  f"ratio {r['after'] / r['alone']:.3f}; fsck --remote clean: {r['clean']}")
        ok = ratio <= TARGET and exact
        ok &= all(r["clean"] for r in remote) and remote[0]["after"] / remote[0]["alone"] <= TARGET
        print("targets met (local; S3 with deltas off)" if ok else "TARGET NOT MET")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
