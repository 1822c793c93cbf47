"""``--backend nncf``: INT8 for OpenVINO with NNCF (extra ``openvino``). Torch-free for ONNX input.

Per quantized tower: the FP32 ONNX (torch towers go through the verified ``export_onnx`` sub-step) is read by
OpenVINO and quantized with ``nncf.quantize`` on the *same* calibration batches as the ONNX Runtime path
(``data/calib.py``: paired multimodal manifests, ``.npz``, folders of ``.npy``), with NNCF's defaults: the
``transformer`` model type for graphs with attention (SmoothQuant + mixed preset), fast bias correction.

Accuracy-aware with an accuracy budget (``cosine>=X``, optionally ``TOWER:``): ``nncf.quantize_with_accuracy_control``
with the budget as the allowed absolute drop of the mean output cosine vs FP32 on the held-out batches (FP32
scores 1.0), which reverts the worst quantizer groups to float until the budget holds. Before it, mmdk tries
its own step: the MLP down-projections after GELU kept in float (``gelu_out_float``). ``nncf_ignored_types``
keeps whole op types in float (e.g. ``MatMul`` of attention in real-weight text towers).

Output: ``<tower>.xml`` + ``.bin`` (kind ``openvino``, precision ``int8``) verified against FP32 on held-out data,
compiled as the ``openvino`` bench backend compiles it (its inference precision for the float parts recorded);
unselected towers are copied as FP32 ONNX.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..._lazy import require
from ..._quiet import quiet
from ...artifacts import Artifact, Manifest, package_versions
from ...errors import BudgetError, DataError, UserInputError, VerificationError
from ..base import RunContext
from ..export.onnx import source_info
from .config import DEFAULT_MIN_COSINE
from .evaluate import Outputs, TowerEval, check_budgets, output_drift, run_outputs

_ATTENTION_OPS = ("Softmax", "ScaledDotProductAttention")


def ov_outputs(compiled: Any, names: list[str], spec_inputs: list[str], batches: list[dict[str, np.ndarray]],
               ranks: Optional[list[Optional[int]]] = None) -> Outputs:
    """Outputs of a compiled OpenVINO model on each batch, keyed like the FP32 ONNX outputs (``ranks``: the
    model's declared output ranks, see ``fit_rank``; default: the FP32 outputs' own, read from the model)."""
    from ...runtime.backends.openvino import OpenVINOBackend, fit_rank

    port_in = [OpenVINOBackend._port_name(p, spec_inputs) for p in compiled.inputs]
    port_out = [OpenVINOBackend._port_name(p, names) for p in compiled.outputs]
    req = compiled.create_infer_request()
    ranks = ranks or [None] * len(port_out)
    acc: Outputs = {n: [] for n in names}
    for b in batches:
        res = req.infer({k: np.ascontiguousarray(b[n]) for k, n in enumerate(port_in)})
        for n, port, rank in zip(port_out, compiled.outputs, ranks):
            if n in acc:
                a = fit_rank(np.array(res[port]), rank)
                acc[n].append(a.astype(np.float32, copy=False) if a.dtype.kind == "f" else a)
    return acc


def is_transformer(ov_model: Any) -> bool:
    return any(op.get_type_name() in _ATTENTION_OPS for op in ov_model.get_ops())


def gelu_output_matmuls(ov_model: Any, depth: int = 6) -> list[str]:
    """MatMuls fed by a GELU (``Gelu`` or the ``Erf`` form) without another MatMul between: the MLP
    down-projections, whose inputs carry the activation outliers that make static INT8 lose accuracy on
    real-weight text encoders (all-MiniLM-L6-v2: mean cosine 0.990 -> 0.998 with these 6 kept in float)."""
    out = []
    for op in ov_model.get_ops():
        if op.get_type_name() != "MatMul":
            continue
        front = [op.input_value(0).get_node()]
        for _ in range(depth):
            if any(n.get_type_name() in ("Erf", "Gelu") for n in front):
                out.append(op.get_friendly_name())
                break
            front = [i.get_node() for n in front if n.get_type_name() not in ("MatMul", "Parameter")
                     for i in n.input_values() if i.get_node().get_type_name() != "Constant"]
    return out


def figures(teval: TowerEval, xml: Path, spec: Any, threads: int = 1) -> dict[str, Any]:
    """Held-out drift vs FP32 (ONNX Runtime) of the IR compiled like the bench backend runs an int8 tower."""
    from ...runtime.backends.openvino import compile_tower

    compiled, inf_prec, ranks = compile_tower(xml, "int8", threads)
    names = list(teval.ref_holdout)
    held = output_drift(teval.ref_holdout, ov_outputs(compiled, names, spec.input_names, teval.holdout, ranks))
    one = output_drift(teval.ref_single, ov_outputs(compiled, names, spec.input_names, teval.single, ranks))
    n = sum(int(a.shape[0]) for a in next(iter(teval.ref_holdout.values())))
    return {"data": teval.data_kind, "n_samples": n, "cosine": round(held["cosine"], 6),
            "cosine_min": round(min(held["cosine_min"], one["cosine_min"]), 6),
            "max_abs_error": float(max(held["max_abs_error"], one["max_abs_error"])),
            "finite": bool(held["finite"] and one["finite"]), "batch1_cosine": round(one["cosine"], 6),
            "inference_precision": inf_prec, "outputs": held["outputs"]}


def run_nncf(model: Any, config: Any, plans: dict, ctx: RunContext, workdir: Path) -> Manifest:
    nncf = require("nncf", extra="openvino", purpose="NNCF quantization for OpenVINO")
    ov = require("openvino", extra="openvino", purpose="the OpenVINO runtime")
    from ...runtime.backends.openvino import read_model_rewritten
    from ..export.openvino import ir_files_digest, onnx_towers
    from .evaluate import load_tower_data

    active = [n for n, p in plans.items() if p.precision != "fp32"]
    for n in active:
        if plans[n].precision != "int8" or model.towers[n].kind not in ("torch", "onnx"):
            raise UserInputError(f"--backend nncf quantizes torch or ONNX towers to int8; tower {n!r} is "
                                 f"{model.towers[n].kind} / {plans[n].precision}",
                                 hint="use --backend ort for fp16; bf16 is mmdk export --target openvino --precision bf16")
    budgets = config.budgets()
    if any(b.metric != "cosine" for b in budgets):
        raise UserInputError("--backend nncf supports 'cosine>=X' budgets only", hint="use --backend ort for task budgets")
    if config.calib_data is None:
        raise DataError("--backend nncf (static INT8) needs calibration data; random data is never used",
                        hint="pass --calib-data (JSONL manifest, .npz or folder of .npy named like the inputs)")
    data, _ = load_tower_data(model, config, ctx, active)
    rows: list[dict[str, Any]] = []
    artifacts = []
    with tempfile.TemporaryDirectory(prefix="mmdk-nncf-") as scratch:
        fp32, _record = onnx_towers(model, list(model.towers), _onnx_cfg(), ctx, Path(scratch) / "onnx")
        for name, tower in model.towers.items():
            spec = tower.spec
            if name not in active:
                rel = f"{name}.onnx"
                shutil.copyfile(fp32[name].path, workdir / rel)
                artifacts.append(Artifact(kind="onnx", tower=name, path=rel, precision="fp32", io_spec=spec.to_dict(),
                                          verification={"copied": True, "precision": "fp32"},
                                          **ir_files_digest(workdir / rel)))
                continue
            td = data.towers[name]
            teval = TowerEval(name, Path(fp32[name].path), td.calib, td.holdout, "held-out calibration data")
            # exact rewrite: OpenVINO's INT8 Conv runs a patch embedding far below its INT8 MatMul throughput
            # (measured in benchmarks/ov_int8_headroom.py)
            ov_model, patches = read_model_rewritten(ov.Core(), fp32[name].path, patch_matmul=config.nncf_patch_matmul)
            transformer = is_transformer(ov_model)
            tower_budgets = [b for b in budgets if b.tower in (None, name)]
            kwargs: dict[str, Any] = {"subset_size": len(td.calib)}  # items of a list dataset: batches
            if transformer:
                kwargs["model_type"] = nncf.ModelType.TRANSFORMER
            if config.nncf_smooth_quant is False:
                from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                                   AdvancedSmoothQuantParameters)

                kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
                    smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=-1, matmul=-1))
            if config.nncf_ignored_types:
                kwargs["ignored_scope"] = nncf.IgnoredScope(types=list(config.nncf_ignored_types), validate=False)
            # the graph's own inputs: an input the graph never reads (CLAP's is_longer) is not a port of the IR
            ports = {n for i in ov_model.inputs for n in i.get_names()}
            calib = nncf.Dataset(td.calib, _transform([n for n in spec.input_names if n in ports]))
            ctx.log(f"NNCF: quantizing tower {name!r}" + (" (accuracy-aware)" if tower_budgets else ""))
            rel = f"{name}.xml"
            tried: list[dict[str, Any]] = []
            ladder = ["defaults", "gelu_out_float", "accuracy_control", "ignore_matmul"] if tower_budgets else ["defaults"]
            for how in ladder:
                if how == "ignore_matmul" and "MatMul" in config.nncf_ignored_types:
                    continue
                if how == "gelu_out_float" and not gelu_output_matmuls(ov_model):
                    continue
                with quiet("nncf", "", streams=True):
                    qmodel = _quantize_once(nncf, ov_model, calib, td, kwargs, how, Path(fp32[name].path), spec,
                                            tower_budgets, config)
                ov.save_model(qmodel, str(workdir / rel), compress_to_fp16=False)
                figs = figures(teval, workdir / rel, spec)
                quantizers = sum(op.get_type_name() in ("FakeQuantize", "FakeConvert") for op in qmodel.get_ops())
                holds = quantizers > 0 and all(r["holds"] for r in check_budgets(tower_budgets, {name: figs}, None, [name]))
                tried.append({"how": how, "cosine": figs["cosine"], "cosine_min": figs["cosine_min"],
                              "quantizers": quantizers, "holds": holds})
                ctx.log(f"NNCF {how}: cosine {figs['cosine']:.5f}, {quantizers} quantizers"
                        + ("" if holds else " (budget not met)" if quantizers else " (nothing left in INT8)"))
                if holds:
                    break
            if not figs["finite"]:
                raise VerificationError(f"tower {name!r} produces NaN/Inf after NNCF INT8")
            floor = config.min_cosine if config.min_cosine is not None else \
                (None if tower_budgets else DEFAULT_MIN_COSINE["int8"])
            if floor is not None and figs["cosine"] < floor:
                raise VerificationError(f"tower {name!r} drifted from FP32 after NNCF INT8: cosine {figs['cosine']:.4f} "
                                        f"< {floor}", hint="add --accuracy-budget 'cosine>=X' (accuracy control) or "
                                                           "--nncf-ignored-types MatMul")
            if not tried[-1]["quantizers"]:
                raise BudgetError(f"NNCF left nothing of tower {name!r} in INT8 (every quantizer reverted to meet the budget)",
                                  hint="relax the budget, or keep this tower in FP32 / BF16")
            got = check_budgets(tower_budgets, {name: figs}, None, [name])
            failed = [r for r in got if not r["holds"]]
            if failed:
                raise BudgetError(f"NNCF accuracy control could not meet {failed[0]['budget']} on tower {name!r} "
                                  f"(reached {failed[0]['figure']:.6f})",
                                  hint="relax the budget, add --nncf-ignored-types, or use --backend ort")
            rows += got
            details = {"backend": f"nncf {nncf.__version__}", "runtime": "openvino",
                       "openvino": ov.__version__.split("-")[0], "plan": plans[name].describe(),
                       "model_type": "transformer" if transformer else "default", "subset_size": kwargs["subset_size"],
                       "accuracy_aware": bool(tower_budgets), "tried": tried, "chosen": tried[-1]["how"],
                       "ignored_types": list(config.nncf_ignored_types),
                       "smooth_quant": config.nncf_smooth_quant if config.nncf_smooth_quant is not None else "nncf default",
                       "patch_convs_as_matmul": patches,
                       "inference_precision": figs["inference_precision"], "calibration_data": td.details}
            artifacts.append(Artifact(kind="openvino", tower=name, path=rel, precision="int8", io_spec=spec.to_dict(),
                                      verification=figs, details=details, **ir_files_digest(workdir / rel)))
    return Manifest(pass_name="quantize", config=config.model_dump(mode="json"), source=source_info(model),
                    versions=package_versions("torch", "onnx", "onnxruntime", "openvino", "nncf"), artifacts=artifacts,
                    metrics={"budgets": rows})


def _quantize_once(nncf: Any, ov_model: Any, calib: Any, td: Any, kwargs: dict[str, Any], how: str, src: Path,
                   spec: Any, budgets: list, config: Any) -> Any:
    """One NNCF quantization: its defaults, its accuracy control against the cosine budget, or MatMuls in float."""
    if how == "defaults":
        return nncf.quantize(ov_model, calib, **kwargs)
    if how == "gelu_out_float":
        names = gelu_output_matmuls(ov_model) + [n for n in getattr(kwargs.get("ignored_scope"), "names", [])]
        scope = nncf.IgnoredScope(names=names, types=list(config.nncf_ignored_types), validate=False)
        return nncf.quantize(ov_model, calib, **{**kwargs, "ignored_scope": scope})
    if how == "ignore_matmul":
        types = sorted(set(config.nncf_ignored_types) | {"MatMul"})
        return nncf.quantize(ov_model, calib, **{**kwargs, "ignored_scope": nncf.IgnoredScope(types=types, validate=False)})
    floor = max(b.value for b in budgets)

    def validate(compiled: Any, batches: Any) -> float:
        """Mean output cosine vs FP32 on ``batches`` (NNCF also calls it per item to rank quantizer groups)."""
        batches = list(batches)
        ref = run_outputs(src, batches)
        ranks = [ref[n][0].ndim if ref[n] else None for n in ref]  # NNCF compiles it: the FP32 outputs' ranks
        return float(output_drift(ref, ov_outputs(compiled, list(ref), spec.input_names, batches, ranks))["cosine"])

    ac_kwargs = dict(kwargs)
    if "advanced_parameters" in ac_kwargs:  # the same options, under accuracy control's name
        ac_kwargs["advanced_quantization_parameters"] = ac_kwargs.pop("advanced_parameters")
    return nncf.quantize_with_accuracy_control(ov_model, calib, nncf.Dataset(td.holdout), validation_fn=validate,
                                               max_drop=max(1e-6, 1.0 - floor), drop_type=nncf.DropType.ABSOLUTE,
                                               **ac_kwargs)


def _transform(input_names: list[str]) -> Any:
    def fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {n: np.ascontiguousarray(batch[n]) for n in input_names}
    return fn


def _onnx_cfg() -> Any:
    from ..export.openvino import OpenVINOExportConfig

    return OpenVINOExportConfig()
