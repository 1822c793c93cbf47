"""Every built-in CPU recipe on every dual-encoder family of the zoo (each ships its processors: tokenizer plus
image processor / feature extractor), through ``mmdk run`` as a user runs it, on the family's own modality of
synthetic data (images; audio clips for CLAP; frame folders for X-CLIP). Each run ends with exit 0 or 6 (a
budget out of reach on random weights), never an internal error.

One test per family runs all recipes with the session's step cache, so the shared ``export: {target: onnx}``
step is exported once and reused by the recipes after it. Data is tiny (16 val / 24 train samples), the
distillation runs 4 steps and the bench a couple of rounds.

Runtime measured on 2 shared cores (AMD EPYC, 2 threads): see RUNTIME below; ``clip`` runs by default, the
other families are marked slow (CI runs them).
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
REPRESENTATIVE = {"clip"}


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


@pytest.mark.parametrize("family", [f if f in REPRESENTATIVE else pytest.param(f, marks=pytest.mark.slow)
                                    for f in DUAL])
def test_every_cpu_recipe_on_family(family: str, mmdk, tmp_path: Path):
    ckpt = DUAL[family](tmp_path / family)
    data = _data(MODALITY.get(family, "image"), tmp_path / "data")
    results = {}
    for recipe in RECIPES:
        out = tmp_path / recipe
        t0 = time.perf_counter()
        r = mmdk("-q", "run", recipe, ckpt, "-o", out, *_data_args(recipe, data), *FAST, *SMALL.get(recipe, []))
        results[recipe] = (r.code, round(time.perf_counter() - t0, 1), r.error_lines[-1] if r.error_lines else "")
        sys.__stderr__.write(f"{family} {recipe} {results[recipe]}\n")
        if r.code == 0:
            assert (out / "run_report.json").is_file(), recipe
    bad = {k: v for k, v in results.items() if v[0] not in (0, 6) or "internal error" in v[2]
           or (v[0] == 6 and not v[2])}
    assert not bad, json.dumps(bad, indent=1)
