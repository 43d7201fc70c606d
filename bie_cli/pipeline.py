"""compress / decompress / verify orchestration.

Everything streams: compress reads one chunk of rows at a time from the
source, encodes chunks in a thread pool with a bounded number in flight, and
appends records in order; decompress hands decoded chunks to the format
writer as they come. Peak memory is about (chunk size x chunks in flight)
plus whatever the output format must hold (torch.save needs every tensor).

Outputs are written to a temporary file beside the target and renamed into
place only when complete, so a failure leaves nothing at the target.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from . import __version__, dtypes, formats
from .errors import BadInputError, CorruptContainerError, VerificationFailedError
from .formats.base import CheckpointSource, TensorInfo
from .formats.cai import spec
from .formats.cai.reader import ContainerReader, StreamDecoder, TensorEntry, check_bits, parse_record_header
from .formats.cai.writer import ContainerWriter
from .metrics import ErrorStats
from .plan import Choice, Planner, StrategySpec, load_policy_file, parse_rule, parse_strategy
from .strategies import registry

DEFAULT_CHUNK_SIZE = 4 << 20
STDIO = "-"

#: progress callback: (bytes done, bytes total, current tensor name)
Progress = Callable[[int, int, str], None]


# -- paths and atomic output -------------------------------------------------------


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, directory: str) -> bool:
    return os.path.isdir(directory) and os.path.realpath(path).startswith(os.path.realpath(directory) + os.sep)


def check_output_path(dst: str, sources: Sequence[str], force: bool) -> None:
    """Refuse to clobber an input or an existing file, and fail early on a bad directory."""
    if dst == STDIO:
        return
    for src in sources:
        if src != STDIO and ((os.path.exists(dst) and _same_file(dst, src)) or _inside(dst, src)):
            raise BadInputError(f"output {dst} is the input (or inside it); choose another path")
    if os.path.isdir(dst):
        raise BadInputError(f"output {dst} is a directory; give a file name")
    if os.path.exists(dst) and not force:
        raise BadInputError(f"output {dst} exists; use --force to overwrite it")
    directory = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(directory):
        raise BadInputError(f"output directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BadInputError(f"output directory {directory} is not writable")


@contextlib.contextmanager
def atomic_output(dst: str):
    """Yield a temporary path beside ``dst``; rename it into place on success only."""
    directory = os.path.dirname(os.path.abspath(dst))
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(dst)}.", suffix=".partial", dir=directory)
    except OSError as exc:
        raise BadInputError(f"cannot write in {directory}: {exc.strerror}") from None
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


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

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.stored_bytes if self.stored_bytes else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def rows_per_chunk(info: TensorInfo, chunk_size: int) -> int:
    row_bytes = dtypes.nbytes(info.dtype, info.shape[1:]) if info.shape else dtypes.get(info.dtype).itemsize
    return max(1, chunk_size // max(row_bytes, 1))


def _encode_job(strategy, config, chunk: np.ndarray, dtype: str):
    """Runs in a worker thread: encode, and for lossy strategies measure the real error."""
    payload, meta = strategy.encode(chunk, config)
    stats = None
    if not strategy.is_lossless(config):
        decoded = strategy.decode(memoryview(payload), meta, chunk.shape, dtype)
        stats = ErrorStats()
        stats.add(chunk, decoded)
    return payload, meta, stats


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
    target_bits: float | None = None,
    target_size: str | None = None,
    max_error: float | None = None,
    weighting: str | None = None,
    plan_progress: Progress | None = None,
) -> CompressStats:
    """Compress checkpoint ``src`` into the container ``dst`` (``"-"``: stdout).

    ``strategy`` is the default ``NAME[:key=value,...]``; ``rules`` are
    ``GLOB=NAME[:...]`` overrides (first match wins) applied before the
    policy file's rules. Returns per-tensor and total statistics.

    ``target_bits`` (bits per parameter, whole file), ``target_size``
    (``12MB``, ``30%``) or ``max_error`` (each tensor's relative MSE) let
    :mod:`bie_cli.auto` choose every tensor's configuration (rules and the
    policy then pin the tensors they match); the result is the same bytes as
    compressing with the policy ``bie plan`` writes for that budget.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if threads < 1:
        raise BadInputError("--threads must be at least 1")
    if chunk_size < 1:
        raise BadInputError("--chunk-size must be positive")
    from .auto.budget import make_budget

    budget = make_budget(target_bits, target_size, max_error)
    if budget is not None and strategy:
        raise BadInputError(f"{budget.describe()} chooses every tensor's strategy; drop --strategy "
                            "(use --rule to pin tensors)")
    if budget is None and weighting is not None:
        raise BadInputError("--weighting needs a budget: --target-bits, --target-size or --max-error")
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
    started = time.perf_counter()
    with formats.open_checkpoint(src, source_format) as source:
        if budget is not None:
            from .auto.planner import DEFAULT_WEIGHTING, plan_model

            model_plan = plan_model(source, budget, pins=planner, chunk_size=chunk_size, threads=threads,
                                    weighting=weighting or DEFAULT_WEIGHTING, progress=plan_progress)
            planner, auto_summary = Planner(None, model_plan.rules()), model_plan.summary()
        choices = [planner.choose(info) for info in source.tensors]
        if dst == STDIO:
            stats = _compress_to(source, sys.stdout.buffer, choices, threads, chunk_size, progress, planner, auto_summary)
        else:
            with atomic_output(dst) as temporary, open(temporary, "wb", buffering=1 << 20) as out:
                stats = _compress_to(source, out, choices, threads, chunk_size, progress, planner, auto_summary)
    stats.output = dst
    stats.seconds = time.perf_counter() - started
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
                 auto_summary: dict | None = None) -> CompressStats:
    writer = ContainerWriter(out)
    total = sum(dtypes.nbytes(i.dtype, i.shape) for i in source.tensors)
    writer.write_header(container_header(source, planner, chunk_size, auto_summary))
    for blob_name, data in source.blobs.items():
        writer.write_blob(blob_name, data)
    stats = CompressStats(source.path, "", source.format, total, 0, 0.0, threads)
    done = 0
    max_in_flight = threads * 2
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bie-encode") as pool:
        for info, choice in zip(source.tensors, choices, strict=True):
            tensor_started = time.perf_counter()
            step = rows_per_chunk(info, chunk_size)
            count = 0 if info.numel == 0 else -(-info.rows // step)
            if choice.candidates:
                choice = _smallest_on_first_chunk(choice, source, info, min(step, info.rows) if count else 0)
            strategy = registry.get(choice.strategy)
            start_offset = writer.bytes_written
            writer.begin_tensor({
                "name": info.name, "dtype": info.dtype, "shape": list(info.shape),
                "strategy": choice.strategy, "config": choice.config_dict, "rule": choice.reason,
                "rows_per_chunk": step, "chunk_count": count,
            })
            digest = spec.new_digest()
            lossless = strategy.is_lossless(choice.config)
            error = None if lossless else ErrorStats()
            pending: deque = deque()
            for number in range(count):
                row_start = number * step
                row_stop = min(row_start + step, info.rows)
                chunk = source.read(info.name, row_start, row_stop)
                _check_chunk(chunk, info)
                digest.update(np.ascontiguousarray(chunk).view(np.uint8).reshape(-1))
                pending.append((row_start, row_stop, pool.submit(_encode_job, strategy, choice.config, chunk, info.dtype)))
                _write_finished(writer, pending, error, max_in_flight)
                done += chunk.nbytes
                if progress:
                    progress(done, total, info.name)
            _write_finished(writer, pending, error, 0)
            stored = writer.bytes_written - start_offset
            original = dtypes.nbytes(info.dtype, info.shape)
            writer.end_tensor({
                "digest": digest.hexdigest(), "original_bytes": original, "stored_bytes": stored,
                "lossless": lossless, "stats": error.to_dict() if error else None,
            })
            stats.tensors.append(TensorStats(
                info.name, info.dtype, list(info.shape), choice.strategy, choice.reason,
                original, stored, lossless, error.to_dict() if error else None,
                time.perf_counter() - tensor_started,
            ))
    writer.finish()
    out.flush()
    stats.stored_bytes = writer.bytes_written
    return stats


def _smallest_on_first_chunk(choice: Choice, source: CheckpointSource, info: TensorInfo, rows: int) -> Choice:
    """Pick, among a choice's candidates, the one whose payload is smallest on the first chunk."""
    if rows == 0:
        return choice.candidates[0]
    chunk = source.read(info.name, 0, rows)
    sizes = []
    for candidate in choice.candidates:
        payload, meta = registry.get(candidate.strategy).encode(chunk, candidate.config)
        sizes.append(len(payload) + len(str(meta)))
    best = choice.candidates[sizes.index(min(sizes))]
    return Choice(best.strategy, best.config, best.config_dict, f"{best.reason} (on the first chunk)")


def _write_finished(writer: ContainerWriter, pending: deque, error: ErrorStats | None, keep: int) -> None:
    """Write encoded chunks in order until at most ``keep`` are still in flight."""
    while len(pending) > keep:
        row_start, row_stop, future = pending.popleft()
        payload, meta, chunk_error = future.result()
        writer.write_chunk(row_start, row_stop, meta, payload)
        if chunk_error is not None:
            error.merge(chunk_error)


def _check_chunk(chunk: np.ndarray, info: TensorInfo) -> None:
    expected = dtypes.get(info.dtype).numpy
    if chunk.dtype != expected:
        raise BadInputError(f"tensor {info.name!r}: source gave {chunk.dtype}, expected {expected}")


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


def _decoded_in_order(reader: ContainerReader, entries: list[TensorEntry], bits: int | None, threads: int):
    """``(entry, array)`` for every chunk in file order, decoded ``threads`` at a time
    (decoders release the GIL) with at most ``2 x threads`` chunks held."""
    jobs = ((entry, number) for entry in entries for number in range(len(entry.chunks)))
    if threads <= 1:
        for entry, number in jobs:
            yield entry, reader.decode_chunk(entry, number, bits)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bie-decode") as pool:
        pending: deque = deque()
        for entry, number in jobs:
            pending.append((entry, pool.submit(reader.decode_chunk, entry, number, bits)))
            if len(pending) > 2 * threads:
                done_entry, future = pending.popleft()
                yield done_entry, future.result()
        while pending:
            done_entry, future = pending.popleft()
            yield done_entry, future.result()


def _checked_chunks(reader: ContainerReader, entries: list[TensorEntry], bits: int | None = None,
                    threads: int = 1) -> Iterator[tuple[str, np.ndarray]]:
    """Decoded chunks in order; each lossless tensor's bytes are checked against its digest."""
    digests = {entry.id: spec.new_digest() for entry in entries}
    remaining = {entry.id: len(entry.chunks) for entry in entries}
    for entry in entries:  # tensors without chunks are complete already
        if not entry.chunks:
            _check_digest(entry, digests.pop(entry.id))
    for entry, array in _decoded_in_order(reader, [e for e in entries if e.chunks], bits, threads):
        digests[entry.id].update(np.ascontiguousarray(array).view(np.uint8).reshape(-1))
        yield entry.name, array
        remaining[entry.id] -= 1
        if remaining[entry.id] == 0:
            _check_digest(entry, digests.pop(entry.id))


def _check_digest(entry: TensorEntry, digest) -> None:
    if _lossless(entry) and digest.hexdigest() != entry.digest:
        raise CorruptContainerError(f"tensor {entry.name!r}: decoded bytes do not match the stored digest")


def _lossless(entry: TensorEntry) -> bool:
    return entry.lossless if entry.lossless is not None else registry.get(entry.strategy).lossless


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
        raise BadInputError("--threads must be at least 1")
    output_format = formats.format_for_output(dst, format)
    writer_module = formats.module(output_format)
    if output_format == "onnx":
        # the external data file is named after the final model file, not the temporary one
        format_options.setdefault("final_path", dst)
    check_output_path(dst, [src], force)
    started = time.perf_counter()
    wanted = set(tensors) if tensors else None
    if src == STDIO:
        decoder = StreamDecoder(sys.stdin.buffer)
        infos = _manifest(decoder.header)
        selected = _select(infos, wanted, src)
        names = {info.name for info in selected}
        stream = decoder.chunks(bits=bits)
        chunks = ((entry.name, array) for entry, _, _, array in stream if entry.name in names)
        header, blobs = decoder.header, decoder.blobs
        drain = stream
    else:
        reader = ContainerReader(src)
        infos = [TensorInfo(e.name, e.dtype, e.shape) for e in reader.entries]
        selected = _select(infos, wanted, src)
        entries = [reader.entry(info.name) for info in selected]
        chunks = _checked_chunks(reader, entries, bits, threads)
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

    try:
        with atomic_output(dst) as temporary:
            writer_module.write(temporary, selected, counted(), metadata, blobs, **format_options)
            if drain is not None:
                # finish reading the stream: a truncated or corrupt tail must fail the run
                for _ in drain:
                    pass
    finally:
        if src != STDIO:
            reader.close()
    return DecompressStats(src, dst, output_format, len(selected), total, time.perf_counter() - started)


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
) -> VerifyReport:
    """Check every record's checksum, decode every tensor, and (``against``) compare with the source.

    Lossless tensors must decode to their stored digest and, with a source,
    equal it bit for bit. Lossy tensors' error is recomputed against the
    source; it must match the stored figure and stay within ``max_error``
    (relative MSE) when given, or else the bound a ``--max-error`` plan stored in the
    header. Never raises for problems it can attribute: it
    reports them, so one run names every bad tensor and chunk.
    """
    path = os.fspath(container)
    report = VerifyReport(path, os.fspath(against) if against is not None else None)
    reader = ContainerReader(path)  # a broken trailer/index is fatal: raises CorruptContainerError
    if max_error is None:
        # a container planned with --max-error promises that bound for every tensor: check it
        planned = ((reader.header.get("options") or {}).get("auto") or {}).get("max_error")
        if isinstance(planned, (int, float)) and not isinstance(planned, bool):
            max_error = float(planned)
    source = formats.open_checkpoint(os.fspath(against)) if against is not None else None
    try:
        chunk_owner = {ref.offset: (entry, number) for entry in reader.entries for number, ref in enumerate(entry.chunks)}
        bad_chunks: dict[int, set[int]] = {}
        _scan_all_records(reader, chunk_owner, bad_chunks, report)
        source_names = {info.name: info for info in source.tensors} if source else {}
        total = sum(e.original_bytes or 0 for e in reader.entries)
        done = 0
        for entry in reader.entries:
            check = TensorCheck(entry.name, entry.strategy, _lossless(entry))
            report.tensors.append(check)
            if entry.id in bad_chunks:
                numbers = ", ".join(str(n) for n in sorted(bad_chunks[entry.id]))
                check.status, check.detail = "corrupt", f"chunk {numbers}: checksum mismatch"
                continue
            info = source_names.get(entry.name)
            if source is not None and info is None:
                check.status, check.detail = "extra", "not in the source checkpoint"
            elif info is not None and (info.dtype, info.shape) != (entry.dtype, entry.shape):
                check.status = "mismatch"
                check.detail = f"source is {info.dtype}{list(info.shape)}, container {entry.dtype}{list(entry.shape)}"
                continue
            try:
                _verify_tensor(reader, entry, check, source if info is not None else None, max_error)
            except CorruptContainerError as exc:
                check.status, check.detail = "corrupt", str(exc)
            done += entry.original_bytes or 0
            if progress:
                progress(done, total, entry.name)
        if source is not None:
            for name in source_names:
                if name not in reader:
                    report.tensors.append(TensorCheck(name, "", False, "missing", "in the source, not in the container"))
    finally:
        reader.close()
        if source is not None:
            source.close()
    return report


