"""Build TensorRT engines from a bundle's build plan with the Python API, and verify them. Needs a GPU.

Per tower: ``Builder`` -> ``create_network`` (``STRONGLY_TYPED`` on TensorRT 10.x unless DLA; TensorRT 11 is
always strongly typed) -> ``OnnxParser.parse_from_file`` -> builder config (workspace pool, optimization
level, profiling verbosity DETAILED, precision flags only for DLA on 10.x, DLA core + GPU fallback,
hardware-compatibility level, version-compatible) -> one optimization profile from the plan -> the timing
cache shared by every tower (loaded from / saved to ``timing.cache``) -> ``build_serialized_network``.
Writes ``<tower>.plan``, its sidecar ``<tower>.plan.json`` (TensorRT/CUDA versions, GPU name + compute
capability, Jetson L4T/power mode, flags, profile, the I/O read back from the engine, sha256 of ONNX and
plan) and the engine inspector's layer JSON ``<tower>.layers.json`` (precision and DLA/GPU per layer).
``mmdk export --target tensorrt --build local`` and ``mmdk build-engines`` both come here.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ..._lazy import require
from ...artifacts import sha256_file
from ...runtime.backends.tensorrt import check_engine_compat  # noqa: F401 - re-exported: the refusal rule
from ...errors import BackendUnavailableError, ExportError
from ...model.tower import Tower
from ...runtime.trt_env import TrtCapabilities
from .trt_plan import major


def check_plan_version(plan: dict[str, Any], installed: str) -> Optional[str]:
    """Refuse a bundle prepared for another TensorRT major (flags and typing differ); a note for a minor."""
    want = str(plan["trt_version"])
    if major(want) != major(installed):
        raise BackendUnavailableError(
            f"this bundle was prepared for TensorRT {want}, but this machine has TensorRT {installed}",
            hint=f"re-export it with --trt-version {'.'.join(installed.split('.')[:2])} (the lint table and builder "
                 "flags differ between TensorRT majors)")
    if want.count(".") and want.split(".")[:2] != installed.split(".")[:2]:
        return f"bundle prepared for TensorRT {want}, building with {installed} (same major)"
    return None


def _network_flags(trt: Any, plan: dict[str, Any]) -> int:
    if plan["typing"] == "strongly-typed" and plan["trt_major"] < 11:
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if flag is None:
            raise BackendUnavailableError(f"TensorRT {trt.__version__} has no strongly typed networks",
                                          hint="install TensorRT 10 or newer")
        return 1 << int(flag)
    return 0


def _parse(trt: Any, builder: Any, logger: Any, plan: dict[str, Any], onnx_path: Path, tower: str) -> Any:
    network = builder.create_network(_network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [parser.get_error(i) for i in range(parser.num_errors)]
        first = errs[0] if errs else None
        where = ""
        if first is not None and hasattr(first, "node_name"):
            where = f" at {first.node_operator()} node {first.node_name()!r}"
        desc = first.desc() if first is not None and hasattr(first, "desc") else str(first)
        raise ExportError(f"TensorRT's ONNX parser rejected tower {tower!r}{where}: {desc}",
                          hint="see the lint section of the manifest; re-export without that op")
    return network, parser


def _config(trt: Any, builder: Any, plan: dict[str, Any], cache: Any, tower: dict[str, Any]) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(plan["workspace_mb"]) << 20)
    config.builder_optimization_level = int(plan["builder_optimization_level"])
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for f in plan["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, f))
    if plan["dla"] is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan["dla"]["core"])
    if plan["hardware_compatibility_level"] != "none":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if plan["version_compatible"]:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    profile = builder.create_optimization_profile()
    for name, p in tower["profile"].items():
        profile.set_shape(name, p["min"], p["opt"], p["max"])
    config.add_optimization_profile(profile)
    config.set_timing_cache(cache, False)
    return config


def _io(trt: Any, engine: Any) -> list[dict[str, Any]]:
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_in = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        row = {"name": name, "mode": "input" if is_in else "output",
               "dtype": str(engine.get_tensor_dtype(name)).replace("DataType.", "").lower(),
               "shape": list(engine.get_tensor_shape(name))}
        if is_in:
            row["profile"] = [list(s) for s in engine.get_tensor_profile_shape(name, 0)]
        out.append(row)
    return out


def machine_facts(trt: Any, caps: TrtCapabilities) -> dict[str, Any]:
    torch = require("torch")
    cc = torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None
    return {"tensorrt": {"version": trt.__version__},
            "cuda": {"torch_cuda": getattr(torch.version, "cuda", None), "driver_cuda": caps.cuda_driver_version},
            "gpu": {"name": torch.cuda.get_device_name(0) if cc else (caps.gpu_names or [None])[0],
                    "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None},
            "jetson": None if not caps.is_jetson else {"model": caps.jetson_model, "l4t": caps.l4t,
                                                       "jetpack": caps.jetpack, "power_mode": caps.power_mode}}


def build_engines(bundle: Path, plan: dict[str, Any], caps: TrtCapabilities,
                  log: Callable[[str], None] = lambda m: None) -> dict[str, dict[str, Any]]:
    """Build every tower of ``plan`` inside ``bundle``; returns ``{tower: sidecar}``."""
    trt = require("tensorrt")
    note = check_plan_version(plan, trt.__version__)
    if note:
        log(note)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    runtime = trt.Runtime(logger)
    cache_path = bundle / plan["timing_cache"]
    cache = builder.create_builder_config().create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    facts = machine_facts(trt, caps)
    sidecars = {}
    for tower in plan["towers"]:
        name = tower["name"]
        log(f"building TensorRT engine {tower['plan']} ({plan['precision']}, {plan['typing']})")
        t0 = time.perf_counter()
        network, _parser = _parse(trt, builder, logger, plan, bundle / tower["onnx"], name)
        config = _config(trt, builder, plan, cache, tower)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportError(f"TensorRT failed to build an engine for tower {name!r}",
                              hint="rerun with --debug; check the workspace (--workspace-mb) and the lint warnings")
        plan_path = bundle / tower["plan"]
        plan_path.write_bytes(bytes(serialized))
        seconds = time.perf_counter() - t0
        engine = runtime.deserialize_cuda_engine(bytes(serialized))
        layers = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        (bundle / tower["layers"]).write_text(layers if layers.endswith("\n") else layers + "\n")
        sidecar = {"format": "mmdk-trt-engine-sidecar", "format_version": 1, "tower": name, **facts,
                   "precision": plan["precision"], "device": plan["device"],
                   "build": {k: plan[k] for k in ("typing", "builder_flags", "workspace_mb", "builder_optimization_level",
                                                  "hardware_compatibility_level", "version_compatible", "dla",
                                                  "timing_cache")},
                   "profile": tower["profile"], "io": _io(trt, engine),
                   "onnx": tower["onnx"], "onnx_sha256": sha256_file(bundle / tower["onnx"]),
                   "plan_sha256": sha256_file(plan_path), "build_seconds": round(seconds, 2),
                   "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        (bundle / tower["sidecar"]).write_text(json.dumps(sidecar, indent=2) + "\n")
        sidecars[name] = sidecar
    cache_path.write_bytes(bytes(cache.serialize()))
    return sidecars


def verify_engines(bundle: Path, plan: dict[str, Any], references: dict[str, Tower], specs: dict[str, Any],
                   min_cosine: Optional[float], seed: int = 0,
                   log: Callable[[str], None] = lambda m: None) -> dict[str, dict[str, Any]]:
    """Each engine vs its reference tower (torch, or the bundle's ONNX in ONNX Runtime) at the profile's
    min / opt / max shapes; VerificationError (exit 5) below ``min_cosine`` (default per precision)."""
    from ...runtime.backends.tensorrt import TensorRTBackend
    from ...runtime.verify import TowerRunner, min_cosine_floor, profile_batches, verify_runs

    floor = min_cosine_floor("tensorrt_engine", plan["precision"], min_cosine)
    figures = {}
    for tower in plan["towers"]:
        name = tower["name"]
        spec = specs[name]
        ref = references[name]
        log(f"verifying {tower['plan']} against {ref.kind} at min/opt/max shapes")
        engine = TensorRTBackend(Tower(name, spec, "trt_engine", path=bundle / tower["plan"]), device="cuda")
        which = ("opt",) if plan["dla"] is not None else ("min", "opt", "max")
        try:
            fig = verify_runs(TowerRunner(ref), engine.run, profile_batches(spec, seed, which), floor,
                              what=f"engine {tower['plan']}", against=f"its {ref.kind} reference",
                              hint="lower --min-cosine only if you accept the drift; try --precision fp16/fp32",
                              nan_hint="rebuild with --precision fp32 to check the model, or keep the overflowing "
                                       "layers in FP32")
        finally:
            engine.close()
        figures[name] = {"reference": ref.kind, **fig}
    return figures
