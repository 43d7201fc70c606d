"""compress / decompress / verify orchestration.

Everything streams: compress reads one chunk of rows at a time from the
source, encodes chunks in a thread pool with a bounded number in flight, and
appends records in order; decompress hands decoded chunks to the format
writer as they come. Peak memory is about (chunk size x chunks in flight)
plus whatever the output format must hold (torch.save needs every tensor).

Outputs are written to a temporary file beside the target and renamed into
place only when complete, so a failure leaves nothing at the target
(bie_cli/paths.py, which also gives ``-`` its stdin/stdout meaning).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from . import __version__, _malloc, dtypes, executors, formats, tensorcodec
from ._directio import append_file
from .errors import BadInputError, BieError, CorruptContainerError, VerificationFailedError
from .formats.base import CheckpointSource, TensorInfo
from .formats.cai import spec
from .formats.cai.reader import TensorEntry, check_bits, parse_chunk
from .formats.cai.writer import ContainerWriter
from .metrics import ErrorStats
from .paths import (
    STDIO,
    atomic_directory,
    atomic_output,
    check_output_directory,
    check_output_path,
    is_directory_target,
    seekable_input,
    stdout_stream,
)
from .plan import Planner, StrategySpec, load_policy_file, parse_rule, parse_strategy
from .tensorcodec import DigestCheck, OrderedDigest, StoredTensors, StreamDecoder, TensorPlan, TensorRecordWriter

DEFAULT_CHUNK_SIZE = 4 << 20
#: chunks in flight per thread at most, however small: a model of many small tensors keeps
#: the encoders (decoders) busy while this thread writes each tensor's records; memory is
#: bounded by bytes in flight instead (:class:`_InFlight`)
MAX_CHUNKS_IN_FLIGHT = 32

#: progress callback: (bytes done, bytes total, current tensor name)
Progress = Callable[[int, int, str], None]


# -- compress ----------------------------------------------------------------------------


@dataclass
class TensorStats:
    name: str
    dtype: str
    shape: list[int]
    strategy: str
    reason: str
    original_bytes: int
    stored_bytes: int
    lossless: bool
    error: dict | None = None
    seconds: float = 0.0  # wall time from the tensor's first read to its last chunk written


@dataclass
class CompressStats:
    source: str
    output: str
    source_format: str
    original_bytes: int
    stored_bytes: int  # the whole container, headers and index included
    seconds: float
    threads: int
    tensors: list[TensorStats] = field(default_factory=list)
    #: with ``--policy`` and its plan's handoff file: {"file", "chunks", "reused"} (chunks
    #: written from the file instead of encoded)
    handoff: dict | None = None

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.stored_bytes if self.stored_bytes else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def compress_model(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    strategy: str = "",
    rules: Sequence[str] = (),
    policy: str | os.PathLike | None = None,
    threads: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    force: bool = False,
    progress: Progress | None = None,
    source_format: str | None = None,
    executor: str = "threads",
    scheduler: str | None = None,
    target_bits: float | None = None,
    target_size: str | None = None,
    max_error: float | None = None,
    weighting: str | None = None,
    plan_progress: Progress | None = None,
    trellis: bool | None = None,
) -> CompressStats:
    """Compress checkpoint ``src`` into the container ``dst`` (``"-"``: stdout).

    ``strategy`` is the default ``NAME[:key=value,...]``; ``rules`` are
    ``GLOB=NAME[:...]`` overrides (first match wins) applied before the
    policy file's rules. Returns per-tensor and total statistics.

    ``executor``: where chunks are encoded — ``"threads"`` (``threads`` of
    this process), ``"processes"`` (a pool of ``threads`` processes) or
    ``"dask"`` (the cluster at ``scheduler``, which must see ``src`` at the
    same path). The container's bytes are the same whichever runs them.

    ``target_bits`` (bits per parameter, whole file), ``target_size``
    (``12MB``, ``30%``) or ``max_error`` (each tensor's relative MSE) let
    :mod:`bie_cli.auto` choose every tensor's configuration (rules and the
    policy then pin the tensors they match); the result is the same bytes as
    compressing with the policy ``bie plan`` writes for that budget. ``trellis``
    (default: on with a budget) adds the ``tcq`` ladder to the candidates.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if threads < 1:
        raise BadInputError(f"threads must be at least 1, got {threads!r}")
    if executor not in executors.EXECUTORS:
        raise BadInputError(f"unknown executor {executor!r}; choose one of {', '.join(executors.EXECUTORS)}")
    if executor != "threads" and src == STDIO:
        raise BadInputError(f"executor {executor!r} reads the checkpoint from its path; it cannot read stdin")
    if chunk_size < 1:
        raise BadInputError(f"chunk_size must be a positive number of bytes, got {chunk_size!r}")
    from .auto.budget import make_budget

    budget = make_budget(target_bits, target_size, max_error)
    if budget is not None and strategy:
        raise BadInputError(f"{budget.label()} chooses every tensor's strategy; "
                            "give no default strategy (rules pin tensors)")
    if budget is None and weighting is not None:
        raise BadInputError("weighting needs a budget: target_bits, target_size or max_error")
    if budget is None and trellis is not None:
        raise BadInputError("trellis needs a budget: target_bits, target_size or max_error")
    if budget is not None and src == STDIO:
        raise BadInputError(f"{budget.label()} measures the checkpoint before compressing it; it cannot read stdin")
    default_spec: StrategySpec | None = parse_strategy(strategy) if strategy else None
    rule_list = [parse_rule(rule) for rule in rules]
    auto_summary = None
    if policy is not None:
        loaded = load_policy_file(os.fspath(policy))
        rule_list += loaded.rules
        default_spec = default_spec or loaded.default
        auto_summary = loaded.auto
    planner = Planner(default_spec, rule_list)
    check_output_path(dst, [src], force)
    _malloc.tune()
    started = time.perf_counter()
    pool_context = (contextlib.nullcontext() if executor == "threads"
                    else executors.open_pool(executor, threads, scheduler))
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(formats.open_checkpoint(src, source_format))
        pool = stack.enter_context(pool_context)
        reuse = None
        if budget is not None:
            from .auto.measure import PayloadSpool
            from .auto.planner import DEFAULT_WEIGHTING, plan_model

            # the in-process encoders write the chunks the plan already encoded from its spool
            spool = PayloadSpool() if pool is None else None
            if spool is not None:
                stack.callback(spool.close)
            model_plan = plan_model(source, budget, pins=planner, chunk_size=chunk_size, threads=threads,
                                    weighting=weighting or DEFAULT_WEIGHTING, progress=plan_progress, spool=spool,
                                    trellis=trellis is not False)
            planner, auto_summary = Planner(None, model_plan.rules()), model_plan.summary()
            if spool is not None:
                reuse = {t.info.name: t for t in model_plan.tensors if t.encoded.spooled is not None}
        handoff = None
        if policy is not None and budget is None and pool is None:
            from .auto.handoff import Handoff

            # the chunks `bie plan -o POLICY` encoded, where they are still what compress would write
            handoff = Handoff.open(policy, chunk_size)
            if handoff is not None:
                stack.callback(handoff.close)
        choices = [planner.choose(info) for info in source.tensors]
        if dst == STDIO:
            stats = _compress_to(source, stdout_stream(), choices, threads, chunk_size, progress, planner, pool,
                                 auto_summary, reuse, handoff)
        else:
            with atomic_output(dst) as temporary, append_file(temporary) as out:
                stats = _compress_to(source, out, choices, threads, chunk_size, progress, planner, pool,
                                     auto_summary, reuse, handoff)
        if handoff is not None:
            stats.handoff = {"file": handoff.path, "chunks": handoff.chunks, "reused": handoff.reused}
    stats.output = dst
    stats.seconds = time.perf_counter() - started
    return stats


