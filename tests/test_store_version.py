"""The store's version marker: written when a store or remote is created, checked on open; data
from a newer gitmodel gives "upgrade gitmodel", never "corrupt", and nothing is written."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from conftest import Repo, random_model, write_safetensors
from gitmodel import checkpoint, pointer
from gitmodel.remote.backend import RemoteSpec, open_backend
from gitmodel.remote.view import RemoteView
from gitmodel.store.objects import CorruptObject, Store, StoreError, StoreVersionError
from gitmodel.store.pack import PackWriter, publish_into


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_new_store_gets_its_marker_and_an_old_one_without_stays_readable(tmp_path: Path):
    store = Store(tmp_path / "new")
    assert not (tmp_path / "new").exists(), "opening writes nothing"
    text = checkpoint.clean(io.BytesIO(b"x" * 1000), store)
    assert (tmp_path / "new" / "config").read_text() == "gitmodel store 2\n"
    (tmp_path / "new" / "config").unlink()            # a store from before markers existed
    again = Store(tmp_path / "new")
    assert b"".join(_restore(again, text)) == b"x" * 1000
    checkpoint.clean(io.BytesIO(b"y" * 1000), again)
    assert not (tmp_path / "new" / "config").exists(), "an existing store is not re-marked"


def _restore(store: Store, text: bytes) -> list[bytes]:
    out: list[bytes] = []
    checkpoint.Restore(pointer.parse(text), store).write_to(lambda *bufs: out.extend(bufs))
    return out


def test_a_store_from_a_newer_gitmodel_is_refused_and_not_written(tmp_path: Path):
    store = Store(tmp_path)
    checkpoint.clean(io.BytesIO(b"x" * 1000), store)
    (tmp_path / "config").chmod(0o644)
    (tmp_path / "config").write_text("gitmodel store 3\n")
    before = _tree(tmp_path)
    with pytest.raises(StoreVersionError, match=r"newer gitmodel \(store version 3") as err:
        Store(tmp_path)
    assert "upgrade gitmodel" in err.value.full()
    assert _tree(tmp_path) == before


def test_an_encoding_from_a_newer_gitmodel_says_upgrade_not_corrupt(tmp_path: Path):
    import blake3
    store = Store(tmp_path)
    data = b"a chunk in an encoding this version does not know" * 40
    oid = blake3.blake3(data).digest()
    writer = PackWriter(store.tmp_dir, publish_into(store.pack_dir))
    writer.add(oid, 0, 9, len(data), b"payload of encoding 9")
    writer.finish()
    fresh = Store(tmp_path)
    with pytest.raises(StoreVersionError, match="chunk encoding 9") as err:
        fresh.read(oid)
    assert not isinstance(err.value, CorruptObject) and "upgrade" in err.value.full().lower()
    assert fresh.damaged() == {}, "healthy data is not remembered as damaged"


def test_a_remote_from_a_newer_gitmodel_is_refused_before_anything_is_sent(tmp_path: Path):
    store = Store(tmp_path / "local")
    text = checkpoint.clean(io.BytesIO(os.urandom(300_000)), store)
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "config").write_text("gitmodel store 7\n")
    view = RemoteView(open_backend(RemoteSpec("team", str(folder))), store.root)
    from gitmodel import sync
    with pytest.raises(StoreVersionError, match="remote team.*store version 7"):
        sync.push(store, view, {pointer.parse(text).content: "m.bin"})
    assert sorted(p.name for p in folder.iterdir()) == ["config"]


def test_a_new_remote_gets_its_marker_on_the_first_push(tmp_path: Path):
    from gitmodel import sync
    store = Store(tmp_path / "local")
    text = checkpoint.clean(io.BytesIO(os.urandom(300_000)), store)
    folder = tmp_path / "remote"
    view = RemoteView(open_backend(RemoteSpec("team", str(folder))), store.root)
    sync.push(store, view, {pointer.parse(text).content: "m.bin"})
    assert (folder / "config").read_text() == "gitmodel store 2\n"


def test_show_and_diff_of_a_work_tree_file_store_nothing(repo: Repo):
    path = write_safetensors(repo.path / "m.safetensors", random_model(1))
    repo.commit("v1")
    write_safetensors(path, random_model(2))
    before = _tree(repo.store)
    shown = repo.gitmodel("show", "m.safetensors").stdout
    assert shown.startswith("gitmodel pointer v1")
    diffed = repo.gitmodel("diff", "--no-numbers").stdout
    assert "m.safetensors" in diffed and "changed" in diffed
    assert _tree(repo.store) == before, "read-only commands wrote to the store"


@pytest.mark.parametrize("marker", ["", "\x00\x00garbled"])
def test_an_empty_or_garbled_marker_names_the_repair_that_works(tmp_path: Path, marker: str):
    """Regression (an exploratory run): an emptied marker (a crash) made every command say
    "if a newer gitmodel wrote it, upgrade gitmodel", which cannot help. The error names the
    line to write back, and writing it makes the store readable again, nothing lost."""
    store = Store(tmp_path)
    text = checkpoint.clean(io.BytesIO(os.urandom(5000)), store)
    expected = b"".join(_restore(store, text))
    (tmp_path / "config").chmod(0o644)
    (tmp_path / "config").write_text(marker)
    with pytest.raises(StoreError) as err:
        Store(tmp_path)
    message = err.value.full()
    assert "upgrade" not in message and "a crash or a disk fault" in message, message
    line = message.split("printf '")[1].split("\\n'")[0]
    assert f"> {tmp_path / 'config'}" in message, message
    (tmp_path / "config").write_text(line + "\n")               # the repair it names
    assert b"".join(_restore(Store(tmp_path), text)) == expected
