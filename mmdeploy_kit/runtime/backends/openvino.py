"""OpenVINO backend: ONNX files or OpenVINO IR (``.xml`` + ``.bin``) on OpenVINO's CPU plugin. Torch-free.

Threads and streams follow the bench's ``--threads`` (``INFERENCE_NUM_THREADS``, one stream, latency hint),
so a 1-thread comparison with ONNX Runtime is 1 thread on both sides.

Precision: OpenVINO picks the *inference* precision itself — on CPUs with AVX512_BF16 or AMX it runs an FP32
model in BF16 unless told otherwise. This backend asks for the tower's precision (``fp32`` -> ``f32``,
``bf16`` -> ``bf16``; INT8 towers keep OpenVINO's default for their float parts) and reads back what the
compiled model actually uses, so a report never calls a BF16 run FP32 (``describe()["inference_precision"]``).

``MMDK_OPENVINO_DEVICE`` (default ``CPU``) picks another OpenVINO device where present (``GPU``, ``NPU``,
``AUTO``); the device used is recorded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from ..._lazy import require
from ...errors import BackendUnavailableError, ExportError, SpecError, UserInputError
from ...model.tower import Tower
from .base import Backend

# mmdk precision -> OpenVINO INFERENCE_PRECISION_HINT (None: OpenVINO's default for the device)
PRECISION_HINTS: dict[str, Optional[str]] = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": None}
# OpenVINO element type name -> mmdk precision name
_FROM_OV = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}
_NP_FROM_OV = {"f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32, "i8": np.int8,
               "u8": np.uint8, "boolean": np.bool_, "f64": np.float64}
DEVICE_ENV = "MMDK_OPENVINO_DEVICE"


def ov_core() -> Any:
    ov = require("openvino", extra="openvino", purpose="the OpenVINO runtime")
    return ov.Core()


def ov_device() -> str:
    return os.environ.get(DEVICE_ENV, "CPU").strip() or "CPU"


def compile_config(threads: Optional[int], precision_hint: Optional[str], device: str = "CPU") -> dict[str, Any]:
    """The compile properties: threads under ``threads`` (CPU), one stream, latency hint, precision hint."""
    cfg: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if device.startswith("CPU"):
        cfg["NUM_STREAMS"] = 1
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
    if precision_hint:
        cfg["INFERENCE_PRECISION_HINT"] = precision_hint
    return cfg


def read_model(core: Any, path: str | Path) -> Any:
    """``core.read_model`` of an IR or ONNX file. An ONNX ``AveragePool`` whose single window covers its whole
    static input (ALIGN's pooler: ``AvgPool2d(hidden_dim, ceil_mode=True)``, a kernel larger than the feature map)
    crashes OpenVINO's ONNX reader (segmentation fault, 2026.4): it is read as the ``GlobalAveragePool`` it is."""
    return read_model_rewritten(core, path)[0]


def read_model_rewritten(core: Any, path: str | Path, patch_matmul: bool = False) -> tuple[Any, int]:
    """:func:`read_model`; with ``patch_matmul`` a ViT patch embedding (a Conv whose stride is its kernel) is also
    read as the MatMul it is (:func:`patch_convs_as_matmul`; used for the IRs mmdk writes, not for benching a user's
    ONNX as it is). OpenVINO's CPU Conv kernels run that shape slowly (benchmarks/ov_int8_headroom.py times both
    forms). Returns the model and how many Convs were rewritten."""
    path = Path(path)
    if path.suffix != ".onnx":
        return core.read_model(str(path)), 0
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in proto.graph.node}
    if not ({"AveragePool"} | ({"Conv"} if patch_matmul else set())) & ops or _has_external_data(proto):
        return core.read_model(str(path)), 0
    pools = global_average_pools(proto) if "AveragePool" in ops else 0
    patches = patch_convs_as_matmul(proto) if patch_matmul and "Conv" in ops else 0
    if not pools + patches:
        return core.read_model(str(path)), 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mmdk-ov-") as tmp:
        onnx.save(proto, str(Path(tmp) / path.name))
        model = core.read_model(str(Path(tmp) / path.name))
    return model, patches


