"""What this machine offers for TensorRT, found without importing tensorrt or torch.

``detect()`` answers: is the ``tensorrt`` package importable (a spec lookup, not an import), which version
(package metadata), is a CUDA GPU present (nvidia-smi / device nodes, via ``env``), is this a Jetson
(``/etc/nv_tegra_release``) and which board, power mode and L4T release, and where ``trtexec`` is.
``mmdk export --target tensorrt`` uses it to decide between building engines and refusing (exit 3), and
``mmdk doctor`` can print it (``TrtCapabilities.to_dict()``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from ..errors import BackendUnavailableError

JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
BUILD_NEEDS = "building TensorRT engines needs the tensorrt package and an NVIDIA GPU"
BUILD_HINT = "--build defer writes the bundle and build script for the target"
# Distributions that provide the ``tensorrt`` module (the metapackage, the CUDA-specific wheels, JetPack's deb
# installs ``tensorrt`` metadata too).
_TRT_DISTS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt-cu11")


@dataclass(frozen=True)
class TrtCapabilities:
    """A snapshot of the TensorRT-relevant facts of this machine."""

    tensorrt_importable: bool
    tensorrt_version: Optional[str]
    torch_tensorrt_importable: bool
    cuda_gpu: bool
    gpu_names: tuple[str, ...] = ()
    cuda_driver_version: Optional[str] = None
    jetson_model: Optional[str] = None
    l4t: Optional[str] = None
    jetpack: Optional[str] = None
    power_mode: Optional[str] = None
    trtexec: Optional[str] = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_jetson(self) -> bool:
        return self.jetson_model is not None or self.l4t is not None

    @property
    def can_build(self) -> bool:
        """TensorRT engines can be built here with the Python API."""
        return self.tensorrt_importable and self.cuda_gpu

    def missing(self) -> list[str]:
        """What is absent for a build, in words (empty when ``can_build``)."""
        out = []
        if not self.tensorrt_importable:
            out.append("the tensorrt Python package is not installed")
        if not self.cuda_gpu:
            out.append("no NVIDIA GPU with a CUDA driver was found")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(is_jetson=self.is_jetson, can_build=self.can_build, missing=self.missing())
        return d


def tensorrt_version() -> Optional[str]:
    """Installed TensorRT Python package version from its metadata (no import)."""
    for dist in _TRT_DISTS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def module_importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def find_trtexec() -> Optional[str]:
    """``$TRTEXEC``, ``trtexec`` on PATH, or JetPack's ``/usr/src/tensorrt/bin/trtexec``."""
    env = os.environ.get("TRTEXEC")
    if env and Path(env).is_file():
        return env
    found = shutil.which("trtexec")
    if found:
        return found
    return JETSON_TRTEXEC if Path(JETSON_TRTEXEC).is_file() else None


def detect() -> TrtCapabilities:
    """Probe the machine (cheap: file reads, package metadata, at most a few ``nvidia-smi`` calls)."""
    from . import env

    gpus = env.nvidia_gpus()
    jetson = env.jetson_info()
    trt = module_importable("tensorrt")
    version = tensorrt_version() if trt else None
    notes = []
    if trt and version is None:
        notes.append("tensorrt is importable but has no package metadata (JetPack's system install?)")
    return TrtCapabilities(
        tensorrt_importable=trt, tensorrt_version=version,
        torch_tensorrt_importable=module_importable("torch_tensorrt"),
        cuda_gpu=env.has_nvidia_gpu(), gpu_names=tuple(g.name for g in gpus),
        cuda_driver_version=gpus[0].cuda if gpus else None,
        jetson_model=jetson.model if jetson else None, l4t=jetson.l4t if jetson else None,
        jetpack=jetson.jetpack if jetson else None, power_mode=jetson.power_mode if jetson else None,
        trtexec=find_trtexec(), notes=tuple(notes))


def require_build(caps: Optional[TrtCapabilities] = None, what: str = BUILD_NEEDS, hint: str = BUILD_HINT) -> TrtCapabilities:
    """``caps`` (detected when None) if engines can be built here, else the one-line exit-3 error."""
    caps = caps or detect()
    if not caps.can_build:
        raise BackendUnavailableError(what, hint=hint)
    return caps


def on_device(device: str, caps: TrtCapabilities) -> bool:
    """True when this machine is the ``device`` target itself (a Jetson of that model, or a GPU host for ``gpu``)."""
    if device == "gpu":
        return caps.cuda_gpu and not caps.is_jetson
    from .targets import TARGETS

    profile = TARGETS.get(device)
    if profile is None or profile.jetson_model is None:
        return False
    return bool(caps.jetson_model and profile.jetson_model.lower() in caps.jetson_model.lower())