def _scan_all_records(reader: ContainerReader, chunk_owner, bad_chunks, report: VerifyReport) -> None:
    """Walk every record front to back; checksum failures are reported, not raised, where the
    record header (and so the length) is intact, so the walk continues past a bad payload."""
    with open(reader.path, "rb") as handle:
        offset = spec.FILE_HEADER.size
        handle.seek(offset)
        end = reader.file_length - spec.TRAILER.size
        while offset < end:
            head = handle.read(spec.RECORD_HEADER.size)
            try:
                _, _, length, checksum = parse_record_header(head, offset, end - offset)
            except CorruptContainerError as exc:
                report.problems.append(str(exc))
                return
            body_ok = _checksum_stream(handle, length) == checksum
            if not body_ok:
                owner = chunk_owner.get(offset)
                if owner is not None:
                    entry, number = owner
                    bad_chunks.setdefault(entry.id, set()).add(number)
                else:
                    report.problems.append(f"corrupt container at byte {offset}: record checksum mismatch")
            offset += spec.RECORD_HEADER.size + length
        if offset != end:
            report.problems.append(f"corrupt container: records end at byte {offset}, index says {end}")


def _checksum_stream(handle, length: int) -> int:
    hasher = spec.new_body_hasher()
    remaining = length
    while remaining:
        block = handle.read(min(remaining, 8 << 20))
        if not block:
            break
        hasher.update(block)
        remaining -= len(block)
    return hasher.intdigest()


