"""INT8 with ONNX Runtime's quantization tools: static QDQ (calibrated once) and dynamic.

``Int8Quantizer`` holds one tower's FP32 graph and options; ``quantize(exclude, dst)`` can be called many
times with different FP32 fallbacks (the mixed-precision search does) - static ranges are computed on
the first call and read back from a calibration cache afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..._lazy import require
from ..._quiet import quiet
from ...data.calib import calibration_reader
from ...errors import DataError, ExportError, UserInputError
from .config import QuantizeConfig, TowerPlan
from .graph import Candidate, candidates, node_modalities, opset_version, split_by_modality

_CALIB = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def quiet_ort() -> Any:
    """ORT's quantizer prints progress to stdout and warns through logging; keep the CLI clean."""
    return quiet("", streams=True)


def prepare_fp32(src: Path, dst: Path, min_opset: int = 0) -> dict[str, Any]:
    """Copy ``src`` to ``dst`` after ORT's quantization pre-processing (shape inference, basic folding).

    Symbolic shape inference is skipped (it fails on CLIP text / BERT exports). When pre-processing itself
    fails the graph is used as exported, with plain ONNX shape inference. ``min_opset`` upgrades older graphs.
    """
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization.preprocess import quant_pre_process

    info: dict[str, Any] = {"preprocessed": True}
    model = onnx.load(str(src))
    opset = opset_version(model)
    if opset < min_opset:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, min_opset)
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            raise UserInputError(f"{src.name} uses opset {opset}; converting it to opset {min_opset} failed: "
                                 f"{str(exc).splitlines()[0][:160]}", hint="re-export with --opset 17") from None
        info["opset_upgraded"] = [opset, min_opset]
        upgraded = dst.with_name(dst.stem + ".opset.onnx")
        onnx.save(model, str(upgraded))
        src = upgraded
    try:
        with quiet_ort():
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation; fall back to the raw graph
        info = {"preprocessed": False, "preprocess_error": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}
        model = onnx.load(str(src))
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - shape inference is best-effort here
            pass
        onnx.save(model, str(dst))
    return info


class NothingToQuantizeError(UserInputError):
    """A tower has no node the chosen INT8 method quantizes (dynamic INT8 on a conv-only CNN tower)."""


