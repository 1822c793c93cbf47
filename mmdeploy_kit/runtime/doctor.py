"""``mmdk doctor``: what this machine has (CPU ISA, cores, RAM, GPU/driver/CUDA, TensorRT, ONNX Runtime providers,
Jetson model/L4T/power mode/clocks) and which mmdk features are available here and what each one needs.

Detection is reused, not repeated: the environment fingerprint (``runtime/env.py``), the TensorRT capability
probe (``runtime/trt_env.py``), the Jetson tools (``runtime/jetson.py``), the deployment targets
(``runtime/targets.py``) and the backends' own availability checks. Heavy packages are looked up by spec and
metadata; only onnxruntime is imported (for its provider list), and torch never is.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
from importlib import metadata
from typing import Any, Optional

from .. import __version__
from .._lazy import available
from . import env

SPEED_FLAGS = {"avx2": "AVX2", "avx512_vnni": "AVX-512 VNNI (fast INT8 on x86)", "avx_vnni": "AVX-VNNI",
               "amx_int8": "AMX INT8", "asimd": "NEON (Arm)", "asimddp": "Arm dot product (fast INT8)"}


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _tensorrt() -> dict[str, Any]:
    if importlib.util.find_spec("mmdeploy_kit.runtime.trt_env") is not None:
        from .trt_env import detect

        return {**detect().to_dict(), "detected_by": "mmdeploy_kit.runtime.trt_env"}
    importable = available("tensorrt")
    return {"tensorrt_importable": importable, "tensorrt_version": _version("tensorrt") if importable else None,
            "can_build": importable and env.has_nvidia_gpu(),
            "detected_by": "importlib.util.find_spec (trt_env not available in this mmdk)"}


def _onnxruntime() -> dict[str, Any]:
    if not available("onnxruntime"):
        return {"installed": False, "version": None, "providers": []}
    try:
        import onnxruntime as ort

        return {"installed": True, "version": ort.__version__, "providers": list(ort.get_available_providers())}
    except ImportError as exc:  # a broken install: say so instead of failing the whole report
        return {"installed": False, "version": _version("onnxruntime"), "providers": [], "error": str(exc)[:200]}


def _jetson() -> Optional[dict[str, Any]]:
    info = env.jetson_info()
    if info is None:
        return None
    from .jetson import clock_state, power_mode

    mode, mode_id = power_mode()
    clocks = clock_state()
    return {"model": info.model, "l4t": info.l4t, "jetpack": info.jetpack, "power_mode": mode or info.power_mode,
            "power_mode_id": mode_id, "clocks_locked": clocks.locked if clocks else None,
            "tegrastats": shutil.which("tegrastats")}


def _targets() -> dict[str, dict[str, Any]]:
    from ..errors import MmdkError
    from .targets import TARGETS, resolve_target

    out = {}
    for name, t in TARGETS.items():
        try:
            resolve_target(name)
            out[name] = {"available": True, "needs": t.description}
        except MmdkError as exc:
            out[name] = {"available": False, "needs": t.description, "why": exc.message}
    return out


def _feature(name: str, ok: bool, needs: str, note: str = "") -> dict[str, Any]:
    return {"feature": name, "available": bool(ok), "needs": needs, **({"note": note} if note else {})}


def features(info: dict[str, Any]) -> list[dict[str, Any]]:
    has = {m: available(m) for m in ("torch", "transformers", "safetensors", "onnx", "onnxscript", "onnxruntime",
                                     "neural_compressor", "torch_pruning", "torch_tensorrt", "PIL", "tokenizers",
                                     "openvino", "nncf")}
    providers = info["onnxruntime"]["providers"]
    gpu = bool(info["gpus"]) or env.has_nvidia_gpu()
    trt = info["tensorrt"]
    flags = set(info["cpu"]["flags"])
    int8_note = ("fast INT8 kernels (VNNI/dot product) present" if flags & {"avx512_vnni", "avx_vnni", "amx_int8",
                 "asimddp"} else "no VNNI / dot-product instructions: INT8 runs, with smaller speedups")
    return [
        _feature("load PyTorch / Hugging Face checkpoints", has["torch"] and has["transformers"] and has["safetensors"],
                 "pip install 'mmdeploy_kit[torch]'"),
        _feature("export ONNX (mmdk export --target onnx)", has["torch"] and has["onnx"],
                 "pip install 'mmdeploy_kit[torch,onnx]' (+ [export] for the dynamo exporter)",
                 "" if has["onnxscript"] else "dynamo exporter unavailable (onnxscript missing)"),
        _feature("quantize INT8 / FP16 with ONNX Runtime (mmdk quantize)", has["onnx"] and has["onnxruntime"],
                 "pip install 'mmdeploy_kit[onnx]'", int8_note),
        _feature("quantize --backend inc (Intel Neural Compressor)", has["neural_compressor"] and has["torch"],
                 "pip install 'mmdeploy_kit[inc]'"),
        _feature("OpenVINO: export --target openvino, bench --backend openvino, export --target cpu", has["openvino"],
                 "pip install 'mmdeploy_kit[openvino]'"),
        _feature("quantize --backend nncf (OpenVINO INT8)", has["openvino"] and has["nncf"],
                 "pip install 'mmdeploy_kit[openvino]'"),
        _feature("BF16 precision (OpenVINO, CPU)", has["openvino"] and bool(flags & {"avx512_bf16", "amx_bf16"}),
                 "a CPU with AVX512_BF16 or AMX + pip install 'mmdeploy_kit[openvino]'"),
        _feature("structured pruning", has["torch_pruning"], "pip install 'mmdeploy_kit[prune]'"),
        _feature("bench: torch backend", has["torch"], "pip install 'mmdeploy_kit[torch]'"),
        _feature("bench: onnxruntime on CPU", "CPUExecutionProvider" in providers, "pip install 'mmdeploy_kit[onnx]'"),
        _feature("bench: onnxruntime CUDA EP (--target gpu / jetson-*)", gpu and "CUDAExecutionProvider" in providers,
                 "an NVIDIA GPU + onnxruntime-gpu (Jetson: the JetPack wheel)"),
        _feature("bench: onnxruntime TensorRT EP (--backend onnxruntime-trt)",
                 gpu and "TensorrtExecutionProvider" in providers,
                 "an NVIDIA GPU + onnxruntime-gpu built with TensorRT + TensorRT libraries"),
        _feature("TensorRT engines (build / bench --backend tensorrt)", bool(trt.get("can_build")),
                 "the tensorrt package (JetPack, or NVIDIA's index) + an NVIDIA GPU"),
        _feature("bench: torch-tensorrt", has["torch_tensorrt"] and gpu, "torch-tensorrt matching torch + a GPU"),
        _feature("Jetson power / energy per inference (tegrastats)", shutil.which("tegrastats") is not None,
                 "a Jetson (tegrastats on PATH); nvpmodel for the power mode, root for jetson_clocks --show"),
        _feature("remote bench / doctor on a device (--host)", shutil.which("ssh") is not None,
                 "the OpenSSH client here; mmdk of the same version on the device"),
        _feature("images in data manifests, demo data", has["PIL"], "pip install 'mmdeploy_kit[data]'"),
    ]


def collect() -> dict[str, Any]:
    """Everything ``mmdk doctor`` prints, as JSON-ready data."""
    model, flags = env.cpu_info()
    gpus = [g.model_dump() for g in env.nvidia_gpus()]
    info: dict[str, Any] = {
        "mmdk_version": __version__,
        "hostname": platform.node(),
        "os": f"{platform.system()} {env._os_release()}".strip(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": {"model": model, "flags": flags, "isa": [SPEED_FLAGS[f] for f in flags if f in SPEED_FLAGS],
                "cores_logical": os.cpu_count() or 0, "cores_available": env.available_cores()},
        "ram_total_mb": env.ram_total_mb(),
        "gpus": gpus,
        "cuda_driver": gpus[0]["cuda"] if gpus else None,
        "packages": env._installed_packages(),
        "tensorrt": _tensorrt(),
        "onnxruntime": _onnxruntime(),
        "jetson": _jetson(),
        "targets": _targets(),
    }
    info["features"] = features(info)
    return info


def render(info: dict[str, Any], host: Optional[str] = None) -> str:
    """The human-readable report."""
    c = info["cpu"]
    lines = [f"mmdk doctor{f' on {host}' if host else ''}: mmdk {info['mmdk_version']} on {info['hostname']} "
             f"({info['os']}, {info['machine']}, python {info['python']})",
             f"CPU      {c['model']}: {c['cores_available']}/{c['cores_logical']} cores; "
             f"ISA {', '.join(c['isa']) or 'none of AVX2/VNNI/NEON'} (flags: {' '.join(c['flags']) or '-'})",
             f"RAM      {info['ram_total_mb']} MB"]
    if info["gpus"]:
        for g in info["gpus"]:
            lines.append(f"GPU      {g['name']} ({g.get('memory_mb')} MB), driver {g.get('driver')}, CUDA {g.get('cuda')}")
    else:
        lines.append("GPU      none (no nvidia-smi / NVIDIA driver)")
    t = info["tensorrt"]
    lines.append(f"TensorRT {'importable, ' + str(t.get('tensorrt_version')) if t.get('tensorrt_importable') else 'not installed'}"
                 f"; engines can{'' if t.get('can_build') else 'not'} be built here (detected by {t.get('detected_by')})")
    o = info["onnxruntime"]
    lines.append(f"ORT      {o['version'] + ': ' + ', '.join(o['providers']) if o['installed'] else 'not installed'}")
    j = info["jetson"]
    if j:
        locked = {True: "locked", False: "not locked", None: "unknown (needs root)"}[j["clocks_locked"]]
        mode_id = f" (id {j['power_mode_id']})" if j.get("power_mode_id") is not None else ""
        lines.append(f"Jetson   {j['model']}; L4T {j['l4t']}; JetPack {j['jetpack']}; power mode {j['power_mode']}"
                     f"{mode_id}; clocks {locked}; tegrastats {'yes' if j.get('tegrastats') else 'no'}")
    else:
        lines.append("Jetson   no (not a Jetson)")
    lines.append("targets  " + ", ".join(f"{n} {'yes' if v['available'] else 'no'}" for n, v in info["targets"].items()))
    lines.append("")
    width = max(len(f["feature"]) for f in info["features"])
    lines.append(f"{'feature':<{width}}  here  needs")
    for f in info["features"]:
        note = f"  [{f['note']}]" if f.get("note") else ""
        lines.append(f"{f['feature']:<{width}}  {'yes ' if f['available'] else 'no  '}  {f['needs']}{note}")
    return "\n".join(lines)

