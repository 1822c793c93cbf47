"""Accuracy-aware mixed precision: keep the most sensitive INT8 candidates in FP32 until budgets hold.

1. Quantize everything; check the budgets on held-out data. Done if they hold; BudgetError at once if one
   fails on a tower outside the search (FP16, or INT8 without ``auto``), whose figures nothing here changes.
2. Sensitivity, on calibration data: for each node (or transformer layer, when a tower has many nodes)
   quantize all *but* that unit and record how much the tower's output cosine recovers.
3. Rank units by recovery (most sensitive first), then move them to FP32 one at a time (later a few at
   a time, then backing off to the shortest prefix that holds) - only for towers whose budgets still
   fail (all towers for a task budget) - re-checking the budgets on held-out data after each step.
4. If a tower would keep more than ``max_fp32_fraction`` of its weights in FP32, or nothing left helps,
   raise BudgetError with the best figure reached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..._lazy import require
from ...errors import BudgetError
from .config import parse_budget
from .evaluate import TowerEval
from .graph import groups, restore_fp32
from .ort_int8 import Int8Quantizer

Evaluator = Callable[[dict[str, list[str]]], dict[str, Any]]  # excludes per tower -> {"rows", ...}


@dataclass
class SearchUnit:
    """One tower taking part in the search."""

    name: str
    quantizer: Int8Quantizer
    teval: TowerEval
    granularity: str = "auto"
    groups: dict[str, list[str]] = field(init=False)   # sensitivity unit -> node names
    costs: dict[str, int] = field(init=False)          # sensitivity unit -> weight elements

    def __post_init__(self) -> None:
        cost = {c.name: c.cost for c in self.quantizer.candidates}
        self.groups = groups(self.quantizer.candidates, self.granularity)
        self.costs = {g: sum(cost[n] for n in names) for g, names in self.groups.items()}

    @property
    def total_cost(self) -> int:
        return sum(self.costs.values()) or 1


def sensitivity(unit: SearchUnit, workdir: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Cosine recovered on calibration data when each group alone stays FP32 (all else INT8).

    Variants are made by graph surgery on the fully quantized model (``restore_fp32``), which gives
    the same numerics as re-quantizing with that group excluded, at a fraction of the cost.
    """
    onnx = require("onnx")
    tmp = workdir / f"{unit.name}.sensitivity.onnx"
    base_path = unit.quantizer.quantize([], workdir / f"{unit.name}.sensitivity-base.onnx")
    base = unit.teval.calib_cosine(base_path)
    qmodel = onnx.load(str(base_path))
    log(f"sensitivity of tower {unit.name!r}: {len(unit.groups)} groups (base cosine {base:.5f})")
    out = []
    t0 = time.perf_counter()
    for g, names in unit.groups.items():
        onnx.save(restore_fp32(qmodel, unit.quantizer.model, names), str(tmp))
        cos = unit.teval.calib_cosine(tmp)
        out.append({"tower": unit.name, "group": g, "nodes": names, "gain": cos - base, "cost": unit.costs[g]})
    tmp.unlink(missing_ok=True)
    base_path.unlink(missing_ok=True)
    log(f"sensitivity of tower {unit.name!r} took {time.perf_counter() - t0:.0f}s")
    return out


def _failing(rows: list[dict[str, Any]], units: dict[str, SearchUnit]) -> set[str]:
    needy: set[str] = set()
    for r in rows:
        if r["holds"]:
            continue
        if r["scope"] == "task":
            needy |= set(units)
        elif r["scope"] in units:
            needy.add(r["scope"])
    return needy


def _score(rows: list[dict[str, Any]]) -> float:
    """Sum of budget shortfalls (0 when all hold); used to report the best attempt."""
    return sum(-parse_budget(r["budget"]).slack(r["figure"]) for r in rows if not r["holds"])


