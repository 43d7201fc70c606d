"""``bie compress SRC -o OUT.cai``"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    src: Annotated[str, typer.Argument(metavar="SRC", help="Checkpoint: .safetensors (file, index or sharded directory), .pt/.pth/.bin, .onnx; - reads safetensors from stdin.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Output .cai file, or - for stdout.")],
    strategy: Annotated[str, typer.Option("-s", "--strategy", help="Default strategy NAME[:key=value,...] (see `bie strategies`).")] = "",
    rule: Annotated[Optional[list[str]], typer.Option("-r", "--rule", help="Per-layer override GLOB=NAME[:key=value,...]; repeatable, first match wins.")] = None,
    policy: Annotated[Optional[Path], typer.Option("--policy", help="TOML policy file with a default strategy and [[rules]].")] = None,
    format: Annotated[Optional[str], typer.Option("--format", help="Source format: safetensors, pytorch or onnx (default: sniffed).")] = None,
    threads: Annotated[int, typer.Option("-j", "--threads", help="Encode chunks in parallel on N threads (or N processes with --executor processes).", min=1)] = 1,
    executor: Annotated[str, typer.Option("--executor", help="Where chunks are encoded: threads, processes, or dask (needs --scheduler and bie-cli[distributed]).")] = "threads",
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Dask scheduler address tcp://HOST:PORT; every worker must see SRC at the same path.")] = None,
    chunk_size: Annotated[str, typer.Option("--chunk-size", help="Target chunk size (bytes; K/M/G suffixes allowed).")] = "4M",
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite OUTPUT if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress or summary on stderr.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Write statistics as JSON to stdout.")] = False,
    target_bits: Annotated[Optional[float], typer.Option("--target-bits", help="Choose every tensor's strategy for this average bits per parameter of the whole file (see `bie plan`).")] = None,
    target_size: Annotated[Optional[str], typer.Option("--target-size", help="Choose every tensor's strategy for this file size: 12MB, 3000000, or 30% of the source's tensor bytes.")] = None,
    max_error: Annotated[Optional[float], typer.Option("--max-error", help="Choose per tensor the smallest strategy whose relative MSE is at most this (lossless where none is).")] = None,
    trellis: Annotated[Optional[bool], typer.Option("--trellis/--no-trellis", help="With a budget: measure trellis-coded candidates too (tcq: ~1 dB less error at equal rate; default on; no matmul kernels, so bie_cli.nn leaves those layers alone).")] = None,
    weighting: Annotated[Optional[str], typer.Option("--weighting", help="With a budget: how tensors' errors are weighed: auto (default: roles where Llama-style names are recognised, else tensor), tensor (an output head counts 2 x blocks), params, roles (tensor plus llama.cpp's k-quant prior: v/down projections of some layers x16), or a JSON file of per-tensor weights (calibrated sensitivities; docs/auto.md).")] = None,
) -> int:
    """Compress a checkpoint into a .cai container."""
    from ..errors import BadInputError
    from ..pipeline import compress_model
    from .output import human_bytes, print_json, progress_bar, stderr_line

    if json_output and output == "-":
        raise BadInputError("--json and -o - both want stdout; write the container to a file")
    from ..auto.budget import errors_in_cli_terms

    with progress_bar("compress", quiet) as progress, errors_in_cli_terms():
        stats = compress_model(
            src, output, strategy=strategy, rules=rule or (), policy=policy, threads=threads,
            chunk_size=parse_size(chunk_size), force=force, progress=progress, source_format=format,
            executor=executor, scheduler=scheduler,
            target_bits=target_bits, target_size=target_size, max_error=max_error, weighting=weighting,
            trellis=trellis,
        )
    if json_output:
        print_json(stats.to_dict())
    elif not quiet:
        rate = stats.original_bytes / stats.seconds / 1e6 if stats.seconds else 0.0
        stderr_line(
            f"{stats.source} -> {stats.output}: {len(stats.tensors)} tensors, "
            f"{human_bytes(stats.original_bytes)} -> {human_bytes(stats.stored_bytes)} "
            f"({stats.ratio:.3f}x) in {stats.seconds:.2f} s ({rate:.0f} MB/s)"
            + (f"; {stats.handoff['reused']} of {stats.handoff['chunks']} chunks from {stats.handoff['file']}"
               if stats.handoff else "")
        )
    return 0


def parse_size(text: str) -> int:
    from ..errors import BadInputError

    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned and cleaned[-1] in units else (cleaned, "")
    try:
        value = int(float(number) * units[unit])
    except ValueError:
        raise BadInputError(f"--chunk-size {text!r} is not a size like 4M or 1048576") from None
    if value < 1:
        raise BadInputError("--chunk-size must be positive")
    return value
