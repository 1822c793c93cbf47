"""`mmdk export` / `mmdk inspect` end to end on tiny models: verified ONNX, manifest, errors, atomicity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from mmdeploy_kit.errors import ExportError

FIX = "tests/fixtures"


def _manifest(out):
    return json.loads((out / "mmdk_manifest.json").read_text())


def test_export_hf_clip_gives_two_verified_towers(mmdk, tiny_clip_dir, tmp_path):
    out = tmp_path / "clip_onnx"
    r = mmdk("export", tiny_clip_dir, "--target", "onnx", "-o", out)
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["mmdk_manifest.json", "text.onnx", "vision.onnx"]
    man = _manifest(out)
    assert man["pass_name"] == "export_onnx" and man["source"]["architecture"] == "CLIPModel"
    assert {"torch", "onnx", "onnxruntime", "python"} <= set(man["versions"])
    for art in man["artifacts"]:
        v = art["verification"]
        assert v["cosine_min"] >= 0.9999 and v["max_abs_error"] < 1e-3
        assert len({c["sizes"]["batch"] for c in v["checks"]}) >= 2
        assert len(art["sha256"]) == 64 and art["size_bytes"] > 0
    text = next(a for a in man["artifacts"] if a["tower"] == "text")
    assert len({c["sizes"]["seq"] for c in text["verification"]["checks"]}) >= 2
    # symbolic dims are real dynamic axes in the graph
    g = onnx.load(str(out / "text.onnx")).graph
    dims = [d.dim_param for d in g.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"]
    assert g.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_export_three_modality_factory(mmdk, tri_modal_factory, tmp_path):
    src, io = tri_modal_factory
    out = tmp_path / "tri"
    r = mmdk("export", src, "--io", io, "-o", out)
    assert r.code == 0, r.err
    art = _manifest(out)["artifacts"][0]
    assert art["tower"] == "model" and art["verification"]["cosine_min"] >= 0.9999
    checks = art["verification"]["checks"]
    assert len({c["sizes"]["batch"] for c in checks}) >= 2 and len({c["sizes"]["frames"] for c in checks}) >= 2
    g = onnx.load(str(out / "model.onnx")).graph
    assert [i.name for i in g.input] == ["input_ids", "attention_mask", "pixel_values", "audio_features"]


@pytest.mark.parametrize("fixture", ["tiny_siglip_dir", "tiny_vtde_dir"])
def test_export_other_dual_encoders(request, fixture, tmp_path):
    import mmdeploy_kit as mmdk_api

    man = mmdk_api.export(request.getfixturevalue(fixture), tmp_path / "o")
    assert [a.tower for a in man.artifacts] == ["vision", "text"]
    assert min(a.verification["cosine_min"] for a in man.artifacts) >= 0.9999


def test_export_auto_falls_back_to_dynamo_when_torchscript_bakes_a_shape(mmdk, tmp_path):
    """nn.MultiheadAttention traced by the TorchScript exporter keeps a fixed batch*heads reshape."""
    out = tmp_path / "dual"
    r = mmdk("export", f"{FIX}/fusion_models.py:dual_tower", "--io", f"{FIX}/dual_tower.yaml", "-o", out)
    assert r.code == 0, r.err
    details = {a["tower"]: a["details"]["exporter"] for a in _manifest(out)["artifacts"]}
    assert details["vision"] == "torchscript" and details["text"] == "dynamo"
    r = mmdk("export", f"{FIX}/fusion_models.py:dual_tower", "--io", f"{FIX}/dual_tower.yaml", "-o",
             tmp_path / "ts_only", "--exporter", "torchscript")
    assert r.code == 5 and "cannot be reshaped" in r.err and r.one_line_error()
    assert not (tmp_path / "ts_only").exists()


def test_export_selected_tower_and_existing_output(mmdk, tiny_clip_dir, tmp_path):
    out = tmp_path / "only_text"
    assert mmdk("export", tiny_clip_dir, "--tower", "text", "-o", out).code == 0
    assert sorted(p.name for p in out.iterdir()) == ["mmdk_manifest.json", "text.onnx"]
    r = mmdk("export", tiny_clip_dir, "--tower", "text", "-o", out)
    assert r.code == 2 and "--overwrite" in r.err
    assert mmdk("export", tiny_clip_dir, "--tower", "vision", "-o", out, "--overwrite").code == 0
    assert sorted(p.name for p in out.iterdir()) == ["mmdk_manifest.json", "vision.onnx"]
    r = mmdk("export", tiny_clip_dir, "--tower", "audio", "-o", tmp_path / "x")
    assert r.code == 2 and "no tower named 'audio'" in r.err and not (tmp_path / "x").exists()


def _save_pt2(example, path):
    """Save the late-fusion example model as a torch.export program with dynamic batch and seq."""
    import torch

    batch, seq = torch.export.Dim("batch", min=1, max=8), torch.export.Dim("seq", min=4, max=32)
    dyn = ({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch})
    torch.export.save(torch.export.export(example.model.root, example.args, dynamic_shapes=dyn), str(path))


def test_export_of_torchscript_and_pt2_sources(tmp_path, late_fusion_example):
    import torch

    import mmdeploy_kit as mmdk_api

    io, model, args = late_fusion_example.io, late_fusion_example.model, late_fusion_example.args
    _save_pt2(late_fusion_example, tmp_path / "m.pt2")
    man = mmdk_api.export(tmp_path / "m.pt2", tmp_path / "o", io=io, min_cosine=0.999)
    assert man.artifacts[0].verification["cosine_min"] >= 0.999
    assert len({c["sizes"]["seq"] for c in man.artifacts[0].verification["checks"]}) >= 2

    # a program exported with static shapes cannot honour the spec's dynamic dims: clean error, no output
    torch.export.save(torch.export.export(model.root, args), str(tmp_path / "static.pt2"))
    with pytest.raises(ExportError, match="static shapes"):
        mmdk_api.export(tmp_path / "static.pt2", tmp_path / "o2", io=io)
    assert not (tmp_path / "o2").exists()

    # TorchScript: a scripted CNN image encoder
    from tests.fixtures.fusion_models import TinyImageEncoder

    torch.jit.save(torch.jit.script(TinyImageEncoder().eval()), str(tmp_path / "enc.ts"))
    (tmp_path / "enc.yaml").write_text("inputs: [{name: pixel_values, modality: image, shape: [batch, 3, 32, 32]}]\n"
                                       "outputs: [embeds]\ndims: {batch: [1, 8]}\n")
    man = mmdk_api.export(tmp_path / "enc.ts", tmp_path / "o3", io=tmp_path / "enc.yaml")
    assert man.artifacts[0].verification["cosine_min"] >= 0.9999
    assert man.artifacts[0].details["exporter"] == "torchscript"


def test_mmdk_dir_with_pt2_tower_loads_back(tmp_path, late_fusion_example):
    """The INC backend writes ``<tower>.pt2`` + a manifest; that directory is a MODEL like any other."""
    import torch

    import mmdeploy_kit as mmdk_api
    from mmdeploy_kit.artifacts import Artifact, Manifest

    d = tmp_path / "q"
    d.mkdir()
    model, spec, feeds, args = (late_fusion_example.model, late_fusion_example.spec, late_fusion_example.feeds,
                                late_fusion_example.args)
    _save_pt2(late_fusion_example, d / "model.pt2")
    Manifest(pass_name="quantize", artifacts=[Artifact(kind="pt2", tower="model", path="model.pt2",
                                                       precision="int8", io_spec=spec.to_dict())]).write(d)
    loaded = mmdk_api.load(d)
    assert loaded.format == "mmdk" and loaded.towers["model"].kind == "torch"
    assert loaded.towers["model"].precision == "int8"
    with torch.no_grad():
        ref = model.root(*args).numpy()
    out = loaded.towers["model"].module.run_numpy(feeds)
    assert np.allclose(next(iter(out.values())), ref, atol=1e-5)
    man = mmdk_api.export(d, tmp_path / "o", min_cosine=0.999)  # and it exports like any torch tower
    assert man.artifacts[0].verification["cosine_min"] >= 0.999


def test_unsupported_operator_is_a_clean_export_error(mmdk, tmp_path):
    spec = tmp_path / "x.yaml"
    spec.write_text("inputs: [{name: x, shape: [batch, 8]}]\noutputs: [y]\n")
    out = tmp_path / "bad"
    r = mmdk("export", f"{FIX}/fusion_models.py:bad_op", "--io", spec, "-o", out)
    assert r.code == 4
    assert r.one_line_error() and "svd" in r.error_lines[0] and not out.exists()
    assert "every exporter failed" in r.error_lines[0]
    assert not list(tmp_path.glob(".bad.tmp-*"))


@pytest.mark.parametrize("args, code, needle", [
    (["export", "no/such/dir", "-o", "OUT"], 2, "does not exist"),
    (["export", f"{FIX}/fusion_models.py:nope", "--io", f"{FIX}/late_fusion.yaml", "-o", "OUT"], 2,
     "no factory named 'nope'"),
    (["inspect", f"{FIX}/fusion_models.py:late_fusion"], 2, "needs an I/O spec"),
])
def test_cli_errors_are_one_line_with_exit_codes(mmdk, tmp_path, args, code, needle):
    args = [str(tmp_path / "OUT") if a == "OUT" else a for a in args]
    r = mmdk(*args)
    assert r.code == code and needle in r.err
    assert r.one_line_error() and not (tmp_path / "OUT").exists()


def test_debug_flag_shows_traceback(mmdk):
    r = mmdk("--debug", "inspect", "no/such/dir")
    assert r.code == 2 and "Traceback" in r.err


def test_truncated_checkpoint_via_cli(mmdk, tiny_clip_dir, tmp_path):
    import shutil

    d = tmp_path / "broken"
    shutil.copytree(tiny_clip_dir, d)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    r = mmdk("export", d, "-o", tmp_path / "o")
    assert r.code == 2 and "truncated" in r.err and "hint:" in r.err and not (tmp_path / "o").exists()


def test_inspect_json(mmdk, tiny_clip_dir):
    r = mmdk("inspect", tiny_clip_dir, "--json")
    assert r.code == 0
    info = json.loads(r.out)
    assert set(info["towers"]) == {"vision", "text"}
    assert info["towers"]["vision"]["inputs"][0]["modality"] == "image"


def test_exported_onnx_matches_torch_on_fresh_inputs(tiny_clip_dir, tmp_path):
    """Independent of the kit's own verification: run both and compare at a batch it never checked."""
    import onnxruntime as ort

    import mmdeploy_kit as mmdk_api

    mmdk_api.export(tiny_clip_dir, tmp_path / "o")
    model = mmdk_api.load(tiny_clip_dir)
    text = model.towers["text"]
    feeds = text.spec.dummy_inputs({"batch": 7, "seq": 19}, seed=123)
    ref = text.module.run_numpy(feeds)["text_embeds"]
    got = ort.InferenceSession(str(tmp_path / "o" / "text.onnx")).run(None, feeds)[0]
    assert np.allclose(ref, got, atol=1e-4)
