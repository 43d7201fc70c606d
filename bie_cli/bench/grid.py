"""The Bit-Index Encoding benchmark grid, measured from stored bytes.

For every matrix size and sparsity, a Gaussian matrix (deterministic seed,
N(0, 0.02²) float32) is magnitude-pruned: the ``round(s·n)`` smallest
magnitudes are set to zero. Then:

* every bie method is run through :func:`bie_cli.compress_model` on a
  safetensors file of the matrix; ``stored_bytes`` is the size of the
  ``.cai`` file (header, index and trailer included) and the matrix is read
  back through :func:`bie_cli.open_container`. Encode time is the median wall
  time of ``compress_model``; decode time the median of opening the container
  and reading the tensor. ``bie-bitplane-8@4`` reads the 8-bit file at
  ``bits=4``: its bytes are the file minus the plane bytes that read skips.
* baselines are serialised in memory and their byte counts are those of the
  arrays that make them up (FP32/FP16 dense, scipy CSR and COO with their
  int32 index arrays, int8/int4 per-row symmetric quantization with f32
  scales, and a hybrid: CSR structure plus int8 values and per-row scales).

Errors are relative MSE (sum of squared errors over sum of squares) and the
largest absolute error. Peak memory is the tracemalloc peak of one
encode + decode (numpy and Python allocations; buffers allocated inside numba
kernels are not traced). The entropy bound of the positions is H(p)·n bits
for p = nonzeros / n; with exact FP32 values it adds 32 bits per nonzero, with
sign-only values one bit.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_SIZES = [(256, 256), (512, 512), (1024, 1024), (2048, 1024)]
LARGE_SIZE = (4096, 4096)
DEFAULT_SPARSITIES = [0.0, 30.0, 50.0, 90.0, 95.0, 99.0]
WEIGHT_SCALE = 0.02

#: name -> strategy spec (bie methods, each through a real .cai file)
BIE_METHODS: dict[str, str] = {
    "sdr": "sdr",
    "sdr-fp16": "sdr:values=fp16",
    "sdr-int8": "sdr:values=int8",
    "sdr-int4": "sdr:values=int4",
    "bie-blocked": "bie-blocked",
    "bie-blocked-int8": "bie-blocked:values=int8",
    "bie-binary": "bie-binary",
    "bie-bitplane-8": "bie-bitplane:bits=8",
    "bie-bitplane-8@4": "bie-bitplane:bits=8",  # the same file, read at bits=4
    "bie-bitplane-4": "bie-bitplane:bits=4",
    "zstd": "zstd",
    "quant-int8": "quant:bits=8,granularity=channel",
    "quant-int4": "quant:bits=4",
}
BASELINES = ("fp32", "fp16", "csr", "coo", "int8", "int4", "hybrid-int8")
PROGRESSIVE_READS = {"bie-bitplane-8@4": 4}


@dataclass
class Result:
    rows: int
    cols: int
    sparsity: float
    density: float
    method: str
    kind: str  # bie | baseline
    lossless: bool
    stored_bytes: int
    bits_per_element: float
    ratio: float  # FP32 bytes / stored bytes
    encode_seconds: float
    decode_seconds: float
    relative_mse: float
    max_abs_error: float
    peak_mib: float
    bound_positions_bpe: float  # H(p)
    bound_exact_bpe: float  # H(p) + 32 p
    bound_sign_bpe: float  # H(p) + p

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GridConfig:
    sizes: list[tuple[int, int]] = field(default_factory=lambda: list(DEFAULT_SIZES))
    sparsities: list[float] = field(default_factory=lambda: list(DEFAULT_SPARSITIES))
    methods: list[str] = field(default_factory=lambda: [*BIE_METHODS, *BASELINES])
    repeats: int = 3
    seed: int = 0
    memory: bool = True


def entropy(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def pruned_gaussian(rows: int, cols: int, sparsity: float, seed: int) -> np.ndarray:
    """N(0, 0.02²) float32 with the ``round(sparsity/100 · n)`` smallest magnitudes set to zero."""
    rng = np.random.default_rng([seed, rows, cols, round(sparsity * 100)])
    w = (rng.standard_normal((rows, cols)) * WEIGHT_SCALE).astype(np.float32)
    drop = round(sparsity / 100 * w.size)
    if drop:
        order = np.argsort(np.abs(w).reshape(-1), kind="stable")
        w.reshape(-1)[order[:drop]] = 0.0
    return w


def magnitude_prune(w: np.ndarray, sparsity: float) -> np.ndarray:
    """A copy of ``w`` with the ``round(sparsity/100 · n)`` smallest magnitudes zeroed."""
    out = np.array(w, dtype=np.float32, copy=True)
    drop = round(sparsity / 100 * out.size)
    if drop:
        order = np.argsort(np.abs(out).reshape(-1), kind="stable")
        out.reshape(-1)[order[:drop]] = 0.0
    return out


def _median_time(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _peak_mib(function: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def _errors(reference: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    from ..metrics import ErrorStats

    stats = ErrorStats()
    stats.add(reference, decoded)
    return stats.relative_mse, stats.max_abs_error


# -- bie methods ----------------------------------------------------------------------
def skipped_plane_bytes(path: str, name: str, bits: int) -> int:
    """Bytes of a bie-bitplane tensor's payloads that a read at ``bits`` does not touch."""
    from ..formats.cai.reader import ContainerReader
    from ..strategies.bie_bitplane import bytes_for_bits

    skipped = 0
    with ContainerReader(path) as reader:
        entry = reader.entry(name)
        if entry.strategy != "bie-bitplane":  # e.g. a small tensor the planner kept lossless
            return 0
        for number in range(entry.chunk_count):
            payload = reader.read_chunk(entry, number).payload
            skipped += len(payload) - bytes_for_bits(payload, bits)
            del payload
    return skipped


