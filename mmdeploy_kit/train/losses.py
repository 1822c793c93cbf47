"""Distillation and training losses (each returns a scalar tensor; weights are applied by the caller).

- ``feature_loss``: MSE (or 1 - cos) between L2-normalised student and teacher embeddings (CLIP-KD's FD),
  through a learned linear projection when the widths differ (``FeatureProjection``).
- ``affinity_loss``: KL between the student's and the teacher's in-batch image->text and text->image
  similarity distributions, averaged over both directions (TinyCLIP affinity mimicking / CLIP-KD ICL-style).
- ``contrastive_loss``: CLIP's symmetric InfoNCE on image-text pairs.
- ``logits_loss``: Hinton KD, KL(teacher_T || student_T) * T^2.
- ``label_loss``: cross-entropy with the ground-truth labels.

Similarity losses are computed over the *global* batch: ``gather_with_grad`` concatenates every rank's
embeddings with ``torch.distributed.nn.all_gather`` (gradients flow back to the rank that produced them).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .loss_names import CLASSIFIER_LOSSES, LOSS_NAMES, SIMILARITY_LOSSES  # noqa: F401 - re-exported


class FeatureProjection(nn.Module):
    """Student embedding width -> teacher width (a bias-free linear map), trained with the student."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "mse",
                 projection: Optional[nn.Module] = None) -> torch.Tensor:
    """Distance between normalised embeddings ``[N, D]``: ``mse`` = mean squared distance per sample
    (= 2 - 2 cos), ``cosine`` = mean (1 - cos)."""
    s = projection(student) if projection is not None else student
    if s.shape[-1] != teacher.shape[-1]:
        raise ValueError(f"feature widths differ: student {s.shape[-1]} vs teacher {teacher.shape[-1]}")
    s = F.normalize(s.flatten(1).float(), dim=-1)
    t = F.normalize(teacher.flatten(1).float(), dim=-1)
    if kind == "cosine":
        return (1.0 - (s * t).sum(-1)).mean()
    return ((s - t) ** 2).sum(-1).mean()


def _similarity(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T


def affinity_loss(s_image: torch.Tensor, s_text: torch.Tensor, t_image: torch.Tensor, t_text: torch.Tensor,
                  scale: float, teacher_scale: Optional[float] = None) -> torch.Tensor:
    """KL(teacher || student) of the row-softmaxed image->text and text->image similarity matrices, averaged."""
    ls = _similarity(s_image, s_text, scale)
    lt = _similarity(t_image, t_text, teacher_scale if teacher_scale is not None else scale)
    i2t = F.kl_div(F.log_softmax(ls, dim=1), F.log_softmax(lt, dim=1), log_target=True, reduction="batchmean")
    t2i = F.kl_div(F.log_softmax(ls.T, dim=1), F.log_softmax(lt.T, dim=1), log_target=True, reduction="batchmean")
    return (i2t + t2i) / 2


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """CLIP's loss: cross-entropy of each image over the batch's captions and vice versa (pair i <-> i)."""
    logits = _similarity(image, text, scale)
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def logits_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Temperature-scaled KL(teacher || student) x T^2 (so gradients keep their scale as T changes)."""
    if student.shape != teacher.shape:
        raise ValueError(f"logits shapes differ: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}")
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student.float() / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                  log_target=True, reduction="batchmean")
    return kl * t * t


def label_loss(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(student.float(), labels)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order; gradients flow back to each rank's own slice.
    Single-process: ``x`` itself."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    import warnings

    import torch.distributed.nn as dist_nn

    with warnings.catch_warnings():  # torch 2.13 marks it deprecated; it is still the autograd-aware gather
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(dist_nn.all_gather(x.contiguous()), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order (no gradient; for indices and teacher outputs)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
