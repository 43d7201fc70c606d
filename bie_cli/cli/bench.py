"""``bie bench``: the Bit-Index Encoding grid (sizes x sparsities x methods)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def _sizes(text: str) -> list[tuple[int, int]]:
    from ..errors import BadInputError

    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        rows, sep, cols = item.lower().partition("x")
        if not (sep and rows.isdigit() and cols.isdigit() and int(rows) > 0 and int(cols) > 0):
            raise BadInputError(f"--sizes: {item!r} is not ROWSxCOLS (e.g. 2048x1024)")
        sizes.append((int(rows), int(cols)))
    return sizes


def _numbers(text: str, option: str) -> list[float]:
    from ..errors import BadInputError

    values = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            value = float(item)
        except ValueError:
            raise BadInputError(f"{option}: {item!r} is not a number") from None
        if not 0 <= value < 100:
            raise BadInputError(f"{option}: {item} is not a sparsity in percent [0, 100)")
        values.append(value)
    return values


def command(
    output_dir: Annotated[str, typer.Option("-o", "--output-dir", help="Directory for results.csv, report.html and the PNG plots.")] = "bie-bench",
    sizes: Annotated[Optional[str], typer.Option("--sizes", help="Comma-separated ROWSxCOLS (default 256x256,512x512,1024x1024,2048x1024).")] = None,
    sparsity: Annotated[Optional[str], typer.Option("--sparsity", help="Comma-separated sparsities in percent (default 0,30,50,90,95,99).")] = None,
    methods: Annotated[Optional[str], typer.Option("--methods", help="Comma-separated bie methods and baselines (default: all; see --list).")] = None,
    large: Annotated[bool, typer.Option("--large", help="Add the 4096x4096 matrix to the sizes.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Smoke run: 256x256 at 0, 90 and 95%, one repeat, no memory tracing.")] = False,
    repeats: Annotated[int, typer.Option("--repeats", help="Timing repeats, at least 1 (the median is reported).")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random matrices.")] = 0,
    list_methods: Annotated[bool, typer.Option("--list", help="List the methods and exit.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress on stderr.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Write every result as JSON to stdout.")] = False,
) -> int:
    """Benchmark every bie encoding against dense, CSR/COO and quantized baselines; sizes from stored bytes."""
    from ..errors import BadInputError
    from .output import print_json, stderr_console

    if output_dir == "-":
        raise BadInputError("--output-dir - : the report is several files and cannot go to stdout; use --json for stdout")
    try:
        import matplotlib  # noqa: F401  (the plots)
        import scipy  # noqa: F401  (the CSR/COO baselines)
    except ImportError as exc:
        raise BadInputError(f"bie bench needs {exc.name}: pip install 'bie-cli[bench]'") from None
    from ..bench import grid, report

    if list_methods:
        for name, spec in grid.BIE_METHODS.items():
            typer.echo(f"{name}\t{spec}")
        for name in grid.BASELINES:
            typer.echo(f"{name}\tbaseline")
        return 0
    if repeats < 1:
        raise BadInputError("--repeats must be at least 1")

    config = grid.GridConfig(repeats=repeats, seed=seed)
    if quick:
        config.sizes, config.sparsities, config.repeats, config.memory = [(256, 256)], [0.0, 90.0, 95.0], 1, False
    if sizes:
        config.sizes = _sizes(sizes)
    if large:
        config.sizes.append(grid.LARGE_SIZE)
    if sparsity:
        config.sparsities = _numbers(sparsity, "--sparsity")
    if methods:
        config.methods = grid.check_methods(m.strip() for m in methods.split(",") if m.strip())
    console = stderr_console()
    progress = None if quiet or json_output else (lambda text: console.print(f"[dim]{text}[/dim]"))
    results = grid.run_grid(config, progress)
    paths = report.write_report(results, output_dir)
    if json_output:
        print_json([r.to_dict() for r in results])
    elif not quiet:
        console.print(f"{len(results)} results -> {paths[report.HTML_NAME]}, {paths[report.CSV_NAME]}")
    return 0