def compress_source(source: CheckpointSource, dst: str | os.PathLike, *, planner: Planner | None = None,
                    threads: int = 1, chunk_size: int = DEFAULT_CHUNK_SIZE, force: bool = False,
                    progress: Progress | None = None) -> CompressStats:
    """Compress an already opened (e.g. in-memory) ``source`` into the container ``dst``, written
    atomically; ``planner`` chooses each tensor's strategy (default: lossless). The library's
    entry point for containers that are not read from a checkpoint file (``bie embed`` files)."""
    dst = os.fspath(dst)
    planner = Planner(None, []) if planner is None else planner
    check_output_path(dst, [], force)
    started = time.perf_counter()
    choices = [planner.choose(info) for info in source.tensors]
    with atomic_output(dst) as temporary, append_file(temporary) as out:
        stats = _compress_to(source, out, choices, threads, chunk_size, progress, planner)
    stats.output, stats.seconds = dst, time.perf_counter() - started
    return stats


def container_header(source: CheckpointSource, planner: Planner, chunk_size: int, auto: dict | None = None) -> dict:
    """The header record. Rules that carry their own reason (a ``bie plan`` policy) are not
    listed: every tensor stores its reason, and the header stays the same whether the plan
    was computed in this run or read from a file."""
    options = {"default_strategy": planner.default_name, "rules": [r.origin for r in planner.rules if r.reason is None],
               "chunk_size": chunk_size}
    if auto is not None:
        options["auto"] = auto
    return {
        "tool": "bie",
        "tool_version": __version__,
        "source": {"format": source.format, "name": os.path.basename(os.path.normpath(source.path)), "metadata": source.metadata},
        "options": options,
        "manifest": [[i.name, i.dtype, list(i.shape)] for i in source.tensors],
    }


def _compress_to(source: CheckpointSource, out, choices, threads, chunk_size, progress, planner,
                 pool=None, auto_summary: dict | None = None, reuse: dict | None = None,
                 handoff=None) -> CompressStats:
    writer = ContainerWriter(out)
    total = sum(dtypes.nbytes(i.dtype, i.shape) for i in source.tensors)
    writer.write_header(container_header(source, planner, chunk_size, auto_summary))
    for blob_name, data in source.blobs.items():
        writer.write_blob(blob_name, data)
    stats = CompressStats(source.path, "", source.format, total, 0, 0.0, threads)
    records = TensorRecordWriter(writer)
    plans = (tensorcodec.plan_tensor(source, info, choice, chunk_size)
             for info, choice in zip(source.tensors, choices, strict=True))
    write = _RecordThread(records, stats.tensors, max(chunk_size, 1))
    try:
        if pool is None:
            _encoded_in_order(source, plans, threads, total, progress, reuse, chunk_size, handoff, write.put_batch)
        else:
            for kind, value in executors.encoded_in_order(executors.source_ref(source.path, source.format), plans,
                                                          pool, total, progress):
                write.put(kind, value, _payload_size(value.payload) if kind == "chunk" else 0)
    except BaseException:
        write.abort()
        raise
    write.close()
    writer.finish()
    out.flush()
    stats.stored_bytes = writer.bytes_written
    return stats


def _payload_size(payload) -> int:
    return sum(map(len, payload)) if isinstance(payload, tuple) else len(payload)


