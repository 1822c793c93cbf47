"""mmdeploy_kit (mmdk): deploy multimodal PyTorch checkpoints tower by tower.

Importing this package imports neither torch nor onnxruntime: the public API below is resolved lazily.

    import mmdeploy_kit as mmdk
    model = mmdk.load("path/to/hf_clip_dir")
    manifest = mmdk.export(model, "out/", target="onnx")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("load", "inspect", "export", "synth_data", "demo", "bench", "compare", "quantize", "run", "distill", "build_engines",
        "prune", "doctor", "fusion_demo",
        "optimize")  # mmdk optimize (search/)
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mmdeploy_kit' has no attribute {name!r}")
