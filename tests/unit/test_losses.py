"""Distillation losses against hand-computed values."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from mmdeploy_kit.train import losses as L  # noqa: E402


def _emb(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g)


def test_feature_loss_is_zero_for_equal_directions_and_matches_cosine():
    s, t = _emb(), _emb(seed=1)
    assert float(L.feature_loss(s, 3 * s)) == pytest.approx(0.0, abs=1e-6)  # normalised: scale does not matter
    cos = F.cosine_similarity(s, t)
    assert float(L.feature_loss(s, t, "cosine")) == pytest.approx(float((1 - cos).mean()), rel=1e-5)
    assert float(L.feature_loss(s, t, "mse")) == pytest.approx(float((2 - 2 * cos).mean()), rel=1e-5)


def test_feature_loss_projects_when_widths_differ_and_refuses_without_projection():
    s, t = _emb(d=4), _emb(d=8, seed=1)
    proj = L.FeatureProjection(4, 8)
    loss = L.feature_loss(s, t, projection=proj)
    loss.backward()
    assert proj.proj.weight.grad is not None and float(proj.proj.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="widths differ"):
        L.feature_loss(s, t)


def test_affinity_loss_is_kl_of_both_directions():
    si, st, ti, tt = _emb(), _emb(seed=1), _emb(seed=2), _emb(seed=3)
    scale = 10.0
    assert float(L.affinity_loss(ti, tt, ti, tt, scale)) == pytest.approx(0.0, abs=1e-6)
    ls = scale * F.normalize(si, dim=-1) @ F.normalize(st, dim=-1).T
    lt = scale * F.normalize(ti, dim=-1) @ F.normalize(tt, dim=-1).T

    def kl(p_logits, q_logits):  # KL(softmax p || softmax q), mean over rows
        p = p_logits.softmax(1)
        return float((p * (p_logits.log_softmax(1) - q_logits.log_softmax(1))).sum(1).mean())

    expected = (kl(lt, ls) + kl(lt.T, ls.T)) / 2
    assert float(L.affinity_loss(si, st, ti, tt, scale)) == pytest.approx(expected, rel=1e-5)


def test_contrastive_loss_matches_clip_and_prefers_aligned_pairs():
    img = _emb()
    txt = img + 0.1 * _emb(seed=5)
    scale = 20.0
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    target = torch.arange(6)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    aligned = float(L.contrastive_loss(img, txt, scale))
    assert aligned == pytest.approx(float(expected), rel=1e-6)
    assert aligned < float(L.contrastive_loss(img, txt[torch.randperm(6, generator=torch.Generator().manual_seed(1))], scale))


def test_logits_loss_scales_with_temperature_squared():
    s, t = _emb(d=5), _emb(d=5, seed=1)
    for temp in (1.0, 4.0):
        p = (t / temp).softmax(-1)
        kl = (p * ((t / temp).log_softmax(-1) - (s / temp).log_softmax(-1))).sum(-1).mean()
        assert float(L.logits_loss(s, t, temp)) == pytest.approx(float(kl) * temp * temp, rel=1e-5)
    assert float(L.logits_loss(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="logits shapes differ"):
        L.logits_loss(s[:, :3], t)


def test_label_loss_is_cross_entropy():
    s = _emb(d=5)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    assert float(L.label_loss(s, y)) == pytest.approx(float(F.cross_entropy(s, y)), rel=1e-6)
    assert float(L.label_loss(torch.eye(5)[y] * 50, y)) < 1e-6 * math.e


def test_gathers_are_identity_without_a_process_group():
    x = _emb()
    assert L.gather_with_grad(x) is x
    assert L.gather_no_grad(x) is x
