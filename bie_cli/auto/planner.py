"""From a checkpoint and a budget to one explicit choice per tensor.

1. Tensors a user rule matches, and tensors the built-in policy keeps
   lossless (non-float, 1-D, fewer than 1024 elements), are pinned: encoded
   whole once for their exact bytes.
2. Every other tensor gets a rate-distortion curve over the candidates
   (:mod:`.candidates`), measured on a row sample when big (:mod:`.measure`).
3. Size budgets: greedy marginal gains on the curves' convex hulls
   (:mod:`.allocate`) minimise the total weighted distortion
   sum(weight x relative MSE) within the bytes left after the pinned tensors
   and the container's own overhead. ``--max-error``: per tensor the
   smallest candidate whose relative MSE is within the bound.
4. Each chosen configuration is encoded on the whole tensor (chunked as
   ``compress`` chunks it); the container's exact size is then computed by
   a dry run of the writer, and while it is over budget the step down that
   costs the least distortion per byte is taken (a ``--max-error`` choice
   that misses its bound on the whole tensor steps up instead).

Data-free: the distortion weight of a tensor is 1 (``tensor``; 2L for an
output head) or its parameter count (``params``), see :data:`WEIGHTINGS`.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .. import dtypes
from ..errors import BadInputError
from ..formats.base import CheckpointSource, TensorInfo
from ..formats.cai import spec
from ..metrics import ErrorStats
from ..plan import SMALL_TENSOR_ELEMENTS, Choice, Planner, Rule, exact_pattern, lossless_choice, parse_strategy
from . import allocate, candidates, measure
from .budget import Budget

#: distortion weight of a tensor. ``tensor``: every tensor's relative error counts the same
#: (a linear layer's relative output error is about its weights' relative error, whatever
#: its size), except an output head (see :func:`output_heads`), which counts as much as
#: all 2L residual-branch contributions of the L blocks together: its error reaches the
#: logits undiluted. ``params``: weighted by parameter count (HIGGS's linear model with
#: equal per-parameter sensitivity).
#: ``roles``: ``tensor`` plus llama.cpp's k-quant layer prior (see :func:`kquant_boosted`).
WEIGHTINGS = ("auto", "tensor", "params", "roles")
#: ``auto``: ``roles`` where :func:`kquant_boosted` recognises Llama-style role names, else
#: ``tensor`` (the two differ only on the tensors ``roles`` boosts; docs/auto.md "Weighting")
DEFAULT_WEIGHTING = "auto"
#: tensors llama.cpp's Q4_K_M/Q5_K_M mixes move from Q4_K to Q6_K in the layers
#: ``use_more_bits`` picks: the attention value projection and the MLP down projection
#: (HF Llama/Mistral/Qwen names, llama.cpp's, Meta's original)
KQUANT_ROLES = ("v_proj.weight", "down_proj.weight", "attn_v.weight", "ffn_down.weight",
                "attention.wv.weight", "feed_forward.w2.weight")
#: Q6_K is 2.06 bits a weight dearer than Q4_K; at the step grid's slope (error /4 per bit)
#: a Lagrangian allocation spends 2 more bits where the weight is 4**2 = 16 times larger
KQUANT_WEIGHT = 16.0
#: output projections by name (HF Llama/GPT-NeoX/T5 style, llama.cpp style)
HEAD_NAMES = ("lm_head.weight", "embed_out.weight", "output.weight")
#: input embeddings that decoder LMs usually tie to the output head when no head is stored
TIED_EMBEDDING_NAMES = ("embed_tokens.weight", "wte.weight", "tok_embeddings.weight")
_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def output_heads(infos: list[TensorInfo]) -> set[str]:
    """Names of the output head: a stored one, else a tied input embedding of a decoder LM."""
    heads = {i.name for i in infos if i.name.endswith(HEAD_NAMES) and len(i.shape) == 2}
    if heads:
        return heads
    return {i.name for i in infos if i.name.endswith(TIED_EMBEDDING_NAMES) and len(i.shape) == 2}


def block_count(infos: list[TensorInfo]) -> int:
    indices = {int(m.group(1)) for i in infos if (m := _BLOCK_INDEX.search(i.name))}
    return max(indices) + 1 if indices else 1


def use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers and every third between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def kquant_boosted(infos: list[TensorInfo]) -> set[str]:
    """Names llama.cpp's k-quant mixes give more bits (:data:`KQUANT_ROLES` in the layers
    :func:`use_more_bits` picks); empty for models without such names (BERT, ...)."""
    layers = block_count(infos)
    boosted = set()
    for info in infos:
        match = _BLOCK_INDEX.search(info.name)
        if match and info.name.endswith(KQUANT_ROLES) and use_more_bits(int(match.group(1)), layers):
            boosted.add(info.name)
    return boosted


def load_weights_file(path: str, infos: list[TensorInfo]) -> dict[str, float]:
    """A calibrated weighting: a JSON object {tensor name: weight > 0} (e.g. each tensor's
    measured output sensitivity per unit of relative MSE, HIGGS-style). Tensors it does not
    list weigh as much as the median of those it lists."""
    import math
    import statistics

    try:
        with open(path, encoding="utf-8") as handle:
            table = json.load(handle)
    except OSError as exc:
        raise BadInputError(f"weighting file {path!r} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BadInputError(f"weighting file {path!r} is not JSON: {exc}") from None
    if not isinstance(table, dict) or not table:
        raise BadInputError(f"weighting file {path!r} must be a JSON object of tensor name -> weight")
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise BadInputError(f"weighting file {path!r}: weight of {name!r} must be a positive number, got {value!r}")
    names = {i.name for i in infos}
    if not names & set(table):
        raise BadInputError(f"weighting file {path!r} names none of this checkpoint's tensors")
    fallback = statistics.median(float(v) for k, v in table.items() if k in names)
    return {i.name: float(table.get(i.name, fallback)) for i in infos}


def check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS and not weighting.endswith(".json"):
        raise BadInputError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)} "
                            "or give a .json file of per-tensor weights")


def distortion_weights(infos: list[TensorInfo], weighting: str) -> dict[str, float]:
    check_weighting(weighting)
    if weighting.endswith(".json") and weighting not in WEIGHTINGS:
        return load_weights_file(weighting, infos)
    if weighting == "params":
        return {i.name: float(i.numel) for i in infos}
    head_weight = 2.0 * block_count(infos)
    heads = output_heads(infos)
    boosted = kquant_boosted(infos) if weighting in ("roles", "auto") else set()
    return {i.name: head_weight if i.name in heads else KQUANT_WEIGHT if i.name in boosted else 1.0 for i in infos}

#: bytes kept back from a size budget for what the dry run cannot know exactly
#: (the digits of figures in the end records)
SAFETY_BYTES = 256

Progress = Callable[[int, int, str], None]


@dataclass
class TensorPlan:
    info: TensorInfo
    choice: Choice
    text: str  # NAME:options
    predicted_bytes: float
    predicted_mse: float
    stored_bytes: int  # whole tensor, as encoded (payload + meta + framing)
    #: None when lossless; the whole tensor's when ``measured``, else the sample's prediction
    #: (size budgets leave the whole tensor's error to the compress that writes it)
    relative_mse: float | None
    auto: bool  # chosen by the allocator (False: pinned)
    encoded: measure.Encoded  # the whole tensor, as compress will encode it
    measured: bool = True

    def to_dict(self) -> dict:
        bits = 8 * self.stored_bytes / self.info.numel if self.info.numel else 0.0
        return {
            "name": self.info.name, "dtype": self.info.dtype, "shape": list(self.info.shape),
            "strategy": self.text, "reason": self.choice.reason, "auto": self.auto,
            "predicted_bits": 8 * self.predicted_bytes / self.info.numel if self.info.numel else 0.0,
            "predicted_relative_mse": self.predicted_mse, "bits": bits, "stored_bytes": self.stored_bytes,
            "lossless": self.relative_mse is None,
            "relative_mse": self.relative_mse if self.measured else None,
        }


@dataclass
class ModelPlan:
    source: str
    budget: Budget
    weighting: str
    chunk_size: int
    tensors: list[TensorPlan]
    file_bytes: int  # the container's predicted size
    parameters: int
    budget_bytes: int | None
    trellis: bool = False  # the tcq ladder was among the candidates
    #: ``bie plan -o``'s handoff file (:mod:`bie_cli.auto.handoff`): its path, its size when
    #: written, else why not
    handoff_path: str | None = None
    handoff_bytes: int | None = None
    handoff_warning: str | None = None

    @property
    def bits_per_parameter(self) -> float:
        return 8 * self.file_bytes / self.parameters if self.parameters else 0.0

    def summary(self) -> dict:
        """Stored in the container header (deterministic: no timings)."""
        return {"budget": self.budget.describe(), "weighting": os.path.basename(self.weighting), "chunk_size": self.chunk_size,
                "predicted_bytes": self.file_bytes, "predicted_bits_per_parameter": round(self.bits_per_parameter, 4),
                **({"trellis": True} if self.trellis else {}),
                **({"max_error": self.budget.value} if self.budget.kind == "max_error" else {})}

    def rules(self) -> list[Rule]:
        """One exact-name rule per tensor: what ``compress --policy`` reads back."""
        return [Rule(exact_pattern(t.info.name), parse_strategy(t.text), origin="bie plan", reason=t.choice.reason)
                for t in self.tensors]

    def to_toml(self) -> str:
        """The plan as a policy file; ``bie compress --policy`` gives the same bytes as the budget."""
        lines = [f"# bie plan for {os.path.basename(self.source)}: {self.budget.describe()}, predicted "
                 f"{self.file_bytes} bytes ({self.bits_per_parameter:.4f} bits/param). Same chunk size needed.",
                 "", "[auto]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in sorted(self.summary().items())]
        for tensor in self.tensors:
            lines += ["", "[[rules]]", f"match = {_toml_value(exact_pattern(tensor.info.name))}",
                      f"strategy = {_toml_value(tensor.text)}", f"reason = {_toml_value(tensor.choice.reason)}"]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"source": self.source, **self.summary(), "parameters": self.parameters,
                "budget_bytes": self.budget_bytes, "tensors": [t.to_dict() for t in self.tensors]}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # JSON string escapes are valid TOML basic-string escapes (no surrogate pairs with ensure_ascii off)
    return json.dumps(str(value), ensure_ascii=False)


def lossy_eligible(info: TensorInfo) -> bool:
    """What the built-in policy would let a lossy default touch."""
    from ..dtypes import FLOAT_NAMES

    return info.dtype in FLOAT_NAMES and len(info.shape) >= 2 and info.numel >= SMALL_TENSOR_ELEMENTS


def plan_model(source: CheckpointSource, budget: Budget, *, pins: Planner | None = None,
               chunk_size: int, threads: int = 1, weighting: str = DEFAULT_WEIGHTING,
               progress: Progress | None = None, spool: measure.PayloadSpool | None = None,
               trellis: bool = True) -> ModelPlan:
    """The plan for ``budget``. With a ``spool``, every whole-tensor encode keeps its payloads
    there (:attr:`TensorPlan.encoded`), so a compress that follows need not encode them again."""
    weights = distortion_weights(source.tensors, weighting)
    total_work = sum(dtypes.nbytes(i.dtype, i.shape) for i in source.tensors)
    done = 0
    curves: list[measure.TensorCurve] = []
    serial = _SerialPool()
    memo: dict = {}  # the dry runs' JSON record sizes

    def curve_of(info: TensorInfo) -> measure.TensorCurve:
        # one tensor per thread, its candidates in turn: no thread waits for another's
        # slowest candidate, and at most ``threads`` samples are held at once
        curve = _pinned_curve(source, info, pins, chunk_size, spool)
        if curve is None:
            curve = _measured_curve(source, info, chunk_size, serial, spool, trellis,
                                    size_budget=budget.kind != "max_error")
            curve.weight = weights[info.name]
        return curve

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bie-plan") as pool:
        # a window of 8 tensors a thread (a waiting curve is small): with 2 a thread, a big weight
        # followed by its small biases left the other thread idle until the weight was done
        for info, curve in zip(source.tensors, _bounded_map(pool, curve_of, source.tensors, 8 * threads), strict=True):
            curves.append(curve)
            done += dtypes.nbytes(info.dtype, info.shape)
            if progress:
                progress(done, total_work, info.name)
        allocate.build_hulls(curves)
        parameters = sum(info.numel for info in source.tensors)
        tensor_bytes = total_work
        # a size budget needs the chosen encodes' exact sizes, not their errors: those the
        # compress that writes them measures (and stores); --max-error checks them here
        confirm = _Confirmer(source, chunk_size, pool, spool, errors=budget.kind == "max_error")
        if budget.kind == "max_error":
            chosen = _within_error(confirm, curves, budget.value)
            budget_bytes = None
        else:
            budget_bytes = budget.file_bytes(parameters, tensor_bytes)
            # the header's [auto] summary as it will be, with the size not yet known (same width)
            template = ModelPlan(source.path, budget, weighting, chunk_size, [], budget_bytes, parameters, budget_bytes,
                                 trellis)
            chosen = _within_size(source, confirm, curves, budget, budget_bytes, parameters, chunk_size,
                                  template.summary(), memo,
                                  lambda free, picks: _refine(source, free, picks, chunk_size, pool, trellis))
    plans = _tensor_plans(curves, chosen, budget)
    plan = ModelPlan(source.path, budget, weighting, chunk_size, plans, 0, parameters, budget_bytes, trellis)
    plan.file_bytes = predict_file_size(source, plans, chunk_size, plan.summary(), memo)
    # the summary holds the size: once more so the figure describes the header that holds it
    plan.file_bytes = predict_file_size(source, plans, chunk_size, plan.summary(), memo)
    return plan


class _SerialPool:
    """``map`` in the calling thread (a tensor's candidates, when tensors run in parallel)."""

    @staticmethod
    def map(function, items):
        return map(function, items)


def _bounded_map(pool, function, items, ahead: int):
    """``pool.map`` in order with at most ``ahead`` calls submitted and not yet consumed."""
    from collections import deque

    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _pinned_curve(source, info: TensorInfo, pins: Planner | None, chunk_size: int,
                  spool: measure.PayloadSpool | None) -> measure.TensorCurve | None:
    choice = None
    if pins is not None:
        for rule in pins.rules:
            if rule.matches(info):
                choice = pins.choose(info)
                break
    if choice is None and not lossy_eligible(info):
        choice = lossless_choice(info, "built-in: kept lossless")
    if choice is None:
        return None
    if choice.candidates:  # fixed as compress fixes it: the smallest on the first chunk
        from ..tensorcodec import plan_tensor

        fixed = plan_tensor(source, info, choice, chunk_size)
        choice = Choice(fixed.strategy, fixed.config, fixed.config_dict, fixed.reason)
    encoded = measure.encode_whole(source, info, choice, chunk_size, spool)
    point = measure.Point(choice, candidates.spec_text(choice), float(encoded.stored_bytes),
                          encoded.relative_mse, encoded.error is None)
    point.confirm(encoded)
    return measure.TensorCurve(info, [point], info.rows, pinned=True)


def _measured_curve(source, info: TensorInfo, chunk_size: int, pool, spool, trellis: bool = False,
                    size_budget: bool = False) -> measure.TensorCurve:
    """The tensor's rate-distortion points. For a ``size_budget``, which only each curve's lower
    hull concerns (``--max-error`` may take any point), where the ``tcq`` ladder is measured:
    only every third step of it and the coarsest (:data:`candidates.TCQ_FIRST`), the others
    left in :attr:`~measure.TensorCurve.unmeasured` for :func:`_refine`; and the step ladder
    and the group grids screened like the fixed grids, against the hull of the ``tcq`` ladder
    and the lossless coders, within :data:`LADDER_SCREEN_MARGIN`."""
    ranges = measure.sample_ranges(info, chunk_size)
    texts = candidates.candidates_for(info.dtype, trellis)
    if ranges is None:  # small: every candidate on the whole tensor, chunked as compress will
        def whole(text: str) -> measure.Point:
            choice = candidates.resolve(text)
            encoded = measure.encode_whole(source, info, choice, chunk_size, spool)
            point = measure.Point(choice, text, float(encoded.stored_bytes), encoded.relative_mse, encoded.error is None)
            point.confirm(encoded)
            return point

        points = list(pool.map(whole, texts))
        return measure.TensorCurve(info, points, info.rows)
    sample = measure.read_sample(source, info, ranges)
    chunks = len(measure.chunk_ranges(info, chunk_size))
    quarter = sample[::SCREEN_STRIDE]

    def on(rows, text: str) -> measure.Point:
        return measure.measure_point(rows, info, candidates.resolve(text), text, chunks)

    # the ladders and the group grids from one compiled pass each (where that applies), the
    # lossless coders on the sample; the fixed grids first on a quarter of it, and on the whole
    # sample only when they come near the others' hull
    batch, batched, deferred, unmeasured = [], set(), [], []
    tcq_texts = [t for t in texts if t in candidates.TCQ_LADDER]
    if size_budget:
        unmeasured = [t for t in tcq_texts if t not in candidates.TCQ_FIRST]
        tcq_texts = [t for t in tcq_texts if t in candidates.TCQ_FIRST]
    points = measure.tcq_points(sample, info, tcq_texts, chunks) if tcq_texts else None
    if points is not None:
        batch += points
        batched.update(tcq_texts + unmeasured)
    else:  # (dtype) every step encoded like the other candidates
        unmeasured = []
    screen_ladders = size_budget and points is not None
    for group, shortcut in ((candidates.LADDER, measure.ladder_points), (candidates.GROUP_GRIDS, measure.group_points)):
        chosen = [t for t in texts if t in group]
        points = shortcut(quarter if screen_ladders else sample, info, chosen, chunks) if chosen else None
        if points is not None:  # else (dtype, layout) they are encoded like the others
            if screen_ladders:
                deferred.append((shortcut, points))
            else:
                batch += points
            batched.update(chosen)
    screened = [t for t in texts if t in candidates.SCREENED and t not in batched]
    first = [t for t in texts if t not in candidates.SCREENED and t not in batched]
    results = list(pool.map(lambda job: on(*job), [(sample, t) for t in first] + [(quarter, t) for t in screened]))
    points = batch + results[: len(first)]
    if deferred:  # the ladders' quarter-sample points near the hull (or below it): on the sample
        figures = _hull_figures(points)
        for shortcut, quartered in deferred:
            keep = [p.text for p in quartered if _near_hull(points, p, figures, LADDER_SCREEN_MARGIN)]
            if keep:
                points += shortcut(sample, info, keep, chunks) or list(pool.map(lambda t: on(sample, t), keep))
    keep, below = [], []
    figures = _hull_figures(points)  # the same others for every screened candidate
    for text, point in zip(screened, results[len(first):], strict=True):
        near = _near_hull(points, point, figures)
        if near == "below":  # cheaper than the whole curve: its quarter-sample figure will do
            below.append(point)
        elif near:
            keep.append(text)
    points += below + list(pool.map(lambda t: on(sample, t), keep))
    order = {text: k for k, text in enumerate(texts)}
    points.sort(key=lambda point: order[point.text])
    return measure.TensorCurve(info, points, sample.shape[0], unmeasured=unmeasured)


def _refine(source, curves: list[measure.TensorCurve], chosen: list[int], chunk_size: int, pool,
            trellis: bool) -> bool:
    """Measure the ``tcq`` steps left out next to each curve's chosen point (or, for another
    family's point, next to the ``tcq`` step nearest it in bytes); rebuild those hulls.
    False when there was nothing to measure: the allocation stands."""
    jobs = []
    for curve, index in zip(curves, chosen, strict=True):
        if not curve.unmeasured:
            continue
        point = curve.points[index]
        ladder = candidates.TCQ_LADDER
        if point.text in ladder:
            k = ladder.index(point.text)
        else:
            measured = [p for p in curve.points if p.text in ladder]
            k = ladder.index(min(measured, key=lambda p: abs(p.stored_bytes - point.stored_bytes)).text)
        wanted = [ladder[j] for j in (k - 1, k + 1) if 0 <= j < len(ladder) and ladder[j] in curve.unmeasured]
        if wanted:
            jobs.append((curve, wanted))
    if not jobs:
        return False

    def more(job) -> list[measure.Point]:
        curve, wanted = job
        sample = measure.read_sample(source, curve.info, measure.sample_ranges(curve.info, chunk_size))
        return measure.tcq_points(sample, curve.info, wanted, len(measure.chunk_ranges(curve.info, chunk_size)))

    for (curve, wanted), points in zip(jobs, pool.map(more, jobs), strict=True):
        curve.unmeasured = [t for t in curve.unmeasured if t not in wanted]
        order = {text: k for k, text in enumerate(candidates.candidates_for(curve.info.dtype, trellis))}
        curve.points = sorted(curve.points + points, key=lambda point: order[point.text])
    allocate.build_hulls([curve for curve, _ in jobs])
    return True


#: screening sample: every SCREEN_STRIDE-th row of the sample
SCREEN_STRIDE = 4
#: a screened candidate is measured on the whole sample unless its relative MSE is more than
#: this factor above the hull of the others at its rate (MiniLM's fixed 3-6-bit grids are 2-3x
#: above it; the quarter sample's figures are within a few per cent of the sample's)
SCREEN_MARGIN = 1.3
#: the same for the step ladder and the group grids against the ``tcq`` ladder (a size budget):
#: on MiniLM the step grid is ~1 dB (1.26x) above it, and the ladder and group points that are
#: on a hull are within 1.08x of the ``tcq`` ladder and lossless coders' hull on the quarter
LADDER_SCREEN_MARGIN = 1.15


def _hull_figures(points: list[measure.Point]) -> tuple[list[float], list[float], list[int]]:
    rates = [p.stored_bytes for p in points]
    distortions = [p.relative_mse for p in points]
    return rates, distortions, allocate.lower_hull(rates, distortions)


def _near_hull(points: list[measure.Point], candidate: measure.Point, figures=None,
               margin: float = SCREEN_MARGIN) -> bool | str:
    """Whether ``candidate`` may lie on (or below) the lower hull of ``points``: beyond the
    hull's rate range it may (``"below"`` when cheaper than all of it); inside, when its
    error is within ``margin`` (SCREEN_MARGIN unless given) of the hull's. ``figures``: :func:`_hull_figures` of
    ``points``, when already computed."""
    rates, distortions, hull = figures if figures is not None else _hull_figures(points)
    x = candidate.stored_bytes
    if hull and x < rates[hull[0]]:
        return "below"
    if not hull or x <= rates[hull[0]] or x >= rates[hull[-1]]:
        return True
    for a, b in itertools.pairwise(hull):
        if rates[a] <= x <= rates[b]:
            t = (x - rates[a]) / (rates[b] - rates[a]) if rates[b] > rates[a] else 0.0
            at = distortions[a] + t * (distortions[b] - distortions[a])
            return candidate.relative_mse <= margin * at
    return True


class _Confirmer:
    """Encodes chosen points on their whole tensors, several tensors at once on the pool;
    without ``errors``, for their sizes only (no decode: :attr:`measure.Encoded.sized_only`)."""

    def __init__(self, source, chunk_size: int, pool, spool, errors: bool = True) -> None:
        self.source, self.chunk_size, self.pool, self.spool = source, chunk_size, pool, spool
        self.errors = errors

    def __call__(self, pairs: list[tuple[measure.TensorCurve, int]]) -> None:
        todo = [(curve, index) for curve, index in pairs if not curve.points[index].measured]
        # every chunk of every tensor is one job: a big tensor (an embedding table can be half
        # the model) does not leave the other threads idle while its chunks go one by one
        jobs = [[(self.source, curve.info, curve.points[index].choice, start, stop, self.spool, self.errors)
                 for start, stop in measure.chunk_ranges(curve.info, self.chunk_size)] for curve, index in todo]
        results = iter(list(self.pool.map(measure._encode_chunk, [job for tensor in jobs for job in tensor])))
        for (curve, index), tensor in zip(todo, jobs, strict=True):
            point = curve.points[index]
            done = [next(results) for _ in tensor]
            point.confirm(measure._assemble(self.source, curve.info, point.choice, tensor, done, self.spool))


def _within_error(confirm: _Confirmer, curves, bound: float) -> list[int]:
    def within(curve) -> list[int]:  # cheapest first; lossless always qualifies
        order = sorted(range(len(curve.points)), key=lambda i: curve.points[i].stored_bytes)
        return [i for i in order if curve.points[i].relative_mse <= bound]

    free = [c for c in curves if not c.pinned]
    # every tensor's first pick confirmed at once (in parallel), the misses then one by one
    confirm([(c, within(c)[0]) for c in free if within(c)])
    chosen = []
    for curve in curves:
        if curve.pinned:
            chosen.append(0)
            continue
        for index in within(curve):
            confirm([(curve, index)])
            if curve.points[index].relative_mse <= bound:
                chosen.append(index)
                break
        else:  # unreachable while a lossless candidate exists; keep the best there is
            chosen.append(min(range(len(curve.points)), key=lambda i: curve.points[i].relative_mse))
    return chosen


def _within_size(source, confirm: _Confirmer, curves, budget: Budget, budget_bytes: int, parameters: int,
                 chunk_size: int, summary: dict, memo: dict, refine=None) -> list[int]:
    # everything but the chunks (points count their chunks' framing): header, index, and the
    # tensors' own records, sized with the cheapest choices and a typical reason and error record
    overhead = predict_file_size(source, _record_stubs(curves, budget), chunk_size, summary, memo) + SAFETY_BYTES
    free = [c for c in curves if not c.pinned]
    fixed = sum(c.points[0].stored_bytes for c in curves if c.pinned)
    smallest = overhead + fixed + sum(c.points[c.hull[0]].stored_bytes for c in free)
    lossless = overhead + fixed + sum(min(p.stored_bytes for p in c.points if p.lossless) for c in free)

    def bits(n: float) -> str:
        return f"{8 * n / parameters:.3g} bits/param, {int(n)} bytes" if parameters else f"{int(n)} bytes"

    if budget_bytes < smallest:
        raise BadInputError(
            f"{budget.label()} ({bits(budget_bytes)}) is below the smallest this model can be made "
            f"(about {bits(smallest)}); ask for more")
    if budget_bytes >= lossless:
        raise BadInputError(
            f"{budget.label()} ({bits(budget_bytes)}) is at or above the lossless size "
            f"(about {bits(lossless)}); compress without a budget to keep every tensor exact")
    room = budget_bytes - overhead - fixed
    picks = allocate.allocate(free, room)
    while refine is not None and refine(free, picks):  # the tcq steps next to the choices, then again
        picks = allocate.allocate(free, room)
    chosen_free = dict(zip(map(id, free), picks, strict=True))
    chosen = [chosen_free.get(id(c), 0) for c in curves]
    while True:
        confirm(list(zip(curves, chosen, strict=True)))
        plans = _tensor_plans(curves, chosen, budget)
        size = predict_file_size(source, plans, chunk_size, summary, memo) + SAFETY_BYTES
        if size <= budget_bytes:
            return chosen
        step = allocate.cheapest_downgrade(curves, chosen)
        if step is None:
            raise BadInputError(f"{budget.label()} ({bits(budget_bytes)}) cannot be met: the smallest "
                                f"choices measure {bits(size)} on the whole tensors; ask for more")
        chosen[step[0]] = step[1]


def _record_stubs(curves, budget: Budget) -> list[TensorPlan]:
    stubs = []
    for curve in curves:
        point = curve.points[0 if curve.pinned else curve.hull[0]]
        reason = point.choice.reason
        if not curve.pinned:  # the reason, and ~45 bytes a tensor in reserve for the digits of
            # the figures in its end record (the stats of an error not yet measured)
            reason = _reason(curve.info, point, budget, curve.sample_rows) + "; measured 0.000 bits/param, rel MSE 0.00000"
        error = None if point.lossless else ErrorStats(1, 1.0 / 3, 1.0 / 7, 1.0 / 11)
        choice = Choice(point.choice.strategy, point.choice.config, point.choice.config_dict, reason)
        stubs.append(TensorPlan(curve.info, choice, point.text, 0.0, 0.0, 0, point.relative_mse, not curve.pinned,
                                measure.Encoded([], error, 0, _STUB_DIGEST)))
    return stubs


#: the digest of :func:`_record_stubs`' records (the allocation's room has always been sized
#: with it; the plan's own dry runs use :func:`_stand_in_digest`)
_STUB_DIGEST = "0" * 32


def _tensor_plans(curves, chosen: list[int], budget: Budget) -> list[TensorPlan]:
    plans = []
    for curve, index in zip(curves, chosen, strict=True):
        point = curve.points[index]
        info = curve.info
        relative_mse = None if point.lossless else point.relative_mse
        if curve.pinned:
            reason = point.choice.reason
        else:
            reason = _reason(info, point, budget, curve.sample_rows)
        choice = Choice(point.choice.strategy, point.choice.config, point.choice.config_dict, reason)
        measured = point.encoded is not None and not point.encoded.sized_only
        plans.append(TensorPlan(info, choice, point.text, point.predicted[0], point.predicted[1],
                                int(point.stored_bytes), relative_mse, not curve.pinned, point.encoded, measured))
    return plans


def _reason(info: TensorInfo, point: measure.Point, budget: Budget, sample_rows: int) -> str:
    """What the plan predicted; the measured bytes and error are the tensor's stats, which
    the compress that writes it stores (``bie inspect`` shows both)."""
    numel = max(info.numel, 1)
    where = "whole tensor" if sample_rows >= info.rows else f"{sample_rows} of {info.rows} rows"
    return (f"auto ({budget.describe()}): predicted {8 * point.predicted[0] / numel:.3f} bits/param, "
            f"rel MSE {point.predicted[1]:.3g} ({where})")


class _Length:
    """A payload of ``n`` bytes for the dry run: only its length is read."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def _dry_run_writer(memo: dict):
    """A ``ContainerWriter`` that only counts: no bytes, no checksums, and each JSON record's
    stored length looked up in ``memo`` (a record is zstd-compressed at level 19 when that is
    smaller; the dry run sizes the same records several times per plan)."""
    from ..formats.cai import writer as writer_module

    class DryRunWriter(writer_module.ContainerWriter):
        def _write(self, data) -> None:
            self._offset += len(data)

        def _write_record(self, record_type, *body_parts, flags: int = 0) -> int:
            offset = self._offset
            self._offset += spec.RECORD_HEADER.size + sum(len(part) for part in body_parts)
            return offset

        def _write_json_record(self, record_type, obj: dict) -> int:
            body = writer_module._json_bytes(obj)
            length = memo.get(body)
            if length is None:
                length = memo[body] = len(writer_module._json_body(obj, self._json_compressors)[0])
            return self._write_record(record_type, _Length(length))

    return DryRunWriter(None)


@functools.lru_cache(maxsize=4096)
def _widest_floats(name: str) -> tuple[float, ...]:
    import random

    rng = random.Random(name)
    floats = []
    while len(floats) < 5:
        value = rng.uniform(1.0, 10.0) * 1e-150
        if len(repr(value)) == 23:
            floats.append(value)
    return tuple(floats)


@functools.lru_cache(maxsize=4096)
def _stand_in_digest(name: str) -> str:
    """The dry run's digest of every tensor: as long as a real one and as random (the index
    is zstd-compressed), the same in every run, so the plan need not read the source again
    to hash it (``compress`` does)."""
    import hashlib

    return hashlib.blake2b(name.encode(), digest_size=16).hexdigest()  # xxh3-128: 32 hex digits


def _unmeasured_stats(info: TensorInfo) -> dict:
    """An end record's error figures before they are measured, for the dry run: as wide as
    any (23-character floats) and with digits as random as measured ones (the index that
    repeats them is zstd-compressed); the same for a tensor in every run."""
    relative_mse, max_abs_error, snr_db, sum_squared_error, sum_squared_reference = _widest_floats(info.name)
    return {"count": info.numel, "relative_mse": relative_mse, "max_abs_error": max_abs_error, "snr_db": snr_db,
            "sum_squared_error": sum_squared_error, "sum_squared_reference": sum_squared_reference}


def predict_file_size(source: CheckpointSource, plans: list[TensorPlan] | None, chunk_size: int,
                      auto_summary: dict | None, memo: dict | None = None) -> int:
    """The container's size by a dry run of the writer over the planned chunks (payloads of
    the right lengths). ``plans=None``: everything but the tensors' own records and chunks.
    ``memo``: JSON record sizes from earlier dry runs of the same plan."""
    from ..pipeline import container_header
    from ..tensorcodec import rows_per_chunk

    writer = _dry_run_writer({} if memo is None else memo)
    writer.write_header(container_header(source, Planner(), chunk_size, auto_summary))
    for name, data in source.blobs.items():
        writer.write_blob(name, data)
    for plan in plans or ():
        info, encoded = plan.info, plan.encoded
        writer.begin_tensor({
            "name": info.name, "dtype": info.dtype, "shape": list(info.shape), "strategy": plan.choice.strategy,
            "config": plan.choice.config_dict, "rule": plan.choice.reason,
            "rows_per_chunk": rows_per_chunk(info, chunk_size), "chunk_count": len(encoded.chunks),
        })
        for start, stop, meta, length in encoded.chunks:
            writer.write_chunk(start, stop, meta, _Length(length))
        writer.end_tensor({
            "digest": encoded.digest if encoded.digest == _STUB_DIGEST else _stand_in_digest(info.name),
            "original_bytes": dtypes.nbytes(info.dtype, info.shape),
            "stored_bytes": plan.stored_bytes, "lossless": plan.relative_mse is None,
            "stats": None if plan.relative_mse is None else _unmeasured_stats(info) if encoded.sized_only
            else encoded.error.to_dict() if encoded.error is not None else None,
        })
    writer.finish()
    return writer.bytes_written


def plan_checkpoint(src, *, target_bits: float | None = None, target_size: str | None = None,
                    max_error: float | None = None, rules=(), policy=None, weighting: str = DEFAULT_WEIGHTING,
                    threads: int = 1, chunk_size: int, output: str | None = None, force: bool = False,
                    progress: Progress | None = None, source_format: str | None = None,
                    trellis: bool = True, handoff: bool = True) -> ModelPlan:
    """``bie plan``: the plan for a checkpoint, written as a TOML policy to ``output`` when given;
    with ``handoff``, the chunks it encoded too, beside it (``OUTPUT.encoded``, see
    :mod:`bie_cli.auto.handoff`), for ``compress --policy OUTPUT`` to write instead of encoding
    them again."""
    from .. import formats
    from ..paths import atomic_output, check_output_path
    from ..plan import load_policy_file, parse_rule
    from .budget import make_budget

    budget = make_budget(target_bits, target_size, max_error)
    if budget is None:
        raise BadInputError("give a budget: target_bits, target_size or max_error")
    if threads < 1:
        raise BadInputError("threads must be at least 1")
    if chunk_size < 1:
        raise BadInputError("chunk_size must be positive")
    src = os.fspath(src)
    pins = [parse_rule(rule) for rule in rules]
    if policy is not None:
        pins += load_policy_file(os.fspath(policy)).rules
    if output is not None:
        check_output_path(output, [src], force)
    # the chunks are kept without their errors: the compress that writes them measures those
    spool = measure.PayloadSpool(errors=False) if output is not None and handoff else None
    try:
        with formats.open_checkpoint(src, source_format) as source:
            plan = plan_model(source, budget, pins=Planner(None, pins), chunk_size=chunk_size, threads=threads,
                              weighting=weighting, progress=progress, trellis=trellis, spool=spool)
        if spool is not None:
            from . import handoff as handoff_file

            plan.handoff_path = handoff_file.path_for(output)
            plan.handoff_bytes, plan.handoff_warning = handoff_file.write_or_warn(plan.handoff_path, plan, chunk_size)
        if output is not None:
            with atomic_output(output) as temporary, open(temporary, "w", encoding="utf-8") as handle:
                handle.write(plan.to_toml())
    finally:
        if spool is not None:
            spool.close()
    return plan
