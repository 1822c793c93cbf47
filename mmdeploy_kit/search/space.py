"""The search space of ``mmdk optimize``: per tower prune ratio and precision; distillation steps, calibration,
runtime and batch for the whole model. Defaults come from the target; ``--space space.yaml`` or a recipe's
``search:`` block override them (validated like recipes, with line numbers)::

    search:
      prune: [0.0, 0.5]          # ratio range for every tower (lo, hi); 0 = unpruned
      prune_step: 0.05
      precision: [fp32, int8_static, int8_dynamic]
      towers:                    # per-tower overrides of prune / precision
        text: {prune: [0.0, 0.3], precision: [fp32, int8_dynamic]}
      distill_steps: [0, 200]    # 0: no distillation (only matters when a tower is pruned)
      calibration: [minmax, percentile]
      runtime: [ort]             # ort | openvino (when installed) | tensorrt (gpu / jetson-* targets)
      batch: [1]                 # the bench batch; several values only for the throughput objective

Choices a registered pass cannot take (``bf16`` before the quantize pass knows it, ``openvino`` before an
OpenVINO export pass is registered) are dropped from the defaults and refused when named.
Torch-free: imports only pydantic configs and the registry.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import UserInputError, validation_message

INT8_METHODS = {"int8": None, "int8_static": "static", "int8_dynamic": "dynamic", "int8_hybrid": "hybrid"}
ALL_PRECISIONS = ("fp32", "fp16", "bf16", *INT8_METHODS)
ALL_RUNTIMES = ("ort", "openvino", "tensorrt")
CALIBRATIONS = ("minmax", "entropy", "percentile")
GPU_TARGETS_PREFIX = ("gpu", "jetson")


def quantize_precisions() -> tuple[str, ...]:
    """Precisions the registered quantize pass accepts (``bf16`` appears when a branch adds it)."""
    from ..passes.quantize.config import QuantizeConfig

    return tuple(typing.get_args(QuantizeConfig.model_fields["precision"].annotation))


def available_runtimes(target: str) -> tuple[str, ...]:
    """Runtimes this target can search: ORT always; OpenVINO when an export pass for it is registered and the
    target is a CPU; a TensorRT bundle on GPU / Jetson targets."""
    from ..passes.registry import DISPATCH, PASS_REGISTRY

    out = ["ort"]
    if target == "cpu" and ("openvino" in DISPATCH["export"][2] or "export_openvino" in PASS_REGISTRY):
        out.append("openvino")
    if target.startswith(GPU_TARGETS_PREFIX):
        out.append("tensorrt")
    return tuple(out)


def openvino_bf16() -> bool:
    """BF16 is searched through OpenVINO's export (``export: {target: openvino, precision: bf16}``) on a CPU with
    native BF16 (AVX512_BF16 / AMX) where that pass is installed."""
    from .._lazy import available

    if "openvino" not in available_runtimes("cpu") or not available("openvino"):
        return False
    from ..runtime.backends.openvino import cpu_supports_bf16

    return cpu_supports_bf16()


def available_precisions(target: str) -> tuple[str, ...]:
    q = quantize_precisions()
    bf16 = target == "cpu" and openvino_bf16()
    return tuple(p for p in ALL_PRECISIONS if (p in INT8_METHODS and "int8" in q) or p in q
                 or (p == "bf16" and bf16))


def default_precisions(target: str) -> tuple[str, ...]:
    """CPU: FP16 is no faster than FP32 there (FIELD_NOTES), so it is left out unless asked for."""
    avail = available_precisions(target)
    want = ("fp32", "bf16", "int8_static", "int8_dynamic") if target == "cpu" else ("fp32", "fp16", "int8_static")
    return tuple(p for p in want if p in avail)


class TowerSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prune: Optional[tuple[float, float]] = None
    precision: Optional[tuple[str, ...]] = None


class SearchSpace(BaseModel):
    """Everything ``mmdk optimize`` may choose, as data (hashable; saved in the study)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prune: tuple[float, float] = (0.0, 0.5)
    prune_step: float = Field(0.05, gt=0, le=0.5)
    precision: tuple[str, ...] = ()            # () = the target's default
    towers: dict[str, TowerSpace] = Field(default_factory=dict)
    distill_steps: tuple[int, ...] = (0, 200)
    distill_batch: int = Field(32, ge=1)
    distill_lr: float = Field(1e-4, gt=0)
    distill_max_minutes: Optional[float] = Field(5.0, gt=0)
    calibration: tuple[str, ...] = ("minmax", "percentile")
    calib_samples: int = Field(64, ge=1)
    runtime: tuple[str, ...] = ()              # () = the target's default
    batch: tuple[int, ...] = (1,)

    @field_validator("prune")
    @classmethod
    def _ratio(cls, v: tuple[float, float]) -> tuple[float, float]:
        _check_ratio(v)
        return v

    @field_validator("distill_steps", "batch")
    @classmethod
    def _non_negative(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(x < 0 for x in v):
            raise ValueError(f"must be a non-empty list of numbers >= 0 (got {list(v)})")
        return tuple(sorted(set(v)))

    @field_validator("calibration")
    @classmethod
    def _calib(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in v if c not in CALIBRATIONS]
        if bad or not v:
            raise ValueError(f"calibration methods are {', '.join(CALIBRATIONS)} (got {list(v)})")
        return v

    # ---- resolved per tower and target ------------------------------------------------------------
    def tower_prune(self, tower: str) -> tuple[float, float]:
        t = self.towers.get(tower)
        return t.prune if t is not None and t.prune is not None else self.prune

    def tower_precisions(self, tower: str, target: str) -> tuple[str, ...]:
        t = self.towers.get(tower)
        chosen = t.precision if t is not None and t.precision is not None else self.precision
        return tuple(chosen) or default_precisions(target)

    def runtimes(self, target: str) -> tuple[str, ...]:
        return tuple(self.runtime) or available_runtimes(target)


def _check_ratio(v: Any) -> None:
    lo, hi = v
    if not 0.0 <= lo <= hi < 1.0:
        raise ValueError(f"a prune range is [lo, hi] with 0 <= lo <= hi < 1 (got {list(v)})")


# ---- loading with line numbers ---------------------------------------------------------------------------
def load_space(source: Optional[str | Path | dict], where: str = "<space>") -> SearchSpace:
    """A ``SearchSpace`` from a dict, a space YAML (top level or under ``search:``) or a recipe with a
    ``search:`` block. Unknown keys and bad values name their line."""
    if source is None:
        return SearchSpace()
    node = None
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise UserInputError(f"search space file {path} does not exist", hint="pass a YAML file to --space")
        where = str(path)
        text = path.read_text()
        try:
            node, data = yaml.compose(text), yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise UserInputError(f"{where}{f' line {mark.line + 1}' if mark else ''}: invalid YAML") from None
    data = data or {}
    if not isinstance(data, dict):
        raise UserInputError(f"{where}: a search space is a mapping (got {type(data).__name__})")
    if "search" in data:   # a recipe (or a space file) with a search: block
        node = _child(node, "search")
        data = data["search"] or {}
        if not isinstance(data, dict):
            raise UserInputError(f"{where}: 'search:' is a mapping of dimensions")
    return _validate(data, node, where)


def _child(node: Any, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return v
    return None


def _line_of(node: Any, path: list[Any]) -> Optional[int]:
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if str(k.value) == str(key)), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _validate(data: dict[str, Any], node: Any, where: str) -> SearchSpace:
    fields = list(SearchSpace.model_fields)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            line = _line_of(node, [key])
            raise UserInputError(f"{where}{f' line {line}' if line else ''}: unknown search dimension {key!r}"
                                 + (f" (did you mean {close[0]!r}?)" if close else ""),
                                 hint=f"dimensions: {', '.join(fields)}")
    clean = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    try:
        return SearchSpace(**clean)
    except ValueError as exc:
        errors = exc.errors() if callable(getattr(exc, "errors", None)) else []
        loc = list(errors[0].get("loc", ())) if errors else []
        line = _line_of(node, loc)
        raise UserInputError(f"{where}{f' line {line}' if line else ''}: invalid search space: "
                             f"{validation_message(exc)}") from None


def check_space(space: SearchSpace, target: str, towers: list[str], where: str = "the search space") -> None:
    """Choices this install and target cannot take, and towers the model does not have: exit 2 up front."""
    avail_p, avail_r = available_precisions(target), available_runtimes(target)
    for name, ts in space.towers.items():
        if name not in towers:
            raise UserInputError(f"{where}: tower {name!r} is not in the model", hint=f"towers are: {', '.join(towers)}")
        if ts.prune is not None:
            try:
                _check_ratio(ts.prune)
            except ValueError as exc:
                raise UserInputError(f"{where}: towers.{name}.prune: {exc}") from None
    for t in towers:
        for p in space.tower_precisions(t, target):
            if p not in avail_p:
                why = "not a precision" if p not in ALL_PRECISIONS else "not supported by this install's quantize pass"
                raise UserInputError(f"{where}: precision {p!r} for tower {t!r} is {why}",
                                     hint=f"available: {', '.join(avail_p)}")
    for r in space.runtimes(target):
        if r not in avail_r:
            why = ("TensorRT bundles are searched on gpu / jetson-* targets" if r == "tensorrt" else
                   "no OpenVINO export pass is registered in this install" if r == "openvino" else "unknown runtime")
            raise UserInputError(f"{where}: runtime {r!r} is not available for target {target!r} ({why})",
                                 hint=f"available: {', '.join(avail_r)}")
