"""Direct (``O_DIRECT``) output writes: the same bytes as plain writes, and a silent fallback."""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import threading

import numpy as np
import pytest

import bie_cli
from bie_cli import _directio
from tests.conftest import write_safetensors

ALIGN = _directio.ALIGN


@pytest.fixture
def small_blocks(monkeypatch):
    """Windows and append buffers of a few blocks, so small test files take every path
    (chunks across windows, many windows open, several buffer rounds)."""
    monkeypatch.setattr(_directio, "WINDOW_BYTES", 3 * ALIGN)
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
    counted = {"bytes": 0, "plain": 0}
    real_pwrite = os.pwrite

    def writing(fd, data, offset):
        written = real_pwrite(fd, data, offset)
        counted["bytes" if _is_direct(fd) else "plain"] += written
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


def _windowed(path, data, pieces, threads=3, buffers=3, cuts=(), every=2):
    """Write ``pieces`` of ``data`` through a :class:`WindowedFile` of 3-block windows (buffers
    of 4: a block of slack) from ``threads`` threads, every other piece built in place
    (``stage``) where it may be; (direct still, buffers made, the file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    direct = _directio.open_direct(fd, str(path))
    assert direct is not None
    writer = _directio.Writer(buffers, 4 * ALIGN, threads=2)
    bounds = _directio.window_bounds(len(data), 3 * ALIGN, cuts)
    file = _directio.WindowedFile(fd, direct, len(data), writer, bounds)
    try:
        os.ftruncate(fd, len(data))
        view = memoryview(data)
        source = np.frombuffer(data, dtype=np.uint8)

        def run(share):
            for k, (offset, length) in enumerate(share):
                staged = file.stage(offset, length) if k % every == every - 1 else None
                if staged is None:
                    file.pwrite(view[offset:offset + length], offset)
                else:
                    staged[:] = source[offset:offset + length]
                    file.placed(offset, length)

        workers = [threading.Thread(target=run, args=(pieces[k::threads],)) for k in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        writer.finish()
        file.finish()
        return file.direct, writer.made, file
    finally:
        writer.close()
        file.close()
        os.close(fd)


def test_window_bounds_end_just_before_chunk_ends():
    B = ALIGN
    assert _directio.window_bounds(10 * B + 5, 3 * B) == [0, 3 * B, 6 * B, 9 * B, 10 * B + 5]
    # cuts at 2.5 and 4.2 blocks: windows end at their blocks (from half a window on), else full
    bounds = _directio.window_bounds(10 * B, 3 * B, [5 * B // 2, 4 * B + 800, 9 * B + 1])
    assert bounds == [0, 2 * B, 4 * B, 7 * B, 10 * B]  # the last window holds the rest
    assert _directio.window_bounds(100, 3 * B) == [0, 100]
    assert _directio.window_bounds(3 * B, 3 * B, [B]) == [0, 3 * B]


def test_a_chunk_built_in_place_across_a_window_end_spills_into_the_next(tmp_path, direct_counted):
    """Windows end at the block before each chunk's end: chunks are built in place, and only
    the part past the window (less than a block) is copied into the next window."""
    rng = np.random.default_rng(8)
    data = rng.integers(0, 256, 20 * ALIGN + 99, dtype=np.uint8).tobytes()
    cuts = [0, 2 * ALIGN + 100, 5 * ALIGN + 3000, 7 * ALIGN + 1, 10 * ALIGN + 17, 12 * ALIGN + 5, 15 * ALIGN + 64,
            17 * ALIGN + 2, len(data)]
    pieces = [(a, b - a) for a, b in itertools.pairwise(cuts)][::-1]
    staged = {"bytes": 0}
    real_stage = _directio.WindowedFile.stage

    def counting(self, offset, nbytes):
        view = real_stage(self, offset, nbytes)
        staged["bytes"] += 0 if view is None else nbytes
        return view

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_directio.WindowedFile, "stage", counting)
        direct, _, file = _windowed(tmp_path / "out", data, pieces, threads=1, cuts=cuts, every=1)
    assert direct is True
    assert (tmp_path / "out").read_bytes() == data
    assert direct_counted["plain"] == 0
    assert 0 < file.copied < 8 * ALIGN  # the spills only
    assert staged["bytes"] > 0


@pytest.mark.parametrize("seed", range(4))
def test_windows_from_threads_in_any_order_give_the_same_bytes_all_direct(tmp_path, direct_counted, seed):
    """Pieces across window ends, out of order, from threads; the last window ends off a
    block (written padded, then cut back): every byte goes direct, none plainly."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, 40 * ALIGN + 123, dtype=np.uint8).tobytes()
    direct, _, file = _windowed(tmp_path / "out", data, _writes(rng, len(data), 30))
    assert direct is True
    assert (tmp_path / "out").read_bytes() == data
    assert direct_counted["plain"] == 0
    assert direct_counted["bytes"] == 41 * ALIGN  # 40 blocks and the padded last one
    assert file.written == 14  # ceil((40 * ALIGN + 123) / (3 * ALIGN)) windows


