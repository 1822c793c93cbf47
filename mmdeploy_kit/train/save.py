"""Which modules a student trains, and how a trained student is written back in its own format."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

from torch import nn

from ..artifacts import Artifact, describe_file
from ..errors import UserInputError
from ..model.tower import LoadedModel

PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "spiece.model", "tokenizer.model", "preprocessor_config.json")


def student_modules(model: LoadedModel) -> dict[str, nn.Module]:
    """``{"student": module}`` holding every trainable weight of the model (its root, or its tower modules)."""
    if isinstance(model.root, nn.Module):
        return {"student": model.root}
    inner = nn.ModuleDict()
    seen: set[int] = set()
    for name, tower in model.towers.items():
        mod = getattr(tower.module, "inner", tower.module)
        if isinstance(mod, nn.Module) and id(mod) not in seen:
            seen.add(id(mod))
            inner[name] = mod
    if not inner:
        raise UserInputError(f"{model.source} has no torch modules to train")
    return {"student": inner}


def _copy_processor(proc_dir: Optional[str | Path], dest: Path) -> None:
    if not proc_dir:
        return
    for name in PROCESSOR_FILES:
        src = Path(proc_dir) / name
        if src.is_file() and not (dest / name).exists():
            shutil.copy2(src, dest / name)


def _artifact(workdir: Path, tower: Any, kind: str, rel: str, **details: Any) -> Artifact:
    return Artifact(kind=kind, tower=tower.name, path=rel, io_spec=tower.spec.to_dict(),
                    details=details, **describe_file(workdir, rel))


def single_root(model: LoadedModel) -> LoadedModel:
    """An mmdk output directory whose torch towers all live in one artifact (``mmdk prune`` / ``mmdk distill``
    output) loaded as that one model, so its towers share one root (trained and saved together)."""
    from ..model.loaders import load

    manifest = model.details.get("manifest")
    if model.format != "mmdk" or manifest is None:
        return model
    paths = {a.path for a in manifest.artifacts if a.kind in ("torch", "hf")}
    if len(paths) != 1 or len(manifest.artifacts) != len(model.towers):
        return model
    inner = load(Path(model.source) / paths.pop())
    inner.details.setdefault("manifest", manifest)
    return inner


def save_student(model: LoadedModel, workdir: Path, proc_dir: Optional[str | Path]) -> list[Artifact]:
    """Write the trained ``model`` into ``workdir/model`` in its own format and return one artifact per tower.

    - HF model: a ``save_pretrained`` directory (+ tokenizer / processor files), artifacts of kind ``hf``;
    - pruned model (architecture record) or factory module: ``model.safetensors`` + ``mmdk_arch.json`` (the
      source and the recorded shape changes; none for an unpruned factory model) + side files, the format
      ``mmdk prune`` writes and ``mmdk.load`` rebuilds, artifacts of kind ``torch``.
    """
    from ..model.arch_record import save_pruned

    dest = workdir / "model"
    root = model.root
    if root is None:
        raise UserInputError(f"cannot write the distilled {model.source} ({model.format}): its towers share no "
                             "root module", hint="distill an HF directory, a factory module or a `mmdk prune` output")
    if model.format == "hf" and hasattr(root, "save_pretrained"):
        root.save_pretrained(str(dest), safe_serialization=True)
        _copy_processor(proc_dir, dest)
        return [_artifact(workdir, t, "hf", "model") for t in model.towers.values()]
    if model.format == "pruned":
        record = {k: v for k, v in model.details["arch_record"].items() if k != "format"}
        dest.mkdir()
        src = Path(model.source)
        for f in sorted(src.iterdir()) if src.is_dir() else []:
            if f.is_file() and not f.name.startswith("mmdk_") and f.name != "model.safetensors":
                shutil.copy2(f, dest / f.name)
    elif model.format == "factory":
        target, _, attr = model.source.rpartition(":")
        dest.mkdir()
        if Path(target).is_file():
            shutil.copy2(target, dest / Path(target).name)
            target = str(Path(target).resolve())
        record = {"source": {"kind": "factory", "target": target, "attr": attr,
                             "io": {"towers": {n: t.spec.to_dict() for n, t in model.towers.items()}}},
                  "modules": {}}
    else:
        raise UserInputError(f"cannot write a distilled {model.format} model ({model.source})",
                             hint="distill an HF directory, a factory module or a `mmdk prune` output")
    _copy_processor(proc_dir, dest)
    save_pruned(root, dest, record)
    return [_artifact(workdir, t, "torch", "model") for t in model.towers.values()]
