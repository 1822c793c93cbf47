"""Hugging Face directories (config.json + safetensors/bin), offline only.

Dual encoders (anything with ``get_image_features`` and ``get_text_features``: CLIPModel, SiglipModel,
VisionTextDualEncoderModel, ...) split into towers ``vision`` (pixel_values -> image_embeds) and
``text`` (input_ids, attention_mask -> text_embeds); both embeddings are L2-normalised, as in
``CLIPModel.forward``. Single-tower models get one tower named after their modality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._lazy import require
from ..errors import CheckpointError
from .iospec import IOSpec
from .safetensors_check import check_safetensors_file

DEFAULT_MAX_BATCH = 32
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")


def read_hf_config(directory: Path) -> dict[str, Any]:
    cfg_path = directory / "config.json"
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({exc.msg} at line {exc.lineno})",
                              hint="restore config.json from the original checkpoint") from None


def weight_files(directory: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in _WEIGHT_GLOBS:
        files.extend(sorted(directory.glob(pattern)))
    return files


def load_hf_directory(directory: Path, trust_remote_code: bool = False):
    """Load an HF directory into a ``LoadedModel`` with one or two towers."""
    from .tower import LoadedModel

    cfg = read_hf_config(directory)
    if cfg.get("auto_map") and not trust_remote_code:
        raise CheckpointError(f"{directory} ships its own model code (config.json 'auto_map')",
                              hint="re-run with --trust-remote-code if you trust this checkpoint's code")
    weights = weight_files(directory)
    if not weights:
        raise CheckpointError(f"{directory} has config.json but no weights (*.safetensors or pytorch_model.bin)",
                              hint="copy the weight files next to config.json")
    for w in weights:
        if w.suffix == ".safetensors":
            check_safetensors_file(w)

    transformers = require("transformers")
    torch = require("torch")
    arch = (cfg.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        cls = transformers.AutoModel
    try:
        model = cls.from_pretrained(str(directory), local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"could not load {directory} with {getattr(cls, '__name__', cls)}: {first}",
                              hint="check the checkpoint files are complete and match config.json") from None
    model.eval()
    model_type = cfg.get("model_type", "")

    if hasattr(model, "get_image_features") and hasattr(model, "get_text_features"):
        towers = _dual_encoder_towers(model, torch)
    else:
        towers = {t.name: t for t in [_single_tower(model, torch)]}

    files = [directory / "config.json", *weights]
    return LoadedModel(
        source=str(directory), format="hf", architecture=arch or model_type or type(model).__name__,
        towers=towers, root=model, hf_dir=directory, files=files,
        details={"model_type": model_type, "has_tokenizer": _has_tokenizer(directory),
                 "has_image_processor": (directory / "preprocessor_config.json").exists()},
    )


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / n).exists() for n in ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                                                  "tokenizer.model"))


def _sub_config(model: Any, name: str) -> Any:
    return getattr(model.config, name, None) or model.config


def _image_input(vcfg: Any) -> dict[str, Any]:
    size = getattr(vcfg, "image_size", 224)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return {"name": "pixel_values", "modality": "image", "dtype": "float32",
            "shape": ["batch", getattr(vcfg, "num_channels", 3), h, w]}


def _text_inputs(tcfg: Any) -> list[dict[str, Any]]:
    return [
        {"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"],
         "range": [0, int(getattr(tcfg, "vocab_size", 1000))]},
        {"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"], "range": [1, 2]},
    ]


def _max_seq(tcfg: Any) -> int:
    return int(getattr(tcfg, "max_position_embeddings", 512) or 512)


def _dual_encoder_towers(model: Any, torch: Any) -> dict[str, Any]:
    from .tower import Tower
    from .torch_tower import TowerModule

    F = torch.nn.functional
    vcfg = _sub_config(model, "vision_config")
    tcfg = _sub_config(model, "text_config")
    vision_spec = IOSpec.model_validate({
        "inputs": [_image_input(vcfg)], "outputs": ["image_embeds"], "dims": {"batch": [1, DEFAULT_MAX_BATCH]}})
    text_spec = IOSpec.model_validate({
        "inputs": _text_inputs(tcfg), "outputs": ["text_embeds"],
        "dims": {"batch": [1, DEFAULT_MAX_BATCH], "seq": [1, _max_seq(tcfg)]}})

    def image_embeds(pixel_values):
        out = model.get_image_features(pixel_values=pixel_values)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return F.normalize(out, dim=-1)

    def text_embeds(input_ids, attention_mask):
        out = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return F.normalize(out, dim=-1)

    name = type(model).__name__
    return {
        "vision": Tower("vision", vision_spec, "torch",
                        module=TowerModule(model, vision_spec, image_embeds, f"{name}.get_image_features").eval(),
                        details={"parameters": _count_children(model, ("vision", "visual"))}),
        "text": Tower("text", text_spec, "torch",
                      module=TowerModule(model, text_spec, text_embeds, f"{name}.get_text_features").eval(),
                      details={"parameters": _count_children(model, ("text",))}),
    }


def _count_children(model: Any, keys: tuple[str, ...]) -> int:
    """Parameters of the top-level children whose name mentions one of ``keys`` (one tower's share)."""
    return sum(p.numel() for n, child in model.named_children() if any(k in n for k in keys)
               for p in child.parameters())


_PREFERRED_OUTPUTS = ("logits", "image_embeds", "text_embeds", "last_hidden_state", "pooler_output")


def _single_tower(model: Any, torch: Any):
    from .tower import Tower
    from .torch_tower import TowerModule

    main = getattr(model, "main_input_name", "input_ids")
    cfg = model.config
    if main == "input_ids":
        name, inputs, dims = "text", _text_inputs(cfg), {"batch": [1, DEFAULT_MAX_BATCH], "seq": [1, _max_seq(cfg)]}
    elif main == "pixel_values":
        name, inputs, dims = "vision", [_image_input(cfg)], {"batch": [1, DEFAULT_MAX_BATCH]}
    elif main == "input_values":
        name, dims = "audio", {"batch": [1, DEFAULT_MAX_BATCH], "samples": [1600, 160000]}
        inputs = [{"name": "input_values", "modality": "audio", "dtype": "float32", "shape": ["batch", "samples"]}]
    else:
        raise CheckpointError(f"{type(model).__name__} takes {main!r}, which mmdk cannot build an I/O spec for yet",
                              hint="load it as a factory module with --io SPEC.yaml instead")
    probe = IOSpec.model_validate({"inputs": inputs, "outputs": ["_probe"], "dims": dims})
    feeds = probe.dummy_inputs({d: max(lo, 2) if d != "samples" else lo for d, (lo, _) in probe.dims.items()})
    with torch.inference_mode():
        result = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    outputs = [k for k in _PREFERRED_OUTPUTS if isinstance(result.get(k), torch.Tensor)]
    if not outputs:
        raise CheckpointError(f"{type(model).__name__} returned none of {list(_PREFERRED_OUTPUTS)}",
                              hint="load it as a factory module with --io SPEC.yaml instead")
    spec = IOSpec.model_validate({"inputs": inputs, "outputs": outputs, "dims": dims})
    return Tower(name, spec, "torch", module=TowerModule(model, spec, None, type(model).__name__).eval())
