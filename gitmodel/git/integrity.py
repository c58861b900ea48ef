"""Whether the store, or a remote, holds what the repository's commits need.

What is needed: every checkpoint in HEAD's tree and in the index, or (all history) in every
commit of every branch and tag, and the index. Each is found complete, missing here but
fetchable from the remote, damaged, or lost (on neither side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from gitmodel import stored
from gitmodel.git import history
from gitmodel.remote import transfer
from gitmodel.remote.view import RemoteView
from gitmodel.store import codec
from gitmodel.store.manifest import Manifest
from gitmodel.store.objects import MAX_CHAIN, Store, goes_round
from gitmodel.stored import Checkpoints
from gitmodel.quoting import quote_path

COMPLETE, FETCHABLE, DAMAGED, LOST, UNKNOWN = "complete", "fetchable", "damaged", "lost", "unknown"


@dataclass
class CheckpointState:
    content: str
    path: str
    state: str
    detail: str = ""


@dataclass
class Findings:
    checkpoints: list[CheckpointState] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)      # about the remote itself
    damaged_packs: set[str] = field(default_factory=set)   # remote packs a read found damage in

    def count(self, state: str) -> int:
        return sum(1 for c in self.checkpoints if c.state == state)


def needed_checkpoints(repository, all_history: bool = False, damaged: list | None = None,
                       sizes: dict[str, int] | None = None) -> Checkpoints:
    """With `damaged`, a damaged pointer (in a commit, HEAD's tree or the index) is appended
    there (it names no checkpoint: nothing to check) and the walk goes on. `sizes` receives
    the file size their pointers give (pointer.note_size)."""
    if all_history:
        found = history.pointers_introduced(repository, history.all_refs(repository), fetch=True,
                                            damaged=damaged, sizes=sizes)
    else:
        found = history.pointers_in_trees(repository, ["HEAD"], damaged=damaged, sizes=sizes) \
            if not repository.head_is_unborn else {}
    staged: list | None = [] if damaged is not None else None
    for content, path in history.pointers_in_index(repository, staged, sizes).items():
        found.setdefault(content, path)
    if staged:
        damaged += history.staged_only(repository, staged)
    return found


def check_store(store: Store, checkpoints: Checkpoints, view: RemoteView | None,
                remote_error: str = "") -> Findings:
    """Each needed checkpoint's state in the local store (run after the store's own check,
    which marks damaged copies). Missing or damaged ones are looked up on the remote."""
    findings = Findings()
    lacking: dict[str, list[bytes]] = {}
    for content, path in checkpoints.items():
        need = stored.needed([bytes.fromhex(content)], store.read_manifest)
        absent = store.missing(store.with_bases(need.objects))
        if not absent and not need.unreadable:
            findings.checkpoints.append(CheckpointState(content, path, COMPLETE))
        else:
            lacking[content] = absent or list(need.unreadable)
    if lacking and view is not None:
        try:
            view.refresh()
        except Exception as err:            # the remote's trouble must not hide the store's
            remote_error = str(err)
            view = None
    damaged = store.damaged()
    for content, oids in lacking.items():
        path = checkpoints[content]
        bad = [oid for oid in oids if oid in damaged]
        state = DAMAGED if bad else LOST
        detail = (f"{len(bad)} damaged object(s), first {bad[0].hex()}" if bad else
                  f"{len(oids)} object(s) missing here, first {oids[0].hex()}")
        if view is not None:
            manifest = bytes.fromhex(content)
            if all(oid in view.entries for oid in oids) or manifest in view.entries:
                state, detail = FETCHABLE, f"{detail}; remote {view.name} has them"
            else:
                detail = f"{detail}; remote {view.name} lacks them too"
        elif remote_error:
            state, detail = UNKNOWN if state == LOST else state, f"{detail}; the remote could not be checked: {remote_error}"
        findings.checkpoints.append(CheckpointState(content, path, state, detail))
    return findings


def check_remote(view: RemoteView, checkpoints: Checkpoints, store: Store,
                 progress: Callable[[str], None] = lambda line: None,
                 all_history: bool = False, sizes: dict[str, int] | None = None) -> Findings:
    """Each needed checkpoint's state on the remote: every object present in a verified index,
    then read and verified (nothing is stored), and so are the bases of its deltas there: a
    delta is of no use without its base on the same remote. Each object is read once, however
    many checkpoints need it, where the local store holds the bases (else a base is read again
    for deltas far apart, past a small cache). `all_history`: the checkpoints are those of
    every commit (`fsck --all`), which the repair it suggests must cover too. `sizes`: the
    file size each one's pointer gives (what bounds its manifest)."""
    findings = Findings()
    view.refresh(recheck=True)
    for name in view.damaged_indexes():     # (a pack a gc removed meanwhile is not damage)
        findings.problems.append(f"damaged index {name}: {view.damaged[name]}")
    # Deltas decode against the local store's copy of a base when it has one (no second read
    # of the remote); the remote's copy is checked on its own, as an object the delta needs.
    bases = transfer.remote_bases(view, store)
    unusable: dict[bytes, str | None] = {}       # object -> why it cannot be used there, or None
    bounds = {bytes.fromhex(c): n for c, n in (sizes or {}).items()}
    based_on: dict[bytes, list[bytes]] = {}      # a delta there -> its bases
    for content, path in checkpoints.items():
        manifest_id = bytes.fromhex(content)
        failed: dict[bytes, str] = {}
        manifests = transfer.read_manifests(view, [manifest_id], failed, bounds)
        if manifest_id not in manifests:
            state = LOST if manifest_id not in view.entries else DAMAGED
            detail = failed.get(manifest_id, "") or "not on the remote"
            if _held_here(store, manifest_id):      # e.g. a branch never pushed
                detail += (f"; the local store has it: `gitmodel fsck --remote {view.name} "
                           f"{'--all ' if all_history else ''}--repair` "
                           + ("" if view.damaged_indexes() else
                              f"(or `gitmodel push {view.name}{' --all' if all_history else ''}`) ")
                           + "uploads it")
            findings.checkpoints.append(CheckpointState(content, path, state, detail))
            continue
        entry, payload = manifests[manifest_id]
        chunks = Manifest.decode(codec.decode(entry.encoding, payload, entry.raw_length)).chunks
        progress(f"verifying {quote_path(path)} on {view.name} ({len(chunks)} chunks)")
        needed = _verify_there(view, (cid for cid, _ in chunks), bases, unusable, based_on)
        bad = {oid: unusable[oid] for oid in needed if unusable[oid] is not None}
        findings.damaged_packs.update(entry.pack for oid in bad if (entry := view.entries.get(oid)))
        if not bad:
            findings.checkpoints.append(CheckpointState(content, path, COMPLETE))
            continue
        absent = [oid for oid in bad if oid not in view.entries]
        state = LOST if absent else DAMAGED
        orphans = [oid for oid in needed if any(b in absent for b in based_on.get(oid, ()))]
        if orphans:
            base = next(b for b in based_on[orphans[0]] if b in absent)
            detail = (f"{len(orphans)} chunk(s) there are stored as differences from chunks it "
                      f"lacks, first {orphans[0].hex()} from {base.hex()}")
        else:
            oid, why = next(iter(bad.items()))
            detail = f"{len(bad)} object(s) unusable there, first {oid.hex()}: {why}"
        if not store.missing(store.with_bases(list(bad))):
            detail += (f"; the local store has good copies: `gitmodel fsck --remote {view.name} "
                       f"{'--all ' if all_history else ''}--repair` uploads them")
        findings.checkpoints.append(CheckpointState(content, path, state, detail))
    return findings


