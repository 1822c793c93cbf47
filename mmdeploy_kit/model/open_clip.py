"""open_clip checkpoints (the Hub format LAION, DFN and MetaCLIP publish), without open_clip installed.

A directory with ``open_clip_config.json`` (``model_cfg``, ``preprocess_cfg``) and
``open_clip_model.safetensors`` (or ``open_clip_pytorch_model.bin``, read with ``weights_only=True``).
The standard CLIP architecture (ViT image tower + causal text transformer, argmax / eos pooling) is mapped
onto Hugging Face ``CLIPModel`` modules, as transformers' ``convert_clip_original_pytorch_to_hf`` does:
``nn.MultiheadAttention``'s packed ``in_proj_weight`` is split into q / k / v, the ``x @ proj`` matrices
become transposed ``Linear`` weights. open_clip's argmax pooling (the highest token id, its end-of-text) is
HF CLIP's ``eos_token_id == 2`` path, so the converted text config carries that id.

The converted checkpoint is written once into the mmdk cache (``<cache>/open_clip/<content hash>/``:
``config.json``, ``model.safetensors``, ``preprocessor_config.json`` from ``preprocess_cfg``, tokenizer files
copied from beside the checkpoint) and loaded as an HF directory, so export, quantize, prune, distill and
bench treat it like any HF CLIP and manifests can point back at its processor files.

Towers only open_clip can build (timm / ConvNeXt / ModifiedResNet image towers, HF text towers, CoCa,
layer scale, attentional pooling, custom attention blocks) are refused with an error naming what is not
mapped and how to load it through open_clip itself (the ``open_clip`` extra, as a factory module).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Optional

from .._lazy import require
from ..errors import CheckpointError

OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
MARKER = "mmdk_open_clip.json"  # written into the converted directory: where it came from, tokenizer or not
CONVERT_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "vocab.txt", "spiece.model", "added_tokens.json")
_EXTRA_HINT = ("install the open_clip extra (pip install 'mmdeploy_kit[open_clip]'), with which mmdk builds it through "
               "open_clip itself")


def is_open_clip_dir(path: Path) -> bool:
    return (path / OPEN_CLIP_CONFIG).is_file()


def read_open_clip_config(directory: Path) -> dict[str, Any]:
    path = directory / OPEN_CLIP_CONFIG
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})",
                              hint="restore open_clip_config.json from the original checkpoint") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise CheckpointError(f"{path} has no 'model_cfg' object",
                              hint="an open_clip Hub checkpoint's config holds 'model_cfg' and 'preprocess_cfg'")
    return cfg


# ---- what maps onto HF CLIP --------------------------------------------------------------------------
_VISION_OFF = {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
               "pool_type": "tok", "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
               "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "block_type": None}
_TEXT_OFF = {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "proj_bias": False,
             "proj_type": "linear", "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
             "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "block_type": None}


def unsupported(model_cfg: dict[str, Any]) -> Optional[str]:
    """Why ``model_cfg`` is not the standard ViT + text-transformer CLIP (None when it is)."""
    vision, text = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    if model_cfg.get("multimodal_cfg"):
        return "a CoCa model (multimodal_cfg: a text decoder)"
    if vision.get("timm_model_name"):
        return f"a timm image tower ({vision['timm_model_name']!r})"
    if isinstance(vision.get("layers", 12), (list, tuple)):
        return "a ModifiedResNet image tower (vision_cfg.layers is a list)"
    if text.get("hf_model_name"):
        return f"a Hugging Face text tower ({text['hf_model_name']!r})"
    for where, cfg, off in (("vision_cfg", vision, _VISION_OFF), ("text_cfg", text, _TEXT_OFF)):
        for key, default in off.items():
            if key in cfg and cfg[key] not in (default, "default") and not (key == "block_type" and cfg[key] is None):
                return f"{where}.{key} = {cfg[key]!r} (not in HF CLIP's architecture)"
    pool = text.get("pool_type", "argmax")
    if pool not in ("argmax", "eos"):
        return f"text_cfg.pool_type = {pool!r} (HF CLIP pools at the end-of-text token)"
    if pool == "eos" and int(text.get("eos_id", 2)) == 2:
        return "text_cfg.pool_type 'eos' with eos_id 2 (HF CLIP reads id 2 as argmax pooling)"
    for where, cfg in (("vision_cfg", vision), ("text_cfg", text)):
        act = (cfg.get("act_kwargs") or {})
        if act:
            return f"{where}.act_kwargs = {act!r}"
        if set(cfg.get("norm_kwargs") or {}) - {"eps"}:
            return f"{where}.norm_kwargs = {cfg['norm_kwargs']!r}"
    return None


def hf_clip_config(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """``CLIPConfig`` keyword arguments for a standard open_clip CLIP."""
    vision, text = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    vw, tw = int(vision.get("width", 768)), int(text.get("width", 512))
    size = vision.get("image_size", 224)
    if not isinstance(size, int):
        if len(set(size)) != 1:
            raise CheckpointError(f"open_clip image size {size} is not square", hint="HF CLIP takes square images")
        size = int(size[0])
    pool_eos = text.get("pool_type", "argmax") == "eos"
    return {
        "projection_dim": int(model_cfg.get("embed_dim", 512)),
        "vision_config": {
            "hidden_size": vw, "intermediate_size": int(vw * float(vision.get("mlp_ratio", 4.0))),
            "num_hidden_layers": int(vision.get("layers", 12)),
            "num_attention_heads": vw // int(vision.get("head_width", 64)),
            "image_size": int(size), "patch_size": int(vision.get("patch_size", 16)), "hidden_act": act,
            "layer_norm_eps": float((vision.get("norm_kwargs") or {}).get("eps", 1e-5)),
        },
        "text_config": {
            "vocab_size": int(text.get("vocab_size", 49408)), "hidden_size": tw,
            "intermediate_size": int(tw * float(text.get("mlp_ratio", 4.0))),
            "num_hidden_layers": int(text.get("layers", 12)), "num_attention_heads": int(text.get("heads", 8)),
            "max_position_embeddings": int(text.get("context_length", 77)), "hidden_act": act,
            "layer_norm_eps": float((text.get("norm_kwargs") or {}).get("eps", 1e-5)),
            "pad_token_id": int(text.get("pad_id", 0)),
            # open_clip pools at argmax(ids) (its eot is the highest id): HF CLIP does that when eos_token_id == 2
            "eos_token_id": int(text.get("eos_id", 2)) if pool_eos else 2,
        },
    }


def _blocks(out: dict[str, Any], src: dict[str, Any], prefix: str, dst: str, layers: int) -> None:
    for i in range(layers):
        s, d = f"{prefix}transformer.resblocks.{i}.", f"{dst}encoder.layers.{i}."
        for name in ("weight", "bias"):
            q, k, v = src.pop(f"{s}attn.in_proj_{name}").chunk(3, dim=0)
            out[f"{d}self_attn.q_proj.{name}"], out[f"{d}self_attn.k_proj.{name}"] = q, k
            out[f"{d}self_attn.v_proj.{name}"] = v
            out[f"{d}self_attn.out_proj.{name}"] = src.pop(f"{s}attn.out_proj.{name}")
            out[f"{d}layer_norm1.{name}"] = src.pop(f"{s}ln_1.{name}")
            out[f"{d}layer_norm2.{name}"] = src.pop(f"{s}ln_2.{name}")
            out[f"{d}mlp.fc1.{name}"] = src.pop(f"{s}mlp.c_fc.{name}")
            out[f"{d}mlp.fc2.{name}"] = src.pop(f"{s}mlp.c_proj.{name}")


def convert_state_dict(state: dict[str, Any], model_cfg: dict[str, Any]) -> dict[str, Any]:
    """open_clip ``CLIP`` / ``CustomTextCLIP`` state dict -> HF ``CLIPModel`` state dict."""
    src = dict(state)
    t = "text." if any(k.startswith("text.") for k in src) else ""  # CustomTextCLIP keeps its text tower in .text
    cfg = hf_clip_config(model_cfg)
    out: dict[str, Any] = {}
    try:
        out["vision_model.embeddings.class_embedding"] = src.pop("visual.class_embedding")
        out["vision_model.embeddings.patch_embedding.weight"] = src.pop("visual.conv1.weight")
        out["vision_model.embeddings.position_embedding.weight"] = src.pop("visual.positional_embedding")
        for name in ("weight", "bias"):
            out[f"vision_model.pre_layrnorm.{name}"] = src.pop(f"visual.ln_pre.{name}")
            out[f"vision_model.post_layernorm.{name}"] = src.pop(f"visual.ln_post.{name}")
            out[f"text_model.final_layer_norm.{name}"] = src.pop(f"{t}ln_final.{name}")
        out["visual_projection.weight"] = src.pop("visual.proj").t().contiguous()
        out["text_model.embeddings.token_embedding.weight"] = src.pop(f"{t}token_embedding.weight")
        out["text_model.embeddings.position_embedding.weight"] = src.pop(f"{t}positional_embedding")
        out["text_projection.weight"] = src.pop(f"{t}text_projection").t().contiguous()
        out["logit_scale"] = src.pop("logit_scale")
        _blocks(out, src, "visual.", "vision_model.", cfg["vision_config"]["num_hidden_layers"])
        _blocks(out, src, t, "text_model.", cfg["text_config"]["num_hidden_layers"])
    except KeyError as exc:
        raise CheckpointError(f"open_clip weights lack {exc.args[0]!r} for the architecture in model_cfg",
                              hint="the weights do not match open_clip_config.json; re-download the checkpoint") from None
    left = [k for k in src if not k.endswith("attn_mask") and k not in ("logit_bias",)]
    if left:
        raise CheckpointError(f"open_clip weights hold {len(left)} tensor(s) HF CLIP has no place for (e.g. {left[0]!r})",
                              hint=_EXTRA_HINT)
    return out


# ---- loading -----------------------------------------------------------------------------------------
def weights_file(directory: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory} has {OPEN_CLIP_CONFIG} but no weights ({' or '.join(WEIGHT_NAMES)})",
                          hint="copy the weight file next to open_clip_config.json")


def _read_weights(path: Path) -> dict[str, Any]:
    """safetensors, or a ``.bin`` through ``torch.load(weights_only=True)`` (tensors only, never code)."""
    from .weights import read_state_dict

    state = read_state_dict(path, corrupt_hint="re-download the checkpoint",
                            pickle_hint="use the checkpoint's open_clip_model.safetensors instead")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _image_processor_config(preprocess: dict[str, Any], size: int) -> dict[str, Any]:
    mean = preprocess.get("mean", [0.48145466, 0.4578275, 0.40821073])
    std = preprocess.get("std", [0.26862954, 0.26130258, 0.27577711])
    resample = {"bicubic": 3, "bilinear": 2, "nearest": 0}.get(str(preprocess.get("interpolation", "bicubic")), 3)
    squash = preprocess.get("resize_mode") == "squash"
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "resample": resample,
            "size": {"height": size, "width": size} if squash else {"shortest_edge": size},
            "do_center_crop": not squash, "crop_size": {"height": size, "width": size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(mean), "image_std": list(std), "do_convert_rgb": True}


def _convert(directory: Path, cfg: dict[str, Any], weights: Path, out: Path) -> None:
    from ..artifacts import atomic_output_dir

    transformers = require("transformers")
    state = _read_weights(weights)
    model_cfg = cfg["model_cfg"]
    hf_state = convert_state_dict(state, model_cfg)
    config = transformers.CLIPConfig(**hf_clip_config(model_cfg))
    model = transformers.CLIPModel(config).eval()
    result = model.load_state_dict(hf_state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise CheckpointError(f"open_clip weights do not fill HF CLIP ({bad!r})", hint=_EXTRA_HINT)
    size = config.vision_config.image_size
    tokenizer = [n for n in TOKENIZER_FILES if (directory / n).is_file()]
    with atomic_output_dir(out, overwrite=True) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "preprocessor_config.json").write_text(
            json.dumps(_image_processor_config(cfg.get("preprocess_cfg") or {}, size), indent=2))
        for name in tokenizer:
            shutil.copy2(directory / name, tmp / name)
        (tmp / MARKER).write_text(json.dumps({"source": str(directory.resolve()), "weights": weights.name,
                                              "tokenizer": bool(tokenizer), "convert_version": CONVERT_VERSION}))


def converted_dir(directory: Path) -> Path:
    """The HF CLIP directory converted from open_clip checkpoint ``directory`` (made once, in the cache)."""
    from ..artifacts import default_cache_dir, sha256_file

    cfg = read_open_clip_config(directory)
    reason = unsupported(cfg["model_cfg"])
    if reason:
        raise CheckpointError(f"{directory}: open_clip checkpoint with {reason}; mmdk maps only the standard "
                              "ViT + text-transformer CLIP onto its modules without open_clip", hint=_EXTRA_HINT)
    weights = weights_file(directory)
    transformers = require("transformers")  # its save_pretrained files are read back by the same version
    h = hashlib.sha256(f"open_clip-convert/{CONVERT_VERSION}/{transformers.__version__}".encode())
    h.update((directory / OPEN_CLIP_CONFIG).read_bytes())
    h.update(sha256_file(weights).encode())
    for name in TOKENIZER_FILES:
        if (directory / name).is_file():
            h.update(name.encode() + sha256_file(directory / name).encode())
    out = default_cache_dir() / "open_clip" / h.hexdigest()[:24]
    if not (out / MARKER).is_file():
        _convert(directory, cfg, weights, out)
    return out


def load_open_clip_directory(directory: Path):
    """Load an open_clip checkpoint directory as an HF CLIP (towers ``vision`` and ``text``)."""
    from .hf import load_hf_directory

    conv = converted_dir(directory)
    model = load_hf_directory(conv)
    model.source = str(directory)
    model.architecture = f"open_clip CLIP (as {model.architecture})"
    weights = weights_file(directory)
    model.files = [directory / OPEN_CLIP_CONFIG, weights]
    model.details = {**model.details, "open_clip": {"converted": str(conv), "weights": weights.name,
                                                   "model_cfg": read_open_clip_config(directory)["model_cfg"]}}
    return model


def tokenizer_missing(directory: Path) -> Optional[str]:
    """For a converted directory without tokenizer files: the open_clip checkpoint it came from."""
    marker = directory / MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None
    return None if info.get("tokenizer") else str(info.get("source", directory))
