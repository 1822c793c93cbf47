"""Placeholders for the TensorRT and torch-tensorrt backends (wired in by the TensorRT issue).

They already take part in backend selection: on a CPU target they are unavailable (no GPU), without
the package they raise MissingBackendError, and ``--backend auto`` skips them for the next backend in
the target's order. Replace these classes (same ``Backend`` interface) to plug the real ones in.
"""

from __future__ import annotations

from typing import ClassVar

from ..._lazy import require
from ...errors import BackendUnavailableError
from .base import Backend


class TensorRTBackend(Backend):
    name: ClassVar[str] = "tensorrt"
    kinds: ClassVar[tuple[str, ...]] = ("trt_engine", "onnx")
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    module_name: ClassVar[str] = "tensorrt"

    @classmethod
    def check_available(cls, device: str) -> None:
        if device not in cls.devices:
            raise BackendUnavailableError(f"backend {cls.name!r} needs an NVIDIA GPU, but the target device is "
                                          f"{device}", hint="use --target gpu (or a jetson-* target) on such a machine")
        require(cls.module_name)
        raise BackendUnavailableError(f"the {cls.name!r} benchmark backend is not available in this version",
                                      hint="use --backend onnxruntime-trt (ONNX Runtime's TensorRT EP) meanwhile")


class TorchTensorRTBackend(TensorRTBackend):
    name: ClassVar[str] = "torch-tensorrt"
    kinds: ClassVar[tuple[str, ...]] = ("torch",)
    module_name: ClassVar[str] = "torch_tensorrt"
