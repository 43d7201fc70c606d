"""Where tensor encoding runs: this process's threads, a process pool, or a Dask cluster.

The ``threads`` executor lives in :mod:`bie_cli.pipeline` (chunks read here,
encoded on threads, nothing pickled). The other two ship
:class:`~bie_cli.tensorcodec.EncodeTask` descriptions — "encode chunks a..b of
tensor T from checkpoint S with this plan" — to workers that open the
checkpoint themselves (for Dask: from a path every worker sees), and get the
encoded chunk records back. Either way this process writes the one container,
in manifest order, so the bytes are identical to a local run.

Dask (``pip install 'bie-cli[distributed]'``) retries a task whose worker
died (``retries``); tasks are pure functions of their description, so a retry
gives the same bytes.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterator

from . import dtypes
from .errors import BadInputError
from .tensorcodec import DigestTask, EncodeTask, SourceRef, TensorPlan, run_digest_task, run_encode_task

EXECUTORS = ("threads", "processes", "dask")
#: a tensor bigger than this is split into several tasks (row ranges), so one
#: big tensor does not leave the other workers idle
TASK_BYTES = 64 << 20
#: how many times Dask reruns a task whose worker died
DASK_RETRIES = 3


class _Pool:
    """What the pipeline needs of an executor: ``submit(fn, arg)`` -> a future with
    ``done()``/``result()``, and how many tasks run at once."""

    def __init__(self, submit: Callable, workers: int) -> None:
        self.submit = submit
        self.workers = workers


@contextlib.contextmanager
def open_pool(executor: str, workers: int, scheduler: str | None = None) -> Iterator[_Pool]:
    if executor == "processes":
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            yield _Pool(pool.submit, workers)
    elif executor == "dask":
        if not scheduler:
            raise BadInputError("--executor dask needs --scheduler tcp://HOST:PORT")
        try:
            from distributed import Client
        except ImportError:
            raise BadInputError("--executor dask needs Dask: pip install 'bie-cli[distributed]'") from None
        try:
            client = Client(scheduler, timeout="20s", set_as_default=False)
        except OSError as exc:
            raise BadInputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            slots = max(1, sum(client.nthreads().values()))

            def submit(function, task):
                return client.submit(function, task, pure=False, retries=DASK_RETRIES)

            yield _Pool(submit, slots)
        finally:
            client.close()
    else:
        raise BadInputError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")


def split_tasks(source: SourceRef, plan: TensorPlan, task_bytes: int = TASK_BYTES) -> list[EncodeTask]:
    """One task per tensor, or per run of chunks of at most ``task_bytes`` for a big one."""
    count = plan.chunk_count
    chunk_bytes = max(1, dtypes.nbytes(plan.info.dtype, plan.info.shape) // max(count, 1))
    per_task = max(1, task_bytes // chunk_bytes)
    if count == 0:
        return [EncodeTask(source, plan, 0, 0)]
    return [EncodeTask(source, plan, first, min(first + per_task, count)) for first in range(0, count, per_task)]


class _Slot:
    """One tensor on its way through the pool: its plan, and its digest once known."""

    def __init__(self, plan: TensorPlan) -> None:
        self.plan = plan
        self.digest: str | None = None
        row_elements = plan.info.numel // plan.info.rows if plan.info.rows else 0
        self.row_bytes = row_elements * dtypes.get(plan.info.dtype).itemsize


def encoded_in_order(source: SourceRef, plans: Iterator[TensorPlan], pool: _Pool, total: int,
                     progress: Callable | None) -> Iterator[tuple[str, object]]:
    """The same ``("begin", plan)`` / ``("chunk", EncodedChunk)`` / ``("end", digest)`` stream as
    the threads executor, with tasks run on ``pool``: at most ``2 x workers`` tasks in flight,
    results taken in submission order."""
    max_in_flight = 2 * pool.workers
    queue: deque = deque()  # (kind, slot, future | None), kind "begin" | "part" | "end"
    state = {"in_flight": 0, "done": 0}

    def ready(keep: int):
        while queue:
            kind, slot, future = queue[0]
            result = None
            if future is not None:
                if state["in_flight"] <= keep and not future.done():
                    return
                result = future.result()
                state["in_flight"] -= 1
            queue.popleft()
            if kind == "begin":
                yield "begin", slot.plan
            elif kind == "part":
                for chunk in result.chunks:
                    yield "chunk", chunk
                    state["done"] += (chunk.row_stop - chunk.row_start) * slot.row_bytes
                    if progress:
                        progress(state["done"], total, slot.plan.info.name)
                slot.digest = result.digest or slot.digest
            else:
                yield "end", result if result is not None else slot.digest

    for plan in plans:
        slot = _Slot(plan)
        tasks = split_tasks(source, plan)
        queue.append(("begin", slot, None))
        for task in tasks:
            queue.append(("part", slot, pool.submit(run_encode_task, task)))
            state["in_flight"] += 1
            yield from ready(max_in_flight - 1)
        if len(tasks) > 1:  # the digest is one stream over the tensor: hashed by its own task
            queue.append(("end", slot, pool.submit(run_digest_task, DigestTask(source, plan))))
            state["in_flight"] += 1
            yield from ready(max_in_flight - 1)
        else:
            queue.append(("end", slot, None))
    yield from ready(-1)


def source_ref(path: str, format: str) -> SourceRef:
    """A reference workers can open: an absolute path (every worker must see it)."""
    return SourceRef(os.path.abspath(path), format)
