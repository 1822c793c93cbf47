"""The prune pass on tiny HF towers: ratio reached, manifest figures, output reloads without Torch-Pruning or
pickle (architecture record + strict safetensors), pruned towers pair with unpruned ones, save_pretrained
when the config can say it, Taylor / Hessian importance from calibration data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

import mmdeploy_kit as mmdk  # noqa: E402
from mmdeploy_kit.errors import CheckpointError, UserInputError  # noqa: E402


@pytest.fixture(autouse=True)
def _own_cache(cache):
    """Step-cache entries go to this test's tmp dir, not ~/.cache."""


@pytest.fixture(scope="module")
def pruned_clip(tiny_clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pruned") / "clip"
    return out, mmdk.prune(tiny_clip_dir, out, ratio={"vision": 0.4}, force=True)


def test_ratio_reached_and_recorded(pruned_clip, tiny_clip_dir):
    out, man = pruned_clip
    vis = man.artifact("vision")
    d = vis.details
    assert d["pruned"] and d["removed_fraction"] >= 0.4 > 0 and d["target_removed_fraction"] == pytest.approx(0.4, abs=1e-3)
    orig = mmdk.load(tiny_clip_dir)
    assert d["params_before"] == orig.towers["vision"].parameter_count()
    rebuilt = mmdk.load(out / "model")
    assert rebuilt.towers["vision"].parameter_count() == d["params_after"]
    heads = [v for v in d["layers"].values() if v["kind"] == "heads"]
    assert heads and all(1 <= h["heads"] <= h["initial"] for h in heads)
    assert -1 <= vis.verification["vs_unpruned"]["cosine_min"] < 1
    assert vis.verification["reload"]["cosine_min"] > 0.9999
    assert man.artifact("text").details == {"pruned": False}
    assert man.pass_name == "prune" and man.metrics["towers"]["vision"]["params_after"] == d["params_after"]
    record = json.loads((out / "model" / "mmdk_arch.json").read_text())
    assert record["source"]["kind"] == "hf" and any("pruned_attention" in e.get("patches", [])
                                                    for e in record["modules"].values())


def test_pruned_vision_tower_pairs_with_the_original_text_tower(pruned_clip, tiny_clip_dir):
    out, _ = pruned_clip
    pruned, orig = mmdk.load(out), mmdk.load(tiny_clip_dir)  # the mmdk dir, as users load it
    feeds = orig.towers["text"].spec.dummy_inputs({"batch": 2, "seq": 5})
    np.testing.assert_array_equal(pruned.towers["text"].module.run_numpy(feeds)["text_embeds"],
                                  orig.towers["text"].module.run_numpy(feeds)["text_embeds"])
    img = orig.towers["vision"].spec.dummy_inputs({"batch": 2})
    assert pruned.towers["vision"].module.run_numpy(img)["image_embeds"].shape == (2, 16)  # embedding width kept


def test_reload_needs_neither_torch_pruning_nor_pickle(pruned_clip):
    out, _ = pruned_clip
    code = (
        "import sys, pickle\n"
        "sys.modules['torch_pruning'] = None\n"  # import torch_pruning -> ImportError
        "import torch, transformers, mmdeploy_kit as mmdk\n"
        "from transformers import CLIPModel\n"
        "def no(*a, **k): raise AssertionError('unpickling at load time')\n"
        "pickle.loads = pickle.load = torch.load = no\n"
        f"m = mmdk.load(r'{out}')\n"
        "print(sorted(m.towers), m.towers['vision'].parameter_count())\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-1500:]
    assert "['text', 'vision']" in res.stdout


def test_damaged_record_or_weights_are_one_line_errors(pruned_clip, tmp_path):
    import shutil

    out, _ = pruned_clip
    bad = tmp_path / "bad"
    shutil.copytree(out / "model", bad)
    rec = json.loads((bad / "mmdk_arch.json").read_text())
    name = next(n for n, e in rec["modules"].items() if "params" in e)
    pname = next(iter(rec["modules"][name]["params"]))
    rec["modules"][name]["params"][pname][0] += 1
    (bad / "mmdk_arch.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        mmdk.load(bad)
    (bad / "mmdk_arch.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        mmdk.load(bad)


def test_mlp_only_uniform_widths_also_give_a_plain_save_pretrained_dir(tiny_clip_dir, tmp_path):
    from transformers import CLIPModel

    man = mmdk.prune(tiny_clip_dir, tmp_path / "p", ratio=0.15, scope="mlp", round_to=4, force=True)
    assert man.metrics["save_pretrained"].startswith("hf/")
    assert {a.kind for a in man.artifacts} == {"hf"} and {a.path for a in man.artifacts} == {"hf"}
    hf = CLIPModel.from_pretrained(str(tmp_path / "p" / "hf"))  # plain transformers, strict shapes
    widths = {hf.config.vision_config.intermediate_size, hf.config.text_config.intermediate_size}
    assert all(w % 4 == 0 and w < 37 for w in widths)
    rebuilt = mmdk.load(tmp_path / "p" / "model")
    x = rebuilt.towers["vision"].spec.dummy_inputs({"batch": 2})
    np.testing.assert_allclose(mmdk.load(tmp_path / "p").towers["vision"].module.run_numpy(x)["image_embeds"],
                               rebuilt.towers["vision"].module.run_numpy(x)["image_embeds"], atol=1e-6)


@pytest.mark.parametrize("importance", ["taylor", "hessian"])
def test_data_driven_importance_uses_a_contrastive_loss_on_pairs(tiny_clip_dir, tmp_path, importance):
    rng = np.random.default_rng(0)
    npz = tmp_path / "pairs.npz"
    np.savez(npz, **{"vision/pixel_values": rng.standard_normal((12, 3, 32, 32)).astype(np.float32),
                     "text/input_ids": rng.integers(0, 99, (12, 6)), "text/attention_mask": np.ones((12, 6), np.int64)})
    man = mmdk.prune(tiny_clip_dir, tmp_path / "p", ratio={"vision": 0.3}, importance=importance,
                     calib_data=npz, calib_samples=8, holdout_samples=4, batch_size=4, force=True)
    assert man.metrics["loss"] == "contrastive" and man.metrics["importance"] == importance
    vis = man.artifact("vision")
    assert vis.details["removed_fraction"] >= 0.3 and "held-out rows" in vis.verification["data"]


def test_target_params_and_single_tower_models(tiny_bert_dir, tmp_path):
    before = mmdk.load(tiny_bert_dir).towers["text"].parameter_count()
    man = mmdk.prune(tiny_bert_dir, tmp_path / "b", target_params=int(before * 0.8), force=True)
    d = man.artifact("text").details
    assert d["params_before"] == before and d["params_after"] <= int(before * 0.8)
    rebuilt = mmdk.load(tmp_path / "b" / "model")
    attn = rebuilt.root.encoder.layer[0].attention.self
    assert attn.all_head_size == attn.num_attention_heads * attn.attention_head_size == attn.query.out_features
    with pytest.raises(UserInputError, match="not below"):
        mmdk.prune(tiny_bert_dir, tmp_path / "c", target_params=before + 1, force=True)
    assert not (tmp_path / "c").exists()


def test_a_pruned_dir_can_be_pruned_again(pruned_clip, tmp_path):
    out, man = pruned_clip
    again = mmdk.prune(out, tmp_path / "again", ratio={"vision": 0.05}, force=True)
    assert again.artifact("vision").details["params_before"] == man.artifact("vision").details["params_after"]
    assert mmdk.load(tmp_path / "again").towers["vision"].parameter_count() == \
        again.artifact("vision").details["params_after"]


def test_pruning_history_replays_on_the_unpruned_model(pruned_clip, tiny_clip_dir):
    """The record also says which channels / heads went (Torch-Pruning's pruning_history): replayed on the
    original checkpoint it gives the pruned model back."""
    import torch_pruning as tp

    from mmdeploy_kit.passes.prune.hf_attention import discover_attention, patch_attention

    out, _ = pruned_clip
    history = json.loads((out / "model" / "mmdk_arch.json").read_text())["pruned"]["vision"]["history"]
    orig = mmdk.load(tiny_clip_dir)
    tower = orig.towers["vision"]
    x = tower.spec.dummy_inputs({"batch": 2})
    attention = {id(i): i for i in discover_attention(orig.root).values()}
    with torch.enable_grad():
        dg = tp.DependencyGraph().build_dependency(tower.module, example_inputs=[torch.from_numpy(x["pixel_values"])],
                                                 verbose=False)
    dg.load_pruning_history(history)
    for info in attention.values():
        patch_attention(info)
    np.testing.assert_allclose(tower.module.run_numpy(x)["image_embeds"],
                               mmdk.load(out).towers["vision"].module.run_numpy(x)["image_embeds"], atol=1e-6)


def test_a_classifier_head_inside_a_sequential_keeps_its_class_count(tmp_path):
    """The last Linear of an nn.Sequential head *is* the tower output: pruning must not cut classes."""
    import mmdeploy_kit as mk

    factory = tmp_path / "seqhead.py"
    factory.write_text(
        "import torch.nn as nn\n"
        "class M(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())\n"
        "        self.head = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 7))\n"
        "    def forward(self, features):\n"
        "        return self.head(self.body(features))\n"
        "def build():\n    return M().eval()\n")
    io = tmp_path / "io.yaml"
    io.write_text("inputs: [{name: features, modality: tabular, dtype: float32, shape: [batch, 16]}]\n"
                  "outputs: [{name: logits}]\ndims: {batch: [1, 4]}\n")
    mk.prune(f"{factory}:build", tmp_path / "out", ratio=0.4, load_options={"io": io})
    pruned = mk.load(tmp_path / "out")
    tower = next(iter(pruned.towers.values()))
    import torch

    out = tower.module(torch.zeros(2, 16))
    out = out[0] if isinstance(out, (tuple, list)) else out
    assert tuple(out.shape) == (2, 7)
