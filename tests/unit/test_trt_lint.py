"""TensorRT readiness lint on small ONNX graphs built here (no TensorRT needed: the parser's op table)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmdeploy_kit.errors import ExportError
from mmdeploy_kit.passes.export.trt_lint import known_versions, lint_model, table_for


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, t=TensorProto.FLOAT, shape=("batch", 4)):
    return helper.make_tensor_value_info(name, t, list(shape))


def _rules(rep, severity):
    return [(f.rule, f.op, f.node) for f in rep.findings if f.severity == severity]


def test_clean_graph_has_no_findings():
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [_vi("x")], [_vi("y")], [w])
    rep = lint_model(m, "t", "10.3")
    assert rep.findings == [] and rep.table_version == "10.1"


def test_unsupported_op_names_op_and_node_and_raises_exit_4():
    m = _model([helper.make_node("Det", ["x"], ["y"], name="my_det")], [_vi("x", shape=(2, 3, 3))], [_vi("y", shape=(2,))])
    rep = lint_model(m, "t", "10.3")
    assert ("unsupported-op", "Det", "my_det") in _rules(rep, "error")
    with pytest.raises(ExportError) as ei:
        rep.raise_on_errors()
    assert ei.value.exit_code == 4 and "Det node 'my_det'" in ei.value.message


def test_op_missing_from_table_and_custom_domain_are_errors():
    m = _model([helper.make_node("NotAnOnnxOp", ["x"], ["h"], name="n1"),
                helper.make_node("FusedGelu", ["h"], ["y"], name="n2", domain="com.microsoft")],
               [_vi("x")], [_vi("y")])
    errs = _rules(lint_model(m, "t", "10.0"), "error")
    assert ("unsupported-op", "NotAnOnnxOp", "n1") in errs and ("custom-domain", "FusedGelu", "n2") in errs


def test_inputs_that_must_be_initializers():
    axes_const = numpy_helper.from_array(np.array([1], np.int64), "axes")
    starts = numpy_helper.from_array(np.array([0], np.int64), "starts")
    ends = numpy_helper.from_array(np.array([2], np.int64), "ends")
    good = _model([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="s")],
                  [_vi("x")], [_vi("y")], [axes_const, starts, ends])
    assert _rules(lint_model(good, "t", "10.3"), "error") == []
    bad = _model([helper.make_node("Slice", ["x", "starts", "ends", "axes_in"], ["y"], name="s")],
                 [_vi("x"), _vi("axes_in", TensorProto.INT64, (1,))], [_vi("y")], [starts, ends])
    rep = lint_model(bad, "t", "10.3")
    assert ("constant-input", "Slice", "s") in _rules(rep, "error")
    assert "'axes'" in rep.errors[0].message


def test_double_tensors_and_casts_are_errors():
    m = _model([helper.make_node("Cast", ["x"], ["y"], name="c", to=TensorProto.DOUBLE)],
               [_vi("x")], [_vi("y", TensorProto.DOUBLE)])
    rules = [r for r, _, _ in _rules(lint_model(m, "t", "10.3"), "error")]
    assert rules.count("double") == 2  # the output tensor and the cast


@pytest.mark.parametrize("zp,errors", [(0, 0), (3, 1)])
def test_qdq_zero_point_must_be_zero(zp, errors):
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(zp, np.int8), "z")
    m = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
               [_vi("x")], [_vi("y")], [scale, zero])
    found = [n for r, _, n in _rules(lint_model(m, "t", "10.3"), "error") if r == "qdq-zero-point"]
    assert len(found) == 2 * errors


def test_warnings_int64_data_dependent_and_control_flow():
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t_out"])], "then", [], [_vi("t_out")])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e_out"])], "else", [], [_vi("e_out")])
    m = _model([helper.make_node("NonZero", ["ids"], ["nz"], name="nz"),
                helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other)],
               [_vi("ids", TensorProto.INT64), _vi("cond", TensorProto.BOOL, ()), _vi("x")],
               [_vi("y"), _vi("nz", TensorProto.INT64, (2, "n"))])
    rep = lint_model(m, "t", "10.3")
    warn = {r for r, _, _ in _rules(rep, "warning")}
    assert {"int64", "data-dependent-shape", "control-flow"} <= warn and rep.errors == []


def test_opset_outside_parser_range():
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x")], [_vi("y")], opset=21)
    assert ("opset", "", "") in _rules(lint_model(m, "t", "10.3"), "error")


def test_dla_eligibility_and_precision():
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
                helper.make_node("Relu", ["h"], ["r"], name="act"),
                helper.make_node("Erf", ["r"], ["y"], name="erf")], [_vi("x")], [_vi("y")], [w])
    rep = lint_model(m, "t", "10.3", dla=True, precision="fp16")
    assert rep.dla["nodes"] == 3 and rep.dla["gpu_fallback_nodes"] == 1 and rep.dla["gpu_fallback_by_op"] == {"Erf": 1}
    assert [f.rule for f in rep.warnings] == ["dla-fallback"] and rep.errors == []
    assert "dla-precision" in [f.rule for f in lint_model(m, "t", "10.3", dla=True, precision="fp32").errors]
    assert lint_model(m, "t", "10.3").dla is None


def test_table_version_choice():
    assert known_versions() == ["10.0", "10.1"]
    assert table_for("10.0")[0] == "10.0" and table_for("10.3")[0] == "10.1" and table_for("10")[0] == "10.1"
    assert table_for("11.4")[0] == "10.1"  # newest table for versions past every table (reported in the lint)
    # 10.1 added Dropout's constant training_mode input; 10.0's table does not ask for it
    assert "Dropout" in table_for("10.1")[1]["constant_inputs"] and "Dropout" not in table_for("10.0")[1]["constant_inputs"]
