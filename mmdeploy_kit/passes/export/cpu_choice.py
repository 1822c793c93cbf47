"""``export: {target: cpu}``: per tower, the fastest runtime x precision on *this* CPU within the accuracy budget.

Per tower, every candidate (``ort:fp32``, ``ort:int8``, ``openvino:fp32``, ``openvino:bf16``, ``openvino:int8``) is
built by the ordinary passes - the ONNX export sub-step, ``quantize`` (ONNX Runtime, ``cpu`` preset; ``nncf``),
``export_openvino`` - each verified as usual. A candidate that cannot exist here is skipped with the reason
(BF16 without AVX512_BF16/AMX, INT8 without calibration data, OpenVINO not installed) and one that fails its
own verification or budget is rejected with the error. The survivors are then

1. checked against the budget on the same held-out batches (the calibration data's held-out part, else
   inputs generated from the I/O spec) vs the FP32 ONNX in ONNX Runtime, and
2. timed in one interleaved run (``runtime/latency.py``: paired rounds, process CPU time by default) at
   ``batch`` (and ``seq``; without it the held-out data's own lengths, else the I/O spec's opt size) with
   ``threads``; speedups vs ``ort:fp32`` with their confidence intervals.

The fastest candidate within budget is written as the tower's artifact (``<tower>.onnx`` or ``<tower>.xml/.bin``);
the manifest's ``metrics.cpu_choice`` says what was tried, measured and chosen, and why others were not.
``keep_candidates`` also keeps every built candidate (each an mmdk output dir) under ``candidates/<tower>/``.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, field_validator

from ...artifacts import Artifact, Manifest, package_versions
from ...errors import MmdkError, UserInputError
from ...model.tower import LoadedModel, Tower
from ..base import Pass, PassConfig, RunContext
from .onnx import source_info

CANDIDATES = ("ort:fp32", "ort:int8", "openvino:fp32", "openvino:bf16", "openvino:int8")
BASELINE = "ort:fp32"


class CpuChoiceConfig(PassConfig):
    """``mmdk export --target cpu``: try runtime x precision pairs per tower, keep the fastest within budget."""

    target: Literal["cpu"] = "cpu"
    towers: tuple[str, ...] = ()
    candidates: tuple[str, ...] = CANDIDATES
    accuracy_budget: tuple[str, ...] = ("cosine>=0.99",)   # per-tower metrics: cosine, cosine_min, max_abs_error
    calib_data: Optional[str] = None            # INT8 calibration + held-out data (JSONL manifest, .npz, .npy folder)
    processor: Optional[str] = None
    calib_samples: int = Field(64, ge=1)
    holdout_samples: int = Field(32, ge=1)
    batch: int = Field(8, ge=1)                 # timing batch size
    seq: Optional[int] = Field(None, ge=1)      # timing sequence length (default: the I/O spec's opt size)
    threads: Optional[int] = Field(None, ge=1)  # None: available cores
    clock: Literal["cpu", "wall"] = "cpu"
    min_time_s: float = Field(1.0, ge=0)
    min_rounds: int = Field(8, ge=2)
    keep_candidates: bool = False               # also write every built candidate to candidates/<runtime>_<precision>/
    seed: int = 0

    @field_validator("calib_data", "processor", mode="before")
    @classmethod
    def _path_as_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    @field_validator("candidates")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in v if c not in CANDIDATES]
        if bad or not v:
            raise ValueError(f"unknown candidate {bad[0] if bad else '(none)'!r}; choose from {', '.join(CANDIDATES)}")
        return v

    @field_validator("accuracy_budget")
    @classmethod
    def _tower_budgets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from ..quantize.config import parse_budget

        for b in v:
            if parse_budget(b).is_task:
                raise ValueError(f"budget {b!r}: export --target cpu takes per-tower budgets (cosine, cosine_min, "
                                 "max_abs_error)")
        return v


def _pick(out_dir: Path, tower: str) -> Artifact:
    return Manifest.read(out_dir).artifact(tower)


class CpuChoicePass(Pass):
    name: ClassVar[str] = "export_cpu"
    config_cls: ClassVar[type[PassConfig]] = CpuChoiceConfig
    accepts: ClassVar[tuple[str, ...]] = ("torch", "onnx")
    produces: ClassVar[str] = "openvino"
    data_fields: ClassVar[tuple[str, ...]] = ("calib_data", "processor")

    @staticmethod
    def cacheable(manifest: Manifest) -> bool:
        return not manifest.metrics.get("busy", False)

    @staticmethod
    def machine_identity(config: Any) -> dict[str, Any]:
        """The choice is a measurement on this CPU: its model and ISA flags are part of the cache key."""
        from ...runtime.env import cpu_info

        model, flags = cpu_info()
        return {"cpu": model, "flags": flags}

    def run(self, model: LoadedModel, config: CpuChoiceConfig, ctx: RunContext, workdir: Path) -> Manifest:
        from ..quantize.config import parse_budget
        from .openvino import onnx_towers

        budgets = [parse_budget(b) for b in config.accuracy_budget]
        names = [t.name for t in model.select(config.towers)]
        for b in budgets:
            if b.tower and b.tower not in names:
                raise UserInputError(f"budget {b.text} names tower {b.tower!r}, which is not selected")
        artifacts, choice = [], {}
        with tempfile.TemporaryDirectory(prefix="mmdk-cpu-") as scratch_name:
            scratch = Path(scratch_name)
            fp32, _ = onnx_towers(model, list(model.towers), _ov_cfg(), ctx, scratch / "onnx")
            onnx_model = dataclasses.replace(model, towers=dict(fp32))
            holdout = _holdout(onnx_model, config, ctx, names)
            busy = False
            for name in names:
                ctx.log(f"tower {name!r}: trying {', '.join(config.candidates)}")
                tried = _build_candidates(onnx_model, name, config, ctx, scratch / name, budgets)
                record, best, was_busy = _measure(onnx_model.towers[name], tried, holdout[name], config, budgets)
                busy = busy or was_busy
                choice[name] = record
                if best is None:
                    raise UserInputError(f"tower {name!r}: no candidate meets {', '.join(b.text for b in budgets)}",
                                         hint="see the reasons above; relax --accuracy-budget or add candidates")
                ctx.log(f"tower {name!r}: chose {best} ({record['chosen_speedup']:.2f}x vs {BASELINE})")
                art = tried[best]["artifact"]
                src_dir = tried[best]["dir"]
                for p in sorted(src_dir.glob(f"{Path(art.path).stem}.*")):
                    if p.suffix in (".onnx", ".xml", ".bin", ".data"):
                        shutil.copyfile(p, workdir / p.name)
                details = {**art.details, "runtime": best.split(":")[0], "cpu_choice": best}
                artifacts.append(art.model_copy(update={"details": details}))
                if config.keep_candidates:
                    for cand, t in tried.items():
                        if "dir" in t:
                            shutil.copytree(t["dir"], workdir / "candidates" / name / cand.replace(":", "_"))
            for name, tower in model.towers.items():  # unselected towers: FP32 ONNX (from the scratch export)
                if name not in names:
                    shutil.copyfile(fp32[name].path, workdir / f"{name}.onnx")
                    artifacts.append(Artifact(kind="onnx", tower=name, path=f"{name}.onnx", precision="fp32",
                                              io_spec=tower.spec.to_dict()))
        return Manifest(pass_name=self.name, config=config.model_dump(mode="json"), source=source_info(model),
                        versions=package_versions("torch", "onnx", "onnxruntime", "openvino", "nncf"),
                        artifacts=artifacts, metrics={"cpu_choice": choice, "busy": busy})


def _ov_cfg() -> Any:
    from .openvino import OpenVINOExportConfig

    return OpenVINOExportConfig()


def _holdout(model: LoadedModel, config: CpuChoiceConfig, ctx: RunContext, names: list[str]) -> dict[str, list]:
    """Held-out batches per tower: from the calibration data, else generated from the I/O spec (two shapes)."""
    if config.calib_data:
        from ..quantize.config import QuantizeConfig
        from ..quantize.evaluate import load_tower_data

        qc = QuantizeConfig(calib_data=config.calib_data, processor=config.processor,
                            calib_samples=config.calib_samples, holdout_samples=config.holdout_samples, seed=config.seed)
        data, _ = load_tower_data(model, qc, ctx, names)
        return {n: list(data.towers[n].holdout) for n in names}
    out = {}
    for n in names:
        spec = model.towers[n].spec
        out[n] = [spec.dummy_inputs(s, seed=config.seed + k) for k, s in enumerate(spec.verification_sizes(4))]
    return out


def _build_candidates(model: LoadedModel, name: str, config: CpuChoiceConfig, ctx: RunContext, scratch: Path,
                      budgets: list) -> dict[str, dict[str, Any]]:
    """Each candidate built by its pass: ``{candidate: {artifact, dir} | {skipped} | {rejected}}``."""
    from ..._lazy import available

    tried: dict[str, dict[str, Any]] = {}
    quiet_ctx = dataclasses.replace(ctx, quiet=True)
    have_data = bool(config.calib_data)
    tower_budgets = tuple(b.text for b in budgets if b.tower in (None, name))
    for cand in config.candidates:
        runtime, precision = cand.split(":")
        out = scratch / cand.replace(":", "_")
        out.mkdir(parents=True, exist_ok=True)
        if runtime == "openvino" and not (available("openvino") and (precision != "int8" or available("nncf"))):
            tried[cand] = {"skipped": "openvino / nncf not installed (pip install 'mmdeploy_kit[openvino]')"}
            continue
        if precision == "int8" and not have_data:
            tried[cand] = {"skipped": "INT8 needs calibration data (calib_data)"}
            continue
        if precision == "bf16":
            from ...runtime.backends.openvino import cpu_supports_bf16

            if not cpu_supports_bf16():
                tried[cand] = {"skipped": "this CPU has no AVX512_BF16 / AMX"}
                continue
        try:
            if cand == BASELINE:
                shutil.copyfile(model.towers[name].path, out / f"{name}.onnx")
                art = Artifact(kind="onnx", tower=name, path=f"{name}.onnx", precision="fp32",
                               io_spec=model.towers[name].spec.to_dict())
                Manifest(pass_name="export_onnx", artifacts=[art]).write(out)
            elif precision == "int8":
                from ..quantize.config import QuantizeConfig
                from ..quantize.quantize_pass import QuantizePass

                qc = QuantizeConfig(precision="int8", towers=(name,), backend="ort" if runtime == "ort" else "nncf",
                                    calib_data=config.calib_data, processor=config.processor,
                                    calib_samples=config.calib_samples, holdout_samples=config.holdout_samples,
                                    accuracy_budget=tower_budgets, seed=config.seed)
                quiet_ctx.run_substep(QuantizePass, qc, model, out)
            else:
                from .openvino import OpenVINOExportConfig, OpenVINOExportPass

                oc = OpenVINOExportConfig(precision=precision, towers=(name,))
                quiet_ctx.run_substep(OpenVINOExportPass, oc, model, out)
            tried[cand] = {"artifact": _pick(out, name), "dir": out}
        except MmdkError as exc:
            tried[cand] = {"rejected": exc.message}
            ctx.log(f"  {cand}: rejected ({exc.message})")
    return tried


def _backend(tower: Tower, art: Artifact, folder: Path, threads: int) -> Any:
    from ...runtime.backends.openvino import OpenVINOBackend
    from ...runtime.backends.ort import OrtBackend

    t = dataclasses.replace(tower, kind=art.kind, path=folder / art.path, precision=art.precision, module=None)
    return (OpenVINOBackend if art.kind == "openvino" else OrtBackend)(t, device="cpu", threads=threads)


def _data_sizes(spec: Any, batch: dict[str, Any]) -> dict[str, int]:
    """The non-batch dims the data itself has (a text tower's padded length): without ``seq`` the choice is timed on
    the shapes it will run on, not the I/O spec's opt size (a tiny tower's fastest runtime can differ between them)."""
    out: dict[str, int] = {}
    for inp in spec.inputs:
        arr = batch.get(inp.name)
        if arr is None or len(arr.shape) != len(inp.shape):
            continue
        for d, n in zip(inp.shape, arr.shape):
            if isinstance(d, str) and d != spec.batch_dim() and d not in out:
                lo, hi = spec.dims[d]
                out[d] = min(max(int(n), lo), hi)
    return out


def _measure(fp32: Tower, tried: dict[str, dict[str, Any]], holdout: list, config: CpuChoiceConfig,
             budgets: list) -> tuple[dict[str, Any], Optional[str], bool]:
    """Accuracy on the held-out batches and one interleaved timing run of the survivors."""
    from ...model.profiles import profile_sizes
    from ...runtime import env
    from ...runtime.latency import Contender, measure
    from ...runtime.schema import TimingConfig
    from ...runtime.stats import paired_speedup
    from ...runtime.verify import compare_outputs
    from ..quantize.evaluate import check_budgets

    threads = config.threads or env.available_cores()
    rows: dict[str, dict[str, Any]] = {}
    ref = _backend(fp32, Artifact(kind="onnx", tower=fp32.name, path=fp32.path.name), fp32.path.parent, threads)
    ref_out = [ref.run(b) for b in holdout]
    backends: dict[str, Any] = {}
    for cand, t in tried.items():
        if "artifact" not in t:
            rows[cand] = {k: v for k, v in t.items()}
            continue
        art = t["artifact"]
        try:  # a runtime that cannot load what its own pass built (an OpenVINO compile failure) loses this candidate
            b = _backend(fp32, art, t["dir"], threads)
        except MmdkError as exc:
            rows[cand] = {"rejected": exc.message}
            continue
        cmps = [compare_outputs(r, b.run(x)) for r, x in zip(ref_out, holdout)]
        rows_per = [len(next(iter(x.values()))) for x in holdout]  # cosine = mean per-sample cosine (as in quantize)
        figs = {"cosine": sum(c["cosine_mean"] * n for c, n in zip(cmps, rows_per)) / sum(rows_per),
                "cosine_min": min(c["cosine_min"] for c in cmps),
                "max_abs_error": max(c["max_abs_error"] for c in cmps)}
        got = check_budgets([bd for bd in budgets if bd.tower in (None, fp32.name)], {fp32.name: figs}, None, [fp32.name])
        ok = all(r["holds"] for r in got)
        rows[cand] = {"precision": art.precision, "inference_precision": b.describe().get("inference_precision"),
                      **{k: round(float(v), 6) for k, v in figs.items()}, "within_budget": ok}
        if ok:
            backends[cand] = b
    if not backends:
        return {"candidates": rows, "chosen": None}, None, False
    spec = fp32.spec
    sizes = {**profile_sizes(spec, "opt"), "batch": config.batch}
    if config.seq:
        sizes.update({d: config.seq for d in spec.symbolic_dims() if d != "batch"})
    elif config.calib_data and holdout:
        sizes.update(_data_sizes(spec, holdout[0]))
    feeds = spec.dummy_inputs(sizes, seed=config.seed)
    if BASELINE not in backends and "artifact" in tried.get(BASELINE, {}):
        backends = {BASELINE: _backend(fp32, tried[BASELINE]["artifact"], tried[BASELINE]["dir"], threads), **backends}
    timing = TimingConfig(warmup_runs=3, min_runs=10, min_time_s=config.min_time_s, min_rounds=config.min_rounds,
                          clock=config.clock, max_time_s=max(30.0, 4 * config.min_time_s), round_time_s=0.1)
    load = env.load_average()
    contenders = [Contender(c, b, feeds) for c, b in backends.items()]
    measure(contenders, timing)
    by = {c.label: c for c in contenders}
    pick = "cpu_rounds" if config.clock == "cpu" else "rounds"
    base = by.get(BASELINE, contenders[0])
    for c in contenders:
        samples = sorted(x for r in getattr(c, pick) for x in r)
        rows[c.label]["ms_per_batch"] = round(1000 * samples[len(samples) // 2], 4)
        est = paired_speedup(getattr(base, pick), getattr(c, pick), confidence=0.95)
        rows[c.label]["speedup_vs_" + base.label.replace(":", "_")] = [round(est.ratio, 3), round(est.low, 3),
                                                                        round(est.high, 3)]
    within = [c for c in by if rows[c].get("within_budget")]
    best = max(within, key=lambda c: rows[c]["speedup_vs_" + base.label.replace(":", "_")][0])
    for b in backends.values():
        b.close()
    busy = bool(load and load[0] > env.available_cores())
    record = {"candidates": rows, "chosen": best, "baseline": base.label,
              "chosen_speedup": rows[best]["speedup_vs_" + base.label.replace(":", "_")][0],
              "timing": {"batch": config.batch, "sizes": sizes, "threads": threads, "clock": config.clock,
                         "load_average": load}}
    return record, best, busy
