"""The library API: what scripts call and what every CLI command is one call of.

Heavy dependencies are imported inside the functions, so ``import mmdeploy_kit.api`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .artifacts import Manifest, atomic_output_dir
from .errors import UserInputError
from .model.tower import LoadedModel

ModelLike = Any  # LoadedModel | str | Path


def load(source: ModelLike, weights: Optional[str | Path] = None, io: Optional[str | Path | dict] = None,
         trust_remote_code: bool = False) -> LoadedModel:
    """Load a checkpoint (HF dir, ``file.py:factory``, TorchScript, ``.pt2``, ``.onnx``, mmdk output dir)."""
    if isinstance(source, LoadedModel):
        return source
    from .model.loaders import load as _load

    return _load(source, weights=weights, io=io, trust_remote_code=trust_remote_code)


def inspect(source: ModelLike, **load_kwargs: Any) -> dict[str, Any]:
    """Towers, inputs/outputs with modality, dtype and symbolic dims, parameter count, size, dtype."""
    return load(source, **load_kwargs).describe()


def export(source: ModelLike, out: str | Path, target: str = "onnx", towers: Sequence[str] = (),
           opset: int = 17, exporter: str = "auto", min_cosine: float = 0.9999, overwrite: bool = False,
           seed: int = 0, progress: Optional[Callable[[str], None]] = None, **load_kwargs: Any) -> Manifest:
    """Export towers to ``out/<tower>.onnx`` (+ ``mmdk_manifest.json``), each verified against torch."""
    from .passes.base import RunContext

    if target != "onnx":
        raise UserInputError(f"export target {target!r} is not available yet", hint="use --target onnx")
    from .passes.export.onnx import OnnxExportConfig, OnnxExportPass

    model = load(source, **load_kwargs)
    config = OnnxExportConfig(opset=opset, exporter=exporter, towers=tuple(towers), min_cosine=min_cosine)
    model.select(config.towers)  # validate tower names before any work
    ctx = RunContext(seed=seed, progress=progress)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        manifest = OnnxExportPass().run(model, config, ctx, tmp)
        manifest.write(tmp)
    return manifest


def quantize(source: ModelLike, out: str | Path, precision: str = "int8", *, method: Optional[str] = None,
             towers: Sequence[str] = (), tower_precision: Optional[dict[str, str]] = None,
             tower_method: Optional[dict[str, str]] = None, calib_data: Optional[str | Path] = None,
             processor: Optional[str | Path] = None, accuracy_budget: Sequence[str] | str = (),
             overwrite: bool = False, progress: Optional[Callable[[str], None]] = None,
             load_options: Optional[dict[str, Any]] = None, **options: Any) -> Manifest:
    """Quantize towers to ``out/<tower>.onnx`` (+ ``mmdk_manifest.json``); the others are copied as FP32.

    ``precision`` int8 | fp16 | fp32 applies to the selected ``towers`` (all by default);
    ``tower_precision`` / ``tower_method`` override it per tower (``{"vision": "int8", "text": "fp32"}``).
    ``calib_data``: JSONL manifest, ``.npz`` or folder of ``.npy`` (never random). ``accuracy_budget``:
    e.g. ``"cosine>=0.99"`` or ``["zero_shot_top1_drop<=1"]`` (keeps sensitive nodes FP32 until it holds).
    ``options`` are further ``QuantizeConfig`` fields: preset, calibration, per_channel, op_types,
    calib_samples, holdout_samples, min_cosine, max_fp32_fraction, sensitivity, backend, ...
    """
    from .passes.base import RunContext
    from .passes.quantize.config import QuantizeConfig
    from .passes.quantize.quantize_pass import QuantizePass

    budgets = (accuracy_budget,) if isinstance(accuracy_budget, str) else tuple(accuracy_budget)
    config = _options(QuantizeConfig, "quantize", precision=precision, method=method, towers=tuple(towers),
                      tower_precision=tuple((tower_precision or {}).items()),
                      tower_method=tuple((tower_method or {}).items()), accuracy_budget=budgets,
                      **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    model = load(source, **(load_options or {}))
    model.select(config.towers)  # validate tower names before any work
    ctx = RunContext(seed=config.seed, progress=progress, calibration=calib_data,
                     extras={"processor_dir": processor} if processor else {})
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        manifest = QuantizePass().run(model, config, ctx, tmp)
        manifest.write(tmp)
    return manifest


def _run_one(step: str, config: Any, source: ModelLike, out: str | Path, *, overwrite: bool = False,
             progress: Optional[Callable[[str], None]] = None, load_options: Optional[dict[str, Any]] = None,
             reference: Any = None, extras: Optional[dict[str, Any]] = None, quiet: bool = False) -> Manifest:
    """Run one registered pass (``step`` is its registry name) as a one-step recipe: load ``source``, check the
    config's towers, run the pass into a temp dir, publish ``out`` atomically, return the manifest.

    Every verb (``export``, ``quantize``, ``prune``, ``distill``, ...) goes through here, and so through the
    pipeline runner's cache and provenance."""
    from .pipeline.runner import run_single_step

    return run_single_step(step, config, source, out, overwrite=overwrite, progress=progress,
                           load_options=load_options or {}, reference=reference, extras=extras or {}, quiet=quiet)


