"""Tiny random checkpoints of every Hugging Face family the README lists, written with ``save_pretrained``
(plus the family's own processor files, so the loader reads image size / sampling rate / mel bins from them;
every dual encoder ships a tokenizer too, so the built-in recipes can run on it: tests/zoo/test_zoo_recipes.py).

Each builder takes a directory and returns it; nothing downloads. Sizes are the smallest the families accept
(hidden 16-32, 1-2 layers, 32 px images) so one family costs a few seconds through the whole pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
            max_position_embeddings=40)
BERT = dict(TEXT, type_vocab_size=2, pad_token_id=0)
ROBERTA = dict(TEXT, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)
VISION = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
              num_attention_heads=4)


def _save(model, path: Path, *processors) -> Path:
    import torch

    torch.manual_seed(0)
    model.eval().save_pretrained(str(path), safe_serialization=True)
    for p in processors:
        p.save_pretrained(str(path))
    return path


def _clip_processor(size: int = 32):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def _tokenizer(vocab_size: int = 99, max_len: int = 16, pad: int = 0, bos: int = 2, eos: int = 3):
    """A word-level fast tokenizer with ``vocab_size`` entries (special ids chosen per family)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = {pad: "[PAD]", bos: "[BOS]", eos: "[EOS]"}
    unk = next(i for i in range(vocab_size) if i not in specials)
    specials[unk] = "[UNK]"
    words = ["a", "photo", "of", "the", "sound", "tone", "chirp", "noise", "dog", "cat", "red", "blue", "circle"]
    vocab, w = {}, iter(words + [f"w{i}" for i in range(vocab_size)])
    for i in range(vocab_size):
        vocab[specials.get(i) or next(w)] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[("[BOS]", bos), ("[EOS]", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]",
                                   pad_token="[PAD]", model_max_length=max_len)


# ---- dual encoders --------------------------------------------------------------------------------------
def clip(p: Path) -> Path:
    from transformers import CLIPConfig, CLIPModel

    return _save(CLIPModel(CLIPConfig(text_config=dict(TEXT, pad_token_id=0, bos_token_id=2, eos_token_id=3),
                                      vision_config=VISION, projection_dim=16)), p, _clip_processor(), _tokenizer())


def siglip(p: Path) -> Path:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    return _save(SiglipModel(SiglipConfig(text_config=dict(TEXT, projection_size=32), vision_config=VISION)), p,
                 SiglipImageProcessor(size={"height": 32, "width": 32}), _tokenizer())


def siglip2(p: Path) -> Path:
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    vision = {k: v for k, v in VISION.items() if k != "image_size"} | {"num_patches": 16}
    return _save(Siglip2Model(Siglip2Config(text_config=dict(TEXT), vision_config=vision)), p,
                 Siglip2ImageProcessor(patch_size=8, max_num_patches=16), _tokenizer())


def chinese_clip(p: Path) -> Path:
    from transformers import ChineseCLIPConfig, ChineseCLIPModel

    return _save(ChineseCLIPModel(ChineseCLIPConfig(text_config=BERT, vision_config=VISION, projection_dim=16)), p,
                 _clip_processor(), _tokenizer())


def altclip(p: Path) -> Path:
    from transformers import AltCLIPConfig, AltCLIPModel

    text = dict(ROBERTA, project_dim=16)
    return _save(AltCLIPModel(AltCLIPConfig(text_config=text, vision_config=VISION, projection_dim=16)), p,
                 _clip_processor(), _tokenizer(pad=1, bos=0, eos=2))


def align(p: Path) -> Path:
    import torch
    from transformers import AlignConfig, AlignModel, EfficientNetImageProcessor

    vision = dict(image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=64, num_channels=3)
    model = AlignModel(AlignConfig(text_config=BERT, vision_config=vision, projection_dim=80))
    torch.manual_seed(0)
    for m in model.vision_model.modules():  # the default 0.02-std init fades to ~1e-28 through the tiny EfficientNet
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
    return _save(model, p, EfficientNetImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}),
                 _tokenizer())


def blip(p: Path) -> Path:
    from transformers import BlipConfig, BlipImageProcessor, BlipModel

    text = dict(TEXT, encoder_hidden_size=32)
    return _save(BlipModel(BlipConfig(text_config=text, vision_config=VISION, projection_dim=16)), p,
                 BlipImageProcessor(size={"height": 32, "width": 32}), _tokenizer())


