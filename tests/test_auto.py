"""``auto``: budgets, convex hulls and allocation, ``bie plan``, and compress with a budget."""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import write_safetensors
from hypothesis import given, settings
from hypothesis import strategies as st

import bie_cli
from bie_cli import formats
from bie_cli.auto import allocate
from bie_cli.auto.budget import make_budget, parse_target_size
from bie_cli.auto.measure import Point, TensorCurve
from bie_cli.auto.planner import distortion_weights, plan_model
from bie_cli.errors import BadInputError
from bie_cli.formats.base import TensorInfo
from bie_cli.formats.cai.reader import ContainerReader
from bie_cli.plan import Choice, exact_pattern

CHUNK = 4 << 20


@pytest.fixture
def layered_model(tmp_path: Path) -> Path:
    """Weights of different sizes and spreads (heavy-tailed, like trained ones), plus tensors kept exact."""
    rng = np.random.default_rng(3)
    tensors = {
        "embed.weight": (rng.standard_t(5, (600, 64)) * 0.05).astype(np.float32),
        "layer.0.weight": (rng.standard_normal((128, 96)) * 0.02).astype(np.float32),
        "layer.1.weight": (rng.laplace(size=(96, 128)) * 0.5).astype(np.float32),
        "layer.1.bias": rng.standard_normal(128).astype(np.float32),
        "head[0].weight*": rng.standard_normal((40, 64)).astype(np.float32),  # glob characters in the name
        "ids": np.arange(300, dtype=np.int64),
    }
    return write_safetensors(tmp_path / "layered.safetensors", tensors)


@pytest.fixture
def bie(capsys):
    """The CLI in this process (exit code, stdout, stderr): a subprocess per call costs seconds."""
    from conftest import CliResult

    from bie_cli.cli.app import main

    def run(*args: str) -> CliResult:
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def _bits(container: Path, parameters: int) -> float:
    return 8 * container.stat().st_size / parameters


def _parameters(path: Path) -> int:
    with formats.open_checkpoint(str(path)) as source:
        return sum(info.numel for info in source.tensors)


# -- budgets -------------------------------------------------------------------------------


def test_target_size_units_and_percent():
    assert parse_target_size("12MB").file_bytes(0, 0) == 12 << 20
    assert parse_target_size("1.5k").file_bytes(0, 0) == 1536
    assert parse_target_size("3000000").file_bytes(0, 0) == 3_000_000
    assert parse_target_size("30%").file_bytes(10, 1000) == 300
    assert make_budget(target_bits=4.5).file_bytes(1000, 0) == 562


@pytest.mark.parametrize("text", ["", "MB", "12XB", "-3MB", "0", "abc%", "0%", "nan", "inf"])
def test_malformed_sizes_are_refused(text):
    with pytest.raises(BadInputError):
        parse_target_size(text)


@pytest.mark.parametrize("kwargs", [{"target_bits": 0.0}, {"target_bits": math.nan}, {"max_error": -1.0},
                                    {"target_bits": 4.0, "max_error": 0.1}])
def test_bad_budgets_are_refused(kwargs):
    """In library terms (the CLI shows its flags)."""
    from bie_cli.auto.budget import cli_terms

    with pytest.raises(BadInputError) as caught:
        make_budget(**kwargs)
    message = str(caught.value)
    assert "--" not in message and ("target_bits" in message or "max_error" in message)
    assert "--target-bits" in cli_terms(message) or "--max-error" in cli_terms(message)


# -- hull and allocation --------------------------------------------------------------------


