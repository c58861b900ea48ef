"""The `gitmodel` command. Each command parses, calls the modules below and prints; imports
happen inside commands so `filter-process` starts with only what it needs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from gitmodel.quoting import quote_path

COMMANDS: list[tuple[str, str, Callable, Callable]] = []     # name, help, add_arguments, run


def command(name: str, help: str, arguments: Callable = lambda p: None):
    def register(run: Callable) -> Callable:
        COMMANDS.append((name, help, arguments, run))
        return run
    return register


def _session(args=None):
    from gitmodel.git.session import Session
    return Session(remote=getattr(args, "remote", None))


def _hooked(session):
    """The session, its repository given gitmodel's pre-push hook if gitmodel is installed
    (a global install alone leaves that to the filter, which never runs in a mirror or a bare
    clone: their `git push --mirror` would go without the checkpoints the commands below bring)."""
    from gitmodel.git import install
    if install.installed(session.cwd):
        warning = session.ensure_hook()
        if warning:
            print(f"gitmodel: {warning}", file=sys.stderr)
    return session


def _say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"gitmodel: {message}", file=sys.stderr)


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# ----------------------------------------------------------------------------- setup

def _scope_arguments(p) -> None:
    p.add_argument("--global", dest="global_", action="store_true", help="in your user git config")


@command("install", "configure git to use gitmodel (this repository by default)",
         lambda p: (_scope_arguments(p), p.add_argument(
             "--force", action="store_true", help="replace settings gitmodel did not write")))
def cmd_install(args) -> int:
    from gitmodel.git import install, repo
    if not args.global_:
        repo.open_repository()                # fails clearly outside a repository (bare is
                                              # fine) or in one gitmodel cannot read
    elif not os.environ.get("HOME") and not os.environ.get("GIT_CONFIG_GLOBAL"):
        from gitmodel.errors import GitmodelError
        raise GitmodelError("--global needs a home folder for git's global configuration, and "
                            "HOME is not set", "Set HOME (e.g. `export HOME=~`), or run "
                            "`gitmodel install` inside each repository instead")
    report = install.install("global" if args.global_ else "local", force=args.force)
    if not args.global_:
        install.install_hook(report)
    for item in report.kept:
        print(f"left as it is (not set by gitmodel; --force replaces it): {item}")
    for item in report.by_hand:
        print(f"to do by hand: {item}")
    where = "global" if args.global_ else "this repository"
    done = f"{len(report.changed)} settings written" if report.changed else "already set"
    print(f"gitmodel installed ({where}, {done}).")
    return 1 if report.kept or report.by_hand else 0


@command("uninstall", "remove gitmodel's git configuration", _scope_arguments)
def cmd_uninstall(args) -> int:
    from gitmodel.git import install, repo
    if not args.global_:
        repo.toplevel()
    report = install.uninstall("global" if args.global_ else "local")
    if not args.global_:
        install.uninstall_hook(report)
    for item in report.kept:
        print(f"left as it is (not gitmodel's value): {item}")
    print(f"gitmodel uninstalled ({len(report.changed)} settings removed).")
    if not args.global_ and install.installed():
        print("gitmodel is still installed here by your global (or system) git configuration: "
              "its filter runs here and gives this repository its pre-push hook again. "
              "`gitmodel uninstall --global` removes the global one")
    return 0


@command("track", "route files matching PATTERN through gitmodel; alone, list them",
         lambda p: (p.add_argument("patterns", nargs="*", metavar="PATTERN"), p.add_argument(
             "--defaults", action="store_true",
             help="track common checkpoint extensions (*.safetensors *.pt *.bin ...)")))
def cmd_track(args) -> int:
    from gitmodel.git import attributes, install, repo
    path = repo.toplevel() / ".gitattributes"
    here = repo.prefix().rstrip("/")          # patterns given in a subfolder mean files there
    patterns = [attributes.from_directory(p, here) for p in args.patterns] + \
        (list(attributes.DEFAULT_PATTERNS) if args.defaults else [])
    if not patterns:
        for pattern in attributes.tracked(path):
            print(pattern)
        return 0
    repository = repo.open_repository()     # before writing: a repository gitmodel cannot read stops here
    if not install.installed():
        # Without the filter configured, git would commit tracked files raw.
        report = install.install("local")
        install.install_hook(report)
        print("gitmodel was not installed here: installed it for this repository "
              "(`gitmodel install --global` covers all your repositories)")
    for pattern in attributes.track(path, patterns):
        print(f"tracking {pattern}")
    from gitmodel.git import revisions
    raw = revisions.raw_in_index(repository, repo.toplevel())
    if raw:
        print(f"{len(raw)} file(s) committed before they were tracked stay in git as they are "
              f"({', '.join(raw[:3])}{' …' if len(raw) > 3 else ''}): `git add --renormalize .` "
              "stores them with gitmodel", file=sys.stderr)
    return 0


@command("untrack", "stop routing PATTERN through gitmodel",
         lambda p: p.add_argument("patterns", nargs="+", metavar="PATTERN"))
def cmd_untrack(args) -> int:
    from gitmodel.git import attributes, repo
    patterns = [attributes.from_directory(p, repo.prefix().rstrip("/")) for p in args.patterns]
    removed = attributes.untrack(repo.toplevel() / ".gitattributes", patterns)
    for pattern in removed:
        print(f"untracked {pattern}")
    for pattern in set(patterns) - set(removed):
        print(f"not tracked: {pattern}", file=sys.stderr)
    return 0 if len(removed) == len(set(patterns)) else 1


# ----------------------------------------------------------------------------- checking

def _fsck_arguments(p) -> None:
    p.add_argument("--all", action="store_true",
                   help="check what every commit of every branch and tag needs (default: HEAD "
                        "and the index)")
    p.add_argument("--remote", metavar="NAME", help="check that remote instead of the local store")
    p.add_argument("--repair", action="store_true",
                   help="rebuild damaged indexes, move damaged packs aside keeping their good "
                        "objects, and fetch what the remote has")


@command("fsck", "verify the store, and that it holds what the commits need", _fsck_arguments)
def cmd_fsck(args) -> int:
    from gitmodel.git import integrity
    problems = integrity.fsck(_hooked(_session()), args.all, args.remote, args.repair, print)
    return 1 if problems else 0


def _repack_arguments(p) -> None:
    # The default is repack.KEYFRAMES, not imported here: building the parser must stay cheap
    # for every command (the filter starts with it).
    p.add_argument("--keyframes", type=int, default=None, metavar="N",
                   help="one version in N is stored whole, the others as deltas against it "
                        "(default: git config gitmodel.keyframes, else 8; 1 stores every "
                        "version whole)")
    p.add_argument("-q", "--quiet", action="store_true")


@command("repack", "store older versions of checkpoints as deltas against newer ones",
         _repack_arguments)
def cmd_repack(args) -> int:
    from gitmodel.git import repacking
    report = repacking.repack(_session(), args.keyframes, args.quiet)
    _say(args, f"{report.encoded} chunk(s) re-encoded; {report.packs_before} pack(s), "
               f"{_size(report.bytes_before)} became {report.packs_after}, {_size(report.bytes_after)}")
    for why in report.damaged:
        print(f"gitmodel: left a pack as it was, a record in it is damaged ({why}); "
              "`gitmodel fsck --repair` repairs it", file=sys.stderr)
    return 1 if report.damaged else 0


def _not_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:                                 # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of 0 or more")
    return value


def _gc_arguments(p) -> None:
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="say what would be removed, remove nothing")
    p.add_argument("--keep-recent", type=_not_negative, default=None, metavar="DAYS",
                   help="keep everything stored in the last DAYS days, referenced or not "
                        "(default: git config gitmodel.gc.keepRecent, else 1)")
    p.add_argument("--wait", type=_not_negative, default=60.0, metavar="SECONDS",
                   help="how long to wait for processes writing to the store (default 60)")
    p.add_argument("--remote", metavar="NAME",
                   help="collect the gitmodel remote of git remote NAME instead: live is what "
                        "its refs reference, and --ref")
    p.add_argument("--ref", action="append", metavar="REV",
                   help="with --remote: a commit whose history stays too (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true")


@command("gc", "remove stored objects no ref, reflog, index or worktree needs", _gc_arguments)
def cmd_gc(args) -> int:
    from gitmodel.git import gc
    say = (lambda line: None) if args.quiet else (lambda line: print(f"gitmodel: gc: {line}", file=sys.stderr))
    if args.remote:
        report = gc.collect_remote(_session(), args.remote, args.ref, args.keep_recent,
                                   args.dry_run, say)
    elif args.ref:
        from gitmodel.errors import GitmodelError
        raise GitmodelError("--ref goes with --remote", "Locally, git's refs, reflogs and "
                            "indexes decide what stays")
    else:
        report = gc.collect_local(_session(), args.keep_recent, args.dry_run, args.wait, say)
    would = "would be " if report.dry_run else ""
    print(f"gitmodel: gc: {'dry run: ' if report.dry_run else ''}{report.count('remove')} "
          f"pack(s) {would}removed (nothing in them needed), {report.count('rewrite')} "
          f"{would}rewritten with only what is needed, {report.count('keep')} kept")
    verb = "would remove" if report.dry_run else "removed"
    change = (f"{_size(report.reclaimed)} {'reclaimable' if report.dry_run else 'freed'}"
              if report.reclaimed >= 0 else f"{_size(-report.reclaimed)} more: what was stored "
              "again, whole or against other bases, takes more room than what went")
    print(f"gitmodel: gc: {verb} {report.objects_removed} object(s); packs "
          f"{_size(report.bytes_before)} -> {_size(report.bytes_after)} ({change})")
    for why in report.damaged:
        print(f"gitmodel: gc: left a pack as it was, a record in it is damaged ({why}); "
              "`gitmodel fsck --repair` repairs it", file=sys.stderr)
    return 1 if report.damaged else 0


COMMANDS.append(("prune", "the same as gc (the name git-lfs uses)", _gc_arguments, cmd_gc))


def _ls_files_arguments(p) -> None:
    p.add_argument("rev", nargs="?", help="a commit (default: the index)")
    p.add_argument("--json", action="store_true")


@command("ls-files", "list tracked checkpoints: size, content id, work tree and store state",
         _ls_files_arguments)
def cmd_ls_files(args) -> int:
    import json
    from gitmodel.git import repo, state
    damaged: list = []
    listed = state.ls_files(repo.open_repository(), _session().store, args.rev, damaged)
    if args.json:
        print(json.dumps([item.as_dict() for item in listed], indent=1))
    else:
        for item in listed:
            print(f"{item.content[:12]}  {state.human(item.size):>10}  {item.work_tree:<7}  "
                  f"{item.store:<8}  {quote_path(item.path)}{f'  ({item.stage})' if item.stage else ''}")
    for item in damaged:          # listed apart: they name no checkpoint to describe
        print(f"gitmodel: error: {item}. It names no checkpoint, so it is not listed; "
              f"{item.harm()}. {item.rewrite_hint()}", file=sys.stderr)
    return 1 if damaged else 0


def _index_of(shard: str) -> str:
    from gitmodel.git.merge_shards import index_of       # (only when a shard is listed)
    return index_of(shard)


@command("status", "checkpoints staged, modified and not yet pushed; the store's size",
         lambda p: p.add_argument("--json", action="store_true"))
def cmd_status(args) -> int:
    import json
    from gitmodel.git import state
    from gitmodel.git.revisions import shard_key
    found = state.status(_session())
    if args.json:
        print(json.dumps(found.as_dict(), indent=1))
        return 0
    human = state.human
    was = {s["path"]: "damaged pointer in HEAD" if s["old_damaged"] else (s["old"] or "new")[:12]
           for s in found.staged}
    sections = [("staged", [f"{quote_path(s['path'])}  {was[s['path']]} -> {(s['new'] or 'deleted')[:12]}"
                            for s in found.staged]),
                ("staged pointers that do not describe one checkpoint (`git add -p` took part of "
                 "a change? `git add --renormalize PATH` stages it whole)",
                 [f"{quote_path(m['path'])}: {m['why']}" for m in found.mixed]),
                ("modified, not staged", list(map(quote_path, found.modified))),
                ("deleted, not staged", list(map(quote_path, found.deleted))),
                ("untracked (`git add` stores them with gitmodel)", list(map(quote_path, found.untracked))),
                ("unmerged (`gitmodel merge --resolve PATH --strategy S` finishes each)",
                 [quote_path(p) for p in found.unmerged if p not in found.deleted_by_one_side]),
                ("unmerged, deleted on one side (`git add PATH` keeps the file, `git rm PATH` "
                 "deletes it)", [quote_path(p) for p in found.deleted_by_one_side if not shard_key(p)]),
                # A re-shard deletes the old shards: keeping or deleting one can lose a change
                ("unmerged shards, deleted on one side (a re-shard? `git add` or `git rm` of one "
                 "can lose the other side's change, `gitmodel merge --resolve PATH` says whether)",
                 [f"{quote_path(p)}  (`gitmodel merge --resolve {quote_path(_index_of(p))}` merges "
                  "its model as one)" for p in found.deleted_by_one_side if shard_key(p)]),
                ("in commits no remote-tracking ref has (not pushed)",
                 [f"{quote_path(u['path'])}  {u['content'][:12]}" for u in found.unpushed]),
                (f"not on the gitmodel remote {found.remote} (`gitmodel push --all` uploads them)",
                 [f"{quote_path(u['path'])}  {u['content'][:12]}" for u in found.not_on_remote
                  if u["in_local_store"]]),
                (f"on neither the gitmodel remote {found.remote} nor here (committed elsewhere and "
                 "never uploaded? where they were committed, `gitmodel push --all` uploads them)",
                 [f"{quote_path(u['path'])}  {u['content'][:12]}" for u in found.not_on_remote
                  if not u["in_local_store"]]),
                ("left as pointers in the work tree (`gitmodel pull` restores them)",
                 list(map(quote_path, found.pointers_in_work_tree))),
                ("pointers at paths no `filter=gitmodel` attribute names (`gitmodel track PATTERN`, "
                 "then `gitmodel pull`)", list(map(quote_path, found.pointers_untracked))),
                ("tracked but stored in git as they are, not with gitmodel (`git add "
                 "--renormalize PATH` stores them with it)", list(map(quote_path, found.raw))),
                ("damaged pointers in the branches' history, HEAD or the index (they name no "
                 "checkpoint; a checkout of what holds them fails on them, and a push of their "
                 "commits is refused)",
                 [f"{d['where']}: {d['why']}. {d['repair']}" for d in found.damaged_pointers])]
    for title, lines in sections:
        if lines:
            print(f"{title}:")
            for line in lines:
                print(f"  {line}")
    if not any(lines for _, lines in sections):
        print("no checkpoint staged, modified or unpushed")
    if found.remote_error:
        print(f"the gitmodel remote could not be asked: {found.remote_error}")
    if found.store_error:
        print(f"store: {human(found.store_bytes)}; damaged (`gitmodel fsck` says where): "
              f"{found.store_error}")
        return 0
    print(f"store: {human(found.store_bytes)}, {human(found.reclaimable_bytes)} reclaimable "
          "by `gitmodel gc`")
    return 0


def _migrate_arguments(p) -> None:
    p.add_argument("--rewrite", action="store_true",
                   help="rewrite history (git filter-branch): every commit's git-lfs files "
                        "become gitmodel pointers; prints the old -> new commit map")
    p.add_argument("--ref", action="append", metavar="REF",
                   help="with --rewrite: a branch or tag to rewrite (repeatable; default all)")
    p.add_argument("-m", "--message", default="Store checkpoints with gitmodel instead of git-lfs",
                   help="the message of the converting commit (without --rewrite)")
    p.add_argument("--index-filter", action="store_true", help=argparse.SUPPRESS)


@command("migrate", "convert files stored with git-lfs: in a new commit, or --rewrite history",
         _migrate_arguments)
def cmd_migrate(args) -> int:
    from gitmodel.git import install, migrate
    session = _session()
    if args.index_filter:                 # run by git filter-branch, once per commit
        migrate.index_filter(session.store)
        return 0
    say = lambda line: print(f"gitmodel: migrate: {line}", file=sys.stderr)    # noqa: E731
    report = install.Report()
    if not install.installed():
        report = install.install("local")
        say("gitmodel was not installed here: installed it for this repository")
    install.install_hook(report)           # git-lfs's hook is chained: pushes upload checkpoints
    for item in report.changed:
        if item.startswith("hook "):
            say(f"installed {item}")
    for item in report.kept:
        say(f"left as it is: {item}")
    if args.rewrite:
        pairs = migrate.migrate_history(session, args.ref or [], say)
        for old, new in pairs:
            print(f"{old} {new}")
        say(f"rewrote {len(pairs)} commit(s); the old refs are under refs/original/ "
            "(`git update-ref -d` them once you are sure), then push with --force")
        say("git-lfs's own objects, settings and hook stay until you remove them: `git lfs "
            "uninstall --local`, and `.git/lfs` once nothing old needs it")
        return 0
    paths, commit = migrate.migrate_head(session, args.message, say)
    say(f"{len(paths)} file(s) now stored with gitmodel, in commit {commit[:12]}; older "
        "commits still need git-lfs (`gitmodel migrate --rewrite` converts them too)")
    return 0


# ----------------------------------------------------------------------------- remotes

def _remote_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    r = sub.add_parser("add", help="name a remote: a folder path or any fsspec URL")
    r.add_argument("name")
    r.add_argument("url")
    r.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="fsspec option, e.g. endpoint_url=https://... (repeatable; no secrets)")
    r.add_argument("--local", action="store_true",
                   help="in .git/config instead of the committed .gitmodel file")
    r = sub.add_parser("remove", help="forget a remote")
    r.add_argument("name")
    r.add_argument("--local", action="store_true")
    sub.add_parser("list", help="list remotes (the default)")
    p.set_defaults(action="list")


@command("remote", "add, list or remove gitmodel remotes", _remote_arguments)
def cmd_remote(args) -> int:
    from gitmodel.git import remotes
    if args.action == "add":
        note = remotes.check_url(args.url)
        url = remotes.from_here(args.url)        # a folder kept relative to the top
        where = remotes.add(args.name, url, args.option or [], local=args.local)
        print(f"remote {args.name} -> {url} (in {where}"
              f"{'; commit it to share it' if where == remotes.CONFIG_FILE else ''})")
        if note:
            print(f"note: {note}")
        for key in remotes.unknown_options(url, args.option or []):
            print(f"note: {url.split('://')[0] if '://' in url else 'a folder'} takes no option "
                  f"named {key!r} that its fsspec filesystem declares; it is passed on as given "
                  "(misspelt?)")
        return 0
    if args.action == "remove":
        if not remotes.remove(args.name, local=args.local):
            from gitmodel.git import repo
            local = not args.local and repo.config_get(f"gitmodel.{args.name}.url", scope="local")
            other = f" (it is in .git/config: `gitmodel remote remove --local {args.name}`)" \
                if local else ""
            print(f"gitmodel: no remote {args.name!r} in "
                  f"{'.git/config' if args.local else remotes.CONFIG_FILE}{other}", file=sys.stderr)
            return 1
        print(f"removed remote {args.name}")
        return 0
    for line in remotes.listing():
        print(line)
    if not remotes.listing():
        print("no gitmodel remote configured; `gitmodel remote add origin <url>` sets one",
              file=sys.stderr)
    return 0


def _transfer_arguments(refs_help: str, all_help: str = "every branch and tag"):
    def add(p) -> None:
        p.add_argument("remote", nargs="?", help="remote name or URL (default: the configured one)")
        p.add_argument("refs", nargs="*", help=refs_help)
        p.add_argument("--all", action="store_true", help=all_help)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    return add


def _push_arguments(p) -> None:
    _transfer_arguments("commits whose checkpoints to upload (default HEAD and its history)")(p)
    p.add_argument("--mirror", action="store_true", help="copy every pack of the local store")


@command("push", "upload the checkpoints commits reference and the remote lacks", _push_arguments)
def cmd_push(args) -> int:
    from gitmodel import stored, sync
    from gitmodel.git import history, repo
    session = _session(args)
    view = session.view(upload=True)
    if args.mirror:
        stats = _mirror(session.store.root, view.backend, session.store.tmp_dir, args)
        _say(args, f"mirrored {stats.packs} pack(s), {_size(stats.bytes)} to {view}")
        return 0
    repository = repo.open_repository()
    unknown = [rev for rev in args.refs or [] if history.files_named(repository, rev) is None]
    if unknown:
        from gitmodel.errors import GitmodelError
        raise GitmodelError(f"unknown revision {unknown[0]!r}",
                            "Nothing was uploaded. `git branch -a` and `git log` show what "
                            "there is (a shallow clone lacks the commits behind its tips)")
    refs = history.all_refs(repository) if args.all else (args.refs or ["HEAD"])
    damaged: list = []
    checkpoints: stored.Checkpoints = history.pointers_introduced(repository, refs, damaged=damaged)
    from gitmodel.git import repacking
    repacking.before_push(session)
    stats = sync.push(session.store, view, checkpoints, quiet=args.quiet)
    _say(args, f"{len(checkpoints)} checkpoint(s): uploaded {stats.objects} object(s), "
               f"{_size(stats.bytes)} in {stats.packs} pack(s) to {view}")
    if damaged:        # they name no checkpoint: the rest is uploaded, but not all is well
        allowed = _damaged_allowed()
        _say_damaged(damaged, "warning" if allowed else "error")
        if not allowed:
            print(f"gitmodel: {len(damaged)} damaged pointer(s) in these commits name no checkpoint, so "
                  "nothing could be uploaded for them, and their commits' checkouts fail on them. "
                  f"{_damaged_repair(damaged)}", file=sys.stderr)
            return 1
    return 0


ALLOW_DAMAGED = "GITMODEL_ALLOW_DAMAGED_POINTERS"


def _damaged_allowed() -> bool:
    return os.environ.get(ALLOW_DAMAGED, "") not in ("", "0")


def _say_damaged(damaged: list, kind: str) -> None:
    for item in damaged[:10]:
        print(f"gitmodel: {kind}: {item}", file=sys.stderr)
    if len(damaged) > 10:
        print(f"gitmodel: {kind}: and {len(damaged) - 10} more damaged pointer(s)", file=sys.stderr)


def _damaged_repair(damaged: list) -> str:
    return (f"{damaged[0].rewrite_hint()}; then push again (restoring the file in a new commit mends "
            "the work tree, not the commit that holds the damaged pointer). To push those commits "
            f"as they are, every readable checkpoint uploaded: {ALLOW_DAMAGED}=1 git push")


@command("pre-push", "(git hook) upload checkpoints for a push",
         lambda p: (p.add_argument("name"), p.add_argument("url"), p.set_defaults(quiet=False)))
def cmd_pre_push(args) -> int:
    from gitmodel import checkpoint, sync
    from gitmodel.git import history, repo
    if os.environ.get("GITMODEL_SKIP_PUSH", "") not in ("", "0"):
        return 0
    lines = sys.stdin.read().splitlines()
    repository = repo.open_repository()
    damaged: list = []
    checkpoints = history.pointers_for_push(repository, lines, damaged)
    # A damaged pointer names no checkpoint; in commits the git remote does not have yet, it is
    # refused (a clone's checkout of them would fail on it), unless the user says otherwise.
    fresh: list = []
    if damaged:
        history.pointers_new_to_remote(repository, lines, fresh)
        known = {item.blob for item in fresh}
        published = [item for item in damaged if item.blob not in known]
        _say_damaged(published, "warning")
        if published:
            print(f"gitmodel: warning: the git remote has the commit(s) that hold {len(published)} "
                  "damaged pointer(s) already; they name no checkpoint, and nothing was uploaded "
                  "for them", file=sys.stderr)
        if fresh and not _damaged_allowed():
            _say_damaged(fresh, "error")
            print(f"gitmodel: nothing was pushed: {len(fresh)} damaged pointer(s) in the commits "
                  "this push sends name no checkpoint, and checkouts of those commits would fail "
                  f"on them. {_damaged_repair(fresh)}", file=sys.stderr)
            return 1
        _say_damaged(fresh, "warning")
    if not checkpoints:
        return 0
    session = _session()
    view = session.view_for_push(args.name, args.url)
    if view is None:
        from gitmodel.git import remotes
        hint = remotes.upload_hint()        # why another branch's remote does not count here
        repair = hint or ". Run `gitmodel remote add origin <url>` (a folder or any fsspec URL)"
        print(f"gitmodel: this push carries {len(checkpoints)} checkpoint(s) but no gitmodel "
              f"remote is configured, so nobody could check them out{repair}, or push without "
              "them: GITMODEL_SKIP_PUSH=1 git push", file=sys.stderr)
        return 1
    stray = _read_elsewhere(session, repository, lines, view, args.name, args.url)
    if stray:
        ref, reader, paths = stray
        branch = ref.removeprefix("refs/heads/")
        switch = f"git switch {branch}" if branch != ref else f"git switch --detach {ref}"
        lacks = (f"this push uploads to {view} (named where you are), and {reader.name} lacks "
                 f"{len(paths)} of its checkpoints ({', '.join(map(quote_path, paths[:3]))}). Nothing was pushed")
        owner = reader.source.removesuffix(":.gitmodel")
        if owner.startswith("refs/remotes/"):      # the branch has no file: clones take that one's
            print(f"gitmodel: {ref} has no .gitmodel, so its clones read checkpoints where "
                  f"{owner}'s names, gitmodel remote {reader.name} ({reader.url}), but {lacks}. "
                  f"Give the branch a .gitmodel naming the store its checkpoints belong in, "
                  f"that one (`{switch} && git checkout {owner} -- .gitmodel && git commit -m "
                  f"'gitmodel remote' .gitmodel`) or another (`gitmodel remote add NAME URL` "
                  "there, and commit it), then push again", file=sys.stderr)
            return 1
        print(f"gitmodel: {ref} names gitmodel remote {reader.name} ({reader.url}) in its "
              f".gitmodel, where its clones will read checkpoints, but {lacks}. Push from a "
              f"checkout of {ref} (its .gitmodel decides), or upload there first: `{switch} && "
              f"gitmodel push {reader.name} {branch}`, then push again", file=sys.stderr)
        return 1
    new = history.pointers_new_to_remote(repository, lines, [])
    mixed = [(path, why) for path, ptr in new
             if (why := checkpoint.pointer_mismatch(ptr, session.store)) is not None]
    if mixed:
        for path, why in mixed:
            print(f"gitmodel: {quote_path(path)}: the committed pointer does not describe one checkpoint: "
                  f"{why}", file=sys.stderr)
        print("gitmodel: nothing was pushed. Its lines come from two versions (`git add -p` "
              "staged part of a checkpoint's change) or were edited. Stage the file whole "
              "(`git add --renormalize PATH`), `git commit --amend` (or rebase to the commit), "
              "and push again", file=sys.stderr)
        return 1
    from gitmodel.git import repacking
    repacking.before_push(session)
    stats = sync.push(session.store, view, checkpoints,
                      pin={ptr.content: path for path, ptr in new})
    _say(args, f"{len(checkpoints)} checkpoint(s) on {view}: uploaded {stats.objects} "
               f"object(s), {_size(stats.bytes)} in {stats.packs} pack(s)")
    return 0


def _read_elsewhere(session, repository, lines: list[str], view, git_remote: str, git_url: str):
    """(ref, remote, paths) for a pushed ref whose own .gitmodel sends its clones to another
    gitmodel remote than the one this push uploads to, which lacks checkpoints the ref's
    history brings (a team moved its store on that branch, and the push runs from another);
    None if none. A remote named in git config or GITMODEL_REMOTE is the user's choice for
    both, and stands."""
    import dataclasses
    from gitmodel.errors import GitmodelError
    from gitmodel.git import history, remotes
    if os.environ.get("GITMODEL_REMOTE"):
        return None
    chosen = remotes.for_git_remote(git_remote, git_url, session.cwd)
    if chosen is not None and chosen.source == "git config":
        return None
    pushed = [line.split() for line in lines]
    pushed = [parts for parts in pushed if len(parts) == 4 and parts[1].strip("0")]
    # Refs whose commits hold one .gitmodel read from one remote: asked once per file (many
    # tags cost a git command each otherwise); a commit without one is asked on its own.
    files = remotes.config_files([parts[1] for parts in pushed], session.cwd)
    readers: dict[str, remotes.RemoteSpec | None] = {}
    for parts, file in zip(pushed, files):
        line = " ".join(parts)
        if file is None or file not in readers:
            reader = remotes.read_from(parts[1], git_remote, session.cwd)
            if file is not None:
                readers[file] = reader
        elif (reader := readers[file]) is not None:
            reader = dataclasses.replace(reader, source=f"{parts[1]}:{remotes.CONFIG_FILE}")
        if reader is None or remotes.place(reader.url) == remotes.place(view.backend.url):
            continue
        brought = history.pointers_for_push(repository, [line], [])
        try:
            other = session.view(reader).refresh()
        except (GitmodelError, OSError) as err:
            print(f"gitmodel: warning: {parts[0]} names gitmodel remote {reader.name} ({reader.url}) "
                  f"for its clones, which could not be read to check it has the checkpoints "
                  f"({err}); this push uploads to {view}", file=sys.stderr)
            continue
        lacking = sorted(path for content, path in brought.items() if bytes.fromhex(content) not in other.entries)
        if lacking:
            return parts[0], reader, lacking
    return None


@command("fetch", "download the checkpoints of commits into the local store",
         _transfer_arguments("commits whose checkpoints to fetch (default HEAD)"))
def cmd_fetch(args) -> int:
    from gitmodel import sync
    from gitmodel.git import history, repo
    session = _hooked(_session(args))
    view = session.view()
    repository = repo.open_repository()
    revs = history.all_refs(repository) if args.all else (args.refs or ["HEAD"])
    damaged: list = []
    sizes: dict[str, int] = {}
    checkpoints = history.pointers_in_trees(repository, revs, damaged=damaged, sizes=sizes)
    try:
        stats = sync.fetch_all(session.store, view, checkpoints, quiet=args.quiet, sizes=sizes)
    except BaseException:
        _say_unfetchable(damaged)
        raise
    _say(args, f"{len(checkpoints)} checkpoint(s): fetched {stats.objects} object(s), "
               f"{_size(stats.bytes)} from {view}")
    _say_unfetchable(damaged)
    return 1 if damaged else 0


def _say_unfetchable(damaged: list) -> None:
    """Damaged pointers name no checkpoint: the others were fetched, nothing for these."""
    for item in damaged:
        print(f"gitmodel: error: {item}. It names no checkpoint, so nothing was fetched for it; "
              f"{item.harm()}. {item.rewrite_hint()}", file=sys.stderr)


@command("pull", "fetch, then restore files left as pointers in the work tree",
         lambda p: (p.add_argument("remote", nargs="?"),
                    p.add_argument("-q", "--quiet", action="store_true")))
def cmd_pull(args) -> int:
    from gitmodel import pointer, sync
    from gitmodel.errors import GitmodelError
    from gitmodel.git import history, repo, revisions, worktree
    session = _session(args)
    repository = repo.open_repository()
    if repository.workdir is None:
        raise GitmodelError("gitmodel pull writes files of the work tree, and this is a bare "
                            "repository", "`gitmodel fetch` brings the checkpoints into its store")
    damaged: list = []
    left = dict(history.iter_work_tree_pointers(repository, damaged))
    # Restored at a path git would not clean, a checkpoint would be committed raw: left alone
    tracked = revisions.tracked_paths(Path(repository.workdir), list(left))
    untracked = sorted(path for path in left if path not in tracked)
    left = {path: p for path, p in left.items() if path in tracked}
    wanted = {p.content: path for path, p in left.items()}
    if sync.complete(session.store, wanted):          # no remote needed
        result = sync.FetchResult()
    else:
        view = session.view()
        sizes: dict[str, int] = {}
        for p in left.values():
            pointer.note_size(sizes, p)
        result = sync.fetch(session.store, view, wanted, quiet=args.quiet, sizes=sizes)
        _say(args, f"fetched {result.stats.objects} object(s), {_size(result.stats.bytes)} from {view}")
    complete = {path: p for path, p in left.items() if p.content not in result.failed}
    if complete:
        say = (lambda line: None) if args.quiet else (lambda line: _say(args, line))
        written = worktree.materialize(session.store, repository, complete, say, session.fetcher())
        _say(args, f"restored {len(written)} file(s) in the work tree")
    for item in damaged:          # the others were restored; nothing names what these hold
        print(f"gitmodel: error: {item}. It names no checkpoint, so the file was left as it is; "
              f"{item.harm()}. {item.rewrite_hint()}", file=sys.stderr)
    if result.failed:
        missing = sorted(path for path, p in left.items() if p.content in result.failed)
        why = result.failed[left[missing[0]].content]
        raise GitmodelError(f"{len(missing)} file(s) could not be fetched completely and stay "
                            f"pointers: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} "
                            f"({why})", "Everything that arrived is kept; once the remote has "
                            "them (push from a clone that does), `gitmodel pull` again")
    if untracked:
        raise GitmodelError(f"{len(untracked)} pointer file(s) at paths no `filter=gitmodel` "
                            f"attribute names were left as they are: {', '.join(untracked[:5])}"
                            f"{' …' if len(untracked) > 5 else ''} (restored there, git would "
                            "commit the whole file)", "Track them (`gitmodel track PATTERN`, "
                            "and commit .gitattributes), then `gitmodel pull` again")
    return 1 if damaged else 0


def _mirror(source, dest, tmp_dir: Path, args):
    from gitmodel import stored
    from gitmodel.remote import transfer
    from gitmodel.remote.backend import LOCAL_STORE, RemoteSpec, open_backend
    if not hasattr(source, "list_packs"):
        source = open_backend(RemoteSpec(LOCAL_STORE, str(source)))
    return transfer.mirror(source, dest, tmp_dir, stored.references, args.quiet,
                           log=lambda line: _say(args, line) if getattr(args, "verbose", False) else None)


@command("mirror", "copy every pack one remote lacks from another, verified",
         lambda p: (p.add_argument("source", help="remote name, URL or folder (a store works too)"),
                    p.add_argument("dest"), p.add_argument("-q", "--quiet", action="store_true"),
                    p.add_argument("-v", "--verbose", action="store_true", help="name each pack copied")))
def cmd_mirror(args) -> int:
    import tempfile
    from gitmodel.git import remotes
    from gitmodel.remote.backend import open_backend
    source, dest = remotes.resolve(args.source), remotes.resolve(args.dest, reading=False)
    with tempfile.TemporaryDirectory(prefix="gitmodel-mirror-") as tmp:
        stats = _mirror(open_backend(source), open_backend(dest), Path(tmp), args)
    _say(args, f"mirrored {stats.packs} pack(s), {stats.objects} object(s), "
               f"{_size(stats.bytes)} from {source.url} to {dest.url}"
               + (f"; {stats.skipped} damaged pack(s) left behind, every object in them copied "
                  "from another pack" if stats.skipped else ""))
    return 0


# ----------------------------------------------------------------------------- review

SORT_KEYS = ("change", "order", "name", "max-abs", "changed", "cosine")   # summary.SORT_KEYS,
                                           # spelled out: the parser must not import numpy


def _diff_arguments(p) -> None:
    p.add_argument("revs", nargs="*", metavar="REV", help="0, 1 or 2 revisions, as for git diff")
    p.add_argument("--cached", "--staged", action="store_true", help="compare the index")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    p.add_argument("--sort", choices=SORT_KEYS, default="change",
                   help="order of the tensor table (default: largest relative change first)")
    p.add_argument("--all", "--all-tensors", dest="all_tensors", action="store_true",
                   help="list unchanged tensors and parameters too")
    p.add_argument("--no-numbers", dest="numbers", action="store_false",
                   help="compare digests and the pointers' statistics only; read no tensor data")
    p.add_argument("--plot", metavar="PNG", help="also draw where the model moved (matplotlib)")
    p.set_defaults(paths=[])


@command("diff", "compare checkpoints tensor by tensor (git diff's revisions)", _diff_arguments)
def cmd_diff(args) -> int:
    from gitmodel import plots, report
    from gitmodel.git import revisions
    if args.plot:
        plots.check_path(Path(args.plot))
    review = revisions.diff(_session(), args.revs, args.cached, args.paths, args.numbers)
    if args.format == "json":
        print(report.to_json(review, args.sort))
    elif args.format == "markdown":
        print(report.markdown(review, args.all_tensors, args.sort))
    elif review.files or review.numbers:
        print(report.text(review, colour=sys.stdout.isatty(), all_tensors=args.all_tensors,
                          sort=args.sort), end="")
    if args.plot:
        plots.save(plots.changes_by_layer(review.files), Path(args.plot))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


@command("show", "print a checkpoint's summary: REV:PATH, or a work-tree PATH",
         lambda p: p.add_argument("spec", metavar="REV:PATH"))
def cmd_show(args) -> int:
    from gitmodel.git import repo, revisions
    side, path = revisions.split_spec(args.spec)
    repository = repo.open_repository()
    if side not in (revisions.WORK_TREE, revisions.INDEX):
        revisions.check_revision(repository, side)
    ptr = revisions.pointer_at(repository, side, path, _session().store)
    if ptr is None:
        print(f"gitmodel: {args.spec} is not a tracked checkpoint", file=sys.stderr)
        return 1
    sys.stdout.write(ptr.render().decode())
    return 0


@command("log", "versions of a checkpoint across commits, with their metrics and parameters",
         lambda p: (p.add_argument("path"),
                    p.add_argument("--rev", default="HEAD", help="start from this revision"),
                    p.add_argument("-n", "--max-count", type=int, default=None),
                    p.add_argument("--plot", metavar="PNG",
                                   help="also plot each metric and parameter over commits (matplotlib)")))
def cmd_log(args) -> int:
    from gitmodel import plots, report
    from gitmodel.git import repo, revisions
    if args.plot:
        plots.check_path(Path(args.plot))
    versions = revisions.versions_of(repo.open_repository(), revisions.from_cwd(args.path),
                                     args.rev, args.max_count)
    if not versions:
        print(f"gitmodel: no versions of {args.path} as a tracked checkpoint", file=sys.stderr)
        return 1
    for line in report.log_lines(versions):
        print(line)
    if args.plot:
        plots.save(plots.numbers_over_commits(versions[::-1], args.path), Path(args.plot))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- merging

def _merge_arguments(p) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="BASE OURS THEIRS (files or REV:PATH); with --no-base, the models to merge")
    p.add_argument("-o", "--output", type=Path, help="where to write the merged checkpoint")
    p.add_argument("--resolve", metavar="PATH", help="finish a conflicted git merge of PATH and stage it")
    p.add_argument("--no-base", action="store_true", help="the inputs have no common ancestor")
    p.add_argument("--strategy", choices=("conflict", "ours", "theirs", "average",
                                          "task-arithmetic", "ties", "dare"),
                   help="for tensors changed differently (default: as configured, else conflict)")
    p.add_argument("--weights", type=_weights,
                   help="one weight per input, comma-separated (default all 1)")
    p.add_argument("--scale", type=float, help="λ of task-arithmetic, ties and dare (default 1)")
    p.add_argument("--density", type=float, help="fraction kept by ties and dare (default 0.5)")
    p.add_argument("--seed", type=int, help="dare's random drops (default 0)")


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not numbers separated by commas "
                                         "(e.g. 0.3,0.7)") from None


@command("merge", "merge checkpoints tensor by tensor: finish a conflicted merge, or merge files",
         _merge_arguments)
def cmd_merge(args) -> int:
    from gitmodel.git import merge, merge_shards, repo, revisions
    given = dict(name=args.strategy, weights=args.weights, scale=args.scale, density=args.density,
                 seed=args.seed)
    if args.resolve:
        if args.inputs or args.output is not None:
            print("gitmodel: merge --resolve takes one PATH and no inputs or -o", file=sys.stderr)
            return 2
        path = revisions.from_cwd(args.resolve)                # from the top, as git's index has it
        if path.endswith(merge_shards.INDEX_SUFFIX):           # a sharded model, as one
            results = merge_shards.resolve_model(path, merge.strategy_for(path, repo.toplevel(), **given))
            conflicted = [(file, result) for file, result in results if result.pointer is None]
            for file, result in conflicted or results:
                merge.report(result, file, resolve=path)
            if conflicted:
                print(f"gitmodel: nothing was staged for the model of {quote_path(path)}", file=sys.stderr)
                return 1
            print(f"gitmodel: staged the merged model of {quote_path(path)}: "
                  f"{', '.join(quote_path(file) for file, _ in results)}", file=sys.stderr)
            return 0
        result = merge.resolve(path, merge.strategy_for(path, repo.toplevel(), **given))
        merge.report(result, path)
        if result.pointer is not None:
            print(f"gitmodel: staged the merged {quote_path(path)}", file=sys.stderr)
        return 0 if result.pointer is not None else 1
    if args.output is None or len(args.inputs) < (2 if args.no_base else 3):
        print("gitmodel: merge needs BASE OURS THEIRS (or --no-base and two or more models) and "
              "-o OUT, or --resolve PATH", file=sys.stderr)
        return 2
    base, inputs = (None, args.inputs) if args.no_base else (args.inputs[0], args.inputs[1:])
    result = merge.merge_files(inputs, base, args.output, merge.strategy_for("", **given))
    merge.report(result, str(args.output), in_git=False)
    return 0 if result.pointer is not None else 1


# ----------------------------------------------------------------------------- git's side

@command("filter-process", "(git) long-running clean/smudge filter")
def cmd_filter_process(args) -> int:
    from gitmodel.git import filter as filter_process
    filter_process.serve(_session())
    # Git waits for its filter to exit before it does, and the interpreter's own teardown
    # (module and thread cleanup) takes ~20 ms. Everything the filter wrote is already
    # published and fsynced, so leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@command("clean", "(git) one-shot clean filter, stdin to stdout",
         lambda p: p.add_argument("path", nargs="?"))
def cmd_clean(args) -> int:
    """For tools that do not speak the process protocol."""
    from gitmodel import checkpoint
    path = args.path or "stdin"
    sys.stdout.buffer.write(checkpoint.clean(
        sys.stdin.buffer, _session().store,
        notice=lambda what: print(f"gitmodel: warning: {quote_path(path)}: {what}", file=sys.stderr)))
    return 0


@command("smudge", "(git) one-shot smudge filter, stdin to stdout",
         lambda p: p.add_argument("path", nargs="?"))
def cmd_smudge(args) -> int:
    from gitmodel import pointer
    data = sys.stdin.buffer.read(pointer.MAX_POINTER_SIZE + 1)
    skip = os.environ.get("GITMODEL_SKIP_SMUDGE", "") not in ("", "0")
    try:
        ptr = None if skip else pointer.sniff(pointer.without_crlf(data))
    except pointer.PointerError as err:          # as the filter says it
        from gitmodel.errors import GitmodelError
        from gitmodel.git.filter import damaged_pointer
        raise GitmodelError(f"{quote_path(args.path or 'stdin')}: {damaged_pointer(err)}") from None
    if ptr is None:
        sys.stdout.buffer.write(data)
        while block := sys.stdin.buffer.read(1 << 20):
            sys.stdout.buffer.write(block)
        return 0
    from gitmodel.git.filter import restore_fetching, warn_if_mixed
    session = _session()
    restore = restore_fetching(session, args.path or "stdin", ptr)
    warn_if_mixed(args.path or "stdin", ptr, session.store)
    # as a checkout does: a chunk found damaged here is fetched from the remote, read again
    restore.write_to(lambda *buffers: sys.stdout.buffer.writelines(buffers), fetch=session.fetcher())
    return 0


def driver_arguments(given: list[str]) -> list[str]:
    """The merge driver's arguments as this version parses them (`BASE OURS THEIRS MARKER --
    PATH`), from every form a `gitmodel install` wrote into git config, which an upgrade
    without a new install leaves there: `%O %A %B %P` (before cc4fce6), `%O %A %B %L %P`
    (before 53df4c2) and `%O %A %B %L -- %P`. Git gives each a fixed number of arguments, so
    the count tells the form, and a path starting with - is a path in every form."""
    if len(given) == 6 and given[4] == "--":
        return given
    if len(given) == 5:
        return [*given[:4], "--", given[4]]
    if len(given) == 4:
        return [*given[:3], "7", "--", given[3]]      # git's default conflict marker size
    return given                                      # argparse says what is wrong


@command("merge-driver", "(git) merge driver for tracked checkpoints",
         lambda p: [p.add_argument(arg) for arg in ("base", "ours", "theirs", "marker_size", "path")])
def cmd_merge_driver(args) -> int:
    from gitmodel.git import merge
    return merge.driver(Path(args.base), Path(args.ours), Path(args.theirs), args.path)


# ----------------------------------------------------------------------------- main

def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; with `command`, one of COMMANDS, only that command's parser (git
    starts the filter and the merge driver once per command or file: building all of them
    would cost each start ~8 ms)."""
    from gitmodel import __version__
    import gitmodel
    parser = argparse.ArgumentParser(prog="gitmodel", description=gitmodel.__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"gitmodel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help, arguments, run in COMMANDS:
        if command in (None, name):
            p = sub.add_parser(name, help=help)
            arguments(p)
            p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    paths = []
    if argv[:1] == ["diff"] and "--" in argv:          # gitmodel diff [REV...] -- PATH...
        cut = argv.index("--")
        argv, paths = argv[:cut], argv[cut + 1:]
    if argv[:1] == ["merge-driver"]:                   # as git runs it: the forms of older installs
        argv = ["merge-driver", *driver_arguments(argv[1:])]
    command = argv[0] if argv and any(argv[0] == name for name, *_ in COMMANDS) else None
    from gitmodel.process import absolute_git_paths, open_files_allowed, quiet_blas
    quiet_blas()                           # before anything imports numpy
    open_files_allowed()
    absolute_git_paths()
    for name in ("stdout", "stderr"):      # started with the descriptor closed (`>&-`): as git,
        if getattr(sys, name) is None:     # output goes nowhere
            setattr(sys, name, open(os.devnull, "w"))
    args = build_parser(command).parse_args(argv)
    if paths:
        args.paths = paths
    from gitmodel.scratch import keep_freed_memory
    keep_freed_memory()
    try:
        return _run(args)
    finally:
        if as_program:
            # A Ctrl-C while the interpreter then waits for the pool's threads to end would
            # print a traceback from its shutdown: once the command is over, it ends the process.
            import signal
            signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(args) -> int:
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:                  # output piped into `head`, or git went away
        sys.stderr.close()
        return 0
    except Exception as err:
        from gitmodel.errors import GitmodelError
        if isinstance(err, GitmodelError):
            print(f"gitmodel: error: {err.full()}", file=sys.stderr)
            return 1
        if isinstance(err, OSError):
            import errno
            where = f" ({err.filename})" if err.filename else ""
            print(f"gitmodel: error: {err.strerror or err}{where}", file=sys.stderr)
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
                print("gitmodel: a write failed on this machine's disk; nothing half-written is "
                      "used (files count once written whole and renamed). Free space (or make "
                      "the folder writable), then run the command again", file=sys.stderr)
            if err.errno in (errno.EMFILE, errno.ENFILE):
                print("gitmodel: more files are open than this system allows (the store's "
                      "packs: `gitmodel gc` joins small ones); raise the limit (`ulimit -n`) "
                      "and run the command again", file=sys.stderr)
            return 1
        if isinstance(err, MemoryError):
            print("gitmodel: error: out of memory; run the command again with more memory "
                  "available", file=sys.stderr)
            return 1
        if os.environ.get("GITMODEL_DEBUG"):
            raise
        print(f"gitmodel: internal error: {type(err).__name__}: {err}. This is a bug in "
              "gitmodel; GITMODEL_DEBUG=1 shows where it happened", file=sys.stderr)
        return 70
