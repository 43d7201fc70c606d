"""Direct (``O_DIRECT``) output writes: the same bytes as plain writes, and a silent fallback."""

from __future__ import annotations

import errno
import fcntl
import os
import threading

import numpy as np
import pytest

import bie_cli
from bie_cli import _directio
from tests.conftest import write_safetensors

ALIGN = _directio.ALIGN


@pytest.fixture(autouse=True)
def cores_to_spare(monkeypatch):
    """Decompress writes direct only with a core to spare for the writer threads; here there
    always is, so every test takes the direct path at any thread count (the rule has its own test)."""
    monkeypatch.setattr(_directio, "spare_core", lambda threads: True)


def test_spare_core_counts_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.undo()  # the real rule, not the autouse fixture's
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert _directio.spare_core(1)
    assert not _directio.spare_core(2)
    assert not _directio.spare_core(3)


@pytest.fixture
def small_blocks(monkeypatch):
    """Direct writes from one aligned block on, staged and appended a few blocks at a time,
    so small test files take every path (interior, edges, several staging rounds)."""
    monkeypatch.setattr(_directio, "MIN_DIRECT", ALIGN)
    monkeypatch.setattr(_directio, "STAGE_BYTES", 3 * ALIGN)
    monkeypatch.setattr(_directio, "APPEND_BUFFER", 2 * ALIGN)


@pytest.fixture
def direct_counted(monkeypatch, tmp_path):
    """Counts the bytes written through O_DIRECT descriptors; skips where tmp_path refuses O_DIRECT."""
    probe = tmp_path / ".probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o666)
    direct = _directio.open_direct(fd, str(probe))
    os.close(fd)
    probe.unlink()
    if direct is None:
        pytest.skip("the test directory's file system refuses O_DIRECT")
    os.close(direct)
    counted = {"bytes": 0}
    real_pwrite = os.pwrite

    def writing(fd, data, offset):
        written = real_pwrite(fd, data, offset)
        if _is_direct(fd):
            counted["bytes"] += written
        return written

    monkeypatch.setattr(os, "pwrite", writing)
    return counted


def _is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))


@pytest.fixture
def direct_refused(monkeypatch):
    """Every direct write fails with EINVAL (a file system that opens O_DIRECT but takes no such write)."""
    calls = {"refused": 0}
    real_pwrite = os.pwrite

    def writing(fd, data, offset):
        if _is_direct(fd):
            calls["refused"] += 1
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", writing)
    return calls


@pytest.fixture
def direct_unopenable(monkeypatch):
    """Opening with O_DIRECT fails with EINVAL (tmpfs)."""
    real_open = os.open

    def opening(path, flags, *args, **kwargs):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", opening)


def _writes(rng, size, count):
    """``count`` (offset, length) pieces tiling [0, size) in a shuffled order."""
    cuts = np.unique(np.concatenate([[0, size], rng.integers(0, size, count - 1)]))
    pieces = list(zip(cuts[:-1].tolist(), np.diff(cuts).tolist(), strict=True))
    rng.shuffle(pieces)
    return pieces


def _positional(path, data, pieces, threads=3):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    writer = _directio.Writer(3, threads=2)
    file = _directio.PositionalFile(fd, str(path), writer)
    try:
        os.ftruncate(fd, len(data))
        view = memoryview(data)

        def run(share):
            for offset, length in share:
                file.pwrite(view[offset:offset + length], offset)

        workers = [threading.Thread(target=run, args=(pieces[k::threads],)) for k in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        writer.finish()
        return file.direct
    finally:
        writer.close()
        file.close()
        os.close(fd)


@pytest.mark.parametrize("seed", range(4))
def test_positional_writes_from_threads_give_the_same_bytes_mostly_direct(tmp_path, small_blocks, direct_counted, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, 40 * ALIGN + 123, dtype=np.uint8).tobytes()
    assert _positional(tmp_path / "out", data, _writes(rng, len(data), 12)) is True
    assert (tmp_path / "out").read_bytes() == data
    assert direct_counted["bytes"] > len(data) // 2


def test_positional_falls_back_when_direct_writes_are_refused(tmp_path, small_blocks, direct_refused):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 30 * ALIGN + 7, dtype=np.uint8).tobytes()
    assert _positional(tmp_path / "out", data, _writes(rng, len(data), 10)) is False
    assert (tmp_path / "out").read_bytes() == data
    assert direct_refused["refused"] >= 1


def test_positional_without_o_direct_writes_plainly(tmp_path, small_blocks, direct_unopenable):
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, 9 * ALIGN + 5, dtype=np.uint8).tobytes()
    assert _positional(tmp_path / "out", data, _writes(rng, len(data), 5)) is False
    assert (tmp_path / "out").read_bytes() == data