def _is_lower_hull(rates, distortions, hull) -> bool:
    """Every point lies on or above the piecewise-linear hull, and the hull is convex and falling."""
    hr, hd = [rates[i] for i in hull], [distortions[i] for i in hull]
    if any(b >= a for a, b in itertools.pairwise(hd)):
        return False
    slopes = [(hd[i + 1] - hd[i]) / (hr[i + 1] - hr[i]) for i in range(len(hull) - 1)]
    if any(b < a - 1e-9 for a, b in itertools.pairwise(slopes)):
        return False
    for r, d in zip(rates, distortions, strict=True):
        if r < hr[0] - 1e-9:
            return False
        if r >= hr[-1]:
            if d < hd[-1] - 1e-9:
                return False
            continue
        k = max(i for i in range(len(hr)) if hr[i] <= r)
        if k + 1 < len(hr):
            line = hd[k] + (hd[k + 1] - hd[k]) * (r - hr[k]) / (hr[k + 1] - hr[k])
            if d < line - 1e-9 * max(1.0, abs(line)):
                return False
    return True


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 1000), st.integers(0, 1000)), min_size=1, max_size=25, unique_by=lambda p: p[0]))
def test_lower_hull_is_the_convex_lower_front(points):
    rates = [float(r) for r, _ in points]
    distortions = [float(d) for _, d in points]
    hull = allocate.lower_hull(rates, distortions)
    assert hull[0] == min(range(len(rates)), key=lambda i: (rates[i], distortions[i]))
    assert _is_lower_hull(rates, distortions, hull)


def _curve(name: str, rates, errors, weight=1.0) -> TensorCurve:
    choice = Choice("raw", None, {}, "")
    points = [Point(choice, f"c{i}", float(r), float(e), e == 0) for i, (r, e) in enumerate(zip(rates, errors, strict=True))]
    curve = TensorCurve(TensorInfo(name, "F32", (4, 4)), points, 4, weight=weight)
    return curve


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 100)), min_size=1, max_size=5, unique_by=lambda p: p[0]),
                min_size=1, max_size=4),
       st.integers(0, 200))
def test_allocation_fits_and_beats_every_cheaper_hull_mix(tensors, slack):
    curves = [_curve(f"t{k}", [r for r, _ in pts], [e for _, e in pts]) for k, pts in enumerate(tensors)]
    allocate.build_hulls(curves)
    floor = sum(c.points[c.hull[0]].stored_bytes for c in curves)
    budget = floor + slack
    picks = allocate.allocate(curves, budget)
    spent = sum(c.points[p].stored_bytes for c, p in zip(curves, picks, strict=True))
    assert spent <= budget
    assert all(p in c.hull for c, p in zip(curves, picks, strict=True))
    # no single hull upgrade that fits is left on the table
    for c, p in zip(curves, picks, strict=True):
        at = c.hull.index(p)
        if at + 1 < len(c.hull):
            assert spent + c.points[c.hull[at + 1]].stored_bytes - c.points[p].stored_bytes > budget


def test_exact_pattern_matches_only_its_name():
    import fnmatch

    name = "head[0].weight*?"
    assert fnmatch.fnmatchcase(name, exact_pattern(name))
    assert not fnmatch.fnmatchcase("head0.weightX?", exact_pattern(name))


# -- end to end -----------------------------------------------------------------------------


def test_target_bits_meets_the_budget_and_the_plan_reproduces_it(bie, layered_model, tmp_path):
    parameters = _parameters(layered_model)
    plan_file, direct, via_plan = tmp_path / "plan.toml", tmp_path / "direct.cai", tmp_path / "via.cai"
    planned = bie("plan", str(layered_model), "--target-bits", "3.5", "-o", str(plan_file), "--json")
    assert planned.exit_code == 0, planned.stderr
    report = json.loads(planned.stdout)
    assert report["predicted_bits_per_parameter"] <= 3.5
    policy = tomllib.loads(plan_file.read_text())
    assert {r["match"] for r in policy["rules"]} >= {exact_pattern("head[0].weight*")}
    assert bie("compress", str(layered_model), "-o", str(direct), "--target-bits", "3.5").exit_code == 0
    assert bie("compress", str(layered_model), "-o", str(via_plan), "--policy", str(plan_file)).exit_code == 0
    assert direct.read_bytes() == via_plan.read_bytes()
    assert 3.2 <= _bits(direct, parameters) <= 3.5
    # the dry run knows every record but the digits of the error figures compress measures
    assert abs(direct.stat().st_size - report["predicted_bytes"]) <= 16
    planned_tensors = {t["name"]: t for t in report["tensors"]}
    with ContainerReader(str(direct)) as reader:
        assert reader.header["options"]["auto"]["budget"] == "--target-bits 3.5"
        lossy = [e for e in reader.entries if not e.lossless]
        assert {e.name for e in lossy} == {"embed.weight", "layer.0.weight", "layer.1.weight", "head[0].weight*"}
        for entry in reader.entries:
            row = planned_tensors[entry.name]
            assert row["lossless"] == entry.lossless and row["stored_bytes"] > 0
        for entry in lossy:
            # the reason holds the prediction; the measured error is the stats compress stored
            assert entry.rule.startswith("auto (--target-bits 3.5): predicted")
            predicted = planned_tensors[entry.name]["predicted_relative_mse"]
            assert f"rel MSE {predicted:.3g}" in entry.rule
            # (the plan measures a tensor's error itself only when it encoded every candidate whole)
            assert planned_tensors[entry.name]["relative_mse"] in (None, entry.stats["relative_mse"])
    inspected = bie("inspect", str(direct))
    assert "auto (--target-bits 3.5)" in inspected.stdout and "measured" not in inspected.stdout
    assert bie("verify", str(direct), "--against", str(layered_model), "--quiet").exit_code == 0


