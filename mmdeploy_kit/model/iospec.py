"""Typed I/O specs: one per tower, shared by export, quantization, calibration and the benchmark.

Torch-free on purpose (numpy + pydantic only) so the ONNX benchmark path runs where torch is absent.

YAML form::

    inputs:
      - {name: input_ids, modality: text, dtype: int64, shape: [batch, seq], range: [0, 1000]}
      - {name: pixel_values, modality: image, dtype: float32, shape: [batch, 3, 64, 64]}
    outputs: [{name: logits}]
    dims: {batch: [1, 8], seq: [4, 32]}        # inclusive min/max of each symbolic dim

or several towers, each a submodule of the root module::

    towers:
      vision: {module: image_encoder, inputs: [...], outputs: [...]}
      text:   {module: text_encoder,  inputs: [...], outputs: [...]}
    dims: {...}                                 # shared; a tower may also carry its own

Integer ``range`` is half-open ``[low, high)`` like ``numpy.random.integers``: ``[1, 2]`` means all ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import SpecError, validation_message

Modality = Literal["text", "image", "audio", "video", "tabular", "generic"]
DType = Literal["float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool"]
Dim = Union[int, str]

INT_DTYPES = {"int64", "int32", "int8", "uint8"}
NUMPY_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": np.float32,  # numpy has no bfloat16; generated as float32 and cast by the backend
    "int64": np.int64,
    "int32": np.int32,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}
DEFAULT_DIM_RANGE = (1, 8)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Frozen):
    name: str
    modality: Modality = "generic"
    dtype: DType = "float32"
    shape: tuple[Dim, ...]
    range: Optional[tuple[float, float]] = None

    @field_validator("shape")
    @classmethod
    def _check_shape(cls, v: tuple[Dim, ...]) -> tuple[Dim, ...]:
        for d in v:
            if isinstance(d, int) and d <= 0:
                raise ValueError(f"static dims must be positive, got {d}")
            if isinstance(d, str) and not d.isidentifier():
                raise ValueError(f"symbolic dim {d!r} must be an identifier such as 'batch' or 'seq'")
        return v

    @model_validator(mode="after")
    def _check_range(self) -> "InputSpec":
        if self.range is not None and self.range[0] >= self.range[1]:
            raise ValueError(f"range {list(self.range)} must have low < high")
        return self

    @property
    def symbolic_dims(self) -> list[str]:
        return [d for d in self.shape if isinstance(d, str)]


class OutputSpec(_Frozen):
    name: str
    shape: Optional[tuple[Dim, ...]] = None
    dtype: Optional[DType] = None


class IOSpec(_Frozen):
    """Inputs, outputs and the inclusive [min, max] of every symbolic dim of one tower."""

    inputs: tuple[InputSpec, ...] = Field(min_length=1)
    outputs: tuple[OutputSpec, ...] = Field(min_length=1)
    dims: dict[str, tuple[int, int]] = Field(default_factory=dict)
    module: Optional[str] = None  # dotted path of the tower's submodule inside the root module
    # TensorRT optimization-profile "opt" size of symbolic dims (YAML: ``dims: {batch: {min: 1, opt: 4, max: 8}}``)
    opt: Optional[dict[str, int]] = None

    @model_validator(mode="before")
    @classmethod
    def _dims_with_opt(cls, data: Any) -> Any:
        """``dims: {d: {min, max, opt}}`` -> ``dims: {d: [min, max]}`` + ``opt: {d: opt}``."""
        if not isinstance(data, dict) or not isinstance(data.get("dims"), dict):
            return data
        if not any(isinstance(v, dict) for v in data["dims"].values()):
            return data
        dims, opt = {}, dict(data.get("opt") or {})
        for name, v in data["dims"].items():
            if isinstance(v, dict):
                unknown = set(v) - {"min", "max", "opt"}
                if unknown or not {"min", "max"} <= set(v):
                    raise ValueError(f"dim {name!r}: a mapping needs min and max (and optional opt), got {sorted(v)}")
                dims[name] = (v["min"], v["max"])
                if v.get("opt") is not None:
                    opt[name] = v["opt"]
            else:
                dims[name] = v
        return {**data, "dims": dims, "opt": opt or None}

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs_as_names(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [{"name": o} if isinstance(o, str) else o for o in v]
        return v

    @model_validator(mode="after")
    def _fill_dims(self) -> "IOSpec":
        names = [i.name for i in self.inputs] + [o.name for o in self.outputs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate input/output names: {sorted(dupes)}")
        for name, (lo, hi) in self.dims.items():
            if lo < 1 or hi < lo:
                raise ValueError(f"dim {name!r}: need 1 <= min <= max, got [{lo}, {hi}]")
        missing = {d for i in self.inputs for d in i.symbolic_dims} - set(self.dims)
        if missing:
            # frozen model: fill through object.__setattr__ on a copy of the dict
            dims = dict(self.dims)
            for d in sorted(missing):
                dims[d] = DEFAULT_DIM_RANGE
            object.__setattr__(self, "dims", dims)
        for name, val in (self.opt or {}).items():
            if name not in self.dims:
                raise ValueError(f"opt names dim {name!r}, which is not in dims {sorted(self.dims)}")
            lo, hi = self.dims[name]
            if not lo <= val <= hi:
                raise ValueError(f"opt {name}={val} lies outside dims.{name} [{lo}, {hi}]")
        return self

    # ---- queries -------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def modalities(self) -> list[str]:
        return sorted({i.modality for i in self.inputs})

    def input(self, name: str) -> InputSpec:
        for i in self.inputs:
            if i.name == name:
                return i
        raise SpecError(f"no input named {name!r}; inputs are {self.input_names}")

    def symbolic_dims(self) -> list[str]:
        seen: list[str] = []
        for i in self.inputs:
            for d in i.symbolic_dims:
                if d not in seen:
                    seen.append(d)
        return seen

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export(dynamic_axes=...)`` for inputs (outputs get the ones we can infer)."""
        return {i.name: {k: d for k, d in enumerate(i.shape) if isinstance(d, str)} for i in self.inputs}

    def resolve(self, sizes: dict[str, int] | None = None) -> dict[str, tuple[int, ...]]:
        """Concrete shapes for given symbolic sizes (unspecified dims take their minimum)."""
        sizes = dict(sizes or {})
        for name, val in sizes.items():
            if name in self.dims:
                lo, hi = self.dims[name]
                if not lo <= val <= hi:
                    raise SpecError(
                        f"{name}={val} is outside the I/O spec's range [{lo}, {hi}]",
                        hint=f"pick {name} within [{lo}, {hi}] or widen dims.{name} in the I/O spec",
                    )
        out = {}
        for i in self.inputs:
            out[i.name] = tuple(
                d if isinstance(d, int) else int(sizes.get(d, self.dims[d][0])) for d in i.shape
            )
        return out

    def dummy_inputs(self, sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        """Deterministic random inputs honouring dtype and integer ``range`` (half-open)."""
        rng = np.random.default_rng(seed)
        shapes = self.resolve(sizes)
        feeds: dict[str, np.ndarray] = {}
        for i in self.inputs:
            shape = shapes[i.name]
            if i.dtype in INT_DTYPES:
                lo, hi = i.range if i.range is not None else (0, 2)
                feeds[i.name] = rng.integers(int(lo), int(hi), size=shape).astype(NUMPY_DTYPES[i.dtype])
            elif i.dtype == "bool":
                feeds[i.name] = np.ones(shape, dtype=np.bool_)
            else:
                lo, hi = i.range if i.range is not None else (-1.0, 1.0)
                arr = rng.uniform(lo, hi, size=shape) if i.range is not None else rng.standard_normal(shape)
                feeds[i.name] = arr.astype(NUMPY_DTYPES[i.dtype])
        return feeds

    def verification_sizes(self, max_batch: int = 4) -> list[dict[str, int]]:
        """At least two batch sizes and, for sequence-like dims, two lengths (min and a larger one)."""
        grid: list[dict[str, int]] = []
        dims = self.symbolic_dims()
        if not dims:
            return [{}]
        lows = {d: self.dims[d][0] for d in dims}
        highs = {}
        for d in dims:
            lo, hi = self.dims[d]
            cap = max_batch if d == "batch" else 64
            highs[d] = max(lo, min(hi, max(lo + 1, cap)))
        grid.append(dict(lows))
        grid.append(dict(highs))
        for d in dims:  # vary one dim at a time too, so a mix-up of axes cannot hide
            if lows[d] != highs[d]:
                g = dict(lows)
                g[d] = highs[d]
                if g not in grid:
                    grid.append(g)
        return grid

    def batch_dim(self) -> str | None:
        """The name of the leading symbolic dim shared by all inputs (usually 'batch')."""
        firsts = {i.shape[0] for i in self.inputs if i.shape and isinstance(i.shape[0], str)}
        return firsts.pop() if len(firsts) == 1 else None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class SpecFile(_Frozen):
    """A parsed ``--io`` YAML: either one tower (flat) or ``towers: {name: IOSpec}``."""

    towers: dict[str, IOSpec]

    @classmethod
    def parse(cls, data: Any, source: str = "I/O spec") -> "SpecFile":
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping with 'inputs'/'outputs' or 'towers'")
        try:
            if "towers" in data:
                unknown = set(data) - {"towers", "dims"}
                if unknown:
                    raise SpecError(f"{source}: unknown top-level keys {sorted(unknown)}",
                                    hint="a multi-tower spec has only 'towers' and 'dims'")
                shared = data.get("dims") or {}
                towers = {}
                for name, t in (data["towers"] or {}).items():
                    if not isinstance(t, dict):
                        raise SpecError(f"{source}: tower {name!r} must be a mapping")
                    towers[name] = IOSpec.model_validate({**t, "dims": {**shared, **(t.get("dims") or {})}})
                if not towers:
                    raise SpecError(f"{source}: 'towers' is empty")
                return cls(towers=towers)
            return cls(towers={"model": IOSpec.model_validate(data)})
        except ValidationError as exc:
            raise SpecError(f"{source}: {validation_message(exc)}",
                            hint="see the I/O spec format in README.md ('The I/O spec')") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SpecFile":
        import yaml

        p = Path(path)
        if not p.is_file():
            raise SpecError(f"I/O spec {p} does not exist", hint="pass --io path/to/spec.yaml")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise SpecError(f"I/O spec {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        return cls.parse(data, source=str(p))

