"""Which remote to use, from configuration.

Remotes are named in git-config syntax, in three places, highest precedence first:
  1. the environment: GITMODEL_REMOTE=<name or URL> overrides the choice of remote;
  2. git config (`git config gitmodel.<name>.url ...`, local, global or system);
  3. the committed `.gitmodel` file at the top of the work tree (or in HEAD if absent there;
     else at the newest branch built on HEAD if HEAD predates it, or at the newest branch of
     HEAD's git remote that shares history with HEAD if HEAD's branch forked before it; for
     an upload, only the branch HEAD tracks on the git remote it goes to, else that remote's
     default branch):
        [gitmodel]
            remote = origin                 # the default remote's name
        [gitmodel "origin"]
            url = s3://bucket/models        # any fsspec URL or a folder path
            option = endpoint_url=https://minio.example.com   # fsspec options, repeatable
Options are `key=value`; dotted keys nest (`client_kwargs.region_name=eu-west-1`) and values
that parse as JSON (numbers, true/false) are converted. Secrets belong in the environment or
the backend's own credential files, never in `.gitmodel`; fsspec also reads
FSSPEC_<PROTOCOL>_<OPTION> variables (e.g. FSSPEC_S3_ENDPOINT_URL).

With nothing configured, a git remote that is a folder on this machine (`git clone
/srv/models.git`) gives the embedded default: the store inside that repository's git
directory, `<repo>/.git/gitmodel` or `<bare repo>/gitmodel`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from gitmodel.errors import GitmodelError
from gitmodel.git import repo
from gitmodel.remote.backend import REMOTE_NAME, RemoteSpec, folder_of

CONFIG_FILE = ".gitmodel"
_URL_LIKE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class ConfigError(GitmodelError, ValueError):
    pass


def _sources(cwd: Path | None, pattern: str = r"^gitmodel\.", reading: bool = True,
             to: str | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """(label, entries whose key matches `pattern`) from lowest to highest precedence. Not
    `reading` (anything that uploads), only the file of the branch of the git remote `to` it
    goes to that its readers find (_descendants_file; none without `to`): another ref's may
    name another team's store (a fork's upstream), and a wrong store to read from fails at
    worst, while an upload there would leave this team's store without the checkpoints,
    exit 0."""
    sources = []
    try:
        top = repo.toplevel(cwd)
    except repo.DubiousOwnership:
        raise                              # git's message says how to trust it
    except repo.NotARepository:
        top = None
    if top is not None and (top / CONFIG_FILE).is_file():
        sources.append((CONFIG_FILE, repo.config_entries(pattern, "-f", str(top / CONFIG_FILE), cwd=cwd)))
    else:                                  # a bare repository (top None) reads HEAD's
        found = _blob_entries(f"HEAD:{CONFIG_FILE}", pattern, cwd)
        if found is None and top is not None and (reading or to):
            blob = _descendants_file(top, None if reading else to)
            found = _blob_entries(blob, pattern, cwd) if blob else None
            label = blob
        else:
            label = f"HEAD:{CONFIG_FILE}"
        if found is not None:
            sources.append((label, found))
    sources.append(("git config", repo.config_entries(pattern, cwd=cwd)))
    return sources


def _blob_entries(blob: str, pattern: str, cwd: Path | None) -> list[tuple[str, str]] | None:
    """The entries of the committed file `REV:PATH`; None when that revision has no such file
    (`git config --blob` does not tell that from a file without such keys)."""
    if repo.run_git("rev-parse", "-q", "--verify", blob, cwd=cwd, check=False).returncode != 0:
        return None
    return repo.config_entries(pattern, "--blob", blob, cwd=cwd)


_DESCENDANTS: dict[tuple[str, str | None], str | None] = {}   # per process: the answers do not change


def _descendants_file(top: Path, remote: str | None = None) -> str | None:
    """`REF:.gitmodel` to read a commit without the file (HEAD has none): from the newest
    branch that contains HEAD, local branches first, then remote-tracking ones (a clone's
    `origin/main` names the remote its old commits were pushed to); else from a branch of the
    git remote HEAD's branch comes from (its own upstream followed through local branches,
    else origin) that shares history with HEAD: the one HEAD's branch tracks or the remote's
    default branch, as an upload there reads it, else the newest: a branch forked before the
    file was committed reads its data where the file says. Never a branch
    of another git remote that merely shares history (a fork's upstream), nor an unrelated
    one. With `remote`, for an upload to that git remote: only the branch of it HEAD's branch
    tracks, else its default branch (`refs/remotes/REMOTE/HEAD`), sharing history with HEAD:
    where its readers find the file (not a newer branch of it that may carry another team's,
    a fork's copy of its upstream's)."""
    key = (str(top), remote)
    if key not in _DESCENDANTS:
        _DESCENDANTS[key] = None
        if remote:
            found = _tracked_with_file(top, "HEAD", remote)
            _DESCENDANTS[key] = f"{found}:{CONFIG_FILE}" if found else None
            return _DESCENDANTS[key]
        for namespace in ("refs/heads", "refs/remotes"):
            found = _with_file(top, "--contains", "HEAD", namespace)
            if found:
                _DESCENDANTS[key] = f"{found[0]}:{CONFIG_FILE}"
                return _DESCENDANTS[key]
        home = _home_remote(top)
        found = _tracked_with_file(top, "HEAD", home) or _newest_with_file(top, "HEAD", home)
        _DESCENDANTS[key] = f"{found}:{CONFIG_FILE}" if found else None
    return _DESCENDANTS[key]


def _tracked_with_file(top: Path | None, rev: str, remote: str, upstream: bool = True) -> str | None:
    """The branch of `remote` that HEAD's branch tracks (with `upstream`), else the remote's
    default branch (`refs/remotes/REMOTE/HEAD`), if it has the file and shares history with
    `rev`: where an upload to that remote, and a reader of it, take the file from before any
    other branch."""
    asked = (["@{upstream}"] if upstream else []) + [f"refs/remotes/{remote}/HEAD"]
    candidates = [ref for ref in map(lambda name: _resolved(top, name), asked)
                  if ref and ref.startswith(f"refs/remotes/{remote}/")]
    for ref in dict.fromkeys(candidates):
        if repo.run_git("cat-file", "-e", f"{ref}:{CONFIG_FILE}", cwd=top, check=False).returncode == 0 \
                and repo.run_git("merge-base", rev, ref, cwd=top, check=False).returncode == 0:
            return ref
    return None


def _newest_with_file(top: Path | None, rev: str, remote: str) -> str | None:
    """The newest branch of `remote` with the file that shares history with `rev`."""
    for ref in _with_file(top, f"refs/remotes/{remote}"):
        if repo.run_git("merge-base", rev, ref, cwd=top, check=False).returncode == 0:
            return ref
    return None


def _resolved(top: Path, name: str) -> str | None:
    """The full ref name `name` stands for (a symbolic ref or @{upstream}), or None."""
    found = repo.run_git("rev-parse", "--symbolic-full-name", name, cwd=top, check=False)
    return (found.stdout.decode().strip() or None) if found.returncode == 0 else None


def _home_remote(top: Path) -> str:
    """The git remote HEAD's branch comes from: its upstream's remote, followed through local
    branches it tracks (`branch.X.remote = .`); origin when there is none (detached HEAD)."""
    branch = repo.run_git("symbolic-ref", "-q", "--short", "HEAD", cwd=top, check=False)
    name = branch.stdout.decode().strip() if branch.returncode == 0 else None
    for _ in range(8):                  # a chain of local branches, bounded
        if not name:
            break
        remote = repo.config_get(f"branch.{name}.remote", cwd=top)
        if remote != ".":
            return remote or "origin"
        merge = repo.config_get(f"branch.{name}.merge", cwd=top) or ""
        name = merge.removeprefix("refs/heads/")
    return "origin"


def _with_file(top: Path, *selection: str) -> list[str]:
    """The refs `git for-each-ref SELECTION` lists, newest first, whose commit has the file."""
    refs = repo.run_git("for-each-ref", "--sort=-committerdate", "--format=%(refname)", *selection,
                        cwd=top, check=False).stdout.decode().split()
    if not refs:
        return []
    asked = "".join(f"{ref}:{CONFIG_FILE}\n" for ref in refs).encode()
    kinds = repo.run_git("cat-file", "--batch-check=%(objecttype)", cwd=top, input=asked,
                         check=False).stdout.decode().splitlines()
    return [ref for ref, kind in zip(refs, kinds) if kind == "blob"]


def settings(section: str, cwd: Path | None = None) -> list[tuple[str, str]]:
    """Every (key, value) of a section of gitmodel's settings (`.gitmodel`, then git config),
    keys lower-cased as git gives them, in order of rising precedence."""
    return [entry for _, entries in _sources(cwd, rf"^{re.escape(section)}\.") for entry in entries]


def parse_option(text: str) -> tuple[list[str], object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"fsspec option {text!r} is not key=value")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if isinstance(parsed, (dict, list)):
        parsed = value                     # only scalars are converted
    return key.strip().split("."), parsed


def _set_option(options: dict, text: str) -> None:
    path, value = parse_option(text)
    node = options
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _absolute(url: str, cwd: Path | None) -> str:
    """A folder URL written relative (`../models`) means relative to the top of the main work
    tree, wherever a command runs from: every linked worktree of a clone uses the same store.
    A git repository's folder means the store inside it, as for `git push FOLDER`."""
    if _URL_LIKE.match(url) or os.path.isabs(os.path.expanduser(url)):
        found = os.path.expanduser(url)
    else:
        try:
            found = str((repo.main_toplevel(cwd) / url).resolve())
        except repo.NotARepository:
            return url
    embedded = embedded_default(found, cwd)
    return embedded.url if embedded is not None else found


def configured(cwd: Path | None = None, reading: bool = True,
               to: str | None = None) -> tuple[dict[str, RemoteSpec], str | None]:
    """Every named remote and the default remote's name, all sources merged (see _sources)."""
    return _parse(_sources(cwd, reading=reading, to=to), cwd)


def _parse(sources, cwd: Path | None) -> tuple[dict[str, RemoteSpec], str | None]:
    """The remotes and default name of (label, entries) sources, lowest precedence first."""
    remotes: dict[str, RemoteSpec] = {}
    default = None
    for label, entries in sources:
        option_lists: dict[str, list[str]] = {}
        for key, value in entries:
            parts = key.split(".")
            if parts == ["gitmodel", "remote"]:
                default = value
            elif len(parts) >= 3 and parts[-1] == "url":
                name = ".".join(parts[1:-1])
                spec = remotes.setdefault(name, RemoteSpec(name, value))
                spec.url, spec.source = _absolute(value, cwd), label
            elif len(parts) >= 3 and parts[-1] == "option":
                option_lists.setdefault(".".join(parts[1:-1]), []).append(value)
        for name, texts in option_lists.items():      # a source's options replace lower ones
            if name in remotes:
                remotes[name].options = {}
                for text in texts:
                    _set_option(remotes[name].options, text)
    return remotes, default


def config_files(revs: list[str], cwd: Path | None = None) -> list[str | None]:
    """The object id of each commit's own .gitmodel (None where it has none), in one git
    command for them all."""
    if not revs:
        return []
    asked = "".join(f"{rev}:{CONFIG_FILE}\n" for rev in revs).encode()
    found = repo.run_git("cat-file", "--batch-check=%(objectname) %(objecttype)", input=asked,
                         cwd=cwd, check=False).stdout.decode(errors="replace").splitlines()
    if len(found) != len(revs):
        return [None] * len(revs)
    return [words[0] if len(words := line.split()) == 2 and words[1] == "blob" else None
            for line in found]


def read_from(rev: str, git_remote: str, cwd: Path | None = None) -> RemoteSpec | None:
    """The remote the .gitmodel clones of commit `rev` read names for `git_remote` (a remote
    of that name, else its default): where they read from (None without such a file, or when
    it names neither). The commit's own file; failing that, as a clone's checkout finds one
    (a branch forked before the file was committed): a branch of `git_remote` with the file
    that contains the commit, else the one HEAD's branch tracks or the remote's default
    branch, else the newest, sharing history with it."""
    blob = f"{rev}:{CONFIG_FILE}"
    entries = _blob_entries(blob, r"^gitmodel\.", cwd)
    if entries is None:
        found = next(iter(_with_file(cwd, "--contains", rev, f"refs/remotes/{git_remote}")), None) \
            or _tracked_with_file(cwd, rev, git_remote, upstream=False) \
            or _newest_with_file(cwd, rev, git_remote)
        if not found:
            return None
        blob = f"{found}:{CONFIG_FILE}"
        entries = _blob_entries(blob, r"^gitmodel\.", cwd)
    remotes, default = _parse([(blob, entries or [])], cwd)
    if git_remote in remotes:
        return remotes[git_remote]
    try:
        return _default(remotes, default)
    except ConfigError:
        return None


def place(url: str) -> str:
    """A remote's location, spelled one way: a folder by its real path (a trailing slash, a
    file:// URL or a symbolic link name the same folder)."""
    folder = folder_of(url, any_host=True)
    if folder is None and "://" in url:
        return url.rstrip("/")
    return os.path.realpath(os.path.expanduser(folder or url))


def listing(cwd: Path | None = None) -> list[str]:
    """`gitmodel remote list`: each remote, the default marked with `*`."""
    remotes, default = configured(cwd)
    lines = []
    for name, spec in remotes.items():
        mark = "*" if name == default or (default is None and len(remotes) == 1) else " "
        options = "".join(f" {k}={v}" for k, v in spec.options.items())
        lines.append(f"{mark} {name}\t{spec.url}\t({spec.source}){options}")
    if not remotes:
        spec = resolve(None, cwd)
        if spec is not None:
            lines.append(f"* {spec.name}\t{spec.url}\t(embedded default: {spec.source})")
    return lines


def resolve(name_or_url: str | None = None, cwd: Path | None = None,
            reading: bool = True) -> RemoteSpec | None:
    """The remote a gitmodel command uses: the one named (a configured name, a URL or folder
    path, or a git remote: the one its pushes go to), else GITMODEL_REMOTE, else the configured
    default, else origin's embedded default. None when nothing is configured."""
    return _lasting(_chosen(name_or_url, cwd, reading))


def _chosen(name_or_url: str | None, cwd: Path | None, reading: bool) -> RemoteSpec | None:
    choice = name_or_url or os.environ.get("GITMODEL_REMOTE")
    # An upload to a git remote's gitmodel remote (`gitmodel push origin`) may read the file
    # of that git remote's branches.
    to = choice if choice and not reading and repo.config_get(f"remote.{choice}.url", cwd=cwd) else None
    remotes, default = configured(cwd, reading, to)
    if choice:
        if choice in remotes:
            return remotes[choice]
        if _URL_LIKE.match(choice) or choice.startswith(("/", "./", "../", "~")):
            given = os.path.expanduser(choice)
            here = given if _URL_LIKE.match(given) else str(Path(cwd or ".", given).resolve())
            # A git repository's folder means the store inside it, as for `git push FOLDER`.
            return embedded_default(here, cwd) or RemoteSpec(choice, given, source="command line")
        spec = None
        if repo.config_get(f"remote.{choice}.url", cwd=cwd) is not None:
            # A git remote: the store `git push` to it uploads to (as the pre-push hook, gc
            # and fsck choose it), its embedded store only when no gitmodel remote is the default
            spec = _default(remotes, default) or _embedded_default(choice, cwd)
        if spec is None:
            raise ConfigError(f"no gitmodel remote named {choice!r}; `gitmodel remote list` "
                              "shows the configured ones (a folder path starts with / ./ "
                              "../ or ~)")
        return spec
    return _default(remotes, default) or _embedded_default("origin", cwd)


def upload_hint(cwd: Path | None = None) -> str:
    """Why an upload found no remote where a read finds one (another ref's `.gitmodel`), and
    what to do; empty otherwise."""
    found = configured(cwd)[0]
    if not found or configured(cwd, reading=False)[0]:
        return ""
    source = next(iter(found.values())).source
    return (f"; this commit has no {CONFIG_FILE} ({source} names a remote, but an upload takes "
            f"its remote only from the work tree's {CONFIG_FILE}, HEAD's, a branch of the git "
            "remote it goes to, or git config: another remote's branch may name another team's "
            "store). Check out a branch that has the file, or name the remote in git config "
            "(`gitmodel remote add --local NAME URL`)")


def for_git_remote(git_name: str, git_url: str, cwd: Path | None = None) -> RemoteSpec | None:
    """The remote that goes with a git remote (for the pre-push hook): GITMODEL_REMOTE, a
    gitmodel remote of the same name, the configured default, or the embedded default."""
    if os.environ.get("GITMODEL_REMOTE"):
        return resolve(None, cwd, reading=False)
    remotes, default = configured(cwd, reading=False, to=git_name)
    if git_name in remotes:
        return _lasting(remotes[git_name])
    return _lasting(_default(remotes, default) or embedded_default(git_url, cwd, git_name))


def _lasting(spec: RemoteSpec | None) -> RemoteSpec | None:
    """Refuse a remote whose data dies with the process: git runs gitmodel anew for every
    command, so a push to memory:// would say it uploaded and keep nothing."""
    if spec is not None and _in_memory(spec.url):
        raise ConfigError(f"{spec.url} ({spec.source}): a memory:// remote keeps its data only "
                          "inside one process, and git runs gitmodel anew for every command: "
                          "nothing sent there would outlive the command. Name a folder or an "
                          "object store (`gitmodel remote add NAME URL`)")
    return spec


def _in_memory(url: str) -> bool:
    return any(part.strip().split("://", 1)[0] == "memory" for part in url.split("::"))


def _default(remotes: dict[str, RemoteSpec], default: str | None) -> RemoteSpec | None:
    if default:
        if default not in remotes:
            raise ConfigError(f"gitmodel.remote names {default!r}, which has no url")
        return remotes[default]
    return next(iter(remotes.values())) if len(remotes) == 1 else None


def _embedded_default(git_remote: str, cwd: Path | None) -> RemoteSpec | None:
    url = repo.config_get(f"remote.{git_remote}.url", cwd=cwd)
    return embedded_default(url.strip(), cwd, git_remote) if url is not None else None


def embedded_default(git_url: str, cwd: Path | None = None, name: str | None = None) -> RemoteSpec | None:
    """The store inside a git repository that lives in a local folder, if `git_url` is one."""
    folder = folder_of(git_url, any_host=True)      # as git reads it: `file:///a%20b` is /a b
    if folder is not None:
        path = Path(folder)
    elif _URL_LIKE.match(git_url) or re.match(r"^[^/]+:", git_url):    # scp-like host:path
        return None
    else:
        try:
            base = repo.toplevel(cwd)
        except repo.NotARepository:
            base = Path(cwd or ".")
        path = (base / git_url).resolve()
    if (path / ".git").is_dir():
        store = path / ".git" / "gitmodel"
    elif (path / "objects").is_dir() and (path / "HEAD").is_file():
        store = path / "gitmodel"
    else:
        return None
    return RemoteSpec(name or git_url, str(store), source=f"inside the git repository {path}")


# ----------------------------------------------------------------------------- editing

def _edit_target(local: bool, cwd: Path | None) -> dict:
    return {"scope": "local"} if local else {"file": repo.toplevel(cwd) / CONFIG_FILE}


def check_url(url: str) -> str | None:
    """Refuse a URL no backend can open; returns a note for a folder that does not exist yet."""
    if not url.strip():
        raise ConfigError("an empty URL names no remote (an unset shell variable?)")
    if _in_memory(url):
        raise ConfigError(f"{url}: a memory:// remote keeps its data only inside one process, and "
                          "git runs gitmodel anew for every command; name a folder or an object "
                          "store")
    try:
        decoded = folder_of(url)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if decoded is not None or not _URL_LIKE.match(url):
        folder = Path(decoded or os.path.expanduser(url))
        if not folder.parent.is_dir():
            raise ConfigError(f"{url}: the folder {decoded}'s parent does not exist" if decoded
                              else f"{url}: neither a URL (scheme://...) nor a folder whose "
                              "parent exists")
        return None if folder.is_dir() else f"{url} does not exist yet; the first push creates it"
    import fsspec
    protocol = url.split("://", 1)[0]
    if protocol not in fsspec.available_protocols():
        raise ConfigError(f"{url}: fsspec knows no protocol {protocol!r} (known: s3, gs, az, "
                          "ssh, file, and others fsspec lists)")
    return None


# Filesystems whose constructors name every option they use (the rest they keep unused).
_DECLARING = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "file", "local", "sftp", "ssh"}
# Options named in no constructor: fsspec's own, for any filesystem, and the one the s3 backend
# hands on to its botocore session (backend._s3_options).
_FSSPEC_OPTIONS = {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths"}
_PASSED_ON = {"s3": {"profile"}}
_PASSED_ON["s3a"] = _PASSED_ON["s3"]


def unknown_options(url: str, options: list[str]) -> list[str]:
    """The keys of `options` that the URL's fsspec filesystem names nowhere in its
    constructors: fsspec passes any key on, so a misspelt one would go unnoticed. Empty when
    the filesystem cannot be imported (its package is not installed here)."""
    import inspect
    import fsspec
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol not in _DECLARING:
        return []                      # chained URLs, and filesystems that pass keys on (http)
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError):
        return []
    named = {name for klass in cls.__mro__ if "__init__" in vars(klass)
             for name, parameter in inspect.signature(klass.__init__).parameters.items()
             if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)}
    keys = [parse_option(text)[0][0] for text in options]
    known = named | _FSSPEC_OPTIONS | _PASSED_ON.get(protocol, set())
    return [key for key in dict.fromkeys(keys) if key not in known]


