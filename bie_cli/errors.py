"""The only exceptions bie lets users see.

Every failure a user can cause (bad input, a corrupt container, a failed
verification) is a :class:`BieError` subclass carrying the process exit code
the CLI returns for it. The CLI turns them into one line on stderr at exactly
one place (``bie_cli.cli.app.main``); library callers catch ``BieError``.

Exit codes (documented in README.md):

====  =============================================================
0     success
1     verification failed: a tensor differs from the original
2     usage error or bad input (missing file, unsupported dtype, ...)
3     corrupt or truncated container
====  =============================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CORRUPT = 3


class BieError(Exception):
    """Base class: a problem bie can explain in one line."""

    exit_code = EXIT_BAD_INPUT


class BadInputError(BieError):
    """The input or the request cannot be processed (exit 2)."""


class UnsupportedDtypeError(BadInputError):
    """A tensor has a dtype bie (or the chosen strategy) cannot store."""


class UnknownStrategyError(BadInputError):
    """A strategy id is not in the registry (neither built in nor an entry point)."""

    def __init__(self, strategy_id: str, known: list[str] | None = None) -> None:
        self.strategy_id = strategy_id
        hint = f"; known strategies: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown strategy {strategy_id!r}{hint}")


class UnsafePickleError(BadInputError):
    """A PyTorch file whose pickle would need to run code to load."""


class CorruptContainerError(BieError):
    """A .cai file is truncated, has a bad checksum or violates the format (exit 3)."""

    exit_code = EXIT_CORRUPT


class VerificationFailedError(BieError):
    """Decoded tensors do not match the original (exit 1)."""

    exit_code = EXIT_VERIFY_FAILED
