"""Golden strategy payloads: ``tests/golden/strategies/<id>/<case>.bin`` + ``.json``.

    python tests/golden/make_strategy_golden.py [STRATEGY_ID ...]

Each ``.json`` holds the meta, shape, dtype and config, plus how to rebuild
the input (``input`` = {"kind", "seed"}) and, for lossy strategies, the
SHA-256 of the decoded bytes. Tests decode the committed ``.bin`` and compare:
a change to a decoder that breaks old payloads fails. Write once; regenerate
a strategy's cases only with a deliberate format change.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent / "strategies"


def golden_input(case: dict) -> np.ndarray:
    from bie_cli import dtypes

    spec = case["input"]
    rng = np.random.default_rng(spec["seed"])
    shape = tuple(case["shape"])
    count = int(np.prod(shape)) if shape else 1
    np_dtype = dtypes.get(case["dtype"]).numpy
    kind = spec["kind"]
    if kind == "normal":
        values = (rng.standard_normal(count) * spec.get("scale", 0.05)).astype(np.float32)
    elif kind == "sparse-normal":
        values = rng.standard_normal(count).astype(np.float32)
        values[rng.random(count) >= spec.get("density", 0.1)] = 0
    elif kind == "integers":
        values = rng.integers(spec.get("low", 0), spec.get("high", 100), count)
    elif kind == "runs":
        values = np.repeat(rng.integers(0, 4, count // 8 + 1), 8)[:count]
    elif kind == "float-specials":
        # normal weights with NaN (two payloads), +-inf, +-0, subnormals every 7th element
        values = (rng.standard_normal(count) * spec.get("scale", 0.05)).astype(np.float64)
        specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-310, -5e-324])
        values[::7] = specials[np.arange(values[::7].size) % specials.size]
        return values.astype(np_dtype).reshape(shape)
    elif kind == "ramp":
        values = np.arange(count) * spec.get("step", 1) + spec.get("start", 0)
    elif kind == "bool":
        values = rng.random(count) > 0.5
    else:
        raise ValueError(f"unknown golden input kind {kind!r}")
    return values.astype(np_dtype).reshape(shape)


# strategy id -> list of (case name, dtype, shape, config, input spec)
CASES: dict[str, list[tuple[str, str, list[int], dict, dict]]] = {
    "raw": [("f32", "F32", [4, 5], {}, {"kind": "normal", "seed": 1}),
            ("bool", "BOOL", [3, 7], {}, {"kind": "bool", "seed": 2})],
    "zstd": [("f32", "F32", [32, 16], {"level": 3}, {"kind": "normal", "seed": 3}),
             ("i64", "I64", [2, 64], {"level": 19}, {"kind": "integers", "seed": 4})],
    "gzip": [("bf16", "BF16", [16, 16], {"level": 6}, {"kind": "normal", "seed": 5}),
             ("u8", "U8", [128], {"level": 9}, {"kind": "runs", "seed": 6})],
}


# Quantization strategies (issue 5): small chunks, one case per payload layout
# (the *-rans cases are sized so that rANS-coded codes beat packing).
CASES.update({
    "quant": [("g64-sym-rans", "F32", [16, 128], {"bits": 4, "group_size": 64}, {"kind": "normal", "seed": 11}),
              ("asym-mse-packed", "BF16", [6, 40], {"bits": 3, "symmetric": False, "granularity": "channel",
                                                    "clip": "mse", "entropy": "none"}, {"kind": "normal", "seed": 12}),
              ("step-tensor-f16", "F16", [4, 64], {"bits": 8, "step": 0.25, "granularity": "tensor"},
               {"kind": "normal", "seed": 13}),
              ("octav-f64-1d", "F64", [50], {"bits": 5, "clip": "octav", "granularity": "channel"},
               {"kind": "normal", "seed": 14})],
    "nf4": [("b64-rans", "F32", [4, 128], {}, {"kind": "sparse-normal", "seed": 21, "density": 0.3}),
            ("dq-packed", "BF16", [8, 100], {"block_size": 32, "double_quant": True, "entropy": "none"},
             {"kind": "normal", "seed": 22})],
    "ternary": [("channel-trits", "F32", [5, 33], {"entropy": "none"}, {"kind": "normal", "seed": 31}),
                ("group-fit", "F16", [3, 70], {"granularity": "group", "group_size": 32, "scale": "fit"},
                 {"kind": "normal", "seed": 32}),
                ("tensor-fit-rans", "F32", [8, 64], {"granularity": "tensor", "scale": "fit"},
                 {"kind": "sparse-normal", "seed": 33})],
    # trellis-coded quantization (issue 12): the rANS'd tensor case, packed codes per row with an
    # outlier beyond 254 steps stored exactly (float-specials: NaN/Inf allowed), F16
    "tcq": [("tensor-rans", "F32", [8, 96], {"step": 0.3}, {"kind": "normal", "seed": 41}),
            ("channel-packed-specials", "F32", [4, 21], {"step": 0.005, "granularity": "channel",
                                                        "entropy": "none", "allow_nonfinite": True},
             {"kind": "float-specials", "seed": 42}),
            ("tensor-f16", "F16", [3, 40], {"step": 0.5}, {"kind": "normal", "seed": 43})],
})

# Lossless strategies of issue 3: float-split (one case per element width and
# residual choice), rle (runs and incompressible), delta (each inner coder).
CASES.update({
    "float-split": [("f32", "F32", [48, 32], {}, {"kind": "normal", "seed": 41}),
                    ("bf16-specials", "BF16", [40, 24], {}, {"kind": "float-specials", "seed": 42}),
                    ("f16-low4", "F16", [40, 80], {"low_bits": 4}, {"kind": "normal", "seed": 43}),
                    ("f64-specials", "F64", [9, 30], {}, {"kind": "float-specials", "seed": 44, "scale": 1.0}),
                    ("f8e4m3", "F8_E4M3", [20, 50], {}, {"kind": "normal", "seed": 45, "scale": 1.0}),
                    ("c64", "C64", [100], {}, {"kind": "normal", "seed": 46})],
    "rle": [("u8-runs", "U8", [20, 13], {}, {"kind": "runs", "seed": 51}),
            ("f32-sparse", "F32", [16, 16], {}, {"kind": "sparse-normal", "seed": 52, "density": 0.1}),
            ("i64-raw", "I64", [40], {}, {"kind": "integers", "seed": 53, "high": 1 << 40})],
    "delta": [("i64-ramp-rle", "I64", [1, 512], {"inner": "rle"}, {"kind": "ramp", "seed": 61}),
              ("i32-ramp-zstd", "I32", [300], {"inner": "zstd", "level": 3}, {"kind": "ramp", "seed": 62, "step": 3}),
              ("u16-raw", "U16", [7, 5], {"inner": "raw"}, {"kind": "integers", "seed": 63})],
})


# Bit-Index Encodings and SDR index storage (issue 6): each position kind
# (gaps, bitmap, all), every values mode, progressive planes, mask/index tiles.
CASES.update({
    "sdr": [("f32-gaps", "F32", [32, 64], {}, {"kind": "sparse-normal", "seed": 71, "density": 0.05}),
            ("bf16-bitmap", "BF16", [16, 40], {}, {"kind": "sparse-normal", "seed": 72, "density": 0.5}),
            ("i32-dense", "I32", [3, 20], {}, {"kind": "integers", "seed": 73, "low": 1}),
            ("f32-density-int8", "F32", [24, 48], {"density": 0.2, "values": "int8"}, {"kind": "normal", "seed": 74}),
            ("f16-int4", "F16", [10, 30], {"values": "int4"}, {"kind": "sparse-normal", "seed": 75, "density": 0.3}),
            ("f64-fp16", "F64", [40], {"values": "fp16"}, {"kind": "sparse-normal", "seed": 76, "density": 0.4})],
    "bie-binary": [("f32-pruned", "F32", [32, 64], {}, {"kind": "sparse-normal", "seed": 81, "density": 0.05}),
                   ("bf16-dense", "BF16", [8, 50], {}, {"kind": "normal", "seed": 82}),
                   ("f32-density", "F32", [16, 30], {"density": 0.1}, {"kind": "normal", "seed": 83}),
                   ("f16-threshold", "F16", [12, 12], {"threshold": 0.05}, {"kind": "normal", "seed": 84})],
    "bie-bitplane": [("f32-k8-sparse", "F32", [24, 40], {}, {"kind": "sparse-normal", "seed": 91, "density": 0.1}),
                     ("bf16-k4", "BF16", [10, 33], {"bits": 4}, {"kind": "normal", "seed": 92}),
                     ("f32-k1", "F32", [6, 20], {"bits": 1}, {"kind": "normal", "seed": 93}),
                     ("f64-k6-packed", "F64", [50], {"bits": 6, "entropy": "none"}, {"kind": "normal", "seed": 94})],
    "bie-blocked": [("f32-t16", "F32", [40, 50], {}, {"kind": "sparse-normal", "seed": 101, "density": 0.05}),
                    ("f32-t4-masks", "F32", [9, 14], {"tile": 4, "entropy": "none"},
                     {"kind": "sparse-normal", "seed": 102, "density": 0.7}),
                    ("u8-t32", "U8", [64, 40], {"tile": 32}, {"kind": "runs", "seed": 103}),
                    ("bf16-int4", "BF16", [20, 20], {"values": "int4", "tile": 8},
                     {"kind": "sparse-normal", "seed": 104, "density": 0.3})],
})


def write_cases(strategy_id: str) -> None:
    from bie_cli.strategies import get

    strategy = get(strategy_id)
    folder = HERE / strategy_id
    folder.mkdir(parents=True, exist_ok=True)
    for name, dtype, shape, config_values, input_spec in CASES[strategy_id]:
        case = {"dtype": dtype, "shape": shape, "config": config_values, "input": input_spec}
        chunk = golden_input(case)
        payload, meta = strategy.encode(chunk, strategy.config_from_dict(config_values))
        case["meta"] = meta
        if not strategy.is_lossless(strategy.config_from_dict(config_values)):
            decoded = strategy.decode(memoryview(payload), meta, tuple(shape), dtype)
            case["decoded_sha256"] = hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).hexdigest()
        (folder / f"{name}.bin").write_bytes(bytes(payload))
        (folder / f"{name}.json").write_text(json.dumps(case, indent=1, sort_keys=True) + "\n")
        print(f"wrote {folder / name}.bin ({len(payload)} bytes)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    for strategy_id in sys.argv[1:] or CASES:
        write_cases(strategy_id)
