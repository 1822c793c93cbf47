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
    units: int = 1  # worker processes resampled (> 1: hierarchical bootstrap, a t interval)

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
    units = min(e.units for e in estimates)
    if units > 1:  # configs measured in the same processes: replicate b drew the same processes in each
        return _t_interval(point, reps, rounds, confidence, units)
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


# ---- several worker processes: hierarchical bootstrap -------------------------------------------------------
def t_quantile(confidence: float, df: int) -> float:
    """Two-sided Student t quantile (``confidence`` = 0.95 -> t_{0.975, df}); Hill's algorithm 396 (no scipy)."""
    from statistics import NormalDist

    p = 1.0 - confidence
    if df < 1:
        raise ValueError("df must be >= 1")
    if df == 1:
        return math.tan(math.pi / 2 * (1 - p))
    if df == 2:
        return math.sqrt(2.0 / (p * (2.0 - p)) - 2.0)
    n = float(df)
    a = 1.0 / (n - 0.5)
    b = 48.0 / (a * a)
    c = ((20700.0 * a / b - 98.0) * a / b - 16.0) * a / b + 96.36
    d = ((94.5 / (b + c) - 3.0) / b + 1.0) * math.sqrt(a * math.pi / 2.0) * n
    x = d * p
    y = x ** (2.0 / n)
    if y > 0.05 + a:
        x = NormalDist().inv_cdf(p * 0.5)
        y = x * x
        if df < 5:
            c += 0.3 * (n - 4.5) * (x + 0.6)
        c = (((0.05 * d * x - 5.0) * x - 7.0) * x - 2.0) * x + b + c
        y = (((((0.4 * y + 6.3) * y + 36.0) * y + 94.5) / c - y - 3.0) / b + 1.0) * x
        y = a * y * y
        y = math.expm1(y) if y > 0.002 else 0.5 * y * y + y
    else:
        y = ((1.0 / (((n + 6.0) / (n * y) - 0.089 * d - 0.822) * (n + 2.0) * 3.0) + 0.5 / (n + 4.0)) * y - 1.0) \
            * (n + 1.0) / (n + 2.0) + 1.0 / y
    return math.sqrt(n * y)


def _block_medians(logs: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Medians of moving-block resamples of one process's per-round log ratios (rounds taken close in time are
    correlated, so consecutive rounds are drawn together; block length ~ sqrt(rounds))."""
    r = logs.size
    if r == 1:
        return np.full(shape, logs[0])
    length = max(1, int(round(math.sqrt(r))))
    nblocks = -(-r // length)
    starts = rng.integers(0, r - length + 1, size=(*shape, nblocks))
    idx = (starts[..., None] + np.arange(length)).reshape(*shape, nblocks * length)[..., :r]
    return np.median(logs[idx], axis=-1)


def hierarchical_speedup(groups: Sequence[tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]]],
                         confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> RatioEstimate:
    """Speedup from interleaved rounds taken in several worker processes (``groups``: one ``(baseline_rounds,
    candidate_rounds)`` per process).

    The point estimate is the geometric mean over processes of each process's median per-round ratio, so
    every process weighs the same. Its interval comes from a two-level bootstrap: whole processes are drawn
    with replacement, then blocks of consecutive rounds inside each drawn process; the replicates' spread
    is the standard error of the estimate *including* the variation between processes (memory layout,
    thread placement, a neighbour for a while), which rounds inside one process cannot show. With few
    processes a bootstrap underestimates that spread, so the interval is ``point +- t_{P-1} * se`` with the
    bootstrap SE scaled by sqrt(P / (P - 1)) (Student's small-sample interval with a resampled SE).
    Process draws use their own seeded stream, so estimates of several configs measured in the same
    processes share the draws (``combine_speedups`` pairs them by index: a joint resample of processes).
    One process: :func:`paired_speedup`.
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    per_proc = [np.log(r) for r in (round_ratios(b, c) for b, c in groups) if r.size]
    if not per_proc:
        raise ValueError("no paired rounds with samples on both sides")
    if len(per_proc) == 1:
        (b, c), = [g for g in groups if round_ratios(*g).size]
        return paired_speedup(b, c, confidence, n_boot, seed)
    p = len(per_proc)
    meds = np.array([float(np.median(x)) for x in per_proc])
    point = float(meds.mean())
    pick = np.random.default_rng(seed).integers(0, p, size=(n_boot, p))       # processes, shared across configs
    rng = np.random.default_rng(seed + 1)
    inner = np.stack([_block_medians(x, (n_boot, p), rng) for x in per_proc])  # [process, replicate, slot]
    reps = inner[pick, np.arange(n_boot)[:, None], np.arange(p)[None, :]].mean(axis=1)
    rounds = int(sum(x.size for x in per_proc))
    return _t_interval(point, reps, rounds, confidence, p, tuple(float(v) for v in reps))


def _t_interval(point: float, reps: np.ndarray, rounds: int, confidence: float, units: int,
                keep: tuple[float, ...] = ()) -> RatioEstimate:
    se = float(np.std(reps, ddof=1)) * math.sqrt(units / (units - 1))
    half = t_quantile(confidence, units - 1) * se
    return RatioEstimate(math.exp(point), math.exp(point - half), math.exp(point + half), rounds, confidence, keep,
                         units=units)
