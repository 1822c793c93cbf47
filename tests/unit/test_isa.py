"""Which CPU INT8 is quantized for, what the cpu preset picks there, and how fusion towers are split per node."""

from __future__ import annotations

import pytest

from mmdeploy_kit.runtime.env import detect_isa
from mmdeploy_kit.model.iospec import IOSpec
from mmdeploy_kit.model.tower import LoadedModel, Tower
from mmdeploy_kit.passes.quantize.config import QuantizeConfig, is_fusion_tower, resolve_plans
from mmdeploy_kit.passes.quantize.isa import cpu_int8_options, resolve_isa

FUSION = {"inputs": [{"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"]},
                     {"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"]},
                     {"name": "pixel_values", "modality": "image", "shape": ["batch", 3, 32, 32]}],
          "outputs": ["logits"]}
IMAGE = {"inputs": [{"name": "pixel_values", "modality": "image", "shape": ["batch", 3, 32, 32]}], "outputs": ["y"]}
TEXT = {"inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]}], "outputs": ["y"]}


@pytest.mark.parametrize("flags,machine,want", [
    (["avx2", "fma", "avx512f", "avx512_vnni"], "x86_64", "avx512_vnni"),
    (["avx2", "fma", "avx_vnni"], "x86_64", "avx512_vnni"),       # Alder Lake's AVX-VNNI: VNNI kernels too
    (["avx2", "fma"], "x86_64", "avx2"),                          # e.g. this project's AMD EPYC VMs
    (["asimd", "asimddp"], "aarch64", "arm64"),
])
def test_detect_isa_from_cpu_flags(flags, machine, want):
    assert detect_isa(flags, machine) == want


def test_this_machine_resolves_to_a_known_isa():
    assert resolve_isa("auto") in ("avx512_vnni", "avx2", "arm64") and resolve_isa("arm64") == "arm64"


def test_cpu_preset_per_isa():
    assert cpu_int8_options("avx2")["reduce_range"] is True  # vpmaddubsw saturates u8 x s8 without VNNI
    assert cpu_int8_options("avx512_vnni")["reduce_range"] is False
    assert cpu_int8_options("arm64") == {"isa": "arm64", "reduce_range": False, "weight_type": "int8"}
    assert cpu_int8_options("avx2", preset="tensorrt")["reduce_range"] is False


def _model(**specs):
    return LoadedModel("m", "onnx", "onnx", {n: Tower(n, IOSpec.model_validate(s), "onnx") for n, s in specs.items()})


def test_plans_record_the_target_cpu_and_its_options():
    model = _model(vision=IMAGE, text=TEXT)
    for target, rr in (("avx2", True), ("avx512_vnni", False), ("arm64", False)):
        plans = resolve_plans(QuantizeConfig(target_cpu=target), model)
        for p in plans.values():
            assert p.isa == target and p.reduce_range is rr and p.describe()["target_cpu"] == target
    plans = resolve_plans(QuantizeConfig(target_cpu="avx2", reduce_range=False, weight_type="uint8"), model)
    assert not plans["vision"].reduce_range and plans["vision"].weight_type == "uint8"


def test_auto_target_names_its_isa_in_the_cache_identity():
    here = resolve_isa("auto")
    assert f'"target_cpu":"{here}"' in QuantizeConfig().canonical_json()
    assert QuantizeConfig().digest() == QuantizeConfig(target_cpu=here).digest()  # same output, same identity
    assert QuantizeConfig().digest() != QuantizeConfig(target_cpu="arm64" if here != "arm64" else "avx2").digest()


def test_fusion_tower_gets_the_hybrid_method():
    model = _model(fusion=FUSION, vision=IMAGE, text=TEXT)
    assert is_fusion_tower(model.towers["fusion"]) and not is_fusion_tower(model.towers["vision"])
    plans = resolve_plans(QuantizeConfig(), model)
    assert [plans[n].method for n in ("fusion", "vision", "text")] == ["hybrid", "static", "dynamic"]
    auto = resolve_plans(QuantizeConfig(accuracy_budget=("cosine>=0.99",)), model)["fusion"]
    assert auto.alternatives == ["static", "dynamic"]
    assert dict(plans["fusion"].input_modalities)["pixel_values"] == "image"


def test_node_modalities_follow_the_graph():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from mmdeploy_kit.passes.quantize.graph import candidates, node_modalities, split_by_modality

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("emb", (10, 4)), ("wt", (4, 4)), ("wc", (4, 3, 3, 3)), ("wh", (8, 2)))]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], name="gather"),
             helper.make_node("MatMul", ["e", "wt"], ["t"], name="text_mm"),
             helper.make_node("ReduceMean", ["t"], ["tp"], name="tpool", axes=[1], keepdims=0),
             helper.make_node("Conv", ["px", "wc"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["cp"], name="gap"),
             helper.make_node("Flatten", ["cp"], ["cf"], name="flat"),
             helper.make_node("Concat", ["tp", "cf"], ["cat"], name="cat", axis=1),
             helper.make_node("MatMul", ["cat", "wh"], ["logits"], name="head")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"]),
                                       helper.make_tensor_value_info("px", TensorProto.FLOAT, ["b", 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])], inits)
    model = helper.make_model(g, ir_version=10)
    mods = node_modalities(model, {"ids": "text", "px": "image"})
    assert mods["text_mm"] == {"text"} and mods["conv"] == {"image"} and mods["head"] == {"text", "image"}
    static, dynamic = split_by_modality(candidates(model, ("MatMul", "Gemm", "Conv"), "static"), mods)
    assert static == ["conv"] and dynamic == ["text_mm", "head"]