def flava(p: Path) -> Path:
    from transformers import FlavaConfig, FlavaImageProcessor, FlavaModel

    image = dict(VISION)
    mm = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4)
    codebook = dict(hidden_size=16, num_groups=1, num_blocks_per_group=1, vocab_size=32)
    cfg = FlavaConfig(image_config=image, text_config=BERT, multimodal_config=mm, image_codebook_config=codebook,
                      hidden_size=32, projection_dim=16)
    proc = FlavaImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32},
                               return_image_mask=False, return_codebook_pixels=False)
    return _save(FlavaModel(cfg), p, proc, _tokenizer())


def owlvit(p: Path) -> Path:
    from transformers import OwlViTConfig, OwlViTImageProcessor, OwlViTModel

    return _save(OwlViTModel(OwlViTConfig(text_config=dict(TEXT, max_position_embeddings=16), vision_config=VISION,
                                          projection_dim=16)), p,
                 OwlViTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}),
                 _tokenizer())


def owlv2(p: Path) -> Path:
    from transformers import Owlv2Config, Owlv2ImageProcessor, Owlv2Model

    return _save(Owlv2Model(Owlv2Config(text_config=dict(TEXT, max_position_embeddings=16), vision_config=VISION,
                                        projection_dim=16)), p, Owlv2ImageProcessor(size={"height": 32, "width": 32}), _tokenizer())


def groupvit(p: Path) -> Path:
    from transformers import GroupViTConfig, GroupViTModel

    vision = dict(hidden_size=32, intermediate_size=37, depths=[1, 1], num_group_tokens=[4, 0], num_output_groups=[4, 2],
                  num_attention_heads=4, image_size=32, patch_size=8)
    return _save(GroupViTModel(GroupViTConfig(text_config=TEXT, vision_config=vision, projection_dim=16,
                                              projection_intermediate_dim=32)), p, _clip_processor(), _tokenizer())


def metaclip2(p: Path) -> Path:
    from transformers import MetaClip2Config, MetaClip2Model

    return _save(MetaClip2Model(MetaClip2Config(text_config=dict(TEXT, eos_token_id=3), vision_config=VISION,
                                                projection_dim=16)), p, _clip_processor(), _tokenizer())


def xclip(p: Path) -> Path:
    from transformers import VideoMAEImageProcessor, XCLIPConfig, XCLIPModel

    vision = dict(VISION, num_frames=2, mit_hidden_size=32, mit_intermediate_size=37, mit_num_hidden_layers=1,
                  mit_num_attention_heads=4)
    cfg = XCLIPConfig(text_config=TEXT, vision_config=vision, projection_dim=32, prompt_layers=1,
                      prompt_attention_heads=4)
    return _save(XCLIPModel(cfg), p, VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                 _tokenizer(pad=1, bos=0, eos=2))


def clap(p: Path) -> Path:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    audio = dict(spec_size=64, num_mel_bins=16, window_size=4, patch_size=4, patch_stride=(4, 4), depths=[1, 1],
                 num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32, projection_hidden_size=32)
    cfg = ClapConfig(text_config=dict(ROBERTA, projection_hidden_size=32), audio_config=audio, projection_dim=16)
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=8000, hop_length=80, max_length_s=1, fft_window_size=256,
                              truncation="rand_trunc")
    return _save(ClapModel(cfg), p, fe, _tokenizer(pad=1, bos=0, eos=2))


def vision_text_dual_encoder(p: Path) -> Path:
    from transformers import BertConfig, ViTConfig, ViTImageProcessor, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    cfg = VisionTextDualEncoderConfig.from_vision_text_configs(ViTConfig(**VISION), BertConfig(**BERT), projection_dim=16)
    return _save(VisionTextDualEncoderModel(cfg), p, ViTImageProcessor(size={"height": 32, "width": 32}), _tokenizer())


# ---- single-tower encoders ------------------------------------------------------------------------------
def vit(p: Path) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    return _save(ViTModel(ViTConfig(**VISION)), p, ViTImageProcessor(size={"height": 32, "width": 32}))


def dinov2(p: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    return _save(Dinov2Model(Dinov2Config(**{k: v for k, v in VISION.items() if k != "intermediate_size"}, mlp_ratio=1)),
                 p, _clip_processor())


def convnext(p: Path) -> Path:
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    return _save(ConvNextModel(ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=32)), p,
                 ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0))


def bert(p: Path) -> Path:
    from transformers import BertConfig, BertModel

    return _save(BertModel(BertConfig(**BERT)), p, _tokenizer())


