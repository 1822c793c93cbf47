"""Run a tower on named numpy inputs (torch or ONNX Runtime) and compare two towers' outputs.

Used by every pass's verification step; it runs towers on the benchmark's CPU backends.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from .metrics import drift
from ..errors import VerificationError
from ..model.tower import Tower

# The ONE tolerance table: the cosine floor each check applies where the user sets no ``--min-cosine`` (the
# config field ``min_cosine`` overrides every row it reaches). Passes, CLI defaults and help texts read it here.
MIN_COSINE: dict[str, dict[str, float]] = {
    "export_onnx": {"fp32": 0.9999},                                  # exported ONNX vs torch
    "quantize": {"int8": 0.98, "fp16": 0.999},                        # quantized tower vs FP32, held-out data
    "tensorrt_onnx": {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98},   # TensorRT bundle's ONNX vs the source
    "tensorrt_engine": {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99},  # engine vs the bundle's own ONNX
    "torch_tensorrt": {"fp32": 0.9999, "fp16": 0.999},                # torch-tensorrt module vs torch eager
    "prune_reload": {"fp32": 0.9999},                                 # pruned dir rebuilt from its record
}


def min_cosine_floor(check: str, precision: str = "fp32", override: Optional[float] = None) -> float:
    """The floor a check applies: the user's ``min_cosine`` where set, else the table's row for the precision."""
    return float(override) if override is not None else MIN_COSINE[check][precision]


def min_cosine_help(check: str) -> str:
    """The table's row as help text, e.g. ``fp32 0.9999, fp16 0.999, int8 0.99`` (never typed twice)."""
    return ", ".join(f"{p} {v:g}" for p, v in MIN_COSINE[check].items())


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


Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
MIN_COSINE_HINT = "lower the tolerance with --min-cosine only if you accept the drift; otherwise report the model"


def profile_batches(spec: Any, seed: int = 0, shapes: Sequence[str] = ("min", "opt", "max")
                    ) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """``(check description, dummy feeds)`` at the spec's min / opt / max profile shapes (seeds ``seed + k``)."""
    from ..model.profiles import profile_sizes

    out = []
    for k, w in enumerate(shapes):
        sizes = profile_sizes(spec, w)
        out.append(({"shape": w, "sizes": sizes}, spec.dummy_inputs(sizes, seed=seed + k)))
    return out


def verify_runs(reference: Run, candidate: Run, batches: Sequence[tuple[dict[str, Any], dict[str, np.ndarray]]],
                min_cosine: float, what: str, against: str = "its source", hint: str = MIN_COSINE_HINT,
                nan_hint: str = "keep the offending ops in FP32 (see the manifest) or check the source model"
                ) -> dict[str, Any]:
    """THE verification loop: ``candidate`` vs ``reference`` on each ``(description, feeds)``; raises
    VerificationError on NaN/Inf or below ``min_cosine``. Returns ``{"checks": [...], "cosine_min", "cosine_mean",
    "max_abs_error", "min_cosine_required"}``."""
    checks = []
    for desc, feeds in batches:
        cmp = compare_outputs(reference(feeds), candidate(feeds))
        checks.append({**desc, **{k: cmp[k] for k in ("cosine_min", "cosine_mean", "max_abs_error", "finite")}})
    result = {"checks": checks, "cosine_min": min(c["cosine_min"] for c in checks),
              "cosine_mean": float(np.mean([c["cosine_mean"] for c in checks])),
              "max_abs_error": max(c["max_abs_error"] for c in checks), "min_cosine_required": min_cosine}
    if not all(c["finite"] for c in checks):
        raise VerificationError(f"{what} produced NaN/Inf outputs", hint=nan_hint)
    if result["cosine_min"] < min_cosine:
        worst = min(checks, key=lambda c: c["cosine_min"])
        at = f"the {worst['shape']} shape {worst['sizes']}" if "shape" in worst else f"{worst.get('sizes')}"
        raise VerificationError(f"{what} disagrees with {against}: cosine {worst['cosine_min']:.6f} < {min_cosine} "
                                f"at {at} (max abs error {worst['max_abs_error']:.3g})", hint=hint)
    return result


def verify_tower(reference: Tower, candidate: Tower, sizes: Iterable[dict[str, int]], min_cosine: float,
                 seed: int = 0, feeds: Optional[list[dict[str, np.ndarray]]] = None) -> dict[str, Any]:
    """Run both towers on generated (or given) inputs; raise VerificationError outside tolerance.

    Returns ``{"checks": [{sizes, cosine_min, max_abs_error}...], "cosine_min", "max_abs_error", ...}``.
    """
    if feeds is None:
        batches = [({"sizes": s}, reference.spec.dummy_inputs(s, seed=seed + k)) for k, s in enumerate(sizes)]
    else:
        batches = [({"sizes": {k: list(v.shape) for k, v in f.items()}}, f) for f in feeds]
    fig = verify_runs(TowerRunner(reference), TowerRunner(candidate), batches, min_cosine,
                      what=f"tower {candidate.name!r}")
    return {"reference": reference.kind, "candidate": candidate.kind, **fig}
