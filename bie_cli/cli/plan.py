"""``bie plan SRC --target-bits B``: a dry run of the per-tensor choice ``compress`` would make."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    src: Annotated[str, typer.Argument(help="Checkpoint: .safetensors (file, index or sharded directory), .pt/.pth/.bin, .onnx.")],
    target_bits: Annotated[Optional[float], typer.Option("--target-bits", help="Average bits per parameter of the whole file.")] = None,
    target_size: Annotated[Optional[str], typer.Option("--target-size", help="Whole file size: 12MB, 3000000, or 30% of the source's tensor bytes.")] = None,
    max_error: Annotated[Optional[float], typer.Option("--max-error", help="Each tensor's relative MSE at most this (smallest strategy that meets it).")] = None,
    rule: Annotated[Optional[list[str]], typer.Option("-r", "--rule", help="Pin tensors: GLOB=NAME[:key=value,...]; repeatable, first match wins.")] = None,
    policy: Annotated[Optional[Path], typer.Option("--policy", help="TOML policy whose rules pin the tensors they match.")] = None,
    weighting: Annotated[str, typer.Option("--weighting", help="How tensors' errors are weighed: auto (default: roles where Llama-style names are recognised, else tensor), tensor (an output head counts 2 x blocks), params, roles (tensor plus llama.cpp's k-quant prior: v/down projections of some layers x16), or a JSON file of per-tensor weights (docs/auto.md).")] = "auto",
    trellis: Annotated[bool, typer.Option("--trellis/--no-trellis", help="Measure trellis-coded candidates too (tcq: ~1 dB less error at equal rate; default on; no matmul kernels, so bie_cli.nn leaves those layers alone).")] = True,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Write the plan as a TOML policy for `bie compress --policy`.")] = None,
    encodes: Annotated[bool, typer.Option("--encodes/--no-encodes", help="With -o, also write the chunks the plan encoded to OUTPUT.encoded (about the compressed model's size), which `bie compress --policy OUTPUT` writes instead of encoding them again (checked against the source; default on).")] = True,
    threads: Annotated[int, typer.Option("-j", "--threads", help="Measure on N threads.", min=1)] = 1,
    chunk_size: Annotated[str, typer.Option("--chunk-size", help="Chunk size compress will use (bytes; K/M/G suffixes).")] = "4M",
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite OUTPUT if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress or table on stderr/stdout.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Write the plan as JSON to stdout.")] = False,
) -> int:
    """Print, per tensor, the strategy a budget chooses with its predicted bits and error and its
    exact bits (size budgets leave the whole tensor's error to compress, which stores it)."""
    from ..auto.budget import errors_in_cli_terms
    from ..auto.planner import plan_checkpoint
    from .compress import parse_size
    from .output import human_bytes, print_json, progress_bar, stderr_line, stdout_console

    with progress_bar("plan", quiet or json_output) as progress, errors_in_cli_terms():
        plan = plan_checkpoint(
            src, target_bits=target_bits, target_size=target_size, max_error=max_error, rules=rule or (),
            policy=policy, weighting=weighting, threads=threads, chunk_size=parse_size(chunk_size),
            output=output, force=force, progress=progress, trellis=trellis, handoff=encodes,
        )
    if plan.handoff_warning:
        stderr_line(f"warning: {plan.handoff_warning}")
    if json_output:
        print_json(plan.to_dict())
        return 0
    if quiet:
        return 0
    from rich.table import Table

    console = stdout_console()
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (("name", "left"), ("shape", "left"), ("strategy", "left"), ("bits", "right"),
                            ("rel MSE", "right"), ("predicted", "right")):
        table.add_column(column, justify=justify)
    for tensor in plan.tensors:
        row = tensor.to_dict()
        table.add_row(
            row["name"], "x".join(map(str, row["shape"])) or "scalar", row["strategy"], f"{row['bits']:.3f}",
            "lossless" if row["lossless"] else "-" if row["relative_mse"] is None else f"{row['relative_mse']:.3g}",
            "-" if not row["auto"] else f"{row['predicted_bits']:.3f} b, {row['predicted_relative_mse']:.3g}",
        )
    console.print(table)
    console.print(
        f"{plan.budget.describe()}: {len(plan.tensors)} tensors, predicted {human_bytes(plan.file_bytes)} "
        f"({plan.bits_per_parameter:.4f} bits/param)" + (f" -> {output}" if output else "")
        + (f" (and {plan.handoff_path}, {human_bytes(plan.handoff_bytes)} of encodes for `bie compress --policy`; "
           "--no-encodes skips it)" if plan.handoff_bytes is not None else "")
    )
    return 0
