"""JSON Schema of the recipe format, generated from the registered passes' config classes (one source of
truth: adding a pass adds its step to the schema)."""

from __future__ import annotations

from typing import Any

from ..passes.registry import DISPATCH, PASS_REGISTRY, get_pass


def recipe_json_schema() -> dict[str, Any]:
    step_schemas: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    dispatched = {p: step for step, (_, _, table) in DISPATCH.items() for p in table.values()}
    for pass_name in PASS_REGISTRY:
        cls = get_pass(pass_name).config_cls
        schema = cls.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[cls.__name__] = schema
        step = dispatched.get(pass_name, pass_name)
        step_schemas.append({"type": "object", "additionalProperties": False, "required": [step],
                             "properties": {step: {"$ref": f"#/$defs/{cls.__name__}"}, "name": {"type": "string"}},
                             "description": f"{step}: {PASS_REGISTRY[pass_name].summary}"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mmdeploy_kit recipe",
        "type": "object",
        "additionalProperties": False,
        "required": ["steps"],
        "properties": {
            "description": {"type": "string"},
            "model": {"type": "string", "description": "source model; relative to the recipe file"},
            "data": {"type": "object", "additionalProperties": {"type": ["string", "null"]},
                     "description": "named data references (null: give with --data NAME=PATH)"},
            "steps": {"type": "array", "minItems": 1, "items": {"anyOf": step_schemas}},
            "search": {"type": "object", "description": "mmdk optimize: the search space (ignored by mmdk run)"},
        },
        "$defs": defs,
    }
