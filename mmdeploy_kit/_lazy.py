"""Lazy, optional imports: a missing backend is a one-line error naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingBackendError

# module name -> (pip extra of mmdeploy_kit, what it is for)
_EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "loading PyTorch checkpoints and running torch backends"),
    "transformers": ("torch", "loading Hugging Face checkpoints"),
    "onnx": ("onnx", "reading and writing ONNX files"),
    "onnxruntime": ("onnx", "running and quantizing ONNX models"),
    "onnxscript": ("onnx", "the dynamo ONNX exporter"),
    "tensorrt": ("tensorrt", "building and running TensorRT engines (install from JetPack / NVIDIA's index)"),
    "torch_tensorrt": ("tensorrt", "the torch-tensorrt backend"),
    "torch_pruning": ("prune", "structured pruning"),
    "openvino": ("openvino", "the OpenVINO runtime"),
    "nncf": ("openvino", "NNCF quantization for OpenVINO"),
    "neural_compressor": ("inc", "Intel Neural Compressor quantization"),
    "safetensors": ("torch", "reading safetensors weights"),
    "PIL": ("data", "reading images"),
}


def require(module: str, extra: str | None = None, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingBackendError naming the pip extra that provides it.

    Only a ModuleNotFoundError for ``module`` itself (or its parent package) becomes the friendly
    error; any other import failure (a broken install) propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise
        known_extra, known_purpose = _EXTRAS.get(top, (extra or top, purpose or top))
        extra = extra or known_extra
        purpose = purpose or known_purpose
        raise MissingBackendError(
            f"'{top}' is not installed; it is needed for {purpose}",
            hint=f"pip install 'mmdeploy_kit[{extra}]'",
        ) from None


def available(module: str) -> bool:
    """True if ``module`` can be imported (without importing it when a spec lookup suffices)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