class _RecordThread:
    """Writes the tensors' records on a thread of its own (``bie-write``) in the order they
    are handed over: each record's checksum (xxh3-64), its JSON body (zstd) and the write to
    the file run beside the encoders, not on the thread that schedules them and hands
    results on in order. At most ``max_bytes`` of chunk payloads (and one more batch) wait,
    so memory stays bounded by the chunk size. Appends each tensor's :class:`TensorStats`
    to ``tensors`` as its end record is written. An error while writing is raised by the
    next :meth:`put` or by :meth:`close`."""

    def __init__(self, records: TensorRecordWriter, tensors: list[TensorStats], max_bytes: int) -> None:
        self._records, self._tensors, self._max_bytes = records, tensors, max_bytes
        self._items: deque = deque()  # ([(kind, value), ...], nbytes, time handed over)
        self._bytes = 0
        # `with self._lock` is one C call, `with self._cond` two Python ones (per record handed
        # over); an RLock's Condition checks ownership in C too (a Lock's in Python)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._error: BaseException | None = None
        self._closed = False
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name="bie-write", daemon=True)
        self._thread.start()

    def put(self, kind: str, value, nbytes: int = 0) -> None:
        """Hand over one ``("begin", plan)``, ``("chunk", EncodedChunk)`` or ``("end", digest)``."""
        self.put_batch([(kind, value)], nbytes)

    def put_batch(self, events: list, nbytes: int) -> None:
        """Hand over several events at once (``nbytes``: their chunks' payload bytes): one lock
        and at most one wake-up of the writing thread for the lot."""
        with self._lock:
            while self._bytes > self._max_bytes and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._items.append((events, nbytes, time.perf_counter()))
            self._bytes += nbytes
            if len(self._items) == 1:  # the writer waits only on an empty queue
                self._cond.notify()

    def close(self) -> None:
        """Wait until everything handed over is written; raise the error writing met, if any."""
        with self._lock:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Drop what is still waiting and stop the thread (the run failed elsewhere)."""
        with self._lock:
            self._closed = self._aborted = True
            self._items.clear()
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        records, started = self._records, 0.0
        while True:
            with self._lock:
                while not self._items and not self._closed:
                    self._cond.wait()
                if not self._items:
                    return
                # all that waits, in one go: one round of the lock per few batches, not per record
                batches, self._items = self._items, deque()
            while batches and not self._aborted:
                events, nbytes, handed = batches.popleft()
                try:
                    for kind, value in events:
                        if kind == "chunk":
                            records.chunk(value)
                            size = _payload_size(value.payload)
                            if size >= _RELEASE_EACH:  # room for the next batch as soon as a big chunk is out
                                nbytes -= size
                                self._release(size)
                        elif kind == "begin":
                            started = handed
                            records.begin(value)
                        else:
                            result = records.end(value)
                            info, plan = result.plan.info, result.plan
                            self._tensors.append(TensorStats(
                                info.name, info.dtype, list(info.shape), plan.strategy, plan.reason,
                                result.original_bytes, result.stored_bytes, result.lossless,
                                result.error, time.perf_counter() - started,
                            ))
                except BaseException as exc:  # handed to the scheduling thread
                    with self._lock:
                        self._error = exc
                        self._items.clear()
                        self._cond.notify_all()
                    return
                if nbytes:
                    self._release(nbytes)

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._bytes -= nbytes
            if self._bytes <= self._max_bytes:
                self._cond.notify()


#: chunks of this many payload bytes or more leave the writing thread's budget one by one,
#: smaller ones with the rest of their batch
_RELEASE_EACH = 256 << 10


class _InFlight:
    """The window of chunks submitted but not yet passed on: at most ``2 x threads`` chunks'
    worth of bytes (``2 x threads x chunk_size``) and ``MAX_CHUNKS_IN_FLIGHT x threads`` chunks.
    For full-size chunks that is the ``2 x threads`` chunks it always was; small tensors'
    chunks fill it by bytes, so the workers do not wait on this thread between tensors."""

    def __init__(self, threads: int, chunk_size: int) -> None:
        self.max_count = MAX_CHUNKS_IN_FLIGHT * threads
        self.max_bytes = 2 * threads * max(chunk_size, 1)
        self.count = 0
        self.bytes = 0

    def add(self, nbytes: int) -> None:
        self.count += 1
        self.bytes += nbytes

    def remove(self, nbytes: int) -> None:
        self.count -= 1
        self.bytes -= nbytes

    def room(self) -> bool:
        """Whether another chunk may be submitted without waiting for the oldest."""
        return self.count < self.max_count and self.bytes < self.max_bytes


def _reused(plan: TensorPlan, reuse: dict | None):
    """The planner's whole-tensor encode of exactly this plan (strategy, config, chunking), or None."""
    planned = reuse.get(plan.info.name) if reuse else None
    if planned is None or planned.choice.strategy != plan.strategy or planned.choice.config_dict != plan.config_dict:
        return None
    encoded = planned.encoded
    if [(start, stop) for start, stop, _, _ in encoded.chunks] != [plan.chunk_rows(n) for n in range(plan.chunk_count)]:
        return None
    return encoded


#: sources whose ``read`` may run on several threads at once (positional reads of a file)
_THREAD_SAFE_READS = frozenset({"safetensors"})


def _reads_in_workers(source: CheckpointSource) -> bool:
    return source.format in _THREAD_SAFE_READS and source.path != STDIO


def _encode_read(chunk: np.ndarray, plan: TensorPlan, number: int, digest: OrderedDigest, handed=None):
    """Encode chunk ``number``, or with ``handed`` (its entry in a plan's handoff file, and the
    file), write the plan's payload when the chunk's bytes are those the plan encoded. ``digest``
    None: the caller hashed the chunk already."""
    if digest is not None:
        digest.add(number, chunk)  # before encoding: a strategy may modify its input in place
    row_start, row_stop = plan.chunk_rows(number)
    if handed is not None:
        from .auto.measure import chunk_digest_of

        entry, handoff = handed
        payload = handoff.payload(entry) if chunk_digest_of(chunk) == entry[5] else None
        if payload is not None:
            return tensorcodec.handed_chunk(plan, row_start, row_stop, chunk, payload, entry[2])
    return tensorcodec.encode_chunk(plan, row_start, row_stop, chunk)


def _run_job(source: CheckpointSource, work: list) -> tuple[list, int]:
    """Encode a job's chunks in order: ``work`` holds ``(plan, number, digest, handed, chunk)``,
    ``chunk`` None to read it here and feed ``digest`` (an :class:`OrderedDigest`, or for a
    tensor of one chunk its plain digest). Returns the encoded chunks and their payload bytes.
    Each entry is dropped as it is done, so its rows are freed early."""
    encoded, payload = [], 0
    for index, (plan, number, digest, handed, chunk) in enumerate(work):
        work[index] = None
        if chunk is None:
            row_start, row_stop = plan.chunk_rows(number)
            chunk = source.read(plan.info.name, row_start, row_stop)
            tensorcodec.check_chunk(chunk, plan.info)
            if type(digest) is not OrderedDigest:
                tensorcodec.update_digest(digest, chunk)  # the tensor's only chunk: no ordering
                digest = None
        else:
            digest = None
        result = _encode_read(chunk, plan, number, digest, handed)
        del chunk
        encoded.append(result)
        payload += _payload_size(result.payload)
    return encoded, payload


