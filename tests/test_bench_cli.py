"""``bie bench``: a quick grid writes CSV, PNG plots and a self-contained HTML report."""

from __future__ import annotations

import csv
import re

import pytest

from bie_cli.cli.app import main


def test_bench_quick_writes_every_artifact(tmp_path, capsys):
    out = tmp_path / "bench"
    methods = "sdr,bie-binary,bie-bitplane-8,bie-bitplane-8@4,bie-blocked,csr,fp32,hybrid-int8"
    code = main(["bench", "--quick", "--sizes", "128x96", "--sparsity", "0,95", "--methods", methods,
                 "-o", str(out), "-q"])
    assert code == 0
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 8
    by = {(r["method"], float(r["sparsity"])): r for r in rows}
    n = 128 * 96
    # ratios are stored bytes against FP32, and the lossless methods really are lossless
    assert int(by["fp32", 95.0]["stored_bytes"]) == 4 * n
    for method in ("sdr", "bie-blocked", "csr"):
        assert float(by[method, 95.0]["relative_mse"]) == 0.0
        assert by[method, 95.0]["lossless"] == "True"
    assert float(by["sdr", 95.0]["ratio"]) > float(by["csr", 95.0]["ratio"]) > 1
    # reading 8-bit planes at 4 bits needs fewer bytes and loses accuracy
    assert int(by["bie-bitplane-8@4", 95.0]["stored_bytes"]) < int(by["bie-bitplane-8", 95.0]["stored_bytes"])
    assert float(by["bie-bitplane-8@4", 95.0]["relative_mse"]) > float(by["bie-bitplane-8", 95.0]["relative_mse"])
    assert float(by["sdr", 95.0]["bound_exact_bpe"]) == pytest.approx(0.2864 + 32 * 0.05, abs=0.01)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # self-contained
    for name in ("ratio_vs_sparsity.png", "error_vs_bits.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_refuses_bad_options(tmp_path, capsys):
    assert main(["bench", "--quick", "--methods", "nope", "-o", str(tmp_path)]) == 2
    assert "unknown bench method 'nope'" in capsys.readouterr().err
    assert main(["bench", "--quick", "--sizes", "12by4", "-o", str(tmp_path)]) == 2
    assert main(["bench", "--quick", "--sparsity", "100", "-o", str(tmp_path)]) == 2


def test_bench_list_names_every_method(capsys):
    from bie_cli.bench.grid import BASELINES, BIE_METHODS

    assert main(["bench", "--list"]) == 0
    listed = {line.split("\t")[0] for line in capsys.readouterr().out.splitlines()}
    assert listed == set(BIE_METHODS) | set(BASELINES)