def test_more_bits_never_give_more_error(layered_model):
    totals = []
    with formats.open_checkpoint(str(layered_model)) as source:
        for bits in (2.5, 4.5, 6.0):
            plan = plan_model(source, make_budget(target_bits=bits), chunk_size=CHUNK)
            assert plan.bits_per_parameter <= bits
            totals.append(sum(t.relative_mse or 0.0 for t in plan.tensors))
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[-1]


def test_target_size_and_user_rules_pin_tensors(layered_model, tmp_path):
    out = tmp_path / "sized.cai"
    stats = bie_cli.compress_model(layered_model, out, target_size="40%", rules=["layer.0.*=zstd"])
    source_bytes = sum(t.original_bytes for t in stats.tensors)
    assert out.stat().st_size <= 0.4 * source_bytes
    pinned = next(t for t in stats.tensors if t.name == "layer.0.weight")
    assert (pinned.strategy, pinned.reason) == ("zstd", "--rule layer.0.*=zstd")


def test_max_error_bounds_every_tensor_and_verify_checks_it(bie, layered_model, tmp_path):
    out = tmp_path / "bounded.cai"
    stats = bie_cli.compress_model(layered_model, out, max_error=1e-3)
    lossy = [t for t in stats.tensors if not t.lossless]
    assert lossy and all(t.error["relative_mse"] <= 1e-3 for t in lossy)
    looser = bie_cli.compress_model(layered_model, tmp_path / "looser.cai", max_error=3e-2)
    assert looser.stored_bytes < stats.stored_bytes
    # the bound travels in the header: verify --against checks it without being told
    assert bie("verify", str(out), "--against", str(layered_model), "--quiet").exit_code == 0
    strict = bie("verify", str(tmp_path / "looser.cai"), "--against", str(layered_model), "--max-error", "1e-4")
    assert strict.exit_code == 1
    exact = bie_cli.compress_model(layered_model, tmp_path / "exact.cai", max_error=0.0)
    assert all(t.lossless for t in exact.tensors)


