"""Figures of a quantized tower against its FP32 source, and accuracy budgets checked on them.

Per tower: drift (cosine mean/min, max abs error) on held-out data, plus a batch-1 run so a broken
dynamic batch axis cannot hide. Task budgets (zero-shot / recall / accuracy drops) reuse the benchmark
harness's accuracy evaluation on the held-out manifest rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ...runtime.metrics import drift
from ...data.manifest import Sample
from ...errors import BudgetError, SpecError
from ...model.tower import LoadedModel, Tower
from ..base import RunContext
from .config import Budget, QuantizeConfig


Outputs = dict[str, list[np.ndarray]]  # output name -> one array per batch


def run_outputs(path: Path, batches: Sequence[dict[str, np.ndarray]]) -> Outputs:
    """Outputs of the ONNX graph at ``path`` on each batch (float outputs as float32).

    Kept per batch: batches may differ in a sequence length that the outputs carry.
    """
    from ...runtime.backends.ort import ort_session

    sess = ort_session(path, spinning=False)
    names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    acc: Outputs = {n: [] for n in out_names}
    for b in batches:
        feeds = {k: b[k] for k in names}
        try:
            outs = sess.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT's errors (Fail, InvalidArgument) share no base but Exception
            msg = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:240]
            raise SpecError(f"{Path(path).name} cannot run on inputs {({k: list(v.shape) for k, v in feeds.items()})}:"
                            f" {msg}", hint="the I/O spec's shapes do not fit the graph: state its dims with "
                                            "--io SPEC.yaml (see mmdk inspect)") from None
        for n, o in zip(out_names, outs):
            a = np.asarray(o)
            acc[n].append(a.astype(np.float32, copy=False) if a.dtype.kind == "f" else a)
    return acc


def first_sample(path: Path, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``batch`` cut to one sample along the inputs whose first dim is dynamic in the graph; a fixed dim stays
    as the graph fixes it (an input ``x: float[8]`` is eight values, not a batch of eight)."""
    from ...runtime.backends.ort import ort_session

    dynamic = {i.name for i in ort_session(path, optimization="disable", spinning=False).get_inputs()
               if i.shape and not isinstance(i.shape[0], int)}
    return {k: (v[:1] if k in dynamic else v) for k, v in batch.items()}


def _rows(a: np.ndarray) -> int:
    return int(a.shape[0]) if a.ndim else 1


def _batched_drift(ref: Sequence[np.ndarray], cand: Sequence[np.ndarray]) -> dict[str, Any]:
    """``runtime.metrics.drift`` over batches: per-sample cosine mean / min and max abs error of all of them."""
    per = [drift(r, c) for r, c in zip(ref, cand)]
    rows = [_rows(r) for r in ref]
    return {"cosine_mean": sum(d["cosine_mean"] * n for d, n in zip(per, rows)) / max(sum(rows), 1),
            "cosine_min": min(d["cosine_min"] for d in per),
            "max_abs_error": max(d["max_abs_error"] for d in per),
            "finite": all(d["finite"] for d in per)}


def output_drift(ref: Outputs, cand: Outputs) -> dict[str, Any]:
    """A tower's drift: the worst output's cosine (mean / min) and max abs error, plus per-output figures."""
    per = {n: _batched_drift(ref[n], cand[n]) for n in ref}
    return {"cosine": min(v["cosine_mean"] for v in per.values()),
            "cosine_min": min(v["cosine_min"] for v in per.values()),
            "max_abs_error": max(v["max_abs_error"] for v in per.values()),
            "finite": all(v["finite"] for v in per.values()),
            "outputs": {n: {k: round(x, 6) if isinstance(x, float) else x for k, x in v.items()} for n, v in per.items()}}


class TowerEval:
    """FP32 reference outputs of one tower on its calibration and held-out batches (computed once)."""

    def __init__(self, name: str, fp32_path: Path, calib: Sequence[dict[str, np.ndarray]],
                 holdout: Sequence[dict[str, np.ndarray]], data_kind: str):
        self.name = name
        self.fp32_path = fp32_path
        self.calib = list(calib)
        self.holdout = list(holdout)
        self.data_kind = data_kind  # "held-out calibration data" | "synthetic inputs (no --calib-data)"
        self._ref_calib: Optional[Outputs] = None
        self.ref_holdout = run_outputs(fp32_path, self.holdout)
        self.single = [first_sample(fp32_path, self.holdout[0])]
        self.ref_single = run_outputs(fp32_path, self.single)

    def calib_cosine(self, path: Path) -> float:
        """Mean output cosine on the calibration batches (the sensitivity signal)."""
        if self._ref_calib is None:
            self._ref_calib = run_outputs(self.fp32_path, self.calib)
        return float(output_drift(self._ref_calib, run_outputs(path, self.calib))["cosine"])

    def figures(self, path: Path) -> dict[str, Any]:
        held = output_drift(self.ref_holdout, run_outputs(path, self.holdout))
        one = output_drift(self.ref_single, run_outputs(path, self.single))
        n = sum(_rows(a) for a in next(iter(self.ref_holdout.values())))
        return {"data": self.data_kind, "n_samples": n, "cosine": round(held["cosine"], 6),
                "cosine_min": round(min(held["cosine_min"], one["cosine_min"]), 6),
                "max_abs_error": float(max(held["max_abs_error"], one["max_abs_error"])),
                "finite": bool(held["finite"] and one["finite"]), "batch1_cosine": round(one["cosine"], 6),
                "outputs": held["outputs"]}


