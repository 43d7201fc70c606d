"""``method="trained"``: fine-tune an adaptive codec's projection and thresholds in torch (CPU).

The embedding seed's soft quantizer, reduced to what measured useful: the
code of ``z = (x - center) @ W`` is ``tanh((z - t) / tau)`` in the backward pass
and ``sign(z - t)`` in the forward pass (straight-through), so training sees
the very codes search will use. Merged bits use the soft OR
``1 - (1 - p_a)(1 - p_b)`` of the two components' bit probabilities.

The loss preserves neighbourhoods rather than raw similarities: each step
takes a batch of anchor rows, and for each anchor its ``NEIGHBOURS`` nearest
rows of the sample by float cosine plus the batch's random rows as
candidates; the anchor's softmax over the candidates' float cosines (sharp
temperature, so the nearest ones dominate) is the target for its softmax over
code similarities ``1 - 2 * hamming / bits`` (a learned scale); the loss is the
KL divergence. That is recall@k's concern: only the top of each ranking matters.

It can only improve on its start: a fifth of the sample (at most
``VALIDATION_MAX`` rows) is held out of training, and the fine-tuned codec is
kept only if its Hamming recall@10 of those rows among the rest beats the
adaptive start's; otherwise the start is returned (``info["kept"]`` says
which). On MiniLM docstrings the fine-tune has not beaten the PCA + ITQ start
on held-out queries (docs/embed.md), so ``adaptive`` stays the default.
The seed's pruning, importance scores and Hessian terms are not used: bits
are fixed by the caller, and the measured gains came from the rotation and
the listwise loss (docs/embed.md).
"""

from __future__ import annotations

import time

import numpy as np

from .codec import BinaryCodec

STEPS = 150
BATCH = 512  # random candidate rows per step
ANCHORS = 128  # anchor rows per step, each with its NEIGHBOURS nearest rows as candidates
NEIGHBOURS = 20
#: small: the start is an orthogonal rotation with entries ~ 1/sqrt(dims); 1e-3 moved it so far in 150
#: Adam steps that recall fell 4 points
LEARNING_RATE = 1e-4
VALIDATION_FRACTION, VALIDATION_MAX = 0.2, 2000
TEMPERATURE = 0.2  # tanh softness of the backward pass, in units of a component's spread
TARGET_TEMPERATURE = 0.02  # float cosines: sharp, so each row's nearest neighbours carry the loss
INITIAL_SCALE = 20.0


#: torch threads while training: the matrices are small (a batch of 512 x 384), and on a busy
#: 2-core machine two threads were 3x slower than one (48 s against 16 s for 10,000 vectors)
THREADS = 1


def train(codec: BinaryCodec, x: np.ndarray, *, seed: int = 0, steps: int = STEPS, batch: int = BATCH) -> BinaryCodec:
    """A copy of ``codec`` (adaptive, fitted on the normalised sample ``x``) trained on ``x``."""
    import torch  # only here: `import bie_cli.embed` stays free of torch

    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _train(torch, codec, x, seed, steps, batch)
    finally:
        torch.set_num_threads(previous)