#: an encode job's events: ("begin", plan), ("chunk", _ENCODED: the job's next result, or an
#: EncodedChunk), ("end", OrderedDigest | hex digest)
_ENCODED = None


class _Job:
    """Consecutive chunks in manifest order, across tensors, encoded by one task: the thread
    pool, its futures and this thread's bookkeeping cost per job, not per chunk, and a model
    of small tensors (biases, norms: most of a transformer's tensors) hands its records to
    the writing thread in batches. ``nbytes``: source bytes, for :class:`_InFlight`."""

    __slots__ = ("events", "future", "nbytes", "work")

    def __init__(self) -> None:
        self.events: list = []
        self.work: list = []
        self.nbytes = 0
        self.future: Future | None = None

    def finished(self) -> tuple[list, int]:
        """The job's events with its results in place, and their payload bytes (call once done)."""
        if self.future is None:
            encoded, payload = (), 0
        else:
            encoded, payload = self.future.result()
        results = iter(encoded)
        events = self.events
        for index, (kind, value) in enumerate(events):
            if kind == "chunk":
                if value is _ENCODED:
                    events[index] = ("chunk", next(results))
                else:
                    payload += _payload_size(value.payload)
            elif kind == "end" and not isinstance(value, str):
                events[index] = ("end", value.hexdigest())
        return events, payload


