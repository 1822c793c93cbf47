"""ONNX graph queries for quantization: candidate nodes, layer groups, what stayed FP32, QDQ invariants."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from ..._lazy import require

_LAYER_RE = re.compile(r"(?:^|[/._])(layers?|blocks?|h|encoder_layer|resblocks)[._/]?(\d+)(?=[/._]|$)")
FLOAT_COMPUTE_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "MultiHeadAttention", "LSTM", "GRU")


@dataclass(frozen=True)
class Candidate:
    """A node the quantizer may turn INT8, with a cost proxy (weight elements) and its layer group."""

    name: str
    op_type: str
    cost: int
    group: str
    const_weight: bool


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def consumers(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes reading it."""
    out: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def opset_version(model: Any) -> int:
    """The model's default-domain (ai.onnx) opset, 0 when it declares none."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _const_names(graph: Any) -> dict[str, Any]:
    """Initializers and Constant-node outputs (name -> TensorProto)."""
    consts = {i.name: i for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t is not None:
                    consts[n.output[0]] = a.t
    return consts


def layer_group(name: str) -> str:
    """``/encoder/layers.3/mlp/fc1/MatMul`` -> ``layers.3``; nodes outside numbered blocks keep their name."""
    m = None
    for m in _LAYER_RE.finditer(name):
        pass
    return f"{m.group(1)}.{m.group(2)}" if m else name


def candidates(model: Any, op_types: Iterable[str], method: str, matmul_const_b_only: bool = True) -> list[Candidate]:
    """Nodes of ``op_types`` the quantizer would touch. Dynamic quantization needs a constant weight."""
    graph = model.graph
    consts = _const_names(graph)
    ops = set(op_types)
    out = []
    for n in graph.node:
        if n.op_type not in ops or not n.name:
            continue
        weight = consts.get(n.input[1]) if len(n.input) > 1 else None
        if n.op_type == "Conv" and weight is None:
            continue
        if n.op_type in ("MatMul", "Gemm") and weight is None and (method == "dynamic" or matmul_const_b_only):
            continue
        cost = int(math.prod(weight.dims)) if weight is not None else 1
        out.append(Candidate(n.name, n.op_type, max(cost, 1), layer_group(n.name), weight is not None))
    return out


def node_modalities(model: Any, input_modality: dict[str, str]) -> dict[str, frozenset[str]]:
    """Which graph inputs' modalities reach each node (node name -> {"text", "image", ...}).

    Modality flows from the I/O spec's inputs along every tensor (initializers and constants carry none), so
    inside one fusion tower the CNN's Convs are ``{"image"}``, the text encoder's MatMuls ``{"text"}`` and
    the head after the concat ``{"image", "text"}``. Nodes are visited in graph order (ONNX requires a
    topological order); subgraphs of If/Loop are not entered (their outputs take the node's modalities).
    """
    seen: dict[str, frozenset[str]] = {k: frozenset([v]) for k, v in input_modality.items()}
    out: dict[str, frozenset[str]] = {}
    for n in model.graph.node:
        mods = frozenset().union(*(seen.get(i, frozenset()) for i in n.input if i))
        out[n.name] = mods
        for o in n.output:
            seen[o] = mods
    return out


def split_by_modality(cands: list[Candidate], mods: dict[str, frozenset[str]]) -> tuple[list[str], list[str]]:
    """(static, dynamic) node names for a hybrid tower: MatMul/Gemm that text reaches go dynamic (their
    activations depend on token content and -inf attention masks; FIELD_NOTES: static INT8 loses accuracy on
    real text towers), every other candidate (the CNN / image branch, Conv above all) static QDQ."""
    static, dynamic = [], []
    for c in cands:
        text = "text" in mods.get(c.name, frozenset())
        (dynamic if text and c.op_type in ("MatMul", "Gemm") and c.const_weight else static).append(c.name)
    return static, dynamic


def groups(cands: list[Candidate], granularity: str, max_nodes: int = 48) -> dict[str, list[str]]:
    """Sensitivity units: one per node, or per layer (``auto``: per layer when there are many nodes)."""
    by_layer = granularity == "layer" or (granularity == "auto" and len(cands) > max_nodes)
    out: dict[str, list[str]] = {}
    for c in cands:
        out.setdefault(c.group if by_layer else c.name, []).append(c.name)
    return out


def quantized_nodes(qmodel: Any, cands: list[Candidate], method: str) -> set[str]:
    """Names of the candidates that ended up INT8 in ``qmodel``."""
    graph = qmodel.graph
    nodes = {n.name: n for n in graph.node}
    dynamic = {c.name for c in cands if c.name not in nodes or nodes[c.name].op_type != c.op_type}
    if method == "dynamic":
        return dynamic
    prod = _producers(graph)
    done = dynamic if method == "hybrid" else set()  # hybrid: static QDQ nodes + dynamic chains
    for c in cands:
        n = nodes.get(c.name)
        if n is not None and any(i in prod and prod[i].op_type == "DequantizeLinear" for i in n.input[:2]):
            done.add(c.name)
    return done


def float_nodes_report(qmodel: Any, cands: list[Candidate], method: str, reasons: dict[str, str]) -> dict[str, Any]:
    """Every candidate left in FP32 (with why), and a count of the other float compute ops by type."""
    q = quantized_nodes(qmodel, cands, method)
    left = [{"name": c.name, "op_type": c.op_type, "reason": reasons.get(c.name, "not quantizable by ORT")}
            for c in cands if c.name not in q]
    cand_names = {c.name for c in cands}
    others = Counter(n.op_type for n in qmodel.graph.node if n.op_type in FLOAT_COMPUTE_OPS and n.name not in cand_names
                     and not n.name.endswith("_quant"))
    total = sum(c.cost for c in cands) or 1
    kept = sum(c.cost for c in cands if c.name not in q)
    return {"quantized_nodes": len(q), "candidate_nodes": len(cands), "fp32_nodes": left,
            "fp32_weight_fraction": round(kept / total, 4), "other_float_compute_ops": dict(others)}


def restore_fp32(qmodel: Any, fp32_model: Any, names: Iterable[str]) -> Any:
    """A copy of quantized ``qmodel`` in which the FP32 nodes ``names`` (from ``fp32_model``) compute their
    outputs again in float: the node producing each output is swapped for the original node (static QDQ)
    or detached and the original inserted in its place (dynamic chains). Numerically what excluding them
    from quantization gives, without re-quantizing the whole model - the sensitivity scan's shortcut.
    """
    import copy

    out = copy.deepcopy(qmodel)
    g = out.graph
    fp32_nodes = {n.name: n for n in fp32_model.graph.node}
    fp32_inits = {i.name: i for i in fp32_model.graph.initializer}
    have = {i.name for i in g.initializer}
    for name in names:
        orig = fp32_nodes[name]
        y = orig.output[0]
        same = [k for k, n in enumerate(g.node) if n.name == name and n.op_type == orig.op_type]
        idx = same[0] if same else next(k for k, n in enumerate(g.node) if y in n.output)
        prod = g.node[idx]
        new = copy.deepcopy(orig)
        if same:  # QDQ: float weights; an activation stays QDQ only if a quantized node shares it
            producers = _producers(g)
            excluded = set(names)
            for k, i in enumerate(prod.input[:len(new.input)]):
                src = producers.get(i)
                if src is None or src.op_type != "DequantizeLinear" or src.input[0] in have:
                    continue  # raw input, or a quantized weight (the original float one is used)
                users = [n for n in g.node if i in n.input and n is not prod]
                if any(n.op_type in FLOAT_COMPUTE_OPS and n.name not in excluded for n in users):
                    new.input[k] = i
                else:  # nothing quantized reads it any more: ORT would not quantize this tensor
                    raw = producers[src.input[0]].input[0] if src.input[0] in producers else new.input[k]
                    for n in users:
                        n.input[:] = [raw if x == i else x for x in n.input]
            y_q = prod.output[0]  # y itself, or '<y>_QuantizeLinear_Input' when y is a graph output
            g.node.remove(prod)
            qs = {n.output[0] for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == y_q}
            dqs = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in qs}
            if y_q != y:  # the graph output's Q -> DQ(y) pair goes: the float node writes y again
                for n in [n for n in g.node if n.output and n.output[0] in qs | dqs]:
                    g.node.remove(n)
                idx = min(idx, len(g.node))
            for n in g.node:
                for k, i in enumerate(n.input):
                    if i in dqs:
                        n.input[k] = y
        else:  # dynamic: MatMulInteger ... Mul chain ends in y; detach it
            prod.output[list(prod.output).index(y)] = f"{y}__int8_unused"
            for n in g.node:  # a node of the chain may keep the original's name (ORT's dynamic Gemm)
                if n.name == name:
                    n.name = f"{name}__int8_unused"
        g.node.insert(idx, new)
        reader = g.node[idx]  # protobuf inserted a copy of ``new``
        for i in orig.input:
            if i in fp32_inits and i not in have:
                if _drop_dequantized_copy(g, i, reader):
                    g.initializer.append(fp32_inits[i])
                    have.add(i)
                else:  # the dequantized tensor feeds other nodes too: the float copy gets its own name
                    alias = _unused_name(g, f"{i}__fp32")
                    init = copy.deepcopy(fp32_inits[i])
                    init.name = alias
                    g.initializer.append(init)
                    have.add(alias)
                    reader.input[:] = [alias if x == i else x for x in reader.input]
    return out


def _unused_name(g: Any, base: str) -> str:
    taken = {i.name for i in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def _drop_dequantized_copy(g: Any, name: str, reader: Any) -> bool:
    """ORT's static QDQ keeps a quantized bias's *original* name on its DequantizeLinear output (a Conv bias
    folded from BatchNorm, ``onnx::Conv_423``): before the float initializer comes back under that name,
    remove the DequantizeLinear (read by ``reader`` only), else the graph defines the name twice.
    False when nothing may be removed because other nodes read that output too (an exporter shares one
    initializer between equal tensors, e.g. a ViT's zero patch-Conv bias and LayerNorm biases): the caller
    then restores the float tensor under a new name."""
    prod = next((n for n in g.node if name in n.output), None)
    if prod is None:
        return True
    others = [n for n in g.node if n.name != reader.name and name in n.input]
    if others:
        return False
    if prod.op_type not in ("DequantizeLinear", "Cast"):
        raise ValueError(f"cannot restore {name!r} to FP32: it is produced by {prod.op_type} node {prod.name!r}")
    g.node.remove(prod)
    return True


# ---- TensorRT explicit-quantization invariants ---------------------------------------------------------
def _weight_axis(node: Any, input_index: int) -> Optional[int]:
    """Output-channel axis of a weight input: Conv 0, MatMul last dim of B, Gemm 0 if transB else 1."""
    if input_index != 1:
        return None
    if node.op_type in ("Conv", "ConvTranspose"):
        return 0 if node.op_type == "Conv" else 1
    if node.op_type == "MatMul":
        return -1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return None


def tensorrt_qdq_violations(model: Any) -> list[str]:
    """What TensorRT's explicit quantization would reject: empty list when the graph is fine.

    Checks: opset >= 13; Q/DQ only (no QLinear*/integer ops); INT8 everywhere with zero point 0
    (symmetric); weights dequantized per channel along the consuming op's output-channel axis.
    """
    onnx = require("onnx")
    from onnx import numpy_helper

    problems: list[str] = []
    graph = model.graph
    opset = opset_version(model)
    if opset < 13:
        problems.append(f"opset {opset} < 13")
    consts = _const_names(graph)
    bad_ops = {n.op_type for n in graph.node if n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")
               or n.op_type == "DynamicQuantizeLinear"}
    if bad_ops:
        problems.append(f"non-QDQ quantized ops {sorted(bad_ops)}")
    readers: dict[str, list[tuple[Any, int]]] = {}  # tensor -> (node, input index)
    for n in graph.node:
        for k, i in enumerate(n.input):
            readers.setdefault(i, []).append((n, k))
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        problems.append("no QuantizeLinear/DequantizeLinear nodes")
    for n in qdq:
        if len(n.input) < 3 or n.input[2] not in consts:
            problems.append(f"{n.name}: no constant zero point")
            continue
        zp = consts[n.input[2]]
        if zp.data_type != onnx.TensorProto.INT8:
            problems.append(f"{n.name}: zero point type {onnx.TensorProto.DataType.Name(zp.data_type)}, not INT8")
        if numpy_helper.to_array(zp).any():
            problems.append(f"{n.name}: non-zero zero point (asymmetric)")
        if n.op_type != "DequantizeLinear" or n.input[0] not in consts:
            continue
        w = consts[n.input[0]]
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        scale = consts.get(n.input[1])
        per_channel = scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1
        for cons, k in readers.get(n.output[0], []):
            want = _weight_axis(cons, k)
            if want is None:
                continue
            want = want % len(w.dims)
            if not per_channel:
                problems.append(f"{cons.name}: weight {n.input[0]} is quantized per tensor")
            elif axis % len(w.dims) != want:
                problems.append(f"{cons.name}: weight {n.input[0]} per-channel axis {axis}, expected {want}")
    return problems
