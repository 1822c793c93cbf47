"""The bench step: latency and task accuracy of the step's input model against the recipe's source model.

Its output directory holds the reports (``bench.json`` / ``.md`` / ``.html`` / ``.xml``) and a manifest
whose ``metrics`` carry the headline figures; gates that fail make the run fail (exit 1) after the reports
are written. The step after a bench step gets the bench step's *input* model (a report is not a model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field

from ..artifacts import Manifest, package_versions
from .base import MODEL_FORMATS, Pass, PassConfig, RunContext, model_format

REPORT_FILES = {"json": "bench.json", "markdown": "bench.md", "html": "bench.html", "junit": "bench.xml"}
NOISY_WARNINGS = ("noisy machine", "the machine was busy")   # the harness's warnings that timings are unreliable


class BenchStepConfig(PassConfig):
    """``mmdk bench`` options as a recipe step (same names as the CLI flags, with ``_``)."""

    target: str = "cpu"
    backend: str = "auto"
    batch: Optional[tuple[int, ...]] = None
    seq: Optional[tuple[int, ...]] = None
    towers: tuple[str, ...] = ()
    data: Optional[str] = None                 # JSONL manifest (a recipe data name) for task accuracy
    data_limit: Optional[int] = Field(None, ge=1)
    templates: Optional[tuple[str, ...]] = None
    processor: Optional[str] = None
    threads: Optional[int] = Field(None, ge=1)
    warmup_runs: int = Field(5, ge=0)
    min_runs: int = Field(20, ge=1)
    min_time_s: float = Field(1.0, ge=0)
    min_rounds: int = Field(10, ge=1)
    max_time_s: float = Field(60.0, gt=0)
    clock: Literal["wall", "cpu"] = "wall"
    processes: Optional[int] = Field(None, ge=1)   # worker processes (default: 3 with clock cpu, else 1)
    precision: Optional[float] = Field(None, gt=0, lt=1)   # adaptive length: target +- of the speedup intervals
    max_latency_regression: Optional[str] = None   # e.g. "10%": fail if slower than the reference by more
    max_accuracy_drop: Optional[float] = Field(None, ge=0)
    reference: bool = True                     # compare against the recipe's source model


class BenchPass(Pass):
    name: ClassVar[str] = "bench"
    config_cls: ClassVar[type[PassConfig]] = BenchStepConfig
    accepts: ClassVar[tuple[str, ...]] = MODEL_FORMATS[:4]
    produces: ClassVar[str] = "report"
    uses_reference: ClassVar[bool] = True
    data_fields: ClassVar[tuple[str, ...]] = ("data", "processor")

    @staticmethod
    def cacheable(manifest: Manifest) -> bool:
        """Timings taken on a noisy or busy machine are not kept: the next run measures again."""
        return not any(w.startswith(NOISY_WARNINGS) for w in manifest.metrics.get("warnings") or [])

    @staticmethod
    def machine_identity(config: Any) -> dict[str, Any]:
        from ..runtime import env

        model, flags = env.cpu_info()
        return {"cpu": model, "isa": sorted(f for f in flags if f.startswith(("avx", "amx", "neon", "sve"))),
                "cores": env.available_cores(), "target": config.target}

    def run(self, model: Any, config: BenchStepConfig, ctx: RunContext, workdir: Path) -> Manifest:
        from ..runtime.harness import parse_fraction, run_bench
        from ..runtime.report import write_reports
        from ..runtime.schema import TimingConfig

        # the step's timing fields are TimingConfig's, by name (one source for both)
        timing = TimingConfig(**{k: v for k, v in config.model_dump().items() if k in TimingConfig.model_fields})
        reference = ctx.reference if config.reference else None
        label = model_format(model)   # "onnx" | "torch" | "trt"
        ref_label = "source"
        report = run_bench([(label, model)], (ref_label, reference) if reference is not None else None,
                           target=config.target, backend=config.backend, batches=config.batch, seqs=config.seq,
                           towers=config.towers, data=config.data, data_limit=config.data_limit,
                           templates=config.templates, processor=config.processor, threads=config.threads,
                           timing=timing,
                           max_latency_regression=parse_fraction(config.max_latency_regression,
                                                                 "max-latency-regression"),
                           max_accuracy_drop=config.max_accuracy_drop, quiet=ctx.quiet, log=ctx.progress)
        write_reports(report, **{fmt: workdir / name for fmt, name in REPORT_FILES.items()})
        return Manifest(pass_name=self.name, config=config.model_dump(mode="json"),
                        source={"path": str(model.source), "format": model.format}, versions=package_versions(),
                        metrics=bench_metrics(report, label, ref_label))


def bench_metrics(report: Any, label: str, ref_label: str) -> dict[str, Any]:
    """The figures a run's waterfall shows: speedup vs the source, task metrics, gates."""
    from ..runtime.accuracy import headline_metric

    sp = report.speedups.get(label)
    acc = report.accuracy.primary if report.accuracy is not None else {}
    head = headline_metric(acc.get(label, {})) if acc.get(label) else None
    ref_head = headline_metric(acc.get(ref_label, {})) if acc.get(ref_label) else None
    return {
        "speedup": sp.ratio if sp else None,
        "speedup_ci": [sp.ci_low, sp.ci_high] if sp else None,
        "clock": sp.clock if sp else None,
        "confidence": sp.confidence if sp else None,
        "task_metric": head[0] if head else None,
        "task_value": head[1] if head else None,
        "reference_task_value": ref_head[1] if ref_head else None,
        "accuracy": acc,
        "passed": report.passed,
        "failed_gates": [f"{g.name}: {g.message}" for g in report.failed_gates()],
        "warnings": list(report.warnings),
        "reports": dict(REPORT_FILES),
    }
