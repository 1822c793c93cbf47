"""The TensorRT build plan: optimization profiles from the I/O spec, builder settings per TensorRT version,
and the same plan as runnable ``build_trtexec.sh`` and ``build_polygraphy.sh`` scripts. Pure data + text.

Profiles (one per tower) come from ``model/profiles.py`` (min/max from the spec's dims, opt from its optional
``opt`` or the rule documented there; pinned to opt for DLA).

Precision lives in the graph (FP16-converted ONNX with FP32 I/O, or ``--preset tensorrt`` QDQ INT8), so
the network is built strongly typed: TensorRT 10.x ``STRONGLY_TYPED`` / ``--stronglyTyped``; TensorRT 11
is always strongly typed and has no precision flags. DLA builds on TensorRT 10.x use the classic weakly
typed mode with ``--fp16`` (``--int8 --fp16`` for QDQ INT8) and GPU fallback.
"""

from __future__ import annotations

import shlex
from typing import Any, Optional

from ...errors import UserInputError
from ...model.profiles import DEFAULT_OPT_BATCH, derive_profile, opt_size, profile_sizes  # noqa: F401

PLAN_NAME = "trt_build_plan.json"
TIMING_CACHE = "timing.cache"
TRTEXEC_SCRIPT = "build_trtexec.sh"
POLYGRAPHY_SCRIPT = "build_polygraphy.sh"
JETPACK6_TRT = "10.3"     # JetPack 6 (Orin) ships TensorRT 10.3 and stays on 10.x
SERVER_TRT = "10"         # any TensorRT 10.x when nothing else says which


def major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise UserInputError(f"cannot read TensorRT version {version!r}", hint="e.g. --trt-version 10.3") from None


def is_dynamic(profile: dict[str, dict[str, list[int]]]) -> bool:
    return any(p["min"] != p["max"] for p in profile.values())


def typing_mode(trt_version: str, dla_core: Optional[int]) -> str:
    """``strongly-typed`` (types from the graph) or ``weakly-typed`` (precision flags: DLA on TensorRT 10.x)."""
    return "weakly-typed" if dla_core is not None and major(trt_version) < 11 else "strongly-typed"


def builder_flags(trt_version: str, precision: str, dla_core: Optional[int]) -> list[str]:
    """``BuilderFlag`` names to set (TensorRT 11 has no precision flags)."""
    flags: list[str] = []
    if typing_mode(trt_version, dla_core) == "weakly-typed":
        flags += {"fp16": ["FP16"], "int8": ["INT8", "FP16"], "fp32": []}[precision]
    if dla_core is not None:
        flags.append("GPU_FALLBACK")
    return flags


def build_plan(towers: list[dict[str, Any]], *, trt_version: str, device: str, precision: str,
               workspace_mb: int, builder_optimization_level: int, dla_core: Optional[int],
               hardware_compatibility_level: str = "none", version_compatible: bool = False) -> dict[str, Any]:
    """The plan JSON. ``towers``: ``[{name, onnx, onnx_sha256, profile}]`` (profile from ``derive_profile``)."""
    mode = typing_mode(trt_version, dla_core)
    return {
        "format": "mmdk-trt-build-plan", "format_version": 1,
        "trt_version": trt_version, "trt_major": major(trt_version), "device": device, "precision": precision,
        "precision_in_graph": {"fp16": "FP16 graph, FP32 I/O", "int8": "QDQ INT8 (symmetric, per-channel weights)",
                               "fp32": "FP32 graph"}[precision],
        "typing": mode, "builder_flags": builder_flags(trt_version, precision, dla_core),
        "workspace_mb": workspace_mb, "builder_optimization_level": builder_optimization_level,
        "hardware_compatibility_level": hardware_compatibility_level, "version_compatible": version_compatible,
        "profiling_verbosity": "detailed", "timing_cache": TIMING_CACHE,
        "dla": None if dla_core is None else {"core": dla_core, "allow_gpu_fallback": True},
        "towers": [{**t, "plan": f"{t['name']}.plan", "sidecar": f"{t['name']}.plan.json",
                    "layers": f"{t['name']}.layers.json"} for t in towers],
    }


def _shape_arg(profile: dict[str, dict[str, list[int]]], key: str) -> str:
    return ",".join(f"{name}:{'x'.join(str(s) for s in p[key])}" for name, p in profile.items())


