"""The configurations ``auto`` measures on every tensor it may compress lossily.

One list, every registered lossy family represented, so a tensor where an
unusual family wins (a sparse one, say) can get it. Measured on
all-MiniLM-L6-v2 (BENCHMARKS.md "auto"), the entropy-coded step grid
(``quant:bits=8,granularity=tensor,step=s``) is on the lower convex hull
almost everywhere: its rate falls by one bit per doubling of the step while
its relative MSE stays about s²/12, and the rANS stage makes the bytes track
the codes' entropy. So the ladder of steps, a quarter-octave apart, gives the
allocator a near-continuous rate-distortion curve, and the fixed-rate grids
(group quant, nf4, ternary, 1-bit binary) are measured beside it and win only
where they really are smaller for the error. Left out because they were
never on a MiniLM tensor's hull and cost measuring time: ``clip=mse`` grids
(the step grid is smaller at 2-3 bits), ``bie-bitplane`` (same codes as the
step grid, plane by plane: ~0.1 bit dearer), lossy ``sdr``/``bie-blocked``
(pruning is far off the hull on dense weights); lossless ``sdr`` stays for
sparse tensors.
"""

from __future__ import annotations

from functools import cache

from ..plan import Choice, StrategySpec
from ..strategies import registry

#: steps of the entropy-coded grid, as fractions of the tensor's RMS: 2**(k/3) / 40
#: for k = 0..18 (0.025 .. 1.6), a third of a bit apart; finer than 0.025 the 8-bit
#: range is about ±3 RMS and the elements beyond it (stored exactly) cost more than
#: a fixed grid would
STEP_LADDER = tuple(round(2 ** (k / 3) / 40, 5) for k in range(19))

FIXED_GRIDS = (
    "quant:bits=8,group_size=64",
    "quant:bits=6,group_size=64",
    "quant:bits=5,group_size=32",
    "quant:bits=4,group_size=32",
    "quant:bits=4,group_size=32,symmetric=false",  # gguf Q4_1's grid
    "quant:bits=3,group_size=32",
    "nf4",
    "ternary:scale=fit,granularity=group,group_size=256",
    "bie-binary",
)

#: measured first on a quarter of the sample, then on the whole sample only when near the
#: hull of the step ladder and the lossless coders (``planner._measured_curve``); one cheaper
#: than the ladder's cheapest (1-bit binary) keeps its quarter-sample figure
SCREENED = frozenset(FIXED_GRIDS)

#: the symmetric group grids, measured together from histograms (``measure.group_points``)
#: on the whole sample instead of screened, where that shortcut applies
GROUP_GRIDS = tuple(t for t in FIXED_GRIDS if t.startswith("quant:") and "symmetric" not in t)

#: lossless coders measured as the top of every curve
LOSSLESS = ("float-split", "sdr")


def _spec_text(spec: StrategySpec) -> str:
    return str(spec)


@cache
def resolve(text: str) -> Choice:
    """A candidate's text -> a typed Choice (the reason is filled in by the allocator).
    Cached: building a typed config reads the dataclass's type hints (~1 ms, a third of a
    sample measurement before this was cached); a Choice is immutable."""
    from ..plan import parse_strategy

    spec = parse_strategy(text)
    strategy = registry.get(spec.id)
    config = strategy.config_from_dict(spec.options)
    return Choice(strategy.id, config, strategy.config_to_dict(config), "")


#: the step ladder's candidates, measured together from histograms (``measure.ladder_points``)
LADDER = tuple(f"quant:bits=8,granularity=tensor,step={step:g}" for step in STEP_LADDER)

#: trellis-coded quantization (``tcq``) on the same grid: a code picks among every second
#: point, so ``tcq:step=s`` has about the rate of the step grid at 2s; steps 2**(k/3) / 80 for
#: k = 0..17 (0.0125 .. 0.63) cover the ladder's rates from ~7 bits down to ~1.7, below which
#: a distortion-only trellis search loses to the scalar grid; measured from one Viterbi pass
#: each (``measure.tcq_points``)
TCQ_STEPS = tuple(round(2 ** (k / 3) / 80, 6) for k in range(18))
TCQ_LADDER = tuple(f"tcq:step={step:g}" for step in TCQ_STEPS)
#: measured first for a size budget (every third step and the coarsest); the others where
#: the allocation comes near them (``planner._refine``)
TCQ_FIRST = frozenset(TCQ_LADDER[::3] + TCQ_LADDER[-1:])


@cache
def lossy_candidates(trellis: bool = False) -> tuple[str, ...]:
    """``trellis``: the ``tcq`` ladder too (opt-in: ``tcq`` has no matmul kernels yet, and its
    Viterbi search costs ~50 ns an element to measure and to encode)."""
    return LADDER + (TCQ_LADDER if trellis else ()) + FIXED_GRIDS


def candidates_for(dtype: str, trellis: bool = False) -> list[str]:
    """Every candidate (lossy first, then lossless) that accepts ``dtype``."""
    texts = [*lossy_candidates(trellis), *LOSSLESS]
    return [t for t in texts if registry.get(t.partition(":")[0]).supports(dtype)]


def spec_text(choice: Choice) -> str:
    """``NAME:key=value,...`` with only the options that differ from the defaults."""
    strategy = registry.get(choice.strategy)
    defaults = strategy.config_to_dict(strategy.default_config())
    options = {k: v for k, v in choice.config_dict.items() if defaults.get(k) != v}
    return _spec_text(StrategySpec(choice.strategy, options))
