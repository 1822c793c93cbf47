"""Run a tower on named numpy inputs (torch or ONNX Runtime) and compare two towers' outputs.

Used by every pass's verification step; the benchmark's backends build on the same calls.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from .._lazy import require
from ..bench.metrics import drift
from ..errors import VerificationError
from .tower import Tower


def ort_session(path: str | Path, providers: Optional[list[str]] = None, threads: Optional[int] = None,
                optimization: str = "all") -> Any:
    ort = require("onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so.graph_optimization_level = levels[optimization]
    return ort.InferenceSession(str(path), sess_options=so, providers=providers or ["CPUExecutionProvider"])


def default_threads() -> int:
    return int(os.environ.get("MMDK_THREADS", 0)) or (os.cpu_count() or 1)


class TowerRunner:
    """Callable ``feeds -> {output name: array}`` for a torch or ONNX tower (session cached)."""

    def __init__(self, tower: Tower, threads: Optional[int] = None):
        self.tower = tower
        self._session = None
        if tower.kind == "onnx":
            self._session = ort_session(tower.path, threads=threads)
            self._out_names = [o.name for o in self._session.get_outputs()]
        elif tower.kind != "torch":
            raise VerificationError(f"tower {tower.name!r} of kind {tower.kind!r} cannot be run on this machine")

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self.tower.spec
        if self._session is not None:
            wanted = {i.name for i in self._session.get_inputs()}
            outs = self._session.run(None, {k: v for k, v in feeds.items() if k in wanted})
            return {n: np.asarray(o) for n, o in zip(self._out_names, outs)}
        return self.tower.module.run_numpy({n: feeds[n] for n in spec.input_names})


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, Any]:
    """Drift per output plus the worst case over outputs."""
    per: dict[str, Any] = {}
    for name, ref in reference.items():
        if name not in candidate:
            raise VerificationError(f"output {name!r} is missing from the candidate (it has {list(candidate)})")
        cand = candidate[name]
        if tuple(ref.shape) != tuple(cand.shape):
            raise VerificationError(f"output {name!r}: shape {tuple(cand.shape)} differs from reference {tuple(ref.shape)}")
        per[name] = drift(ref, cand)
    return {
        "outputs": per,
        "cosine_min": min(v["cosine_min"] for v in per.values()),
        "cosine_mean": float(np.mean([v["cosine_mean"] for v in per.values()])),
        "max_abs_error": max(v["max_abs_error"] for v in per.values()),
        "finite": all(v["finite"] for v in per.values()),
    }


def verify_tower(reference: Tower, candidate: Tower, sizes: Iterable[dict[str, int]], min_cosine: float,
                 seed: int = 0, feeds: Optional[list[dict[str, np.ndarray]]] = None) -> dict[str, Any]:
    """Run both towers on generated (or given) inputs; raise VerificationError outside tolerance.

    Returns ``{"checks": [{sizes, cosine_min, max_abs_error}...], "cosine_min", "max_abs_error", ...}``.
    """
    ref_run, cand_run = TowerRunner(reference), TowerRunner(candidate)
    batches = feeds if feeds is not None else [reference.spec.dummy_inputs(s, seed=seed + k)
                                               for k, s in enumerate(sizes)]
    size_list = list(sizes) if feeds is None else [{} for _ in batches]
    checks = []
    for s, f in zip(size_list, batches):
        cmp = compare_outputs(ref_run(f), cand_run(f))
        shape_desc = s or {k: list(v.shape) for k, v in f.items()}
        checks.append({"sizes": shape_desc, "cosine_min": cmp["cosine_min"], "cosine_mean": cmp["cosine_mean"],
                       "max_abs_error": cmp["max_abs_error"], "finite": cmp["finite"]})
    result = {
        "reference": reference.kind, "candidate": candidate.kind, "checks": checks,
        "cosine_min": min(c["cosine_min"] for c in checks),
        "cosine_mean": float(np.mean([c["cosine_mean"] for c in checks])),
        "max_abs_error": max(c["max_abs_error"] for c in checks),
        "min_cosine_required": min_cosine,
    }
    if not all(c["finite"] for c in checks):
        raise VerificationError(f"tower {candidate.name!r} produced NaN/Inf outputs",
                                hint="keep the offending ops in FP32 (see the manifest) or check the source model")
    if result["cosine_min"] < min_cosine:
        worst = min(checks, key=lambda c: c["cosine_min"])
        raise VerificationError(
            f"tower {candidate.name!r} disagrees with its source: cosine {worst['cosine_min']:.6f} < {min_cosine} "
            f"at {worst['sizes']} (max abs error {worst['max_abs_error']:.3g})",
            hint="lower the tolerance with --min-cosine only if you accept the drift; otherwise report the model")
    return result