def trtexec_args(plan: dict[str, Any], tower: dict[str, Any]) -> list[str]:
    """The exact ``trtexec`` arguments that build ``tower`` per ``plan``."""
    args = [f"--onnx={tower['onnx']}", f"--saveEngine={tower['plan']}", "--skipInference"]
    prof = tower["profile"]
    if is_dynamic(prof) or plan["dla"] is not None:
        for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            args.append(f"{flag}={_shape_arg(prof, key)}")
    if plan["trt_major"] < 11:
        if plan["typing"] == "strongly-typed":
            args.append("--stronglyTyped")
        else:
            args += [f"--{f.lower()}" for f in plan["builder_flags"] if f in ("FP16", "INT8")]
    if plan["dla"] is not None:
        args += [f"--useDLACore={plan['dla']['core']}", "--allowGPUFallback"]
    args += [f"--timingCacheFile={plan['timing_cache']}", f"--memPoolSize=workspace:{plan['workspace_mb']}M",
             f"--builderOptimizationLevel={plan['builder_optimization_level']}"]
    if plan["hardware_compatibility_level"] != "none":
        args.append(f"--hardwareCompatibilityLevel={plan['hardware_compatibility_level']}")
    if plan["version_compatible"]:
        args.append("--versionCompatible")
    args += ["--profilingVerbosity=detailed", f"--exportLayerInfo={tower['layers']}"]
    return args


def polygraphy_args(plan: dict[str, Any], tower: dict[str, Any]) -> list[str]:
    """``polygraphy convert`` arguments equivalent to :func:`trtexec_args`."""
    args = ["convert", tower["onnx"], "--convert-to", "trt", "-o", tower["plan"]]
    prof = tower["profile"]
    if is_dynamic(prof) or plan["dla"] is not None:
        for key in ("min", "opt", "max"):
            args += [f"--trt-{key}-shapes"] + [f"{n}:[{','.join(str(s) for s in p[key])}]" for n, p in prof.items()]
    if plan["trt_major"] < 11:
        if plan["typing"] == "strongly-typed":
            args.append("--strongly-typed")
        else:
            args += [f"--{f.lower()}" for f in plan["builder_flags"] if f in ("FP16", "INT8")]
    if plan["dla"] is not None:
        args += ["--use-dla", "--allow-gpu-fallback"]
    args += ["--load-timing-cache", plan["timing_cache"], "--save-timing-cache", plan["timing_cache"],
             "--pool-limit", f"workspace:{plan['workspace_mb']}M",
             "--builder-optimization-level", str(plan["builder_optimization_level"]),
             "--profiling-verbosity", "detailed"]
    if plan["hardware_compatibility_level"] != "none":
        args += ["--hardware-compatibility-level", plan["hardware_compatibility_level"].replace("+", "_plus")]
    if plan["version_compatible"]:
        args.append("--version-compatible")
    return args


def _header(plan: dict[str, Any], tool: str) -> list[str]:
    from ... import __version__

    dla = f", DLA core {plan['dla']['core']} with GPU fallback" if plan["dla"] else ""
    return ["#!/usr/bin/env bash",
            f"# Generated by mmdk {__version__}: builds the TensorRT engines of this bundle with {tool}.",
            f"# Target: {plan['device']}, TensorRT {plan['trt_version']}, precision {plan['precision']} "
            f"({plan['precision_in_graph']}; {plan['typing']}){dla}.",
            "# The same settings as trt_build_plan.json (which `mmdk build-engines` reads). Engines only run on",
            "# the TensorRT version and GPU architecture that built them: run this on the target device.",
            "set -euo pipefail", 'cd "$(dirname "$0")"']


def trtexec_script(plan: dict[str, Any]) -> str:
    lines = _header(plan, "trtexec") + [
        'TRTEXEC="${TRTEXEC:-}"',
        'if [ -z "$TRTEXEC" ]; then',
        '  if command -v trtexec >/dev/null 2>&1; then TRTEXEC="$(command -v trtexec)"',
        "  elif [ -x /usr/src/tensorrt/bin/trtexec ]; then TRTEXEC=/usr/src/tensorrt/bin/trtexec",
        '  else echo "error: trtexec not found on PATH or at /usr/src/tensorrt/bin/trtexec (set TRTEXEC=...)" >&2;'
        " exit 3; fi",
        "fi"]
    for t in plan["towers"]:
        lines.append(f'echo "building {t["plan"]} from {t["onnx"]}" >&2')
        lines.append('"$TRTEXEC" ' + " \\\n    ".join(shlex.quote(a) for a in trtexec_args(plan, t)))
    lines.append('echo "done: ' + " ".join(t["plan"] for t in plan["towers"]) + '" >&2')
    return "\n".join(lines) + "\n"


def polygraphy_script(plan: dict[str, Any]) -> str:
    lines = _header(plan, "Polygraphy (pip install polygraphy; needs the tensorrt package)") + [
        'POLYGRAPHY="${POLYGRAPHY:-polygraphy}"',
        'command -v "$POLYGRAPHY" >/dev/null 2>&1 || { echo "error: polygraphy not found (pip install polygraphy)" >&2;'
        " exit 3; }"]
    if plan["dla"] is not None and plan["dla"]["core"] != 0:
        lines.append(f"# note: polygraphy --use-dla picks DLA core 0; trtexec honours --useDLACore={plan['dla']['core']}")
    for t in plan["towers"]:
        lines.append(f'echo "building {t["plan"]} from {t["onnx"]}" >&2')
        lines.append('"$POLYGRAPHY" ' + " \\\n    ".join(shlex.quote(a) for a in polygraphy_args(plan, t)))
    return "\n".join(lines) + "\n"
