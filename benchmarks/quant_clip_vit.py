"""Benchmark 1 (+3): CLIP ViT-B/32-architecture image tower (random init), mmdk INT8 vs torch eager FP32.

    .venv/bin/python benchmarks/quant_clip_vit.py          # ~6 min on 2 busy cores

Results go to ``benchmarks/results/quant_clip_vit_<isa>.{json,md}`` (``avx512_vnni`` / ``avx2`` / ``arm64``,
detected like ``mmdk quantize --target-cpu auto``). Besides the preset's choice for this ISA it measures the
other INT8 weight formats (U8S8 8-bit, U8S8 reduce_range, U8U8) so the per-ISA choice can be checked.

Target (issue 4): >= 3.5x faster than torch eager FP32 at batch 8 with cosine >= 0.999. mmdk uses its
default CPU preset (static QDQ INT8, MatMul/Gemm/Conv, per-channel weights, MinMax ranges from 128
calibration images of the synthetic shapes dataset, CLIP's own image processor at 224 px). Optimum's
ORTQuantizer (avx512_vnni preset) quantizes the same FP32 graph in the same run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quant_common import (bench_artifacts, embedding_accuracy, finish, optimum_json, optimum_line,  # noqa: E402
                          optimum_variants, timed_threads, timing_table)

IO = {"inputs": [{"name": "pixel_values", "modality": "image", "dtype": "float32", "shape": ["batch", 3, 224, 224]}],
      "outputs": ["image_embeds"], "dims": {"batch": [1, 32]}}


def vit_b32():
    """Factory: CLIPVisionModelWithProjection with ViT-B/32's architecture, random init, normalised embeds."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32, projection_dim=512)

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = CLIPVisionModelWithProjection(cfg)

        def forward(self, pixel_values):
            return torch.nn.functional.normalize(self.clip(pixel_values=pixel_values).image_embeds, dim=-1)

    return ImageTower().eval()


def main() -> None:
    import torch
    from transformers import CLIPImageProcessor

    import mmdeploy_kit as mmdk
    from mmdeploy_kit.runtime.preprocess import load_image_reader
    from mmdeploy_kit.data.manifest import load_manifest
    from mmdeploy_kit.model.iospec import IOSpec

    from mmdeploy_kit.passes.quantize.isa import cpu_int8_options, detect_isa

    isa = detect_isa()
    torch.set_num_threads(1)
    factory = f"{Path(__file__).resolve()}:vit_b32"
    tmp = Path(tempfile.mkdtemp(prefix="mmdk-bench-vit-"))
    print(f"work dir {tmp}")
    data = mmdk.synth_data(tmp / "data", n_train=192, n_val=64, image_size=64)
    proc = tmp / "processor"
    CLIPImageProcessor().save_pretrained(str(proc))  # CLIP's 224 px resize / crop / normalisation
    mmdk.export(factory, tmp / "fp32", io=IO)
    t0 = time.perf_counter()
    man = mmdk.quantize(tmp / "fp32", tmp / "int8", calib_data=data / "train.jsonl", processor=proc,
                        progress=lambda m: print("  ·", m))
    q_seconds = time.perf_counter() - t0
    art = man.artifacts[0]
    print(f"mmdk quantize: {q_seconds:.0f}s, {art.details['quantizer']['method']} INT8, held-out cosine "
          f"{art.verification['cosine']:.5f}")
    preset = cpu_int8_options("auto")
    variants = {"mmdk_u8s8": {"reduce_range": False, "weight_type": "int8"},
                "mmdk_u8s8_reduce_range": {"reduce_range": True, "weight_type": "int8"},
                "mmdk_u8u8": {"reduce_range": False, "weight_type": "uint8"}}
    variant_paths = {}
    for label, opts in variants.items():
        if opts == {k: preset[k] for k in opts}:
            continue  # that is the preset's own choice: mmdk_int8 above
        mmdk.quantize(tmp / "fp32", tmp / label, calib_data=data / "train.jsonl", processor=proc, min_cosine=-1, **opts)
        variant_paths[label] = tmp / label / "model.onnx"
    opt, opt_paths = optimum_variants(tmp / "fp32" / "model.onnx", tmp / "optimum")

    reader = load_image_reader(proc, IOSpec.model_validate(IO), "pixel_values")
    pixels = reader([s.image for s in load_manifest(data / "val.jsonl")])
    batches = [{"pixel_values": pixels[i:i + 8]} for i in range(0, len(pixels), 8)]
    model = mmdk.load(factory, io=IO).towers["model"].module
    ref = np.concatenate([model.run_numpy(b)["image_embeds"] for b in batches])
    paths = {"mmdk_int8": tmp / "int8" / "model.onnx", **variant_paths, "ort_fp32": tmp / "fp32" / "model.onnx",
             **opt_paths}
    accuracy = embedding_accuracy(ref, paths, batches, digits=6)
    timing = {"warmup_runs": 1, "min_runs": 6, "min_time_s": 0.5, "min_rounds": 6, "round_time_s": 0.05,
              "max_time_s": 150.0}
    timings = timed_threads(bench_artifacts(paths), f"torch={factory}", 8, None, io=IO, timing=timing, threads=(1,))

    lines = [f"# CLIP ViT-B/32 image tower (random init): mmdk INT8 vs torch eager FP32 and Optimum - {isa}", "",
             f"CPU ISA: **{isa}** (ONNX Runtime's INT8 kernels differ by ISA). mmdk_int8 is the cpu preset for "
             f"{isa}: reduce_range={preset['reduce_range']}, weights {preset['weight_type']}.", "",
             f"{len(pixels)} held-out synthetic images (CLIP preprocessing, 224 px); batch 8.", "",
             "| path | mean cosine vs torch FP32 | min cosine |", "|---|---|---|"]
    for label, a in accuracy.items():
        lines.append(f"| {label} | {a['cosine_mean']:.6f} | {a['cosine_min']:.6f} |")
    q = art.details["quantizer"]
    lines += ["", *timing_table(timings, "torch eager FP32"), "",
              f"mmdk: {q['method']} {q['format']}, ops {q['op_types']}, {q['calibration']} ranges from "
              f"{art.details['calibration_data']['n_calib']} images; quantize took {q_seconds:.0f}s.",
              optimum_line(opt)]
    finish(f"quant_clip_vit_{isa}", {"isa": isa, "preset": preset, "accuracy": accuracy, "timing_batch8": timings,
                              "mmdk": {"quantize_seconds": round(q_seconds, 1), "quantizer": q,
                                       "verification": art.verification},
                              "optimum": optimum_json(opt)}, lines)


if __name__ == "__main__":
    main()
