"""The pipeline runner: every verb and every recipe goes through here.

- ``run_recipe``: validate the whole recipe first (nothing is created when that fails), then run the steps in
  order, each into ``OUT/NN-<name>/`` (published atomically), a step's input being the previous step's output
  (a bench step's input passes through to the step after it); the bench step compares with the recipe's
  source model.
- Each step is looked up in the content-addressed cache (``cache.py``) first; a finished step is stored there
  before it is published, so a run killed in step 3 (even ``kill -9``) reuses steps 1-2 when run again.
- ``OUT/mmdk_run.json`` records every step (pass, version, config, key, input/output hashes, cached, seconds,
  figures) and is rewritten after each step; the waterfall report (``run_report.py``) closes the run.
- ``run_single_step``: a verb (``mmdk quantize ... -o q/``) is a one-step recipe published straight to OUT.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..artifacts import MANIFEST_NAME, Manifest, atomic_output_dir, write_json_atomic
from ..errors import MmdkError, RegressionError, UserInputError
from .cache import StepCache, content_hash, copy_tree, model_hash, step_key

RUN_RECORD = "mmdk_run.json"
Log = Optional[Callable[[str], None]]


@dataclass
class StepResult:
    name: str
    pass_name: str
    version: str
    config: dict[str, Any]
    key: str
    input_sha256: str
    data_sha256: dict[str, str]
    output_dir: str = ""
    output_sha256: str = ""
    cached: bool = False
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0
    parameters: Optional[int] = None
    status: str = "pending"


@dataclass
class RunResult:
    out: Path
    recipe: dict[str, Any]
    source: str
    steps: list[StepResult]
    source_size_bytes: int = 0
    source_parameters: Optional[int] = None
    passed: bool = True
    reports: dict[str, str] = field(default_factory=dict)

    def step(self, name: str) -> StepResult:
        return next(s for s in self.steps if s.name == name)


# ---- one step -----------------------------------------------------------------------------------------------
def _identity(planned: Any, model: Any, reference: Any) -> tuple[str, str, dict[str, str]]:
    """(cache key, input hash, data hashes) of a planned step on ``model``."""
    input_hash = model_hash(model)
    files = {**planned.data_files, **planned.pass_cls.input_files(planned.config)}
    data_hashes = {f: content_hash(p) for f, p in files.items()}
    ref_hash = None
    if planned.pass_cls.uses_reference:  # only a pass that reads the reference depends on it
        ref_hash = model_hash(reference) if reference is not None and hasattr(reference, "towers") else (
            content_hash(reference) if isinstance(reference, (str, Path)) and Path(reference).exists() else None)
    return step_key(planned.pass_cls, planned.config, input_hash, data_hashes, ref_hash), input_hash, data_hashes


def _execute(planned: Any, model: Any, dest: Path, *, cache: Optional[StepCache], force: bool, reference: Any,
             progress: Log, quiet: bool, overwrite: bool = True, context: Optional[dict[str, Any]] = None,
             checkpoint_root: Optional[Path] = None) -> StepResult:
    """Run (or reuse) one step and publish its output directory at ``dest``. ``context``: further ``RunContext``
    fields (load options, checkpoints); a training step without ``checkpoints`` keeps them in
    ``checkpoint_root/<key>/`` and resumes from there when a killed run left some."""
    from ..passes.base import Checkpoints, RunContext

    key, input_hash, data_hashes = _identity(planned, model, reference)
    fields = dict(context or {})
    substeps: list[dict[str, Any]] = []
    own_ckpt = None
    if planned.pass_cls.checkpoints and "checkpoints" not in fields and checkpoint_root is not None:
        own_ckpt = checkpoint_root / key
        fields["checkpoints"] = Checkpoints(dir=own_ckpt, resume=own_ckpt.is_dir() and any(own_ckpt.iterdir()))
    res = StepResult(name=planned.step.name, pass_name=planned.pass_name, version=planned.pass_cls.version,
                     config=planned.config.model_dump(mode="json"), key=key, input_sha256=input_hash,
                     data_sha256=data_hashes)
    t0 = time.perf_counter()
    hit = None if (force or cache is None) else cache.lookup(key)
    with atomic_output_dir(dest, overwrite=overwrite) as tmp:
        if hit is not None:
            shutil.rmtree(tmp)
            copy_tree(hit, tmp)
            bind_to_run(tmp, model, reference)
            res.cached = True
        else:
            ctx = RunContext(seed=getattr(planned.config, "seed", 0), progress=progress, reference=reference,
                             quiet=quiet, **fields)
            ctx.substep = _substep_runner(cache, force, reference, progress, quiet, substeps)
            manifest = planned.pass_cls().run(model, planned.config, ctx, tmp)
            if substeps:
                manifest.metrics.setdefault("substeps", substeps)
            prev = _input_manifest(model)
            if prev is not None and not manifest.history:
                manifest.history = [*prev.history, _history_entry(prev)]
            manifest.metrics.setdefault("step", {"key": key, "input_sha256": input_hash, "data_sha256": data_hashes})
            manifest.write(tmp)
            if cache is not None and planned.pass_cls.cacheable(manifest):
                cache.store(key, tmp, {"pass": planned.pass_name, "step": planned.step.name,
                                       "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    if own_ckpt is not None:  # the output holds the kept weights
        shutil.rmtree(own_ckpt, ignore_errors=True)
        if own_ckpt.parent.is_dir() and not any(own_ckpt.parent.iterdir()):  # a cache hit never made it
            own_ckpt.parent.rmdir()
    res.seconds = round(time.perf_counter() - t0, 3)
    res.output_dir = str(dest)
    res.output_sha256 = content_hash(dest)
    _collect_figures(res, dest)
    res.status = "done"
    return res


def _substep_runner(cache: Optional[StepCache], force: bool, reference: Any, progress: Log, quiet: bool,
                    records: list[dict[str, Any]]) -> Callable[..., Manifest]:
    """``RunContext.substep``: a pass asking for another pass gets it as a step of its own (cache key, cache,
    progress), recorded in the asking step's manifest (``metrics.substeps``)."""
    from ..passes.base import model_format
    from .recipe import Step
    from .validate import PlannedStep

    def substep(pass_cls: Any, config: Any, model: Any, workdir: Path) -> Manifest:
        name = f"{pass_cls.name} (sub-step)"
        planned = PlannedStep(index=0, step=Step(pass_step=pass_cls.name, options={}, name=name),
                              pass_name=pass_cls.name, pass_cls=pass_cls, config=config,
                              input_format=model_format(model), data_files=_data_files(pass_cls, config))
        res = _execute(planned, model, Path(workdir), cache=cache, force=force, reference=reference,
                       progress=progress, quiet=quiet)
        if progress and not quiet:
            progress(f"{name} {'cached' if res.cached else 'done'} in {res.seconds:.1f} s")
        records.append({"pass_name": pass_cls.name, "key": res.key, "cached": res.cached, "seconds": res.seconds,
                        "config": res.config})
        return Manifest.read(workdir)

    return substep


