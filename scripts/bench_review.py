"""Benchmark `gitmodel diff` of two 1 GiB checkpoints with every tensor changed, current code
against a baseline source tree, in the same run (issue 14).

Target (issue 14): `gitmodel diff` of two 1 GiB checkpoints with every tensor changed still
finishes within 2x of today's time for the same comparison. "Today" is --baseline-rev
(default 43c78eb, the commit before the issue 14 work), extracted with
`git -C PROJECT archive REV | tar -x` into a temporary folder.

In one fresh repository (`gitmodel install`, `gitmodel track '*.safetensors'`):

* a commit of an fp32 safetensors checkpoint of --size-mib MiB in --tensors tensors, then a
  commit of a second version in which every tensor changed (--change perturb, the default:
  every weight w becomes w + N(0, 1e-4), a fine-tune step; --change random: new values);
* `gitmodel diff HEAD~1 HEAD` in the three output formats (text, --format markdown,
  --format json), run as `python -m gitmodel` with PYTHONPATH set to the project's source
  tree (the current code, uncommitted edits included) or to the baseline tree. Both read the
  same repository and store (--current-rev REV takes the current code from a revision,
  extracted as the baseline is, instead of the work tree: a work tree mid-edit may not run).
  Baseline and current runs alternate (and which goes first alternates too) so noise hits
  both alike; every timed command follows bench_foundation.py's method (dirty pages flushed
  and memory warmed first);
* one untimed warm-up run per format and side first (it compiles the baseline tree's
  bytecode and reads the store into the page cache), wrapped with scripts/rss_wrap.py: its
  peak RSS is reported, and its output is compared between the sides (information only:
  the new review code is meant to change the output);
* with --plot, and if the current code's `gitmodel diff --help` lists --plot,
  `gitmodel diff --plot FILE.png HEAD~1 HEAD` too (against the baseline's --plot when it has
  one, else against the baseline's text diff, for information).

It prints the median of --runs runs per format and side, the ratio current / baseline and
whether it is within TARGETS["diff_vs_baseline"]; for judging noise, also the ratio of the
fastest runs, the median CPU time (user + sys) of each side and every run's time. On a shared
2-core machine single runs of the same code varied 5-21 s at 1 GiB: use more --runs there.

Usage: python scripts/bench_review.py [--size-mib 1024] [--tensors 256] [--runs 3]
                                      [--baseline-rev 43c78eb] [--change perturb|random]
                                      [--current-rev REV] [--plot] [--keep]
Needs git, numpy and the project's dependencies in the running interpreter (gitmodel runs
with sys.executable). Needs about 4x --size-mib of free space in /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_foundation import (RSS_WRAP, SEED, make_env, run, safetensors_header,  # noqa: E402
                              tensor_blocks, tensor_shapes, timed, warm_memory, write_checkpoint)

PROJECT = Path(__file__).resolve().parent.parent
MODEL = "model.safetensors"
TARGETS = {"diff_vs_baseline": 2.0}
FORMATS = {"text": [], "markdown": ["--format", "markdown"], "json": ["--format", "json"]}
SIDES = ("baseline", "current")
PERTURB_STD = 1e-4          # against weights of std 0.02: a fine-tune step's size


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def commit(repo: Path, env: dict, message: str) -> None:
    run(["git", "add", MODEL], repo, env)
    run(["git", "commit", "-q", "-m", message], repo, env)


def write_perturbed(path: Path, size_bytes: int, n_tensors: int) -> None:
    """bench_foundation's version-0 checkpoint (same shapes, same values) with independent
    N(0, PERTURB_STD) noise added to every weight: every tensor changes, slightly."""
    shapes = tensor_shapes(size_bytes, n_tensors, 4)
    path.unlink(missing_ok=True)
    with open(path, "wb") as fh:
        fh.write(safetensors_header("F32", shapes))
        for i, shape in enumerate(shapes):
            noise = np.random.default_rng([SEED, i, 1_000_001])
            for block in tensor_blocks(i, shape, "F32", 0):
                values = np.frombuffer(block, "<f4").copy()
                values += noise.standard_normal(values.shape, dtype=np.float32) * np.float32(PERTURB_STD)
                fh.write(values.tobytes())


def rss_mib(path: Path) -> float:
    values = [int(v) for v in path.read_text().split()] if path.exists() else []
    return max(values) / 1024 if values else float("nan")


def extract_tree(rev: str, dest: Path) -> str:
    """`git -C PROJECT archive REV | tar -x -C dest`; returns the full commit id. Reads the
    project's repository only."""
    commit_id = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                               capture_output=True, text=True, check=True).stdout.strip()
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(PROJECT), "archive", commit_id], stdout=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=False)
    archive.stdout.close()
    if archive.wait() != 0 or tar.returncode != 0:
        raise RuntimeError(f"git archive {commit_id} | tar -x failed")
    if not (dest / "gitmodel" / "cli.py").exists():
        raise RuntimeError(f"{rev} has no gitmodel/cli.py")
    return commit_id