@pytest.mark.parametrize("args, message", [
    (["--target-bits", "0.01"], "--target-bits 0.01 (0.00994 bits/param, 82 bytes) is below the smallest"),
    (["--target-bits", "40"], "lossless size"),
    (["--target-size", "12QB"], "is not a size"),
    (["--target-bits", "4", "--max-error", "0.1"], "different budgets"),
    (["--target-bits", "4", "--strategy", "nf4"], "drop --strategy"),
])
def test_bad_budgets_exit_2_and_write_nothing(bie, layered_model, tmp_path, args, message):
    out = tmp_path / "never.cai"
    result = bie("compress", str(layered_model), "-o", str(out), *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [layered_model]
    planned = bie("plan", str(layered_model), "-o", str(tmp_path / "never.toml"), *[a for a in args if a not in ("--strategy", "nf4")])
    if "--strategy" not in args:
        assert planned.exit_code == 2 and not (tmp_path / "never.toml").exists()


def test_minilm_target_bits(minilm_path):
    """The real model: every budget met on the whole file, and the 2-D weights the ones made lossy."""
    with formats.open_checkpoint(str(minilm_path)) as source:
        parameters = sum(info.numel for info in source.tensors)
        plan = plan_model(source, make_budget(target_bits=4.0), chunk_size=CHUNK, threads=2)
    assert 3.9 <= plan.bits_per_parameter <= 4.0
    assert plan.file_bytes <= 4.0 * parameters / 8
    lossy = {t.info.name for t in plan.tensors if t.relative_mse is not None}
    assert "embeddings.word_embeddings.weight" in lossy and all(name.endswith(".weight") for name in lossy)
    # sampled tensors are encoded whole for their sizes only: their error is compress's to measure
    embeddings = next(t for t in plan.tensors if t.info.name == "embeddings.word_embeddings.weight")
    assert not embeddings.measured and embeddings.to_dict()["relative_mse"] is None
    assert embeddings.encoded.sized_only and embeddings.encoded.error is None


def test_an_output_head_weighs_as_much_as_every_residual_branch():
    from bie_cli.auto.planner import distortion_weights

    decoder = [TensorInfo(f"model.layers.{i}.mlp.up_proj.weight", "F32", (8, 4)) for i in range(3)]
    tied = [*decoder, TensorInfo("model.embed_tokens.weight", "F32", (16, 4))]
    assert distortion_weights(tied, "tensor")["model.embed_tokens.weight"] == 6.0
    untied = [*tied, TensorInfo("lm_head.weight", "F32", (16, 4))]
    weights = distortion_weights(untied, "tensor")
    assert weights["lm_head.weight"] == 6.0 and weights["model.embed_tokens.weight"] == 1.0
    encoder = [TensorInfo("embeddings.word_embeddings.weight", "F32", (16, 4)),
               TensorInfo("encoder.layer.0.output.dense.weight", "F32", (4, 4))]
    assert set(distortion_weights(encoder, "tensor").values()) == {1.0}
    assert distortion_weights(encoder, "params")["embeddings.word_embeddings.weight"] == 64.0


def test_compress_with_a_budget_writes_the_plans_encodes_without_encoding_again(layered_model, tmp_path, monkeypatch):
    """(That they are the bytes a fresh encode gives: the plan-reproduces test above.)"""
    from bie_cli import tensorcodec

    calls = []
    real = tensorcodec.encode_chunk
    monkeypatch.setattr(tensorcodec, "encode_chunk", lambda *a: calls.append(a[0].info.name) or real(*a))
    stats = bie_cli.compress_model(layered_model, tmp_path / "a.cai", target_bits=3.5)
    assert calls == [] and len(stats.tensors) == 6


def test_a_weighting_file_spends_the_bytes_where_it_says(layered_model, tmp_path):
    from bie_cli.auto.planner import distortion_weights

    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"layer.0.weight": 1000.0, "embed.weight": 1.0, "layer.1.weight": 1.0}))
    with formats.open_checkpoint(str(layered_model)) as source:
        table = distortion_weights(source.tensors, str(weights))
        assert table["layer.0.weight"] == 1000.0 and table["head[0].weight*"] == 1.0  # unlisted: the median
        plan = plan_model(source, make_budget(target_bits=3.5), chunk_size=CHUNK, weighting=str(weights))
    assert plan.summary()["weighting"] == "w.json"
    errors = {t.info.name: t.relative_mse for t in plan.tensors}
    # as big as layer.1 (about as much error under the default weighting), 1000x the weight
    assert errors["layer.0.weight"] < errors["layer.1.weight"] / 10


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "JSON object"), ("{", "is not JSON"), ('{"embed.weight": -1}', "positive number"),
    ('{"other": 1}', "names none"), (None, "cannot be read"),
])
def test_bad_weighting_files_are_refused(layered_model, tmp_path, content, message):
    weights = tmp_path / "w.json"
    if content is not None:
        weights.write_text(content)
    with pytest.raises(BadInputError, match=message):
        bie_cli.compress_model(layered_model, tmp_path / "never.cai", target_bits=3.5, weighting=str(weights))
    assert not (tmp_path / "never.cai").exists()


def test_screening_keeps_what_may_be_on_the_hull():
    from bie_cli.auto.planner import _near_hull

    def point(rate, mse):
        return Point(Choice("quant", None, {}, ""), "x", rate, mse, mse == 0)

    others = [point(100, 0.1), point(200, 0.02), point(400, 0.005), point(1000, 0.0)]
    assert _near_hull(others, point(150, 0.05))  # below the hull
    assert _near_hull(others, point(150, 0.06 * 1.2))  # within the margin (hull at 150: 0.06)
    assert not _near_hull(others, point(150, 0.1))
    assert _near_hull(others, point(50, 1.0)) == "below" and _near_hull(others, point(2000, 1.0)) is True  # beyond


