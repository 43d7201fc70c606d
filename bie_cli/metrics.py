"""Error measures shared by the pipeline, inspect, verify and the benchmarks.

Accumulated chunk by chunk (sums, not means) so a tensor's figures do not
depend on how it was chunked, and computed in float64 from the decoded bytes
— the numbers describe what the file really holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class ErrorStats:
    count: int = 0
    sum_squared_error: float = 0.0
    sum_squared_reference: float = 0.0
    max_abs_error: float = 0.0

    def add(self, reference: np.ndarray, decoded: np.ndarray) -> None:
        ref = np.asarray(reference).astype(np.float64, copy=False).reshape(-1)
        out = np.asarray(decoded).astype(np.float64, copy=False).reshape(-1)
        if ref.size == 0:
            return
        # Non-finite elements are stored exactly (or refused) by every strategy;
        # leave them out of the sums so one inf does not make every figure inf.
        finite = np.isfinite(ref)
        if not finite.all():
            ref = np.where(finite, ref, 0.0)
            out = np.where(finite, out, 0.0)
        diff = out - ref
        self.count += ref.size
        self.max_abs_error = max(self.max_abs_error, float(np.max(np.abs(diff))))
        # not np.dot: a multithreaded BLAS spin-waits on a busy machine, ~100x slower for
        # chunk-sized vectors than numpy's own (pairwise, so also accurate) sum
        self.sum_squared_error += float(np.square(diff, out=diff).sum())
        self.sum_squared_reference += float(np.square(ref).sum())

    def merge(self, other: ErrorStats) -> None:
        self.count += other.count
        self.sum_squared_error += other.sum_squared_error
        self.sum_squared_reference += other.sum_squared_reference
        self.max_abs_error = max(self.max_abs_error, other.max_abs_error)

    @property
    def mse(self) -> float:
        return self.sum_squared_error / self.count if self.count else 0.0

    @property
    def relative_mse(self) -> float:
        """Sum of squared errors over sum of squared reference values."""
        if self.sum_squared_reference == 0.0:
            return 0.0 if self.sum_squared_error == 0.0 else math.inf
        return self.sum_squared_error / self.sum_squared_reference

    @property
    def snr_db(self) -> float:
        if self.sum_squared_error == 0.0:
            return math.inf
        if self.sum_squared_reference == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.sum_squared_reference / self.sum_squared_error)

    def to_dict(self) -> dict:
        """JSON-safe summary (infinities become None)."""
        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "count": self.count,
            "relative_mse": finite(self.relative_mse),
            "max_abs_error": self.max_abs_error,
            "snr_db": finite(self.snr_db),
            "sum_squared_error": self.sum_squared_error,
            "sum_squared_reference": self.sum_squared_reference,
        }

    @classmethod
    def from_dict(cls, values: dict) -> ErrorStats:
        return cls(
            count=int(values.get("count", 0)),
            sum_squared_error=float(values.get("sum_squared_error", 0.0)),
            sum_squared_reference=float(values.get("sum_squared_reference", 0.0)),
            max_abs_error=float(values.get("max_abs_error", 0.0)),
        )


def error_stats(reference: np.ndarray, decoded: np.ndarray) -> ErrorStats:
    stats = ErrorStats()
    stats.add(reference, decoded)
    return stats
