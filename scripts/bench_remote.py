"""Benchmark gitmodel push/fetch to S3 against plain s3fs put/get of the raw file.

One run, one loopback S3 server, both clients side by side:

* an S3-compatible server (moto) is started in this process on 127.0.0.1 behind a WSGI
  middleware that records every HTTP request: method, S3 operation, request body bytes
  received and response body bytes sent (HTTP headers are not counted);
* a synthetic fp32 safetensors checkpoint (256 tensors, values N(0, 0.02), default 1 GiB) is
  generated with scripts/bench_foundation.py's writer;
* gitmodel, through the real git binary in a temporary repository: ``gitmodel install``,
  ``gitmodel track '*.safetensors'``, ``gitmodel remote add origin s3://bench/models``, commit
  (not timed), then timed ``gitmodel push``; then every 10th tensor gets new values (~10% of
  the bytes), commit, timed ``gitmodel push`` again; the commits go to a local bare repository
  (``GITMODEL_SKIP_PUSH=1 git push``), a fresh ``git clone`` made with
  ``GITMODEL_SKIP_SMUDGE=1`` leaves pointers, then timed ``gitmodel fetch`` (into
  .git/gitmodel) and timed ``gitmodel pull`` (restores the work tree file, sha256 checked);
* s3fs, in the same run against the same server: timed ``put_file`` of version 1 and of
  version 2 (the whole file again, same key) and ``get_file`` of the result (sha256 checked),
  all with s3fs's defaults (multipart upload in 50 MiB parts, download in concurrent 50 MiB
  ranged GETs); for information also ``get_file(..., max_concurrency=1)`` (one plain GET).

Bytes over the wire are HTTP bodies only: request bodies received by the server (uploads) and
response bodies the server managed to write to the socket (downloads).  The latter matters for
s3fs's get_file, which opens a plain GET, reads the headers, closes it and then downloads in
concurrent ranged GETs: only what was written before the close is counted (a few MiB of
socket buffers), not the whole object that GET would have returned.

Both clients run as separate Python processes (gitmodel's CLI; s3fs through this script's
hidden ``--s3fs-op`` mode), so each timing includes interpreter start-up and imports, and
neither client shares the GIL with the server.  The s3fs helper also reports the time of the
put/get call alone (shown below the table).

It prints a table (time, requests, bytes over the wire, ratio gitmodel/s3fs) and checks two
targets: the first upload takes <= 32 PUT requests, and the second version uploads <= 15% of
the file's bytes.  ``--out FILE`` writes everything as JSON too.

Caveat: the server is moto, pure Python.  It keeps each object in a SpooledTemporaryFile
(in RAM up to ~5 MiB, larger ones spill to an unlinked temp file in $TMPDIR, i.e. the page
cache), parses, hashes and copies every body in Python, and reassembles multipart uploads in
Python.  Times are of client + moto together on one machine, with no network latency or
bandwidth limit: read them as relative, not as what a real S3 endpoint would give.  Request
counts and byte counts do carry over to real S3.  Two moto costs grow with the object size
and weigh on s3fs's large single object far more than on gitmodel's ~96 MiB packs (the
per-phase breakdown shows the server time of each S3 operation):
  - every ranged GET reads the WHOLE object out of its temp file (under a per-object lock)
    before slicing, so s3fs's ~21 concurrent 50 MiB range reads of a 1 GiB object copy about
    21 GiB inside moto, one at a time; hence the extra 1-stream get row;
  - CompleteMultipartUpload concatenates all parts in a Python bytearray and stores the
    result again (about 10 s for 1 GiB here), a cost a real S3 does not have.

Run:  .venv/bin/python scripts/bench_remote.py [--size-mib 1024] [--out results.json]
      (needs git, numpy, s3fs and moto[server]; disk: about 5x the checkpoint size)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR))

MIB = 1 << 20
MODEL = "model.safetensors"
N_TENSORS = 256
MODIFIED_EVERY = 10
BUCKET = "bench"
GM_URL = f"s3://{BUCKET}/models"
RAW_KEY = f"{BUCKET}/raw/{MODEL}"
METHODS = ("PUT", "GET", "POST", "HEAD", "DELETE")
TARGET_FIRST_PUTS = 32
TARGET_SECOND_FRAC = 0.15

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The S3 server and its request counter
# --------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    op: str
    path: str
    query: str
    range: str = ""            # Range header of a GET
    bytes_in: int = 0          # request body bytes received
    bytes_out: int = 0         # response body bytes sent
    status: str = ""
    done: bool = False
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0       # from arrival to the last byte of the answer


def s3_operation(method: str, path: str, query: str, has_range: bool) -> str:
    """Name the S3 operation of a path-style request (for the breakdown only)."""
    q = parse_qs(query, keep_blank_values=True)
    has_key = "/" in path.strip("/")
    if method == "PUT":
        if "partNumber" in q:
            return "UploadPart"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in q else "POST"
    if method == "GET":
        if not has_key:
            return "ListObjects" if path.strip("/") else "ListBuckets"
        return "GetObject(range)" if has_range else "GetObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "DELETE":
        if "uploadId" in q:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    return method


class _CountingInput:
    """wsgi.input wrapper counting the bytes the application reads."""

    def __init__(self, stream, record: Request):
        self._stream, self._record = stream, record

    def read(self, *args):
        data = self._stream.read(*args)
        self._record.bytes_in += len(data)
        return data

    def readline(self, *args):
        data = self._stream.readline(*args)
        self._record.bytes_in += len(data)
        return data

    def readlines(self, *args):
        lines = self._stream.readlines(*args)
        self._record.bytes_in += sum(len(line) for line in lines)
        return lines

    def __iter__(self):
        for line in self._stream:
            self._record.bytes_in += len(line)
            yield line

    def __getattr__(self, name):
        return getattr(self._stream, name)


SLICE = 1 << 20


class _CountingBody:
    """Response iterable counting the bytes actually written; the request is complete on
    close().  The body is handed to the server in SLICE pieces and a piece counts once the
    server comes back for the next one, i.e. once its write to the socket succeeded: a client
    that closes the connection early (s3fs's get_file does, see the docstring) is not charged
    for the part of the body it never took."""

    def __init__(self, body, record: Request):
        self._body, self._record = body, record

    def __iter__(self):
        for chunk in self._body:
            for start in range(0, len(chunk), SLICE):
                piece = chunk[start:start + SLICE] if len(chunk) > SLICE else chunk
                yield piece
                self._record.bytes_out += len(piece)

    def close(self):
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._record.seconds = time.perf_counter() - self._record.started
            self._record.done = True


class CountingApp:
    """WSGI middleware recording every request (see Request)."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.requests: list[Request] = []

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        record = Request(method, s3_operation(method, path, query, "HTTP_RANGE" in environ),
                         path, query, environ.get("HTTP_RANGE", ""))
        with self.lock:
            self.requests.append(record)
        content_length = environ.get("CONTENT_LENGTH")
        declared = int(content_length) if content_length and content_length.isdigit() else None
        environ["wsgi.input"] = _CountingInput(environ["wsgi.input"], record)

        def counting_start_response(status, headers, exc_info=None):
            record.status = status
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, counting_start_response)
        except BaseException:
            record.seconds = time.perf_counter() - record.started
            record.done = True
            raise
        finally:
            # The wire carries the declared body even if the application read less of it.
            if declared is not None:
                record.bytes_in = max(record.bytes_in, declared)
        return _CountingBody(body, record)

    def mark(self) -> int:
        with self.lock:
            return len(self.requests)

    def since(self, mark: int, settle: float = 5.0) -> list[Request]:
        """Requests from `mark` on, once every one of them has been answered."""
        deadline = time.monotonic() + settle
        while True:
            with self.lock:
                batch = list(self.requests[mark:])
            if all(r.done for r in batch) or time.monotonic() > deadline:
                return batch
            time.sleep(0.01)