@pytest.mark.parametrize(("dtype", "magnitude"), [(np.float32, 0.03), (np.float64, 0.03), (np.float64, 1e150)])
def test_the_step_ladder_and_group_grids_from_histograms_match_real_encodes(dtype, magnitude):
    """One compiled pass over the sample gives each step's exact error and its bytes within 1%
    (the rANS stream taken as its histogram estimate), outliers stored exactly included;
    1e150: F64 scales beyond float32's range (stored as f64)."""
    from bie_cli.auto import candidates, measure

    rng = np.random.default_rng(5)
    sample = (rng.standard_t(4, (256, 128)) * magnitude).astype(dtype)  # a sample is at least 32 Ki elements
    # t(4) tails reach beyond the fine steps' 8-bit range (+-3.2 RMS at 0.025): stored exactly
    info = TensorInfo("w", "F32" if dtype == np.float32 else "F64", (4096, 128))
    texts = list(candidates.LADDER[::2])  # 0.025 (outliers stored exactly) .. 1.6, two thirds of a bit apart
    fast = measure.ladder_points(sample, info, texts, chunks=2)
    from bie_cli.strategies import registry

    assert registry.get("quant").encode(sample, candidates.resolve(texts[0]).config)[1]["exact"] > 0
    for point, text in zip(fast, texts, strict=True):
        real = measure.measure_point(sample, info, candidates.resolve(text), text, 2)
        assert point.relative_mse == pytest.approx(real.relative_mse, rel=1e-9)
        assert point.stored_bytes == pytest.approx(real.stored_bytes, rel=0.01)
    if magnitude < 1:
        assert measure.ladder_points(sample.astype(np.float16), TensorInfo("w", "F16", (4096, 128)), texts, 2) is None
    groups = list(candidates.GROUP_GRIDS)
    for point, text in zip(measure.group_points(sample, info, groups, 2), groups, strict=True):
        real = measure.measure_point(sample, info, candidates.resolve(text), text, 2)
        assert point.relative_mse == pytest.approx(real.relative_mse, rel=1e-9)
        assert point.stored_bytes == pytest.approx(real.stored_bytes, rel=0.01)
    assert measure.group_points(sample[:, :100], info, groups, 2) is None  # 100 is no multiple of 64: padded groups


def test_roles_weighting_is_llama_cpps_kquant_prior():
    from bie_cli.auto.planner import KQUANT_WEIGHT, distortion_weights

    roles = ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj", "mlp.up_proj")
    infos = [TensorInfo(f"model.layers.{i}.{role}.weight", "F32", (8, 4)) for i in range(16) for role in roles]
    weights = distortion_weights([*infos, TensorInfo("model.embed_tokens.weight", "F32", (16, 4))], "roles")
    boosted = {int(name.split(".")[2]) for name, w in weights.items() if w == KQUANT_WEIGHT}
    assert boosted == {0, 1, 4, 7, 10, 13, 14, 15}  # first and last eighth, every third between
    assert all(w in (1.0, 32.0) for name, w in weights.items() if "q_proj" in name or "up_proj" in name or "embed" in name)
    encoder = [TensorInfo("encoder.layer.0.attention.self.value.weight", "F32", (4, 4))]
    assert distortion_weights(encoder, "roles") == {"encoder.layer.0.attention.self.value.weight": 1.0}
    # the default, auto: roles where it recognises the names, tensor where it does not
    assert distortion_weights(infos, "auto") == distortion_weights(infos, "roles")
    assert distortion_weights(encoder, "auto") == distortion_weights(encoder, "tensor")


