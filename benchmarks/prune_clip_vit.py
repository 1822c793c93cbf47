"""Issue 10: CLIP ViT-B/32-architecture image tower (random init), 40% of its parameters pruned (heads + MLP,
magnitude importance, widths rounded to 8) -> ONNX FP32 speed vs the unpruned ONNX FP32 at batch 8.

    .venv/bin/python benchmarks/prune_clip_vit.py          # ~10 min on 2 busy cores

Both ONNX files are timed by ``mmdk bench`` in one interleaved run (rounds alternate between them, the ratio
comes with a 95% CI), ONNX Runtime CPU, 1 thread. Results: ``benchmarks/results/prune_clip_vit.{json,md}``
with the CPU ISA next to the figure. Random weights: the cosine vs the unpruned tower says nothing about a
trained model (distillation restores accuracy; see ``prune_distill_demo.py``); the speed figure is what counts.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def build(path: Path) -> Path:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32, projection_dim=512)
    CLIPVisionModelWithProjection(cfg).eval().save_pretrained(str(path), safe_serialization=True)
    return path


def main() -> None:
    import mmdeploy_kit as mmdk
    from mmdeploy_kit.passes.quantize.isa import detect_isa

    isa = detect_isa()
    tmp = Path(tempfile.mkdtemp(prefix="mmdk-bench-prune-"))
    print(f"work dir {tmp}; CPU ISA {isa}")
    src = build(tmp / "vit-b32")
    t0 = time.perf_counter()
    man = mmdk.prune(src, tmp / "pruned", ratio=0.4, round_to=8, progress=lambda m: print("  ·", m), force=True)
    prune_s = time.perf_counter() - t0
    art = man.artifacts[0]
    d = art.details
    print(f"pruned in {prune_s:.0f}s: {d['params_before']:,} -> {d['params_after']:,} parameters "
          f"(-{d['removed_fraction']:.1%}), cosine vs unpruned {art.verification['vs_unpruned']['cosine_min']:.4f}")
    heads = sorted({v["heads"] for v in d["layers"].values() if v["kind"] == "heads"})
    widths = sorted({v["width"] for v in d["layers"].values() if v["kind"] == "mlp"})
    mmdk.export(src, tmp / "onnx_unpruned", force=True)
    exp = mmdk.export(tmp / "pruned", tmp / "onnx_pruned", force=True)
    timing = {"warmup_runs": 2, "min_runs": 8, "min_time_s": 0.5, "min_rounds": 8, "max_time_s": 240.0}
    r = mmdk.bench([f"pruned={tmp / 'onnx_pruned'}"], reference=f"unpruned={tmp / 'onnx_unpruned'}", batch=[8],
                   threads=1, timing=timing, quiet=True)
    sp = r.speedups["pruned"]
    result = {
        "what": "CLIP ViT-B/32 image tower (random init), mmdk prune --ratio 0.4 --round-to 8 (magnitude), "
                "ONNX Runtime FP32 pruned vs unpruned, batch 8, 1 thread, one interleaved run",
        "cpu_isa": isa, "params_before": d["params_before"], "params_after": d["params_after"],
        "removed_fraction": d["removed_fraction"], "heads_per_layer": heads, "mlp_widths": widths,
        "prune_seconds": round(prune_s, 1), "cosine_vs_unpruned": art.verification["vs_unpruned"]["cosine_min"],
        "onnx_export_cosine_min": exp.artifacts[0].verification["cosine_min"],
        "speedup": sp.ratio, "speedup_ci95": [sp.ci_low, sp.ci_high], "confidence": sp.confidence,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prune_clip_vit.json").write_text(json.dumps(result, indent=2) + "\n")
    line = (f"ONNX FP32 pruned (-{d['removed_fraction']:.1%} params) vs unpruned, batch 8: {sp.ratio:.2f}x "
            f"[{sp.ci_low:.2f}, {sp.ci_high:.2f}] (95% CI), CPU ISA {isa}")
    (RESULTS / "prune_clip_vit.md").write_text(
        "# prune_clip_vit\n\n" + result["what"] + "\n\n"
        f"- parameters {d['params_before']:,} -> {d['params_after']:,} (-{d['removed_fraction']:.1%}); heads per "
        f"layer {heads}, MLP widths {widths}\n- {line}\n- cosine vs unpruned (random weights, before any "
        f"distillation) {result['cosine_vs_unpruned']:.4f}; pruned ONNX vs pruned torch "
        f"{result['onnx_export_cosine_min']:.6f}\n")
    print(line)


if __name__ == "__main__":
    main()
