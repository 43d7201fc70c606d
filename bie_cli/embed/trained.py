"""``method="trained"``: fine-tune an adaptive codec's projection and thresholds in torch (CPU).

The embedding seed's soft quantizer, reduced to what measured useful: the
code of ``z = (x - center) @ W`` is ``tanh((z - t) / tau)`` in the backward pass
and ``sign(z - t)`` in the forward pass (straight-through), so training sees
the very codes search will use. Merged bits use the soft OR
``1 - (1 - p_a)(1 - p_b)`` of the two components' bit probabilities.

The loss preserves neighbourhoods rather than raw similarities: in each batch,
every row's softmax over the other rows' float cosines (sharp temperature, so
the nearest ones dominate) is the target for its softmax over code
similarities ``1 - 2 * hamming / bits`` (a learned scale); the loss is the KL
divergence. That is recall@k's concern: only the top of each ranking matters.
The seed's pruning, importance scores and Hessian terms are not used: bits
are fixed by the caller, and the measured gains came from the rotation and
the listwise loss (docs/embed.md).
"""

from __future__ import annotations

import time

import numpy as np

from .codec import BinaryCodec

STEPS = 150
BATCH = 512
LEARNING_RATE = 1e-3
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
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    center = torch.from_numpy(codec.center)
    projection = torch.nn.Parameter(torch.from_numpy(codec.projection.copy()))
    thresholds = torch.nn.Parameter(torch.from_numpy(codec.thresholds.copy()))
    spread = ((data - center) @ projection).std(dim=0).detach().clamp_min(1e-6)
    log_scale = torch.nn.Parameter(torch.tensor(float(np.log(INITIAL_SCALE))))
    optimizer = torch.optim.Adam([projection, thresholds, log_scale], lr=LEARNING_RATE)
    keep, bits = codec.keep, codec.bits
    rows = data.shape[0]
    batch = min(batch, rows)
    mask = torch.eye(batch, dtype=torch.bool)
    for _ in range(steps):
        index = torch.randperm(rows, generator=generator)[:batch]
        sample = data[index]
        target = torch.softmax((sample @ sample.T).masked_fill(mask, -torch.inf) / TARGET_TEMPERATURE, dim=1)
        margins = ((sample - center) @ projection - thresholds) / (TEMPERATURE * spread)
        soft = torch.tanh(margins)
        if codec.merged:
            p = (soft + 1) / 2
            p_or = 1 - (1 - p[:, keep::2]) * (1 - p[:, keep + 1::2])
            soft = torch.cat([soft[:, :keep], 2 * p_or - 1], dim=1)
        hard = torch.where(soft >= 0, 1.0, -1.0)
        codes = hard + soft - soft.detach()  # straight-through: forward sign, backward tanh
        similarity = (codes @ codes.T) / bits
        logits = (similarity * log_scale.exp()).masked_fill(mask, -torch.inf)
        log_predicted = torch.log_softmax(logits, dim=1).masked_fill(mask, 0.0)
        loss = torch.nn.functional.kl_div(log_predicted, target, reduction="batchmean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = BinaryCodec(
        "trained", codec.input_dim, codec.dims, codec.keep, codec.center,
        thresholds.detach().numpy(), projection.detach().numpy(),
    )
    trained.info = {"steps": steps, "batch": batch, "train_seconds": round(time.perf_counter() - started, 3),
                    "final_loss": round(float(loss.detach()), 5)}
    return trained
