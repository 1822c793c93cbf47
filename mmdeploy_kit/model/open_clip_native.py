"""open_clip checkpoints mmdk cannot map onto HF CLIP (timm / ConvNeXt / ModifiedResNet image towers, HF text
towers, ...), built by open_clip itself when the optional ``open_clip`` extra is installed.

The model comes from ``open_clip.create_model('local-dir:DIR', load_weights=False)`` (no download: no pretrained
tower weights), then the checkpoint's weights are loaded by mmdk (safetensors, or ``weights_only=True``).
Towers: ``vision`` (pixel_values -> L2-normalised ``encode_image``) and ``text`` (input_ids, attention_mask ->
L2-normalised ``encode_text``; open_clip's text towers ignore the mask: padding comes after the end-of-text token).
The image processor (from open_clip's preprocess config) and any tokenizer files beside the checkpoint are
written into the cache, which serves as the model's processor directory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from .._lazy import require
from ..errors import CheckpointError
from .iospec import IOSpec

DEFAULT_MAX_BATCH = 32


def load_with_open_clip(directory: Path, reason: str):
    """A ``LoadedModel`` built by open_clip (the caller checked it is importable)."""
    import open_clip  # the optional extra

    from ..artifacts import atomic_output_dir, default_cache_dir, sha256_file
    from .open_clip import MARKER, TOKENIZER_FILES, _image_processor_config, _read_weights, read_open_clip_config, weights_file

    cfg = read_open_clip_config(directory)
    weights = weights_file(directory)
    from .tower import LoadedModel, Tower
    from .torch_tower import TowerModule

    torch = require("torch")
    try:
        model = open_clip.create_model(f"local-dir:{directory}", load_weights=False, pretrained_image=False,
                                       pretrained_text=False)
    except (OSError, ValueError, RuntimeError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"open_clip could not build {directory} ({reason}): {first[:200]}",
                              hint="everything must be available offline (an HF text tower needs its config cached)") from None
    result = model.load_state_dict(_read_weights(weights), strict=False)
    bad = [k for k in [*result.missing_keys, *result.unexpected_keys] if not k.endswith("attn_mask")]
    if bad:
        raise CheckpointError(f"{weights.name} does not match the open_clip model in {directory.name} ({bad[0]!r})",
                              hint="the weights do not match open_clip_config.json; re-download the checkpoint")
    model.eval()
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre.get("size", 224)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    F = torch.nn.functional

    def image_embeds(pixel_values):
        return F.normalize(model.encode_image(pixel_values), dim=-1)

    def text_embeds(input_ids, attention_mask):
        return F.normalize(model.encode_text(input_ids), dim=-1)

    ctx = int(getattr(model, "context_length", 0) or (cfg["model_cfg"].get("text_cfg") or {}).get("context_length", 77))
    vocab = int(getattr(model, "vocab_size", 0) or (cfg["model_cfg"].get("text_cfg") or {}).get("vocab_size", 49408))
    vision_spec = IOSpec.model_validate({
        "inputs": [{"name": "pixel_values", "modality": "image", "dtype": "float32", "shape": ["batch", 3, h, w]}],
        "outputs": ["image_embeds"], "dims": {"batch": [1, DEFAULT_MAX_BATCH]}})
    text_spec = IOSpec.model_validate({
        "inputs": [{"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"], "range": [0, vocab]},
                   {"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"], "range": [1, 2]}],
        "outputs": ["text_embeds"], "dims": {"batch": [1, DEFAULT_MAX_BATCH], "seq": [ctx, ctx]}})

    def count(mod: Any) -> int:
        return sum(p.numel() for p in mod.parameters()) if mod is not None else 0

    text_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("visual."))
    towers = {
        "vision": Tower("vision", vision_spec, "torch", details={"parameters": count(getattr(model, "visual", None))},
                        module=TowerModule(model, vision_spec, image_embeds, "open_clip encode_image").eval()),
        "text": Tower("text", text_spec, "torch", details={"parameters": text_params},
                      module=TowerModule(model, text_spec, text_embeds, "open_clip encode_text").eval()),
    }
    # processor files (image processor from open_clip's preprocess config, tokenizer files from beside the weights)
    tokenizer = [n for n in TOKENIZER_FILES if (directory / n).is_file()]
    key = hashlib.sha256(json.dumps(pre, sort_keys=True, default=str).encode())
    for name in tokenizer:
        key.update(name.encode() + sha256_file(directory / name).encode())
    proc = default_cache_dir() / "open_clip" / f"processor-{key.hexdigest()[:24]}"
    if not (proc / MARKER).is_file():
        with atomic_output_dir(proc, overwrite=True) as tmp:
            (tmp / "preprocessor_config.json").write_text(json.dumps(_image_processor_config(pre, int(h)), indent=2))
            for name in tokenizer:
                shutil.copy2(directory / name, tmp / name)
            (tmp / MARKER).write_text(json.dumps({"source": str(directory.resolve()), "tokenizer": bool(tokenizer)}))
    return LoadedModel(source=str(directory), format="open_clip", architecture=f"open_clip {type(model).__name__} ({reason})",
                       towers=towers, root=model, hf_dir=proc, files=[directory / "open_clip_config.json", weights],
                       details={"open_clip": {"built_by": f"open_clip {open_clip.__version__}", "reason": reason}})
