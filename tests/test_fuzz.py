"""Malformed checkpoints and containers end in a BieError, never an internal error.

Seeded mutation fuzzing of every reader (the harness and its limits are in
tests/fuzzing.py): a few hundred cases per target here, ``make fuzz`` runs
10,000 (``FUZZ_CASES``; ``FUZZ_SEED`` picks other cases). A failure prints the
case, the mutation, the traceback and the command that replays it.
"""

from __future__ import annotations

import os

import pytest
from fuzzing import NORMAL_CASES, TARGETS, describe_failures, run_in_child


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_malformed_input_gives_a_bie_error(target: str) -> None:
    cases = int(os.environ.get("FUZZ_CASES") or NORMAL_CASES[target])
    seed = int(os.environ.get("FUZZ_SEED") or 0)
    result = run_in_child(target, cases, seed)
    assert not result["failures"], describe_failures(result)
    assert result["cases"] == cases
    # the mutations must reach both outcomes, or the fuzzer tests nothing
    assert result["rejected"] > 0 and result["accepted"] > 0, result


def test_a_damaged_pickle_is_a_bad_input_not_an_internal_error(tmp_path) -> None:
    """The issue's first escape, pinned: torch's unpickler raised IndexError."""
    from bie_cli.errors import EXIT_BAD_INPUT, BieError
    from bie_cli.formats import pytorch

    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02]q\x00(K\x01e\x85R.")  # REDUCE on an empty stack
    with pytest.raises(BieError, match=r"model\.pt as a PyTorch checkpoint \(truncated or corrupt\?\): IndexError") as caught:
        pytorch.open(str(path))
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert isinstance(caught.value.__cause__, IndexError)  # --debug shows where torch failed
