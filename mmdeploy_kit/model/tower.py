"""Towers and loaded models (torch-free types; torch objects are held, never imported here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from ..errors import UserInputError
from .iospec import IOSpec

TOWER_KINDS = ("torch", "onnx", "trt_engine", "openvino")


@dataclass
class Tower:
    """A named sub-model with its I/O spec.

    ``kind == "torch"``: ``module`` is an ``nn.Module`` called with keyword arguments named like the
    spec's inputs, returning the spec's outputs as a tuple (see ``torch_tower.TowerModule``).
    ``kind == "onnx"`` / ``"trt_engine"``: ``path`` is the file.
    """

    name: str
    spec: IOSpec
    kind: str
    module: Any = None
    path: Optional[Path] = None
    precision: str = "fp32"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def is_torch(self) -> bool:
        return self.kind == "torch"

    def parameter_count(self) -> int:
        if "parameters" in self.details:
            return int(self.details["parameters"])
        if self.is_torch and self.module is not None:
            return sum(p.numel() for p in self.module.parameters())
        if self.kind == "onnx" and self.path is not None:
            from .onnx_io import onnx_parameter_count

            return onnx_parameter_count(self.path)
        if self.kind == "openvino" and self.path is not None:
            return ir_parameter_count(self.path)
        return 0


def ir_parameter_count(path: Path) -> int:
    """Elements of an OpenVINO IR's weight constants (float / 8-bit; shape constants are integer and skipped)."""
    from .._lazy import require

    ov = require("openvino", extra="openvino", purpose="reading OpenVINO IR")
    total = 0
    for op in ov.Core().read_model(str(path)).get_ops():
        if op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in (
                "f32", "f16", "bf16", "i8", "u8"):
            n = 1
            for d in op.get_output_shape(0):
                n *= int(d)
            total += n
    return total


@dataclass
class LoadedModel:
    """What ``mmdeploy_kit.load`` returns: towers plus where they came from."""

    source: str
    format: str                      # hf | factory | torchscript | pt2 | pickle | onnx | mmdk
    architecture: str
    towers: dict[str, Tower]
    root: Any = None                 # the root torch module (None for ONNX)
    hf_dir: Optional[Path] = None    # where tokenizer / image processor files live, if any
    files: list[Path] = field(default_factory=list)  # files that make up the checkpoint
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def tower_names(self) -> list[str]:
        return list(self.towers)

    def tower(self, name: str) -> Tower:
        try:
            return self.towers[name]
        except KeyError:
            raise UserInputError(f"no tower named {name!r} in {self.source}",
                                 hint=f"towers are: {', '.join(self.towers)}") from None

    def select(self, names: Optional[Iterable[str]]) -> list[Tower]:
        """The requested towers (all when ``names`` is empty), validating every name."""
        names = list(names or [])
        return [self.tower(n) for n in names] if names else list(self.towers.values())

    def size_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.exists())

    def parameter_count(self) -> int:
        if self.root is not None:
            return sum(p.numel() for p in self.root.parameters())
        return sum(t.parameter_count() for t in self.towers.values())

    def dtype(self) -> str:
        if self.root is not None:
            dtypes = sorted({str(p.dtype).replace("torch.", "") for p in self.root.parameters()})
            return ",".join(dtypes) or "n/a"
        precisions = sorted({t.precision for t in self.towers.values()})
        return ",".join(precisions)

    def describe(self) -> dict[str, Any]:
        """The JSON ``mmdk inspect`` prints."""
        return {
            "source": self.source,
            "format": self.format,
            "architecture": self.architecture,
            "parameters": self.parameter_count(),
            "size_on_disk_bytes": self.size_on_disk(),
            "dtype": self.dtype(),
            "towers": {
                name: {
                    "kind": t.kind,
                    "precision": t.precision,
                    "parameters": t.parameter_count(),
                    "modalities": t.spec.modalities,
                    **t.spec.to_dict(),
                }
                for name, t in self.towers.items()
            },
        }
