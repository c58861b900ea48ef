"""The `gitmodel` command. Each command is a few lines wiring the layers below together;
imports happen inside commands so `filter-process` starts with only what it needs."""

from __future__ import annotations

import argparse
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
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        from gitmodel.git.repo import NotARepository
        from gitmodel.git.attributes import PatternError
        from gitmodel.pointer import PointerError
        from gitmodel.store.objects import StoreError
        if isinstance(err, (NotARepository, PatternError, PointerError, StoreError)):
            print(f"gitmodel: error: {err}", file=sys.stderr)
            return 1
        raise
