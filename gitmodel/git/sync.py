"""push, fetch, pull and mirror: which checkpoints git commits need, moved to or from a remote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable, Iterable

from gitmodel.git import history, repo
from gitmodel.git.remotes import RemoteSpec
from gitmodel.remote import transfer
from gitmodel.remote.index import RemoteIndex
from gitmodel.remote.storage import Remote, RemoteError
from gitmodel.store.objects import Store


class NoRemote(RemoteError):
    pass


def connect(spec: RemoteSpec | None, store: Store) -> RemoteIndex:
    if spec is None:
        raise NoRemote("no gitmodel remote is configured: run `gitmodel remote add origin <url>` "
                       "(a folder path or any fsspec URL such as s3://bucket/prefix)")
    return RemoteIndex(Remote(spec.url, spec.options, spec.name), store.root)


class NotPushable(RemoteError):
    pass


def push(store: Store, index: RemoteIndex, found: dict[str, str], quiet: bool = False) -> transfer.Stats:
    """Upload what these checkpoints ({content id: path}) need and the remote lacks."""
    manifest_ids = [bytes.fromhex(content) for content in found]
    absent = set(store.missing(manifest_ids))
    if absent:
        index.refresh()
        lacking = [oid for oid in manifest_ids if oid in absent and oid not in index.entries]
        if lacking:
            paths = ", ".join(found[oid.hex()] for oid in lacking[:3])
            raise NotPushable(f"{len(lacking)} checkpoint(s) to push are in neither the local "
                              f"store nor remote {index.remote} (e.g. {paths}); fetch them from "
                              "where they were committed, or add the files again")
    oids: list[bytes] = []
    for oid in manifest_ids:
        if oid not in absent:                 # absent here means already on the remote
            oids.extend(cid for cid, _ in store.read_manifest(oid).chunks)
            oids.append(oid)
    return transfer.upload(store, index, oids, quiet=quiet)


def fetch(store: Store, index: RemoteIndex, found: dict[str, str], quiet: bool = False) -> transfer.Stats:
    """Download what these checkpoints ({content id: path}) need and the store lacks."""
    manifest_ids = [bytes.fromhex(content) for content in found]
    if not store.missing(manifest_ids):
        chunks = {cid for m in manifest_ids for cid, _ in store.read_manifest(m).chunks}
        if not store.missing(chunks):
            return transfer.Stats()
    index.refresh()
    manifests: dict = {}                     # read once: to list the chunks, then to store
    oids = transfer.checkpoint_objects(store, index, manifest_ids, read=manifests)
    return transfer.download(store, index, oids, quiet=quiet, known=manifests)


def pointers_for_push(repository, lines: Iterable[str], git_remote: str | None) -> dict[str, str]:
    """From pre-push hook input lines `<local ref> <local sha> <remote ref> <remote sha>`."""
    zero = "0" * 40
    tips, known = [], []
    for line in lines:
        parts = line.split()
        if len(parts) != 4 or parts[1].strip("0") == "":
            continue                                  # a deletion pushes nothing
        tips.append(parts[1])
        if parts[3] != zero:
            known.append(parts[3])
    if git_remote:
        known.extend(history.remote_tracking(repository, git_remote))
    return history.pointers_introduced(repository, tips, known)


def restore_work_tree(paths: list[str], cwd: Path | None = None) -> None:
    """Replace pointer files in the work tree by their checkpoints, through git itself (so the
    index stays in step): remove them, then check them out again from the index. Paths are
    passed literally (a name like `a[1].pt` must not match `a1.pt`)."""
    top = repo.toplevel(cwd)
    env = dict(os.environ)
    env.pop("GITMODEL_SKIP_SMUDGE", None)
    for path in paths:
        (top / path).unlink(missing_ok=True)
    listing = b"".join(os.fsencode(path) + b"\0" for path in paths)
    result = subprocess.run(["git", "--literal-pathspecs", "checkout", "--pathspec-from-file=-",
                             "--pathspec-file-nul"], cwd=top, env=env, input=listing)
    if result.returncode != 0:
        raise RemoteError("git checkout could not restore some files (see above); they are "
                          "safe in git and the store: run `gitmodel pull` again")


def mirror(source: RemoteSpec, dest: RemoteSpec, tmp_dir: Path, quiet: bool = False,
           log: Callable[[str], None] = lambda line: None) -> transfer.Stats:
    return transfer.mirror(Remote(source.url, source.options, source.name),
                           Remote(dest.url, dest.options, dest.name), tmp_dir, quiet, log)
