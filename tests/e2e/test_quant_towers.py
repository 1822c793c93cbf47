"""Quantize regressions on tower kinds the CLIP demo never meets: a ViT patch Conv *with* a bias in the
sensitivity search, and a multi-tower request where one tower has nothing for its INT8 method to do."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import mmdeploy_kit as mmdk_api  # noqa: E402

FIX = "tests/fixtures"


@pytest.fixture(autouse=True)
def _own_cache(cache):
    """Step-cache entries go to this test's tmp dir."""


def test_sensitivity_surgery_restores_a_vit_patch_conv_with_a_bias(tiny_vtde_dir, tmp_path):
    """ViT's patch Conv has a bias (CLIP's has none); the exporter shares that (zero) bias initializer with
    LayerNorm biases and MatMul Adds, so its DequantizeLinear output feeds many nodes. restore_fp32 used to
    raise 'cannot restore ... bias to FP32: it is produced by DequantizeLinear'; now the Conv gets the float
    bias under its own name and the result equals re-quantizing with the Conv excluded."""
    import onnx

    from mmdeploy_kit.passes.quantize.config import QuantizeConfig, TowerPlan
    from mmdeploy_kit.passes.quantize.graph import restore_fp32
    from mmdeploy_kit.passes.quantize.ort_int8 import Int8Quantizer, prepare_fp32
    from mmdeploy_kit.runtime.backends.ort import ort_session

    exp = tmp_path / "exp"
    mmdk_api.export(tiny_vtde_dir, exp, towers=["vision"])
    prep = tmp_path / "prep.onnx"
    prepare_fp32(exp / "vision.onnx", prep)
    spec = mmdk_api.load(exp).towers["vision"].spec
    calib = [spec.dummy_inputs({"batch": 4}, seed=k) for k in range(4)]
    q = Int8Quantizer(prep, TowerPlan("vision", "int8", method="static"), "static", QuantizeConfig(), calib,
                      tmp_path / "w")
    conv = next(c.name for c in q.candidates if c.op_type == "Conv")
    assert any(len(n.input) == 3 for n in q.model.graph.node if n.name == conv)  # the Conv has a bias
    full = onnx.load(str(q.quantize([], tmp_path / "full.onnx")))
    onnx.save(restore_fp32(full, q.model, [conv]), str(tmp_path / "surgery.onnx"))
    q.quantize([conv], tmp_path / "excluded.onnx")
    feeds = spec.dummy_inputs({"batch": 3}, seed=99)
    outs = [ort_session(tmp_path / f).run(None, feeds)[0] for f in ("surgery.onnx", "excluded.onnx", "full.onnx")]
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-5)
    assert not np.allclose(outs[0], outs[2], atol=1e-7)


def test_budget_search_on_a_vit_dual_encoder_runs(mmdk, tiny_vtde_dir, tmp_path):
    """The accuracy-aware search over a ViT tower (the flagship recipe's path) ends with the budget held."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", pixel_values=rng.standard_normal((24, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "q"
    r = mmdk("quantize", tiny_vtde_dir, "--tower", "vision", "--method", "static", "--calib-data", tmp_path / "calib.npz",
             "--accuracy-budget", "vision:cosine>=0.99999", "--max-fp32-fraction", "1.0", "--sensitivity", "node",
             "-o", out)
    assert r.code in (0, 6) and "internal error" not in r.err, r.err  # 6: budget out of reach, never a crash
    if r.code == 0:
        man = json.loads((out / "mmdk_manifest.json").read_text())
        assert all(b["holds"] for b in man["metrics"]["budgets"])


def test_dynamic_int8_skips_a_conv_only_tower_and_quantizes_the_other(mmdk, tmp_path):
    src = (f"{FIX}/cnn_dual_tower.py:cnn_dual_tower", "--io", f"{FIX}/dual_tower.yaml")
    out = tmp_path / "q"
    r = mmdk("quantize", *src, "--precision", "int8", "--method", "dynamic", "-o", out)
    assert r.code == 0, r.err
    man = json.loads((out / "mmdk_manifest.json").read_text())
    arts = {a["tower"]: a for a in man["artifacts"]}
    assert arts["text"]["precision"] == "int8" and arts["vision"]["precision"] == "fp32"
    assert "no MatMul/Gemm nodes" in arts["vision"]["details"]["skipped"]
    assert "skipped tower 'vision'" in r.err and "skipped:" in r.out
    # only the conv-only tower asked for: still an error, naming what to do
    r = mmdk("quantize", *src, "--tower", "vision", "--precision", "int8", "--method", "dynamic", "-o", tmp_path / "v")
    assert r.code == 2 and r.one_line_error() and "no MatMul/Gemm nodes" in r.err


def test_budget_search_does_not_try_dynamic_int8_on_a_conv_only_tower(mmdk, tmp_path):
    """A budget static INT8 misses on a conv-only tower: the search's next method (dynamic) has nothing to quantize
    there, so it is not tried and the run ends as a budget out of reach (exit 6); it exited 2 'no MatMul/Gemm nodes
    to quantize with dynamic INT8' (clip-prune-distill-int8 on ALIGN)."""
    src = (f"{FIX}/cnn_dual_tower.py:cnn_dual_tower", "--io", f"{FIX}/dual_tower.yaml")
    np.savez(tmp_path / "calib.npz", pixel_values=np.random.default_rng(0).standard_normal((24, 3, 32, 32)).astype(np.float32))
    r = mmdk("quantize", *src, "--tower", "vision", "--precision", "int8", "--calib-data", tmp_path / "calib.npz",
             "--accuracy-budget", "vision:cosine>=0.9999999", "--max-fp32-fraction", "0.01", "-o", tmp_path / "q")
    assert r.code in (0, 6) and "MatMul/Gemm" not in r.err, r.err