def from_here(url: str, cwd: Path | None = None) -> str:
    """A folder given relative to the current directory, as the configuration keeps it:
    relative to the top of the main work tree (so the file reads the same from anywhere, and
    from every linked worktree: _absolute)."""
    if _URL_LIKE.match(url) or os.path.isabs(os.path.expanduser(url)):
        return url
    try:
        top = repo.main_toplevel(cwd)
    except repo.NotARepository:             # a bare repository: kept as given
        return url
    return os.path.relpath(os.path.abspath(os.path.join(cwd or os.getcwd(), url)), top)


def add(name: str, url: str, options: list[str], local: bool = False, cwd: Path | None = None) -> str:
    """Configure a remote; the first one configured becomes the default. Returns where."""
    if not REMOTE_NAME.fullmatch(name) or name == "remote":
        raise ConfigError(f"{name!r} is not a usable remote name (letters, digits, . _ -)")
    for text in options:
        parse_option(text)
    target = _edit_target(local, cwd)
    remotes, default = configured(cwd)
    repo.config_edit("--replace-all", f"gitmodel.{name}.url", url, cwd=cwd, **target)
    repo.config_edit("--unset-all", f"gitmodel.{name}.option", cwd=cwd, check=False, **target)
    for text in options:
        repo.config_edit("--add", f"gitmodel.{name}.option", text, cwd=cwd, **target)
    if default is None and not remotes:
        repo.config_edit("gitmodel.remote", name, cwd=cwd, **target)
    return ".git/config" if local else CONFIG_FILE


def remove(name: str, local: bool = False, cwd: Path | None = None) -> bool:
    target = _edit_target(local, cwd)
    if not repo.config_edit("--remove-section", f"gitmodel.{name}", cwd=cwd, check=False, **target):
        return False
    if repo.config_get("gitmodel.remote", cwd=cwd, **target) == name:
        repo.config_edit("--unset", "gitmodel.remote", cwd=cwd, check=False, **target)
    return True
