"""Deployment targets as data: default backend order, supported precisions, memory budget, DLA cores.

``resolve_target(name)`` returns the profile after checking that the hardware it needs is present, so
``--target gpu`` on a CPU-only machine is a clear ``BackendUnavailableError``, never a silent CPU run.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict

from ..errors import BackendUnavailableError, UserInputError
from . import env

BackendName = Literal["torch", "onnxruntime", "onnxruntime-trt", "openvino", "tensorrt", "torch-tensorrt"]
BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "onnxruntime-trt", "openvino", "tensorrt", "torch-tensorrt")


class TargetProfile(BaseModel):
    """One deployment target. ``backends`` is the order ``--backend auto`` tries (first that can run)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    device: Literal["cpu", "cuda"]
    backends: tuple[BackendName, ...]
    precisions: tuple[str, ...]
    memory_budget_mb: Optional[int] = None   # memory a deployment may use (shared CPU/GPU RAM on a Jetson)
    dla_cores: int = 0
    jetson_model: Optional[str] = None       # substring of /proc/device-tree/model that identifies the board


def _jetson(name: str, description: str, memory_budget_mb: int, dla_cores: int, jetson_model: str) -> TargetProfile:
    """A Jetson board: CUDA iGPU with shared memory, TensorRT first, fp32/fp16/int8."""
    return TargetProfile(name=name, description=description, device="cuda",
                         backends=("tensorrt", "onnxruntime-trt", "onnxruntime", "torch"),
                         precisions=("fp32", "fp16", "int8"), memory_budget_mb=memory_budget_mb, dla_cores=dla_cores,
                         jetson_model=jetson_model)


TARGETS: dict[str, TargetProfile] = {t.name: t for t in (
    TargetProfile(name="cpu", description="x86-64 / aarch64 CPU", device="cpu",
                  backends=("onnxruntime", "openvino", "torch"), precisions=("fp32", "int8", "bf16")),
    TargetProfile(name="gpu", description="NVIDIA discrete GPU (CUDA)", device="cuda",
                  backends=("tensorrt", "torch-tensorrt", "onnxruntime", "torch"),
                  precisions=("fp32", "tf32", "fp16", "bf16", "int8", "fp8")),
    _jetson("jetson-orin-nano", "Jetson Orin Nano 8GB (Ampere iGPU, no DLA)", 6144, 0, "Orin Nano"),
    _jetson("jetson-orin-nx", "Jetson Orin NX 16GB (Ampere iGPU + 2 DLA)", 12288, 2, "Orin NX"),
    _jetson("jetson-agx-orin", "Jetson AGX Orin 64GB (Ampere iGPU + 2 DLA)", 49152, 2, "AGX Orin"),
    _jetson("jetson-xavier-nx", "Jetson Xavier NX 8GB (Volta iGPU + 2 DLA)", 6144, 2, "Xavier NX"),
)}


def get_target(name: str) -> TargetProfile:
    """The profile named ``name`` (no hardware check)."""
    try:
        return TARGETS[name]
    except KeyError:
        raise UserInputError(f"unknown target {name!r}", hint=f"choose one of {', '.join(TARGETS)}") from None


def resolve_target(name: str) -> TargetProfile:
    """The profile named ``name``, or BackendUnavailableError when this machine lacks its hardware."""
    target = get_target(name)
    if target.device == "cpu":
        return target
    jetson = env.jetson_info()
    if target.jetson_model is not None:
        if jetson is None:
            raise BackendUnavailableError(f"target {name!r} needs a {target.description}, but this machine is not "
                                          "a Jetson (no /etc/nv_tegra_release)",
                                          hint="run the benchmark on the device itself, or use --target cpu here")
        model = jetson.model or ""
        if target.jetson_model.lower() not in model.lower():
            guess = next((t.name for t in TARGETS.values() if t.jetson_model
                          and t.jetson_model.lower() in model.lower()), None)
            raise BackendUnavailableError(f"target {name!r} needs a {target.description}, but this board is "
                                          f"{model or 'an unidentified Jetson'}",
                                          hint=f"use --target {guess}" if guess else "use the target of this board")
    if not env.has_nvidia_gpu():
        raise BackendUnavailableError(f"target {name!r} needs an NVIDIA GPU with a CUDA driver, but none was found "
                                      "(no nvidia-smi / /dev/nvidia0)",
                                      hint="use --target cpu, or run on a machine with an NVIDIA GPU")
    return target
