"""Files that survive crashes and sharing: data reaches the disk before a name refers to it,
modes follow `core.sharedRepository` as git's own files do, and temporary files left by a
killed process are recognised by their lock (a live writer holds one)."""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A temporary file is dead once nobody holds its lock and nothing wrote to it for this long
# (covers the instant between creating a file and locking it).
GRACE = 10.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def parse_shared(value: str | None) -> int:
    """git's reading of core.sharedRepository: 0 (the umask decides), 0o660 (group),
    0o664 (everybody), or a negative exact mode (an octal value)."""
    if value is None:
        return 0
    text = value.strip().lower()
    if text in ("", "umask", "false", "no", "off", "0"):
        return 0
    if text in ("group", "true", "yes", "on", "1"):
        return 0o660
    if text in ("all", "world", "everybody", "2"):
        return 0o664
    try:
        mode = int(text, 8)
    except ValueError:
        return 0
    return -(mode & 0o666) if mode & 0o600 == 0o600 else 0


class Permissions:
    """Modes for a store's files and directories (git's calc_shared_perm)."""

    def __init__(self, shared: int = 0):
        self.shared = shared

    def _tweak(self, mode: int) -> int:
        if not self.shared:
            return mode
        tweak = -self.shared if self.shared < 0 else self.shared
        if not mode & stat.S_IWUSR:
            tweak &= ~0o222
        if mode & stat.S_IXUSR:
            tweak |= (tweak & 0o444) >> 2
        return (mode & ~0o777) | tweak if self.shared < 0 else mode | tweak

    @classmethod
    def inherit(cls, path: Path) -> "Permissions":
        """For a folder outside any git repository (a folder remote): shared with the group
        when the nearest existing folder above it is (setgid, as git makes shared folders)."""
        for folder in (path, *path.parents):
            try:
                mode = folder.stat().st_mode
            except OSError:
                continue
            return cls(0o660 if mode & stat.S_ISGID else 0)
        return cls()

    def file(self, mode: int = 0o444) -> int:
        """Immutable files (packs, indexes) are read-only, like git's packs."""
        return self._tweak(mode & ~_UMASK)

    def directory(self) -> int:
        mode = self._tweak(0o777 & ~_UMASK)
        return mode | stat.S_ISGID if self.shared else mode

    def make_dir(self, path: Path) -> None:
        """Create `path` (and its parents) with the store's directory mode."""
        if path.is_dir():
            return
        self.make_dir(path.parent)
        try:
            path.mkdir()
        except FileExistsError:
            return
        if self.shared:
            os.chmod(path, self.directory())


def fsync_dir(path: Path | str) -> None:
    """Make renames and creations in a directory durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes, mode: int = 0o444) -> None:
    """Create `path` holding `data`, on disk (fsynced) when this returns; a failure (a full
    disk) leaves no file behind."""
    with written(path, data, mode):
        pass


@contextmanager
def written(path: Path, data: bytes, mode: int = 0o444) -> Iterator[None]:
    """`write_synced`, the file locked (see `lock`) until the block ends: a temporary file
    to be renamed in the block, which a sweep must leave alone however slow its writer."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            lock(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            os.chmod(path, mode)
            yield
        finally:
            os.close(fd)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


def write_durably(path: Path, data: bytes, mode: int = 0o444, tmp_dir: Path | None = None) -> None:
    """Replace `path` by `data` atomically and durably: written and fsynced under a temporary
    name (in `tmp_dir`, else beside `path`), renamed, then the directory fsynced. A crash
    leaves the old state or the new one."""
    tmp = (tmp_dir or path.parent) / f".tmp-{os.getpid()}-{time.monotonic_ns()}-{path.name}"
    with written(tmp, data, mode):
        os.replace(tmp, path)
    fsync_dir(path.parent)


TEMP_PREFIX, TEMP_SUFFIX = ".gitmodel-", ".tmp"


@contextmanager
def replacing(target: Path, mode: int | None = None) -> Iterator:
    """A binary file to write `target`'s new bytes into, renamed over `target` when the block
    ends without error and removed when it raises. Its name is this writer's own (two
    commands restoring one file at once must never write into one temporary file) and short
    (a name near the 255-byte limit leaves no room for a suffix); it is locked while written,
    so `sweep_beside` can tell a killed writer's leftover from a live one. `mode`: the new
    file's permissions (default: `target`'s, else what the umask allows)."""
    import tempfile
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        lock(fd)
        with open(name, "wb") as out:
            yield out
        if mode is None:
            try:
                mode = stat.S_IMODE(os.stat(target).st_mode)
            except FileNotFoundError:
                mode = 0o666 & ~_UMASK              # _umask() would change it for every thread
        os.chmod(name, mode)
        os.replace(name, target)              # still locked: the lock goes with the file
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def sweep_beside(targets: list[Path], grace: float = GRACE) -> int:
    """Remove what killed `replacing` writers left in the folders of these files."""
    removed = 0
    for folder in {t.parent for t in targets}:
        try:
            names = [p for p in folder.iterdir()
                     if p.name.startswith(TEMP_PREFIX) and p.name.endswith(TEMP_SUFFIX)]
        except OSError:
            continue
        removed += sum(remove_if_dead(p, grace) for p in names)
    return removed


def lock(fd: int) -> None:
    """Mark a temporary file as in use for as long as `fd` stays open."""
    fcntl.flock(fd, fcntl.LOCK_EX)


def in_use(path: Path) -> bool:
    """Whether a live writer holds the file's lock (the lock follows the file when it is
    renamed). A file this process may not open (another member's, in a group-shared store,
    while it is still private to its writer) counts as in use: its lock cannot be asked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def claim(path: Path) -> int | None:
    """Take the lock of `path` without waiting, as an open descriptor to close when done; None
    when a writer or a remover holds it, or the file is gone (also when it went while the lock
    was being taken: the lock must be the one of the file that still has this name)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def remove_if_dead(path: Path, grace: float = GRACE) -> bool:
    """Remove a temporary file nobody holds a lock on and nobody wrote to for `grace`
    seconds; True if it was removed."""
    try:
        if time.time() - path.lstat().st_mtime < grace or in_use(path):
            return False
        path.unlink()
        return True
    except OSError:
        return False


def sweep(directory: Path, grace: float = GRACE) -> int:
    """Remove the dead temporary files in `directory`; returns how many."""
    try:
        paths = list(directory.iterdir())
    except OSError:
        return 0
    return sum(remove_if_dead(path, grace) for path in paths if path.is_file())
