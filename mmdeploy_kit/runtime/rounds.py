"""The latency stage of ``run_bench``: timed interleaved rounds per configuration, in this process or spread
over fresh worker processes (``--processes N``, ``workers.py``), then statistics, speedups and noise warnings.

With one process every configuration is measured here (``latency.measure``; ``--precision`` makes each
configuration's rounds continue until its speedup interval is that narrow). With several, worker processes
run one after another, each timing every configuration; the speedup interval resamples whole processes
(``stats.hierarchical_speedup``), and ``--precision`` adds processes until every artifact's headline speedup
is that precise or ``max_time_s`` x configurations is spent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..model.tower import LoadedModel
from . import env
from .latency import Contender, estimate_rounds, measure
from .schema import LatencyResult, LatencyStats, Speedup, TimingConfig
from .stats import RatioEstimate, combine_speedups, hierarchical_speedup, summarize

NOISY_CV = 0.25
MAX_PROCESSES = 40
Log = Callable[[str], None]


@dataclass
class Config:
    tower: str
    sizes: dict[str, int]
    owners: list[Any]                 # BenchModels with this tower, the baseline first
    batch: int
    seq: Optional[int]
    desc: str
    feeds: dict[str, Any] = field(default_factory=dict)
    runs: list[list[Contender]] = field(default_factory=list)   # per process: one Contender per owner
    rounds: int = 0
    seconds: float = 0.0
    hit_max_time: bool = False


@dataclass
class LatencyOutcome:
    latency: list[LatencyResult]
    speedups: dict[str, Speedup]
    warnings: list[str]
    latency_gate: Optional[float]
    processes: int
    precision_reached_pct: Optional[float]


def speedup_of(est: RatioEstimate, baseline: str, clock: str) -> Speedup:
    method = ("median of per-round ratios of block medians; percentile bootstrap over rounds" if est.units <= 1 else
              f"geometric mean over {est.units} worker processes of their median per-round ratio; hierarchical "
              "bootstrap (processes, then blocks of rounds) with a Student t interval")
    return Speedup(baseline=baseline, ratio=est.ratio, ci_low=est.low, ci_high=est.high, confidence=est.confidence,
                   rounds=est.rounds, clock=clock, method=method, processes=max(1, est.units),
                   half_width_pct=round(est.half_width_pct, 3))


def _estimate(cfg: Config, k: int, timing: TimingConfig) -> RatioEstimate:
    groups = [(run[0].clock_rounds(timing.clock), run[k].clock_rounds(timing.clock)) for run in cfg.runs]
    return hierarchical_speedup(groups, confidence=timing.confidence, n_boot=timing.bootstrap, seed=timing.seed)


def _headline(configs: Sequence[Config], timing: TimingConfig) -> dict[str, RatioEstimate]:
    per_artifact: dict[str, list[RatioEstimate]] = {}
    for cfg in configs:
        for k, m in enumerate(cfg.owners[1:], 1):
            per_artifact.setdefault(m.label, []).append(_estimate(cfg, k, timing))
    return {label: combine_speedups(ests, timing.confidence) for label, ests in per_artifact.items()}


def _per_worker_timing(timing: TimingConfig, processes: int) -> TimingConfig:
    """Each of ``processes`` workers takes its share of the requested runs/time (a few rounds at least)."""
    return timing.model_copy(update={"min_rounds": max(3, math.ceil(timing.min_rounds / processes)),
                                     "min_runs": max(1, math.ceil(timing.min_runs / processes)),
                                     "min_time_s": timing.min_time_s / processes, "precision": None})


def _measure_here(cfg: Config, timing: TimingConfig, quiet: bool) -> None:
    contenders = [Contender(m.label, m.backends[cfg.tower], cfg.feeds) for m in cfg.owners]
    if quiet:
        meas = measure(contenders, timing)
    else:
        from .._progress import progress_bar

        with progress_bar(total=estimate_rounds(timing), desc=f"bench {cfg.desc}", unit="round") as bar:
            def on_round(k: int, _elapsed: float) -> None:
                if k <= bar.total:
                    bar.update(1)
            meas = measure(contenders, timing, on_round=on_round)
    cfg.runs.append(contenders)
    cfg.rounds, cfg.seconds, cfg.hit_max_time = meas.rounds, meas.seconds, meas.hit_max_time


def _measure_in_workers(configs: list[Config], models: Sequence[Any], timing: TimingConfig, processes: int,
                        job_args: dict[str, Any], log: Log) -> int:
    from .workers import contenders_from, job_spec, run_worker

    job = job_spec(models, [(c.tower, c.sizes, [m.label for m in c.owners]) for c in configs], **job_args)
    per_worker = _per_worker_timing(timing, processes)
    budget = timing.max_time_s * len(configs)
    names = {m.label: m.backends[c.tower] for c in configs for m in c.owners}
    t0 = time.perf_counter()
    k = 0
    while True:
        result = run_worker(job, per_worker, k, timeout_s=budget * 2 + 600)
        k += 1
        for cfg, cs, raw in zip(configs, contenders_from(result, names), result["configs"]):
            cfg.runs.append(cs)
            cfg.rounds += int(raw["rounds"])
            cfg.seconds += float(raw["seconds"])
            cfg.hit_max_time = cfg.hit_max_time or bool(raw["hit_max_time"])
        elapsed = time.perf_counter() - t0
        if k < processes:
            log(f"worker process {k}/{processes} done ({elapsed:.0f} s)")
            continue
        if timing.precision is None:
            break
        reached = max((e.half_width_pct for e in _headline(configs, timing).values()), default=0.0)
        log(f"worker process {k} done ({elapsed:.0f} s): speedup intervals within +-{reached:.1f}% "
            f"(target +-{timing.precision * 100:g}%)")
        if reached <= timing.precision * 100:
            break
        if elapsed >= budget or k >= MAX_PROCESSES:
            break
    return k


def _result(cfg: Config, k: int, m: Any, sp: Optional[Speedup], device: str) -> LatencyResult:
    runs = [run[k] for run in cfg.runs]
    samples = [t for c in runs for t in c.samples]
    cpu = [t for c in runs for t in c.cpu_samples]
    stats = LatencyStats(**summarize(samples, items_per_run=cfg.batch))
    cpu_stats = LatencyStats(**summarize(cpu, items_per_run=cfg.batch)) if device == "cpu" and cpu and min(cpu) > 0 \
        else None
    peaks = [c.peak_rss for c in runs if c.peak_rss is not None]
    deltas = [c.peak_rss_delta for c in runs if c.peak_rss_delta is not None]
    blocks = [len(r) for c in runs for r in c.rounds]
    return LatencyResult(
        artifact=m.label, tower=cfg.tower, backend=m.backends[cfg.tower].name, batch=cfg.batch, seq=cfg.seq,
        sizes=cfg.sizes, stats=stats, cpu_stats=cpu_stats, first_run_ms=runs[0].first_run_s * 1e3,
        warmup_runs=len(runs[0].warmup_times), rounds=cfg.rounds, block_runs=int(np.median(blocks)) if blocks else 0,
        hit_max_time=cfg.hit_max_time, peak_rss_bytes=max(peaks) if peaks else None,
        peak_rss_delta_bytes=max(deltas) if deltas else None, gpu_memory=runs[0].gpu_memory, speedup=sp,
        processes=len(cfg.runs))


def measure_latency(models: Sequence[Any], configs: list[Config], *, timing: TimingConfig, profile: Any,
                    max_latency_regression: Optional[float], quiet: bool, log: Log, job_args: dict[str, Any],
                    telemetry: Any = None) -> LatencyOutcome:
    """Time every configuration, then build its LatencyResults, the per-artifact speedups and noise warnings."""
    from .cpu_check import NoiseProbe, noise_assessment, round_ratio_cv

    warnings: list[str] = []
    processes = timing.worker_processes()
    if processes > 1 and any(isinstance(m.spec, LoadedModel) for m in models if m.backends):
        if timing.processes is not None:  # asked for explicitly (the default just falls back)
            warnings.append("models passed as loaded objects cannot be reloaded by worker processes; all rounds "
                            "ran in this process (pass paths for --processes)")
        processes = 1
    if processes > 1 and telemetry is not None:
        warnings.append("Jetson power telemetry samples this process: all rounds ran in it (--processes 1)")
        processes = 1
    probe = NoiseProbe().start()
    if processes == 1:
        for cfg in configs:
            _measure_here(cfg, timing, quiet)
            if telemetry is not None:
                telemetry.after_config(cfg.runs[0], _Meas(cfg.rounds, cfg.seconds, cfg.hit_max_time), cfg.tower,
                                       cfg.batch, cfg.seq)
    else:
        log(f"timing in {processes} worker processes, one after another")
        processes = _measure_in_workers(configs, models, timing, processes, job_args, log)
    steal = probe.stop()

    latency: list[LatencyResult] = []
    ratio_cvs: list[float] = []
    noisy: list[tuple[float, str]] = []
    for cfg in configs:
        base = cfg.owners[0].label
        for k, m in enumerate(cfg.owners):
            sp = None
            if k > 0:
                sp = speedup_of(_estimate(cfg, k, timing), base, timing.clock)
                ratio_cvs += [round_ratio_cv(run[0].clock_rounds(timing.clock), run[k].clock_rounds(timing.clock))
                              for run in cfg.runs]
            r = _result(cfg, k, m, sp, profile.device)
            latency.append(r)
            if r.stats.cv > NOISY_CV:
                noisy.append((r.stats.cv, f"{m.label} / {cfg.desc}"))
        if cfg.hit_max_time:
            warnings.append(f"{cfg.desc}: stopped at max_time_s={timing.max_time_s} before min runs/time were met")
    baseline = configs[0].owners[0].label if configs else None
    speedups = {label: speedup_of(est, baseline or "", timing.clock) for label, est in _headline(configs, timing).items()}
    reached = max((s.half_width_pct or 0.0 for s in speedups.values()), default=None)
    if timing.precision is not None and reached is not None and reached > timing.precision * 100:
        warnings.append(f"precision: the speedup intervals reached +-{reached:.1f}%, not the +-{timing.precision * 100:g}% "
                        f"asked for, within max_time_s={timing.max_time_s:g} s per shape ({processes} process(es)); "
                        "compare and the gates take the interval into account")
    latency_gate, noise_warnings = noise_assessment(steal, ratio_cvs, timing.clock, max_latency_regression)
    warnings += noise_warnings
    if noisy:
        worst = max(noisy)
        warnings.append(f"{len(noisy)} of {len(latency)} timings are noisy (CV > {NOISY_CV}; worst {worst[0]:.2f} for "
                        f"{worst[1]}): the machine is busy; read the paired speedup ratios, not absolute times")
    return LatencyOutcome(latency, speedups, warnings, latency_gate, processes, reached)


@dataclass
class _Meas:
    """What Jetson telemetry reads of a measurement."""

    rounds: int
    seconds: float
    hit_max_time: bool


def busy_load() -> Optional[float]:
    load = env.load_average()
    return load[0] if load and load[0] > env.available_cores() else None