def patch_convs_as_matmul(proto: Any) -> int:
    """Rewrite, in place, each ``Conv`` that cuts its input into disjoint patches (stride = kernel, no padding,
    dilation or groups, a constant weight, static channels and spatial size divisible by the kernel: a ViT patch
    embedding) as Reshape -> Transpose -> Reshape -> MatMul (+ bias) -> Transpose: the same products, summed in
    another order, with the same output. How many."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    candidates = []
    for node in proto.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w_dims = list(inits[node.input[1]].dims)
        if len(w_dims) != 4 or list(attrs.get("strides", [1, 1])) != w_dims[2:] or any(attrs.get("pads", [])) \
                or any(d != 1 for d in attrs.get("dilations", [1, 1])) or attrs.get("group", 1) != 1 \
                or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID") \
                or w_dims[2:] == [1, 1]:
            continue
        candidates.append(node)
    if not candidates:
        return 0
    shapes = _static_shapes(proto)
    out_nodes, count = [], 0
    chosen = {id(n) for n in candidates}
    for node in proto.graph.node:
        x = shapes.get(node.input[0]) if id(node) in chosen else None
        if not x or len(x) != 4 or None in x[1:]:
            out_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        cout, cin, kh, kw = w.shape
        if x[1] != cin or x[2] % kh or x[3] % kw:
            out_nodes.append(node)
            continue
        ho, wo = x[2] // kh, x[3] // kw
        p = f"{node.name or node.output[0]}/mmdk_patch"
        proto.graph.initializer.extend([
            numpy_helper.from_array(np.ascontiguousarray(w.reshape(cout, -1).T), p + "_weight"),
            numpy_helper.from_array(np.array([0, cin, ho, kh, wo, kw], np.int64), p + "_split"),
            numpy_helper.from_array(np.array([0, ho, wo, cin * kh * kw], np.int64), p + "_rows")])
        last = p + "_matmul"
        out_nodes += [helper.make_node("Reshape", [node.input[0], p + "_split"], [p + "_r1"], name=p + "_r1"),
                      helper.make_node("Transpose", [p + "_r1"], [p + "_t1"], perm=[0, 2, 4, 1, 3, 5], name=p + "_t1"),
                      helper.make_node("Reshape", [p + "_t1", p + "_rows"], [p + "_r2"], name=p + "_r2"),
                      helper.make_node("MatMul", [p + "_r2", p + "_weight"], [last], name=p + "_matmul")]
        if len(node.input) > 2 and node.input[2]:
            out_nodes.append(helper.make_node("Add", [last, node.input[2]], [p + "_bias"], name=p + "_bias"))
            last = p + "_bias"
        out_nodes.append(helper.make_node("Transpose", [last], list(node.output), perm=[0, 3, 1, 2], name=p + "_t2"))
        count += 1
    if count:
        del proto.graph.node[:]
        proto.graph.node.extend(out_nodes)
    return count


def _static_shapes(proto: Any) -> dict[str, list[Optional[int]]]:
    """Tensor name -> dims (None where symbolic), by ONNX Runtime's symbolic inference where it works (it folds the
    shape arithmetic of computed pads: ALIGN's "same" padding), else onnx's."""
    import onnx

    inferred = None
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    except ModuleNotFoundError:
        pass
    except Exception:  # noqa: BLE001 - its failures on unusual graphs are many kinds; onnx's inference follows
        inferred = None
    if inferred is None:
        inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _has_external_data(proto: Any) -> bool:
    return any(t.data_location == 1 for t in proto.graph.initializer)  # TensorProto.EXTERNAL


def global_average_pools(proto: Any) -> int:
    """Rewrite, in place, each ``AveragePool`` without padding whose one window spans its whole static spatial
    input (kernel and stride >= the input size) into ``GlobalAveragePool`` (the same average); how many."""
    from onnx import helper

    shapes = _static_shapes(proto)
    count = 0
    for k, node in enumerate(proto.graph.node):
        if node.op_type != "AveragePool":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        spatial = (shapes.get(node.input[0]) or [None, None, None])[2:]
        kernel = list(attrs.get("kernel_shape", []))
        strides = list(attrs.get("strides", [1] * len(kernel)))
        if not spatial or None in spatial or len(kernel) != len(spatial) or any(attrs.get("pads", [])) or \
                attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        if all(kk >= d and st >= d for kk, st, d in zip(kernel, strides, spatial)):
            proto.graph.node[k].CopyFrom(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                                          name=node.name))
            count += 1
    return count


def compile_tower(path: str | Path, precision: str, threads: Optional[int], device: Optional[str] = None) -> Any:
    """``(compiled_model, inference_precision, output_ranks)`` for an ONNX or IR file. ``output_ranks``: the
    rank each output has in the model as read (None where dynamic), for :func:`fit_rank`."""
    core = ov_core()
    device = device or ov_device()
    if device.split(":")[0].split(".")[0] not in ("AUTO", "MULTI", "HETERO") and \
            not any(d.startswith(device.split(".")[0]) for d in core.available_devices):
        raise BackendUnavailableError(f"OpenVINO has no device {device!r} here (it has {', '.join(core.available_devices)})",
                                      hint=f"unset {DEVICE_ENV} or set it to one of those")
    try:
        model = read_model(core, path)
    except RuntimeError as exc:
        raise UserInputError(f"OpenVINO cannot read {path}: {' '.join(str(exc).split())[:240]}") from None
    ranks = [None if o.get_partial_shape().rank.is_dynamic else o.get_partial_shape().rank.get_length()
             for o in model.outputs]
    try:
        compiled = core.compile_model(model, device, compile_config(threads, PRECISION_HINTS.get(precision), device))
    except RuntimeError as exc:  # an OpenVINO plugin failure on this graph (e.g. constant folding of a Convert)
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception from")]
        raise ExportError(f"OpenVINO cannot compile {Path(path).name} ({precision}) for {device}: "
                          f"{(lines[-1] if lines else str(exc))[:200]}",
                          hint="run this tower with ONNX Runtime (--backend onnxruntime / another candidate), "
                               "or report the graph to OpenVINO") from None
    return compiled, inference_precision(compiled), ranks


def fit_rank(arr: np.ndarray, rank: Optional[int]) -> np.ndarray:
    """``arr`` with the rank its model declares: OpenVINO's CPU plugin (2025-2026) can give an INT8 graph whose
    last op is a MatMul on a 2-D input (a pooled embedding's projection: AltCLIP's text tower after NNCF) a leading
    unit axis ([1, batch, dim] for [batch, dim]); extra leading axes of size 1 are dropped, nothing else changes."""
    while rank is not None and arr.ndim > rank and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def inference_precision(compiled: Any) -> str:
    """What the compiled model computes its float parts in, as an mmdk precision name (``bf16``, ``fp32``...)."""
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    except RuntimeError:  # a device without the property
        return "unknown"
    name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    return _FROM_OV.get(name, name)


def cpu_supports_bf16(flags: Optional[list[str]] = None) -> bool:
    """AVX512_BF16 or AMX-BF16 (what OpenVINO's CPU plugin needs for native BF16)."""
    if flags is None:
        from ..env import cpu_info

        flags = cpu_info()[1]
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def require_bf16_cpu(flags: Optional[list[str]] = None) -> None:
    """Refuse BF16 on a CPU without native BF16 (it would be emulated: slower than FP32, not faster)."""
    if not cpu_supports_bf16(flags):
        raise BackendUnavailableError("precision bf16 needs a CPU with AVX512_BF16 or AMX; this CPU has neither",
                                      hint="use --precision fp32 or int8 on this machine (see mmdk doctor)")


class OpenVINOBackend(Backend):
    name: ClassVar[str] = "openvino"
    kinds: ClassVar[tuple[str, ...]] = ("openvino", "onnx")
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(self, tower: Tower, device: str = "cpu", threads: Optional[int] = None):
        super().__init__(tower, device, threads)
        if tower.path is None:
            raise BackendUnavailableError(f"tower {tower.name!r} has no ONNX / OpenVINO IR file to run")
        if tower.precision == "bf16":
            require_bf16_cpu()
        self.ov_device = ov_device()
        self.compiled, self.inference_precision, self.output_ranks = compile_tower(tower.path, tower.precision, threads,
                                                                                   self.ov_device)
        self.request = self.compiled.create_infer_request()
        self.input_names = [self._port_name(i, self.tower.spec.input_names) for i in self.compiled.inputs]
        self.input_types = {n: _NP_FROM_OV.get(i.get_element_type().get_type_name())
                            for n, i in zip(self.input_names, self.compiled.inputs)}
        self.outputs = list(self.compiled.outputs)
        self.output_names = [self._port_name(o, self.tower.spec.output_names) for o in self.outputs]

    @staticmethod
    def _port_name(port: Any, wanted: list[str]) -> str:
        """The port's name the I/O spec uses (OpenVINO merges tensor names: an input may also carry a Cast's)."""
        names = port.get_names()
        hit = [n for n in wanted if n in names]
        return hit[0] if hit else port.get_any_name()

    @classmethod
    def check_available(cls, device: str) -> None:
        super().check_available(device)
        require("openvino", extra="openvino", purpose="the OpenVINO runtime")

    def _feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name in self.input_names:
            if name not in feeds:
                raise SpecError(f"{self.tower.path} needs input {name!r}, which was not provided")
            arr, want = feeds[name], self.input_types.get(name)
            out[name] = np.ascontiguousarray(arr if want is None or arr.dtype == want else arr.astype(want))
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self.request.infer(self._prepared(feeds))
        return {n: fit_rank(np.array(res[o]), r) for n, o, r in zip(self.output_names, self.outputs, self.output_ranks)}

    def _prepared(self, feeds: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
        """Feeds keyed by input index (the port's names may differ from the spec's)."""
        f = self._feeds(feeds)
        return {k: f[n] for k, n in enumerate(self.input_names)}

    def prepare(self, feeds: dict[str, np.ndarray]) -> Any:
        return self._prepared(feeds)

    def run_prepared(self, prepared: Any) -> Any:
        return self.request.infer(prepared, share_inputs=True, share_outputs=True)

    def describe(self) -> dict[str, Any]:
        precision = self.tower.precision
        if precision == "fp32" and self.inference_precision not in ("fp32", "unknown"):
            precision = self.inference_precision  # never call a reduced-precision run FP32
        return {**super().describe(), "providers": [f"openvino:{self.ov_device}"], "precision": precision,
                "inference_precision": self.inference_precision}

    def close(self) -> None:
        self.request = None
        self.compiled = None