def _data_files(pass_cls: Any, config: Any) -> dict[str, Path]:
    """The data files a step reads (its ``data_fields`` naming an existing path): hashed into its key."""
    return {f: Path(getattr(config, f)) for f in pass_cls.data_fields
            if isinstance(getattr(config, f, None), (str, Path)) and Path(getattr(config, f)).exists()}


def _input_manifest(model: Any) -> Optional[Manifest]:
    return (model.details or {}).get("manifest") if hasattr(model, "details") else None


def _history_entry(prev: Manifest) -> dict[str, Any]:
    return {"pass_name": prev.pass_name, "config": prev.config, "created": prev.created, "source": prev.source}


def bind_to_run(out: Path, model: Any, reference: Any = None) -> None:
    """A step restored from the cache describes the run that stored it; bind its manifest to THIS run's input
    (source path, HF dir with the tokenizer / processor files, teacher, history), keeping the stored source
    as ``source.cached_from`` (provenance keeps both)."""
    from ..passes.export.onnx import source_info

    try:
        manifest = Manifest.read(out)
    except MmdkError:
        return
    old = {k: v for k, v in manifest.source.items() if k != "cached_from"}
    now = source_info(model)
    source = {**old, "path": now["path"], "cached_from": old}
    for k in ("hf_dir", "root_source"):
        if k in old and now.get(k):
            source[k] = now[k]
    if "teacher" in old and reference is not None and hasattr(reference, "source"):
        source["teacher"] = str(reference.source)
    prev = _input_manifest(model)
    history = list(manifest.history)
    if prev is not None and len(history) > len(prev.history):  # the part the runner derived from the input
        history[:len(prev.history) + 1] = [*prev.history, _history_entry(prev)]
    if {**source, "cached_from": None} == {**old, "cached_from": None} and history == manifest.history:
        return  # same place as the run that stored it: the output stays byte-identical (later keys stay stable)
    bound = manifest.model_copy(update={"source": source, "history": history})
    (out / MANIFEST_NAME).unlink()  # a hard link into the cache entry: never write through it
    bound.write(out)