def test_no_direct_descriptor_for_what_is_not_a_regular_file(monkeypatch):
    read, write = os.pipe()
    try:
        assert _directio.open_direct(write, f"/proc/self/fd/{write}") is None
    finally:
        os.close(read)
        os.close(write)
    monkeypatch.setenv("BIE_DIRECT_IO", "0")
    assert not _directio.enabled()


def _appended(path, parts):
    with _directio.append_file(str(path)) as out:
        for part in parts:
            assert out.write(part) == len(part)
        return getattr(out, "direct", None)


def _parts(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.choice([0, 1, 24, 1000, ALIGN, 3 * ALIGN + 1, 70 << 10], 40)
    return [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in sizes]


@pytest.mark.parametrize("seed", range(3))
def test_appending_gives_the_same_bytes_mostly_direct(tmp_path, small_blocks, direct_counted, seed):
    parts = _parts(seed)
    assert _appended(tmp_path / "out", parts) is True
    data = b"".join(parts)
    assert (tmp_path / "out").read_bytes() == data
    assert direct_counted["bytes"] == len(data) // (2 * ALIGN) * (2 * ALIGN) > 0


def test_appending_a_record_s_parts_in_one_call_gives_the_same_bytes(tmp_path, small_blocks, direct_counted):
    """``writelines`` (a container record's parts): bytes, uint8 arrays and byte memoryviews, small
    and big, across buffer ends, as ``write`` one by one gives them."""
    parts = _parts(11)
    mixed = [np.frombuffer(p, np.uint8) if k % 3 == 1 else memoryview(p) if k % 3 == 2 else p
             for k, p in enumerate(parts)]
    with _directio.append_file(str(tmp_path / "out")) as out:
        for k in range(0, len(mixed), 4):
            out.writelines(mixed[k:k + 4])
        assert out.direct is True
    assert (tmp_path / "out").read_bytes() == b"".join(parts)


def test_appending_falls_back_when_direct_writes_are_refused(tmp_path, small_blocks, direct_refused):
    parts = _parts(7)
    assert _appended(tmp_path / "out", parts) is False
    assert (tmp_path / "out").read_bytes() == b"".join(parts)
    assert direct_refused["refused"] == 1  # refused once, then plain writes only


def test_appending_without_o_direct_writes_plainly(tmp_path, small_blocks, direct_unopenable):
    parts = _parts(8)
    assert _appended(tmp_path / "out", parts) is None  # a plain buffered file
    assert (tmp_path / "out").read_bytes() == b"".join(parts)


def test_leaving_an_append_on_an_error_skips_the_buffered_tail(tmp_path, small_blocks):
    with pytest.raises(RuntimeError), _directio.append_file(str(tmp_path / "out")) as out:
        out.write(b"x" * (2 * ALIGN + 10))
        raise RuntimeError
    assert (tmp_path / "out").stat().st_size in (0, 2 * ALIGN)  # the tail did not go out


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Two shards of float tensors whose chunks start and end off the 4 KiB blocks."""
    source = tmp_path_factory.mktemp("direct") / "ckpt"
    source.mkdir()
    rng = np.random.default_rng(3)
    for number in range(2):
        write_safetensors(source / f"part-{number}.safetensors",
                          {f"t{number}.{k}": rng.standard_normal((1000 + 37 * k, 7)).astype(np.float32)
                           for k in range(3)}, {})
    return source


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _round_trip(source, base):
    """Compress, then decompress to a file and a directory at 1 and 2 threads; all the bytes."""
    base.mkdir()
    bie_cli.compress_model(source, base / "m.cai", chunk_size=12000)
    out = {"m.cai": (base / "m.cai").read_bytes()}
    for threads in (1, 2):
        bie_cli.decompress_model(base / "m.cai", base / f"one{threads}.safetensors", threads=threads)
        out[f"one{threads}"] = (base / f"one{threads}.safetensors").read_bytes()
        bie_cli.decompress_model(base / "m.cai", str(base / f"dir{threads}") + "/", threads=threads)
        out[f"dir{threads}"] = _files(base / f"dir{threads}")
    return out


def test_compress_and_decompress_bytes_do_not_depend_on_direct_writes(sharded, tmp_path, monkeypatch, small_blocks,
                                                                      direct_counted):
    direct = _round_trip(sharded, tmp_path / "direct")
    assert direct_counted["bytes"] > 0
    assert direct["dir1"] == direct["dir2"] == _files(sharded)
    monkeypatch.setenv("BIE_DIRECT_IO", "0")
    written = direct_counted["bytes"]
    plain = _round_trip(sharded, tmp_path / "plain")
    assert direct_counted["bytes"] == written  # none went direct
    assert direct == plain


def test_round_trip_with_direct_writes_refused(sharded, tmp_path, small_blocks, direct_refused):
    refused = _round_trip(sharded, tmp_path / "refused")
    assert direct_refused["refused"] > 0
    assert refused["dir1"] == refused["dir2"] == _files(sharded)
    assert refused["one1"] == refused["one2"]


def test_a_wrong_digest_leaves_no_output_with_direct_writes(sharded, tmp_path, request, small_blocks, direct_counted):
    from bie_cli.errors import CorruptContainerError

    bie_cli.compress_model(sharded, tmp_path / "m.cai", chunk_size=12000)
    request.getfixturevalue("wrong_digests")
    for threads in (1, 2):
        with pytest.raises(CorruptContainerError, match="do not match the stored digest"):
            bie_cli.decompress_model(tmp_path / "m.cai", tmp_path / "out.safetensors", threads=threads)
        with pytest.raises(CorruptContainerError, match="do not match the stored digest"):
            bie_cli.decompress_model(tmp_path / "m.cai", str(tmp_path / "out") + "/", threads=threads)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.cai"]


def test_a_failed_direct_write_fails_the_run_and_leaves_no_output(sharded, tmp_path, monkeypatch, small_blocks,
                                                                 direct_counted):
    """The writer thread's error (a full disk) reaches the caller; nothing is left behind."""
    bie_cli.compress_model(sharded, tmp_path / "m.cai", chunk_size=12000)
    real_pwrite = os.pwrite

    def full(fd, data, offset):
        if _is_direct(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    for threads in (1, 2):
        with pytest.raises(OSError, match="No space left"):
            bie_cli.decompress_model(tmp_path / "m.cai", tmp_path / "out.safetensors", threads=threads)
        with pytest.raises(OSError, match="No space left"):
            bie_cli.decompress_model(tmp_path / "m.cai", str(tmp_path / "out") + "/", threads=threads)
        with pytest.raises(OSError, match="No space left"):
            bie_cli.compress_model(sharded, tmp_path / "again.cai", chunk_size=12000, threads=threads)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.cai"]


def test_decompress_without_a_spare_core_writes_through_the_page_cache(sharded, tmp_path, monkeypatch, small_blocks,
                                                                      direct_counted):
    bie_cli.compress_model(sharded, tmp_path / "m.cai", chunk_size=12000)
    monkeypatch.setattr(_directio, "spare_core", lambda threads: False)
    before = direct_counted["bytes"]
    bie_cli.decompress_model(tmp_path / "m.cai", str(tmp_path / "out") + "/", threads=2)
    assert direct_counted["bytes"] == before
    assert _files(tmp_path / "out") == _files(sharded)


def test_chunks_decoded_into_the_staging_buffers_give_the_same_bytes(sharded, tmp_path, monkeypatch, small_blocks,
                                                                      direct_counted):
    """Chunks are decoded straight into the writer's buffers where one is free (the rest are
    copied there): at 1 and 2 threads, to a file and a directory, the same bytes."""
    staged = {"chunks": 0}
    real = _directio.PositionalFile.write_stage

    def counting(self, stage, offset, nbytes):
        staged["chunks"] += 1
        return real(self, stage, offset, nbytes)

    monkeypatch.setattr(_directio.PositionalFile, "write_stage", counting)
    out = _round_trip(sharded, tmp_path / "staged")
    assert staged["chunks"] > 0
    assert out["dir1"] == out["dir2"] == _files(sharded)
    assert out["one1"] == out["one2"]


def test_positional_writes_overflow_to_the_page_cache_while_every_buffer_is_in_flight(tmp_path, small_blocks,
                                                                                       direct_counted):
    data = np.random.default_rng(7).integers(0, 256, 8 * ALIGN, dtype=np.uint8).tobytes()
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    writer = _directio.Writer(1, threads=1)
    file = _directio.PositionalFile(fd, str(tmp_path / "out"), writer, overflow=True)
    try:
        os.ftruncate(fd, len(data))
        held = writer.take()  # the only buffer: held, as by a chunk decoding into it
        assert writer.take(wait=False) is None
        file.pwrite(data[:4 * ALIGN], 0)  # does not wait: written plainly
        assert direct_counted["bytes"] == 0
        writer.give_back(held)
        file.pwrite(data[4 * ALIGN:], 4 * ALIGN)
        writer.finish()
        assert direct_counted["bytes"] > 0
    finally:
        writer.close()
        file.close()
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == data
