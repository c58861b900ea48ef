"""Delta storage: older versions re-encoded against newer ones, through real git."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import blake3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Repo, make_repo, random_model, sha256, team, user, write_safetensors
from gitmodel import checkpoint, pointer, stored
from gitmodel.store import codec
from gitmodel.store.objects import CorruptObject, Store
from gitmodel.store.pack import decode_index

MODEL = "model.safetensors"


def fine_tune(model: dict[str, np.ndarray], seed: int, scale: float = 2e-4) -> dict[str, np.ndarray]:
    """Every weight moves a little, as in a full fine-tune."""
    rng = np.random.default_rng(seed)
    # Python floats and float64: the same data under numpy 1's and numpy 2's promotion rules
    return {k: (v + scale * float(np.abs(v).mean(dtype=np.float64)) * rng.standard_normal(v.shape))
            .astype(v.dtype) for k, v in model.items()}


def series(repo: Repo, versions: int, seed: int = 0) -> list[str]:
    """Commit `versions` full fine-tunes of one model, oldest first; their sha256s."""
    model, sums = random_model(seed, layers=4, width=384), []
    for v in range(versions):
        if v:
            model = fine_tune(model, seed * 100 + v)
        sums.append(sha256(write_safetensors(repo.path / MODEL, model, metadata={"step": str(v)})))
        repo.commit(f"v{v}", MODEL)
    return sums


def encodings(store: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for idx in (store / "packs").glob("*.idx"):
        for encoding, n in encodings_of(idx).items():
            counts[encoding] = counts.get(encoding, 0) + n
    return counts


def encodings_of(idx: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for entry in decode_index(idx.stem, idx.read_bytes()).values():
        counts[entry.encoding] = counts.get(entry.encoding, 0) + 1
    return counts


def packs_size(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "packs").glob("*.pack"))


def assert_versions_exact(repo: Repo, sums: list[str]) -> None:
    for back, digest in enumerate(reversed(sums)):
        (repo.path / MODEL).unlink()
        repo.git("checkout", f"HEAD~{back}", "--", MODEL)
        assert sha256(repo.path / MODEL) == digest, f"HEAD~{back}"
    repo.git("checkout", "HEAD", "--", MODEL)


# ----------------------------------------------------------------------------- codec

@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=3000), st.binary(min_size=1, max_size=3000),
       st.integers(0, 3000), st.sampled_from([1, 2, 3, 4, 8]), st.integers(0, 7),
       st.integers(1, 3))
def test_delta_round_trip(data, base, skip, width, lead, pieces):
    base = base * (1 + (skip + len(data)) // len(base))
    cut = [len(base) * i // pieces for i in range(pieces + 1)]
    parts = [base[a:b] for a, b in zip(cut, cut[1:])]          # bases of any lengths
    ids = [blake3.blake3(part).digest() for part in parts]
    payload = codec.encode_delta(data, base, ids, skip, width, lead)
    assert codec.delta_bases(payload) == ids
    assert bytes(codec.decode(codec.DELTA, payload, len(data), lambda got: parts if got == ids else [])) == data
    for start in range(3):                 # into a caller's buffer, whatever its alignment
        out = np.full(len(data) + start, 0xA5, np.uint8)[start:]
        assert codec.decode(codec.DELTA, payload, len(data), lambda got: parts, out=out) is out
        assert out.tobytes() == data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 900), min_size=1, max_size=8), st.sampled_from([1, 2, 4, 8]),
       st.lists(st.sampled_from([1, 2, 4, 8]), min_size=8, max_size=8), st.integers(0, 7),
       st.lists(st.integers(0, 7), min_size=8, max_size=8), st.integers(0, 8),
       st.integers(0, 2**32 - 1))
def test_chunks_decoded_side_by_side_undo_together(lengths, width, widths, grid, leads, shift, seed):
    """Consecutive chunks of one file (any cuts, every third of another width, every fourth on
    a grid of its own), each a delta against a moved copy of the file, decoded into one
    buffer and undone by one call, give the file."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, sum(lengths), dtype=np.uint8).tobytes()
    moved = np.frombuffer(data, np.uint8) ^ rng.integers(0, 4, len(data), dtype=np.uint8)
    base = bytes(shift) + moved.tobytes()                       # the file sits at `shift` in it
    ids = [blake3.blake3(base).digest()]
    out = np.full(len(data) + 1, 0xA5, np.uint8)[1:]             # odd alignment on purpose
    ref = np.full(len(data), 0x5A, np.uint8)
    pieces, start = [], 0
    for i, n in enumerate(lengths):
        w = widths[i] if i % 3 == 2 else width
        lead = (grid - start) % w if i % 4 != 3 else leads[i] % w   # another tensor's grid
        payload = codec.encode_delta(data[start:start + n], base, ids, shift + start, w, lead)
        got = codec.decode_differences(payload, n, lambda _: [base], memoryview(out)[start:start + n],
                                       memoryview(ref)[start:start + n])
        pieces.append((start, n, *got))
        start += n
    codec.undo_differences(memoryview(out), memoryview(ref), pieces)
    assert out.tobytes() == data


def test_a_small_move_is_a_small_difference_even_across_a_carry():
    old = np.array([1.0, -2.5, 3.0e-3], np.float32)
    new = np.nextafter(old, np.float32(np.inf))                  # 1 ULP each
    payload = codec.encode_delta(new.tobytes(), old.tobytes(), [b"\0" * 32], 0, 4, 0)
    inner = codec.decode(payload[-len(payload) + 1 + 32 + 6], payload[1 + 32 + 7:], 12)
    # One ULP up: +1 for positive values, -1 for a negative one (its magnitude shrinks);
    # zigzagged, 2 and 1.
    assert np.frombuffer(bytes(inner), np.uint32).tolist() == [2, 1, 2]


def test_delta_refuses_bad_payloads():
    base = bytes(range(256)) * 8
    payload = codec.encode_delta(base[10:500], base, [b"\1" * 32], 10, 4)
    with pytest.raises(codec.CodecError):          # bases shorter than skip + length
        codec.decode(codec.DELTA, payload, 490, lambda ids: [base[:100]])
    with pytest.raises(codec.CodecError):
        codec.decode(codec.DELTA, payload[:20], 490, lambda ids: [base])
    with pytest.raises(codec.CodecError):          # no way to read bases: never a guess
        codec.decode(codec.DELTA, payload, 490)
    with pytest.raises(ValueError):
        codec.encode_delta(base, base[:10], [b"\1" * 32], 0, 4)


def test_the_difference_of_a_fine_tune_is_smaller_than_the_whole_chunk():
    rng = np.random.default_rng(1)
    old = (0.02 * rng.standard_normal(1 << 16)).astype(np.float32)
    new = (old + 2e-5 * rng.standard_normal(old.size)).astype(np.float32)
    whole = codec.encode(old.tobytes(), 4)[1]
    delta = codec.encode_delta(old.tobytes(), new.tobytes(), [b"\0" * 32], 0, 4)
    assert len(delta) < 0.75 * len(whole), (len(delta), len(whole))


def test_sparse_planes_of_a_difference_are_packed_harder_and_read_back():
    """Weights that barely moved (most of an embedding) leave planes of differences that are
    mostly zeros: a delta packs those with the lazy search (codec.SPARSE), smaller than the
    fast pass `git add` uses, and any zstd decoder reads them."""
    rng = np.random.default_rng(2)
    old = (0.05 * rng.standard_normal(48_000)).astype(np.float32)
    new = old.copy()
    moved = rng.random(old.size) < 0.3
    new[moved] = np.nextafter(new[moved], np.float32(1))           # one ULP, a third of them
    differences = bytearray(new.tobytes())
    codec._difference(differences, old.tobytes(), 4, 0)
    fast, thorough = codec.encode(differences, 4)[1], codec.encode(differences, 4, thorough=True)[1]
    assert len(thorough) < len(fast), (len(thorough), len(fast))
    payload = codec.encode_delta(new.tobytes(), old.tobytes(), [b"\0" * 32], 0, 4)
    assert payload.endswith(thorough)
    assert bytes(codec.decode(codec.DELTA, payload, new.nbytes, lambda ids: [old.tobytes()])) == new.tobytes()


# ----------------------------------------------------------------------------- through git

def test_repack_stores_old_versions_as_deltas_and_every_version_checks_out(repo: Repo):
    sums = series(repo, 5)
    before = packs_size(repo.store)
    assert codec.DELTA not in encodings(repo.store)
    done = repo.gitmodel("repack")
    assert "re-encoded" in done.stderr
    after = packs_size(repo.store)
    assert after < 0.75 * before, (after, before)
    assert encodings(repo.store).get(codec.DELTA, 0) > 0
    assert_versions_exact(repo, sums)
    fsck = repo.gitmodel("fsck", "--all")
    assert "5 complete" in fsck.stdout and "0 problem(s)" in fsck.stdout, fsck.stdout

    # The newest version is whole: every chunk its manifest lists is stored without a delta.
    store = Store(repo.store)
    newest = repo.out("show", f"HEAD:{MODEL}").split("\n")[2].split()[1]
    for cid, _ in store.read_manifest(bytes.fromhex(newest)).chunks:
        assert store.locate(cid).encoding != codec.DELTA
    store.close()

    # A second repack finds nothing to do, and a new version makes the old tip a delta.
    assert "0 chunk(s) re-encoded" in repo.gitmodel("repack").stderr
    model = fine_tune(random_model(0, layers=4, width=384), 7)
    sums.append(sha256(write_safetensors(repo.path / MODEL, model)))
    repo.commit("v5", MODEL)
    repo.gitmodel("repack")
    assert_versions_exact(repo, sums)


def contents(repo: Repo) -> list[str]:
    """The content ids of MODEL in HEAD's first-parent history, oldest first."""
    revs = repo.out("rev-list", "--reverse", "HEAD", "--", MODEL).split()
    return [repo.out("show", f"{rev}:{MODEL}").split("\n")[2].split()[1] for rev in revs]


