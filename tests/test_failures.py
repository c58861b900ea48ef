"""Bad stores and failing filters: clear errors, and nothing wrong ever reaches git or the work tree."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest

from gitmodel import pointer

from conftest import Repo, random_model, sha256, write_safetensors


def _committed_model(repo: Repo, seed: int = 0) -> Path:
    path = write_safetensors(repo.path / "model.safetensors", random_model(seed))
    repo.commit("v1")
    return path


def test_missing_chunks_fail_checkout_with_clear_error(repo: Repo):
    path = _committed_model(repo)
    for pack in repo.store.rglob("pack-*"):
        pack.unlink()
    path.unlink()
    result = repo.git("checkout", "--", "model.safetensors", check=False)
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "model.safetensors" in err and "missing from the local store" in err
    assert "gitmodel fsck" in err
    assert not path.exists(), "nothing may be written when chunks are missing"


def test_fsck_that_cannot_ask_the_remote_about_a_missing_checkpoint_fails(repo: Repo):
    """HEAD's checkpoint missing here and the remote unreachable: fsck said `1 unknown`, then
    `0 problem(s)` and exited 0, which scripts read as all well."""
    _committed_model(repo)
    for pack in repo.store.rglob("pack-*"):
        pack.unlink()
    repo.git("config", "gitmodel.origin.url", "nosuchprotocol://bucket/models")
    fsck = repo.gitmodel("fsck", check=False)
    assert fsck.returncode == 1 and "1 unknown" in fsck.stdout, fsck.stdout
    assert "1 problem(s)" in fsck.stdout and "make the remote reachable" in fsck.stdout, fsck.stdout


def _flip_chunk_byte(repo: Repo) -> None:
    """Damage one byte inside a chunk payload (not a record header or the manifest)."""
    from gitmodel.store.objects import Store
    from gitmodel.store.pack import CHUNK, record_head
    store = Store(repo.store)
    oid, entry = max(((o, e) for o, e in store.entries() if e.kind == CHUNK),
                     key=lambda item: item[1].stored_length)
    pack = repo.store / "packs" / f"{entry.pack}.pack"
    data = bytearray(pack.read_bytes())
    data[entry.offset + record_head.size + entry.stored_length // 2] ^= 0x40
    os.chmod(pack, 0o644)
    pack.write_bytes(bytes(data))


def test_corrupted_chunk_is_never_written_to_the_work_tree(repo: Repo):
    path = _committed_model(repo)
    _flip_chunk_byte(repo)
    path.unlink()
    result = repo.git("checkout", "--", "model.safetensors", check=False)
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "model.safetensors" in err and "corrupt" in err
    assert not path.exists()
    fsck = repo.gitmodel("fsck", check=False)
    assert fsck.returncode == 1 and "damaged object" in fsck.stdout and "1 damaged" in fsck.stdout


def _chunks_of(repo: Repo, rev: str) -> set[bytes]:
    from gitmodel.pointer import parse
    from gitmodel.store.objects import Store
    ptr = parse(repo.git("show", f"{rev}:model.safetensors").stdout)
    return {cid for cid, _ in Store(repo.store).read_manifest(bytes.fromhex(ptr.content)).chunks}


def test_switch_to_a_corrupted_version_never_writes_wrong_bytes(repo: Repo):
    path = _committed_model(repo, seed=1)
    v1 = sha256(path)
    repo.git("switch", "-q", "-c", "v2")
    write_safetensors(path, random_model(2))
    repo.commit("v2")
    repo.git("switch", "-q", "main")
    only_v2 = _chunks_of(repo, "v2") - _chunks_of(repo, "main")
    from gitmodel.store.objects import Store
    from gitmodel.store.pack import record_head
    entry = Store(repo.store).locate(max(only_v2))
    pack = repo.store / "packs" / f"{entry.pack}.pack"
    data = bytearray(pack.read_bytes())
    data[entry.offset + record_head.size + entry.stored_length // 2] ^= 0x01
    pack.write_bytes(bytes(data))

    result = repo.git("switch", "-q", "v2", check=False)
    assert result.returncode != 0
    assert "model.safetensors" in result.stderr.decode() and "corrupt" in result.stderr.decode()
    # Git either stays on main with v1 intact or leaves the file out; never v2's damaged bytes.
    assert not path.exists() or sha256(path) == v1
    repo.git("switch", "-q", "-f", "main")
    assert sha256(path) == v1


def test_failed_clean_never_commits_raw_bytes(repo: Repo):
    store = repo.store
    store.parent.mkdir(exist_ok=True)
    if store.exists():
        import shutil
        shutil.rmtree(store)
    store.write_text("not a directory\n")          # the store cannot be created
    path = write_safetensors(repo.path / "model.safetensors", random_model(3))
    result = repo.git("add", "model.safetensors", check=False)
    assert result.returncode != 0
    assert "model.safetensors" in result.stderr.decode()
    assert repo.out("ls-files", "--stage", "model.safetensors") == ""
    assert repo.git("cat-file", "-e", repo.out("hash-object", "--no-filters", str(path)).strip(),
                    check=False).returncode != 0, "raw bytes must not enter the object database"


def test_damaged_pointer_fails_checkout(repo: Repo):
    path = _committed_model(repo)
    pointer = repo.git("show", "HEAD:model.safetensors").stdout
    bad = pointer.replace(b"content ", b"content ../../")
    oid = repo.git("hash-object", "-w", "--stdin", "--no-filters", input=bad).stdout.decode().strip()
    repo.git("update-index", "--cacheinfo", f"100644,{oid},model.safetensors")
    path.unlink()
    result = repo.git("checkout", "--", "model.safetensors", check=False)
    assert result.returncode != 0
    assert "damaged pointer" in result.stderr.decode()
    assert not path.exists()


def test_truncated_safetensors_round_trips_as_opaque(repo: Repo):
    full = write_safetensors(repo.path / "full.safetensors", random_model(4))
    data = full.read_bytes()
    full.unlink()
    cut = repo.path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    added = repo.git("add", "cut.safetensors").stderr.decode()
    # Stored as it is, and said (an exploratory run: a checkout cut short by a full disk, then
    # `git add`, committed the truncated file with no word of it).
    assert "warning: cut.safetensors: it ends inside the safetensors data its header announces" \
        in added, added
    repo.commit("truncated")
    assert b"format opaque" in repo.git("show", "HEAD:cut.safetensors").stdout
    cut.unlink()
    repo.git("checkout", "--", "cut.safetensors")
    assert cut.read_bytes() == data[: len(data) // 2]


def test_a_checkpoint_whose_pointer_would_be_too_large_is_stored_as_opaque(repo: Repo):
    """Tensor names of 1 MiB each (an exploration's file, valid safetensors) made a pointer of
    70 MiB, past the 64 MiB that is ever taken for one: git add and commit exited 0, checkout
    then wrote the pointer's text into the work tree, and gc removed the checkpoint's only
    copy, seeing no pointer that named it."""
    import json
    import struct
    header = json.dumps({f"{i:03d}" + "x" * (1 << 20): {"dtype": "U8", "shape": [1],
                                                        "data_offsets": [i, i + 1]}
                         for i in range(66)}).encode()
    path = repo.path / "long.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(range(66)))
    digest = sha256(path)
    added = repo.git("add", "long.safetensors").stderr.decode()
    assert "warning: long.safetensors:" in added and "at most 64 MiB" in added, added
    repo.commit("long names")
    committed = repo.git("show", "HEAD:long.safetensors").stdout
    assert pointer.parse(committed).format == "opaque"
    repo.gitmodel("gc", "--keep-recent", "0")
    path.unlink()
    repo.git("checkout", "--", "long.safetensors")
    assert sha256(path) == digest
    assert "1 complete" in repo.gitmodel("fsck").stdout


def test_a_failed_clean_with_the_filter_optional_says_the_raw_file_goes_in(repo: Repo):
    """With filter.gitmodel.required false, git stores a file whose clean failed as it is;
    the error said "Nothing was committed"."""
    write_safetensors(repo.path / "first.safetensors", random_model(1))
    repo.commit("first", "first.safetensors")                     # the store exists
    write_safetensors(repo.path / "m.safetensors", random_model(2))
    (repo.store / "config").write_text("gitmodel store 99\n")      # the clean cannot store
    said = repo.git("add", "m.safetensors", check=False).stderr.decode()
    assert "Nothing was committed" in said, said
    repo.git("config", "filter.gitmodel.required", "false")
    said = repo.git("add", "m.safetensors").stderr.decode()
    assert "filter.gitmodel.required is false" in said and "Nothing was committed" not in said, said
    (repo.store / "config").write_text("gitmodel store 1\n")
    status = repo.gitmodel("status").stdout         # and status says what is in the index
    assert "tracked but stored in git as they are" in status and "  m.safetensors" in status, status
    repo.git("config", "filter.gitmodel.required", "true")
    repo.git("add", "--renormalize", "m.safetensors")
    assert "stored in git as they are" not in repo.gitmodel("status").stdout


def test_smudge_of_big_non_pointer_streams_back(repo: Repo):
    """A 20 MB raw blob under a tracked path comes back unchanged through the spool."""
    blob = np.random.default_rng(6).bytes(20_000_000)
    oid = repo.git("hash-object", "-w", "--stdin", "--no-filters", input=blob).stdout.decode().strip()
    repo.git("update-index", "--add", "--cacheinfo", f"100644,{oid},raw.safetensors")
    repo.git("checkout", "--", "raw.safetensors")
    assert (repo.path / "raw.safetensors").read_bytes() == blob


@pytest.mark.parametrize("where", ["pack write", "worker"])
def test_clean_failing_midway_leaves_nothing_and_the_next_clean_works(tmp_path: Path, monkeypatch, where):
    """A disk error while the writer thread appends to a pack, or an error in a worker, ends
    the clean with that error: no pack is published, no temporary pack is left, and the next
    clean in the same process (same threads) stores the file completely."""
    from gitmodel import checkpoint
    from gitmodel.store import codec
    from gitmodel.store.objects import Store
    from gitmodel.store.pack import PackWriter
    data = write_safetensors(tmp_path / "m.safetensors", random_model(4, layers=8, width=512)).read_bytes()
    store = Store(tmp_path / "store")
    calls = {"n": 0}
    if where == "pack write":
        real = PackWriter.add

        def add(self, *args):
            calls["n"] += 1
            if calls["n"] == 5:
                raise OSError(28, "No space left on device")
            return real(self, *args)
        monkeypatch.setattr(PackWriter, "add", add)
    else:
        real = codec.encode_batch

        def encode_batch(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise MemoryError("worker failed")
            return real(*args, **kwargs)
        monkeypatch.setattr(codec, "encode_batch", encode_batch)
    with pytest.raises((OSError, MemoryError)):
        checkpoint.clean(io.BytesIO(data), store)
    assert not list(store.pack_dir.glob("*")) and not list(store.tmp_dir.glob("*"))
    monkeypatch.undo()
    text = checkpoint.clean(io.BytesIO(data), Store(tmp_path / "store"))
    out = io.BytesIO()
    checkpoint.smudge(pointer.parse(text), Store(tmp_path / "store"), out)
    assert out.getvalue() == data


# ----------------------------------------------------------------------------- hostile remotes
# A remote store is written by whoever can write to the bucket: its records must not cost a
# clone more memory or time than the checkpoints they claim to hold could.

def _zeros_frame(n: int) -> bytes:
    """One zstd frame of n zero bytes that leaves its content size out (a stream encoder's)."""
    import zstandard
    packer = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    parts = [packer.compress(bytes(1 << 20)) for _ in range(n >> 20)]
    return b"".join([*parts, packer.compress(bytes(n & ((1 << 20) - 1))), packer.flush()])


def _publish_pack(packs: Path, records: list[tuple[bytes, int, int, int, bytes]]) -> None:
    """A pack of these (id, kind, encoding, raw length, payload) records, as written by hand."""
    from gitmodel.store.pack import PackWriter, publish_into
    writer = PackWriter(packs.parent / "tmp", publish_into(packs))
    for record in records:
        writer.add(*record)
    writer.finish()
    (packs.parent / "config").write_text("gitmodel store 1\n")


def _assert_refused_as_damage(cloned: dict, checkpoint: Path, said: str) -> None:
    """The clone failed on m.safetensors, saying `said` and the remote's repair, with no
    traceback, and wrote no checkpoint bytes."""
    err = cloned["err"]
    assert "Traceback" not in err and "internal error" not in err, err
    assert cloned["rc"] != 0 and "m.safetensors" in err, err
    assert said in err, err
    assert "gitmodel fsck --remote origin --repair" in err, err
    assert not checkpoint.exists() or checkpoint.read_bytes().startswith(b"gitmodel pointer v1\n")


def _clone_of_hostile_pointer(tmp_path: Path, git_env, size: int, content: bytes) -> tuple[dict, Path]:
    """Commit and push (without its checkpoint) a pointer naming `content` in the remote
    folder tmp_path/remote; clone it as another user. Returns the clone's exit code, stderr
    and peak memory (the largest RSS of any process the clone ran, in bytes), and where the
    checkpoint would be."""
    import json
    import subprocess
    import sys
    from conftest import team, user
    work = team(tmp_path, git_env, str(tmp_path / "remote"))
    (work.path / "m.safetensors").write_text(f"gitmodel pointer v1\nsize {size}\ncontent {content.hex()}\n"
                                             "format opaque\n")
    work.commit("m")
    work.git("push", "-q", "origin", "main")
    measure = ("import json, resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "print(json.dumps(dict(rc=r.returncode, err=r.stderr,\n"
               "      peak=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)))\n")
    victim = tmp_path / "victim"
    ran = subprocess.run([sys.executable, "-c", measure, "git", "clone", "-q", str(tmp_path / "hub.git"),
                          str(victim)], env=user(tmp_path, git_env, "victim"), capture_output=True,
                         text=True, check=True)
    return json.loads(ran.stdout), victim / "m.safetensors"


@pytest.fixture
def no_push(git_env):
    git_env["GITMODEL_SKIP_PUSH"] = "1"         # the pointer's checkpoint is not in any store here
    return git_env


def test_a_remote_record_claiming_more_than_a_chunk_is_refused_before_decoding(tmp_path: Path, no_push):
    """Chunk records whose zstd frames (a few KiB, no declared size) inflate to 64 MiB more
    than a chunk can hold, one per pack so that reading threads decode them at once, listed by
    a manifest: the clone refuses them as damage without decoding them."""
    import blake3
    from gitmodel.store.chunker import MAX_SIZE
    from gitmodel.store.manifest import Manifest
    claimed, frame = MAX_SIZE + (64 << 20), _zeros_frame(MAX_SIZE + (64 << 20))
    ids = [bytes([i + 1]) * 32 for i in range(4)]
    packs = tmp_path / "remote" / "packs"
    for cid in ids:
        _publish_pack(packs, [(cid, 0, 1, claimed, frame)])
    manifest = Manifest(4 * MAX_SIZE, [(cid, MAX_SIZE) for cid in ids]).encode()
    mid = blake3.blake3(manifest).digest()
    _publish_pack(packs, [(mid, 1, 0, len(manifest), manifest)])
    cloned, checkpoint = _clone_of_hostile_pointer(tmp_path, no_push, 4 * MAX_SIZE, mid)
    _assert_refused_as_damage(cloned, checkpoint, f"claims {claimed} bytes, more than any chunk holds")
    # A clone's processes take well under 200 MiB; one decoding a single record: 64 MiB more.
    assert cloned["peak"] < 200 << 20, f"peak memory {cloned['peak'] >> 20} MiB"


@pytest.mark.parametrize("encoding", ["zstd", "grouped"])
def test_a_record_claiming_more_than_a_chunk_is_never_decompressed(monkeypatch, encoding):
    """What the decompressor is asked for never exceeds a chunk's size, whatever the record's
    header claims."""
    import struct
    from gitmodel.store import codec
    from gitmodel.store.chunker import MAX_SIZE
    from gitmodel.store.objects import CorruptObject, check_record
    from gitmodel.store.pack import Entry, record_head
    asked = []
    real = codec._decompressor

    class Spy:
        def decompress(self, frame, max_output_size=0):
            asked.append(max_output_size)
            return real().decompress(frame, max_output_size=max_output_size)
    monkeypatch.setattr(codec, "_decompressor", Spy)
    claimed = MAX_SIZE + (64 << 20)
    if encoding == "zstd":
        code, payload = codec.ZSTD, _zeros_frame(claimed)
    else:
        plane = _zeros_frame(claimed // 2)
        code, payload = codec.GROUPED, b"".join([bytes([2]), struct.pack("<BI", 1, len(plane)) * 2,
                                                 plane, plane])
    oid = bytes(32)
    entry = Entry("pack-x", 8, len(payload), claimed, 0, code)
    record = record_head.pack(oid, 0, code, claimed, len(payload)) + payload
    with pytest.raises(CorruptObject, match=f"claims {claimed} bytes"):
        check_record(oid, entry, record)
    assert all(n <= MAX_SIZE for n in asked), asked


def test_a_remote_manifest_listing_more_chunks_than_its_file_can_have_is_refused(tmp_path: Path, no_push):
    """A hash-correct manifest listing a 1-byte chunk 1.5 million times (54 MB, a few KiB as
    zstd on the remote) for a pointer of 1.5 MB: no file of that size is cut into so many
    chunks. The clone refuses it as damage before decoding it."""
    import struct
    import time
    import blake3
    import zstandard
    n = 1_500_000
    chunk = b"A"
    cid = blake3.blake3(chunk).digest()
    manifest = struct.pack("<8sQQ", b"GMMANIF1", n, n) + struct.pack("<32sI", cid, 1) * n
    mid = blake3.blake3(manifest).digest()
    packed = zstandard.ZstdCompressor().compress(manifest)
    packs = tmp_path / "remote" / "packs"
    _publish_pack(packs, [(cid, 0, 0, 1, chunk)])
    _publish_pack(packs, [(mid, 1, 1, len(manifest), packed)])
    del manifest
    started = time.monotonic()
    cloned, checkpoint = _clone_of_hostile_pointer(tmp_path, no_push, n, mid)
    elapsed = time.monotonic() - started
    _assert_refused_as_damage(cloned, checkpoint,
                              f"manifest lists {n} chunks, more than a file of {n} bytes is cut into")
    # Decoded, its entries alone take some 300 MiB of Python objects, and seconds to build.
    assert cloned["peak"] < 200 << 20, f"peak memory {cloned['peak'] >> 20} MiB"
    assert elapsed < 60, f"took {elapsed:.0f} s"


def _hostile_manifest(packs: Path, n: int) -> bytes:
    """Publish in `packs` a hash-correct manifest of n 2-byte chunks, all one chunk (a few KiB
    as zstd), whose own size field agrees (2n bytes, so its own bound passes), and that
    chunk; returns the manifest's id."""
    import struct
    import blake3
    import zstandard
    chunk = b"AA"
    cid = blake3.blake3(chunk).digest()
    manifest = struct.pack("<8sQQ", b"GMMANIF1", 2 * n, n) + struct.pack("<32sI", cid, 2) * n
    mid = blake3.blake3(manifest).digest()
    _publish_pack(packs, [(cid, 0, 0, len(chunk), chunk)])
    _publish_pack(packs, [(mid, 1, 1, len(manifest), zstandard.ZstdCompressor().compress(manifest))])
    return mid


@pytest.fixture
def hostile_clone(tmp_path: Path, no_push) -> Repo:
    """A clone (left as pointers) of commits whose pointers, of a 1,000-byte file, name a
    manifest on the remote of 20,000 chunks: within the bound of its own size field, but not
    of the pointer's (at most 502). Two commits list one tensor with two digests, so a diff
    reads the tensor's bytes."""
    import subprocess
    from conftest import team, user
    mid = _hostile_manifest(tmp_path / "remote" / "packs", 20_000)
    work = team(tmp_path, no_push, str(tmp_path / "remote"))
    for digest in ("0123456789abcdef", "fedcba9876543210"):
        (work.path / "m.safetensors").write_text(
            f"gitmodel pointer v1\nsize 1000\ncontent {mid.hex()}\nformat safetensors\ntensors 1\n"
            f"params 250 (F32 250)\n\n[tensors]\nw F32 [250] {digest}\n")
        work.commit(digest)
    work.git("push", "-q", "origin", "main")
    victim = Repo(tmp_path / "victim", dict(user(tmp_path, no_push, "victim"), GITMODEL_SKIP_SMUDGE="1"))
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(victim.path)], env=victim.env,
                   check=True, capture_output=True)
    return victim


@pytest.mark.parametrize("command", [["fetch"], ["pull"], ["fsck", "--remote", "origin"],
                                     ["fsck", "--repair"], ["gc", "--remote", "origin"],
                                     ["diff", "HEAD~1", "HEAD"]])
def test_every_command_bounds_a_remote_manifest_by_its_pointer(hostile_clone: Repo, command):
    """`gitmodel fetch`, pull, fsck --remote and --repair, gc --remote and diff bounded a
    remote manifest by its own size field only (which its writer chooses), and decoded one
    that its pointer's size does not allow (1.5 million chunks took 375 MiB); a checkout
    refused it. Now each refuses it undecoded, in one line naming it, and stores nothing."""
    from gitmodel.store.objects import Store
    done = hostile_clone.gitmodel(*command, check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said and "internal error" not in said, said
    assert ("manifest lists 20000 chunks, more than a file of 1000 bytes is cut into (at most "
            "502); not decoded") in said, said
    if command[0] == "gc":
        assert "Nothing was removed" in said, said
        assert len(list((hostile_clone.path.parent / "remote" / "packs").glob("*.idx"))) == 2
    assert not Store(hostile_clone.store).entries(), "the refused manifest was stored"


def test_a_manifest_a_fetch_refused_is_not_stored_without_its_chunks(tmp_path: Path, no_push):
    """A clone's checkout refused the manifest, then fetched it again, unbounded, with the
    chunks (none, since it was refused) and stored it: a manifest without its chunks, which
    the next checkout decoded whole to say the pointer was edited."""
    from gitmodel.store.objects import Store
    mid = _hostile_manifest(tmp_path / "remote" / "packs", 20_000)
    cloned, checkpoint = _clone_of_hostile_pointer(tmp_path, no_push, 1000, mid)
    _assert_refused_as_damage(cloned, checkpoint, "manifest lists 20000 chunks, more than a file "
                                                  "of 1000 bytes is cut into (at most 502)")
    assert Store(tmp_path / "victim" / ".git" / "gitmodel").entries() == []


def test_files_of_many_tiny_and_empty_tensors_are_within_the_manifest_bound(tmp_path: Path):
    """The densest files the format readers describe (a tensor per byte or so, empty tensors
    between them) have manifests within the bound, and read back."""
    import numpy as np
    from format_helpers import clean_restore
    from gitmodel.store.manifest import max_entries
    from gitmodel.store.objects import Store
    from test_format_onnx import fld, model, tensor_proto
    tiny = {f"{i}": np.array([i % 251], np.uint8) for i in range(5_000)}
    tiny.update({f"e{i}": np.zeros(0, np.uint8) for i in range(1000)})
    write_safetensors(tmp_path / "tiny.safetensors", tiny)
    files = {"safetensors": (tmp_path / "tiny.safetensors").read_bytes(),
             "onnx": model([tensor_proto(None, None, [], bytes([i % 251])) for i in range(5_000)]
                           + [tensor_proto(None, None, [], b"") for _ in range(1000)]),
             "onnx-fields": model([fld(9, bytes([i % 251])) for i in range(5_000)])}
    for name, data in files.items():
        root = tmp_path / name
        text, restored = clean_restore(data, str(root))
        assert restored == data, name
        parsed = pointer.parse(text)
        store = Store(root)
        chunks = store.read_manifest(bytes.fromhex(parsed.content)).chunks
        store.close()
        assert len(chunks) > 5_000 and len(chunks) <= max_entries(len(data)), (name, len(chunks), len(data))


@pytest.mark.parametrize("command", [["checkout", "--", "model.safetensors"], ["reset", "-q", "--hard"]])
def test_a_damaged_chunk_is_read_from_the_remote_by_the_first_checkout(repo: Repo, tmp_path: Path, command):
    """A chunk damaged here, good on the remote: the first checkout failed ("corrupt … run
    fsck --repair") and only a second one, which knew the copy bad, fetched it."""
    path = _committed_model(repo)
    want = sha256(path)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "remote"), "--local")
    repo.gitmodel("push", "origin", "--all")
    _flip_chunk_byte(repo)
    path.unlink()
    result = repo.git(*command, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert sha256(path) == want
    assert repo.status() == ""


@pytest.mark.parametrize("command", ["pull", "smudge"])
def test_a_damaged_chunk_is_read_from_the_remote_by_the_first_pull_or_one_shot_smudge(repo: Repo, tmp_path: Path,
                                                                                     command: str):
    """`gitmodel pull` and the one-shot `gitmodel smudge` write files on paths of their own,
    which did not fetch a chunk found damaged here mid-file: both failed ("object … is
    corrupt: content does not match its id. Run `gitmodel fsck` …") although the remote held
    a good copy. They now read it from there, as a checkout does."""
    import hashlib
    import subprocess
    path = _committed_model(repo)
    want = sha256(path)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "remote"), "--local")
    repo.gitmodel("push", "origin", "--all")
    _flip_chunk_byte(repo)
    pointer = repo.git("cat-file", "blob", "HEAD:model.safetensors").stdout
    if command == "pull":
        path.write_bytes(pointer)                # left as a pointer, as GITMODEL_SKIP_SMUDGE leaves it
        pulled = repo.gitmodel("pull", check=False)
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stderr.endswith("gitmodel: restored 1 file(s) in the work tree\n"), pulled.stderr
        assert sha256(path) == want and repo.status() == ""
    else:
        one_shot = subprocess.run(["gitmodel", "smudge", "--", "model.safetensors"], cwd=repo.path,
                                  env=repo.env, input=pointer, capture_output=True)
        assert (one_shot.returncode, one_shot.stderr) == (0, b""), one_shot.stderr
        assert hashlib.sha256(one_shot.stdout).hexdigest() == want


def test_the_one_shot_smudge_fetches_what_the_store_lacks_as_the_filter_does(repo: Repo, tmp_path: Path):
    """`gitmodel smudge` of a pointer whose objects were pushed but are not here failed ("1
    object(s) missing, first …", naming nothing to run), where a checkout fetched them. It now
    fetches them; with no remote, or one lacking them, it says what is missing and what to run."""
    import shutil
    import subprocess
    path = _committed_model(repo)
    want = sha256(path)
    pointer = repo.git("cat-file", "blob", "HEAD:model.safetensors").stdout

    def one_shot() -> subprocess.CompletedProcess:
        return subprocess.run(["gitmodel", "smudge", "--", "model.safetensors"], cwd=repo.path,
                              env=repo.env, input=pointer, capture_output=True)

    repo.gitmodel("remote", "add", "origin", str(tmp_path / "remote"), "--local")
    repo.gitmodel("push", "origin", "--all")
    shutil.rmtree(repo.store)
    fetched = one_shot()
    assert (fetched.returncode, fetched.stderr) == (0, b""), fetched.stderr
    assert hashlib.sha256(fetched.stdout).hexdigest() == want
    assert repo.gitmodel("fsck").returncode == 0        # what it fetched is stored, whole

    shutil.rmtree(repo.store)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "empty"), "--local")
    (tmp_path / "empty").mkdir()
    lacking = one_shot()
    assert (lacking.returncode, lacking.stdout) == (1, b""), lacking.stderr
    err = lacking.stderr.decode()
    assert err.startswith(f"gitmodel: error: model.safetensors: could not fetch it: remote origin "
                          f"({tmp_path / 'empty'}) has no packs at all"), err
    assert "Nothing was written for this file" in err, err

    repo.gitmodel("remote", "remove", "origin", "--local")
    alone = one_shot()
    assert (alone.returncode, alone.stdout) == (1, b""), alone.stderr
    err = alone.stderr.decode()
    assert err.startswith("gitmodel: error: model.safetensors: 1 object(s) of this checkpoint are "
                          "missing from the local store"), err
    assert "no gitmodel remote is configured (`gitmodel remote add`)" in err, err
    assert "`gitmodel fetch REMOTE`" in err and "Traceback" not in err, err