def model_bytes(manifest: Manifest, dest: Path) -> int:
    """Size on disk of a step's model files: its artifacts (each path once), not manifests or side files."""
    from ..artifacts import size_on_disk

    sizes = {}
    for a in manifest.artifacts:
        sizes.setdefault(a.path, a.size_bytes if a.size_bytes else size_on_disk(dest / a.path))
    return int(sum(sizes.values()))


def _collect_figures(res: StepResult, dest: Path) -> None:
    try:
        m = Manifest.read(dest)
    except MmdkError:
        return
    res.metrics = {k: v for k, v in m.metrics.items() if k != "step"}
    cos = [a.verification.get("cosine_min", a.verification.get("cosine")) for a in m.artifacts]
    cos = [c for c in cos if isinstance(c, (int, float))]
    if cos:
        res.verification = {"cosine_min": min(cos)}
    res.size_bytes = model_bytes(m, dest)


def run_single_step(step: str, config: Any, source: Any, out: str | Path, *, overwrite: bool = False,
                    progress: Log = None, load_options: Optional[dict[str, Any]] = None, reference: Any = None,
                    context: Optional[dict[str, Any]] = None, quiet: bool = False, force: bool = False,
                    use_cache: bool = True, on_result: Optional[Callable[[StepResult], None]] = None) -> Manifest:
    """A verb as a one-step recipe: validated like a recipe step, cached, published straight to ``out``.
    ``context``: further ``RunContext`` fields the verb sets (``reference_load_options``, ``checkpoints``);
    ``on_result`` gets the step's record (``cached``, ``key``, ``seconds``). The files named by the load
    options (``weights``, ``io``) are part of the key."""
    from ..model.loaders import load
    from ..model.tower import LoadedModel
    from ..passes.registry import get_pass
    from .recipe import Step
    from ..passes.base import model_format
    from .validate import PlannedStep

    pass_cls = get_pass(step)
    pass_cls.preflight(config)  # e.g. TensorRT without a GPU: exit 3 before loading anything
    model = source if isinstance(source, LoadedModel) else load(source, **(load_options or {}))
    if pass_cls.tower_field:
        model.select(getattr(config, pass_cls.tower_field, ()) or ())
    fmt = model_format(model)
    if fmt not in pass_cls.accepts:
        raise UserInputError(f"{step} takes a {' or '.join(pass_cls.accepts)} model, but {model.source} is {fmt}",
                             hint="pass the checkpoint (or the mmdk directory) this pass works on")
    loaded_from = {f"load.{k}": Path(v) for k, v in (load_options or {}).items()
                   if k in ("weights", "io") and isinstance(v, (str, Path)) and Path(v).exists()}
    planned = PlannedStep(index=1, step=Step(pass_step=step, options={}, name=step), pass_name=step,
                          pass_cls=pass_cls, config=config, input_format=fmt,
                          data_files={**_data_files(pass_cls, config), **loaded_from})
    res = _execute(planned, model, Path(out), cache=StepCache() if use_cache else None, force=force,
                   reference=reference, progress=progress, quiet=quiet, overwrite=overwrite,
                   context={"load_options": dict(load_options or {}), **(context or {})})
    if on_result is not None:
        on_result(res)
    return Manifest.read(out)


