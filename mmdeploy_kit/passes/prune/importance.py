"""Importance estimators (Torch-Pruning's) and the label-free losses whose gradients feed Taylor / Hessian.

- ``magnitude``: ``GroupMagnitudeImportance(p=2)``; needs no data.
- ``taylor``: ``GroupTaylorImportance`` after one backward pass per calibration batch (gradients summed).
- ``hessian``: ``GroupHessianImportance`` (OBD) with per-sample gradients accumulated.

The loss needs no labels:
- ``contrastive``: a dual encoder with image/text pairs in the calibration data: CLIP's symmetric
  InfoNCE between the pruned tower's embeddings and the *unpruned* partner tower's embeddings;
- ``agreement``: otherwise, the pruned tower against the unpruned tower's own outputs: cross-entropy on
  the unpruned model's argmax for logits outputs, InfoNCE between pruned and unpruned embeddings for the
  rest (unlike 1 - cosine, its gradient is not zero before the first channel goes).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..._lazy import require

TEMPERATURE = 0.07


def make_importance(kind: str) -> Any:
    tp = require("torch_pruning", "prune")
    if kind == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupHessianImportance()


def per_sample_losses(outputs: tuple, targets: dict[str, Any], output_names: list[str], torch: Any) -> Any:
    """One loss per sample ``[batch]`` (summed over outputs): per-sample terms for Hessian, mean for Taylor."""
    F = torch.nn.functional
    total = None
    for name, out in zip(output_names, outputs):
        if "partner" in targets:  # contrastive on pairs (the other tower's unpruned embeddings)
            a = F.normalize(out.flatten(1).float(), dim=-1)
            b = F.normalize(targets["partner"].float(), dim=-1)
            logits = a @ b.t() / TEMPERATURE
            labels = torch.arange(len(a))
            term = 0.5 * (F.cross_entropy(logits, labels, reduction="none")
                          + F.cross_entropy(logits.t(), labels, reduction="none"))
        elif "logit" in name.lower():
            ref = targets[name]
            term = F.cross_entropy(out.flatten(1).float(), ref.flatten(1).argmax(-1), reduction="none")
        else:
            a = F.normalize(out.flatten(1).float(), dim=-1)
            b = F.normalize(targets[name].flatten(1).float(), dim=-1)
            logits = a @ b.t() / TEMPERATURE
            term = F.cross_entropy(logits, torch.arange(len(a)), reduction="none")
        total = term if total is None else total + term
    return total


def gradient_refresher(kind: str, importance: Any, root: Any, tower_module: Any, batches: list[tuple],
                       targets: list[dict[str, Any]], output_names: list[str],
                       log: Callable[[str], None]) -> Callable[[], None]:
    """A callable that recomputes the gradients ``importance`` reads (before every pruning step)."""
    torch = require("torch")
    if kind == "magnitude":
        return lambda: None

    def refresh() -> None:
        root.zero_grad(set_to_none=True)
        if kind == "hessian":
            importance.zero_grad()
        with torch.enable_grad():
            for args, tgt in zip(batches, targets):
                losses = per_sample_losses(tower_module(*args), tgt, output_names, torch)
                if kind == "taylor":
                    losses.mean().backward()
                    continue
                for k in range(len(losses)):
                    root.zero_grad(set_to_none=True)
                    losses[k].backward(retain_graph=k + 1 < len(losses))
                    importance.accumulate_grad(root)
    return refresh


def loss_kind(targets: Optional[list[dict[str, Any]]]) -> Optional[str]:
    if not targets:
        return None
    return "contrastive" if "partner" in targets[0] else "agreement"
