"""Every built-in CPU recipe on every dual-encoder family of the zoo (each ships its processors: a tokenizer plus an
image processor / feature extractor), through ``mmdk run`` as a user runs it, on the family's own modality of
synthetic data (images; audio clips for CLAP; frame folders for X-CLIP). Each run ends with exit 0 or 6 (a
budget out of reach on random weights), never an internal error or another exit.

Recipes: clip-cpu-best, clip-cpu-fp32-onnx, clip-cpu-int8, clip-prune-distill-int8, demo, fusion-classifier-int8
(the TensorRT ones stop with exit 3 before any work; tests/e2e/test_pipeline_cli.py). One test per family runs them
all with the session's step cache, so the shared ``export: {target: onnx}`` step is exported once. Data is tiny
(16 val / 24 train samples); the bench, clip-cpu-best's candidate timing and the distillation (4 steps) are short.

All 15 dual-encoder families run in CI: clip unmarked, the others marked slow (CI runs slow tests; ``-m "not slow"``
deselects them locally). What each adds: siglip2 (NaFlex patches), altclip (XLM-R text; OpenVINO output rank),
align (EfficientNet; OpenVINO pooling), blip (fused qkv), flava (image_config), xclip (video), clap (audio),
vision_text_dual_encoder (ViT patch Conv with a bias); siglip, chinese_clip, owlvit, owlv2, groupvit, metaclip2 are
near-duplicates of those.

Measured on 2 shared cores (AMD EPYC, load from other jobs ~3), 2026-12-03: the CI set 5.6 min (334 s: align 82 s,
altclip / siglip2 / clip ~40 s, clap 33 s, xclip 28 s, blip / vtde / flava ~22 s); the six near-duplicates another 3.0 min (183 s; groupvit 90 s, of which its clip-cpu-best
79 s), so the full matrix about 9 min. All 15 families x 6 recipes ended with exit 0 on 2026-12-03.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from mmdeploy_kit.pipeline.recipe import builtin_recipes
from tests.zoo.families import DUAL

# CPU recipes only: the TensorRT ones stop with exit 3 before any work (tests/e2e/test_pipeline_cli.py)
RECIPES = sorted(n for n in builtin_recipes() if "tensorrt" not in n and "jetson" not in n)
MODALITY = {"xclip": "video", "clap": "audio"}
FAST = ["--set", "bench.batch=[1,2]", "--set", "bench.warmup_runs=1", "--set", "bench.min_runs=2",
        "--set", "bench.min_time_s=0", "--set", "bench.min_rounds=2", "--set", "bench.max_time_s=5"]
# the same recipes with less timing / training: a short candidate timing in clip-cpu-best, 4 distillation steps
SMALL = {"clip-cpu-best": ["--set", "export.min_time_s=0", "--set", "export.min_rounds=2", "--set", "export.batch=2"],
         "clip-prune-distill-int8": ["--set", "prune.ratio=0.3", "--set", "distill.steps=4", "--set", "distill.batch=8"]}
# BLIP's vision tower can lose at most ~15% (its fused qkv keeps its width): a larger ratio is refused with exit 2
# naming the reachable maximum (tests/zoo/test_zoo.py), so its recipe run asks for 10%
PRUNE_RATIO = {"blip": "0.1"}
REPRESENTATIVE = {"clip"}


def _param(family: str):
    return family if family in REPRESENTATIVE else pytest.param(family, marks=pytest.mark.slow)


def _data(modality: str, out: Path) -> Path:
    from mmdeploy_kit.data.synth import synthesize_dataset
    from mmdeploy_kit.data.synth_media import synthesize_audio_dataset, synthesize_video_dataset

    if modality == "audio":
        return Path(synthesize_audio_dataset(out, n_train=24, n_val=16, sampling_rate=8000, duration=1.0, seed=0))
    if modality == "video":
        return Path(synthesize_video_dataset(out, n_train=24, n_val=16, image_size=32, num_frames=2, seed=0))
    return Path(synthesize_dataset(out, n_train=24, n_val=16, image_size=32, seed=0))


def _data_args(recipe: str, data: Path) -> list[str]:
    import yaml

    refs = yaml.safe_load(builtin_recipes()[recipe].read_text()).get("data") or {}
    files = {"calib": "train.jsonl", "train": "train.jsonl", "val": "val.jsonl"}
    return sum((["--data", f"{ref}={data / files[ref]}"] for ref in refs), [])


def test_recipes_cover_every_cpu_recipe():
    assert {"clip-cpu-fp32-onnx", "clip-cpu-int8", "clip-cpu-best", "clip-prune-distill-int8", "demo"} <= set(RECIPES)


@pytest.mark.parametrize("family", [_param(f) for f in DUAL])
def test_every_cpu_recipe_on_family(family: str, mmdk, tmp_path: Path):
    ckpt = DUAL[family](tmp_path / family)
    data = _data(MODALITY.get(family, "image"), tmp_path / "data")
    results = {}
    for recipe in RECIPES:
        out = tmp_path / recipe
        t0 = time.perf_counter()
        extra = ["--set", f"prune.ratio={PRUNE_RATIO[family]}"] if family in PRUNE_RATIO and "prune" in recipe else []
        r = mmdk("-q", "run", recipe, ckpt, "-o", out, *_data_args(recipe, data), *FAST, *SMALL.get(recipe, []), *extra)
        results[recipe] = (r.code, round(time.perf_counter() - t0, 1), r.error_lines[-1] if r.error_lines else "")
        sys.__stderr__.write(f"{family} {recipe} {results[recipe]}\n")
        if r.code == 0:
            assert (out / "run_report.json").is_file(), recipe
    bad = {k: v for k, v in results.items() if v[0] not in (0, 6) or "internal error" in v[2]
           or (v[0] == 6 and not v[2])}
    assert not bad, json.dumps(bad, indent=1)
