"""``tcq``: entropy-coded trellis-coded quantization (4-state Ungerboeck trellis).

The same grid as ``quant``'s step mode — reconstruction points k·d with d = ``step``
times the unit's RMS — but each element may only use every second point, which
ones depending on a 4-state trellis that runs along the row; a Viterbi search
picks the path with the least squared error (``_tcq_kernels``). A code names a
point of the allowed half (spacing 2d), so the codes' entropy is about a bit less
than the step grid's for a 2x coarser error on each element, and the path
search takes back most of that: measured on MiniLM and SmolLM2 weights at
2.2-3.8 bits, relative MSE ~1.0 dB (21%) below ``quant:bits=8,granularity=tensor,step=s``
at the same entropy — 0.17 bit of the 0.25 bit the scalar grid leaves to the
Shannon bound (docs/auto.md, "Quantizers"). Decoding walks the trellis
element by element (sequential within a row); there are no matmul kernels,
so ``bie_cli.nn`` uses a decoded dense weight for these tensors.

Payload: d[units] (fp32 for ``granularity=tensor``; fp16 per row when every d is
a normal fp16) | exact elements (NaN/Inf when allowed, and |x| > 254 d) |
codes (uint8, m + 128), rANS-coded or packed 8-bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import _quant_common as common
from .base import Strategy

TRELLIS_STATES = 4


@dataclass(frozen=True)
class TcqConfig:
    step: float = 0.2
    granularity: Literal["tensor", "channel"] = "tensor"
    scale_dtype: Literal["auto", "f16", "f32"] = "auto"
    entropy: Literal["auto", "none"] = "auto"
    allow_nonfinite: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"step must be a positive number (a fraction of the RMS), got {self.step}")


class TcqStrategy(Strategy):
    id = "tcq"
    lossless = False
    dtypes = common.FLOAT_DTYPES
    description = "trellis-coded quantization (4-state), grid step a fraction of the RMS, rANS-coded codes"
    Config = TcqConfig

    def encode(self, chunk: np.ndarray, config: TcqConfig) -> tuple[bytes, dict]:
        from . import _quant_kernels as kernels
        from . import _tcq_kernels as tcq

        dtype_name = common.dtype_name_of(chunk)
        self.check_dtype(dtype_name)
        rows = common.as_rows(chunk)
        layout = common.layout_for(rows.shape[0], rows.shape[1], config.granularity, 1)
        meta = {"granularity": config.granularity, "group_size": layout.group_size, "trellis": TRELLIS_STATES}
        if layout.count == 0:
            meta.update(scale_dtype="f32", codes="packed")
            return b"", meta
        rows, units, (squares,), exact = common.finite_units(
            self.id, rows, layout, config.allow_nonfinite, lambda units: (kernels.unit_squares(units),)
        )
        work = rows.dtype
        step = (np.sqrt(squares / units.shape[1]) * config.step).astype(work)
        scale_dtype = common.choose_scale_dtype(config.scale_dtype, config.granularity, step)
        step = common.round_scales(step, scale_dtype, work)
        mul = np.divide(1.0, step, out=np.zeros_like(step), where=step != 0).astype(np.float64)
        per_row = np.broadcast_to(mul, (rows.shape[0],)) if config.granularity == "tensor" else mul
        codes, beyond, counts, _ = tcq.viterbi_codes(rows, np.ascontiguousarray(per_row))
        if beyond.any():
            exact = np.union1d(exact, np.flatnonzero(beyond))
        kind, code_bytes = common.encode_codes(codes, 8, counts, config.entropy)
        meta.update(scale_dtype=scale_dtype, codes=kind)
        if exact.size:
            meta["exact"] = int(exact.size)
        return common.scale_bytes(step, scale_dtype) + common.exact_section(chunk, exact) + code_bytes, meta

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        from . import _tcq_kernels as tcq

        shape = tuple(shape)
        self.check_dtype(dtype)
        if common.meta_int(meta, "trellis", TRELLIS_STATES, TRELLIS_STATES) != TRELLIS_STATES:
            raise ValueError("unknown trellis")
        parsed = common.parse_scaled_meta(meta, shape, ("packed", "rans"))
        layout, n_exact = parsed.layout, parsed.n_exact
        if layout.granularity == "group":
            raise ValueError("tcq has no group granularity")
        reader = common.PayloadReader(payload)
        work = common.work_dtype(dtype)
        if layout.count == 0:
            common.check_empty_payload(reader)
            return common.finish(np.zeros(shape, dtype=work), shape, dtype)
        step = reader.array(common.SCALE_DTYPES[parsed.scale_dtype], layout.count).astype(work)
        exact_section = reader.take(common.exact_section_size(n_exact, dtype))
        codes = common.decode_codes(parsed.codes, reader.rest(), 8, parsed.rows * parsed.row_length, 255)
        per_row = np.ascontiguousarray(np.broadcast_to(step, (parsed.rows,)) if layout.granularity == "tensor" else step)
        out = np.empty((parsed.rows, parsed.row_length), dtype=work)
        tcq.trellis_values(codes.reshape(parsed.rows, parsed.row_length), per_row, tcq.TRELLIS, out)
        out = common.finish(out, shape, dtype)
        common.restore_exact(out, exact_section, n_exact, dtype)
        return out
