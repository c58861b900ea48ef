"""Settings a gitmodel command makes for its own process, once, at start; and the
environment the commands it runs get, which is the one it was given."""

from __future__ import annotations

import os

_SET_HERE: set[str] = set()            # variables this process set for itself


def quiet_blas() -> None:
    """Importing numpy starts OpenBLAS's threads, one per core, which spin for ~0.1 s of CPU
    waiting for work. gitmodel never calls BLAS, and on a small machine those threads take a
    core from its own (figures: docs/benchmarks.md). Must run before numpy's import."""
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        _SET_HERE.add("OPENBLAS_NUM_THREADS")


def open_files_allowed(at_most: int = 1 << 16) -> None:
    """Raise this process's limit of open files to what the system allows it (up to
    `at_most`), as Go programs such as git-lfs do at start: a read keeps each pack it reads
    open, and a store holds a pack per `git add` until a repack joins them, more than macOS's
    default of 256."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = at_most if hard == resource.RLIM_INFINITY else min(hard, at_most)
        if soft == resource.RLIM_INFINITY or soft >= want:
            return
        for value in (want, min(want, 10240)):     # macOS refuses more than kern.maxfilesperproc
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
                return
            except (ValueError, OSError):
                continue
    except ImportError:
        pass                   # not on this system: the default stays


GIT_PATHS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR")


def absolute_git_paths() -> None:
    """Git reads GIT_DIR and GIT_WORK_TREE from the folder it starts in; gitmodel runs git
    from the work tree's top, so a relative one (GIT_DIR=../.git from a subfolder) is made
    absolute first, as git would have read it here. (GIT_INDEX_FILE and the others git reads
    from the top, where gitmodel runs it: they stay as they are.)"""
    for name in ("GIT_DIR", "GIT_WORK_TREE"):
        value = os.environ.get(name)
        if value and not os.path.isabs(value):
            os.environ[name] = os.path.abspath(value)


def child_environment(**extra: str) -> dict[str, str]:
    """The environment for a command this process runs (git, and through it the user's hooks):
    the one this process was given, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if key not in _SET_HERE}
    env.update(extra)
    return env


def outside_environment() -> dict[str, str]:
    """The environment for a git command about another repository than this process's
    (or about this one as found from a folder): without the variables that name one."""
    return {key: value for key, value in child_environment().items() if key not in GIT_PATHS}
