"""Audio-text (CLAP) and video-text (X-CLIP) dual encoders through the whole CLI pipeline on synthetic data:
`mmdk data synth --modality audio|video` -> export -> quantize (static INT8 calibrated from the manifest, and
dynamic) -> bench --reference CKPT --data val.jsonl with zero-shot and recall figures named for the modality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

WORDS = ("a an the of sound recording low high tone steady rising falling chirp noise burst bursts pulsing over "
         "some faint background loud soft short long you can hear deep hum pitched in pitch on and off throbbing "
         "video circle square moving left right up down growing shrinking red green blue yellow").split()


def _word_tokenizer(cls, specials: dict[str, str], max_len: int):
    """A tiny word-level fast tokenizer of class ``cls`` with the family's special tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(dict.fromkeys([*specials.values(), *WORDS, ",", "."]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])  # CLIPTokenizerFast wants a Sequence
    bos, eos = specials["bos_token"], specials["eos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A {eos}",
                                                       special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
    return cls(tokenizer_object=tok, model_max_length=max_len, **specials), len(vocab)


def build_tiny_clap(path: Path) -> Path:
    """A tiny ClapModel (HTSAT audio tower, RoBERTa text tower) with its ClapProcessor saved beside it."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    tok, vocab = _word_tokenizer(RobertaTokenizerFast, {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>",
                                                        "unk_token": "<unk>", "mask_token": "<mask>"}, 24)
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1, fft_window_size=400,
                              frequency_max=8000, truncation="rand_trunc")
    audio = dict(spec_size=64, num_mel_bins=16, window_size=4, patch_size=4, patch_stride=(4, 4), depths=[1, 1],
                 num_attention_heads=[2, 2], hidden_size=32, patch_embeds_hidden_size=16, projection_hidden_size=32,
                 enable_fusion=False)
    text = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                max_position_embeddings=40, projection_hidden_size=32, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).eval().save_pretrained(str(path))
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(str(path))
    return path


def build_tiny_xclip(path: Path) -> Path:
    """A tiny XCLIPModel (2 frames of 32 px) with X-CLIP's image processor (VideoMAE) and a word-level tokenizer
    (CLIPTokenizerFast insists on BPE, so the tokenizer is a plain fast one saved beside it)."""
    import torch
    from transformers import PreTrainedTokenizerFast, VideoMAEImageProcessor, XCLIPConfig, XCLIPModel

    tok, vocab = _word_tokenizer(PreTrainedTokenizerFast, {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                                     "pad_token": "<|endoftext|>", "unk_token": "<|unk|>"}, 16)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                  num_attention_heads=4, num_frames=2, mit_hidden_size=32, mit_intermediate_size=37,
                  mit_num_hidden_layers=1, mit_num_attention_heads=4)
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                max_position_embeddings=16)
    torch.manual_seed(0)
    XCLIPModel(XCLIPConfig(text_config=text, vision_config=vision, projection_dim=32, prompt_layers=1,
                           prompt_attention_heads=4)).eval().save_pretrained(str(path))
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _ok(r) -> None:
    assert r.code == 0, r.err[-2000:]


def test_clap_synth_export_int8_bench(tmp_path, mmdk):
    ckpt = build_tiny_clap(tmp_path / "clap")
    data = tmp_path / "data"
    # 22.05 kHz clips: calibration and the evaluator resample them to the extractor's 16 kHz
    _ok(mmdk("data", "synth", "--modality", "audio", "-o", data, "--n-train", 32, "--n-val", 18,
             "--sampling-rate", 22050))
    r = mmdk("inspect", ckpt)
    _ok(r)
    assert "tower audio" in r.out and "input_features" in r.out and "is_longer" in r.out
    _ok(mmdk("export", ckpt, "--target", "onnx", "-o", tmp_path / "exp"))
    r = mmdk("quantize", tmp_path / "exp", "--method", "static", "--calib-data", data / "train.jsonl",
             "--accuracy-budget", "zero_shot_top1_drop<=50", "-o", tmp_path / "q8")
    _ok(r)
    assert "budget zero_shot_top1_drop<=50 on task" in r.out
    man = json.loads((tmp_path / "q8" / "mmdk_manifest.json").read_text())
    calib = [a["details"]["calibration_data"] for a in man["artifacts"] if a["tower"] == "audio"][0]
    assert "ClapFeatureExtractor" in calib["preprocessing"]
    assert calib["sample_shapes"] == {"input_features": [1, 101, 16], "is_longer": [1]}
    _ok(mmdk("quantize", tmp_path / "exp", "--method", "dynamic", "-o", tmp_path / "qd"))
    r = mmdk("bench", tmp_path / "q8", tmp_path / "qd", "--reference", ckpt, "--data", data / "val.jsonl",
             "--batch", "1", "--min-time", "0.05", "--min-rounds", "2", "--warmup", "1",
             "--report", tmp_path / "r.json", "--markdown", tmp_path / "r.md")
    _ok(r)
    assert "audio:clap + text:clap: zero-shot top-1" in r.out and "a2t R@1" in r.out
    acc = json.loads((tmp_path / "r.json").read_text())["accuracy"]
    assert acc["modality"] == "audio" and acc["n_media"] == 18 and acc["n_classes"] == 6
    assert acc["templates"] == ["the sound of a {label}."]
    for label in ("clap", "q8", "qd"):
        fig = acc["primary"][label]
        assert 0.0 <= fig["zero_shot_top1"] <= 100.0 and fig["zero_shot_top5"] >= fig["zero_shot_top1"]
        assert {"a2t_R@1", "t2a_R@1", "a2t_R@10"} <= set(fig) and "i2t_R@1" not in fig
    assert all(d["cosine_mean"] > 0.99 for d in acc["drift"])
    md = (tmp_path / "r.md").read_text()
    assert "| audio tower |" in md and "a→t R@1" in md and "18 audio clips" in md


def test_clap_distill_reads_audio_rows(tmp_path, mmdk):
    """Distillation builds audio feeds too: dual-encoder losses, audio zero-shot / recall on --val."""
    ckpt = build_tiny_clap(tmp_path / "clap")
    data = tmp_path / "data"
    _ok(mmdk("data", "synth", "--modality", "audio", "-o", data, "--n-train", 16, "--n-val", 12))
    r = mmdk("distill", ckpt, "--teacher", ckpt, "--data", data / "train.jsonl", "--val", data / "val.jsonl",
             "--steps", 2, "--batch", 8, "-o", tmp_path / "dist")
    _ok(r)
    assert "a2t_R@1" in r.out and "affinity" in r.out and "zero_shot_top1" in r.out


def test_xclip_video_synth_export_int8_bench(tmp_path, mmdk):
    ckpt = build_tiny_xclip(tmp_path / "xclip")
    data = tmp_path / "data"
    _ok(mmdk("data", "synth", "--modality", "video", "-o", data, "--n-train", 12, "--n-val", 12, "--frames", 4))
    _ok(mmdk("export", ckpt, "--target", "onnx", "-o", tmp_path / "exp"))
    r = mmdk("quantize", tmp_path / "exp", "--method", "static", "--calib-data", data / "train.jsonl",
             "-o", tmp_path / "q8")
    _ok(r)
    r = mmdk("bench", tmp_path / "q8", "--reference", ckpt, "--data", data / "val.jsonl", "--batch", "1",
             "--min-time", "0.05", "--min-rounds", "2", "--warmup", "1", "--report", tmp_path / "r.json")
    _ok(r)
    acc = json.loads((tmp_path / "r.json").read_text())["accuracy"]
    assert acc["modality"] == "video" and acc["templates"] == ["a video of a {label}."]
    assert {"zero_shot_top1", "v2t_R@1", "t2v_R@1"} <= set(acc["primary"]["q8"])
    assert all(d["cosine_mean"] > 0.99 for d in acc["drift"])


def test_audio_manifest_for_an_image_model_is_one_line_error(tmp_path, mmdk, tiny_clip_dir):
    data = tmp_path / "data"
    _ok(mmdk("data", "synth", "--modality", "audio", "-o", data, "--n-train", 6, "--n-val", 6))
    r = mmdk("quantize", tiny_clip_dir, "--method", "static", "--calib-data", data / "train.jsonl", "-o", tmp_path / "q")
    assert r.code != 0 and r.one_line_error() and "needs 'image'" in r.err
