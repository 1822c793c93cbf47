"""``run_bench``: load artifacts + reference, validate everything, measure accuracy and latency, build the report.

All validation (target hardware, backends, tower matching, sizes vs I/O specs, data manifest) happens
before the first timed run, so bad input fails fast with one line and nothing is written. The stages:
``_check_options`` -> ``_load_models`` -> ``_select_towers`` -> ``_plan_configs`` -> (backends, accuracy,
latency: ``rounds.measure_latency``, tower infos - every backend is closed on every path) -> ``_build_report``.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..artifacts import size_on_disk
from ..errors import SpecError, UserInputError
from ..model.tower import LoadedModel
from . import env
from .accuracy import DEFAULT_TEMPLATE, Contestant, evaluate
from .backends.base import create_backend
from .bench_models import (BenchModel, backend_request, default_label, load_source, match_towers, split_label,
                           unique_label, widen_guessed_dims)
from .gates import bench_gates
from .rounds import NOISY_CV, Config, LatencyOutcome, busy_load, measure_latency  # noqa: F401  (NOISY_CV: was here)
from .schema import ArtifactInfo, BenchConfig, BenchReport, LatencyResult, Scenario, TimingConfig, TowerInfo
from .targets import BACKEND_CHOICES, resolve_target

__all__ = ["run_bench", "split_label", "size_grid", "scenarios", "parse_int_list", "parse_fraction"]

DEFAULT_BATCHES = (1, 8)
DEFAULT_SEQ = 77
Log = Callable[[str], None]


def _seq_dims(spec: Any) -> list[str]:
    bdim = spec.batch_dim()
    return [d for i in spec.inputs if i.modality == "text" for d in i.symbolic_dims if d != bdim]


def size_grid(spec: Any, batches: Optional[Sequence[int]], seqs: Optional[Sequence[int]]) -> list[dict[str, int]]:
    """Concrete sizes for one tower. Explicit values outside the spec's dims are errors; defaults are clipped."""
    bdim = spec.batch_dim()
    seq_dims = list(dict.fromkeys(_seq_dims(spec)))
    if bdim is None:
        bs: list[Optional[int]] = [None]
    elif batches:
        bs = list(batches)
    else:
        lo, hi = spec.dims[bdim]
        bs = sorted({max(lo, min(hi, b)) for b in DEFAULT_BATCHES})
    if not seq_dims:
        ss: list[Optional[int]] = [None]
    elif seqs:
        ss = list(seqs)
    else:
        lo, hi = spec.dims[seq_dims[0]]
        ss = [max(lo, min(hi, DEFAULT_SEQ))]
    grid = []
    for b in bs:
        for s in ss:
            sizes = {bdim: b} if bdim is not None and b is not None else {}
            if s is not None:
                sizes.update({d: s for d in seq_dims})
            grid.append(sizes)
    return grid



def _check_sizes(spec: Any, sizes: dict[str, int], label: str, tower: str) -> None:
    """SpecError when ``sizes`` is outside the tower's declared dims."""
    try:
        spec.resolve(sizes)
    except SpecError as exc:
        raise SpecError(f"{label} / tower {tower!r}: {exc.message}", hint=exc.hint) from None


def _tower_info(m: BenchModel, name: str) -> TowerInfo:
    t = m.model.towers[name]
    b = m.backends[name]
    d = b.describe()
    size = None
    if t.path is not None and Path(t.path).exists():  # plus an ONNX file's external-data sibling
        size = size_on_disk(t.path) + size_on_disk(str(t.path) + ".data")
    params = int(t.details["parameters"]) if "parameters" in t.details else None
    return TowerInfo(name=name, kind=t.kind, precision=d.get("precision", t.precision), backend=d["backend"],
                     device=d["device"], inference_precision=d.get("inference_precision"),
                     providers=list(d.get("providers") or []), threads=d.get("threads"),
                     session_seconds=round(m.session_seconds[name], 4), parameters=params, size_bytes=size,
                     inputs={i.name: list(i.shape) for i in t.spec.inputs})



@dataclass
class _Options:
    profile: Any
    templates: list[str]
    threads: Optional[int]
    samples: Optional[list[Any]]
    busy: Optional[float]


