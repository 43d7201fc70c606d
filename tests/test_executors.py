"""Executors: the same container bytes from threads, a process pool and a Dask cluster."""

from __future__ import annotations

import os
import pickle
import signal
import threading

import numpy as np
import pytest

import bie_cli
from bie_cli import executors, tensorcodec
from bie_cli.errors import BadInputError
from tests.conftest import write_safetensors


@pytest.fixture(scope="module")
def mixed_checkpoint(minilm_path, tmp_path_factory):
    """Real MiniLM tensors (F32, a BF16 copy, a lossy rule) plus ints and a tensor big enough to split."""
    import ml_dtypes
    from safetensors.numpy import load_file

    weights = load_file(str(minilm_path))
    names = [n for n in sorted(weights) if "word_embeddings" not in n][:16]  # keep the test small
    tensors = {name: weights[name] for name in names}
    tensors["bf16.copy"] = weights["embeddings.position_embeddings.weight"].astype(ml_dtypes.bfloat16)
    tensors["ids"] = np.arange(300, dtype=np.int64).reshape(30, 10)
    tensors["empty"] = np.zeros((0, 4), np.float32)
    directory = tmp_path_factory.mktemp("mixed")
    path = write_safetensors(directory / "m.safetensors", tensors, {"format": "pt"})
    return path, tensors


def _compress(src, dst, **options):
    return bie_cli.compress_model(src, dst, rules=["*.bias=quant:bits=8"], chunk_size=64 << 10, **options)


def test_encode_task_is_picklable_and_matches_local_encoding(mixed_checkpoint):
    path, tensors = mixed_checkpoint
    with bie_cli.formats.open_checkpoint(str(path)) as source:
        info = source.info("bf16.copy")
        from bie_cli.plan import Planner

        plan = tensorcodec.plan_tensor(source, info, Planner(None, []).choose(info), 4096)
        local = [tensorcodec.encode_chunk(plan, *plan.chunk_rows(n), source.read(info.name, *plan.chunk_rows(n)))
                 for n in range(plan.chunk_count)]
    task = pickle.loads(pickle.dumps(tensorcodec.EncodeTask(executors.source_ref(str(path), "safetensors"), plan, 0, plan.chunk_count)))
    part = tensorcodec.run_encode_task(task)
    local = [tensorcodec.payload_bytes(c.payload) for c in local]
    assert [c.payload for c in part.chunks] == local and plan.chunk_count > 1
    digest = tensorcodec.spec.new_digest()
    digest.update(tensors["bf16.copy"].tobytes())
    assert part.digest == digest.hexdigest()
    # a task covering part of the tensor leaves the digest to a DigestTask
    half = tensorcodec.run_encode_task(tensorcodec.EncodeTask(task.source, plan, 1, plan.chunk_count))
    assert half.digest is None and [c.payload for c in half.chunks] == local[1:]
    assert tensorcodec.run_digest_task(tensorcodec.DigestTask(task.source, plan)) == part.digest


def test_processes_give_the_same_bytes_as_threads(mixed_checkpoint, tmp_path, monkeypatch):
    path, _ = mixed_checkpoint
    _compress(path, tmp_path / "threads.cai", threads=2)
    monkeypatch.setattr(executors, "TASK_BYTES", 100 << 10)  # split the big tensors into several tasks
    _compress(path, tmp_path / "processes.cai", threads=2, executor="processes")
    assert (tmp_path / "processes.cai").read_bytes() == (tmp_path / "threads.cai").read_bytes()


def test_dask_cluster_gives_the_same_bytes_even_when_a_worker_dies(mixed_checkpoint, tmp_path):
    distributed = pytest.importorskip("distributed")
    path, _ = mixed_checkpoint
    _compress(path, tmp_path / "local.cai", threads=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0",
                                  processes=True, worker_dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        _compress(path, tmp_path / "dask.cai", threads=1, executor="dask", scheduler=address)
        assert (tmp_path / "dask.cai").read_bytes() == (tmp_path / "local.cai").read_bytes()
        # kill one worker as soon as the first results arrive: its tasks are rerun elsewhere
        with distributed.Client(address) as client:
            pids = list(client.run(os.getpid).values())
        killed = threading.Event()

        def progress(done, total, name):
            if not killed.is_set():
                killed.set()
                os.kill(pids[0], signal.SIGKILL)

        _compress(path, tmp_path / "killed.cai", threads=1, executor="dask", scheduler=address, progress=progress)
        assert killed.is_set()
        assert (tmp_path / "killed.cai").read_bytes() == (tmp_path / "local.cai").read_bytes()


def test_bad_executor_options_are_usage_errors(mixed_checkpoint, tmp_path, bie):
    path, _ = mixed_checkpoint
    with pytest.raises(BadInputError, match="unknown executor"):
        bie_cli.compress_model(path, tmp_path / "x.cai", executor="mpi")
    result = bie("compress", str(path), "-o", str(tmp_path / "x.cai"), "--executor", "dask")
    assert result.exit_code == 2 and "--scheduler" in result.stderr
    result = bie("compress", str(path), "-o", str(tmp_path / "x.cai"), "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 2 and "cannot reach" in result.stderr
    assert not (tmp_path / "x.cai").exists()
