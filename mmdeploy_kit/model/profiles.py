"""Optimization profiles (TensorRT, torch-tensorrt, ONNX Runtime's TensorRT EP) from a tower's I/O spec.

One profile per tower: ``min`` / ``max`` of every symbolic dim come from the spec's ``dims``; ``opt`` from the
spec's optional ``opt`` (``dims: {batch: {min: 1, opt: 4, max: 8}}``), else this rule: the batch dim -> 8
clipped to [min, max] (a common serving batch; TensorRT tunes its kernels for ``opt``), every other dim ->
its max (text towers pad to a fixed length; audio/video take the longest input). ``static=True`` pins
every dim to its ``opt`` (DLA needs static shapes). Torch-free.
"""

from __future__ import annotations

from .iospec import IOSpec

DEFAULT_OPT_BATCH = 8


def opt_size(spec: IOSpec, dim: str) -> int:
    """The profile's opt size of ``dim`` (see the module docstring for the rule)."""
    lo, hi = spec.dims[dim]
    if spec.opt and dim in spec.opt:
        return int(spec.opt[dim])
    if dim == spec.batch_dim() or dim == "batch":
        return max(lo, min(hi, DEFAULT_OPT_BATCH))
    return hi


def derive_profile(spec: IOSpec, static: bool = False) -> dict[str, dict[str, list[int]]]:
    """``{input: {"min": [...], "opt": [...], "max": [...]}}``; ``static`` pins every dim to opt (DLA)."""
    prof: dict[str, dict[str, list[int]]] = {}
    for inp in spec.inputs:
        row: dict[str, list[int]] = {"min": [], "opt": [], "max": []}
        for d in inp.shape:
            if isinstance(d, int):
                sizes = (d, d, d)
            else:
                lo, hi = spec.dims[d]
                o = opt_size(spec, d)
                sizes = (o, o, o) if static else (lo, o, hi)
            for key, s in zip(("min", "opt", "max"), sizes):
                row[key].append(int(s))
        prof[inp.name] = row
    return prof


def profile_sizes(spec: IOSpec, which: str) -> dict[str, int]:
    """Symbolic dim sizes at the profile's ``min`` / ``opt`` / ``max`` (for verification inputs)."""
    out = {}
    for d in spec.symbolic_dims():
        lo, hi = spec.dims[d]
        out[d] = {"min": lo, "opt": opt_size(spec, d), "max": hi}[which]
    return out
