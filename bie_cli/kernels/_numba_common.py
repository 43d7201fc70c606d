"""Pieces shared by the numba kernel modules (imported lazily, never by ``import bie_cli``)."""

from __future__ import annotations

#: reassociation (vectorized reductions) and FMA contraction only: no
#: no-NaN/no-Inf assumptions, so non-finite weights or inputs propagate as in numpy.
FASTMATH = {"reassoc", "contract"}
