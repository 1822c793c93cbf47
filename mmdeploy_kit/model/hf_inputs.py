"""I/O spec inputs of Hugging Face towers, from what the checkpoint itself says.

Three sources, in this order of trust:
1. the feature method's signature (``get_image_features(pixel_values, pixel_attention_mask, spatial_shapes)``):
   which inputs exist, named exactly as its parameters;
2. the (sub-)config of that modality (``vision_config`` / ``image_config`` / ``audio_config`` / ``text_config``):
   what the weights fix (image size, patch grid, mel bins, frames, vocabulary, position table);
3. the processor files beside the checkpoint (``preprocessor_config.json``, ``tokenizer_config.json``): what
   the data will look like (crop size, sampling rate, padded length, ``model_max_length``).

An input this module cannot describe raises ``SpecError`` naming it, with the ``--io SPEC.yaml`` hint.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import SpecError

DEFAULT_MAX_BATCH = 32
IO_HINT = "describe the tower with --io SPEC.yaml (see 'The I/O spec' in README.md) and load it as a factory module"

# sub-config attribute names per modality, most specific first (the root config is the last resort)
SUB_CONFIGS = {
    "image": ("vision_config", "image_config"),
    "video": ("vision_config", "video_config"),
    "text": ("text_config",),
    "audio": ("audio_config",),
}
# parameters a feature method may take that are never data (the kit leaves them at their defaults)
NOT_INPUTS = {"self", "position_ids", "interpolate_pos_encoding", "head_mask", "inputs_embeds", "bool_masked_pos",
              "output_attentions", "output_hidden_states", "return_dict", "return_loss", "use_cache", "kwargs",
              "past_key_values", "cache_position", "labels"}
# text towers whose position ids start after the padding index (RoBERTa-style create_position_ids_from_input_ids)
PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "altclip_text_model",
                            "clap_text_model", "data2vec-text", "longformer", "roberta-prelayernorm", "xmod",
                            "ernie_m", "luke", "mpnet", "bridgetower_text_model", "esm"}


# ---- processor files ---------------------------------------------------------------------------------------
def read_processor_files(directory: Optional[Path]) -> dict[str, Any]:
    """``preprocessor_config.json`` (+ ``processor_config.json`` / ``video_preprocessor_config.json``) merged,
    plus ``model_max_length`` from ``tokenizer_config.json``; {} when there are none."""
    info: dict[str, Any] = {}
    if directory is None:
        return info
    for name in ("processor_config.json", "video_preprocessor_config.json", "preprocessor_config.json"):
        data = _json(directory / name)
        for key in ("image_processor", "feature_extractor", "video_processor"):  # nested processor_config form
            if isinstance(data.get(key), dict):
                info.update(data[key])
        info.update({k: v for k, v in data.items() if not isinstance(v, dict) or k in ("size", "crop_size")})
    tok = _json(directory / "tokenizer_config.json")
    if isinstance(tok.get("model_max_length"), (int, float)) and tok["model_max_length"] < 1e6:
        info["model_max_length"] = int(tok["model_max_length"])
    return info


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sub_config(config: Any, modality: str) -> Any:
    for name in SUB_CONFIGS.get(modality, ()):
        sub = getattr(config, name, None)
        if sub is not None:
            return sub
    return config


def method_inputs(fn: Callable[..., Any]) -> list[tuple[str, bool]]:
    """``[(parameter name, required)]`` of a feature method, data parameters only."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    out = []
    for name, p in sig.parameters.items():
        if name in NOT_INPUTS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append((name, p.default is inspect.Parameter.empty))
    return out


# ---- per modality ------------------------------------------------------------------------------------------
def _hw(value: Any) -> Optional[tuple[int, int]]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
    return None


def image_size(cfg: Any, proc: dict[str, Any]) -> tuple[int, int]:
    """The weights' size first (position tables fix it), then the processor's crop / resize size, then 224."""
    return (_hw(getattr(cfg, "image_size", None)) or _hw(getattr(cfg, "input_size", None))  # LayoutLMv3: input_size
            or _hw(proc.get("crop_size")) or _hw(proc.get("size")) or (224, 224))


