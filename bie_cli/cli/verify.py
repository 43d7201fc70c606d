"""``bie verify FILE.cai [--against SRC]`` — built to gate CI: the exit code is the verdict."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer


def command(
    container: Annotated[str, typer.Argument(metavar="FILE.cai", help="Container .cai file, or - to read it from stdin.")],
    against: Annotated[Optional[str], typer.Option("--against", help="Original checkpoint to compare every tensor with; - reads safetensors from stdin.")] = None,
    max_error: Annotated[Optional[float], typer.Option("--max-error", help="Fail lossy tensors whose relative MSE exceeds this.")] = None,
    threads: Annotated[int, typer.Option("-j", "--threads", help="Decode chunks in parallel on N threads.", min=1)] = 1,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only problems.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Write the report as JSON to stdout.")] = False,
) -> int:
    """Check every checksum and decode every tensor; with --against, compare each tensor with the original.

    Exit 0: all good. 1: a tensor differs from the original. 3: the container is corrupt.
    """
    from ..pipeline import verify_container
    from .output import PlainLines, format_error, print_json, progress_bar, stdout_console

    with progress_bar("verify", quiet or json_output) as progress:
        report = verify_container(container, against=against, max_error=max_error, progress=progress, threads=threads)
    if json_output:
        print_json(report.to_dict())
        return report.exit_code
    # -q prints a few plain lines: rich (~0.1 s to import) only for the table, or colours on a terminal
    console = PlainLines(sys.stdout) if quiet and not sys.stdout.isatty() else stdout_console()
    for problem in report.problems:
        console.print(f"[red]CORRUPT[/red] {problem}")
    bad = [t for t in report.tensors if t.status != "ok"]
    if not quiet:
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("status", "name", "strategy", "detail", "error"):
            table.add_column(column)
        for check in report.tensors:
            style = "green" if check.status == "ok" else "red"
            table.add_row(f"[{style}]{check.status.upper()}[/{style}]", check.name, check.strategy,
                          check.detail, format_error(check.error) if not check.lossless else "exact")
        console.print(table)
    else:
        for check in bad:
            console.print(f"{check.status.upper()} {check.name}: {check.detail}")
    verdict = {0: "[green]OK[/green]", 1: "[red]FAILED[/red]", 3: "[red]CORRUPT[/red]"}[report.exit_code]
    what = f"against {against}" if against else "self-consistency (checksums and digests)"
    console.print(f"{verdict}: {len(report.tensors) - len(bad)}/{len(report.tensors)} tensors pass, {what}")
    return report.exit_code
