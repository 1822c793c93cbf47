"""mmdk optimize without running anything: the space (defaults, YAML with line numbers, a recipe's search:
block), choices -> recipe under the passes' own rules, budgets, the Pareto front."""

from __future__ import annotations

import pytest

from mmdeploy_kit.errors import UserInputError
from mmdeploy_kit.search.objectives import parse_search_budget
from mmdeploy_kit.search.report import choose_best, pareto
from mmdeploy_kit.search.space import (SearchSpace, available_precisions, available_runtimes, check_space,
                                       load_space, openvino_bf16, quantize_precisions)
from mmdeploy_kit.search.trial import InvalidChoice, Settings, build_recipe, check_recipe, config_key


DATA = {}


@pytest.fixture(autouse=True)
def _data_files(tmp_path):
    for name in ("val", "train"):
        (tmp_path / f"{name}.jsonl").write_text("{}\n")
        DATA[name] = str(tmp_path / f"{name}.jsonl")


def _settings(**kw) -> Settings:
    base = dict(model="/m", out="/o", towers=["vision", "text"], val=DATA["val"], calib=DATA["train"],
                train=DATA["train"], budgets=["zero_shot_top1_drop<=1"], task_metric="zero_shot_top1")
    return Settings(**{**base, **kw})


def test_defaults_follow_the_target_and_the_registry():
    assert "tensorrt" not in available_runtimes("cpu") and "tensorrt" in available_runtimes("gpu")
    assert available_runtimes("jetson-orin-nx")[0] == "ort"
    cpu = SearchSpace().tower_precisions("vision", "cpu")
    assert "fp16" not in cpu and {"fp32", "int8_static", "int8_dynamic"} <= set(cpu)
    assert "fp16" in SearchSpace().tower_precisions("vision", "gpu")
    # bf16 is offered where a pass can make it: the quantize pass, or OpenVINO's export on a native-BF16 CPU
    assert ("bf16" in available_precisions("cpu")) == ("bf16" in quantize_precisions() or openvino_bf16())
    with pytest.raises(UserInputError, match="tensorrt.*not available for target 'cpu'"):
        check_space(SearchSpace(runtime=("tensorrt",)), "cpu", ["vision", "text"])
    with pytest.raises(UserInputError, match="tower 'audio' is not in the model"):
        check_space(SearchSpace(towers={"audio": {"prune": (0, 0.1)}}), "cpu", ["vision", "text"])
    with pytest.raises(UserInputError, match="'int4' for tower 'vision' is not a precision"):
        check_space(SearchSpace(precision=("int4",)), "cpu", ["vision", "text"])