def _int(value: Any, default: int) -> int:
    """A config number that may also be given as a list / pair (``patch_size: [16, 16]``) or be missing."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    try:
        return int(value) if value else default
    except (TypeError, ValueError):
        return default


def _channels(cfg: Any) -> int:
    return _int(getattr(cfg, "num_channels", 3), 3)


def _image(params: set[str], cfg: Any, proc: dict[str, Any], model_type: str) -> tuple[list, dict]:
    dims = {"batch": [1, DEFAULT_MAX_BATCH]}
    if "spatial_shapes" in params:  # NaFlex (SigLIP2): patchified pixels, a patch mask and the patch grid
        n = _int(proc.get("max_num_patches") or getattr(cfg, "num_patches", 0), 256)
        p = _int(getattr(cfg, "patch_size", None) or proc.get("patch_size"), 16)
        g = math.isqrt(n)
        inputs = [
            {"name": "pixel_values", "modality": "image", "dtype": "float32", "shape": ["batch", n, _channels(cfg) * p * p]},
            {"name": "pixel_attention_mask", "modality": "image", "dtype": "int32", "shape": ["batch", n], "range": [1, 2]},
            {"name": "spatial_shapes", "modality": "image", "dtype": "int64", "shape": ["batch", 2], "range": [g, g + 1]},
        ]
        return inputs, dims
    h, w = image_size(cfg, proc)
    return [{"name": "pixel_values", "modality": "image", "dtype": "float32", "shape": ["batch", _channels(cfg), h, w]}], dims


def _video(params: set[str], cfg: Any, proc: dict[str, Any], model_type: str) -> tuple[list, dict]:
    frames = _int(getattr(cfg, "num_frames", 0) or proc.get("num_frames"), 8)
    h, w = image_size(cfg, proc)
    return ([{"name": "pixel_values", "modality": "video", "dtype": "float32",
              "shape": ["batch", frames, _channels(cfg), h, w]}], {"batch": [1, DEFAULT_MAX_BATCH]})


def max_text_length(cfg: Any, proc: dict[str, Any]) -> int:
    """The longest sequence the position table takes (minus the padding offset RoBERTa-style towers use),
    capped by the tokenizer's ``model_max_length``."""
    limit = _int(getattr(cfg, "max_position_embeddings", 0), 512)
    if getattr(cfg, "model_type", "") in PADDING_OFFSET_POSITIONS:
        limit -= _int(getattr(cfg, "pad_token_id", 1), 0) + 1
    if proc.get("model_max_length"):
        limit = min(limit, int(proc["model_max_length"]))
    return max(limit, 2)


def _text(params: set[str], cfg: Any, proc: dict[str, Any], model_type: str) -> tuple[list, dict]:
    inputs = [{"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"],
               "range": [0, _int(getattr(cfg, "vocab_size", 0), 1000)]}]
    if "attention_mask" in params:
        inputs.append({"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"],
                       "range": [1, 2]})
    types = _int(getattr(cfg, "type_vocab_size", 0), 0)
    if "token_type_ids" in params and types >= 2:
        inputs.append({"name": "token_type_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"],
                       "range": [0, types]})
    return inputs, {"batch": [1, DEFAULT_MAX_BATCH], "seq": [1, max_text_length(cfg, proc)]}


