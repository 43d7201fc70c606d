"""``bie_cli.nn``: Linear layers that run from a .cai file without dequantizing their weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_safetensors

import bie_cli
from bie_cli import kernels
from bie_cli.errors import BadInputError
from bie_cli.nn import CompressedLinear, swap_linear_layers

torch.manual_seed(0)


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(13, 24), torch.nn.ReLU(), torch.nn.Linear(24, 7, bias=False))
        self.head = torch.nn.Linear(7, 3)


def _toy_container(tmp_path: Path, strategy: str) -> tuple[Toy, Path]:
    model = Toy().eval()
    tensors = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    source = write_safetensors(tmp_path / "toy.safetensors", tensors)
    bie_cli.compress_model(source, tmp_path / "toy.cai", rules=[f"*.weight={strategy}"])
    return model, tmp_path / "toy.cai"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_compressed_linear_matches_the_decoded_linear(tmp_path, monkeypatch, backend):
    monkeypatch.setenv(kernels.ENV_VAR, backend)
    _, path = _toy_container(tmp_path, "quant:bits=4,group_size=8")
    layer = CompressedLinear.from_container(path, "encoder.0.weight", bias_name="encoder.0.bias")
    with bie_cli.open_container(path) as container:
        reference = torch.nn.Linear(13, 24)
        reference.load_state_dict({"weight": torch.from_numpy(container["encoder.0.weight"]),
                                   "bias": torch.from_numpy(container["encoder.0.bias"])})
    assert (layer.in_features, layer.out_features) == (13, 24)
    for shape in [(13,), (1, 13), (5, 13), (2, 3, 13)]:  # no batch, batch 1 (matvec), matmul, leading dims
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), reference(x), rtol=1e-5, atol=1e-5)
    x = torch.randn(4, 13, dtype=torch.float64)
    assert layer(x).dtype == torch.float64
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16
    with pytest.raises(BadInputError, match="expects 13 input features"):
        layer(torch.randn(2, 12))
    assert "quant" in repr(layer) and "bits/weight" in repr(layer)


def test_activations_choice_reaches_the_kernels(tmp_path):
    """int8 activations (default) stay close to the decoded layer; float32 ones match it to float32 rounding."""
    _, path = _toy_container(tmp_path, "quant:bits=4,group_size=32")
    with bie_cli.open_container(path) as container:
        weight = torch.from_numpy(container["encoder.2.weight"])
    x = torch.randn(5, 24)
    expected = x @ weight.T
    exact = CompressedLinear.from_container(path, "encoder.2.weight", activations="float32")
    torch.testing.assert_close(exact(x), expected, rtol=1e-5, atol=1e-5)
    int8 = CompressedLinear.from_container(path, "encoder.2.weight")
    assert not torch.equal(int8(x), exact(x))
    torch.testing.assert_close(int8(x), expected, rtol=0, atol=3e-2 * float(expected.abs().max()))
    model = Toy()
    swap_linear_layers(model, path, activations="float32")
    assert model.encoder[2].encoded.parts[0][1].activations == "float32"


def test_four_bit_layers_run_on_row_tiles(tmp_path, monkeypatch):
    """4-bit quant weights are held in the row-tile layout; one kernel call with the bias gives the
    block layout's int8 result at every batch (past 16 rows too), and so does the numpy reference."""
    _, path = _toy_container(tmp_path, "quant:bits=4,group_size=32")
    layer = CompressedLinear.from_container(path, "encoder.0.weight", bias_name="encoder.0.bias")
    assert layer.encoded.parts[0][1].tiled
    loaded = kernels.load_encoded(path, "encoder.0.weight")  # load_encoded's kernel form is the row tiles too
    assert loaded.parts[0][1].tiled
    bias = layer.bias.numpy()
    from bie_cli.kernels import quant

    for rows in (1, 5, 20):
        x = torch.randn(rows, 13)
        X = np.ascontiguousarray(x.numpy().T)
        xq, step = quant.quantize_activations(X)  # the reference int8 product (codes read in column order)
        expected = torch.from_numpy(quant._int8_block(loaded.parts[0][1], 0, 24, X, xq, step).astype(np.float32).T + bias)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        if rows <= quant.FUSED_MAX_BATCH:  # the numpy backend's int8 range (then exact float32)
            monkeypatch.setenv(kernels.ENV_VAR, "numpy")
            torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
            monkeypatch.delenv(kernels.ENV_VAR)