def test_a_damaged_chunk_the_remote_lacks_too_is_never_pulled(repo: Repo, tmp_path: Path):
    path = _committed_model(repo)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "remote"), "--local")
    (tmp_path / "remote").mkdir()
    _flip_chunk_byte(repo)
    pointer = repo.git("cat-file", "blob", "HEAD:model.safetensors").stdout
    path.write_bytes(pointer)
    pulled = repo.gitmodel("pull", check=False)
    assert pulled.returncode == 1 and path.read_bytes() == pointer, pulled.stderr
    assert "model.safetensors: object " in pulled.stderr and "is corrupt" in pulled.stderr, pulled.stderr
    assert (f"; fetching a good copy from the remote failed: remote origin ({tmp_path / 'remote'}) "
            "has no packs at all") in pulled.stderr, pulled.stderr
    assert "They stay pointers in the work tree" in pulled.stderr, pulled.stderr


def test_a_damaged_chunk_the_remote_lacks_too_is_never_written(repo: Repo, tmp_path: Path):
    path = _committed_model(repo)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "remote"), "--local")
    (tmp_path / "remote").mkdir()
    _flip_chunk_byte(repo)
    path.unlink()
    result = repo.git("checkout", "--", "model.safetensors", check=False)
    err = result.stderr.decode()
    assert result.returncode != 0 and not path.exists()
    assert "error: model.safetensors: object " in err and "is corrupt" in err, err
    assert (f"; fetching a good copy from the remote failed: remote origin ({tmp_path / 'remote'}) "
            "has no packs at all") in err, err
    assert "external filter" not in err, err