def test_space_yaml_errors_name_their_line(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("search:\n  prune: [0.0, 0.3]\n  distil_steps: [0, 10]\n")
    with pytest.raises(UserInputError, match=r"line 3: unknown search dimension 'distil_steps' \(did you mean "
                                             r"'distill_steps'\?\)"):
        load_space(f)
    f.write_text("prune: [0.0, 0.3]\ncalibration: [minmax]\nprune_step: 0.1\ntowers:\n  text:\n    prune: [0.5, 0.2]\n")
    sp = load_space(f)   # top level works too
    assert sp.prune == (0.0, 0.3) and sp.calibration == ("minmax",)
    with pytest.raises(UserInputError, match="towers.text.prune"):
        check_space(sp, "cpu", ["vision", "text"])
    f.write_text("search:\n  batch: [1, 8]\n  prune: [0.2, 0.9999, 3]\n")
    with pytest.raises(UserInputError, match="line 3: invalid search space"):
        load_space(f)


def test_a_recipe_search_block_is_a_space_and_run_ignores_it(tmp_path):
    from mmdeploy_kit.pipeline.recipe import load_recipe

    f = tmp_path / "r.yaml"
    f.write_text("steps:\n  - export: {target: onnx}\nsearch:\n  precision: [fp32, int8_dynamic]\n"
                 "  distill_steps: [0]\n")
    assert load_space(f).precision == ("fp32", "int8_dynamic")
    assert [s.pass_step for s in load_recipe(f).steps] == ["export"]


def test_choices_become_recipes_the_passes_accept():
    s = _settings(space={"distill_steps": [0, 50]})
    r = build_recipe({"vision.prune": 0.3, "text.prune": 0.0, "distill_steps": 50, "vision.precision": "int8_static",
                      "text.precision": "int8_dynamic", "calibration": "percentile"}, s)
    assert [next(iter(st)) for st in r["steps"]] == ["prune", "distill", "quantize", "bench"]
    assert r["steps"][0]["prune"]["ratio"] == {"vision": 0.3}
    q = r["steps"][2]["quantize"]
    assert q["tower_method"] == [["vision", "static"], ["text", "dynamic"]] and q["calibration"] == "percentile"
    check_recipe(r)
    fp32 = build_recipe({"vision.precision": "fp32", "text.precision": "fp32"}, s)
    assert [next(iter(st)) for st in fp32["steps"]] == ["export", "bench"]
    check_recipe(fp32)
    # same recipe from different samples (distillation without pruning does nothing) -> one identity
    a = build_recipe({"vision.precision": "fp32", "text.precision": "fp32", "distill_steps": 50}, s)
    assert config_key(a) == config_key(fp32)
    with pytest.raises(InvalidChoice, match="needs --calib-data"):
        build_recipe({"vision.precision": "int8_static"}, _settings(calib=None))
    gpu = _settings(target="gpu")
    with pytest.raises(InvalidChoice, match="one precision for all towers"):
        build_recipe({"vision.precision": "fp16", "text.precision": "int8_static", "runtime": "tensorrt"}, gpu)
    trt = build_recipe({"vision.precision": "fp16", "text.precision": "fp16", "runtime": "tensorrt"}, gpu)
    assert trt["steps"][0] == {"export": {"target": "tensorrt", "precision": "fp16", "device": "gpu"}}
    check_recipe(trt)


def test_openvino_choices_become_its_own_passes():
    """runtime openvino: the IR export in FP32 / BF16, NNCF static INT8 - never ORT INT8 converted afterwards."""
    s = _settings()
    fp = build_recipe({"vision.precision": "bf16", "text.precision": "bf16", "runtime": "openvino"}, s)
    assert fp["steps"][0] == {"export": {"target": "openvino", "precision": "bf16"}}
    q = build_recipe({"vision.precision": "int8_static", "text.precision": "int8_static", "runtime": "openvino"}, s)
    assert q["steps"][0]["quantize"]["backend"] == "nncf" and q["data"]["calib"] == DATA["train"]
    for bad in ({"vision.precision": "int8_dynamic", "text.precision": "int8_dynamic"},
                {"vision.precision": "fp32", "text.precision": "bf16"}):
        with pytest.raises(InvalidChoice):
            build_recipe({**bad, "runtime": "openvino"}, s)
    with pytest.raises(InvalidChoice, match="OpenVINO"):
        build_recipe({"vision.precision": "bf16", "text.precision": "bf16", "runtime": "ort"}, s)
    for r in (fp, q):
        check_recipe(r)


def test_budgets_parse_or_fail_with_one_line():
    b = parse_search_budget("zero_shot_top1_drop<=1")
    assert (b.metric, b.op, b.value) == ("zero_shot_top1_drop", "<=", 1.0)
    assert b.violation(0.5) < 0 < b.violation(1.5) and b.violation(None) == float("inf")
    assert parse_search_budget("size_mb <= 50").text == "size_mb<=50"
    assert parse_search_budget("recall@5_drop<=2").metric == "recall@5_drop"
    for bad, msg in (("top1<=1", "unknown budget metric"), ("size_mb>=3", "takes '<='"), ("size", "cannot parse")):
        with pytest.raises(UserInputError, match=msg):
            parse_search_budget(bad)


def test_pareto_front_and_best_inside_budgets():
    def row(n, lat, acc, feasible=True, dup=None):
        return {"number": n, "state": "complete", "values": [lat, acc], "feasible": feasible, "duplicate_of": dup}

    rows = [row(0, 0.5, 90), row(1, 0.3, 85), row(2, 0.6, 89), row(3, 0.2, 95, feasible=False), row(4, 0.4, 90),
            row(5, 0.3, 85, dup=1)]
    dirs = ["minimize", "maximize"]
    front = pareto(rows, dirs)
    assert front == [1, 4]          # 0 and 2 dominated by 4; 3 over budget; 5 a duplicate
    assert choose_best(rows, front, dirs)["number"] == 1
