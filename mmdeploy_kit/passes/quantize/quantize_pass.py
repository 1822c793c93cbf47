"""The quantize pass: per tower INT8 (static QDQ / dynamic, optionally accuracy-aware) or FP16 or copy.

Input: a torch checkpoint (exported to ONNX first, verified), an ``.onnx`` file or an mmdk output
directory. Output: ``<tower>.onnx`` for every tower (unquantized ones copied) + a manifest recording each
tower's plan, calibration figures, verification against FP32 on held-out data, budgets with the figure
reached, and every candidate node left in FP32.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Optional

from ..._lazy import require
from ...artifacts import Artifact, Manifest, describe_file, package_versions, size_on_disk
from ...errors import BudgetError, DataError, UserInputError, VerificationError
from ...model.tower import LoadedModel, Tower
from ..base import Pass, PassConfig, RunContext
from ..export.onnx import source_info
from .config import DEFAULT_AUTO_BUDGET, DEFAULT_MIN_COSINE, QuantizeConfig, TowerPlan, parse_budget, resolve_plans
from .evaluate import TaskEval, TowerEval, check_budgets, load_tower_data


class QuantizePass(Pass):
    name: ClassVar[str] = "quantize"
    version: ClassVar[str] = "2"  # 2: per-ISA cpu preset (reduce_range on AVX2), hybrid fusion towers
    config_cls: ClassVar[type[PassConfig]] = QuantizeConfig
    accepts: ClassVar[tuple[str, ...]] = ("torch", "onnx")
    produces: ClassVar[str] = "onnx"

    @classmethod
    def output_format(cls, config: Any) -> str:
        return "torch" if getattr(config, "backend", "ort") == "inc" else cls.produces  # INC writes .pt2 towers
    forbidden_after: ClassVar[tuple[str, ...]] = ("prune", "distill")
    data_fields: ClassVar[tuple[str, ...]] = ("calib_data", "processor")

    def run(self, model: LoadedModel, config: QuantizeConfig, ctx: RunContext, workdir: Path) -> Manifest:
        require("onnx")
        require("onnxruntime")
        if config.nncf_ignored_types and config.backend != "nncf":
            raise UserInputError("nncf_ignored_types applies to --backend nncf only", hint="add --backend nncf")
        plans = resolve_plans(config, model)
        active = [n for n, p in plans.items() if p.precision != "fp32"]
        if not active:
            raise UserInputError("nothing to quantize: every selected tower has precision fp32",
                                 hint="use --precision int8|fp16 or --tower-precision NAME=int8")
        for name in active:
            tower = model.towers[name]
            if tower.precision in ("int8", "fp16"):
                raise UserInputError(f"tower {name!r} of {model.source} is already {tower.precision}",
                                     hint="quantize the FP32 model (the export or checkpoint it came from)")
            if tower.kind not in ("torch", "onnx"):
                raise UserInputError(f"tower {name!r} is a {tower.kind}; quantize the ONNX or torch model instead")
        budgets = config.budgets()
        if not budgets and any(config.method == "auto" or dict(config.tower_method).get(n) == "auto" for n in active):
            budgets = [parse_budget(DEFAULT_AUTO_BUDGET)]
        for b in budgets:
            if b.tower and b.tower not in active:
                raise UserInputError(f"budget {b.text} names tower {b.tower!r}, which is not being quantized",
                                     hint=f"quantized towers: {', '.join(active)}")
        if config.backend == "nncf":
            from .nncf import run_nncf

            return run_nncf(model, config, plans, ctx, workdir)
        if config.backend == "inc":
            from .inc import run_inc

            return run_inc(model, config, plans, ctx, workdir)
        with tempfile.TemporaryDirectory(prefix="mmdk-quant-") as scratch_name:
            return _Run(model, config, plans, budgets, ctx, workdir, Path(scratch_name)).execute()


class _Run:
    """State of one quantize run (kept out of the pass so the pass object stays stateless)."""

    def __init__(self, model: LoadedModel, config: QuantizeConfig, plans: dict[str, TowerPlan], budgets: list,
                 ctx: RunContext, workdir: Path, scratch: Path):
        self.model, self.config, self.plans, self.budgets = model, config, plans, budgets
        self.ctx, self.workdir, self.scratch = ctx, workdir, scratch
        self.active = [n for n, p in plans.items() if p.precision != "fp32"]
        self.history: list[dict[str, Any]] = []
        self.details: dict[str, dict[str, Any]] = {n: {} for n in plans}
        self.figures: dict[str, dict[str, Any]] = {}
        self.processor_dir: Optional[Path] = None
        self.budget_rows: list[dict[str, Any]] = []
        self.task_figs: Optional[dict[str, Any]] = None

    def log(self, msg: str) -> None:
        self.ctx.log(msg)

    # ---- inputs --------------------------------------------------------------------------------------
    def fp32_sources(self) -> dict[str, Tower]:
        """Every tower as an FP32 ONNX tower (torch towers exported + verified first)."""
        torch_towers = [n for n, t in self.model.towers.items() if t.kind == "torch"]
        out: dict[str, Tower] = {n: t for n, t in self.model.towers.items() if t.kind == "onnx"}
        if torch_towers:
            from ..export.onnx import OnnxExportConfig, OnnxExportPass

            self.log(f"exporting {', '.join(torch_towers)} to ONNX first")
            export_dir = self.scratch / "export"
            export_dir.mkdir()
            cfg = OnnxExportConfig(towers=tuple(torch_towers))
            manifest = self.ctx.run_substep(OnnxExportPass, cfg, self.model, export_dir)
            self.history.append({"pass_name": manifest.pass_name, "config": manifest.config,
                                 "verification": {a.tower: {k: a.verification.get(k) for k in
                                                            ("cosine_min", "max_abs_error")} for a in manifest.artifacts}})
            for a in manifest.artifacts:
                out[a.tower] = Tower(a.tower, self.model.towers[a.tower].spec, "onnx", path=export_dir / a.path)
        return {n: out[n] for n in self.model.towers}

    def load_data(self) -> Any:
        if self.config.calib_data is None:
            needs = [n for n in self.active if self.plans[n].precision == "int8" and self.plans[n].method == "static"]
            if needs:
                raise DataError(f"static INT8 needs calibration data for tower(s) {', '.join(needs)}; none was given",
                                hint="pass --calib-data (JSONL manifest, .npz or folder of .npy named like the "
                                     "inputs), or use --method dynamic; random data is never used")
            if self.budgets:
                raise DataError("an accuracy budget needs data to measure it on; none was given",
                                hint="pass --calib-data (part of it is held out to check the budget)")
            return None
        data, self.processor_dir = load_tower_data(self.model, self.config, self.ctx, self.active)
        return data

    # ---- main -------------------------------------------------------------------------------------------
    def execute(self) -> Manifest:
        for name in self.active:  # a fusion tower without data: the static half cannot be calibrated
            plan = self.plans[name]
            if plan.method == "hybrid" and self.config.calib_data is None and \
                    dict(self.config.tower_method).get(name, self.config.method) in (None, "auto") and not self.budgets:
                plan.method = "dynamic"
                plan.note = ("fusion tower without --calib-data: dynamic INT8 for every MatMul/Gemm (the image "
                             "branch's Convs stay FP32); pass --calib-data to quantize them statically")
        data = self.load_data()
        fp32 = self.fp32_sources()
        evals: dict[str, TowerEval] = {}
        for name in self.active:
            if data is not None:
                td = data.towers[name]
                evals[name] = TowerEval(name, fp32[name].path, td.calib, td.holdout, "held-out calibration data")
                self.details[name]["calibration_data"] = td.details
            else:
                spec = self.model.towers[name].spec
                sizes = spec.verification_sizes(4)
                synth = [spec.dummy_inputs(s, seed=self.ctx.seed + k) for k, s in enumerate(sizes)]
                evals[name] = TowerEval(name, fp32[name].path, synth, synth, "synthetic inputs (no --calib-data)")
                self.details[name]["calibration_data"] = None
        task = self._task_eval(data, fp32)
        outputs = {}
        for name in self.active:  # FP16 towers first: fixed figures the INT8 budgets may also cover
            if self.plans[name].precision == "fp16":
                outputs[name] = self._fp16(name, fp32[name], evals[name])
        int8 = [n for n in self.active if self.plans[n].precision == "int8"]
        if int8:
            outputs.update(self._int8(int8, fp32, evals, data, task))
        elif self.budgets:  # FP16 only: nothing to search, the budget just has to hold
            towers = {**fp32, **{n: Tower(n, fp32[n].spec, "onnx", path=p) for n, p in outputs.items()}}
            self.task_figs = task.drops(towers) if task is not None else None
            self.budget_rows = check_budgets(self.budgets, self.figures, self.task_figs, self.active)
            failed = [r for r in self.budget_rows if not r["holds"]]
            if failed:
                r = failed[0]
                raise BudgetError(f"accuracy budget {r['budget']} fails on {r['scope']} in FP16: {r['figure']:.4g}",
                                  hint="keep that tower in FP32 (--tower-precision NAME=fp32) or relax the budget")
        self._gate(outputs)
        return self._manifest(fp32, outputs, task)

    def _task_eval(self, data: Any, fp32: dict[str, Tower]) -> Optional[TaskEval]:
        if not any(b.is_task for b in self.budgets):
            return None
        if data is None or not data.holdout_samples:
            raise DataError("task budgets (zero-shot / recall / accuracy drop) need a labelled JSONL manifest",
                            hint="pass --calib-data path/to/manifest.jsonl with image/text/label fields")
        self.log("measuring FP32 task metrics on the held-out rows")
        return TaskEval(data.holdout_samples, data.source, fp32, self.processor_dir, self.config.templates)

    def _fp16(self, name: str, src: Tower, teval: TowerEval) -> Path:
        from .fp16 import convert_fp16

        self.log(f"converting tower {name!r} to FP16 (I/O stay FP32)")
        dst = self.workdir / f"{name}.onnx"
        self.details[name]["fp16"] = convert_fp16(src.path, dst, self.config.fp16_block_ops, teval.calib + teval.holdout, name)
        self.figures[name] = teval.figures(dst)
        return dst

    def _int8(self, names: list[str], fp32: dict[str, Tower], evals: dict[str, TowerEval], data: Any,
              task: Optional[TaskEval]) -> dict[str, Path]:
        from .ort_int8 import prepare_fp32

        prepared = {}
        for n in names:
            prepared[n] = self.scratch / f"{n}.prep.onnx"
            self.details[n]["preprocess"] = prepare_fp32(fp32[n].path, prepared[n],
                                                         13 if self.config.preset == "tensorrt" else 0)
        names = self._skip_empty(names, prepared, data)
        if not names:
            return {}
        methods = {n: self.plans[n].method for n in names}
        tries = 0
        while True:  # each failing 'auto' tower moves on to its next alternative method
            try:
                return self._int8_attempt(names, methods, prepared, fp32, evals, data, task)
            except BudgetError as first:
                failing = getattr(first, "towers", names)
                alt = {n: self.plans[n].alternatives[tries] for n in failing
                       if n in names and self.plans[n].auto and len(self.plans[n].alternatives) > tries
                       and self._has_work(n, self.plans[n].alternatives[tries], prepared, data)}
                if not alt:
                    raise
                self.log(f"budget not reached with {methods}; trying {alt}")
                for n in alt:
                    self.details[n].setdefault("earlier_attempts", []).append(
                        {"method": methods[n], "error": first.message})
                methods = {**methods, **alt}
                tries += 1

    def _has_work(self, name: str, method: str, prepared: dict[str, Path], data: Any) -> bool:
        """Whether ``method`` finds anything to quantize in the tower (dynamic INT8 on a conv-only CNN does not:
        the budget search then does not try it, and an unmet budget stays a budget error, exit 6)."""
        from .ort_int8 import Int8Quantizer, NothingToQuantizeError

        calib = data.towers[name].calib if data is not None else None
        try:
            Int8Quantizer(prepared[name], self.plans[name], method, self.config, calib, self.scratch / f"probe-{name}-{method}")
        except NothingToQuantizeError:
            return False
        return True

    def _skip_empty(self, names: list[str], prepared: dict[str, Path], data: Any) -> list[str]:
        """Towers with nothing for their INT8 method to quantize (dynamic INT8 on a conv-only CNN tower) stay FP32
        and are reported, while the other towers are handled; an error only when no tower is left to do."""
        from .ort_int8 import Int8Quantizer, NothingToQuantizeError

        keep, skipped = [], {}
        for n in names:
            calib = data.towers[n].calib if data is not None else None
            try:
                Int8Quantizer(prepared[n], self.plans[n], self.plans[n].method, self.config, calib, self.scratch / f"probe-{n}")
                keep.append(n)
            except NothingToQuantizeError as exc:
                skipped[n] = exc
        if not skipped:
            return names
        if not keep and len(self.active) == len(skipped):
            raise next(iter(skipped.values()))
        named = [b for b in self.budgets if b.tower in skipped]
        if named:
            raise UserInputError(f"budget {named[0].text} names tower {named[0].tower!r}, which has nothing to quantize: "
                                 f"{skipped[named[0].tower].message}", hint=skipped[named[0].tower].hint)
        for n, exc in skipped.items():
            self.log(f"skipped tower {n!r}: {exc.message}; it stays FP32")
            self.details[n]["skipped"] = f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message
            self.plans[n].precision = "fp32"
            self.active.remove(n)
        return keep

    def _int8_attempt(self, names: list[str], methods: dict[str, str], prepared: dict[str, Path],
                      fp32: dict[str, Tower], evals: dict[str, TowerEval], data: Any,
                      task: Optional[TaskEval]) -> dict[str, Path]:
        from .graph import float_nodes_report
        from .mixed_precision import SearchUnit, search
        from .ort_int8 import Int8Quantizer

        quantizers = {}
        for n in names:
            calib = data.towers[n].calib if data is not None else None
            quantizers[n] = Int8Quantizer(prepared[n], self.plans[n], methods[n], self.config, calib,
                                          self.scratch / f"q-{n}")
        auto = {n for n in names if self.plans[n].auto}
        cache: dict[tuple, Path] = {}
        counter = [0]

        def build(n: str, exclude: list[str]) -> Path:
            key = (n, methods[n], tuple(sorted(exclude)))
            if key not in cache:
                counter[0] += 1
                self.log(f"quantizing tower {n!r} ({methods[n]} INT8, {len(exclude)} node(s) kept FP32)")
                cache[key] = quantizers[n].quantize(exclude, self.scratch / f"{n}.int8.{counter[0]}.onnx")
            return cache[key]

        def evaluate(excludes: dict[str, list[str]]) -> dict[str, Any]:
            paths = {n: build(n, excludes.get(n, [])) for n in names}
            for n in names:
                self.figures[n] = evals[n].figures(paths[n])
            task_figs = None
            if task is not None:
                towers = dict(fp32)
                for n in self.active:
                    p = paths.get(n) or self.workdir / f"{n}.onnx"
                    towers[n] = Tower(n, fp32[n].spec, "onnx", path=p)
                task_figs = task.drops(towers)
            rows = check_budgets(self.budgets, self.figures, task_figs, self.active) if self.budgets else []
            return {"rows": rows, "paths": paths, "task": task_figs}

        units = {n: SearchUnit(n, quantizers[n], evals[n], self.config.sensitivity) for n in auto}
        if units:
            budget_text = ", ".join(b.text for b in self.budgets)
            found = search(units, evaluate, self.config.max_fp32_fraction, self.scratch, self.log, budget_text)
            excludes, result = found["excludes"], found["result"]
            self.budget_rows, self.task_figs = result["rows"], result["task"]
            for n in units:
                self.details[n]["mixed_precision"] = {"budget": budget_text, "search": found["trace"],
                                                      "sensitivity": found["sensitivity"].get(n, [])}
        else:
            excludes = {n: [] for n in names}
            result = evaluate(excludes)
            self.budget_rows, self.task_figs = result["rows"], result["task"]
        out = {}
        onnx = require("onnx")
        for n in names:
            dst = self.workdir / f"{n}.onnx"
            shutil.copyfile(result["paths"][n], dst)
            reasons = {x: "kept FP32 by the accuracy budget" for x in excludes.get(n, [])}
            self.details[n]["quantizer"] = quantizers[n].describe()
            self.details[n]["nodes"] = float_nodes_report(onnx.load(str(dst)), quantizers[n].candidates, methods[n],
                                                          reasons)
            out[n] = dst
        return out

    # ---- checks + manifest ---------------------------------------------------------------------------
    def _gate(self, outputs: dict[str, Path]) -> None:
        for name, path in outputs.items():
            figs = self.figures[name]
            prec = self.plans[name].precision
            if not figs["finite"]:
                raise VerificationError(f"tower {name!r} ({prec}) produces NaN/Inf on {figs['data']}",
                                        hint="keep it in FP32 (--tower-precision NAME=fp32) or try another method")
            floor = self.config.min_cosine
            if floor is None and not self.budgets:
                floor = DEFAULT_MIN_COSINE[prec]
            if floor is not None and figs["cosine"] < floor:
                raise VerificationError(
                    f"tower {name!r} ({prec}) drifted from FP32: cosine {figs['cosine']:.4f} < {floor} on {figs['data']}",
                    hint="add --accuracy-budget 'cosine>=0.99' (keeps sensitive nodes in FP32), try --method dynamic "
                         "or --op-types MatMul,Gemm, or lower --min-cosine if you accept it")
            if prec == "int8" and self.config.preset == "tensorrt":
                from .graph import tensorrt_qdq_violations

                onnx = require("onnx")
                bad = tensorrt_qdq_violations(onnx.load(str(path)))
                if bad:
                    raise VerificationError(f"tower {name!r}: the QDQ graph breaks TensorRT's rules: {bad[0]}")
                self.details[name]["tensorrt_qdq_check"] = "passed"

    def _manifest(self, fp32: dict[str, Tower], outputs: dict[str, Path], task: Optional[TaskEval]) -> Manifest:
        artifacts = []
        for name, tower in self.model.towers.items():
            rel = f"{name}.onnx"
            plan = self.plans[name]
            src = fp32[name].path
            src_data = src.with_name(src.name + ".data")  # ONNX external data, if any
            src_size = size_on_disk(src) + size_on_disk(src_data)
            if name not in outputs:
                shutil.copyfile(src, self.workdir / rel)
                if src_data.exists():
                    shutil.copyfile(src_data, self.workdir / (rel + ".data"))
                verification: dict[str, Any] = {"copied": True, "precision": "fp32"}
            else:
                verification = dict(self.figures[name])
            info = describe_file(self.workdir, rel)
            details = {"plan": plan.describe(), **{k: v for k, v in self.details[name].items() if v is not None},
                       "fp32_size_bytes": src_size, "size_ratio": round(info["size_bytes"] / max(src_size, 1), 4)}
            artifacts.append(Artifact(kind="onnx", tower=name, path=rel, precision=plan.precision,
                                      io_spec=tower.spec.to_dict(), verification=verification, details=details, **info))
        metrics: dict[str, Any] = {"budgets": self.budget_rows}
        if any(self.plans[n].precision == "int8" for n in outputs):  # INT8 numerics depend on the CPU's kernels
            from .isa import detect_isa, resolve_isa

            metrics["target_cpu"] = {"isa": resolve_isa(self.config.target_cpu), "requested": self.config.target_cpu,
                                     "quantized_on": detect_isa()}
        if self.task_figs:
            metrics["task"] = self.task_figs
        prev = self.model.details.get("manifest")
        history = [] if prev is None else [*prev.history, {"pass_name": prev.pass_name, "config": prev.config,
                                                             "created": prev.created}]
        return Manifest(pass_name="quantize", config=self.config.model_dump(mode="json"), source=source_info(self.model),
                        versions=package_versions(), artifacts=artifacts, metrics=metrics,
                        history=history + self.history)
