"""``run_distillation``: data + objective + loop for one process (one rank under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import DataError
from ..model.tower import LoadedModel


def find_processor_dir(models: list[LoadedModel], explicit: Optional[str | Path] = None) -> Optional[Path]:
    """The teacher's tokenizer / image-processor directory: explicit, an HF dir, an mmdk dir's recorded
    source, or the folder of a factory checkpoint's files that holds tokenizer / preprocessor configs."""
    from ..runtime.preprocess import processor_dir

    found = processor_dir(models, explicit)
    if found is not None:
        return found
    for m in models:
        for f in m.files:
            d = Path(f).parent
            if (d / "tokenizer.json").is_file() or (d / "preprocessor_config.json").is_file():
                return d
    return None


def loss_weights(config: Any, teacher: LoadedModel) -> dict[str, float]:
    from ..runtime.accuracy import tower_roles
    from .loss_names import CLASSIFIER_DEFAULT, DUAL_ENCODER_DEFAULT

    if config.losses:
        return dict(config.losses)
    vision, text = tower_roles({n: t.spec for n, t in teacher.towers.items()})
    return dict(DUAL_ENCODER_DEFAULT if vision and text else CLASSIFIER_DEFAULT)


def run_distillation(student: LoadedModel, teacher: LoadedModel, config: Any, checkpoint_dir: Optional[Path] = None,
                     resume: bool = False, quiet: bool = False,
                     on_checkpoint: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Train ``student`` in place; return the figures the manifest records (and ``proc_dir``)."""
    import torch

    from ..runtime.accuracy import headline_metric
    from ..data.manifest import load_manifest
    from .dist import current
    from .distill import DistillObjective, check_towers, prepare_data
    from .loop import LoopSettings, TrainLoop
    from .save import student_modules

    if config.threads:
        torch.set_num_threads(int(config.threads))
    torch.manual_seed(config.seed)
    towers = list(config.towers) or [t for t in student.towers if t in teacher.towers]
    if not towers:
        raise DataError("student and teacher share no tower name",
                        hint=f"student towers: {', '.join(student.towers)}; teacher: {', '.join(teacher.towers)}")
    check_towers(student, teacher, towers)
    proc_dir = find_processor_dir([teacher, student], config.processor)
    weights = loss_weights(config, teacher)
    for m in teacher.towers.values():
        if m.module is not None:
            m.module.eval()
            m.module.requires_grad_(False)
    samples = load_manifest(config.data)
    from ..runtime.accuracy import tower_roles

    vision, text = tower_roles({n: t.spec for n, t in teacher.towers.items()})
    data_towers = dict.fromkeys(towers)
    if any(k in weights for k in ("affinity", "contrastive")) and vision and text:
        data_towers.update(dict.fromkeys([vision, text]))
    data = prepare_data(samples, {t: teacher.tower(t) for t in data_towers}, proc_dir)
    device = torch.device(f"cuda:{current().local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    for m in student_modules(student).values():
        m.to(device)
    for t in teacher.towers.values():
        if t.module is not None:
            t.module.to(device)
    objective = DistillObjective(student, teacher, towers, weights, data, config.feature_distance,
                                 config.temperature, config.similarity_scale)
    objective.projections.to(device)
    modules = {**student_modules(student), "projections": objective.projections}
    for m in student_modules(student).values():
        m.requires_grad_(True)

    eval_fn = None
    if config.val:
        val_samples = load_manifest(config.val)
        eval_fn = _make_eval(student, val_samples, str(config.val), proc_dir, tuple(config.templates), headline_metric)
    settings = LoopSettings(steps=config.steps, batch=config.batch, lr=config.lr, weight_decay=config.weight_decay,
                            warmup_steps=config.warmup_steps, grad_clip=config.grad_clip, seed=config.seed,
                            checkpoint_every=config.checkpoint_every, max_minutes=config.max_minutes)
    loop = TrainLoop(modules, len(data), settings, objective, eval_fn=eval_fn, checkpoint_dir=checkpoint_dir,
                     config_digest=_resume_digest(config, student, teacher), desc="mmdk distill",
                     quiet=quiet or not current().main, on_checkpoint=on_checkpoint)
    r = loop.run(resume=resume)
    for m in [*student_modules(student).values(), *(t.module for t in teacher.towers.values() if t.module is not None)]:
        m.to("cpu")
    return {"proc_dir": str(proc_dir) if proc_dir else None, "teacher": str(teacher.source), "towers": towers,
            "losses": weights, "steps": r.steps_done, "steps_per_epoch": r.steps_per_epoch, "epochs": r.epochs,
            "batch": r.batch, "world_size": r.world, "train_rows": len(data), "train_seconds": round(r.wall_seconds, 2),
            "stopped_by_time": r.stopped_by_time, "resumed_from_step": r.resumed_from,
            "final_loss": r.final_loss, "final_loss_parts": r.final_parts, "eval": r.history, "best": r.best,
            "similarity_scale": objective.scale, "projections": list(objective.projections)}


def _make_eval(student: LoadedModel, samples: list, data_path: str, proc_dir: Optional[Path],
               templates: tuple[str, ...], headline: Callable) -> Callable[[], dict[str, float]]:
    """Zero-shot top-1 / recall / accuracy of the student's towers with the bench harness's evaluator."""
    from ..runtime.accuracy import Contestant, evaluate
    from ..runtime.backends.torch_eager import TorchEagerBackend

    def run() -> dict[str, float]:
        from .distill import module_device

        backends = {n: TorchEagerBackend(t, device=module_device(t).type) for n, t in student.towers.items() if t.is_torch}
        report = evaluate([Contestant("student", backends)], "student", samples, data_path, proc_dir, templates)
        figures = dict(report.primary.get("student", {}))
        head = headline(figures)
        return {head[0]: head[1], **figures} if head else figures

    return run


# options that do not change what a step computes: a run may be resumed with other values for them
_RESUME_FREE = ("max_minutes", "checkpoint_every", "threads", "nproc")


def _resume_digest(config: Any, student: LoadedModel, teacher: LoadedModel) -> str:
    import hashlib
    import json

    fields = {k: v for k, v in config.model_dump(mode="json").items() if k not in _RESUME_FREE}
    text = json.dumps([fields, str(student.source), str(teacher.source)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
