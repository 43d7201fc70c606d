"""``bie embed fit|encode|search|eval`` — binary codes for embedding vectors (bie_cli.embed).

VECTORS arguments are ``.npy`` or safetensors (one 2-D tensor), or a text file
(one passage a line) with ``--model DIR`` (a sentence-transformers model
directory; embedded on the fly, progress on stderr).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="embed",
    help="Binary codes for embedding vectors: fit a codec, encode, Hamming search, evaluate recall.",
    no_args_is_help=True,
)

ModelOption = Annotated[
    Optional[str], typer.Option("--model", help="sentence-transformers model directory, to embed text files.")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Overwrite the output file.")]
MethodOption = Annotated[str, typer.Option("--method", help="adaptive (default: centre on half the mean, PCA + ITQ rotation), sign, trained.")]
BitsOption = Annotated[Optional[int], typer.Option("--bits", help="Output bits per vector (default: one per used dimension).")]
DimsOption = Annotated[Optional[int], typer.Option("--dims", help="Use only the first DIMS input dimensions.")]
MergeOption = Annotated[
    Optional[int], typer.Option("--merge", help="Output bits made from two components each (bit = a>=k1 or b>=k2).")
]
LevelsOption = Annotated[
    Optional[int], typer.Option("--levels", help="1: one bit per component; 2: two bits (three levels) per component.")
]
QuietOption = Annotated[bool, typer.Option("-q", "--quiet", help="No progress bars.")]


def _echo_stderr(message: str) -> None:
    typer.echo(message, err=True)


@app.command("fit")
def fit_command(
    vectors: Annotated[str, typer.Argument(help="Sample vectors to learn from (VECTORS).")],
    output: Annotated[str, typer.Option("-o", "--output", help="Codec file to write (.cai).")],
    method: MethodOption = "adaptive",
    bits: BitsOption = None,
    dims: DimsOption = None,
    merge: MergeOption = None,
    levels: LevelsOption = None,
    model: ModelOption = None,
    force: ForceOption = False,
    quiet: QuietOption = False,
) -> int:
    """Learn a codec (thresholds, rotation, merged bits) from sample vectors; write it as a .cai file."""
    from ..embed import fit
    from ..embed.vectors import load_vectors
    from ..paths import check_output_path

    check_output_path(output, [vectors], force)
    sample = load_vectors(vectors, model=model, progress=not quiet, what="sample vectors")
    codec = fit(sample, bits=bits, method=method, dims=dims, merge=merge, levels=levels)
    codec.save(output, force=force)
    typer.echo(f"{codec!r} fitted on {sample.shape[0]} vectors in {codec.info['seconds']:.2f} s -> {output}")
    return 0


@app.command("encode")
def encode_command(
    codec_path: Annotated[str, typer.Argument(metavar="CODEC", help="Codec file from `bie embed fit`.")],
    vectors: Annotated[str, typer.Argument(help="Vectors to encode (VECTORS).")],
    output: Annotated[str, typer.Option("-o", "--output", help="Codes file to write (.cai).")],
    model: ModelOption = None,
    force: ForceOption = False,
    quiet: QuietOption = False,
) -> int:
    """Encode vectors into packed binary codes (a .cai file with one uint8 tensor `codes`)."""
    from ..embed import BinaryCodec
    from ..embed.store import save_codes
    from ..embed.vectors import load_vectors
    from ..paths import check_output_path

    check_output_path(output, [codec_path, vectors], force)
    codec = BinaryCodec.load(codec_path)
    data = load_vectors(vectors, model=model, progress=not quiet)
    codes = codec.encode(data)
    save_codes(codes, codec, output, force=force)
    typer.echo(f"{codes.shape[0]} vectors -> {codec.bits}-bit codes ({codes.nbytes} bytes) -> {output}")
    return 0


@app.command("search")
def search_command(
    codes_path: Annotated[str, typer.Argument(metavar="CODES", help="Codes file from `bie embed encode`.")],
    codec_path: Annotated[str, typer.Option("--codec", help="The codec the codes were encoded with.")],
    queries: Annotated[str, typer.Option("--queries", help="Query vectors (VECTORS).")],
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 10,
    rescore: Annotated[
        Optional[str], typer.Option("--rescore", help="The corpus vectors (float or int8), to re-rank the nearest codes.")
    ] = None,
    candidates: Annotated[Optional[int], typer.Option("--candidates", help="Codes re-ranked per query (default 4k).")] = None,
    asymmetric: Annotated[
        Optional[bool],
        typer.Option("--asymmetric/--hamming",
                     help="Rank by the float query against the bits (better recall; default with --rescore) "
                          "or by Hamming distance between codes (default without)."),
    ] = None,
    shortlist: Annotated[
        Optional[int],
        typer.Option("--shortlist", help="Asymmetric: score only the N Hamming-nearest codes "
                                         "(default: 10 per wanted result, at least 100; 0: every code)."),
    ] = None,
    output: Annotated[
        Optional[str], typer.Option("-o", "--output", help="Write ids to .npy, or ids and scores to .json (default: JSON on stdout).")
    ] = None,
    model: ModelOption = None,
    force: ForceOption = False,
    quiet: QuietOption = False,
) -> int:
    """Top-k of each query among the codes: by Hamming distance, or by the float query against the bits
    (--asymmetric, over a Hamming shortlist; the default with --rescore), optionally re-ranked by float vectors."""
    import os

    import numpy as np

    from ..embed import BinaryCodec, search, search_asymmetric
    from ..embed.codec import normalize
    from ..embed.store import load_codes
    from ..embed.vectors import load_vectors
    from ..errors import BadInputError
    from ..paths import atomic_output, check_output_path

    if output is not None:
        if os.path.splitext(output)[1].lower() not in (".npy", ".json"):
            raise BadInputError(f"output {output}: use a .npy (ids) or .json (ids and scores) file name")
        check_output_path(output, [codes_path, codec_path, queries] + ([rescore] if rescore else []), force)
    codec = BinaryCodec.load(codec_path)
    codes = load_codes(codes_path, codec)
    query_vectors = load_vectors(queries, model=model, progress=not quiet, what="query vectors")
    if asymmetric is None:
        asymmetric = rescore is not None and not codec.merged
    if shortlist is not None and not asymmetric:
        raise BadInputError("--shortlist only applies to asymmetric search (--asymmetric)")
    if asymmetric:
        import functools

        run = functools.partial(search_asymmetric, shortlist=shortlist)
        query_side = codec.query_weights(query_vectors)
    else:
        run, query_side = search, codec.encode(query_vectors)
    if rescore is None:
        if candidates is not None:
            raise BadInputError("--candidates only applies with --rescore")
        ids, scores = run(codes, query_side, k)
    else:
        corpus = _rescore_vectors(rescore)
        if corpus.shape[1] != query_vectors.shape[1]:
            raise BadInputError(f"--rescore vectors have {corpus.shape[1]} dimensions, the queries {query_vectors.shape[1]}")
        ids, scores = run(codes, query_side, k, rescore=corpus, queries=normalize(query_vectors), candidates=candidates)
    result = {"k": k, "rescored": rescore is not None, "asymmetric": asymmetric, "ids": ids.tolist(),
              "scores": scores.tolist()}
    if output is None:
        from .output import print_json

        print_json(result)
    elif output.lower().endswith(".npy"):
        with atomic_output(output) as temporary, open(temporary, "wb") as handle:
            np.save(handle, ids)
    else:
        import json

        with atomic_output(output) as temporary, open(temporary, "w") as handle:
            json.dump(result, handle)
    return 0


def _rescore_vectors(path: str):
    """Float vectors are normalised (cosine); an int8 .npy is used as it is (a per-tensor scale keeps ranks)."""
    import numpy as np

    from ..embed.codec import normalize
    from ..embed.vectors import load_vectors

    if path.lower().endswith(".npy"):
        array = np.load(path, allow_pickle=False, mmap_mode="r")
        if array.dtype == np.int8:
            return np.ascontiguousarray(array)
    return normalize(load_vectors(path, what="rescore vectors"))


@app.command("eval")
def eval_command(
    corpus: Annotated[str, typer.Argument(help="Corpus vectors (VECTORS).")],
    queries: Annotated[str, typer.Option("--queries", help="Query vectors (VECTORS), not used for fitting.")],
    codec_path: Annotated[Optional[str], typer.Option("--codec", help="A codec file to evaluate.")] = None,
    fit_sample: Annotated[
        Optional[str], typer.Option("--fit", help="Fit a codec on these vectors instead (default: on the corpus).")
    ] = None,
    method: MethodOption = "adaptive",
    bits: BitsOption = None,
    dims: DimsOption = None,
    merge: MergeOption = None,
    levels: LevelsOption = None,
    k: Annotated[int, typer.Option("-k", help="Recall@k against exact float32 cosine top-k.")] = 10,
    candidates: Annotated[int, typer.Option("--candidates", help="Codes re-ranked by float per query.")] = 40,
    model: ModelOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Write the results as JSON to stdout.")] = False,
    quiet: QuietOption = False,
) -> int:
    """Recall@k of a codec against exact float search, beside sign-at-zero with the same bits."""
    from ..embed import BinaryCodec, fit
    from ..embed.evaluate import codec_recall, exact_topk
    from ..embed.vectors import load_vectors
    from ..errors import BadInputError

    if codec_path is not None and (fit_sample or bits is not None or dims is not None or merge is not None
                                   or levels is not None):
        raise BadInputError("--codec evaluates a fitted codec; --fit/--bits/--dims/--merge/--levels are for "
                            "fitting one here")
    corpus_vectors = load_vectors(corpus, model=model, progress=not quiet, what="corpus vectors")
    query_vectors = load_vectors(queries, model=model, progress=not quiet, what="query vectors")
    if query_vectors.shape[1] != corpus_vectors.shape[1]:
        raise BadInputError(f"queries have {query_vectors.shape[1]} dimensions, the corpus {corpus_vectors.shape[1]}")
    if codec_path is not None:
        codec = BinaryCodec.load(codec_path)
    else:
        sample = corpus_vectors if fit_sample is None else load_vectors(fit_sample, model=model, progress=not quiet)
        codec = fit(sample, bits=bits, method=method, dims=dims, merge=merge, levels=levels)
    baseline = fit(corpus_vectors[:2], method="sign", bits=codec.bits) if codec.bits <= corpus_vectors.shape[1] else None
    truth = exact_topk(corpus_vectors, query_vectors, k)
    rows = [codec_recall("codec", codec, corpus_vectors, query_vectors, truth, candidates)]
    if baseline is not None:
        rows.append(codec_recall(f"sign-at-zero, first {baseline.bits} dims", baseline, corpus_vectors, query_vectors,
                                 truth, candidates))
    if json_output:
        from .output import print_json

        print_json({"k": k, "candidates": candidates, "corpus": corpus_vectors.shape[0],
                    "queries": query_vectors.shape[0], "results": [row.to_dict() for row in rows]})
        return 0
    from rich.table import Table

    from .output import stdout_console

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("codes", "method", "bits", f"recall@{k}", f"top {candidates} rescored", "asymmetric",
                   "asymmetric, rescored"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.method, str(row.bits), f"{row.recall:.3f}", f"{row.recall_rescored:.3f}",
                      *("-" if value is None else f"{value:.3f}"
                        for value in (row.recall_asymmetric, row.recall_asymmetric_rescored)))
    console = stdout_console()
    console.print(f"{corpus_vectors.shape[0]} corpus vectors, {query_vectors.shape[0]} queries; "
                  f"truth: exact float32 cosine top-{k}")
    console.print(table)
    return 0