def test_a_piece_spanning_several_windows_and_one_byte_pieces(tmp_path, direct_counted):
    data = np.random.default_rng(5).integers(0, 256, 10 * ALIGN + 1, dtype=np.uint8).tobytes()
    pieces = [(1, 8 * ALIGN), (0, 1)] + [(k, 1) for k in range(8 * ALIGN + 1, len(data))][::-1]
    assert _windowed(tmp_path / "out", data, pieces, threads=1)[0] is True
    assert (tmp_path / "out").read_bytes() == data
    assert direct_counted["plain"] == 0


def test_windows_grow_the_pool_when_every_buffer_is_held_by_an_open_window(tmp_path, direct_counted):
    """One buffer, and every window opened before any fills (each gets its first byte, then
    the rest): waiting for a buffer could never end, so the writer makes more."""
    data = np.random.default_rng(6).integers(0, 256, 12 * ALIGN, dtype=np.uint8).tobytes()
    firsts = [(k * 3 * ALIGN, 1) for k in range(4)]
    rests = [(k * 3 * ALIGN + 1, 3 * ALIGN - 1) for k in range(4)]
    direct, made, file = _windowed(tmp_path / "out", data, firsts + rests, threads=1, buffers=1)
    assert direct is True and made == 4 and file.max_open == 4
    assert (tmp_path / "out").read_bytes() == data


