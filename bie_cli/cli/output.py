"""Shared terminal output: JSON to stdout, progress and tables to stderr/stdout."""

from __future__ import annotations

import contextlib
import json
import math
import sys


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def human_bytes(count: int | float) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def stderr_line(text: str) -> None:
    """One line of plain text on stderr (a command's summary): what a rich Console prints for
    it, without importing rich (~0.1 s of a small command's start-up)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class PlainLines:
    """``Console.print`` for lines whose only markup is ``[red]``/``[green]`` (verify's verdicts),
    written as plain text: what rich prints to a pipe, without importing rich."""

    _MARKUP = ("[red]", "[/red]", "[green]", "[/green]")

    def __init__(self, stream) -> None:
        self.stream = stream

    def print(self, text: str) -> None:
        for tag in self._MARKUP:
            text = text.replace(tag, "")
        self.stream.write(text + "\n")
        self.stream.flush()


def stdout_console():
    from rich.console import Console

    # Piped output (CI logs, grep) should not be cut at 80 columns.
    width = None if sys.stdout.isatty() else 240
    return Console(highlight=False, soft_wrap=False, width=width)


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 240)


@contextlib.contextmanager
def progress_bar(description: str, quiet: bool):
    """Yield a progress callback (done, total, name); a rich bar on stderr only when it is a terminal."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[tensor]}", style="dim"),
        console=stderr_console(), transient=True,
    ) as progress:
        task = progress.add_task(description, total=None, tensor="")

        def update(done: int, total: int, name: str) -> None:
            progress.update(task, completed=done, total=total, tensor=name[-40:])

        yield update


def format_error(stats: dict | None) -> str:
    if not stats:
        return "exact"
    mse = stats.get("relative_mse")
    snr = stats.get("snr_db")
    if mse is None:
        return "n/a"
    return f"rMSE {mse:.2e}" + (f", {snr:.1f} dB" if snr is not None else "")
