"""A session: what a command, git's filter or a driver works with in one repository. It opens
the store once (with git's sharing settings) and the gitmodel remote on first use, so commands
that never touch a remote never configure or contact one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gitmodel.errors import GitmodelError
from gitmodel.git import repo
from gitmodel.store.files import Permissions, parse_shared
from gitmodel.store.objects import Store

if TYPE_CHECKING:           # imported when used: the filter starts without them
    from gitmodel.remote.backend import RemoteSpec
    from gitmodel.remote.view import RemoteView
    from gitmodel.stored import Fetch


class NoRemote(GitmodelError):
    def __init__(self, why: str = ""):
        super().__init__(f"no gitmodel remote is configured{why}",
                         "Run `gitmodel remote add origin <url>` (a folder path or any fsspec "
                         "URL such as s3://bucket/prefix)")


class Session:
    def __init__(self, cwd: Path | str | None = None, remote: str | None = None):
        self.cwd = cwd
        self.remote_name = remote            # a name or URL given on the command line
        self._store: Store | None = None
        self._locations: tuple[Path, Path] | None = None
        self._views: dict[str, RemoteView] = {}
        self._unopened: dict[str, GitmodelError] = {}    # remotes that could not be opened
        self._hook_checked = False

    @property
    def locations(self) -> tuple[Path, Path]:
        """(common git directory, hooks directory)."""
        if self._locations is None:
            self._locations = repo.locations(self.cwd)
        return self._locations

    @property
    def store(self) -> Store:
        if self._store is None:
            shared = parse_shared(repo.config_get("core.sharedRepository", cwd=self.cwd))
            self._store = Store(self.locations[0] / "gitmodel", Permissions(shared))
        return self._store

    def ensure_hook(self) -> str | None:
        """Give the repository its pre-push hook if it has none (once per session); a warning
        when its pushes cannot be covered."""
        if self._hook_checked:
            return None
        self._hook_checked = True
        from gitmodel.git import install
        return install.ensure_hook(*self.locations, cwd=self.cwd)

    # ----- remotes -----

    def spec(self, name: str | None = None, upload: bool = False) -> RemoteSpec:
        """The remote named (default: the configured one); to `upload` to, found from this
        branch's own configuration only (remotes._sources says why)."""
        from gitmodel.git import remotes
        spec = remotes.resolve(name or self.remote_name, self.cwd, reading=not upload)
        if spec is None:
            raise NoRemote(remotes.upload_hint(self.cwd) if upload else "")
        return spec

    def view(self, spec: RemoteSpec | str | None = None, upload: bool = False) -> RemoteView:
        """The view of a remote (by spec, name or URL; default: the configured one; see spec
        for `upload`)."""
        from gitmodel.remote.backend import RemoteSpec, open_backend
        from gitmodel.remote.view import RemoteView
        if not isinstance(spec, RemoteSpec):
            spec = self.spec(spec, upload)
        if spec.url in self._unopened:      # tried once: a checkout of many files waits once
            raise self._unopened[spec.url]
        if spec.url not in self._views:
            try:
                backend = open_backend(spec)
            except GitmodelError as err:
                self._unopened[spec.url] = err
                raise
            if _same_folder(backend, self.store.root):
                raise GitmodelError(f"remote {spec.name} ({spec.url}) is this repository's own "
                                    f"store ({self.store.root}): nothing sent there would leave "
                                    "this machine", "Nothing was sent. Name another folder or "
                                    "URL: `gitmodel remote add NAME URL` (an empty URL, such as "
                                    "an unset shell variable, names the current folder)")
            self._views[spec.url] = RemoteView(backend, self.store.root, self.store.permissions)
        return self._views[spec.url]

    def default_view(self) -> RemoteView | None:
        """The default remote's view, or None when no remote is configured."""
        from gitmodel.git import remotes
        spec = remotes.resolve(self.remote_name, self.cwd)
        return self.view(spec) if spec is not None else None

    def view_for_push(self, git_remote: str, git_url: str) -> RemoteView | None:
        """The gitmodel remote that goes with a git remote being pushed to."""
        from gitmodel.git import remotes
        spec = remotes.for_git_remote(git_remote, git_url, self.cwd)
        return self.view(spec) if spec is not None else None

    def fetcher(self) -> Fetch:
        """A function fetching objects from the default remote into the store. The remote is
        found and opened on first use, so work that finds everything in the store neither pays
        for opening it (an S3 client's imports take ~0.4 s) nor fails when it cannot be opened.
        With no remote configured it fetches nothing: the read that follows names what is
        missing. Callers writing several files at once (`gitmodel pull`) share it: one fetch
        runs at a time, so two files needing one chunk do not both open the remote and
        download it."""
        import threading
        looked_up: list[RemoteView | None] = []          # the remote, once found (None: none)
        one_at_a_time = threading.Lock()

        def fetch(oids: list[bytes], sizes: dict[bytes, int] | None = None) -> None:
            with one_at_a_time:
                if not looked_up:
                    looked_up.append(self.default_view())
                view = looked_up[0]
                if view is None:
                    return
                from gitmodel.remote import transfer
                stats = transfer.download(self.store, view, oids, quiet=True, sizes=sizes)
            if stats.failed:
                raise GitmodelError(next(iter(stats.failed.values())) + self.elsewhere(view))
        return fetch

    def elsewhere(self, view: RemoteView) -> str:
        """Where else this repository says checkpoints may be: its other gitmodel remotes (a
        push through git remote X goes to gitmodel remote X, while reads go to the default)."""
        from gitmodel.git import remotes
        try:
            named = remotes.configured(self.cwd)[0]
        except GitmodelError:
            return ""
        others = sorted(name for name, spec in named.items() if spec.url != view.backend.url)
        if not others:
            return ""
        return (f"; this repository names other gitmodel remotes too ({', '.join(others)}): "
                f"`gitmodel fetch {others[0]}` brings what was pushed there, then "
                "`git checkout -- PATH` (or `gitmodel pull`)")


def _same_folder(backend, root: Path) -> bool:
    """Whether a remote is the folder `root` itself."""
    inner = getattr(backend, "backend", backend)
    if not getattr(inner, "local", False):
        return False
    try:
        return Path(inner.root).resolve() == root.resolve()
    except (OSError, RuntimeError):
        return False
