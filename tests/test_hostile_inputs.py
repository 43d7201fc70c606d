"""Bad input of every kind: one-line error, documented exit code, no partial output, input untouched.

Exit codes: 1 verification failed, 2 usage or bad input, 3 corrupt container.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import dir_listing, write_safetensors

import bie_cli
from bie_cli.errors import CorruptContainerError, UnknownStrategyError
from bie_cli.formats.cai import spec
from bie_cli.formats.cai.reader import ContainerReader
from bie_cli.tensorcodec import StreamDecoder


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_one_line_error(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bie: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def container(small_model, tmp_path) -> Path:
    path = tmp_path / "m.cai"
    bie_cli.compress_model(small_model, path, chunk_size=512)
    return path


# -- corrupt containers ------------------------------------------------------------------


def test_truncated_container_every_command(bie, container, tmp_path):
    data = container.read_bytes()
    for cut in (0, 5, 16, 40, len(data) // 3, len(data) // 2, len(data) - 41, len(data) - 1):
        bad = tmp_path / f"cut{cut}.cai"
        bad.write_bytes(data[:cut])
        for args in (["inspect", str(bad)], ["verify", str(bad)],
                     ["decompress", str(bad), "-o", str(tmp_path / "out.safetensors")]):
            result = bie(*args)
            _assert_one_line_error(result, 3)
        assert not (tmp_path / "out.safetensors").exists()


def test_truncated_stream_fails_and_leaves_no_output(bie, container, tmp_path):
    data = container.read_bytes()
    out = tmp_path / "out.safetensors"
    for cut in (10, len(data) // 2, len(data) - 20):
        result = bie("decompress", "-", "-o", str(out), stdin=data[:cut])
        _assert_one_line_error(result, 3)
        assert not out.exists()
        assert dir_listing(tmp_path) == sorted(["m.cai", "small.safetensors"])


def test_wrong_magic(bie, tmp_path):
    bad = tmp_path / "x.cai"
    bad.write_bytes(b"NOTACAI!" + bytes(100))
    _assert_one_line_error(bie("inspect", str(bad)), 3, "wrong magic")


def test_length_field_larger_than_file(container, tmp_path, bie):
    data = bytearray(container.read_bytes())
    offset = spec.FILE_HEADER.size  # the header record
    rtype, flags, _, checksum, _ = spec.RECORD_HEADER.unpack_from(data, offset)
    head = spec.RECORD_HEADER.pack(rtype, flags, 60 << 20, checksum, 0)
    crc = zlib.crc32(head[: spec.RECORD_HEADER_CRC_SPAN])
    data[offset : offset + spec.RECORD_HEADER.size] = spec.RECORD_HEADER.pack(rtype, flags, 60 << 20, checksum, crc)
    bad = tmp_path / "long.cai"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptContainerError, match="past the end of the file"):
        ContainerReader(bad)
    # a stream cannot check against the file size; it must still fail cleanly without trusting the length
    with pytest.raises(CorruptContainerError, match="truncated"):
        StreamDecoder(io.BytesIO(bytes(data)))
    _assert_one_line_error(bie("verify", str(bad)), 3)


def test_absurd_index_length_in_trailer(container, tmp_path):
    data = bytearray(container.read_bytes())
    trailer_at = len(data) - spec.TRAILER.size
    index_offset, _, file_length, _, reserved, magic = spec.TRAILER.unpack_from(data, trailer_at)
    head = spec.TRAILER.pack(index_offset, 1 << 60, file_length, 0, reserved, magic)
    crc = zlib.crc32(head[: spec.TRAILER_CRC_SPAN])
    data[trailer_at:] = spec.TRAILER.pack(index_offset, 1 << 60, file_length, crc, reserved, magic)
    (tmp_path / "t.cai").write_bytes(bytes(data))
    with pytest.raises(CorruptContainerError):
        ContainerReader(tmp_path / "t.cai")


@pytest.mark.parametrize("region", ["payload", "tensor-record", "header"])
def test_flipped_byte_makes_verify_exit_3_and_name_the_place(bie, small_model, tmp_path, region):
    path = tmp_path / "m.cai"
    bie_cli.compress_model(small_model, path, chunk_size=512, strategy="raw")
    with ContainerReader(path) as reader:
        entry = reader.entry("encoder.weight")
        chunk_ref = entry.chunks[2]
        tensor_record = entry.chunks[0].offset - 64  # somewhere inside the tensor record before chunk 0
    data = bytearray(path.read_bytes())
    position = {"payload": chunk_ref.offset + chunk_ref.length - 7, "tensor-record": tensor_record,
                "header": spec.FILE_HEADER.size + spec.RECORD_HEADER.size + 3}[region]
    data[position] ^= 0x40
    path.write_bytes(bytes(data))
    before = _digest(path)
    result = bie("verify", str(path))
    assert result.exit_code == 3, result.stdout + result.stderr
    if region == "payload":
        assert "encoder.weight" in result.stdout and "chunk 2" in result.stdout
        report = json.loads(bie("verify", str(path), "--json").stdout)
        bad = [t for t in report["tensors"] if t["status"] == "corrupt"]
        assert [t["name"] for t in bad] == ["encoder.weight"]
    else:
        assert "CORRUPT" in result.stdout or "corrupt" in result.stderr
    assert _digest(path) == before  # verify never writes


def test_every_single_byte_flip_in_a_payload_is_caught(small_model, tmp_path):
    path = tmp_path / "m.cai"
    bie_cli.compress_model(small_model, path, chunk_size=4096, strategy="zstd")
    with ContainerReader(path) as reader:
        ref = reader.entry("encoder.weight").chunks[0]
    original = path.read_bytes()
    positions = range(ref.offset, ref.offset + ref.length, max(1, ref.length // 40))
    assert len(positions) > 30
    for position in positions:  # record header, prefix, meta, padding and payload alike
        data = bytearray(original)
        data[position] ^= 0x01
        path.write_bytes(bytes(data))
        report = bie_cli.verify_container(path)
        assert report.exit_code == 3, position
        assert any(t.name == "encoder.weight" and t.status == "corrupt" for t in report.tensors) or report.problems


def test_unknown_strategy_id_in_container(bie, tmp_path):
    out = tmp_path / "x.cai"
    from bie_cli.formats.cai.writer import ContainerWriter

    with open(out, "wb") as handle:
        writer = ContainerWriter(handle)
        writer.write_header({"manifest": [["w", "F32", [2]]], "source": {"format": "safetensors", "metadata": {}}})
        writer.begin_tensor({"name": "w", "dtype": "F32", "shape": [2], "strategy": "quantum-foam", "config": {},
                             "rule": "", "rows_per_chunk": 2, "chunk_count": 1})
        writer.write_chunk(0, 2, {}, b"\x00" * 8)
        writer.end_tensor({"digest": "0" * 32, "original_bytes": 8, "stored_bytes": 0, "lossless": True, "stats": None})
        writer.finish()
    with pytest.raises(UnknownStrategyError, match="quantum-foam"), bie_cli.open_container(out) as opened:
        opened["w"]
    _assert_one_line_error(bie("decompress", str(out), "-o", str(tmp_path / "o.safetensors")), 2, "quantum-foam")
    assert not (tmp_path / "o.safetensors").exists()


def test_unknown_strategy_on_the_command_line(bie, small_model, tmp_path):
    result = bie("compress", str(small_model), "-o", str(tmp_path / "o.cai"), "--strategy", "nope")
    _assert_one_line_error(result, 2, "unknown strategy 'nope'", "zstd")
    result = bie("compress", str(small_model), "-o", str(tmp_path / "o.cai"), "--rule", "*.weight=zstd:levle=3")
    _assert_one_line_error(result, 2, "levle")
    assert not (tmp_path / "o.cai").exists()


# -- bad checkpoints -----------------------------------------------------------------------


def _raw_safetensors(path: Path, header: dict, data: bytes) -> Path:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def test_unsupported_dtype(bie, tmp_path):
    src = _raw_safetensors(tmp_path / "f4.safetensors", {"w": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"\x00\x00")
    _assert_one_line_error(bie("compress", str(src), "-o", str(tmp_path / "o.cai")), 2, "F4")
    assert not (tmp_path / "o.cai").exists()


def test_duplicate_tensor_names(bie, tmp_path):
    encoded = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    src = tmp_path / "dup.safetensors"
    src.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(8))
    _assert_one_line_error(bie("compress", str(src), "-o", str(tmp_path / "o.cai")), 2, "duplicate tensor name 'w'")


def test_duplicate_names_across_shards(bie, tmp_path):
    shards = tmp_path / "sharded"
    shards.mkdir()
    write_safetensors(shards / "a.safetensors", {"w": np.ones(3, np.float32)})
    write_safetensors(shards / "b.safetensors", {"w": np.zeros(3, np.float32)})
    _assert_one_line_error(bie("compress", str(shards), "-o", str(tmp_path / "o.cai")), 2, "duplicate tensor name 'w'")


@pytest.mark.parametrize("damage", ["truncated-data", "huge-header", "offsets-outside", "not-json", "overlap"])
def test_malformed_safetensors(bie, tmp_path, damage):
    good = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    src = tmp_path / "bad.safetensors"
    if damage == "truncated-data":
        _raw_safetensors(src, good, bytes(10))
    elif damage == "huge-header":
        src.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    elif damage == "offsets-outside":
        _raw_safetensors(src, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8000]}}, bytes(8))
    elif damage == "not-json":
        src.write_bytes(struct.pack("<Q", 5) + b"{nope" + bytes(8))
    else:
        _raw_safetensors(src, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(16))
    before = _digest(src)
    result = bie("compress", str(src), "-o", str(tmp_path / "o.cai"))
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("bie: error: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "o.cai").exists()
    assert _digest(src) == before


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/bie-pwned",))


def test_pickle_that_needs_code_is_refused_not_run(bie, tmp_path):
    import torch

    src = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "payload": _Evil()}, src)
    marker = Path("/tmp/bie-pwned")
    marker.unlink(missing_ok=True)
    result = bie("compress", str(src), "-o", str(tmp_path / "o.cai"))
    _assert_one_line_error(result, 2, "refusing to load", "never executes pickled code")
    assert not marker.exists()
    assert not (tmp_path / "o.cai").exists()


def test_truncated_pt(bie, tmp_path):
    import torch

    src = tmp_path / "m.pt"
    torch.save({"w": torch.ones(1000)}, src)
    src.write_bytes(src.read_bytes()[:300])
    _assert_one_line_error(bie("compress", str(src), "-o", str(tmp_path / "o.cai")), 2, "m.pt")


# -- paths -------------------------------------------------------------------------------------


def test_output_equal_to_input(bie, small_model, container, tmp_path):
    before = _digest(small_model)
    _assert_one_line_error(bie("compress", str(small_model), "-o", str(small_model), "--force"), 2, "is the input")
    assert _digest(small_model) == before
    before = _digest(container)
    _assert_one_line_error(bie("decompress", str(container), "-o", str(container), "--format", "safetensors", "--force"), 2, "is the input")
    assert _digest(container) == before


def test_missing_input(bie, tmp_path):
    _assert_one_line_error(bie("compress", str(tmp_path / "nope.safetensors"), "-o", str(tmp_path / "o.cai")), 2, "no such file")
    _assert_one_line_error(bie("inspect", str(tmp_path / "nope.cai")), 2, "no such file")
    _assert_one_line_error(bie("verify", str(tmp_path / "nope.cai")), 2, "no such file")


def test_unwritable_or_missing_output_directory(bie, small_model, tmp_path):
    _assert_one_line_error(bie("compress", str(small_model), "-o", str(tmp_path / "no" / "dir" / "o.cai")), 2, "does not exist")
    # /proc refuses new files even for root, for whom permission bits mean nothing
    result = bie("compress", str(small_model), "-o", "/proc/bie-test-output.cai")
    _assert_one_line_error(result, 2, "writ")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = bie("compress", str(small_model), "-o", str(locked / "o.cai"))
        if os.access(locked, os.W_OK):  # root: the write succeeds, and that is correct
            assert result.exit_code == 0
        else:
            _assert_one_line_error(result, 2, "not writable")
    finally:
        locked.chmod(0o700)


def test_existing_output_needs_force(bie, small_model, container, tmp_path):
    before = _digest(container)
    _assert_one_line_error(bie("compress", str(small_model), "-o", str(container)), 2, "--force")
    assert _digest(container) == before
    assert bie("compress", str(small_model), "-o", str(container), "--force", "-q").exit_code == 0


def test_failure_midway_leaves_no_partial_file(small_model, tmp_path, monkeypatch):
    from bie_cli.strategies.zstd import ZstdStrategy

    calls = {"n": 0}
    original = ZstdStrategy.encode

    def failing(self, chunk, config):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return original(self, chunk, config)

    monkeypatch.setattr(ZstdStrategy, "encode", failing)
    with pytest.raises(OSError):
        bie_cli.compress_model(small_model, tmp_path / "o.cai", chunk_size=256)
    assert dir_listing(tmp_path) == ["small.safetensors"]


def test_bad_policy_and_rules(bie, small_model, tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[[rules]]\nmatch = "*"\nstrategy = 5\n')
    _assert_one_line_error(bie("compress", str(small_model), "-o", str(tmp_path / "o.cai"), "--policy", str(policy)), 2, "strategy")
    policy.write_text("this is = not toml [")
    _assert_one_line_error(bie("compress", str(small_model), "-o", str(tmp_path / "o.cai"), "--policy", str(policy)), 2, "policy")
    _assert_one_line_error(bie("compress", str(small_model), "-o", str(tmp_path / "o.cai"), "--rule", "noequals"), 2, "GLOB=NAME")