def _held_here(store: Store, manifest_id: bytes) -> bool:
    """Whether the local store holds every object of a checkpoint."""
    need = stored.needed([manifest_id], store.read_manifest)
    return not need.unreadable and not store.missing(store.with_bases(need.objects))


def _verify_there(view: RemoteView, chunks: Iterable[bytes], bases, unusable: dict, based_on: dict) -> list[bytes]:
    """Read and check these chunks on the remote, and the bases of the deltas among them, each
    object once (`unusable` remembers); every object they need there."""
    needed = dict.fromkeys(chunks)
    todo = [oid for oid in needed if oid not in unusable]
    while todo:
        failed: dict[bytes, str] = {}
        orphans: list = []          # deltas whose bases neither store nor remote has: their ids
        keep_ids = lambda oid, entry, record, missing: orphans.append((oid, missing))   # noqa: E731
        for oid, entry, payload in transfer.read_objects(view, todo, failed, bases=bases, deferred=keep_ids):
            unusable[oid] = None
            if entry.encoding == codec.DELTA:
                based_on[oid] = codec.delta_bases(payload)
        for oid, missing in orphans:
            based_on[oid] = missing
            failed[oid] = (f"stored there as a difference from chunk {missing[0].hex()}, which "
                           + ("could not be read there" if missing[0] in view.entries else "it lacks"))
        unusable.update(failed)
        todo = []
        for oid in list(needed):
            for base in based_on.get(oid, ()):
                if base not in needed:
                    needed[base] = None
                    if base not in unusable:
                        todo.append(base)
    # Each delta checked out against a base read from the local store: deltas there that are
    # bases of each other each pass, and no reader there can decode them.
    ends: set[bytes] = set()
    for oid in needed:
        if unusable.get(oid) is None and goes_round(oid, based_on, ends):
            unusable[oid] = ("stored there as a difference from chunks that are, in turn, "
                             "differences from it (a cycle of deltas, none stored whole) or "
                             f"from a chain of more than {MAX_CHAIN}")
    return list(needed)


