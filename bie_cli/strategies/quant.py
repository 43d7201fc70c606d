"""``quant``: b-bit uniform quantization (2..8 bits), codes bit-packed or rANS-coded.

Each scale unit (the chunk, a row, or a group of a row; see ``_quant_common``)
gets a uniform grid:

* symmetric: x^ = (code - 2**(b-1)) * d, codes 0..2**b-1. Without clipping
  d = m / -2**(b-1) where m is the unit's element of largest magnitude (the
  llama.cpp Q4_0 trick: the far side of zero gets 2**(b-1) levels, none wasted);
* asymmetric: x^ = lo + code * s, s = (hi - lo) / (2**b - 1);
* ``clip=mse`` shrinks the range by the ratio (of 21 in [0.5, 1]) with the
  least squared error; ``clip=octav`` uses OCTAV's fixed point for the
  MSE-optimal clip (Sakr et al. 2022), applied to |x| (about the range's
  midpoint when asymmetric);
* ``step=σ`` is the entropy-constrained mode: the grid step is σ times the
  unit's RMS (no range fitting, no clipping search); codes beyond the b-bit
  range saturate. Relative MSE is then about σ²/12 whatever the weights, and
  the rANS coder makes the stored size track the codes' entropy.

Scales (and minimums) are stored as fp16 when every one is a normal fp16
(``scale_dtype=auto``), else fp32, and codes are chosen against the stored,
rounded scale. ``granularity=tensor`` means one scale per chunk: the
pipeline splits big tensors into chunks of whole rows.

Payload: scales[units] | mins[units] (asymmetric) | exact elements |
codes section (rest). Meta says everything needed to parse it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import _quant_common as common
from .base import Strategy

_MSE_RATIOS = np.linspace(1.0, 0.5, 21)
_OCTAV_ITERATIONS = 30


@dataclass(frozen=True)
class QuantConfig:
    bits: int = 4
    symmetric: bool = True
    granularity: Literal["tensor", "channel", "group"] = "group"
    group_size: int = 64
    clip: Literal["none", "mse", "octav"] = "none"
    step: float | None = None
    scale_dtype: Literal["auto", "f16", "f32"] = "auto"
    entropy: Literal["auto", "none"] = "auto"
    allow_nonfinite: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be between 2 and 8, got {self.bits}")
        if not 1 <= self.group_size <= 1 << 24:
            raise ValueError(f"group_size must be between 1 and 16777216, got {self.group_size}")
        if self.step is not None:
            if not (math.isfinite(self.step) and self.step > 0):
                raise ValueError(f"step must be a positive number (a fraction of the RMS), got {self.step}")
            if self.clip != "none":
                raise ValueError("step fixes the grid from the RMS; it cannot be combined with clip")


def _unit_stats(units: np.ndarray, config: QuantConfig, kernels):
    """(low, high, squares) per unit. The symmetric step grid reads only the
    squares, which take a third of the time of all three (low and high are
    then None), unless they overflowed and the range must stand in (``_rms``)."""
    if config.step is not None and config.symmetric:
        squares = kernels.unit_squares(units)
        if np.isfinite(squares.sum()):
            return None, None, squares
    return kernels.unit_stats(units)


def _rms(stats, length: int) -> np.ndarray:
    low, high, squares = stats
    rms = np.sqrt(squares / length)
    if low is None:
        return rms
    # an F64 unit can overflow the sum of squares; its largest magnitude is a usable RMS stand-in
    return np.where(np.isfinite(rms), rms, np.maximum(np.abs(low), np.abs(high)))


class QuantStrategy(Strategy):
    id = "quant"
    kernels = "bie_cli.kernels.quant"
    lossless = False
    dtypes = common.FLOAT_DTYPES
    description = "b-bit uniform quantization (2..8 bits), per tensor/channel/group, rANS-coded codes"
    Config = QuantConfig

    def encode(self, chunk: np.ndarray, config: QuantConfig) -> tuple[bytes, dict]:
        from . import _quant_kernels as kernels

        dtype_name = common.dtype_name_of(chunk)
        self.check_dtype(dtype_name)
        rows = common.as_rows(chunk)
        layout = common.layout_for(rows.shape[0], rows.shape[1], config.granularity, config.group_size)
        meta = {
            "bits": config.bits,
            "symmetric": config.symmetric,
            "granularity": config.granularity,
            "group_size": layout.group_size,
        }
        if layout.count == 0:
            meta.update(scale_dtype="f32", codes="packed")
            return b"", meta
        rows, units, stats, exact = common.finite_units(
            self.id, rows, layout, config.allow_nonfinite, lambda units: _unit_stats(units, config, kernels)
        )
        work = rows.dtype
        levels = 1 << config.bits
        if config.symmetric:
            scale = self._symmetric_step(units, stats, config, kernels)
            scale_dtype = common.choose_scale_dtype(config.scale_dtype, config.granularity, scale)
            scale = common.round_scales(scale, scale_dtype, work)
            mins = None
            mul = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
            add = np.full_like(scale, levels >> 1)
        else:
            mins, scale = self._asymmetric_grid(units, stats, config, kernels)
            scale_dtype = common.choose_scale_dtype(config.scale_dtype, config.granularity, scale, mins)
            scale = common.round_scales(scale, scale_dtype, work)
            mins = common.round_scales(mins, scale_dtype, work)
            mul = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
            add = -mins * mul
        codes, counts, clipped = kernels.affine_codes(units, mul, add, float(levels - 1))
        if clipped and config.step is not None:
            # The step grid has no range fitting: the few elements beyond the
            # b-bit range are stored exactly rather than saturated.
            mask = common.from_units(kernels.saturated(units, mul, add, float(levels - 1)), layout)
            exact = np.union1d(exact, np.flatnonzero(mask))
        if layout.padded:
            codes = common.unit_codes_to_rows(codes, layout)
            counts = None
        kind, code_bytes = common.encode_codes(codes, config.bits, counts, config.entropy)
        meta.update(scale_dtype=scale_dtype, codes=kind)
        if exact.size:
            meta["exact"] = int(exact.size)
        parts = [common.scale_bytes(scale, scale_dtype)]
        if mins is not None:
            parts.append(common.scale_bytes(mins, scale_dtype))
        parts += [common.exact_section(chunk, exact), code_bytes]
        return b"".join(parts), meta

    @staticmethod
    def _symmetric_step(units: np.ndarray, stats, config: QuantConfig, kernels) -> np.ndarray:
        half = 1 << (config.bits - 1)
        low, high, _squares = stats
        if config.step is not None:
            return (_rms(stats, units.shape[1]) * config.step).astype(units.dtype)
        extreme = np.where(-low > high, low, high)  # signed largest magnitude
        if config.clip == "mse":
            ratio = kernels.mse_clip_search(units, low, extreme, _MSE_RATIOS, float(1 << config.bits), True)
            extreme = extreme * ratio
        elif config.clip == "octav":
            magnitude = np.abs(units)
            clip = kernels.octav_clip(magnitude, np.abs(extreme) / 2, config.bits, _OCTAV_ITERATIONS)
            sign = np.where(extreme < 0, -1.0, 1.0)
            extreme = sign * np.minimum(clip, np.abs(extreme))
        return (extreme / -half).astype(units.dtype)

    @staticmethod
    def _asymmetric_grid(units: np.ndarray, stats, config: QuantConfig, kernels) -> tuple[np.ndarray, np.ndarray]:
        top = (1 << config.bits) - 1
        low, high, _ = stats
        if config.step is not None:
            return low.astype(units.dtype), (_rms(stats, units.shape[1]) * config.step).astype(units.dtype)
        if config.clip != "none":
            mid = 0.5 * (low + high)
            half_width = 0.5 * (high - low)
            if config.clip == "mse":
                ratio = kernels.mse_clip_search(units, low, high, _MSE_RATIOS, float(top + 1), False)
            else:
                magnitude = np.abs(units - mid[:, None].astype(units.dtype))
                clip = kernels.octav_clip(magnitude, half_width / 2, config.bits, _OCTAV_ITERATIONS)
                ratio = np.divide(np.minimum(clip, half_width), half_width, out=np.ones_like(half_width), where=half_width > 0)
            low = mid - half_width * ratio
            high = mid + half_width * ratio
        return low.astype(units.dtype), ((high - low) / top).astype(units.dtype)

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        shape = tuple(shape)
        parsed = unpack(payload, meta, shape, dtype)
        layout, work = parsed.layout, common.work_dtype(dtype)
        if layout.count == 0:
            return common.finish(np.zeros(shape, dtype=work), shape, dtype)
        codes = parsed.codes
        unit_codes = common.rows_codes_to_units(codes, layout) if layout.padded else codes.reshape(layout.count, -1)
        values = unit_codes.astype(work)
        if parsed.symmetric:
            values -= work.type(1 << (parsed.bits - 1))
            values *= parsed.scale[:, None]
        else:
            values *= parsed.scale[:, None]
            values += parsed.mins[:, None]
        out = np.ascontiguousarray(common.from_units(values, layout)) if layout.padded else values
        out = common.finish(out, shape, dtype)
        out.reshape(-1)[parsed.exact_positions] = parsed.exact_values
        return out


@dataclass(frozen=True)
class QuantizedChunk:
    """A ``quant`` chunk parsed but not dequantized: what :func:`unpack` returns.

    ``codes`` are the chunk's codes in row-major element order (uint8, one per
    element); unit ``u`` (see ``layout``) reconstructs as
    ``(code - 2**(bits-1)) * scale[u]`` (symmetric) or ``mins[u] + code * scale[u]``,
    then the ``exact_positions`` (flat) take ``exact_values`` (the chunk's dtype).
    ``decode`` and the matmul kernels (``bie_cli.kernels.quant``) both read this.
    """

    bits: int
    symmetric: bool
    layout: common.UnitLayout
    codes: np.ndarray
    scale: np.ndarray
    mins: np.ndarray | None
    exact_positions: np.ndarray
    exact_values: np.ndarray


def unpack(payload, meta: dict, shape: tuple[int, ...], dtype: str) -> QuantizedChunk:
    """Parse and check a ``quant`` payload (entropy stage decoded) without dequantizing it."""
    shape = tuple(shape)
    QuantStrategy().check_dtype(dtype)
    bits = common.meta_int(meta, "bits", 2, 8)
    symmetric = common.meta_choice(meta, "symmetric", (True, False))
    parsed = common.parse_scaled_meta(meta, shape, ("packed", "rans"))
    layout, rows, row_length, n_exact = parsed.layout, parsed.rows, parsed.row_length, parsed.n_exact
    reader = common.PayloadReader(payload)
    work = common.work_dtype(dtype)
    if layout.count == 0:
        common.check_empty_payload(reader)
        none = np.zeros(0, dtype=work)
        positions, values = common.read_exact(none, 0, dtype, 0)
        return QuantizedChunk(bits, symmetric, layout, np.zeros(0, np.uint8), none, None, positions, values)
    scale_np = common.SCALE_DTYPES[parsed.scale_dtype]
    scale = reader.array(scale_np, layout.count).astype(work)
    mins = None if symmetric else reader.array(scale_np, layout.count).astype(work)
    exact_section = reader.take(common.exact_section_size(n_exact, dtype))
    count = rows * row_length
    codes = common.decode_codes(parsed.codes, reader.rest(), bits, count, (1 << bits) - 1)
    positions, values = common.read_exact(exact_section, n_exact, dtype, count)
    return QuantizedChunk(bits, symmetric, layout, codes, scale, mins, positions, values)
