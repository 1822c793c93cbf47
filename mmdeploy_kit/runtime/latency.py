"""The timing engine: warm-up, then interleaved rounds across artifacts until enough runs and time.

For one configuration (tower x batch x seq) every contender first gets its cold first run and its
warm-up on its own (peak memory is read there), then rounds alternate between contenders - A B, B A,
A B, ... - each contender running a *block* of back-to-back inferences for about ``round_time_s``
(time-bounded, so a descheduled run on a loaded machine cannot stretch a round).
Rounds stop once every contender has ``min_runs`` runs and ``min_time_s`` of timed work and at least
``min_rounds`` rounds have passed (or after ``max_time_s``) - and, with ``precision`` set (adaptive length),
once every contender's speedup interval over the first contender is within +-precision of its ratio.
Paired rounds give the speedup ratios.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import MmdkError, UserInputError
from . import env
from .backends.base import Backend
from .schema import TimingConfig


class BenchRunError(UserInputError):
    """A backend could not run a tower at a requested shape."""


@dataclass
class Contender:
    label: str
    backend: Backend
    feeds: dict[str, np.ndarray]
    prepared: Any = None
    first_run_s: float = 0.0
    warmup_times: list[float] = field(default_factory=list)
    rounds: list[list[float]] = field(default_factory=list)       # wall-clock seconds per run, per round
    cpu_rounds: list[list[float]] = field(default_factory=list)   # process CPU seconds of the same runs
    peak_rss: Optional[int] = None
    peak_rss_delta: Optional[int] = None
    gpu_memory: dict[str, int] = field(default_factory=dict)

    @property
    def samples(self) -> list[float]:
        return [t for r in self.rounds for t in r]

    @property
    def cpu_samples(self) -> list[float]:
        return [t for r in self.cpu_rounds for t in r]

    def clock_rounds(self, clock: str) -> list[list[float]]:
        return self.cpu_rounds if clock == "cpu" else self.rounds

    @property
    def block(self) -> int:
        """Median runs per interleaved block."""
        return int(np.median([len(r) for r in self.rounds])) if self.rounds else 0

    @property
    def timed_s(self) -> float:
        return float(sum(sum(r) for r in self.rounds))


@dataclass
class Measurement:
    contenders: list[Contender]
    rounds: int
    seconds: float
    hit_max_time: bool


MAX_BLOCK_RUNS = 10_000


def _timed_block(c: Contender, budget_s: float) -> tuple[list[float], list[float]]:
    """Back-to-back runs until their summed wall time reaches ``budget_s`` (at least one run).

    Returns wall-clock and process-CPU seconds per run. CPU time counts the work of every thread of
    this process during the run and none of the time spent preempted by other processes, so on a
    shared CPU machine it measures compute that wall time buries under scheduling noise.
    """
    backend, prepared = c.backend, c.prepared
    walls: list[float] = []
    cpus: list[float] = []
    total = 0.0
    cpu_clock = time.process_time
    while total < budget_s and len(walls) < MAX_BLOCK_RUNS:
        c0 = cpu_clock()
        t = backend.time_once(prepared)
        cpus.append(cpu_clock() - c0)
        walls.append(t)
        total += t
    return walls, cpus


def warm_up(c: Contender, cfg: TimingConfig) -> None:
    """First (cold) run, warm-up runs, peak memory and the block size for the interleaved rounds."""
    rss0 = env.rss_bytes()
    resettable = env.reset_peak_rss()
    c.backend.reset_memory_peak()
    try:
        c.prepared = c.backend.prepare(c.feeds)
        c.first_run_s = c.backend.time_once(c.prepared)
    except MmdkError:
        raise
    except Exception as exc:  # noqa: BLE001 - runtimes raise their own types; report one line
        shapes = {k: list(v.shape) for k, v in c.feeds.items()}
        msg = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:240]
        raise BenchRunError(f"{c.label}: tower {c.backend.tower.name!r} failed on inputs {shapes}: {msg}",
                            hint="pick --batch/--seq the model supports (see mmdk inspect)") from None
    c.warmup_times = [c.backend.time_once(c.prepared) for _ in range(cfg.warmup_runs)]
    peak = env.peak_rss_bytes()
    c.peak_rss = peak
    c.peak_rss_delta = (peak - rss0) if (resettable and peak is not None and rss0 is not None) else None
    c.gpu_memory = c.backend.memory()


def measure(contenders: Sequence[Contender], cfg: TimingConfig,
            on_round: Optional[Callable[[int, float], None]] = None) -> Measurement:
    """Warm up each contender, then run interleaved rounds (see the module docstring)."""
    contenders = list(contenders)
    for c in contenders:
        warm_up(c, cfg)
    t_start = time.perf_counter()
    rounds = 0
    hit_max = False
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection inside a timed block would land on whichever contender is running
    try:
        while True:
            order = contenders if rounds % 2 == 0 else contenders[::-1]
            for c in order:
                walls, cpus = _timed_block(c, cfg.round_time_s)
                c.rounds.append(walls)
                c.cpu_rounds.append(cpus)
            rounds += 1
            elapsed = time.perf_counter() - t_start
            if on_round is not None:
                on_round(rounds, elapsed)
            done = rounds >= cfg.min_rounds and all(
                len(c.samples) >= cfg.min_runs and c.timed_s >= cfg.min_time_s for c in contenders)
            if done and cfg.precision is not None:
                done = precision_reached(contenders, cfg) <= cfg.precision * 100
            if done:
                break
            if elapsed >= cfg.max_time_s:
                hit_max = True
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return Measurement(contenders, rounds, time.perf_counter() - t_start, hit_max)


def precision_reached(contenders: Sequence[Contender], cfg: TimingConfig, n_boot: int = 300) -> float:
    """The widest speedup interval (vs the first contender) as +-% of its ratio; 0 with one contender."""
    from .stats import paired_speedup

    base = contenders[0].clock_rounds(cfg.clock)
    if len(base) < 3:
        return float("inf")
    worst = 0.0
    for c in contenders[1:]:
        est = paired_speedup(base, c.clock_rounds(cfg.clock), cfg.confidence, n_boot=n_boot, seed=cfg.seed)
        worst = max(worst, est.half_width_pct)
    return worst


def estimate_rounds(cfg: TimingConfig) -> int:
    """A rough round count for progress bars: each contender times about ``round_time_s`` per round."""
    return max(cfg.min_rounds, int(np.ceil(cfg.min_time_s / cfg.round_time_s)))