def pointer_of(repo: Repo, content: str) -> pointer.Pointer:
    """The pointer of the version of MODEL whose content id is `content`."""
    for rev in repo.out("rev-list", "HEAD", "--", MODEL).split():
        text = repo.out("show", f"{rev}:{MODEL}")
        if content in text:
            return pointer.parse(text.encode())
    raise KeyError(content)


def stored_as(store: Store, content: str) -> dict[bytes, list[bytes]]:
    """Each chunk of a version: the ids of its bases (empty when stored whole)."""
    return {cid: store.delta_bases(cid) for cid, _ in store.read_manifest(bytes.fromhex(content)).chunks}


def test_keyframes_every_n_versions_and_every_delta_one_step_from_whole(repo: Repo):
    sums = series(repo, 7)
    repo.gitmodel("repack", "--keyframes", "3")
    versions = contents(repo)
    store = Store(repo.store)
    whole = {i for i, c in enumerate(versions) if not any(stored_as(store, c).values())}
    assert whole == {2, 5, 6}              # the last of each group of 3, and the newest
    for i, content in enumerate(versions):
        if i in whole:
            continue
        key = stored_as(store, versions[5 if i > 2 else 2])
        for cid, bases in stored_as(store, content).items():
            assert all(b in key and not store.delta_bases(b) for b in bases), (i, cid.hex())
    store.close()
    assert_versions_exact(repo, sums)


def test_a_newest_version_in_another_dtype_leaves_the_older_ones_deltas_of_each_other(repo: Repo):
    sums = series(repo, 3)
    model = fine_tune(random_model(0, layers=4, width=384), 5)
    exported = {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in model.items()}
    sums.append(sha256(write_safetensors(repo.path / MODEL, exported, dtypes=dict.fromkeys(model, "BF16"))))
    repo.commit("bf16 export", MODEL)
    repo.gitmodel("repack")
    versions = contents(repo)
    store = Store(repo.store)
    as_stored = [stored_as(store, c) for c in versions]
    assert [any(s.values()) for s in as_stored] == [True, True, False, False]
    for older in as_stored[:2]:          # against v2, the newest fp32 version: one step from whole
        assert all(b in as_stored[2] for bases in older.values() for b in bases)
    store.close()
    assert_versions_exact(repo, sums)


def test_one_keyframe_per_version_stores_every_version_whole(repo: Repo):
    sums = series(repo, 3)
    repo.gitmodel("repack", "--keyframes", "1")
    added = encodings(repo.store)
    assert codec.DELTA not in added
    repo.gitmodel("repack")
    assert codec.DELTA in encodings(repo.store)
    repo.git("config", "gitmodel.keyframes", "1")            # back: every chunk whole again,
    repo.gitmodel("repack")                                  # encoded as when it was added
    assert encodings(repo.store) == added
    assert_versions_exact(repo, sums)
    bad = repo.gitmodel("repack", "--keyframes", "0", check=False)
    assert bad.returncode != 0 and "at least 1" in bad.stderr and "Traceback" not in bad.stderr


def test_what_is_checked_out_stays_whole(repo: Repo):
    series(repo, 4)
    repo.git("checkout", "-q", "HEAD~2")
    repo.gitmodel("repack")
    store = Store(repo.store)
    here = repo.out("show", f"HEAD:{MODEL}").split("\n")[2].split()[1]
    assert not any(stored_as(store, here).values())
    store.close()


def test_push_carries_bases_and_an_old_version_checks_out_in_a_fresh_clone(tmp_path: Path, git_env):
    repo = make_repo(tmp_path / "work", git_env)
    remote_dir = tmp_path / "team-store"
    repo.gitmodel("remote", "add", "origin", str(remote_dir))
    repo.commit("remote", ".gitmodel")
    sums = series(repo, 4)
    bare = tmp_path / "shared.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    repo.git("remote", "add", "origin", str(bare))
    repo.git("push", "-q", "origin", "main")             # the hook repacks, then uploads
    assert codec.DELTA in encodings(remote_dir)
    assert packs_size(remote_dir) <= packs_size(repo.store) + 4096     # what was repacked

    other = user(tmp_path, git_env, "bob")
    subprocess.run(["git", "clone", "-q", str(bare), str(tmp_path / "bob")], env=other, check=True)
    bob = Repo(tmp_path / "bob", other)
    assert sha256(bob.path / MODEL) == sums[-1]
    # The clone fetched the newest version only: no delta, no older chunk.
    assert codec.DELTA not in encodings(bob.store)
    newest_only = packs_size(bob.store)
    # The oldest version: its deltas arrive with every base they need, checked on arrival.
    bob.git("checkout", "-q", "HEAD~3")
    assert sha256(bob.path / MODEL) == sums[0]
    assert packs_size(bob.store) > newest_only
    assert "0 problem(s)" in bob.gitmodel("fsck", "--all").stdout
    assert "complete" in repo.gitmodel("fsck", "--all", "--remote", "origin").stdout

    # A mirror copies the deltas and their bases, each verified on the way.
    copy = tmp_path / "copy-store"
    repo.gitmodel("mirror", str(remote_dir), str(copy))
    assert sorted(p.name for p in (copy / "packs").glob("pack-*")) == \
        sorted(p.name for p in (remote_dir / "packs").glob("pack-*"))


def test_a_missing_base_is_a_clear_error_and_costs_only_what_needs_it(repo: Repo, tmp_path: Path):
    sums = series(repo, 3)
    write_safetensors(repo.path / "other.safetensors", random_model(5, layers=1, width=64))
    other_sum = sha256(repo.path / "other.safetensors")
    repo.commit("other", "other.safetensors")
    repo.gitmodel("repack")
    # Drop the packs that hold the newest version's chunks (the bases of every delta).
    store = Store(repo.store)
    newest = repo.out("show", f"HEAD:{MODEL}").split("\n")[2].split()[1]
    chunk = store.read_manifest(bytes.fromhex(newest)).chunks[-1][0]
    base_pack = store.locate(chunk).pack
    store.close()
    holding = {p.stem for p in (repo.store / "packs").glob("*.idx")
               if chunk in decode_index(p.stem, p.read_bytes())}
    assert holding == {base_pack}
    for suffix in (".idx", ".pack"):
        path = repo.store / "packs" / f"{base_pack}{suffix}"
        os.chmod(path, 0o644)
        path.rename(tmp_path / path.name)
    (repo.path / MODEL).unlink()
    failed = repo.git("checkout", "HEAD~1", "--", MODEL, check=False)
    assert failed.returncode != 0
    err = failed.stderr.decode()
    assert "Traceback" not in err and "difference from chunk" in err or "missing" in err, err
    assert not (repo.path / MODEL).exists() or sha256(repo.path / MODEL) != sums[1]
    # Everything else still reads.
    (repo.path / "other.safetensors").unlink()
    repo.git("checkout", "HEAD", "--", "other.safetensors")
    assert sha256(repo.path / "other.safetensors") == other_sum
    fsck = repo.gitmodel("fsck", "--all", check=False)
    assert fsck.returncode != 0 and "complete" in fsck.stdout
    # One problem per delta whose base went: a few are shown, the rest counted.
    assert fsck.stdout.count("problem: delta without its base") == 5, fsck.stdout
    assert 'more of the kind "delta without its base"' in fsck.stdout, fsck.stdout


