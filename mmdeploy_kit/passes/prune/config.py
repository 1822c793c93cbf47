"""``PruneConfig``: what to prune, by how much, scored how. Data, no code (hashable, serializable)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import WithJsonSchema, field_validator, model_validator

from ...errors import UserInputError
from ..base import PassConfig, name_value_pairs

SCOPES = ("heads", "mlp", "channels")


ALL_TOWERS = "*"


def _pairs(v: Any, what: str) -> Any:
    """``{"vision": 0.4}``, ``[["vision", 0.4]]``, ``"vision=0.4,text=0.3"`` or one number (``"*"``: every
    tower, resolved by the pass) -> ``(("vision", 0.4), ...)``."""
    if isinstance(v, dict):
        return tuple((str(k), val) for k, val in v.items())
    if isinstance(v, (list, tuple)) and all(isinstance(x, (list, tuple)) for x in v):
        return tuple(tuple(x) for x in v)
    if isinstance(v, (int, float, str, list, tuple)) and not isinstance(v, bool):
        return tower_values(v, (), [ALL_TOWERS], what.replace("_", "-"),
                            cast=float if what == "ratio" else (lambda x: int(float(x))))
    return v


# What a recipe may write for a per-tower figure (the validators turn each into (tower, value) pairs):
# 0.4 (every tower), "vision=0.4,text=0.3", {vision: 0.4}, or [[vision, 0.4], ...].
_PER_TOWER_SCHEMA = {"anyOf": [{"type": "number"}, {"type": "string"},
                               {"type": "object", "additionalProperties": {"type": "number"}},
                               {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2}}]}


class PruneConfig(PassConfig):
    """``ratio``: per tower, the fraction of its parameters to remove (0 < r < 1); ``target_params``: per
    tower, the parameter count to reach instead. A tower named in neither is left as it is.

    ``scope``: which structures may shrink — ``heads`` (attention heads of HF towers), ``mlp`` (hidden
    widths of Linear layers), ``channels`` (conv channels incl. BatchNorm / residual partners, LSTM hidden
    sizes). ``round_to``: widths become multiples of it. ``ignore``: module names kept as they are
    (with their input and output widths). ``importance``: ``magnitude`` (no data) or ``taylor`` /
    ``hessian`` (gradients of a label-free loss on ``calib_data``). Each step grows the per-layer fraction
    by ``step`` (never beyond ``max_layer_ratio``) until the ratio is reached. ``min_cosine``: fail when
    the pruned tower's outputs fall below this cosine vs the unpruned ones (default: record only).
    """

    ratio: Annotated[tuple[tuple[str, float], ...], WithJsonSchema(_PER_TOWER_SCHEMA)] = ()
    target_params: Annotated[tuple[tuple[str, int], ...], WithJsonSchema(_PER_TOWER_SCHEMA)] = ()
    importance: Literal["magnitude", "taylor", "hessian"] = "magnitude"
    scope: tuple[Literal["heads", "mlp", "channels"], ...] = SCOPES
    round_to: int = 1
    ignore: tuple[str, ...] = ()
    calib_data: Optional[str] = None
    calib_samples: int = 64
    holdout_samples: int = 16
    batch_size: int = 8
    step: float = 0.05
    max_layer_ratio: float = 0.9
    min_cosine: Optional[float] = None
    seed: int = 0

    @field_validator("ratio", mode="before")
    @classmethod
    def _ratio_pairs(cls, v: Any) -> Any:
        return _pairs(v, "ratio")

    @field_validator("target_params", mode="before")
    @classmethod
    def _target_pairs(cls, v: Any) -> Any:
        return _pairs(v, "target_params")

    @field_validator("scope", mode="before")
    @classmethod
    def _scope_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        bad = [s for s in v if s not in SCOPES]
        if bad:
            raise UserInputError(f"unknown pruning scope {bad[0]!r}", hint=f"choose from: {', '.join(SCOPES)}")
        return tuple(v)

    @model_validator(mode="after")
    def _check(self) -> "PruneConfig":
        for tower, r in self.ratio:
            if not 0.0 < float(r) < 1.0:
                raise UserInputError(f"--ratio for tower {tower!r} is {r}; it must lie strictly between 0 and 1",
                                     hint="it is the fraction of the tower's parameters to remove, e.g. 0.4")
        for tower, n in self.target_params:
            if int(n) < 1:
                raise UserInputError(f"--target-params for tower {tower!r} is {n}; it must be a positive count")
        both = {t for t, _ in self.ratio} & {t for t, _ in self.target_params}
        if both:
            raise UserInputError(f"tower {sorted(both)[0]!r} has both a ratio and a target parameter count",
                                 hint="give one of --ratio / --target-params per tower")
        if len({t for t, _ in self.ratio}) != len(self.ratio) or \
                len({t for t, _ in self.target_params}) != len(self.target_params):
            raise UserInputError("a tower is listed twice in --ratio / --target-params")
        if not self.ratio and not self.target_params:
            raise UserInputError("nothing to prune: give --ratio (e.g. 0.4 or vision=0.4,text=0.3) or --target-params")
        if not self.scope:
            raise UserInputError("--scope is empty", hint=f"choose from: {', '.join(SCOPES)}")
        if self.round_to < 1:
            raise UserInputError(f"--round-to must be >= 1 (got {self.round_to})")
        if not 0.0 < self.step <= 0.5:
            raise UserInputError(f"step must lie in (0, 0.5] (got {self.step})")
        if not 0.0 < self.max_layer_ratio < 1.0:
            raise UserInputError(f"max_layer_ratio must lie in (0, 1) (got {self.max_layer_ratio})")
        if self.importance != "magnitude" and not self.calib_data:
            raise UserInputError(f"--importance {self.importance} needs data: pass --calib-data (a JSONL manifest, "
                                 ".npz or folder of .npy)", hint="or use --importance magnitude, which needs none")
        return self

    @property
    def towers(self) -> tuple[str, ...]:
        """The towers this config names (what the runner validates against the model; empty: every tower)."""
        return tuple(t for t, _ in self.ratio + self.target_params if t != ALL_TOWERS)

    def tower_targets(self, tower_names: list[str]) -> tuple[dict[str, float], dict[str, int]]:
        """(ratio per tower, target parameter count per tower), with ``"*"`` expanded to ``tower_names``."""
        named = {t for t, _ in self.ratio + self.target_params if t != ALL_TOWERS}

        def expand(pairs: tuple) -> dict:
            out = {t: v for t, v in pairs if t != ALL_TOWERS}
            for t, v in pairs:
                if t == ALL_TOWERS:
                    out.update({n: v for n in tower_names if n not in named})
            return out
        return expand(self.ratio), expand(self.target_params)


def tower_values(value: Any, towers: tuple[str, ...], all_towers: Optional[list[str]], what: str,
                 cast: Any = float) -> tuple[tuple[str, Any], ...]:
    """Per-tower values from the ways users give them: ``{"vision": 0.4}``, ``"vision=0.4,text=0.3"``, a
    single value for the ``towers`` named (all towers when none is), or one value per tower in ``towers``
    order (``--tower vision --ratio 0.4 --tower text --ratio 0.3``)."""
    if value is None:
        return ()
    if isinstance(value, dict):
        return tuple((str(k), cast(v)) for k, v in value.items())
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    pairs: list[tuple[str, Any]] = []
    plain: list[Any] = []
    for item in items:
        for part in (str(item).split(",") if isinstance(item, str) else [item]):
            part = part.strip() if isinstance(part, str) else part
            if isinstance(part, str) and "=" in part:
                pairs += [(k, _cast(v, cast, what)) for k, v in name_value_pairs(part, f"--{what}", "vision=0.4",
                                                                              form="TOWER=VALUE")]
            elif part != "":
                plain.append(_cast(part, cast, what))
    if pairs and plain:
        raise UserInputError(f"--{what} mixes tower=value pairs with plain values",
                             hint=f"use either --{what} vision=0.4,text=0.3 or --tower NAME --{what} VALUE pairs")
    if pairs:
        return tuple(pairs)
    names = list(towers) or list(all_towers or [])
    if len(plain) == 1:
        return tuple((t, plain[0]) for t in names)
    if len(plain) != len(names):
        raise UserInputError(f"{len(plain)} --{what} values for {len(towers)} --tower names",
                             hint=f"give one --{what} per --tower, in the same order, or one for all of them")
    return tuple(zip(names, plain))


def _cast(v: Any, cast: Any, what: str) -> Any:
    try:
        return cast(v)
    except (TypeError, ValueError):
        raise UserInputError(f"--{what} {v!r} is not a number") from None
