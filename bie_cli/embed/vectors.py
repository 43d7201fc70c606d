"""Reading the vectors ``bie embed`` works on: ``.npy``, safetensors, or text embedded by a model.

* ``.npy``: one 2-D float array (loaded without pickle);
* ``.safetensors``: exactly one 2-D tensor (any float dtype; returned as float32);
* any other file with ``model=DIR``: one passage per non-empty line, embedded by
  the sentence-transformers model in ``DIR`` (normalised, batched, a progress
  bar on stderr). The model is loaded from disk only; nothing is downloaded.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import BadInputError
from .codec import check_vectors

EMBED_BATCH = 64


def load_vectors(path, *, model: str | os.PathLike | None = None, progress: bool = True, what: str = "vectors") -> np.ndarray:
    """float32 [n, d], finite and non-empty, else BadInputError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadInputError(f"no such file: {path}")
    extension = os.path.splitext(path)[1].lower()
    if extension == ".npy":
        if model is not None:
            raise BadInputError(f"{path} already holds vectors; --model is for text files")
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise BadInputError(f"{path} is not a plain .npy array ({exc})") from None
    elif extension == ".safetensors":
        if model is not None:
            raise BadInputError(f"{path} already holds vectors; --model is for text files")
        array = _safetensors_matrix(path)
    elif model is not None:
        array = embed_texts(read_passages(path), model, progress=progress)
    else:
        raise BadInputError(f"{path}: give vectors as .npy or .safetensors, or a text file with --model DIR")
    array = check_vectors(array, None, f"{what} in {os.path.basename(path)}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _safetensors_matrix(path: str) -> np.ndarray:
    from ..formats import safetensors

    with safetensors.open(path) as source:
        matrices = [info for info in source.tensors if len(info.shape) == 2]
        if len(source.tensors) != 1 or len(matrices) != 1:
            raise BadInputError(
                f"{path} holds {len(source.tensors)} tensors; give a file with exactly one 2-D tensor [n, dim]"
            )
        array = source.read(matrices[0].name)
    if not np.issubdtype(array.dtype, np.floating):
        try:
            array = array.astype(np.float32)  # bfloat16 arrives as an ml_dtypes type
        except (TypeError, ValueError):
            raise BadInputError(f"{path}: tensor dtype {array.dtype} is not a float type") from None
    return array


def read_passages(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except UnicodeDecodeError:
        raise BadInputError(f"{path} is not UTF-8 text (vectors must be .npy or .safetensors)") from None
    passages = [line for line in lines if line]
    if not passages:
        raise BadInputError(f"{path} has no text to embed")
    return passages


def embed_texts(texts: list[str], model_dir, *, progress: bool = True) -> np.ndarray:
    """Normalised float32 embeddings of ``texts`` by the sentence-transformers model in ``model_dir``."""
    model_dir = os.fspath(model_dir)
    if not os.path.isfile(os.path.join(model_dir, "modules.json")) and not os.path.isfile(
        os.path.join(model_dir, "config.json")
    ):
        raise BadInputError(f"--model {model_dir} is not a sentence-transformers model directory")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory: never reach for the hub
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
    vectors = model.encode(
        texts, batch_size=EMBED_BATCH, normalize_embeddings=True, convert_to_numpy=True,
        show_progress_bar=progress,
    )
    return np.asarray(vectors, dtype=np.float32)