def search(units: dict[str, SearchUnit], evaluate: Evaluator, max_fp32_fraction: float, workdir: Path,
           log: Callable[[str], None], budget_text: str) -> dict[str, Any]:
    """Run the search; returns {"excludes", "result", "trace", "sensitivity"} or raises BudgetError."""
    excludes: dict[str, list[str]] = {n: [] for n in units}
    result = evaluate(excludes)
    trace = [_trace_row(excludes, result, units)]
    if all(r["holds"] for r in result["rows"]):
        return {"excludes": excludes, "result": result, "trace": trace, "sensitivity": {}}
    # a tower outside the search (FP16, or INT8 without 'auto') has fixed figures: nothing here can fix it
    stuck = sorted({r["scope"] for r in result["rows"] if not r["holds"] and r["scope"] not in units
                    and r["scope"] != "task"})
    if stuck:
        err = BudgetError(f"accuracy budget {budget_text} fails on tower(s) {', '.join(stuck)}, which the "
                          "mixed-precision search does not cover",
                          hint="keep them in FP32 (--tower-precision NAME=fp32), quantize them with --method auto, "
                               "or relax the budget")
        err.towers = stuck  # type: ignore[attr-defined]
        raise err
    needy = _failing(result["rows"], units)
    ranking: list[dict[str, Any]] = []
    sens_report: dict[str, list] = {}
    for name in sorted(needy):
        s = sensitivity(units[name], workdir, log)
        sens_report[name] = [{"group": r["group"], "gain": round(r["gain"], 6), "nodes": len(r["nodes"])}
                             for r in sorted(s, key=lambda r: -r["gain"])]
        ranking.extend(r for r in s if r["gain"] > 0)
    ranking.sort(key=lambda r: -r["gain"])  # most sensitive first
    used_cost = {n: 0 for n in units}
    best = (result, dict(excludes))
    steps = 0
    while True:
        needy = _failing(result["rows"], units)
        step = 1 if steps < 4 else min(8, 2 ** ((steps - 2) // 2))
        picked = []
        for r in ranking:
            if len(picked) >= step:
                break
            if r.get("used") or r["tower"] not in needy:
                continue
            if (used_cost[r["tower"]] + r["cost"]) / units[r["tower"]].total_cost > max_fp32_fraction:
                r["used"] = "over cap"
                continue
            picked.append(r)
        if not picked:
            best_result, best_ex = best
            figs = "; ".join(f"{r['budget']} on {r['scope']}: {r['figure']:.4g}" for r in best_result["rows"])
            kept = sum(len(v) for v in best_ex.values())
            err = BudgetError(f"accuracy budget {budget_text} is unreachable: best reached {figs} with {kept} node(s) "
                              f"in FP32 (cap: {max_fp32_fraction:.0%} of each tower's weights)",
                              hint="relax the budget, raise --max-fp32-fraction, add calibration data, "
                                   "or use --precision fp16")
            err.towers = sorted(needy)  # type: ignore[attr-defined]  # which towers could not meet it
            raise err
        for r in picked:
            r["used"] = True
            used_cost[r["tower"]] += r["cost"]
            excludes[r["tower"]] = excludes[r["tower"]] + r["nodes"]
        steps += 1
        result = evaluate(excludes)
        trace.append(_trace_row(excludes, result, units))
        log("mixed precision: " + ", ".join(f"{n} {len(v)} FP32" for n, v in excludes.items()) + " -> " +
            "; ".join(f"{r['budget']}@{r['scope']}={r['figure']:.5g}{'' if r['holds'] else ' (fails)'}"
                      for r in result["rows"]))
        if _score(result["rows"]) < _score(best[0]["rows"]):
            best = (result, {k: list(v) for k, v in excludes.items()})
        if not _failing(result["rows"], units):
            shorter = None
            for k in range(1, len(picked)):  # a multi-node step may overshoot: try its shorter prefixes
                trial = {n: [x for x in v if not any(x in r["nodes"] for r in picked[k:])] for n, v in excludes.items()}
                res = evaluate(trial)
                trace.append(_trace_row(trial, res, units))
                if not _failing(res["rows"], units):
                    shorter = (trial, res)
                    break
            if shorter is not None:
                excludes, result = shorter
            elif len(picked) > 1:
                result = evaluate(excludes)  # the evaluator records figures: redo the chosen set last
                trace.append(_trace_row(excludes, result, units))
            return {"excludes": excludes, "result": result, "trace": trace, "sensitivity": sens_report}


def _trace_row(excludes: dict[str, list[str]], result: dict[str, Any], units: dict[str, SearchUnit]) -> dict[str, Any]:
    return {"fp32_nodes": {n: len(v) for n, v in excludes.items()},
            "budgets": [{k: r[k] for k in ("budget", "scope", "figure", "holds")} for r in result["rows"]]}

