"""Regression gates: inside one bench run (artifact vs reference) and between two reports (``mmdk compare``).

Thresholds: latency as a relative fraction (``0.10`` = 10% slower allowed), accuracy as a drop in
percentage points (``0.5`` = top-1 may fall from 91.0 to 90.5). A gate without a threshold is still
reported (``passed=None``) so the JUnit file always lists what could be enforced.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .accuracy import gated_metrics
from .schema import BenchReport, Gate, LatencyResult

EPS = 1e-9
LatencyMetric = Literal["p50", "speedup"]


def _config_name(r: LatencyResult) -> str:
    return f"{r.tower} b={r.batch}" + (f" s={r.seq}" if r.seq is not None else "")


def bench_gates(report: BenchReport, max_latency_regression: Optional[float],
                max_accuracy_drop: Optional[float]) -> list[Gate]:
    gates: list[Gate] = []
    base = report.baseline
    for r in report.latency:
        if r.speedup is None:
            continue
        change = 1.0 / r.speedup.ratio - 1.0  # relative latency change vs the baseline (paired rounds)
        passed = None if max_latency_regression is None else change <= max_latency_regression + EPS
        verdict = "faster" if change < 0 else "slower"
        gates.append(Gate(
            name=f"latency {r.artifact} vs {base}: {_config_name(r)}", kind="latency", artifact=r.artifact,
            subject=_config_name(r), threshold=max_latency_regression, value=change, baseline=0.0, passed=passed,
            message=f"{abs(change) * 100:.1f}% {verdict} than {base} (speedup {r.speedup.ratio:.3f}x, "
                    f"{r.speedup.confidence * 100:.0f}% CI [{r.speedup.ci_low:.3f}, {r.speedup.ci_high:.3f}])"))
    if report.accuracy is not None and base in report.accuracy.primary:
        ref = report.accuracy.primary[base]
        for label, figures in report.accuracy.primary.items():
            if label == base:
                continue
            for metric in gated_metrics(figures):
                if metric not in ref:
                    continue
                drop = ref[metric] - figures[metric]
                passed = None if max_accuracy_drop is None else drop <= max_accuracy_drop + EPS
                gates.append(Gate(
                    name=f"accuracy {label} vs {base}: {metric}", kind="accuracy", artifact=label, subject=metric,
                    threshold=max_accuracy_drop, value=figures[metric], baseline=ref[metric], passed=passed,
                    message=f"{metric} {figures[metric]:.2f} vs {ref[metric]:.2f} ({figures[metric] - ref[metric] + 0.0:+.2f} points)"))
    budget = report.target.memory_budget_mb
    if budget:
        for a in report.artifacts:
            peaks = [r.peak_rss_bytes for r in report.latency if r.artifact == a.label and r.peak_rss_bytes]
            if peaks:
                mb = max(peaks) / 2**20
                gates.append(Gate(name=f"memory {a.label}: peak RSS", kind="memory", artifact=a.label,
                                  subject="peak_rss_mb", threshold=float(budget), value=mb, passed=mb <= budget,
                                  message=f"peak RSS {mb:.0f} MB (budget {budget} MB on {report.target.name})"))
    return gates


# ---- compare two reports ----------------------------------------------------------------------------------
class CompareRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["latency", "accuracy"]
    artifact: str
    subject: str
    base: Optional[float] = None
    new: Optional[float] = None
    change: Optional[float] = Field(None, description="latency: relative (+0.2 = 20% slower); accuracy: points")
    threshold: Optional[float] = None
    regression: bool = False


class CompareResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str
    new: str
    latency_metric: str
    rows: list[CompareRow]
    warnings: list[str] = Field(default_factory=list)

    @property
    def regressions(self) -> list[CompareRow]:
        return [r for r in self.rows if r.regression]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def gates(self) -> list[Gate]:
        out = []
        for r in self.rows:
            if r.base is None or r.new is None:
                continue
            out.append(Gate(name=f"{r.kind} {r.artifact}: {r.subject}", kind=r.kind, artifact=r.artifact,
                            subject=r.subject, threshold=r.threshold, value=r.new, baseline=r.base,
                            passed=None if r.threshold is None else not r.regression,
                            message=_row_message(r)))
        return out


def _row_message(r: CompareRow) -> str:
    if r.change is None:
        return ""
    if r.kind == "latency":
        return f"{r.change * 100:+.1f}% latency (base {r.base:.4g}, new {r.new:.4g})"
    return f"{r.change:+.2f} points (base {r.base:.2f}, new {r.new:.2f})"


def _label_map(base: BenchReport, new: BenchReport, warnings: list[str]) -> dict[str, str]:
    """new label -> base label: by name, or by position when no names match."""
    b = [a.label for a in base.artifacts]
    n = [a.label for a in new.artifacts]
    common = {x: x for x in n if x in b}
    if common:
        return common
    if len(b) == len(n):
        warnings.append("no artifact labels match between the reports; matched them by position")
        return dict(zip(n, b))
    return {}


def compare_reports(base: BenchReport, new: BenchReport, max_latency_regression: Optional[float] = 0.10,
                    max_accuracy_drop: Optional[float] = 0.5, latency_metric: LatencyMetric = "p50",
                    base_name: str = "base", new_name: str = "new") -> CompareResult:
    warnings: list[str] = []
    if base.environment.cpu_model != new.environment.cpu_model or \
            [g.name for g in base.environment.gpus] != [g.name for g in new.environment.gpus]:
        warnings.append(f"different machines ({base.environment.short()} vs {new.environment.short()}); "
                        "absolute latencies are not comparable")
    labels = _label_map(base, new, warnings)
    rows: list[CompareRow] = []
    base_lat = {(r.artifact, r.tower, r.batch, r.seq): r for r in base.latency}
    for r in new.latency:
        key = (labels.get(r.artifact, "\0"), r.tower, r.batch, r.seq)
        b = base_lat.get(key)
        subject = _config_name(r)
        if b is None:
            continue
        if latency_metric == "speedup":
            if b.speedup is None or r.speedup is None:
                continue
            bv, nv = b.speedup.ratio, r.speedup.ratio
            change = bv / nv - 1.0  # >0: relatively slower than its baseline than before
            subject += " speedup"
        else:
            bv, nv = b.stats.p50_ms, r.stats.p50_ms
            change = nv / bv - 1.0 if bv > 0 else 0.0
            subject += " p50 ms"
        reg = max_latency_regression is not None and change > max_latency_regression + EPS
        rows.append(CompareRow(kind="latency", artifact=r.artifact, subject=subject, base=bv, new=nv, change=change,
                               threshold=max_latency_regression, regression=reg))
    if base.accuracy is not None and new.accuracy is not None:
        for label, figures in new.accuracy.primary.items():
            bfig = base.accuracy.primary.get(labels.get(label, "\0"))
            if bfig is None:
                continue
            for metric in gated_metrics(figures):
                if metric not in bfig:
                    continue
                drop = bfig[metric] - figures[metric]
                reg = max_accuracy_drop is not None and drop > max_accuracy_drop + EPS
                rows.append(CompareRow(kind="accuracy", artifact=label, subject=metric, base=bfig[metric],
                                       new=figures[metric], change=-drop, threshold=max_accuracy_drop, regression=reg))
    if not rows:
        warnings.append("the reports share no artifact/tower/batch configuration; nothing was compared")
    return CompareResult(base=base_name, new=new_name, latency_metric=latency_metric, rows=rows, warnings=warnings)