def test_the_tcq_ladder_from_viterbi_passes_matches_real_encodes():
    """measure.tcq_points: each step's error as a decode gives it (float32 rounding apart) and its
    bytes within 1%, outliers beyond 254 steps (stored exactly) included; None for f16 samples."""
    from bie_cli.auto import candidates, measure
    from bie_cli.strategies import registry

    sample = (np.random.default_rng(8).standard_t(4, (256, 128)) * 0.03).astype(np.float32)
    info = TensorInfo("w", "F32", (4096, 128))
    texts = list(candidates.TCQ_LADDER[::4])  # 0.0125 (outliers stored exactly) .. 0.63
    assert registry.get("tcq").encode(sample, candidates.resolve(texts[0]).config)[1]["exact"] > 0
    for point, text in zip(measure.tcq_points(sample, info, texts, chunks=2), texts, strict=True):
        real = measure.measure_point(sample, info, candidates.resolve(text), text, 2)
        assert point.relative_mse == pytest.approx(real.relative_mse, rel=1e-5)
        assert point.stored_bytes == pytest.approx(real.stored_bytes, rel=0.01)
    assert measure.tcq_points(sample.astype(np.float16), TensorInfo("w", "F16", (4096, 128)), texts, 2) is None


def test_trellis_candidates_lower_the_error_and_the_plan_reproduces_it(bie, layered_model, tmp_path):
    with formats.open_checkpoint(str(layered_model)) as source:
        plain, trellis = (plan_model(source, make_budget(target_bits=3.5), chunk_size=CHUNK, trellis=t)
                          for t in (False, True))
    assert {t.choice.strategy for t in trellis.tensors if t.auto} >= {"tcq"}
    assert "tcq" not in {t.choice.strategy for t in plain.tensors}
    assert trellis.bits_per_parameter <= 3.5

    weights = distortion_weights([t.info for t in plain.tensors], "tensor")

    def weighted(plan):
        return sum((t.relative_mse or 0.0) * weights[t.info.name] for t in plan.tensors)

    assert weighted(trellis) < weighted(plain)
    plan_file, direct, via_plan = tmp_path / "plan.toml", tmp_path / "direct.cai", tmp_path / "via.cai"
    # the trellis is a default candidate; --no-trellis leaves it out (and here the plan's encodes
    # are not handed on: compress --policy encodes every chunk itself, to the same bytes)
    assert bie("plan", str(layered_model), "--target-bits", "3.5", "-o", str(plan_file), "--no-encodes").exit_code == 0
    assert not Path(f"{plan_file}.encoded").exists()
    assert bie("compress", str(layered_model), "-o", str(direct), "--target-bits", "3.5").exit_code == 0
    assert bie("compress", str(layered_model), "-o", str(via_plan), "--policy", str(plan_file)).exit_code == 0
    assert direct.read_bytes() == via_plan.read_bytes()
    with ContainerReader(str(direct)) as reader:
        assert reader.header["options"]["auto"]["trellis"] is True
    assert bie("compress", str(layered_model), "-o", str(direct), "-f", "--target-bits", "3.5", "--no-trellis").exit_code == 0
    with ContainerReader(str(direct)) as reader:
        assert "trellis" not in reader.header["options"]["auto"]
        assert "tcq" not in {e.strategy for e in reader.entries}
    refused = bie("compress", str(layered_model), "-o", str(tmp_path / "x.cai"), "--trellis")
    assert refused.exit_code == 2 and "trellis needs a budget" in refused.stderr