class Int8Quantizer:
    """One tower's INT8 quantization with fixed options; ``quantize(exclude)`` varies only the FP32 nodes."""

    def __init__(self, fp32_path: Path, plan: TowerPlan, method: str, config: QuantizeConfig,
                 calib_batches: Optional[Sequence[dict[str, np.ndarray]]], workdir: Path):
        onnx = require("onnx")
        self.fp32_path = Path(fp32_path)
        self.plan = plan
        self.method = method
        self.config = config
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.op_types = plan.op_types_for(method)
        self.model = onnx.load(str(self.fp32_path))
        if method in ("dynamic", "hybrid") and any(n.op_type == "Gemm" for n in self.model.graph.node):
            self._gemm_as_matmul(plan.tower)
        self.input_names = [i.name for i in self.model.graph.input]
        self.candidates: list[Candidate] = candidates(self.model, self.op_types, "static" if method == "hybrid" else method,
                                                      plan.matmul_const_b_only)
        self.static_nodes: list[str] = []
        self.dynamic_nodes: list[str] = []
        if method == "hybrid":  # one tower, two modalities: static QDQ for the image branch, dynamic for text
            mods = node_modalities(self.model, dict(plan.input_modalities))
            self.static_nodes, self.dynamic_nodes = split_by_modality(self.candidates, mods)
        self.calib_batches = list(calib_batches or [])
        self.cache_path = self.workdir / f"{plan.tower}.{method}.calib.json"
        if method in ("static", "hybrid") and not self.calib_batches:
            raise DataError(f"static INT8 of tower {plan.tower!r} needs calibration data, and none was given",
                            hint="pass --calib-data (JSONL manifest, .npz or folder of .npy), or use --method dynamic")
        if not self.candidates:
            raise NothingToQuantizeError(f"tower {plan.tower!r} has no {'/'.join(self.op_types)} nodes to quantize "
                                 f"with {method} INT8", hint="choose other --op-types, or --precision fp16")
        self.calibration_seconds: Optional[float] = None

    def _gemm_as_matmul(self, tower: str) -> None:
        """ORT's dynamic quantizer rewrites every Gemm as MatMul (+ Add) named ``<gemm>_MatMul`` before it
        quantizes: node lists naming the Gemm then match nothing (the node silently stays FP32), and in a hybrid
        graph it also splits the static stage's QDQ Gemms. Do that rewrite once, up front, on the FP32 graph,
        so candidates, exclusions and the sensitivity surgery all use the names that get quantized."""
        onnx = require("onnx")
        from onnxruntime.quantization.onnx_model import ONNXModel

        wrapped = ONNXModel(self.model)
        wrapped.replace_gemm_with_matmul()
        wrapped.remove_unused_constant()
        self.fp32_path = self.workdir / f"{tower}.{self.method}.fp32.onnx"
        onnx.save(wrapped.model, str(self.fp32_path))
        self.model = onnx.load(str(self.fp32_path))

    # ------------------------------------------------------------------------------------------------
    def quantize(self, exclude: Sequence[str], dst: Path) -> Path:
        dst = Path(dst)
        try:
            with quiet_ort():
                if self.method == "dynamic":
                    self._dynamic(list(exclude), dst)
                elif self.method == "hybrid":
                    self._hybrid(list(exclude), dst)
                else:
                    self._static(list(exclude), dst)
        except (ValueError, RuntimeError, KeyError, AssertionError, TypeError) as exc:
            msg = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
            hint = "use --op-types MatMul,Gemm (attention masks hold -inf)" if "finite" in msg else \
                "try --calibration minmax or --method dynamic"
            raise ExportError(f"ONNX Runtime could not quantize tower {self.plan.tower!r} ({self.method}): {msg}",
                              hint=hint) from None
        return dst

    def _dynamic(self, exclude: list[str], dst: Path, src: Optional[Path] = None,
                 nodes: Optional[list[str]] = None) -> None:
        onnx = require("onnx")
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src or self.fp32_path), str(dst), per_channel=self.plan.per_channel,
                         weight_type=QuantType.QUInt8 if self.plan.weight_type == "uint8" else QuantType.QInt8, op_types_to_quantize=[o for o in self.op_types if o != "Conv"]
                         if nodes is not None else list(self.op_types), nodes_to_quantize=nodes, nodes_to_exclude=exclude,
                         reduce_range=self.plan.reduce_range,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})

    def _hybrid(self, exclude: list[str], dst: Path) -> None:
        """Static QDQ over the image-branch nodes, then dynamic INT8 over the text-fed MatMul/Gemm of the result.

        ORT reads an empty ``nodes_to_quantize`` as "all nodes": a side with nothing left is skipped.
        """
        static = [n for n in self.static_nodes if n not in exclude]
        dynamic = [n for n in self.dynamic_nodes if n not in exclude]
        mid = dst.with_name(dst.stem + ".static.onnx")
        if static:
            self._static(exclude, mid, nodes=static)
        else:
            shutil.copyfile(self.fp32_path, mid)
        if dynamic:
            self._dynamic(exclude, dst, src=mid, nodes=dynamic)
            mid.unlink(missing_ok=True)
        else:
            mid.replace(dst)

    def static_options(self) -> dict[str, Any]:
        plan = self.plan
        opts: dict[str, Any] = {"MatMulConstBOnly": plan.matmul_const_b_only, "WeightSymmetric": plan.weight_type == "int8",
                                "ActivationSymmetric": plan.symmetric_activations}
        if self.config.calibration == "percentile":
            opts["CalibPercentile"] = self.config.percentile
        if plan.symmetric_activations:
            opts["CalibTensorRangeSymmetric"] = True
        if not plan.quantize_bias:
            opts["QuantizeBias"] = False
        n = len(self.calib_batches)
        stride = max(d for d in range(1, min(4, n) + 1) if n % d == 0)
        if stride < n:
            opts["CalibStridedMinMax"] = stride  # bounded memory: histograms/ranges merged every few batches
        return opts

    def _static(self, exclude: list[str], dst: Path, nodes: Optional[list[str]] = None) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        act = QuantType.QInt8 if self.plan.symmetric_activations else QuantType.QUInt8
        first = not self.cache_path.exists()
        t0 = time.perf_counter()
        if first and self.config.calibration == "entropy":
            self._calibrate_entropy()
        quantize_static(str(self.fp32_path), str(dst), calibration_reader(self.calib_batches, self.input_names),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(self.op_types),
                        per_channel=self.plan.per_channel, activation_type=act,
                        weight_type=QuantType.QUInt8 if self.plan.weight_type == "uint8" else QuantType.QInt8,
                        nodes_to_quantize=nodes, nodes_to_exclude=exclude, reduce_range=self.plan.reduce_range, calibrate_method=getattr(CalibrationMethod, _CALIB[self.config.calibration]),
                        calibration_cache_path=str(self.cache_path), extra_options=self.static_options())
        if first:
            self.calibration_seconds = round(time.perf_counter() - t0, 2)

    def _calibrate_entropy(self) -> None:
        """Entropy ranges computed here and cached: ``quantize_static`` does not forward ``num_bins`` and
        ORT's defaults (128 bins = 128 quantized bins) leave a single candidate threshold - the MinMax
        range (FIELD_NOTES: "Entropy gave results identical to MinMax"). 2048 bins, as TensorRT uses.
        """
        from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

        with tempfile.TemporaryDirectory(prefix="mmdk-entropy-") as tmp:
            cal = create_calibrator(self.fp32_path, list(self.op_types), str(Path(tmp) / "augmented.onnx"),
                                    calibrate_method=CalibrationMethod.Entropy,
                                    extra_options={"num_bins": 2048, "num_quantized_bins": 128,
                                                   "symmetric": self.plan.symmetric_activations})
            stride = self.static_options().get("CalibStridedMinMax", len(self.calib_batches))
            for start in range(0, len(self.calib_batches), stride):
                cal.collect_data(calibration_reader(self.calib_batches[start:start + stride], self.input_names))
            save_tensors_data(cal.compute_data(), self.cache_path)
            del cal

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"method": self.method, "op_types": list(self.op_types), "per_channel": self.plan.per_channel}
        if self.method == "hybrid":
            d.update(static_nodes=len(self.static_nodes), dynamic_nodes=len(self.dynamic_nodes),
                     split="static QDQ where only image/other inputs reach a node; dynamic for MatMul/Gemm that "
                           "text inputs reach (modality propagated from the I/O spec through the graph)")
        if self.plan.reduce_range:
            d["reduce_range"] = True
        if self.method in ("static", "hybrid"):
            d.update(format="QDQ" if self.method == "static" else "QDQ + MatMulInteger", calibration=self.config.calibration,
                     activation_type="int8 (symmetric)" if self.plan.symmetric_activations else "uint8 (asymmetric)",
                     weight_type=f"{self.plan.weight_type} (symmetric)" if self.plan.weight_type == "int8" else
                     "uint8 (asymmetric)", matmul_const_b_only=self.plan.matmul_const_b_only,
                     quantize_bias=self.plan.quantize_bias,
                     calibration_batches=len(self.calib_batches), calibration_seconds=self.calibration_seconds)
            if self.config.calibration == "percentile":
                d["percentile"] = self.config.percentile
        else:
            d.update(format="MatMulInteger (dynamic activations, uint8)",
                     weight_type="uint8" if self.plan.weight_type == "uint8" else "int8 (symmetric)")
        return d

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