def _options(config_cls: Any, what: str, **fields: Any) -> Any:
    """``config_cls(**fields)``, with a validation failure as a one-line UserInputError (MmdkErrors raised by
    the config's own validators, e.g. budget parsing, pass through)."""
    from .errors import MmdkError, validation_message

    try:
        return config_cls(**fields)
    except MmdkError:
        raise
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise UserInputError(f"invalid {what} option {validation_message(exc)}") from None


def synth_data(out: str | Path, n_train: int = 4000, n_val: int = 400, image_size: int = 32, seed: int = 0,
               overwrite: bool = False) -> Path:
    """Write the deterministic synthetic image-caption dataset (PNG + JSONL manifests, train/val)."""
    from .data.synth import synthesize_dataset

    return synthesize_dataset(out, n_train=n_train, n_val=n_val, image_size=image_size, seed=seed,
                              overwrite=overwrite)


DEMO_TARGET_TOP1 = 90.0  # issue 2: the demo checkpoint's zero-shot top-1 on the held-out split


def demo(out: str | Path = "mmdk_demo", variant: str = "tiny", force: bool = False, quiet: bool = False,
         progress: Optional[Callable[[str], None]] = None, data_dir: Optional[str | Path] = None,
         steps: Optional[int] = None, threads: Optional[int] = None) -> dict[str, Any]:
    """Train (or reuse) the demo checkpoint, export it to ONNX, bench it against torch, and return a summary.

    ``data_dir`` (train.jsonl / val.jsonl), ``steps`` and ``threads`` go to
    :func:`mmdeploy_kit.demo_checkpoint.train_demo_checkpoint`; ``threads`` also caps the bench.
    """
    from .demo_checkpoint import train_demo_checkpoint

    if progress:
        progress(f"demo checkpoint ({variant}): training or reusing the cached one")
    result = train_demo_checkpoint(variant=variant, force=force, quiet=quiet, data_dir=data_dir, steps=steps,
                                   threads=threads)
    out = Path(out)
    manifest = export(result.path, out / "onnx", overwrite=True, progress=progress)
    bench_summary = _demo_bench(result, out, quiet=quiet, progress=progress, threads=threads)
    return {
        "bench": bench_summary,
        "checkpoint": str(result.path),
        "reused": result.reused,
        "train_seconds": result.train_seconds,
        "zero_shot_top1": result.zero_shot_top1,
        "zero_shot_top5": result.zero_shot_top5,
        "target_top1": DEMO_TARGET_TOP1,
        "passed": result.zero_shot_top1 >= DEMO_TARGET_TOP1,
        "recall": result.recall,
        "data_dir": str(result.data_dir),
        "onnx_dir": str(out / "onnx"),
        "export": {a.tower: {"cosine_min": a.verification.get("cosine_min"),
                             "max_abs_error": a.verification.get("max_abs_error")} for a in manifest.artifacts},
    }


def _demo_bench(result: Any, out: Path, quiet: bool = False, progress: Optional[Callable[[str], None]] = None,
                threads: Optional[int] = None) -> dict[str, Any]:
    """Quick bench of the demo's ONNX export vs its torch checkpoint on the held-out split (batch 1 and 8)."""
    from .demo_checkpoint import DEFAULT_TEMPLATES

    reports = {"json": out / "reports" / "bench.json", "markdown": out / "reports" / "bench.md",
               "html": out / "reports" / "bench.html", "junit": out / "reports" / "bench.xml"}
    r = bench([f"onnx={out / 'onnx'}"], reference=f"torch={result.path}", data=Path(result.data_dir) / "val.jsonl",
              batch=[1, 8], templates=DEFAULT_TEMPLATES, quiet=quiet, progress=progress, threads=threads,
              timing={"warmup_runs": 3, "min_runs": 10, "min_time_s": 0.3, "min_rounds": 6, "max_time_s": 15.0},
              report=reports["json"], markdown=reports["markdown"], html=reports["html"], junit=reports["junit"])
    acc = r.accuracy.primary if r.accuracy is not None else {}
    sp = r.speedups.get("onnx")
    return {"torch_zero_shot_top1": acc.get("torch", {}).get("zero_shot_top1"),
            "onnx_zero_shot_top1": acc.get("onnx", {}).get("zero_shot_top1"),
            "speedup": sp.ratio if sp else None, "speedup_ci": [sp.ci_low, sp.ci_high] if sp else None,
            "confidence": sp.confidence if sp else None, "reports": {k: str(v) for k, v in reports.items()}}


