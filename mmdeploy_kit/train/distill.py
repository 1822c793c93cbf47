"""The distillation objective over towers: data rows -> student tower outputs vs cached teacher outputs.

Towers are the kit's ``Tower`` objects (``TowerModule``: spec inputs in, spec outputs out), so one objective
covers HF dual encoders, pruned towers and factory classifiers alike:

- ``feature``: every trained tower's embedding outputs (outputs that are not ``*logits*``) vs the teacher's;
- ``affinity`` / ``contrastive``: the image tower's and the text tower's first outputs (a dual encoder); a
  tower that is not being trained is replaced by the teacher's (its frozen partner);
- ``logits`` / ``label``: the trained towers' ``*logits*`` outputs.

Teacher outputs are computed once for every training row (the teacher is frozen and the data has no random
augmentation), so a step costs one student forward/backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..runtime.accuracy import _Inputs, tower_roles
from ..data.manifest import Sample
from ..errors import DataError, UserInputError
from ..model.tower import LoadedModel, Tower
from . import losses as L

DEFAULT_SCALE = 1 / 0.07  # CLIP's initial logit scale, used when the teacher has none


def is_logits(name: str) -> bool:
    return "logit" in name.lower()


@dataclass
class DistillData:
    rows: list[int]                                  # manifest rows used (each has every modality needed)
    feeds: dict[str, dict[str, torch.Tensor]]        # tower -> input name -> [n_rows, ...]
    labels: Optional[torch.Tensor]
    classes: list[str]
    n_unlabeled: int = 0

    def __len__(self) -> int:
        return len(self.rows)


def prepare_data(samples: Sequence[Sample], towers: dict[str, Tower], proc_dir: Optional[Path]) -> DistillData:
    """Preprocess manifest rows with the teacher's processor into inputs for every tower in ``towers``."""
    inp = _Inputs(samples, proc_dir, templates=())
    need = {m for t in towers.values() for m in t.spec.modalities}
    unsupported = need - {"image", "text", "audio", "video"}
    if unsupported:
        raise DataError(f"distillation cannot build {sorted(unsupported)[0]} inputs from a manifest yet",
                        hint="distill towers that take images, text, audio and/or video")
    rows = [i for i, s in enumerate(inp.samples) if all(getattr(s, m, None) not in (None, "") for m in need)]
    if not rows:
        raise DataError(f"no training row has every input the towers need ({', '.join(sorted(need))})")
    feeds = {name: {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inp.row_feeds(t.spec, rows).items()}
             for name, t in towers.items()}
    labeled = [s.label is not None for s in inp.samples]
    labels = None
    if inp.labels is not None:
        labels = torch.from_numpy(inp.labels[rows])
    return DistillData(rows=rows, feeds=feeds, labels=labels, classes=list(inp.classes),
                       n_unlabeled=len(labeled) - sum(labeled))


def _text_trim(spec: Any) -> tuple[Optional[str], list[str]]:
    """(attention-mask input, text inputs with a symbolic length) of a tower, for per-batch padding trim."""
    text = [i.name for i in spec.inputs if i.modality == "text" and len(i.shape) == 2 and isinstance(i.shape[1], str)]
    mask = next((n for n in text if "mask" in n), None)
    return mask, text


def module_device(tower: Tower) -> torch.device:
    p = next(iter(tower.module.parameters()), None) if tower.module is not None else None
    return p.device if p is not None else torch.device("cpu")


def batch_inputs(tower: Tower, feeds: dict[str, torch.Tensor], idx: torch.Tensor) -> list[torch.Tensor]:
    """The tower's inputs for rows ``idx`` in spec order (on the tower's device), text padding trimmed to the
    batch's longest row."""
    mask, text = _text_trim(tower.spec)
    device = module_device(tower)
    idx = idx.cpu()
    args = {n: feeds[n][idx].to(device) for n in tower.spec.input_names}
    if mask is not None:
        length = max(int(args[mask].sum(dim=1).max()), 1)
        for n in text:
            args[n] = args[n][:, :length]
    return [args[n] for n in tower.spec.input_names]


@torch.no_grad()
def teacher_outputs(tower: Tower, feeds: dict[str, torch.Tensor], n: int, batch: int = 128) -> dict[str, torch.Tensor]:
    tower.module.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, n, batch):
        idx = torch.arange(start, min(start + batch, n))
        for name, o in zip(tower.spec.output_names, tower.module(*batch_inputs(tower, feeds, idx))):
            outs.setdefault(name, []).append(o.detach().float())
    return {k: torch.cat(v) for k, v in outs.items()}