# ---- a whole recipe -------------------------------------------------------------------------------------------
def run_recipe(plan: Any, out: str | Path, *, force: bool = False, overwrite: bool = False, progress: Log = None,
               step_log: Log = None, quiet: bool = False, use_cache: bool = True) -> RunResult:
    """Run a validated ``Plan`` (``validate.plan_recipe``) into ``out``."""
    from ..model.loaders import load
    from .run_report import write_run_reports

    out = Path(out).resolve()
    _claim_output(out, overwrite)
    cache = StepCache() if use_cache else None
    source = plan.model
    result = RunResult(out=out, recipe=plan.recipe.to_dict(), source=str(source.source), steps=[])
    result.source_size_bytes = source.size_on_disk()
    result.source_parameters = _params(source)
    wanted = {s.dirname for s in plan.steps}
    for stale in out.glob("[0-9][0-9]-*"):  # steps of an earlier, different recipe in the same OUT
        if stale.is_dir() and stale.name not in wanted:
            shutil.rmtree(stale, ignore_errors=True)
    model = source
    total = len(plan.steps)
    for ps in plan.steps:
        if step_log:
            step_log(f"[{ps.index}/{total}] {ps.step.name} ({ps.pass_name}) …")
        pending = StepResult(name=ps.step.name, pass_name=ps.pass_name, version=ps.pass_cls.version,
                             config=ps.config.model_dump(mode="json"), key="", input_sha256="", data_sha256={},
                             status="running")
        _write_record(result, extra=[pending])
        if model is source and ps.pass_cls.produces == "torch" and Path(str(source.source)).exists():
            # prune / distill change the torch modules they are given: hand them their own copy of the source,
            # so the source stays what later steps compare with (bench reference, distillation teacher)
            model = load(source.source, **getattr(plan, "load_options", {}))
        try:
            res = _execute(ps, model, out / ps.dirname, cache=cache, force=force, reference=source,
                           progress=progress, quiet=quiet, checkpoint_root=out / ".checkpoints")
        except BaseException:
            pending.status = "failed"
            _write_record(result, extra=[pending])
            raise
        if ps.pass_cls.produces != "report":
            model = load(out / ps.dirname)
            res.parameters = _params(model)
        result.steps.append(res)
        _write_record(result)
        if step_log:
            step_log(f"[{ps.index}/{total}] {ps.step.name} {'cached' if res.cached else 'done'} in {res.seconds:.1f} s")
    failed = [f"{s.name}: {g}" for s in result.steps for g in (s.metrics.get("failed_gates") or [])]
    result.passed = not failed
    result.reports = {k: str(v) for k, v in write_run_reports(result).items()}
    _write_record(result)
    if failed:
        raise RegressionError(f"{len(failed)} gate(s) failed in the run, first: {failed[0]}",
                              hint=f"see {result.reports.get('markdown', out)}")
    return result


def _params(model: Any) -> Optional[int]:
    try:
        return int(model.parameter_count())
    except Exception:  # noqa: BLE001 - a count is informative only; an exotic artifact may not have one
        return None


def _claim_output(out: Path, overwrite: bool) -> None:
    """A run directory may be re-used by a later run of any recipe; anything else non-empty needs overwrite."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"output {out} exists and is a file", hint="choose a directory path with -o")
    if out.is_dir() and any(out.iterdir()) and not (out / RUN_RECORD).exists():
        if not overwrite:
            raise UserInputError(f"output directory {out} is not empty and holds no mmdk run",
                                 hint="pass --overwrite or choose another -o")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_record(result: RunResult, extra: Optional[list[StepResult]] = None) -> None:
    from dataclasses import asdict

    from .. import __version__
    from ..artifacts import package_versions

    steps = [asdict(s) for s in result.steps + list(extra or [])]
    write_json_atomic(result.out / RUN_RECORD, {
        "mmdk_version": __version__, "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe": result.recipe, "source": result.source, "source_size_bytes": result.source_size_bytes,
        "source_parameters": result.source_parameters, "steps": steps, "passed": result.passed,
        "reports": result.reports, "versions": package_versions(), "pid": os.getpid()})


def read_run(out: str | Path) -> dict[str, Any]:
    import json

    path = Path(out) / RUN_RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"{path} does not exist", hint="point at a directory written by `mmdk run`") from None


__all__ = ["run_recipe", "run_single_step", "read_run", "RUN_RECORD", "MANIFEST_NAME"]
