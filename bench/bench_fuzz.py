"""Reliability: mutation-fuzz every reader and write the counts to BENCHMARKS.md.

    python -m bench.bench_fuzz [--cases 10000] [--seed 0] [--jobs 2] [--targets onnx,container]

``make fuzz`` runs this (``FUZZ_CASES`` sets ``--cases``). ``--cases`` is per
format, shared by its targets (ONNX: embedded and external data; safetensors:
one file and sharded; PyTorch: zip and legacy). Each target runs in child
processes with the limits described in ``tests/fuzzing.py`` (per-case time
limit, address-space limit); a target's cases are split over ``--jobs``
processes. The ``reliability`` section of BENCHMARKS.md is rewritten after
every target, so an interrupted run still records what finished. Exits 1 and
prints the replay command of every failing case when anything but a
``BieError`` came out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.report import machine_line, markdown_table, update_section

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fuzzing

#: format -> its targets; the order the run goes in
FORMATS = {
    "container": ("container",),
    "pytorch": ("pytorch", "pytorch-legacy"),
    "onnx": ("onnx", "onnx-external"),
    "safetensors": ("safetensors", "safetensors-sharded", "safetensors-stdin"),
}

DESCRIPTIONS = {
    "safetensors": "MiniLM subset (8 tensors, 1.2 MB): blind bytes, or one JSON header field",
    "safetensors-sharded": "the same in 2 shards + index JSON: bytes or a JSON field of a shard header or the index; a file deleted",
    "safetensors-stdin": "the single file piped in (`bie compress -`: read once, front to back): as `safetensors`",
    "pytorch": "`torch.save` zip of a state dict (+ tied view, plain values): bytes, or a damaged `data.pkl` inside an intact zip",
    "pytorch-legacy": "the same saved with `_use_new_zipfile_serialization=False`: bytes",
    "onnx": "silero_vad.onnx (2.3 MB, If subgraphs): bytes, or one protobuf field anywhere in the tree with parent lengths fixed",
    "onnx-external": "silero_vad with its tensors in a `.onnx.data` file: model bytes or fields, or data-file bytes",
    "container": f"{len(fuzzing.CONTAINER_STRATEGIES)} containers, one per strategy setting: bytes; or a record (JSON field or "
                 "body bytes) changed with every checksum recomputed",
}


def merge(results: list[dict]) -> dict:
    total = {"cases": 0, "accepted": 0, "rejected": 0, "failures": [], "errors": {}, "seconds": 0.0}
    for result in results:
        for key in ("cases", "accepted", "rejected"):
            total[key] += result[key]
        total["seconds"] += result.get("seconds", 0.0)
        total["failures"] += result["failures"]
        for name, count in result["errors"].items():
            total["errors"][name] = total["errors"].get(name, 0) + count
        total["memory_limit_mib"] = result.get("memory_limit_mib")
        total["target"], total["seed"] = result["target"], result["seed"]
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=int(os.environ.get("FUZZ_CASES") or 10000), help="per format")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED") or 0))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--targets", default=",".join(t for targets in FORMATS.values() for t in targets))
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    per_target = {}
    for format_targets in FORMATS.values():
        for position, target in enumerate(format_targets):
            # the format's cases split over its targets, the first taking any remainder
            share = args.cases // len(format_targets)
            per_target[target] = share + (args.cases - share * len(format_targets) if position == 0 else 0)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    totals: dict[str, dict] = {}
    failed = False
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for target in targets:
            cases = per_target[target]
            per_job = -(-cases // args.jobs)
            futures = [pool.submit(fuzzing.run_in_child, target, min(per_job, cases - first), args.seed, first)
                       for first in range(0, cases, per_job)]
            totals[target] = merge([future.result() for future in futures])
            print(f"{target}: {totals[target]['cases']} cases, {len(totals[target]['failures'])} failures", file=sys.stderr)
            if totals[target]["failures"]:
                failed = True
                print(fuzzing.describe_failures(totals[target]), file=sys.stderr)
            write_section(args, targets, totals, per_target, time.perf_counter() - started, load_before)
    return 1 if failed else 0


def write_section(args, targets: list[str], totals: dict[str, dict], per_target: dict[str, int],
                  elapsed: float, load_before: float) -> None:
    rows = []
    for target in targets:
        total = totals.get(target)
        if total is None:
            rows.append([f"`{target}`", DESCRIPTIONS[target], f"not run yet (of {per_target[target]:,})", "", "", "", "", ""])
            continue
        errors = ", ".join(f"{name} {count:,}" for name, count in sorted(total["errors"].items(), key=lambda kv: -kv[1]))
        rows.append([f"`{target}`", DESCRIPTIONS[target], f"{total['cases']:,}", f"{total['accepted']:,}",
                     f"{total['rejected']:,}", errors, len(total["failures"]), f"{total['seconds']:.0f}"])
    table = markdown_table(
        ["target", "input and mutations", "cases", "read without error", "rejected", "errors raised", "failures",
         "seconds (summed over processes)"], rows,
    )
    print(table)
    unfinished = [t for t in targets if t not in totals]
    status = (f"**Run interrupted or still going: {', '.join(unfinished)} not finished.**\n\n" if unfinished else "")
    section = f"""## Reliability: mutation fuzzing of every reader

Command: `python -m bench.bench_fuzz --cases {args.cases} --seed {args.seed} --jobs {args.jobs}` (`make fuzz`):
{args.cases:,} cases per format, split over its targets. {machine_line()}; {elapsed / 60:.0f} min wall,
load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (the machine is shared).
Harness: `tests/fuzzing.py`; `tests/test_fuzz.py` runs a few hundred cases of each target in every `make test`.

{status}Each case damages a real small file with one seeded mutation (three in four blind ones land in the first
4 KiB, where headers live) and reads it the way `bie compress` does (every tensor, in two row ranges; every
{fuzzing.COMPRESS_EVERY}th case the whole `compress_model`), or for a container reads every tensor by random
access, decodes the file front to back as from a pipe, and runs `verify_container`. A case fails on any
exception but a `BieError`, on a hang past {fuzzing.DEFAULT_TIME_LIMIT:.0f} s, on going past the address-space
limit (the space in use after the imports and a warm-up read plus {fuzzing.DEFAULT_MEMORY_HEADROOM_MIB} MiB:
torch, numba and onnx reserve GiBs of virtual memory at import, so only the headroom says anything), and,
for a container whose checksums were not recomputed, on a tensor that decodes to different bytes without
an error. "Read without error" counts mutations the format tolerates (padding, unused fields, tensor data).

{table}
"""
    update_section("reliability", section)


if __name__ == "__main__":
    sys.exit(main())
