"""Quantization passes: INT8 (ORT static QDQ / dynamic), FP16, accuracy-aware mixed precision, per tower.

Modules: ``config`` (QuantizeConfig, budgets, per-tower plans), ``ort_int8``, ``fp16``, ``mixed_precision``,
``evaluate`` (figures vs FP32 + budget checks), ``graph`` (candidate nodes, TensorRT QDQ invariants),
``inc`` (optional neural-compressor backend), ``quantize_pass`` (the registered ``quantize`` pass).
Importing this package stays light: onnx / onnxruntime are imported when a pass runs.
"""

from .config import Budget, QuantizeConfig, TowerPlan, parse_budget

__all__ = ["Budget", "QuantizeConfig", "TowerPlan", "parse_budget"]
