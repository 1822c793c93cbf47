"""ONNX export pass: one ``<tower>.onnx`` per tower with real dynamic axes, verified against torch."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..._lazy import require
from ...artifacts import Artifact, Manifest, describe_file, package_versions
from ...errors import ExportError, UserInputError
from ...model.runners import verify_tower
from ...model.tower import LoadedModel, Tower
from ..base import Pass, PassConfig, RunContext, register_pass


class OnnxExportConfig(PassConfig):
    opset: int = 17
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    towers: tuple[str, ...] = ()
    min_cosine: float = 0.9999
    verify_max_batch: int = 4
    constant_folding: bool = True


def export_tower_onnx(tower: Tower, path: Path, config: OnnxExportConfig, seed: int = 0) -> None:
    """Export one torch tower to ``path``; raises ExportError with the exporter's first line on failure."""
    torch = require("torch")
    require("onnx")
    if not tower.is_torch:
        raise UserInputError(f"tower {tower.name!r} is already {tower.kind}; export needs a torch checkpoint")
    spec = tower.spec
    lo_sizes = {d: max(lo, min(hi, 2)) for d, (lo, hi) in spec.dims.items()}
    feeds = spec.dummy_inputs(lo_sizes, seed=seed)
    args = tuple(torch.from_numpy(feeds[n]) for n in spec.input_names)
    module = tower.module
    out_axes = _output_dynamic_axes(module, args, spec)
    buf = io.StringIO()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(buf), _quiet_loggers():
            warnings.simplefilter("ignore")
            if config.exporter == "dynamo":
                require("onnxscript")
                dyn = _dynamo_shapes(torch, spec)
                prog = torch.onnx.export(module, args, None, dynamo=True, dynamic_shapes=dyn,
                                         input_names=spec.input_names, output_names=spec.output_names,
                                         opset_version=config.opset, optimize=True, verbose=False)
                prog.save(str(path))
            else:
                torch.onnx.export(module, args, str(path), dynamo=False, opset_version=config.opset,
                                  input_names=spec.input_names, output_names=spec.output_names,
                                  dynamic_axes={**spec.dynamic_axes(), **out_axes},
                                  do_constant_folding=config.constant_folding)
    except Exception as exc:  # noqa: BLE001 - exporters raise anything; we report one line
        msg = _first_line(exc)
        hint = "try --exporter dynamo" if config.exporter == "torchscript" else "try --exporter torchscript"
        if "Unsupported" in msg or "not supported" in msg.lower():
            hint = f"an operator is not supported at opset {config.opset}: try a newer --opset, or {hint}"
        raise ExportError(f"exporting tower {tower.name!r} to ONNX failed: {msg}", hint=hint) from None
    _check_onnx(path)


def _output_dynamic_axes(module: Any, args: tuple, spec: Any) -> dict[str, dict[int, str]]:
    """Mark output axes whose size equals a symbolic input dim's size as dynamic (with that dim's name)."""
    torch = require("torch")
    with torch.no_grad():
        outs = module(*args)
    size_to_dim: dict[int, str] = {}
    for inp, a in zip(spec.inputs, args):
        for k, d in enumerate(inp.shape):
            if isinstance(d, str):
                size_to_dim.setdefault(int(a.shape[k]), d)
    axes: dict[str, dict[int, str]] = {}
    for name, o in zip(spec.output_names, outs):
        axes[name] = {k: size_to_dim[s] for k, s in enumerate(o.shape) if s in size_to_dim}
    return axes


def _dynamo_shapes(torch: Any, spec: Any) -> dict[str, dict[int, Any]]:
    dims = {d: torch.export.Dim(d, min=max(1, lo), max=hi) for d, (lo, hi) in spec.dims.items()}
    return {i.name: {k: dims[d] for k, d in enumerate(i.shape) if isinstance(d, str)} for i in spec.inputs}


@contextlib.contextmanager
def _quiet_loggers():
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch.fx.experimental.symbolic_shapes")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = next((ln for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return line[:300]


def _check_onnx(path: Path) -> None:
    onnx = require("onnx")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - checker raises ValidationError and others
        raise ExportError(f"the exported ONNX file is invalid: {_first_line(exc)}",
                          hint="try another --opset or --exporter") from None


@register_pass
class OnnxExportPass(Pass):
    name: ClassVar[str] = "export_onnx"
    config_cls: ClassVar[type[PassConfig]] = OnnxExportConfig

    def run(self, model: LoadedModel, config: OnnxExportConfig, ctx: RunContext, workdir: Path) -> Manifest:
        towers = model.select(config.towers)
        artifacts = []
        for tower in towers:
            ctx.log(f"exporting tower {tower.name!r} to ONNX (opset {config.opset}, {config.exporter})")
            rel = f"{tower.name}.onnx"
            export_tower_onnx(tower, workdir / rel, config, seed=ctx.seed)
            from ...model.loaders import load_onnx_file

            exported = load_onnx_file(workdir / rel, spec=tower.spec, tower=tower.name).towers[tower.name]
            ctx.log(f"verifying {rel} against torch")
            figures = verify_tower(tower, exported, tower.spec.verification_sizes(config.verify_max_batch),
                                   config.min_cosine, seed=ctx.seed)
            artifacts.append(Artifact(kind="onnx", tower=tower.name, path=rel, precision="fp32",
                                      io_spec=tower.spec.to_dict(), verification=figures,
                                      details={"opset": config.opset, "exporter": config.exporter},
                                      **describe_file(workdir, rel)))
        return Manifest(pass_name=self.name, config=config.model_dump(mode="json"),
                        source=source_info(model), versions=package_versions(), artifacts=artifacts)


def source_info(model: LoadedModel) -> dict[str, Any]:
    """What a manifest records about its input model."""
    info: dict[str, Any] = {"path": model.source, "format": model.format, "architecture": model.architecture,
                            "towers": model.tower_names}
    if model.hf_dir is not None:
        info["hf_dir"] = str(Path(model.hf_dir).resolve())
    prev = model.details.get("manifest")
    if prev is not None:
        info["pass_name"] = prev.pass_name
        info["root_source"] = prev.source.get("root_source") or prev.source.get("path")
        if prev.source.get("hf_dir"):
            info["hf_dir"] = prev.source["hf_dir"]
    return info
