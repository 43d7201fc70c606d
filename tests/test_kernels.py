"""Matmul kernels on the compressed form equal dense ``Ŵ @ x`` (Ŵ = the strategy's own decode).

Every strategy with kernels, odd shapes (empty rows, 1×n, n×1, rank 3, tiny
chunks so tensors span several chunks), batch 1 (matvec and matmul) and > 1,
for the numpy reference and numba with 1 and 2 threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import write_safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bie_cli
from bie_cli import kernels
from bie_cli.errors import BadInputError
from bie_cli.strategies.base import Strategy

SPECS = [
    "quant:bits=8",
    "quant:bits=4",
    "quant:bits=4,group_size=8,entropy=none",
    "quant:bits=4,group_size=7",  # odd groups: one code a byte
    "quant:bits=3,symmetric=false,granularity=channel",
    "quant:bits=5,symmetric=false,granularity=tensor,clip=mse",
    "quant:bits=2,step=1.0,granularity=tensor",  # saturated codes are stored exactly
    "quant:bits=8,step=0.05,granularity=tensor",  # rANS-coded codes
    "sdr",
    "sdr:values=int8",
    "sdr:values=int4,density=0.3",
    "sdr:values=fp16",
    "bie-binary",
    "bie-binary:density=0.1",
    "bie-binary:threshold=0.8",
    "bie-bitplane",
    "bie-bitplane:bits=4",
    "bie-bitplane:bits=6",
    "bie-bitplane:bits=1",
    "bie-blocked",
    "bie-blocked:tile=4,values=int8",
    "bie-blocked:tile=32,density=0.2",
]

MODES = [("numpy", 1), ("numba", 1), ("numba", 2)]


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    odd = rng.standard_normal((37, 29)).astype(np.float32)
    odd[[0, 5, 36]] = 0.0  # empty rows, first and last included
    sparse = (rng.standard_normal((40, 70)) * (rng.random((40, 70)) > 0.9)).astype(np.float32)
    sparse[3] = 0.0
    mixed = rng.standard_normal((24, 33)).astype(np.float32)
    mixed[12:] *= rng.random((12, 33)) > 0.97  # dense chunks then very sparse ones
    return {
        "odd": odd,
        "sparse": sparse,
        "mixed": mixed,
        "row": rng.standard_normal((1, 17)).astype(np.float32),
        "column": rng.standard_normal((17, 1)).astype(np.float32),
        "conv": rng.standard_normal((6, 3, 5)).astype(np.float32),
        "wide": rng.standard_normal((9, 130)).astype(np.float32),
        "half": rng.standard_normal((11, 16)).astype(np.float16),
    }


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    """One container per spec; 600-byte chunks, so most tensors span several chunks."""
    base = tmp_path_factory.mktemp("kernels")
    source = write_safetensors(base / "m.safetensors", _tensors())
    paths = {}
    for number, spec in enumerate(SPECS):
        path = base / f"{number}.cai"
        bie_cli.compress_model(source, path, rules=[f"*={spec}"], chunk_size=600)
        paths[spec] = path
    return paths


@pytest.fixture(params=MODES, ids=[f"{b}-t{t}" for b, t in MODES])
def mode(request, monkeypatch):
    backend, threads = request.param
    monkeypatch.setenv(kernels.ENV_VAR, backend)
    if backend == "numba":
        import numba

        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        yield request.param
        numba.set_num_threads(previous)
    else:
        yield request.param


def _check(actual, W_hat, x, relative=1e-4):
    """Float32 rounding only: relative to |Ŵ|@|x|, plus a term of the tensor's range, because
    asymmetric grids (and their own decode, x̂ = min + code·s) cancel terms of that size."""
    x64 = x.astype(np.float64)
    expected = W_hat @ x64
    scale = np.abs(W_hat).max(initial=0.0) * np.abs(x64).sum(axis=0)
    bound = relative * (np.abs(W_hat) @ np.abs(x64)) + 1e-6 * scale + 1e-6
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    assert np.all(np.abs(actual - expected) <= bound), np.max(np.abs(actual - expected) - bound)


def _reference(encoded, X: np.ndarray) -> np.ndarray:
    """The numpy reference (the specification) of ``encoded @ X``, whatever backend is selected."""
    out = np.zeros((encoded.shape[0], X.shape[1]), np.float32)
    for start, part in encoded.parts:
        encoded.family.reference_matmul(part, X, out[start : start + part.rows])
    return out


def _check_int8(actual, reference, W_hat, X, relative):
    """int8 activations: equal to the reference up to float32 rounding, and within the
    quantization bound of Ŵ·X: |x − step·xq| <= step/2 per element, step = max|x|/127 of
    its block of 32, times |ŵ − offset| <= |ŵ| + 2·max|Ŵ| (the offset is the centre of its
    group's, row's or chunk's range)."""
    X64 = X.astype(np.float64)
    terms = np.abs(W_hat) @ np.abs(X64)
    np.testing.assert_allclose(actual, reference, rtol=0, atol=float(np.max(1e-5 * terms, initial=0)) + 1e-6)
    cols = X.shape[0]
    blocks = -(-cols // 32)
    padded = np.zeros((blocks * 32, X.shape[1]))
    padded[:cols] = np.abs(X64)
    step = np.repeat(padded.reshape(blocks, 32, -1).max(axis=1) / 127, 32, axis=0)[:cols]
    weights = np.abs(W_hat) + 2 * np.abs(W_hat).max(initial=0.0)
    bound = 0.5 * 1.001 * (weights @ step) + relative * terms + 1e-6
    assert np.all(np.abs(actual - W_hat @ X64) <= bound)


@pytest.mark.parametrize("spec", SPECS)
def test_kernels_equal_dense_decode(containers, spec, mode):
    rng = np.random.default_rng(7)
    with bie_cli.open_container(containers[spec]) as container:
        for name in container:
            tensor = container[name]
            W_hat = tensor.astype(np.float64).reshape(tensor.shape[0], -1)
            exact = kernels.load_encoded(container, name, activations="float32")
            int8 = kernels.load_encoded(container, name)
            assert exact.shape == W_hat.shape and exact.tensor_shape == tensor.shape
            # decode rounds each ŵ to F16 at the end; the kernels keep float32 (closer to the
            # quantized value), so F16 tensors agree to F16's rounding (2**-11 a weight)
            relative = 1e-3 if tensor.dtype == np.float16 else 1e-4
            x = rng.standard_normal(W_hat.shape[1]).astype(np.float32)
            _check(kernels.matvec(exact, x), W_hat, x, relative)
            _check_int8(kernels.matvec(int8, x)[:, None], _reference(int8, x[:, None]), W_hat, x[:, None], relative)
            for batch in (1, 3, 16, 17):  # 17: past the fused kernel's largest batch
                X = rng.standard_normal((W_hat.shape[1], batch)).astype(np.float32)
                _check(kernels.matmul(exact, X), W_hat, X, relative)
                _check_int8(kernels.matmul(int8, X), _reference(int8, X), W_hat, X, relative)


@pytest.mark.parametrize("form", ["rows", "grouped"])
@pytest.mark.parametrize("cols", [300, 70_000], ids=["uint16-columns", "int32-columns"])
def test_row_sparse_matvec_every_row_length(mode, cols, form):
    """Rows of 0-80 weights reach every path of the numba row loop (short row, main loop,
    single vectors, the last partial vector) with each remainder, and (70,000 columns) a row
    longer than the prefetch distance of 512 weights; an Inf in x reaches exactly the rows that
    hold its column. ``grouped``: the same weights in groups of 4 with one-byte column offsets
    (at 70,000 columns most groups span more than 255 columns, so zero-valued fillers abound;
    padding and fillers must not let the Inf reach other rows, in the matvec or the matmul)."""
    from bie_cli.kernels import _rows

    rng = np.random.default_rng(5)
    lengths = np.concatenate([np.arange(81), [160, 257, min(cols, 700)]])
    rows = np.repeat(np.arange(lengths.size), lengths)
    columns = np.concatenate([rng.choice(cols, n, replace=False) for n in lengths])
    values = rng.standard_normal(rows.size).astype(np.float32)
    part = _rows.from_coordinates(lengths.size, cols, rows, columns, values)
    assert part.col.dtype == _rows.index_dtype(cols)
    if form == "grouped":
        plain, part = part, _rows.grouped(part, max_filled_rows=1.0)
        back = part.to_rows()
        assert all(np.array_equal(getattr(back, a), getattr(plain, a)) for a in ("ptr", "col", "val"))
    encoded = kernels.EncodedMatrix("w", "sdr", "F32", (lengths.size, cols), (lengths.size, cols), [(0, part)])
    x = rng.standard_normal(cols).astype(np.float32)
    W_hat = np.zeros((lengths.size, cols))
    W_hat[rows, columns] = values
    _check(kernels.matvec(encoded, x), W_hat, x)
    if mode[0] == "numba":  # the numpy reference multiplies dense blocks: 0·Inf makes every row NaN
        x[columns[-1]] = np.inf
        y = kernels.matvec(encoded, x)
        hit = W_hat[:, columns[-1]] != 0
        assert np.isinf(y[hit]).all() and np.isfinite(y[~hit]).all()
        X = np.stack([rng.standard_normal(cols).astype(np.float32), x], axis=1)
        Y = kernels.matmul(encoded, X)
        assert np.isfinite(Y[:, 0]).all() and np.isinf(Y[hit, 1]).all() and np.isfinite(Y[~hit, 1]).all()


def test_sparse_kernel_form_is_grouped_when_smaller():
    """``kernel_form``: 90%-sparse rows of 4096 columns take the grouped form (5 bytes a weight, not 6);
    rows of 70,000 columns at 99.9% sparsity, where most groups would need fillers, keep the plain form."""
    from bie_cli.kernels import _rows, sdr

    rng = np.random.default_rng(2)
    for cols, density, expected in ((4096, 0.1, _rows.GroupedRows), (70_000, 0.001, _rows.RowSparseMatrix)):
        W = np.where(rng.random((64, cols)) < density, rng.standard_normal((64, cols)), 0).astype(np.float32)
        r, c = np.nonzero(W)
        plain = _rows.from_coordinates(64, cols, r, c, W[r, c])
        form = sdr.kernel_form(plain)
        assert isinstance(form, expected) and form.nbytes <= plain.nbytes and form.nnz == plain.nnz
        if expected is _rows.GroupedRows:
            assert form.nbytes < 5.2 * plain.nnz + 8 * 65


def test_chunks_are_merged_into_one_part_when_layouts_agree(containers):
    encoded = kernels.load_encoded(containers["quant:bits=4"], "odd")
    assert len(encoded.parts) == 1 and encoded.parts[0][1].rows == 37
    # bie-binary picks a form per chunk: dense chunks then sparse ones stay separate parts
    mixed = kernels.load_encoded(containers["bie-binary"], "mixed")
    assert len(mixed.parts) > 1
    assert [start for start, _ in mixed.parts] == sorted(start for start, _ in mixed.parts)


def test_kernel_form_is_compact(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((256, 512)).astype(np.float32)
    pruned = np.where(rng.random(dense.shape) > 0.9, dense, -0.0).astype(np.float32)  # pruned negatives: -0.0
    source = write_safetensors(tmp_path / "m.safetensors", {"dense": dense, "pruned": pruned})
    expectations = {  # bits a weight the kernel reads, at most
        "quant:bits=4": ("dense", 5.1),
        "quant:bits=8": ("dense", 9.1),
        "bie-bitplane:bits=4": ("dense", 4.2),
        "bie-binary": ("dense", 4.2),
        "sdr": ("pruned", 0.1 * 48 + 0.2),
        "bie-blocked": ("pruned", 0.1 * 48 + 0.2),
        "bie-binary:density=0.1": ("dense", 0.1 * 16 + 0.35),
    }
    for number, (spec, (name, bits)) in enumerate(expectations.items()):
        path = tmp_path / f"{number}.cai"
        bie_cli.compress_model(source, path, rules=[f"*={spec}"])
        encoded = kernels.load_encoded(path, name)
        assert encoded.bits_per_weight <= bits, (spec, encoded)


def test_backend_selection(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels.backend() == "numba"
    monkeypatch.setenv(kernels.ENV_VAR, "NumPy")
    assert kernels.backend() == "numpy"
    monkeypatch.setenv(kernels.ENV_VAR, "cuda")
    with pytest.raises(BadInputError, match="BIE_KERNELS='cuda' is not a kernel backend"):
        kernels.backend()


def test_bad_requests_get_clear_errors(tmp_path, containers):
    encoded = kernels.load_encoded(containers["sdr"], "odd")
    with pytest.raises(BadInputError, match="vector of length 29"):
        kernels.matvec(encoded, np.zeros(30, np.float32))
    with pytest.raises(BadInputError, match=r"shape \[29, batch\]"):
        kernels.matmul(encoded, np.zeros((28, 2), np.float32))
    with pytest.raises(BadInputError, match="out must be"):
        kernels.matvec(encoded, np.zeros(29, np.float32), out=np.zeros(37, np.float64))
    source = write_safetensors(tmp_path / "m.safetensors", {"w": np.ones((4, 4), np.float32), "b": np.ones(4, np.float32)})
    bie_cli.compress_model(source, tmp_path / "z.cai", strategy="zstd", rules=["b=quant"])
    with pytest.raises(BadInputError, match="no matmul kernel for strategy 'zstd'"):
        kernels.load_encoded(tmp_path / "z.cai", "w")
    with pytest.raises(BadInputError, match="rank >= 2"):
        kernels.load_encoded(tmp_path / "z.cai", "b")
    with pytest.raises(BadInputError, match="no tensor named 'nope'"):
        kernels.load_encoded(tmp_path / "z.cai", "nope")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_tensors_without_elements(tmp_path, monkeypatch, backend):
    monkeypatch.setenv(kernels.ENV_VAR, backend)
    source = write_safetensors(tmp_path / "m.safetensors", {
        "no_rows": np.zeros((0, 5), np.float32), "no_cols": np.zeros((3, 0), np.float32)})
    bie_cli.compress_model(source, tmp_path / "e.cai", rules=["*=quant"])
    assert kernels.matvec(kernels.load_encoded(tmp_path / "e.cai", "no_rows"), np.ones(5)).shape == (0,)
    y = kernels.matvec(kernels.load_encoded(tmp_path / "e.cai", "no_cols"), np.ones(0))
    np.testing.assert_array_equal(y, np.zeros(3, np.float32))
    Y = kernels.matmul(kernels.load_encoded(tmp_path / "e.cai", "no_cols"), np.ones((0, 4)))
    np.testing.assert_array_equal(Y, np.zeros((3, 4), np.float32))


def test_warmup_reports_seconds_per_family():
    seconds = kernels.warmup(["quant", "sdr"])
    assert set(seconds) == {"quant", "sdr"} and all(s >= 0 for s in seconds.values())


def test_importing_kernels_does_not_import_numba():
    probe = (
        "import sys, bie_cli, bie_cli.kernels\n"
        "for family in ('quant', 'sdr', 'binary', 'bitplane', 'blocked'):\n"
        "    __import__('bie_cli.kernels.' + family)\n"
        "bie_cli.kernels.backend()\n"
        "print(sorted(m for m in ('numba', 'torch', 'scipy') if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120, check=True)
    assert completed.stdout.strip() == b"[]", completed.stderr.decode()[-500:]


@pytest.mark.parametrize("group_size", [4, 32], ids=["pair-layout", "block-layout"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_weights_stored_exactly_by_quant(tmp_path, monkeypatch, backend, group_size):
    """NaN/Inf kept with allow_nonfinite propagate as in the dense product; other rows agree."""
    monkeypatch.setenv(kernels.ENV_VAR, backend)
    rng = np.random.default_rng(3)
    W = rng.standard_normal((6, 40)).astype(np.float32)
    W[1, 3], W[4, 0] = np.nan, np.inf
    source = write_safetensors(tmp_path / "m.safetensors", {"w": W})
    spec = f"quant:bits=4,group_size={group_size},allow_nonfinite=true"
    bie_cli.compress_model(source, tmp_path / "q.cai", rules=[f"*={spec}"])
    with bie_cli.open_container(tmp_path / "q.cai") as container:
        W_hat = container["w"].astype(np.float64)
    encoded = kernels.load_encoded(tmp_path / "q.cai", "w", activations="float32")
    x = np.abs(rng.standard_normal(40)).astype(np.float32)
    X = np.abs(rng.standard_normal((40, 3))).astype(np.float32)
    with np.errstate(invalid="ignore"):
        expected, expected_batch = W_hat @ x, W_hat @ X
    assert np.isnan(expected[1]) and np.isposinf(expected[4])
    np.testing.assert_allclose(kernels.matvec(encoded, x), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(kernels.matmul(encoded, X), expected_batch, rtol=1e-4, atol=1e-5)
    int8 = kernels.load_encoded(tmp_path / "q.cai", "w")
    np.testing.assert_allclose(kernels.matmul(int8, X), expected_batch, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_nonfinite_activations_take_the_float32_path(containers, monkeypatch, backend):
    monkeypatch.setenv(kernels.ENV_VAR, backend)
    int8 = kernels.load_encoded(containers["quant:bits=4"], "wide")
    exact = kernels.load_encoded(containers["quant:bits=4"], "wide", activations="float32")
    X = np.random.default_rng(0).standard_normal((130, 3)).astype(np.float32)
    assert not np.array_equal(kernels.matmul(int8, X), kernels.matmul(exact, X))
    X[5, 1] = np.inf
    with np.errstate(invalid="ignore"):  # both exact float32 (row tiles: dequantized into sgemm), sums in another order
        np.testing.assert_allclose(kernels.matmul(int8, X), kernels.matmul(exact, X), rtol=1e-5, atol=1e-5)
    with pytest.raises(BadInputError, match="activations='int4'"):
        kernels.load_encoded(containers["quant:bits=4"], "wide", activations="int4")


def _random_block_matrix(rng, rows, cols, bits, group, affine):
    """A block-layout quant matrix of random codes, scales (and offsets), one group a row when
    ``group`` is 0, with up to three exactly stored elements."""
    from bie_cli.kernels import quant

    group_size = group or cols
    groups = -(-cols // group_size)
    scale = rng.random((rows, groups)).astype(np.float32)
    offset = rng.standard_normal((rows, groups)).astype(np.float32) if affine else quant.NO_OFFSET
    m = quant.build(rng.integers(0, 1 << bits, (rows, cols)).astype(np.uint8), bits, group_size, scale, offset)
    count = min(3, rows * cols)
    quant._add_fixes(m, rng.choice(rows * cols, count, replace=False), rng.standard_normal(count).astype(np.float32))
    return m


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 9), cols=st.integers(1, 200), bits=st.sampled_from([2, 3, 4, 5, 8]),
       group=st.sampled_from([32, 64, 128, 0]), affine=st.booleans(), batch=st.sampled_from([1, 3, 16]),
       seed=st.integers(0, 2**16))
def test_block_layout_kernels_match_the_reference(rows, cols, bits, group, affine, batch, seed):
    """The block layout on any shape: group tails, padding to whole blocks, one group a row (0),
    asymmetric offsets and exactly stored elements, numba (both activations) against numpy."""
    from bie_cli.kernels import quant

    rng = np.random.default_rng(seed)
    m = _random_block_matrix(rng, rows, cols, bits, group, affine)
    assert m.blocked
    X = rng.standard_normal((cols, batch)).astype(np.float32)
    W_hat = quant._dequantize_block(m, 0, rows).astype(np.float64)
    for activations in ("float32", "int8"):
        m.activations = activations
        expected = np.empty((rows, batch), np.float32)
        quant.reference_matmul(m, X, expected)
        actual = np.empty((rows, batch), np.float32)
        quant.numba_matmul(m, X, actual)
        terms = np.abs(W_hat) @ np.abs(X.astype(np.float64))
        np.testing.assert_allclose(actual, expected, rtol=0, atol=float(1e-5 * terms.max()) + 1e-6)
        if activations == "float32":
            np.testing.assert_allclose(actual, W_hat @ X, rtol=0, atol=float(1e-5 * terms.max()) + 1e-6)


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 21), cols=st.integers(1, 150), bits=st.sampled_from([2, 4]),
       group=st.sampled_from([32, 64, 0]), affine=st.booleans(), batch=st.sampled_from([1, 2, 3, 5, 13, 17]),
       seed=st.integers(0, 2**16))
def test_row_tiles_match_the_block_layout(rows, cols, bits, group, affine, batch, seed):
    """The row-tile layout (4 columns a pass, then 3, 2, 1; rows padded to tiles of 8) gives the
    block layout's int8 product on any shape, exact elements and offsets included; from 17
    columns on its dequantized tiles give the exact float32 product; the codes round-trip."""
    from bie_cli.kernels import quant

    rng = np.random.default_rng(seed)
    m = _random_block_matrix(rng, rows, cols, bits, group, affine)
    tiled = quant.to_row_tiles(m)
    assert tiled.tiled and tiled.codes.shape == (-(-rows // 8), m.blocks * 128)
    np.testing.assert_array_equal(tiled.centered_codes(0, rows), m.centered_codes(0, rows))
    np.testing.assert_array_equal(tiled.centered_codes(rows // 2, rows), m.centered_codes(rows // 2, rows))
    X = rng.standard_normal((cols, batch)).astype(np.float32)
    expected = np.empty((rows, batch), np.float32)
    quant.reference_matmul(m, X, expected)
    terms = np.abs(quant._dequantize_block(m, 0, rows).astype(np.float64)) @ np.abs(X.astype(np.float64))
    for run in (quant.reference_matmul, quant.numba_matmul):
        actual = np.empty((rows, batch), np.float32)
        run(tiled, X, actual)
        np.testing.assert_allclose(actual, expected, rtol=0, atol=float(1e-5 * terms.max()) + 1e-6)
    bias = rng.standard_normal(rows).astype(np.float32)
    Y = np.empty((batch, rows), np.float32)  # [N, out] written through its transpose, as bie_cli.nn does
    assert quant.tiled_product(tiled, np.ascontiguousarray(X.T), Y.T, bias)  # any batch (bie_cli.nn)
    if batch > quant.FUSED_MAX_BATCH:  # the block layout's int8 product, for the comparison
        xq, step = quant.quantize_activations(X)
        expected = quant._int8_block(m, 0, rows, X, xq, step).astype(np.float32)
    np.testing.assert_allclose(Y.T, expected + bias[:, None], rtol=0, atol=float(1e-5 * terms.max()) + 1e-5)


def test_row_tiles_take_the_float32_path_for_nonfinite_activations():
    from bie_cli.kernels import quant

    rng = np.random.default_rng(5)
    m = quant.build(rng.integers(0, 16, (11, 70)).astype(np.uint8), 4, 32, rng.random((11, 3)).astype(np.float32),
                    quant.NO_OFFSET)
    tiled = quant.to_row_tiles(m)
    X = rng.standard_normal((70, 4)).astype(np.float32)
    X[3, 2] = np.inf
    Y = np.empty((11, 4), np.float32)
    assert not quant.tiled_product(tiled, np.ascontiguousarray(X.T), Y)
    m.activations = "float32"
    expected, actual = np.empty((11, 4), np.float32), np.empty((11, 4), np.float32)
    with np.errstate(invalid="ignore"):
        quant.numba_matmul(m, X, expected)
        quant.numba_matmul(tiled, X, actual)
    assert np.isinf(actual[:, 2]).any() and np.array_equal(np.isfinite(actual), np.isfinite(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-5, atol=1e-4)


def test_paired_activations_are_the_block_codes_in_the_two_block_order():
    """The 4-bit batch-1 kernel unpacks two blocks at once as (first 16 weights of each, then the
    last 16 of each); its activations must be the per-block codes in exactly that order."""
    from bie_cli.kernels import _quant_numba

    rng = np.random.default_rng(3)
    for cols in (31, 64, 96, 200):
        XT = rng.standard_normal((1, cols)).astype(np.float32)
        blocks = -(-cols // 32)
        plain = _quant_numba.prepare_activations(XT, blocks, cols, 1, True, False, 1, False, 8)
        paired = _quant_numba.prepare_activations(XT, blocks, cols, 1, True, False, 1, True, 8)
        expected = plain[2][0].copy()
        for pair in range(blocks // 2):
            first, second = plain[2][0][64 * pair : 64 * pair + 32], plain[2][0][64 * pair + 32 : 64 * pair + 64]
            expected[64 * pair : 64 * pair + 64] = np.concatenate([first[:16], second[:16], first[16:], second[16:]])
        np.testing.assert_array_equal(paired[2][0], expected)
        for index in (0, 1, 3, 4):  # padded copy, sums, block steps and block sums are unchanged
            np.testing.assert_array_equal(paired[index], plain[index])
        steps, sums = paired[3][0], paired[4][0]  # per pair: d in lanes 0-3 / 4-7, 8·Σxq in lanes 0 and 4
        lanes = np.arange(blocks // 2 * 8)
        np.testing.assert_array_equal(paired[5][0], steps[2 * (lanes // 8) + (lanes % 8 >= 4)])
        expected_taken = np.where(lanes % 4 == 0, 8 * sums[2 * (lanes // 8) + (lanes % 8 >= 4)], 0)
        np.testing.assert_array_equal(paired[6][0], expected_taken)
        assert plain[5].size == plain[6].size == 0


def test_portable_ir_without_avx2(tmp_path):
    """On a CPU without AVX2 the row dots are target-independent vector IR: same results."""
    probe = (
        "import numpy as np\n"
        "from bie_cli.kernels import quant\n"
        "rng = np.random.default_rng(1)\n"
        "for bits in (4, 8):\n"
        "    m = quant.build(rng.integers(0, 1 << bits, (5, 70)).astype(np.uint8), bits, 64,\n"
        "                    rng.random((5, 2)).astype(np.float32), quant.NO_OFFSET)\n"
        "    for activations in ('int8', 'float32'):\n"
        "        m.activations = activations\n"
        "        X = rng.standard_normal((70, 3)).astype(np.float32)\n"
        "        a, b = np.empty((5, 3), np.float32), np.empty((5, 3), np.float32)\n"
        "        quant.reference_matmul(m, X, a)\n"
        "        quant.numba_matmul(m, X, b)\n"
        "        assert np.allclose(a, b, rtol=1e-5, atol=1e-4), (bits, activations, a - b)\n"
        "m = quant.build(rng.integers(0, 16, (11, 70)).astype(np.uint8), 4, 64,\n"
        "                rng.random((11, 2)).astype(np.float32), quant.NO_OFFSET)\n"
        "X = rng.standard_normal((70, 6)).astype(np.float32)\n"
        "a, b = np.empty((11, 6), np.float32), np.empty((11, 6), np.float32)\n"
        "quant.reference_matmul(m, X, a)\n"
        "quant.numba_matmul(quant.to_row_tiles(m), X, b)\n"
        "assert np.allclose(a, b, rtol=1e-5, atol=1e-4), ('row tiles', a - b)\n"
        "from bie_cli.kernels import _quant_numba\n"
        "asm = ''.join([*_quant_numba.blocked_matmul.inspect_asm().values(),\n"
        "               *_quant_numba.tiled_matmul.inspect_asm().values()])\n"
        "print('pmaddubsw' in asm, 'ymm' in asm)\n"
    )
    env = {**os.environ, "NUMBA_CPU_NAME": "x86-64", "NUMBA_CPU_FEATURES": "+sse,+sse2",
           "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]  # no AVX2 instruction or register was used


def test_dense_gemm_hook_is_used_for_code_forms_and_scoped(containers, monkeypatch):
    from bie_cli.kernels.quant import FUSED_MAX_BATCH

    monkeypatch.setenv(kernels.ENV_VAR, "numba")
    encoded = kernels.load_encoded(containers["quant:bits=4"], "wide")
    X = np.random.default_rng(0).standard_normal((130, FUSED_MAX_BATCH + 1)).astype(np.float32)
    expected = kernels.matmul(encoded, X)
    calls = []

    def recording_gemm(a, b, out):
        calls.append(a.shape)
        np.matmul(a, b, out=out)

    with kernels.dense_gemm(recording_gemm):
        np.testing.assert_array_equal(kernels.matmul(encoded, X), expected)
    assert calls and sum(rows for rows, _ in calls) == 9
    kernels.matmul(encoded, X)
    assert sum(rows for rows, _ in calls) == 9  # the hook ended with its context


def test_corrupt_chunk_is_a_clear_error(tmp_path):
    from bie_cli.errors import CorruptContainerError

    source = write_safetensors(tmp_path / "m.safetensors", {"w": np.ones((8, 8), np.float32)})
    bie_cli.compress_model(source, tmp_path / "q.cai", rules=["*=quant:bits=4,group_size=4,entropy=none"])
    with bie_cli.open_container(tmp_path / "q.cai") as container:
        offset = container.info("w").chunks[0].offset
    data = bytearray((tmp_path / "q.cai").read_bytes())
    data[offset + 100] ^= 0xFF  # inside the chunk record
    (tmp_path / "bad.cai").write_bytes(bytes(data))
    with pytest.raises(CorruptContainerError, match="tensor 'w' chunk 0"):
        kernels.load_encoded(tmp_path / "bad.cai", "w")


class _DenseRows:
    """A third party's kernel family (an object, not a module): the chunk's float32 rows, numpy products."""

    @staticmethod
    def from_chunk(payload, meta, shape, dtype):
        rows = np.frombuffer(payload, dtype="<f4").reshape(shape[0], -1).copy()
        return SimpleNamespace(rows=rows.shape[0], cols=rows.shape[1], nbytes=rows.nbytes, w=rows)

    @staticmethod
    def reference_matmul(part, X, out):
        np.matmul(part.w, X, out=out)

    @staticmethod
    def reference_matvec(part, x, out):
        np.matmul(part.w, x, out=out)


class _ThirdPartyStrategy(Strategy):
    id = "third-party-f32"
    lossless = True
    dtypes = frozenset({"F32"})
    kernels = _DenseRows

    def encode(self, chunk, config):
        return np.ascontiguousarray(chunk, dtype="<f4").tobytes(), {}

    def decode(self, payload, meta, shape, dtype):
        return np.frombuffer(payload, dtype="<f4").reshape(shape).copy()


def test_a_strategy_brings_its_own_kernels(tmp_path, monkeypatch):
    """Kernels come from the strategy class (``kernels``), so a third-party strategy can provide them."""
    from bie_cli.strategies import registry

    monkeypatch.setitem(registry._instances, _ThirdPartyStrategy.id, _ThirdPartyStrategy())
    W = np.random.default_rng(0).standard_normal((9, 5)).astype(np.float32)
    source = write_safetensors(tmp_path / "m.safetensors", {"w": W})
    bie_cli.compress_model(source, tmp_path / "t.cai", rules=["*=third-party-f32"], chunk_size=64)
    encoded = kernels.load_encoded(tmp_path / "t.cai", "w")
    assert len(encoded.parts) > 1  # no concat: the parts stay separate, in row order
    x = np.arange(5, dtype=np.float32)
    for backend in kernels.BACKENDS:  # no numba functions: both backends run the reference
        monkeypatch.setenv(kernels.ENV_VAR, backend)
        np.testing.assert_allclose(kernels.matvec(encoded, x), W @ x, rtol=1e-6)
        np.testing.assert_allclose(kernels.matmul(encoded, np.eye(5, dtype=np.float32)), W, rtol=1e-6)
    assert kernels.has_kernels("third-party-f32") and "third-party-f32" in kernels.kernel_strategies()
    assert kernels.warmup(["third-party-f32"])["third-party-f32"] >= 0
    assert not kernels.has_kernels("zstd") and not kernels.has_kernels("no-such-strategy")
    monkeypatch.setattr(_ThirdPartyStrategy, "kernels", SimpleNamespace(from_chunk=_DenseRows.from_chunk))
    with pytest.raises(BadInputError, match="lack reference_matvec, reference_matmul"):
        kernels.load_encoded(tmp_path / "t.cai", "w")
