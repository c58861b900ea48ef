"""The `gitmodel` command. Each command is a few lines wiring the layers below together;
imports happen inside commands so `filter-process` starts with only what it needs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _open_store():
    from gitmodel.git import repo
    from gitmodel.store.objects import Store
    return Store(repo.store_dir())


def cmd_install(args) -> int:
    from gitmodel.git import repo, setup
    if not args.global_:
        repo.toplevel()                       # fails clearly outside a repository
    report = setup.install("global" if args.global_ else "local", force=args.force)
    if not args.global_:
        setup.install_hook(report)
    for item in report.kept:
        print(f"left as it is (not set by gitmodel; --force replaces it): {item}")
    print(f"gitmodel installed ({'global' if args.global_ else 'this repository'}"
          f"{', ' + str(len(report.changed)) + ' settings written' if report.changed else ', already set'}).")
    return 1 if report.kept else 0


def cmd_uninstall(args) -> int:
    from gitmodel.git import repo, setup
    if not args.global_:
        repo.toplevel()
    report = setup.uninstall("global" if args.global_ else "local")
    if not args.global_:
        setup.uninstall_hook(report)
    for item in report.kept:
        print(f"left as it is (not gitmodel's value): {item}")
    print(f"gitmodel uninstalled ({len(report.changed)} settings removed).")
    return 0


def cmd_track(args) -> int:
    from gitmodel.git import attributes, repo
    path = repo.toplevel() / ".gitattributes"
    patterns = list(args.patterns) + (list(attributes.DEFAULT_PATTERNS) if args.defaults else [])
    if not patterns:
        for pattern in attributes.tracked(path):
            print(pattern)
        return 0
    for pattern in attributes.track(path, patterns):
        print(f"tracking {pattern}")
    return 0


def cmd_untrack(args) -> int:
    from gitmodel.git import attributes, repo
    removed = attributes.untrack(repo.toplevel() / ".gitattributes", args.patterns)
    for pattern in removed:
        print(f"untracked {pattern}")
    for pattern in set(args.patterns) - set(removed):
        print(f"not tracked: {pattern}", file=sys.stderr)
    return 0 if len(removed) == len(set(args.patterns)) else 1


def cmd_filter_process(args) -> int:
    # numpy's OpenBLAS keeps a thread per core that spins between calls; the filter never
    # calls BLAS, and those threads took ~3% of a clean's CPU. Must precede numpy's import.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from gitmodel.git import filter
    filter.serve(_open_store)
    return 0


def cmd_clean(args) -> int:
    """One-shot clean (stdin to stdout) for tools that do not speak the process protocol."""
    from gitmodel import checkpoint
    sys.stdout.buffer.write(checkpoint.clean(sys.stdin.buffer, _open_store()))
    return 0


def cmd_smudge(args) -> int:
    from gitmodel import checkpoint, pointer
    data = sys.stdin.buffer.read(pointer.MAX_POINTER_SIZE + 1)
    if not pointer.is_pointer_prefix(data):
        sys.stdout.buffer.write(data)
        while block := sys.stdin.buffer.read(1 << 20):
            sys.stdout.buffer.write(block)
        return 0
    checkpoint.smudge(pointer.parse(data), _open_store(), sys.stdout.buffer)
    return 0


def cmd_merge_driver(args) -> int:
    from gitmodel.git import merge
    return merge.merge(Path(args.base), Path(args.ours), Path(args.theirs), args.path)


def cmd_fsck(args) -> int:
    from gitmodel.store import fsck
    store = _open_store()
    report = fsck.check(store)
    for problem in report.problems:
        print(f"problem: {problem}")
    print(f"{report.objects} objects ({report.manifests} files, {report.bytes} bytes) verified "
          f"in {len(store.packs())} packs; {len(report.problems)} problem(s).")
    return 1 if report.problems else 0


# ----------------------------------------------------------------------------- remotes

def _say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"gitmodel: {message}", file=sys.stderr)


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def cmd_remote(args) -> int:
    from gitmodel.git import remotes
    if args.action == "add":
        where = remotes.add(args.name, args.url, args.option or [], local=args.local)
        print(f"remote {args.name} -> {args.url} (in {where}"
              f"{'; commit it to share it' if where == remotes.CONFIG_FILE else ''})")
        return 0
    if args.action == "remove":
        if not remotes.remove(args.name, local=args.local):
            print(f"gitmodel: no remote {args.name!r} in "
                  f"{'.git/config' if args.local else remotes.CONFIG_FILE}", file=sys.stderr)
            return 1
        print(f"removed remote {args.name}")
        return 0
    configured, default = remotes.configured()
    for name, spec in configured.items():
        mark = "*" if name == default or (default is None and len(configured) == 1) else " "
        options = "".join(f" {k}={v}" for k, v in spec.options.items())
        print(f"{mark} {name}\t{spec.url}\t({spec.source}){options}")
    if not configured:
        spec = remotes.resolve(None)
        if spec is not None:
            print(f"* {spec.name}\t{spec.url}\t(embedded default: {spec.source})")
        else:
            print("no gitmodel remote configured; `gitmodel remote add origin <url>` sets one",
                  file=sys.stderr)
    return 0


def _connect(name: str | None):
    from gitmodel.git import remotes, sync
    store = _open_store()
    return store, sync.connect(remotes.resolve(name), store)


def cmd_push(args) -> int:
    from gitmodel.git import history, sync
    store, index = _connect(args.remote)
    if args.mirror:
        from gitmodel.git.remotes import RemoteSpec
        remote = index.remote
        stats = sync.mirror(RemoteSpec("local store", str(store.root)),
                            RemoteSpec(remote.name, remote.url, remote.options), store.tmp_dir,
                            args.quiet)
        _say(args, f"mirrored {stats.packs} pack(s), {_size(stats.bytes)} to {index.remote}")
        return 0
    repository = history.open_repository()
    if args.all:
        found = history.pointers_introduced(repository, history.all_refs(repository))
    else:
        found = history.pointers_introduced(repository, args.refs or ["HEAD"])
    stats = sync.push(store, index, found, quiet=args.quiet)
    _say(args, f"{len(found)} checkpoint(s): uploaded {stats.objects} object(s), "
               f"{_size(stats.bytes)} in {stats.packs} pack(s) to {index.remote}")
    return 0


def cmd_pre_push(args) -> int:
    import os
    from gitmodel.git import history, remotes, sync
    if os.environ.get("GITMODEL_SKIP_PUSH", "") not in ("", "0"):
        return 0
    repository = history.open_repository()
    git_remote = args.name if args.name != args.url else None
    found = sync.pointers_for_push(repository, sys.stdin.read().splitlines(), git_remote)
    if not found:
        return 0
    spec = remotes.for_git_remote(args.name, args.url)
    if spec is None:
        print(f"gitmodel: this push carries {len(found)} checkpoint(s) but no gitmodel remote is "
              "configured, so nobody could check them out. Run `gitmodel remote add origin "
              "<url>` (a folder or any fsspec URL), or push without them: "
              "GITMODEL_SKIP_PUSH=1 git push", file=sys.stderr)
        return 1
    store = _open_store()
    stats = sync.push(store, sync.connect(spec, store), found)
    _say(args, f"{len(found)} checkpoint(s): uploaded {stats.objects} object(s), "
               f"{_size(stats.bytes)} in {stats.packs} pack(s) to {spec.name}")
    return 0


def cmd_fetch(args) -> int:
    from gitmodel.git import history, sync
    store, index = _connect(args.remote)
    repository = history.open_repository()
    revs = history.all_refs(repository) if args.all else (args.refs or ["HEAD"])
    found = history.pointers_in_trees(repository, revs)
    stats = sync.fetch(store, index, found, quiet=args.quiet)
    _say(args, f"{len(found)} checkpoint(s): fetched {stats.objects} object(s), "
               f"{_size(stats.bytes)} from {index.remote}")
    return 0


def cmd_pull(args) -> int:
    from gitmodel.git import history, sync
    store, index = _connect(args.remote)
    repository = history.open_repository()
    left = dict(history.iter_work_tree_pointers(repository))
    found = {ptr.content: path for path, ptr in left.items()}
    stats = sync.fetch(store, index, found, quiet=args.quiet)
    _say(args, f"fetched {stats.objects} object(s), {_size(stats.bytes)} from {index.remote}")
    if left:
        sync.restore_work_tree(sorted(left))
        _say(args, f"restored {len(left)} file(s) in the work tree")
    return 0


def cmd_mirror(args) -> int:
    from gitmodel.git import remotes, sync
    import tempfile
    source, dest = remotes.resolve(args.source), remotes.resolve(args.dest)
    with tempfile.TemporaryDirectory(prefix="gitmodel-mirror-") as tmp:
        stats = sync.mirror(source, dest, Path(tmp), args.quiet,
                            log=lambda line: _say(args, line) if args.verbose else None)
    _say(args, f"mirrored {stats.packs} pack(s), {stats.objects} object(s), "
               f"{_size(stats.bytes)} from {source.url} to {dest.url}")
    return 0


# ----------------------------------------------------------------------------- review

def _remote_fetcher(store):
    """A function fetching object ids from the default remote into the store (None when no
    remote is configured); the remote is opened on first use."""
    from gitmodel.git import remotes, sync
    spec = remotes.resolve(None)
    if spec is None:
        return None
    index = None

    def fetch(oids: list[bytes]) -> None:
        nonlocal index
        from gitmodel.remote import transfer
        if index is None:
            index = sync.connect(spec, store)
            index.refresh()
        transfer.download(store, index, oids, quiet=True)
    return fetch


def cmd_diff(args) -> int:
    from gitmodel import report, review
    from gitmodel.git import history, revisions
    repository = history.open_repository()
    for rev in args.revs:
        revisions.check_revision(repository, rev)
    old_side, new_side = revisions.sides(args.revs, args.cached)
    store = _open_store()
    fetch = _remote_fetcher(store) if args.numbers else None
    diffs = []
    changed = revisions.changed_paths(Path.cwd(), args.revs, args.cached, args.paths)
    tracked = revisions.tracked_paths(Path(repository.workdir), changed)
    for path in changed:
        old = revisions.pointer_at(repository, old_side, path, store, path in tracked)
        new = revisions.pointer_at(repository, new_side, path, store, path in tracked)
        if old is None and new is None:
            continue                                  # not a checkpoint
        diffs.append(review.diff_pointers(path, old, new, store, args.numbers, fetch))
    if args.format == "json":
        print(report.to_json(diffs))
    elif args.format == "markdown":
        print(report.markdown(diffs, args.all_tensors))
    elif diffs:
        print(report.text(diffs, colour=sys.stdout.isatty(), all_tensors=args.all_tensors), end="")
    return 0


def cmd_show(args) -> int:
    from gitmodel.git import history, revisions
    rev, path = revisions.split_spec(args.spec)
    repository = history.open_repository()
    ptr = revisions.pointer_at(repository, rev, path, _open_store())
    if ptr is None:
        print(f"gitmodel: {args.spec} is not a tracked checkpoint", file=sys.stderr)
        return 1
    sys.stdout.write(ptr.render().decode())
    return 0


def cmd_log(args) -> int:
    import datetime
    from gitmodel.git import history, revisions
    from gitmodel.pointer import format_number
    repository = history.open_repository()
    rows = []
    path = revisions.from_cwd(args.path)
    for commit, ptr in revisions.history_of(repository, path, args.rev, args.max_count):
        when = datetime.datetime.fromtimestamp(commit.commit_time, datetime.timezone.utc)
        rows.append((commit, when, ptr))
        metrics = "  ".join(f"{k}={format_number(v)}" for k, v in ptr.metrics)
        params = sum(ptr.params().values())
        print(f"{str(commit.id)[:10]}  {when:%Y-%m-%d %H:%M}  {ptr.size:>12} B  "
              f"{len(ptr.tensors):>5} tensors  {params:>12} params  {metrics}".rstrip()
              + f"  {commit.message.splitlines()[0] if commit.message else ''}")
    if not rows:
        print(f"gitmodel: no versions of {args.path} as a tracked checkpoint", file=sys.stderr)
        return 1
    if args.plot:
        _plot(rows[::-1], Path(args.plot), args.path)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _plot(rows, out: Path, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("gitmodel: --plot needs matplotlib: pip install 'gitmodel[plot]'")
    names = sorted({k for _, _, ptr in rows for k, _ in ptr.metrics})
    if not names:
        raise SystemExit(f"gitmodel: no metrics recorded in the versions of {title}")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [str(c.id)[:7] for c, _, _ in rows]
    for name in names:
        points = [(i, dict(ptr.metrics).get(name)) for i, (_, _, ptr) in enumerate(rows)]
        xs = [i for i, v in points if v is not None]
        ax.plot(xs, [v for _, v in points if v is not None], marker="o", label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_title(f"{title}: metrics by commit")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gitmodel", description=__doc__.split("\n")[0])
    from gitmodel import __version__
    parser.add_argument("--version", action="version", version=f"gitmodel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("install", help="configure git to use gitmodel (this repository by default)")
    p.add_argument("--global", dest="global_", action="store_true", help="in your user git config")
    p.add_argument("--force", action="store_true", help="replace settings gitmodel did not write")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("uninstall", help="remove gitmodel's git configuration")
    p.add_argument("--global", dest="global_", action="store_true")
    p.set_defaults(func=cmd_uninstall)

    p = sub.add_parser("track", help="route files matching PATTERN through gitmodel; alone, list them")
    p.add_argument("patterns", nargs="*", metavar="PATTERN")
    p.add_argument("--defaults", action="store_true",
                   help="track common checkpoint extensions (*.safetensors *.pt *.bin ...)")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("untrack", help="stop routing PATTERN through gitmodel")
    p.add_argument("patterns", nargs="+", metavar="PATTERN")
    p.set_defaults(func=cmd_untrack)

    p = sub.add_parser("fsck", help="verify every object in the local store")
    p.set_defaults(func=cmd_fsck)

    p = sub.add_parser("remote", help="add, list or remove gitmodel remotes")
    rsub = p.add_subparsers(dest="action", metavar="ACTION")
    r = rsub.add_parser("add", help="name a remote: a folder path or any fsspec URL")
    r.add_argument("name")
    r.add_argument("url")
    r.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="fsspec option, e.g. endpoint_url=https://... (repeatable; no secrets)")
    r.add_argument("--local", action="store_true",
                   help="in .git/config instead of the committed .gitmodel file")
    r = rsub.add_parser("remove", help="forget a remote")
    r.add_argument("name")
    r.add_argument("--local", action="store_true")
    rsub.add_parser("list", help="list remotes (the default)")
    p.set_defaults(func=cmd_remote, action="list")

    def transfer_args(p, refs_help):
        p.add_argument("remote", nargs="?", help="remote name or URL (default: the configured one)")
        p.add_argument("refs", nargs="*", help=refs_help)
        p.add_argument("--all", action="store_true", help="every branch and tag")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")

    p = sub.add_parser("push", help="upload the checkpoints commits reference and the remote lacks")
    transfer_args(p, "commits whose checkpoints to upload (default HEAD and its history)")
    p.add_argument("--mirror", action="store_true", help="copy every pack of the local store")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("fetch", help="download the checkpoints of commits into the local store")
    transfer_args(p, "commits whose checkpoints to fetch (default HEAD)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("pull", help="fetch, then restore files left as pointers in the work tree")
    p.add_argument("remote", nargs="?")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("mirror", help="copy every pack one remote lacks from another, verified")
    p.add_argument("source", help="remote name, URL or folder (a local store works too)")
    p.add_argument("dest")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="name each pack copied")
    p.set_defaults(func=cmd_mirror)

    p = sub.add_parser("diff", help="compare checkpoints tensor by tensor (git diff's revisions)")
    p.add_argument("revs", nargs="*", metavar="REV", help="0, 1 or 2 revisions, as for git diff")
    p.add_argument("--cached", "--staged", action="store_true", help="compare the index")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    p.add_argument("--all-tensors", action="store_true", help="list unchanged tensors too")
    p.add_argument("--no-numbers", dest="numbers", action="store_false",
                   help="compare digests only; read no tensor data")
    p.set_defaults(func=cmd_diff, paths=[])

    p = sub.add_parser("show", help="print a checkpoint's summary: REV:PATH, or a work-tree PATH")
    p.add_argument("spec", metavar="REV:PATH")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("log", help="versions of a checkpoint across commits, with their metrics")
    p.add_argument("path")
    p.add_argument("--rev", default="HEAD", help="start from this revision (default HEAD)")
    p.add_argument("-n", "--max-count", type=int, default=None)
    p.add_argument("--plot", metavar="PNG", help="also plot the metrics over commits (matplotlib)")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("pre-push", help="(git hook) upload checkpoints for a push")
    p.add_argument("name")
    p.add_argument("url")
    p.set_defaults(func=cmd_pre_push, quiet=False)

    p = sub.add_parser("filter-process", help="(git) long-running clean/smudge filter")
    p.set_defaults(func=cmd_filter_process)
    for name, func in (("clean", cmd_clean), ("smudge", cmd_smudge)):
        p = sub.add_parser(name, help=f"(git) one-shot {name} filter, stdin to stdout")
        p.add_argument("path", nargs="?")
        p.set_defaults(func=func)
    p = sub.add_parser("merge-driver", help="(git) merge driver for tracked checkpoints")
    for arg in ("base", "ours", "theirs", "path"):
        p.add_argument(arg)
    p.set_defaults(func=cmd_merge_driver)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    paths = []
    if argv[:1] == ["diff"] and "--" in argv:          # gitmodel diff [REV...] -- PATH...
        cut = argv.index("--")
        argv, paths = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if paths:
        args.paths = paths
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:                  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except Exception as err:
        from gitmodel.git.repo import NotARepository
        from gitmodel.git.attributes import PatternError
        from gitmodel.git.history import HistoryError
        from gitmodel.git.revisions import RevisionError
        from gitmodel.git.remotes import ConfigError
        from gitmodel.pointer import PointerError
        from gitmodel.remote.storage import RemoteError
        from gitmodel.store.objects import MissingObjects, StoreError
        if isinstance(err, MissingObjects):
            print(f"gitmodel: error: the local store lacks {len(err.oids)} object(s) needed here "
                  f"(first {err.oids[0].hex()}); `gitmodel fsck` checks the store", file=sys.stderr)
            return 1
        if isinstance(err, (NotARepository, PatternError, PointerError, StoreError, RemoteError,
                            ConfigError, HistoryError, RevisionError)):
            print(f"gitmodel: error: {err}", file=sys.stderr)
            return 1
        raise
