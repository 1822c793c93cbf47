"""One trial of ``mmdk optimize``: sampled choices -> a plain recipe (dict) -> the pipeline runner -> figures.

Trials that share a prefix (the same pruned and distilled tower) share the runner's step cache: the prune and
distill steps of a trial whose ratios and steps were seen before are copies, not recomputations.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import MmdkError, UserInputError
from .space import INT8_METHODS, SearchSpace

MIN_RATIO = 0.01   # a sampled ratio below this leaves the tower unpruned


class InvalidChoice(Exception):
    """The sampled choices break a pass's own rules (checked before any work; the trial is pruned)."""


@dataclass
class Settings:
    """What a search needs, as data: written to ``OUT/search.json`` so worker processes read the same."""

    model: str
    out: str
    target: str = "cpu"
    val: Optional[str] = None               # --data: task metric and bench accuracy
    calib: Optional[str] = None             # --calib-data
    train: Optional[str] = None             # --train-data (distillation)
    budgets: list[str] = field(default_factory=list)
    objectives: list[str] = field(default_factory=lambda: ["latency"])
    space: dict[str, Any] = field(default_factory=dict)
    towers: list[str] = field(default_factory=list)
    task_metric: Optional[str] = None       # the headline metric maximised next to the objectives
    max_trials: int = 20
    max_minutes: Optional[float] = None
    workers: int = 1
    storage: Optional[str] = None
    study_name: str = "mmdk-optimize"
    sampler: str = "tpe"
    seed: int = 0
    hosts: list[str] = field(default_factory=list)
    remote: dict[str, Any] = field(default_factory=dict)   # ssh_key, ssh_options, accept_new_host_key, remote_mmdk
    bench: dict[str, Any] = field(default_factory=dict)    # BenchStepConfig timing fields
    seed_trials: bool = True

    def search_space(self) -> SearchSpace:
        return SearchSpace(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.space.items()})

    def identity(self) -> str:
        """What must match for a worker to join a study (same model, data, space, budgets, objectives)."""
        keep = {k: getattr(self, k) for k in ("model", "target", "val", "calib", "train", "budgets", "objectives",
                                                "space", "bench")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- sampling --------------------------------------------------------------------------------------------
def suggest(trial: Any, s: Settings) -> dict[str, Any]:
    """Ask the trial for every dimension (the same names in every trial, so the samplers see one space)."""
    space, target = s.search_space(), s.target
    params: dict[str, Any] = {}
    for t in s.towers:
        lo, hi = space.tower_prune(t)
        if hi > lo:
            params[f"{t}.prune"] = trial.suggest_float(f"{t}.prune", lo, hi, step=space.prune_step)
    if len(space.distill_steps) > 1 and s.train:
        params["distill_steps"] = trial.suggest_categorical("distill_steps", list(space.distill_steps))
    for t in s.towers:
        choices = space.tower_precisions(t, target)
        if len(choices) > 1:
            params[f"{t}.precision"] = trial.suggest_categorical(f"{t}.precision", list(choices))
    if len(space.calibration) > 1 and s.calib:
        params["calibration"] = trial.suggest_categorical("calibration", list(space.calibration))
    if len(space.runtimes(target)) > 1:
        params["runtime"] = trial.suggest_categorical("runtime", list(space.runtimes(target)))
    if len(space.batch) > 1 and "throughput" in s.objectives:
        params["batch"] = trial.suggest_categorical("batch", list(space.batch))
    return params


def choices(params: dict[str, Any], s: Settings) -> dict[str, Any]:
    """Every dimension's value for this trial: sampled ones from ``params``, single-valued ones filled in."""
    space = s.search_space()
    out: dict[str, Any] = {}
    for t in s.towers:
        out[f"{t}.prune"] = float(params.get(f"{t}.prune", space.tower_prune(t)[0]))
        out[f"{t}.precision"] = params.get(f"{t}.precision", space.tower_precisions(t, s.target)[0])
    out["distill_steps"] = int(params.get("distill_steps", space.distill_steps[0] if s.train else 0))
    out["calibration"] = params.get("calibration", space.calibration[0])
    out["runtime"] = params.get("runtime", space.runtimes(s.target)[0])
    out["batch"] = int(params.get("batch", space.batch[0] if "throughput" in s.objectives else min(space.batch)))
    return out


# ---- choices -> recipe -------------------------------------------------------------------------------------
def build_recipe(params: dict[str, Any], s: Settings, with_bench: bool = True) -> dict[str, Any]:
    """The trial as a plain recipe dict (absolute paths), or ``InvalidChoice``."""
    c, space = choices(params, s), s.search_space()
    data: dict[str, str] = {}
    steps: list[dict[str, Any]] = []
    pruned = {t: round(c[f"{t}.prune"], 4) for t in s.towers if c[f"{t}.prune"] >= MIN_RATIO}
    if pruned:
        steps.append({"prune": {"ratio": pruned}})
        if c["distill_steps"] > 0:
            data["train"] = s.train  # type: ignore[assignment]
            opts: dict[str, Any] = {"data": "train", "steps": c["distill_steps"], "batch": space.distill_batch,
                                    "lr": space.distill_lr}
            if space.distill_max_minutes is not None:
                opts["max_minutes"] = space.distill_max_minutes
            steps.append({"distill": opts})
    prec = {t: c[f"{t}.precision"] for t in s.towers}
    runtime = c["runtime"]
    needs_calib = [t for t, p in prec.items() if p in INT8_METHODS and INT8_METHODS[p] != "dynamic"]
    if needs_calib and not s.calib:
        raise InvalidChoice(f"static INT8 for {', '.join(needs_calib)} needs --calib-data")
    if runtime == "tensorrt":
        base = {"int8" if p in INT8_METHODS else p for p in prec.values()}
        if len(base) > 1:
            raise InvalidChoice("a TensorRT bundle has one precision for all towers")
        p = base.pop()
        if p not in ("fp32", "fp16", "int8"):
            raise InvalidChoice(f"TensorRT bundles take fp32, fp16 or int8, not {p}")
        opts = {"target": "tensorrt", "precision": p, "device": s.target}
        if p == "int8":
            data["calib"] = s.calib  # type: ignore[assignment]
            opts["calib_data"] = "calib"
        steps.append({"export": opts})
    elif runtime == "openvino":
        steps.append(_openvino_step(prec, s, c, data, space))
    elif "bf16" in prec.values():
        raise InvalidChoice("bf16 runs on OpenVINO (runtime openvino), not ONNX Runtime")
    elif all(p == "fp32" for p in prec.values()):
        steps.append({"export": {"target": "onnx"}})
    else:
        q: dict[str, Any] = {"precision": "int8" if any(p in INT8_METHODS for p in prec.values()) else
                             next(p for p in prec.values() if p != "fp32"),
                             "tower_precision": [[t, "int8" if p in INT8_METHODS else p] for t, p in prec.items()]}
        methods = [[t, INT8_METHODS[p]] for t, p in prec.items() if INT8_METHODS.get(p)]
        if methods:
            q["tower_method"] = methods
        if any(p in INT8_METHODS for p in prec.values()) and s.calib:
            data["calib"] = s.calib
            q["calib_data"] = "calib"
            q["calib_samples"] = space.calib_samples
            if needs_calib:
                q["calibration"] = c["calibration"]
        steps.append({"quantize": q})
    if with_bench:
        if s.val:
            data["val"] = s.val
        bench: dict[str, Any] = {"target": s.target, "batch": [c["batch"]], **s.bench}
        if s.val:
            bench["data"] = "val"
        steps.append({"bench": bench})
    return {"description": f"mmdk optimize trial: {describe(c, s)}", "model": s.model, "data": data, "steps": steps}


def _openvino_step(prec: dict[str, str], s: Settings, c: dict[str, Any], data: dict[str, str],
                   space: Any) -> dict[str, Any]:
    """OpenVINO: the IR export in FP32 / BF16, or NNCF's static INT8 (its own calibration, which writes IR) - one
    precision for every tower, as one OpenVINO step takes."""
    kinds = {("int8" if p in INT8_METHODS else p) for p in prec.values()}
    if len(kinds) > 1:
        raise InvalidChoice("an OpenVINO step has one precision for all towers")
    kind = kinds.pop()
    if kind in ("fp32", "bf16"):
        return {"export": {"target": "openvino", "precision": kind}}
    if kind != "int8" or any(INT8_METHODS[p] not in (None, "static") for p in prec.values()):
        raise InvalidChoice(f"OpenVINO takes fp32, bf16 or static INT8 (NNCF), not {', '.join(sorted(set(prec.values())))}")
    if not s.calib:
        raise InvalidChoice("NNCF INT8 needs --calib-data")
    data["calib"] = s.calib
    return {"quantize": {"precision": "int8", "backend": "nncf", "calib_data": "calib",
                         "calib_samples": space.calib_samples}}


def describe(c: dict[str, Any], s: Settings) -> str:
    parts = []
    for t in s.towers:
        r = c[f"{t}.prune"]
        parts.append(f"{t} {'prune ' + format(r, '.2f') + ' ' if r >= MIN_RATIO else ''}{c[f'{t}.precision']}")
    if any(c[f"{t}.prune"] >= MIN_RATIO for t in s.towers) and c["distill_steps"]:
        parts.append(f"distill {c['distill_steps']}")
    parts.append(c["runtime"])
    if "throughput" in s.objectives:
        parts.append(f"batch {c['batch']}")
    return ", ".join(parts)


def config_key(recipe: dict[str, Any]) -> str:
    """A trial's identity: the recipe it runs (two samples that make the same recipe are one trial)."""
    body = {k: v for k, v in recipe.items() if k != "description"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def check_recipe(recipe: dict[str, Any]) -> None:
    """The passes' own rules (options, order: no prune after quantize) without loading the model."""
    from ..pipeline.recipe import load_recipe
    from ..pipeline.validate import _check_order, _plan_step

    try:
        r = load_recipe(recipe)
        steps = [_plan_step(r, i, st, preflight=False, warnings=[]) for i, st in enumerate(r.steps, 1)]
        _check_order(r, steps, "torch")
    except MmdkError as exc:
        raise InvalidChoice(exc.message) from None


# ---- running a trial ---------------------------------------------------------------------------------------
def run_trial(recipe: dict[str, Any], s: Settings, out: Path, host: Optional[str] = None,
              log: Optional[Callable[[str], None]] = None, batch: int = 1) -> dict[str, Any]:
    """Run the recipe into ``out`` (bench on ``host`` over SSH when given); return the trial's figures."""
    from ..pipeline.recipe import load_recipe
    from ..pipeline.runner import run_recipe
    from ..pipeline.validate import plan_recipe

    plan = plan_recipe(load_recipe(recipe), None)
    res = run_recipe(plan, out, overwrite=True, quiet=True, step_log=log)
    model_steps = [st for st in res.steps if st.pass_name != "bench"]
    final = model_steps[-1]
    figs: dict[str, Any] = {"size_mb": round(final.size_bytes / 1e6, 4),
                            "source_size_mb": round(res.source_size_bytes / 1e6, 4),
                            "parameters": final.parameters, "source_parameters": res.source_parameters,
                            "steps": {st.name: {"cached": st.cached, "seconds": st.seconds} for st in res.steps}}
    if host is not None:   # bench on the device over SSH (remote/), against the source model copied there too
        from ..passes.bench_step import bench_metrics
        from ..remote.bench import remote_bench
        from ..runtime.report import write_reports

        timing = {k: v for k, v in s.bench.items() if k in ("warmup_runs", "min_runs", "min_time_s", "min_rounds",
                                                             "max_time_s", "clock")}
        remote = {k: tuple(v) if isinstance(v, list) else v for k, v in s.remote.items()}
        report = remote_bench(host, [f"trial={final.output_dir}"], f"source={s.model}", target=s.target,
                              batch=[batch], data=s.val, templates=s.bench.get("templates"),
                              threads=s.bench.get("threads"), timing=timing, quiet=True, **remote)
        write_reports(report, json=out / "bench.json")
        metrics, lat_report, label = bench_metrics(report, "trial", "source"), report, "trial"
    else:
        from ..runtime.schema import BenchReport

        bstep = next(st for st in res.steps if st.pass_name == "bench")
        metrics = bstep.metrics
        lat_report = BenchReport.read(Path(bstep.output_dir) / "bench.json")
        label = next((a.label for a in lat_report.artifacts if a.role == "artifact"), "onnx")
    figs.update(_bench_figures(metrics, lat_report, label))
    return figs


def _bench_figures(metrics: dict[str, Any], report: Any, label: str) -> dict[str, Any]:
    sp = metrics.get("speedup")
    acc = metrics.get("accuracy") or {}
    mine, ref = acc.get(label) or {}, acc.get("source") or {}
    lat = [r for r in report.latency if r.artifact == label]
    batch = min((r.batch for r in lat), default=None)
    at_b = [r for r in lat if r.batch == batch]
    latency_ms = sum(r.stats.p50_ms for r in at_b) if at_b else None
    energy = [e.energy_mj_per_run for e in (report.telemetry.energy if report.telemetry else [])
              if e.artifact == label and e.energy_mj_per_run is not None]
    out: dict[str, Any] = {
        "speedup": sp, "speedup_ci": metrics.get("speedup_ci"),
        "latency_ratio": (1.0 / sp) if sp else None,
        "latency_ms": round(latency_ms, 4) if latency_ms is not None else None,
        "batch": batch,
        "throughput": round(batch * 1000.0 / latency_ms, 3) if latency_ms else None,
        "energy_mj": round(sum(energy), 4) if energy else None,
        "task": {k: v for k, v in mine.items() if isinstance(v, (int, float))},
        "source_task": {k: v for k, v in ref.items() if isinstance(v, (int, float))},
        "warnings": list(metrics.get("warnings") or []),
    }
    for k, v in list(out["task"].items()):
        if k in out["source_task"]:
            out["task"][f"{k}_drop"] = round(out["source_task"][k] - v, 6)
    return out


def budget_value(figs: dict[str, Any], metric: str) -> Optional[float]:
    """The figure a budget bounds (``zero_shot_top1_drop``, ``size_mb``, ``speedup``, ``latency_ms``, ...)."""
    if metric in figs.get("task", {}):
        return figs["task"][metric]
    if metric.startswith("recall@") and metric.endswith("_drop"):   # both directions, the worse one
        k = metric[len("recall@"):-len("_drop")]
        drops = [figs["task"].get(f"{d}_R@{k}_drop") for d in ("i2t", "t2i")]
        drops = [d for d in drops if d is not None]
        return max(drops) if drops else None
    v = figs.get(metric)
    return float(v) if isinstance(v, (int, float)) else None


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, UserInputError)
