"""Names of the distillation losses and the default weights per model kind (torch-free, for configs)."""

from __future__ import annotations

LOSS_NAMES = ("feature", "affinity", "contrastive", "logits", "label")
SIMILARITY_LOSSES = ("affinity", "contrastive")
CLASSIFIER_LOSSES = ("logits", "label")
DUAL_ENCODER_DEFAULT = (("feature", 1.0), ("affinity", 1.0), ("contrastive", 0.5))
CLASSIFIER_DEFAULT = (("logits", 1.0), ("label", 1.0))
