"""Clean and smudge: a checkpoint's bytes to the store plus a pointer, and back.

Clean streams the file once, in blocks: the format reader divides it into segments (tensors
and the bytes between them), and each segment is chunked on its own, so a tensor's chunks
survive changes elsewhere in the file and a tensor is always whole chunks. A small thread pool
hashes each chunk (BLAKE3) and compresses the ones the store lacks; the calling thread writes
them into packs in file order. Memory stays at a few blocks in flight.

Smudge checks that the manifest and every chunk are present before the first byte goes out,
then decodes and verifies chunks in parallel and emits them in order. A chunk that fails its
check raises CorruptObject, so the caller can fail the file rather than write wrong bytes.
"""

from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import BinaryIO, Callable, Iterable, Iterator

import blake3

from gitmodel import formats, pointer as pointers, stored
from gitmodel.errors import GitmodelError
from gitmodel.formats import PeekableStream, Segment
from gitmodel.pointer import Pointer, TensorLine
from gitmodel.stats import STATS_DTYPES, StatsCache, TensorStats, chunk_partials
from gitmodel.store import codec
from gitmodel.store.chunker import MAX_SIZE, BufferPool, Cutter
from gitmodel.store.manifest import Manifest
from gitmodel.store.objects import (CHUNK, MANIFEST, REPAIR_HINT, ChainTooLong, CorruptObject,
                                    MissingObjects, Store, StoreError)

IN_FLIGHT = 4              # batches queued to the pool before the writer catches up
RESTORE_BATCH = 32         # chunks per restore task
RESTORE_RUN = 8            # chunks whose deltas are undone together (~1.5 MiB: cache-sized)

_pool: ThreadPoolExecutor | None = None


def pool() -> ThreadPoolExecutor:
    """A process-wide pool: zstandard and blake3 release the GIL, so threads use every core."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2),
                                   thread_name_prefix="gitmodel")
    return _pool


# ----------------------------------------------------------------------------- clean

def clean(stream: BinaryIO, store: Store, write: bool = True,
          notice: Callable[[str], None] | None = None) -> bytes:
    """Store the stream's bytes and return the pointer text git should keep; with `write`
    False, only compute the pointer (for commands that must not write, such as show).
    `notice` hears of a file stored as opaque bytes though a format reader claimed it (it
    ends inside what its header announces: cut short by a full disk or a copy interrupted).

    An empty file stays empty, and a pointer cleans to itself (so re-adding a file that was
    left as a pointer never stores the pointer as if it were a checkpoint)."""
    source = PeekableStream(stream)
    head = source.peek(len(pointers.MAGIC_PREFIX))
    if not head:
        return b""
    if pointers.is_pointer_prefix(head) or head.startswith(b"<<<<<<< "):
        text = pointers.without_crlf(source.peek(pointers.MAX_POINTER_SIZE + 1))
        try:
            if pointers.sniff(text) is not None:
                return text
        except pointers.PointerError:
            pass                     # a file that merely starts like a pointer: store it
        if _conflicted_pointers(text):
            raise ConflictedPointers("the file holds the pointers of a merge left unfinished, "
                                     "between conflict markers (git merged their text: an "
                                     "octopus merge calls no merge driver), not a checkpoint",
                                     "Finish it with `gitmodel merge --resolve PATH --strategy "
                                     "S`, or keep a side: `git checkout --ours -- PATH` (or "
                                     "--theirs)")
    return clean_checkpoint(source, store, write, notice).render()


def _conflicted_pointers(text: bytes) -> bool:
    """Whether `text` is pointer text that git merged line by line, with conflict markers
    (of any length: the `conflict-marker-size` attribute sets it)."""
    if pointers.MAGIC_PREFIX not in text[:4096]:
        return False
    seen = set()
    for line in text.split(b"\n"):
        for mark in b"<=>":
            run = len(line) - len(line.lstrip(bytes([mark])))
            if run >= 7:
                seen.add(mark)
    return seen == set(b"<=>")


class ConflictedPointers(GitmodelError):
    """A work-tree file that is two pointers between git's conflict markers."""