def _check_options(artifacts: Sequence[Any], backend: str, batches: Optional[Sequence[int]],
                   seqs: Optional[Sequence[int]], templates: Optional[Sequence[str]], target: str, timing: TimingConfig,
                   threads: Optional[int], data: Optional[str | Path], data_limit: Optional[int]) -> _Options:
    if not artifacts:
        raise UserInputError("nothing to benchmark", hint="pass at least one ARTIFACT")
    if backend not in BACKEND_CHOICES:
        raise UserInputError(f"unknown backend {backend!r}", hint=f"choose one of {', '.join(BACKEND_CHOICES)}")
    for name, vals in (("batch", batches), ("seq", seqs)):
        if vals is not None and (not vals or any(int(v) < 1 for v in vals)):
            raise UserInputError(f"--{name} needs positive integers, got {list(vals)}")
    tmpl = list(templates or [DEFAULT_TEMPLATE])
    bad = [t for t in tmpl if "{label}" not in t]
    if bad:
        raise UserInputError(f"template {bad[0]!r} has no '{{label}}' placeholder", hint='e.g. "a photo of a {label}."')
    profile = resolve_target(target)
    busy = busy_load()
    if timing.clock == "cpu" and profile.device != "cpu":
        raise UserInputError(f"--clock cpu measures CPU work; target {profile.name!r} runs on a GPU",
                             hint="use --clock wall (GPU runs are timed with device events)")
    threads = threads or (env.available_cores() if profile.device == "cpu" else None)
    samples = None
    if data is not None:
        from ..data.manifest import load_manifest

        samples = load_manifest(data)
        if data_limit:
            samples = samples[: int(data_limit)]
    return _Options(profile, tmpl, threads, samples, busy)


def _load_models(artifacts: Sequence[Any], reference: Any, load_kwargs: dict[str, Any], log: Log) -> list[BenchModel]:
    taken: set[str] = set()
    models: list[BenchModel] = []
    sources = ([(reference, "reference")] if reference is not None else []) + [(a, "artifact") for a in artifacts]
    for spec, role in sources:
        lab, src = split_label(spec)
        label = unique_label(lab or default_label(src), taken)
        log(f"loading {label} ({src if not isinstance(src, LoadedModel) else src.source})")
        model, secs, rss = load_source(src, load_kwargs)
        models.append(BenchModel(label, role, model, secs, rss, declared=widen_guessed_dims(model), spec=src))
    return models


def _select_towers(models: list[BenchModel], has_ref: bool, towers: Sequence[str]) -> None:
    """Which towers each model is benchmarked on (``BenchModel.towers``)."""
    def requested(m: BenchModel) -> list[str]:
        return [t for t in m.model.towers if not towers or t in towers]

    base = models[0]
    if has_ref:
        base.model.select(towers)  # every requested tower must exist in the reference
        base.towers = requested(base)
        for m in models[1:]:
            m.towers = match_towers(base.model, base.label, m.model, m.label, towers)
        if not any(m.towers for m in models[1:]):
            raise UserInputError("the artifacts share no tower with the reference", hint="check --tower")
        return
    for m in models:  # no reference: artifacts may hold different towers (e.g. vision.onnx + text.onnx)
        m.towers = requested(m)
    known = {t for m in models for t in m.towers}
    missing = [t for t in towers if t not in known]
    if missing:
        raise UserInputError(f"no artifact has a tower named {missing[0]!r}", hint=f"towers are: {', '.join(sorted(known))}")


def _plan_configs(models: list[BenchModel], has_ref: bool, batches: Optional[Sequence[int]],
                  seqs: Optional[Sequence[int]]) -> list[tuple[str, list[dict[str, int]]]]:
    """(tower, sizes) to time, validated against every contender's spec before any run. Only towers some
    artifact has are timed (a reference tower nobody is compared on is only used for accuracy)."""
    timed = models[1:] if has_ref else models
    out = []
    for t in dict.fromkeys(t for m in timed for t in m.towers):
        owners = [m for m in models if t in m.towers]
        grid = size_grid(owners[0].declared[t], batches, seqs)
        for m in owners:
            for sizes in grid:
                _check_sizes(m.model.towers[t].spec, sizes, m.label, t)
        out.append((t, grid))
    return out


