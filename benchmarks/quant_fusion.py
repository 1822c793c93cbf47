"""Benchmark: a late-fusion classifier (BERT-style text encoder + ResNet-style CNN with BatchNorm -> concat -> MLP,
one tower with text and image inputs) quantized by mmdk's cpu preset vs its FP32 ONNX export.

    .venv/bin/python benchmarks/quant_fusion.py          # ~5 min on 2 busy cores

Target (issue 9): INT8 with its CNN branch quantized >= 1.5x its FP32 ONNX at batch 8 (1 thread), mean cosine
>= 0.99 on held-out inputs. The preset's choice (``hybrid``: static QDQ for the nodes only the image reaches,
dynamic INT8 for the MatMuls text reaches) is measured next to whole-tower static and dynamic INT8, and next to
the same hybrid graph without this ISA's weight options (AVX2: reduce_range), in one interleaved run.
Inputs are random (token ids, normal images: the model is random-init too), 96 calibration + 32 held-out rows.
Results: ``benchmarks/results/quant_fusion_<isa>.{json,md}``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests" / "fixtures"))
from quant_common import finish  # noqa: E402

IO = {"inputs": [{"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"], "range": [0, 1000]},
                 {"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"], "range": [1, 2]},
                 {"name": "pixel_values", "modality": "image", "dtype": "float32", "shape": ["batch", 3, 128, 128]}],
      "outputs": ["logits"], "dims": {"batch": [1, 16], "seq": [4, 32]}}


def fusion_large():
    """Factory: ResNet-style CNN (width 64, BatchNorm) at 128 px + 4-layer BERT-style text encoder (dim 256)."""
    from resnet_bert_fusion import late_fusion

    return late_fusion(width=64, dim=256, layers=4)


def main() -> None:
    import mmdeploy_kit as mmdk
    from mmdeploy_kit.runtime.env import detect_isa
    from mmdeploy_kit.passes.quantize.isa import cpu_int8_options

    isa = detect_isa()
    preset = cpu_int8_options("auto")
    tmp = Path(tempfile.mkdtemp(prefix="mmdk-bench-fusion-"))
    print(f"work dir {tmp}; ISA {isa}")
    rng = np.random.default_rng(0)
    n = 128
    ids = rng.integers(0, 1000, (n, 32))
    mask = np.ones((n, 32), np.int64)
    mask[n // 2:, 24:] = 0  # half the rows padded: the masked-mean path is exercised
    np.savez(tmp / "data.npz", input_ids=ids, attention_mask=mask,
             pixel_values=rng.standard_normal((n, 3, 128, 128)).astype(np.float32))
    factory = f"{Path(__file__).resolve()}:fusion_large"
    mmdk.export(factory, tmp / "fp32", io=IO)
    common = {"calib_data": tmp / "data.npz", "calib_samples": 96, "holdout_samples": 32, "min_cosine": -1}
    variants = {"mmdk_int8": {}, "static": {"method": "static"}, "dynamic": {"method": "dynamic"}}
    if preset["reduce_range"]:
        variants["hybrid_full_range"] = {"method": "hybrid", "reduce_range": False}
    rows = {}
    for label, opts in variants.items():
        man = mmdk.quantize(tmp / "fp32", tmp / label, **common, **opts, progress=lambda m: print("  ·", m))
        a = man.artifacts[0]
        q = a.details["quantizer"]
        rows[label] = {"method": q["method"], "reduce_range": a.details["plan"]["reduce_range"],
                       "quantized_nodes": a.details["nodes"]["quantized_nodes"],
                       "candidate_nodes": a.details["nodes"]["candidate_nodes"],
                       "static_nodes": q.get("static_nodes"), "dynamic_nodes": q.get("dynamic_nodes"),
                       "cosine_mean": a.verification["cosine"], "cosine_min": a.verification["cosine_min"],
                       "n_holdout": a.verification["n_samples"]}
        print(f"{label}: {rows[label]}")
    timing = {"warmup_runs": 2, "min_runs": 10, "min_time_s": 1.0, "min_rounds": 8, "round_time_s": 0.1,
              "max_time_s": 120.0, "clock": "cpu"}
    r = mmdk.bench([f"{k}={tmp / k}" for k in variants], reference=f"fp32_onnx={tmp / 'fp32'}", batch=[8], seq=[32],
                   threads=1, timing=timing, quiet=True)
    for x in r.latency:
        if x.artifact in rows and x.speedup is not None:
            rows[x.artifact].update(p50_ms=round(x.stats.p50_ms, 2), speedup=round(x.speedup.ratio, 3),
                                    ci=[round(x.speedup.ci_low, 3), round(x.speedup.ci_high, 3)])
    base = next(x for x in r.latency if x.artifact == "fp32_onnx")
    lines = [f"# Late-fusion classifier (text + CNN in one tower): INT8 vs its FP32 ONNX - {isa}", "",
             f"CPU ISA: **{isa}**; mmdk_int8 is the cpu preset for it (reduce_range={preset['reduce_range']}). "
             f"Batch 8, seq 32, 128 px images, 1 thread, interleaved rounds, CPU clock; FP32 ONNX p50 "
             f"{base.stats.p50_ms:.1f} ms. Cosine: logits vs FP32 ONNX on {rows['mmdk_int8']['n_holdout']} held-out rows.",
             "", "| path | method | INT8 nodes (static/dynamic) | mean cosine | min cosine | speedup vs FP32 ONNX [95% CI] |",
             "|---|---|---|---|---|---|"]
    for label, x in rows.items():
        split = f" ({x['static_nodes']}/{x['dynamic_nodes']})" if x["static_nodes"] is not None else ""
        rr = ", reduce_range" if x["reduce_range"] else ""
        lines.append(f"| {label} | {x['method']}{rr} | {x['quantized_nodes']}/{x['candidate_nodes']}{split} | "
                     f"{x['cosine_mean']:.5f} | {x['cosine_min']:.5f} | "
                     f"{x.get('speedup', float('nan')):.2f}x [{x.get('ci', [0, 0])[0]:.2f}, {x.get('ci', [0, 0])[1]:.2f}] |")
    lines += ["", "Warnings from the bench: " + ("; ".join(r.warnings) or "none")]
    finish(f"quant_fusion_{isa}", {"isa": isa, "preset": preset, "rows": rows, "timing": timing,
                                   "fp32_p50_ms": base.stats.p50_ms}, lines)


if __name__ == "__main__":
    main()
