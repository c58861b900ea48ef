"""Benchmark gitmodel's merge driver on two 1 GiB checkpoints of 256 fp32 tensors.

In one fresh repository:

* a base commit, a branch that rewrites the odd-numbered tensors and a main commit that
  rewrites the even-numbered ones: `git merge` (the driver, then git's checkout of the merged
  file over ours') against a plain `git checkout` of another version of the file over the one
  in the work tree, as the merge does, in the same run (target <= 1.2x); a checkout into a
  work tree without the file is printed beside it; the merged file's sha256 against one
  written directly;
* branches that rewrite every tensor on both sides: the driver alone with
  GITMODEL_MERGE_STRATEGY=average, run as git runs it (pointer files in, pointer out), in
  MB/s of checkpoint (target >= 300);
* peak RSS of the driver in both (target <= 256 MiB), with scripts/rss_wrap.py, in one more
  run of each: the timed runs use the driver as `gitmodel install` configures it, so the
  wrapper's own start-up is not counted as the merge's.

Usage: python scripts/bench_merge.py [--size-mib 1024] [--tensors 256] [--runs 3] [--keep]
Needs git, numpy and an installed gitmodel. Timings follow bench_foundation.py's method
(dirty pages flushed and memory warmed before every timed command); each timing is the median
of --runs runs, and the average merge's packs are removed after each run so every run stores
its result anew.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_foundation import (RSS_WRAP, make_env, run, sha256_file, timed,  # noqa: E402
                              warm_memory, write_checkpoint)

MODEL = "model.safetensors"
TARGETS = {"merge_vs_checkout": 1.2, "average_mb_s": 300.0, "driver_rss_mib": 256.0}


def commit(repo: Path, env: dict, message: str) -> None:
    run(["git", "add", MODEL], repo, env)
    run(["git", "commit", "-q", "-m", message], repo, env)


def rss_report(path: Path) -> float:
    values = [int(v) for v in path.read_text().split()] if path.exists() else []
    return max(values) / 1024 if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--tensors", type=int, default=256)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--runs", type=int, default=3, help="repetitions of each timing (median)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gitmodel-bench-merge-", dir="/tmp"))
    try:
        env = make_env(work)
        env.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
                   GIT_COMMITTER_EMAIL="b@b")
        repo = work / "repo"
        repo.mkdir()
        run(["git", "init", "-q", "-b", "main"], repo, env)
        run(["gitmodel", "install"], repo, env)
        run(["gitmodel", "track", "*.safetensors"], repo, env)
        run(["git", "add", ".gitattributes"], repo, env)
        report = work / "driver.rss"
        installed = subprocess.run(["git", "config", "merge.gitmodel.driver"], cwd=repo, env=env,
                                   capture_output=True, text=True, check=True).stdout.strip()
        # The command it runs, under rss_wrap, for a merge of its own after the timed ones: the
        # wrapper's own start-up is the measurement's, not the merge's.
        wrapped = " ".join([shlex.quote(sys.executable), "-S", shlex.quote(str(RSS_WRAP)),
                            shlex.quote(str(report)), shlex.quote(sys.executable),
                            "-P -m gitmodel merge-driver %O %A %B %L -- %P"])
        size = args.size_mib << 20
        write = lambda path, version_of: write_checkpoint(path, "F32", size, args.tensors,
                                                          version_of=version_of)
        print(f"[bench] writing three {args.size_mib} MiB checkpoints", file=sys.stderr)
        write(repo / MODEL, lambda i: 0)
        commit(repo, env, "base")
        run(["git", "switch", "-q", "-c", "theirs"], repo, env)
        write(repo / MODEL, lambda i: 2 if i % 2 else 0)
        commit(repo, env, "theirs: odd tensors")
        run(["git", "switch", "-q", "main"], repo, env)
        write(repo / MODEL, lambda i: 1 if i % 2 == 0 else 0)
        commit(repo, env, "main: even tensors")
        expected = write(work / "expected.safetensors", lambda i: 2 if i % 2 else 1)
        file_size = (repo / MODEL).stat().st_size

        checkouts, replacing, merges = [], [], []
        for _ in range(args.runs):
            (repo / MODEL).unlink()
            checkouts.append(timed(["git", "checkout", "--", MODEL], repo, env))
            replacing.append(timed(["git", "checkout", "theirs", "--", MODEL], repo, env))
            run(["git", "checkout", "HEAD", "--", MODEL], repo, env)       # ours again
            # The index is written in the same second as the file, so git would re-clean the
            # file to be sure it is unchanged before merging; a moment later it trusts the stat.
            time.sleep(2)
            run(["git", "update-index", "--refresh"], repo, env)
            merges.append(timed(["git", "merge", "-q", "--no-edit", "theirs"], repo, env))
            exact = sha256_file(repo / MODEL) == expected
            run(["git", "reset", "-q", "--hard", "HEAD~1"], repo, env)
        checkout_s, merge_s = statistics.median(replacing), statistics.median(merges)
        missing_s = statistics.median(checkouts)
        run(["git", "config", "merge.gitmodel.driver", wrapped], repo, env)
        report.unlink(missing_ok=True)
        run(["git", "merge", "-q", "--no-edit", "theirs"], repo, env)
        one_sided_rss = rss_report(report)
        run(["git", "config", "merge.gitmodel.driver", installed], repo, env)

        run(["git", "switch", "-q", "-c", "both-theirs", "HEAD~2"], repo, env)
        write(repo / MODEL, lambda i: 2)
        commit(repo, env, "theirs: every tensor")
        run(["git", "switch", "-q", "-c", "both-ours", "HEAD~1"], repo, env)
        write(repo / MODEL, lambda i: 1)
        commit(repo, env, "ours: every tensor")
        pointers = work / "pointers"
        pointers.mkdir()
        for name, rev in (("O", "HEAD~1"), ("A", "HEAD"), ("B", "both-theirs")):
            (pointers / name).write_bytes(subprocess.run(["git", "show", f"{rev}:{MODEL}"], cwd=repo, env=env,
                                                         capture_output=True, check=True).stdout)
        average_env = dict(env, GITMODEL_MERGE_STRATEGY="average")
        packs = repo / ".git" / "gitmodel" / "packs"
        averages, average_rss = [], float("nan")
        for _ in range(args.runs + 1):
            before = set(packs.iterdir())
            (pointers / "A.run").write_bytes((pointers / "A").read_bytes())
            report.unlink(missing_ok=True)
            os.sync()
            warm_memory()
            start = time.perf_counter()
            driver = [sys.executable, "-P", "-m", "gitmodel", "merge-driver", str(pointers / "O"),
                      str(pointers / "A.run"), str(pointers / "B"), "7", "--", MODEL]
            measuring = len(averages) == args.runs     # one more run, under rss_wrap
            run([sys.executable, "-S", str(RSS_WRAP), str(report), *driver] if measuring else driver,
                repo, average_env)
            if measuring:
                average_rss = rss_report(report)
            else:
                averages.append(time.perf_counter() - start)
            for path in set(packs.iterdir()) - before:     # the next run stores the result anew
                path.chmod(0o644)
                path.unlink()
        average_s = statistics.median(averages)

        rows = [
            ("git checkout of another version over the file (s)", f"{checkout_s:.3f}"),
            ("git checkout into a work tree without the file (s)", f"{missing_s:.3f}"),
            ("git merge, one side per tensor (s)", f"{merge_s:.3f}"),
            ("  merge / checkout over the file", f"{merge_s / checkout_s:.3f}"),
            ("  merge / checkout without the file", f"{merge_s / missing_s:.3f}"),
            ("  merged file exact (sha256)", str(exact)),
            ("  driver peak RSS (MiB)", f"{one_sided_rss:.1f}"),
            ("average merge driver, every tensor both sides (s)", f"{average_s:.3f}"),
            ("  MB/s of checkpoint", f"{file_size / average_s / 1e6:.0f}"),
            ("  driver peak RSS (MiB)", f"{average_rss:.1f}"),
        ]
        print(f"\n{args.size_mib} MiB fp32, {args.tensors} tensors")
        for label, value in rows:
            print(f"  {label:<52} {value}")
        checks = [("merge / checkout", merge_s / checkout_s, TARGETS["merge_vs_checkout"], "<="),
                  ("average MB/s", file_size / average_s / 1e6, TARGETS["average_mb_s"], ">="),
                  ("one-sided driver RSS MiB", one_sided_rss, TARGETS["driver_rss_mib"], "<="),
                  ("average driver RSS MiB", average_rss, TARGETS["driver_rss_mib"], "<=")]
        print("\nTargets")
        for label, value, target, op in checks:
            ok = value <= target if op == "<=" else value >= target
            print(f"  [{'PASS' if ok else 'FAIL'}] {label:<28} {value:.3f} ({op} {target})")
        print(f"  [{'PASS' if exact else 'FAIL'}] merged file exact")
        return 0
    finally:
        if args.keep:
            print(f"[bench] kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
