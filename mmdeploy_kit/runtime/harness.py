"""``run_bench``: load artifacts + reference, validate everything, measure accuracy and latency, build the report.

All validation (target hardware, backends, tower matching, sizes vs I/O specs, data manifest) happens
before the first timed run, so bad input fails fast with one line and nothing is written.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..artifacts import MANIFEST_NAME, size_on_disk
from ..errors import SpecError, UserInputError
from ..model.tower import LoadedModel
from . import env
from .accuracy import DEFAULT_TEMPLATE, Contestant, evaluate
from .backends.base import Backend, backend_class, create_backend
from .gates import bench_gates
from .latency import Contender, estimate_rounds, measure
from .schema import (ArtifactInfo, BenchConfig, BenchReport, LatencyResult, LatencyStats, Scenario, Speedup,
                     TimingConfig, TowerInfo)
from .stats import RatioEstimate, combine_speedups, paired_speedup, summarize
from .targets import BACKEND_CHOICES, resolve_target

DEFAULT_BATCHES = (1, 8)
DEFAULT_SEQ = 77
NOISY_CV = 0.25
_LABEL_RE = re.compile(r"^(?P<label>[A-Za-z0-9_.+-]+)=(?P<path>.+)$")
Log = Callable[[str], None]


@dataclass
class _Model:
    label: str
    role: str
    model: LoadedModel
    load_seconds: float
    rss_delta: Optional[int]
    towers: list[str] = field(default_factory=list)          # the towers benchmarked for this model
    declared: dict[str, Any] = field(default_factory=dict)   # tower -> I/O spec as loaded (before widening)
    backends: dict[str, Backend] = field(default_factory=dict)
    session_seconds: dict[str, float] = field(default_factory=dict)


def split_label(spec: Any) -> tuple[Optional[str], Any]:
    """``"int8=out/q"`` -> ("int8", "out/q"); ``(label, model)`` -> as is; a path or a LoadedModel -> (None, it)."""
    if isinstance(spec, tuple) and len(spec) == 2:
        return spec
    if isinstance(spec, (str, Path)):
        m = _LABEL_RE.match(str(spec))
        if m and not Path(str(spec)).exists():
            return m["label"], m["path"]
    return None, spec


def _default_label(src: Any) -> str:
    if isinstance(src, LoadedModel):
        src = src.source
    p = Path(str(src))
    if ":" in p.name and not p.exists():  # path/to/file.py:factory
        return p.name.rsplit(":", 1)[1]
    name = p.stem if p.suffix.lower() in (".onnx", ".ts", ".pt", ".pt2", ".engine", ".plan") else p.name
    return name or str(src)


def _unique(label: str, taken: set[str]) -> str:
    out, k = label, 2
    while out in taken:
        out, k = f"{label}#{k}", k + 1
    taken.add(out)
    return out


def _warm_imports(spec: Any) -> None:
    """Import the runtime a source needs before its load is timed (import time is not load time)."""
    import importlib

    if isinstance(spec, LoadedModel):
        return
    p = Path(str(spec))
    kinds: set[str] = set()
    if p.suffix.lower() == ".onnx":
        kinds.add("onnx")
    elif p.is_dir() and (p / MANIFEST_NAME).is_file():
        from ..artifacts import Manifest

        try:
            kinds = {"onnx" if a.kind == "onnx" else "torch" for a in Manifest.read(p).artifacts}
        except UserInputError:
            return
    else:
        kinds.add("torch")
    mods = {"onnx": ("onnx", "onnxruntime"), "torch": ("torch", "transformers")}
    for kind in kinds:
        for mod in mods[kind]:
            try:
                importlib.import_module(mod)
            except ImportError:  # the loader reports a missing runtime with its own hint
                pass


def _load(spec: Any, load_kwargs: dict[str, Any]) -> tuple[LoadedModel, float, Optional[int]]:
    from ..model.loaders import load

    _warm_imports(spec)
    rss0 = env.rss_bytes()
    t0 = time.perf_counter()
    model = spec if isinstance(spec, LoadedModel) else load(spec, **load_kwargs)
    secs = time.perf_counter() - t0
    rss1 = env.rss_bytes()
    return model, secs, (rss1 - rss0) if rss0 is not None and rss1 is not None else None


def _match_towers(ref: LoadedModel, ref_label: str, other: LoadedModel, label: str, towers: Sequence[str]) -> list[str]:
    names = [t for t in other.towers if not towers or t in towers]
    missing = [t for t in names if t not in ref.towers]
    if missing:
        raise UserInputError(f"reference {ref_label!r} has no tower {missing[0]!r} (its towers: "
                             f"{', '.join(ref.towers)}), but {label!r} has towers {', '.join(other.towers)}",
                             hint="benchmark against the checkpoint the artifact was made from, or pick --tower")
    for t in names:
        a, r = set(other.towers[t].spec.input_names), set(ref.towers[t].spec.input_names)
        if a != r:
            raise UserInputError(f"tower {t!r}: {label!r} takes inputs {sorted(a)} but reference {ref_label!r} "
                                 f"takes {sorted(r)}", hint="the reference must have the same towers and inputs")
    return names


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


def _widen_guessed_dims(model: LoadedModel) -> dict[str, Any]:
    """A bare ``.onnx`` file declares no dim ranges (the loader guesses [1, 8]): trust explicit sizes there
    (a shape the graph cannot take fails at its first run). Returns the original specs, for defaults."""
    original = {name: t.spec for name, t in model.towers.items()}
    if model.format == "onnx":
        for t in model.towers.values():
            t.spec = t.spec.model_copy(update={"dims": {d: (lo, max(hi, 1 << 31)) for d, (lo, hi) in t.spec.dims.items()}})
    return original


def _check_sizes(spec: Any, sizes: dict[str, int], label: str, tower: str) -> None:
    """SpecError when ``sizes`` is outside the tower's declared dims."""
    try:
        spec.resolve(sizes)
    except SpecError as exc:
        raise SpecError(f"{label} / tower {tower!r}: {exc.message}", hint=exc.hint) from None


