"""Reading a weights file as tensors only: safetensors (checked before it is mapped), or ``torch.load`` with
``weights_only=True`` (a pickle that holds code is refused, never run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._lazy import require
from ..errors import CheckpointError


def read_state_dict(path: Path, *, corrupt_hint: str = "re-save the weights; the file is damaged",
                    pickle_hint: str = "save a state_dict (model.state_dict()) or use safetensors") -> dict[str, Any]:
    """The state dict in ``path`` (a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper unwrapped); one-line
    ``CheckpointError`` for a missing, truncated or corrupt file, or one that holds pickled code."""
    torch = require("torch")
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist", hint="check --weights")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        from .safetensors_check import check_safetensors_file

        check_safetensors_file(path)
        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError has no importable base in every version
            raise CheckpointError(f"{path} could not be read as safetensors: {str(exc).splitlines()[0]}",
                                  hint=corrupt_hint) from None
    import pickle
    import zipfile

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in msg or "Unsupported global" in str(exc):
            raise CheckpointError(f"{path} contains pickled code, not just tensors", hint=pickle_hint) from None
        raise CheckpointError(f"{path} is corrupt or truncated ({msg[:120]})", hint=corrupt_hint) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state