def test_fsck_names_the_deltas_of_a_damaged_base_as_such(repo: Repo):
    """A byte flipped in a keyframe: fsck said "delta without its base: … object B is
    corrupt" once per delta, naming the base each time and calling it absent."""
    series(repo, 3)
    repo.gitmodel("repack")
    store = Store(repo.store)
    newest = store.read_manifest(bytes.fromhex(contents(repo)[-1])).chunks
    deltas = stored_as(store, contents(repo)[0])
    base = next(b for bases in deltas.values() for b in bases)
    entry = store.locate(base)
    store.close()
    pack = repo.store / "packs" / f"{entry.pack}.pack"
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:                     # the base's record, past its header
        f.seek(entry.offset + entry.stored_length // 2 + 40)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    out = repo.gitmodel("fsck", "--all", check=False).stdout
    assert f"damaged object: {entry.pack}" in out, out
    assert "delta without its base" not in out, out
    dependent = [oid for oid, bases in deltas.items() if base in bases]
    assert dependent and f"chunk {dependent[0].hex()} is stored as a difference from chunk {base.hex()}, " \
        "whose copy here is damaged" in out, out
    assert base in {cid for cid, _ in newest}


def test_readers_survive_a_concurrent_repack(repo: Repo):
    """A Store opened before a repack removes its packs still reads every object (it reloads
    the pack list when a listed pack is gone)."""
    series(repo, 3)
    store = Store(repo.store)
    oids = [oid for oid, _ in store.entries()]
    repo.gitmodel("repack")
    for oid in oids:
        assert blake3.blake3(store.read(oid)).digest() == oid
    store.close()
    # A checkout too: planned and read by a Store that listed the packs of deltas a repack
    # back to whole then removed.
    sums = {}
    for content in contents(repo):
        digest = hashlib.sha256()
        checkpoint.Restore(pointer_of(repo, content), store).write_to(lambda *parts: digest.update(b"".join(parts)))
        sums[content] = digest.digest()
    store.close()
    stale = Store(repo.store)
    repo.gitmodel("repack", "--keyframes", "1")
    fresh = Store(repo.store)
    chunks = [cid for cid, _ in fresh.read_manifest(bytes.fromhex(contents(repo)[0])).chunks]
    fresh.close()
    assert stale.prepare_reads(chunks) == []          # its packs of deltas are gone: it reloads
    for content in contents(repo):
        digest = hashlib.sha256()
        checkpoint.Restore(pointer_of(repo, content), stale).write_to(lambda *parts: digest.update(b"".join(parts)))
        assert digest.digest() == sums[content]
    stale.close()


def test_bases_asked_of_a_store_whose_packs_a_repack_removed(repo: Repo):
    """What push, fetch and status ask (`delta_bases`, `with_bases`) is answered from the packs
    as they are now, not a FileNotFoundError for a pack a repack removed since they were
    listed."""
    series(repo, 3)
    repo.gitmodel("repack")
    stale = Store(repo.store)
    deltas = [oid for oid, entry in stale.entries() if entry.encoding == codec.DELTA]
    assert deltas and all(stale.delta_bases(oid) for oid in deltas[:1])
    stale.close()                                  # no pack open: the next read opens them
    repo.gitmodel("repack", "--keyframes", "1")    # every delta whole again, in new packs
    assert [stale.delta_bases(oid) for oid in deltas] == [[] for _ in deltas]
    assert set(stale.with_bases(deltas)) == set(deltas)
    stale.close()


def test_bf16_weights_saved_as_fp32_store_in_about_half(repo: Repo):
    rng = np.random.default_rng(3)
    weights = (0.02 * rng.standard_normal((1024, 1024))).astype(np.float32)
    weights = (weights.view(np.uint32) & 0xFFFF0000).view(np.float32)     # bf16 values in fp32
    path = write_safetensors(repo.path / MODEL, {"w": weights})
    repo.commit("bf16 in fp32", MODEL)
    assert packs_size(repo.store) <= 0.52 * path.stat().st_size


def test_a_repacked_pack_that_lost_its_index_is_indexed_again(repo: Repo):
    """One pack can hold a delta before its base (gc joins a repack's packs in order).
    Rebuilding a lost index (a crash between the pack's rename and its index's, a deleted
    file) checked each delta before its base was known: the pack could never be indexed
    again, and gc stopped for good."""
    from gitmodel.store.objects import rebuild_index
    sums = series(repo, 3)
    repo.gitmodel("repack")
    repo.gitmodel("gc")                          # one pack: deltas first, their bases after
    assert codec.DELTA in encodings(repo.store)
    for index in sorted((repo.store / "packs").glob("*.idx")):
        data = index.read_bytes()
        index.unlink()
        store = Store(repo.store)                             # the other packs' indexes
        assert rebuild_index(index.with_suffix(".pack"), store.bases) == (index.stem, data)
        store.close()
    for index in (repo.store / "packs").glob("*.idx"):
        index.unlink()
    assert_versions_exact(repo, sums)                 # every pack adopted again
    assert codec.DELTA in encodings(repo.store)
    fsck = repo.gitmodel("fsck", "--all")
    assert "3 complete" in fsck.stdout and "0 problem(s)" in fsck.stdout, fsck.stdout


def test_a_damaged_base_is_named_and_the_deltas_are_not_blamed(repo: Repo):
    sums = series(repo, 3)
    newest = (repo.path / MODEL).read_bytes()
    repo.gitmodel("repack")
    repo.gitmodel("gc")                              # deltas and their bases in one pack
    store = Store(repo.store)
    old = contents(repo)[0]
    delta, bases = next((cid, b) for cid, b in stored_as(store, old).items() if b)
    entry = store.locate(bases[0])
    store.close()
    pack = repo.store / "packs" / f"{entry.pack}.pack"
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:                     # flip a byte inside the base's payload
        at = entry.offset + 42 + entry.stored_length // 2
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    (repo.path / MODEL).unlink()
    failed = repo.git("checkout", "HEAD~2", "--", MODEL, check=False)
    err = failed.stderr.decode()
    assert failed.returncode != 0 and bases[0].hex() in err and "Traceback" not in err, err
    damaged = (repo.store / "damaged").read_text()
    assert bases[0].hex() in damaged and delta.hex() not in damaged
    fsck = repo.gitmodel("fsck", check=False)
    assert fsck.returncode != 0 and bases[0].hex() in fsck.stdout

    # The repair sets the damaged base aside but keeps the intact deltas that need it (it
    # dropped them: adding the good version again could not bring the old one back).
    repo.gitmodel("fsck", "--repair", check=False)
    store = Store(repo.store)
    assert store.delta_bases(delta) == bases
    store.close()
    (repo.path / MODEL).write_bytes(newest)
    repo.git("add", "--renormalize", MODEL)          # a good copy of the base
    (repo.path / MODEL).unlink()
    repo.git("checkout", "HEAD~2", "--", MODEL)
    assert sha256(repo.path / MODEL) == sums[0]


def test_versions_that_leave_history_never_chain_their_bases(repo: Repo):
    """A version kept only by the reflog stays a delta against its keyframe; the next repack
    made that keyframe a delta too, and so on: chains grew a link per squashed commit until
    reads gave up (64 links), after hours, retrying every level."""
    model = random_model(0, layers=4, width=384)
    sums = [sha256(write_safetensors(repo.path / MODEL, model))]
    repo.commit("v0", MODEL)
    for n in range(1, 5):
        model = fine_tune(model, n)
        sums.append(sha256(write_safetensors(repo.path / MODEL, model)))
        repo.commit(f"v{n}", MODEL)
        repo.gitmodel("repack")
        repo.git("reset", "-q", "--soft", "HEAD~2")
        repo.git("commit", "-q", "-m", f"squash {n}")
    store = Store(repo.store)
    deltas = [oid for oid, entry in store.entries() if entry.encoding == codec.DELTA]
    assert deltas and not any(store.delta_bases(b) for d in deltas for b in store.delta_bases(d))
    store.close()
    kept = {}                                        # every version the reflog keeps reads back
    for rev in repo.out("rev-list", "--reflog", "HEAD").split():
        shown = repo.git("cat-file", "--filters", f"{rev}:{MODEL}", check=False)
        if shown.returncode == 0:                    # (the first commit has no checkpoint)
            kept[hashlib.sha256(shown.stdout).hexdigest()] = rev
    assert set(sums) <= set(kept)


def test_a_damaged_delta_is_named_and_a_good_copy_from_the_remote_repairs_it(tmp_path: Path, git_env):
    """Deltas decoded side by side (Store.read_run): one damaged among them fails the checkout
    naming it, nothing partial is left, and once fsck --repair fetched a good copy the same
    checkout is exact (the damaged copy, remembered, is passed over)."""
    repo = make_repo(tmp_path / "work", git_env)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "team-store"))
    sums = series(repo, 3)
    repo.gitmodel("push")                                   # repacks, then uploads
    store = Store(repo.store)
    delta = sorted(cid for cid, bases in stored_as(store, contents(repo)[0]).items() if bases)[3]
    entry = store.locate(delta)
    store.close()
    pack = repo.store / "packs" / f"{entry.pack}.pack"
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:                            # the last byte of its payload
        at = entry.offset + 42 + entry.stored_length - 1
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    (repo.path / MODEL).unlink()
    offline = Repo(repo.path, dict(git_env, GITMODEL_REMOTE=str(tmp_path / "nowhere")))
    failed = offline.git("checkout", "HEAD~2", "--", MODEL, check=False)
    err = failed.stderr.decode()
    assert failed.returncode != 0 and delta.hex() in err and "Traceback" not in err, err
    assert not (repo.path / MODEL).exists()
    assert delta.hex() in (repo.store / "damaged").read_text()
    repo.gitmodel("fsck", "--repair")
    repo.git("checkout", "HEAD~2", "--", MODEL)
    assert sha256(repo.path / MODEL) == sums[0]


def test_a_run_read_with_a_length_the_index_disagrees_with_is_refused_not_allocated(repo: Repo):
    """A manifest that lies about a chunk's length (here by 2**40 bytes, next to a delta whose
    run would be decoded side by side) gets the store's error naming the chunk, as a chunk
    read alone does, not an attempt to allocate the lie."""
    series(repo, 3)
    repo.gitmodel("repack")
    store = Store(repo.store)
    chunks = store.read_manifest(bytes.fromhex(contents(repo)[0])).chunks
    first = next(i for i, (cid, _) in enumerate(chunks[:-1]) if store.delta_bases(cid))
    (delta, length), (liar, _) = chunks[first], chunks[first + 1]
    with pytest.raises(CorruptObject, match="manifest says") as raised:
        stored.read_run(store, [(delta, length), (liar, 2**40)])
    assert raised.value.oid == liar
    assert [bytes(b) for b in stored.read_run(store, chunks[first:first + 2])] == \
        [bytes(store.read(cid)) for cid, _ in chunks[first:first + 2]]


def test_push_without_repack_when_turned_off_or_when_a_repack_holds_the_lock(tmp_path: Path, git_env):
    import fcntl
    repo = make_repo(tmp_path / "work", git_env)
    series(repo, 3)
    repo.git("config", "gitmodel.delta", "maybe")                # was taken for true
    typo = repo.gitmodel("push", "--all", "-q", str(tmp_path / "plain"), check=False)
    assert typo.returncode != 0 and "bad boolean config value 'maybe'" in typo.stderr, typo.stderr
    assert "Traceback" not in typo.stderr and not (tmp_path / "plain").exists()
    repo.git("config", "gitmodel.delta", "off")
    dead = repo.store / "tmp" / "pack-killed.upload"      # what a push killed with -9 left
    dead.parent.mkdir(exist_ok=True)
    dead.write_bytes(b"\0" * 1000)
    os.utime(dead, (0, 0))
    repo.gitmodel("push", "--all", "-q", str(tmp_path / "plain"))
    assert codec.DELTA not in encodings(tmp_path / "plain")
    assert not dead.exists()                              # a push with nothing to repack too
    repo.git("config", "--unset", "gitmodel.delta")
    with open(repo.store / "repack.lock", "a") as lock:      # another repack is running
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        done = repo.gitmodel("push", "--all", str(tmp_path / "busy"))
    assert "not repacked" in done.stderr and "another repack" in done.stderr
    assert codec.DELTA not in encodings(tmp_path / "busy")
    repo.gitmodel("push", "--all", "-q", str(tmp_path / "small"))
    assert codec.DELTA in encodings(tmp_path / "small")
    assert packs_size(tmp_path / "small") < 0.8 * packs_size(tmp_path / "busy")