class _Held(_directio._StagedFile):
    """A file whose writes wait until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def _write_staged(self, view, offset) -> None:
        self.started.set()
        self.release.wait(10)


def test_a_window_buffer_is_waited_for_while_a_write_is_in_flight():
    writer = _directio.Writer(1, ALIGN, threads=1)
    try:
        file = _Held()
        writer.submit(file, writer.take(), ALIGN, 0)
        assert file.started.wait(10)
        got = []
        taker = threading.Thread(target=lambda: got.append(writer.take(grow=True)))
        taker.start()
        taker.join(0.2)
        assert taker.is_alive() and writer.made == 1  # waits: the write brings its buffer back
        file.release.set()
        taker.join(10)
        assert len(got) == 1 and writer.made == 1
    finally:
        writer.close()


def test_windows_fall_back_when_direct_writes_are_refused_mid_run(tmp_path, monkeypatch, direct_counted):
    """The third direct write is refused: it and every later window go plainly (by the writer)."""
    real_pwrite = os.pwrite
    calls = {"direct": 0}

    def writing(fd, data, offset):
        if _is_direct(fd):
            calls["direct"] += 1
            if calls["direct"] >= 3:
                raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", writing)
    rng = np.random.default_rng(9)
    data = rng.integers(0, 256, 30 * ALIGN + 7, dtype=np.uint8).tobytes()
    pieces = sorted(_writes(rng, len(data), 10))  # in order: windows go out one by one
    assert _windowed(tmp_path / "out", data, pieces, threads=1)[0] is False
    assert (tmp_path / "out").read_bytes() == data
    assert calls["direct"] in (3, 4)  # two writer threads: a second may be under way


def test_a_window_never_filled_fails_finish(tmp_path, direct_counted):
    data = bytes(5 * ALIGN)
    with pytest.raises(RuntimeError, match="never filled"):
        _windowed(tmp_path / "out", data, [(0, 4 * ALIGN)], threads=1)


def _placed(path, header, arrays, order):
    """A :class:`PlacedOutput` file of ``arrays`` (name -> array) written chunk by chunk in ``order``."""
    from bie_cli.formats.base import TensorInfo
    from bie_cli.formats.safetensors import PlacedOutput

    infos = [TensorInfo(name, "F32", list(a.shape)) for name, a in arrays.items()]
    output = PlacedOutput(threads=2)
    try:
        output.add_file(str(path), header, infos)
        for name, start, stop in order:
            array = arrays[name]
            row = array[0].nbytes
            staged = output.stage(name, start * row, (stop - start) * row, 4)
            if staged is None:
                output.write(name, start * row, array[start:stop])
            else:
                staged[:] = array[start:stop].reshape(-1).view(np.uint8)
                output.write_stage(name, start * row, staged)
        output.finish()
        return output.stats()
    finally:
        output.close()


def test_placed_output_header_in_window_0_chunks_out_of_order(tmp_path, small_blocks, direct_counted):
    rng = np.random.default_rng(4)
    arrays = {f"t{k}": rng.standard_normal((100 + 300 * k, 3)).astype(np.float32) for k in range(4)}
    header = b"h" * 1001  # any bytes: ends off a block, in window 0 with the first tensor's start
    order = [(name, start, min(start + 70, len(a))) for name, a in arrays.items() for start in range(0, len(a), 70)]
    np.random.default_rng(1).shuffle(order)
    stats = _placed(tmp_path / "out", header, arrays, order)
    expected = header + b"".join(a.tobytes() for a in arrays.values())
    assert (tmp_path / "out").read_bytes() == expected
    assert direct_counted["plain"] == 0
    assert stats["windows"] == -(-len(expected) // (3 * ALIGN))


def test_a_failed_file_setup_closes_both_descriptors(tmp_path, small_blocks, direct_counted, monkeypatch):
    from bie_cli.formats.base import TensorInfo
    from bie_cli.formats.safetensors import PlacedOutput

    def broken_bounds(*args):
        raise RuntimeError("window layout")

    monkeypatch.setattr(_directio, "window_bounds", broken_bounds)
    before = set(os.listdir("/proc/self/fd"))
    output = PlacedOutput(threads=1)
    try:
        with pytest.raises(RuntimeError, match="window layout"):
            output.add_file(str(tmp_path / "out"), b"h" * 8, [TensorInfo("a", "F32", [4, 3])])
    finally:
        output.close()
    assert set(os.listdir("/proc/self/fd")) <= before  # the file's plain and O_DIRECT descriptors closed


def test_placed_output_without_o_direct_writes_plainly(tmp_path, small_blocks, direct_unopenable):
    arrays = {"a": np.arange(3000, dtype=np.float32).reshape(1000, 3)}
    order = [("a", start, start + 100) for start in range(900, -1, -100)]
    stats = _placed(tmp_path / "out", b"x" * 77, arrays, order)
    assert (tmp_path / "out").read_bytes() == b"x" * 77 + arrays["a"].tobytes()
    assert stats["windows"] == 0


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


def test_chunks_decoded_into_their_windows_give_the_same_bytes(sharded, tmp_path, monkeypatch, small_blocks,
                                                               direct_counted):
    """Chunks inside one window are decoded straight into its buffer (those across a window
    end are copied there): at 1 and 2 threads, to a file and a directory, the same bytes,
    and no plain write into the output."""
    staged = {"chunks": 0}
    real = _directio.WindowedFile.placed

    def counting(self, offset, nbytes):
        staged["chunks"] += 1
        return real(self, offset, nbytes)

    monkeypatch.setattr(_directio.WindowedFile, "placed", counting)
    base = tmp_path / "staged"
    base.mkdir()
    bie_cli.compress_model(sharded, base / "m.cai", chunk_size=12000)
    plain = direct_counted["plain"]
    for threads in (1, 2):
        bie_cli.decompress_model(base / "m.cai", base / f"one{threads}.safetensors", threads=threads)
        bie_cli.decompress_model(base / "m.cai", str(base / f"dir{threads}") + "/", threads=threads)
        assert _files(base / f"dir{threads}") == _files(sharded)
    assert direct_counted["plain"] == plain
    assert staged["chunks"] > 0
    assert (base / "one1.safetensors").read_bytes() == (base / "one2.safetensors").read_bytes()