# ----------------------------------------------------------------------------- messages

def test_an_empty_remote_marker_names_a_command_that_writes_it_and_the_remote_fsck(repo: Repo, tmp_path: Path):
    """The repair was ``printf '…' > its `config` file`` (nested backticks, no command), then
    `gitmodel fsck --all`, which checks the local store, not the remote."""
    import subprocess
    _committed_model(repo)
    remote = tmp_path / "remote"
    repo.gitmodel("remote", "add", "origin", str(remote), "--local")
    repo.gitmodel("push", "origin", "--all")
    os.chmod(remote / "config", 0o644)
    (remote / "config").write_text("")
    failed = repo.gitmodel("fsck", "--remote", "origin", check=False)
    assert failed.returncode == 1
    assert (f"write that line back (`printf 'gitmodel store 2\\n' > {remote}/config`), then "
            "`gitmodel fsck --remote origin --all` checks every pack") in failed.stderr, failed.stderr
    command = failed.stderr.split("(`", 1)[1].split("`)", 1)[0]
    subprocess.run(command, shell=True, check=True)
    repo.gitmodel("fsck", "--remote", "origin", "--all")


def test_an_empty_marker_of_a_remote_elsewhere_says_where_it_is():
    from gitmodel.store.objects import StoreError, check_version
    with pytest.raises(StoreError) as err:
        check_version("", "remote r (s3://b/m)", path="s3://b/m/config", local=False,
                      fsck="gitmodel fsck --remote r --all")
    assert ("write that line back (into s3://b/m/config, with the storage's own tools), then "
            "`gitmodel fsck --remote r --all` checks every pack") in err.value.full()


