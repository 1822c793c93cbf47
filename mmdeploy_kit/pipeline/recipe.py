"""Recipes: a YAML list of steps (``{PASS: {options}}``), named data references and an optional model.

Parsing keeps the line of every step and option so validation errors can point at them
(``recipe.yaml line 7: unknown option 'precison' for step 'quantize' (did you mean 'precision'?)``).
Torch-free: loading and validating a recipe imports only the pass config classes (pydantic).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import UserInputError

RECIPE_KEYS = ("description", "model", "data", "steps", "search")  # search: mmdk optimize's space (ignored by run)
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "recipes"


@dataclass
class Step:
    """One recipe step: ``pass_step`` is what the recipe wrote (``export``), ``name`` addresses it in
    ``--set`` and in the run directory (``02-quantize``)."""

    pass_step: str
    options: dict[str, Any]
    name: str
    line: Optional[int] = None
    option_lines: dict[str, int] = field(default_factory=dict)


@dataclass
class Recipe:
    steps: list[Step]
    data: dict[str, Optional[str]] = field(default_factory=dict)   # None: must come from --data NAME=PATH
    model: Optional[str] = None
    description: str = ""
    source: str = "<recipe>"            # file path or built-in name, for messages
    base_dir: Path = field(default_factory=Path.cwd)  # relative paths in the recipe resolve against this
    data_lines: dict[str, int] = field(default_factory=dict)

    def where(self, line: Optional[int]) -> str:
        return f"{self.source} line {line}" if line else self.source

    def to_dict(self) -> dict[str, Any]:
        """The recipe as data (absolute paths), as written into ``mmdk_run.json`` and by ``--save-recipe``."""
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        if self.model:
            out["model"] = self.model
        if self.data:
            out["data"] = dict(self.data)
        steps = []
        for s in self.steps:
            item: dict[str, Any] = {s.pass_step: copy.deepcopy(s.options)}
            if s.name != s.pass_step and not s.name.startswith(f"{s.pass_step}#"):
                item["name"] = s.name
            steps.append(item)
        out["steps"] = steps
        return out

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise UserInputError(f"no step named {name!r} in {self.source}",
                             hint=f"steps are: {', '.join(s.name for s in self.steps)}")


# ---- loading ----------------------------------------------------------------------------------------------
def builtin_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def locate(recipe: str | Path) -> Path:
    """A recipe file path, or the name of a built-in recipe (``clip-cpu-int8``)."""
    p = Path(recipe)
    if p.is_file():
        return p
    builtins = builtin_recipes()
    if str(recipe) in builtins:
        return builtins[str(recipe)]
    if p.suffix in (".yaml", ".yml") or p.parent != Path("."):
        raise UserInputError(f"recipe file {recipe} does not exist",
                             hint=f"built-in recipes: {', '.join(builtins)}")
    import difflib

    close = difflib.get_close_matches(str(recipe), list(builtins), n=1)
    raise UserInputError(f"no recipe file or built-in recipe named {recipe!r}",
                         hint=f"did you mean {close[0]!r}?" if close else f"built-in recipes: {', '.join(builtins)}")


def load_recipe(recipe: str | Path | dict, overrides: Optional[list[str] | dict[str, Any]] = None,
                data: Optional[dict[str, str | Path]] = None) -> Recipe:
    """Parse a recipe (file path, built-in name, or dict), apply ``--set STEP.FIELD=VALUE`` overrides and
    ``--data NAME=PATH`` (paths relative to the working directory)."""
    data_paths = dict(data or {})
    if isinstance(recipe, dict):
        r = _from_data(recipe, source="<recipe>", base_dir=Path.cwd(), lines=None)
    else:
        path = locate(recipe)
        text = path.read_text()
        try:
            node = yaml.compose(text)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UserInputError(f"{path}{where}: invalid YAML: {problem}") from None
        name = str(recipe) if not Path(recipe).is_file() else str(path)
        r = _from_data(data, source=name, base_dir=path.resolve().parent, lines=node)
    apply_overrides(r, overrides or [])
    for name, path in data_paths.items():
        r.data[str(name)] = str(Path(path).resolve())
        r.data_lines.pop(str(name), None)
    return r


def _line(node: Any) -> Optional[int]:
    return node.start_mark.line + 1 if node is not None and hasattr(node, "start_mark") else None


def _mapping_lines(node: Any) -> dict[str, tuple[int, Any]]:
    """``{key: (line, value_node)}`` of a YAML mapping node."""
    out: dict[str, tuple[int, Any]] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[str(k.value)] = (_line(k) or 0, v)
    return out


def _from_data(data: Any, source: str, base_dir: Path, lines: Any) -> Recipe:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: a recipe is a mapping with 'steps:' (got {type(data).__name__})",
                             hint="see `mmdk recipes show clip-cpu-int8` for an example")
    top = _mapping_lines(lines)
    for key in data:
        if key not in RECIPE_KEYS:
            import difflib

            close = difflib.get_close_matches(str(key), RECIPE_KEYS, n=1)
            line = top.get(str(key), (None,))[0]
            raise UserInputError(f"{source}{f' line {line}' if line else ''}: unknown recipe key {key!r}"
                                 + (f" (did you mean {close[0]!r}?)" if close else ""),
                                 hint=f"a recipe has: {', '.join(RECIPE_KEYS)}")
    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        raise UserInputError(f"{source}: the recipe has no steps", hint="add e.g. steps: [{export: {target: onnx}}]")
    steps_node = top.get("steps", (None, None))[1]
    step_nodes = steps_node.value if isinstance(steps_node, yaml.SequenceNode) else [None] * len(steps_data)
    steps: list[Step] = []
    counts: dict[str, int] = {}
    for item, node in zip(steps_data, step_nodes):
        line = _line(node)
        where = f"{source}{f' line {line}' if line else ''}"
        if not isinstance(item, dict):
            raise UserInputError(f"{where}: a step is {{PASS: {{options}}}}, got {item!r}")
        keys = [k for k in item if k != "name"]
        if len(keys) != 1:
            raise UserInputError(f"{where}: a step names exactly one pass (got {keys or 'none'})",
                                 hint="write each pass as its own list item: - quantize: {precision: int8}")
        pass_step = str(keys[0])
        options = item[pass_step] if item[pass_step] is not None else {}
        if not isinstance(options, dict):
            raise UserInputError(f"{where}: options of step {pass_step!r} must be a mapping, got {options!r}")
        counts[pass_step] = counts.get(pass_step, 0) + 1
        name = str(item.get("name") or (pass_step if counts[pass_step] == 1 else f"{pass_step}#{counts[pass_step]}"))
        opt_node = _mapping_lines(node).get(pass_step, (None, None))[1]
        steps.append(Step(pass_step=pass_step, options=dict(options), name=name, line=line,
                          option_lines={k: ln for k, (ln, _) in _mapping_lines(opt_node).items()}))
    names = [s.name for s in steps]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UserInputError(f"{source}: two steps are named {dup!r}", hint="give each step a unique name:")
    data_refs = data.get("data") or {}
    if not isinstance(data_refs, dict) or not all(v is None or isinstance(v, str) for v in data_refs.values()):
        raise UserInputError(f"{source}: 'data:' maps names to paths, e.g. data: {{calib: data/train.jsonl}} "
                             "(null: to be given with --data NAME=PATH)")
    data_node = top.get("data", (None, None))[1]
    return Recipe(steps=steps, data={str(k): v for k, v in data_refs.items()}, model=data.get("model"),
                  description=str(data.get("description") or ""), source=source, base_dir=base_dir,
                  data_lines={k: ln for k, (ln, _) in _mapping_lines(data_node).items()})


# ---- --set STEP.FIELD=VALUE ---------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[str, str, Any]:
    """``quantize.precision=fp16`` -> ``("quantize", "precision", "fp16")``; the value is YAML (``[1,16]``)."""
    target, sep, value = text.partition("=")
    step, dot, key = target.strip().rpartition(".")
    if not sep or not dot or not step or not key:
        raise UserInputError(f"--set expects STEP.FIELD=VALUE, got {text!r}",
                             hint="e.g. --set quantize.precision=fp16 --set bench.batch=[1,16]")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return step, key, parsed


def apply_overrides(recipe: Recipe, overrides: list[str] | dict[str, Any]) -> None:
    items = (overrides.items() if isinstance(overrides, dict)
             else ((f"{s}.{k}", v) for s, k, v in map(parse_override, overrides)))
    for target, value in items:
        step_name, _, key = str(target).rpartition(".")
        if not step_name:
            raise UserInputError(f"override {target!r} names no step", hint="use STEP.FIELD=VALUE")
        step = recipe.step(step_name)
        step.options[key] = value
        step.option_lines.pop(key, None)


def dump_recipe(recipe: Recipe | dict) -> str:
    data = recipe.to_dict() if isinstance(recipe, Recipe) else recipe
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)
