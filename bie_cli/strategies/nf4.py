"""``nf4``: QLoRA's 4-bit NormalFloat codebook with a per-block absmax scale.

Each block of ``block_size`` consecutive elements of a row (the last block of
a row may be shorter) is divided by its absmax and every element takes the
nearest of the 16 NF4 values (bitsandbytes' table). The absmax is stored as
fp32 (bitsandbytes' 4.5 bits/weight at block 64) or, with
``double_quant=true``, QLoRA-style: minus its chunk mean, int8-quantized in
blocks of 256 absmax values with one fp32 scale each (about 4.127 bits/weight).
bitsandbytes quantizes the second level with its 8-bit dynamic map; bie uses
linear int8, and chooses codes against the *decoded* absmax, so the file
reproduces exactly what the encoder measured.

Payload: [mean f32, dq_scales f32[ceil(blocks/256)], absmax i8[blocks]] or
absmax f32[blocks] | exact elements | codes section (packed 4-bit or rANS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import _quant_common as common
from .base import Strategy

# bitsandbytes' NF4 table (QLoRA, Dettmers et al. 2023), ascending; code = index.
NF4_CODEBOOK = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=np.float32,
)
_MIDPOINTS = ((NF4_CODEBOOK[1:] + NF4_CODEBOOK[:-1]) / 2).astype(np.float64)
DQ_BLOCK = 256


@dataclass(frozen=True)
class NF4Config:
    block_size: int = 64
    double_quant: bool = False
    entropy: Literal["auto", "none"] = "auto"
    allow_nonfinite: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.block_size <= 1 << 24:
            raise ValueError(f"block_size must be between 1 and 16777216, got {self.block_size}")


class NF4Strategy(Strategy):
    id = "nf4"
    lossless = False
    dtypes = common.FLOAT_DTYPES
    description = "QLoRA NF4: 16-level normal-quantile codebook, absmax per block"
    Config = NF4Config

    def encode(self, chunk: np.ndarray, config: NF4Config) -> tuple[bytes, dict]:
        from . import _quant_kernels as kernels

        dtype_name = common.dtype_name_of(chunk)
        self.check_dtype(dtype_name)
        rows = common.as_rows(chunk)
        layout = common.layout_for(rows.shape[0], rows.shape[1], "group", config.block_size)
        meta = {"block_size": layout.group_size, "double_quant": config.double_quant}
        if layout.count == 0:
            meta["codes"] = "packed"
            return b"", meta
        _, units, (low, high, _), exact = common.finite_units(
            self.id, rows, layout, config.allow_nonfinite, kernels.unit_stats
        )
        absmax = np.maximum(-low, high)
        if config.double_quant:
            mean = np.float32(absmax.mean())
            centred = (absmax - mean).astype(np.float32)
            padded = np.zeros(-(-centred.size // DQ_BLOCK) * DQ_BLOCK, dtype=np.float32)
            padded[: centred.size] = centred
            dq_scale = (np.abs(padded.reshape(-1, DQ_BLOCK)).max(axis=1) / 127).astype(np.float32)
            inv = np.divide(1, dq_scale, out=np.zeros_like(dq_scale), where=dq_scale != 0)
            q8 = np.clip(np.floor(padded.reshape(-1, DQ_BLOCK) * inv[:, None] + 0.5), -127, 127).astype(np.int8)
            q8 = q8.reshape(-1)[: centred.size]
            absmax = _dequantize_absmax(mean, dq_scale, q8)
            scale_part = np.float32(mean).tobytes() + dq_scale.astype("<f4").tobytes() + q8.tobytes()
        else:
            absmax = absmax.astype(np.float32)
            scale_part = absmax.astype("<f4").tobytes()
        mul = np.divide(1.0, absmax, out=np.zeros(absmax.shape), where=absmax != 0)
        codes = kernels.codebook_codes(units, mul, _MIDPOINTS)
        if layout.padded:
            codes = common.unit_codes_to_rows(codes, layout)
        kind, code_bytes = common.encode_codes(codes, 4, None, config.entropy)
        meta["codes"] = kind
        if exact.size:
            meta["exact"] = int(exact.size)
        return scale_part + common.exact_section(chunk, exact) + code_bytes, meta

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        shape = tuple(shape)
        self.check_dtype(dtype)
        block_size = common.meta_int(meta, "block_size", 0, 1 << 62)
        double_quant = common.meta_choice(meta, "double_quant", (True, False))
        kind = common.meta_choice(meta, "codes", ("packed", "rans"))
        n_exact = common.meta_int(meta, "exact", 0, 1 << 62) if "exact" in meta else 0
        rows, row_length = common.row_shape(shape)
        layout = common.layout_for(rows, row_length, "group", block_size)
        if layout.count and layout.group_size != block_size:
            raise ValueError(f"meta block_size={block_size} does not fit rows of {row_length}")
        reader = common.PayloadReader(payload)
        work = common.work_dtype(dtype)
        if layout.count == 0:
            if len(reader.rest()):
                raise ValueError("payload of an empty chunk is not empty")
            return common.finish(np.zeros(shape, dtype=work), shape, dtype)
        if double_quant:
            mean = reader.array("<f4", 1)[0]
            dq_scale = reader.array("<f4", -(-layout.count // DQ_BLOCK))
            q8 = reader.array(np.int8, layout.count)
            absmax = _dequantize_absmax(mean, dq_scale, q8)
        else:
            absmax = reader.array("<f4", layout.count).astype(np.float32)
        exact_section = reader.take(common.exact_section_size(n_exact, dtype))
        codes = common.decode_codes(kind, reader.rest(), 4, rows * row_length, 15)
        unit_codes = common.rows_codes_to_units(codes, layout) if layout.padded else codes.reshape(layout.count, -1)
        values = NF4_CODEBOOK.astype(work)[unit_codes]
        values *= absmax.astype(work)[:, None]
        out = np.ascontiguousarray(common.from_units(values, layout)) if layout.padded else values
        out = common.finish(out, shape, dtype)
        common.restore_exact(out, exact_section, n_exact, dtype)
        return out


def _dequantize_absmax(mean, dq_scale, q8) -> np.ndarray:
    scale = np.repeat(dq_scale.astype(np.float32), DQ_BLOCK)[: q8.size]
    return (np.float32(mean) + q8.astype(np.float32) * scale).astype(np.float32)
