"""Regression gates: inside one bench run (artifact vs reference) and between two reports (``mmdk compare``).

Thresholds: latency as a relative fraction (``0.10`` = 10% slower allowed), accuracy as a drop in
percentage points (``0.5`` = top-1 may fall from 91.0 to 90.5). A gate without a threshold is still
reported (``passed=None``) so the JUnit file always lists what could be enforced.

Accuracy gates know their sample count: a drop beyond the threshold that amounts to fewer than
``MIN_SIGNIFICANT_FLIPS`` samples net (4 of 16 validation images is 25 points) is reported "within noise"
and does not fail - not even when no sample changed the other way could McNemar's one-sided exact test call
it significant at 5% (0.5**4 = 0.0625). On a real validation set (hundreds of samples) the threshold decides.

Latency gates decide on noise-robust figures (asv / criterion.rs): speedup ratios against a reference
measured in the same run, with their confidence intervals. A latency regression fails only when it is
beyond the threshold *and* outside the noise (its interval lies wholly on the slower side); beyond the
threshold but inside the noise is reported as "within noise". Between two reports the change of the
ratios gets an interval from both reports' intervals. Absolute times are shown, and gated only when asked
for (``gate_absolute``), with the threshold alone.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .accuracy import gated_metrics
from .schema import BenchReport, Gate, LatencyResult, Speedup

EPS = 1e-9
MIN_SIGNIFICANT_FLIPS = 5  # smallest k with 0.5**k < 0.05: McNemar's one-sided exact test, all k flips one way
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
        sp = r.speedup
        change = 1.0 / sp.ratio - 1.0  # relative latency change vs the baseline (paired rounds)
        low, high = 1.0 / sp.ci_high - 1.0, 1.0 / sp.ci_low - 1.0
        verdict = latency_verdict(change, low, max_latency_regression)
        passed = None if max_latency_regression is None else verdict != "regression"
        direction = "faster" if change < 0 else "slower"
        gates.append(Gate(
            name=f"latency {r.artifact} vs {base}: {_config_name(r)}", kind="latency", artifact=r.artifact,
            subject=_config_name(r), threshold=max_latency_regression, value=change, baseline=0.0, passed=passed,
            ci_low=low, ci_high=high, verdict=verdict,
            message=f"{abs(change) * 100:.1f}% {direction} than {base} [{low * 100:+.1f}%, {high * 100:+.1f}%]: "
                    f"{verdict} (speedup {sp.ratio:.3f}x, {sp.confidence * 100:.0f}% CI [{sp.ci_low:.3f}, "
                    f"{sp.ci_high:.3f}])"))
    if report.accuracy is not None and base in report.accuracy.primary:
        ref = report.accuracy.primary[base]
        for label, figures in report.accuracy.primary.items():
            if label == base:
                continue
            for metric in gated_metrics(figures):
                if metric not in ref:
                    continue
                drop = ref[metric] - figures[metric]
                n = metric_samples(report.accuracy, metric)
                verdict = accuracy_verdict(drop, max_accuracy_drop, n)
                passed = None if max_accuracy_drop is None else verdict != "regression"
                gates.append(Gate(
                    name=f"accuracy {label} vs {base}: {metric}", kind="accuracy", artifact=label, subject=metric,
                    threshold=max_accuracy_drop, value=figures[metric], baseline=ref[metric], passed=passed,
                    verdict=verdict,
                    message=f"{metric} {figures[metric]:.2f} vs {ref[metric]:.2f} ({figures[metric] - ref[metric] + 0.0:+.2f} points)"
                            + _noise_note(verdict, drop, n)))
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


def metric_samples(acc: Any, metric: str) -> Optional[int]:
    """How many samples a headline metric is a percentage of (None: unknown)."""
    media = acc.n_media or acc.n_images
    if metric.startswith("zero_shot"):
        return media or None
    if "_R@" in metric:
        counts = [c for c in (media, acc.n_captions) if c]
        return min(counts) if counts else None
    return acc.n_samples or None


def accuracy_verdict(drop: float, threshold: Optional[float], n: Optional[int]) -> str:
    """``drop`` in points of a metric over ``n`` samples: regression = beyond the threshold and at least
    MIN_SIGNIFICANT_FLIPS samples net; within noise = beyond it by fewer; info = no threshold."""
    if threshold is None:
        return "info"
    if drop <= threshold + EPS:
        return "pass"
    if n and drop * n / 100.0 < MIN_SIGNIFICANT_FLIPS - 1e-6:
        return "within noise"
    return "regression"


def _noise_note(verdict: str, drop: float, n: Optional[int]) -> str:
    if verdict != "within noise" or not n:
        return ""
    return (f": within noise ({drop * n / 100.0:.0f} of {n} samples net; fewer than {MIN_SIGNIFICANT_FLIPS} "
            "cannot be significant - evaluate on more samples to gate this drop)")


def latency_verdict(change: float, low: float, threshold: Optional[float]) -> str:
    """``change``: relative latency change (+0.2 = 20% slower) with its interval's low end ``low``.
    regression = beyond the threshold and outside the noise; within noise = beyond it, but the interval
    reaches no change or faster; info = no threshold."""
    if threshold is None:
        return "info"
    if change > threshold + EPS:
        return "regression" if low > EPS else "within noise"
    return "faster" if change < -EPS else "pass"


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
    gated: bool = Field(True, description="False: shown only (absolute times unless gate_absolute)")
    verdict: str = Field("", description="pass | regression | within noise | faster | info")
    base_ci: Optional[tuple[float, float]] = None
    new_ci: Optional[tuple[float, float]] = None
    change_ci: Optional[tuple[float, float]] = Field(None, description="latency: the change's interval (both "
                                                                       "reports' intervals combined)")


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
                            subject=r.subject, threshold=r.threshold if r.gated else None, value=r.new, baseline=r.base,
                            passed=None if r.threshold is None or not r.gated else not r.regression,
                            ci_low=r.change_ci[0] if r.change_ci else None,
                            ci_high=r.change_ci[1] if r.change_ci else None, verdict=r.verdict or None,
                            message=_row_message(r)))
        return out


def _row_message(r: CompareRow) -> str:
    if r.change is None:
        return ""
    if r.kind == "latency":
        ci = f" [{r.change_ci[0] * 100:+.1f}%, {r.change_ci[1] * 100:+.1f}%]" if r.change_ci else ""
        return f"{r.change * 100:+.1f}% latency{ci} (base {r.base:.4g}, new {r.new:.4g}): {r.verdict or 'info'}"
    return f"{r.change:+.2f} points (base {r.base:.2f}, new {r.new:.2f})" + \
        (": within noise (too few samples net to be significant)" if r.verdict == "within noise" else "")


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


def _log_half_width(low: float, high: float) -> float:
    return (math.log(high) - math.log(low)) / 2.0 if low > 0 and high > 0 else 0.0


def noise_floors(report: BenchReport) -> dict[str, float]:
    """Per artifact: the pooled log half-width of its configs' speedup intervals (root mean square). The
    configs of one run were timed in the same processes, so they share the between-process noise; a single
    config's interval from a few processes can come out too narrow by chance, and the pooled width is a
    floor under it."""
    widths: dict[str, list[float]] = {}
    for r in report.latency:
        if r.speedup is not None:
            widths.setdefault(r.artifact, []).append(_log_half_width(r.speedup.ci_low, r.speedup.ci_high))
    return {a: math.sqrt(sum(w * w for w in ws) / len(ws)) for a, ws in widths.items()}


def ratio_change(base: Speedup, new: Speedup, base_floor: float = 0.0,
                 new_floor: float = 0.0) -> tuple[float, tuple[float, float]]:
    """Relative latency change of an artifact vs its own reference between two reports (+0.2: 20% slower
    relative to the reference than before) and its interval: on the log scale the two intervals' half-widths
    (each at least its report's noise floor) add in quadrature (independent runs)."""
    d = math.log(base.ratio) - math.log(new.ratio)
    h = math.hypot(max(base_floor, _log_half_width(base.ci_low, base.ci_high)),
                   max(new_floor, _log_half_width(new.ci_low, new.ci_high)))
    return math.expm1(d), (math.expm1(d - h), math.expm1(d + h))


def compare_reports(base: BenchReport, new: BenchReport, max_latency_regression: Optional[float] = 0.10,
                    max_accuracy_drop: Optional[float] = 0.5, latency_metric: LatencyMetric = "speedup",
                    base_name: str = "base", new_name: str = "new", gate_absolute: bool = False) -> CompareResult:
    """Latency rows per artifact/tower/batch/seq: the speedup vs each report's own reference (gated, noise-aware)
    and the absolute p50 (shown; gated with the threshold alone when ``gate_absolute`` or ``latency_metric="p50"``);
    then the headline accuracy metrics."""
    warnings: list[str] = []
    gate_abs = gate_absolute or latency_metric == "p50"
    if base.environment.cpu_model != new.environment.cpu_model or \
            [g.name for g in base.environment.gpus] != [g.name for g in new.environment.gpus]:
        warnings.append(f"different machines ({base.environment.short()} vs {new.environment.short()}); "
                        "absolute latencies are not comparable")
    labels = _label_map(base, new, warnings)
    rows: list[CompareRow] = []
    base_lat = {(r.artifact, r.tower, r.batch, r.seq): r for r in base.latency}
    ratio_rows = 0
    floor_b, floor_n = noise_floors(base), noise_floors(new)
    for r in new.latency:
        b = base_lat.get((labels.get(r.artifact, "\0"), r.tower, r.batch, r.seq))
        if b is None:
            continue
        subject = _config_name(r)
        if b.speedup is not None and r.speedup is not None:
            change, ci = ratio_change(b.speedup, r.speedup, floor_b.get(b.artifact, 0.0), floor_n.get(r.artifact, 0.0))
            verdict = latency_verdict(change, ci[0], max_latency_regression)
            rows.append(CompareRow(kind="latency", artifact=r.artifact, subject=f"{subject} speedup vs {r.speedup.baseline}",
                                   base=b.speedup.ratio, new=r.speedup.ratio, change=change,
                                   threshold=max_latency_regression, regression=verdict == "regression",
                                   verdict=verdict, base_ci=(b.speedup.ci_low, b.speedup.ci_high),
                                   new_ci=(r.speedup.ci_low, r.speedup.ci_high), change_ci=ci))
            ratio_rows += 1
        bv, nv = b.stats.p50_ms, r.stats.p50_ms
        change = nv / bv - 1.0 if bv > 0 else 0.0
        reg = gate_abs and max_latency_regression is not None and change > max_latency_regression + EPS
        verdict = ("regression" if reg else "pass") if gate_abs and max_latency_regression is not None else "info"
        rows.append(CompareRow(kind="latency", artifact=r.artifact, subject=f"{subject} p50 ms", base=bv, new=nv,
                               change=change, threshold=max_latency_regression, regression=reg, gated=gate_abs,
                               verdict=verdict))
    if rows and not ratio_rows and not gate_abs:
        warnings.append("the reports carry no speedups vs a reference measured in the same run, so no latency is "
                        "gated (absolute times drift between runs): bench with --reference, or pass --gate-absolute")
    if base.accuracy is not None and new.accuracy is not None:
        for label, figures in new.accuracy.primary.items():
            bfig = base.accuracy.primary.get(labels.get(label, "\0"))
            if bfig is None:
                continue
            for metric in gated_metrics(figures):
                if metric not in bfig:
                    continue
                drop = bfig[metric] - figures[metric]
                ns = [c for c in (metric_samples(base.accuracy, metric), metric_samples(new.accuracy, metric)) if c]
                verdict = accuracy_verdict(drop, max_accuracy_drop, min(ns) if ns else None)
                rows.append(CompareRow(kind="accuracy", artifact=label, subject=metric, base=bfig[metric],
                                       new=figures[metric], change=-drop, threshold=max_accuracy_drop,
                                       regression=verdict == "regression", verdict=verdict))
    if not rows:
        warnings.append("the reports share no artifact/tower/batch configuration; nothing was compared")
    return CompareResult(base=base_name, new=new_name, latency_metric="p50" if gate_abs else "speedup", rows=rows,
                         warnings=warnings)
