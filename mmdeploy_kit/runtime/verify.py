"""Run a tower on named numpy inputs (torch or ONNX Runtime) and compare two towers' outputs.

Used by every pass's verification step; it runs towers on the benchmark's CPU backends.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from .metrics import drift
from ..errors import VerificationError
from ..model.tower import Tower


class TowerRunner:
    """Callable ``feeds -> {output name: array}`` for a torch or ONNX tower, on the CPU bench backends."""

    def __init__(self, tower: Tower, threads: Optional[int] = None):
        self.tower = tower
        if tower.kind == "onnx":
            from ..runtime.backends.ort import OrtBackend

            self._backend: Any = OrtBackend(tower, device="cpu", threads=threads)
        elif tower.kind == "openvino":
            from ..runtime.backends.openvino import OpenVINOBackend

            self._backend = OpenVINOBackend(tower, device="cpu", threads=threads)
        elif tower.kind == "torch":
            from ..runtime.backends.torch_eager import TorchEagerBackend

            self._backend = TorchEagerBackend(tower, device="cpu", threads=threads)
        else:
            raise VerificationError(f"tower {tower.name!r} of kind {tower.kind!r} cannot be run on this machine")

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.tower.kind != "onnx":
            return self._backend.run(feeds)
        try:
            return self._backend.run(feeds)
        except Exception as exc:  # noqa: BLE001 - ORT raises Fail/InvalidArgument/RuntimeException
            shapes = {k: list(v.shape) for k, v in feeds.items() if k in self.tower.spec.input_names}
            raise VerificationError(
                f"ONNX Runtime failed to run tower {self.tower.name!r} at input shapes {shapes}: {_ort_reason(exc)}",
                hint="the graph likely has a shape baked in at export; try --exporter dynamo") from None


def _ort_reason(exc: BaseException) -> str:
    """The useful tail of an ORT error ('... Status Message: <file>:<line> <check> was false. <why>')."""
    text = " ".join(str(exc).split())
    if "Status Message:" in text:
        text = text.split("Status Message:", 1)[1]
        text = text.split(" was false.", 1)[-1].strip() or text
    return text[:240]


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
