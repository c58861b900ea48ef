"""Benchmark `gitmodel pull`: materializing checkpoints larger than memory would allow git to.

One run:

* a 4 GiB fp32 safetensors checkpoint, committed and pushed to a folder remote; a clone made
  with GITMODEL_SKIP_SMUDGE=1 (pointers only); `gitmodel pull` there. Measured: wall time, and
  the peak RSS of every process involved (gitmodel and the git commands it runs: the largest
  one, from getrusage(RUSAGE_CHILDREN) of a helper that runs nothing else), and for
  comparison the peak RSS of `git checkout -- FILE` of the same file through git's filter;
* a 1 GiB checkpoint the same way, against git-lfs: the same file committed with git-lfs,
  pushed to a bare repository (file://), cloned with GIT_LFS_SKIP_SMUDGE=1, `git lfs pull`.
  Both pulls start from the same state: objects on the remote, pointers in the work tree.

After each pull the file's sha256 is checked and `git status --porcelain` must be empty.
Targets (issue 13): 4 GiB pull peak RSS <= 512 MiB; 1 GiB pull <= 0.5x `git lfs pull`.

Run:  python scripts/bench_pull.py [--big-gib 4] [--small-gib 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_foundation import make_env, run, sha256_file, write_checkpoint  # noqa: E402

RSS_TARGET_MIB = 512
TIME_TARGET = 0.5

_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": done.returncode, "seconds": time.perf_counter() - start,
                  "rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "stderr": done.stderr[-2000:]}))
"""


def measured(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Run cmd in a helper process: its wall time and the peak RSS of the largest process
    among cmd and everything it ran."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], cwd=cwd, env=env,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}: {result['stderr']}")
    return result


def published(work: Path, name: str, env: dict, size: int, lfs: bool) -> tuple[Path, str]:
    """A repository with one checkpoint of `size` bytes pushed to a bare repository (and, for
    gitmodel, a folder remote); returns (bare repository, sha256)."""
    repo, hub = work / name, work / f"{name}.git"
    repo.mkdir()
    run(["git", "init", "-q", "--bare", "-b", "main", str(hub)], work, env)
    run(["git", "init", "-q", "-b", "main"], repo, env)
    if lfs:
        run(["git", "lfs", "install", "--local"], repo, env)
        run(["git", "lfs", "track", "*.safetensors"], repo, env)
    else:
        run(["gitmodel", "install"], repo, env)
        run(["gitmodel", "track", "*.safetensors"], repo, env)
        run(["gitmodel", "remote", "add", "origin", str(work / f"{name}-store")], repo, env)
    digest = write_checkpoint(repo / "model.safetensors", "F32", size, max(64, size >> 24))
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "model"], repo, env)
    run(["git", "remote", "add", "origin", f"file://{hub}"], repo, env)
    run(["git", "push", "-q", "origin", "main"], repo, env)
    return hub, digest


def pointer_clone(hub: Path, dest: Path, env: dict, lfs: bool) -> Path:
    skip = {"GIT_LFS_SKIP_SMUDGE": "1"} if lfs else {"GITMODEL_SKIP_SMUDGE": "1"}
    run(["git", "clone", "-q", f"file://{hub}", str(dest)], dest.parent, dict(env, **skip))
    run(["git", "lfs", "install", "--local"] if lfs else ["gitmodel", "install"], dest, env)
    return dest


def check(dest: Path, digest: str, env: dict) -> bool:
    return (sha256_file(dest / "model.safetensors") == digest and
            run(["git", "status", "--porcelain"], dest, env) == "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-gib", type=float, default=4)
    parser.add_argument("--small-gib", type=float, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pull-", dir=args.workdir))
    env = dict(make_env(work), GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
    try:
        big = int(args.big_gib * (1 << 30))
        hub, digest = published(work, "big", env, big, lfs=False)
        clone = pointer_clone(hub, work / "big-clone", env, lfs=False)
        pull = measured(["gitmodel", "pull", "-q"], clone, env)
        big_ok = check(clone, digest, env)
        (clone / "model.safetensors").unlink()
        through_git = measured(["git", "checkout", "--", "model.safetensors"], clone, env)
        big_ok &= check(clone, digest, env)
        shutil.rmtree(clone)
        shutil.rmtree(work / "big")

        small = int(args.small_gib * (1 << 30))
        hub, digest = published(work, "small", env, small, lfs=False)
        lfs_hub, lfs_digest = published(work, "small-lfs", env, small, lfs=True)
        assert digest == lfs_digest
        rows = []
        for attempt in range(3):
            gm = pointer_clone(hub, work / f"gm-{attempt}", env, lfs=False)
            lf = pointer_clone(lfs_hub, work / f"lfs-{attempt}", env, lfs=True)
            a = measured(["gitmodel", "pull", "-q"], gm, env)
            b = measured(["git", "lfs", "pull"], lf, env)
            rows.append((a["seconds"], b["seconds"], check(gm, digest, env) and check(lf, digest, env),
                         a["rss_kib"], b["rss_kib"]))
            shutil.rmtree(gm)
            shutil.rmtree(lf)

        mib = lambda kib: kib / 1024          # noqa: E731
        print(f"{args.big_gib:g} GiB checkpoint: gitmodel pull {pull['seconds']:.1f} s, peak RSS "
              f"{mib(pull['rss_kib']):.0f} MiB (target <= {RSS_TARGET_MIB}); git checkout of the "
              f"same file through the filter: {through_git['seconds']:.1f} s, peak RSS "
              f"{mib(through_git['rss_kib']):.0f} MiB; exact and status clean: {big_ok}")
        ratios = sorted(a / b for a, b, *_ in rows)
        for a, b, ok, ra, rb in rows:
            print(f"{args.small_gib:g} GiB: gitmodel pull {a:.2f} s ({mib(ra):.0f} MiB), git lfs pull "
                  f"{b:.2f} s ({mib(rb):.0f} MiB), ratio {a / b:.3f}; exact and clean: {ok}")
        median = ratios[len(ratios) // 2]
        print(f"median ratio {median:.3f} (target <= {TIME_TARGET})")
        ok = big_ok and all(r[2] for r in rows) and mib(pull["rss_kib"]) <= RSS_TARGET_MIB \
            and median <= TIME_TARGET
        print("targets met" if ok else "TARGET NOT MET")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