def _create_backends(models: list[BenchModel], backend: str, profile: Any, threads: Optional[int]) -> None:
    for m in models:
        rss0 = env.rss_bytes()
        for t in m.towers:
            tower = m.model.towers[t]
            t0 = time.perf_counter()
            m.backends[t] = create_backend(tower, backend_request(m.role, tower.kind, backend), profile, threads=threads)
            m.session_seconds[t] = time.perf_counter() - t0
        rss1 = env.rss_bytes()
        if m.rss_delta is not None and rss0 is not None and rss1 is not None:
            m.rss_delta += rss1 - rss0  # sessions / modules moved to the device are part of loading


def _close_backends(models: list[BenchModel]) -> None:
    for m in models:
        for b in m.backends.values():
            b.close()


def _latency_configs(models: list[BenchModel], plan: list[tuple[str, list[dict[str, int]]]],
                     timing: TimingConfig) -> list[Config]:
    configs = []
    for t, grid in plan:
        owners = [m for m in models if t in m.backends]
        spec = owners[0].model.towers[t].spec
        for sizes in grid:
            configs.append(Config(tower=t, sizes=sizes, owners=owners, batch=sizes.get(spec.batch_dim() or "", 1),
                                  seq=next((sizes[d] for d in _seq_dims(spec) if d in sizes), None),
                                  desc=f"{t} " + " ".join(f"{k}={v}" for k, v in sizes.items()),
                                  feeds=spec.dummy_inputs(sizes, seed=timing.seed)))
    return configs


def run_bench(artifacts: Sequence[Any], reference: Any = None, *, target: str = "cpu", backend: str = "auto",
              batches: Optional[Sequence[int]] = None, seqs: Optional[Sequence[int]] = None,
              towers: Sequence[str] = (), data: Optional[str | Path] = None, data_limit: Optional[int] = None,
              templates: Optional[Sequence[str]] = None, processor: Optional[str | Path] = None,
              threads: Optional[int] = None, timing: Optional[TimingConfig] = None,
              max_latency_regression: Optional[float] = None, max_accuracy_drop: Optional[float] = None,
              quiet: bool = False, log: Optional[Log] = None, load_kwargs: Optional[dict[str, Any]] = None) -> BenchReport:
    t_begin = time.perf_counter()
    log = log or (lambda _m: None)
    timing = timing or TimingConfig()
    opts = _check_options(artifacts, backend, batches, seqs, templates, target, timing, threads, data, data_limit)
    has_ref = reference is not None
    models = _load_models(artifacts, reference, load_kwargs or {}, log)
    _select_towers(models, has_ref, towers)
    plan = _plan_configs(models, has_ref, batches, seqs)
    base = models[0]
    try:
        _create_backends(models, backend, opts.profile, opts.threads)
        acc = None
        if opts.samples is not None:
            from .preprocess import processor_dir

            proc = processor_dir([m.model for m in models], processor)
            log(f"accuracy on {len(opts.samples)} samples of {data}")
            acc = evaluate([Contestant(m.label, m.backends) for m in models], base.label, opts.samples, str(data),
                           proc, opts.templates, log=log)
        from .cpu_check import target_cpu_warnings
        from .jetson import TelemetrySession  # Jetson power/energy: None unless tegrastats is on PATH

        isa_warnings = target_cpu_warnings(models, base if has_ref else None, log)  # INT8 made for another ISA
        telemetry = TelemetrySession.start(timing.telemetry_interval_ms, timing.energy_window_s, log=log)
        outcome = measure_latency(models, _latency_configs(models, plan, timing), timing=timing, profile=opts.profile,
                                  max_latency_regression=max_latency_regression, quiet=quiet, log=log,
                                  telemetry=telemetry,
                                  job_args={"target": opts.profile.name, "backend": backend, "threads": opts.threads,
                                            "load_kwargs": load_kwargs or {}})
        infos = [ArtifactInfo(label=m.label, source=m.model.source, format=m.model.format, role=m.role,
                              load_seconds=round(m.load_seconds, 4), size_on_disk_bytes=m.model.size_on_disk(),
                              rss_load_delta_bytes=m.rss_delta, towers={t: _tower_info(m, t) for t in m.backends})
                 for m in models]
    finally:
        _close_backends(models)
    outcome.warnings[:0] = isa_warnings
    if opts.profile.device == "cpu" and timing.clock == "wall" and opts.busy is not None:
        outcome.warnings.append(f"the machine was busy (load average {opts.busy:.1f} on {env.available_cores()} cores): "
                                "wall-clock timings include waits for other processes; with several threads per run "
                                "these can dominate. For comparisons on shared machines use --threads 1 --clock cpu")
    return _build_report(models, has_ref, infos, outcome, acc, opts, timing, backend, batches, seqs, towers, data,
                         data_limit, processor, max_accuracy_drop, t_begin, telemetry)