def _encoded_in_order(source: CheckpointSource, plans: Iterator[TensorPlan], threads: int, total: int,
                      progress: Progress | None, reuse: dict | None = None,
                      chunk_size: int = DEFAULT_CHUNK_SIZE, handoff=None,
                      deliver: Callable[[list, int], None] | None = None) -> None:
    """Call ``deliver(events, payload bytes)`` with ``("begin", plan)``, ``("chunk",
    EncodedChunk)``..., ``("end", digest)`` for every tensor, in manifest order, in batches.

    ``threads`` encoder threads read (a file read by position: safetensors) and
    encode chunks, each feeding its tensor's :class:`OrderedDigest` first; this
    thread reads the others (a stream, formats that parse in memory) and passes
    results on in order as soon as they are ready, across tensor boundaries (a model of many one-chunk
    tensors keeps every thread busy). Consecutive chunks go to the threads as jobs of at
    least a quarter chunk (:class:`_Job`; never more than ``chunk_size`` unless one chunk is).
    At most ``2 x threads x chunk_size`` bytes
    of chunks are in flight (:class:`_InFlight`), whatever the tensor count, so
    memory is bounded by chunk size, not model size. Tensors in ``reuse``
    (``--target-bits``: encoded whole while planning) are read back from the
    planner's spool instead of being encoded again; their digest is the planner's. Chunks a
    ``handoff`` (``bie plan -o``'s ``.encoded`` file) holds for exactly this plan and these
    bytes are decoded from there for their error instead of being encoded."""
    # one encoder: this thread (otherwise waiting on it) reads and hashes the next chunks while it
    # encodes, so only the encode is on the critical path; more: the encoders read in parallel
    in_workers = _reads_in_workers(source) and threads > 1
    chunk_size = max(chunk_size, 1)
    job_bytes = max(chunk_size // 4, 1)
    queue: deque[_Job] = deque()
    in_flight = _InFlight(threads, chunk_size)
    room = in_flight.room
    done = 0

    def pass_on(drain: bool = False) -> None:
        """Deliver the jobs at the head that are done (all of them with ``drain``); wait for the
        head while the window is full."""
        while queue:
            job = queue[0]
            future = job.future
            if future is not None and not drain and room() and not future.done():
                return
            queue.popleft()
            in_flight.remove(job.nbytes)
            deliver(*job.finished())

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bie-encode") as pool:

        def submit(job: _Job) -> _Job:
            if job.work:
                job.future = pool.submit(_run_job, source, job.work)
                job.work = None
            queue.append(job)
            in_flight.add(job.nbytes)
            if progress:
                progress(done, total, name)
            pass_on()
            return _Job()

        job, name = _Job(), ""
        for plan in plans:
            info = plan.info
            name = info.name
            encoded = _reused(plan, reuse)
            if encoded is not None:
                job.events.append(("begin", plan))
                for start, stop, meta, payload, error in encoded.stored_chunks():
                    job = submit(job)  # one chunk a job: held in the window until written
                    job.events.append(("chunk", tensorcodec.EncodedChunk(start, stop, meta, payload, error)))
                    job.nbytes += len(payload)
                job.events.append(("end", encoded.digest))
                done += dtypes.nbytes(info.dtype, info.shape)
                job = submit(job)
                continue
            count = plan.chunk_count
            # hashed by the encoder threads, in chunk order; one chunk: by the thread that reads it
            digest = OrderedDigest() if count > 1 else spec.new_digest()
            handed = handoff.lookup(plan) if handoff is not None else None
            row_bytes = dtypes.nbytes(info.dtype, info.shape[1:]) if info.shape else dtypes.nbytes(info.dtype, ())
            events = job.events
            events.append(("begin", plan))
            for number in range(count):
                row_start, row_stop = plan.chunk_rows(number)
                nbytes = (row_stop - row_start) * row_bytes if info.shape else row_bytes
                if job.nbytes and job.nbytes + nbytes > chunk_size:
                    job = submit(job)  # jobs stay within a chunk's bytes
                    events = job.events
                from_plan = None if handed is None else (handed[number], handoff)
                if in_workers:
                    job.work.append((plan, number, digest, from_plan, None))
                else:
                    chunk = source.read(name, row_start, row_stop)
                    tensorcodec.check_chunk(chunk, info)
                    # in order, before the encoder may modify it in place
                    if count > 1:
                        digest.add(number, chunk)
                    else:
                        tensorcodec.update_digest(digest, chunk)
                    job.work.append((plan, number, None, from_plan, chunk))
                    del chunk
                events.append(("chunk", _ENCODED))
                job.nbytes += nbytes
                done += nbytes
                if job.nbytes >= job_bytes:
                    job = submit(job)
                    events = job.events
            events.append(("end", digest))
        if job.events:
            submit(job)
        pass_on(drain=True)


# -- decompress -------------------------------------------------------------------------


@dataclass
class DecompressStats:
    source: str
    output: str
    format: str
    tensors: int
    bytes: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _chunk_bytes(entry: TensorEntry, number: int) -> int:
    ref = entry.chunks[number]
    return dtypes.nbytes(entry.dtype, entry.chunk_shape(ref.row_start, ref.row_stop))


#: small chunks (bias vectors, norms) are decoded in jobs of consecutive chunks up to this
#: many bytes: one thread-pool job, future and wake-up for many chunks instead of one each
SMALL_JOB_BYTES = 256 << 10
#: and at most this many chunks
SMALL_JOB_CHUNKS = 64


def _jobs(entries: list[TensorEntry]) -> Iterator[tuple[list, int]]:
    """The chunks in file order as ``([(entry, number, nbytes), ...], nbytes)`` jobs: a chunk of
    :data:`SMALL_JOB_BYTES` or more alone, smaller consecutive ones together."""
    job: list = []
    job_bytes = 0
    for entry in entries:
        for number in range(len(entry.chunks)):
            nbytes = _chunk_bytes(entry, number)
            if job and (job_bytes + nbytes > SMALL_JOB_BYTES or len(job) >= SMALL_JOB_CHUNKS):
                yield job, job_bytes
                job, job_bytes = [], 0
            job.append((entry, number, nbytes))
            job_bytes += nbytes
    if job:
        yield job, job_bytes


def _decoded_in_order(stored: StoredTensors, entries: list[TensorEntry], bits: int | None, threads: int,
                      check: DigestCheck | None = None, place: _Placer | None = None):
    """``(entry, array, nbytes)`` for every chunk in file order, decoded ``threads`` at a time
    (decoders release the GIL) with at most ``2 x threads`` full-size chunks' worth of
    bytes held (:class:`_InFlight`), across tensor boundaries; small chunks in jobs of
    several (:func:`_jobs`). ``check``: with
    ``threads`` > 1 (an ordered :class:`DigestCheck`) each decoding thread hashes the
    chunk it decoded, and the tensor is checked as its last chunk passes here; with
    one decoding thread, this thread hashes (and writes) while the next chunk decodes.

    ``place``: a :class:`_Placer`, which writes a chunk where it belongs in the output,
    called by the thread that hashes the chunk (the decoders when ``threads`` > 1, so
    the output's writes, the costliest part after decoding, run on every core instead
    of this one); the arrays passed on are then None. Chunks it can take in place are
    decoded straight into their window of the output (:meth:`_Placer.stage`)."""
    hash_here = threads == 1

    def decode(entry: TensorEntry, number: int, nbytes: int):
        staged = place.stage(entry, number, nbytes) if place is not None else None
        array = stored.decode_chunk(entry, number, bits, staged)
        if hash_here:
            return array, staged
        if place is None:
            if check is not None:
                check.feed(entry, number, array)
            return array, None
        if check is None:
            place(entry, number, array, staged)
        else:  # written once hashed: a staged chunk's window may go out once it is written
            check.feed(entry, number, array, lambda: place(entry, number, array, staged))
        return None, None

    def decode_job(job: list) -> tuple[list, BaseException | None]:
        """The job's ``(array, staged)`` in order, and the error that stopped it (the chunks
        before it pass on first)."""
        results = []
        try:
            for entry, number, nbytes in job:
                results.append(decode(entry, number, nbytes))
        except Exception as exc:
            return results, exc
        return results, None

    chunk_size = max((_chunk_bytes(entry, 0) for entry in entries if entry.chunks), default=1)
    in_flight = _InFlight(threads, chunk_size)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bie-decode") as pool:
        pending: deque = deque()

        def passed():
            job, job_bytes, future = pending.popleft()
            in_flight.remove(job_bytes)
            results, error = future.result()
            for (done_entry, number, nbytes), (array, staged) in zip(job, results, strict=False):
                if hash_here:
                    if check is not None:
                        check.update(done_entry, array)
                    if place is not None:
                        place(done_entry, number, array, staged)
                        array = None
                elif check is not None:
                    check.passed(done_entry)
                yield done_entry, array, nbytes
            if error is not None:
                raise error

        try:
            for job, job_bytes in _jobs(entries):
                pending.append((job, job_bytes, pool.submit(decode_job, job)))
                in_flight.add(job_bytes)
                while pending and (not in_flight.room() or pending[0][2].done()):
                    yield from passed()
            while pending:
                yield from passed()
        finally:
            for *_, future in pending:  # on an error, start no more decodes (nor their writes)
                future.cancel()


def _checked_chunks(stored: StoredTensors, entries: list[TensorEntry], bits: int | None = None,
                    threads: int = 1, place: _Placer | None = None) -> Iterator[tuple[str, np.ndarray | None, int]]:
    """``(name, array, nbytes)`` of the decoded chunks in order; each lossless tensor's bytes
    are checked against its digest. With ``place`` (see :func:`_decoded_in_order`) the
    arrays passed on are None."""
    check = DigestCheck(entries, ordered=threads > 1)
    decoded = _decoded_in_order(stored, [e for e in entries if e.chunks], bits, threads, check, place)
    with contextlib.closing(decoded):  # closing this closes that (its pool joins its threads) at once
        for entry, array, nbytes in decoded:
            yield entry.name, array, nbytes


def _placeable(entries: list[TensorEntry]) -> bool:
    """Whether every tensor's chunks tile its rows (the index checks each chunk's rows; this
    checks none is missing), so that writing each chunk at its offset fills every byte."""
    for entry in entries:
        if not entry.chunks:
            if dtypes.nbytes(entry.dtype, entry.shape):
                return False
        elif entry.chunks[0].row_start != 0 or entry.chunks[-1].row_stop != entry.rows:
            return False
    return True


class _Placer:
    """``place`` for :func:`_decoded_in_order`: a chunk's bytes at its offset in ``output``
    (a :class:`~bie_cli.formats.safetensors.PlacedOutput`), decoded into the output's
    window where it can (:meth:`stage`)."""

    def __init__(self, output) -> None:
        self._output = output

    @staticmethod
    def where(entry: TensorEntry, number: int) -> tuple[int, int, int]:
        """(byte offset in the tensor, bytes, item size) of chunk ``number``."""
        ref = entry.chunks[number]
        row_bytes = dtypes.nbytes(entry.dtype, entry.shape[1:]) if entry.shape else 0
        itemsize = dtypes.get(entry.dtype).numpy.itemsize
        if not entry.shape:
            return 0, itemsize, itemsize
        return ref.row_start * row_bytes, (ref.row_stop - ref.row_start) * row_bytes, itemsize

    def stage(self, entry: TensorEntry, number: int, nbytes: int) -> np.ndarray | None:
        """Where to decode the chunk in place, or None (see ``PlacedOutput.stage``)."""
        offset, nbytes, itemsize = self.where(entry, number)
        return self._output.stage(entry.name, offset, nbytes, itemsize)

    def __call__(self, entry: TensorEntry, number: int, array: np.ndarray, staged: np.ndarray | None = None) -> None:
        offset = self.where(entry, number)[0]
        if staged is None:
            self._output.write(entry.name, offset, array)
        else:
            self._output.write_stage(entry.name, offset, staged)


def decompress_model(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    format: str | None = None,
    tensors: Sequence[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    bits: int | None = None,
    threads: int = 1,
    **format_options,
) -> DecompressStats:
    """Rebuild a checkpoint from container ``src`` (``"-"``: stdin) at ``dst``.

    ``bits=m`` rebuilds tensors of a progressive strategy (``bie-bitplane``)
    from their top ``m`` planes only; other tensors ignore it."""
    src, dst = os.fspath(src), os.fspath(dst)
    check_bits(bits)
    if threads < 1:
        raise BadInputError(f"threads must be at least 1, got {threads!r}")
    to_directory = is_directory_target(dst)
    if to_directory:
        if format not in (None, "safetensors"):
            raise BadInputError("a directory output holds safetensors shards; drop --format or give a file name")
        output_format = "safetensors"
        check_output_directory(dst, [src], force)
    else:
        output_format = formats.format_for_output(dst, format)
        writer_module = formats.module(output_format)
        if output_format == "onnx":
            # the external data file is named after the final model file, not the temporary one
            format_options.setdefault("final_path", dst)
        check_output_path(dst, [src], force)
    _malloc.tune()
    started = time.perf_counter()
    wanted = set(tensors) if tensors else None
    if src == STDIO:
        decoder = StreamDecoder(sys.stdin.buffer)  # records are self-describing: no need to seek
        infos = _manifest(decoder.header)
        selected = _select(infos, wanted, src)
        names = {info.name for info in selected}
        stream = decoder.chunks(bits=bits)
        chunks = ((entry.name, array) for entry, _, _, array in stream if entry.name in names)
        header, blobs = decoder.header, decoder.blobs
        drain = stream
    else:
        stored = StoredTensors.open(src)
        reader = stored.reader
        infos = [TensorInfo(e.name, e.dtype, e.shape) for e in reader.entries]
        try:
            selected = _select(infos, wanted, src)
        except BieError:
            stored.close()
            raise
        entries = [reader.entry(info.name) for info in selected]
        chunks = ((name, array) for name, array, _ in _checked_chunks(stored, entries, bits, threads))
        header = reader.header
        blobs = {name: reader.blob(name) for name in reader.blob_names}
        drain = None
    metadata = (header.get("source") or {}).get("metadata") or {}
    total = sum(dtypes.nbytes(i.dtype, i.shape) for i in selected)
    done = 0

    def counted():
        nonlocal done
        for name, array in chunks:
            done += array.nbytes
            if progress:
                progress(done, total, name)
            yield name, array

    def write_and_drain(target) -> None:
        writer_module.write(target, selected, counted(), metadata, blobs, **format_options)
        _drain(drain)

    def placed(files: list[tuple[str, bytes, list[TensorInfo]]]) -> None:
        """Decode with every chunk written at its offset by the thread that hashed it."""
        nonlocal done
        from .formats.safetensors import PlacedOutput

        output = PlacedOutput(threads=threads)
        ends = {entry.name: [sum(_Placer.where(entry, number)[:2]) for number in range(len(entry.chunks))]
                for entry in entries}  # where chunks end: windows end there
        try:
            for path, file_header, infos in files:
                output.add_file(path, file_header, infos, ends)
            with contextlib.closing(_checked_chunks(stored, entries, bits, threads, _Placer(output))) as passed:
                for name, _, nbytes in passed:
                    done += nbytes
                    if progress:
                        progress(done, total, name)
            output.finish()  # the direct writes still under way
        finally:
            output.close()  # after the decoders stopped (the generator's pool is shut down)

    # a seekable container to safetensors: the layout is known, so chunks go straight to their offsets
    place = src != STDIO and dst != STDIO and output_format == "safetensors" and not format_options \
        and _placeable(entries)
    try:
        if to_directory:
            from .formats import safetensors_sharded

            if safetensors_sharded.shard_layout(metadata) is None:
                raise BadInputError(f"{src} was not made from a sharded safetensors checkpoint; "
                                    "give an output file name instead of a directory")
            with atomic_directory(dst, force) as temporary:
                if place:
                    shards = safetensors_sharded.shard_files(selected, metadata, blobs)
                    placed([(os.path.join(temporary, name), file_header, infos) for name, file_header, infos in shards])
                    safetensors_sharded.write_index(temporary, selected, metadata, shards, blobs)
                else:
                    safetensors_sharded.write_directory(temporary, tensors=selected, chunks=counted(),
                                                        metadata=metadata, blobs=blobs)
                _drain(drain)
        elif place:
            from .formats import safetensors

            file_header = safetensors.file_header(selected, metadata)
            with atomic_output(dst) as temporary:
                placed([(temporary, file_header, selected)])
        elif dst == STDIO:
            # one pass to stdout; formats that need to seek or write several files refuse a stream
            write_and_drain(stdout_stream())
        else:
            with atomic_output(dst) as temporary:
                write_and_drain(temporary)
    finally:
        if src != STDIO:
            reader.close()
    return DecompressStats(src, dst, output_format, len(selected), total, time.perf_counter() - started)


def _drain(stream) -> None:
    """Finish reading a container stream: a truncated or corrupt tail must fail the run."""
    if stream is not None:
        for _ in stream:
            pass


def _manifest(header: dict) -> list[TensorInfo]:
    manifest = header.get("manifest")
    if not isinstance(manifest, list):
        raise CorruptContainerError("corrupt container: header has no tensor manifest")
    infos = []
    for item in manifest:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[1], str)
                and isinstance(item[2], list) and all(isinstance(d, int) and d >= 0 for d in item[2])):
            raise CorruptContainerError("corrupt container: malformed manifest entry")
        if item[1] not in dtypes.ALL_NAMES:
            raise CorruptContainerError(f"corrupt container: unknown dtype {item[1]!r} in manifest")
        infos.append(TensorInfo(item[0], item[1], tuple(item[2])))
    return infos


