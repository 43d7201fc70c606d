"""Run ``torch.nn.Linear`` layers straight from a ``.cai`` container.

:class:`CompressedLinear` holds a weight in kernel form
(:func:`bie_cli.kernels.load_encoded`: codes, scales, indices — never a
dense float matrix) and its forward calls :func:`bie_cli.kernels.matvec` /
:func:`~bie_cli.kernels.matmul` on numpy views of the activations.
:func:`swap_linear_layers` replaces every matching ``nn.Linear`` of a model::

    model = SentenceTransformer(path, device="cpu")
    swapped = swap_linear_layers(model, "model.cai")

Inference only: the weights are fixed and no gradient flows through the
layer (its output is a new tensor). CPU only. torch is imported here and
nowhere else in bie_cli's kernels.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Callable, Mapping

import numpy as np
import torch  # noqa: TID253 - this module is the torch layer; nothing else imports it

from . import kernels
from .errors import BadInputError
from .tensorcodec import StoredTensors


class CompressedLinear(torch.nn.Module):
    """``y = x Ŵᵀ + b`` with ``Ŵ`` in kernel form; a drop-in for an inference ``nn.Linear``."""

    def __init__(self, encoded: kernels.EncodedMatrix, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        encoded, self._tiled = _row_tiles(encoded)
        self.encoded = encoded
        self.out_features, self.in_features = encoded.shape
        if bias is not None:
            bias = torch.as_tensor(bias, dtype=torch.float32).reshape(-1)
            if bias.numel() != self.out_features:
                raise BadInputError(
                    f"bias of {bias.numel()} elements does not fit a weight with {self.out_features} rows"
                )
            self.register_buffer("bias", bias)
        else:
            self.bias = None

    @classmethod
    def from_container(
        cls, path: str | os.PathLike | StoredTensors, name: str, bias_name: str | None = None,
        activations: str = "int8",
    ) -> CompressedLinear:
        """The weight tensor ``name`` (and optionally the bias ``bias_name``) of a ``.cai`` file;
        ``activations`` as in :func:`bie_cli.kernels.load_encoded`."""
        if isinstance(path, StoredTensors):
            return cls._from_reader(path, name, bias_name, activations)
        reader = StoredTensors.open(path)
        try:
            return cls._from_reader(reader, name, bias_name, activations)
        finally:
            reader.close()

    @classmethod
    def _from_reader(cls, reader: StoredTensors, name: str, bias_name: str | None,
                     activations: str = "int8") -> CompressedLinear:
        encoded = kernels.load_encoded(reader, name, activations)
        bias = None
        if bias_name is not None:
            bias = torch.from_numpy(np.asarray(reader.read_tensor(bias_name), dtype=np.float32).copy())
        return cls(encoded, bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[-1] != self.in_features:
            raise BadInputError(
                f"CompressedLinear {self.encoded.name!r} expects {self.in_features} input features, "
                f"got shape {tuple(input.shape)}"
            )
        leading = input.shape[:-1]
        plain = input.dtype == torch.float32 and input.is_cpu
        x = input.detach().reshape(-1, self.in_features)
        if not plain:
            x = x.to(device="cpu", dtype=torch.float32)
        x = x.numpy()
        bias = None if self.bias is None else self.bias.numpy()
        if self._tiled is not None and kernels.backend() == "numba":
            # one kernel call at any batch: int8 activations, the bias added, y written as [N, out]
            # (its transpose is the kernel's [out, N] output)
            y = np.empty((x.shape[0], self.out_features), dtype=np.float32)
            if self._tiled.product(np.ascontiguousarray(x), y.T, bias):
                return self._output(y, input, leading, plain)
        # numpy throughout, one torch tensor at the end: each torch call costs microseconds, and a
        # sentence model's Linear layers are products of a few tens of microseconds
        if x.shape[0] == 1:
            y = kernels.matvec(self.encoded, x[0])
            if bias is not None:
                y += bias
            y = y[None, :]
        else:
            with kernels.dense_gemm(_torch_gemm):
                product = kernels.matmul(self.encoded, x.T)
            y = np.empty((x.shape[0], self.out_features), dtype=np.float32)
            if bias is None:
                y[...] = product.T
            else:
                np.add(product.T, bias, out=y)
        return self._output(y, input, leading, plain)

    def _output(self, y: np.ndarray, input: torch.Tensor, leading, plain: bool) -> torch.Tensor:
        out = torch.from_numpy(y)
        if not plain:
            out = out.to(dtype=input.dtype, device=input.device)
        return out.reshape(*leading, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"strategy={self.encoded.strategy!r}, {self.encoded.bits_per_weight:.2f} bits/weight"
        )


def _row_tiles(encoded: kernels.EncodedMatrix):
    """A 4-bit ``quant`` weight in one part (int8 activations) in the row-tile layout
    (:func:`bie_cli.kernels.quant.to_row_tiles`): a Linear layer's products are batches of
    tokens, where it is several times faster than the block layout; its codes replace the
    block layout's (same bytes). Returns ``(encoded, quant.TiledProduct or None)``."""
    if encoded.strategy != "quant" or len(encoded.parts) != 1:
        return encoded, None
    from .kernels import quant

    start, part = encoded.parts[0]
    if part.tiled:  # load_encoded's kernel form already
        return encoded, quant.TiledProduct(part)
    if not quant.can_tile(part):
        return encoded, None
    tiled = quant.to_row_tiles(part)
    return dataclasses.replace(encoded, parts=[(start, tiled)]), quant.TiledProduct(tiled)


