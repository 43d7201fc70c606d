"""The Typer app and the one place where errors become messages and exit codes.

Subcommand modules import numpy, torch etc. inside their functions, so
``bie --help`` only loads typer.
"""

from __future__ import annotations

import sys

import click
import typer

from . import bench, compress, decompress, embed, inspect, strategies, verify

app = typer.Typer(
    name="bie",
    help="Compress model checkpoints into checksummed, streamable .cai containers.\n\n"
    "Exit codes: 0 ok, 1 verification failed, 2 usage or bad input, 3 corrupt container.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = False

#: a bug in bie rather than in the input (BSD sysexits EX_SOFTWARE)
EXIT_INTERNAL = 70


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    global _debug
    _debug = debug
    if version:
        from .. import __version__

        typer.echo(f"bie {__version__}")
        raise typer.Exit(0)


app.command("compress")(compress.command)
app.command("decompress")(decompress.command)
app.command("inspect")(inspect.command)
app.command("verify")(verify.command)
app.command("strategies")(strategies.command)
app.command("bench")(bench.command)
app.add_typer(embed.app, name="embed")


def _error(message: str) -> None:
    sys.stderr.write(f"bie: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    from ..errors import BieError

    try:
        result = app(args=argv, prog_name="bie", standalone_mode=False)
    except BieError as exc:
        if _debug:
            raise
        _error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        _error("interrupted")
        return 130
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`): not our failure to report
        return 141
    except OSError as exc:  # disk full, permission denied mid-run, ...: the environment, not the input format
        if _debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        _error(f"{exc.strerror or exc}{where}")
        return 2
    except MemoryError:
        _error("out of memory; try a smaller --chunk-size or fewer --threads")
        return 2
    except Exception as exc:  # a bug in bie: say so in one line, traceback only with --debug
        if _debug:
            raise
        _error(f"internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it")
        return EXIT_INTERNAL
    return result if isinstance(result, int) else 0


def main_entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