class TaskEval:
    """Task metrics on held-out manifest rows via the benchmark harness; reference figures cached."""

    def __init__(self, samples: Sequence[Sample], source: str, fp32: dict[str, Tower], processor_dir: Optional[Path],
                 templates: Sequence[str]):
        self.samples = list(samples)
        self.source = source
        self.processor_dir = processor_dir
        self.templates = list(templates)
        self.reference = self._primary(fp32)

    def _primary(self, towers: dict[str, Tower]) -> dict[str, float]:
        from ...runtime.accuracy import Contestant, evaluate
        from ...runtime.backends.ort import OrtBackend

        backends = {n: OrtBackend(t) for n, t in towers.items()}
        report = evaluate([Contestant("m", backends)], "m", self.samples, self.source, self.processor_dir,
                          templates=self.templates)
        return dict(report.primary.get("m", {}))

    def drops(self, towers: dict[str, Tower]) -> dict[str, float]:
        cand = self._primary(towers)
        out = {}
        for key, ref in self.reference.items():
            if key in cand and key != "cosine_mean":
                out[f"{key}_drop"] = round(ref - cand[key], 4)
        dirs = ("i2t", "t2i", "a2t", "t2a", "v2t", "t2v")  # media->text / text->media per modality
        ks = sorted({k.split("@")[1].removesuffix("_drop") for k in out if k.startswith(tuple(f"{d}_R@" for d in dirs))})
        for k in ks:  # recall@K_drop: the worse of both directions
            out[f"recall@{k}_drop"] = max(out[f"{d}_R@{k}_drop"] for d in dirs if f"{d}_R@{k}_drop" in out)
        out["reference"] = {k: round(v, 4) for k, v in self.reference.items() if k != "cosine_mean"}
        out["quantized"] = {k: round(v, 4) for k, v in cand.items() if k != "cosine_mean"}
        return out


def check_budgets(budgets: Sequence[Budget], tower_figs: dict[str, dict[str, Any]], task_figs: Optional[dict[str, Any]],
                  quantized: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (budget, scope): figure reached and whether it holds."""
    rows = []
    for b in budgets:
        if b.is_task:
            if task_figs is None or b.metric not in task_figs:
                have = sorted(k for k in (task_figs or {}) if k.endswith("_drop"))
                raise BudgetError(f"budget {b.text} cannot be evaluated on this model and data",
                                  hint=f"available task metrics: {', '.join(have) or 'none (need a labelled / captioned manifest and a dual encoder or logits)'}")
            fig = float(task_figs[b.metric])
            rows.append({"budget": b.text, "scope": "task", "figure": fig, "holds": b.holds(fig)})
            continue
        scopes = [b.tower] if b.tower else list(quantized)
        for t in scopes:
            if t not in tower_figs:
                raise BudgetError(f"budget {b.text} names tower {t!r}, which is not quantized",
                                  hint=f"quantized towers: {', '.join(quantized) or 'none'}")
            fig = float(tower_figs[t][b.metric])
            rows.append({"budget": b.text, "scope": t, "figure": fig, "holds": b.holds(fig)})
    return rows


def load_tower_data(model: LoadedModel, config: QuantizeConfig, ctx: RunContext,
                    towers: list[str]) -> tuple[Any, Optional[Path]]:
    """``--calib-data`` for ``towers`` (preprocessed with the checkpoint's own processor), and that processor's dir."""
    from ...runtime.preprocess import processor_dir
    from ...data.calib import load_calibration

    proc = processor_dir([model], config.processor)
    data = load_calibration(config.calib_data, {n: model.towers[n].spec for n in towers}, proc,
                            n_calib=config.calib_samples, n_holdout=config.holdout_samples,
                            batch_size=config.batch_size, seed=config.seed)
    return data, proc
