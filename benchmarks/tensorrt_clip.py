"""TensorRT on CLIP ViT-B/32 (architecture, random init): TensorRT FP16 and INT8 engines vs torch eager FP32 and
ONNX Runtime CUDA (FP32), image and text towers, batch 1 / 8 / 32, interleaved in one run. Needs an NVIDIA GPU.

    .venv/bin/python benchmarks/tensorrt_clip.py            # on a machine with tensorrt + a CUDA build of torch

Everything goes through the library: ``mmdk.export(target="tensorrt")`` builds and verifies the engines (FP16:
strongly typed FP16 graph with FP32 I/O; INT8: ``--preset tensorrt`` QDQ calibrated on 128 synthetic-shape images
through CLIP's own image processor and random token ids), ``mmdk.bench(target="gpu")`` times every artifact in
interleaved rounds with CUDA events and reports each one's speedup over torch eager FP32 with a confidence
interval. Target (issue 11): TensorRT FP16 >= 3x torch eager FP32 on the image tower.
Results: ``benchmarks/results/tensorrt_clip.{json,md}``. Without a GPU + TensorRT it says so and exits 3.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = [1, 8, 32]
TARGET_FP16_VISION = 3.0
IO = {"towers": {
    "vision": {"module": "vision", "inputs": [{"name": "pixel_values", "modality": "image", "dtype": "float32",
                                              "shape": ["batch", 3, 224, 224]}], "outputs": ["image_embeds"]},
    "text": {"module": "text", "inputs": [
        {"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", 77], "range": [0, 49408]},
        {"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", 77], "range": [1, 2]}],
        "outputs": ["text_embeds"]}},
    "dims": {"batch": {"min": 1, "opt": 8, "max": 32}}}


def clip_b32():
    """Factory: CLIP ViT-B/32's architecture (transformers' CLIPConfig defaults), random init, two towers."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(projection_dim=512)).eval()

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = clip

        def forward(self, pixel_values):
            return torch.nn.functional.normalize(self.clip.get_image_features(pixel_values=pixel_values), dim=-1)

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = clip

        def forward(self, input_ids, attention_mask):
            return torch.nn.functional.normalize(
                self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask), dim=-1)

    class Root(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision, self.text = Vision(), Text()

    return Root().eval()


def calibration(tmp: Path) -> Path:
    """128 synthetic-shape images through CLIP's image processor + random token ids, as an .npz."""
    import mmdeploy_kit as mmdk
    from transformers import CLIPImageProcessor

    from mmdeploy_kit.runtime.preprocess import load_image_reader
    from mmdeploy_kit.data.manifest import load_manifest
    from mmdeploy_kit.model.iospec import SpecFile

    data = mmdk.synth_data(tmp / "data", n_train=192, n_val=16, image_size=64)
    proc = tmp / "processor"
    CLIPImageProcessor().save_pretrained(str(proc))
    reader = load_image_reader(proc, SpecFile.parse(IO).towers["vision"], "pixel_values")
    pixels = reader([s.image for s in load_manifest(data / "train.jsonl")])
    rng = np.random.default_rng(0)
    path = tmp / "calib.npz"
    np.savez(path, pixel_values=pixels, input_ids=rng.integers(0, 49408, (len(pixels), 77)),
             attention_mask=np.ones((len(pixels), 77), np.int64))
    return path


def main() -> int:
    from mmdeploy_kit.runtime import trt_env

    caps = trt_env.detect()
    if not caps.can_build:
        print("tensorrt_clip: nothing measured: " + "; ".join(caps.missing())
              + " (run it on an NVIDIA GPU machine with the tensorrt package and a CUDA build of torch)",
              file=sys.stderr)
        return 3
    import mmdeploy_kit as mmdk

    tmp = Path(tempfile.mkdtemp(prefix="mmdk-bench-trt-"))
    print(f"work dir {tmp}; {', '.join(caps.gpu_names)}; TensorRT {caps.tensorrt_version}")
    factory = f"{Path(__file__).resolve()}:clip_b32"
    log = lambda m: print("  ·", m)  # noqa: E731
    mmdk.export(factory, tmp / "onnx_fp32", io=IO, progress=log)
    mmdk.export(factory, tmp / "trt_fp16", target="tensorrt", precision="fp16", io=IO, progress=log)
    mmdk.export(factory, tmp / "trt_int8", target="tensorrt", precision="int8", calib_data=str(calibration(tmp)),
                io=IO, progress=log)
    artifacts = [f"trt_fp16={tmp / 'trt_fp16'}", f"trt_int8={tmp / 'trt_int8'}", f"ort_cuda_fp32={tmp / 'onnx_fp32'}"]
    timing = {"warmup_runs": 10, "min_runs": 50, "min_time_s": 1.0, "min_rounds": 10, "max_time_s": 120.0}
    report = mmdk.bench(artifacts, reference=f"torch_fp32={factory}", target="gpu", batch=BATCHES, timing=timing,
                        io=IO, progress=log, report=RESULTS / "tensorrt_clip.json",
                        markdown=RESULTS / "tensorrt_clip.md")
    rows = {}
    for r in report.latency:
        if r.speedup is not None:
            rows[(r.artifact, r.tower, r.batch)] = r.speedup
    print(f"\nspeedup vs torch eager FP32 ({report.environment.short()}), median of interleaved rounds [95% CI]:")
    for (art, tower, batch), sp in sorted(rows.items()):
        print(f"  {art:<14} {tower:<7} batch {batch:>2}: {sp.ratio:6.2f}x [{sp.ci_low:.2f}, {sp.ci_high:.2f}]")
    fp16_vision = [rows[k].ratio for k in rows if k[0] == "trt_fp16" and k[1] == "vision"]
    worst = min(fp16_vision) if fp16_vision else float("nan")
    ok = worst >= TARGET_FP16_VISION
    print(f"target: TensorRT FP16 >= {TARGET_FP16_VISION:g}x torch eager FP32 on the image tower at every batch: "
          f"{'MET' if ok else 'NOT MET'} (worst {worst:.2f}x)")
    for art in ("trt_fp16", "trt_int8"):
        man = json.loads((tmp / art / "mmdk_manifest.json").read_text())
        for a in man["artifacts"]:
            print(f"  {art} {a['tower']}: engine vs torch cosine_min {a['verification']['cosine_min']:.5f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