def _audio(params: set[str], cfg: Any, proc: dict[str, Any], model_type: str) -> tuple[list, dict]:
    dims: dict[str, list[int]] = {"batch": [1, DEFAULT_MAX_BATCH]}
    mel = _int(getattr(cfg, "num_mel_bins", 0) or getattr(cfg, "input_feat_per_channel", 0)  # Speech2Text
               or proc.get("feature_size") or proc.get("num_mel_bins"), 80)
    if "input_values" in params and not (hasattr(cfg, "num_mel_bins") and hasattr(cfg, "max_length")):
        sr = _int(proc.get("sampling_rate"), 16000)  # raw waveform (wav2vec2, HuBERT, WavLM, ...)
        dims["samples"] = [max(sr // 10, 400), sr * 10]
        return [{"name": "input_values", "modality": "audio", "dtype": "float32", "shape": ["batch", "samples"]}], dims
    if "input_values" in params:  # AST: a fixed-length log-mel patch grid [batch, frames, mel]
        frames = _int(getattr(cfg, "max_length", 0) or proc.get("max_length"), 1024)
        return [{"name": "input_values", "modality": "audio", "dtype": "float32", "shape": ["batch", frames, mel]}], dims
    if "input_features" not in params:
        raise SpecError(f"the audio tower takes {sorted(params)}, none of which mmdk can describe", hint=IO_HINT)
    if model_type.startswith("clap"):  # [batch, 1 (4 with fusion), frames, mel], padded to max_length_s
        hop = _int(proc.get("hop_length"), 480)
        samples = _int(proc.get("nb_max_samples"), _int(proc.get("sampling_rate"), 48000) * 10)
        frames = samples // hop + 1
        chans = 4 if getattr(cfg, "enable_fusion", False) else 1
        inputs = [{"name": "input_features", "modality": "audio", "dtype": "float32", "shape": ["batch", chans, frames, mel]}]
        if "is_longer" in params:
            inputs.append({"name": "is_longer", "modality": "audio", "dtype": "bool", "shape": ["batch", 1]})
        return inputs, dims
    if hasattr(cfg, "max_source_positions") and model_type.startswith("whisper"):  # Whisper: exactly 2 x positions
        return ([{"name": "input_features", "modality": "audio", "dtype": "float32",
                  "shape": ["batch", mel, 2 * _int(cfg.max_source_positions, 1500)]}], dims)
    dims["frames"] = [8, max(8, _int(proc.get("nb_max_frames"), 3000))]  # Speech2Text-style [batch, frames, mel]
    return [{"name": "input_features", "modality": "audio", "dtype": "float32", "shape": ["batch", "frames", mel]}], dims


BUILDERS = {"image": _image, "video": _video, "text": _text, "audio": _audio}
KNOWN = {
    "image": {"pixel_values", "pixel_attention_mask", "spatial_shapes", "attention_mask"},
    "video": {"pixel_values"},
    "text": {"input_ids", "attention_mask", "token_type_ids"},
    "audio": {"input_values", "input_features", "is_longer", "attention_mask", "padding_mask"},
}


def modality_inputs(modality: str, fn: Callable[..., Any], cfg: Any, proc: dict[str, Any], where: str
                    ) -> tuple[list[dict[str, Any]], dict[str, list[int]]]:
    """``(inputs, dims)`` for the I/O spec of one feature method; ``SpecError`` for an input it cannot build."""
    params = method_inputs(fn)
    names = {n for n, _ in params}
    unknown = [n for n, required in params if required and n not in KNOWN[modality]]
    if unknown:
        raise SpecError(f"{where} requires {unknown[0]!r}, which mmdk cannot generate for a {modality} tower",
                        hint=IO_HINT)
    model_type = str(getattr(cfg, "model_type", "") or "")
    if not names:  # no readable signature: the modality's usual inputs
        names = set(KNOWN[modality])
    return BUILDERS[modality](names, cfg, proc, model_type)


# forward parameters that mark a fusion model (one tower taking several modalities at once), by modality
FUSION_KEYS = (("text", "input_ids"), ("image", "pixel_values"))


def fusion_inputs(fn: Callable[..., Any], cfg: Any, proc: dict[str, Any], where: str
                  ) -> Optional[tuple[list[dict[str, Any]], dict[str, list[int]]]]:
    """``(inputs, dims)`` of a fusion model's single tower when its ``forward`` takes text and image together
    (ViLT, ...), else None. ``pixel_mask`` (ViLT) is an all-ones ``[batch, H, W]`` image input."""
    params = method_inputs(fn)
    names = {n for n, _ in params}
    mods = [m for m, key in FUSION_KEYS if key in names]
    if len(mods) < 2:
        return None
    inputs: list[dict[str, Any]] = []
    dims: dict[str, list[int]] = {}
    for m in mods:
        ins, ds = BUILDERS[m](names, sub_config(cfg, m), proc, str(getattr(cfg, "model_type", "") or ""))
        inputs += ins
        dims.update(ds)
    if "pixel_mask" in names:
        h, w = next(i for i in inputs if i["name"] == "pixel_values")["shape"][-2:]
        inputs.append({"name": "pixel_mask", "modality": "image", "dtype": "int64", "shape": ["batch", h, w],
                       "range": [1, 2]})
    known = {i["name"] for i in inputs}
    unknown = [n for n, required in params if required and n not in known]
    if unknown:
        raise SpecError(f"{where} requires {unknown[0]!r}, which mmdk cannot generate", hint=IO_HINT)
    return inputs, dims
