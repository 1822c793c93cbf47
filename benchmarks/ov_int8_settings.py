"""Issue 16 follow-up: can OpenVINO / NNCF settings make INT8 faster than NNCF's defaults on the CLIP B/32 image tower?

    .venv/bin/python benchmarks/ov_int8_settings.py        # ~4 min on 2 cores

The same verified FP32 ONNX as ``benchmarks/cpu_runtimes.py`` (``clip_image``), quantized by ``nncf.quantize``
(model_type transformer, 32 samples) with its default preset and with ``QuantizationPreset.PERFORMANCE``
(symmetric activations), each compiled four ways: dynamic or static input shape (batch 8 fixed by ``reshape``) x
OpenVINO's default inference precision (BF16 for the float parts on AVX512_BF16 / AMX CPUs) or ``f32``. One
interleaved run, 1 thread, batch 8, process CPU time; speed = median of the per-round ratios vs NNCF defaults
(dynamic shape, default precision); min cosine vs OpenVINO FP32 on the held-out images.
Writes benchmarks/results/ov_int8_settings_<isa>.{json,md}.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_runtimes import clip_image, nncf_defaults  # noqa: E402
from quant_common import environment, finish, min_cosine  # noqa: E402

ROUNDS = 12


def main() -> None:
    import nncf
    import openvino as ov

    tmp = Path(tempfile.mkdtemp(prefix="mmdk-ov-int8-"))
    fp32_dir, _tower, _calib, _proc, batches = clip_image(tmp)
    onnx = fp32_dir / "model.onnx"
    core = ov.Core()

    def quantize(**kw):
        return nncf_defaults(onnx, batches, **kw)[0]

    def compile_(model, static: bool, hint):
        if static:
            model = model.clone()
            model.reshape({model.inputs[0].any_name: list(batches[0]["pixel_values"].shape)})
        cfg = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if hint:
            cfg["INFERENCE_PRECISION_HINT"] = hint
        return core.compile_model(model, "CPU", cfg)

    fp32 = compile_(core.read_model(str(onnx)), False, "f32")
    ref = [fp32(b)[0] for b in batches]
    models = {"defaults": quantize(), "performance": quantize(preset=nncf.QuantizationPreset.PERFORMANCE)}
    runs = {}
    for name, m in models.items():
        for static in (False, True):
            for hint in (None, "f32"):
                c = compile_(m, static, hint)
                label = f"{name}{', static shape' if static else ''}{', f32 float parts' if hint else ''}"
                runs[label] = (c.create_infer_request(), min_cosine(ref, [c(b)[0] for b in batches]))
    x = batches[0]
    for req, _ in runs.values():
        req.infer(x)
        req.infer(x)
    times = {k: [] for k in runs}
    for _ in range(ROUNDS):
        for k, (req, _) in runs.items():
            t0 = time.process_time()
            req.infer(x)
            req.infer(x)
            times[k].append((time.process_time() - t0) / 2)
    base = np.array(times["defaults"])
    rows = {k: {"cpu_ms_p50": round(1000 * float(np.median(v)), 2),
                "speed_vs_nncf_defaults": round(float(np.median(base / np.array(v))), 3),
                "min_cosine": round(runs[k][1], 5)} for k, v in times.items()}
    isa = environment()["isa"].replace("+", "_")
    lines = [f"# OpenVINO / NNCF INT8 settings on the CLIP B/32 image tower ({isa})", "",
             f"One interleaved run, {ROUNDS} rounds, batch 8, 1 thread, process CPU time; speed = median per-round "
             "ratio vs NNCF defaults (dynamic shape, OpenVINO's default precision for the float parts).", "",
             "| quantization, compilation | CPU ms p50 | speed vs NNCF defaults | min cosine vs FP32 |", "|---|---|---|---|"]
    lines += [f"| {k} | {r['cpu_ms_p50']} | {r['speed_vs_nncf_defaults']:.3f}x | {r['min_cosine']:.5f} |"
              for k, r in rows.items()]
    best = max(rows, key=lambda k: rows[k]["speed_vs_nncf_defaults"])
    lines += ["", f"Fastest: {best}, {rows[best]['speed_vs_nncf_defaults']:.3f}x NNCF defaults "
              f"({'reaches' if rows[best]['speed_vs_nncf_defaults'] >= 1.1 else 'short of'} issue 16's 1.1x)."]
    finish(f"ov_int8_settings_{isa}", {"rounds": ROUNDS, "rows": rows, "best": best}, lines)


if __name__ == "__main__":
    main()