def clean_checkpoint(source: PeekableStream, store: Store, write: bool = True,
                     notice: Callable[[str], None] | None = None) -> Pointer:
    """Store the checkpoint's bytes (unless not `write`); return its pointer (see clean for
    `notice`)."""
    layout = formats.detect(source)
    buffers = BufferPool()
    sink = _ChunkSink(store, buffers, write)
    tensors: list[tuple] = []      # tensor, its chunks' index range, its statistics
    complete = True
    try:
        for segment in _with_tail(layout.segments):
            first = sink.submitted
            cutter, width = Cutter(buffers), segment.element_width
            dtype = segment.tensor.dtype if segment.tensor else None
            summary = TensorStats(dtype) if dtype in STATS_DTYPES else None
            remaining = segment.length
            while remaining > 0:
                space = cutter.space()
                n = source.readinto(space[:min(len(space), remaining)])
                if not n:
                    break
                remaining -= n
                sink.submit(*cutter.filled(n), width, summary)
            sink.submit(*cutter.finish(), width, summary)
            if remaining > 0 and segment.length != _UNTIL_EOF:
                complete = False                     # truncated file: its layout was a lie
                break
            if segment.tensor:
                tensors.append((segment.tensor, first, sink.submitted, summary))
        content, chunk_ids = sink.finish(source.position)
    except BaseException:
        sink.abort()
        raise
    if not complete:
        if notice is not None:
            notice(f"it ends inside the {layout.format} data its header announces ({source.position} "
                   "bytes: cut short by a full disk or an interrupted copy?); stored byte for byte "
                   "as opaque data, so its pointer has no tensor table")
        return Pointer(source.position, content.hex(), "opaque")
    lines = tuple(TensorLine(t.name, t.dtype, t.shape, tensor_digest(chunk_ids[a:b]),
                             summary.fields() if summary else ())
                  for t, a, b, summary in tensors if not layout.values_unreadable)
    found = Pointer(source.position, content.hex(), layout.format, lines,
                    _bounded(sorted(layout.metadata.items())), _bounded(sorted(layout.metrics.items())))
    why = _unreadable(found)
    if layout.names_oversized and lines:     # names the reader did not build: longer still
        why = (f"would take over {pointers.MAX_POINTER_SIZE >> 20} MiB (very long tensor "
               "names)")
    if why is None:
        return found
    # Committed, it would not be taken for a pointer (a checkout would write its text, a gc
    # would not see the checkpoint as live): the same chunks, described as opaque data.
    if notice is not None:
        notice(f"its {layout.format} header describes the tensors so that the pointer {why}; "
               "stored byte for byte as opaque data, so its pointer has no tensor table")
    return Pointer(source.position, content.hex(), "opaque")


def _unreadable(found: Pointer) -> str | None:
    """Why the pointer's text would not read back as it, if it would not."""
    text = found.render()
    if len(text) > pointers.MAX_POINTER_SIZE:
        return (f"would take {len(text) / 2**20:.0f} MiB (a pointer is at most "
                f"{pointers.MAX_POINTER_SIZE >> 20} MiB: very long tensor names, or very many tensors)")
    try:
        again = pointers.parse(text)
    except pointers.PointerError as err:
        return f"would not read back ({err}: e.g. a dimension of more than 20 digits)"
    if again.render() != text:
        return "would read back otherwise"
    return None


MAX_SUMMARY_ITEMS = 200          # metadata entries and metrics shown, each
MAX_METADATA_VALUE = 200         # characters


def _bounded(items: list[tuple[str, object]]) -> tuple:
    out = []
    for key, value in items[:MAX_SUMMARY_ITEMS]:
        if isinstance(value, str) and len(value) > MAX_METADATA_VALUE:
            value = value[:MAX_METADATA_VALUE - 1] + "…"
        if isinstance(value, float) and not math.isfinite(value):
            continue
        out.append((key[:MAX_METADATA_VALUE], value))
    return tuple(out)


def tensor_digest(chunk_ids: list[bytes]) -> str:
    """A tensor's digest: BLAKE3 over its chunks' ids (each tensor is whole chunks), so it
    costs no second pass over the tensor's bytes."""
    return blake3.blake3(b"".join(chunk_ids)).hexdigest()[:pointers.DIGEST_CHARS]


