"""Objectives and budgets of ``mmdk optimize``, checked before any trial (exit 2 on an unknown metric, on data
without labels for a label metric, on an objective this target cannot measure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import UserInputError

# objective -> (figure, direction); "latency" is the interleaved latency ratio vs the source model
OBJECTIVES: dict[str, tuple[str, str]] = {
    "latency": ("latency_ratio", "minimize"),
    "throughput": ("throughput", "maximize"),
    "size": ("size_mb", "minimize"),
    "energy": ("energy_mj", "minimize"),
}
# figure budgets besides the task-metric drops: name -> the operator it takes
FIGURE_BUDGETS = {"size_mb": "<=", "latency_ratio": "<=", "latency_ms": "<=", "speedup": ">=", "throughput": ">=",
                  "energy_mj": "<="}
LABEL_METRICS = re.compile(r"^(zero_shot_top[15]|accuracy)(_drop)?$")
CAPTION_METRICS = re.compile(r"^(recall@\d+|i2t_R@\d+|t2i_R@\d+)(_drop)?$")
_BUDGET_RE = re.compile(r"^\s*(?P<metric>[A-Za-z0-9_@]+)\s*(?P<op><=|>=)\s*"
                        r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class SearchBudget:
    metric: str
    op: str
    value: float

    @property
    def text(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def violation(self, figure: Optional[float]) -> float:
        """Optuna's constraint value: <= 0 when the budget holds (unmeasured: violated)."""
        if figure is None:
            return float("inf")
        return figure - self.value if self.op == "<=" else self.value - figure


def parse_search_budget(text: str) -> SearchBudget:
    m = _BUDGET_RE.match(text or "")
    hint = "e.g. --budget 'zero_shot_top1_drop<=1' or --budget 'size_mb<=50'"
    if not m:
        raise UserInputError(f"cannot parse budget {text!r}", hint=hint)
    metric, op, value = m["metric"], m["op"], float(m["value"])
    if LABEL_METRICS.match(metric) or CAPTION_METRICS.match(metric):
        want = "<=" if metric.endswith("_drop") else ">="
    elif metric in FIGURE_BUDGETS:
        want = FIGURE_BUDGETS[metric]
    else:
        raise UserInputError(f"unknown budget metric {metric!r}",
                             hint="use zero_shot_top1_drop, zero_shot_top5_drop, accuracy_drop, recall@K_drop, "
                                  f"i2t_R@K_drop, t2i_R@K_drop (points lost vs the source) or {', '.join(FIGURE_BUDGETS)}")
    if op != want:
        raise UserInputError(f"budget {text!r}: {metric} takes '{want}'", hint=hint)
    return SearchBudget(metric, op, value)


def data_kind(val: Optional[str]) -> dict[str, bool]:
    """Whether the evaluation manifest has labels / captions (the first rows decide; files are not opened)."""
    if val is None:
        return {"labels": False, "captions": False}
    from ..data.manifest import load_manifest

    samples = load_manifest(val, check_files=False)
    if not samples:
        raise UserInputError(f"--data {val} has no rows", hint="give a JSONL manifest with image/text/label rows")
    return {"labels": any(s.label is not None for s in samples),
            "captions": any(s.text is not None and s.image is not None for s in samples)}


def task_metric_for(towers: list[str], kind: dict[str, bool]) -> Optional[str]:
    """The headline task metric the search maximises: zero-shot top-1 (dual encoder, labels), accuracy (one
    classifier graph, labels), image->text R@1 (captions only)."""
    if kind["labels"]:
        return "zero_shot_top1" if len(towers) > 1 else "accuracy"
    if kind["captions"] and len(towers) > 1:
        return "i2t_R@1"
    return None


def check_budgets(budgets: list[SearchBudget], objectives: list[str], target: str, val: Optional[str],
                  towers: list[str]) -> Optional[str]:
    """Refuse what no trial could measure; return the headline task metric."""
    for o in objectives:
        if o not in OBJECTIVES:
            raise UserInputError(f"unknown objective {o!r}", hint=f"objectives: {', '.join(OBJECTIVES)}")
        if o == "energy" and not target.startswith("jetson"):
            raise UserInputError("the energy objective is measured only on Jetson targets (tegrastats)",
                                 hint="use --objective latency|throughput|size, or --target jetson-* with --host")
    if len(set(objectives)) != len(objectives):
        raise UserInputError("an objective is given twice", hint="give each --objective once")
    kind = data_kind(val)
    for b in budgets:
        task = LABEL_METRICS.match(b.metric) or CAPTION_METRICS.match(b.metric)
        if task and val is None:
            raise UserInputError(f"budget {b.text} needs evaluation data", hint="pass --data val.jsonl")
        if LABEL_METRICS.match(b.metric) and not kind["labels"]:
            raise UserInputError(f"budget {b.text} needs labels, but {val} has no 'label' field",
                                 hint="add labels to the manifest or budget a retrieval metric (recall@1_drop)")
        if b.metric.startswith("zero_shot") and len(towers) < 2:
            raise UserInputError(f"budget {b.text}: zero-shot accuracy needs a dual encoder; this model has one "
                                 "tower", hint="use accuracy_drop for a classifier")
        if CAPTION_METRICS.match(b.metric) and not kind["captions"]:
            raise UserInputError(f"budget {b.text} needs captioned images, but {val} has none",
                                 hint="use a manifest whose rows have image and text")
        if b.metric == "energy_mj" and not target.startswith("jetson"):
            raise UserInputError(f"budget {b.text}: energy is measured only on Jetson targets")
    return task_metric_for(towers, kind)


def directions(objectives: list[str], task_metric: Optional[str]) -> list[str]:
    return [OBJECTIVES[o][1] for o in objectives] + (["maximize"] if task_metric else [])


def objective_values(figs: dict[str, Any], objectives: list[str], task_metric: Optional[str]) -> Optional[list[float]]:
    vals = [figs.get(OBJECTIVES[o][0]) for o in objectives]
    if task_metric:
        vals.append((figs.get("task") or {}).get(task_metric))
    if any(v is None for v in vals):
        return None
    return [float(v) for v in vals]


def resolve_path(p: Optional[str | Path]) -> Optional[str]:
    if p is None:
        return None
    path = Path(p)
    if not path.exists():
        raise UserInputError(f"{path} does not exist", hint="check the path")
    return str(path.resolve())
