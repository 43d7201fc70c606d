"""Per-layer strategy choice: rules, policy files, built-in fallbacks, stored reasons."""

from __future__ import annotations

import pytest

import bie_cli
from bie_cli.errors import BadInputError, UnsupportedDtypeError
from bie_cli.formats.base import TensorInfo
from bie_cli.plan import Planner, load_policy, parse_rule, parse_strategy
from bie_cli.strategies import register
from bie_cli.strategies.raw import RawStrategy


class _PretendLossy(RawStrategy):
    """A lossy stand-in so the built-in fallbacks can be tested before real quantizers exist."""

    id = "test-lossy"
    lossless = False
    dtypes = frozenset({"F32", "F16", "BF16"})


register(_PretendLossy())


def test_parse_strategy_and_rule():
    spec = parse_strategy("zstd:level=19")
    assert spec.id == "zstd" and spec.options == {"level": "19"}
    rule = parse_rule("encoder.*.weight=gzip:level=1")
    assert rule.pattern == "encoder.*.weight" and rule.spec.id == "gzip"
    with pytest.raises(BadInputError):
        parse_strategy("zstd:level")


def test_first_matching_rule_wins_and_reason_is_recorded():
    planner = Planner("zstd", [parse_rule("*.bias=raw"), parse_rule("*=gzip")])
    bias = planner.choose(TensorInfo("layer.bias", "F32", (8,)))
    weight = planner.choose(TensorInfo("layer.weight", "F32", (8, 8)))
    assert (bias.strategy, bias.reason) == ("raw", "--rule *.bias=raw")
    assert (weight.strategy, weight.reason) == ("gzip", "--rule *=gzip")


def test_built_in_defaults_keep_small_1d_and_integer_tensors_lossless():
    planner = Planner("test-lossy")
    assert planner.choose(TensorInfo("w", "F32", (256, 256))).strategy == "test-lossy"
    for info, why, strategy in [(TensorInfo("b", "F32", (4096,)), "1-D", "float-split"),
                                (TensorInfo("ids", "I64", (64, 64)), "I64", "zstd"),
                                (TensorInfo("tiny", "F32", (4, 4)), "fewer than", "float-split")]:
        choice = planner.choose(info)
        assert choice.strategy == strategy and choice.reason.startswith("built-in") and why in choice.reason


def test_default_policy_is_lossless_float_split_and_smallest_of_the_rest(small_model, tmp_path):
    planner = Planner()
    assert planner.choose(TensorInfo("w", "BF16", (8, 8))).strategy == "float-split"
    ids = planner.choose(TensorInfo("ids", "I64", (1, 512)))
    assert [c.strategy for c in ids.candidates] == ["zstd", "rle", "delta"]
    mask = planner.choose(TensorInfo("mask", "BOOL", (16, 16)))
    assert [c.strategy for c in mask.candidates] == ["zstd", "rle"]
    bie_cli.compress_model(small_model, tmp_path / "m.cai")
    with bie_cli.open_container(tmp_path / "m.cai") as container:
        assert container.info("encoder.weight").strategy == "float-split"
        # 0..127 in int64: deltas are all 1, which delta coding stores best
        position_ids = container.info("position_ids")
        assert position_ids.strategy == "delta" and "first chunk" in position_ids.rule


def test_an_explicit_rule_with_a_dtype_the_strategy_refuses_is_an_error():
    planner = Planner("zstd", [parse_rule("ids=test-lossy")])
    with pytest.raises(UnsupportedDtypeError, match="'ids'"):
        planner.choose(TensorInfo("ids", "I64", (64, 64)))


def test_policy_file_matches_on_dtype_rank_and_size(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'strategy = "gzip:level=1"\n'
        '[[rules]]\nmatch = "*"\ndtype = "I64"\nstrategy = "raw"\n'
        '[[rules]]\nmin_ndim = 2\nmin_numel = 100\nstrategy = "zstd"\noptions = { level = 19 }\n'
    )
    default, rules = load_policy(str(policy))
    planner = Planner(default, rules)
    assert planner.choose(TensorInfo("ids", "I64", (2, 100))).strategy == "raw"
    big = planner.choose(TensorInfo("w", "F32", (20, 20)))
    assert big.strategy == "zstd" and big.config_dict == {"level": 19}
    assert planner.choose(TensorInfo("w", "F32", (5, 5))).config_dict == {"level": 1}


def test_choices_are_stored_and_shown_by_inspect(bie, small_model, tmp_path):
    cai = tmp_path / "m.cai"
    bie_cli.compress_model(small_model, cai, strategy="gzip:level=2", rules=["*.weight=zstd:level=7"])
    with bie_cli.open_container(cai) as container:
        weight = container.info("encoder.weight")
        assert (weight.strategy, weight.config, weight.rule) == ("zstd", {"level": 7}, "--rule *.weight=zstd:level=7")
        bias = container.info("encoder.bias")
        assert (bias.strategy, bias.config, bias.rule) == ("gzip", {"level": 2}, "default (gzip:level=2)")
    shown = bie("inspect", str(cai)).stdout
    assert "--rule *.weight=zstd:level=7" in shown and "default (gzip:level=2)" in shown
