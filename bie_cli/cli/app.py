"""The Typer app and the one place where errors become messages and exit codes.

Subcommand modules import numpy, torch etc. inside their functions, so
``bie --help`` only loads typer.
"""

from __future__ import annotations

import contextlib
import sys

import typer

from . import bench, compress, decompress, embed, inspect, plan, strategies, verify


def _typer_app() -> typer.Typer:
    return typer.Typer(
        name="bie",
        help="Compress model checkpoints into checksummed, streamable .cai containers.\n\n"
        "Exit codes: 0 ok, 1 verification failed, 2 usage or bad input, 3 corrupt container.",
        # Bare `bie` is handled in _options (help on stderr, exit 2) so it behaves the same on every
        # Click: Click < 8.2 exits 0 for no_args_is_help, newer Click raises a usage error.
        invoke_without_command=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain Click help: Typer's rich help imports rich.markdown and markdown-it (~0.15 s), half the
        # 0.3 s budget for `bie --help`, and looks like every other Unix tool's help without it.
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


app = _typer_app()

_debug = False

#: a bug in bie rather than in the input (BSD sysexits EX_SOFTWARE)
EXIT_INTERNAL = 70
#: a usage error, as Click and every getopt tool report it
EXIT_USAGE = 2


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"bie {__version__}")
        raise typer.Exit(0)


def _options(
    context: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
    version: bool = typer.Option(
        False, "--version", "-V", help="Print the version and exit.", is_eager=True, callback=_print_version,
    ),
) -> None:
    global _debug
    _debug = debug
    if context.invoked_subcommand is None:
        # Typer's rich help prints itself to stdout instead of returning text: send it to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            help_text = context.get_help()
        if help_text:
            typer.echo(help_text, err=True)
        raise typer.Exit(EXIT_USAGE)


_COMMANDS = {"compress": compress, "decompress": decompress, "inspect": inspect, "verify": verify,
             "strategies": strategies, "bench": bench, "plan": plan}
_GROUPS = {"embed": embed}


def _register(target: typer.Typer, names) -> typer.Typer:
    target.callback()(_options)
    for name in names:
        if name in _GROUPS:
            target.add_typer(_GROUPS[name].app, name=name)
        else:
            target.command(name)(_COMMANDS[name].command)
    return target


_register(app, [*_COMMANDS, *_GROUPS])


def _app_for(args: list[str]) -> typer.Typer:
    """The whole app, or one holding only the command the arguments name.

    Typer turns every command's signature into Click parameters each time the app
    runs (~60 ms for all of bie's, a fifth of the start-up budget); a command's
    usage line, options and errors are the same either way. The whole app runs
    whenever the command list itself matters: help, bare ``bie``, unknown commands.
    """
    leading = 0  # bie's own options before the command name (none takes a value)
    while leading < len(args) and args[leading] in ("--debug", "--version", "-V"):
        leading += 1
    if leading == len(args):
        return _register(_typer_app(), []) if leading and "--debug" not in args else app
    name = args[leading]
    if name in _COMMANDS or name in _GROUPS:
        return _register(_typer_app(), [name])
    return app


def _error(message: str) -> None:
    sys.stderr.write(f"bie: error: {message}\n")


def _click_exception_class() -> type[Exception]:
    """The base class of usage errors in whichever Click runs under Typer.

    Typer up to 0.2x raises the ``click`` package's exceptions; newer Typer
    raises those of its vendored copy (``typer._click``), which are different
    classes, and ``click`` may not even be installed. Neither exports the base
    class under one public name, but ``typer.BadParameter`` is public in every
    version and derives from it.
    """
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "ClickException":
            return cls
    raise RuntimeError(f"typer.BadParameter has no ClickException base: {typer.BadParameter.__mro__}")


def main(argv: list[str] | None = None) -> int:
    from ..errors import BieError

    usage_error = _click_exception_class()
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        result = _app_for(args)(args=args, prog_name="bie", standalone_mode=False)
    except BieError as exc:
        if _debug:
            raise
        _error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except usage_error as exc:  # unknown option or command, missing or bad argument: usage line + message
        exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
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
    """Console-script entry point (and ``python -m bie_cli``).

    In the CLI process the cyclic garbage collector waits for 200,000 new objects instead
    of Python's 700 (mypy does the same): importing numba and building its typing registries
    allocates hundreds of thousands of objects that live as long as the process, and the
    collections they triggered cost ~0.1 s of CPU of a ~1 s start-up (measured). bie's
    large buffers are numpy arrays freed by reference counting, so memory stays bounded
    by the chunks in flight. The library (``main()`` in process) leaves the collector alone.
    ``compress``, ``decompress`` and ``verify`` set ``OPENBLAS_NUM_THREADS=1`` unless it is set.
    """
    import gc
    import os

    gc.set_threshold(200_000, 30, 30)
    if sys.argv[1:2] and sys.argv[1] in ("compress", "decompress", "verify"):
        # no BLAS call in these: one OpenBLAS thread instead of one per core, whose start-up
        # spin cost ~0.1 s of CPU in numpy's import (measured; docs/scale.md, session 8)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    exit_without_teardown(main())


def exit_without_teardown(code: int) -> None:
    """End the process the way a normal exit does, minus the interpreter's teardown.

    Once numba is loaded, Python's finalisation (clearing ~1,000 modules, numba's and
    llvmlite's finalisers disposing LLVM objects one by one) costs 0.3-0.5 s of CPU: a
    quarter of a whole ``bie compress`` of a small checkpoint, for nothing the user sees.
    What a normal exit does that matters is done first: atexit handlers (logging,
    temporary directories, coverage), then stdout and stderr are flushed. A normal exit
    is kept while another non-daemon thread runs (it waits for that thread) or with
    ``BIE_FAST_EXIT=0``.
    """
    import os
    import threading

    if os.environ.get("BIE_FAST_EXIT") == "0" or any(
            thread.is_alive() and not thread.daemon and thread is not threading.main_thread()
            for thread in threading.enumerate()):
        raise SystemExit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BrokenPipeError:  # the reader went away (`| head`): as main() reports it
            code = code or 141
        except (OSError, ValueError):  # CPython's own status when flushing at exit fails
            code = code or 120
    os._exit(code)
