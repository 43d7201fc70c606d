"""Rate and distortion of one configuration on one tensor, from real encodes.

Rate is the bytes the strategy really produces (payload plus its chunk
meta and framing), distortion the relative MSE of the decoded output
(:class:`bie_cli.metrics.ErrorStats`). Big tensors are measured on a sample
of rows spread over the tensor (blocks at even intervals, so an embedding
table's frequent and rare rows both count), the rate scaled up by rows;
the configuration finally chosen is then encoded on the whole tensor,
chunked exactly as ``compress`` will chunk it, so the figures stored in the
plan are the ones the container will hold.
"""

from __future__ import annotations

import functools
import json
import tempfile
import threading
from dataclasses import dataclass, field

import numpy as np

from ..formats.base import CheckpointSource, TensorInfo
from ..formats.cai import spec
from ..metrics import ErrorStats
from ..plan import Choice
from ..strategies import registry
from ..tensorcodec import rows_per_chunk, update_digest

#: tensors with at most this many elements are measured whole
SAMPLE_ELEMENTS = 1 << 15
#: bigger tensors: a sample of 1/SAMPLE_SHARE of their rows (at least SAMPLE_ELEMENTS elements)
SAMPLE_SHARE = 48
#: the sample is taken as this many blocks of consecutive rows, evenly spaced
SAMPLE_BLOCKS = 16
#: bytes around a chunk's payload besides its meta: record header, chunk prefix,
#: half the 64-byte alignment on average, and the chunk's (compressed) index entry
CHUNK_FRAMING = spec.RECORD_HEADER.size + spec.CHUNK_PREFIX.size + spec.ALIGNMENT // 2 + 20


def meta_bytes(meta: dict) -> int:
    """The stored length of a chunk's meta (its compact, key-sorted JSON); remembered per
    meta, since the curves size the same few metas thousands of times."""
    try:
        key = tuple(sorted(meta.items()))
        return _meta_lengths[key]
    except TypeError:  # a meta with a list or dict value
        return len(json.dumps(meta, sort_keys=True, separators=(",", ":")))
    except KeyError:
        length = _meta_lengths[key] = len(json.dumps(meta, sort_keys=True, separators=(",", ":")))
        return length


_meta_lengths: dict = {}


class PayloadSpool:
    """Payloads encoded while planning, kept in an anonymous temporary file (not in memory:
    a model's compressed bytes can be large) so ``compress --target-bits`` writes the chosen
    configurations' chunks without encoding them again. Thread-safe."""

    def __init__(self, errors: bool = True) -> None:
        #: whether the chunks kept here are decoded for their errors while planning (compress
        #: --target-bits writes those errors); without, the compress that takes them decodes them
        self.errors = errors
        self._file = tempfile.TemporaryFile(prefix="bie-plan-")
        self._lock = threading.Lock()
        self._end = 0

    def put(self, payload: bytes) -> int:
        with self._lock:
            offset = self._end
            self._file.seek(offset)
            self._file.write(payload)
            self._end += len(payload)
        return offset

    def get(self, offset: int, length: int) -> bytes:
        with self._lock:
            self._file.seek(offset)
            data = self._file.read(length)
        if len(data) != length:
            raise OSError("planning spool file truncated")
        return data

    def close(self) -> None:
        self._file.close()


@dataclass
class Encoded:
    """A configuration encoded on the whole tensor, chunk by chunk as ``compress`` does."""

    chunks: list[tuple[int, int, dict, int]]  # row_start, row_stop, meta, payload length
    error: ErrorStats | None  # None when lossless
    stored_bytes: int  # payloads + metas + framing
    digest: str = ""  # of the original bytes, as compress stores it (the index holds it)
    #: per chunk, where its payload is in the spool, its error (when the spool keeps errors) and
    #: the digest of the chunk's original bytes (when encoded with a spool)
    spooled: list[tuple[int, ErrorStats | None, str]] | None = None
    spool: PayloadSpool | None = None
    #: a lossy encode confirmed for its size only (a size budget): its error is left to the
    #: compress that writes it (kept here only when a spool hands the chunks on), and the
    #: plan goes on with the sample's figure
    sized_only: bool = False

    def stored_chunks(self):
        """``(row_start, row_stop, meta, payload, error)`` per chunk, read back from the spool."""
        for (start, stop, meta, length), (offset, error, _) in zip(self.chunks, self.spooled or (), strict=True):
            yield start, stop, meta, self.spool.get(offset, length), error

    @property
    def relative_mse(self) -> float:
        return self.error.relative_mse if self.error is not None else 0.0


