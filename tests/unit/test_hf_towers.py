"""HF towers by capability: each get_<modality>_features method is a tower that computes what the family's own
forward computes, with inputs from the signature, sub-config and processor files. Runs on transformers 4.x and 5.x."""

from __future__ import annotations

import json

import numpy as np
import pytest
torch = pytest.importorskip("torch")

import mmdeploy_kit as mmdk
from mmdeploy_kit import load as load_checkpoint
from mmdeploy_kit.model.hf_inputs import max_text_length, read_processor_files
from mmdeploy_kit.model.hf_towers import pool_features
from tests.zoo import families

# family -> forward output per tower (XCLIP's forward conditions text on the video, so only its video tower)
FORWARD_OUTPUTS = {
    "clip": {"vision": "image_embeds", "text": "text_embeds"},
    "siglip2": {"vision": "image_embeds", "text": "text_embeds"},
    "chinese_clip": {"vision": "image_embeds", "text": "text_embeds"},
    "altclip": {"vision": "image_embeds", "text": "text_embeds"},
    "align": {"vision": "image_embeds", "text": "text_embeds"},
    "blip": {"vision": "image_embeds", "text": "text_embeds"},
    "owlv2": {"vision": "image_embeds", "text": "text_embeds"},
    "groupvit": {"vision": "image_embeds", "text": "text_embeds"},
    "metaclip2": {"vision": "image_embeds", "text": "text_embeds"},
    "clap": {"audio": "audio_embeds", "text": "text_embeds"},
    "xclip": {"video": "video_embeds"},
    "vision_text_dual_encoder": {"vision": "image_embeds", "text": "text_embeds"},
}


def _feeds(tower, batch=2, seq=5):
    spec = tower.spec
    return spec.dummy_inputs({d: batch if d == "batch" else min(max(seq, lo), hi) for d, (lo, hi) in spec.dims.items()})


@pytest.mark.parametrize("family", list(FORWARD_OUTPUTS))
def test_towers_compute_what_forward_computes(family, tmp_path):
    model = mmdk.load(families.FAMILIES[family](tmp_path / family))
    feeds = {}
    outs = {}
    for name, tower in model.towers.items():
        f = _feeds(tower)
        feeds.update(f)
        outs[name] = tower.module.run_numpy(f)[tower.spec.output_names[0]]
        assert np.allclose(np.linalg.norm(outs[name], axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():
        ref = model.root(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    for name, key in FORWARD_OUTPUTS[family].items():
        want = torch.nn.functional.normalize(ref[key].float(), dim=-1).numpy()
        assert np.allclose(outs[name], want, atol=1e-5), (family, name)


def test_flava_towers_pool_the_cls_token_like_its_forward(tmp_path):
    model = mmdk.load(families.flava(tmp_path / "flava"))
    vision = model.towers["vision"]
    assert vision.spec.input("pixel_values").shape == ("batch", 3, 32, 32)  # from image_config, not 224
    px = _feeds(vision)["pixel_values"]
    root = model.root
    with torch.inference_mode():
        hidden = root.image_model(pixel_values=torch.from_numpy(px))[0]
        want = torch.nn.functional.normalize(root.image_projection(hidden[:, 0, :]), dim=-1).numpy()
    assert np.allclose(vision.module.run_numpy({"pixel_values": px})["image_embeds"], want, atol=1e-5)


def test_extra_inputs_are_named_like_the_method_parameters(tmp_path):
    siglip2 = mmdk.load(families.siglip2(tmp_path / "s2")).towers["vision"].spec
    assert siglip2.input_names == ["pixel_values", "pixel_attention_mask", "spatial_shapes"]
    assert siglip2.input("pixel_values").shape == ("batch", 16, 3 * 8 * 8)  # max_num_patches x (C * patch^2)
    assert siglip2.input("spatial_shapes").range == (4, 5)  # the square 4 x 4 grid
    clap = mmdk.load(families.clap(tmp_path / "clap")).towers["audio"].spec
    assert clap.input_names == ["input_features", "is_longer"]
    # frames = max_length_s * sampling_rate / hop_length + 1 from the feature extractor; mel bins from the config
    assert clap.input("input_features").shape == ("batch", 1, 101, 16) and clap.input("is_longer").dtype == "bool"
    chinese = mmdk.load(families.chinese_clip(tmp_path / "cc")).towers["text"].spec
    assert chinese.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert chinese.input("token_type_ids").range == (0, 2)


def test_roberta_style_text_towers_stop_before_the_padding_offset(tmp_path):
    """XLM-R / RoBERTa position ids start at pad_token_id + 1: the longest sequence is 2 shorter than the table
    (AltCLIP's text tower ended in IndexError at the full length)."""
    ckpt = families.altclip(tmp_path / "alt")
    (ckpt / "tokenizer_config.json").unlink()  # no tokenizer limit: the position table decides
    text = mmdk.load(ckpt).towers["text"]
    assert text.spec.dims["seq"] == (1, 40 - 2)
    out = text.module.run_numpy(_feeds(text, batch=1, seq=38))["text_embeds"]
    assert np.isfinite(out).all()
    cfg = type("Cfg", (), {"max_position_embeddings": 514, "model_type": "xlm-roberta", "pad_token_id": 1})()
    assert max_text_length(cfg, {}) == 512 and max_text_length(cfg, {"model_max_length": 77}) == 77


def test_processor_files_are_read(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"crop_size": {"height": 48, "width": 40},
                                                                   "sampling_rate": 8000}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1000000000000000019884624838656}))
    info = read_processor_files(tmp_path)
    assert info["crop_size"] == {"height": 48, "width": 40} and info["sampling_rate"] == 8000
    assert "model_max_length" not in info  # the 'no limit' sentinel is not a length
    assert read_processor_files(None) == {}