def _train(torch, codec: BinaryCodec, x: np.ndarray, seed: int, steps: int, batch: int) -> BinaryCodec:
    started = time.perf_counter()
    rows = x.shape[0]
    order = np.random.default_rng(seed).permutation(rows)
    held = min(VALIDATION_MAX, int(rows * VALIDATION_FRACTION)) if rows >= 50 else 0
    validation, train_rows = np.sort(order[:held]), np.sort(order[held:])
    x_train = np.ascontiguousarray(x[train_rows], dtype=np.float32)
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(x_train)
    count = data.shape[0]
    neighbours = torch.from_numpy(_nearest(x_train, min(NEIGHBOURS, count - 1)))
    center = torch.from_numpy(codec.center)
    projection = torch.nn.Parameter(torch.from_numpy(codec.projection.copy()))
    thresholds = torch.nn.Parameter(torch.from_numpy(codec.thresholds.copy()))
    spread = ((data - center) @ projection).std(dim=0).detach().clamp_min(1e-6)
    log_scale = torch.nn.Parameter(torch.tensor(float(np.log(INITIAL_SCALE))))
    optimizer = torch.optim.Adam([projection, thresholds, log_scale], lr=LEARNING_RATE)
    keep, bits = codec.keep, codec.bits

    def soft_codes(z):
        soft = torch.tanh((z - thresholds) / (TEMPERATURE * spread))
        if codec.merged:
            p = (soft + 1) / 2
            p_or = 1 - (1 - p[:, keep::2]) * (1 - p[:, keep + 1::2])
            soft = torch.cat([soft[:, :keep], 2 * p_or - 1], dim=1)
        hard = torch.where(soft >= 0, 1.0, -1.0)
        return hard + soft - soft.detach()  # straight-through: forward sign, backward tanh

    loss = torch.tensor(0.0)
    for _ in range(steps):
        anchors = torch.randperm(count, generator=generator)[:min(ANCHORS, count)]
        candidates = torch.cat([neighbours[anchors].reshape(-1), torch.randperm(count, generator=generator)[:batch]])
        same = anchors[:, None] == candidates[None, :]
        target = torch.softmax((data[anchors] @ data[candidates].T).masked_fill(same, -torch.inf)
                               / TARGET_TEMPERATURE, dim=1)
        similarity = (soft_codes((data[anchors] - center) @ projection)
                      @ soft_codes((data[candidates] - center) @ projection).T) / bits
        logits = (similarity * log_scale.exp()).masked_fill(same, -torch.inf)
        log_predicted = torch.log_softmax(logits, dim=1).masked_fill(same, 0.0)
        loss = torch.nn.functional.kl_div(log_predicted, target, reduction="batchmean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = BinaryCodec(
        "trained", codec.input_dim, codec.dims, codec.keep, codec.center,
        thresholds.detach().numpy(), projection.detach().numpy(),
    )
    chosen, info = keep_better(codec, trained, x, validation, train_rows)
    chosen.info = {"steps": steps, "batch": batch, "final_loss": round(float(loss.detach()), 5), **info,
                   "train_seconds": round(time.perf_counter() - started, 3)}
    return chosen


def keep_better(start: BinaryCodec, trained: BinaryCodec, x: np.ndarray, validation: np.ndarray,
                rest: np.ndarray) -> tuple[BinaryCodec, dict]:
    """``trained`` if its Hamming recall@10 of the ``validation`` rows of ``x`` among the ``rest`` beats
    ``start``'s, else ``start``'s parameters (as a ``trained`` codec); and what was measured."""
    if not validation.size:
        return trained, {"kept": "trained (sample too small to hold rows out)"}
    before = _validation_recall(start, x, validation, rest)
    after = _validation_recall(trained, x, validation, rest)
    info = {"validation_recall": {"start": round(before, 4), "trained": round(after, 4)}}
    if after > before:
        return trained, {**info, "kept": "trained"}
    kept = BinaryCodec("trained", start.input_dim, start.dims, start.keep, start.center, start.thresholds,
                       start.projection)
    return kept, {**info, "kept": "start (the fine-tune did not beat it on the held-out rows)"}


def _nearest(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's k nearest other rows by cosine (x is normalised), int64 [n, k]; blocks bound memory."""
    nearest = np.empty((x.shape[0], max(k, 1)), dtype=np.int64)
    for start in range(0, x.shape[0], 1024):
        scores = x[start:start + 1024] @ x.T
        scores[np.arange(scores.shape[0]), np.arange(start, start + scores.shape[0])] = -np.inf
        nearest[start:start + 1024] = np.argpartition(-scores, k, axis=1)[:, :max(k, 1)] if k else 0
    return nearest


def _validation_recall(codec: BinaryCodec, x: np.ndarray, validation: np.ndarray, rest: np.ndarray, k: int = 10) -> float:
    """Hamming recall@k of the held-out rows among the rest (truth: float cosine), in numpy."""
    k = min(k, rest.size)
    truth = np.argsort(-(x[validation] @ x[rest].T), axis=1, kind="stable")[:, :k]
    signs = [np.where(codec.bits_of(codec.transform(x[rows])), 1.0, -1.0).astype(np.float32)
             for rows in (validation, rest)]
    found = np.argsort(-(signs[0] @ signs[1].T), axis=1, kind="stable")[:, :k]
    return float(np.mean([np.intersect1d(a, b).size for a, b in zip(found, truth, strict=True)]) / k)