def _torch_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Dense tile products on torch's thread pool, not a second one (numpy's BLAS) fighting it."""
    torch.matmul(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))


NameMap = Mapping[str, str] | Callable[[str], str | None]


def _weight_name(module_name: str, reader: StoredTensors, name_map: NameMap | None) -> str | None:
    """The container tensor holding a module's weight.

    ``name_map`` (a dict or a function of the module name) wins; otherwise
    ``<module>.weight``, then the same with leading components dropped
    (``0.auto_model.encoder.x`` finds ``encoder.x.weight``).
    """
    if name_map is not None:
        mapped = name_map.get(module_name) if isinstance(name_map, Mapping) else name_map(module_name)
        return mapped if mapped is not None and mapped in reader else None
    parts = module_name.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:] + ["weight"])
        if candidate in reader:
            return candidate
    return None


def swap_linear_layers(
    model: torch.nn.Module,
    container_path: str | os.PathLike,
    pattern: str = "*",
    name_map: NameMap | None = None,
    activations: str = "int8",
) -> list[str]:
    """Replace every ``nn.Linear`` whose name matches ``pattern`` (a glob) by a :class:`CompressedLinear`
    (``activations`` as in :func:`bie_cli.kernels.load_encoded`).

    A layer is swapped when its weight is in the container under a strategy
    that has kernels (:func:`bie_cli.kernels.has_kernels`); its bias comes
    from the container (``<weight prefix>.bias``) when stored there, else
    the layer's own bias is kept. Returns the swapped module names, in order.
    """
    swapped = []
    reader = StoredTensors.open(container_path)
    try:
        targets = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and fnmatch.fnmatchcase(name, pattern)
        ]
        for name, module in targets:
            weight_name = _weight_name(name, reader, name_map)
            if weight_name is None or not kernels.has_kernels(reader.entry(weight_name).strategy):
                continue
            layer = CompressedLinear._from_reader(reader, weight_name, None, activations)
            if layer.encoded.shape != (module.out_features, module.in_features):
                raise BadInputError(
                    f"tensor {weight_name!r} has shape {layer.encoded.tensor_shape}, "
                    f"layer {name!r} needs [{module.out_features}, {module.in_features}]"
                )
            bias_name = weight_name[: -len("weight")] + "bias" if weight_name.endswith("weight") else None
            if bias_name is not None and bias_name in reader:
                layer = CompressedLinear(layer.encoded, torch.from_numpy(
                    np.asarray(reader.read_tensor(bias_name), dtype=np.float32).copy()))
            elif module.bias is not None:
                layer = CompressedLinear(layer.encoded, module.bias.detach().to(torch.float32).cpu())
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, layer)
            swapped.append(name)
    finally:
        reader.close()
    return swapped