def test_pool_features_takes_model_outputs_and_sequences():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    x = torch.randn(2, 5, 8)
    assert torch.equal(pool_features(BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=x[:, 1]), torch), x[:, 1])
    assert torch.equal(pool_features(BaseModelOutputWithPooling(last_hidden_state=x), torch), x[:, 0])
    assert torch.allclose(pool_features(x, torch, "mean"), x.mean(1))


def test_a_model_whose_input_the_kit_cannot_describe_exits_2_with_the_io_hint(mmdk, tmp_path):
    from transformers import TimeSeriesTransformerConfig, TimeSeriesTransformerModel

    m = TimeSeriesTransformerModel(TimeSeriesTransformerConfig(prediction_length=4, context_length=8, d_model=16,
                                                               encoder_layers=1, decoder_layers=1, lags_sequence=[1]))
    m.save_pretrained(str(tmp_path / "ts"))
    for verb in (["inspect"], ["export", "-o", tmp_path / "out"]):
        r = mmdk(verb[0], tmp_path / "ts", *verb[1:])
        assert r.code == 2 and r.one_line_error(), r.err
        assert "past_values" in r.err and "--io SPEC.yaml" in r.err and "internal error" not in r.err


def test_fusion_model_is_one_tower_and_an_unexportable_one_is_refused_in_one_line(mmdk, tmp_path):
    """ViLT's forward takes text and image at once: one tower with both; its patch sampling (torch.multinomial
    with a data-dependent count) has no ONNX form, so export is refused (exit 4), never an internal error."""
    from transformers import ViltConfig, ViltModel

    ViltModel(ViltConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=37, image_size=32, patch_size=8, max_position_embeddings=40)
              ).save_pretrained(str(tmp_path / "vilt"))
    spec = load_checkpoint(tmp_path / "vilt").towers["model"].spec
    assert spec.input_names == ["input_ids", "attention_mask", "token_type_ids", "pixel_values", "pixel_mask"]
    assert spec.modalities == ["image", "text"] and spec.input("pixel_mask").shape == ("batch", 32, 32)
    r = mmdk("-q", "export", tmp_path / "vilt", "-o", tmp_path / "out")
    assert r.code == 4 and r.one_line_error() and "internal error" not in r.err, r.err


def test_position_limit_is_read_from_the_modules_and_speech2text_mel_bins(tmp_path):
    """A RoBERTa-style table the config rules do not name (LayoutLMv3, a text + image fusion model) is found from
    its padded position Embedding; Speech2Text keeps its mel bins in input_feat_per_channel."""
    from transformers import LayoutLMv3Config, LayoutLMv3Model, Speech2TextConfig, Speech2TextModel

    LayoutLMv3Model(LayoutLMv3Config(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=37, input_size=32, patch_size=8, max_position_embeddings=64,
                                     max_2d_position_embeddings=128, coordinate_size=5, shape_size=6)
                    ).save_pretrained(str(tmp_path / "layout"))
    tower = load_checkpoint(tmp_path / "layout").towers["model"]
    assert tower.spec.dims["seq"] == (1, 64 - 1 - 1)
    assert tower.spec.input("pixel_values").shape == ("batch", 3, 32, 32)
    assert np.isfinite(tower.module.run_numpy(_feeds(tower, batch=1, seq=62))["pooler_output"]
                       if "pooler_output" in tower.spec.output_names else
                       tower.module.run_numpy(_feeds(tower, batch=1, seq=62))["last_hidden_state"]).all()
    Speech2TextModel(Speech2TextConfig(vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1,
                                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37,
                                       decoder_ffn_dim=37, input_feat_per_channel=16, conv_channels=16,
                                       max_source_positions=256)).save_pretrained(str(tmp_path / "s2t"))
    audio = load_checkpoint(tmp_path / "s2t").towers["audio"].spec
    assert audio.input("input_features").shape == ("batch", "frames", 16)
