"""Regressions for what issue 18 saw: each test failed on the code before the fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper


def _man(out: Path) -> dict:
    return json.loads((out / "mmdk_manifest.json").read_text())


def _drifting_prepare(monkeypatch):
    """The TensorRT-ready ONNX made to drift from its source (noise on the weights), as INT8 does on real models."""
    from mmdeploy_kit.passes.export import tensorrt

    original = tensorrt.prepare_onnx

    def prepare(src: Path, dst: Path):
        info = original(src, dst)
        model = onnx.load(str(dst))
        rng = np.random.default_rng(0)
        for init in model.graph.initializer:
            w = numpy_helper.to_array(init)
            if w.dtype == np.float32 and w.ndim == 2:
                init.CopyFrom(numpy_helper.from_array(w + 0.3 * w.std() * rng.standard_normal(w.shape, dtype=np.float32),
                                                      init.name))
        onnx.save(model, str(dst))
        return info

    monkeypatch.setattr(tensorrt, "prepare_onnx", prepare)


def test_tensorrt_export_min_cosine_is_the_floor_its_hint_promises(mmdk, tiny_clip_dir, tmp_path, monkeypatch):
    """`--min-cosine` on `export --target tensorrt` reaches the bundle's ONNX check (it used the table's row only)."""
    _drifting_prepare(monkeypatch)
    args = ("export", tiny_clip_dir, "--target", "tensorrt", "--precision", "fp32", "--build", "defer",
            "--tower", "vision")
    r = mmdk(*args, "-o", tmp_path / "strict")
    assert r.code == 5 and r.one_line_error() and "--min-cosine" in r.err, r.err
    r = mmdk(*args, "--min-cosine", "0.2", "-o", tmp_path / "loose")
    assert r.code == 0, r.err
    (art,) = _man(tmp_path / "loose")["artifacts"]
    assert art["verification"]["min_cosine_required"] == 0.2
    assert 0.2 < art["verification"]["cosine_min"] < 0.9999


def _fixed_input_with_det(path: Path) -> Path:
    """``x: float[8]`` (a fixed dim, no batch axis) reshaped to 2x2x2 and fed to Det, which TensorRT cannot parse."""
    from onnx import TensorProto, helper

    shape = numpy_helper.from_array(np.array([2, 2, 2], dtype=np.int64), "s")
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["h"], name="rs"),
                           helper.make_node("Det", ["h"], ["y"], name="the_det")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=[shape])
    onnx.save(helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_tensorrt_lint_runs_before_the_graph_and_static_dims_stay(mmdk, tmp_path, monkeypatch):
    """The FP16 step used to run the graph first, on ``x`` cut to [1] (exit 2); the lint's exit 4 never came."""
    from mmdeploy_kit.passes.quantize import evaluate

    src = _fixed_input_with_det(tmp_path / "u.onnx")
    ran = []
    real = evaluate.run_outputs
    monkeypatch.setattr(evaluate, "run_outputs", lambda *a, **k: ran.append(1) or real(*a, **k))
    r = mmdk("export", src, "--target", "tensorrt", "--build", "defer", "-o", tmp_path / "a")
    assert r.code == 4 and r.one_line_error() and "Det node 'the_det'" in r.err, r.err
    assert ran == [] and not (tmp_path / "a").exists()
    r = mmdk("-q", "export", src, "--target", "tensorrt", "--build", "defer", "--allow-unsupported", "-o", tmp_path / "b")
    assert r.code == 0, r.err
    (art,) = _man(tmp_path / "b")["artifacts"]
    assert art["io_spec"]["inputs"][0]["shape"] == [8] and art["precision"] == "fp16"
    assert art["details"]["steps"]["quantize"]["cosine_min"] > 0.99


RECIPE_EXPORT_INT8 = """
data:
  calib: null
steps:
  - export: {target: onnx}
  - quantize: {precision: int8, calib_data: calib, calib_samples: 8, holdout_samples: 8}
"""


def test_a_cached_step_is_bound_to_this_runs_source(mmdk, small_data, tmp_path, cache):
    """The export cached from A/ckpt, the checkpoint moved to B/ckpt: quantize must find B's tokenizer (it looked in
    A/ckpt, named by the cached manifest, and failed); the manifest keeps where the cached output came from."""
    from conftest import build_captioned_clip

    a = build_captioned_clip(tmp_path / "A" / "ckpt", small_data, 1, 16, 0)
    r = mmdk("-q", "export", a, "-o", tmp_path / "a_onnx")
    assert r.code == 0, r.err
    b = tmp_path / "B" / "ckpt"
    b.parent.mkdir()
    a.rename(b)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE_EXPORT_INT8)
    r = mmdk("-q", "run", recipe, b, "--data", f"calib={small_data / 'train.jsonl'}", "-o", tmp_path / "run")
    assert r.code == 0, r.err
    rec = json.loads((tmp_path / "run" / "mmdk_run.json").read_text())
    assert [s["cached"] for s in rec["steps"]] == [True, False]
    from mmdeploy_kit.pipeline.cache import StepCache

    assert StepCache(cache / "steps").lookup(rec["steps"][0]["key"]) is not None  # the entry was not written through
    exported = _man(tmp_path / "run" / "01-export")
    assert exported["source"]["path"] == str(b) and exported["source"]["hf_dir"] == str(b.resolve())
    assert exported["source"]["cached_from"]["hf_dir"] == str(a.resolve())
    quantized = _man(tmp_path / "run" / "02-quantize")
    assert quantized["source"]["hf_dir"] == str(b.resolve())
    assert "tokenizer from " + str(b.resolve()) in json.dumps(quantized["artifacts"])


