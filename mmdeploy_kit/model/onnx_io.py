"""Read a tower's I/O spec from an ONNX graph (torch-free)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional

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
    _infer_dims(g, inputs, dims, sidecar_config(Path(path)) if path else {})
    return IOSpec.model_validate({"inputs": inputs, "outputs": outputs, "dims": dims})


# ---- what the graph (or the files beside it) says about its symbolic dims ---------------------------------
def sidecar_config(path: Path) -> dict[str, Any]:
    """``config.json`` / ``preprocessor_config.json`` next to an ONNX file (Optimum and HF exports ship them):
    image size, channels and the text length limit they state (empty where absent or unreadable)."""
    import json

    out: dict[str, Any] = {}
    for name in ("config.json", "preprocessor_config.json"):
        try:
            cfg = json.loads((path.parent / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(cfg, dict):
            continue
        vision = cfg.get("vision_config") if isinstance(cfg.get("vision_config"), dict) else cfg
        text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
        if isinstance(vision.get("image_size"), int):
            out.setdefault("image_size", (vision["image_size"], vision["image_size"]))
        if isinstance(vision.get("num_channels"), int):
            out.setdefault("channels", vision["num_channels"])
        is_text = "text_config" in cfg or "image_size" not in vision
        if is_text and isinstance(text.get("max_position_embeddings"), int):
            out.setdefault("max_seq", text["max_position_embeddings"])
        crop = cfg.get("crop_size") or cfg.get("size")
        if isinstance(crop, dict) and isinstance(crop.get("height"), int) and isinstance(crop.get("width"), int):
            out["image_size"] = (crop["height"], crop["width"])
        elif isinstance(crop, dict) and isinstance(crop.get("shortest_edge"), int) and "image_size" not in out:
            out["image_size"] = (crop["shortest_edge"], crop["shortest_edge"])
    return out


def _first_conv(g: Any, name: str) -> Optional[Any]:
    """The first Conv that ``name`` reaches through shape-preserving ops (Cast, Identity, Mul/Sub/Div normalisation)."""
    cons: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    frontier, seen = [name], set()
    while frontier:
        t = frontier.pop(0)
        for n in cons.get(t, []):
            if n.op_type == "Conv":
                return n
            if n.op_type in ("Cast", "Identity", "Mul", "Sub", "Div", "Add", "Relu") and n.name not in seen:
                seen.add(n.name)
                frontier.extend(n.output)
    return None


def _position_rows(g: Any, width: Optional[int] = None) -> list[int]:
    """Row counts of position-embedding tables (initializers named like ``position_embedding``), optionally only
    those whose last dim is ``width``."""
    rows = []
    for i in g.initializer:
        low = i.name.lower()
        if ("position" in low or "pos_embed" in low) and len(i.dims) >= 2 and (width is None or i.dims[-1] == width):
            rows.append(int(i.dims[-2]))
    return rows


def _infer_dims(g: Any, inputs: list[dict[str, Any]], dims: dict[str, list[int]], side: dict[str, Any]) -> None:
    """Fill symbolic image dims (channels, height, width) and text length limits from the graph itself: the
    first Conv's weight gives channels (and, for a patch embedding, the patch size), a ViT position-embedding
    table gives the image size, else ``config.json`` / ``preprocessor_config.json`` beside the file."""
    inits = {i.name: i for i in g.initializer}
    for entry in inputs:
        shape = entry["shape"]
        if entry["modality"] == "text" and entry["dtype"].startswith("int") and len(shape) == 2 and isinstance(shape[1], str):
            limit = side.get("max_seq") or max(_position_rows(g) or [0]) or None
            if limit and shape[1] in dims:
                dims[shape[1]] = [1, int(limit)]
            continue
        if not entry["dtype"].startswith("float") or len(shape) != 4:
            continue
        conv = _first_conv(g, entry["name"])
        w = inits.get(conv.input[1]) if conv is not None and len(conv.input) > 1 else None
        concrete: dict[int, int] = {}
        if w is not None and len(w.dims) == 4:
            group = next((a.i for a in conv.attribute if a.name == "group"), 1)
            concrete[1] = int(w.dims[1]) * int(group)
            strides = next((list(a.ints) for a in conv.attribute if a.name == "strides"), [1, 1])
            kernel = [int(w.dims[2]), int(w.dims[3])]
            if strides == kernel and kernel[0] > 1:  # a ViT patch embedding: the position table sets the grid
                for rows in _position_rows(g, int(w.dims[0])):
                    for extra in (1, 0):  # with or without a class token
                        side_len = math.isqrt(rows - extra) if rows > extra else 0
                        if side_len and side_len * side_len == rows - extra:
                            concrete.setdefault(2, side_len * kernel[0])
                            concrete.setdefault(3, side_len * kernel[1])
                            break
        if "channels" in side:
            concrete.setdefault(1, int(side["channels"]))
        if "image_size" in side:
            concrete.setdefault(2, int(side["image_size"][0]))
            concrete.setdefault(3, int(side["image_size"][1]))
        entry["modality"] = "image" if entry["modality"] == "generic" else entry["modality"]
        for k, v in concrete.items():
            if isinstance(shape[k], str):
                shape[k] = v
    used = {d for e in inputs for d in e["shape"] if isinstance(d, str)}
    for d in list(dims):
        if d not in used:
            del dims[d]


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


# ---- combined graphs: one tower per output group -----------------------------------------------------------
DUAL_ENCODER_OUTPUTS = {"vision": ("image_embeds",), "text": ("text_embeds",)}


def inputs_reaching(g: Any, outputs: list[str]) -> list[str]:
    """The graph inputs (not initializers) that ``outputs`` depend on, in graph-input order."""
    producers = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    need, seen, stack = set(), set(), list(outputs)
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        n = producers.get(t)
        if n is None:
            if t not in inits:
                need.add(t)
            continue
        stack.extend(i for i in n.input if i)
        for a in n.attribute:  # If/Loop bodies may read outer-scope tensors
            for sub in list(a.g.node if a.HasField("g") else []) + [x for gr in a.graphs for x in gr.node]:
                stack.extend(i for i in sub.input if i)
    return [vi.name for vi in g.input if vi.name in need]


def dual_encoder_split(model: Any) -> Optional[dict[str, tuple[list[str], list[str]]]]:
    """``{"vision": (inputs, ["image_embeds"]), "text": (inputs, ["text_embeds"])}`` for a combined CLIP-style
    graph (Optimum's feature-extraction export) whose two embeddings depend on disjoint inputs; else None."""
    g = model.graph
    names = {o.name for o in g.output}
    if len(names) < 2 or not all(set(outs) <= names for outs in DUAL_ENCODER_OUTPUTS.values()):
        return None
    split = {t: (inputs_reaching(g, list(outs)), list(outs)) for t, outs in DUAL_ENCODER_OUTPUTS.items()}
    if set(split["vision"][0]) & set(split["text"][0]) or not all(i for i, _ in split.values()):
        return None  # a fused graph: the embeddings are not separable
    return split


def extract_tower(path: Path, model: Any, inputs: list[str], outputs: list[str], tower: str) -> Path:
    """``inputs -> outputs`` of ``path`` as its own ONNX file (cached by the file's content and the cut)."""
    import hashlib

    from ..artifacts import default_cache_dir, sha256_file

    onnx = require("onnx")
    key = hashlib.sha256(f"{sha256_file(path)}:{inputs}:{outputs}".encode()).hexdigest()[:20]
    dst = default_cache_dir() / "onnx_towers" / key / f"{tower}.onnx"
    if dst.is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    full = onnx.load(str(path)) if model is None or any(
        i.data_location == 1 for i in model.graph.initializer) else model
    sub = onnx.utils.Extractor(full).extract_model(inputs, outputs)
    tmp = dst.with_name(f".{dst.name}.tmp")
    onnx.save(sub, str(tmp))
    tmp.replace(dst)
    return dst


def check_spec_against_graph(path: Path, model: Any, spec: IOSpec, tower: str) -> None:
    """SpecError (one line) when an I/O spec given with ``--io`` cannot describe this graph: unknown input or
    output names, inputs the outputs need but the spec omits, wrong rank, or a static dim the graph fixes
    differently."""
    from ..errors import SpecError

    g = model.graph
    inits = {i.name for i in g.initializer}
    graph_in = {vi.name: vi for vi in g.input if vi.name not in inits}
    graph_out = {o.name for o in g.output}
    where = f"--io for {path.name} (tower {tower!r})"
    bad_out = [o for o in spec.output_names if o not in graph_out]
    if bad_out:
        raise SpecError(f"{where}: output {bad_out[0]!r} is not an output of the graph",
                        hint=f"its outputs are: {', '.join(sorted(graph_out))}")
    for i in spec.inputs:
        if i.name not in graph_in:
            raise SpecError(f"{where}: input {i.name!r} is not an input of the graph",
                            hint=f"its inputs are: {', '.join(graph_in)}")
        dims = graph_in[i.name].type.tensor_type.shape.dim
        if dims and len(dims) != len(i.shape):
            raise SpecError(f"{where}: input {i.name!r} has rank {len(dims)} in the graph, the spec gives "
                            f"{len(i.shape)} dims {list(i.shape)}")
        for k, (d, s) in enumerate(zip(dims, i.shape)):
            if d.HasField("dim_value") and d.dim_value > 0 and isinstance(s, int) and s != d.dim_value:
                raise SpecError(f"{where}: input {i.name!r} dim {k} is {d.dim_value} in the graph, the spec says {s}")
        conv = _first_conv(g, i.name) if len(i.shape) == 4 and isinstance(i.shape[1], int) else None
        w = next((t for t in g.initializer if conv is not None and len(conv.input) > 1 and t.name == conv.input[1]), None)
        if w is not None and len(w.dims) == 4:
            group = next((a.i for a in conv.attribute if a.name == "group"), 1)
            if int(w.dims[1]) * int(group) != i.shape[1]:
                raise SpecError(f"{where}: input {i.name!r} has {i.shape[1]} channels in the spec, but its first Conv "
                                f"({conv.name}) takes {int(w.dims[1]) * int(group)}", hint="fix the spec's shape")
        dtype = _ONNX_DTYPES.get(graph_in[i.name].type.tensor_type.elem_type)
        if dtype and dtype != i.dtype:
            raise SpecError(f"{where}: input {i.name!r} is {dtype} in the graph, the spec says {i.dtype}")
    missing = [n for n in inputs_reaching(g, spec.output_names) if n not in spec.input_names]
    if missing:
        raise SpecError(f"{where}: outputs {spec.output_names} also need input {missing[0]!r}",
                        hint="list every input those outputs depend on")