def test_fine_tunes_of_a_declared_base_model_are_stored_against_it(repo: Repo):
    base = random_model(3, layers=4, width=384)
    write_safetensors(repo.path / "base.safetensors", base)
    sums = {}
    for name, seed in (("ft-a", 1), ("ft-b", 2)):
        path = write_safetensors(repo.path / f"{name}.safetensors", fine_tune(base, seed))
        sums[path.name] = sha256(path)
    with open(repo.path / ".gitattributes", "a") as f:
        f.write("ft-*.safetensors delta-base=base.safetensors\n")
        f.write("lost.safetensors delta-base=nowhere.safetensors\n")
    write_safetensors(repo.path / "lost.safetensors", fine_tune(base, 9))
    repo.commit("base model and two fine-tunes")
    before = packs_size(repo.store)
    done = repo.gitmodel("repack")
    assert "nowhere.safetensors is not a checkpoint" in done.stderr
    store = Store(repo.store)
    base_chunks = set(stored_as(store, repo.out("show", "HEAD:base.safetensors").split("\n")[2].split()[1]))
    for name in sums:
        content = repo.out("show", f"HEAD:{name}").split("\n")[2].split()[1]
        chunks = stored_as(store, content)
        deltas = [bases for bases in chunks.values() if bases]
        assert len(deltas) > len(chunks) // 2, name
        assert all(b in base_chunks for bases in deltas for b in bases)
    store.close()
    assert packs_size(repo.store) < 0.8 * before
    for name, digest in sums.items():
        (repo.path / name).unlink()
        repo.git("checkout", "--", name)
        assert sha256(repo.path / name) == digest