@dataclass
class Point:
    """One candidate configuration's rate-distortion point on one tensor."""

    choice: Choice
    text: str
    stored_bytes: float  # predicted for the whole tensor
    relative_mse: float
    lossless: bool
    encoded: Encoded | None = None  # set when measured on the whole tensor
    #: (bytes, relative MSE) as first predicted; ``stored_bytes``/``relative_mse`` become
    #: the whole tensor's figures once it is encoded whole
    predicted: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.predicted == (0.0, 0.0):
            self.predicted = (self.stored_bytes, self.relative_mse)

    def confirm(self, encoded: Encoded) -> None:
        self.encoded = encoded
        self.stored_bytes = float(encoded.stored_bytes)
        if not encoded.sized_only:
            self.relative_mse = encoded.relative_mse

    @property
    def measured(self) -> bool:
        return self.encoded is not None


@dataclass
class TensorCurve:
    info: TensorInfo
    points: list[Point]
    sample_rows: int  # rows the points were measured on (== info.rows: whole tensor)
    pinned: bool = False  # one fixed choice (a user rule, or a tensor kept lossless)
    weight: float = 1.0
    hull: list[int] = field(default_factory=list)  # indices into points, rate ascending
    #: ``tcq`` ladder steps left for :func:`planner._refine` to measure where the allocation
    #: comes near them (a size budget measures every third step first)
    unmeasured: list[str] = field(default_factory=list)


def chunk_ranges(info: TensorInfo, chunk_size: int) -> list[tuple[int, int]]:
    if info.numel == 0:
        return []
    step = rows_per_chunk(info, chunk_size)
    return [(start, min(start + step, info.rows)) for start in range(0, info.rows, step)]