def pointer_mismatch(ptr: Pointer, store: Store) -> str | None:
    """What in a pointer is not what its `content` line names; None when all agrees, or when
    the store lacks what it would take to tell. A pointer is a pure function of the file's
    bytes, so a difference means its lines come from two versions (`git add -p` staged some
    hunks of a pointer's change and not others) or were edited by hand. Reads the format's
    headers only."""
    try:
        file = stored.StoredFile(store, ptr.content)
        if file.size != ptr.size:
            return f"its size line says {ptr.size} bytes, the checkpoint it names has {file.size}"
        if ptr.format == "opaque":
            return None
        stream = PeekableStream(file)
        table = []
        layout = formats.detect(stream)
        for segment in layout.segments:
            if segment.tensor is not None:
                t = segment.tensor
                table.append((t.name, t.dtype, tuple(t.shape),
                              tensor_digest(file.chunks_in(stream.position, segment.length))))
            if stream.skip(segment.length) < segment.length:
                return None                           # a truncated file: its pointer is opaque
    except (GitmodelError, ValueError, OSError):
        return None
    listed = [(t.name, t.dtype, tuple(t.shape), t.digest) for t in ptr.tensors]
    if listed == table or (layout.values_unreadable and not listed):
        return None             # a big-endian file lists none (earlier versions listed them)
    first = next((a[0] for a, b in zip(listed, table) if a != b), None) or \
        (listed[len(table)][0] if len(listed) > len(table) else table[len(listed)][0])
    return (f"its tensor table is not that of the checkpoint its content line names (first "
            f"difference: {pointers.quote_name(first)})")


_UNTIL_EOF = 1 << 63


def _with_tail(segments: Iterable[Segment]) -> Iterator[Segment]:
    yield from segments
    yield Segment(_UNTIL_EOF)


def _prepare(chunks: list, width: int, has: Callable[[bytes], bool] | None, dtype: str | None,
             offset: int, cache: StatsCache):
    """Pool task: id every chunk, encode the ones the store lacks (none when `has` is None:
    nothing is written), and summarise the values of a float tensor's chunks (`offset`: the
    first chunk's position in its tensor)."""
    ids = [blake3.blake3(chunk).digest() for chunk in chunks]
    partials = chunk_partials(chunks, dtype, offset, ids, cache) if dtype else [None] * len(chunks)
    lengths = [len(chunk) for chunk in chunks]
    # Last: the encoding moves raw planes into the chunks' memory (written before the
    # buffer is reused)
    encoded = codec.encode_batch(chunks, width, [has is not None and not has(oid) for oid in ids],
                                 parts=True, in_place=True)
    return list(zip(ids, lengths, encoded, partials))


class _ChunkSink:
    """Collects chunks in file order, writing new ones to packs, and builds the manifest."""

    def __init__(self, store: Store, buffers: BufferPool, write: bool = True):
        self._store = store
        self._buffers = buffers
        self._write = write
        self._writer = store.writer() if write else None
        self._chunks: list[tuple[bytes, int]] = []
        self._queue: deque[tuple[Future, bytearray | None, TensorStats | None]] = deque()
        self.submitted = 0          # chunks submitted so far (their index in the manifest)
        self._stats_cache = StatsCache(store.root / "stats-cache")
        self._new_stats: list[bytes] = []

    def submit(self, chunks: list, buffer: bytearray | None, width: int,
               summary: TensorStats | None = None) -> None:
        """Queue chunks for hashing and encoding (and `summary`'s statistics); `buffer`
        returns to the pool once done."""
        if not chunks:
            self._buffers.give(buffer)
            return
        self.submitted += len(chunks)
        dtype, offset = None, 0
        if summary is not None:
            dtype, offset = summary.dtype, summary.submitted
            summary.submitted += sum(len(c) for c in chunks)
        task = pool().submit(_prepare, chunks, width, self._store.has if self._write else None,
                             dtype, offset, self._stats_cache)
        self._queue.append((task, buffer, summary))
        while len(self._queue) > IN_FLIGHT:
            self._drain_one()

    def _drain_one(self) -> None:
        future, buffer, summary = self._queue.popleft()
        for oid, length, encoded, partial in future.result():
            self._chunks.append((oid, length))
            if partial is not None:
                head, values, tail, record = partial
                summary.add(head, values, tail)
                if record is not None:
                    self._new_stats.append(record)
            if encoded is not None and not self._store.has(oid):
                encoding, payload = encoded
                self._writer.add(oid, CHUNK, encoding, length, payload)
        self._buffers.give(buffer)

    def finish(self, size: int) -> tuple[bytes, list[bytes]]:
        """Store the manifest; returns its id and the chunk ids in file order."""
        while self._queue:
            self._drain_one()
        manifest = Manifest(size, self._chunks).encode()
        oid = blake3.blake3(manifest).digest()
        if self._write:
            if not self._store.has(oid):
                encoding, payload = codec.encode(manifest)
                self._writer.add(oid, MANIFEST, encoding, len(manifest), payload)
            # Packs are published in the order written, the manifest last: once the manifest
            # is visible, every chunk it lists is too.
            self._store.publish(self._writer)
            self._stats_cache.append(list(dict.fromkeys(self._new_stats)))   # equal chunks: one record
        return oid, [cid for cid, _ in self._chunks]

    def abort(self) -> None:
        for future, _, _ in self._queue:
            future.cancel()
        for future, _, _ in self._queue:
            if not future.cancelled():
                future.exception()          # wait: workers may still read our buffers
        if self._writer is not None:
            self._writer.abort()


