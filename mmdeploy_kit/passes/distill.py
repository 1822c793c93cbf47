"""The ``distill`` pass: train a student (a pruned or smaller model with the teacher's tower interfaces) to match
a frozen teacher, tower by tower, with weighted feature / affinity / contrastive / logits / label losses.

The teacher is ``ctx.reference`` (the recipe's source model; ``api.distill`` loads ``--teacher``), data comes
from JSONL manifests through the teacher's own tokenizer / image processor, the loop is ``train.loop`` (checkpoints
every N steps, ``--resume``, eval on ``val`` each epoch with the bench harness's metrics, best weights kept,
``max_minutes``), and ``nproc > 1`` runs it on N ranks with torchrun. The output is written the way the student
came in (an HF directory stays a ``save_pretrained`` directory; a pruned model keeps its architecture record),
with a manifest recording teacher, losses and weights, steps, world size, wall time and the per-epoch figures.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import field_validator

from ..artifacts import Manifest, package_versions
from ..errors import UserInputError
from .base import Pass, PassConfig, RunContext, name_value_pairs

EVAL_FILE = "eval_history.jsonl"  # every eval record of the run, one JSON object a line, beside the model
EVAL_KEEP = 20                     # the records a manifest keeps: first, best, last and evenly spaced between



class DistillConfig(PassConfig):
    data: str                                        # training manifest (JSONL)
    val: Optional[str] = None                        # held-out manifest: eval each epoch, best weights kept
    teacher: Optional[str] = None                    # where the teacher came from (recorded; loaded by api)
    towers: tuple[str, ...] = ()                     # towers to train (default: all); others are frozen partners
    losses: tuple[tuple[str, float], ...] = ()       # (name, weight); () = by model kind (dual encoder / classifier)
    steps: int = 2000
    batch: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 50
    grad_clip: Optional[float] = 1.0
    temperature: float = 2.0                         # logits KD temperature
    feature_distance: Literal["mse", "cosine"] = "mse"
    similarity_scale: Optional[float] = None         # default: the teacher's logit scale (CLIP), else 1/0.07
    templates: tuple[str, ...] = ("a photo of a {label}.",)  # zero-shot prompts for eval
    processor: Optional[str] = None                  # dir with tokenizer / image processor (default: teacher's)
    nproc: int = 1
    threads: Optional[int] = None                    # torch threads per process (default: torch's; 1 per rank)
    checkpoint_every: int = 200
    max_minutes: Optional[float] = None
    seed: int = 0

    @field_validator("steps", "batch", "nproc")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1 (got {v})")
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"must be > 0 (got {v})")
        return v

    @field_validator("losses")
    @classmethod
    def _losses(cls, v: tuple[tuple[str, float], ...]) -> tuple[tuple[str, float], ...]:
        from ..train.loss_names import LOSS_NAMES

        for name, weight in v:
            if name not in LOSS_NAMES:
                raise ValueError(f"unknown loss {name!r}; losses are {', '.join(LOSS_NAMES)}")
            if weight < 0:
                raise ValueError(f"loss weight {name}={weight} is negative")
        return v


def parse_losses(text: str | dict[str, float] | None) -> tuple[tuple[str, float], ...]:
    """``"feature=1,affinity=1,contrastive=0.5"`` (or a dict) -> ``(("feature", 1.0), ...)``."""
    if not text:
        return ()
    if isinstance(text, dict):
        return tuple((str(k), float(v)) for k, v in text.items())
    out = []
    for name, weight in name_value_pairs(str(text), "--loss", "feature=1,affinity=0.5", bare="1"):
        try:
            out.append((name, float(weight)))
        except ValueError:
            raise UserInputError(f"bad --loss item {name}={weight}",
                                 hint="write name=weight, e.g. feature=1,affinity=0.5") from None
    return tuple(out)


class DistillPass(Pass):
    name: ClassVar[str] = "distill"
    version: ClassVar[str] = "1"
    config_cls: ClassVar[type[PassConfig]] = DistillConfig
    accepts: ClassVar[tuple[str, ...]] = ("torch",)
    produces: ClassVar[str] = "torch"
    data_fields: ClassVar[tuple[str, ...]] = ("data", "val")
    tower_field: ClassVar[Optional[str]] = "towers"
    uses_reference: ClassVar[bool] = True   # the teacher
    checkpoints: ClassVar[bool] = True      # a killed run (verb with --resume, recipe step re-run) continues

    def run(self, model: Any, config: PassConfig, ctx: RunContext, workdir: Path) -> Manifest:
        from ..model.loaders import load

        assert isinstance(config, DistillConfig)
        teacher = ctx.reference
        if teacher is None and config.teacher:
            teacher = load(config.teacher, **ctx.reference_load_options)
        if teacher is None:
            raise UserInputError("distillation needs a teacher", hint="pass --teacher MODEL")
        from ..train.save import single_root

        model, teacher = single_root(model), single_root(teacher)
        t0 = time.perf_counter()
        ckpt = ctx.checkpoints
        if config.nproc > 1:
            result = _run_distributed(model, teacher, config, ctx, workdir)
        else:
            from ..train.run import run_distillation

            result = run_distillation(model, teacher, config, checkpoint_dir=ckpt.dir, resume=ckpt.resume,
                                      quiet=ctx.quiet, on_checkpoint=ckpt.on_checkpoint)
        from ..train.save import save_student

        artifacts = save_student(model, workdir, result["proc_dir"])
        metrics = {k: v for k, v in result.items() if k not in ("proc_dir",)}
        metrics["eval"], metrics["eval_history"] = summarise_eval(metrics.get("eval") or [], metrics.get("best"),
                                                                  workdir)
        metrics["wall_seconds"] = round(time.perf_counter() - t0, 2)
        return Manifest(pass_name=self.name, config=config.model_dump(mode="json"),
                        source={"path": str(model.source), "format": model.format, "architecture": model.architecture,
                                "teacher": str(teacher.source), "teacher_architecture": teacher.architecture,
                                "hf_dir": str(result["proc_dir"]) if result["proc_dir"] else None},
                        versions=package_versions("torch", "transformers", "safetensors"), artifacts=artifacts,
                        metrics=metrics)


def summarise_eval(history: list[dict[str, Any]], best: Optional[dict[str, Any]],
                   workdir: Path) -> tuple[list[dict[str, Any]], Optional[dict[str, Any]]]:
    """(the eval records a manifest keeps, where the full history is): the whole history goes to ``EVAL_FILE``;
    the manifest keeps at most ``EVAL_KEEP`` records (all of a short run), so 2000 epochs stay a few KB."""
    if not history:
        return [], None
    (workdir / EVAL_FILE).write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in history))
    if len(history) <= EVAL_KEEP:
        kept = list(history)
    else:
        n = len(history)
        picks = {round(k * (n - 1) / (EVAL_KEEP - 2)) for k in range(EVAL_KEEP - 1)}
        picks |= {k for k, e in enumerate(history) if best is not None and e.get("step") == best.get("step")}
        kept = [history[k] for k in sorted(picks)]
    return kept, {"file": EVAL_FILE, "records": len(history), "kept_in_manifest": len(kept)}


def _run_distributed(model: Any, teacher: Any, config: DistillConfig, ctx: RunContext, workdir: Path) -> dict[str, Any]:
    """Launch ``config.nproc`` ranks with torchrun; rank 0 leaves the trained weights + figures in workdir."""
    from ..model.loaders import read_state_dict
    from ..train.dist import launch

    scratch = workdir / "_distributed"
    scratch.mkdir()
    job = scratch / "job.json"
    job.write_text(json.dumps({
        "student": str(model.source), "student_load_options": _jsonable(ctx.load_options),
        "teacher": str(teacher.source), "teacher_load_options": _jsonable(ctx.reference_load_options),
        "config": config.model_dump(mode="json"), "checkpoint_dir": _str(ctx.checkpoints.dir),
        "resume": ctx.checkpoints.resume, "quiet": ctx.quiet, "out": str(scratch)}))
    launch(job, config.nproc, "mmdeploy_kit.passes.distill_worker", quiet=ctx.quiet)
    result = json.loads((scratch / "result.json").read_text())
    state = read_state_dict(scratch / "student.safetensors")
    from ..train.save import student_modules
    from ..train.checkpoint import load_flat_state

    load_flat_state(student_modules(model), state, "the distributed run's weights")
    shutil.rmtree(scratch)
    return result


def _str(p: Any) -> Optional[str]:
    return None if p is None else str(p)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in (d or {}).items() if v is not None}