@pytest.mark.slow  # a separate mmdk process killed with SIGKILL after its first checkpoint (~25 s on 2 busy cores)
def test_a_recipe_distill_step_resumes_after_kill_9(clip_teacher_student, tmp_path, cache):
    """Checkpoints and resume reached only the `mmdk distill` verb (through an untyped side channel)."""
    pair = clip_teacher_student
    recipe = tmp_path / "d.yaml"
    recipe.write_text(f"steps:\n  - distill: {{data: {pair.data / 'train.jsonl'}, steps: 3000, batch: 8, lr: 1.0e-3, "
                      "checkpoint_every: 5, max_minutes: 0.05}\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mmdeploy_kit.cli", "-q", "run", str(recipe), str(pair.student), "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob(".checkpoints/*/LATEST")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(out.glob(".checkpoints/*/LATEST")) and not (out / "01-distill").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = _man(out / "01-distill")["metrics"]
    assert metrics["resumed_from_step"] >= 5 and metrics["steps"] >= metrics["resumed_from_step"]
    assert not (out / ".checkpoints").exists()  # the output holds the kept weights


def test_bench_off_a_terminal_writes_no_progress_frames(mmdk, tiny_clip_dir, tmp_path):
    """`mmdk bench ... 2>log`: the log gets lines, never tqdm's carriage-return frames."""
    r = mmdk("-q", "export", tiny_clip_dir, "--tower", "text", "-o", tmp_path / "onnx")
    assert r.code == 0, r.err
    r = mmdk("bench", tmp_path / "onnx" / "text.onnx", "--batch", "1", "--min-time", "0.02", "--min-runs", "3",
             "--min-rounds", "3", "--warmup", "1", "--threads", "1")
    assert r.code == 0, r.err
    assert "\r" not in r.err and "round/s" not in r.err


def test_fp16_records_when_its_overflow_check_could_not_run(mmdk, tmp_path, monkeypatch):
    """Shape inference failing made the overflow check silently find nothing; the manifest now says it did not run."""
    import onnx.shape_inference

    src = _fixed_input_with_det(tmp_path / "u.onnx")
    r = mmdk("-q", "quantize", src, "--precision", "fp16", "-o", tmp_path / "ok")
    assert r.code == 0, r.err
    check = _man(tmp_path / "ok")["artifacts"][0]["details"]["fp16"]["overflow_check"]
    assert check["ran"] and check["tensors_checked"] >= 1

    def failing(model, *a, **k):
        raise RuntimeError("[ShapeInferenceError] (simulated) cannot infer")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", failing)
    r = mmdk("-q", "quantize", src, "--precision", "fp16", "--force", "-o", tmp_path / "q")  # not the cached step
    assert r.code == 0, r.err
    check = _man(tmp_path / "q")["artifacts"][0]["details"]["fp16"]["overflow_check"]
    assert check["ran"] is False and "shape inference failed" in check["reason"] and check["tensors_checked"] == 0


def test_a_pass_needing_another_asks_the_runner_for_a_cached_recorded_sub_step(mmdk, tiny_clip_dir, tmp_path, cache):
    """quantize on a torch checkpoint ran the ONNX export pass itself: outside the cache and the run record."""
    r = mmdk("-q", "quantize", tiny_clip_dir, "--precision", "fp16", "-o", tmp_path / "fp16")
    assert r.code == 0, r.err
    (first,) = _man(tmp_path / "fp16")["metrics"]["substeps"]
    assert first["pass_name"] == "export_onnx" and first["cached"] is False
    r = mmdk("-q", "quantize", tiny_clip_dir, "--precision", "int8", "--method", "dynamic", "-o", tmp_path / "int8")
    assert r.code == 0, r.err
    (again,) = _man(tmp_path / "int8")["metrics"]["substeps"]
    assert again["cached"] is True and again["key"] == first["key"]  # the export is not redone for another precision


def test_recipe_order_checks_reason_from_the_format_the_config_writes(tiny_clip_dir):
    """`quantize --backend inc` writes .pt2 torch towers but was declared `onnx`, so order checks reasoned wrongly."""
    from mmdeploy_kit.pipeline.recipe import load_recipe
    from mmdeploy_kit.pipeline.validate import plan_recipe

    recipe = {"steps": [{"quantize": {"backend": "inc", "precision": "int8"}}, {"export": {"target": "onnx"}}]}
    plan = plan_recipe(load_recipe(recipe), tiny_clip_dir, preflight=False)
    assert [s.input_format for s in plan.steps] == ["torch", "torch"]
    ort = plan_recipe(load_recipe({"steps": [{"quantize": {"precision": "fp16"}}]}), tiny_clip_dir, preflight=False)
    assert ort.steps[0].pass_cls.output_format(ort.steps[0].config) == "onnx"
