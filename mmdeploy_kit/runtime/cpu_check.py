"""Bench-time checks that the CPU and the machine are what the numbers assume (torch-free).

- ``target_cpu_warnings``: an INT8 artifact quantized for another instruction set (its manifest's
  ``metrics.target_cpu``; ``mmdk quantize --target-cpu``) runs through other ONNX Runtime kernels here
  (VNNI vs AVX2's saturating ``vpmaddubsw`` vs ARM dot products), so its accuracy is re-verified on this
  machine against the reference and reported next to the figure the manifest recorded.
- ``steal_fraction`` / ``NoiseProbe``: CPU time the hypervisor gave to other guests (``/proc/stat`` steal)
  during the run; with the CV of the per-round speedup ratios it tells whether wall-clock gates can be
  trusted (``noise_assessment``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .metrics import drift

STEAL_NOISY = 0.05       # > 5% of CPU time stolen by other guests: wall-clock timings are unreliable
RATIO_CV_NOISY = 0.10    # per-round speedup ratios scattering more than 10% (coefficient of variation)


# ---- instruction set ------------------------------------------------------------------------------------
def _manifest_isa(model: Any) -> Optional[str]:
    manifest = getattr(model, "details", {}).get("manifest")
    tc = (manifest.metrics or {}).get("target_cpu") if manifest is not None else None
    return tc.get("isa") if isinstance(tc, dict) else None


def target_cpu_warnings(models: Sequence[Any], reference: Optional[Any], log: Callable[[str], None],
                        here: Optional[str] = None) -> list[str]:
    """One warning per artifact whose manifest names another ISA than this machine's, with its INT8 towers'
    output cosine vs ``reference`` measured here (``models`` / ``reference``: the harness's loaded models)."""
    from .env import detect_isa

    here = here or detect_isa()
    out = []
    for m in models:
        if m is reference:
            continue
        isa = _manifest_isa(m.model)
        if isa is None or isa == here:
            continue
        manifest = m.model.details["manifest"]
        recorded = {a.tower: a.verification.get("cosine") for a in manifest.artifacts}
        figs = []
        for t, backend in m.backends.items():
            if m.model.towers[t].precision != "int8":
                continue
            if reference is None or t not in reference.backends:
                figs.append(f"{t}: not re-verified (no --reference with this tower)")
                continue
            log(f"re-verifying {m.label}/{t} on this {here} CPU (quantized for {isa})")
            d = reverify(backend, reference.backends[t], m.model.towers[t].spec)
            was = recorded.get(t)
            figs.append(f"{t}: cosine mean {d['cosine_mean']:.5f} / min {d['cosine_min']:.5f} vs reference here"
                        + (f" (manifest: {was:.5f} on {isa})" if isinstance(was, (int, float)) else ""))
        out.append(f"{m.label} was quantized for {isa} but runs on {here} here: ONNX Runtime uses other INT8 "
                   f"kernels, so accuracy and speed differ from its manifest; re-verified here - "
                   + "; ".join(figs or ["no INT8 tower"])
                   + f" (re-quantize with --target-cpu {here} for this machine)")
    return out


def reverify(candidate: Any, reference: Any, spec: Any, seed: int = 0) -> dict[str, float]:
    """Output drift of ``candidate`` vs ``reference`` backends on generated inputs at the spec's verification sizes."""
    worst: dict[str, float] = {"cosine_mean": 1.0, "cosine_min": 1.0, "max_abs_error": 0.0}
    for k, sizes in enumerate(spec.verification_sizes(4)[:2]):
        feeds = spec.dummy_inputs(sizes, seed=seed + k)
        got, ref = candidate.run(feeds), reference.run(feeds)
        for name, r in ref.items():
            if name not in got or np.asarray(r).dtype.kind != "f":
                continue
            d = drift(np.asarray(r), np.asarray(got[name]))
            worst = {"cosine_mean": min(worst["cosine_mean"], d["cosine_mean"]),
                     "cosine_min": min(worst["cosine_min"], d["cosine_min"]),
                     "max_abs_error": max(worst["max_abs_error"], d["max_abs_error"])}
    return worst


# ---- noise ------------------------------------------------------------------------------------------------
def read_cpu_times(path: str | Path = "/proc/stat") -> Optional[tuple[float, float]]:
    """(total, steal) jiffies of the aggregate ``cpu`` line, or None where unreadable (not Linux)."""
    try:
        first = Path(path).read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu":
        return None
    vals = [float(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user/nice
    total = sum(vals[:8])
    steal = vals[7] if len(vals) > 7 else 0.0
    return total, steal


class NoiseProbe:
    """Steal time over a run: ``start()`` before the timed rounds, ``stop()`` after."""

    def __init__(self, path: str | Path = "/proc/stat"):
        self.path = path
        self._t0: Optional[tuple[float, float]] = None
        self.steal: Optional[float] = None

    def start(self) -> "NoiseProbe":
        self._t0 = read_cpu_times(self.path)
        return self

    def stop(self) -> Optional[float]:
        t1 = read_cpu_times(self.path)
        if self._t0 is not None and t1 is not None and t1[0] > self._t0[0]:
            self.steal = max(0.0, (t1[1] - self._t0[1]) / (t1[0] - self._t0[0]))
        return self.steal


def noise_assessment(steal: Optional[float], ratio_cvs: Sequence[float], clock: str,
                     gate: Optional[float]) -> tuple[Optional[float], list[str]]:
    """(latency gate to apply, warnings). On a noisy machine with the wall clock a gate is widened by the
    observed scatter of the per-round ratios (2 x their worst CV), so noise alone cannot fail it - and the
    warning says so and how to get a trustworthy gate (``--clock cpu --threads 1``)."""
    worst_cv = max(ratio_cvs, default=0.0)
    reasons = []
    if steal is not None and steal > STEAL_NOISY:
        reasons.append(f"{steal:.0%} of CPU time was stolen by other virtual machines (/proc/stat steal)")
    if worst_cv > RATIO_CV_NOISY:
        reasons.append(f"per-round speedup ratios scatter by CV {worst_cv:.0%}")
    if not reasons:
        return gate, []
    what = "; ".join(reasons)
    if clock == "cpu":
        return gate, [f"noisy machine: {what}. Ratios use the CPU clock (preemption does not inflate it), so "
                      "gates stay as set"]
    msg = f"noisy machine: {what}; wall-clock ratios are unreliable here."
    if gate is None:
        return gate, [msg + " For gates on shared machines use --clock cpu --threads 1"]
    widened = gate + 2.0 * worst_cv
    return widened, [msg + f" The latency gate was widened from {gate:.0%} to {widened:.0%} (2 x the ratio CV) so "
                     "noise alone cannot fail it; use --clock cpu --threads 1 for a gate that holds its threshold"]


def round_ratio_cv(baseline_rounds: Sequence[Sequence[float]], candidate_rounds: Sequence[Sequence[float]]) -> float:
    """Coefficient of variation of the per-round speedup ratios (0 with fewer than 2 rounds)."""
    from .stats import coefficient_of_variation, round_ratios

    return coefficient_of_variation(round_ratios(baseline_rounds, candidate_rounds))
