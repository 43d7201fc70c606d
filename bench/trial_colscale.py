"""Trial (docs/auto.md): data-free per-input-channel activation scales from a Llama checkpoint's
own weights, as a weighting and as AWQ-style column scaling, on SmolLM2-135M.

    HF_HUB_OFFLINE=1 python bench/trial_colscale.py rho
    HF_HUB_OFFLINE=1 python bench/trial_colscale.py kl TARGET_BITS ALPHA [ALPHA ...] [--roles down_proj] [--top 4]
    HF_HUB_OFFLINE=1 python bench/trial_colscale.py check

Scales a_j: |gamma_j| of the preceding RMSNorm for q/k/v and gate/up; rms(silu(N(0, s_g^2))) * s_u
for down_proj (s_g, s_u: norms of row j of gate/up times gamma); ||v_row * gamma|| (repeated per
GQA group) for o_proj. ``rho``: Spearman correlation of two weightings built from them with the
calibrated sensitivities (bench_auto.sensitivity_file). ``kl``: compress W diag(s), s = a^alpha
over its geometric mean (``--top K``: only the K largest a_j, s = (a_j / median)^alpha), with
``--target-bits`` (the fp16 scales' bytes taken off the budget), undo s, mean KL on the held-out
text. ``check``: the estimate against real activations (RMS over 256 calibration tokens).
Needs the FP32 export and the sensitivity file bench_auto.py caches in the temporary directory.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EXPORT = Path(tempfile.gettempdir()) / "bie-bench-smollm2-fp32"
SENSITIVITY = EXPORT.with_name(EXPORT.name + "-sensitivity.json")


def _silu_rms(sigma: np.ndarray) -> np.ndarray:
    z = np.linspace(-8, 8, 4001)
    density = np.exp(-z * z / 2)
    density /= density.sum()
    x = np.outer(sigma, z)
    return np.sqrt(((x / (1 + np.exp(-x))) ** 2 * density).sum(1))


def scales(weights: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim", config["hidden_size"] // heads)
    out = {}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        g1, g2 = weights[p + "input_layernorm.weight"], weights[p + "post_attention_layernorm.weight"]
        for r in "qkv":
            out[p + f"self_attn.{r}_proj.weight"] = np.abs(g1)
        v_rows = np.sqrt(((weights[p + "self_attn.v_proj.weight"] * g1) ** 2).sum(1))
        out[p + "self_attn.o_proj.weight"] = np.tile(v_rows.reshape(kv, 1, head_dim), (1, heads // kv, 1)).reshape(-1)
        for r in ("gate", "up"):
            out[p + f"mlp.{r}_proj.weight"] = np.abs(g2)
        sg = np.sqrt(((weights[p + "mlp.gate_proj.weight"] * g2) ** 2).sum(1))
        su = np.sqrt(((weights[p + "mlp.up_proj.weight"] * g2) ** 2).sum(1))
        out[p + "mlp.down_proj.weight"] = _silu_rms(sg) * su
    return out


def _load():
    from safetensors.numpy import load_file

    weights = {k: v.astype(np.float64) for k, v in load_file(str(EXPORT / "model.safetensors")).items()}
    return weights, json.loads((EXPORT / "config.json").read_text())


def rho() -> None:
    from scipy.stats import spearmanr

    weights, config = _load()
    a = scales(weights, config)
    calibrated = json.loads(SENSITIVITY.read_text())
    names = list(a)
    output = {k: float((a[k] ** 2 * (weights[k] ** 2).sum(0)).sum()) for k in names}
    noise = {k: float((weights[k] ** 2).mean() * weights[k].shape[0] * (a[k] ** 2).sum()) for k in names}
    for label, table in (("output energy", output), ("noise energy", noise)):
        line = [f"{label}: all {spearmanr([table[k] for k in names], [calibrated[k] for k in names])[0]:+.2f}"]
        for role in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            keys = [k for k in names if role in k]
            line.append(f"{role} {spearmanr([table[k] for k in keys], [calibrated[k] for k in keys])[0]:+.2f}")
        print(", ".join(line))


def kl(target: float, alphas: list[float], roles: list[str], top: int | None) -> None:
    from safetensors.numpy import load_file, save_file

    from bench.bench_auto import NextToken, compress, decoded_state, smollm_export

    export, model, tokenizer = smollm_export()
    state = load_file(str(export / "model.safetensors"))
    parameters = sum(v.size for v in state.values())
    judge = NextToken(model, tokenizer)
    weights, config = _load()
    a = {k: v for k, v in scales(weights, config).items() if not roles or any(r in k for r in roles)}
    for alpha in alphas:
        with tempfile.TemporaryDirectory() as work:
            column_scales, scaled = {}, dict(state)
            for name, values in a.items():
                if top:
                    s = np.ones_like(values)
                    largest = np.argsort(-values)[:top]
                    s[largest] = np.maximum(values[largest] / np.median(values), 1.0) ** alpha
                else:
                    s = values ** alpha
                    s = s / np.exp(np.log(s).mean())
                s = s.astype(np.float16).astype(np.float32)
                column_scales[name] = s
                scaled[name] = (state[name] * s[None, :]).astype(np.float32)
            extra = sum(2 * v.size for v in column_scales.values())
            folder = Path(work) / "m"
            folder.mkdir()
            save_file(scaled, str(folder / "model.safetensors"))
            out = Path(work) / "s.cai"
            compress(folder / "model.safetensors", out, target_bits=target - 8 * extra / parameters)
            decoded = decoded_state(out)
            for name, s in column_scales.items():
                decoded[name] = decoded[name] / s[None, :]
            divergence, top1 = judge.compare(decoded)
            bits = 8 * (out.stat().st_size + extra) / parameters
            print(f"--target-bits {target} alpha {alpha}: {bits:.3f} bits/param, KL {divergence:.4f}, top-1 {top1:.3f}",
                  flush=True)


def check() -> None:
    import torch
    from scipy.stats import spearmanr
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(EXPORT), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(EXPORT))
    text = (Path(__file__).parent / "data" / "calibration_text.txt").read_text()
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :256]
    real = {}

    def hook(name):
        def record(_module, inputs):
            real[name] = inputs[0][0].double().pow(2).mean(0).sqrt().numpy()
        return record

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "layers" in name:
            module.register_forward_pre_hook(hook(name + ".weight"))
    with torch.no_grad():
        model(ids)
    weights, config = _load()
    a = scales(weights, config)
    for role in ("q_proj", "o_proj", "gate_proj", "down_proj"):
        keys = [k for k in a if role in k]
        correlations = [spearmanr(a[k], real[k])[0] for k in keys]
        spread = [(real[k] ** 2).mean() / np.exp(np.log(real[k] ** 2 + 1e-30).mean()) for k in keys]
        ranks = [int((a[k] > a[k][np.argmax(real[k])]).sum()) for k in keys]
        print(f"{role}: per-channel Spearman(estimate, real) median {np.median(correlations):.2f}; real AM/GM of a^2 "
              f"median {np.median(spread):.2f}; the real top channel's rank in the estimate by layer {ranks}")


def main() -> None:
    args = sys.argv[1:]
    roles = args[args.index("--roles") + 1].split(",") if "--roles" in args else []
    top = int(args[args.index("--top") + 1]) if "--top" in args else None
    plain = [a for i, a in enumerate(args) if not a.startswith("--") and (i == 0 or not args[i - 1].startswith("--"))]
    if plain[:1] == ["rho"]:
        rho()
    elif plain[:1] == ["kl"]:
        kl(float(plain[1]), [float(x) for x in plain[2:]], roles, top)
    elif plain[:1] == ["check"]:
        check()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
