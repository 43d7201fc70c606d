"""The .cai container: layout, random access, streaming, determinism, writer state machine."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import bie_cli
from bie_cli.errors import CorruptContainerError
from bie_cli.formats.cai import spec
from bie_cli.formats.cai.reader import ContainerReader, scan_records
from bie_cli.formats.cai.writer import ContainerWriter
from bie_cli.formats.safetensors import open as open_safetensors
from bie_cli.tensorcodec import StoredTensors, StreamDecoder


def _compress(src: Path, dst: Path, **options) -> bie_cli.pipeline.CompressStats:
    return bie_cli.compress_model(src, dst, **options)


def test_round_trip_every_tensor_bit_exact(small_model, tmp_path):
    stats = _compress(small_model, tmp_path / "m.cai", chunk_size=256)
    assert stats.stored_bytes == (tmp_path / "m.cai").stat().st_size
    with open_safetensors(str(small_model)) as source, bie_cli.open_container(tmp_path / "m.cai") as container:
        assert list(container) == [t.name for t in source.tensors]
        for info in source.tensors:
            got = container[info.name]
            want = source.read(info.name)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), info.name


@pytest.mark.parametrize("start,stop", [(0, 1), (3, 17), (10, 64), (63, 64), (-5, None), (None, 4), (40, 20)])
def test_row_range_reads_match_slices(small_model, tmp_path, start, stop):
    _compress(small_model, tmp_path / "m.cai", chunk_size=48 * 4 * 8)  # 8 rows per chunk
    with bie_cli.open_container(tmp_path / "m.cai") as container:
        full = container["encoder.weight"]
        assert np.array_equal(container.read("encoder.weight", start, stop), full[start:stop])


def test_row_range_reads_touch_only_needed_chunks(small_model, tmp_path, monkeypatch):
    _compress(small_model, tmp_path / "m.cai", chunk_size=48 * 4 * 8)
    with bie_cli.open_container(tmp_path / "m.cai") as container:
        reader = container._reader
        seen = []
        original = reader.read_chunk
        monkeypatch.setattr(reader, "read_chunk", lambda entry, number, **kw: seen.append(number) or original(entry, number, **kw))
        container.read("encoder.weight", 17, 30)
        assert seen == [2, 3]  # rows 16..23 and 24..31


def test_payloads_are_64_byte_aligned(small_model, tmp_path):
    _compress(small_model, tmp_path / "m.cai", chunk_size=100)
    with open(tmp_path / "m.cai", "rb") as handle:
        records = list(scan_records(handle))
    chunks = [r for r in records if r.type == spec.RecordType.CHUNK]
    assert len(chunks) > 10
    for record in chunks:
        _, _, _, _, meta_length, padding = spec.CHUNK_PREFIX.unpack_from(record.body)
        payload_offset = record.offset + spec.RECORD_HEADER.size + spec.CHUNK_PREFIX.size + meta_length + padding
        assert payload_offset % spec.ALIGNMENT == 0


def test_same_input_gives_identical_bytes(small_model, tmp_path):
    _compress(small_model, tmp_path / "a.cai", threads=1)
    _compress(small_model, tmp_path / "b.cai", threads=2)
    assert (tmp_path / "a.cai").read_bytes() == (tmp_path / "b.cai").read_bytes()


def test_record_sequence_and_trailer(small_model, tmp_path):
    _compress(small_model, tmp_path / "m.cai")
    data = (tmp_path / "m.cai").read_bytes()
    assert data[:8] == spec.FILE_MAGIC
    assert data[-8:] == spec.TRAILER_MAGIC
    types = [r.type for r in scan_records(io.BytesIO(data), len(data))]
    assert types[0] == spec.RecordType.HEADER
    assert types[-1] == spec.RecordType.INDEX
    assert types.count(spec.RecordType.TENSOR) == types.count(spec.RecordType.TENSOR_END) == 8


def test_stream_decoder_matches_random_access(small_model, tmp_path):
    _compress(small_model, tmp_path / "m.cai", chunk_size=128)
    data = (tmp_path / "m.cai").read_bytes()
    decoder = StreamDecoder(io.BytesIO(data))
    manifest = [m[0] for m in decoder.header["manifest"]]
    pieces: dict[str, list[np.ndarray]] = {}
    for entry, _, _, array in decoder.chunks():
        pieces.setdefault(entry.name, []).append(array)
    with bie_cli.open_container(tmp_path / "m.cai") as container:
        assert manifest == list(container)
        assert set(pieces) == set(manifest) - {"empty"}  # an empty tensor has no chunks
        for name, parts in pieces.items():
            joined = parts[0] if container.info(name).shape == () else np.concatenate(parts)
            assert joined.tobytes() == container[name].tobytes()


def test_unknown_record_types_are_skipped(tmp_path):
    out = io.BytesIO()
    writer = ContainerWriter(out)
    writer.write_header({"manifest": [["t", "F32", [2]]], "source": {"metadata": {}}})
    writer._write_record(99, b"from the future")  # a record type this reader does not know
    writer.begin_tensor({"name": "t", "dtype": "F32", "shape": [2], "strategy": "raw", "config": {},
                         "rule": "", "rows_per_chunk": 2, "chunk_count": 1})
    payload = np.array([1.0, 2.0], np.float32).tobytes()
    writer.write_chunk(0, 2, {}, payload)
    writer.end_tensor({"digest": spec.new_digest().hexdigest(), "original_bytes": 8, "stored_bytes": 0,
                       "lossless": False, "stats": None})
    writer.finish()
    path = tmp_path / "future.cai"
    path.write_bytes(out.getvalue())
    with StoredTensors.open(path) as stored:
        assert stored.read_tensor("t").tolist() == [1.0, 2.0]
    decoder = StreamDecoder(io.BytesIO(out.getvalue()))
    assert [a.tolist() for _, _, _, a in decoder.chunks()] == [[1.0, 2.0]]


def test_writer_rejects_calls_out_of_order():
    writer = ContainerWriter(io.BytesIO())
    with pytest.raises(RuntimeError):
        writer.begin_tensor({"name": "x"})
    writer.write_header({})
    with pytest.raises(RuntimeError):
        writer.write_chunk(0, 1, {}, b"")
    with pytest.raises(ValueError, match="duplicate"):
        writer.begin_tensor({"name": "a"})
        writer.end_tensor({})
        writer.begin_tensor({"name": "a"})


def test_record_json_is_what_json_dumps_gives():
    """The writer makes its JSON encoder once; its bytes (and errors) are json.dumps' with sorted keys."""
    from bie_cli.formats.cai.writer import _json_bytes

    records = [{}, "text", 3.25, {"b": 1, "a": [1.5, -0.0, 1e-300, 2**70, None, True, "é\u2028\"\\"],
                                  "c": {"z": 1, "y": {"k": []}}}]
    for record in records:
        assert _json_bytes(record) == json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(ValueError):
        _json_bytes({"x": float("nan")})
    with pytest.raises(TypeError):
        _json_bytes({"x": object()})