def write_sharded(repo: Repo, model: dict[str, np.ndarray], count: int) -> dict[str, str]:
    """The model as `count` shards `model-0000I-of-0000N.safetensors` and their index file,
    in place of any shards there before; {file name: sha256}."""
    for old in repo.path.glob("model-*-of-*.safetensors"):
        old.unlink()
    names, sums, weight_map = list(model), {}, {}
    for i in range(count):
        file = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        part = {n: model[n] for n in names[i * len(names) // count:(i + 1) * len(names) // count]}
        sums[file] = sha256(write_safetensors(repo.path / file, part))
        weight_map.update(dict.fromkeys(part, file))
    (repo.path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return sums


def test_shards_a_re_shard_retired_are_stored_against_the_files_that_took_their_tensors(repo: Repo):
    """A path no commit holds any more has no newer version of its own: its last version stayed
    whole, so a fine-tune saved in another number of shards cost a whole model more."""
    model = random_model(4, layers=4, width=384)
    old = write_sharded(repo, model, 2)
    repo.commit("two shards")
    new = write_sharded(repo, fine_tune(model, 1), 3)
    repo.commit("fine-tuned, saved as three shards")
    before = packs_size(repo.store)
    repo.gitmodel("repack")
    store = Store(repo.store)
    current = set()
    for file in new:
        current |= set(stored_as(store, repo.out("show", f"HEAD:{file}").split("\n")[2].split()[1]))
    for file in old:
        chunks = stored_as(store, repo.out("show", f"HEAD~1:{file}").split("\n")[2].split()[1])
        deltas = [bases for bases in chunks.values() if bases]
        assert len(deltas) > len(chunks) // 2, file
        assert all(b in current and not store.delta_bases(b) for bases in deltas for b in bases)
    store.close()
    assert packs_size(repo.store) < 0.8 * before
    repo.git("checkout", "-q", "HEAD~1")
    assert {file: sha256(repo.path / file) for file in old} == old
    repo.git("checkout", "-q", "-")
    assert {file: sha256(repo.path / file) for file in new} == new


def test_a_gc_waits_for_a_repack_that_is_still_planning(repo: Repo, monkeypatch):
    """Regression (a review): a repack planned (minutes on a large model) before it took the
    writers' side of the gc lock, so a gc starting meanwhile removed or rewrote the packs the
    plan named, and the repack, run by every push, failed on a missing file. The repack now
    holds that lock from the start: the gc waits for it."""
    from gitmodel import repack
    from gitmodel.git import repacking
    from gitmodel.git.session import Session
    from gitmodel.store import gc
    from gitmodel.store.objects import StoreError
    sums = series(repo, 3)
    plan, gc_outcome = repack.plan, []

    def a_gc_meanwhile(*args, **kwargs):
        other = Store(repo.store)
        try:
            other.lock_for_gc(0.5)
            gc.collect(other, [], set())     # nothing named live: every pack would go
            gc_outcome.append("collected")
        except StoreError:
            gc_outcome.append("waited")
        finally:
            other.release()
        return plan(*args, **kwargs)

    monkeypatch.setattr(repack, "plan", a_gc_meanwhile)
    session = Session(repo.path)
    report = repacking.repack(session, None, quiet=True)
    session.store.release()
    assert gc_outcome == ["waited"] and report.encoded > 0
    assert_versions_exact(repo, sums)


def test_a_chain_past_the_limit_fails_at_once_naming_it(tmp_path: Path):
    """Past 64 links a read gave up, then tried again through every other path at every
    level: the work doubled per link, and a checkout ran for hours."""
    import time
    from gitmodel.store.objects import CHUNK, ChainTooLong
    store = Store(tmp_path / "store")
    rng = np.random.default_rng(0)
    data = rng.bytes(4096)
    writer = store.writer()
    previous = blake3.blake3(data).digest()
    encoding, payload = codec.encode(data)
    writer.add(previous, CHUNK, encoding, len(data), payload)
    for link in range(70):                            # each a delta of the one before
        changed = bytearray(data)
        changed[link] ^= 1
        oid = blake3.blake3(bytes(changed)).digest()
        writer.add(oid, CHUNK, codec.DELTA, len(changed),
                   codec.encode_delta(bytes(changed), data, [previous], 0, 1))
        data, previous = bytes(changed), oid
    store.publish(writer)
    started = time.monotonic()
    with pytest.raises(ChainTooLong, match="chain more than 64 deep") as err:
        store.read(previous)
    assert "Run `gitmodel repack`: it rewrites chains an older gitmodel left" in err.value.full()
    assert time.monotonic() - started < 5
    store.close()


def test_fsck_of_a_remote_that_holds_deltas_without_their_bases_finds_them_lost(tmp_path: Path, git_env):
    """fsck --remote decoded the remote's deltas against the local store's bases, so a remote
    that had lost the bases was reported complete. It now takes bases from the remote only."""
    repo = make_repo(tmp_path / "work", git_env)
    remote_dir = tmp_path / "team-store"
    repo.gitmodel("remote", "add", "origin", str(remote_dir))
    series(repo, 3)
    repo.gitmodel("repack")
    repo.gitmodel("mirror", str(repo.store), str(remote_dir))
    store = Store(repo.store)
    newest = contents(repo)[-1]
    base_pack = store.locate(store.read_manifest(bytes.fromhex(newest)).chunks[0][0]).pack
    store.close()
    for suffix in (".idx", ".pack"):            # the remote loses the newest version's pack
        (remote_dir / "packs" / f"{base_pack}{suffix}").unlink()
    broken = repo.gitmodel("fsck", "--remote", "origin", "--all", check=False)
    assert broken.returncode != 0 and "0 complete, 3 lost" in broken.stdout, broken.stdout
    assert "stored as differences from chunks it lacks" in broken.stdout, broken.stdout
    # With the bases lost here too, a fetch cannot complete those versions, and says so (it
    # exited 0: a base it could not bring belonged to no checkpoint it fetched).
    for suffix in (".idx", ".pack"):
        (repo.store / "packs" / f"{base_pack}{suffix}").rename(tmp_path / f"{base_pack}{suffix}")
    fetched = repo.gitmodel("fetch", "origin", "HEAD~1", "HEAD~2", check=False)
    assert fetched.returncode != 0 and "the fetch could not bring" in fetched.stderr, fetched.stderr
    for suffix in (".idx", ".pack"):
        (tmp_path / f"{base_pack}{suffix}").rename(repo.store / "packs" / f"{base_pack}{suffix}")
    repo.gitmodel("fsck", "--remote", "origin", "--all", "--repair")
    fixed = repo.gitmodel("fsck", "--remote", "origin", "--all")
    assert "3 complete" in fixed.stdout and "0 problem(s)" in fixed.stdout, fixed.stdout


def test_a_base_lost_here_is_fetched_from_the_remote_that_has_it(tmp_path: Path, git_env):
    """With the local pack of a delta's base gone, a checkout said the remote lacked it and
    `gitmodel fetch` fetched nothing: only the checkpoints' own chunks were asked for."""
    repo = make_repo(tmp_path / "work", git_env)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "team-store"))
    sums = series(repo, 3)
    repo.gitmodel("push")                                   # repacks, then uploads
    store = Store(repo.store)
    base_pack = store.locate(store.read_manifest(bytes.fromhex(contents(repo)[-1])).chunks[0][0]).pack
    store.close()
    for suffix in (".idx", ".pack"):
        (repo.store / "packs" / f"{base_pack}{suffix}").unlink()
    (repo.path / MODEL).unlink()
    repo.git("checkout", "HEAD~1", "--", MODEL)             # the smudge fetches the bases
    assert sha256(repo.path / MODEL) == sums[1]
    fetched = [idx for idx in (repo.store / "packs").glob("*.idx")
               if codec.DELTA not in encodings_of(idx)]
    for idx in fetched:                                     # and once more, by hand
        idx.unlink()
        idx.with_suffix(".pack").unlink()
    assert "missing" in repo.gitmodel("fsck", "--all", check=False).stdout
    repo.gitmodel("fetch", "--all")
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all").stdout
    assert_versions_exact(repo, sums)


def test_a_push_carries_no_weights_of_a_branch_it_does_not_push(tmp_path: Path, git_env):
    """The repack keeps the checked-out version whole and makes main's versions deltas of it:
    working on a private branch, a push of main uploaded the private version as their base.
    Those deltas now go whole."""
    remote_dir = tmp_path / "team-store"
    repo = team(tmp_path, git_env, str(remote_dir))
    bare = tmp_path / "hub.git"
    sums = series(repo, 2)
    repo.git("checkout", "-q", "-b", "private")
    model = fine_tune(random_model(0, layers=4, width=384), 7)
    write_safetensors(repo.path / MODEL, model)
    repo.commit("private run", MODEL)
    private, main = contents(repo)[-1], contents(repo)[-2]
    repo.gitmodel("repack")
    store = Store(repo.store)
    private_chunks = {cid for cid, _ in store.read_manifest(bytes.fromhex(private)).chunks}
    assert any(set(bases) & private_chunks for bases in stored_as(store, main).values())
    store.close()
    pushed = repo.gitmodel("push", "origin", "main").stderr     # from the private branch
    said = float(pushed.split(" MiB in ")[0].rsplit(" ", 1)[1])   # what went whole counts whole
    assert abs(said - packs_size(remote_dir) / 2**20) < 0.1, (pushed, packs_size(remote_dir))
    repo.git("push", "-q", "origin", "main")
    on_remote = {oid for idx in (remote_dir / "packs").glob("*.idx")
                 for oid in decode_index(idx.stem, idx.read_bytes())}
    assert not on_remote & private_chunks
    other = user(tmp_path, git_env, "bob")
    subprocess.run(["git", "clone", "-q", str(bare), str(tmp_path / "bob")], env=other, check=True)
    bob = Repo(tmp_path / "bob", other)
    assert sha256(bob.path / MODEL) == sums[-1]
    bob.git("checkout", "-q", "HEAD~1")
    assert sha256(bob.path / MODEL) == sums[0]
    assert "0 problem(s)" in bob.gitmodel("fsck", "--remote", "origin", "--all").stdout


def stranded(tmp_path: Path, git_env) -> tuple[Repo, list[str], Path, list[bytes]]:
    """main's two versions stored here as deltas of a private branch's version, and pushed
    (they go whole); then the private version's pack moved to tmp_path/aside. Returns the
    repository, the three versions' sha256 (private last), the remote folder and main's
    chunks left without their bases."""
    remote_dir = tmp_path / "team-store"
    repo = team(tmp_path, git_env, str(remote_dir))
    sums = series(repo, 2)
    repo.git("checkout", "-q", "-b", "private")
    write_safetensors(repo.path / MODEL, fine_tune(random_model(0, layers=4, width=384), 7))
    repo.commit("private run", MODEL)
    sums.append(sha256(repo.path / MODEL))
    repo.gitmodel("push", "origin", "main")         # repacks: main's versions are deltas
    store = Store(repo.store)
    private = {cid for cid, _ in store.read_manifest(bytes.fromhex(contents(repo)[-1])).chunks}
    lost = {store.locate(cid).pack for cid in private}
    deltas = {**stored_as(store, contents(repo)[-2]), **stored_as(store, contents(repo)[-3])}
    victims = [cid for cid, bases in deltas.items() if set(bases) & private]
    assert victims and not lost & {store.locate(cid).pack for cid in deltas}
    store.close()
    repo.git("checkout", "-q", "main")
    (tmp_path / "aside").mkdir()
    for pack in lost:                               # the private version's packs are gone
        for suffix in (".idx", ".pack"):
            (repo.store / "packs" / f"{pack}{suffix}").rename(tmp_path / "aside" / f"{pack}{suffix}")
    (repo.path / MODEL).unlink()                    # (git would clean it, storing the bases)
    return repo, sums, remote_dir, victims


def restore_aside(repo: Repo, tmp_path: Path) -> None:
    for path in (tmp_path / "aside").iterdir():
        path.rename(repo.store / "packs" / path.name)


def assert_checkouts(repo: Repo, sums: list[str]) -> None:
    for rev, expected in zip(("main~1", "main", "private"), sums):
        (repo.path / MODEL).unlink(missing_ok=True)
        repo.git("checkout", rev, "--", MODEL)
        assert sha256(repo.path / MODEL) == expected, rev


def test_a_delta_whose_base_is_lost_here_is_fetched_whole_from_a_remote_that_has_it(tmp_path: Path, git_env):
    """main's versions are stored here as deltas of a private branch's version, and went whole
    to the remote. With the private version's pack lost here, a fetch asked the remote for
    the bases (which it never had) and failed, though it holds main's chunks themselves: it
    now fetches those, and sets aside the deltas that cannot be read any more."""
    repo, sums, _, _ = stranded(tmp_path, git_env)
    fetched = repo.gitmodel("fetch", "origin", "main", "main~1", check=False)
    assert fetched.returncode == 0, fetched.stderr
    assert_checkouts(repo, sums[:2])
    checked = repo.gitmodel("fsck", "--remote", "origin", check=False).stdout
    assert "1 complete" in checked and "0 problem(s)" in checked, checked
    here = repo.gitmodel("fsck").stdout              # what the fetch replaced is not a problem
    assert "0 problem(s)" in here and "cannot be read and are not needed" in here, here
    repo.git("branch", "-q", "-D", "private")        # its version is lost: let it go
    repo.gitmodel("gc", "--keep-recent", "0")
    after = repo.gitmodel("fsck").stdout
    assert "0 problem(s)" in after and "not needed" not in after, after
    store = Store(repo.store)                        # the set-aside copies are gone
    assert all(len(store.copies(cid)) == 1 for v in contents(repo)
               for cid, _ in store.read_manifest(bytes.fromhex(v)).chunks)
    store.close()
    assert_checkouts(repo, sums[:2])


@pytest.mark.parametrize("then", ["repack", "gc"])
def test_the_lost_base_restored_after_a_fetch_leaves_every_version_readable(tmp_path: Path, git_env, then):
    """The review of the fix above: its first version marked the deltas here damaged before
    fetching their whole copies; when that fetch failed (the remote's copies bad), the marks
    stayed. Restoring the lost pack then did not make them readable, and a repack or gc
    copied a marked delta as it was while making its own base a delta of it: a cycle, every
    version unreadable, exit 0. Now nothing is marked unless its replacement is stored; and a
    version whose base came back after a fetch that worked stays readable too."""
    repo, sums, remote_dir, victims = stranded(tmp_path, git_env)
    for idx in remote_dir.rglob("*.idx"):            # the remote's whole copies are damaged
        entries = decode_index(idx.stem, idx.read_bytes())
        pack = idx.with_suffix(".pack")
        os.chmod(pack, 0o644)
        with open(pack, "r+b") as f:
            for oid in victims:
                if oid in entries:
                    f.seek(entries[oid].offset + 40 + entries[oid].stored_length // 2)
                    byte = f.read(1)
                    f.seek(-1, os.SEEK_CUR)
                    f.write(bytes([byte[0] ^ 0xFF]))
    failed = repo.gitmodel("fetch", "origin", "main", "main~1", check=False)
    assert failed.returncode != 0 and "nor the chunk itself" in failed.stderr, failed.stderr
    assert "corrupt" in failed.stderr, failed.stderr
    assert not (repo.store / "damaged").exists() or not (repo.store / "damaged").read_text().strip()
    restore_aside(repo, tmp_path)                    # the remedy failures.md names
    assert_checkouts(repo, sums)
    repo.gitmodel(then, *(["--keep-recent", "0"] if then == "gc" else []))
    assert_checkouts(repo, sums)
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all").stdout


def test_a_fetched_whole_copy_then_the_lost_base_restored_and_repacked(tmp_path: Path, git_env):
    repo, sums, _, _ = stranded(tmp_path, git_env)
    repo.gitmodel("fetch", "origin", "main", "main~1")
    restore_aside(repo, tmp_path)
    checked = repo.gitmodel("fsck").stdout             # the copies set aside read well again
    assert "once found unreadable read well again" in checked and "0 problem(s)" in checked, checked
    assert not (repo.store / "damaged").exists()
    for command in (["repack"], ["gc", "--keep-recent", "0"]):
        repo.gitmodel(*command)
        assert_checkouts(repo, sums)
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all").stdout


def repack_cut_short(repo: Repo) -> None:
    """A repack killed after publishing its packs and before removing the ones it replaced."""
    packs, aside = repo.store / "packs", repo.path.parent / "packs-before"
    shutil.copytree(packs, aside)
    repo.gitmodel("repack")
    for old in aside.iterdir():
        if not (packs / old.name).exists():
            shutil.copy2(old, packs / old.name)
    shutil.rmtree(aside)


def bases_without_a_whole_copy(store: Store) -> list[str]:
    """Delta copies with a base stored only as deltas (every base is whole by design)."""
    found = []
    for oid, entry in store.entries():
        for base in store.copy_bases(oid, entry):
            if all(e.encoding == codec.DELTA for e in store.copies(base)):
                found.append(f"{oid.hex()[:12]} in {entry.pack}: base {base.hex()[:12]}")
    return found


def test_the_next_repack_frees_the_copies_a_repack_cut_short_left_twice(repo: Repo, monkeypatch):
    sums = series(repo, 5)
    repack_cut_short(repo)
    store = Store(repo.store)
    twice = sum(len(store.copies(oid)) > 1 for oid, _ in store.entries())
    store.close()
    assert twice > 100                        # the re-encoded chunks, whole and as deltas
    from gitmodel import repack
    small_packs = Store.writer

    def writer(self):                         # copies of one object fall in different packs
        made = small_packs(self)
        made._target = 1 << 20
        return made
    monkeypatch.setattr(Store, "writer", writer)
    store = Store(repo.store)
    repack.repack(store, [list(reversed(contents(repo)))])
    store.close()
    store = Store(repo.store)
    assert len(store.packs()) > 3
    assert [oid.hex() for oid, _ in store.entries() if len(store.copies(oid)) > 1] == []
    assert bases_without_a_whole_copy(store) == []
    store.close()
    assert_versions_exact(repo, sums)


@pytest.mark.parametrize("versions", [3, 7])
def test_a_repack_cut_short_then_a_revert_and_a_repack_leave_every_version_readable(repo: Repo, versions):
    """The cut-short repack left chunks both whole and as deltas of the newest version; after
    a revert the next repack made that version's chunks deltas of the reverted-to one, read
    only the first copy of each chunk to see what was to change, and left the other copies
    as they were: chunks stored as deltas of each other, every checkout failing ("chain
    more than 64 deep") while fsck found nothing wrong; a gc then dropped whole copies for
    the deltas. Reads take a base's whole copy first, repack changes every copy, gc keeps
    whole copies of bases."""
    sums = series(repo, versions)
    repack_cut_short(repo)
    repo.git("revert", "--no-edit", "HEAD")
    sums.append(sums[-2])
    repo.gitmodel("repack")
    store = Store(repo.store)
    assert bases_without_a_whole_copy(store) == []
    store.close()
    assert_versions_exact(repo, sums)
    repo.gitmodel("gc", "--keep-recent", "0")
    assert_versions_exact(repo, sums)
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all").stdout


def test_a_tensor_whose_first_chunk_opens_another_tensor_too_repacks(tmp_path: Path, git_env):
    """A chunk that opens two tensors (tied or sliced weights, zeros) was measured from its
    first place in the file: the other tensor's delta then reached before its base tensor's
    start, and repack failed with an internal error, and with it every `git push` (its hook
    repacks) and `gitmodel gc`."""
    repo = team(tmp_path, git_env, str(tmp_path / "team-store"))
    x, sums = np.random.default_rng(0).standard_normal((1024, 512)).astype(np.float32), []
    for v in range(4):
        if v:
            x = x + (1e-3 * np.random.default_rng(v).standard_normal(x.shape)).astype(np.float32)
        sums.append(sha256(write_safetensors(repo.path / MODEL, {"a": x[:256].copy(), "b": x})))
        repo.commit(f"v{v}", MODEL)
    repo.git("push", "-q", "origin", "main")                       # repacks first
    assert encodings(repo.store).get(codec.DELTA, 0) > 0
    assert_versions_exact(repo, sums)
    repo.gitmodel("gc", "--keep-recent", "0")
    assert_versions_exact(repo, sums)
    other = user(tmp_path, git_env, "bob")
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(tmp_path / "bob")],
                   env=other, check=True)
    assert_versions_exact(Repo(tmp_path / "bob", other), sums)


