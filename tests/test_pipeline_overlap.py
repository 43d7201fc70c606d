"""The overlapped pipeline: same bytes at any --threads, bounded in flight, one-pass verify."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bie_cli
from bie_cli import pipeline, tensorcodec
from bie_cli.formats.cai.reader import ContainerReader
from tests.conftest import write_safetensors


@pytest.fixture(scope="module")
def many_small(minilm_path, tmp_path_factory):
    """Real MiniLM tensors (skipping the 46 MB embedding table): many one-chunk tensors."""
    from safetensors.numpy import load_file

    weights = load_file(str(minilm_path))
    tensors = {n: a for n, a in sorted(weights.items()) if "word_embeddings" not in n}
    path = tmp_path_factory.mktemp("small") / "m.safetensors"
    return write_safetensors(path, tensors, {"format": "pt"}), tensors


def test_threads_give_identical_bytes_and_bounded_in_flight(many_small, tmp_path, monkeypatch):
    path, _ = many_small
    in_flight, peak = 0, 0
    original = tensorcodec.encode_chunk

    def counting(*args):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return original(*args)
        finally:
            in_flight -= 1

    monkeypatch.setattr(tensorcodec, "encode_chunk", counting)
    outputs = []
    for threads in (1, 3):
        target = tmp_path / f"t{threads}.cai"
        pipeline.compress_model(path, target, threads=threads, rules=["*.bias=quant:bits=6"])
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1]
    assert 1 <= peak <= 3


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(threads=st.integers(1, 4), chunk_size=st.sampled_from([64, 1000, 1 << 16]),
       sizes=st.lists(st.integers(0, 40), min_size=1, max_size=8))
def test_any_threads_any_chunking_round_trips(tmp_path_factory, threads, chunk_size, sizes):
    base = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(sum(sizes))
    tensors = {f"t{k}": rng.standard_normal((rows, 3)).astype(np.float32) for k, rows in enumerate(sizes)}
    write_safetensors(base / "m.safetensors", tensors)
    pipeline.compress_model(base / "m.safetensors", base / "one.cai", threads=1, chunk_size=chunk_size)
    pipeline.compress_model(base / "m.safetensors", base / "many.cai", threads=threads, chunk_size=chunk_size)
    assert (base / "one.cai").read_bytes() == (base / "many.cai").read_bytes()
    pipeline.decompress_model(base / "many.cai", base / "back.safetensors", threads=threads)
    assert (base / "back.safetensors").read_bytes() == (base / "m.safetensors").read_bytes()
    report = pipeline.verify_container(base / "many.cai", against=base / "m.safetensors", threads=threads)
    assert report.ok


def test_verify_reads_each_record_once_and_threads_agree(many_small, tmp_path, monkeypatch):
    path, _ = many_small
    target = tmp_path / "m.cai"
    bie_cli.compress_model(path, target, chunk_size=32 << 10)
    reads = []
    original = ContainerReader.read_chunk
    monkeypatch.setattr(ContainerReader, "read_chunk", lambda self, *a, **k: reads.append(a) or original(self, *a, **k))
    report = pipeline.verify_container(target, against=path, threads=2)
    assert report.ok and reads == []  # no second, random-access pass
    # damage one chunk's payload: both thread counts name the same tensor and chunk
    with ContainerReader(target) as reader:
        entry = next(e for e in reader.entries if len(e.chunks) > 2)
        ref = entry.chunks[1]
    data = bytearray(target.read_bytes())
    data[ref.offset + ref.length - 3] ^= 0x10
    target.write_bytes(bytes(data))
    reports = [pipeline.verify_container(target, threads=threads).to_dict() for threads in (1, 2)]
    assert reports[0] == reports[1]
    bad = [t for t in reports[0]["tensors"] if t["status"] != "ok"]
    assert [(t["name"], t["detail"]) for t in bad] == [(entry.name, "chunk 1: checksum mismatch")]


def test_in_flight_window_holds_bytes_not_a_chunk_count(tmp_path, monkeypatch):
    """Full-size chunks: 2 x threads in flight, as ever. Small tensors' chunks: many more (the
    encoders never wait on the writer between tensors), never more than 2 x threads x chunk_size
    bytes of them."""
    window = pipeline._InFlight(threads=2, chunk_size=1000)
    for _ in range(3):
        window.add(1000)
        assert window.room()
    window.add(1000)
    assert not window.room()
    window.remove(1000)
    assert window.room()

    rng = np.random.default_rng(5)
    tensors = {f"t{k:02d}": rng.standard_normal((64, 64)).astype(np.float32) for k in range(40)}
    path = write_safetensors(tmp_path / "small.safetensors", tensors)
    peaks = {"count": 0, "bytes": 0}

    class Recorded(pipeline._InFlight):
        def add(self, nbytes):
            super().add(nbytes)
            peaks["count"] = max(peaks["count"], self.count)
            peaks["bytes"] = max(peaks["bytes"], self.bytes - nbytes)  # before the last one added

    original = tensorcodec.encode_chunk

    def slow(*args):  # the writer outpaces the encoder: the window fills
        time.sleep(0.002)
        return original(*args)

    monkeypatch.setattr(pipeline, "_InFlight", Recorded)
    monkeypatch.setattr(tensorcodec, "encode_chunk", slow)
    chunk_size = 64 << 10  # four tensors' worth
    pipeline.compress_model(path, tmp_path / "m.cai", threads=1, chunk_size=chunk_size)
    assert peaks["count"] > 2
    assert peaks["bytes"] < 2 * chunk_size


def test_ordered_digest_from_threads_in_any_order_is_the_stream_digest():
    """Chunks filed by several threads in shuffled order hash as one stream in chunk order."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from bie_cli.formats.cai import spec

    rng = np.random.default_rng(3)
    chunks = [rng.integers(0, 255, int(n), dtype=np.uint8) for n in rng.integers(0, 50_000, 40)]
    expected = spec.new_digest()
    for chunk in chunks:
        expected.update(chunk)
    for seed in range(5):
        order = list(range(len(chunks)))
        random.Random(seed).shuffle(order)
        digest = tensorcodec.OrderedDigest()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n, d=digest: d.add(n, chunks[n]), order))
        assert digest.hexdigest() == expected.hexdigest()


