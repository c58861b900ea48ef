"""Fixtures: throwaway git repositories driven through the real git binary."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN_DIR = str(Path(sys.executable).parent)       # where the `gitmodel` console script lives

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
           "I32": np.int32, "U8": np.uint8, "BF16": np.uint16}


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtypes: dict[str, str] | None = None,
                      metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file written by hand (no library), tensors in the given order."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, array in tensors.items():
        dtype = (dtypes or {}).get(name) or next(k for k, v in _DTYPES.items() if v == array.dtype.type)
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for array in tensors.values():
            f.write(np.ascontiguousarray(array).tobytes())
    return path


def random_model(seed: int = 0, layers: int = 4, width: int = 256, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    model = {"embed.weight": rng.standard_normal((1000, width), dtype=np.float32)}
    for i in range(layers):
        model[f"layers.{i}.weight"] = rng.standard_normal((width, width), dtype=np.float32)
        model[f"layers.{i}.bias"] = rng.standard_normal(width, dtype=np.float32)
    return {k: (v * 0.02).astype(dtype) for k, v in model.items()}


def eighty_layers(changed: bool, d: int = 8, f: int = 16) -> dict[str, np.ndarray]:
    """A Llama-shaped checkpoint: 80 layers of 10 small tensors (803 in all). The changed
    version moves later layers more and MLP more than attention, leaves k_proj of every
    seventh layer alone, puts a NaN in layer 77 and triples the head."""
    rng = np.random.default_rng(1)
    roles = {"self_attn.q_proj.weight": (d, d), "self_attn.k_proj.weight": (d, d),
             "self_attn.v_proj.weight": (d, d), "self_attn.o_proj.weight": (d, d),
             "self_attn.q_proj.bias": (d,), "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d),
             "mlp.down_proj.weight": (d, f), "input_layernorm.weight": (d,),
             "post_attention_layernorm.weight": (d,)}
    model = {"model.embed_tokens.weight": rng.standard_normal((32, d)).astype(np.float32)}
    for i in range(80):
        for role, shape in roles.items():
            model[f"model.layers.{i}.{role}"] = rng.standard_normal(shape).astype(np.float32)
    model["model.norm.weight"] = np.ones(d, np.float32)
    model["lm_head.weight"] = rng.standard_normal((32, d)).astype(np.float32)
    if changed:
        moved = np.random.default_rng(2)
        for name in model:
            if ".layers." in name:
                i = int(name.split(".")[2])
                if i % 7 == 3 and "k_proj" in name:
                    continue
                scale = np.float32(0.001 * (1 + i / 10) * (2 if "mlp" in name else 1))
                model[name] = model[name] + scale * moved.standard_normal(model[name].shape).astype(np.float32)
        model["model.layers.77.mlp.down_proj.weight"][0, 0] = np.nan
        model["lm_head.weight"] = model["lm_head.weight"] * np.float32(3)
    return model


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class Repo:
    def __init__(self, path: Path, env: dict[str, str]):
        self.path, self.env = path, env

    def git(self, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(["git", *args], cwd=self.path, env=self.env, capture_output=True,
                                input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout.decode(errors='replace')}\n{result.stderr.decode(errors='replace')}")
        return result

    def gitmodel(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["gitmodel", *args], cwd=self.path, env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"gitmodel {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def out(self, *args: str) -> str:
        return self.git(*args).stdout.decode()

    def commit(self, message: str, *paths: str) -> None:
        self.git("add", *(paths or ["-A"]))
        self.git("commit", "-q", "-m", message)

    @property
    def store(self) -> Path:
        return Path(self.out("rev-parse", "--path-format=absolute", "--git-common-dir").strip()) / "gitmodel"

    def status(self) -> str:
        return self.out("status", "--porcelain")


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", PATH=BIN_DIR + os.pathsep + env.get("PATH", ""),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    return env


def user(tmp_path: Path, env: dict[str, str], name: str) -> dict[str, str]:
    """An environment with its own HOME where only `gitmodel install --global` has run."""
    home = tmp_path / f"home-{name}"
    home.mkdir()
    out = dict(env, HOME=str(home))
    subprocess.run(["gitmodel", "install", "--global"], env=out, check=True, capture_output=True)
    return out


def make_repo(path: Path, env: dict[str, str], track: str | None = "*.safetensors") -> Repo:
    path.mkdir(parents=True, exist_ok=True)
    repo = Repo(path, env)
    repo.git("init", "-q", "-b", "main")
    repo.gitmodel("install")
    if track:
        repo.gitmodel("track", *track.split())
        repo.commit("track", ".gitattributes")
    return repo


def team(tmp_path: Path, env: dict, url: str, options: dict | None = None) -> Repo:
    """A repository whose commits name gitmodel remote `origin` at `url` (fsspec `options`),
    with a bare git remote `origin` beside it at tmp_path/hub.git."""
    repo = make_repo(tmp_path / "work", env)
    args = [f"--option=endpoint_url={options['endpoint_url']}"] if options else []
    repo.gitmodel("remote", "add", "origin", url, *args)
    repo.commit("remote", ".gitmodel")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "hub.git")], check=True)
    repo.git("remote", "add", "origin", str(tmp_path / "hub.git"))
    return repo


@pytest.fixture
def repo(tmp_path: Path, git_env: dict[str, str]) -> Repo:
    return make_repo(tmp_path / "repo", git_env)


@pytest.fixture(scope="session", autouse=True)
def session_tempdir(tmp_path_factory):
    """The tests' temporary files (tempfile.*, and TMPDIR for git and gitmodel subprocesses)
    go to a folder of this session under pytest's base temporary folder, not the system temp
    folder. Whatever is left there at the end was not cleaned up by the test that made it:
    the session fails naming it (the folder is removed either way)."""
    import shutil
    import tempfile
    root = tmp_path_factory.mktemp("tempdir")
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(root)
    os.environ["TMPDIR"] = str(root)
    try:
        yield root
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        left = sorted(p.name for p in root.iterdir())
        shutil.rmtree(root, ignore_errors=True)
    assert not left, (f"the tests left {len(left)} temporary file(s) or folder(s) (e.g. "
                      f"{', '.join(left[:5])}): use pytest's tmp_path or tempfile.TemporaryDirectory")


# The chunk sizes of gitmodel before commit d265326 (2026-11-24): the same bytes were cut
# elsewhere, so a tensor over 64 KiB had other chunk ids and another DIGEST.
OLD_CHUNKING = {"MIN_SIZE": 64 << 10, "AVG_SIZE": 64 << 10, "MAX_SIZE": 512 << 10}


def commit_old_chunking(repo: Repo, path: str, message: str, stats: bool = True) -> str:
    """Commit the work tree's `path` as a gitmodel of before d265326 did: its chunks cut with
    the old sizes and stored, the pointer committed as it is (a pointer cleans to itself). The
    work tree keeps the pointer: the bytes would clean to this version's pointer, so git would
    take the file for modified (docs/formats.md §2.1). stats=False: tensor lines without statistics, as before
    they existed. Returns the pointer text."""
    from gitmodel import checkpoint
    from gitmodel.store import chunker
    from gitmodel.store.objects import Store
    file = repo.path / path
    with pytest.MonkeyPatch.context() as patch:
        for key, value in OLD_CHUNKING.items():
            patch.setattr(chunker, key, value)
        with open(file, "rb") as f:
            text = checkpoint.clean(f, Store(repo.store)).decode()
    if not stats:
        head, _, table = text.partition("[tensors]\n")
        text = head + "[tensors]\n" + "".join(" ".join(line.split(" ")[:4]) + "\n"
                                               for line in table.splitlines())
    file.write_text(text)
    repo.commit(message, path)
    return text