def test_bie_plan_hands_its_encodes_to_compress_policy_and_never_stale_ones(bie, layered_model, tmp_path, monkeypatch):
    from bie_cli import tensorcodec
    from bie_cli.auto import handoff

    plan_file = tmp_path / "plan.toml"
    result = bie("plan", str(layered_model), "--target-bits", "3.5", "-o", str(plan_file))
    assert result.exit_code == 0 and "warning" not in result.stderr
    sidecar = Path(handoff.path_for(plan_file))
    assert sidecar.stat().st_size > 0 and f"{sidecar}, " in result.stdout and "--no-encodes skips it" in result.stdout
    calls = []
    real = tensorcodec.encode_chunk
    monkeypatch.setattr(tensorcodec, "encode_chunk", lambda *a: calls.append(a[0].info.name) or real(*a))

    stats = []

    def policy_compress(source, name):
        stats.append(bie_cli.compress_model(source, tmp_path / name, policy=plan_file, chunk_size=CHUNK))
        return (tmp_path / name).read_bytes()

    handed = policy_compress(layered_model, "handed.cai")
    assert calls == []  # every chunk, lossy and lossless, written from the plan's file
    assert stats[-1].handoff == {"file": str(sidecar), "chunks": 6, "reused": 6}
    # (byte for byte what --target-bits writes: test_target_bits_meets_the_budget_and_the_plan_reproduces_it)
    # a changed source: the changed tensor is encoded again, the others still handed on
    from safetensors.numpy import load_file

    tensors = load_file(str(layered_model))
    tensors["layer.0.weight"][5, 7] += 0.25
    changed = write_safetensors(tmp_path / "changed.safetensors", tensors)
    calls.clear()
    from_changed = policy_compress(changed, "changed.cai")
    assert calls == ["layer.0.weight"] and stats[-1].handoff["reused"] == 5
    sidecar.rename(tmp_path / "aside")
    assert from_changed == policy_compress(changed, "fresh.cai")  # what a fresh encode writes
    # another bie version (or encoder code), another chunk size, a damaged file: not used at all
    (tmp_path / "aside").rename(sidecar)
    assert handoff.Handoff.open(plan_file, CHUNK // 2) is None
    monkeypatch.setattr(handoff, "__version__", "0.0.0-other")
    calls.clear()
    assert policy_compress(layered_model, "other.cai") == handed and len(calls) == 6
    monkeypatch.undo()
    intact = sidecar.read_bytes()
    sidecar.write_bytes(intact[:-5])
    assert handoff.Handoff.open(plan_file, CHUNK) is None
    assert policy_compress(layered_model, "damaged.cai") == handed
    sidecar.write_bytes(intact[:100] + bytes([intact[100] ^ 1]) + intact[101:])  # a payload byte
    assert policy_compress(layered_model, "flipped.cai") == handed


def test_a_full_disk_or_a_directory_in_the_way_leaves_the_plan_without_its_encodes(bie, layered_model, tmp_path,
                                                                                 monkeypatch):
    import builtins

    from bie_cli.auto import handoff

    out = tmp_path / "out"
    out.mkdir()
    plan_file = out / "plan.toml"
    sidecar = Path(handoff.path_for(plan_file))
    sidecar.write_bytes(b"an older plan's encodes")
    # the file's writes go to /dev/full: ENOSPC from the kernel, as on a full disk
    monkeypatch.setattr(handoff, "open", lambda path, mode="r": builtins.open("/dev/full", mode), raising=False)
    result = bie("plan", str(layered_model), "--target-bits", "3.5", "-o", str(plan_file), "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("warning:") and "not written (No space left on device)" in result.stderr
    assert plan_file.exists() and sorted(p.name for p in out.iterdir()) == ["plan.toml"]  # no partial file
    monkeypatch.undo()
    sidecar.mkdir()  # a directory in the way: the rename fails
    result = bie("plan", str(layered_model), "--target-bits", "3.5", "-o", str(plan_file), "-f", "--json")
    assert result.exit_code == 0 and "not written" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["plan.toml", "plan.toml.encoded"] and sidecar.is_dir()


def test_a_size_budget_measures_the_tcq_steps_near_its_choices_and_chooses_as_with_all(tmp_path, monkeypatch):
    from bie_cli.auto import candidates, measure, planner

    rng = np.random.default_rng(5)
    model = write_safetensors(tmp_path / "sampled.safetensors", {  # both measured on row samples
        "a.weight": (rng.standard_t(5, (1200, 64)) * 0.05).astype(np.float32),
        "b.weight": (rng.standard_normal((700, 96)) * 0.02).astype(np.float32)})

    measured = []
    real = measure.tcq_points
    monkeypatch.setattr(measure, "tcq_points", lambda s, i, texts, c: measured.extend(texts) or real(s, i, texts, c))

    def plans():
        with formats.open_checkpoint(str(model)) as source:
            return [[t.text for t in plan_model(source, make_budget(target_bits=b), chunk_size=CHUNK).tensors]
                    for b in (2.5, 4.5)]

    refined, refined_steps = plans(), len(measured)
    assert all(text.startswith("tcq:") for texts in refined for text in texts)
    assert 4 * len(candidates.TCQ_FIRST) < refined_steps < 4 * len(candidates.TCQ_LADDER)
    monkeypatch.setattr(candidates, "TCQ_FIRST", frozenset(candidates.TCQ_LADDER))
    monkeypatch.setattr(planner, "LADDER_SCREEN_MARGIN", math.inf)
    measured.clear()
    assert plans() == refined and len(measured) == 4 * len(candidates.TCQ_LADDER)