def teacher_scale(teacher: LoadedModel) -> float:
    scale = getattr(teacher.root, "logit_scale", None) if teacher.root is not None else None
    if isinstance(scale, torch.Tensor) and scale.numel() == 1:
        return float(scale.detach().exp())
    return DEFAULT_SCALE


class DistillObjective(nn.Module):
    """``forward(local_row_indices) -> (weighted loss, {loss name: value})``; holds the feature projections."""

    def __init__(self, student: LoadedModel, teacher: LoadedModel, train_towers: Sequence[str],
                 weights: dict[str, float], data: DistillData, feature_distance: str = "mse",
                 temperature: float = 2.0, similarity_scale: Optional[float] = None):
        super().__init__()
        self.student, self.teacher = student, teacher
        self.train_towers = list(train_towers)
        self.weights = {k: float(v) for k, v in weights.items() if float(v) != 0.0}
        self.data, self.distance, self.temperature = data, feature_distance, float(temperature)
        self.scale = float(similarity_scale) if similarity_scale else teacher_scale(teacher)
        self.vision, self.text = tower_roles({n: t.spec for n, t in teacher.towers.items()})
        self.device = module_device(student.towers[self.train_towers[0]])
        check_towers(student, teacher, self.train_towers)
        self._check_losses()
        n = len(data)
        self.cache = {t: teacher_outputs(teacher.towers[t], data.feeds[t], n) for t in self._teacher_towers()}
        self.projections = nn.ModuleDict()
        self._probe_shapes()

    # ---- validation ----------------------------------------------------------------------------------
    def _teacher_towers(self) -> list[str]:
        names = list(self.train_towers)
        if any(k in self.weights for k in L.SIMILARITY_LOSSES):
            names += [t for t in (self.vision, self.text) if t not in names]
        return names

    def _logit_outputs(self) -> list[tuple[str, str]]:
        return [(t, o) for t in self.train_towers for o in self.teacher.towers[t].spec.output_names if is_logits(o)]

    def _feature_outputs(self) -> list[tuple[str, str]]:
        return [(t, o) for t in self.train_towers for o in self.teacher.towers[t].spec.output_names if not is_logits(o)]

    def _check_losses(self) -> None:
        unknown = [k for k in self.weights if k not in L.LOSS_NAMES]
        if unknown:
            raise UserInputError(f"unknown loss {unknown[0]!r}", hint=f"losses are: {', '.join(L.LOSS_NAMES)}")
        if not self.weights:
            raise UserInputError("every loss weight is 0", hint="e.g. --loss feature=1,affinity=1,contrastive=0.5")
        sim = [k for k in L.SIMILARITY_LOSSES if k in self.weights]
        if sim and not (self.vision and self.text):
            raise UserInputError(f"the {sim[0]} loss needs a dual encoder (one image, audio or video tower and one "
                                 "text tower)",
                                 hint="use --loss logits=1,label=1 for classifiers, or feature=1")
        if sim and not ({self.vision, self.text} & set(self.train_towers)):
            raise UserInputError(f"the {sim[0]} loss needs the image or the text tower among the trained towers")
        cls = [k for k in L.CLASSIFIER_LOSSES if k in self.weights]
        if cls and not self._logit_outputs():
            raise UserInputError(f"the {cls[0]} loss needs a tower output named like 'logits' "
                                 f"(towers {', '.join(self.train_towers)} have none)",
                                 hint="use feature/affinity/contrastive losses for embedding towers")
        if "feature" in self.weights and not self._feature_outputs():
            raise UserInputError("the feature loss needs an embedding output (the trained towers only output logits)",
                                 hint="use --loss logits=1,label=1")
        if "label" in self.weights and self.data.labels is None:
            raise DataError(f"the label loss needs a 'label' on every training row ({self.data.n_unlabeled} of "
                            f"{self.data.n_unlabeled + len(self.data)} rows have none)",
                            hint="add labels to the manifest or drop label from --loss")

    @torch.no_grad()
    def _probe_shapes(self) -> None:
        """Run the student on two rows and compare every output with the teacher's (projection if widths differ)."""
        idx = torch.arange(min(2, len(self.data)))
        for t in self.train_towers:
            tower = self.student.towers[t]
            was = tower.module.training
            tower.module.eval()
            try:
                outs = tower.module(*batch_inputs(tower, self.data.feeds[t], idx))
            finally:
                tower.module.train(was)
            for o, s in zip(tower.spec.output_names, outs):
                ref = self.cache[t][o]
                if s.dim() != ref.dim() or s.shape[1:-1] != ref.shape[1:-1]:
                    raise UserInputError(f"student tower {t!r} output {o!r} has shape {list(s.shape[1:])} per row, "
                                         f"the teacher's has {list(ref.shape[1:])}",
                                         hint="distill a student with the same tower interfaces as the teacher")
                if is_logits(o) and s.shape[-1] != ref.shape[-1]:
                    raise UserInputError(f"student tower {t!r} outputs {s.shape[-1]} logits, the teacher {ref.shape[-1]}",
                                         hint="student and teacher must predict the same classes")
                if not is_logits(o) and s.shape[-1] != ref.shape[-1]:
                    if "feature" in self.weights:
                        self.projections[f"{t}__{o}"] = L.FeatureProjection(s.shape[-1], ref.shape[-1])
                    if any(k in self.weights for k in L.SIMILARITY_LOSSES) and t in (self.vision, self.text):
                        raise UserInputError(f"student tower {t!r} embeds into {s.shape[-1]} dims, the teacher into "
                                             f"{ref.shape[-1]}: in-batch similarities need one shared width",
                                             hint="keep the towers' output width when pruning, or use --loss feature=1")

    # ---- the loss ------------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        outs: dict[str, dict[str, torch.Tensor]] = {}
        for t in self.train_towers:
            tower = self.student.towers[t]
            outs[t] = dict(zip(tower.spec.output_names, tower.module(*batch_inputs(tower, self.data.feeds[t], idx))))
        parts: dict[str, torch.Tensor] = {}
        w = self.weights
        if "feature" in w:
            terms = [L.feature_loss(outs[t][o], self.cache[t][o][idx.to(self.device)], self.distance,
                                    self.projections[f"{t}__{o}"] if f"{t}__{o}" in self.projections else None)
                     for t, o in self._feature_outputs()]
            parts["feature"] = sum(terms) / len(terms)
        if "affinity" in w or "contrastive" in w:
            all_idx = L.gather_no_grad(idx.to(self.device))

            def emb(t: str) -> torch.Tensor:
                first = self.teacher.towers[t].spec.output_names[0]
                if t in outs:
                    return L.gather_with_grad(outs[t][first])
                return self.cache[t][first][all_idx]

            s_img, s_txt = emb(self.vision), emb(self.text)
            if "affinity" in w:
                t_img = self.cache[self.vision][self.teacher.towers[self.vision].spec.output_names[0]][all_idx]
                t_txt = self.cache[self.text][self.teacher.towers[self.text].spec.output_names[0]][all_idx]
                parts["affinity"] = L.affinity_loss(s_img, s_txt, t_img, t_txt, self.scale)
            if "contrastive" in w:
                parts["contrastive"] = L.contrastive_loss(s_img, s_txt, self.scale)
        if "logits" in w:
            terms = [L.logits_loss(outs[t][o], self.cache[t][o][idx.to(self.device)], self.temperature) for t, o in self._logit_outputs()]
            parts["logits"] = sum(terms) / len(terms)
        if "label" in w:
            labels = self.data.labels[idx.cpu()].to(self.device)
            parts["label"] = sum(L.label_loss(outs[t][o], labels) for t, o in self._logit_outputs()) / len(self._logit_outputs())
        loss = sum(w[k] * v for k, v in parts.items())
        return loss, {k: float(v.detach()) for k, v in parts.items()}


def check_towers(student: LoadedModel, teacher: LoadedModel, towers: Sequence[str]) -> None:
    """Each trained tower exists in both models, runs in torch, and takes/returns the same named tensors."""
    for t in towers:
        if t not in teacher.towers:
            raise UserInputError(f"the teacher has no tower {t!r}", hint=f"its towers are: {', '.join(teacher.towers)}")
        s, te = student.tower(t), teacher.towers[t]
        for who, tower in (("student", s), ("teacher", te)):
            if not tower.is_torch or tower.module is None:
                raise UserInputError(f"the {who}'s tower {t!r} is {tower.kind}, not a torch module",
                                     hint="distill torch checkpoints (before export / quantization)")
        if s.spec.input_names != te.spec.input_names:
            raise UserInputError(f"student tower {t!r} takes {s.spec.input_names}, the teacher's {te.spec.input_names}",
                                 hint="student and teacher need the same tower interfaces")
        if s.spec.output_names != te.spec.output_names:
            raise UserInputError(f"student tower {t!r} outputs {s.spec.output_names}, the teacher's "
                                 f"{te.spec.output_names}", hint="student and teacher need the same tower interfaces")