def sample_ranges(info: TensorInfo, chunk_size: int) -> list[tuple[int, int]] | None:
    """Row blocks to measure a big tensor on, or None to measure it whole."""
    if info.numel <= SAMPLE_ELEMENTS or info.rows < 2 * SAMPLE_BLOCKS:
        return None
    row_elements = info.numel // info.rows
    wanted = max(SAMPLE_ELEMENTS, info.numel // SAMPLE_SHARE)
    rows = -(-wanted // row_elements)
    # one chunk: the sample must not straddle the per-chunk scales of a tensor-wide grid
    rows = min(rows, rows_per_chunk(info, chunk_size))
    if 2 * rows >= info.rows:
        return None
    blocks = min(SAMPLE_BLOCKS, rows)
    per_block = -(-rows // blocks)
    starts = np.linspace(0, info.rows - per_block, blocks).astype(np.int64)
    return [(int(s), int(s) + per_block) for s in starts]


def encode_whole(source: CheckpointSource, info: TensorInfo, choice: Choice, chunk_size: int,
                 spool: PayloadSpool | None = None, pool=None) -> Encoded:
    """Encode the whole tensor as ``compress`` will; with a ``spool``, keep the payloads there.
    With a ``pool``, its chunks are encoded in parallel (the figures are the same: the chunks'
    errors and the digest are combined in chunk order)."""
    jobs = [(source, info, choice, start, stop, spool, True) for start, stop in chunk_ranges(info, chunk_size)]
    results = list(pool.map(_encode_chunk, jobs)) if pool is not None and len(jobs) > 1 else map(_encode_chunk, jobs)
    return _assemble(source, info, choice, jobs, results, spool)


def _encode_chunk(job) -> tuple[int, dict, int, ErrorStats | None, int, str]:
    """(payload length, meta, stored bytes, error or None, spool offset, chunk digest) of one
    chunk; the error (a decode and its comparison) only when ``errors`` is set or a spool keeps
    the chunk for the writer with its error; the digest of the chunk's bytes with a spool."""
    source, info, choice, start, stop, spool, errors = job
    strategy = registry.get(choice.strategy)
    chunk = source.read(info.name, start, stop)
    chunk_digest = chunk_digest_of(chunk) if spool is not None else ""  # before: encode may modify it
    payload, meta = strategy.encode(chunk, choice.config)
    chunk_error = None
    if (errors or (spool is not None and spool.errors)) and not strategy.is_lossless(choice.config):
        chunk_error = ErrorStats()
        chunk_error.add(chunk, strategy.decode(payload, meta, chunk.shape, info.dtype))
    offset = spool.put(payload) if spool is not None else -1
    return len(payload), meta, len(payload) + meta_bytes(meta) + CHUNK_FRAMING, chunk_error, offset, chunk_digest


def chunk_digest_of(chunk: np.ndarray) -> str:
    """The digest of one chunk's original bytes (the tensor digest's algorithm): what a plan's
    handed-on chunk is checked against before ``compress --policy`` writes it."""
    digest = spec.new_digest()
    update_digest(digest, chunk)
    return digest.hexdigest()


def _assemble(source, info: TensorInfo, choice: Choice, jobs, results, spool) -> Encoded:
    strategy = registry.get(choice.strategy)
    lossless = strategy.is_lossless(choice.config)
    sized_only = not lossless and not jobs[0][6] if jobs else False
    error = None if lossless or (sized_only and (spool is None or not spool.errors)) else ErrorStats()
    chunks, stored, spooled = [], 0, []
    # a plan's dry runs need no real digest; compress --target-bits takes the planner's
    digest = spec.new_digest() if spool is not None and spool.errors else None
    for (_, _, _, start, stop, _, _), (length, meta, size, chunk_error, offset, chunk_digest) in zip(jobs, results,
                                                                                                   strict=True):
        if digest is not None:
            update_digest(digest, source.read(info.name, start, stop))
        if error is not None:
            error.merge(chunk_error)
        if spool is not None:
            spooled.append((offset, chunk_error, chunk_digest))
        chunks.append((start, stop, meta, length))
        stored += size
    return Encoded(chunks, error, stored, digest.hexdigest() if digest is not None else "",
                   spooled if spool is not None else None, spool, sized_only)


def measure_point(sample: np.ndarray, info: TensorInfo, choice: Choice, text: str, chunks: int) -> Point:
    """Encode and decode ``sample`` (rows of the tensor); scale its bytes to the whole tensor."""
    strategy = registry.get(choice.strategy)
    payload, meta = strategy.encode(sample, choice.config)
    lossless = strategy.is_lossless(choice.config)
    relative_mse = 0.0
    if not lossless:
        decoded = strategy.decode(payload, meta, sample.shape, info.dtype)
        relative_mse = _relative_mse(sample, decoded)
    rows = sample.shape[0] if sample.ndim else 1
    predicted = len(payload) * info.rows / rows + chunks * (meta_bytes(meta) + CHUNK_FRAMING)
    return Point(choice, text, predicted, relative_mse, lossless)


_COMPILED_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _relative_mse(sample: np.ndarray, decoded: np.ndarray) -> float:
    """``ErrorStats``' relative MSE in one compiled pass (a sample's figure is a prediction:
    sequential float64 sums instead of numpy's pairwise ones change nothing that matters)."""
    if sample.dtype not in _COMPILED_FLOATS or decoded.dtype not in _COMPILED_FLOATS:  # bf16, f16, f8
        stats = ErrorStats()
        stats.add(sample, decoded)
        return stats.relative_mse
    sse, ssr = _ladder().squared_error(sample.reshape(-1), decoded.reshape(-1))
    if ssr == 0.0:
        return 0.0 if sse == 0.0 else float("inf")
    return sse / ssr


def read_sample(source: CheckpointSource, info: TensorInfo, ranges: list[tuple[int, int]]) -> np.ndarray:
    return np.concatenate([source.read(info.name, start, stop) for start, stop in ranges])


def ladder_points(sample: np.ndarray, info: TensorInfo, texts: list[str], chunks: int) -> list[Point] | None:
    """Every ``quant:bits=8,granularity=tensor,step=s`` candidate in ``texts`` on ``sample`` at
    once, from the codes' histograms (:mod:`._ladder_kernels`) instead of encodes and decodes;
    None where that shortcut does not apply (then :func:`measure_point` each).

    The error is the one a decode gives (same codes, same float32 products); the bytes are
    the payload's but for the rANS stream, taken as its estimate from the histogram
    (:func:`bie_cli.codecs.rans.fast_estimate_size`: the codes' entropy under their own
    frequencies plus table and states), within about 0.3% of the stream on MiniLM's samples
    (tests/test_auto.py checks 1%). The shortcut covers float32/float64 samples with finite
    values; bf16/f16 decodes round to their dtype, which the kernel does not model.
    """
    from ..codecs import rans
    from ..strategies import _quant_common as common
    from ..strategies import _quant_kernels as quant_kernels
    from . import candidates

    if info.dtype not in ("F32", "F64") or sample.size == 0:
        return None
    choices = [candidates.resolve(t) for t in texts]
    configs = [c.config for c in choices]
    if any(c.bits != 8 or not c.symmetric or c.granularity != "tensor" or c.step is None
           or c.scale_dtype != "auto" or c.entropy != "auto" for c in configs):
        return None
    rows = common.as_rows(sample)
    layout = common.layout_for(rows.shape[0], rows.shape[1], "tensor", configs[0].group_size)
    units = common.to_units(rows, layout)
    squares = quant_kernels.unit_squares(units)
    if not np.isfinite(squares).all():
        return None
    work = units.dtype
    rms = np.sqrt(squares / units.shape[1])
    # every step's scale at once (elementwise: the same float64 products and roundings as one
    # config at a time); the scale dtype per config only when some scale is not a normal f32
    raw = (rms[0] * np.array([config.step for config in configs], dtype=rms.dtype)).astype(work)
    if _normal_f32(raw):
        scale_dtypes = ["f32"] * len(configs)
    else:
        scale_dtypes = [common.choose_scale_dtype("auto", "tensor", raw[k:k + 1]) for k in range(len(configs))]
    scales = np.empty_like(raw)
    for name in set(scale_dtypes):
        mask = np.array([d == name for d in scale_dtypes])
        scales[mask] = common.round_scales(raw[mask], name, work)
    muls = np.divide(1.0, scales, out=np.zeros_like(scales), where=scales != 0)
    metas = [(d, np.dtype(common.SCALE_DTYPES[d]).itemsize) for d in scale_dtypes]
    levels = 256
    counts, exact, sse = _ladder().ladder_stats(
        units.reshape(-1), muls, np.full(len(configs), levels >> 1, dtype=work), scales, levels - 1,
        work == np.float32)
    reference = float(np.square(units.reshape(-1).astype(np.float64)).sum())
    packed = sample.size  # 8 bits a code
    n_rows = sample.shape[0] if sample.ndim else 1
    points = []
    for k, (choice, text) in enumerate(zip(choices, texts, strict=True)):
        stream = rans.fast_estimate_size(counts[k])
        kind, code_bytes = ("rans", stream) if stream < packed else ("packed", packed)
        scale_dtype, scale_size = metas[k]
        payload = scale_size + common.exact_section_size(int(exact[k]), info.dtype) + code_bytes
        meta = {"bits": 8, "symmetric": True, "granularity": "tensor", "group_size": layout.group_size,
                "scale_dtype": scale_dtype, "codes": kind}
        if exact[k]:
            meta["exact"] = int(exact[k])
        relative_mse = float(sse[k]) / reference if reference else (0.0 if sse[k] == 0 else float("inf"))
        predicted = payload * info.rows / n_rows + chunks * (meta_bytes(meta) + CHUNK_FRAMING)
        points.append(Point(choice, text, predicted, relative_mse, False))
    return points


def tcq_points(sample: np.ndarray, info: TensorInfo, texts: list[str], chunks: int) -> list[Point] | None:
    """Every ``tcq:step=s`` candidate in ``texts`` on ``sample`` from one Viterbi pass each
    (the codes, their histogram and the path's squared error, as the encoder finds them)
    instead of encodes and decodes; the rANS stream estimated from the histogram as in
    :func:`ladder_points`. The error is the path's, summed in float64 in units of the step
    (a decode's float32 products differ by rounding only). None where the shortcut does not
    apply (bf16/f16 samples, whose decode rounds to the dtype; non-finite values; options
    other than ``step``)."""
    from ..codecs import rans
    from ..strategies import _quant_common as common
    from ..strategies import _quant_kernels as quant_kernels
    from ..strategies import _tcq_kernels as tcq
    from ..strategies.tcq import TRELLIS_STATES
    from . import candidates

    if info.dtype not in ("F32", "F64") or sample.size == 0:
        return None
    choices = [candidates.resolve(t) for t in texts]
    if not all(_plain_tcq(t) for t in texts):
        return None
    rows = common.as_rows(sample)
    squares = quant_kernels.unit_squares(rows.reshape(1, -1))
    if not np.isfinite(squares).all():
        return None
    work = rows.dtype
    reference = float(np.square(rows.astype(np.float64)).sum())
    rms = np.sqrt(squares / rows.size)
    n_rows = sample.shape[0] if sample.ndim else 1
    # every step's grid at once (elementwise: the same products and roundings as one at a time)
    steps = common.round_scales(
        (rms[0] * np.array([c.config.step for c in choices], dtype=rms.dtype)).astype(work), "f32", work)
    muls = np.divide(1.0, steps, out=np.zeros_like(steps), where=steps != 0).astype(np.float64)
    points = []
    for k, (choice, text) in enumerate(zip(choices, texts, strict=True)):
        _, beyond, counts, errors = tcq.viterbi_codes(rows, np.full(rows.shape[0], muls[k]))
        stream = rans.fast_estimate_size(counts)
        kind, code_bytes = ("rans", stream) if stream < rows.size else ("packed", rows.size)
        n_exact = int(np.count_nonzero(beyond))
        payload = 4 + common.exact_section_size(n_exact, info.dtype) + code_bytes
        meta = {"granularity": "tensor", "group_size": rows.size, "trellis": TRELLIS_STATES,
                "scale_dtype": "f32", "codes": kind}
        if n_exact:
            meta["exact"] = n_exact
        sse = float(errors.sum()) * float(steps[k]) ** 2
        relative_mse = sse / reference if reference else (0.0 if sse == 0 else float("inf"))
        predicted = payload * info.rows / n_rows + chunks * (meta_bytes(meta) + CHUNK_FRAMING)
        points.append(Point(choice, text, predicted, relative_mse, False))
    return points


def group_points(sample: np.ndarray, info: TensorInfo, texts: list[str], chunks: int) -> list[Point] | None:
    """The symmetric group grids (``quant:bits=b,group_size=g``, no clip) in ``texts`` on
    ``sample`` from their codes' histograms, as :func:`ladder_points` does for the step
    ladder: the decode's exact error, the payload's bytes with the rANS stream estimated.
    None where the shortcut does not apply (dtype, non-finite values, rows that do not
    split into whole groups)."""
    from ..codecs import bitpack, rans
    from ..strategies import _quant_common as common
    from ..strategies import _quant_kernels as quant_kernels
    from . import candidates

    if info.dtype not in ("F32", "F64") or sample.size == 0:
        return None
    choices = [candidates.resolve(t) for t in texts]
    rows = common.as_rows(sample)
    points = []
    grouped: dict = {}  # group size -> (layout, units, low, high, squares): the grids of one size share them
    for choice, text in zip(choices, texts, strict=True):
        config = choice.config
        if (choice.strategy != "quant" or not config.symmetric or config.granularity != "group"
                or config.step is not None or config.clip != "none" or config.scale_dtype != "auto"
                or config.entropy != "auto"):
            return None
        if config.group_size not in grouped:
            layout = common.layout_for(rows.shape[0], rows.shape[1], "group", config.group_size)
            if layout.padded:
                return None
            units = common.to_units(rows, layout)
            low, high, squares = quant_kernels.unit_stats(units)
            if not np.isfinite(squares.sum()):
                return None
            grouped[config.group_size] = layout, units, low, high, squares
        layout, units, low, high, squares = grouped[config.group_size]
        work = units.dtype
        half = 1 << (config.bits - 1)
        extreme = np.where(-low > high, low, high)
        scale = (extreme / -half).astype(work)
        scale_dtype = common.choose_scale_dtype("auto", "group", scale)
        scale = common.round_scales(scale, scale_dtype, work)
        mul = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
        top = (1 << config.bits) - 1
        counts, sse = _ladder().group_stats(units, mul, scale, float(half), top, work == np.float32)
        reference = float(squares.sum())
        packed = bitpack.packed_size(sample.size, config.bits)
        stream = rans.fast_estimate_size(counts)
        kind, code_bytes = ("rans", stream) if stream < packed else ("packed", packed)
        payload = layout.count * np.dtype(common.SCALE_DTYPES[scale_dtype]).itemsize + code_bytes
        meta = {"bits": config.bits, "symmetric": True, "granularity": "group", "group_size": layout.group_size,
                "scale_dtype": scale_dtype, "codes": kind}
        relative_mse = float(sse) / reference if reference else (0.0 if sse == 0 else float("inf"))
        n_rows = sample.shape[0] if sample.ndim else 1
        predicted = payload * info.rows / n_rows + chunks * (meta_bytes(meta) + CHUNK_FRAMING)
        points.append(Point(choice, text, predicted, relative_mse, False))
    return points


@functools.cache
def _plain_tcq(text: str) -> bool:
    """Whether the candidate ``text`` is ``tcq`` with default options but ``step`` (cached: a
    typed config's construction and comparison, per candidate and tensor otherwise)."""
    from . import candidates

    config = candidates.resolve(text).config
    return config == type(registry.get("tcq").default_config())(step=config.step)


def _normal_f32(values: np.ndarray) -> bool:
    """Whether every nonzero value's magnitude is a normal float32 (then ``choose_scale_dtype``
    picks ``f32`` for a per-tensor scale)."""
    from ..strategies import _quant_common as common

    magnitudes = np.abs(values[values != 0])
    return magnitudes.size == 0 or bool(magnitudes.max() <= common._F32_MAX and magnitudes.min() >= common._F32_MIN_NORMAL)


def _ladder():
    from . import _ladder_kernels

    return _ladder_kernels
