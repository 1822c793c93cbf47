"""Validate a recipe against the pass registry and the model before any work: every step's pass, options
(by the pass's own config class), data references, towers and order. Nothing is written here."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import MmdkError, UserInputError, validation_message
from ..passes.base import model_format
from ..passes.registry import get_pass, resolve_pass_name
from .recipe import Recipe, Step


@dataclass
class PlannedStep:
    index: int                      # 1-based
    step: Step
    pass_name: str
    pass_cls: Any
    config: Any                     # the pass's PassConfig, data names resolved to absolute paths
    input_format: str
    data_files: dict[str, Path] = field(default_factory=dict)   # config field -> file/dir it reads

    @property
    def dirname(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.step.name)
        return f"{self.index:02d}-{safe}"

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.config.model_dump(exclude_defaults=True).items()))
        return f"[{self.index}] {self.step.name} ({self.pass_name} v{self.pass_cls.version}: " \
               f"{self.input_format} -> {self.pass_cls.output_format(self.config)}){': ' + opts if opts else ''}"


@dataclass
class Plan:
    recipe: Recipe
    steps: list[PlannedStep]
    model_source: str
    model: Any = None               # the loaded source model (LoadedModel)
    model_format: str = "torch"
    warnings: list[str] = field(default_factory=list)   # machine checks a dry run did not enforce
    load_options: dict[str, Any] = field(default_factory=dict)   # how the source was loaded (to load it again)

    def describe(self) -> list[str]:
        head = f"recipe {self.recipe.source}: {len(self.steps)} step(s) on {self.model_source} ({self.model_format})"
        return [head] + [s.describe() for s in self.steps] + [f"warning: {w}" for w in self.warnings]


def resolve_model_source(recipe: Recipe, model: Any) -> Any:
    if model is not None:
        return model
    if not recipe.model:
        raise UserInputError(f"{recipe.source} names no model", hint="pass MODEL on the command line or set model: "
                                                                      "in the recipe")
    p = Path(recipe.model)
    return str(p if p.is_absolute() else (recipe.base_dir / p))


def plan_recipe(recipe: Recipe, model: Any = None, load_options: Optional[dict[str, Any]] = None,
                preflight: bool = True) -> Plan:
    """Check everything a run needs (passes, options, data, towers, order) and load the source model.

    ``preflight``: also run each pass's machine checks (a TensorRT build without a GPU exits 3 here); a dry run
    turns them into warnings, so a recipe for another machine still validates."""
    from ..model.tower import LoadedModel

    warnings: list[str] = []
    steps = [_plan_step(recipe, i, s, preflight, warnings) for i, s in enumerate(recipe.steps, 1)]
    source = resolve_model_source(recipe, model)
    if isinstance(source, LoadedModel):
        loaded = source
    else:
        from ..model.loaders import load

        loaded = load(source, **(load_options or {}))
    fmt = model_format(loaded)
    _check_towers(recipe, steps, loaded)
    _check_order(recipe, steps, fmt)
    return Plan(recipe=recipe, steps=steps, model_source=str(loaded.source), model=loaded, model_format=fmt,
                warnings=warnings, load_options=dict(load_options or {}))


def _plan_step(recipe: Recipe, index: int, step: Step, preflight: bool = True,
               warnings: Optional[list[str]] = None) -> PlannedStep:
    where = recipe.where(step.line)
    try:
        pass_name = resolve_pass_name(step.pass_step, step.options)
        pass_cls = get_pass(pass_name)
    except UserInputError as exc:
        raise UserInputError(f"{where}: {exc.message}", hint=exc.hint) from None
    options = dict(step.options)
    data_files: dict[str, Path] = {}
    for fld in pass_cls.data_fields:
        value = options.get(fld)
        if value is None:
            continue
        path = _resolve_data(recipe, step, fld, value)
        options[fld] = str(path)
        data_files[fld] = path
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        config = pass_cls.config_cls(**options)
    except MmdkError as exc:
        raise UserInputError(f"{where}: step {step.name!r}: {exc.message}", hint=exc.hint) from None
    except ValueError as exc:  # pydantic ValidationError
        raise _option_error(recipe, step, pass_cls, exc) from None
    try:
        pass_cls.preflight(config)  # e.g. TensorRT without a GPU: exit 3 before anything runs
    except MmdkError as exc:
        if preflight:
            raise type(exc)(f"{where}: step {step.name!r}: {exc.message}", hint=exc.hint) from None
        if warnings is not None:
            warnings.append(f"step {step.name!r} would stop here (exit {exc.exit_code}): {exc}")
    return PlannedStep(index=index, step=step, pass_name=pass_name, pass_cls=pass_cls, config=config,
                       input_format="?", data_files=data_files)


def _option_error(recipe: Recipe, step: Step, pass_cls: Any, exc: Exception) -> UserInputError:
    errors = exc.errors() if callable(getattr(exc, "errors", None)) else []
    first = errors[0] if errors else {}
    key = str(first.get("loc", ("",))[0]) if first.get("loc") else ""
    line = step.option_lines.get(key, step.line)
    where = recipe.where(line)
    if first.get("type") == "extra_forbidden":
        fields = list(pass_cls.config_cls.model_fields)
        close = difflib.get_close_matches(key, fields, n=1)
        return UserInputError(f"{where}: unknown option {key!r} for step {step.name!r}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""),
                              hint=f"options of {step.pass_step!r}: {', '.join(fields)}")
    return UserInputError(f"{where}: invalid option for step {step.name!r}: {validation_message(exc)}")


def _resolve_data(recipe: Recipe, step: Step, fld: str, value: Any) -> Path:
    where = recipe.where(step.option_lines.get(fld, step.line))
    if not isinstance(value, str):
        raise UserInputError(f"{where}: {fld} of step {step.name!r} must be a data name or a path, got {value!r}")
    if value in recipe.data:
        raw, line = recipe.data[value], recipe.data_lines.get(value)
        if raw is None:
            raise UserInputError(f"{where}: data {value!r} used by step {step.name!r} has no path in {recipe.source}",
                                 hint=f"pass --data {value}=PATH")
        path = Path(raw) if Path(raw).is_absolute() else recipe.base_dir / raw
        if not path.exists():
            raise UserInputError(f"{recipe.where(line)}: data {value!r} points at {path}, which does not exist",
                                 hint="fix the path under data: (relative paths are relative to the recipe file) "
                                      "or override it with --data NAME=PATH")
        return path.resolve()
    path = Path(value) if Path(value).is_absolute() else recipe.base_dir / value
    if path.exists():
        return path.resolve()
    names = ", ".join(recipe.data) or "none defined"
    raise UserInputError(f"{where}: {fld} {value!r} of step {step.name!r} is neither a data name ({names}) nor an "
                         "existing path", hint="add it under data: or fix the path")


def _check_towers(recipe: Recipe, steps: list[PlannedStep], model: Any) -> None:
    for ps in steps:
        fld = ps.pass_cls.tower_field
        names = getattr(ps.config, fld, ()) if fld else ()
        for name in names or ():
            if name not in model.towers:
                line = ps.step.option_lines.get(fld or "", ps.step.line)
                raise UserInputError(f"{recipe.where(line)}: step {ps.step.name!r} names tower {name!r}, which "
                                     f"{model.source} does not have", hint=f"towers are: {', '.join(model.towers)}")


def _check_order(recipe: Recipe, steps: list[PlannedStep], fmt: str) -> None:
    current, made_by = fmt, "the source model"
    for i, ps in enumerate(steps):
        ps.input_format = current
        where = recipe.where(ps.step.line)
        for earlier in steps[:i]:
            banned = earlier.pass_cls.forbidden_after
            if ps.pass_name in banned or ps.step.pass_step in banned:
                raise UserInputError(f"{where}: step {ps.step.name!r} may not follow step {earlier.step.name!r} "
                                     f"({earlier.pass_name} forbids {ps.step.pass_step} after it)",
                                     hint=f"move {ps.step.name!r} before {earlier.step.name!r} "
                                          "(prune before distill before quantize before export)")
        if current not in ps.pass_cls.accepts:
            raise UserInputError(f"{where}: step {ps.step.name!r} ({ps.pass_name}) takes a "
                                 f"{' or '.join(ps.pass_cls.accepts)} model, but {made_by} gives {current}",
                                 hint="reorder the steps or start from a different model")
        if ps.pass_cls.output_format(ps.config) != "report":
            current, made_by = ps.pass_cls.output_format(ps.config), f"step {ps.step.name!r}"
