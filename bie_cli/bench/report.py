"""Writers for the benchmark grid: CSV, PNG plots, and one self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from collections.abc import Sequence

from ..paths import write_file_atomically
from .grid import Result

CSV_NAME = "results.csv"
HTML_NAME = "report.html"
RATIO_PLOT = "ratio_vs_sparsity.png"
ERROR_PLOT = "error_vs_bits.png"


def write_csv(results: Sequence[Result], path: str) -> None:
    fields = list(Result.__dataclass_fields__)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    for result in results:
        writer.writerow(result.to_dict())
    write_file_atomically(path, text.getvalue())


def _largest(results: Sequence[Result]) -> tuple[int, int]:
    return max(((r.rows, r.cols) for r in results), key=lambda rc: (rc[0] * rc[1], rc))


def _plot_png(draw) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=100)
    axes.set_prop_cycle(color=plt.cm.tab20.colors)  # 20 distinct colours: one per method
    try:
        draw(axes)
        figure.tight_layout()
        buffer = io.BytesIO()
        # no timestamps in the file: identical results give identical PNG bytes
        figure.savefig(buffer, format="png", metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(figure)


def _label(axes, xlabel: str, ylabel: str, title: str) -> None:
    """Log y axis, labels, grid and legend: the look both plots share."""
    axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)


def ratio_plot(results: Sequence[Result]) -> bytes:
    rows, cols = _largest(results)
    cells = [r for r in results if (r.rows, r.cols) == (rows, cols)]

    def draw(axes):
        for method in dict.fromkeys(r.method for r in cells):
            points = sorted((r.sparsity, r.ratio) for r in cells if r.method == method)
            style = "-o" if any(r.kind == "bie" for r in cells if r.method == method) else "--x"
            axes.plot([p[0] for p in points], [p[1] for p in points], style, label=method, markersize=4)
        bound = sorted({(r.sparsity, 32 / r.bound_exact_bpe) for r in cells if r.bound_exact_bpe > 0})
        axes.plot([b[0] for b in bound], [b[1] for b in bound], "k:", label="bound (exact FP32 values)")
        _label(axes, "sparsity (%)", "compression ratio vs FP32 (stored bytes)",
               f"Ratio vs sparsity, {rows}x{cols} Gaussian, magnitude-pruned")

    return _plot_png(draw)


def error_plot(results: Sequence[Result]) -> bytes:
    rows, cols = _largest(results)
    cells = [r for r in results if (r.rows, r.cols) == (rows, cols) and r.relative_mse > 0]

    def draw(axes):
        for method in dict.fromkeys(r.method for r in cells):
            points = sorted((r.bits_per_element, r.relative_mse) for r in cells if r.method == method)
            axes.plot([p[0] for p in points], [p[1] for p in points], "o", label=method, markersize=4)
        axes.set_xscale("log")
        _label(axes, "stored bits per element", "relative MSE",
               f"Error vs bits, lossy methods, {rows}x{cols}, every sparsity")

    return _plot_png(draw)


def headline_rows(results: Sequence[Result]) -> tuple[list[float], list[list]]:
    """Bits per element of every method at every sparsity, for the largest size."""
    rows, cols = _largest(results)
    cells = [r for r in results if (r.rows, r.cols) == (rows, cols)]
    sparsities = sorted({r.sparsity for r in cells})
    table = []
    for method in dict.fromkeys(r.method for r in cells):
        line = [method]
        for s in sparsities:
            match = [r for r in cells if r.method == method and r.sparsity == s]
            line.append(match[0].bits_per_element if match else math.nan)
        table.append(line)
    for label, attribute in (("bound: positions H(p)", "bound_positions_bpe"),
                             ("bound: H(p) + exact FP32", "bound_exact_bpe"),
                             ("bound: H(p) + sign", "bound_sign_bpe")):
        line = [label]
        for s in sparsities:
            match = [r for r in cells if r.sparsity == s]
            line.append(getattr(match[0], attribute) if match else math.nan)
        table.append(line)
    return sparsities, table


def _html_table(headers: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(results: Sequence[Result], directory: str, command: str = "") -> dict[str, str]:
    """CSV, both PNG plots and report.html (plots embedded as base64) in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    paths = {name: os.path.join(directory, name) for name in (CSV_NAME, HTML_NAME, RATIO_PLOT, ERROR_PLOT)}
    write_csv(results, paths[CSV_NAME])
    images = {RATIO_PLOT: ratio_plot(results), ERROR_PLOT: error_plot(results)}
    for name, data in images.items():
        write_file_atomically(paths[name], data)
    sparsities, table = headline_rows(results)
    rows, cols = _largest(results)
    headline = _html_table(["method", *[f"{s:g}%" for s in sparsities]], table)
    fields = list(Result.__dataclass_fields__)
    full = _html_table(fields, [[getattr(r, f) for f in fields] for r in results])
    embedded = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, data in images.items()
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bie bench: Bit-Index Encoding grid</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}th{{background:#eee}}img{{max-width:100%}}</style>
</head><body>
<h1>Bit-Index Encoding benchmark</h1>
<p>Every bie ratio is measured from the bytes of a real <code>.cai</code> file; baselines from the bytes
of their arrays. Matrices are N(0, 0.02²) float32, magnitude-pruned. {html.escape(command)}</p>
<h2>Stored bits per element, {rows}x{cols}</h2>{headline}
{embedded}
<h2>All results</h2>{full}
</body></html>
"""
    write_file_atomically(paths[HTML_NAME], page)
    return paths