def bench(artifacts: ModelLike | Sequence[ModelLike], reference: Optional[ModelLike] = None, *, target: str = "cpu",
          backend: str = "auto", batch: Optional[Sequence[int]] = None, seq: Optional[Sequence[int]] = None,
          towers: Sequence[str] = (), data: Optional[str | Path] = None, data_limit: Optional[int] = None,
          templates: Optional[Sequence[str]] = None, processor: Optional[str | Path] = None,
          threads: Optional[int] = None, timing: Optional[dict[str, Any] | Any] = None,
          report: Optional[str | Path] = None, markdown: Optional[str | Path] = None,
          html: Optional[str | Path] = None, junit: Optional[str | Path] = None,
          max_latency_regression: Optional[float | str] = None, max_accuracy_drop: Optional[float] = None,
          quiet: bool = False, progress: Optional[Callable[[str], None]] = None, **load_kwargs: Any) -> Any:
    """Benchmark artifacts (files, anything ``load`` accepts, mmdk output dirs; ``"label=path"`` names one)
    against ``reference`` tower by tower: latency (interleaved rounds, speedup ratios with confidence
    intervals) and, with ``data`` (a JSONL manifest), task accuracy. Returns a ``BenchReport``; writes the
    requested reports (JSON / Markdown / HTML / JUnit) atomically. Gates that fail set ``report.passed``
    to False (the CLI then exits 1); ``timing`` takes ``TimingConfig`` fields (``min_time_s``, ...).
    """
    from .bench.harness import parse_fraction, run_bench
    from .bench.report import write_reports
    from .bench.schema import TimingConfig

    items = list(artifacts) if isinstance(artifacts, (list, tuple)) else [artifacts]
    tcfg = timing if isinstance(timing, TimingConfig) else _options(TimingConfig, "timing", **(timing or {}))
    result = run_bench(items, reference, target=target, backend=backend, batches=batch, seqs=seq, towers=towers,
                       data=data, data_limit=data_limit, templates=templates, processor=processor, threads=threads,
                       timing=tcfg, max_latency_regression=parse_fraction(max_latency_regression, "max-latency-regression"),
                       max_accuracy_drop=max_accuracy_drop, quiet=quiet, log=None if quiet else progress,
                       load_kwargs=load_kwargs)
    write_reports(result, json=report, markdown=markdown, html=html, junit=junit)
    return result


def compare(base: str | Path | Any, new: str | Path | Any, max_latency_regression: Optional[float | str] = 0.10,
            max_accuracy_drop: Optional[float] = 0.5, latency_metric: str = "p50",
            junit: Optional[str | Path] = None) -> Any:
    """Compare two bench reports (paths or ``BenchReport``): latency per artifact/tower/batch/seq and the
    headline accuracy metrics. Returns a ``CompareResult``; ``.passed`` is False on any regression."""
    from .bench.gates import compare_reports
    from .bench.harness import parse_fraction
    from .bench.schema import BenchReport

    if latency_metric not in ("p50", "speedup"):
        raise UserInputError(f"unknown latency metric {latency_metric!r}", hint="use p50 or speedup")
    b = base if isinstance(base, BenchReport) else BenchReport.read(base)
    n = new if isinstance(new, BenchReport) else BenchReport.read(new)
    result = compare_reports(b, n, parse_fraction(max_latency_regression, "max-latency-regression"), max_accuracy_drop,
                             latency_metric, base_name=str(base if not isinstance(base, BenchReport) else "base"),
                             new_name=str(new if not isinstance(new, BenchReport) else "new"))  # type: ignore[arg-type]
    if not result.rows:
        raise UserInputError("the two reports share no artifact/tower/batch configuration to compare",
                             hint="compare reports of the same artifacts (labels are matched by name)")
    if junit is not None:
        from .bench.report import write_report_file
        from .bench.report.junit import render_junit

        write_report_file(junit, render_junit(result.gates(), suite="mmdk.compare"))
    return result