def test_a_repack_that_fails_unexpectedly_only_warns_a_push_and_a_gc(tmp_path: Path, git_env,
                                                                       monkeypatch, capsys):
    """A defect in repack (an error other than gitmodel's own) failed every push (its hook
    repacks first) and every gc, though both are right without a repack, only larger."""
    from gitmodel import cli, repack
    repo = team(tmp_path, git_env, str(tmp_path / "team-store"))
    sums = series(repo, 2)

    def broken(*args, **kwargs):
        raise ValueError("a defect")
    monkeypatch.setattr(repack, "plan", broken)
    monkeypatch.chdir(repo.path)
    for key, value in git_env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["gc"]) == 0                  # (first: the push's session keeps its locks)
    assert cli.main(["push", "origin"]) == 0
    said = capsys.readouterr().err
    assert said.count("not repacked") == 2 and "ValueError: a defect" in said, said
    assert encodings(tmp_path / "team-store").get(codec.DELTA, 0) == 0
    other = user(tmp_path, git_env, "bob")
    repo.git("push", "-q", "origin", "main", "--no-verify")
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(tmp_path / "bob")],
                   env=other, check=True)
    assert_versions_exact(Repo(tmp_path / "bob", other), sums)


def damage_the_most_used_base(root: Path) -> None:
    """Flip a payload byte of the chunk the most deltas of the store at `root` rest on."""
    from test_nothing_lost import writable
    from gitmodel.store.pack import record_head
    store = Store(root)
    used: dict[bytes, int] = {}
    for oid, entry in store.entries():
        if entry.encoding == codec.DELTA:
            for base in store.copy_bases(oid, entry):
                used[base] = used.get(base, 0) + 1
    entry = store.locate(max(used, key=used.get))
    store.close()
    pack = writable(root / "packs" / f"{entry.pack}.pack")
    data = bytearray(pack.read_bytes())
    data[entry.offset + record_head.size + entry.stored_length // 2] ^= 0x40
    pack.write_bytes(bytes(data))


def test_a_repair_fetches_versions_the_remote_holds_as_deltas_of_what_it_holds_whole(tmp_path: Path, git_env):
    """v0 and v1 pushed (the remote holds v1 whole, v0 as a delta of it), v2 only here, where
    the repack made v0 and v1 deltas of v2; then a chunk of v2 is damaged. v2 is lost, but v0
    and v1 are on the remote: the repair fetched only what the remote holds whole, so v0
    stayed unreadable here, and every `fsck --all --repair` exited 1 (checkouts of v0 failed
    too). It fetches the remote's deltas after the whole copies they rest on."""
    repo = team(tmp_path, git_env, str(tmp_path / "team-store"))
    sums = series(repo, 2)
    repo.git("push", "-q", "origin", "main")
    v2 = fine_tune(fine_tune(random_model(0, layers=4, width=384), 1), 2)    # series' next
    sums.append(sha256(write_safetensors(repo.path / MODEL, v2, metadata={"step": "2"})))
    repo.commit("v2", MODEL)                                                  # not pushed
    repo.gitmodel("repack")
    damage_the_most_used_base(repo.store)
    repaired = repo.gitmodel("fsck", "--all", "--repair", check=False).stdout
    assert "2 complete" in repaired and "1 lost" in repaired, repaired
    for back, digest in ((1, sums[1]), (2, sums[0])):
        (repo.path / MODEL).unlink()
        repo.git("checkout", f"HEAD~{back}", "--", MODEL)
        assert sha256(repo.path / MODEL) == digest, back


def test_a_fetch_checks_a_remote_delta_against_bases_that_read_well_here(tmp_path: Path, git_env):
    """A, then B, pushed (the remote holds A as a delta of B); A again, pushed (here B became a
    delta of A); then a chunk of A is damaged here. Fetching A's chunk, its remote copy was
    checked against B's copy here, itself a difference from the damaged chunk: the remote's
    good copy failed its check and was blamed ("no other copy there is good"), and only a
    second `fsck --repair` repaired. Bases here that do not read well are fetched too."""
    repo = team(tmp_path, git_env, str(tmp_path / "team-store"))
    a = random_model(3, layers=4, width=384)
    b = fine_tune(a, 1)
    sums = []
    for name, model in (("A", a), ("B", b)):
        sums.append(sha256(write_safetensors(repo.path / MODEL, model)))
        repo.commit(name, MODEL)
    repo.git("push", "-q", "origin", "main")
    write_safetensors(repo.path / MODEL, a)
    repo.commit("A again", MODEL)
    repo.git("push", "-q", "origin", "main")
    damage_the_most_used_base(repo.store)
    repaired = repo.gitmodel("fsck", "--all", "--repair")          # exit 0: all repaired
    assert "2 complete" in repaired.stdout, repaired.stdout
    for back, digest in ((0, sums[0]), (1, sums[1])):
        (repo.path / MODEL).unlink()
        repo.git("checkout", f"HEAD~{back}", "--", MODEL)
        assert sha256(repo.path / MODEL) == digest, back


def test_a_fetch_holds_no_delta_in_memory_while_its_base_comes(tmp_path: Path, git_env, monkeypatch):
    """The push's repack stores v0 on the remote as deltas of v1. Fetching v0 alone (`gitmodel
    pull` of it in a fresh clone) or both (`fetch --all`), each delta that came before its base
    was stored was kept in memory until the base was: 1.1 GiB of a 4 GiB file's pull. They
    wait in a temporary file now, and memory is what the reads in flight and the cache of
    bases take, however large the file."""
    import tracemalloc
    from gitmodel import sync
    from gitmodel.remote import transfer
    from gitmodel.remote.backend import RemoteSpec, open_backend
    from gitmodel.remote.view import RemoteView
    from gitmodel.store import objects

    remote_dir = tmp_path / "team-store"
    repo = team(tmp_path, git_env, str(remote_dir))
    model, files = random_model(5, layers=6, width=1024), []          # 28 MiB
    for v in range(2):
        model = fine_tune(model, 9) if v else model
        files.append(write_safetensors(repo.path / MODEL, model).read_bytes())
        repo.commit(f"v{v}", MODEL)
    repo.git("push", "-q", "origin", "main")
    ids = contents(repo)
    here = Store(repo.store)
    old_chunks = [c for c, _ in here.read_manifest(bytes.fromhex(ids[0])).chunks]
    here.close()
    # Reads in flight and the cache of bases kept small: what is left is what grows with the file.
    monkeypatch.setattr(transfer, "MAX_RANGE", 256 << 10)
    monkeypatch.setattr(transfer, "READS_IN_FLIGHT", 1)
    monkeypatch.setattr(objects, "BASE_CACHE_BYTES", 512 << 10)
    bound = 6 << 20                                        # about twice what a fetch takes
    for wanted in ([ids[0]], ids):
        store = Store(tmp_path / f"clone-{len(wanted)}")
        view = RemoteView(open_backend(RemoteSpec(str(remote_dir), str(remote_dir))), store.root).refresh()
        deltas = sum(e.stored_length for c in old_chunks if (e := view.entries[c]).encoding == codec.DELTA)
        assert deltas > 1.5 * bound, f"v0 is stored there as deltas ({deltas >> 20} MiB)"
        tracemalloc.start()
        try:
            result = sync.fetch(store, view, {content: MODEL for content in wanted}, quiet=True)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert not result.failed and not result.stats.failed
        assert peak < bound, f"fetching {len(wanted)} version(s): {peak >> 20} MiB at the peak"
        for content in wanted:
            restored = b"".join(store.read(c) for c, _ in store.read_manifest(bytes.fromhex(content)).chunks)
            assert restored == files[ids.index(content)]
        assert not list((store.root / "tmp").iterdir())
        store.close()


def test_a_push_never_sends_chunks_as_deltas_of_each_other(tmp_path: Path, git_env):
    """After a repack cut short, a revert and a second one cut short, the store held chunks
    whole and as deltas of each other; reads took the whole copies, but a push (without a
    repack: gitmodel.delta false) sent the first copy of each, the deltas: a remote with a
    cycle, fsck --remote content, every clone failing. Pushes send whole copies first."""
    repo = team(tmp_path, git_env, str(tmp_path / "team-store"))
    sums = series(repo, 3, seed=7)
    repack_cut_short(repo)
    repo.git("revert", "--no-edit", "HEAD")
    sums.append(sums[-2])
    repack_cut_short(repo)
    repo.git("config", "gitmodel.delta", "false")
    store = Store(repo.store)
    first = {oid: store.locate(oid) for oid, _ in store.entries()}
    cycle = [oid for oid, entry in first.items() if entry.encoding == codec.DELTA and
             any(oid in store.copy_bases(b, first[b]) for b in store.copy_bases(oid, entry))]
    store.close()
    assert cycle, "the first copies of some chunks are deltas of each other"
    repo.git("push", "-q", "origin", "main")
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all", "--remote", "origin").stdout
    other = user(tmp_path, git_env, "bob")
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(tmp_path / "bob")],
                   env=other, check=True)
    assert_versions_exact(Repo(tmp_path / "bob", other), sums)


