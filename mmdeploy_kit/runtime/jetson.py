"""Jetson telemetry: power mode (``nvpmodel -q``), clock locking (``jetson_clocks --show``), and ``tegrastats``
sampled during the timed runs -> average/peak power per rail, energy per inference (mJ), items per joule,
GPU/EMC frequency and RAM.

How energy is measured: the interleaved latency rounds alternate artifacts every ~50 ms, far below
tegrastats' sampling period, so power cannot be attributed to one artifact there. After a shape's timed
rounds, each artifact therefore runs alone, back to back, for an *energy window* (``energy_window_s``, several
sampling periods) while tegrastats samples; ``energy = mean total power x window seconds`` and
``mJ per item = energy / (runs x batch)``. The idle power before the first shape is recorded too, so the
energy above idle is reported beside it. The total is the module input rail (``VDD_IN`` on Orin Nano/NX,
``POM_5V_IN`` on older boards); boards without one (AGX Orin: ``VDD_GPU_SOC``, ``VDD_CPU_CV``,
``VIN_SYS_5V0``, ...) get the sum of their rails, and the report says which.

Everything here runs wherever a ``tegrastats`` executable is on PATH (a Jetson; tests put a fake one there).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from . import env
from .schema import EnergyResult, RailPower, Telemetry

DEFAULT_INTERVAL_MS = 100
DEFAULT_ENERGY_WINDOW_S = 1.0
MIN_WINDOW_SAMPLES = 3
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # module input: the total, where the board measures it

# ---- tegrastats lines -------------------------------------------------------------------------------------
# e.g. "VDD_IN 4673mW/4673mW", "VDD_GPU_SOC 3034mW/3049mW/3412mW" (current/average[/peak]), "POM_5V_IN 1812/1812"
_RAIL_RE = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+(?:\.\d+)?)(mW|W)?/(\d+(?:\.\d+)?)(?:mW|W)?"
                      r"(?:/(\d+(?:\.\d+)?)(?:mW|W)?)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "LFB"}
_RAM_RE = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP_RE = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU_RE = re.compile(r"\bCPU \[([^\]]*)\]")
_GR3D_RE = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+)(?:,\d+)*\]?)?")
_EMC_RE = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP_RE = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_STAMP_RE = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")


@dataclass
class TegraSample:
    """One tegrastats line. Power in milliwatts (instantaneous reading per rail)."""

    t: float = 0.0                                      # monotonic seconds when the line arrived
    stamp: Optional[str] = None                         # the line's own timestamp (JetPack 5+), if printed
    ram_used_mb: Optional[int] = None
    ram_total_mb: Optional[int] = None
    swap_used_mb: Optional[int] = None
    cpu_load_pct: list[Optional[int]] = field(default_factory=list)   # None: core off
    cpu_freq_mhz: list[Optional[int]] = field(default_factory=list)
    gpu_load_pct: Optional[int] = None
    gpu_freq_mhz: Optional[int] = None                  # printed only when tegrastats runs as root
    emc_load_pct: Optional[int] = None                  # idem
    emc_freq_mhz: Optional[int] = None
    temps_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, float] = field(default_factory=dict)          # current reading
    rails_avg_mw: dict[str, float] = field(default_factory=dict)      # tegrastats' own running average

    def total_mw(self) -> tuple[Optional[float], str]:
        """(total power, where it comes from): the input rail, else the sum of all rails."""
        for rail in INPUT_RAILS:
            if rail in self.rails_mw:
                return self.rails_mw[rail], rail
        if not self.rails_mw:
            return None, "none"
        return sum(self.rails_mw.values()), "sum of rails (no input rail on this module)"


def _mw(value: str, unit: Optional[str]) -> float:
    return float(value) * (1000.0 if unit == "W" else 1.0)


def parse_tegrastats_line(line: str, t: float = 0.0) -> Optional[TegraSample]:
    """Parse one line of ``tegrastats`` output (JetPack 4-6 formats); None for a line that is not one."""
    line = line.strip()
    ram = _RAM_RE.search(line)
    rails = [m for m in _RAIL_RE.finditer(line) if m.group(1) not in _NOT_RAILS]
    if ram is None and not rails:
        return None
    s = TegraSample(t=t)
    stamp = _STAMP_RE.match(line)
    s.stamp = stamp.group(1) if stamp else None
    if ram:
        s.ram_used_mb, s.ram_total_mb = int(ram.group(1)), int(ram.group(2))
    swap = _SWAP_RE.search(line)
    if swap:
        s.swap_used_mb = int(swap.group(1))
    cpu = _CPU_RE.search(line)
    if cpu:
        for core in cpu.group(1).split(","):
            core = core.strip()
            m = re.match(r"(\d+)%(?:@(\d+))?", core)
            s.cpu_load_pct.append(int(m.group(1)) if m else None)
            s.cpu_freq_mhz.append(int(m.group(2)) if m and m.group(2) else None)
    gr3d = _GR3D_RE.search(line)
    if gr3d:
        s.gpu_load_pct = int(gr3d.group(1))
        s.gpu_freq_mhz = int(gr3d.group(2)) if gr3d.group(2) else None
    emc = _EMC_RE.search(line)
    if emc:
        s.emc_load_pct = int(emc.group(1))
        s.emc_freq_mhz = int(emc.group(2)) if emc.group(2) else None
    s.temps_c = {m.group(1): float(m.group(2)) for m in _TEMP_RE.finditer(line)}
    for m in rails:
        s.rails_mw[m.group(1)] = _mw(m.group(2), m.group(3))
        s.rails_avg_mw[m.group(1)] = _mw(m.group(4), m.group(3))
    return s


# ---- nvpmodel / jetson_clocks ----------------------------------------------------------------------------
def parse_nvpmodel(text: str) -> tuple[Optional[str], Optional[int]]:
    """``nvpmodel -q`` -> (mode name, mode id): "NV Power Mode: 15W" then the id on its own line."""
    name = None
    mode_id = None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        m = re.match(r"NV Power Mode\s*:\s*(.+)$", ln)
        if m:
            name = m.group(1).strip()
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                mode_id = int(lines[i + 1])
            break
    return name, mode_id


@dataclass
class ClockState:
    locked: Optional[bool]
    clocks_mhz: dict[str, dict[str, float]]      # "gpu" / "emc" / "cpu0"... -> {min, max, current}
    power_mode: Optional[str] = None


def parse_jetson_clocks(text: str) -> ClockState:
    """``jetson_clocks --show`` -> whether clocks are locked: every online CPU and the GPU at
    MinFreq == MaxFreq == CurrentFreq (what ``jetson_clocks`` sets), and EMC ``FreqOverride=1``."""
    clocks: dict[str, dict[str, float]] = {}
    checks: list[bool] = []
    power_mode = None
    for ln in text.splitlines():
        ln = ln.strip()
        m = re.match(r"(cpu\d+):\s*Online=(\d)\s+Governor=\S+\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", ln)
        if m:
            if m.group(2) == "1":
                lo, hi, cur = (int(m.group(k)) for k in (3, 4, 5))   # kHz
                clocks[m.group(1)] = {"min": lo / 1e3, "max": hi / 1e3, "current": cur / 1e3}
                checks.append(lo == hi == cur)
            continue
        m = re.match(r"(GPU|EMC)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)(?:\s+FreqOverride=(\d))?", ln)
        if m:
            lo, hi, cur = (int(m.group(k)) for k in (2, 3, 4))       # Hz
            clocks[m.group(1).lower()] = {"min": lo / 1e6, "max": hi / 1e6, "current": cur / 1e6}
            if m.group(1) == "GPU":
                checks.append(lo == hi == cur)
            elif m.group(5) is not None:
                checks.append(m.group(5) == "1")
            continue
        m = re.match(r"NV Power Mode\s*:\s*(.+)$", ln)
        if m:
            power_mode = m.group(1).strip()
    return ClockState(locked=all(checks) if checks else None, clocks_mhz=clocks, power_mode=power_mode)


def _run(cmd: list[str], timeout: float = 10.0) -> Optional[str]:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 and res.stdout.strip() else None


def power_mode() -> tuple[Optional[str], Optional[int]]:
    text = _run(["nvpmodel", "-q"])
    return parse_nvpmodel(text) if text else (None, None)


def clock_state() -> Optional[ClockState]:
    """``jetson_clocks --show`` needs root: tried directly, then through passwordless ``sudo -n``."""
    text = _run(["jetson_clocks", "--show"]) or _run(["sudo", "-n", "jetson_clocks", "--show"])
    return parse_jetson_clocks(text) if text else None


# ---- energy arithmetic -----------------------------------------------------------------------------------
def rail_stats(samples: Sequence[TegraSample]) -> list[RailPower]:
    """Average and peak power per rail (W) over ``samples``."""
    names = list(dict.fromkeys(r for s in samples for r in s.rails_mw))
    out = []
    for name in names:
        vals = [s.rails_mw[name] for s in samples if name in s.rails_mw]
        out.append(RailPower(rail=name, avg_w=round(sum(vals) / len(vals) / 1e3, 4), peak_w=round(max(vals) / 1e3, 4)))
    return out


def mean_total_w(samples: Sequence[TegraSample]) -> Optional[float]:
    vals = [v for v in (s.total_mw()[0] for s in samples) if v is not None]
    return sum(vals) / len(vals) / 1e3 if vals else None


def energy(avg_power_w: Optional[float], seconds: float, runs: int, batch: int,
           idle_power_w: Optional[float] = None) -> dict[str, Optional[float]]:
    """Energy figures for ``runs`` inferences of ``batch`` items that took ``seconds`` at ``avg_power_w``:
    joules, mJ per run, mJ per item, items per joule, and mJ per item above the idle power."""
    items = runs * batch
    if avg_power_w is None or seconds <= 0 or items <= 0:
        return {"energy_j": None, "mj_per_run": None, "mj_per_item": None, "items_per_joule": None,
                "mj_per_item_above_idle": None}
    joules = avg_power_w * seconds
    above = None
    if idle_power_w is not None:
        above = max(avg_power_w - idle_power_w, 0.0) * seconds * 1e3 / items
    return {"energy_j": joules, "mj_per_run": joules * 1e3 / runs, "mj_per_item": joules * 1e3 / items,
            "items_per_joule": items / joules if joules > 0 else None, "mj_per_item_above_idle": above}


# ---- the sampler -----------------------------------------------------------------------------------------
class TegrastatsSampler:
    """Runs ``tegrastats --interval MS`` in the background (line-buffered through ``stdbuf`` when present)
    and keeps every parsed line with its arrival time; :meth:`window` returns the samples of a time span."""

    def __init__(self, interval_ms: int = DEFAULT_INTERVAL_MS, executable: str = "tegrastats"):
        self.interval_ms = int(interval_ms)
        self.executable = executable
        self.samples: list[TegraSample] = []
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "TegrastatsSampler":
        cmd = [self.executable, "--interval", str(self.interval_ms)]
        if shutil.which("stdbuf"):
            cmd = ["stdbuf", "-oL", *cmd]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, text=True, bufsize=1)
        weakref.finalize(self, _kill, self._proc)
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            s = parse_tegrastats_line(line, t=time.monotonic())
            if s is not None:
                with self._lock:
                    self.samples.append(s)

    def wait_for_samples(self, n: int = 1, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self.samples) >= n:
                    return True
            if self._proc is not None and self._proc.poll() is not None:
                return False
            time.sleep(0.01)
        return False

    def window(self, t0: float, t1: float) -> list[TegraSample]:
        with self._lock:
            return [s for s in self.samples if t0 <= s.t <= t1]

    def stop(self) -> None:
        if self._proc is not None:
            _kill(self._proc)
        if self._thread is not None:
            self._thread.join(timeout=2)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- a telemetry session during one benchmark -------------------------------------------------------------
class TelemetrySession:
    """Started by the harness before the timed runs when ``tegrastats`` is on PATH; after each shape's
    interleaved rounds :meth:`after_config` records that span and runs one energy window per artifact;
    :meth:`finish` stops the sampler and returns the report section."""

    def __init__(self, sampler: TegrastatsSampler, energy_window_s: float = DEFAULT_ENERGY_WINDOW_S,
                 log: Optional[Callable[[str], None]] = None):
        self.sampler = sampler
        self.energy_window_s = float(energy_window_s)
        self.log = log or (lambda _m: None)
        self.timed: list[tuple[float, float]] = []
        self.energy: list[EnergyResult] = []
        self.warnings: list[str] = []
        self.idle_power_w: Optional[float] = None
        self.mode, self.mode_id = power_mode()
        self.clocks = clock_state()

    @classmethod
    def start(cls, interval_ms: int = DEFAULT_INTERVAL_MS, energy_window_s: float = DEFAULT_ENERGY_WINDOW_S,
              log: Optional[Callable[[str], None]] = None) -> Optional["TelemetrySession"]:
        """A running session, or None where there is no ``tegrastats`` (not a Jetson)."""
        if shutil.which("tegrastats") is None:
            return None
        sampler = TegrastatsSampler(interval_ms).start()
        session = cls(sampler, energy_window_s, log)
        if not sampler.wait_for_samples(1, timeout=max(5.0, 20 * interval_ms / 1e3)):
            session.warnings.append("tegrastats printed no readable line: no power or energy figures")
            return session
        (log or (lambda _m: None))(f"tegrastats sampling every {interval_ms} ms; idle power for "
                                   f"{session.energy_window_s:.1f} s")
        t0 = time.monotonic()
        time.sleep(session.energy_window_s)
        session.idle_power_w = mean_total_w(sampler.window(t0, time.monotonic()))
        return session

    def after_config(self, contenders: Sequence[Any], meas: Any, tower: str, batch: int, seq: Optional[int]) -> None:
        """Record the span of the interleaved rounds just measured, then one energy window per contender
        (``contender.backend.time_once(contender.prepared)`` back to back)."""
        t1 = time.monotonic()
        self.timed.append((t1 - float(meas.seconds), t1))
        for c in contenders:
            runs = 0
            t0 = time.monotonic()
            while True:
                c.backend.time_once(c.prepared)
                runs += 1
                if time.monotonic() - t0 >= self.energy_window_s:
                    break
            t_end = time.monotonic()
            window = self.sampler.window(t0, t_end)
            avg = mean_total_w(window)
            peak = max((v for v in (s.total_mw()[0] for s in window) if v is not None), default=None)
            e = energy(avg, t_end - t0, runs, batch, self.idle_power_w)
            if len(window) < MIN_WINDOW_SAMPLES:
                self.warnings.append(f"{c.label} / {tower} b={batch}: only {len(window)} tegrastats sample(s) in the "
                                     f"{t_end - t0:.2f} s energy window; its energy figure is rough")
            self.energy.append(EnergyResult(
                artifact=c.label, tower=tower, batch=batch, seq=seq, seconds=round(t_end - t0, 4), runs=runs,
                items=runs * batch, samples=len(window), latency_ms_mean=round((t_end - t0) / runs * 1e3, 4),
                avg_power_w=_r(avg), peak_power_w=_r(peak / 1e3 if peak is not None else None),
                energy_mj_per_run=_r(e["mj_per_run"]), energy_mj_per_item=_r(e["mj_per_item"]),
                items_per_joule=_r(e["items_per_joule"]), energy_mj_per_item_above_idle=_r(e["mj_per_item_above_idle"]),
                rails={r.rail: r.avg_w for r in rail_stats(window)}))

    def finish(self) -> Telemetry:
        self.sampler.stop()
        timed = [s for t0, t1 in self.timed for s in self.sampler.window(t0, t1)]
        jet = env.jetson_info()
        total_src = next((s.total_mw()[1] for s in self.sampler.samples if s.rails_mw), "none")

        def avg(vals: list[Optional[float]]) -> Optional[float]:
            v = [x for x in vals if x is not None]
            return round(sum(v) / len(v), 2) if v else None

        def peak(vals: list[Optional[float]]) -> Optional[float]:
            v = [x for x in vals if x is not None]
            return max(v) if v else None

        return Telemetry(
            interval_ms=self.sampler.interval_ms, energy_window_s=self.energy_window_s,
            model=jet.model if jet else None, l4t=jet.l4t if jet else None, jetpack=jet.jetpack if jet else None,
            power_mode=self.mode or (self.clocks.power_mode if self.clocks else None), power_mode_id=self.mode_id,
            clocks_locked=self.clocks.locked if self.clocks else None,
            clocks_mhz=self.clocks.clocks_mhz if self.clocks else {}, total_rail=total_src,
            idle_power_w=_r(self.idle_power_w), samples=len(timed), rails=rail_stats(timed),
            avg_power_w=_r(mean_total_w(timed)),
            peak_power_w=_r((peak([s.total_mw()[0] for s in timed]) or 0) / 1e3 if timed else None),
            gpu_load_pct_avg=avg([s.gpu_load_pct for s in timed]),
            gpu_freq_mhz_avg=avg([s.gpu_freq_mhz for s in timed]), gpu_freq_mhz_max=peak([s.gpu_freq_mhz for s in timed]),
            emc_freq_mhz_avg=avg([s.emc_freq_mhz for s in timed]), emc_load_pct_avg=avg([s.emc_load_pct for s in timed]),
            ram_used_mb_avg=avg([s.ram_used_mb for s in timed]), ram_used_mb_peak=peak([s.ram_used_mb for s in timed]),
            ram_total_mb=next((s.ram_total_mb for s in timed if s.ram_total_mb), None),
            energy=self.energy, warnings=self.warnings)


def _r(v: Optional[float], significant: int = 6) -> Optional[float]:
    """Round to significant digits (a fixed number of decimals cut 0.040847 mJ to 0.0408: a 0.1% error)."""
    return None if v is None else float(f"{float(v):.{significant}g}")


# ---- comparing reports -----------------------------------------------------------------------------------
def report_power_mode(report: Any) -> Optional[str]:
    """The nvpmodel mode a report was taken in (its telemetry, else its environment), None if not a Jetson."""
    t = getattr(report, "telemetry", None)
    if t is not None and t.power_mode:
        return t.power_mode
    jet = report.environment.jetson
    return jet.power_mode if jet is not None else None


def check_power_modes(base: Any, new: Any, allow: bool = False) -> Optional[str]:
    """Refuse (UserInputError) to compare two Jetson reports taken in different power modes; with ``allow``,
    return a warning instead. None when the modes match or either report is not from a Jetson."""
    from ..errors import UserInputError

    a, b = report_power_mode(base), report_power_mode(new)
    if a is None or b is None or a == b:
        return None
    msg = f"the reports were taken in different Jetson power modes ({a} vs {b}): latency and energy are not comparable"
    if not allow:
        raise UserInputError(msg, hint="rerun both in one mode (sudo nvpmodel -m N), or pass "
                                       "--allow-power-mode-mismatch")
    return msg