def roberta(p: Path) -> Path:
    from transformers import RobertaConfig, RobertaModel

    return _save(RobertaModel(RobertaConfig(**ROBERTA)), p, _tokenizer(pad=1, bos=0, eos=2))


_W2V = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, conv_dim=(8, 8),
            conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def wav2vec2(p: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    return _save(Wav2Vec2Model(Wav2Vec2Config(**_W2V)), p, Wav2Vec2FeatureExtractor(sampling_rate=16000))


def hubert(p: Path) -> Path:
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    return _save(HubertModel(HubertConfig(**_W2V)), p, Wav2Vec2FeatureExtractor(sampling_rate=16000))


def whisper(p: Path) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    cfg = WhisperConfig(vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=16,
                        max_source_positions=32, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1)
    return _save(WhisperModel(cfg), p, WhisperFeatureExtractor(feature_size=16))


def ast(p: Path) -> Path:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, max_length=64,
                    num_mel_bins=32, frequency_stride=10, time_stride=10)
    return _save(ASTModel(cfg), p, ASTFeatureExtractor(num_mel_bins=32, max_length=64))


# ---- more families (slow in the zoo: same code paths as above, other configs) ------------------------------
def clipseg(p: Path) -> Path:
    from transformers import CLIPSegConfig, CLIPSegModel

    return _save(CLIPSegModel(CLIPSegConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)), p,
                 _clip_processor())


def swin(p: Path) -> Path:
    from transformers import SwinConfig, SwinModel

    return _save(SwinModel(SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                      window_size=4)), p, _clip_processor())


def resnet(p: Path) -> Path:
    from transformers import ResNetConfig, ResNetModel

    return _save(ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])), p, _clip_processor())


def distilbert(p: Path) -> Path:
    from transformers import DistilBertConfig, DistilBertModel

    return _save(DistilBertModel(DistilBertConfig(vocab_size=99, dim=32, n_layers=1, n_heads=4, hidden_dim=37,
                                                  max_position_embeddings=40)), p)


def wavlm(p: Path) -> Path:
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    return _save(WavLMModel(WavLMConfig(**_W2V)), p, Wav2Vec2FeatureExtractor(sampling_rate=16000))


def speech2text(p: Path) -> Path:
    from transformers import Speech2TextConfig, Speech2TextModel

    cfg = Speech2TextConfig(vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                            decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, input_feat_per_channel=16,
                            conv_channels=16, max_source_positions=256)
    return _save(Speech2TextModel(cfg), p)


def layoutlmv3(p: Path) -> Path:
    from transformers import LayoutLMv3Config, LayoutLMv3Model

    cfg = LayoutLMv3Config(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=37, input_size=32, patch_size=8, max_position_embeddings=40,
                           max_2d_position_embeddings=128, coordinate_size=5, shape_size=6)
    return _save(LayoutLMv3Model(cfg), p)


# ---- fusion (one tower whose forward takes text and image at once) ---------------------------------------
def bridgetower(p: Path) -> Path:
    from transformers import BridgeTowerConfig, BridgeTowerModel

    text = dict(ROBERTA)
    vision = dict(hidden_size=64, num_hidden_layers=1, image_size=32, patch_size=8)  # its heads are width // 64
    cfg = BridgeTowerConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, text_config=text,
                            vision_config=vision)
    return _save(BridgeTowerModel(cfg), p)


DUAL: dict[str, Callable[[Path], Path]] = {
    "clip": clip, "siglip": siglip, "siglip2": siglip2, "chinese_clip": chinese_clip, "altclip": altclip,
    "align": align, "blip": blip, "flava": flava, "owlvit": owlvit, "owlv2": owlv2, "groupvit": groupvit,
    "metaclip2": metaclip2, "xclip": xclip, "clap": clap, "vision_text_dual_encoder": vision_text_dual_encoder,
}
SINGLE: dict[str, Callable[[Path], Path]] = {
    "vit": vit, "dinov2": dinov2, "convnext": convnext, "bert": bert, "roberta": roberta, "wav2vec2": wav2vec2,
    "hubert": hubert, "whisper": whisper, "ast": ast,
}
FUSION: dict[str, Callable[[Path], Path]] = {"bridgetower": bridgetower, "layoutlmv3": layoutlmv3}
MORE: dict[str, Callable[[Path], Path]] = {"clipseg": clipseg, "swin": swin, "resnet": resnet, "distilbert": distilbert,
                                           "wavlm": wavlm, "speech2text": speech2text}
FAMILIES = {**DUAL, **SINGLE, **FUSION, **MORE}