# ----------------------------------------------------------------------------- gitmodel fsck

def fsck(session, all_history: bool, remote: str | None, repair: bool,
         say: Callable[[str], None]) -> int:
    """Check (and with `repair`, repair) the local store, or a remote, against what the
    repository needs; returns the number of problems left."""
    from gitmodel.git import repo
    scope = "every commit of every branch and tag, and the index" if all_history else "HEAD and the index"
    damaged: list = []
    sizes: dict[str, int] = {}
    checkpoints = needed_checkpoints(repo.open_repository(), all_history, damaged, sizes)
    for item in damaged:     # not a checkpoint: nothing to check, fetch or keep for it
        say(f"note: {item}; it names no checkpoint, so there is nothing to check for it, but "
            f"{item.harm()}. {item.rewrite_hint()}")
    if remote is not None:
        return _fsck_remote(session, remote, checkpoints, sizes, scope, repair, say, all_history)
    from gitmodel.store import fsck as store_fsck
    store = session.store
    report = store_fsck.check(store)
    say(f"store {store.root}: {report.objects} objects ({report.manifests} files, {report.bytes} "
        f"bytes) verified in {len(store.packs())} packs")
    _say_problems(report.problems, say)
    for line in report.newer[:3]:
        say(f"note: {line}")
    if report.set_aside:
        say(f"note: {report.set_aside} stored copies cannot be read and are not needed: they are "
            "differences from chunks lost or damaged here, and other copies of their objects are "
            "good (`gitmodel gc` removes them)")
    if report.unmarked:
        say(f"note: {len(report.unmarked)} stored copies once found unreadable read well again "
            "(their bases are back)")
    if repair and report.problems:
        fixed = store_fsck.repair(store, report, lambda line: say(f"repair: {line}"))
        for name in fixed.removed:
            say(f"repair: removed {name}")
        if not all_history and fixed.quarantined:
            say("repair: older commits may have needed what was set aside: `gitmodel fsck --all` "
                "checks them")
        report = store_fsck.check(store)
    view, remote_error = None, ""
    try:
        view = session.default_view()
    except Exception as err:
        remote_error = str(err)
    findings = check_store(store, checkpoints, view, remote_error)
    if repair:
        fetchable = {c.content: c.path for c in findings.checkpoints if c.state == FETCHABLE}
        if fetchable and view is not None:
            from gitmodel import sync
            result = sync.fetch(store, view, fetchable, sizes=sizes)
            say(f"repair: fetched {result.stats.objects} object(s) of {len(fetchable)} "
                f"checkpoint(s) from {view}")
            findings = check_store(store, checkpoints, view, remote_error)
            if result.stats.objects and report.problems:   # e.g. the base of deltas counted above
                report = store_fsck.check(store)
                _say_problems(report.problems, lambda line: say(f"after the fetch, {line}"))
            for c in findings.checkpoints:          # listed there, but not to be had
                if c.state == FETCHABLE and c.content in result.failed:
                    c.state = DAMAGED
                    c.detail = f"{c.detail}, but fetching it failed: {result.failed[c.content]}"
    _say_findings(findings, scope, say)
    lost = findings.count(DAMAGED) + findings.count(LOST)
    if findings.count(FETCHABLE) and not repair:
        say("`gitmodel fsck --all --repair` brings the fetchable ones" if all_history else
            "`gitmodel fetch` (or `gitmodel fsck --repair`) brings the fetchable ones")
    unindexed = [p for p in report.problems if p.kind in (store_fsck.DAMAGED_INDEX,
                                                        store_fsck.PACK_WITHOUT_INDEX)]
    if lost and unindexed and not repair:
        say(f"{len(unindexed)} pack(s) here have no usable index, and may hold what is missing: "
            "`gitmodel fsck --repair` indexes them again first")
    if lost:
        say("to repair a damaged or lost checkpoint, add the file again from a good copy (that "
            "stores good objects; `git add --renormalize PATH` when the work tree holds it, "
            "which a plain `git add` skips as unchanged), or fetch it from a remote that has it"
            + ("; `gitmodel fsck --repair` also moves damaged packs aside, keeping their good "
               "objects" if findings.count(DAMAGED) else ""))
    if findings.count(UNKNOWN):
        say("whether the remote has the unknown ones could not be checked: make the remote "
            "reachable (its URL, credentials, network), then run fsck again")
    problems = len(report.problems) + lost + findings.count(UNKNOWN)
    say(f"{problems} problem(s).")
    return problems


