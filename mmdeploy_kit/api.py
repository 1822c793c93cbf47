"""The library API: what scripts call and what every CLI command is one call of.

Heavy dependencies are imported inside the functions, so ``import mmdeploy_kit.api`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .artifacts import Manifest, atomic_output_dir
from .errors import UserInputError
from .model.tower import LoadedModel

ModelLike = Any  # LoadedModel | str | Path


def load(source: ModelLike, weights: Optional[str | Path] = None, io: Optional[str | Path | dict] = None,
         trust_remote_code: bool = False) -> LoadedModel:
    """Load a checkpoint (HF dir, ``file.py:factory``, TorchScript, ``.pt2``, ``.onnx``, mmdk output dir)."""
    if isinstance(source, LoadedModel):
        return source
    from .model.loaders import load as _load

    return _load(source, weights=weights, io=io, trust_remote_code=trust_remote_code)


def inspect(source: ModelLike, **load_kwargs: Any) -> dict[str, Any]:
    """Towers, inputs/outputs with modality, dtype and symbolic dims, parameter count, size, dtype."""
    return load(source, **load_kwargs).describe()


def export(source: ModelLike, out: str | Path, target: str = "onnx", towers: Sequence[str] = (),
           opset: int = 17, exporter: str = "torchscript", min_cosine: float = 0.9999, overwrite: bool = False,
           seed: int = 0, progress: Optional[Callable[[str], None]] = None, **load_kwargs: Any) -> Manifest:
    """Export towers to ``out/<tower>.onnx`` (+ ``mmdk_manifest.json``), each verified against torch."""
    from .passes.base import RunContext

    if target != "onnx":
        raise UserInputError(f"export target {target!r} is not available yet", hint="use --target onnx")
    from .passes.export.onnx import OnnxExportConfig, OnnxExportPass

    model = load(source, **load_kwargs)
    config = OnnxExportConfig(opset=opset, exporter=exporter, towers=tuple(towers), min_cosine=min_cosine)
    model.select(config.towers)  # validate tower names before any work
    ctx = RunContext(seed=seed, progress=progress)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        manifest = OnnxExportPass().run(model, config, ctx, tmp)
        manifest.write(tmp)
    return manifest


def synth_data(out: str | Path, n_train: int = 1200, n_val: int = 400, image_size: int = 64, seed: int = 0,
               overwrite: bool = False) -> Path:
    """Write the deterministic synthetic image-caption dataset (PNG + JSONL manifests, train/val)."""
    from .data.synth import synthesize_dataset

    return synthesize_dataset(out, n_train=n_train, n_val=n_val, image_size=image_size, seed=seed,
                              overwrite=overwrite)


def demo(out: str | Path = "mmdk_demo", variant: str = "tiny", force: bool = False, quiet: bool = False,
         progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Train (or reuse) the demo checkpoint, export it to ONNX, and return a summary."""
    from .demo import train_demo_checkpoint

    result = train_demo_checkpoint(variant=variant, force=force, quiet=quiet)
    out = Path(out)
    manifest = export(result.path, out / "onnx", overwrite=True, progress=progress)
    return {
        "checkpoint": str(result.path),
        "reused": result.reused,
        "train_seconds": result.train_seconds,
        "zero_shot_top1": result.zero_shot_top1,
        "zero_shot_top5": result.zero_shot_top5,
        "recall": result.recall,
        "data_dir": str(result.data_dir),
        "onnx_dir": str(out / "onnx"),
        "export": {a.tower: {"cosine_min": a.verification.get("cosine_min"),
                             "max_abs_error": a.verification.get("max_abs_error")} for a in manifest.artifacts},
    }
