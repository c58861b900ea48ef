"""A walk through gitmodel in a throwaway repository: install, track, commit two versions of a
checkpoint, review the change with `git diff`, restore exact bytes with `git checkout`, push to
a folder remote with plain `git push`, and clone elsewhere with the exact weights.

    python scripts/demo.py [--keep]
"""

from __future__ import annotations

import argparse
import array
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path


def write_model(path: Path, seed: int, changed: set[str] = frozenset()) -> None:
    """A small safetensors checkpoint (3.6 MB of float32), written with the standard library."""
    shapes = {"embed.weight": (2000, 256)}
    for i in range(6):
        shapes[f"layers.{i}.weight"] = (256, 256)
        shapes[f"layers.{i}.bias"] = (256,)
    header, offset, blobs = {}, 0, []
    for name, shape in shapes.items():
        rng = random.Random(f"{seed if name in changed else 0}:{name}")
        count = 1
        for d in shape:
            count *= d
        data = array.array("f", (rng.gauss(0, 0.02) for _ in range(count))).tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def run(*cmd: str, cwd: Path, env: dict | None = None) -> str:
    print(f"$ {' '.join(cmd)}")
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    for text in (result.stdout, result.stderr):
        if text.strip():
            print(text.rstrip())
    result.check_returncode()
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the demo repository")
    args = parser.parse_args()
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    root = Path(tempfile.mkdtemp(prefix="gitmodel-demo-"))
    repo = root / "project"
    repo.mkdir()
    try:
        run("git", "init", "-q", "-b", "main", cwd=repo)
        run("git", "config", "user.name", "demo", cwd=repo)
        run("git", "config", "user.email", "demo@example.invalid", cwd=repo)
        run("gitmodel", "install", cwd=repo)
        run("gitmodel", "track", "*.safetensors", cwd=repo)

        model = repo / "model.safetensors"
        write_model(model, seed=0)
        v1 = hashlib.sha256(model.read_bytes()).hexdigest()
        run("git", "add", ".gitattributes", "model.safetensors", cwd=repo)
        run("git", "commit", "-q", "-m", "v1", cwd=repo)
        print("\n# git stores a small pointer, the model's summary:")
        run("git", "show", "HEAD:model.safetensors", cwd=repo)

        write_model(model, seed=1, changed={"layers.3.weight"})
        v2 = hashlib.sha256(model.read_bytes()).hexdigest()
        run("git", "commit", "-q", "-am", "v2: retrain layer 3", cwd=repo)
        print("\n# the diff of a commit names exactly the tensors that changed:")
        run("git", "diff", "HEAD~1", "HEAD", cwd=repo)
        print("\n# gitmodel diff says where and how much (add --format markdown for a pull request):")
        run("gitmodel", "diff", "HEAD~1", "HEAD", cwd=repo)

        run("git", "checkout", "-q", "HEAD~1", cwd=repo)
        assert hashlib.sha256(model.read_bytes()).hexdigest() == v1
        run("git", "checkout", "-q", "main", cwd=repo)
        assert hashlib.sha256(model.read_bytes()).hexdigest() == v2
        print("\n# checkouts restored the exact bytes of v1 and v2 (sha256 checked)")

        stored = sum(f.stat().st_size for f in (repo / ".git" / "gitmodel").rglob("*.pack"))
        size = model.stat().st_size
        print(f"# two versions of a {size / 1e6:.1f} MB checkpoint take {stored / 1e6:.1f} MB in the "
              f"store ({stored / (2 * size):.0%} of the two files)")
        run("gitmodel", "fsck", cwd=repo)

        print("\n# share it: a folder remote for the weights, a bare repository for the commits")
        run("gitmodel", "remote", "add", "origin", str(root / "team-store"), cwd=repo)
        run("git", "add", ".gitmodel", cwd=repo)
        run("git", "commit", "-q", "-m", "weights live in the team store", cwd=repo)
        run("git", "init", "-q", "--bare", "-b", "main", str(root / "hub.git"), cwd=root)
        run("git", "remote", "add", "origin", str(root / "hub.git"), cwd=repo)
        run("git", "push", "origin", "main", cwd=repo)      # the pre-push hook uploads the chunks

        print("\n# a teammate (own HOME, gitmodel installed for the user) clones with plain git")
        home = root / "teammate-home"
        home.mkdir()
        mate = dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1")
        run("gitmodel", "install", "--global", cwd=root, env=mate)
        run("git", "clone", "-q", str(root / "hub.git"), str(root / "clone"), cwd=root, env=mate)
        cloned = root / "clone" / "model.safetensors"
        assert hashlib.sha256(cloned.read_bytes()).hexdigest() == v2
        print("# the clone holds the exact v2 weights (sha256 checked)")
    finally:
        if args.keep:
            print(f"\nkept {repo}")
        else:
            shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