def start_server() -> tuple[CountingApp, object, threading.Thread]:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication, MotoRequestHandler, create_backend_app)
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True,
                         request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    return app, server, thread


# --------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    op_seconds: float | None = None     # s3fs helper: the put/get call alone
    requests: dict[str, int] = field(default_factory=dict)      # by method
    operations: dict[str, int] = field(default_factory=dict)    # by S3 operation
    server_seconds: dict[str, float] = field(default_factory=dict)  # summed, by operation
    bytes_in: int = 0                   # received by the server (uploaded)
    bytes_out: int = 0                  # sent by the server (downloaded)
    errors: list[str] = field(default_factory=list)             # non-2xx answers
    log: list[dict] = field(default_factory=list)               # every request
    output: str = ""

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def count(self, method: str) -> int:
        return self.requests.get(method, 0)


def summarize(name: str, batch: list[Request], seconds: float) -> Phase:
    phase = Phase(name, seconds)
    phase.requests = {m: 0 for m in METHODS}
    for r in batch:
        phase.requests[r.method] = phase.requests.get(r.method, 0) + 1
        phase.operations[r.op] = phase.operations.get(r.op, 0) + 1
        phase.server_seconds[r.op] = phase.server_seconds.get(r.op, 0.0) + r.seconds
        phase.bytes_in += r.bytes_in
        phase.bytes_out += r.bytes_out
        phase.log.append({"op": r.op, "path": r.path, "query": r.query, "range": r.range,
                          "status": r.status, "bytes_in": r.bytes_in, "bytes_out": r.bytes_out,
                          "seconds": round(r.seconds, 4)})
        if r.status and not r.status.startswith("2"):
            phase.errors.append(f"{r.method} {r.path}?{r.query} -> {r.status}")
    return phase


