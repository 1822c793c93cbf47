"""Task metrics on hand-built embeddings whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from mmdeploy_kit.runtime.accuracy import gated_metrics, headline_metric, tower_roles
from mmdeploy_kit.runtime.metrics import accuracy, drift, recall_at_k, top1_agreement, zero_shot_topk
from mmdeploy_kit.model.iospec import IOSpec

CLASSES = np.eye(3)  # class c's prompt embedding is the unit vector e_c


def test_zero_shot_top1_and_top5():
    images = np.array([[0.9, 0.1, 0.0],    # class 0, correct
                       [0.1, 0.8, 0.2],    # class 1, correct
                       [0.7, 0.0, 0.3],    # label 2 but closest to 0: wrong at top-1, right at top-2
                       [0.0, 0.2, 0.9]])   # class 2, correct
    labels = [0, 1, 2, 2]
    zs = zero_shot_topk(images, CLASSES, labels, ks=(1, 2, 5))
    assert zs["top1"] == pytest.approx(75.0)
    assert zs["top2"] == pytest.approx(100.0)
    assert zs["top5"] == pytest.approx(100.0)  # k capped at the number of classes


def test_zero_shot_is_scale_invariant():
    images = np.array([[5.0, 0.0, 0.0], [0.0, 0.01, 0.0]])
    assert zero_shot_topk(images, CLASSES * 7, [0, 1])["top1"] == 100.0


def test_recall_at_k_identity_and_swaps():
    e = np.eye(12)
    r = recall_at_k(e, e)
    assert r == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0}
    # queries 0 and 1 point at each other's gallery item: they miss at R@1, hit at R@5
    q = e.copy()
    q[[0, 1]] = q[[1, 0]]
    r = recall_at_k(q, e)
    assert r["R@1"] == pytest.approx(100 * 10 / 12)
    assert r["R@5"] == 100.0
    # explicit positives
    assert recall_at_k(e[:2], e, ks=(1,), positives=[1, 0])["R@1"] == 0.0


def test_drift_identical_negated_and_nan():
    a = np.random.default_rng(0).standard_normal((5, 8))
    d = drift(a, a)
    assert d["cosine_min"] == pytest.approx(1.0) and d["max_abs_error"] == 0.0 and d["finite"]
    d = drift(a, -a)
    assert d["cosine_mean"] == pytest.approx(-1.0)
    bad = a.copy()
    bad[2, 3] = np.nan
    d = drift(a, bad)
    assert not d["finite"] and d["max_abs_error"] == float("inf")
    with pytest.raises(ValueError):
        drift(a, a[:, :4])


def test_top1_agreement_and_accuracy():
    ref = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 5], [2, 3, 1]], dtype=float)
    cand = np.array([[2, 1, 0], [0, 1, 3], [1, 0, 4], [4, 3, 1]], dtype=float)
    assert top1_agreement(ref, cand) == pytest.approx(50.0)
    assert accuracy(ref, [0, 1, 2, 1]) == pytest.approx(100.0)
    assert accuracy(cand, [0, 1, 2, 1]) == pytest.approx(50.0)


def _spec(inputs):
    return IOSpec.model_validate({"inputs": inputs, "outputs": ["y"]})


def test_tower_roles_find_a_dual_encoder():
    img = _spec([{"name": "pixel_values", "modality": "image", "shape": ["batch", 3, 8, 8]}])
    txt = _spec([{"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"]}])
    fused = _spec([{"name": "pixel_values", "modality": "image", "shape": ["batch", 3, 8, 8]},
                   {"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"]}])
    assert tower_roles({"vision": img, "text": txt}) == ("vision", "text")
    assert tower_roles({"model": fused}) == (None, None)
    assert tower_roles({"vision": img}) == (None, None)


def test_headline_and_gated_metrics():
    fig = {"zero_shot_top1": 91.0, "zero_shot_top5": 99.0, "i2t_R@1": 40.0, "t2i_R@1": 41.0, "i2t_R@5": 80.0,
           "cosine_mean": 0.999}
    assert headline_metric(fig) == ("zero_shot_top1", 91.0)
    assert gated_metrics(fig) == ["zero_shot_top1", "zero_shot_top5", "i2t_R@1", "t2i_R@1"]
    assert headline_metric({"accuracy": 80.0, "top1_agreement": 99.0}) == ("accuracy", 80.0)
    assert headline_metric({"cosine_mean": 1.0}) is None