def test_swap_linear_layers(tmp_path):
    model, path = _toy_container(tmp_path, "sdr")
    x = torch.randn(6, 13)
    with torch.no_grad():
        expected = model.head(model.encoder(x))
    swapped = swap_linear_layers(model, path)
    assert swapped == ["encoder.0", "encoder.2", "head"]
    assert all(isinstance(module, CompressedLinear) for module in (model.encoder[0], model.encoder[2], model.head))
    assert model.encoder[2].bias is None and model.head.bias is not None
    with torch.no_grad():  # sdr is lossless: same products up to float32 summation order
        torch.testing.assert_close(model.head(model.encoder(x)), expected, rtol=1e-5, atol=1e-5)


def test_swap_pattern_and_name_map(tmp_path):
    model, path = _toy_container(tmp_path, "quant:bits=8")
    assert swap_linear_layers(model, path, pattern="encoder.*") == ["encoder.0", "encoder.2"]
    assert isinstance(model.head, torch.nn.Linear)
    other = Toy()
    assert swap_linear_layers(other, path, name_map={"head": "head.weight"}) == ["head"]
    renamed = Toy()
    assert swap_linear_layers(renamed, path, name_map=lambda name: None) == []


def test_swap_skips_layers_without_kernels_and_checks_shapes(tmp_path):
    (tmp_path / "zstd").mkdir()
    (tmp_path / "quant").mkdir()
    model, path = _toy_container(tmp_path / "zstd", "zstd")
    assert swap_linear_layers(model, path) == []
    _, quantized = _toy_container(tmp_path / "quant", "quant")
    wrong = torch.nn.Sequential()
    wrong.add_module("head", torch.nn.Linear(8, 3))
    with pytest.raises(BadInputError, match="layer 'head' needs"):
        swap_linear_layers(wrong, quantized)


@pytest.mark.real_model
def test_minilm_from_int8_container_matches_its_decompressed_weights(minilm_path, tmp_path):
    """MiniLM with every nn.Linear swapped for CompressedLinear (int8 quant container) gives
    the embeddings of the same container decompressed into the model: cosine >= 0.999."""
    from sentence_transformers import SentenceTransformer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = minilm_path.parent
    cai = tmp_path / "minilm-int8.cai"
    bie_cli.compress_model(minilm_path, cai, strategy="quant:bits=8")
    sentences = (Path(__file__).resolve().parent.parent / "bench" / "data" / "sentences.txt").read_text().splitlines()[:24]

    decompressed = SentenceTransformer(str(folder), device="cpu")
    transformer = decompressed[0].auto_model
    state = {name: tensor for name, tensor in bie_cli.load_state_dict(cai).items() if name in transformer.state_dict()}
    assert len(state) >= 100  # every weight of the checkpoint reached the model
    transformer.load_state_dict(state, strict=False)
    reference = decompressed.encode(sentences, convert_to_numpy=True, batch_size=8)

    model = SentenceTransformer(str(folder), device="cpu")
    swapped = swap_linear_layers(model, cai)
    linear_count = sum(isinstance(m, torch.nn.Linear) for m in decompressed.modules())
    assert len(swapped) == linear_count == 37  # 6 layers x 6 Linear + the pooler
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    embeddings = model.encode(sentences, convert_to_numpy=True, batch_size=8)
    cosine = (embeddings * reference).sum(1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.999, cosine.min()