def run_bie(method: str, matrix: np.ndarray, workdir: str, repeats: int, memory: bool) -> dict:
    import bie_cli

    source = os.path.join(workdir, "matrix.safetensors")
    target = os.path.join(workdir, f"{method.replace('@', '_at_')}.cai")
    spec = BIE_METHODS[method]
    bits = PROGRESSIVE_READS.get(method)

    def encode():
        return bie_cli.compress_model(source, target, strategy=spec, force=True)

    def decode():
        with bie_cli.open_container(target, bits=bits) as container:
            return container["w"]

    encode_seconds, stats = _median_time(encode, repeats)
    decode_seconds, decoded = _median_time(decode, repeats)
    stored = os.path.getsize(target)
    if bits is not None:
        stored -= skipped_plane_bytes(target, "w", bits)
    peak = _peak_mib(lambda: (encode(), decode())) if memory else math.nan
    lossless = bool(stats.tensors[0].lossless) and bits is None
    return {"stored": stored, "encode": encode_seconds, "decode": decode_seconds, "decoded": decoded,
            "lossless": lossless, "peak": peak}


# -- baselines --------------------------------------------------------------------------
def _quantize_rows(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    top = (1 << (bits - 1)) - 1
    scale = (np.abs(w).max(axis=1) / top).astype(np.float32)
    inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    codes = np.clip(np.rint(w * inv[:, None]), -top, top).astype(np.int8)
    return codes, scale


def _baseline(method: str, w: np.ndarray):
    """(encode() -> representation, nbytes(representation), decode(representation) -> dense)."""
    import scipy.sparse as sp

    if method == "fp32":
        return (lambda: w.copy()), (lambda r: r.nbytes), (lambda r: r.copy())
    if method == "fp16":
        return (lambda: w.astype(np.float16)), (lambda r: r.nbytes), (lambda r: r.astype(np.float32))
    if method == "csr":
        return (lambda: sp.csr_matrix(w)), (lambda r: r.data.nbytes + r.indices.nbytes + r.indptr.nbytes), (lambda r: r.toarray())
    if method == "coo":
        return (lambda: sp.coo_matrix(w)), (lambda r: r.data.nbytes + r.row.nbytes + r.col.nbytes), (lambda r: r.toarray())
    if method in ("int8", "int4"):
        bits = 8 if method == "int8" else 4

        def encode():
            codes, scale = _quantize_rows(w, bits)
            if bits == 4:  # two codes a byte
                flat = (codes.reshape(-1) + 8).astype(np.uint8)
                flat = np.concatenate([flat, np.zeros(flat.size % 2, np.uint8)])
                return flat[0::2] | (flat[1::2] << 4), scale
            return codes, scale

        def decode(rep):
            packed, scale = rep
            if bits == 4:
                codes = np.empty(packed.size * 2, np.int16)
                codes[0::2], codes[1::2] = packed & 15, packed >> 4
                codes = (codes[: w.size] - 8).reshape(w.shape)
            else:
                codes = packed
            return codes.astype(np.float32) * scale[:, None]

        return encode, (lambda r: r[0].nbytes + r[1].nbytes), decode
    if method == "hybrid-int8":
        def encode():
            csr = sp.csr_matrix(w)
            codes, scale = _quantize_rows(w, 8)
            return csr.indices, csr.indptr, codes[w != 0], scale

        def decode(rep):
            indices, indptr, codes, scale = rep
            counts = np.diff(indptr)
            rows = np.repeat(np.arange(w.shape[0]), counts)
            out = np.zeros(w.shape, np.float32)
            out[rows, indices] = codes.astype(np.float32) * scale[rows]
            return out

        return encode, (lambda r: sum(a.nbytes for a in r)), decode
    raise ValueError(f"unknown baseline {method!r}")


def run_baseline(method: str, w: np.ndarray, repeats: int, memory: bool) -> dict:
    encode, nbytes, decode = _baseline(method, w)
    encode_seconds, rep = _median_time(encode, repeats)
    decode_seconds, decoded = _median_time(lambda: decode(rep), repeats)
    peak = _peak_mib(lambda: decode(encode())) if memory else math.nan
    return {"stored": int(nbytes(rep)), "encode": encode_seconds, "decode": decode_seconds,
            "decoded": decoded, "lossless": method in ("fp32", "csr", "coo"), "peak": peak}


# -- the grid ---------------------------------------------------------------------------
def check_methods(methods: Iterable[str]) -> list[str]:
    from ..errors import BadInputError

    methods = list(methods)
    unknown = [m for m in methods if m not in BIE_METHODS and m not in BASELINES]
    if unknown:
        raise BadInputError(
            f"unknown bench method {unknown[0]!r}; known: {', '.join([*BIE_METHODS, *BASELINES])}"
        )
    return methods


def run_grid(config: GridConfig, progress: Callable[[str], None] | None = None) -> list[Result]:
    """Run every (size, sparsity, method) cell; results in that order."""
    from safetensors.numpy import save_file

    methods = check_methods(config.methods)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bie-bench-") as workdir:
        for rows, cols in config.sizes:
            for sparsity in config.sparsities:
                w = pruned_gaussian(rows, cols, sparsity, config.seed)
                n = w.size
                p = np.count_nonzero(w) / n if n else 0.0
                h = entropy(p)
                if any(m in BIE_METHODS for m in methods):
                    save_file({"w": w}, os.path.join(workdir, "matrix.safetensors"))
                for method in methods:
                    if progress:
                        progress(f"{rows}x{cols} sparsity {sparsity:g}% {method}")
                    if method in BIE_METHODS:
                        out = run_bie(method, w, workdir, config.repeats, config.memory)
                    else:
                        out = run_baseline(method, w, config.repeats, config.memory)
                    rel_mse, max_abs = _errors(w, out["decoded"])
                    results.append(Result(
                        rows, cols, sparsity, p, method, "bie" if method in BIE_METHODS else "baseline",
                        out["lossless"], out["stored"], out["stored"] * 8 / n, w.nbytes / out["stored"],
                        out["encode"], out["decode"], rel_mse, max_abs, out["peak"], h, h + 32 * p, h + p,
                    ))
    return results
