"""A >2 GB ONNX model with external data: compress, decompress, check; peak memory of each step.

Run: ``python -m bench.bench_onnx_large [--layers 9] [--size 8192] [--keep DIR]``

Builds a chain of ``--layers`` MatMul + Tanh layers with [size, size] F32
weights (9 x 256 MiB = 2.25 GiB by default) whose data is written straight
into one external data file, so building it never holds more than one
chunk. Each bie step runs as its own ``python -m bie_cli`` process and its
peak RSS is read with ``resource.getrusage(RUSAGE_CHILDREN)`` after it
exits. The rebuilt model is checked with ``onnx.checker`` and ONNX Runtime
must give bit-identical outputs on a fixed input. Writes the ``onnx-large``
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import machine_line, markdown_table, update_section

REPO = Path(__file__).resolve().parent.parent
CHUNK_ROWS = 1024


def build_model(directory: Path, layers: int, size: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(1)
    initializers, nodes = [], []
    offset = 0
    with open(directory / "weights.bin", "wb") as data:
        for layer in range(layers):
            name = f"layer{layer}.weight"
            for start in range(0, size, CHUNK_ROWS):
                rows = min(CHUNK_ROWS, size - start)
                block = rng.standard_normal((rows, size), dtype=np.float32) / np.float32(np.sqrt(size))
                data.write(block.tobytes())
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[size, size])
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(size * size * 4))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += size * size * 4
            initializers.append(tensor)
            previous = "x" if layer == 0 else f"h{layer - 1}"
            nodes += [helper.make_node("MatMul", [previous, name], [f"m{layer}"]),
                      helper.make_node("Tanh", [f"m{layer}"], [f"h{layer}"])]
    graph = helper.make_graph(
        nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
        [helper.make_tensor_value_info(f"h{layers - 1}", TensorProto.FLOAT, [1, size])], initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bie-bench")
    path = directory / "large.onnx"
    onnx.save_model(model, str(path))  # tensors already external: the .onnx is a few KB
    return path


def _anon_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(args: list[str]) -> tuple[float, float, float]:
    """Run a command; (seconds, peak RSS MiB, peak anonymous RSS MiB) of that process alone.

    Peak RSS (``wait4`` rusage) counts the pages of memory-mapped files the
    process touched: the container reader maps the .cai, so reading a 2 GB
    container shows ~2 GB there although the kernel can drop those pages at
    any time. Anonymous RSS (heap, buffers; sampled from /proc every 10 ms)
    is the memory the process actually holds.
    """
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_anon = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, _anon_kib(process.pid))
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024, peak_anon / 1024


def outputs(path: Path, size: int) -> bytes:
    code = (
        "import sys, numpy as np, onnxruntime as ort\n"
        "session = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        f"x = np.random.default_rng(2).standard_normal((1, {size}), dtype=np.float32)\n"
        "sys.stdout.buffer.write(session.run(None, {'x': x})[0].tobytes())\n"
    )
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--keep", help="work in this directory and keep the files")
    parser.add_argument("--no-report", action="store_true", help="print, do not update BENCHMARKS.md")
    options = parser.parse_args()

    work = Path(options.keep) if options.keep else Path(tempfile.mkdtemp(prefix="bie-onnx-large-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        model = build_model(work, options.layers, options.size)
        weights = (work / "weights.bin").stat().st_size
        print(f"built {weights / 2**30:.2f} GiB model in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        bie = [sys.executable, "-m", "bie_cli"]
        cai, rebuilt = work / "large.cai", work / "rebuilt.onnx"
        steps = [
            ("compress (zstd, 2 threads)", bie + ["compress", str(model), "-o", str(cai), "--strategy", "zstd", "--threads", "2", "--quiet", "--force"]),
            ("decompress to .onnx (external data)", bie + ["decompress", str(cai), "-o", str(rebuilt), "--quiet", "--force"]),
            ("verify --against the source", bie + ["verify", str(cai), "--against", str(model), "--quiet"]),
        ]
        rows = []
        for label, command in steps:
            seconds, peak, anon = run_measured(command)
            print(f"{label}: {seconds:.1f} s, peak RSS {peak:.0f} MiB, anonymous {anon:.0f} MiB", file=sys.stderr)
            rows.append([label, f"{seconds:.1f}", f"{peak:,.0f}", f"{anon:,.0f}"])
        import onnx

        onnx.checker.check_model(str(rebuilt))  # a path: the checker reads the data file itself
        data = work / "rebuilt.onnx.data"
        identical = outputs(model, options.size) == outputs(rebuilt, options.size)
        if not identical:
            raise SystemExit("ONNX Runtime outputs of the rebuilt model differ from the original")
        md = "\n".join([
            f"## ONNX model over 2 GB with external data ({options.layers} x [{options.size}, {options.size}] F32, "
            f"{weights / 2**30:.2f} GiB of weights)",
            "",
            f"Command: `python -m bench.bench_onnx_large --layers {options.layers} --size {options.size}`; "
            f"{machine_line()}. Each step is one `python -m bie_cli` process. Peak RSS (from `wait4`) "
            "includes the pages of the memory-mapped .cai a step reads (the kernel can drop them at any time); "
            "peak anonymous RSS (sampled from /proc every 10 ms) is the memory the step holds.",
            "",
            markdown_table(["step", "seconds", "peak RSS (MiB)", "peak anonymous RSS (MiB)"], rows),
            "",
            f"Container {cai.stat().st_size / 2**30:.2f} GiB; rebuilt model {rebuilt.stat().st_size:,} B + "
            f"data file {data.stat().st_size / 2**30:.2f} GiB; `onnx.checker` passes and ONNX Runtime outputs are "
            "bit-identical to the original's. The memory a step holds stays near the chunk size times chunks in "
            "flight, not the model size: weights are read from the external data file with pread and streamed "
            "back into one.",
        ])
        print(md)
        if not options.no_report:
            update_section("onnx-large", md)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
