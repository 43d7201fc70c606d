"""``ternary``: BitNet b1.58 weights {-a, 0, +a}, five trits to a byte.

Per scale unit (chunk, row or group) gamma = mean|w|; a weight becomes
round(clip(w / gamma, -1, 1)), i.e. +-1 where |w| > gamma/2 and 0 elsewhere
(the absmean threshold of BitNet b1.58). With ``scale=absmean`` (BitNet's
definition) a = gamma; ``scale=fit`` keeps the same trits and stores the
least-squares a = mean |w| over the non-zero trits, which lowers the error at
no cost in bytes. Trained-for-ternary models lose little; ordinary
checkpoints lose a lot, and bie reports that error as it is.

Payload: a[units] (fp16 when every a is a normal fp16, else fp32) | exact
elements | codes section: trits (code = trit + 1) packed five a byte (1.6
bits, the last byte padded with zero codes), or rANS-coded when smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import _quant_common as common
from .base import Strategy


@dataclass(frozen=True)
class TernaryConfig:
    granularity: Literal["tensor", "channel", "group"] = "channel"
    group_size: int = 256
    scale: Literal["absmean", "fit"] = "absmean"
    scale_dtype: Literal["auto", "f16", "f32"] = "auto"
    entropy: Literal["auto", "none"] = "auto"
    allow_nonfinite: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.group_size <= 1 << 24:
            raise ValueError(f"group_size must be between 1 and 16777216, got {self.group_size}")


class TernaryStrategy(Strategy):
    id = "ternary"
    lossless = False
    dtypes = common.FLOAT_DTYPES
    description = "BitNet b1.58 ternary {-a, 0, +a}, absmean threshold, 5 trits a byte"
    Config = TernaryConfig

    def encode(self, chunk: np.ndarray, config: TernaryConfig) -> tuple[bytes, dict]:
        from . import _quant_kernels as kernels

        dtype_name = common.dtype_name_of(chunk)
        self.check_dtype(dtype_name)
        rows = common.as_rows(chunk)
        layout = common.layout_for(rows.shape[0], rows.shape[1], config.granularity, config.group_size)
        meta = {"granularity": config.granularity, "group_size": layout.group_size}
        if layout.count == 0:
            meta.update(scale_dtype="f32", codes="trits")
            return b"", meta
        _, units, _, exact = common.finite_units(
            self.id, rows, layout, config.allow_nonfinite, lambda units: (kernels.unit_squares(units),)
        )
        magnitude = np.abs(units)
        gamma = magnitude.mean(axis=1, dtype=np.float64)
        mul = np.divide(1.0, gamma, out=np.zeros_like(gamma), where=gamma != 0)
        codes, counts, _ = kernels.affine_codes(units, mul, np.ones_like(gamma), 2.0)
        if config.scale == "fit":
            kept = codes != 1
            n_kept = kept.sum(axis=1)
            total = np.where(kept, magnitude, 0).sum(axis=1, dtype=np.float64)
            gamma = np.divide(total, n_kept, out=np.zeros_like(total), where=n_kept > 0)
        scale_dtype = common.choose_scale_dtype(config.scale_dtype, config.granularity, gamma)
        if layout.padded:
            codes = common.unit_codes_to_rows(codes, layout)
            counts = None
        kind, code_bytes = common.encode_codes(codes, 0, counts, config.entropy)
        meta.update(scale_dtype=scale_dtype, codes=kind)
        if exact.size:
            meta["exact"] = int(exact.size)
        return common.scale_bytes(gamma, scale_dtype) + common.exact_section(chunk, exact) + code_bytes, meta

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        shape = tuple(shape)
        self.check_dtype(dtype)
        parsed = common.parse_scaled_meta(meta, shape, ("trits", "rans"))
        layout, n_exact = parsed.layout, parsed.n_exact
        reader = common.PayloadReader(payload)
        work = common.work_dtype(dtype)
        if layout.count == 0:
            common.check_empty_payload(reader)
            return common.finish(np.zeros(shape, dtype=work), shape, dtype)
        scale = reader.array(common.SCALE_DTYPES[parsed.scale_dtype], layout.count).astype(work)
        exact_section = reader.take(common.exact_section_size(n_exact, dtype))
        codes = common.decode_codes(parsed.codes, reader.rest(), 0, parsed.rows * parsed.row_length, 2)
        unit_codes = common.rows_codes_to_units(codes, layout) if layout.padded else codes.reshape(layout.count, -1)
        values = unit_codes.astype(work)
        values -= 1
        values *= scale[:, None]
        out = np.ascontiguousarray(common.from_units(values, layout)) if layout.padded else values
        out = common.finish(out, shape, dtype)
        common.restore_exact(out, exact_section, n_exact, dtype)
        return out
