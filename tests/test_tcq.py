"""``tcq`` beyond the strategy battery: the Viterbi search is exact, the trellis decodes what
the search chose, and the point of it: less error than the step grid at the same rate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bie_cli.strategies import get
from bie_cli.strategies._tcq_kernels import TRELLIS, trellis_values, viterbi_codes


def _walk(path_bits, values):
    """Squared error and points of one trellis path (branch choices) over ``values`` (in steps)."""
    state, error, points = 0, 0.0, []
    for b, v in zip(path_bits, values, strict=True):
        sub, state = TRELLIS[state, b]
        k = 4 * np.floor((v - sub) / 4 + 0.5) + sub
        error += (v - k) ** 2
        points.append(int(k))
    return error, points


def test_viterbi_finds_the_least_error_path():
    rng = np.random.default_rng(5)
    for _ in range(8):
        values = rng.standard_normal(8) * 6
        best = min(_walk(bits, values)[0] for bits in itertools.product((0, 1), repeat=values.size))
        codes, beyond, counts, errors = viterbi_codes(values[None, :], np.ones(1))
        assert errors[0] == pytest.approx(best, rel=1e-12, abs=1e-12)
        decoded = np.empty((1, values.size))
        trellis_values(codes, np.ones(1), TRELLIS, decoded)
        assert not beyond.any() and counts.sum() == values.size
        assert ((decoded[0] - values) ** 2).sum() == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_rows_searched_together_match_rows_searched_alone():
    """The search runs 16 rows side by side (vector lanes); each row's codes, outliers and
    error are those it gets alone, whatever its neighbours (a zero step, an outlier, a tail)."""
    rng = np.random.default_rng(6)
    rows = rng.standard_normal((21, 9)) * 5
    rows[3, 4] = 1e4
    mul = rng.uniform(0.5, 2.0, 21)
    mul[7] = 0.0
    together = viterbi_codes(rows, mul)
    alone = [viterbi_codes(rows[r : r + 1], mul[r : r + 1]) for r in range(21)]
    assert np.array_equal(together[0], np.vstack([a[0] for a in alone]))
    assert np.array_equal(together[1], np.vstack([a[1] for a in alone]))
    assert np.array_equal(together[2], sum(a[2] for a in alone))
    assert np.array_equal(together[3], np.concatenate([a[3] for a in alone]))
    assert together[1][3, 4] and not together[1].sum() - 1


def test_decoded_points_lie_on_the_grid_within_two_steps():
    tcq = get("tcq")
    chunk = (np.random.default_rng(6).standard_normal((12, 200)) * 0.03).astype(np.float32)
    chunk[3, 7] = 5.0  # far beyond 254 steps: stored exactly
    payload, meta = tcq.encode(chunk, tcq.config_from_dict({"step": 0.1}))
    assert meta["exact"] == 1
    decoded = tcq.decode(payload, meta, chunk.shape, "F32")
    assert decoded[3, 7] == 5.0
    step = np.frombuffer(payload[:4], "<f4")[0]
    k = decoded.astype(np.float64) / step
    mask = np.ones(chunk.shape, bool)
    mask[3, 7] = False
    assert np.abs(k[mask] - np.round(k[mask])).max() < 1e-3
    assert np.abs(decoded - chunk)[mask].max() <= 2.0001 * step


def _rate_error(strategy, chunk, options):
    payload, meta = strategy.encode(chunk, strategy.config_from_dict(options))
    decoded = strategy.decode(payload, meta, chunk.shape, "F32").astype(np.float64)
    return 8 * len(payload) / chunk.size, ((decoded - chunk) ** 2).sum() / (chunk.astype(np.float64) ** 2).sum()


def test_less_error_than_the_step_grid_at_the_same_rate():
    """Gaussian weights: the step grid's relative MSE, interpolated (log) to tcq's rate,
    is at least 0.5 dB above tcq's (theory for a 4-state trellis: about 1 dB)."""
    chunk = (np.random.default_rng(7).standard_normal((64, 512)) * 0.02).astype(np.float32)
    quant, tcq = get("quant"), get("tcq")
    ladder = sorted(_rate_error(quant, chunk, {"bits": 8, "granularity": "tensor", "step": s})
                    for s in np.geomspace(0.05, 1.0, 14))
    rates, errors = np.array([p[0] for p in ladder]), np.log([p[1] for p in ladder])
    for step in (0.2, 0.45):
        rate, error = _rate_error(tcq, chunk, {"step": step})
        assert rates[0] < rate < rates[-1]
        gain_db = 10 * (np.interp(rate, rates, errors) - np.log(error)) / np.log(10)
        assert gain_db > 0.5, (step, rate, gain_db)


def test_unknown_trellis_is_refused():
    tcq = get("tcq")
    chunk = np.ones((2, 8), np.float32)
    payload, meta = tcq.encode(chunk, tcq.default_config())
    with pytest.raises(ValueError):
        tcq.decode(payload, {**meta, "trellis": 8}, chunk.shape, "F32")


def test_damaged_payloads_raise_value_error_or_decode_finite():
    tcq = get("tcq")
    chunk = (np.random.default_rng(9).standard_normal((6, 50)) * 0.1).astype(np.float32)
    payload, meta = tcq.encode(chunk, tcq.config_from_dict({"step": 0.3, "entropy": "none"}))
    for bad_meta in ({**meta, "granularity": "group"}, {**meta, "codes": "trits"}, {**meta, "exact": 5}):
        with pytest.raises(ValueError):
            tcq.decode(payload, bad_meta, chunk.shape, "F32")
    with pytest.raises(ValueError):
        tcq.decode(payload[:-7], meta, chunk.shape, "F32")
    noise = payload[:4] + bytes(np.random.default_rng(10).integers(0, 256, len(payload) - 4, dtype=np.uint8))
    assert np.isfinite(tcq.decode(noise, meta, chunk.shape, "F32")).all()  # every code is a valid branch
