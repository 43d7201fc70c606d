"""The battery every registered strategy gets automatically (numcodecs-style).

For each strategy and each dtype it accepts: round trip (bit-exact when the
strategy is lossless; right shape, dtype and finite error otherwise) on
ordinary, empty, 0-d, non-contiguous and special-value input; config JSON
round trip; deterministic bytes; golden payloads decode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bie_cli import dtypes
from bie_cli.strategies import all_strategies, get

STRATEGIES = all_strategies()
GOLDEN = Path(__file__).parent / "golden" / "strategies"


def _sample(dtype_name: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    np_dtype = dtypes.get(dtype_name).numpy
    count = int(np.prod(shape)) if shape else 1
    if dtype_name == "BOOL":
        values = rng.random(count) > 0.5
    elif dtype_name.startswith(("U", "I")):
        info = np.iinfo(np_dtype)
        values = rng.integers(max(info.min, -1000), min(info.max, 1000), count, endpoint=True).astype(np_dtype)
    elif dtype_name.startswith("C"):
        values = (rng.standard_normal(count) + 1j * rng.standard_normal(count)).astype(np_dtype)
    else:
        values = (rng.standard_normal(count) * 0.05).astype(np.float32).astype(np_dtype)
    return np.asarray(values, dtype=np_dtype).reshape(shape)


def _cases():
    for strategy in STRATEGIES:
        accepted = sorted(strategy.dtypes) if strategy.dtypes is not None else sorted(dtypes.ALL_NAMES)
        for dtype_name in accepted:
            yield pytest.param(strategy, dtype_name, id=f"{strategy.id}-{dtype_name}")


def _check(strategy, chunk: np.ndarray, dtype_name: str, config=None) -> None:
    config = config if config is not None else strategy.default_config()
    payload, meta = strategy.encode(chunk, config)
    json.dumps(meta)  # meta must be JSON
    decoded = strategy.decode(memoryview(payload), json.loads(json.dumps(meta)), chunk.shape, dtype_name)
    assert decoded.shape == chunk.shape
    assert decoded.dtype == dtypes.get(dtype_name).numpy
    if strategy.lossless:
        assert np.ascontiguousarray(decoded).tobytes() == np.ascontiguousarray(chunk).tobytes()
    else:
        assert np.isfinite(decoded.astype(np.float64)).all()


@pytest.mark.parametrize("strategy,dtype_name", list(_cases()))
@pytest.mark.parametrize("shape", [(33, 17), (1000,), (4, 3, 5), (1,), (0, 4), (5, 0), ()], ids=str)
def test_round_trip(strategy, dtype_name, shape):
    _check(strategy, _sample(dtype_name, shape), dtype_name)


@pytest.mark.parametrize("strategy,dtype_name", list(_cases()))
def test_non_contiguous_input(strategy, dtype_name):
    base = _sample(dtype_name, (40, 30), seed=1)
    _check(strategy, base[::2, ::3], dtype_name)
    _check(strategy, base.T, dtype_name)


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s.lossless], ids=lambda s: s.id)
def test_lossless_keeps_special_float_values(strategy):
    for dtype_name in ("F32", "F16", "BF16", "F64"):
        if not strategy.supports(dtype_name):
            continue
        specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 1.0], dtype=np.float64)
        chunk = specials.astype(dtypes.get(dtype_name).numpy)
        # a NaN with a non-default payload, set through the integer view
        raw = chunk.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[chunk.itemsize]).copy()
        raw[1] |= 1
        _check(strategy, raw.view(chunk.dtype).reshape(3, 3), dtype_name)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.id)
def test_config_round_trips_through_json(strategy):
    config = strategy.default_config()
    as_json = json.loads(json.dumps(strategy.config_to_dict(config)))
    assert strategy.config_from_dict(as_json) == config
    # and from command-line strings
    as_strings = {k: str(v) for k, v in as_json.items() if v is not None}
    assert strategy.config_from_dict(as_strings) == strategy.config_from_dict({k: v for k, v in as_json.items() if v is not None})


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.id)
def test_unknown_option_is_refused_with_the_valid_ones(strategy):
    from bie_cli.errors import BadInputError

    with pytest.raises(BadInputError, match="has no option 'no_such_option'"):
        strategy.config_from_dict({"no_such_option": "1"})


@pytest.mark.parametrize("strategy,dtype_name", [c for c in _cases() if c.values[1] in ("F32", "I64")])
def test_encoding_is_deterministic(strategy, dtype_name):
    chunk = _sample(dtype_name, (64, 16), seed=3)
    first = strategy.encode(chunk, strategy.default_config())
    second = strategy.encode(chunk.copy(), strategy.default_config())
    assert bytes(first[0]) == bytes(second[0]) and first[1] == second[1]


def test_every_builtin_strategy_has_golden_payloads():
    from bie_cli.strategies.registry import _BUILTIN

    missing = [sid for sid in _BUILTIN if not list((GOLDEN / sid).glob("*.json"))]
    assert not missing, f"no golden payloads for {missing}; run tests/golden/make_strategy_golden.py"


def _golden_cases():
    for meta_path in sorted(GOLDEN.glob("*/*.json")):
        yield pytest.param(meta_path, id=f"{meta_path.parent.name}/{meta_path.stem}")


@pytest.mark.parametrize("meta_path", list(_golden_cases()))
def test_golden_payload_decodes(meta_path):
    """Payloads written by earlier versions decode to the same values."""
    from golden.make_strategy_golden import golden_input

    case = json.loads(meta_path.read_text())
    strategy = get(meta_path.parent.name)
    payload = meta_path.with_suffix(".bin").read_bytes()
    decoded = strategy.decode(memoryview(payload), case["meta"], tuple(case["shape"]), case["dtype"])
    original = golden_input(case)
    if strategy.is_lossless(strategy.config_from_dict(case["config"])):
        assert decoded.tobytes() == original.tobytes()
    else:
        expected = case.get("decoded_sha256")
        import hashlib

        assert hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).hexdigest() == expected