def upload_with_a_cycle(repo: Repo, remote_dir: Path):
    """Upload the newest version of MODEL to the folder remote as an older gitmodel's push
    could leave it: two of its chunks, x and y, stored only as deltas of each other, the rest
    as the store has them. Returns the store (open), the remote's view and {x: bytes, y:
    bytes}."""
    from gitmodel.remote import transfer
    from gitmodel.remote.backend import RemoteSpec, open_backend
    from gitmodel.remote.view import RemoteView
    from gitmodel.store.objects import CHUNK
    from gitmodel.store.pack import Entry, record_head

    store = Store(repo.store)
    manifest = bytes.fromhex(contents(repo)[-1])
    chunks = dict(store.read_manifest(manifest).chunks)
    y, x, w = sorted(chunks, key=chunks.get)[-3:]        # len(x) <= len(y) + len(w), len(y) <= len(x)
    data = {oid: bytes(store.read(oid)) for oid in (x, y, w)}
    deltas = {x: codec.encode_delta(data[x], data[y] + data[w], [y, w], 0, 4),
              y: codec.encode_delta(data[y], data[x], [x], 0, 4)}
    view = RemoteView(open_backend(RemoteSpec(str(remote_dir), str(remote_dir))), repo.store).refresh()
    view.create()

    def records():
        for oid in [*chunks, manifest]:
            entry, record, _ = store.read_checked(oid)
            if oid in deltas:
                yield oid, Entry("", 0, len(deltas[oid]), len(data[oid]), CHUNK, codec.DELTA), deltas[oid]
            else:
                yield oid, entry, memoryview(record)[record_head.size:]
    transfer.send_records(store, view, records(), 1, "test", quiet=True)
    return store, view, {x: data[x], y: data[y]}


def test_fsck_of_a_remote_finds_chunks_stored_there_as_deltas_of_each_other(tmp_path: Path, git_env):
    """Such a remote (an older gitmodel's push) passed `fsck --remote`: each delta was
    checked against the local store's copy of its base. It is damaged now, and the repair it
    names uploads whole copies, which readers there take first."""
    repo = team(tmp_path, git_env, str(tmp_path / "team-store"))
    sums = series(repo, 1)
    store, view, _ = upload_with_a_cycle(repo, tmp_path / "team-store")
    store.close()
    repo.git("push", "-q", "origin", "main")
    checked = repo.gitmodel("fsck", "--remote", "origin", check=False)
    assert checked.returncode != 0 and "a cycle of deltas" in checked.stdout, checked.stdout
    assert "fsck --remote origin --repair" in checked.stdout, checked.stdout
    early = user(tmp_path, git_env, "carol")         # a clone meanwhile fails, and says why
    cloned = subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(tmp_path / "carol")],
                            env=early, capture_output=True, text=True)
    assert cloned.returncode != 0 and "Traceback" not in cloned.stderr
    assert "a cycle of deltas" in cloned.stderr and "fsck --remote origin --repair" in cloned.stderr, \
        cloned.stderr
    # From that clone, whose store holds no copy of the bases: every base is read there, and
    # reading went round the cycle until Python's recursion limit, retried as a network error
    # for 46 s, then blamed on the remote being unreachable.
    far = Repo(tmp_path / "carol", early).gitmodel("fsck", "--remote", "origin", check=False)
    assert far.returncode != 0 and "Recursion" not in far.stdout + far.stderr, far.stdout + far.stderr
    assert "retrying" not in far.stderr and "more than 64 deep" in far.stdout, far.stdout
    repo.gitmodel("fsck", "--remote", "origin", "--repair")
    assert "0 problem(s)" in repo.gitmodel("fsck", "--remote", "origin").stdout
    other = user(tmp_path, git_env, "bob")
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(tmp_path / "bob")],
                   env=other, check=True)
    assert sha256(tmp_path / "bob" / MODEL) == sums[0]


def test_a_remote_gc_keeps_whole_copies_beside_chunks_stored_there_as_deltas_of_each_other(
        tmp_path: Path, git_env):
    """The repair above leaves whole copies in a pack of their own beside the deltas. A remote
    gc rewriting that pack left the whole copies out, since a pack it kept held a copy
    (the deltas): the remote back to chunks stored only as deltas of each other, exit 0."""
    from gitmodel.remote import transfer
    from gitmodel.store.objects import CHUNK
    from gitmodel.store.pack import Entry

    repo = team(tmp_path, git_env, str(tmp_path / "team-store"))
    digest = sha256(write_safetensors(repo.path / MODEL, random_model(3, layers=12, width=512)))
    repo.commit("big", MODEL)
    store, view, cycle = upload_with_a_cycle(repo, tmp_path / "team-store")   # > 8 MiB, all live
    garbage = np.random.default_rng(0).bytes(1 << 20)

    def repair():                              # whole copies, in a pack that is mostly garbage
        for oid, data in cycle.items():
            yield oid, Entry("", 0, 0, len(data), CHUNK, codec.RAW), data
        yield blake3.blake3(garbage).digest(), Entry("", 0, 0, len(garbage), CHUNK, codec.RAW), garbage
    transfer.send_records(store, view, repair(), 1, "test", quiet=True)
    store.close()
    repo.git("push", "-q", "origin", "main")
    assert "0 problem(s)" in repo.gitmodel("fsck", "--remote", "origin").stdout
    done = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    checked = repo.gitmodel("fsck", "--remote", "origin", check=False).stdout
    assert "0 problem(s)" in checked, checked
    other = user(tmp_path, git_env, "bob")
    subprocess.run(["git", "clone", "-q", str(tmp_path / "hub.git"), str(tmp_path / "bob")],
                   env=other, check=True)
    assert sha256(tmp_path / "bob" / MODEL) == digest
    assert "rewrote 1 pack(s) into 1" in done.stderr, done.stderr     # the garbage went


def test_a_remote_gc_sends_no_local_delta_against_a_base_the_remote_holds_only_as_a_delta(
        tmp_path: Path, git_env):
    """A review's case: the store holds x as a delta of y; the remote (an older layout) holds
    y as a delta of x in a pack that stays and x whole in one a gc rewrites. The gc sent the
    store's x, since y is on the remote: x and y deltas of each other there, exit 0."""
    from gitmodel.remote import transfer
    from gitmodel.remote.backend import RemoteSpec, open_backend
    from gitmodel.remote.view import RemoteView
    from gitmodel.store.objects import CHUNK
    from gitmodel.store.pack import Entry, record_head

    remote_dir = tmp_path / "team-store"
    repo = team(tmp_path, git_env, str(remote_dir))
    series(repo, 3)
    repo.gitmodel("repack")                   # here v0's chunks are deltas of v2's
    store = Store(repo.store)
    x, e = next((o, e) for o, e in store.entries() if e.encoding == codec.DELTA
                and len(store.copy_bases(o, e)) == 1
                and store.locate(store.copy_bases(o, e)[0]).raw_length <= e.raw_length)
    y = store.copy_bases(x, e)[0]
    data = {o: bytes(store.read(o)) for o in (x, y)}
    view = RemoteView(open_backend(RemoteSpec(str(remote_dir), str(remote_dir))), repo.store).refresh()
    view.create()

    def older():              # everything whole but y, a delta of x; x in a pack of its own
        for oid in dict.fromkeys(o for o, _ in store.entries()):
            if oid == y:
                delta = codec.encode_delta(data[y], data[x], [x], 0, 4)
                yield oid, Entry("", 0, len(delta), len(data[y]), CHUNK, codec.DELTA), delta
            elif oid != x:
                entry, record, raw = store.read_checked(oid)
                encoding, payload = codec.encode(raw) if entry.encoding == codec.DELTA else \
                    (entry.encoding, memoryview(record)[record_head.size:])
                yield oid, Entry("", 0, len(payload), entry.raw_length, entry.kind, encoding), payload
    transfer.send_records(store, view, older(), 1, "test", quiet=True)
    view.refresh()
    encoding, payload = codec.encode(data[x])
    transfer.send_records(store, view, [(x, Entry("", 0, len(payload), len(data[x]), CHUNK, encoding), payload)],
                          1, "test", quiet=True)
    store.close()
    repo.git("push", "-q", "origin", "main")
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all", "--remote", "origin").stdout
    write_safetensors(repo.path / "small.safetensors", random_model(2, layers=1, width=8))
    repo.commit("small", "small.safetensors")
    repo.git("push", "-q", "origin", "main")
    repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    checked = repo.gitmodel("fsck", "--all", "--remote", "origin", check=False).stdout
    assert "0 problem(s)" in checked, checked


