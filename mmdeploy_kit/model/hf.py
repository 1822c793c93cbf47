"""Hugging Face directories (config.json + safetensors/bin), offline only.

Models with two or more ``get_<modality>_features`` methods (CLIP, SigLIP/SigLIP2, ChineseCLIP, AltCLIP, ALIGN,
BLIP, FLAVA, OWL-ViT, GroupViT, MetaCLIP 2, CLAP, X-CLIP, VisionTextDualEncoder, ...) split into one tower per
modality (``hf_towers``); single-tower encoders (ViT, DINOv2, ConvNeXt, BERT, RoBERTa, wav2vec2, HuBERT, the
Whisper encoder, AST, ...) get one tower named after their modality. Inputs come from the model's signature,
config and processor files (``hf_inputs``); anything the kit cannot describe is a one-line ``CheckpointError``
/ ``SpecError`` (exit 2) with the ``--io SPEC.yaml`` hint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .._lazy import require
from ..errors import CheckpointError
from .hf_inputs import IO_HINT, fusion_inputs, modality_inputs, read_processor_files
from .iospec import IOSpec
from .safetensors_check import check_safetensors_file

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
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"could not load {directory} with {getattr(cls, '__name__', cls)}: {first}",
                              hint="check the checkpoint files are complete and match config.json") from None
    model.eval()
    model_type = cfg.get("model_type", "")

    towers = hf_model_towers(model, directory, torch)

    files = [directory / "config.json", *weights]
    return LoadedModel(
        source=str(directory), format="hf", architecture=arch or model_type or type(model).__name__,
        towers=towers, root=model, hf_dir=directory, files=files,
        details={"model_type": model_type, "has_tokenizer": _has_tokenizer(directory),
                 "has_image_processor": (directory / "preprocessor_config.json").exists(),
                 "has_processor": (directory / "preprocessor_config.json").exists()},
    )


def hf_model_towers(model: Any, directory: Optional[Path], torch: Any) -> dict[str, Any]:
    """Towers of a loaded HF model: one per feature method, else one for the whole encoder."""
    from .hf_towers import feature_towers, is_feature_model

    if is_feature_model(model):
        return feature_towers(model, directory, torch)
    t = _single_tower(model, directory, torch)
    return {t.name: t}


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / n).exists() for n in ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                                                  "tokenizer.model", "sentencepiece.bpe.model"))


_PREFERRED_OUTPUTS = ("logits", "image_embeds", "text_embeds", "audio_embeds", "last_hidden_state", "pooler_output")
# main input name -> (modality of its inputs, tower name)
_MAIN_INPUTS = {"input_ids": ("text", "text"), "pixel_values": ("image", "vision"),
                "input_values": ("audio", "audio"), "input_features": ("audio", "audio")}


def _single_tower(model: Any, directory: Optional[Path], torch: Any):
    from .hf_towers import cap_seq, padded_position_limit
    from .tower import Tower
    from .torch_tower import TowerModule

    main = getattr(model, "main_input_name", "input_ids")
    cls = type(model).__name__
    if main not in _MAIN_INPUTS:
        raise CheckpointError(f"{cls} takes {main!r}, which mmdk cannot build an I/O spec for yet", hint=IO_HINT)
    modality, name = _MAIN_INPUTS[main]
    # encoder-decoder checkpoints (Whisper, ...): the tower is the encoder, the part that embeds the input
    module = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) and \
        callable(getattr(model, "get_encoder", None)) else model
    where = f"{cls}.encoder" if module is not model else cls
    proc = read_processor_files(directory)
    try:
        fusion = fusion_inputs(module.forward, model.config, proc, where)
        if fusion is not None:  # forward takes text and image at once (BridgeTower, ViLT): one tower with all
            name, (inputs, dims) = "model", fusion
        else:
            inputs, dims = modality_inputs(modality, module.forward, model.config, proc, where)
        dims = cap_seq(dims, padded_position_limit(module, torch))
        probe = IOSpec.model_validate({"inputs": inputs, "outputs": ["_probe"], "dims": dims})
    except (ValueError, TypeError) as exc:  # a config value the spec cannot hold (pydantic: ValueError)
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise CheckpointError(f"{where}: cannot describe its inputs from the config ({first[:160]})", hint=IO_HINT) from None
    feeds = probe.dummy_inputs({d: max(lo, 2) if d == "seq" else lo for d, (lo, _) in probe.dims.items()})
    try:
        with torch.inference_mode():
            result = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    except Exception as exc:  # noqa: BLE001 - the model's forward can raise anything
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise CheckpointError(f"{where} does not run on the inputs mmdk built for it ({', '.join(probe.input_names)}): "
                              f"{first[:200]}", hint=IO_HINT) from None
    get = result.get if hasattr(result, "get") else (lambda k: None)
    outputs = [k for k in _PREFERRED_OUTPUTS if isinstance(get(k), torch.Tensor)]
    if not outputs:
        raise CheckpointError(f"{where} returned none of {list(_PREFERRED_OUTPUTS)}", hint=IO_HINT)
    spec = IOSpec.model_validate({"inputs": inputs, "outputs": outputs, "dims": dims})
    return Tower(name, spec, "torch", module=TowerModule(module, spec, None, where).eval())
