"""``bie decompress FILE.cai -o OUT.safetensors|OUT.pt|OUT.onnx``"""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def command(
    src: Annotated[str, typer.Argument(metavar="SRC", help="Container .cai file, or - to read a stream from stdin.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Output checkpoint; the format comes from the extension. - writes to stdout (with --format safetensors or pytorch).")],
    format: Annotated[Optional[str], typer.Option("--format", help="Output format: safetensors, pytorch or onnx (overrides the extension).")] = None,
    tensor: Annotated[Optional[list[str]], typer.Option("-t", "--tensor", help="Extract only this tensor; repeatable.")] = None,
    external_data: Annotated[Optional[bool], typer.Option("--external-data/--no-external-data", help="ONNX: weights in a .data file beside the model (default: only over 2 GB).")] = None,
    bits: Annotated[Optional[int], typer.Option("--bits", help="Rebuild progressive (bie-bitplane) tensors from their top M planes only, reading only those bytes; other tensors are decoded in full.", metavar="M", min=1)] = None,
    threads: Annotated[int, typer.Option("-j", "--threads", help="Decode chunks in parallel on N threads.", min=1)] = 1,
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite OUTPUT if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress or summary on stderr.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Write statistics as JSON to stdout.")] = False,
) -> int:
    """Rebuild a checkpoint from a .cai container (lossless tensors bit-exact, checked against their digests)."""
    from ..errors import BadInputError
    from ..pipeline import decompress_model
    from .output import human_bytes, print_json, progress_bar, stderr_line

    if json_output and output == "-":
        raise BadInputError("--json and -o - both want stdout; write the checkpoint to a file")

    options = {} if external_data is None else {"external_data": external_data}
    with progress_bar("decompress", quiet) as progress:
        stats = decompress_model(src, output, format=format, tensors=tensor, force=force, progress=progress, threads=threads, bits=bits, **options)
    if json_output:
        print_json(stats.to_dict())
    elif not quiet:
        stderr_line(
            f"{stats.source} -> {stats.output} ({stats.format}): {stats.tensors} tensors, "
            f"{human_bytes(stats.bytes)} in {stats.seconds:.2f} s"
        )
    return 0