def test_a_failed_write_fails_compress_and_leaves_no_output(many_small, tmp_path, monkeypatch):
    """Records are written on their own thread: an error there reaches the caller, nothing is left."""
    from bie_cli.formats.cai.writer import ContainerWriter

    path, _ = many_small
    calls = 0
    original = ContainerWriter.write_chunk

    def failing(self, *args):
        nonlocal calls
        calls += 1
        if calls == 5:
            raise OSError(28, "No space left on device")
        return original(self, *args)

    monkeypatch.setattr(ContainerWriter, "write_chunk", failing)
    target = tmp_path / "out.cai"
    with pytest.raises(OSError, match="No space left"):
        bie_cli.compress_model(path, target, threads=2, chunk_size=1 << 16)
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("threads", [1, 2])
def test_decompress_checks_digests_at_any_threads(many_small, tmp_path, request, threads):
    """The decoding threads hash what they decode (in chunk order): a wrong byte is caught."""
    from bie_cli.errors import CorruptContainerError

    path, _ = many_small
    container = tmp_path / "m.cai"
    bie_cli.compress_model(path, container, chunk_size=1 << 16)
    request.getfixturevalue("wrong_digests")  # after compressing: only the decode's digests are wrong
    with pytest.raises(CorruptContainerError, match="do not match the stored digest"):
        bie_cli.decompress_model(container, tmp_path / "out.safetensors", threads=threads)
    assert not (tmp_path / "out.safetensors").exists()


def test_ordered_digest_calls_then_once_each_chunk_is_hashed_in_order():
    import numpy as np

    from bie_cli.formats.cai import spec
    from bie_cli.tensorcodec import OrderedDigest

    chunks = [np.full(10, k, dtype=np.uint8) for k in range(4)]
    digest, done = OrderedDigest(), []
    for number in (2, 1, 3):  # waiting for chunk 0: hashed later, by the thread that files it
        digest.add(number, chunks[number], lambda number=number: done.append(number))
    assert done == []
    digest.add(0, chunks[0], lambda: done.append(0))
    assert done == [0, 1, 2, 3]
    expected = spec.new_digest()
    for chunk in chunks:
        expected.update(chunk)
    assert digest.hexdigest() == expected.hexdigest()


@pytest.mark.parametrize("strategy", ["float-split", "raw", "zstd", "delta"])
def test_decoding_into_a_buffer_gives_the_decoded_chunk_in_that_buffer(tmp_path, strategy):
    rng = np.random.default_rng(11)
    values = rng.standard_normal((300, 40)).astype(np.float32)
    if strategy == "delta":
        values = np.arange(12000, dtype=np.int64).reshape(300, 40)
    write_safetensors(tmp_path / "m.safetensors", {"t": values})
    pipeline.compress_model(tmp_path / "m.safetensors", tmp_path / "m.cai", strategy=strategy, chunk_size=16000)
    with tensorcodec.StoredTensors.open(tmp_path / "m.cai") as stored:
        entry = stored.entry("t")
        for number in range(len(entry.chunks)):
            expected = stored.decode_chunk(entry, number)
            out = np.full(expected.nbytes, 0xAB, dtype=np.uint8)
            array = stored.decode_chunk(entry, number, out=out)
            assert np.may_share_memory(array, out)
            assert array.dtype == expected.dtype and array.shape == expected.shape
            assert out.tobytes() == np.ascontiguousarray(expected).tobytes()
