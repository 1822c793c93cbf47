"""The library API: what scripts call and what every CLI command is one call of.

Heavy dependencies are imported inside the functions, so ``import mmdeploy_kit.api`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .artifacts import Manifest
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


LOAD_KEYS = ("weights", "io", "trust_remote_code")


def _split_load(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(load options, the rest)``: ``weights`` / ``io`` / ``trust_remote_code`` go to :func:`load`."""
    return ({k: options.pop(k) for k in LOAD_KEYS if k in options and options[k] is not None},
            {k: v for k, v in options.items() if k not in LOAD_KEYS})


def _tuples(options: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def export(source: ModelLike, out: str | Path, target: str = "onnx", towers: Sequence[str] = (),
           overwrite: bool = False, progress: Optional[Callable[[str], None]] = None,
           save_recipe: Optional[str | Path] = None, force: bool = False, **options: Any) -> Manifest:
    """Export towers to ``out/<tower>.onnx`` (+ ``mmdk_manifest.json``), each verified against torch.

    ``options``: fields of the target's config (``OnnxExportConfig``: opset, exporter, min_cosine, seed, ...)
    and load options (weights, io, trust_remote_code). Unset fields keep the config's defaults."""
    from .passes.registry import get_pass, resolve_pass_name

    load_options, rest = _split_load(dict(options))
    step = resolve_pass_name("export", {"target": target})
    fields = {k: v for k, v in _tuples(rest).items() if v is not None}
    config = _options(get_pass(step).config_cls, "export", target=target, towers=tuple(towers), **fields)
    return _run_one(step, config, source, out, overwrite=overwrite, progress=progress, load_options=load_options,
                    save_recipe=save_recipe, force=force)


def build_engines(bundle: str | Path, out: Optional[str | Path] = None, *, min_cosine: Optional[float] = None,
                  overwrite: bool = False, progress: Optional[Callable[[str], None]] = None,
                  host: Optional[str] = None, force: bool = False, **remote: Any) -> Manifest:
    """Build and verify the TensorRT engines of a bundle (``export(target="tensorrt", build="defer")``) on this
    machine, in place (or into ``out``). Needs tensorrt + an NVIDIA GPU (else exit 3, nothing changed).
    ``host`` builds on that device over SSH and brings the built bundle back (``remote``: ssh_key, ssh_options,
    accept_new_host_key, remote_mmdk; see ``bench``). Locally it is a step of the runner: engines built from the
    same bundle on the same TensorRT + GPU come from the step cache unless ``force``."""
    if host is not None:
        from .remote.build import remote_build_engines

        return remote_build_engines(host, bundle, out, min_cosine=min_cosine, overwrite=overwrite, progress=progress,
                                    **remote)
    from .passes.export.tensorrt import BuildEnginesConfig, check_bundle

    check_bundle(Path(bundle))   # not a bundle: exit 2, before the exit 3 of a machine that cannot build
    config = _options(BuildEnginesConfig, "build-engines", **({"min_cosine": min_cosine} if min_cosine is not None
                                                               else {}))
    target = Path(out) if out is not None else Path(bundle)
    in_place = target.resolve() == Path(bundle).resolve()
    return _run_one("build_engines", config, bundle, target, overwrite=overwrite or in_place, progress=progress,
                    force=force)


def quantize(source: ModelLike, out: str | Path, precision: Optional[str] = None, *, method: Optional[str] = None,
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
    from .passes.quantize.config import QuantizeConfig

    budgets = (accuracy_budget,) if isinstance(accuracy_budget, str) else tuple(accuracy_budget)
    save_recipe = options.pop("save_recipe", None)
    force = bool(options.pop("force", False))
    fields = dict(precision=precision, method=method, towers=tuple(towers),
                  tower_precision=tuple((tower_precision or {}).items()),
                  tower_method=tuple((tower_method or {}).items()), accuracy_budget=budgets,
                  calib_data=str(calib_data) if calib_data is not None else None,
                  processor=str(processor) if processor is not None else None, **_tuples(options))
    config = _options(QuantizeConfig, "quantize", **{k: v for k, v in fields.items() if v is not None})
    return _run_one("quantize", config, source, out, overwrite=overwrite, progress=progress,
                    load_options=load_options, save_recipe=save_recipe, force=force)


def distill(student: ModelLike, out: str | Path, teacher: ModelLike, data: str | Path, *,
            val: Optional[str | Path] = None, towers: Sequence[str] = (),
            loss: Optional[str | dict[str, float]] = None, resume: bool = False,
            checkpoint_dir: Optional[str | Path] = None, overwrite: bool = False,
            progress: Optional[Callable[[str], None]] = None, quiet: bool = False,
            load_options: Optional[dict[str, Any]] = None, teacher_load_options: Optional[dict[str, Any]] = None,
            **options: Any) -> Manifest:
    """Distill ``student`` (a pruned or smaller model with the teacher's tower interfaces) against the frozen
    ``teacher`` on the ``data`` manifest; write it to ``out`` in its own format (+ manifest).

    ``loss``: ``"feature=1,affinity=1,contrastive=0.5"`` or a dict (default: those for dual encoders,
    ``logits=1,label=1`` for classifiers). ``options``: further ``DistillConfig`` fields (steps, batch, lr,
    nproc, checkpoint_every, max_minutes, templates, temperature, ...). Checkpoints go to ``checkpoint_dir``
    (default ``<out>.ckpt``, removed after success); ``resume=True`` continues from its newest one.
    """
    from .passes.base import Checkpoints
    from .passes.distill import DistillConfig, parse_losses

    save_recipe = options.pop("save_recipe", None)
    force = bool(options.pop("force", False))
    on_checkpoint = options.pop("on_checkpoint", None)
    t_opts = {k: v for k, v in (teacher_load_options or {}).items() if v is not None}
    teacher_model = teacher if isinstance(teacher, LoadedModel) else load(teacher, **t_opts)
    fields = dict(data=str(data), val=str(val) if val is not None else None, teacher=str(teacher_model.source),
                  towers=tuple(towers), losses=parse_losses(loss), **_tuples(options))
    config = _options(DistillConfig, "distill", **{k: v for k, v in fields.items() if v is not None})
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else Path(out).with_name(Path(out).name + ".ckpt")
    if ckpt.exists() and not resume and any(ckpt.iterdir()):
        raise UserInputError(f"{ckpt} holds checkpoints of an earlier distillation run",
                             hint="pass --resume to continue it, or delete the directory to start over")
    l_opts = {k: v for k, v in (load_options or {}).items() if v is not None}
    manifest = _run_one("distill", config, student, out, overwrite=overwrite, progress=progress,
                        load_options=l_opts, reference=teacher_model, quiet=quiet, save_recipe=save_recipe,
                        force=force, context={"checkpoints": Checkpoints(ckpt.resolve(), resume, on_checkpoint),
                                              "reference_load_options": t_opts})
    import shutil

    shutil.rmtree(ckpt, ignore_errors=True)  # the output holds the kept (best) weights
    return manifest


def fusion_demo(out: str | Path = "mmdk_demo_fusion", force: bool = False, quiet: bool = False,
                progress: Optional[Callable[[str], None]] = None, data_dir: Optional[str | Path] = None,
                steps: Optional[int] = None, threads: Optional[int] = None) -> dict[str, Any]:
    """Train (or reuse) the late-fusion classifier demo (BERT-style text + ResNet image -> MLP), export it to
    verified ONNX in ``out/onnx`` and return a summary (checkpoint, held-out accuracy, export figures)."""
    from .demo_fusion import train_fusion_demo

    if progress:
        progress("fusion demo checkpoint: training or reusing the cached one")
    result = train_fusion_demo(data_dir=data_dir, steps=steps, force=force, quiet=quiet, threads=threads)
    import json

    manifest = export(result.path, Path(out) / "onnx", overwrite=True, progress=progress)
    info = json.loads((result.path / "mmdk_demo.json").read_text())
    return {"checkpoint": str(result.path), "reused": result.reused, "train_seconds": result.train_seconds,
            "accuracy": result.metrics.get("accuracy"), "val_manifest": info["val_manifest"],
            "train_manifest": info["train_manifest"], "onnx_dir": str(Path(out) / "onnx"),
            "export": {a.tower: {"cosine_min": a.verification.get("cosine_min"),
                                 "max_abs_error": a.verification.get("max_abs_error")} for a in manifest.artifacts}}


def prune(source: ModelLike, out: str | Path, ratio: Any = None, *, towers: Sequence[str] = (),
          target_params: Any = None, calib_data: Optional[str | Path] = None, overwrite: bool = False,
          progress: Optional[Callable[[str], None]] = None, quiet: bool = False,
          load_options: Optional[dict[str, Any]] = None, **options: Any) -> Manifest:
    """Structurally prune towers (attention heads, MLP widths, conv channels, LSTM hidden sizes) and write a
    model that reloads without Torch-Pruning: ``out/model`` (safetensors + architecture record), ``out/hf``
    when the HF config can express it, and ``mmdk_manifest.json`` (params before/after, per-layer widths,
    cosine vs the unpruned model).

    ``ratio``: fraction of each tower's parameters to remove — ``{"vision": 0.4, "text": 0.3}``,
    ``"vision=0.4,text=0.3"``, or one number for ``towers`` (all towers when empty); ``target_params``:
    a parameter count per tower instead (same forms). ``options``: further ``PruneConfig`` fields
    (importance, scope, round_to, ignore, step, max_layer_ratio, min_cosine, calib_samples, seed, ...).
    """
    from .passes.prune.config import ALL_TOWERS, PruneConfig, tower_values

    save_recipe = options.pop("save_recipe", None)
    force = bool(options.pop("force", False))
    l_opts = {k: v for k, v in (load_options or {}).items() if v is not None}
    every = [ALL_TOWERS]  # one value and no tower named: every tower (resolved by the pass)
    fields = dict(ratio=tower_values(ratio, tuple(towers), every, "ratio"),
                  target_params=tower_values(target_params, tuple(towers), every, "target-params",
                                             cast=lambda v: int(float(v))),
                  calib_data=str(calib_data) if calib_data is not None else None, **_tuples(options))
    config = _options(PruneConfig, "prune", **{k: v for k, v in fields.items() if v is not None})
    return _run_one("prune", config, source, out, overwrite=overwrite, progress=progress, load_options=l_opts,
                    quiet=quiet, save_recipe=save_recipe, force=force)


def _run_one(step: str, config: Any, source: ModelLike, out: str | Path, *, overwrite: bool = False,
             progress: Optional[Callable[[str], None]] = None, load_options: Optional[dict[str, Any]] = None,
             reference: Any = None, context: Optional[dict[str, Any]] = None, quiet: bool = False,
             save_recipe: Optional[str | Path] = None, force: bool = False,
             on_result: Optional[Callable[[Any], None]] = None) -> Manifest:
    """Run one registered pass (``step`` is its registry name) as a one-step recipe through the pipeline runner:
    load ``source``, check the config's towers, reuse the step cache or run the pass into a temp dir, publish
    ``out`` atomically, return the manifest. ``save_recipe`` also writes the equivalent recipe YAML.

    Every verb (``export``, ``quantize``, ``prune``, ``distill``, ...) goes through here."""
    from .pipeline.runner import run_single_step

    manifest = run_single_step(step, config, source, out, overwrite=overwrite, progress=progress,
                               load_options=load_options or {}, reference=reference, context=context,
                               quiet=quiet, force=force, on_result=on_result)
    if save_recipe is not None:
        write_step_recipe(step, config, save_recipe, model=source if isinstance(source, (str, Path)) else None)
    return manifest


def write_step_recipe(step: str, config: Any, path: str | Path, model: Optional[str | Path] = None) -> Path:
    """Write the one-step recipe equivalent to a verb call (``--save-recipe``): options that differ from the
    pass's defaults, model and data paths absolute."""
    from .artifacts import atomic_output_file
    from .passes.registry import recipe_step_name
    from .pipeline.recipe import dump_recipe

    options = config.model_dump(mode="json", exclude_defaults=True)
    name = recipe_step_name(step)
    if name != step and "target" in type(config).model_fields:
        options = {"target": getattr(config, "target"), **options}
    data: dict[str, Any] = {}
    if model is not None and not (isinstance(model, str) and ":" in model and not Path(model).exists()):
        data["model"] = str(Path(model).resolve())
    elif model is not None:
        data["model"] = str(model)
    data["steps"] = [{name: options}]
    with atomic_output_file(path) as tmp:
        tmp.write_text(dump_recipe(data))
    return Path(path)


def run(recipe: str | Path | dict, model: Optional[ModelLike] = None, out: Optional[str | Path] = None, *,
        overrides: Optional[Sequence[str] | dict[str, Any]] = None, data: Optional[dict[str, str | Path]] = None,
        dry_run: bool = False, force: bool = False, overwrite: bool = False, use_cache: bool = True,
        progress: Optional[Callable[[str], None]] = None, step_log: Optional[Callable[[str], None]] = None,
        quiet: bool = False, **load_options: Any) -> Any:
    """Run a recipe (YAML path, built-in name, or dict) on ``model`` (default: the recipe's ``model:``) into
    ``out``; ``overrides`` are ``STEP.FIELD=VALUE`` strings (or a dict), ``data`` maps recipe data names to
    paths. Everything is validated before any work. ``dry_run`` returns the validated ``Plan`` and writes
    nothing; otherwise returns a ``RunResult`` (``OUT/mmdk_run.json``, waterfall reports)."""
    from .pipeline.recipe import load_recipe
    from .pipeline.runner import run_recipe
    from .pipeline.validate import plan_recipe

    r = load_recipe(recipe, overrides=list(overrides) if isinstance(overrides, (list, tuple)) else overrides,
                    data=data)
    plan = plan_recipe(r, model, load_options={k: v for k, v in load_options.items() if v is not None},
                       preflight=not dry_run)
    if dry_run:
        return plan
    if out is None:
        raise UserInputError("no output directory", hint="pass -o OUT")
    return run_recipe(plan, out, force=force, overwrite=overwrite, progress=progress, step_log=step_log,
                      quiet=quiet, use_cache=use_cache)


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


def synth_data(out: str | Path, overwrite: bool = False, modality: str = "image", **options: Any) -> Path:
    """Write a deterministic synthetic dataset (JSONL manifests, train/val): image-caption (PNG) by default,
    ``modality="audio"`` tones / chirps / noise bursts (WAV), ``"video"`` moving shapes (frame folders).

    ``options`` are the synthesizer's keyword arguments; each synthesizer owns its defaults (images:
    ``data.synth.SYNTH_DEFAULTS``, the demo's): ``n_train``, ``n_val``, ``seed`` for all; ``image_size`` (image,
    video), ``sampling_rate`` and ``duration`` (audio), ``num_frames`` (video). ``None`` means the default."""
    given = {k: v for k, v in options.items() if v is not None}
    if modality == "audio":
        from .data.synth_media import synthesize_audio_dataset as synth
    elif modality == "video":
        from .data.synth_media import synthesize_video_dataset as synth
    elif modality == "image":
        from .data.synth import synthesize_dataset as synth
    else:
        raise UserInputError(f"unknown modality {modality!r} for synthetic data", hint="use image, audio or video")
    import inspect as _inspect

    accepted = set(_inspect.signature(synth).parameters)
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise UserInputError(f"synthetic {modality} data takes no option {', '.join(unknown)}",
                             hint=f"options for {modality}: {', '.join(sorted(accepted - {'out', 'overwrite'}))}")
    return synth(out, overwrite=overwrite, **given)


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
    overrides = {"bench.threads": threads} if threads else {}
    res = run("demo", result.path, out, data={"val": Path(result.data_dir) / "val.jsonl"}, overrides=overrides,
              progress=progress, quiet=quiet)
    export_dir, bench_step = Path(res.steps[0].output_dir), res.steps[1]
    manifest = Manifest.read(export_dir)
    m = bench_step.metrics
    acc = m.get("accuracy") or {}
    sp = m.get("speedup")
    return {
        "bench": {"torch_zero_shot_top1": acc.get("source", {}).get("zero_shot_top1"),
                  "onnx_zero_shot_top1": acc.get("onnx", {}).get("zero_shot_top1"),
                  "speedup": sp, "speedup_ci": m.get("speedup_ci"), "confidence": m.get("confidence"),
                  "reports": {k: str(Path(bench_step.output_dir) / v) for k, v in (m.get("reports") or {}).items()},
                  "warnings": m.get("warnings") or []},
        "checkpoint": str(result.path),
        "reused": result.reused,
        "train_seconds": result.train_seconds,
        "zero_shot_top1": result.zero_shot_top1,
        "zero_shot_top5": result.zero_shot_top5,
        "target_top1": DEMO_TARGET_TOP1,
        "passed": result.zero_shot_top1 >= DEMO_TARGET_TOP1,
        "recall": result.recall,
        "data_dir": str(result.data_dir),
        "onnx_dir": str(export_dir),
        "run_dir": str(res.out),
        "export": {a.tower: {"cosine_min": a.verification.get("cosine_min"),
                             "max_abs_error": a.verification.get("max_abs_error")} for a in manifest.artifacts},
    }


def bench(artifacts: ModelLike | Sequence[ModelLike], reference: Optional[ModelLike] = None, *, target: str = "cpu",
          backend: str = "auto", batch: Optional[Sequence[int]] = None, seq: Optional[Sequence[int]] = None,
          towers: Sequence[str] = (), data: Optional[str | Path] = None, data_limit: Optional[int] = None,
          templates: Optional[Sequence[str]] = None, processor: Optional[str | Path] = None,
          threads: Optional[int] = None, timing: Optional[dict[str, Any] | Any] = None,
          report: Optional[str | Path] = None, markdown: Optional[str | Path] = None,
          html: Optional[str | Path] = None, junit: Optional[str | Path] = None,
          max_latency_regression: Optional[float | str] = None, max_accuracy_drop: Optional[float] = None,
          quiet: bool = False, progress: Optional[Callable[[str], None]] = None, host: Optional[str] = None,
          ssh_key: Optional[str] = None, ssh_options: Sequence[str] = (), accept_new_host_key: bool = False,
          remote_mmdk: str = "mmdk", force: bool = False, notice: Optional[Callable[[str], None]] = None,
          **load_kwargs: Any) -> Any:
    """Benchmark artifacts (files, anything ``load`` accepts, mmdk output dirs; ``"label=path"`` names one)
    against ``reference`` tower by tower: latency (interleaved rounds, speedup ratios with confidence
    intervals) and, with ``data`` (a JSONL manifest), task accuracy. Returns a ``BenchReport``; writes the
    requested reports (JSON / Markdown / HTML / JUnit) atomically. Gates that fail set ``report.passed``
    to False (the CLI then exits 1); ``timing`` takes ``TimingConfig`` fields (``min_time_s``, ``processes``:
    worker processes whose rounds the intervals resample, ``precision``: adaptive length, ...) or a TimingConfig.

    ``host`` (``user@host[:port]`` or an ~/.ssh/config alias) runs it on that device over SSH with the device's
    own mmdk (``remote_mmdk``), copying the inputs into its content-addressed cache; the report comes back and
    is rendered here (``mmdeploy_kit.remote``). ``ssh_key``, ``ssh_options`` (``Key=Value``) and
    ``accept_new_host_key`` go to ``ssh``.

    On this machine it is the bench step run through the pipeline runner: the same models (by content), data,
    options and machine reuse the cached measurement (``notice`` is told, default ``progress``) unless the
    machine was noisy when it was taken; ``force`` measures again.
    """
    from .runtime.report import write_reports

    items = list(artifacts) if isinstance(artifacts, (list, tuple)) else [artifacts]
    if host is not None:  # measured on another machine: that device's own mmdk (and its cache) does the work
        from .remote.bench import remote_bench

        result = remote_bench(host, items, reference, target=target, backend=backend, batch=batch, seq=seq,
                              towers=towers, data=data, data_limit=data_limit, templates=templates,
                              processor=processor, threads=threads, timing=_timing_flags(timing),
                              max_latency_regression=max_latency_regression, max_accuracy_drop=max_accuracy_drop,
                              quiet=quiet, progress=progress, ssh_key=ssh_key, ssh_options=ssh_options,
                              accept_new_host_key=accept_new_host_key, remote_mmdk=remote_mmdk, force=force,
                              **load_kwargs)
        write_reports(result, json=report, markdown=markdown, html=html, junit=junit)
        return result
    return _bench_step(items, reference, dict(target=target, backend=backend, batch=batch, seq=seq, towers=towers,
                                              data=data, data_limit=data_limit, templates=templates,
                                              processor=processor, threads=threads,
                                              max_latency_regression=max_latency_regression,
                                              max_accuracy_drop=max_accuracy_drop),
                       timing, dict(json=report, markdown=markdown, html=html, junit=junit), quiet=quiet,
                       progress=progress, force=force, notice=notice, load_options=load_kwargs)


def _bench_step(items: list[Any], reference: Any, options: dict[str, Any], timing: Any,
                reports: dict[str, Any], *, quiet: bool, progress: Optional[Callable[[str], None]], force: bool,
                notice: Optional[Callable[[str], None]], load_options: dict[str, Any]) -> Any:
    """``bench`` on this machine: the registered bench pass as a one-step recipe through the runner, so the
    step cache applies (a measurement is reused unless the machine was noisy; the key holds every model's
    files, the data, the options and this machine's CPU). The step writes its reports into a scratch folder
    (kept in the cache); the requested report files are copied from there."""
    import tempfile

    from .passes.bench_step import REPORT_FILES, BenchStepConfig
    from .runtime.bench_models import default_label, split_label
    from .runtime.report import write_report_file
    from .runtime.schema import BenchReport, TimingConfig

    if not items:
        raise UserInputError("nothing to benchmark", hint="name at least one artifact")
    tcfg = timing if isinstance(timing, TimingConfig) else _options(TimingConfig, "timing", **(timing or {}))
    loaded = [a for a in items if isinstance(split_label(a)[1], LoadedModel)]
    if loaded and len(items) > 1:
        raise UserInputError("bench takes a loaded model only as its one artifact",
                             hint="pass paths (LABEL=PATH) when benchmarking several artifacts")
    label, first = split_label(items[0])
    ref_label, ref = split_label(reference) if reference is not None else (None, None)
    ref_loaded = isinstance(ref, LoadedModel)
    fields = dict(_tuples(options), data=str(options["data"]) if options["data"] is not None else None,
                  processor=str(options["processor"]) if options["processor"] is not None else None,
                  max_latency_regression=(str(options["max_latency_regression"])
                                          if options["max_latency_regression"] is not None else None),
                  artifacts=() if loaded else tuple(str(a) for a in items),
                  label=(label or default_label(first)) if loaded else None, reference=reference is not None,
                  reference_model=str(reference) if reference is not None and not ref_loaded else None,
                  reference_label=(ref_label or default_label(ref)) if ref_loaded else None,
                  **tcfg.model_dump())
    config = _options(BenchStepConfig, "bench", **{k: v for k, v in fields.items() if v is not None})
    step: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mmdk-bench-") as tmp:
        out = Path(tmp) / "bench"
        _run_one("bench", config, first, out, progress=progress, load_options=load_options, quiet=quiet,
                 reference=ref if ref_loaded else None, force=force,
                 on_result=lambda r: step.update(cached=r.cached, key=r.key))
        result = BenchReport.read(out / REPORT_FILES["json"])
        for fmt, path in reports.items():
            if path is not None:
                write_report_file(path, (out / REPORT_FILES[fmt]).read_text(encoding="utf-8"))
    tell = notice or (None if quiet else progress)
    if step.get("cached") and tell is not None:
        tell(f"note: reused a cached measurement (same models, data, options and machine; step {step['key']}); "
             "pass --force to measure again")
    return result


def doctor(host: Optional[str] = None, ssh_key: Optional[str] = None, ssh_options: Sequence[str] = (),
           accept_new_host_key: bool = False, remote_mmdk: str = "mmdk") -> dict[str, Any]:
    """What this machine (or, with ``host``, a device over SSH) has - CPU ISA, GPU/driver/CUDA, TensorRT, ORT
    providers, Jetson model/L4T/power mode - and which mmdk features are available there (``features``)."""
    from .runtime import doctor as _doctor

    if host is not None:
        from .remote.doctor import remote_doctor

        return remote_doctor(host, ssh_key=ssh_key, ssh_options=tuple(ssh_options),
                                     accept_new_host_key=accept_new_host_key, remote_mmdk=remote_mmdk)
    return _doctor.collect()


def _timing_flags(timing: Any) -> Optional[dict[str, Any]]:
    """The timing options a remote bench passes on: a dict as given, or a TimingConfig's non-default fields."""
    if timing is None or isinstance(timing, dict):
        return timing
    return timing.model_dump(exclude_defaults=True)


def compare(base: str | Path | Any, new: str | Path | Any, max_latency_regression: Optional[float | str] = 0.10,
            max_accuracy_drop: Optional[float] = 0.5, latency_metric: str = "speedup",
            junit: Optional[str | Path] = None, allow_power_mode_mismatch: bool = False,
            gate_absolute: bool = False, markdown: Optional[str | Path] = None) -> Any:
    """Compare two bench reports (paths or ``BenchReport``): latency per artifact/tower/batch/seq and the
    headline accuracy metrics. Returns a ``CompareResult``; ``.passed`` is False on any regression.
    Latency is gated on each report's speedup vs its own reference, noise-aware (a change beyond the
    threshold whose interval reaches no change is "within noise", not a regression); absolute p50 times are
    shown, and gated (threshold only) with ``gate_absolute`` (or ``latency_metric="p50"``).
    Two Jetson reports taken in different power modes are refused unless ``allow_power_mode_mismatch``."""
    from .runtime.gates import compare_reports
    from .runtime.harness import parse_fraction
    from .runtime.schema import BenchReport

    if latency_metric not in ("p50", "speedup"):
        raise UserInputError(f"unknown latency metric {latency_metric!r}", hint="use p50 or speedup")
    b = base if isinstance(base, BenchReport) else BenchReport.read(base)
    n = new if isinstance(new, BenchReport) else BenchReport.read(new)
    from .runtime.jetson import check_power_modes

    power_warning = check_power_modes(b, n, allow=allow_power_mode_mismatch)
    result = compare_reports(b, n, parse_fraction(max_latency_regression, "max-latency-regression"), max_accuracy_drop,
                             latency_metric, base_name=str(base if not isinstance(base, BenchReport) else "base"),
                             new_name=str(new if not isinstance(new, BenchReport) else "new"),  # type: ignore[arg-type]
                             gate_absolute=gate_absolute)
    if not result.rows:
        raise UserInputError("the two reports share no artifact/tower/batch configuration to compare",
                             hint="compare reports of the same artifacts (labels are matched by name)")
    if power_warning:
        result.warnings.append(power_warning)
    if junit is not None:
        from .runtime.report import write_report_file
        from .runtime.report.junit import render_junit

        write_report_file(junit, render_junit(result.gates(), suite="mmdk.compare"))
    if markdown is not None:
        from .runtime.report import write_report_file
        from .runtime.report.markdown import render_compare_markdown

        write_report_file(markdown, render_compare_markdown(result))
    return result


# ---- mmdk optimize (search/) ------------------------------------------------------------------------------------
def optimize(model: ModelLike, out: str | Path, *, target: str = "cpu", data: Optional[str | Path] = None,
             calib_data: Optional[str | Path] = None, train_data: Optional[str | Path] = None,
             budget: Sequence[str] | str = (), objective: Sequence[str] | str = ("latency",),
             space: Optional[str | Path | dict] = None, max_trials: int = 20, max_minutes: Optional[float] = None,
             workers: int = 1, storage: Optional[str] = None, study_name: str = "mmdk-optimize",
             hosts: Sequence[str] = (), sampler: str = "tpe", seed: int = 0,
             bench: Optional[dict[str, Any]] = None, remote: Optional[dict[str, Any]] = None,
             seed_trials: bool = True, progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Search every tower's prune ratio x distillation x precision x runtime for the fastest deployment inside
    the ``budget`` constraints (``"zero_shot_top1_drop<=1"``, ``"size_mb<=50"``); objectives ``latency`` |
    ``throughput`` | ``size`` | ``energy`` (the task metric on ``data`` is maximised next to them).

    Each trial is a recipe run by the pipeline runner (shared prefixes come from the step cache). ``space``: a
    YAML file or dict (or a recipe with a ``search:`` block). ``workers`` processes share one Optuna study (a
    journal in ``out``; ``storage``: any Optuna storage URL or journal path, so other machines can join);
    ``hosts`` bench trials on SSH devices (``remote``: ssh_key, ssh_options, accept_new_host_key, remote_mmdk).
    Running it again on the same ``out`` resumes: finished trials are not re-run. ``bench``: bench step fields
    (warmup_runs, min_runs, min_time_s, min_rounds, max_time_s, threads, ...). Writes ``out/pareto.{json,md,html}``,
    ``out/best.yaml`` and ``out/best/``; returns the Pareto summary (``summary["best"]`` is a trial number)."""
    from .search.optimize import prepare, run_search

    budgets = (budget,) if isinstance(budget, str) else tuple(budget)
    objectives = (objective,) if isinstance(objective, str) else tuple(objective)
    settings = prepare(model, out, target=target, data=data, calib_data=calib_data, train_data=train_data,
                       budgets=budgets, objectives=objectives, space=space, max_trials=max_trials,
                       max_minutes=max_minutes, workers=workers, storage=storage, study_name=study_name,
                       hosts=hosts, sampler=sampler, seed=seed, bench=bench, remote=remote, seed_trials=seed_trials)
    return run_search(settings, log=progress)