SHOWN_PER_KIND = 5     # a lost pack of bases makes one problem per delta: the rest are counted


def _say_problems(problems: list, say: Callable[[str], None]) -> None:
    shown: dict[str, int] = {}
    for problem in problems:
        shown[problem.kind] = shown.get(problem.kind, 0) + 1
        if shown[problem.kind] <= SHOWN_PER_KIND:
            say(f"problem: {problem}")
    for kind, count in shown.items():
        if count > SHOWN_PER_KIND:
            say(f"problem: {count - SHOWN_PER_KIND} more of the kind \"{kind}\"")


def _fsck_remote(session, name: str, checkpoints: Checkpoints, sizes: dict[str, int], scope: str,
                 repair: bool, say: Callable[[str], None], all_history: bool) -> int:
    view = session.view(name, upload=repair)          # a repair uploads: see Session.spec
    findings = check_remote(view, checkpoints, session.store, all_history=all_history, sizes=sizes)
    for problem in findings.problems:
        say(f"problem: remote {view.name}: {problem}")
    if view.listing is not None and set(view.listing.sizes) - view.listing.published:
        # Not deleted by gc: such a pack cannot be told from one whose index was lost (its
        # objects may be the only copies), nor from an upload whose index is on its way.
        waste = sorted(set(view.listing.sizes) - view.listing.published)
        say(f"note: remote {view.name} holds {len(waste)} pack file(s) without an index, which no "
            f"reader uses ({', '.join(waste[:3])}): an upload cut short before its index (a push "
            "run again finishes it when it sends the same pack), or an index lost. A folder "
            "remote's pack can be indexed again from a copy: put it in a clone's "
            ".git/gitmodel/packs, run `gitmodel fsck --repair` there, then `gitmodel push --all`")
    if repair:
        before = findings
        restored = [name for name in view.damaged_indexes() if view.restore_index(name)]
        if restored:
            say(f"repair: uploaded this clone's copy of {len(restored)} damaged pack index(es) to "
                f"{view} ({', '.join(restored[:3])})")
            findings = check_remote(view, checkpoints, session.store, all_history=all_history,
                                    sizes=sizes)
        broken = {c.content: c.path for c in findings.checkpoints if c.state in (DAMAGED, LOST)}
        if broken:
            from gitmodel import sync
            stats = sync.push(session.store, view, broken, force=True)
            say(f"repair: uploaded {stats.objects} object(s) of {len(broken)} checkpoint(s) "
                f"to {view} from the local store")
            rescued = _rescue(session.store, view, findings.damaged_packs)
            if rescued:
                say(f"repair: uploaded {rescued} more object(s) held in the damaged pack(s), so "
                    "that none is needed there (a mirror leaves such a pack behind)")
            findings = check_remote(view, checkpoints, session.store, all_history=all_history,
                                    sizes=sizes)
        for problem in findings.problems if findings is not before else ():
            say(f"problem (after the repair): remote {view.name}: {problem}")
    _say_findings(findings, scope, say, where=f"remote {view.name}")
    problems = len(findings.problems) + findings.count(DAMAGED) + findings.count(LOST)
    say(f"{problems} problem(s).")
    return problems


def _rescue(store: Store, view: RemoteView, packs: set[str]) -> int:
    """Upload again, from the local store, the objects of these damaged remote packs that
    the repair did not send: a pack's good records are otherwise the only copies there, and
    every copy of the remote (a mirror) has to leave the whole pack behind."""
    from gitmodel.store.pack import PackError, decode_index
    view.refresh()
    held: set[bytes] = set()
    for name in view.packs - packs:
        try:
            held.update(decode_index(name, (view.cache_dir / f"{name}.idx").read_bytes()))
        except (OSError, PackError):
            continue
    wanted: list[bytes] = []
    for name in sorted(packs):
        try:
            listed = decode_index(name, (view.cache_dir / f"{name}.idx").read_bytes())
        except (OSError, PackError):
            continue
        wanted += [oid for oid in listed if oid not in held and store.has(oid)]
    if not wanted:
        return 0
    return transfer.upload(store, view, wanted, quiet=True, force=True).objects


def _say_findings(findings: Findings, scope: str, say: Callable[[str], None], where: str = "") -> None:
    counts = ", ".join(f"{findings.count(s)} {s}" for s in (COMPLETE, FETCHABLE, DAMAGED, LOST, UNKNOWN)
                       if findings.count(s) or s == COMPLETE)
    say(f"checkpoints needed by {scope}{' on ' + where if where else ''}: {counts}")
    for c in findings.checkpoints:
        if c.state != COMPLETE:
            say(f"  {c.state}: {quote_path(c.path)} ({c.content[:16]}…): {c.detail}")
