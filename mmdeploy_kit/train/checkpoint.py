"""Training checkpoints without pickle: weights as safetensors, optimizer/scheduler state via ``torch.save``
of a plain dict (tensors, numbers, lists) read back with ``weights_only=True``, progress as JSON.

Layout of a checkpoint directory::

    LATEST                      name of the newest complete checkpoint (written last, atomically)
    step-000200/model.safetensors, optim.pt, state.json
    best/model.safetensors, state.json   (the best evaluated weights so far)

A checkpoint is written into a temporary sibling and renamed into place, and ``LATEST`` is updated only
afterwards, so a run killed at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..artifacts import atomic_output_file
from ..errors import CheckpointError

LATEST = "LATEST"
BEST = "best"
_HINT = "delete the checkpoint directory {d} (or run without --resume) to start over"


def flat_state(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """``{"<name>.<param>": tensor}`` over several modules (copies, so shared tensors save cleanly)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            out[f"{name}.{k}"] = v.detach().cpu().contiguous().clone()
    return out


def load_flat_state(modules: dict[str, torch.nn.Module], state: dict[str, torch.Tensor], where: str) -> None:
    for name, module in modules.items():
        prefix = f"{name}."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{where} does not match the model being trained ({str(exc).splitlines()[0][:160]})",
                                  hint="resume with the same student, teacher and options") from None


def _save_weights(path: Path, modules: dict[str, torch.nn.Module]) -> None:
    from safetensors.torch import save_file

    save_file(flat_state(modules), str(path))


def _read_weights(path: Path, directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from ..model.safetensors_check import check_safetensors_file

    try:
        check_safetensors_file(path)
        return load_file(str(path))
    except CheckpointError as exc:
        raise CheckpointError(f"resume checkpoint is corrupt: {exc.message}", hint=_HINT.format(d=directory)) from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"resume checkpoint {path} is corrupt ({str(exc).splitlines()[0][:120]})",
                              hint=_HINT.format(d=directory)) from None


def save_checkpoint(directory: Path, step: int, modules: dict[str, torch.nn.Module], optim_state: dict[str, Any],
                    state: dict[str, Any], keep: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=directory))
    try:
        _save_weights(tmp / "model.safetensors", modules)
        torch.save(optim_state, tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=1))
        final = directory / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_text_atomic(directory / LATEST, name)
    old = sorted(p for p in directory.glob("step-*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def save_best(directory: Path, modules: dict[str, torch.nn.Module], info: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".best.tmp-", dir=directory))
    _save_weights(tmp / "model.safetensors", modules)
    (tmp / "state.json").write_text(json.dumps(info, indent=1))
    final = directory / BEST
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]] | None:
    """(weights, optimizer/scheduler state, progress state) of the newest checkpoint, or None if there is none.
    A damaged one is a one-line CheckpointError."""
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    ckpt = directory / pointer.read_text().strip()
    if not ckpt.is_dir():
        raise CheckpointError(f"resume checkpoint {ckpt} is missing", hint=_HINT.format(d=directory))
    weights = _read_weights(ckpt / "model.safetensors", directory)
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"resume checkpoint {ckpt}/state.json is unreadable ({exc})",
                              hint=_HINT.format(d=directory)) from None
    try:
        optim = torch.load(ckpt / "optim.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of a truncated file come in many types
        raise CheckpointError(f"resume checkpoint {ckpt}/optim.pt is corrupt ({str(exc).splitlines()[0][:120]})",
                              hint=_HINT.format(d=directory)) from None
    return weights, optim, state


def load_best(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    best = directory / BEST
    if not (best / "state.json").is_file():
        return None
    return _read_weights(best / "model.safetensors", directory), json.loads((best / "state.json").read_text())


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_output_file(path) as tmp:
        tmp.write_text(text)
