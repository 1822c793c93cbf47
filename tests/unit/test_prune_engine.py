"""What structured pruning removes is exactly what it claims to: pruned towers equal the unpruned ones with the
removed heads / hidden units masked out; output widths stay; unhandled modules are one-line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

import mmdeploy_kit as mmdk  # noqa: E402
from mmdeploy_kit.errors import UserInputError  # noqa: E402

MODELS = textwrap.dedent('''
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        def forward(self, x):
            return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))

    class ResNetish(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.b1, self.b2, self.fc = Block(16), Block(16), nn.Linear(16, 10)
        def forward(self, pixel_values):
            return self.fc(self.b2(self.b1(self.stem(pixel_values))).mean((2, 3)))

    class LSTMText(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lstm = nn.Embedding(100, 16), nn.LSTM(16, 32, num_layers=2, batch_first=True)
            self.fc, self.out = nn.Linear(32, 24), nn.Linear(24, 5)
        def forward(self, input_ids):
            h, _ = self.lstm(self.emb(input_ids))
            return self.out(torch.relu(self.fc(h.mean(1))))

    class GRUText(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.proj = nn.Embedding(100, 16), nn.Linear(16, 32)
            self.gru, self.mid, self.out = nn.GRU(32, 32, batch_first=True), nn.Linear(32, 48), nn.Linear(48, 5)
        def forward(self, input_ids):
            h, _ = self.gru(self.proj(self.emb(input_ids)))
            return self.out(torch.relu(self.mid(h.mean(1))))

    class GNNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.g, self.c2 = nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(4, 32), nn.Conv2d(32, 16, 3, padding=1)
            self.fc = nn.Linear(16, 3)
        def forward(self, pixel_values):
            return self.fc(self.c2(torch.relu(self.g(self.c1(pixel_values)))).mean((2, 3)))

    def gn():
        torch.manual_seed(0)
        return GNNet()

    def resnet():
        torch.manual_seed(0)
        m = ResNetish()
        for b in m.modules():
            if isinstance(b, nn.BatchNorm2d):
                nn.init.uniform_(b.weight, 0.5, 1.5)
        return m

    def lstm():
        torch.manual_seed(0)
        return LSTMText()

    def gru():
        torch.manual_seed(0)
        return GRUText()
''')
IMG = {"inputs": [{"name": "pixel_values", "modality": "image", "dtype": "float32", "shape": ["batch", 3, 16, 16]}],
       "outputs": ["logits"], "dims": {"batch": [1, 4]}}
TXT = {"inputs": [{"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"],
                   "range": [0, 100]}], "outputs": ["logits"], "dims": {"batch": [1, 4], "seq": [2, 12]}}


@pytest.fixture(autouse=True)
def _own_cache(cache):
    """Step-cache entries go to this test's tmp dir, not ~/.cache."""


