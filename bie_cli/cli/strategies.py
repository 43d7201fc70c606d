"""``bie strategies``"""

from __future__ import annotations

from typing import Annotated

import typer


def command(
    json_output: Annotated[bool, typer.Option("--json", help="Write the list as JSON to stdout.")] = False,
) -> int:
    """List registered strategies, whether they are lossless, and their options."""
    from ..strategies import all_strategies
    from .output import print_json, stdout_console

    rows = []
    for strategy in all_strategies():
        rows.append({
            "id": strategy.id,
            "lossless": strategy.lossless,
            "dtypes": sorted(strategy.dtypes) if strategy.dtypes is not None else "all",
            "description": strategy.description,
            "options": [{"name": n, "type": t, "default": d} for n, t, d in strategy.options()],
        })
    if json_output:
        print_json(rows)
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("strategy", "lossless", "options (default)", "description"):
        table.add_column(column)
    for row in rows:
        options = ", ".join(f"{o['name']}={o['default']} ({o['type']})" for o in row["options"]) or "-"
        table.add_row(row["id"], "yes" if row["lossless"] else "no", options, row["description"])
    stdout_console().print(table)
    return 0
