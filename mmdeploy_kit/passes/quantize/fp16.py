"""FP16 with ORT's own converter (inputs/outputs stay FP32) plus a block-list of sensitive ops.

Kept in FP32: LayerNorm, Softmax, reductions, Pow/Sqrt/Exp/Log (``config.FP16_BLOCK_OPS``), and the
attention-mask path: nodes holding constants outside FP16's range (the ``-3.4e38`` / ``-inf`` masks of
text towers) and the elementwise ops that carry them to the Softmax; and nodes whose FP32 activations
on the calibration data exceed half of FP16's range. After conversion the graph is run on the data;
nodes that first produce NaN/Inf are moved back to FP32 and the conversion repeated (a few rounds),
otherwise a VerificationError names them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ..._lazy import require
from ...errors import VerificationError
from .evaluate import run_outputs
from .graph import consumers
from .ort_int8 import quiet_ort

FP16_MAX = 65504.0
_MASK_PATH_OPS = {"Add", "Sub", "Mul", "Div", "Where", "Expand", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Concat",
                  "Min", "Max", "Slice", "Tile", "Transpose", "Identity", "Neg"}
MAX_FALLBACK_ROUNDS = 3


def out_of_range_nodes(model: Any) -> list[str]:
    """Nodes fed by constants FP16 cannot hold (|x| > 65504, inf, NaN), plus the mask path to Softmax."""
    from onnx import numpy_helper

    graph = model.graph
    bad_consts = set()
    for init in graph.initializer:
        if init.data_type == 1 and _out_of_range(numpy_helper.to_array(init)):
            bad_consts.add(init.name)
    seeds = []  # Constant / ConstantOfShape nodes producing such values
    for n in graph.node:
        if n.op_type in ("Constant", "ConstantOfShape"):
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == 1 and _out_of_range(numpy_helper.to_array(a.t)):
                    bad_consts.add(n.output[0])
                    seeds.append(n.name)
    readers = consumers(graph)
    blocked = set(seeds)
    frontier = [n for c in bad_consts for n in readers.get(c, [])]
    depth = 0
    while frontier and depth < 10:
        nxt = []
        for n in frontier:
            if n.name in blocked or not n.name:
                continue
            blocked.add(n.name)
            if n.op_type in _MASK_PATH_OPS:
                nxt.extend(c for o in n.output for c in readers.get(o, []))
        frontier, depth = nxt, depth + 1
    return sorted(b for b in blocked if b)


def _out_of_range(arr: np.ndarray) -> bool:
    return arr.size > 0 and bool((~np.isfinite(arr)).any() or (np.abs(arr[np.isfinite(arr)]) > FP16_MAX).any())


def convert(src: Path, dst: Path, block_ops: Iterable[str], block_nodes: Iterable[str]) -> None:
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(block_ops))
    wrapper = OnnxModel(model)
    with quiet_ort():
        wrapper.convert_float_to_float16(use_symbolic_shape_infer=False, keep_io_types=True, op_block_list=ops,
                                         node_block_list=sorted(set(block_nodes)))
    onnx.save(wrapper.model, str(dst))


def tensor_stats(path: Path, batches: Sequence[dict[str, np.ndarray]]
                 ) -> tuple[Any, dict[str, tuple[float, bool]], Optional[str]]:
    """Run ``path`` with every float intermediate exposed: (graph, {tensor: (max |x| over finite values, all
    finite)}, None), or (graph, {}, why) where the intermediates could not be exposed (no check was made)."""
    from ...runtime.backends.ort import ort_session

    onnx = require("onnx")
    model = onnx.load(str(path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 - best effort; without types we cannot expose intermediates
        return model, {}, f"shape inference failed ({(str(exc).splitlines() or [type(exc).__name__])[0][:160]})"
    types = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    graph_outputs = {o.name for o in inferred.graph.output}
    for n in inferred.graph.node:
        for o in n.output:
            vi = types.get(o)
            if vi is not None and vi.type.tensor_type.elem_type in (1, 10) and o not in graph_outputs:
                inferred.graph.output.append(vi)
    with tempfile.TemporaryDirectory(prefix="mmdk-fp16-") as tmp:
        exposed = Path(tmp) / "exposed.onnx"
        onnx.save(inferred, str(exposed))
        sess = ort_session(exposed, optimization="disable")  # the session keeps its own copy of the graph
    names = [o.name for o in sess.get_outputs()]
    stats: dict[str, tuple[float, bool]] = {}
    for b in batches:
        for name, arr in zip(names, sess.run(None, {i.name: b[i.name] for i in sess.get_inputs()})):
            a = np.asarray(arr)
            if a.dtype.kind != "f" or a.size == 0:
                continue
            fin = np.isfinite(a)
            peak = float(np.abs(a[fin]).max()) if fin.any() else 0.0
            old = stats.get(name, (0.0, True))
            stats[name] = (max(old[0], peak), old[1] and bool(fin.all()))
    return inferred, stats, None


def overflow_nodes(src: Path, batches: Sequence[dict[str, np.ndarray]],
                   limit: float = FP16_MAX / 2) -> tuple[list[str], dict[str, Any]]:
    """Nodes whose FP32 inputs or outputs exceed FP16's range on ``batches`` (they must stay FP32), and what the
    check covered (``ran``: False with the ``reason`` when it could not run, so the manifest says so).

    Measured on the FP32 graph because ORT's CPU provider silently runs ops that lack FP16 kernels in
    FP32, so a CPU run of the FP16 graph can miss overflows a GPU would hit.
    """
    model, stats, why = tensor_stats(src, batches[:2])
    check = {"ran": why is None, "tensors_checked": len(stats), **({"reason": why} if why else {})}
    big = {t for t, (peak, finite) in stats.items() if peak > limit or not finite}
    return [n.name for n in model.graph.node if n.name and any(t in big for t in list(n.input) + list(n.output))], check


def first_nonfinite_nodes(path: Path, batches: Sequence[dict[str, np.ndarray]], original: set[str]) -> list[str]:
    """Original nodes where NaN/Inf first appears in the FP16 graph (finite inputs, non-finite output).

    When it first comes out of a Cast the converter inserted, the nodes consuming that Cast are returned.
    """
    model, stats, _why = tensor_stats(path, batches)
    bad = {t for t, (_peak, finite) in stats.items() if not finite}
    readers = consumers(model.graph)
    origins: list[str] = []
    for n in model.graph.node:
        if any(o in bad for o in n.output) and not any(i in bad for i in n.input):
            if n.name in original:
                origins.append(n.name)
            else:  # an inserted Cast overflowed: keep its consumers in FP32
                origins.extend(c.name for o in n.output for c in readers.get(o, []) if c.name in original)
    return list(dict.fromkeys(origins))


def _finite(path: Path, batches: Sequence[dict[str, np.ndarray]]) -> bool:
    outs = run_outputs(path, batches)
    return all(np.isfinite(a).all() for arrays in outs.values() for a in arrays if a.dtype.kind == "f")


def convert_fp16(src: Path, dst: Path, block_ops: Sequence[str], check_batches: Sequence[dict[str, np.ndarray]],
                 tower: str) -> dict[str, Any]:
    """Convert and check; returns what stayed FP32 (by op type, by node, and the NaN/Inf fallbacks)."""
    onnx = require("onnx")
    src_model = onnx.load(str(src))
    original = {n.name for n in src_model.graph.node if n.name}
    mask_nodes = out_of_range_nodes(src_model)
    found, overflow_check = overflow_nodes(src, check_batches)
    overflow = [n for n in found if n not in mask_nodes]
    fallback: list[str] = []
    for _round in range(MAX_FALLBACK_ROUNDS + 1):
        convert(src, dst, block_ops, mask_nodes + overflow + fallback)
        if _finite(dst, check_batches):
            break
        origins = [n for n in first_nonfinite_nodes(dst, check_batches, original) if n not in fallback]
        if not origins or _round == MAX_FALLBACK_ROUNDS:
            where = f" (first at {', '.join(origins[:3])})" if origins else ""
            raise VerificationError(f"tower {tower!r} produces NaN/Inf in FP16 on the calibration data{where}",
                                    hint="keep the tower in FP32 (--tower-precision NAME=fp32) or use int8")
        fallback.extend(origins)
    return {"blocked_op_types": sorted(block_ops), "mask_path_nodes_fp32": mask_nodes,
            "overflow_nodes_fp32": overflow, "overflow_check": overflow_check, "nan_fallback_nodes_fp32": fallback,
            "io_types": "float32 (keep_io_types)"}
