"""Cheap, torch-free integrity check of a .safetensors file (header parses, data fully present)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ..errors import CheckpointError

_MAX_HEADER = 100 * 1024 * 1024


def check_safetensors_file(path: str | Path) -> dict:
    """Return the parsed header, or raise CheckpointError naming what is wrong and how to fix it."""
    p = Path(path)
    fix = "re-download or re-save the checkpoint; the file is damaged"
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{p} is truncated ({size} bytes; no safetensors header)", hint=fix)
            (n,) = struct.unpack("<Q", raw)
            if n <= 0 or n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(f"{p} is corrupt or truncated (header length {n} vs file size {size})", hint=fix)
            header = json.loads(fh.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{p} is corrupt (its safetensors header is not valid JSON)", hint=fix) from None
    except FileNotFoundError:
        raise CheckpointError(f"{p} does not exist", hint="check the path") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{p} is corrupt (safetensors header is not a mapping)", hint=fix)
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(meta["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise CheckpointError(f"{p} is corrupt (tensor {name!r} has no valid data_offsets)", hint=fix) from None
    if 8 + n + end > size:
        raise CheckpointError(
            f"{p} is truncated: tensors need {8 + n + end} bytes but the file has {size}", hint=fix)
    return header
