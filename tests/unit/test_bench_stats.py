"""Latency statistics and paired speedup intervals on known samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmdeploy_kit.runtime.stats import (coefficient_of_variation, combine_speedups, paired_speedup, percentile,
                                      relative_difference, round_ratios, summarize)


def test_percentiles_linear_interpolation_on_1_to_100():
    x = list(range(1, 101))
    assert percentile(x, 50) == pytest.approx(50.5)
    assert percentile(x, 90) == pytest.approx(90.1)
    assert percentile(x, 95) == pytest.approx(95.05)
    assert percentile(x, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summarize_known_sample():
    s = summarize([0.001, 0.002, 0.003, 0.004], items_per_run=2)  # seconds
    assert s["n"] == 4
    assert s["mean_ms"] == pytest.approx(2.5)
    assert s["std_ms"] == pytest.approx(math.sqrt(5 / 3))  # sample std (ddof=1) of 1,2,3,4
    assert s["cv"] == pytest.approx(math.sqrt(5 / 3) / 2.5)
    assert (s["min_ms"], s["max_ms"]) == (pytest.approx(1.0), pytest.approx(4.0))
    assert s["p50_ms"] == pytest.approx(2.5)
    assert s["p90_ms"] == pytest.approx(3.7)
    assert s["throughput_items_per_s"] == pytest.approx(2 * 4 / 0.010)  # items over busy time
    assert s["total_s"] == pytest.approx(0.010)


def test_cv_edge_cases():
    assert coefficient_of_variation([5.0]) == 0.0
    assert coefficient_of_variation([3.0, 3.0, 3.0]) == 0.0
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2)


def test_speedup_exact_when_rounds_are_constant():
    est = paired_speedup([[2.0, 2.0]] * 5, [[1.0]] * 5)
    assert est.ratio == pytest.approx(2.0)
    assert est.low == pytest.approx(2.0) and est.high == pytest.approx(2.0)
    assert est.rounds == 5 and est.half_width_pct == pytest.approx(0.0)


def test_paired_rounds_cancel_machine_drift():
    """The machine slows down 3x over the run; both sides drift together, the ratio does not move."""
    drift = np.linspace(1.0, 3.0, 20)
    base = [[0.010 * d] * 4 for d in drift]
    cand = [[0.004 * d] * 9 for d in drift]
    est = paired_speedup(base, cand)
    assert est.ratio == pytest.approx(2.5)
    assert est.high - est.low == pytest.approx(0.0, abs=1e-9)


def test_interval_contains_truth_and_is_reproducible():
    rng = np.random.default_rng(1)
    true_ratio = 1.5
    base, cand = [], []
    for _ in range(40):
        load = rng.uniform(1.0, 1.6)  # shared per-round slowdown
        base.append(list(0.003 * true_ratio * load * rng.lognormal(0, 0.05, 8)))
        cand.append(list(0.003 * load * rng.lognormal(0, 0.05, 8)))
    a = paired_speedup(base, cand, seed=0)
    b = paired_speedup(base, cand, seed=0)
    assert (a.ratio, a.low, a.high) == (b.ratio, b.low, b.high)
    assert a.low <= true_ratio <= a.high
    assert a.low <= a.ratio <= a.high
    assert a.half_width_pct < 5.0
    # fewer rounds -> a wider interval
    few = paired_speedup(base[:6], cand[:6], seed=0)
    assert few.high - few.low > a.high - a.low


def test_round_ratios_skip_empty_rounds_and_check_lengths():
    r = round_ratios([[2.0], [], [4.0]], [[1.0], [1.0], [2.0]])
    assert list(r) == [2.0, 2.0]
    with pytest.raises(ValueError):
        round_ratios([[1.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError):
        paired_speedup([[]], [[]])


def test_combine_is_geometric_mean_with_interval():
    a = paired_speedup([[2.0]] * 4, [[1.0]] * 4)
    b = paired_speedup([[8.0]] * 4, [[1.0]] * 4)
    c = combine_speedups([a, b])
    assert c.ratio == pytest.approx(4.0)
    assert c.low == pytest.approx(4.0) and c.high == pytest.approx(4.0)


def test_relative_difference_is_symmetric():
    assert relative_difference(1.0, 1.1) == pytest.approx(relative_difference(1.1, 1.0))
    assert relative_difference(2.0, 2.0) == 0.0
    assert relative_difference(0.95, 1.05) == pytest.approx(0.1)