@pytest.fixture(scope="module")
def models_py(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("prune_models") / "prune_models.py"
    p.write_text(MODELS)
    return p


def _kept_rows(pruned_w, orig_w) -> list[int]:
    """Indices of ``orig_w``'s rows that survive in ``pruned_w`` (pruning copies rows exactly)."""
    return [int(np.argmin(((orig_w - r[None]) ** 2).sum(-1))) for r in pruned_w]


def test_pruned_heads_equal_masked_heads(tiny_clip_dir, tmp_path):
    """CLIP attention with heads removed == the unpruned model with those heads' values zeroed."""
    out = mmdk.prune(tiny_clip_dir, tmp_path / "p", ratio={"vision": 0.3}, scope="heads", force=True)
    layers = {k: v for k, v in out.artifacts[0].details["layers"].items() if v["kind"] == "heads"}
    assert layers and any(v["heads"] < v["initial"] for v in layers.values())
    pruned, orig = mmdk.load(tmp_path / "p" / "model"), mmdk.load(tiny_clip_dir)
    masked = orig.root
    for name, info in layers.items():
        attn_p, attn_o = pruned.root.get_submodule(name), masked.get_submodule(name)
        hd = info["head_dim"]
        kept = _kept_rows(attn_p.q_proj.weight.detach().numpy(), attn_o.q_proj.weight.detach().numpy())
        kept_heads = sorted({k // hd for k in kept})
        assert len(kept_heads) == info["heads"] == attn_p.num_heads
        with torch.no_grad():
            for h in set(range(info["initial"])) - set(kept_heads):
                attn_o.v_proj.weight[h * hd:(h + 1) * hd] = 0
                attn_o.v_proj.bias[h * hd:(h + 1) * hd] = 0
    x = orig.towers["vision"].spec.dummy_inputs({"batch": 3})
    a = pruned.towers["vision"].module.run_numpy(x)["image_embeds"]
    b = orig.towers["vision"].module.run_numpy(x)["image_embeds"]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_lstm_hidden_units_pruned_exactly(models_py, tmp_path):
    """A 2-layer LSTM whose hidden units are removed == the unpruned one with those units cut off (no unit,
    next layer or consumer reads them): Torch-Pruning 1.6.1's own LSTM pruner gets the gate rows wrong."""
    src = f"{models_py}:lstm"
    man = mmdk.prune(src, tmp_path / "p", ratio=0.3, scope="channels", load_options={"io": TXT}, force=True)
    assert man.artifacts[0].details["layers"]["lstm"]["width"] < 32
    pruned, orig = mmdk.load(tmp_path / "p" / "model"), mmdk.load(src, io=TXT)
    lp, lo = pruned.root.lstm, orig.root.lstm
    keep = _kept_rows(lp.weight_ih_l0.detach().numpy()[: lp.hidden_size], lo.weight_ih_l0.detach().numpy()[:32])
    drop = sorted(set(range(32)) - set(keep))
    assert len(keep) == lp.hidden_size and drop
    with torch.no_grad():
        for k in range(2):
            getattr(lo, f"weight_hh_l{k}")[:, drop] = 0
        lo.weight_ih_l1[:, drop] = 0
        orig.root.fc.weight[:, drop] = 0
    x = orig.towers["model"].spec.dummy_inputs({"batch": 3, "seq": 7})
    np.testing.assert_allclose(pruned.towers["model"].module.run_numpy(x)["logits"],
                               orig.towers["model"].module.run_numpy(x)["logits"], atol=1e-5)


def test_residual_cnn_keeps_output_width_and_exports(models_py, tmp_path):
    src = f"{models_py}:resnet"
    man = mmdk.prune(src, tmp_path / "p", ratio=0.3, round_to=2, load_options={"io": IMG}, force=True)
    d = man.artifacts[0].details
    assert d["removed_fraction"] >= 0.3 and d["params_after"] < d["params_before"]
    assert all(v["width"] % 2 == 0 for v in d["layers"].values())
    pruned = mmdk.load(tmp_path / "p" / "model")
    assert pruned.root.fc.out_features == 10           # the tower's output width stays
    assert pruned.root.stem[0].out_channels < 16       # residual channels shrank together with their BatchNorms
    assert pruned.root.b1.b2.num_features == pruned.root.stem[0].out_channels
    x = pruned.towers["model"].spec.dummy_inputs({"batch": 2})
    assert pruned.towers["model"].module.run_numpy(x)["logits"].shape == (2, 10)


def test_unhandled_modules_are_one_line_errors_until_ignored(models_py, tri_modal_factory, tmp_path):
    with pytest.raises(UserInputError, match=r"cannot prune nn.GRU at 'gru'") as exc:
        mmdk.prune(f"{models_py}:gru", tmp_path / "g", ratio=0.1, load_options={"io": TXT}, force=True)
    assert "--ignore gru" in exc.value.hint and not (tmp_path / "g").exists()
    man = mmdk.prune(f"{models_py}:gru", tmp_path / "g", ratio=0.1, ignore=("gru",), load_options={"io": TXT},
                     force=True)
    assert set(man.artifacts[0].details["layers"]) == {"mid"}  # only the MLP after the GRU shrank
    src, io = tri_modal_factory
    with pytest.raises(UserInputError, match=r"nn.MultiheadAttention .* at 'fusion'") as exc:
        mmdk.prune(src, tmp_path / "t", ratio=0.1, load_options={"io": io}, force=True)
    assert "--ignore fusion" in exc.value.hint and not (tmp_path / "t").exists()
    man = mmdk.prune(src, tmp_path / "t", ratio=0.1, ignore=("fusion",), load_options={"io": io}, force=True)
    assert man.artifacts[0].details["removed_fraction"] >= 0.1
    with pytest.raises(UserInputError, match="no module of that name"):
        mmdk.prune(src, tmp_path / "u", ratio=0.1, ignore=("nope",), load_options={"io": io}, force=True)


def test_unreachable_ratio_says_how_far_it_can_go(late_fusion_factory, tmp_path):
    src, io = late_fusion_factory  # most of its parameters are token embeddings, which stay
    with pytest.raises(UserInputError, match=r"cannot remove .* at most \d+\.\d%"):
        mmdk.prune(src, tmp_path / "x", ratio=0.6, load_options={"io": io}, force=True)
    assert not (tmp_path / "x").exists()


def test_group_norm_widths_stay_multiples_of_its_groups(models_py, tmp_path):
    man = mmdk.prune(f"{models_py}:gn", tmp_path / "p", ratio=0.3, load_options={"io": IMG}, force=True)
    assert man.artifacts[0].details["removed_fraction"] >= 0.3
    g = mmdk.load(tmp_path / "p" / "model").root.g
    assert g.num_channels < 32 and g.num_channels % g.num_groups == 0
