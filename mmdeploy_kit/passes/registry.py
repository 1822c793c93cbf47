"""Every pass the pipeline knows, by recipe name. Lazy: a pass module is imported only when a recipe uses it
(its heavy dependencies import inside its functions), and each entry names the pip extra it needs.

A recipe step ``export: {target: tensorrt}`` resolves through ``DISPATCH`` to the pass ``export_tensorrt``.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError


@dataclass(frozen=True)
class PassEntry:
    target: str            # "module:Class"
    extra: str             # pip extra of mmdeploy_kit the pass needs
    summary: str


PASS_REGISTRY: dict[str, PassEntry] = {
    "export_onnx": PassEntry("mmdeploy_kit.passes.export.onnx:OnnxExportPass", "all",
                             "export towers to verified ONNX"),
    "export_tensorrt": PassEntry("mmdeploy_kit.passes.export.tensorrt:TensorRTExportPass", "all",
                                 "TensorRT-ready ONNX + lint + build plan/scripts; engines where TensorRT and a GPU are"),
    "export_openvino": PassEntry("mmdeploy_kit.passes.export.openvino:OpenVINOExportPass", "openvino",
                                 "OpenVINO IR (.xml/.bin) from the verified ONNX, FP32 or BF16, verified"),
    "export_cpu": PassEntry("mmdeploy_kit.passes.export.cpu_choice:CpuChoicePass", "openvino",
                            "per tower, the fastest of ORT FP32/INT8 and OpenVINO FP32/BF16/INT8 here within budget"),
    "export_torch_tensorrt": PassEntry("mmdeploy_kit.passes.export.torch_tensorrt:TorchTensorRTExportPass", "tensorrt",
                                       "torch-tensorrt (dynamo) compiled towers saved as ExportedPrograms (GPU)"),
    "build_engines": PassEntry("mmdeploy_kit.passes.export.tensorrt:BuildEnginesPass", "tensorrt",
                               "build and verify the engines of a deferred TensorRT bundle on this device"),
    "quantize": PassEntry("mmdeploy_kit.passes.quantize.quantize_pass:QuantizePass", "all",
                          "INT8 static/dynamic, FP16, accuracy-aware mixed precision (ONNX Runtime / INC)"),
    "bench": PassEntry("mmdeploy_kit.passes.bench_step:BenchPass", "all",
                       "latency and task accuracy vs the recipe's source model, with gates"),
    "distill": PassEntry("mmdeploy_kit.passes.distill:DistillPass", "torch",
                         "train a student against a frozen teacher (feature/affinity/contrastive/logits/label)"),
    "prune": PassEntry("mmdeploy_kit.passes.prune.prune_pass:PrunePass", "prune",
                       "structured pruning per tower (heads, MLP widths, channels; Torch-Pruning)"),
}

# A step name that picks its pass from one of its options: {step: (option, default, {value: pass})}.
DISPATCH: dict[str, tuple[str, str, dict[str, str]]] = {
    "export": ("target", "onnx", {"onnx": "export_onnx", "tensorrt": "export_tensorrt",
                                  "torch-tensorrt": "export_torch_tensorrt", "openvino": "export_openvino",
                                  "cpu": "export_cpu"}),
}


def step_names() -> list[str]:
    """Names a recipe step may use."""
    hidden = {p for _, _, m in DISPATCH.values() for p in m.values()}
    return sorted(set(DISPATCH) | (set(PASS_REGISTRY) - hidden))


def resolve_pass_name(step: str, options: dict[str, Any]) -> str:
    """The registered pass a step name + options run (``export`` + ``target: tensorrt`` -> ``export_tensorrt``)."""
    if step in DISPATCH:
        option, default, table = DISPATCH[step]
        value = options.get(option, default)
        if value not in table:
            raise UserInputError(f"unknown {option} {value!r} for step {step!r}",
                                 hint=f"choose one of: {', '.join(sorted(table))}")
        return table[value]
    if step not in PASS_REGISTRY:
        close = difflib.get_close_matches(step, step_names(), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"passes are: {', '.join(step_names())}"
        raise UserInputError(f"unknown pass {step!r}", hint=hint)
    return step


def recipe_step_name(pass_name: str) -> str:
    """The name a recipe uses for a registered pass (``export_tensorrt`` -> ``export``)."""
    for step, (_, _, table) in DISPATCH.items():
        if pass_name in table.values():
            return step
    return pass_name


def get_pass(name: str) -> Any:
    """The pass class registered as ``name`` (imported on first use)."""
    entry = PASS_REGISTRY.get(name)
    if entry is None:
        raise UserInputError(f"unknown pass {name!r}", hint=f"passes are: {', '.join(step_names())}")
    module, _, cls = entry.target.partition(":")
    return getattr(importlib.import_module(module), cls)
