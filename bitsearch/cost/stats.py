"""Summary statistics of repeated timings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimingStats:
    """Robust summary of per-call-sequence times in seconds: median, minimum and IQR."""

    median: float
    min: float
    iqr: float
    repeats: int

    @classmethod
    def from_times(cls, times: Sequence[float]) -> TimingStats:
        """Summarise ``times`` (at least one finite, non-negative value)."""
        t = np.asarray(times, dtype=np.float64)
        if t.ndim != 1 or t.size == 0:
            raise ValueError("need a non-empty sequence of times")
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError("times must be finite and non-negative")
        q25, q50, q75 = np.percentile(t, [25.0, 50.0, 75.0])
        return cls(median=float(q50), min=float(t.min()), iqr=float(q75 - q25), repeats=int(t.size))

    @property
    def relative_iqr(self) -> float:
        """IQR over median: a scale-free spread (0 for a zero median)."""
        return self.iqr / self.median if self.median > 0 else 0.0
