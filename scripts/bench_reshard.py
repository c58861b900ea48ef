"""Benchmark storing a model that changes its shard layout between versions, against git-lfs.

Three versions of the MiniLM fine-tune series (scripts/make_finetune_series.py: epochs 1-3,
v2-v4, every weight moved a little) committed in one folder, each saved differently: v2 as two
shards `model-0000I-of-00002.safetensors`, v3 as three, v4 as one `model.safetensors` (with a
`model.safetensors.index.json` for the sharded ones, as Hugging Face writes them). No path
holds two versions, so deltas by path find nothing; a path no longer checked out is encoded
against its model's files that are (docs/design.md, "A path no longer checked out").

In one run, two fresh repositories: gitmodel (`gitmodel repack` after the three commits) and
git-lfs. Prints the packs before and after the repack, git-lfs's store, their ratio, and
checks that every version checks out byte for byte in the gitmodel repository.

Run:  .venv/bin/python scripts/bench_reshard.py --series DIR   (a folder made by
      scripts/make_finetune_series.py; needs git, git-lfs, an installed gitmodel)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

VERSIONS = [("v2-epoch1", 2), ("v3-epoch2", 3), ("v4-epoch3", 1)]     # (version, shards)


def read_safetensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    return {name: (t["dtype"], t["shape"], data[8 + n + t["data_offsets"][0]:8 + n + t["data_offsets"][1]])
            for name, t in header.items()}


def write_safetensors(path: Path, tensors: dict) -> None:
    header, offset = {}, 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(raw for _, _, raw in tensors.values()))


def save(folder: Path, tensors: dict, shards: int) -> None:
    """The model as `shards` files (one: model.safetensors), replacing the files before."""
    for old in [*folder.glob("model*.safetensors"), *folder.glob("model*.index.json")]:
        old.unlink()
    if shards == 1:
        write_safetensors(folder / "model.safetensors", tensors)
        return
    names, weight_map = list(tensors), {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i * len(names) // shards:(i + 1) * len(names) // shards]
        write_safetensors(folder / file, {n: tensors[n] for n in part})
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def run(cwd: Path, *args: str) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stderr


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("model*"))}


def size(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=Path, required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gitmodel-bench-reshard-"))
    try:
        repos = {"gitmodel": work / "gitmodel", "lfs": work / "lfs"}
        for tool, repo in repos.items():
            repo.mkdir()
            run(repo, "git", "init", "-q")
            if tool == "gitmodel":
                run(repo, "gitmodel", "install")
                run(repo, "gitmodel", "track", "*.safetensors")
            else:
                run(repo, "git", "lfs", "install", "--local")
                run(repo, "git", "lfs", "track", "*.safetensors")
        committed = []
        for version, shards in VERSIONS:
            tensors = read_safetensors(args.series / "safetensors" / f"{version}.safetensors")
            for repo in repos.values():
                save(repo, tensors, shards)
                run(repo, "git", "add", "-A")
                run(repo, "git", "-c", "user.name=b", "-c", "user.email=b@x.invalid", "commit", "-q",
                    "-m", f"{version} in {shards} file(s)")
            committed.append(digests(repos["gitmodel"]))
        packs = repos["gitmodel"] / ".git" / "gitmodel" / "packs"
        before = size(packs, "*.pack")
        said = run(repos["gitmodel"], "gitmodel", "repack").strip().splitlines()
        after = size(packs, "*.pack")
        lfs = size(repos["lfs"] / ".git" / "lfs" / "objects", "*")
        revs = subprocess.run(["git", "rev-list", "--reverse", "HEAD"], cwd=repos["gitmodel"],
                              check=True, capture_output=True, text=True).stdout.split()
        exact = True
        for rev, expected in zip(revs, committed):
            run(repos["gitmodel"], "git", "checkout", "-q", rev)
            exact &= digests(repos["gitmodel"]) == expected
        mib = lambda n: f"{n / 2**20:.1f} MiB"    # noqa: E731
        print(f"versions: {', '.join(f'{v} in {s} file(s)' for v, s in VERSIONS)}")
        print(f"gitmodel repack: {said[-1] if said else ''}")
        print(f"gitmodel packs: {mib(before)} before the repack, {mib(after)} after")
        print(f"git-lfs store:  {mib(lfs)}")
        print(f"gitmodel / git-lfs: {before / lfs:.3f} before the repack, {after / lfs:.3f} after")
        print(f"every version checks out byte for byte: {'yes' if exact else 'NO'}")
        if not exact:
            raise SystemExit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
