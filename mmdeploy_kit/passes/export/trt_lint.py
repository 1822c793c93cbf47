"""Readiness lint: would TensorRT's ONNX parser take this graph, and how well would it run? CPU only.

TensorRT itself cannot parse without a GPU (the parser needs a network from a ``Builder``), so the lint
checks the graph against ``trt_onnx_ops.json``: the parser's operator table per TensorRT release,
transcribed from onnx-tensorrt's ``docs/operators.md``.

Errors (the export stops with exit 4 unless ``--allow-unsupported``):
  ``unsupported-op``    an op the parser does not support (or does not list) in that release
  ``custom-domain``     an op outside the ONNX domain (needs a TensorRT plugin)
  ``constant-input``    an input the parser needs as an initializer/constant (``Slice`` axes, ``CumSum`` axis...)
  ``opset``             the graph's opset is outside what the parser handles
  ``double``            a DOUBLE tensor (TensorRT has no FP64 compute; it would clamp to FP32)
  ``qdq-zero-point``    a Q/DQ with a non-zero or non-constant zero point (TensorRT quantization is symmetric)
  ``dla-precision``     ``--dla`` with FP32 (DLA runs FP16/INT8 only)
Warnings:
  ``int64``             INT64 graph inputs/outputs (TensorRT 10 runs INT64 in few layers; int32 is cheaper)
  ``data-dependent-shape``  NonZero / NonMaxSuppression / Unique / TopK with a computed K: output sizes known
                        only at run time
  ``control-flow``      Loop / If / Scan (run as TensorRT loops/conditionals, rarely fast)
  ``dla-fallback``      with ``--dla``: nodes of op types DLA does not run; they fall back to the GPU
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from ..._lazy import require
from ...errors import ExportError

TABLE_PATH = Path(__file__).with_name("trt_onnx_ops.json")
Severity = Literal["error", "warning"]
DATA_DEPENDENT_OPS = ("NonZero", "NonMaxSuppression", "Unique", "Compress")
CONTROL_FLOW_OPS = ("Loop", "If", "Scan")
# Op types DLA (Orin / Xavier) runs, per TensorRT's "DLA supported layers" list, mapped to ONNX ops. A rule of
# thumb: layer restrictions (kernel sizes, broadcast forms) can still push a node to the GPU; the inspector
# output of a real build shows the placement.
DLA_OPS = frozenset({
    "Conv", "ConvTranspose", "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Softsign",
    "Softplus", "HardSigmoid", "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Equal", "Greater", "Less",
    "Concat", "LRN", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample",
    "BatchNormalization", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Softmax", "Abs",
    "Sin", "Cos", "Atan", "Identity", "Dropout", "QuantizeLinear", "DequantizeLinear", "Constant"})
DLA_FC_OPS = ("MatMul", "Gemm")  # only as fully connected layers: constant weights


@dataclass(frozen=True)
class Finding:
    severity: Severity
    rule: str
    message: str
    node: str = ""
    op: str = ""

    def text(self) -> str:
        where = f"{self.op} node {self.node!r}: " if self.node else (f"{self.op}: " if self.op else "")
        return f"{self.severity} [{self.rule}] {where}{self.message}"


@dataclass
class LintReport:
    tower: str
    trt_version: str
    table_version: str
    findings: list[Finding] = field(default_factory=list)
    dla: Optional[dict[str, Any]] = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def to_dict(self) -> dict[str, Any]:
        return {"tower": self.tower, "trt_version": self.trt_version, "table_version": self.table_version,
                "errors": [asdict(f) for f in self.errors], "warnings": [asdict(f) for f in self.warnings],
                "dla": self.dla}

    def raise_on_errors(self) -> None:
        if self.errors:
            first = self.errors[0]
            more = f" (+{len(self.errors) - 1} more error(s), see lint in the manifest)" if len(self.errors) > 1 else ""
            raise ExportError(f"tower {self.tower!r} is not ready for TensorRT {self.trt_version}: "
                              f"{first.text()}{more}",
                              hint="change the model or the export (e.g. --opset), or pass --allow-unsupported "
                                   "to write the bundle anyway (the engine build will likely fail)")


# ---- the table -------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _tables() -> dict[str, Any]:
    return json.loads(TABLE_PATH.read_text())["tables"]


def _vkey(v: str) -> tuple[int, int]:
    """``"10.3"`` -> (10, 3); a bare major (``"10"``) means its newest minor."""
    parts = [int(p) for p in str(v).split(".")[:2] if p.isdigit()]
    return (parts[0] if parts else 0, parts[1] if len(parts) > 1 else 99)


def table_for(trt_version: str) -> tuple[str, dict[str, Any]]:
    """(table version used, table) for ``trt_version``: the newest table at or below it, else the newest."""
    tables = _tables()
    ordered = sorted(tables, key=_vkey)
    want = _vkey(trt_version)
    below = [v for v in ordered if _vkey(v) <= want]
    chosen = below[-1] if below else ordered[0]
    return chosen, tables[chosen]


def known_versions() -> list[str]:
    return sorted(_tables(), key=_vkey)


# ---- walking the graph ---------------------------------------------------------------------------------------
def _nodes(graph: Any, prefix: str = "") -> Iterator[tuple[Any, str]]:
    for n in graph.node:
        yield n, prefix
        for a in n.attribute:
            if a.g is not None and a.g.node:
                yield from _nodes(a.g, f"{prefix}{n.name}/")
            for g in a.graphs:
                yield from _nodes(g, f"{prefix}{n.name}/")


def _constants(graph: Any) -> dict[str, Any]:
    out = {i.name: i for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t
    return out


def _opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _schema_inputs(onnx: Any, op: str, opset: int) -> list[str]:
    try:
        return [i.name for i in onnx.defs.get_schema(op, opset).inputs]
    except Exception:  # noqa: BLE001 - onnx raises SchemaError for unknown ops
        return []


def lint_model(model: Any, tower: str, trt_version: str, dla: bool = False, precision: str = "fp16") -> LintReport:
    """Check ``model`` (an ``onnx.ModelProto``) against TensorRT ``trt_version``'s parser table."""
    onnx = require("onnx")
    from onnx import numpy_helper

    table_version, table = table_for(trt_version)
    rep = LintReport(tower=tower, trt_version=trt_version, table_version=table_version)
    add = rep.findings.append
    graph = model.graph
    opset = _opset(model)
    lo, hi = table.get("opset_min"), table.get("opset_max")
    if lo and hi and not lo <= opset <= hi:
        add(Finding("error", "opset", f"graph opset {opset} is outside TensorRT {table_version}'s parser range "
                                      f"[{lo}, {hi}]; re-export with --opset {min(max(opset, lo), hi)}"))
    consts = _constants(graph)
    double = onnx.TensorProto.DOUBLE
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.tensor_type.elem_type == double:
            add(Finding("error", "double", f"tensor {vi.name!r} is DOUBLE; cast it to float32 in the model"))
    for init in graph.initializer:
        if init.data_type == double:
            add(Finding("error", "double", f"initializer {init.name!r} is DOUBLE; store it as float32"))
    for vi in list(graph.input) + list(graph.output):
        if vi.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            add(Finding("warning", "int64", f"graph {'input' if vi in graph.input else 'output'} {vi.name!r} is "
                                            "INT64; TensorRT 10 runs few layers in INT64 (int32 is cheaper)"))
    ops = table["ops"]
    need_const = table.get("constant_inputs", {})
    dla_total, dla_gpu = 0, []
    for node, prefix in _nodes(graph):
        name = f"{prefix}{node.name}" or f"{prefix}<unnamed {node.op_type}>"
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            add(Finding("error", "custom-domain", f"op of domain {node.domain!r} needs a TensorRT plugin", name, op))
            continue
        entry = ops.get(op)
        if entry is None or not entry["supported"]:
            why = "is not supported" if entry is not None else "is not in the parser's operator table"
            add(Finding("error", "unsupported-op", f"{op} {why} by TensorRT {table_version}'s ONNX parser", name, op))
        for want in need_const.get(op, []):
            names = _schema_inputs(onnx, op, opset)
            if want in names:
                k = names.index(want)
                if k < len(node.input) and node.input[k] and node.input[k] not in consts:
                    add(Finding("error", "constant-input", f"input {want!r} ({node.input[k]}) must be an initializer "
                                                           "or constant for TensorRT's parser", name, op))
        if op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = consts.get(node.input[2])
            if zp is None:
                add(Finding("error", "qdq-zero-point", "zero point is computed at run time; TensorRT needs a "
                                                       "constant zero point of 0", name, op))
            elif numpy_helper.to_array(zp).any():
                add(Finding("error", "qdq-zero-point", "non-zero zero point (asymmetric quantization); TensorRT "
                                                       "quantization is symmetric: re-quantize with --preset tensorrt",
                            name, op))
        if op == "Cast" and any(a.name == "to" and a.i == double for a in node.attribute):
            add(Finding("error", "double", "casts to DOUBLE", name, op))
        if op in DATA_DEPENDENT_OPS or (op == "TopK" and len(node.input) > 1 and node.input[1] not in consts):
            add(Finding("warning", "data-dependent-shape", "output shape depends on the data (sized at run time)",
                        name, op))
        if op in CONTROL_FLOW_OPS:
            add(Finding("warning", "control-flow", "control flow runs as a TensorRT loop/conditional", name, op))
        if dla and not prefix and op != "Constant":
            dla_total += 1
            ok = op in DLA_OPS or (op in DLA_FC_OPS and len(node.input) > 1 and node.input[1] in consts)
            if not ok:
                dla_gpu.append((name, op))
    if dla:
        if precision == "fp32":
            add(Finding("error", "dla-precision", "DLA runs FP16 and INT8 only; use --precision fp16 or int8"))
        by_op: dict[str, int] = {}
        for _, op in dla_gpu:
            by_op[op] = by_op.get(op, 0) + 1
        if dla_gpu:
            add(Finding("warning", "dla-fallback", f"{len(dla_gpu)} of {dla_total} nodes have op types DLA does not "
                                                   f"run and fall back to the GPU: "
                                                   + ", ".join(f"{o} x{c}" for o, c in sorted(by_op.items()))))
        rep.dla = {"nodes": dla_total, "gpu_fallback_nodes": len(dla_gpu),
                   "dla_eligible_fraction": round(1 - len(dla_gpu) / max(dla_total, 1), 4),
                   "gpu_fallback_by_op": by_op, "note": "by op type; the engine inspector JSON shows real placement"}
    return rep


def lint_file(path: str | Path, tower: str, trt_version: str, dla: bool = False, precision: str = "fp16") -> LintReport:
    onnx = require("onnx")
    return lint_model(onnx.load(str(path)), tower, trt_version, dla=dla, precision=precision)
