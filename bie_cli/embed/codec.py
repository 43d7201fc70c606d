"""``BinaryCodec``: float embedding vectors -> packed binary codes, with every parameter stored.

An input row ``x`` (``input_dim`` floats) becomes a code in four steps:

1. truncation: only the first ``dims`` dimensions are used (Matryoshka-style);
2. L2 normalisation of those (codes stand for cosine similarity);
3. an affine map ``z = (x - center) @ projection`` (``projection`` is the identity
   when absent; ``fit`` learns a PCA + ITQ rotation or a trained matrix);
4. thresholds: bit ``j < keep`` is ``z_j >= thresholds_j``; the remaining
   components are merged two into one bit as in the embedding seed,
   ``bit = 0 if z_a < k1 and z_b < k2 else 1`` (``k1, k2`` are those
   components' thresholds).

Bits are packed eight per byte, most significant bit first (``np.packbits``),
rows zero-padded to whole bytes: ``[n, ceil(bits / 8)]`` uint8.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadInputError

METHODS = ("adaptive", "sign", "trained")


def packed_width(bits: int) -> int:
    return math.ceil(bits / 8)


@dataclass(eq=False)
class BinaryCodec:
    method: str
    input_dim: int
    dims: int
    keep: int
    center: np.ndarray  # float32 [dims]
    thresholds: np.ndarray  # float32 [components]
    projection: np.ndarray | None = None  # float32 [dims, components]; None = identity
    info: dict = field(default_factory=dict)  # how it was fitted (sample size, seconds, ...): JSON

    def __post_init__(self) -> None:
        self.center = np.ascontiguousarray(self.center, dtype=np.float32)
        self.thresholds = np.ascontiguousarray(self.thresholds, dtype=np.float32)
        if self.projection is not None:
            self.projection = np.ascontiguousarray(self.projection, dtype=np.float32)
        components = self.components
        problems = []
        if not 0 < self.dims <= self.input_dim:
            problems.append(f"dims {self.dims} outside 1..{self.input_dim}")
        if self.center.shape != (self.dims,):
            problems.append(f"center has shape {self.center.shape}, expected ({self.dims},)")
        if self.projection is not None and self.projection.shape[0] != self.dims:
            problems.append(f"projection has {self.projection.shape[0]} rows, expected {self.dims}")
        if self.thresholds.shape != (components,):
            problems.append(f"thresholds have shape {self.thresholds.shape}, expected ({components},)")
        if not 0 < self.keep <= components or (components - self.keep) % 2:
            problems.append(f"keep={self.keep} does not leave an even number of the {components} components to merge")
        if problems:
            raise BadInputError("invalid embedding codec: " + "; ".join(problems))

    @property
    def components(self) -> int:
        return self.dims if self.projection is None else self.projection.shape[1]

    @property
    def merged(self) -> int:
        """Output bits that each merge two components."""
        return (self.components - self.keep) // 2

    @property
    def bits(self) -> int:
        return self.keep + self.merged

    @property
    def code_bytes(self) -> int:
        return packed_width(self.bits)

    def fingerprint(self) -> str:
        """Identifies the parameters: codes record it, search checks it."""
        digest = hashlib.sha256(f"{self.method}|{self.input_dim}|{self.dims}|{self.keep}".encode())
        for array in (self.center, self.thresholds, self.projection):
            if array is not None:
                digest.update(array.tobytes())
        return digest.hexdigest()[:32]

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Steps 1-3: the float components that the thresholds cut (float32 [n, components])."""
        x = check_vectors(vectors, self.input_dim, "vectors")[:, :self.dims]
        x = normalize(x)
        x -= self.center
        return x if self.projection is None else x @ self.projection

    def bits_of(self, components: np.ndarray) -> np.ndarray:
        above = components >= self.thresholds
        if not self.merged:
            return above
        first = above[:, self.keep::2]
        second = above[:, self.keep + 1::2]
        return np.concatenate([above[:, :self.keep], first | second], axis=1)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Packed codes, uint8 ``[n, ceil(bits / 8)]``."""
        return np.packbits(self.bits_of(self.transform(vectors)), axis=1)

    def query_weights(self, vectors: np.ndarray) -> np.ndarray:
        """Asymmetric scoring: a float query's signed margins per bit, for :func:`~.search.asymmetric_search`."""
        if self.merged:
            raise BadInputError("asymmetric scoring needs one component per bit (a codec without merged bits)")
        return (self.transform(vectors) - self.thresholds).astype(np.float32)

    def parameters(self) -> dict[str, np.ndarray]:
        tensors = {"center": self.center, "thresholds": self.thresholds}
        if self.projection is not None:
            tensors["projection"] = self.projection
        return tensors

    def metadata(self) -> dict:
        return {
            "method": self.method, "input_dim": self.input_dim, "dims": self.dims, "keep": self.keep,
            "bits": self.bits, "fingerprint": self.fingerprint(), "info": self.info,
        }

    def save(self, path, *, force: bool = False) -> None:
        from .store import save_codec

        save_codec(self, path, force=force)

    @classmethod
    def load(cls, path) -> BinaryCodec:
        from .store import load_codec

        return load_codec(path)

    def __repr__(self) -> str:
        merged = f", {self.merged} merged" if self.merged else ""
        return f"BinaryCodec({self.method}, {self.input_dim} -> {self.bits} bits{merged})"


def normalize(x: np.ndarray) -> np.ndarray:
    """Unit rows (a copy, float32); an all-zero row stays zero."""
    x = np.array(x, dtype=np.float32, copy=True)
    # rows so small or large that their squares underflow or overflow float32 are first divided by
    # their largest entry (other rows are untouched, so their results do not change)
    peak = np.max(np.abs(x), axis=1, keepdims=True)
    extreme = (peak > 0) & ((peak < 2.0 ** -40) | (peak > 2.0 ** 40))
    if extreme.any():
        np.divide(x, peak, out=x, where=extreme)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def check_vectors(vectors, dim: int | None, what: str) -> np.ndarray:
    """A finite, non-empty float 2-D array (and ``dim`` columns when given), else BadInputError."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise BadInputError(f"{what} must be a 2-D array [n, dim]; got shape {list(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise BadInputError(f"{what} is empty (shape {list(array.shape)})")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise BadInputError(f"{what} must be numbers; got dtype {array.dtype}")
    if dim is not None and array.shape[1] != dim:
        raise BadInputError(f"{what} have {array.shape[1]} dimensions; the codec expects {dim}")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if rows.size > 5 else "")
            raise BadInputError(f"{what} have NaN or infinite values in {rows.size} row(s): {shown}")
    return array