def _tower_info(m: _Model, name: str) -> TowerInfo:
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


def _speedup(est: RatioEstimate, baseline: str, clock: str) -> Speedup:
    return Speedup(baseline=baseline, ratio=est.ratio, ci_low=est.low, ci_high=est.high,
                   confidence=est.confidence, rounds=est.rounds, clock=clock)


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
    if not artifacts:
        raise UserInputError("nothing to benchmark", hint="pass at least one ARTIFACT")
    if backend not in BACKEND_CHOICES:
        raise UserInputError(f"unknown backend {backend!r}", hint=f"choose one of {', '.join(BACKEND_CHOICES)}")
    for name, vals in (("batch", batches), ("seq", seqs)):
        if vals is not None and (not vals or any(int(v) < 1 for v in vals)):
            raise UserInputError(f"--{name} needs positive integers, got {list(vals)}")
    templates = list(templates or [DEFAULT_TEMPLATE])
    bad = [t for t in templates if "{label}" not in t]
    if bad:
        raise UserInputError(f"template {bad[0]!r} has no '{{label}}' placeholder", hint='e.g. "a photo of a {label}."')
    profile = resolve_target(target)
    load = env.load_average()
    busy = load[0] if load and load[0] > env.available_cores() else None
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

    # ---- load ---------------------------------------------------------------------------------------
    taken: set[str] = set()
    has_ref = reference is not None
    models: list[_Model] = []
    sources = ([(reference, "reference")] if has_ref else []) + [(a, "artifact") for a in artifacts]
    for spec, role in sources:
        lab, src = split_label(spec)
        label = _unique(lab or _default_label(src), taken)
        log(f"loading {label} ({src if not isinstance(src, LoadedModel) else src.source})")
        model, secs, rss = _load(src, load_kwargs or {})
        models.append(_Model(label, role, model, secs, rss, declared=_widen_guessed_dims(model)))

    def requested(m: _Model) -> list[str]:
        return [t for t in m.model.towers if not towers or t in towers]

    base = models[0]
    if has_ref:
        base.model.select(towers)  # every requested tower must exist in the reference
        base.towers = requested(base)
        for m in models[1:]:
            m.towers = _match_towers(base.model, base.label, m.model, m.label, towers)
        if not any(m.towers for m in models[1:]):
            raise UserInputError("the artifacts share no tower with the reference", hint="check --tower")
    else:  # no reference: artifacts may hold different towers (e.g. vision.onnx + text.onnx)
        for m in models:
            m.towers = requested(m)
        known = {t for m in models for t in m.towers}
        missing = [t for t in towers if t not in known]
        if missing:
            raise UserInputError(f"no artifact has a tower named {missing[0]!r}",
                                 hint=f"towers are: {', '.join(sorted(known))}")

    # ---- sizes (validated against every contender's spec before any run) ---------------------------------
    # time the towers some artifact has (a reference tower nobody is compared on is only used for accuracy)
    timed = models[1:] if has_ref else models
    all_towers = list(dict.fromkeys(t for m in timed for t in m.towers))
    grid: dict[str, list[dict[str, int]]] = {}
    for t in all_towers:
        owners = [m for m in models if t in m.towers]
        grid[t] = size_grid(owners[0].declared[t], batches, seqs)
        for m in owners:
            for sizes in grid[t]:
                _check_sizes(m.model.towers[t].spec, sizes, m.label, t)

    # ---- backends ---------------------------------------------------------------------------------------
    for m in models:
        rss0 = env.rss_bytes()
        for t in m.towers:
            tower = m.model.towers[t]
            # --backend picks the artifacts' runtime; a reference it cannot run (torch vs onnxruntime) uses auto
            req = backend if m.role == "artifact" or backend == "auto" or \
                tower.kind in backend_class(backend).kinds else "auto"
            t0 = time.perf_counter()
            m.backends[t] = create_backend(tower, req, profile, threads=threads)
            m.session_seconds[t] = time.perf_counter() - t0
        rss1 = env.rss_bytes()
        if m.rss_delta is not None and rss0 is not None and rss1 is not None:
            m.rss_delta += rss1 - rss0  # sessions / modules moved to the device are part of loading
    baseline = base.label

    # ---- accuracy ---------------------------------------------------------------------------------------
    acc = None
    if samples is not None:
        from .preprocess import processor_dir

        proc = processor_dir([m.model for m in models], processor)
        log(f"accuracy on {len(samples)} samples of {data}")
        acc = evaluate([Contestant(m.label, m.backends) for m in models], baseline, samples, str(data), proc,
                       templates, log=log)

    # ---- latency ----------------------------------------------------------------------------------------
    from .jetson import TelemetrySession  # Jetson power/energy: None unless tegrastats is on PATH

    telemetry = TelemetrySession.start(timing.telemetry_interval_ms, timing.energy_window_s, log=log)
    latency: list[LatencyResult] = []
    per_artifact: dict[str, list[RatioEstimate]] = {}
    warnings: list[str] = []
    noisy: list[tuple[float, str]] = []
    from .cpu_check import NoiseProbe, noise_assessment, round_ratio_cv, target_cpu_warnings

    warnings += target_cpu_warnings(models, base if has_ref else None, log)  # INT8 made for another ISA
    ratio_cvs: list[float] = []  # scatter of each config's per-round speedup ratios (noise detection)
    steal_probe = NoiseProbe().start()
    for t in all_towers:
        owners = [m for m in models if t in m.backends]
        ref_spec = owners[0].model.towers[t].spec
        for sizes in grid[t]:
            feeds = ref_spec.dummy_inputs(sizes, seed=timing.seed)
            contenders = [Contender(m.label, m.backends[t], feeds) for m in owners]
            desc = f"{t} " + " ".join(f"{k}={v}" for k, v in sizes.items())
            meas = _measure_with_progress(contenders, timing, desc, quiet)
            batch = sizes.get(ref_spec.batch_dim() or "", 1)
            seq = next((sizes[d] for d in _seq_dims(ref_spec) if d in sizes), None)
            if telemetry is not None:
                telemetry.after_config(contenders, meas, t, batch, seq)
            base_c = contenders[0]
            for c in contenders:
                stats = LatencyStats(**summarize(c.samples, items_per_run=batch))
                cpu_stats = LatencyStats(**summarize(c.cpu_samples, items_per_run=batch)) \
                    if profile.device == "cpu" and c.cpu_samples and min(c.cpu_samples) > 0 else None
                sp = None
                if c is not base_c:
                    est = paired_speedup(base_c.clock_rounds(timing.clock), c.clock_rounds(timing.clock),
                                         confidence=timing.confidence, n_boot=timing.bootstrap, seed=timing.seed)
                    per_artifact.setdefault(c.label, []).append(est)
                    ratio_cvs.append(round_ratio_cv(base_c.clock_rounds(timing.clock), c.clock_rounds(timing.clock)))
                    sp = _speedup(est, base_c.label, timing.clock)
                latency.append(LatencyResult(
                    artifact=c.label, tower=t, backend=c.backend.name, batch=batch, seq=seq, sizes=sizes, stats=stats,
                    cpu_stats=cpu_stats,
                    first_run_ms=c.first_run_s * 1e3, warmup_runs=len(c.warmup_times), rounds=meas.rounds,
                    block_runs=c.block, hit_max_time=meas.hit_max_time, peak_rss_bytes=c.peak_rss,
                    peak_rss_delta_bytes=c.peak_rss_delta, gpu_memory=c.gpu_memory, speedup=sp))
                if stats.cv > NOISY_CV:
                    noisy.append((stats.cv, f"{c.label} / {desc}"))
            if meas.hit_max_time:
                warnings.append(f"{desc}: stopped at max_time_s={timing.max_time_s} before min runs/time were met")
    latency_gate, noise_warnings = noise_assessment(steal_probe.stop(), ratio_cvs, timing.clock, max_latency_regression)
    warnings += noise_warnings
    if noisy:
        worst = max(noisy)
        warnings.append(f"{len(noisy)} of {len(latency)} timings are noisy (CV > {NOISY_CV}; worst {worst[0]:.2f} for "
                        f"{worst[1]}): the machine is busy; read the paired speedup ratios, not absolute times")
    if profile.device == "cpu" and timing.clock == "wall" and busy is not None:
        warnings.append(f"the machine was busy (load average {busy:.1f} on {env.available_cores()} cores): wall-clock "
                        "timings include waits for other processes; with several threads per run these can dominate. "
                        "For comparisons on shared machines use --threads 1 --clock cpu")
    speedups = {lab: _speedup(combine_speedups(ests, timing.confidence), baseline, timing.clock)
                for lab, ests in per_artifact.items()}

    artifacts_info = [ArtifactInfo(label=m.label, source=m.model.source, format=m.model.format, role=m.role,
                                   load_seconds=round(m.load_seconds, 4), size_on_disk_bytes=m.model.size_on_disk(),
                                   rss_load_delta_bytes=m.rss_delta,
                                   towers={t: _tower_info(m, t) for t in m.backends})
                      for m in models]
    for m in models:
        for b in m.backends.values():
            b.close()
    from .. import __version__

    used_batches = sorted({r.batch for r in latency})
    used_seqs = sorted({r.seq for r in latency if r.seq is not None}) or None
    config = BenchConfig(target=profile.name, backend=backend, batches=list(batches or used_batches),
                         seqs=list(seqs) if seqs else used_seqs,
                         towers=list(towers), threads=threads, data=str(data) if data else None, data_limit=data_limit,
                         templates=templates, processor=str(processor) if processor else None,
                         reference=base.model.source if has_ref else None, timing=timing)
    report = BenchReport(
        mmdk_version=__version__, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(time.perf_counter() - t_begin, 3), config=config, target=profile,
        environment=env.fingerprint(threads), reference=baseline if has_ref else None, baseline=baseline,
        artifacts=artifacts_info, latency=latency, speedups=speedups, scenarios=scenarios(latency), accuracy=acc,
        warnings=warnings, telemetry=telemetry.finish() if telemetry is not None else None)
    report.gates = bench_gates(report, latency_gate, max_accuracy_drop)
    report.passed = not report.failed_gates()
    return report


def _measure_with_progress(contenders: list[Contender], timing: TimingConfig, desc: str, quiet: bool) -> Any:
    if quiet:
        return measure(contenders, timing)
    from .._progress import progress_bar

    total = estimate_rounds(timing)
    with progress_bar(total=total, desc=f"bench {desc}", unit="round") as bar:
        def on_round(k: int, _elapsed: float) -> None:
            if k <= bar.total:
                bar.update(1)
        return measure(contenders, timing, on_round=on_round)


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