def _build_report(models: list[BenchModel], has_ref: bool, infos: list[ArtifactInfo], outcome: LatencyOutcome,
                  acc: Any, opts: _Options, timing: TimingConfig, backend: str, batches: Optional[Sequence[int]],
                  seqs: Optional[Sequence[int]], towers: Sequence[str], data: Any, data_limit: Optional[int],
                  processor: Any, max_accuracy_drop: Optional[float], t_begin: float, telemetry: Any) -> BenchReport:
    from .. import __version__

    latency = outcome.latency
    used_batches = sorted({r.batch for r in latency})
    used_seqs = sorted({r.seq for r in latency if r.seq is not None}) or None
    base = models[0]
    config = BenchConfig(target=opts.profile.name, backend=backend, batches=list(batches or used_batches),
                         seqs=list(seqs) if seqs else used_seqs, towers=list(towers), threads=opts.threads,
                         data=str(data) if data else None, data_limit=data_limit, templates=opts.templates,
                         processor=str(processor) if processor else None,
                         reference=base.model.source if has_ref else None, timing=timing)
    report = BenchReport(
        mmdk_version=__version__, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(time.perf_counter() - t_begin, 3), config=config, target=opts.profile,
        environment=env.fingerprint(opts.threads), reference=base.label if has_ref else None, baseline=base.label,
        artifacts=infos, latency=latency, speedups=outcome.speedups, scenarios=scenarios(latency), accuracy=acc,
        warnings=outcome.warnings, telemetry=telemetry.finish() if telemetry is not None else None,
        processes=outcome.processes, precision_reached_pct=outcome.precision_reached_pct)
    report.gates = bench_gates(report, outcome.latency_gate, max_accuracy_drop)
    report.passed = not report.failed_gates()
    return report


def scenarios(latency: Sequence[LatencyResult]) -> list[Scenario]:
    """single-stream: p90 latency at batch 1; offline: the best throughput over the measured batches."""
    out: list[Scenario] = []
    groups: dict[tuple[str, str, Optional[int]], list[LatencyResult]] = {}
    for r in latency:
        groups.setdefault((r.artifact, r.tower, r.seq), []).append(r)
    for (art, tower, seq), rs in groups.items():
        one = next((r for r in rs if r.batch == 1), None)
        if one is not None:
            out.append(Scenario(scenario="single-stream", artifact=art, tower=tower, batch=1, seq=seq,
                                value=one.stats.p90_ms, unit="ms (p90)"))
        best = max(rs, key=lambda r: r.stats.throughput_items_per_s)
        out.append(Scenario(scenario="offline", artifact=art, tower=tower, batch=best.batch, seq=seq,
                            value=best.stats.throughput_items_per_s, unit="items/s"))
    return out


def parse_int_list(text: Optional[str], what: str) -> Optional[list[int]]:
    """``"1,8"`` -> [1, 8] (for the CLI)."""
    if text is None or str(text).strip() == "":
        return None
    try:
        vals = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise UserInputError(f"--{what} takes comma-separated integers, got {text!r}", hint=f"e.g. --{what} 1,8") from None
    if not vals or any(v < 1 for v in vals):
        raise UserInputError(f"--{what} needs positive integers, got {text!r}")
    return vals


def parse_fraction(text: Optional[str | float], what: str) -> Optional[float]:
    """``"10%"`` or ``"0.1"`` -> 0.1 (a relative threshold)."""
    if text is None or str(text).strip() == "":
        return None
    s = str(text).strip()
    try:
        val = float(s[:-1]) / 100.0 if s.endswith("%") else float(s)
    except ValueError:
        raise UserInputError(f"--{what} takes a percentage such as 10% (or a fraction 0.1), got {text!r}") from None
    if val < 0 or math.isnan(val):
        raise UserInputError(f"--{what} must be >= 0, got {text!r}")
    return val


_match_towers = match_towers  # the name tests and older callers import
