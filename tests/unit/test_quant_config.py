"""Quantization config: budget grammar, per-tower plans (presets, methods), graph helpers, drift figures and
the mixed-precision search's refusal of budgets it cannot act on."""

from __future__ import annotations

import numpy as np
import pytest

from mmdeploy_kit.errors import UserInputError
from mmdeploy_kit.model.iospec import IOSpec
from mmdeploy_kit.model.tower import LoadedModel, Tower
from mmdeploy_kit.passes.quantize.config import QuantizeConfig, parse_budget, resolve_plans
from mmdeploy_kit.passes.quantize.graph import layer_group


@pytest.mark.parametrize("text,metric,op,value,tower,task", [
    ("cosine>=0.99", "cosine", ">=", 0.99, None, False),
    ("text:cosine >= 0.995", "cosine", ">=", 0.995, "text", False),
    ("max_abs_error<=5e-2", "max_abs_error", "<=", 0.05, None, False),
    ("zero_shot_top1_drop<=1", "zero_shot_top1_drop", "<=", 1.0, None, True),
    ("recall@5_drop<=2.5", "recall@5_drop", "<=", 2.5, None, True),
    ("accuracy_drop<=0.5", "accuracy_drop", "<=", 0.5, None, True),
])
def test_parse_budget(text, metric, op, value, tower, task):
    b = parse_budget(text)
    assert (b.metric, b.op, b.value, b.tower, b.is_task) == (metric, op, value, tower, task)
    assert b.holds(value) and b.slack(value) == 0


@pytest.mark.parametrize("text", ["cosine<=0.9", "cosine>=1.5", "speed>=2", "zero_shot_top1_drop>=1",
                                  "accuracy_drop<=-1", "text:zero_shot_top1_drop<=1", "cosine", ""])
def test_bad_budgets_are_one_line_user_errors(text):
    with pytest.raises(UserInputError) as exc:
        parse_budget(text)
    assert "\n" not in str(exc.value)


def test_config_rejects_unknown_fields_and_bad_budgets():
    with pytest.raises(ValueError):
        QuantizeConfig(bogus=1)
    with pytest.raises(UserInputError):
        QuantizeConfig(accuracy_budget=("cosine<=1",))
    c = QuantizeConfig(accuracy_budget=("cosine>=0.99",), tower_precision=(("text", "fp32"),))
    assert c.digest() == QuantizeConfig.model_validate_json(c.canonical_json()).digest()
    hash(c)


def _model() -> LoadedModel:
    vision = IOSpec.model_validate({"inputs": [{"name": "pixel_values", "modality": "image", "shape": ["batch", 3, 8, 8]}],
                                    "outputs": ["image_embeds"]})
    text = IOSpec.model_validate({"inputs": [{"name": "input_ids", "modality": "text", "dtype": "int64",
                                              "shape": ["batch", "seq"]}], "outputs": ["text_embeds"]})
    towers = {"vision": Tower("vision", vision, "onnx"), "text": Tower("text", text, "onnx")}
    return LoadedModel(source="x", format="onnx", architecture="t", towers=towers)


def test_cpu_preset_picks_static_for_images_dynamic_for_text():
    plans = resolve_plans(QuantizeConfig(), _model())
    assert plans["vision"].method == "static" and plans["vision"].op_types == ("MatMul", "Gemm", "Conv")
    assert plans["text"].method == "dynamic" and plans["text"].op_types == ("MatMul", "Gemm")
    assert not plans["vision"].auto


def test_tensorrt_preset_is_symmetric_static_and_refuses_dynamic():
    plans = resolve_plans(QuantizeConfig(preset="tensorrt"), _model())
    assert all(p.method == "static" and p.symmetric_activations and not p.quantize_bias for p in plans.values())
    with pytest.raises(UserInputError, match="tensorrt"):
        resolve_plans(QuantizeConfig(preset="tensorrt", method="dynamic"), _model())
    with pytest.raises(UserInputError, match="per-channel"):
        resolve_plans(QuantizeConfig(preset="tensorrt", per_channel=False), _model())


def test_per_tower_precision_method_and_selection():
    m = _model()
    plans = resolve_plans(QuantizeConfig(tower_precision=(("text", "fp32"),)), m)
    assert plans["vision"].precision == "int8" and plans["text"].precision == "fp32"
    plans = resolve_plans(QuantizeConfig(towers=("text",), tower_method=(("text", "static"),)), m)
    assert plans["vision"].precision == "fp32" and plans["text"].method == "static"
    plans = resolve_plans(QuantizeConfig(precision="fp16", tower_precision=(("vision", "int8"),)), m)
    assert plans["text"].precision == "fp16" and plans["vision"].precision == "int8"
    auto = resolve_plans(QuantizeConfig(method="auto"), m)
    assert auto["vision"].auto and auto["vision"].alternatives == ["dynamic"] and auto["text"].method == "dynamic"
    with pytest.raises(UserInputError, match="no tower named 'audio'"):
        resolve_plans(QuantizeConfig(tower_precision=(("audio", "int8"),)), m)
    with pytest.raises(UserInputError, match="does not select"):
        resolve_plans(QuantizeConfig(towers=("text",), tower_precision=(("vision", "int8"),)), m)
    with pytest.raises(UserInputError, match="only applies to int8"):
        resolve_plans(QuantizeConfig(precision="fp16", tower_method=(("text", "dynamic"),)), m)


