"""ONNX files from other exporters: a combined CLIP graph as Optimum writes it (``main_export(...,
task="feature-extraction")``: one model.onnx, inputs input_ids / pixel_values / attention_mask with symbolic
num_channels / height / width, outputs logits_per_image / logits_per_text / text_embeds / image_embeds, and its
config.json beside it). Built in the test from a tiny CLIPModel config; without optimum-onnx (the bench-peers
extra) the same graph - same input/output names and symbolic dims - comes from torch.onnx.export of the
HF CLIPModel forward."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

OPTIMUM = importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.exporters") is not None


def _torch_export_like_optimum(ckpt, out):
    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(ckpt)).eval()

    class Combined(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.clip = model

        def forward(self, input_ids, pixel_values, attention_mask):
            o = self.clip(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
            return o.logits_per_image, o.logits_per_text, o.text_embeds, o.image_embeds

    ids = torch.randint(0, 99, (2, 7))
    axes = {"input_ids": {0: "text_batch_size", 1: "sequence_length"},
            "attention_mask": {0: "text_batch_size", 1: "sequence_length"},
            "pixel_values": {0: "batch_size", 1: "num_channels", 2: "height", 3: "width"}}
    torch.onnx.export(Combined(), (ids, torch.randn(2, 3, 32, 32), torch.ones_like(ids)), str(out / "model.onnx"),
                      input_names=["input_ids", "pixel_values", "attention_mask"],
                      output_names=["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copyfile(ckpt / name, out / name)


@pytest.fixture(scope="module")
def combined_onnx(tiny_clip_dir, tmp_path_factory):
    from transformers import CLIPImageProcessor

    root = tmp_path_factory.mktemp("foreign")
    ckpt = root / "ckpt"
    shutil.copytree(tiny_clip_dir, ckpt)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(ckpt))
    out = root / "exported"
    if OPTIMUM:
        from optimum.exporters.onnx import main_export

        main_export(str(ckpt), output=str(out), task="feature-extraction", do_validation=False, no_post_process=True)
    else:
        out.mkdir()
        _torch_export_like_optimum(ckpt, out)
    return out / "model.onnx"


def _inspect(mmdk, *args):
    r = mmdk("-q", "inspect", *args, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_combined_graph_splits_into_towers_with_dims_from_the_graph(mmdk, combined_onnx):
    import onnx

    g = onnx.load(str(combined_onnx)).graph
    pix = next(i for i in g.input if i.name == "pixel_values")
    assert [d.dim_param for d in pix.type.tensor_type.shape.dim][1:] == ["num_channels", "height", "width"]
    info = _inspect(mmdk, combined_onnx)
    assert set(info["towers"]) == {"vision", "text"}
    vision, text = info["towers"]["vision"], info["towers"]["text"]
    assert [i["name"] for i in vision["inputs"]] == ["pixel_values"] and vision["outputs"] == [{"name": "image_embeds"}]
    assert vision["inputs"][0]["shape"][1:] == [3, 32, 32]
    assert {i["name"] for i in text["inputs"]} == {"input_ids", "attention_mask"}
    seq = text["inputs"][0]["shape"][1]
    assert text["dims"][seq] == [1, 32]  # text max_position_embeddings of the tiny config


def test_dims_come_from_the_graph_alone(mmdk, combined_onnx, tmp_path):
    """Without config.json beside it: channels from the patch Conv, 32 px from the position-embedding table."""
    shutil.copyfile(combined_onnx, tmp_path / "model.onnx")
    info = _inspect(mmdk, tmp_path / "model.onnx")
    assert info["towers"]["vision"]["inputs"][0]["shape"][1:] == [3, 32, 32]


def test_bench_and_quantize_the_split_towers(mmdk, combined_onnx, tmp_path):
    r = mmdk("-q", "bench", combined_onnx, "--batch", "2", "--min-runs", "2", "--min-time", "0.01", "--min-rounds", "2",
             "--warmup", "1", "--report", tmp_path / "r.json")
    assert r.code == 0, r.err
    report = json.loads((tmp_path / "r.json").read_text())
    shapes = {x["tower"]: x["sizes"] for x in report["latency"]}
    assert set(shapes) == {"vision", "text"}
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", pixel_values=rng.standard_normal((24, 3, 32, 32)).astype(np.float32),
             input_ids=rng.integers(0, 99, (24, 8)), attention_mask=np.ones((24, 8), np.int64))
    out = tmp_path / "q"
    r = mmdk("-q", "quantize", combined_onnx, "--calib-data", tmp_path / "c.npz", "-o", out)
    assert r.code == 0, r.err
    man = json.loads((out / "mmdk_manifest.json").read_text())
    arts = {a["tower"]: a for a in man["artifacts"]}
    assert arts["vision"]["details"]["quantizer"]["method"] == "static"
    assert arts["text"]["details"]["quantizer"]["method"] == "dynamic"
    assert all(a["verification"]["cosine"] >= 0.98 for a in arts.values())


def test_io_spec_states_dims_and_wrong_specs_are_one_line_errors(mmdk, combined_onnx, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("inputs: [{name: pixel_values, modality: image, shape: [batch, 3, 32, 32]}]\n"
                    "outputs: [image_embeds]\ndims: {batch: [1, 4]}\n")
    info = _inspect(mmdk, combined_onnx, "--io", good)
    assert list(info["towers"]) == ["model"] and info["towers"]["model"]["dims"] == {"batch": [1, 4]}
    bad = {"channels.yaml": ("inputs: [{name: pixel_values, shape: [batch, 1, 32, 32]}]\noutputs: [image_embeds]\n",
                             "has 1 channels in the spec"),
           "name.yaml": ("inputs: [{name: pixels, shape: [batch, 3, 32, 32]}]\noutputs: [image_embeds]\n",
                         "'pixels' is not an input of the graph"),
           "needs.yaml": ("inputs: [{name: input_ids, dtype: int64, shape: [batch, seq]}]\noutputs: [text_embeds]\n",
                          "also need input 'attention_mask'")}
    for name, (text, needle) in bad.items():
        (tmp_path / name).write_text(text)
        for cmd in (["inspect", combined_onnx], ["quantize", combined_onnx, "--method", "dynamic", "-o", tmp_path / "q"]):
            r = mmdk("-q", *cmd, "--io", tmp_path / name)
            assert r.code == 2 and r.one_line_error() and needle in r.err, (name, r.err)
    # a spec the graph cannot check statically (symbolic dims) fails at its first run: still one line, exit 2
    (tmp_path / "size.yaml").write_text("inputs: [{name: pixel_values, shape: [batch, 3, 48, 48]}]\n"
                                        "outputs: [image_embeds]\n")
    r = mmdk("-q", "quantize", combined_onnx, "--io", tmp_path / "size.yaml", "--method", "dynamic", "-o", tmp_path / "q")
    assert r.code == 2 and r.one_line_error() and "cannot run on inputs" in r.err, r.err