def test_a_new_model_at_the_same_path_leaves_the_older_deltas_as_they_are(repo: Repo):
    """Training started again from scratch at the same path: the older versions' deltas were
    planned against the new model's keyframe, were not worth it there, and were stored whole
    again (a gc then reported negative bytes freed). They now keep their stored form."""
    sums = series(repo, 3)
    repo.gitmodel("repack")
    deltas, size = encodings(repo.store)[codec.DELTA], packs_size(repo.store)
    sums += series(repo, 2, seed=1)                   # another model, fine-tuned once
    added = packs_size(repo.store) - size
    done = repo.gitmodel("gc")
    assert encodings(repo.store)[codec.DELTA] >= deltas
    assert packs_size(repo.store) <= size + added and "freed)" in done.stdout, done.stdout
    assert_versions_exact(repo, sums)
    assert "0 problem(s)" in repo.gitmodel("fsck", "--all").stdout


def test_a_push_checks_that_the_bases_it_found_on_the_remote_are_still_there(tmp_path: Path, git_env,
                                                                              monkeypatch):
    """A push does not send the bases of its deltas that the remote lists, and looks again once
    done: a remote gc may have removed them meanwhile. The bases found there had dropped out of
    that last look, and such a push exited 0 with its deltas' bases gone."""
    from gitmodel import cli
    from gitmodel.remote import transfer
    repo = make_repo(tmp_path / "work", git_env)
    remote_dir = tmp_path / "team-store"
    repo.gitmodel("remote", "add", "origin", str(remote_dir))
    repo.commit("remote", ".gitmodel")
    model = random_model(0, layers=4, width=384)
    write_safetensors(repo.path / MODEL, model)
    repo.commit("m1", MODEL)
    repo.git("checkout", "-q", "-b", "x")
    write_safetensors(repo.path / MODEL, fine_tune(model, 5))
    repo.commit("x2", MODEL)
    repo.git("checkout", "-q", "main")
    write_safetensors(repo.path / MODEL, fine_tune(model, 6))
    repo.commit("m2", MODEL)
    repo.gitmodel("push", "-q", "origin", "main")             # x2 becomes a delta of m2
    store = Store(repo.store)
    x2 = repo.out("show", f"x:{MODEL}").split("\n")[2].split()[1]
    bases = {b for bs in stored_as(store, x2).values() for b in bs}
    store.close()
    assert bases
    upload, removed = transfer.upload, []

    def a_remote_gc_first(store, view, oids, **kwargs):
        if not removed:              # a remote gc that listed before this push removes m2's pack
            for idx in list((remote_dir / "packs").glob("*.idx")):
                if bases & set(decode_index(idx.stem, idx.read_bytes())):
                    removed.append(idx.stem)
                    idx.unlink()
                    idx.with_suffix(".pack").unlink()
        return upload(store, view, oids, **kwargs)

    monkeypatch.setattr(transfer, "upload", a_remote_gc_first)
    for key, value in git_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(repo.path)
    assert cli.main(["push", "-q", "origin", "x"]) == 0
    assert removed
    on_remote = {oid for idx in (remote_dir / "packs").glob("*.idx")
                 for oid in decode_index(idx.stem, idx.read_bytes())}
    assert bases <= on_remote


def test_a_dropped_version_that_was_a_keyframe_is_freed_by_gc(repo: Repo):
    """The rule that keeps a delta whose keyframe changed must not keep one against a version
    no history holds: its chunks stayed in the store forever (gc reported negative bytes), or
    until a second gc when another dropped version's delta named the same base."""
    v1 = random_model(0, layers=4, width=384)
    sums = [sha256(write_safetensors(repo.path / MODEL, v1))]
    repo.commit("v1", MODEL)
    sums.append(sha256(write_safetensors(repo.path / MODEL, fine_tune(v1, 2, scale=5e-3))))
    repo.commit("v2", MODEL)
    for seed in (3, 4):                              # two more, both dropped below
        write_safetensors(repo.path / MODEL, fine_tune(v1, seed))
        repo.commit(f"v{seed}", MODEL)
    repo.gitmodel("repack")                          # v1 and v3 deltas against v4
    store = Store(repo.store)
    ids = contents(repo)
    chunks = lambda content: {cid for cid, _ in store.read_manifest(bytes.fromhex(content)).chunks}  # noqa: E731
    v4 = chunks(ids[3]) - chunks(ids[0]) - chunks(ids[1]) - chunks(ids[2])
    assert any(set(bases) & v4 for bases in stored_as(store, ids[0]).values())
    store.close()
    repo.git("reset", "-q", "--hard", "HEAD~2")
    repo.git("reflog", "expire", "--expire=now", "--all")
    done = repo.gitmodel("gc", "--keep-recent", "0")
    assert "freed)" in done.stdout and "more:" not in done.stdout, done.stdout
    store = Store(repo.store)
    assert not any(store.has(cid) for cid in v4)
    store.close()
    assert_versions_exact(repo, sums)


def test_a_remote_gc_sends_no_weights_of_a_branch_never_pushed(tmp_path: Path, git_env):
    """A remote gc rewriting packs sends the local store's copy of a record where that lets a
    dropped keyframe go; a local delta against an unpushed branch's version took that
    version's weights to the remote with it."""
    remote_dir = tmp_path / "team-store"
    repo = team(tmp_path, git_env, str(remote_dir))
    bare = tmp_path / "hub.git"
    model = random_model(0, layers=4, width=384)
    write_safetensors(repo.path / MODEL, model)
    repo.commit("m0", MODEL)
    repo.git("push", "-q", "origin", "main")
    model = fine_tune(model, 1)
    write_safetensors(repo.path / MODEL, model)
    repo.commit("m1", MODEL)
    repo.git("checkout", "-q", "-b", "private")
    write_safetensors(repo.path / MODEL, fine_tune(model, 7))
    repo.commit("private run", MODEL)
    store = Store(repo.store)
    private = {cid for cid, _ in store.read_manifest(bytes.fromhex(contents(repo)[-1])).chunks}
    store.close()
    repo.git("push", "-q", "origin", "main")

    def on_remote() -> set[bytes]:
        return {oid for idx in (remote_dir / "packs").glob("*.idx")
                for oid in decode_index(idx.stem, idx.read_bytes())}
    shared = private & on_remote()                  # the header chunk, say
    done = repo.gitmodel("gc", "--remote", "origin", "--keep-recent", "0")
    assert "rewrote" in done.stderr, done.stderr    # the case: packs rewritten from the store
    assert private & on_remote() == shared
    other = user(tmp_path, git_env, "bob")
    subprocess.run(["git", "clone", "-q", str(bare), str(tmp_path / "bob")], env=other, check=True)
    bob = Repo(tmp_path / "bob", other)
    assert "0 problem(s)" in bob.gitmodel("fsck", "--remote", "origin", "--all").stdout


def test_a_clone_pushing_its_history_to_a_new_remote_is_told_a_command_that_fetches_it(tmp_path: Path,
                                                                                       git_env):
    """A clone holds the newest checkpoints only; pushing the whole history to a new remote
    needs the older ones, and the error named `gitmodel fetch REMOTE`, which fetches tips."""
    repo = team(tmp_path, git_env, str(tmp_path / "team-store"))
    bare = tmp_path / "hub.git"
    sums = series(repo, 2)
    repo.git("push", "-q", "origin", "main")
    other = user(tmp_path, git_env, "bob")
    subprocess.run(["git", "clone", "-q", str(bare), str(tmp_path / "bob")], env=other, check=True)
    bob = Repo(tmp_path / "bob", other)
    bob.gitmodel("remote", "add", "--local", "backup", str(tmp_path / "backup-store"))
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "backup.git")], check=True)
    bob.git("remote", "add", "backup", str(tmp_path / "backup.git"))
    refused = bob.git("push", "-q", "backup", "main", check=False)
    assert refused.returncode != 0 and "`gitmodel fsck --all --repair`" in refused.stderr.decode()
    bob.gitmodel("fsck", "--all", "--repair")
    bob.git("push", "-q", "backup", "main")
    carol = user(tmp_path, git_env, "carol")
    subprocess.run(["git", "clone", "-q", str(tmp_path / "backup.git"), str(tmp_path / "carol")],
                   env=dict(carol, GITMODEL_REMOTE=str(tmp_path / "backup-store")), check=True)
    car = Repo(tmp_path / "carol", dict(carol, GITMODEL_REMOTE=str(tmp_path / "backup-store")))
    assert_versions_exact(car, sums)


def test_fsck_of_a_remote_is_not_misled_by_a_damaged_base_here(tmp_path: Path, git_env):
    """fsck --remote decodes the remote's deltas against the local store's bases: a damaged
    local copy of a base made the remote's delta look damaged, though the remote's copies
    were all good."""
    repo = make_repo(tmp_path / "work", git_env)
    repo.gitmodel("remote", "add", "origin", str(tmp_path / "team-store"))
    series(repo, 3)
    repo.gitmodel("push")
    store = Store(repo.store)
    base = next(bases[0] for bases in stored_as(store, contents(repo)[0]).values() if bases)
    entry = store.locate(base)
    store.close()
    pack = repo.store / "packs" / f"{entry.pack}.pack"
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:                            # the last byte of its payload
        f.seek(entry.offset + 42 + entry.stored_length - 1)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    checked = repo.gitmodel("fsck", "--remote", "origin", "--all", check=False)
    assert checked.returncode == 0 and "3 complete" in checked.stdout, checked.stdout
    # The local repair moves the damaged pack aside and fetches the base: everything is whole,
    # and it says so (it counted the deltas of the damaged base as problems still, exit 1).
    repaired = repo.gitmodel("fsck", "--all", "--repair", check=False)
    assert "repair: fetched 1 object(s)" in repaired.stdout, repaired.stdout
    assert repaired.returncode == 0 and "0 problem(s)." in repaired.stdout, repaired.stdout
