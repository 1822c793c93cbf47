"""`mmdk run` / `mmdk recipes` end to end on a tiny CLIP built in the test: cache, resume, validation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_bench_cli import add_processor  # noqa: E402  (same folder)

FAST = ["--set", "bench.batch=[1,2]", "--set", "bench.warmup_runs=1", "--set", "bench.min_runs=2",
        "--set", "bench.min_time_s=0", "--set", "bench.min_rounds=2", "--set", "bench.max_time_s=5"]


@pytest.fixture(scope="module")
def clip_with_data(tiny_clip_dir, tmp_path_factory):
    """(CLIP dir with tokenizer + image processor, val manifest, calib .npz-free data dir)."""
    from mmdeploy_kit.data.synth import synthesize_dataset

    work = tmp_path_factory.mktemp("pipe")
    data = Path(synthesize_dataset(work / "data", n_train=16, n_val=16, image_size=32, seed=0))
    clip = work / "clip"
    shutil.copytree(tiny_clip_dir, clip)
    add_processor(clip, data)
    return clip, data


def _run_record(out: Path) -> dict:
    return json.loads((out / "mmdk_run.json").read_text())


def test_recipe_runs_then_reruns_from_cache_and_reruns_only_changed_steps(mmdk, clip_with_data, tmp_path,
                                                                           monkeypatch):
    clip, data = clip_with_data
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "run"
    args = ["run", "clip-cpu-fp32-onnx", clip, "-o", out, "--data", f"val={data / 'val.jsonl'}", *FAST]
    r = mmdk(*args)
    assert r.code == 0, r.err
    assert "[1/2] export" in r.err and "[2/2] bench" in r.err
    rec = _run_record(out)
    assert [s["name"] for s in rec["steps"]] == ["export", "bench"]
    assert [s["cached"] for s in rec["steps"]] == [False, False]
    assert (out / "01-export" / "vision.onnx").is_file() and (out / "02-bench" / "bench.json").is_file()
    for s in rec["steps"]:
        assert s["key"].startswith(s["pass_name"]) and len(s["input_sha256"]) == 64
    assert "val" not in rec["steps"][0]["data_sha256"] and "data" in rec["steps"][1]["data_sha256"]
    # provenance: the ONNX manifest carries the step key, the waterfall shows the bench figures
    man = json.loads((out / "01-export" / "mmdk_manifest.json").read_text())
    assert man["metrics"]["step"]["key"] == rec["steps"][0]["key"]
    rows = json.loads((out / "run_report.json").read_text())["waterfall"]
    assert [x["step"] for x in rows] == ["source", "export"]
    assert rows[1]["speedup"] is not None and rows[1]["task_metric"] == "zero_shot_top1"
    assert "mmdk run" in summary.read_text() and (out / "run_report.html").is_file()

    # a bench timed on a noisy/busy machine is not kept (this tiny one usually is noisy): it then runs again
    from mmdeploy_kit.artifacts import Manifest
    from mmdeploy_kit.passes.bench_step import BenchPass

    bench_kept = BenchPass.cacheable(Manifest.read(out / "02-bench"))
    t0 = time.perf_counter()
    r2 = mmdk(*args)
    assert r2.code == 0, r2.err
    assert [s["cached"] for s in _run_record(out)["steps"]] == [True, bench_kept]
    assert "export cached" in r2.err

    # one option changed: that step and those after it run again, the ones before come from the cache
    r3 = mmdk(*args, "--set", "bench.batch=[1]")
    assert r3.code == 0, r3.err
    assert [s["cached"] for s in _run_record(out)["steps"]] == [True, False]
    # a data file's content changed (same path): the step that reads it runs again
    val = data / "val.jsonl"
    backup = val.read_text()
    try:
        val.write_text("\n".join(backup.splitlines()[:-1]) + "\n")
        r4 = mmdk(*args)
        assert r4.code == 0, r4.err
        assert [s["cached"] for s in _run_record(out)["steps"]] == [True, False]
    finally:
        val.write_text(backup)
    r5 = mmdk(*args, "--force")
    assert r5.code == 0 and [s["cached"] for s in _run_record(out)["steps"]] == [False, False]
    assert time.perf_counter() - t0 > 0


def test_dry_run_validates_and_writes_nothing(mmdk, clip_with_data, tmp_path):
    clip, data = clip_with_data
    out = tmp_path / "nothing"
    r = mmdk("run", "clip-cpu-int8", clip, "-o", out, "--data", f"calib={data / 'train.jsonl'}",
             "--data", f"val={data / 'val.jsonl'}", "--dry-run", "--set", "quantize.precision=fp16")
    assert r.code == 0, r.err
    assert "[2] quantize (quantize" in r.out and "precision=fp16" in r.out and "dry run" in r.out
    assert not out.exists()


def _recipe(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, expect", [
    ("steps:\n  - export: {target: onnx}\n  - quantize:\n      precison: int8\n",
     "line 4: unknown option 'precison' for step 'quantize' (did you mean 'precision'?)"),
    ("steps:\n  - exprot: {target: onnx}\n", "line 2: unknown pass 'exprot'"),
    ("steps:\n  - export: {target: onnx}\n  - quantize: {calib_data: calib}\n",
     "is neither a data name (none defined) nor an existing path"),
    ("data: {calib: missing/train.jsonl}\nsteps:\n  - quantize: {calib_data: calib}\n",
     "line 1: data 'calib' points at"),
    ("steps:\n  - export: {target: onnx, towers: [audio]}\n", "names tower 'audio'"),
    ("steps:\n  - quantize: {precision: fp16}\n  - export: {target: onnx}\n",
     "step 'export' (export_onnx) takes a torch model, but step 'quantize' gives onnx"),
    ("stpes:\n  - export: {}\n", "unknown recipe key 'stpes' (did you mean 'steps'?)"),
    ("steps:\n  - bench: {batch: [1, 2]}\n  - bench: {batch: [1]}\n  - quantize: {precison: x}\n",
     "unknown option 'precison' for step 'quantize'"),
])
def test_validation_errors_are_one_line_with_the_line_and_nothing_is_created(mmdk, clip_with_data, tmp_path, text,
                                                                              expect):
    clip, _ = clip_with_data
    out = tmp_path / "out"
    r = mmdk("run", _recipe(tmp_path, text), clip, "-o", out)
    assert r.code == 2, r.err
    assert r.one_line_error() and expect in r.err, r.err
    assert not out.exists()


def test_forbidden_order_prune_after_quantize(mmdk, clip_with_data, tmp_path):
    from mmdeploy_kit.passes.registry import PASS_REGISTRY

    if "prune" not in PASS_REGISTRY:
        pytest.skip("the prune pass is not registered")
    clip, _ = clip_with_data
    r = mmdk("run", _recipe(tmp_path, "steps:\n  - quantize: {precision: fp16}\n  - prune: {ratio: 0.3}\n"), clip, "-o",
             tmp_path / "o", "--dry-run")
    assert r.code == 2 and "may not follow step 'quantize'" in r.err, r.err


def test_set_addresses_the_second_step_of_a_kind_and_unknown_steps_fail(mmdk, clip_with_data, tmp_path):
    clip, _ = clip_with_data
    p = _recipe(tmp_path, "steps:\n  - export: {target: onnx}\n  - bench: {batch: [1]}\n  - bench: {batch: [1]}\n")
    r = mmdk("run", p, clip, "--dry-run", "--set", "bench#2.batch=[2,4]")
    assert r.code == 0, r.err
    assert "batch=(2, 4)" in r.out.splitlines()[3]
    bad = mmdk("run", p, clip, "--dry-run", "--set", "bench#3.batch=[2]")
    assert bad.code == 2 and "no step named 'bench#3'" in bad.err


def test_verb_save_recipe_replays_through_the_cache(mmdk, clip_with_data, tmp_path):
    clip, _ = clip_with_data
    recipe = tmp_path / "export.yaml"
    r = mmdk("export", clip, "--target", "onnx", "--opset", "17", "--tower", "vision", "-o", tmp_path / "e",
             "--save-recipe", recipe)
    assert r.code == 0, r.err
    text = recipe.read_text()
    assert "export:" in text and "target: onnx" in text and "vision" in text and str(clip.resolve()) in text
    r2 = mmdk("run", recipe, "-o", tmp_path / "replay")
    assert r2.code == 0, r2.err
    assert _run_record(tmp_path / "replay")["steps"][0]["cached"] is True  # same key as the verb's own run


def test_builtin_recipes_list_show_schema(mmdk):
    import jsonschema
    import yaml

    from mmdeploy_kit.pipeline.recipe import builtin_recipes

    r = mmdk("recipes", "list")
    assert r.code == 0
    names = set(builtin_recipes())
    assert {"clip-cpu-int8", "clip-cpu-fp32-onnx", "fusion-classifier-int8", "demo"} <= names
    assert all(n in r.out for n in names)
    schema = json.loads(mmdk("recipes", "schema").out)
    for path in builtin_recipes().values():
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    assert "steps:" in mmdk("recipes", "show", "clip-cpu-int8").out
    bad = {"steps": [{"quantize": {"precison": "int8"}}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _builtin_cases():
    from mmdeploy_kit.pipeline.recipe import builtin_recipes

    return sorted(builtin_recipes())


@pytest.mark.parametrize("name", _builtin_cases())
def test_every_builtin_recipe_validates(mmdk, name, clip_with_data, late_fusion_factory, tmp_path):
    clip, data = clip_with_data
    model = [clip]
    if name.startswith("fusion"):
        src, io = late_fusion_factory
        model = [src, "--io", io]
    datas = []
    for ref in ("calib", "train", "val"):
        datas += ["--data", f"{ref}={data / ('val.jsonl' if ref == 'val' else 'train.jsonl')}"]
    r = mmdk("run", name, *model, "--dry-run", *datas)
    assert r.code == 0, r.err
    assert "dry run" in r.out


def test_resume_after_kill_9_reuses_finished_steps(clip_with_data, tmp_path):
    """A real run is killed (SIGKILL) in step 2; the same command again takes step 1 from the cache."""
    clip, data = clip_with_data
    recipe = _recipe(tmp_path, "steps:\n  - export: {target: onnx}\n"
                               "  - quantize: {precision: int8, method: dynamic}\n"
                               "  - bench: {batch: [1], warmup_runs: 1, min_runs: 2, min_time_s: 0, min_rounds: 2}\n")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mmdeploy_kit.cli", "run", str(recipe), str(clip), "-o", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_in = None
    while time.time() < deadline and proc.poll() is None:
        try:
            steps = _run_record(out)["steps"]
        except (FileNotFoundError, ValueError, KeyError):
            steps = []
        running = [s["name"] for s in steps if s["status"] == "running"]
        if running and running[0] != "export":
            os.kill(proc.pid, signal.SIGKILL)
            killed_in = running[0]
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_in == "quantize", "the run finished before it could be killed in step 2"
    assert not (out / "02-quantize").exists()  # nothing half-written
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rec = _run_record(out)
    assert [s["cached"] for s in rec["steps"]] == [True, False, False]
    assert (out / "02-quantize" / "vision.onnx").is_file()


@pytest.mark.slow
def test_cpu_builtin_recipes_run_end_to_end(mmdk, clip_with_data, late_fusion_factory, tmp_path):
    """clip-cpu-int8 on a tiny CLIP and fusion-classifier-int8 on the late-fusion factory model, for real.
    Budgets are loosened: random weights make task metrics on 16 samples jump by whole samples."""
    import numpy as np

    import mmdeploy_kit as mk

    clip, data = clip_with_data
    out = tmp_path / "clip"
    r = mmdk("run", "clip-cpu-int8", clip, "-o", out, "--data", f"calib={data / 'train.jsonl'}",
             "--data", f"val={data / 'val.jsonl'}", "--set", "quantize.accuracy_budget=['cosine>=0.9']",
             "--set", "bench.max_accuracy_drop=null", *FAST)
    assert r.code == 0, r.err
    rec = _run_record(out)
    assert [s["name"] for s in rec["steps"]] == ["export", "quantize", "bench"]
    q = json.loads((out / "02-quantize" / "mmdk_manifest.json").read_text())
    assert {a["precision"] for a in q["artifacts"]} == {"int8"}
    assert [h["pass_name"] for h in q["history"]][-1] == "export_onnx"
    rows = json.loads((out / "run_report.json").read_text())["waterfall"]
    assert [x["step"] for x in rows] == ["source", "export", "quantize"] and rows[2]["speedup"] is not None

    src, io = late_fusion_factory
    spec = mk.load(src, io=io).towers["model"].spec
    calib = tmp_path / "calib.npz"
    parts = [spec.dummy_inputs({"batch": 8, "seq": 8}, seed=i) for i in range(6)]
    np.savez(calib, **{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    out2 = tmp_path / "fusion"
    r2 = mmdk("run", "fusion-classifier-int8", src, "--io", io, "-o", out2, "--data", f"calib={calib}",
              "--set", "quantize.accuracy_budget=['cosine>=0.9']", *FAST)
    assert r2.code == 0, r2.err
    assert [s["cached"] for s in _run_record(out2)["steps"]] == [False, False, False]

    # prune -> distill (the teacher is the source model) -> INT8 -> bench, a few steps of everything
    out3 = tmp_path / "small"
    r3 = mmdk("run", "clip-prune-distill-int8", clip, "-o", out3, "--data", f"train={data / 'train.jsonl'}",
              "--data", f"val={data / 'val.jsonl'}", "--set", "prune.ratio=0.3", "--set", "distill.steps=4",
              "--set", "distill.batch=8", "--set", "quantize.min_cosine=0.5", *FAST)
    assert r3.code == 0, r3.err
    rows = json.loads((out3 / "run_report.json").read_text())["waterfall"]
    assert [x["step"] for x in rows] == ["source", "prune", "distill", "quantize"]
    assert rows[1]["parameters"] < 0.8 * rows[0]["parameters"]
    d = json.loads((out3 / "02-distill" / "mmdk_manifest.json").read_text())
    assert [h["pass_name"] for h in d["history"]][-1] == "prune"
    # the same recipe into a new directory: the training step comes from the cache (its checkpoint folder was
    # never made there, which once made the cleanup fail)
    out4 = tmp_path / "small-again"
    r4 = mmdk("run", "clip-prune-distill-int8", clip, "-o", out4, "--data", f"train={data / 'train.jsonl'}",
              "--data", f"val={data / 'val.jsonl'}", "--set", "prune.ratio=0.3", "--set", "distill.steps=4",
              "--set", "distill.batch=8", "--set", "quantize.min_cosine=0.5", *FAST)
    assert r4.code == 0, r4.err
    assert [s["cached"] for s in _run_record(out4)["steps"]][:2] == [True, True]
    assert not (out4 / ".checkpoints").exists()


def test_gpu_recipe_dry_run_warns_and_a_real_run_exits_3_before_any_work(mmdk, clip_with_data, tmp_path):
    """No GPU/TensorRT here: the dry run validates and says what would stop; the run stops before writing."""
    from mmdeploy_kit.runtime.trt_env import detect

    if detect().can_build:
        pytest.skip("this machine can build TensorRT engines")
    clip, data = clip_with_data
    dry = mmdk("run", "clip-gpu-fp16-tensorrt", clip, "--data", f"val={data / 'val.jsonl'}", "--dry-run")
    assert dry.code == 0 and "would stop here (exit 3)" in dry.out, dry.out
    out = tmp_path / "trt"
    r = mmdk("run", "clip-gpu-fp16-tensorrt", clip, "--data", f"val={data / 'val.jsonl'}", "-o", out)
    assert r.code == 3 and r.one_line_error() and "NVIDIA GPU" in r.err, r.err
    assert not out.exists()