def _verify_tensor(reader, entry: TensorEntry, check: TensorCheck, source, max_error) -> None:
    decoded_digest = spec.new_digest()
    source_digest = spec.new_digest() if source is not None else None
    error = ErrorStats()
    first_difference = None
    for row_start, row_stop, array in reader.iter_chunks(entry):
        decoded_digest.update(np.ascontiguousarray(array).view(np.uint8).reshape(-1))
        if source is None:
            continue
        original = source.read(entry.name, row_start, row_stop)
        source_digest.update(np.ascontiguousarray(original).view(np.uint8).reshape(-1))
        if check.lossless:
            if first_difference is None and not _bytes_equal(original, array):
                first_difference = row_start + _first_differing_row(original, array)
        else:
            error.add(original, array)
    if check.lossless and decoded_digest.hexdigest() != entry.digest:
        raise CorruptContainerError("decoded bytes do not match the stored digest")
    if source is None:
        if not check.lossless and entry.stats:
            check.error = entry.stats
        return
    if source_digest.hexdigest() != entry.digest:
        check.status = "mismatch"
        check.detail = "the container was made from different data than this source"
        if first_difference is not None:
            check.detail += f" (first difference in row {first_difference})"
        return
    if check.lossless:
        check.detail = "bit-exact"
        return
    check.error = error.to_dict()
    stored = entry.stats or {}
    stored_mse = stored.get("relative_mse")
    if stored_mse is not None and not np.isclose(error.relative_mse, stored_mse, rtol=1e-6, atol=1e-12):
        check.status = "mismatch"
        check.detail = f"relative MSE {error.relative_mse:.3g} differs from the stored {stored_mse:.3g}"
    elif max_error is not None and error.relative_mse > max_error:
        check.status = "mismatch"
        check.detail = f"relative MSE {error.relative_mse:.3g} exceeds --max-error {max_error:g}"
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