class Bench:
    def __init__(self, counter: CountingApp, env: dict[str, str], warm: bool):
        self.counter, self.env, self.warm = counter, env, warm
        self.phases: dict[str, Phase] = {}

    def run(self, cmd: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> str:
        env = dict(self.env, **(extra_env or {}))
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"command failed ({proc.returncode}) in {cwd}: {' '.join(cmd)}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc.stdout + proc.stderr

    def measure(self, name: str, cmd: list[str], cwd: Path,
                extra_env: dict[str, str] | None = None, timed: bool = True) -> Phase:
        """Run one command as a phase: wall time plus the server's view of it."""
        if timed:
            os.sync()
            if self.warm:
                from bench_foundation import warm_memory
                warm_memory()
        mark = self.counter.mark()
        start = time.perf_counter()
        output = self.run(cmd, cwd, extra_env)
        seconds = time.perf_counter() - start
        phase = summarize(name, self.counter.since(mark), seconds)
        phase.output = output.strip()
        if cmd[1:2] == [str(Path(__file__).resolve())] and "--s3fs-op" in cmd:
            phase.op_seconds = json.loads(output.strip().splitlines()[-1])["seconds"]
        self.phases[name] = phase
        last = phase.output.splitlines()[-1] if phase.output else ""
        log(f"{name}: {seconds:.2f} s, {phase.total_requests} requests "
            f"({fmt_requests(phase)}), up {phase.bytes_in / MIB:.1f} MiB, "
            f"down {phase.bytes_out / MIB:.1f} MiB{'  | ' + last if last else ''}")
        if phase.errors:
            log(f"  {len(phase.errors)} non-2xx answer(s), first: {phase.errors[0]}")
        return phase


def s3fs_cmd(op: str, src: str, dst: str, concurrency: int | None = None) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--s3fs-op", op, src, dst]
    return cmd + (["--s3fs-concurrency", str(concurrency)] if concurrency else [])


def s3fs_op(op: str, src: str, dst: str, concurrency: int | None) -> int:
    """Hidden mode: one s3fs put_file/get_file, configured like gitmodel's (fsspec reads
    FSSPEC_S3_ENDPOINT_URL); prints {"seconds": ...} for the call alone."""
    import fsspec
    fs = fsspec.filesystem("s3")
    kwargs = {"max_concurrency": concurrency} if concurrency else {}
    start = time.perf_counter()
    if op == "put":
        fs.put_file(src, dst, **kwargs)
    elif op == "get":
        fs.get_file(src, dst, **kwargs)
    else:
        raise SystemExit(f"unknown --s3fs-op {op}")
    print(json.dumps({"seconds": time.perf_counter() - start}))
    return 0


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def gitmodel_source(env: dict[str, str], cwd: Path) -> dict:
    """Which gitmodel ran: version, file, and (when it is a git checkout, e.g. an editable
    install) the commit and the uncommitted changes under the package directory."""
    code = ("import gitmodel, json; print(json.dumps([gitmodel.__version__, "
            "gitmodel.__file__]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    version, path = json.loads(out.stdout)
    pkg = Path(path).parent
    info = {"version": version, "package": str(pkg)}
    head = subprocess.run(["git", "-C", str(pkg), "rev-parse", "HEAD"], env=env,
                          capture_output=True, text=True)
    if head.returncode == 0:
        status = subprocess.run(["git", "-C", str(pkg), "status", "--porcelain", "--", "."],
                                env=env, capture_output=True, text=True)
        info["commit"] = head.stdout.strip()
        info["uncommitted"] = [line[3:] for line in status.stdout.splitlines()]
    return info


def describe_source(info: dict) -> str:
    if not info:
        return "gitmodel: unknown"
    text = f"gitmodel {info['version']} from {info['package']}"
    if "commit" in info:
        dirty = info["uncommitted"]
        text += (f" (commit {info['commit'][:10]}"
                 + (f", {len(dirty)} uncommitted file(s): {' '.join(dirty)}" if dirty else "")
                 + ")")
    return text


def fmt_requests(phase: Phase) -> str:
    return " ".join(f"{m} {phase.count(m)}" for m in METHODS if phase.count(m))


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


ROWS = [
    # label, gitmodel phase(s), s3fs phase, main direction, method counted
    ("push v1", ["gm_push_v1"], "s3_put_v1", "up", "PUT"),
    ("push v2 (10% changed)", ["gm_push_v2"], "s3_put_v2", "up", "PUT"),
    ("fetch", ["gm_fetch"], "s3_get", "down", "GET"),
    ("fetch + restore (pull)", ["gm_fetch", "gm_pull"], "s3_get", "down", "GET"),
    ("fetch (vs 1-stream get)*", ["gm_fetch"], "s3_get_1stream", "down", "GET"),
    ("fetch+restore (vs 1-str)*", ["gm_fetch", "gm_pull"], "s3_get_1stream", "down", "GET"),
]


def combined(phases: dict[str, Phase], names: list[str]) -> Phase:
    out = Phase("+".join(names))
    out.requests = {m: 0 for m in METHODS}
    for name in names:
        p = phases[name]
        out.seconds += p.seconds
        out.bytes_in += p.bytes_in
        out.bytes_out += p.bytes_out
        for m, n in p.requests.items():
            out.requests[m] = out.requests.get(m, 0) + n
    return out


def report(phases: dict[str, Phase], file_size: int, size_mib: int) -> dict:
    rows = []
    for label, gm_names, s3_name, direction, method in ROWS:
        gm, s3 = combined(phases, gm_names), phases[s3_name]
        gm_bytes = gm.bytes_in if direction == "up" else gm.bytes_out
        s3_bytes = s3.bytes_in if direction == "up" else s3.bytes_out
        rows.append({
            "step": label, "direction": direction, "method": method,
            "gitmodel_s": gm.seconds, "s3fs_s": s3.seconds,
            "time_ratio": gm.seconds / s3.seconds if s3.seconds else None,
            "gitmodel_main_requests": gm.count(method), "s3fs_main_requests": s3.count(method),
            "gitmodel_requests": gm.total_requests, "s3fs_requests": s3.total_requests,
            "gitmodel_bytes": gm_bytes, "s3fs_bytes": s3_bytes,
            "bytes_ratio": gm_bytes / s3_bytes if s3_bytes else None,
        })

    header = (f"{'step':<26} {'gitmodel s':>10} {'s3fs s':>8} {'time':>7} "
              f"{'gm PUT/GET':>10} {'s3fs PUT/GET':>12} {'gm reqs':>7} {'s3fs reqs':>9} "
              f"{'gm MiB':>9} {'s3fs MiB':>9} {'bytes':>7}")
    print()
    print(f"gitmodel vs s3fs, {size_mib} MiB fp32 safetensors ({file_size:,} bytes), "
          f"{N_TENSORS} tensors, loopback moto S3")
    print("time/bytes columns: ratio gitmodel/s3fs; MiB = request bodies received by the "
          "server (push) or response bodies sent (fetch)")
    print(header)
    print("-" * len(header))
    for r in rows:
        main = f"{r['method']} {r['gitmodel_main_requests']}"
        s3main = f"{r['method']} {r['s3fs_main_requests']}"
        print(f"{r['step']:<26} {r['gitmodel_s']:>10.2f} {r['s3fs_s']:>8.2f} "
              f"{ratio(r['gitmodel_s'], r['s3fs_s']):>7} {main:>10} {s3main:>12} "
              f"{r['gitmodel_requests']:>7} {r['s3fs_requests']:>9} "
              f"{r['gitmodel_bytes'] / MIB:>9.1f} {r['s3fs_bytes'] / MIB:>9.1f} "
              f"{ratio(r['gitmodel_bytes'], r['s3fs_bytes']):>7}")

    print("* for information: s3fs get_file with max_concurrency=1 (one plain GET), which "
          "moto serves without its ranged-GET overhead (see the docstring)")
    print()
    print("requests per phase (S3 operation, count, summed time each request spent in the "
          "server):")
    for name, p in phases.items():
        ops = ", ".join(f"{op} {n} ({p.server_seconds[op]:.2f} s)"
                        for op, n in sorted(p.operations.items()))
        extra = f", s3fs call alone {p.op_seconds:.2f} s" if p.op_seconds is not None else ""
        print(f"  {name:<14} {p.seconds:7.2f} s{extra}; up {p.bytes_in / MIB:.1f} MiB, "
              f"down {p.bytes_out / MIB:.1f} MiB; {ops or 'no requests'}")

    first_puts = phases["gm_push_v1"].count("PUT")
    second_frac = phases["gm_push_v2"].bytes_in / file_size
    targets = {
        "first_upload_puts": {"value": first_puts, "target": TARGET_FIRST_PUTS,
                              "ok": first_puts <= TARGET_FIRST_PUTS},
        "second_upload_frac": {"value": second_frac, "target": TARGET_SECOND_FRAC,
                               "ok": second_frac <= TARGET_SECOND_FRAC},
    }
    print()
    print("targets:")
    print(f"  first upload PUT requests     {first_puts:>6}  <= {TARGET_FIRST_PUTS}      "
          f"{'OK' if targets['first_upload_puts']['ok'] else 'MISSED'}")
    print(f"  second version upload bytes   {second_frac:>6.1%}  <= {TARGET_SECOND_FRAC:.0%} "
          f"of file  {'OK' if targets['second_upload_frac']['ok'] else 'MISSED'}")
    return {"rows": rows, "targets": targets}


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="checkpoint size (1024)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-warm", action="store_true",
                        help="skip touching 3 GiB of memory before each timed step")
    parser.add_argument("--s3fs-op", nargs=3, metavar=("OP", "SRC", "DST"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--s3fs-concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.s3fs_op:
        return s3fs_op(*args.s3fs_op, args.s3fs_concurrency)

    from bench_foundation import make_env, sha256_file, write_checkpoint

    counter, server, thread = start_server()
    workdir = Path(tempfile.mkdtemp(prefix="gitmodel-bench-remote-", dir=args.workdir))
    port = server.server_address[1]
    endpoint = f"http://127.0.0.1:{port}"
    log(f"moto S3 on {endpoint}, work directory {workdir}")
    try:
        os.environ.update(AWS_ENV)
        env = make_env(workdir)       # venv bin first on PATH, empty global git config
        env.update(AWS_ENV)
        env["FSSPEC_S3_ENDPOINT_URL"] = endpoint
        env["TMPDIR"] = str(workdir / "tmp")
        (workdir / "tmp").mkdir()
        for who in ("AUTHOR", "COMMITTER"):
            env[f"GIT_{who}_NAME"] = "gitmodel bench"
            env[f"GIT_{who}_EMAIL"] = "bench@example.invalid"
        bench = Bench(counter, env, warm=not args.no_warm)
        source_before = gitmodel_source(env, workdir)
        log(describe_source(source_before))

        import s3fs
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
        fs.mkdir(BUCKET)
        log(f"bucket {BUCKET} created")

        size = args.size_mib * MIB
        repo = workdir / "repo"
        repo.mkdir()
        model = repo / MODEL
        bench.run(["git", "init", "-q", "-b", "main"], repo)
        bench.run(["gitmodel", "install"], repo)
        bench.run(["gitmodel", "track", "*.safetensors"], repo)
        bench.run(["gitmodel", "remote", "add", "origin", GM_URL], repo)

        # ---- version 1
        log(f"writing {args.size_mib} MiB checkpoint v1")
        sha_v1 = write_checkpoint(model, "F32", size, N_TENSORS)
        file_size = model.stat().st_size
        bench.run(["git", "add", ".gitattributes", ".gitmodel", MODEL], repo)
        bench.run(["git", "commit", "-q", "-m", "model v1"], repo)
        log("v1 committed")
        bench.measure("gm_push_v1", ["gitmodel", "push"], repo)
        bench.measure("s3_put_v1", s3fs_cmd("put", str(model), RAW_KEY), repo)

        # ---- version 2: every 10th tensor rewritten
        log(f"writing v2 (every {MODIFIED_EVERY}th tensor new)")
        sha_v2 = write_checkpoint(model, "F32", size, N_TENSORS, modified_every=MODIFIED_EVERY)
        bench.run(["git", "add", MODEL], repo)
        bench.run(["git", "commit", "-q", "-m", "model v2"], repo)
        log("v2 committed")
        bench.measure("gm_push_v2", ["gitmodel", "push"], repo)
        bench.measure("s3_put_v2", s3fs_cmd("put", str(model), RAW_KEY), repo)

        # ---- commits to a bare repository, then a fresh clone that leaves pointers
        bare = workdir / "origin.git"
        bench.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], workdir)
        bench.run(["git", "remote", "add", "origin", str(bare)], repo)
        bench.measure("git_push", ["git", "push", "-q", "origin", "main"], repo,
                      {"GITMODEL_SKIP_PUSH": "1"}, timed=False)
        bench.run(["gitmodel", "install", "--global"], workdir)    # the teammate's setup
        clone = workdir / "clone"
        bench.measure("git_clone", ["git", "clone", "-q", str(bare), str(clone)], workdir,
                      {"GITMODEL_SKIP_SMUDGE": "1"}, timed=False)
        head = (clone / MODEL).read_bytes()[:64]
        if not head.startswith(b"gitmodel pointer"):
            raise RuntimeError(f"the clone's {MODEL} is not a pointer: {head!r}")
        got = workdir / f"s3fs-{MODEL}"
        bench.measure("gm_fetch", ["gitmodel", "fetch"], clone)
        bench.measure("s3_get", s3fs_cmd("get", RAW_KEY, str(got)), workdir)
        bench.measure("gm_pull", ["gitmodel", "pull"], clone)
        # For information: s3fs's get_file as one plain GET (see the docstring).
        got_1 = workdir / f"s3fs-1stream-{MODEL}"
        bench.measure("s3_get_1stream", s3fs_cmd("get", RAW_KEY, str(got_1), 1), workdir)
        got_1.unlink()

        sha_clone = sha256_file(clone / MODEL)
        sha_got = sha256_file(got)
        checks = {"gitmodel_restored_sha256_ok": sha_clone == sha_v2,
                  "s3fs_get_sha256_ok": sha_got == sha_v2}
        log(f"sha256 v2 {sha_v2[:16]}: gitmodel clone {'OK' if checks['gitmodel_restored_sha256_ok'] else 'MISMATCH ' + sha_clone[:16]}, "
            f"s3fs get {'OK' if checks['s3fs_get_sha256_ok'] else 'MISMATCH ' + sha_got[:16]}")

        source_after = gitmodel_source(env, workdir)
        if source_after != source_before:
            log("WARNING: gitmodel's source changed during the run: "
                + describe_source(source_after))
        timed_phases = {k: v for k, v in bench.phases.items() if k.startswith(("gm_", "s3_"))}
        summary = report(timed_phases, file_size, args.size_mib)
        print(describe_source(source_after)
              + ("" if source_after == source_before else "  (CHANGED during the run)"))
        print()
        print("checks: restored file sha256 "
              f"{'OK' if checks['gitmodel_restored_sha256_ok'] else 'MISMATCH'} (gitmodel pull), "
              f"{'OK' if checks['s3fs_get_sha256_ok'] else 'MISMATCH'} (s3fs get); "
              f"requests during git push/clone (not timed): "
              f"{bench.phases['git_push'].total_requests}/{bench.phases['git_clone'].total_requests}")
        if args.out:
            result = {
                "size_mib": args.size_mib, "file_bytes": file_size, "tensors": N_TENSORS,
                "modified_every": MODIFIED_EVERY, "sha256_v1": sha_v1, "sha256_v2": sha_v2,
                "endpoint": endpoint, "warm_memory": not args.no_warm,
                "gitmodel_before": source_before, "gitmodel_after": source_after,
                "phases": {k: asdict(v) | {"total_requests": v.total_requests}
                           for k, v in bench.phases.items()},
                **summary, "checks": checks,
            }
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            log(f"results written to {args.out}")
        ok = all(checks.values())
        return 0 if ok else 1
    finally:
        server.shutdown()
        thread.join(timeout=10)
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