# ----------------------------------------------------------------------------- smudge

class Restore:
    """A checkpoint ready to be written: everything it needs is known to be in the store."""

    def __init__(self, ptr: Pointer, store: Store):
        self.pointer = ptr
        self._store = store
        oid = bytes.fromhex(ptr.content)
        if store.missing([oid]):
            raise MissingObjects([oid])
        self.manifest = store.read_manifest(oid)
        if self.manifest.size != ptr.size:
            raise PointerMismatch(ptr, self.manifest.size)
        absent = store.prepare_reads(stored.needed([oid], lambda _: self.manifest).chunks)
        if absent:
            raise MissingObjects(absent)

    def write_to(self, emit: Callable[..., object],
                 fetch: Callable[[list[bytes]], None] | None = None) -> None:
        """Emit the file's bytes in order, as `emit(*buffers)` calls; raises CorruptObject
        before emitting a bad chunk. With `fetch` (objects from a remote into the store), a
        chunk that turns out to have no good copy here (damaged, or gone) is fetched and read
        again, so a good copy on the remote serves the read that found the local one bad:
        nothing is emitted before it passes its check."""
        chunks = self.manifest.chunks
        batches = (chunks[i:i + RESTORE_BATCH] for i in range(0, len(chunks), RESTORE_BATCH))
        queue: deque[tuple[list, Future]] = deque()
        fetched: set[bytes] = set()
        try:
            for batch in batches:
                queue.append((batch, pool().submit(self._read_batch, batch)))
                if len(queue) > IN_FLIGHT:
                    emit(*self._next(queue, fetch, fetched))
            while queue:
                emit(*self._next(queue, fetch, fetched))
        finally:
            for _, future in queue:
                future.cancel()

    def _next(self, queue: deque, fetch, fetched: set[bytes]) -> list:
        """The next batch's bytes; read again after a fetch if no good copy was here."""
        batch, future = queue.popleft()
        try:
            return future.result()
        except (CorruptObject, MissingObjects) as err:
            if fetch is None or isinstance(err, ChainTooLong):
                raise
            bad = [err.oid] if isinstance(err, CorruptObject) else list(err.oids)
            wait([f for _, f in queue])          # no read runs while the store takes a pack
            wanted = [oid for oid in self._store.missing(dict.fromkeys(
                [*bad, *(cid for cid, _ in batch)])) if oid not in fetched]
            if not wanted:
                raise
            fetched.update(wanted)
            try:
                fetch(wanted)
            except GitmodelError as why:
                raise StoreError(f"{err}; fetching a good copy from the remote failed: "
                                 f"{why.full()}", REPAIR_HINT) from None
            return self._read_batch(batch)

    def _read_batch(self, chunks: list[tuple[bytes, int]]) -> list:
        return [data for i in range(0, len(chunks), RESTORE_RUN)
                for data in stored.read_run(self._store, chunks[i:i + RESTORE_RUN])]


class PointerMismatch(StoreError):
    """A pointer whose size disagrees with the stored file it names: the pointer was edited or
    damaged (the stored data is fine)."""

    def __init__(self, ptr: Pointer, size: int):
        super().__init__(f"the pointer says {ptr.size} bytes but the checkpoint it names "
                         f"({ptr.content[:16]}…) has {size}",
                         "The stored data is intact; the pointer was edited or damaged. Restore "
                         "the pointer from git (`git checkout REV -- PATH`), or add the file again")


def smudge(ptr: Pointer, store: Store, out: BinaryIO) -> None:
    Restore(ptr, store).write_to(lambda *buffers: out.writelines(buffers))


assert RESTORE_BATCH * MAX_SIZE <= 32 << 20     # a batch's bytes stay bounded
