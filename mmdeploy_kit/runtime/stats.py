"""Latency statistics and paired speedup estimates (numpy only, torch-free).

Conventions (unit-tested in ``tests/unit/test_bench_stats.py``):

- percentiles use linear interpolation between order statistics (numpy's default ``"linear"``), so the
  p50 of ``1..100`` is 50.5 and its p90 is 90.1;
- ``std`` is the sample standard deviation (``ddof=1``; 0 for a single sample) and the coefficient of
  variation is ``std / mean``;
- a speedup is ``baseline time / candidate time`` (> 1 means the candidate is faster). With interleaved
  rounds it is estimated from *paired* rounds: each round yields ``median(baseline block) /
  median(candidate block)``, both measured back to back, so machine-wide drift cancels inside the ratio;
  the point estimate is the median of those per-round ratios and its confidence interval a percentile
  bootstrap over rounds (seeded, hence reproducible).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("percentile of an empty sample")
    return float(np.percentile(arr, q, method="linear"))


def coefficient_of_variation(samples: Sequence[float]) -> float:
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size < 2:
        return 0.0
    mean = float(arr.mean())
    return float(arr.std(ddof=1) / mean) if mean > 0 else 0.0


def summarize(seconds: Sequence[float], items_per_run: int = 1) -> dict[str, float]:
    """Latency summary in milliseconds plus throughput (items/s) of a list of per-run times in seconds."""
    s = np.asarray(seconds, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no timed runs")
    ms = s * 1e3
    mean = float(ms.mean())
    out = {f"p{q}_ms": percentile(ms, q) for q in PERCENTILES}
    out.update({
        "n": int(s.size),
        "mean_ms": mean,
        "std_ms": float(ms.std(ddof=1)) if s.size > 1 else 0.0,
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "cv": coefficient_of_variation(ms),
        # throughput of back-to-back runs: items over the total busy time (not 1/p50)
        "throughput_items_per_s": float(items_per_run * s.size / s.sum()) if s.sum() > 0 else 0.0,
        "total_s": float(s.sum()),
    })
    return out


@dataclass(frozen=True)
class RatioEstimate:
    """A speedup ``ratio`` with a ``confidence`` interval [``low``, ``high``] from ``rounds`` paired rounds."""

    ratio: float
    low: float
    high: float
    rounds: int
    confidence: float
    replicates: tuple[float, ...] = ()  # bootstrap replicates of log(ratio), for combining configs

    @property
    def half_width_pct(self) -> float:
        """Half the interval's width relative to the ratio, in % (a quick precision figure)."""
        return 50.0 * (self.high - self.low) / self.ratio if self.ratio > 0 else float("inf")


def round_ratios(baseline_rounds: Sequence[Sequence[float]], candidate_rounds: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-round ``median(baseline) / median(candidate)`` over rounds where both have samples."""
    if len(baseline_rounds) != len(candidate_rounds):
        raise ValueError(f"rounds differ: {len(baseline_rounds)} baseline vs {len(candidate_rounds)} candidate")
    out = []
    for b, c in zip(baseline_rounds, candidate_rounds):
        if len(b) and len(c):
            mb, mc = float(np.median(b)), float(np.median(c))
            if mb > 0 and mc > 0:
                out.append(mb / mc)
    return np.asarray(out, dtype=np.float64)


def paired_speedup(baseline_rounds: Sequence[Sequence[float]], candidate_rounds: Sequence[Sequence[float]],
                   confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> RatioEstimate:
    """Speedup of candidate over baseline from interleaved rounds (see the module docstring)."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    ratios = round_ratios(baseline_rounds, candidate_rounds)
    if ratios.size == 0:
        raise ValueError("no paired rounds with samples on both sides")
    logs = np.log(ratios)
    point = float(np.median(logs))
    if ratios.size == 1:
        return RatioEstimate(math.exp(point), math.exp(point), math.exp(point), 1, confidence, (point,) * n_boot)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, logs.size, size=(n_boot, logs.size))
    reps = np.median(logs[idx], axis=1)
    return _from_log_replicates(point, reps, int(ratios.size), confidence, tuple(float(r) for r in reps))


def combine_speedups(estimates: Sequence[RatioEstimate], confidence: float = 0.95) -> RatioEstimate:
    """Geometric mean of several configs' speedups; its interval from their bootstrap replicates.

    Replicate ``b`` of the combination is the mean of every config's replicate ``b`` (configs are
    independent, so pairing replicates by index is a valid joint resample).
    """
    if not estimates:
        raise ValueError("nothing to combine")
    point = float(np.mean([math.log(e.ratio) for e in estimates]))
    n = min(len(e.replicates) for e in estimates)
    rounds = min(e.rounds for e in estimates)
    if n == 0:
        return RatioEstimate(math.exp(point), math.exp(point), math.exp(point), rounds, confidence)
    reps = np.mean([np.asarray(e.replicates[:n]) for e in estimates], axis=0)
    return _from_log_replicates(point, reps, rounds, confidence)


def _from_log_replicates(point: float, reps: np.ndarray, rounds: int, confidence: float,
                         keep: tuple[float, ...] = ()) -> RatioEstimate:
    """The ratio ``exp(point)`` with the percentile interval of bootstrap replicates of its log (widened
    to contain the point estimate)."""
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return RatioEstimate(math.exp(point), float(math.exp(min(lo, point))), float(math.exp(max(hi, point))),
                         rounds, confidence, keep)


def relative_difference(a: float, b: float) -> float:
    """``|a - b| / mean(a, b)`` (symmetric), e.g. to compare two runs' speedups."""
    m = (abs(a) + abs(b)) / 2.0
    return abs(a - b) / m if m > 0 else 0.0
