"""The one shape every pass has: a frozen, typed config + input model -> output artifacts in a work dir.

A pass never mutates its input. Runtime objects (loaded teacher models, devices, progress callbacks) live in
``RunContext``, never in the config, so a config hashes and serializes cleanly. Data a pass reads is named
in its config (a path); the pipeline runner resolves recipe data names and adds each file's content hash to
the step's cache key (``Pass.data_fields`` lists those fields).

Adding a pass = one module with ``XxxConfig(PassConfig)`` + ``XxxPass(Pass)``, and one line in
``passes/registry.py``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

from pydantic import BaseModel, ConfigDict

from ..artifacts import Manifest

# What a step consumes / produces. "torch": a model whose towers run in torch (HF dir, factory, pruned or
# distilled mmdk dir); "onnx": ONNX towers; "trt": TensorRT engines or an engine bundle; "openvino": OpenVINO IR
# towers (some may stay ONNX, which OpenVINO also runs); "report": a bench
# report (the step after a report step gets the report step's *input* model).
MODEL_FORMATS = ("torch", "onnx", "trt", "openvino", "report")


def model_format(model: Any) -> str:
    """``torch`` | ``onnx`` | ``trt`` for a LoadedModel (what a step receives)."""
    kinds = {t.kind for t in model.towers.values()}
    if kinds and kinds <= {"onnx"}:
        return "onnx"
    if "trt_engine" in kinds:
        return "trt"
    if kinds and kinds <= {"onnx", "openvino"}:
        return "openvino"
    return "torch"


def name_value_pairs(items: Any, what: str, example: str, bare: Optional[str] = None,
                     form: str = "NAME=VALUE") -> list[tuple[str, str]]:
    """The one ``NAME=VALUE`` parser (``--tower-precision``, ``--data``, ``--ratio``, ``--loss``): items given
    repeatedly and/or comma-separated, ``["vision=int8,text=fp32", "audio=fp16"]`` -> ``[("vision", "int8"),
    ("text", "fp32"), ("audio", "fp16")]``. A bare ``NAME`` takes ``bare`` (None: it is an error); ``form``
    names the shape in the error (``TOWER=VALUE``, ``NAME=PATH``)."""
    from ..errors import UserInputError

    out: list[tuple[str, str]] = []
    for item in [items] if isinstance(items, str) else list(items or []):
        for part in filter(None, (p.strip() for p in str(item).split(","))):
            name, sep, value = part.partition("=")
            name, value = name.strip(), value.strip() if sep else bare
            if not name or not value:
                raise UserInputError(f"{what} expects {form}, got {part!r}", hint=f"e.g. {what} {example}")
            out.append((name, value))
    return out


class PassConfig(BaseModel):
    """Base of every ``XxxConfig``: unknown keys are errors, instances are immutable and hashable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(f"{type(self).__name__}:{self.canonical_json()}".encode()).hexdigest()[:16]


@dataclass
class Checkpoints:
    """Where a training step keeps its checkpoints and whether it continues from the newest one. The runner sets
    it for every step of a pass with ``checkpoints=True``: the verb from its options (``--resume``), a recipe
    step to ``OUT/.checkpoints/<step key>/`` (resumed when a killed run left one there)."""

    dir: Optional[Path] = None
    resume: bool = False
    on_checkpoint: Optional[Callable[[int], None]] = None  # called after each checkpoint is written (tests)


@dataclass
class RunContext:
    """Things a pass needs at run time that do not belong in a config; every field is set by the runner, for a
    verb and a recipe step alike."""

    quiet: bool = False
    seed: int = 0
    reference: Any = None            # the recipe's source model (bench reference, distillation teacher)
    progress: Optional[Callable[[str], None]] = None
    load_options: dict[str, Any] = field(default_factory=dict)            # how the input model was loaded
    reference_load_options: dict[str, Any] = field(default_factory=dict)  # how the reference (teacher) was loaded
    checkpoints: Checkpoints = field(default_factory=Checkpoints)
    # set by the runner: runs another pass as a sub-step of this one (cached, recorded in the manifest, reported)
    substep: Optional[Callable[[type["Pass"], "PassConfig", Any, Path], Manifest]] = None

    def log(self, msg: str) -> None:
        if self.progress is not None and not self.quiet:
            self.progress(msg)

    def run_substep(self, pass_cls: type["Pass"], config: "PassConfig", model: Any, workdir: Path) -> Manifest:
        """A pass that needs another pass asks for it here: through the runner's cache when a runner set
        ``substep``, else run directly. ``workdir`` (empty) gets the output and its manifest; returns the manifest."""
        if self.substep is not None:
            return self.substep(pass_cls, config, model, workdir)
        manifest = pass_cls().run(model, config, self, workdir)
        manifest.write(workdir)  # as the runner's sub-step leaves it: the output folder carries its manifest
        return manifest


class Pass:
    """Subclass with ``name``, ``config_cls`` and ``run``; list it in ``passes/registry.py``.

    - ``version``: bump when the pass's output changes for the same config (it is part of the cache key).
    - ``accepts``: the model formats (``MODEL_FORMATS``) the pass takes as input; ``produces``: what it writes.
    - ``forbidden_after``: pass names that may not come *after* this one in a recipe (``quantize`` forbids
      ``prune`` and ``distill``): the runner checks the order before any work.
    - ``data_fields``: config fields holding data paths (a recipe may give a ``data:`` name instead); their
      content hashes go into the cache key.
    - ``tower_field``: the config field listing the towers the step applies to (validated against the model).
    - ``uses_reference``: the pass reads ``ctx.reference``, so the reference's hash is part of its cache key.
    - ``checkpoints``: the pass trains and can resume (``ctx.checkpoints``): a recipe step killed mid-run
      continues from its newest checkpoint when the run is started again.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    config_cls: ClassVar[type[PassConfig]]
    accepts: ClassVar[tuple[str, ...]] = ("torch",)
    produces: ClassVar[str] = "onnx"
    forbidden_after: ClassVar[tuple[str, ...]] = ()
    data_fields: ClassVar[tuple[str, ...]] = ()
    tower_field: ClassVar[Optional[str]] = "towers"
    uses_reference: ClassVar[bool] = False    # reads ctx.reference (bench: compares with it; distill: its teacher)
    checkpoints: ClassVar[bool] = False       # trains with checkpoints and resume (ctx.checkpoints)

    def run(self, model: Any, config: PassConfig, ctx: RunContext, workdir: Path) -> Manifest:
        """Write this pass's artifacts into ``workdir`` and return their manifest (not yet written)."""
        raise NotImplementedError

    @classmethod
    def output_format(cls, config: Any) -> str:
        """The format this step writes with ``config`` (``produces`` unless an option changes it); recipe order
        checks reason from it."""
        return cls.produces

    @staticmethod
    def preflight(config: Any) -> None:
        """Refuse early (before any model is loaded or step run), e.g. a missing backend or GPU -> exit 3."""

    @staticmethod
    def cacheable(manifest: Manifest) -> bool:
        """Whether this output may be reused by later runs (a bench measured on a busy machine may not)."""
        return True

    @staticmethod
    def input_files(config: Any) -> dict[str, Path]:
        """Further files or folders the step reads besides its input model and ``data_fields`` (a bench verb's
        other models): their content is hashed into the cache key."""
        return {}

    @staticmethod
    def machine_identity(config: Any) -> dict[str, Any]:
        """What of this machine the output depends on (added to the cache key): a bench's CPU, the TensorRT
        version and GPU an engine is built for. Empty for passes whose output is machine-independent."""
        return {}