def side_env(env: dict, tree: Path, pycache: Path) -> dict:
    """gitmodel imported from `tree`: PYTHONPATH comes before site-packages, and the editable
    install's finder is appended to sys.meta_path, after the path finder. Both sides run from
    bytecode compiled once into `pycache` (nothing is written into the source trees)."""
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join([str(tree)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out["PYTHONPYCACHEPREFIX"] = str(pycache)
    return out


def gitmodel_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gitmodel", *args]


def current_state() -> str:
    """The project's HEAD and whether gitmodel/ differs from it (no index refresh, no locks)."""
    git_env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    head = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"], env=git_env,
                          capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(PROJECT), "status", "--porcelain", "--", "gitmodel"],
                           env=git_env, capture_output=True, text=True, check=False).stdout.strip()
    return f"work tree of {PROJECT} (HEAD {head}{', gitmodel/ modified' if dirty else ''})"


def changed_tensors(json_text: str) -> tuple[int, int] | None:
    """(tensors reported changed, tensors) from `gitmodel diff --format json`, if it parses."""
    try:
        data = json.loads(json_text)
        files = data if isinstance(data, list) else data.get("checkpoints", data.get("files", []))
        tensors = [t for f in files for t in f.get("tensors", [])]
        return sum(1 for t in tensors if t.get("status") == "changed"), len(tensors)
    except (ValueError, AttributeError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--tensors", type=int, default=256)
    p.add_argument("--runs", type=int, default=3, help="repetitions of each timing (median)")
    p.add_argument("--baseline-rev", default="43c78eb", help="the code to compare against")
    p.add_argument("--current-rev", help="extract this revision as the current code instead of "
                   "using the project's work tree")
    p.add_argument("--change", choices=("perturb", "random"), default="perturb",
                   help="second version: every weight perturbed slightly, or all new values")
    p.add_argument("--plot", action="store_true", help="also time `gitmodel diff --plot FILE.png` "
                   "if the current code has it")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gitmodel-bench-review-", dir="/tmp"))
    try:
        env = make_env(work)
        env.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
                   GIT_COMMITTER_EMAIL="b@b")
        baseline_id = extract_tree(args.baseline_rev, work / "baseline")
        trees = {"baseline": work / "baseline", "current": PROJECT}
        if args.current_rev:
            current_id = extract_tree(args.current_rev, work / "current")
            trees["current"] = work / "current"
        envs = {side: side_env(env, trees[side], work / "pycache") for side in SIDES}

        repo = work / "repo"
        repo.mkdir()
        run(["git", "init", "-q", "-b", "main"], repo, env)
        run(["gitmodel", "install"], repo, env)
        run(["gitmodel", "track", "*.safetensors"], repo, env)
        run(["git", "add", ".gitattributes"], repo, env)
        for side in SIDES:                     # each side imports the tree it is meant to
            where = Path(run([sys.executable, "-c", "import gitmodel; print(gitmodel.__file__)"],
                             repo, envs[side]).strip()).resolve()
            if not where.is_relative_to(trees[side].resolve()):
                raise RuntimeError(f"{side}: gitmodel imported from {where}, not {trees[side]}")

        size = args.size_mib << 20
        log(f"writing and committing two {args.size_mib} MiB checkpoints ({args.tensors} tensors)")
        write_checkpoint(repo / MODEL, "F32", size, args.tensors, version_of=lambda i: 0)
        commit(repo, env, "v0")
        if args.change == "perturb":
            write_perturbed(repo / MODEL, size, args.tensors)
        else:
            write_checkpoint(repo / MODEL, "F32", size, args.tensors, version_of=lambda i: 1)
        commit(repo, env, "v1: every tensor changed")

        cases = {name: ["diff", *extra, "HEAD~1", "HEAD"] for name, extra in FORMATS.items()}
        plot_note = ""
        if args.plot:
            has_plot = {side: "--plot" in run(gitmodel_cmd("diff", "--help"), repo, envs[side])
                        for side in SIDES}
            if has_plot["current"]:
                cases["plot"] = ["diff", "--plot", "PLOT", "HEAD~1", "HEAD"]
                if not has_plot["baseline"]:
                    plot_note = "baseline has no --plot: plot compared with the baseline's text diff"
            else:
                plot_note = "--plot: the current code's `gitmodel diff --help` has no --plot; not timed"

        def command(side: str, case: str) -> list[str]:
            argv_ = cases[case]
            if case == "plot":
                if side == "baseline" and plot_note:
                    argv_ = cases["text"]
                else:
                    argv_ = [str(work / f"plot-{side}.png") if a == "PLOT" else a for a in argv_]
            return gitmodel_cmd(*argv_)

        log("warm-up runs (peak RSS, outputs)")
        rss: dict[tuple[str, str], float] = {}
        outputs: dict[tuple[str, str], str] = {}
        for case in cases:
            for side in SIDES:
                report = work / f"{side}-{case}.rss"
                os.sync()
                warm_memory()
                outputs[side, case] = run([sys.executable, "-S", str(RSS_WRAP), str(report),
                                           *command(side, case)], repo, envs[side])
                rss[side, case] = rss_mib(report)

        times: dict[tuple[str, str], list[float]] = {(s, c): [] for s in SIDES for c in cases}
        cpu: dict[tuple[str, str], list[float]] = {(s, c): [] for s in SIDES for c in cases}
        for i in range(args.runs):
            log(f"run {i + 1} of {args.runs}")
            for j, case in enumerate(cases):
                order = SIDES if (i + j) % 2 == 0 else SIDES[::-1]
                for side in order:
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    times[side, case].append(timed(command(side, case), repo, envs[side]))
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu[side, case].append(after.ru_utime + after.ru_stime
                                           - before.ru_utime - before.ru_stime)

        median = {key: statistics.median(values) for key, values in times.items()}
        fastest = {key: min(values) for key, values in times.items()}
        cpu_median = {key: statistics.median(values) for key, values in cpu.items()}
        file_size = (repo / MODEL).stat().st_size
        print(f"\ngitmodel diff HEAD~1 HEAD: {args.size_mib} MiB fp32, {args.tensors} tensors, "
              f"every tensor changed ({args.change}); median of {args.runs} run(s)")
        print(f"  baseline: {args.baseline_rev} ({baseline_id[:12]})")
        print(f"  current:  {f'{args.current_rev} ({current_id[:12]})' if args.current_rev else current_state()}")
        counted = changed_tensors(outputs["current", "json"])
        if counted:
            print(f"  tensors reported changed (current, json): {counted[0]} of {counted[1]}")
        print(f"\n  {'':<9} {'wall s, median':^25} {'fastest run':^11} {'CPU s, median':^25} "
              f"{'peak RSS MiB':^13}")
        print(f"  {'format':<9} {'base':>7} {'current':>7} {'ratio':>9} {'ratio':>11} {'base':>7} "
              f"{'current':>7} {'ratio':>9} {'base':>6} {'cur':>6}  {'GB/s':>5}  same output")
        for case in cases:
            b, c = median["baseline", case], median["current", case]
            cb, cc = cpu_median["baseline", case], cpu_median["current", case]
            same = "n/a" if case == "plot" else ("yes" if outputs["baseline", case] == outputs["current", case]
                                                   else "no")
            print(f"  {case:<9} {b:>7.2f} {c:>7.2f} {c / b:>9.3f} "
                  f"{fastest['current', case] / fastest['baseline', case]:>11.3f} {cb:>7.2f} {cc:>7.2f} "
                  f"{cc / cb:>9.3f} {rss['baseline', case]:>6.0f} {rss['current', case]:>6.0f}  "
                  f"{2 * file_size / c / 1e9:>5.2f}  {same}")
        print("  (ratio: current / baseline; CPU: user + sys of the command and its children;\n"
              "   GB/s: both versions' bytes over the current code's median wall time)")
        print("  each run, wall s:")
        for case in cases:
            print(f"    {case:<9} baseline {' '.join(f'{t:.2f}' for t in times['baseline', case])}"
                  f"   current {' '.join(f'{t:.2f}' for t in times['current', case])}")
        if args.plot and "plot" in cases:
            png = work / "plot-current.png"
            print(f"  plot: {png.name} {f'written, {png.stat().st_size} bytes' if png.exists() else 'NOT written'}")
        if plot_note:
            print(f"  {plot_note}")

        print("\nTargets")
        for case in FORMATS:
            ratio = median["current", case] / median["baseline", case]
            ok = ratio <= TARGETS["diff_vs_baseline"]
            print(f"  [{'PASS' if ok else 'FAIL'}] diff {case:<9} current / baseline {ratio:.3f} "
                  f"(<= {TARGETS['diff_vs_baseline']}; median wall time)")
        if "plot" in cases:
            ratio = median["current", "plot"] / median["baseline", "plot"]
            print(f"  [info] diff --plot current / baseline {'--plot' if not plot_note else 'text'} "
                  f"{ratio:.3f}")
        return 0
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
