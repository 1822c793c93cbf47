"""Task metrics on numpy arrays (torch-free): zero-shot classification, retrieval recall@k, drift."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def zero_shot_topk(image_embeds: np.ndarray, class_text_embeds: np.ndarray, labels: Sequence[int],
                   ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (in %) of classifying each image by its most similar class prompt embedding.

    ``class_text_embeds[c]`` is the (already prompt-averaged) embedding of class ``c``; ``labels[i]``
    is the class index of image ``i``. Returns ``{"top1": .., "top5": ..}`` (k capped at #classes).
    This is retrieval over the class embeddings with each image's class as its positive.
    """
    hits = recall_at_k(image_embeds, class_text_embeds, ks, positives=labels)
    return {f"top{k}": hits[f"R@{k}"] for k in ks}


def recall_at_k(query_embeds: np.ndarray, gallery_embeds: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                positives: Sequence[int] | None = None) -> dict[str, float]:
    """Retrieval recall@k (in %): query ``i``'s positive is gallery item ``positives[i]`` (default ``i``).

    k is capped at the gallery size.
    """
    sims = l2_normalize(query_embeds) @ l2_normalize(gallery_embeds).T
    pos = np.arange(len(sims)) if positives is None else np.asarray(positives)
    order = np.argsort(-sims, axis=1, kind="stable")
    out = {}
    for k in ks:
        hit = (order[:, : min(k, sims.shape[1])] == pos[:, None]).any(axis=1)
        out[f"R@{k}"] = float(hit.mean() * 100.0)
    return out


def drift(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Per-sample cosine (mean/min) and max abs error between two output arrays of equal shape."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
    n = ref.shape[0] if ref.ndim > 0 else 1
    r = ref.reshape(n, -1)
    c = cand.reshape(n, -1)
    finite = bool(np.isfinite(c).all())
    num = (r * c).sum(axis=1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(r - c).max(axis=1) == 0, 1.0, 0.0))
    cos = np.nan_to_num(cos, nan=-1.0)
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "max_abs_error": float(np.abs(r - c).max()) if finite else float("inf"),
        "finite": finite,
    }


def top1_agreement(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> float:
    """Share (in %) of samples whose argmax class is the same."""
    a = np.asarray(reference_logits).reshape(len(reference_logits), -1).argmax(axis=1)
    b = np.asarray(candidate_logits).reshape(len(candidate_logits), -1).argmax(axis=1)
    return float((a == b).mean() * 100.0)


def accuracy(logits: np.ndarray, labels: Sequence[int]) -> float:
    pred = np.asarray(logits).reshape(len(logits), -1).argmax(axis=1)
    return float((pred == np.asarray(labels)).mean() * 100.0)
