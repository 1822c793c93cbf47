"""Read a tower's I/O spec from an ONNX graph (torch-free)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .._lazy import require
from ..errors import CheckpointError
from .iospec import IOSpec

_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "bool"}
_TEXT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "text", "token")
_IMAGE_NAMES = ("pixel", "image", "img", "video", "frame")
_AUDIO_NAMES = ("audio", "input_values", "input_features", "wave", "mel", "spectro")


def guess_modality(name: str) -> str:
    low = name.lower()
    if any(k in low for k in _TEXT_NAMES):
        return "text"
    if any(k in low for k in _AUDIO_NAMES):
        return "audio"
    if any(k in low for k in _IMAGE_NAMES):
        return "image"
    return "generic"


def load_onnx_model(path: str | Path, load_external_data: bool = False) -> Any:
    onnx = require("onnx")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p} does not exist", hint="check the path")
    try:
        return onnx.load(str(p), load_external_data=load_external_data)
    except Exception as exc:  # onnx raises DecodeError / google.protobuf errors with no common base
        raise CheckpointError(f"{p} is not a readable ONNX file ({type(exc).__name__})",
                              hint="re-export it; the file may be truncated") from None


def spec_from_onnx(path: str | Path, model: Any = None) -> IOSpec:
    """Inputs (dtype, shape with symbolic dims, modality guess, integer vocab range) and outputs."""
    m = model if model is not None else load_onnx_model(path)
    g = m.graph
    init_names = {i.name for i in g.initializer}
    vocab = _embedding_vocab_sizes(g)
    inputs = []
    dims: dict[str, list[int]] = {}
    for vi in g.input:
        if vi.name in init_names:
            continue
        tt = vi.type.tensor_type
        shape: list[Any] = []
        for k, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
            else:
                sym = _identifier(d.dim_param) if d.dim_param else f"{_identifier(vi.name)}_dim{k}"
                shape.append(sym)
                dims.setdefault(sym, [1, 8])
        dtype = _ONNX_DTYPES.get(tt.elem_type)
        if dtype is None:
            raise CheckpointError(f"{path}: input {vi.name!r} has ONNX element type {tt.elem_type}, unsupported")
        entry: dict[str, Any] = {"name": vi.name, "modality": guess_modality(vi.name), "dtype": dtype,
                                 "shape": shape}
        if dtype.startswith("int") or dtype == "uint8":
            if "mask" in vi.name:
                entry["range"] = [1, 2]
            elif "type_ids" in vi.name:
                entry["range"] = [0, 1]
            else:
                entry["range"] = [0, vocab.get(vi.name, 100)]
        inputs.append(entry)
    outputs = [{"name": o.name} for o in g.output]
    return IOSpec.model_validate({"inputs": inputs, "outputs": outputs, "dims": dims})


def _identifier(s: str) -> str:
    out = re.sub(r"\W+", "_", s).strip("_") or "dim"
    return out if out[0].isalpha() or out[0] == "_" else f"d_{out}"


def _embedding_vocab_sizes(g: Any) -> dict[str, int]:
    """Map integer graph inputs to the row count of the embedding table they index (Gather data)."""
    init_rows = {i.name: i.dims[0] for i in g.initializer if len(i.dims) >= 1}
    producers = {o: n for n in g.node for o in n.output}
    graph_inputs = {vi.name for vi in g.input}

    def source(name: str) -> str:
        seen = 0
        while name in producers and producers[name].op_type in ("Cast", "Identity", "Reshape", "Flatten") and seen < 8:
            name = producers[name].input[0]
            seen += 1
        return name

    out: dict[str, int] = {}
    for n in g.node:
        if n.op_type == "Gather" and len(n.input) >= 2 and n.input[0] in init_rows:
            src = source(n.input[1])
            if src in graph_inputs:
                out[src] = max(out.get(src, 0), int(init_rows[n.input[0]]))
    return out


def onnx_parameter_count(path: str | Path) -> int:
    import math

    m = load_onnx_model(path)
    return int(sum(math.prod(i.dims) for i in m.graph.initializer))


def onnx_precision(path: str | Path) -> str:
    """'int8' if the graph holds quantize/dequantize or integer matmuls, 'fp16' if float16 weights, else 'fp32'."""
    m = load_onnx_model(path)
    ops = {n.op_type for n in m.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear",
              "QLinearConv", "ConvInteger"}:
        return "int8"
    if any(i.data_type == 10 for i in m.graph.initializer):
        return "fp16"
    return "fp32"
