"""The zoo: one tiny checkpoint of every Hugging Face family the README lists, through the CLI as a user runs it:
inspect -> export (verified, cosine >= 0.9999 vs torch at several shapes) -> dynamic INT8 -> bench against the
checkpoint, and prune (20%) of one tower of every family, whose pruned model exports verified too. The README's family table is this file's table.

The whole zoo takes 1-1.5 min on 2 cores (a few seconds per family); near-duplicate families are marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.zoo.families import FAMILIES

FAST = ["--min-time", "0.02", "--min-runs", "3", "--min-rounds", "3", "--warmup", "1", "--threads", "1"]

# family -> (towers in order, the tower the zoo prunes; None: not pruned here, see PRUNE_REFUSED and the README)
ZOO = {
    "clip": (["vision", "text"], "vision"),
    "siglip": (["vision", "text"], "vision"),
    "siglip2": (["vision", "text"], "vision"),
    "chinese_clip": (["vision", "text"], "text"),
    "altclip": (["vision", "text"], "text"),
    "align": (["vision", "text"], "text"),
    "blip": (["vision", "text"], "text"),
    "flava": (["vision", "text"], "vision"),
    "owlvit": (["vision", "text"], "vision"),
    "owlv2": (["vision", "text"], "vision"),
    "groupvit": (["vision", "text"], "text"),
    "metaclip2": (["vision", "text"], "vision"),
    "xclip": (["text", "video"], "video"),
    "clap": (["text", "audio"], "text"),
    "vision_text_dual_encoder": (["vision", "text"], "vision"),
    "vit": (["vision"], "vision"),
    "dinov2": (["vision"], "vision"),
    "convnext": (["vision"], "vision"),
    "bert": (["text"], "text"),
    "roberta": (["text"], "text"),
    "wav2vec2": (["audio"], "audio"),
    "hubert": (["audio"], "audio"),
    "whisper": (["audio"], "audio"),
    "ast": (["audio"], "audio"),
    "bridgetower": (["model"], "model"),  # fusion: input_ids, attention_mask, pixel_values, pixel_mask -> pooled
    "layoutlmv3": (["model"], None),      # fusion: text + page image (layout boxes default to zeros)
    "clipseg": (["vision", "text"], "vision"),
    "swin": (["vision"], None),
    "resnet": (["vision"], "vision"),
    "distilbert": (["text"], None),
    "wavlm": (["audio"], "audio"),
    "speech2text": (["audio"], None),
}
# prune refusals the zoo pins (one line, exit 2, an --ignore hint): the tower and what the message names
PRUNE_REFUSED = {"swin": ("vision", "cannot prune a Swin"), "speech2text": ("audio", "cannot group the layers")}
# towers with no MatMul/Gemm (EfficientNet): dynamic INT8 has nothing to do there
CONV_ONLY = {"align": "vision", "resnet": "vision"}


def test_zoo_covers_every_family():
    assert set(ZOO) == set(FAMILIES)


# near-duplicates of a family that runs by default (same towers / attention code): kept in CI, deselectable
NEAR_DUPLICATES = {"siglip", "owlvit", "hubert", "roberta", "vit", "bert", "clipseg", "swin", "resnet", "distilbert",
                   "wavlm", "speech2text", "layoutlmv3"}


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in NEAR_DUPLICATES else f
                                    for f in ZOO])
def test_zoo_family(family: str, mmdk, tmp_path: Path):
    towers, prune_tower = ZOO[family]
    ckpt = FAMILIES[family](tmp_path / family)

    r = mmdk("inspect", ckpt, "--json")
    assert r.code == 0, r.err
    assert list(json.loads(r.out)["towers"]) == towers

    onnx = tmp_path / "onnx"
    r = mmdk("-q", "export", ckpt, "--target", "onnx", "-o", onnx)
    assert r.code == 0, r.err
    man = json.loads((onnx / "mmdk_manifest.json").read_text())
    assert [a["tower"] for a in man["artifacts"]] == towers
    for art in man["artifacts"]:
        v = art["verification"]
        assert v["cosine_min"] >= 0.9999, (art["tower"], v)
        assert len({c["sizes"].get("batch") for c in v["checks"]}) >= 2

    q = tmp_path / "int8"
    r = mmdk("-q", "quantize", onnx, "--method", "dynamic", "-o", q)
    if family in CONV_ONLY and r.code != 0:
        # a conv-only tower has nothing for dynamic INT8: refused in one line naming the tower; the others quantize
        assert r.code == 2 and r.one_line_error() and "MatMul" in r.err, r.err
        others = [t for t in towers if t != CONV_ONLY[family]]
        if others:
            r = mmdk("-q", "quantize", onnx, "--method", "dynamic", *sum((["--tower", t] for t in others), []), "-o", q)
            assert r.code == 0, r.err
        else:  # nothing to quantize at all: bench the FP32 export
            q = onnx
    else:
        assert r.code == 0, r.err

    r = mmdk("-q", "bench", q, "--reference", ckpt, "--batch", "1", *FAST)
    assert r.code == 0, r.err

    if family in PRUNE_REFUSED:
        tower, words = PRUNE_REFUSED[family]
        r = mmdk("-q", "prune", ckpt, "--tower", tower, "--ratio", "0.2", "-o", tmp_path / "refused")
        assert r.code == 2 and r.one_line_error() and words in r.err and "--ignore" in r.err, r.err
    if prune_tower is None:
        return
    # prune 10-20% of one tower, then export the pruned model (rebuilt from its architecture record), verified
    pruned = tmp_path / "pruned"
    ratio = "0.1" if family == "wavlm" else "0.2"  # tiny WavLM: most of it is the conv feature encoder
    r = mmdk("-q", "prune", ckpt, "--tower", prune_tower, "--ratio", ratio, "-o", pruned)
    assert r.code == 0, r.err
    r = mmdk("-q", "export", pruned, "--tower", prune_tower, "-o", tmp_path / "pruned_onnx")
    assert r.code == 0, r.err
    art = json.loads((tmp_path / "pruned_onnx" / "mmdk_manifest.json").read_text())["artifacts"][0]
    assert art["tower"] == prune_tower and art["verification"]["cosine_min"] >= 0.9999


def test_zoo_blip_vision_prune_keeps_the_fused_qkv(mmdk, tmp_path: Path):
    """BLIP packs q, k, v in one Linear, which Torch-Pruning's grouping overran (IndexError): it keeps its width,
    the MLPs prune."""
    ckpt = FAMILIES["blip"](tmp_path / "blip")
    r = mmdk("-q", "prune", ckpt, "--tower", "vision", "--ratio", "0.1", "-o", tmp_path / "pruned")
    assert r.code == 0, r.err
    import mmdeploy_kit as mmdk_api

    qkv = mmdk_api.load(tmp_path / "pruned" / "model").root.vision_model.encoder.layers[0].self_attn.qkv
    assert (qkv.in_features, qkv.out_features) == (32, 96)


def test_zoo_clap_prune_of_every_tower_keeps_the_audio_tower_it_cannot_prune(mmdk, tmp_path: Path):
    """No --tower (clip-prune-distill-int8's prune step): CLAP's HTSAT attention cannot be pruned, so its audio tower
    is kept unpruned and said so, the text tower prunes (the recipe exited 2); named explicitly it is still refused."""
    ckpt = FAMILIES["clap"](tmp_path / "clap")
    r = mmdk("prune", ckpt, "--ratio", "0.2", "-o", tmp_path / "pruned")
    assert r.code == 0, r.err
    assert "tower 'audio' skipped (kept unpruned)" in r.err
    man = json.loads((tmp_path / "pruned" / "mmdk_manifest.json").read_text())
    details = {a["tower"]: a["details"] for a in man["artifacts"]}
    assert details["text"]["pruned"] and not details["audio"]["pruned"] and "--ignore" in details["audio"]["skipped"]
    assert list(man["metrics"]["towers"]) == ["text"] and "audio" in man["metrics"]["skipped_towers"]
    r = mmdk("-q", "prune", ckpt, "--tower", "audio", "--ratio", "0.2", "-o", tmp_path / "refused")
    assert r.code == 2 and r.one_line_error() and "--ignore" in r.err, r.err
