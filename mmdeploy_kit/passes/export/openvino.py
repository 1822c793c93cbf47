"""``export: {target: openvino}``: OpenVINO IR (``<tower>.xml`` + ``<tower>.bin``) per tower, verified.

Torch towers are exported to ONNX first (the ``export_onnx`` sub-step, verified against torch); ONNX towers are
read as they are (no torch needed). The IR is converted from that ONNX with full-precision weights and
verified against the *source* tower (torch or ONNX Runtime) with the ONE verify function, compiled the way
the ``openvino`` bench backend compiles it:

- ``precision: fp32``: ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO would otherwise run BF16 on AVX512_BF16/AMX
  CPUs), verified at ``min_cosine`` 0.9999 like the ONNX export;
- ``precision: bf16``: the same IR run with the BF16 hint, verified like FP16 (cosine 0.999 by default); refused
  (exit 3, before any work) on CPUs without AVX512_BF16 or AMX, where BF16 is emulated and slower than FP32.

INT8 for OpenVINO is ``quantize: {backend: nncf}`` (``passes/quantize/nncf.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field

from ..._lazy import require
from ...artifacts import Artifact, Manifest, package_versions
from ...errors import UserInputError
from ...model.tower import LoadedModel, Tower
from ..base import Pass, PassConfig, RunContext
from .onnx import source_info

# verification floor per precision, vs the source tower (bf16 is checked like fp16 in the quantize pass)
OPENVINO_MIN_COSINE = {"fp32": 0.9999, "bf16": 0.999}


class OpenVINOExportConfig(PassConfig):
    """``mmdk export --target openvino``."""

    target: Literal["openvino"] = "openvino"
    precision: Literal["fp32", "bf16"] = "fp32"
    towers: tuple[str, ...] = ()
    opset: int = Field(17, ge=9)                 # for torch towers (ONNX export sub-step)
    exporter: Literal["auto", "torchscript", "dynamo"] = "auto"
    min_cosine: Optional[float] = Field(None, ge=-1, le=1)  # default per precision (OPENVINO_MIN_COSINE)
    verify_max_batch: int = Field(4, ge=1)
    patch_matmul: bool = True   # a ViT patch-embedding Conv (stride = kernel) written as MatMul (exact; faster)

    def floor(self) -> float:
        return self.min_cosine if self.min_cosine is not None else OPENVINO_MIN_COSINE[self.precision]


def preflight(config: OpenVINOExportConfig) -> None:
    """OpenVINO installed; BF16 only on a CPU with native BF16 (exit 3 before any model is loaded)."""
    require("openvino", extra="openvino", purpose="the OpenVINO runtime")
    if config.precision == "bf16":
        from ...runtime.backends.openvino import require_bf16_cpu

        require_bf16_cpu()


def ir_files_digest(xml: Path) -> dict[str, Any]:
    """sha256 over ``.xml`` + ``.bin`` and their total size."""
    h = hashlib.sha256()
    size = 0
    for p in (xml, xml.with_suffix(".bin")):
        if p.exists():
            data = p.read_bytes()
            h.update(data)
            size += len(data)
    return {"sha256": h.hexdigest(), "size_bytes": size}


def onnx_to_ir(onnx_path: Path, xml: Path, *, patch_matmul: bool) -> int:
    """Convert an ONNX file to IR, weights kept in full precision (``save_model`` would halve them to FP16);
    ``patch_matmul``: patch-embedding Convs as MatMul (:func:`patch_convs_as_matmul`). Returns how many."""
    ov = require("openvino", extra="openvino", purpose="the OpenVINO runtime")
    from ...runtime.backends.openvino import read_model_rewritten

    try:
        model, patches = read_model_rewritten(ov.Core(), onnx_path, patch_matmul=patch_matmul)
    except RuntimeError as exc:
        raise UserInputError(f"OpenVINO cannot read {onnx_path}: {' '.join(str(exc).split())[:240]}") from None
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return patches


def onnx_towers(model: LoadedModel, names: list[str], config: OpenVINOExportConfig, ctx: RunContext,
                scratch: Path) -> tuple[dict[str, Tower], dict[str, Any]]:
    """The selected towers as ONNX: torch towers through the verified ``export_onnx`` sub-step."""
    from .onnx import OnnxExportConfig, OnnxExportPass

    out = {n: model.towers[n] for n in names if model.towers[n].kind == "onnx"}
    record: dict[str, Any] = {}
    bad = [n for n in names if model.towers[n].kind not in ("torch", "onnx")]
    if bad:
        raise UserInputError(f"tower {bad[0]!r} is a {model.towers[bad[0]].kind}; export the torch or ONNX model instead")
    torch_towers = [n for n in names if model.towers[n].kind == "torch"]
    if torch_towers:
        scratch.mkdir(parents=True, exist_ok=True)
        man = ctx.run_substep(OnnxExportPass, OnnxExportConfig(opset=config.opset, exporter=config.exporter,
                                                                towers=tuple(torch_towers)), model, scratch)
        for a in man.artifacts:
            out[a.tower] = dataclasses.replace(model.towers[a.tower], kind="onnx", module=None, path=scratch / a.path)
            record[a.tower] = {"exporter": a.details.get("exporter"), "opset": a.details.get("opset"),
                               "cosine_min": a.verification.get("cosine_min")}
    return out, record


def verify_ir(source: Tower, xml: Path, precision: str, floor: float, max_batch: int, seed: int) -> dict[str, Any]:
    """The IR compiled at ``precision`` vs the source tower, with the ONE verify function."""
    from ...runtime.backends.openvino import compile_tower
    from ...runtime.verify import verify_tower

    cand = Tower(source.name, source.spec, "openvino", path=xml, precision=precision)
    figures = verify_tower(source, cand, source.spec.verification_sizes(max_batch), floor, seed=seed)
    _, figures["inference_precision"], _ = compile_tower(xml, precision, threads=1)
    return figures


class OpenVINOExportPass(Pass):
    name: ClassVar[str] = "export_openvino"
    config_cls: ClassVar[type[PassConfig]] = OpenVINOExportConfig
    accepts: ClassVar[tuple[str, ...]] = ("torch", "onnx")
    produces: ClassVar[str] = "openvino"

    preflight = staticmethod(preflight)

    def run(self, model: LoadedModel, config: OpenVINOExportConfig, ctx: RunContext, workdir: Path) -> Manifest:
        preflight(config)
        ov = require("openvino")
        selected = [t.name for t in model.select(config.towers)]
        for n in selected:
            if model.towers[n].precision not in ("fp32",):
                raise UserInputError(f"tower {n!r} is already {model.towers[n].precision}",
                                     hint="export the FP32 model; INT8 for OpenVINO is mmdk quantize --backend nncf")
        with tempfile.TemporaryDirectory(prefix="mmdk-ov-") as scratch:
            sources, record = onnx_towers(model, selected, config, ctx, Path(scratch) / "onnx")
            artifacts = []
            for name in selected:
                rel = f"{name}.xml"
                ctx.log(f"converting tower {name!r} to OpenVINO IR")
                patches = onnx_to_ir(Path(sources[name].path), workdir / rel, patch_matmul=config.patch_matmul)
                ctx.log(f"verifying {rel} ({config.precision}) against the source")
                figures = verify_ir(model.towers[name], workdir / rel, config.precision, config.floor(),
                                    config.verify_max_batch, ctx.seed)
                details: dict[str, Any] = {"runtime": "openvino", "openvino": ov.__version__.split("-")[0],
                                           "inference_precision": figures["inference_precision"],
                                           "weights": "bin", "patch_convs_as_matmul": patches}
                if name in record:
                    details["onnx_export"] = record[name]
                artifacts.append(Artifact(kind="openvino", tower=name, path=rel, precision=config.precision,
                                          io_spec=model.towers[name].spec.to_dict(), verification=figures,
                                          details=details, **ir_files_digest(workdir / rel)))
        for name, tower in model.towers.items():  # unselected towers travel as they are (ONNX only)
            if name not in selected and tower.kind == "onnx" and tower.path is not None:
                import shutil

                rel = f"{name}.onnx"
                shutil.copyfile(tower.path, workdir / rel)
                artifacts.append(Artifact(kind="onnx", tower=name, path=rel, precision=tower.precision,
                                          io_spec=tower.spec.to_dict(), **ir_files_digest(workdir / rel)))
        return Manifest(pass_name=self.name, config=config.model_dump(mode="json"), source=source_info(model),
                        versions=package_versions("torch", "onnx", "onnxruntime", "openvino"), artifacts=artifacts)

    @staticmethod
    def machine_identity(config: Any) -> dict[str, Any]:
        """BF16 verification figures depend on the CPU's BF16 support; the IR itself does not."""
        if getattr(config, "precision", "fp32") != "bf16":
            return {}
        from ...runtime.backends.openvino import cpu_supports_bf16

        return {"cpu_bf16": cpu_supports_bf16()}
