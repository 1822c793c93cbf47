"""``export: {target: tensorrt}``: TensorRT-ready ONNX + readiness lint + build plan and scripts per tower,
and the engines themselves where TensorRT and an NVIDIA GPU are present.

Per tower, always (CPU is enough):
1. a TensorRT-ready ONNX: exported (``export_onnx``), precision put in the graph by the quantize pass (FP16:
   converted graph with FP32 I/O; INT8: ``--preset tensorrt`` QDQ, calibrated on ``calib_data``), constants
   folded (onnx-graphsurgeon, which never folds Q/DQ) and shapes inferred; run in ONNX Runtime against the
   source at the profile's min / opt / max shapes (figures in the manifest);
2. a readiness lint against TensorRT's ONNX parser table for the target version (``trt_lint``): errors
   stop the export (exit 4) unless ``allow_unsupported``;
3. ``trt_build_plan.json`` + ``build_trtexec.sh`` + ``build_polygraphy.sh`` (``trt_plan``).
Then ``build="local"`` builds and verifies ``<tower>.plan`` here (``trt_build``; exit 3 without TensorRT + GPU,
before any work), ``build="defer"`` leaves that to ``mmdk build-engines BUNDLE`` on the device.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..._lazy import require
from ..._quiet import quiet
from ...artifacts import Artifact, Manifest, describe_file, package_versions, sha256_file
from ...errors import DataError, UserInputError
from ...model.tower import LoadedModel, Tower
from ..base import Pass, PassConfig, RunContext
from ...runtime import trt_env
from . import trt_plan


class TensorRTExportConfig(PassConfig):
    """``mmdk export --target tensorrt``: everything that decides the bundle, as data."""

    target: Literal["tensorrt"] = "tensorrt"
    precision: Literal["fp16", "int8", "fp32"] = "fp16"
    towers: tuple[str, ...] = ()
    calib_data: Optional[str] = None          # INT8 calibration data (JSONL manifest, .npz, folder of .npy)
    processor: Optional[str] = None           # HF dir with tokenizer / image processor (default: the model's)
    device: str = "gpu"                        # gpu | jetson-orin-nano | jetson-orin-nx | jetson-agx-orin | ...
    dla: Optional[int] = Field(None, ge=0)     # DLA core (Jetson targets with DLA)
    build: Optional[Literal["local", "defer"]] = None  # None: defer for jetson-* (unless on that board), else local
    allow_unsupported: bool = False
    trt_version: Optional[str] = None          # None: the installed TensorRT, else 10.3 for jetson-*, else any 10.x
    opset: int = Field(17, ge=9)
    exporter: Literal["auto", "torchscript", "dynamo"] = "auto"
    workspace_mb: int = Field(4096, ge=16)
    builder_optimization_level: int = Field(3, ge=0, le=5)
    hardware_compatibility_level: Literal["none", "ampere+"] = "none"
    version_compatible: bool = False
    min_cosine: Optional[float] = Field(None, ge=-1, le=1)  # every check's floor (None: runtime.verify.MIN_COSINE)
    calib_samples: int = Field(128, ge=1)
    holdout_samples: int = Field(64, ge=1)
    seed: int = 0

    @field_validator("calib_data", "processor", mode="before")
    @classmethod
    def _path_as_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    @model_validator(mode="after")
    def _check_target(self) -> "TensorRTExportConfig":
        from ...runtime.targets import TARGETS

        profile = TARGETS.get(self.device)
        if profile is None or profile.device != "cuda":
            choices = ", ".join(n for n, t in TARGETS.items() if t.device == "cuda")
            raise ValueError(f"device {self.device!r} is not a TensorRT target (choose one of {choices})")
        if self.dla is not None and self.dla >= profile.dla_cores:
            raise ValueError(f"device {self.device!r} has {profile.dla_cores} DLA core(s); --dla {self.dla} does not exist")
        if self.trt_version is not None:
            trt_plan.major(self.trt_version)
        return self

    def build_mode(self, caps: trt_env.TrtCapabilities) -> str:
        if self.build is not None:
            return self.build
        if self.device.startswith("jetson-") and not trt_env.on_device(self.device, caps):
            return "defer"
        return "local"

    def resolved_trt_version(self, caps: trt_env.TrtCapabilities, mode: str) -> str:
        if self.trt_version:
            return self.trt_version
        if mode == "local" and caps.tensorrt_version:
            return caps.tensorrt_version
        return trt_plan.JETPACK6_TRT if self.device.startswith("jetson-") else trt_plan.SERVER_TRT


def preflight(config: TensorRTExportConfig) -> None:
    """Refuse (exit 3) a local build where TensorRT + a GPU are absent, before any model is loaded."""
    caps = trt_env.detect()
    if config.build_mode(caps) == "local":
        trt_env.require_build(caps)


# ---- TensorRT-ready ONNX -------------------------------------------------------------------------------------
def prepare_onnx(src: Path, dst: Path) -> dict[str, Any]:
    """Fold constants (Q/DQ never folded) and infer shapes; ``dst`` is a checked ONNX file."""
    onnx = require("onnx")
    gs = require("onnx_graphsurgeon", extra="export", purpose="folding constants for TensorRT")
    model = onnx.load(str(src))
    before = len(model.graph.node)
    graph = gs.import_onnx(model)
    graph.toposort()
    with quiet("onnx_graphsurgeon", "", fds=True):  # it evaluates foldable subgraphs in ONNX Runtime (C++ warnings)
        graph.fold_constants(error_ok=True).cleanup().toposort()
    folded = gs.export_onnx(graph)
    folded.ir_version = model.ir_version
    try:
        folded = onnx.shape_inference.infer_shapes(folded, strict_mode=False)
        inferred = True
    except Exception:  # noqa: BLE001 - shape inference is best effort; TensorRT infers shapes itself
        inferred = False
    onnx.save(folded, str(dst))
    onnx.checker.check_model(str(dst))
    return {"nodes_before": before, "nodes_after": len(folded.graph.node), "shapes_inferred": inferred,
            "constant_folding": f"onnx-graphsurgeon {getattr(gs, '__version__', '?')}"}


def lint_tower(path: Path, name: str, trt_version: str, config: TensorRTExportConfig,
               log: Optional[Any] = None) -> Any:
    """TensorRT readiness of one tower's ONNX (``trt_lint``); errors stop the export (exit 4) unless
    ``allow_unsupported``. ``log`` gets the warnings and the allowed errors."""
    from .trt_lint import lint_file

    rep = lint_file(path, name, trt_version, dla=config.dla is not None, precision=config.precision)
    for f in rep.warnings if log else ():
        log(f"lint {name}: {f.text()}")
    if not config.allow_unsupported:
        rep.raise_on_errors()
    for f in rep.errors if log else ():
        log(f"lint {name} (allowed by --allow-unsupported): {f.text()}")
    return rep


def _onnx_sources(model: LoadedModel, config: TensorRTExportConfig, ctx: RunContext, scratch: Path,
                  names: list[str], trt_version: str) -> tuple[dict[str, Path], dict[str, Any]]:
    """The selected towers as ONNX with the precision in the graph; plus what each step recorded. The FP32
    graph is linted (constants folded) before the precision step runs it, so an op TensorRT cannot parse
    stops the export (exit 4) before anything executes the graph on data."""
    from .onnx import OnnxExportConfig, OnnxExportPass

    towers = dict(model.towers)
    record: dict[str, Any] = {n: {} for n in names}
    torch_towers = [n for n in names if towers[n].kind == "torch"]
    bad = [n for n in names if towers[n].kind not in ("torch", "onnx")]
    if bad:
        raise UserInputError(f"tower {bad[0]!r} is a {towers[bad[0]].kind}; export the torch or ONNX model instead")
    if torch_towers:
        exp = ctx.run_substep(OnnxExportPass, OnnxExportConfig(opset=config.opset, exporter=config.exporter,
                                                               towers=tuple(torch_towers)), model, _mk(scratch / "export"))
        for a in exp.artifacts:
            towers[a.tower] = dataclasses.replace(towers[a.tower], kind="onnx", module=None,
                                                  path=scratch / "export" / a.path)
            record[a.tower]["onnx_export"] = {"exporter": a.details.get("exporter"), "opset": a.details.get("opset"),
                                              "cosine_min": a.verification.get("cosine_min")}
    if config.precision == "fp32":
        return {n: towers[n].path for n in names}, record
    for n in names:
        prepare_onnx(towers[n].path, _mk(scratch / "lint") / f"{n}.onnx")
        lint_tower(scratch / "lint" / f"{n}.onnx", n, trt_version, config)
    from ..quantize.config import QuantizeConfig
    from ..quantize.quantize_pass import QuantizePass

    qconfig = QuantizeConfig(precision=config.precision, preset="tensorrt" if config.precision == "int8" else "cpu",
                             towers=tuple(names), calib_data=config.calib_data, processor=config.processor,
                             calib_samples=config.calib_samples,
                             holdout_samples=config.holdout_samples, seed=config.seed)
    onnx_model = dataclasses.replace(model, towers=towers)
    qman = ctx.run_substep(QuantizePass, qconfig, onnx_model, _mk(scratch / "quant"))
    for a in qman.artifacts:
        if a.tower in record:
            record[a.tower]["quantize"] = {k: a.verification.get(k) for k in ("cosine", "cosine_min", "data")
                                           if k in a.verification}
            if a.details.get("tensorrt_qdq_check"):
                record[a.tower]["quantize"]["tensorrt_qdq_check"] = a.details["tensorrt_qdq_check"]
    return {n: scratch / "quant" / f"{n}.onnx" for n in names}, record


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def verify_onnx_bundle(source: Tower, onnx_path: Path, precision: str, seed: int = 0,
                       min_cosine: Optional[float] = None) -> dict[str, Any]:
    """The bundle's ONNX in ONNX Runtime vs the source tower at the profile's min / opt / max shapes; below
    ``min_cosine`` (default: the tolerance table's ``tensorrt_onnx`` row) it raises VerificationError."""
    from ...model.loaders import load_onnx_file
    from ...runtime.verify import TowerRunner, min_cosine_floor, profile_batches, verify_runs

    cand = load_onnx_file(onnx_path, spec=source.spec, tower=source.name).towers[source.name]
    fig = verify_runs(TowerRunner(source), TowerRunner(cand), profile_batches(source.spec, seed),
                      min_cosine_floor("tensorrt_onnx", precision, min_cosine), what=f"tower {source.name!r}")
    return {"reference": source.kind, "candidate": "onnx", **fig}


# ---- the pass ---------------------------------------------------------------------------------------------------
class TensorRTExportPass(Pass):
    name: ClassVar[str] = "export_tensorrt"
    config_cls: ClassVar[type[PassConfig]] = TensorRTExportConfig
    accepts: ClassVar[tuple[str, ...]] = ("torch", "onnx")
    produces: ClassVar[str] = "trt"
    forbidden_after: ClassVar[tuple[str, ...]] = ("prune", "distill", "quantize")
    data_fields: ClassVar[tuple[str, ...]] = ("calib_data", "processor")

    @staticmethod
    def preflight(config: TensorRTExportConfig) -> None:
        preflight(config)

    @staticmethod
    def machine_identity(config: TensorRTExportConfig) -> dict[str, Any]:
        """A bundle deferred here and engines built there differ: the key holds what was found."""
        caps = trt_env.detect().to_dict()
        return {k: caps.get(k) for k in ("tensorrt_version", "gpu_names", "cuda_driver_version", "jetson_model",
                                          "can_build")}

    def run(self, model: LoadedModel, config: TensorRTExportConfig, ctx: RunContext, workdir: Path) -> Manifest:
        from .onnx import source_info

        caps = trt_env.detect()
        mode = config.build_mode(caps)
        if mode == "local":
            trt_env.require_build(caps)  # exit 3 before any work
        trt_version = config.resolved_trt_version(caps, mode)
        if config.precision == "int8" and not config.calib_data:
            raise DataError("INT8 TensorRT engines need calibration data for the QDQ graph; none was given",
                            hint="pass --calib-data (JSONL manifest, .npz or folder of .npy), or use --precision fp16")
        if config.dla is not None and trt_plan.major(trt_version) >= 11:
            ctx.log(f"note: DLA support in TensorRT {trt_version} depends on the release and platform (absent in 11.0-11.3)")
        towers = model.select(config.towers)
        names = [t.name for t in towers]
        with tempfile.TemporaryDirectory(prefix="mmdk-trt-") as scratch_name:
            sources, record = _onnx_sources(model, config, ctx, Path(scratch_name), names, trt_version)
            for n in names:
                ctx.log(f"preparing {n}.onnx for TensorRT (constant folding, shape inference)")
                record[n]["prepare"] = prepare_onnx(sources[n], workdir / f"{n}.onnx")
        lint, plan_towers = {}, []
        for t in towers:
            lint[t.name] = lint_tower(workdir / f"{t.name}.onnx", t.name, trt_version, config, ctx.log)
            plan_towers.append({"name": t.name, "onnx": f"{t.name}.onnx",
                                "onnx_sha256": sha256_file(workdir / f"{t.name}.onnx"),
                                "profile": trt_plan.derive_profile(t.spec, static=config.dla is not None)})
        figures = {}
        for t in towers:
            ctx.log(f"verifying {t.name}.onnx in ONNX Runtime against the source at min/opt/max shapes")
            figures[t.name] = verify_onnx_bundle(t, workdir / f"{t.name}.onnx", config.precision, seed=ctx.seed,
                                                 min_cosine=config.min_cosine)
        plan = trt_plan.build_plan(plan_towers, trt_version=trt_version, device=config.device,
                                   precision=config.precision, workspace_mb=config.workspace_mb,
                                   builder_optimization_level=config.builder_optimization_level, dla_core=config.dla,
                                   hardware_compatibility_level=config.hardware_compatibility_level,
                                   version_compatible=config.version_compatible)
        write_plan_files(workdir, plan)
        engines = None
        if mode == "local":
            from .trt_build import build_engines, verify_engines

            sidecars = build_engines(workdir, plan, caps, ctx.log)
            refs = {t.name: t for t in towers}
            engines = {"sidecars": sidecars,
                       "verification": verify_engines(workdir, plan, refs, {t.name: t.spec for t in towers},
                                                      config.min_cosine, ctx.seed, ctx.log)}
        artifacts = bundle_artifacts(workdir, plan, {t.name: t.spec.to_dict() for t in towers}, figures, record,
                                     lint, engines)
        metrics = {"tensorrt": tensorrt_summary(plan, mode, caps, engines is not None)}
        return Manifest(pass_name=self.name, config=config.model_dump(mode="json"), source=source_info(model),
                        versions=package_versions(), artifacts=artifacts, metrics=metrics)


def write_plan_files(workdir: Path, plan: dict[str, Any]) -> None:
    (workdir / trt_plan.PLAN_NAME).write_text(json.dumps(plan, indent=2) + "\n")
    for name, text in ((trt_plan.TRTEXEC_SCRIPT, trt_plan.trtexec_script(plan)),
                       (trt_plan.POLYGRAPHY_SCRIPT, trt_plan.polygraphy_script(plan))):
        p = workdir / name
        p.write_text(text)
        p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def tensorrt_summary(plan: dict[str, Any], mode: str, caps: trt_env.TrtCapabilities, built: bool) -> dict[str, Any]:
    return {"engines": "built" if built else "deferred", "build": mode, "device": plan["device"],
            "trt_version": plan["trt_version"], "precision": plan["precision"], "typing": plan["typing"],
            "plan": trt_plan.PLAN_NAME, "scripts": [trt_plan.TRTEXEC_SCRIPT, trt_plan.POLYGRAPHY_SCRIPT],
            "build_command": "mmdk build-engines BUNDLE" if not built else None,
            "prepared_on": {"tensorrt": caps.tensorrt_version, "gpu": list(caps.gpu_names), "jetson": caps.jetson_model}}


def bundle_artifacts(workdir: Path, plan: dict[str, Any], specs: dict[str, dict], onnx_figures: dict[str, Any],
                     record: dict[str, Any], lint: dict[str, Any], engines: Optional[dict[str, Any]]) -> list[Artifact]:
    """One artifact per tower: the engine when built (``trt_engine``), else the TensorRT-ready ONNX."""
    out = []
    for t in plan["towers"]:
        n = t["name"]
        details = {"onnx": t["onnx"], "profile": t["profile"], "steps": record.get(n, {}),
                   "lint": lint[n].to_dict() if hasattr(lint[n], "to_dict") else lint[n],
                   "onnx_verification": onnx_figures[n], "trt_version": plan["trt_version"], "device": plan["device"]}
        if engines is None:
            details["engine"] = {"status": "deferred", "plan": t["plan"], "build": "mmdk build-engines BUNDLE, or "
                                 f"bash {trt_plan.TRTEXEC_SCRIPT} on the device"}
            out.append(Artifact(kind="onnx", tower=n, path=t["onnx"], precision=plan["precision"], io_spec=specs[n],
                                verification=onnx_figures[n], details=details, **describe_file(workdir, t["onnx"])))
        else:
            details["engine"] = {"status": "built", "sidecar": t["sidecar"], "layers": t["layers"],
                                 "tensorrt": engines["sidecars"][n]["tensorrt"]["version"],
                                 "gpu": engines["sidecars"][n]["gpu"]}
            out.append(Artifact(kind="trt_engine", tower=n, path=t["plan"], precision=plan["precision"],
                                io_spec=specs[n], verification=engines["verification"][n], details=details,
                                **describe_file(workdir, t["plan"])))
    return out


# ---- mmdk build-engines ------------------------------------------------------------------------------------------
BUILD_HINT = f"run `mmdk build-engines` on the target device, or bash {trt_plan.TRTEXEC_SCRIPT} there"


def check_bundle(bundle: Path) -> Manifest:
    """The manifest of a bundle written by ``export --target tensorrt --build defer``, or a one-line error."""
    manifest = Manifest.read(bundle)
    if manifest.pass_name != "export_tensorrt" or not (Path(bundle) / trt_plan.PLAN_NAME).is_file():
        raise UserInputError(f"{bundle} is not a TensorRT bundle (no {trt_plan.PLAN_NAME})",
                             hint="write one with: mmdk export MODEL --target tensorrt --build defer -o BUNDLE")
    return manifest


class BuildEnginesConfig(PassConfig):
    """``mmdk build-engines``: build and verify the engines of a deferred bundle on this machine."""

    min_cosine: Optional[float] = Field(None, ge=-1, le=1)  # every check's floor (None: runtime.verify.MIN_COSINE)
    seed: int = 0


class BuildEnginesPass(Pass):
    """A deferred TensorRT bundle in, the same bundle with built and verified ``<tower>.plan`` engines out (a step
    of the runner: cached per bundle content, TensorRT version and GPU; its history written by the runner)."""

    name: ClassVar[str] = "build_engines"
    config_cls: ClassVar[type[PassConfig]] = BuildEnginesConfig
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    produces: ClassVar[str] = "trt"
    tower_field: ClassVar[Optional[str]] = None

    @staticmethod
    def preflight(config: BuildEnginesConfig) -> None:
        trt_env.require_build(hint=BUILD_HINT)

    machine_identity = staticmethod(TensorRTExportPass.machine_identity)

    def run(self, model: LoadedModel, config: BuildEnginesConfig, ctx: RunContext, workdir: Path) -> Manifest:
        from ...model.iospec import IOSpec
        from ...model.loaders import load_onnx_file
        from .trt_build import build_engines, verify_engines

        bundle = Path(str(model.source))
        manifest = check_bundle(bundle)
        caps = trt_env.require_build(hint=BUILD_HINT)
        plan = json.loads((bundle / trt_plan.PLAN_NAME).read_text())
        log = ctx.progress or (lambda m: None)
        for p in bundle.iterdir():
            if p.is_file():
                shutil.copy2(p, workdir / p.name)
        engines_sidecars = build_engines(workdir, plan, caps, log)
        specs = {a.tower: IOSpec.model_validate(a.io_spec) for a in manifest.artifacts}
        refs = {n: load_onnx_file(workdir / f"{n}.onnx", spec=specs[n], tower=n).towers[n] for n in specs}
        figs = verify_engines(workdir, plan, refs, specs, config.min_cosine, config.seed, log)
        engines = {"sidecars": engines_sidecars, "verification": figs}
        old = {a.tower: a for a in manifest.artifacts}
        lint = {n: old[n].details.get("lint", {}) for n in old}
        record = {n: old[n].details.get("steps", {}) for n in old}
        onnx_figs = {n: old[n].details.get("onnx_verification", old[n].verification) for n in old}
        arts = bundle_artifacts(workdir, plan, {n: old[n].io_spec for n in old}, onnx_figs, record, lint, engines)
        new = manifest.model_copy(update={"artifacts": arts, "created": "", "versions": package_versions(),
                                          "history": []})   # the runner records the deferred bundle as history
        new.metrics = {**manifest.metrics, "tensorrt": {**manifest.metrics.get("tensorrt", {}), "engines": "built",
                                                        "build_command": None, "built_on": {
                                                            "host": os.uname().nodename, "tensorrt": caps.tensorrt_version,
                                                            "gpu": list(caps.gpu_names), "jetson": caps.jetson_model}}}
        new.metrics.pop("step", None)   # the runner sets this step's own
        return new
