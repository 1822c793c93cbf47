"""load() on every supported checkpoint format, built tiny in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
torch = pytest.importorskip("torch")

import mmdeploy_kit as mmdk
from mmdeploy_kit.errors import CheckpointError, SpecError
from mmdeploy_kit.model.hf_compat import feature_tensor

FIX = "tests/fixtures"


@pytest.mark.parametrize("fixture, arch", [("tiny_clip_dir", "CLIPModel"), ("tiny_siglip_dir", "SiglipModel"),
                                           ("tiny_vtde_dir", "VisionTextDualEncoderModel")])
def test_hf_dual_encoders_split_into_vision_and_text(request, fixture, arch):
    model = mmdk.load(request.getfixturevalue(fixture))
    assert model.format == "hf" and model.architecture == arch
    assert model.tower_names == ["vision", "text"]
    vision, text = model.towers["vision"], model.towers["text"]
    assert vision.spec.input_names == ["pixel_values"] and vision.spec.output_names == ["image_embeds"]
    # BERT text towers (VisionTextDualEncoder) also take the token_type_ids their tokenizer produces
    extra = ["token_type_ids"] if arch == "VisionTextDualEncoderModel" else []
    assert text.spec.input_names == ["input_ids", "attention_mask", *extra] and text.spec.output_names == ["text_embeds"]
    assert text.spec.input("input_ids").range == (0, 99)
    out = vision.module.run_numpy(vision.spec.dummy_inputs({"batch": 2}))["image_embeds"]
    assert out.shape[0] == 2 and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # the towers' outputs are what the HF model itself computes
    hf = model.root
    px = torch.from_numpy(vision.spec.dummy_inputs({"batch": 2})["pixel_values"])
    ref = torch.nn.functional.normalize(feature_tensor(hf.get_image_features(pixel_values=px)), dim=-1)
    assert np.allclose(vision.module.run_numpy({"pixel_values": px.numpy()})["image_embeds"], ref.detach().numpy(),
                       atol=1e-6)
    assert 0 < vision.parameter_count() < model.parameter_count()


def test_hf_single_tower_encoders(tiny_bert_dir, tiny_vit_dir):
    bert = mmdk.load(tiny_bert_dir)
    assert bert.tower_names == ["text"]
    assert bert.towers["text"].spec.output_names == ["last_hidden_state", "pooler_output"]
    vit = mmdk.load(tiny_vit_dir)
    assert vit.tower_names == ["vision"]
    assert "last_hidden_state" in vit.towers["vision"].spec.output_names


def test_inspect_describes_towers(tiny_clip_dir):
    info = mmdk.inspect(tiny_clip_dir)
    assert info["parameters"] > 0 and info["size_on_disk_bytes"] > 0 and info["dtype"] == "float32"
    text = info["towers"]["text"]
    assert text["modalities"] == ["text"] and text["inputs"][0]["shape"] == ["batch", "seq"]
    json.dumps(info)


def test_factory_with_safetensors_and_pt_weights(tmp_path, late_fusion_factory):
    from safetensors.torch import save_file

    from tests.fixtures.fusion_models import late_fusion

    src, io = late_fusion_factory
    trained = late_fusion()
    with torch.no_grad():
        trained.head.bias.fill_(3.0)
    save_file(trained.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "w.pt")
    for weights in ("w.safetensors", "w.pt"):
        model = mmdk.load(src, weights=tmp_path / weights, io=io)
        assert torch.equal(model.root.head.bias, trained.head.bias)
        spec = model.towers["model"].spec
        out = model.towers["model"].module.run_numpy(spec.dummy_inputs({"batch": 2, "seq": 5}))
        assert out["logits"].shape == (2, 5)


def test_factory_by_module_path(monkeypatch, tri_modal_factory):
    monkeypatch.syspath_prepend(FIX)
    _, io = tri_modal_factory
    model = mmdk.load("fusion_models:tri_modal", io=io)
    assert model.towers["model"].spec.modalities == ["audio", "image", "text"]


def test_multi_tower_spec_picks_submodules():
    model = mmdk.load(f"{FIX}/fusion_models.py:dual_tower", io=f"{FIX}/dual_tower.yaml")
    assert model.tower_names == ["vision", "text"]
    assert type(model.towers["vision"].module.inner).__name__ == "TinyImageEncoder"


def test_torchscript_and_pt2(tmp_path, late_fusion_example):
    model, io, feeds, args = (late_fusion_example.model, late_fusion_example.io, late_fusion_example.feeds,
                              late_fusion_example.args)
    ref = model.towers["model"].module.run_numpy(feeds)["logits"]

    torch.jit.save(torch.jit.trace(model.root, args, check_trace=False), str(tmp_path / "m.ts"))
    ts = mmdk.load(tmp_path / "m.ts", io=io)
    assert ts.format == "torchscript"
    assert np.allclose(ts.towers["model"].module.run_numpy(feeds)["logits"], ref, atol=1e-5)

    torch.export.save(torch.export.export(model.root, args), str(tmp_path / "m.pt2"))
    pt2 = mmdk.load(tmp_path / "m.pt2", io=io)
    assert pt2.format == "pt2"
    assert np.allclose(pt2.towers["model"].module.run_numpy(feeds)["logits"], ref, atol=1e-5)


def test_pickled_module_needs_trust_remote_code(tmp_path, late_fusion_factory):
    src, io = late_fusion_factory
    root = mmdk.load(src, io=io).root
    torch.save(root, tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match="pickled Python object"):
        mmdk.load(tmp_path / "whole.pt", io=io)
    assert mmdk.load(tmp_path / "whole.pt", io=io, trust_remote_code=True).format == "pickle"
    torch.save(root.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="state dict"):
        mmdk.load(tmp_path / "sd.pt", io=io)


def test_hf_auto_map_needs_trust_remote_code(tmp_path, tiny_bert_dir):
    import shutil

    d = tmp_path / "remote"
    shutil.copytree(tiny_bert_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="--trust-remote-code"):
        mmdk.load(d)


def test_onnx_file_and_mmdk_dir(tmp_path, tiny_clip_dir):
    mmdk.export(tiny_clip_dir, tmp_path / "out")
    onnx_model = mmdk.load(tmp_path / "out" / "text.onnx")
    spec = onnx_model.towers["text"].spec
    assert spec.input_names == ["input_ids", "attention_mask"]
    assert spec.input("input_ids").range == (0, 99)  # vocab read from the embedding Gather
    assert spec.input("input_ids").shape == ("batch", "seq")
    exported = mmdk.load(tmp_path / "out")
    assert exported.format == "mmdk" and exported.tower_names == ["vision", "text"]
    assert exported.towers["text"].spec.dims["seq"] == (1, 32)  # the original spec travels in the manifest


@pytest.mark.parametrize("case", ["truncated", "garbage_header", "empty"])
def test_corrupt_safetensors(tmp_path, tiny_clip_dir, case):
    import shutil

    d = tmp_path / case
    shutil.copytree(tiny_clip_dir, d)
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncated": data[: len(data) // 2], "garbage_header": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
                   "empty": b""}[case])
    with pytest.raises(CheckpointError) as info:
        mmdk.load(d)
    assert "model.safetensors" in str(info.value) and "\n" not in str(info.value)


def test_spec_naming_an_input_the_module_does_not_take(tmp_path, late_fusion_factory):
    src, io = late_fusion_factory
    bad = tmp_path / "bad.yaml"
    bad.write_text(io.read_text().replace("pixel_values", "images"))
    with pytest.raises(SpecError, match="'images'.*does not take"):
        mmdk.load(src, io=bad)


@pytest.mark.parametrize("source, needle", [
    ("does/not/exist", "does not exist"),
    (f"{FIX}/fusion_models.py:no_such_factory", "no factory named 'no_such_factory'"),
    (f"{FIX}/missing.py:late_fusion", "does not exist"),
    ("no_such_package_xyz:factory", "cannot import module"),
])
def test_bad_sources(source, needle):
    with pytest.raises(CheckpointError, match=needle):
        mmdk.load(source, io=f"{FIX}/late_fusion.yaml")


def test_factory_without_io_spec(late_fusion_factory):
    with pytest.raises(SpecError, match="--io"):
        mmdk.load(late_fusion_factory[0])