def test_gc_that_waited_part_of_a_second_says_how_long(repo: Repo):
    from gitmodel.store.objects import Store
    _committed_model(repo)
    store = Store(repo.store)
    store.hold_writer_lock()
    try:
        done = repo.gitmodel("gc", "--wait", "0.5", check=False)
    finally:
        store.release()
    assert done.returncode == 1
    assert "and did not finish within 0.5 s" in done.stderr, done.stderr


def test_fsck_repair_that_set_nothing_aside_does_not_say_it_did(repo: Repo):
    _committed_model(repo)
    index = next((repo.store / "packs").glob("*.idx"))
    os.chmod(index, 0o644)
    index.write_bytes(b"")
    repaired = repo.gitmodel("fsck", "--repair", check=False)
    assert "rebuilt the index of" in repaired.stdout, repaired.stdout
    assert "set aside" not in repaired.stdout, repaired.stdout


def test_track_in_a_sha256_repository_writes_nothing(tmp_path: Path, git_env):
    import subprocess
    subprocess.run(["git", "init", "-q", "--object-format=sha256", str(tmp_path / "s")],
                   env=git_env, check=True)
    repo = Repo(tmp_path / "s", git_env)
    done = repo.gitmodel("track", "*.safetensors", check=False)
    assert done.returncode == 1 and "names its objects by SHA-256" in done.stderr, done.stderr
    assert not (tmp_path / "s" / ".gitattributes").exists()
    assert "tracking" not in done.stdout
