"""``bie inspect FILE.cai`` (``-``: stdin) — reads only the trailer, header and index (no torch, no numba)."""

from __future__ import annotations

from typing import Annotated

import typer


def command(
    container: Annotated[str, typer.Argument(metavar="FILE.cai", help="Container .cai file, or - to read it from stdin.")],
    json_output: Annotated[bool, typer.Option("--json", help="Write the summary and per-tensor table as JSON to stdout.")] = False,
    tensors: Annotated[bool, typer.Option("--tensors/--no-tensors", help="Show the per-tensor table.")] = True,
) -> int:
    """Summarise a container: source, sizes, ratio, strategies, and every tensor's choice and error."""
    from collections import Counter

    from ..formats.cai.reader import ContainerReader
    from ..paths import seekable_input
    from .output import format_error, human_bytes, print_json, stdout_console

    with seekable_input(container) as path, ContainerReader(path) as reader:
        header, entries, file_length = reader.header, reader.entries, reader.file_length
    original = sum(e.original_bytes or 0 for e in entries)
    source = header.get("source") or {}
    summary = {
        "container": container,
        "tool_version": header.get("tool_version"),
        "source_format": source.get("format"),
        "source_name": source.get("name"),
        "tensors": len(entries),
        "original_bytes": original,
        "stored_bytes": file_length,
        "ratio": original / file_length if file_length else 0.0,
        "strategies": dict(Counter(e.strategy for e in entries)),
        "options": header.get("options"),
    }
    rows = [
        {
            "name": e.name, "dtype": e.dtype, "shape": list(e.shape), "strategy": e.strategy,
            "config": e.config, "reason": e.rule, "lossless": e.lossless, "chunks": e.chunk_count,
            "original_bytes": e.original_bytes, "stored_bytes": e.stored_bytes,
            "ratio": (e.original_bytes / e.stored_bytes) if e.stored_bytes else None, "error": e.stats,
        }
        for e in entries
    ]
    if json_output:
        print_json({**summary, "tensor_table": rows})
        return 0
    from rich.table import Table

    console = stdout_console()
    strategies = ", ".join(f"{k} x{v}" for k, v in summary["strategies"].items()) or "-"
    console.print(
        f"[bold]{container}[/bold]  (bie {summary['tool_version']}, from {summary['source_format']} "
        f"{summary['source_name']})\n"
        f"{len(entries)} tensors, {human_bytes(original)} -> {human_bytes(file_length)} "
        f"([bold]{summary['ratio']:.3f}x[/bold]); strategies: {strategies}"
    )
    if tensors and rows:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column, justify in (("name", "left"), ("dtype", "left"), ("shape", "left"), ("strategy", "left"),
                                ("original", "right"), ("stored", "right"), ("ratio", "right"),
                                ("error", "left"), ("chosen by", "left")):
            table.add_column(column, justify=justify)
        for row in rows:
            table.add_row(
                row["name"], row["dtype"], "x".join(map(str, row["shape"])) or "scalar", row["strategy"],
                human_bytes(row["original_bytes"]), human_bytes(row["stored_bytes"]),
                f"{row['ratio']:.2f}x" if row["ratio"] else "-",
                format_error(row["error"]), row["reason"],
            )
        console.print(table)
    return 0