def _select(infos: list[TensorInfo], wanted: set[str] | None, src: str) -> list[TensorInfo]:
    if wanted is None:
        return infos
    missing = sorted(wanted - {i.name for i in infos})
    if missing:
        raise BadInputError(f"no tensor named {missing[0]!r} in {src}")
    return [i for i in infos if i.name in wanted]


# -- verify ---------------------------------------------------------------------------------


@dataclass
class TensorCheck:
    name: str
    strategy: str
    lossless: bool
    status: str = "ok"  # ok | mismatch | corrupt | missing | extra
    detail: str = ""
    error: dict | None = None


@dataclass
class VerifyReport:
    container: str
    against: str | None
    tensors: list[TensorCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # structural problems not tied to one tensor

    @property
    def corrupt(self) -> bool:
        return bool(self.problems) or any(t.status == "corrupt" for t in self.tensors)

    @property
    def ok(self) -> bool:
        return not self.corrupt and all(t.status == "ok" for t in self.tensors)

    @property
    def exit_code(self) -> int:
        if self.corrupt:
            return CorruptContainerError.exit_code
        return 0 if self.ok else VerificationFailedError.exit_code

    def to_dict(self) -> dict:
        return {"ok": self.ok, "exit_code": self.exit_code, **asdict(self)}


def verify_container(
    container: str | os.PathLike,
    *,
    against: str | os.PathLike | None = None,
    max_error: float | None = None,
    progress: Progress | None = None,
    threads: int = 1,
) -> VerifyReport:
    """Check every record's checksum, decode every tensor, and (``against``) compare with the source.

    Lossless tensors must decode to their stored digest and, with a source,
    equal it bit for bit. Lossy tensors' error is recomputed against the
    source; it must match the stored figure and stay within ``max_error``
    (relative MSE) when given, or else the bound a ``--max-error`` plan stored in the
    header. Never raises for problems it can attribute: it
    reports them, so one run names every bad tensor and chunk.

    One pass over the file: each record is read once, checksummed, and (a
    chunk) decoded from the same bytes on ``threads`` threads.
    """
    if threads < 1:
        raise BadInputError(f"threads must be at least 1, got {threads!r}")
    path = os.fspath(container)
    against = os.fspath(against) if against is not None else None
    if path == STDIO and against == STDIO:
        raise BadInputError("the container and --against cannot both be read from stdin (-); give one a path")
    _malloc.tune()
    with seekable_input(path) as readable:
        return _verify(readable, VerifyReport(path, against), max_error, progress, threads)


def _verify(path: str, report: VerifyReport, max_error: float | None, progress: Progress | None,
            threads: int) -> VerifyReport:
    stored = StoredTensors.open(path)  # a broken trailer/index is fatal: raises CorruptContainerError
    if max_error is None:
        # a container planned with --max-error promises that bound for every tensor: check it
        planned = ((stored.reader.header.get("options") or {}).get("auto") or {}).get("max_error")
        if isinstance(planned, (int, float)) and not isinstance(planned, bool):
            max_error = float(planned)
    try:
        source = formats.open_checkpoint(report.against) if report.against is not None else None
    except BaseException:
        stored.close()
        raise
    try:
        _verify_all(stored, source, report, max_error, progress, threads)
    finally:
        stored.close()
        if source is not None:
            source.close()
    return report


def _verify_all(stored: StoredTensors, source, report: VerifyReport, max_error, progress, threads) -> None:
    reader = stored.reader
    source_names = {info.name: info for info in source.tensors} if source else {}
    verifiers: dict[int, _TensorVerifier] = {}
    for entry in reader.entries:
        check = TensorCheck(entry.name, entry.strategy, tensorcodec.is_lossless(entry))
        report.tensors.append(check)
        info = source_names.get(entry.name)
        if source is not None and info is None:
            check.status, check.detail = "extra", "not in the source checkpoint"
        elif info is not None and (info.dtype, info.shape) != (entry.dtype, entry.shape):
            check.status = "mismatch"
            check.detail = f"source is {info.dtype}{list(info.shape)}, container {entry.dtype}{list(entry.shape)}"
            continue
        verifiers[entry.id] = _TensorVerifier(entry, check, source if info is not None else None, max_error)
    chunk_owner = {ref.offset: (entry, number) for entry in reader.entries for number, ref in enumerate(entry.chunks)}
    total = sum(e.original_bytes or 0 for e in reader.entries)
    done = 0

    def finished(verifier: _TensorVerifier) -> None:
        nonlocal done
        verifier.finish()
        done += verifier.entry.original_bytes or 0
        if progress:
            progress(done, total, verifier.entry.name)

    for entry in reader.entries:  # tensors without chunks are complete before the walk
        if not entry.chunks and entry.id in verifiers:
            finished(verifiers.pop(entry.id))
    for entry, number, row_start, row_stop, result in _walk_and_decode(stored, chunk_owner, verifiers,
                                                                       report.problems, threads):
        verifier = verifiers[entry.id]
        verifier.add(number, row_start, row_stop, result)
        if verifier.complete:
            finished(verifiers.pop(entry.id))
    for verifier in verifiers.values():
        # the walk stopped early (a broken record header): read what it missed by the index
        verifier.recheck_by_index(stored)
        finished(verifier)
    if source is not None:
        for name in source_names:
            if name not in reader:
                report.tensors.append(TensorCheck(name, "", False, "missing", "in the source, not in the container"))


def _walk_and_decode(stored: StoredTensors, chunk_owner, verifiers, problems: list[str], threads: int):
    """``(entry, number, row_start, row_stop, array | CorruptContainerError)`` for every chunk
    record the index knows, in file order, decoded ``threads`` at a time. A chunk whose
    checksum fails gives ``None``."""
    reader = stored.reader

    def decode(entry: TensorEntry, number: int, record):
        try:
            chunk = parse_chunk(record.body, record.offset)
            ref = entry.chunks[number]
            if (chunk.tensor_id, chunk.number, chunk.row_start, chunk.row_stop) != (
                entry.id, number, ref.row_start, ref.row_stop
            ):
                raise CorruptContainerError(f"tensor {entry.name!r} chunk {number}: record does not match the index")
            return tensorcodec.decode_chunk(entry, chunk)
        except CorruptContainerError as exc:
            return exc
        finally:
            reader.release(record.offset, spec.RECORD_HEADER.size + len(record.body))

    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bie-verify") as pool:
        for record in reader.walk_records(problems):
            owner = chunk_owner.get(record.offset) if record.type == spec.RecordType.CHUNK else None
            if owner is None:
                if not record.checksum_ok:
                    problems.append(f"corrupt container at byte {record.offset}: record checksum mismatch")
                continue
            entry, number = owner
            if entry.id not in verifiers:
                continue
            ref = entry.chunks[number]
            if not record.checksum_ok:
                pending.append((entry, number, ref, None))
            else:
                pending.append((entry, number, ref, pool.submit(decode, entry, number, record)))
            while len(pending) > 2 * threads or (pending and (pending[0][3] is None or pending[0][3].done())):
                head_entry, head_number, head_ref, future = pending.popleft()
                yield head_entry, head_number, head_ref.row_start, head_ref.row_stop, (
                    None if future is None else future.result())
        while pending:
            head_entry, head_number, head_ref, future = pending.popleft()
            yield head_entry, head_number, head_ref.row_start, head_ref.row_stop, (
                None if future is None else future.result())


class _TensorVerifier:
    """One tensor's verdict, fed its decoded chunks in order."""

    def __init__(self, entry: TensorEntry, check: TensorCheck, source, max_error) -> None:
        self.entry, self.check, self.source, self.max_error = entry, check, source, max_error
        self._reset()

    def _reset(self) -> None:
        self.next_chunk = 0
        self.bad_chunks: list[int] = []
        self.failure: str | None = None
        self.decoded_digest = spec.new_digest()
        self.source_digest = spec.new_digest() if self.source is not None else None
        self.error = ErrorStats()
        self.first_difference: int | None = None

    @property
    def complete(self) -> bool:
        return self.next_chunk == len(self.entry.chunks)

    def add(self, number: int, row_start: int, row_stop: int, result) -> None:
        self.next_chunk = number + 1
        if result is None:
            self.bad_chunks.append(number)
        elif isinstance(result, CorruptContainerError):
            self.failure = self.failure or str(result)
        elif not self.bad_chunks and self.failure is None:
            self._compare(row_start, row_stop, result)

    def _compare(self, row_start: int, row_stop: int, array: np.ndarray) -> None:
        tensorcodec.update_digest(self.decoded_digest, array)
        if self.source is None:
            return
        original = self.source.read(self.entry.name, row_start, row_stop)
        tensorcodec.update_digest(self.source_digest, original)
        if self.check.lossless:
            if self.first_difference is None and not _bytes_equal(original, array):
                self.first_difference = row_start + _first_differing_row(original, array)
        else:
            self.error.add(original, array)

    def recheck_by_index(self, stored: StoredTensors) -> None:
        self._reset()
        try:
            for row_start, row_stop, array in stored.iter_chunks(self.entry):
                self._compare(row_start, row_stop, array)
                self.next_chunk += 1
        except CorruptContainerError as exc:
            self.failure = str(exc)

    def finish(self) -> None:
        check, entry = self.check, self.entry
        if self.bad_chunks:
            numbers = ", ".join(str(n) for n in self.bad_chunks)
            check.status, check.detail = "corrupt", f"chunk {numbers}: checksum mismatch"
            return
        if self.failure is not None:
            check.status, check.detail = "corrupt", self.failure
            return
        if check.lossless and self.decoded_digest.hexdigest() != entry.digest:
            check.status, check.detail = "corrupt", "decoded bytes do not match the stored digest"
            return
        if self.source is None:
            if not check.lossless and entry.stats:
                check.error = entry.stats
            return
        if self.source_digest.hexdigest() != entry.digest:
            check.status = "mismatch"
            check.detail = "the container was made from different data than this source"
            if self.first_difference is not None:
                check.detail += f" (first difference in row {self.first_difference})"
            return
        if check.lossless:
            check.detail = "bit-exact"
            return
        error = self.error
        check.error = error.to_dict()
        stored = entry.stats or {}
        stored_mse = stored.get("relative_mse")
        if stored_mse is not None and not np.isclose(error.relative_mse, stored_mse, rtol=1e-6, atol=1e-12):
            check.status = "mismatch"
            check.detail = f"relative MSE {error.relative_mse:.3g} differs from the stored {stored_mse:.3g}"
        elif self.max_error is not None and error.relative_mse > self.max_error:
            check.status = "mismatch"
            check.detail = f"relative MSE {error.relative_mse:.3g} exceeds --max-error {self.max_error:g}"
        else:
            check.detail = f"relative MSE {error.relative_mse:.3g}"


def _bytes_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a).view(np.uint8).reshape(-1), np.ascontiguousarray(b).view(np.uint8).reshape(-1)
    )


def _first_differing_row(a: np.ndarray, b: np.ndarray) -> int:
    if a.shape != b.shape or a.ndim == 0:
        return 0
    rows_a = np.ascontiguousarray(a).view(np.uint8).reshape(a.shape[0], -1)
    rows_b = np.ascontiguousarray(b).view(np.uint8).reshape(b.shape[0], -1)
    differing = np.flatnonzero((rows_a != rows_b).any(axis=1))
    return int(differing[0]) if differing.size else 0

