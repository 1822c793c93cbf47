"""The bench step: latency and task accuracy of the step's input model against the recipe's source model.

Its output directory holds the reports (``bench.json`` / ``.md`` / ``.html`` / ``.xml``) and a manifest
whose ``metrics`` carry the headline figures; gates that fail make the run fail (exit 1) after the reports
are written. The step after a bench step gets the bench step's *input* model (a report is not a model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

from pydantic import Field

from ..artifacts import Manifest, package_versions
from ..runtime.schema import TimingConfig
from .base import MODEL_FORMATS, Pass, PassConfig, RunContext, model_format

REPORT_FILES = {"json": "bench.json", "markdown": "bench.md", "html": "bench.html", "junit": "bench.xml"}
NOISY_WARNINGS = ("noisy machine", "the machine was busy")   # the harness's warnings that timings are unreliable


class BenchStepConfig(PassConfig, TimingConfig):
    """``mmdk bench`` options as a recipe step (same names as the CLI flags, with ``_``); the timing fields are
    ``TimingConfig``'s (inherited: one source for the CLI, the step and a remote bench's command line).

    The verb is this step too: ``artifacts`` then lists every model it measures (``LABEL=PATH`` or a path, as
    given; their files are hashed into the step's cache key) and ``reference_model`` its reference; in a recipe
    both stay empty: the step measures its input model (labelled ``label``, default its format) against the
    recipe's source model."""

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
    max_latency_regression: Optional[str] = None   # e.g. "10%": fail if slower than the reference by more
    max_accuracy_drop: Optional[float] = Field(None, ge=0)
    reference: bool = True                     # compare against the recipe's source model
    artifacts: tuple[str, ...] = ()            # the verb: every model measured (LABEL=PATH or PATH)
    reference_model: Optional[str] = None      # the verb: the reference (LABEL=PATH or PATH)
    label: Optional[str] = None                # the step input's label (default: its format)
    reference_label: str = "source"            # the label of the run's reference model (ctx.reference)


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

    @staticmethod
    def input_files(config: Any) -> dict[str, Path]:
        """The models the verb names (``artifacts``, ``reference_model``): their files are part of the key."""
        from ..runtime.bench_models import spec_path

        named = {f"artifacts.{i}": spec_path(a) for i, a in enumerate(config.artifacts)}
        named["reference_model"] = spec_path(config.reference_model) if config.reference_model else None
        return {k: p for k, p in named.items() if p is not None}

    def run(self, model: Any, config: BenchStepConfig, ctx: RunContext, workdir: Path) -> Manifest:
        from ..runtime.harness import parse_fraction, run_bench
        from ..runtime.report import write_reports

        timing = TimingConfig(**{k: v for k, v in config.model_dump().items() if k in TimingConfig.model_fields})
        artifacts: list[Any] = list(config.artifacts) or [(config.label or model_format(model), model)]
        reference = config.reference_model or ((config.reference_label, ctx.reference) if config.reference and
                                               ctx.reference is not None else None)
        report = run_bench(artifacts, reference, target=config.target, backend=config.backend, batches=config.batch,
                           seqs=config.seq, towers=config.towers, data=config.data, data_limit=config.data_limit,
                           templates=config.templates, processor=config.processor, threads=config.threads,
                           timing=timing,
                           max_latency_regression=parse_fraction(config.max_latency_regression,
                                                                 "max-latency-regression"),
                           max_accuracy_drop=config.max_accuracy_drop, quiet=ctx.quiet,
                           log=None if ctx.quiet else ctx.progress, load_kwargs=ctx.load_options)
        write_reports(report, **{fmt: workdir / name for fmt, name in REPORT_FILES.items()})
        return Manifest(pass_name=self.name, config=config.model_dump(mode="json"),
                        source={"path": str(model.source), "format": model.format}, versions=package_versions(),
                        metrics=bench_metrics(report))


def bench_metrics(report: Any) -> dict[str, Any]:
    """The figures a run's waterfall shows (the first measured artifact's): speedup vs the reference, task
    metrics, gates."""
    from ..runtime.accuracy import headline_metric

    label = next((a.label for a in report.artifacts if a.role == "artifact"), None)
    ref_label = report.reference
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
