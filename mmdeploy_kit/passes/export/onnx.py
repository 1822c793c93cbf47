"""ONNX export pass: one ``<tower>.onnx`` per tower with real dynamic axes, verified against torch."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..._lazy import require
from ...artifacts import Artifact, Manifest, describe_file, package_versions
from ..._quiet import quiet
from ...errors import ExportError, MmdkError, UserInputError, VerificationError
from ...runtime.verify import MIN_COSINE, verify_tower
from ...model.tower import LoadedModel, Tower
from ..base import Pass, PassConfig, RunContext


DYNAMO_MIN_OPSET = 18


class OnnxExportConfig(PassConfig):
    target: Literal["onnx"] = "onnx"
    opset: int = 17
    exporter: Literal["auto", "torchscript", "dynamo"] = "auto"
    towers: tuple[str, ...] = ()
    min_cosine: float = MIN_COSINE["export_onnx"]["fp32"]
    verify_max_batch: int = 4
    constant_folding: bool = True


def export_tower_onnx(tower: Tower, path: Path, config: OnnxExportConfig, seed: int = 0,
                      exporter: str | None = None) -> None:
    """Export one torch tower to ``path`` with ``exporter`` (default: the config's; not "auto").

    Raises ExportError with the exporter's first line on failure.
    """
    exporter = exporter or config.exporter
    if exporter == "auto":
        exporter = "torchscript"
    torch = require("torch")
    require("onnx")
    if not tower.is_torch:
        raise UserInputError(f"tower {tower.name!r} is already {tower.kind}; export needs a torch checkpoint")
    spec = tower.spec
    lo_sizes = {d: max(lo, min(hi, 2)) for d, (lo, hi) in spec.dims.items()}
    feeds = spec.dummy_inputs(lo_sizes, seed=seed)
    args = tuple(torch.from_numpy(feeds[n]) for n in spec.input_names)
    module = tower.module
    try:
        out_axes = _output_dynamic_axes(module, args, spec)
    except Exception as exc:  # noqa: BLE001 - the user's forward can raise anything
        raise ExportError(f"tower {tower.name!r} failed on inputs built from its I/O spec "
                          f"({ {k: list(v.shape) for k, v in feeds.items()} }): {_first_line(exc)}",
                          hint="check the I/O spec's shapes/dims match what the model accepts "
                               "(a .pt2 exported with static shapes only takes those shapes)") from None
    module, args, input_names = _script_target(torch, module, args, spec)
    try:
        with torch.no_grad(), quiet(*_EXPORT_LOGGERS, fds=True), _no_mha_fastpath(torch):
            if exporter == "dynamo":
                require("onnxscript")
                dyn = (torch_export_dims(torch, spec),)  # TowerModule.forward(*args): one varargs tuple
                prog = torch.onnx.export(module, args, None, dynamo=True, dynamic_shapes=dyn,
                                         input_names=spec.input_names, output_names=spec.output_names,
                                         opset_version=max(config.opset, DYNAMO_MIN_OPSET), optimize=True,
                                         verbose=False)
                prog.save(str(path))
            else:
                torch.onnx.export(module, args, str(path), dynamo=False, opset_version=config.opset,
                                  input_names=input_names, output_names=spec.output_names,
                                  dynamic_axes={**spec.dynamic_axes(), **out_axes},
                                  do_constant_folding=config.constant_folding)
    except Exception as exc:  # noqa: BLE001 - exporters raise anything; we report one line
        msg = _first_line(exc)
        hint = "try --exporter dynamo" if exporter == "torchscript" else "try --exporter torchscript"
        if "Unsupported" in msg or "not supported" in msg.lower():
            hint = f"an operator is not supported at opset {config.opset}: try a newer --opset, or {hint}"
        raise ExportError(f"exporting tower {tower.name!r} to ONNX failed: {msg}", hint=hint) from None
    _check_onnx(path)


def _script_target(torch: Any, module: Any, args: tuple, spec: Any) -> tuple[Any, tuple, list[str]]:
    """A loaded TorchScript model is exported as itself (tracing into it through a wrapper fails),
    with the inputs in its forward's order."""
    inner = getattr(module, "inner", None)
    if getattr(module, "_fn", None) is not None or not isinstance(inner, torch.jit.ScriptModule):
        return module, args, spec.input_names
    try:
        names = [a.name for a in inner.forward.schema.arguments[1:]]
    except AttributeError:
        return module, args, spec.input_names
    if sorted(names) != sorted(spec.input_names):
        return module, args, spec.input_names
    by_name = dict(zip(spec.input_names, args))
    return inner, tuple(by_name[n] for n in names), names


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


def torch_export_dims(torch: Any, spec: Any, min_batch: int = 1) -> tuple:
    """``torch.export`` dynamic shapes from the spec's symbolic dims: one ``{axis: Dim}`` per input, in spec
    order. ``min_batch=2`` keeps ``batch`` symbolic where a traced batch of 1 would be specialised."""
    dims = {d: torch.export.Dim(d, min=max(min_batch if d == "batch" else 1, lo), max=hi)
            for d, (lo, hi) in spec.dims.items()}
    return tuple({k: dims[d] for k, d in enumerate(i.shape) if isinstance(d, str)} for i in spec.inputs)


@contextlib.contextmanager
def _no_mha_fastpath(torch: Any):
    """nn.TransformerEncoderLayer's inference fast path (_transformer_encoder_layer_fwd) has no ONNX form."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


_EXPORT_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch.fx.experimental.symbolic_shapes")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    """The informative line of an exporter error (the dynamo exporter buries it under a summary header)."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    if "## Exception summary" in lines:
        after = lines[lines.index("## Exception summary") + 1:]
        if after:
            return re.sub(r"^<class '[\w.]+'>:\s*", "", after[0])[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _check_onnx(path: Path) -> None:
    onnx = require("onnx")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - checker raises ValidationError and others
        raise ExportError(f"the exported ONNX file is invalid: {_first_line(exc)}",
                          hint="try another --opset or --exporter") from None


class OnnxExportPass(Pass):
    name: ClassVar[str] = "export_onnx"
    config_cls: ClassVar[type[PassConfig]] = OnnxExportConfig
    accepts: ClassVar[tuple[str, ...]] = ("torch",)
    produces: ClassVar[str] = "onnx"

    def run(self, model: LoadedModel, config: OnnxExportConfig, ctx: RunContext, workdir: Path) -> Manifest:
        towers = model.select(config.towers)
        artifacts = []
        for tower in towers:
            rel = f"{tower.name}.onnx"
            exporter, figures = export_and_verify(tower, workdir / rel, config, ctx)
            opset = max(config.opset, DYNAMO_MIN_OPSET) if exporter == "dynamo" else config.opset
            artifacts.append(Artifact(kind="onnx", tower=tower.name, path=rel, precision="fp32",
                                      io_spec=tower.spec.to_dict(), verification=figures,
                                      details={"opset": opset, "exporter": exporter},
                                      **describe_file(workdir, rel)))
        return Manifest(pass_name=self.name, config=config.model_dump(mode="json"),
                        source=source_info(model), versions=package_versions(), artifacts=artifacts)


def export_and_verify(tower: Tower, path: Path, config: OnnxExportConfig, ctx: RunContext) -> tuple[str, dict]:
    """Export + verify one tower; with ``exporter="auto"`` fall back to dynamo when TorchScript fails.

    Returns (exporter used, verification figures).
    """
    from ...model.loaders import load_onnx_file

    candidates = ["torchscript", "dynamo"] if config.exporter == "auto" else [config.exporter]
    failures: list[MmdkError] = []
    for exporter in candidates:
        ctx.log(f"exporting tower {tower.name!r} to ONNX ({exporter})")
        try:
            export_tower_onnx(tower, path, config, seed=ctx.seed, exporter=exporter)
            exported = load_onnx_file(path, spec=tower.spec, tower=tower.name).towers[tower.name]
            ctx.log(f"verifying {path.name} against torch")
            sizes = tower.spec.verification_sizes(config.verify_max_batch)
            return exporter, verify_tower(tower, exported, sizes, config.min_cosine, seed=ctx.seed)
        except (ExportError, VerificationError) as exc:
            failures.append(exc)
            path.unlink(missing_ok=True)
            if exporter != candidates[-1]:
                ctx.log(f"{exporter} export did not pass ({exc.message}); trying {candidates[-1]}")
    if len(failures) == 1:
        raise failures[0]
    text = " ".join(f.message for f in failures)
    hint = failures[-1].hint
    if "not supported" in text or "No ONNX function" in text:
        hint = (f"the model uses an operator ONNX cannot express: rewrite that part of the model, or try a "
                f"newer --opset (now {config.opset})")
    raise type(failures[-1])(
        f"tower {tower.name!r}: every exporter failed — "
        + "; ".join(f"{c}: {f.message}" for c, f in zip(candidates, failures)), hint=hint)


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