def test_index_and_header_are_json_with_stats(small_model, tmp_path):
    _compress(small_model, tmp_path / "m.cai")
    with ContainerReader(tmp_path / "m.cai") as reader:
        assert reader.header["source"]["format"] == "safetensors"
        assert reader.header["source"]["metadata"]["safetensors"]["__metadata__"] == {"format": "pt", "note": "test"}
        entry = reader.entry("encoder.weight")
        assert entry.strategy and entry.rule.startswith("default")
        assert entry.original_bytes == 64 * 48 * 4
        assert entry.stored_bytes > 0
        json.dumps(reader.index)  # plain JSON all the way down


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.cai")))
def test_golden_containers_still_decode(name):
    """Files written by earlier versions must stay readable: each golden file decodes to
    the tensors its generator made (tests/golden/make_golden.py)."""
    from golden.make_golden import expected_tensors

    expected = expected_tensors(name)
    with bie_cli.open_container(GOLDEN / f"{name}.cai") as container:
        assert sorted(container) == sorted(expected)
        for tensor_name, want in expected.items():
            got = container[tensor_name]
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), tensor_name


def test_golden_bytes_are_reproduced_by_this_writer(tmp_path):
    """A change to the bytes the writer produces must be deliberate: bump the format
    version, keep the old golden files, add new ones."""
    from golden.make_golden import build

    for path in GOLDEN.glob("*.cai"):
        fresh = build(path.stem, tmp_path)
        assert fresh.read_bytes() == path.read_bytes(), f"writer output for {path.name} changed"


def test_corrupt_index_is_reported_as_corrupt(small_model, tmp_path):
    _compress(small_model, tmp_path / "m.cai")
    data = bytearray((tmp_path / "m.cai").read_bytes())
    data[-spec.TRAILER.size - 5] ^= 0xFF  # inside the index body
    (tmp_path / "bad.cai").write_bytes(bytes(data))
    with pytest.raises(CorruptContainerError, match="index record checksum"):
        ContainerReader(tmp_path / "bad.cai")


def test_parallel_decompress_matches_sequential(small_model, tmp_path):
    bie_cli.compress_model(small_model, tmp_path / "m.cai", chunk_size=64)
    bie_cli.decompress_model(tmp_path / "m.cai", tmp_path / "one.safetensors", threads=1)
    bie_cli.decompress_model(tmp_path / "m.cai", tmp_path / "two.safetensors", threads=3)
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "two.safetensors").read_bytes()