@pytest.mark.parametrize("name,group", [
    ("/vision_model/encoder/layers.3/mlp/fc1/MatMul", "layers.3"),
    ("/bert/encoder/layer.11/output/dense/MatMul", "layer.11"),
    ("/blocks/2/attn/qkv/MatMul", "blocks.2"),
    ("/text_projection/MatMul", "/text_projection/MatMul"),
])
def test_layer_groups(name, group):
    assert layer_group(name) == group


def test_tensorrt_invariants_flag_asymmetric_and_per_tensor_weights():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from mmdeploy_kit.passes.quantize.graph import tensorrt_qdq_violations

    w = numpy_helper.from_array(np.ones((4, 3), dtype=np.int8), "w_q")
    ws = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "w_s")   # per-tensor scale
    wz = numpy_helper.from_array(np.array(0, dtype=np.int8), "w_z")
    xs = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "x_s")
    xz = numpy_helper.from_array(np.array(3, dtype=np.uint8), "x_z")     # asymmetric uint8 activations
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], name="wdq"),
             helper.make_node("MatMul", ["xd", "wd"], ["y"], name="mm")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w, ws, wz, xs, xz])
    model = helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 11)])
    problems = " | ".join(tensorrt_qdq_violations(model))
    assert "opset 11 < 13" in problems and "not INT8" in problems and "non-zero zero point" in problems
    assert "per tensor" in problems


def test_first_nonfinite_nodes_finds_where_inf_starts(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from mmdeploy_kit.passes.quantize.fp16 import first_nonfinite_nodes, out_of_range_nodes

    big = numpy_helper.from_array(np.array(1e30, dtype=np.float32), "big")
    mask = numpy_helper.from_array(np.array(-3.4e38, dtype=np.float32), "mask")
    nodes = [helper.make_node("Mul", ["x", "big"], ["a"], name="m1"),
             helper.make_node("Mul", ["a", "big"], ["b"], name="m2"),   # 1e30 * 1e30 -> inf
             helper.make_node("Add", ["b", "mask"], ["c"], name="add"),
             helper.make_node("Softmax", ["c"], ["y"], name="sm")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [big, mask])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    feeds = [{"x": np.ones((1, 4), np.float32)}]
    assert first_nonfinite_nodes(path, feeds, {"m1", "m2", "add", "sm"}) == ["m2"]
    assert out_of_range_nodes(onnx.load(str(path))) == ["add", "m1", "m2", "sm"]


def test_output_drift_spans_batches_of_different_lengths():
    """Synthetic verification batches vary the sequence length; per-token outputs are compared batch by batch."""
    from mmdeploy_kit.passes.quantize.evaluate import output_drift

    rng = np.random.default_rng(0)
    ref = {"h": [rng.standard_normal((2, 3, 4)), rng.standard_normal((1, 7, 4))]}
    cand = {"h": [ref["h"][0], -ref["h"][1]]}
    d = output_drift(ref, cand)
    assert d["cosine"] == pytest.approx((2 * 1.0 + 1 * -1.0) / 3) and d["cosine_min"] == pytest.approx(-1.0)
    assert d["max_abs_error"] == pytest.approx(2 * np.abs(ref["h"][1]).max()) and d["finite"]
    assert d["outputs"]["h"]["cosine_min"] == pytest.approx(-1.0)


def _rows(text_holds: bool):
    return [{"budget": "cosine>=0.99", "scope": "vision", "figure": 0.999, "holds": True},
            {"budget": "cosine>=0.99", "scope": "text", "figure": 0.999 if text_holds else 0.95, "holds": text_holds}]


def test_search_stops_when_budgets_hold_and_refuses_towers_it_does_not_search(tmp_path):
    """Only 'vision' is searched; a failing 'text' (FP16, or INT8 without auto) is a BudgetError at once."""
    from mmdeploy_kit.errors import BudgetError
    from mmdeploy_kit.passes.quantize.mixed_precision import search

    calls = []

    def evaluate(text_holds):
        def run(excludes):
            calls.append(excludes)
            return {"rows": _rows(text_holds), "task": None}
        return run

    units = {"vision": object()}  # never touched: no sensitivity scan may start in either case
    found = search(units, evaluate(True), 0.5, tmp_path, print, "cosine>=0.99")
    assert found["excludes"] == {"vision": []} and found["sensitivity"] == {} and len(calls) == 1
    with pytest.raises(BudgetError, match="fails on tower.s. text") as exc:
        search(units, evaluate(False), 0.5, tmp_path, print, "cosine>=0.99")
    assert exc.value.towers == ["text"] and len(calls) == 2
