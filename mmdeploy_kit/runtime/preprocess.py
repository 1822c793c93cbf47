"""Turn manifest rows into tower inputs with the checkpoint's own tokenizer and image processor.

The processor files come from (first found): ``--processor DIR``, the reference's HF directory, any
artifact's HF directory, or ``source.hf_dir`` recorded in an mmdk output directory's manifest (ONNX
exports point back at the checkpoint they came from). Hugging Face ``transformers`` is used when
installed (it works without torch); otherwise ``tokenizer.json`` is read with ``tokenizers`` and images
are resized/normalised from ``preprocessor_config.json`` - so the ONNX path needs no torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .._lazy import available
from .._quiet import quiet_transformers
from ..data.manifest import load_images, tokenize
from ..errors import DataError
from ..model.iospec import NUMPY_DTYPES, IOSpec
from ..model.tower import LoadedModel
from .preprocess_media import processor_config

Tokenizer = Callable[[Sequence[str], int], dict[str, np.ndarray]]


def processor_dir(models: Sequence[LoadedModel], explicit: Optional[str | Path] = None) -> Optional[Path]:
    if explicit is not None:
        p = Path(explicit)
        if not p.is_dir():
            raise DataError(f"processor directory {p} does not exist",
                            hint="pass the Hugging Face checkpoint directory that holds the tokenizer files")
        return p
    for m in models:
        if m.hf_dir is not None:
            return Path(m.hf_dir)
        manifest = m.details.get("manifest")
        hf = getattr(manifest, "source", {}).get("hf_dir") if manifest is not None else None
        if hf and Path(hf).is_dir():
            return Path(hf)
    for m in models:   # a factory / arch-record checkpoint directory that keeps its processor files beside it,
        manifest = m.details.get("manifest")   # or the ones an mmdk output directory was made from (its history)
        made_from = [(h.get("source") or {}).get("path") for h in getattr(manifest, "history", None) or []]
        for src in (m.source, getattr(manifest, "source", {}).get("path") if manifest is not None else None,
                    *reversed(made_from)):
            if src and Path(str(src)).is_dir() and any((Path(str(src)) / f).is_file() for f in PROCESSOR_FILES):
                return Path(str(src))
    return None


# the files a tokenizer is read from; with the image processor / feature extractor's, those that make a directory
# a processor directory
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.model",
                   "sentencepiece.bpe.model")
PROCESSOR_FILES = (*TOKENIZER_FILES, "preprocessor_config.json")


def load_tokenizer(directory: Optional[Path]) -> Tokenizer:
    if directory is None:
        raise DataError("text towers need a tokenizer, but none was found next to the models",
                        hint="pass --processor HF_DIR (the checkpoint directory with the tokenizer files)")
    from ..model.open_clip import tokenizer_missing

    oc = tokenizer_missing(directory)
    if oc is not None:
        raise DataError(f"open_clip checkpoint {oc} has no tokenizer files beside it (tokenizer.json, or vocab.json + "
                        "merges.txt)", hint="pass --processor DIR with its tokenizer files (the standard CLIP BPE: any "
                                            "HF CLIP checkpoint's), or copy them next to open_clip_config.json")
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        raise DataError(f"text towers need a tokenizer, but {directory} has no tokenizer files "
                        f"({', '.join(TOKENIZER_FILES[:3])}, ...)",
                        hint="save the checkpoint's tokenizer beside it (tokenizer.save_pretrained(DIR)) or pass "
                             "--processor HF_DIR")
    if available("transformers"):
        quiet_transformers()
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # TypeError: a vocab file it needs is missing
            raise DataError(f"cannot load a tokenizer from {directory}: {str(exc).splitlines()[0][:200]}",
                            hint="pass --processor HF_DIR with tokenizer files") from None
        run = lambda texts, max_length: tokenize(texts, tok, max_length=max_length, pad_to_max=True)  # noqa: E731
        run.model_max_length = int(min(getattr(tok, "model_max_length", 512) or 512, 1 << 20))  # type: ignore[attr-defined]
        return run
    return _fast_tokenizer(directory)


def _fast_tokenizer(directory: Path) -> Tokenizer:
    path = directory / "tokenizer.json"
    if not path.is_file() or not available("tokenizers"):
        raise DataError(f"cannot tokenize text: transformers is not installed and {path} is missing "
                        "(or the 'tokenizers' package is absent)", hint="pip install transformers")
    from tokenizers import Tokenizer as HfTokenizer

    tok = HfTokenizer.from_file(str(path))
    cfg = {}
    if (directory / "tokenizer_config.json").is_file():
        cfg = json.loads((directory / "tokenizer_config.json").read_text())
    pad_token = cfg.get("pad_token") if isinstance(cfg.get("pad_token"), str) else None
    pad_id = tok.token_to_id(pad_token) if pad_token else 0

    def run(texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
        tok.enable_truncation(max_length)
        tok.enable_padding(length=max_length, pad_id=pad_id or 0, pad_token=pad_token or "[PAD]")
        enc = tok.encode_batch([str(t) for t in texts])
        return {"input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64)}

    run.model_max_length = int(cfg.get("model_max_length") or 512)  # type: ignore[attr-defined]
    return run


def load_image_reader(directory: Optional[Path], spec: IOSpec, input_name: str) -> Callable[[Sequence[Path]], np.ndarray]:
    """A function ``paths -> float32 [N, C, H, W]`` matching ``spec``'s image input."""
    shape = spec.input(input_name).shape
    hw = tuple(int(d) for d in shape[-2:]) if all(isinstance(d, int) for d in shape[-2:]) else None
    processor = None
    cfg = processor_config(directory)
    if cfg:
        if available("transformers"):
            quiet_transformers()
            from transformers import AutoImageProcessor

            try:
                processor = AutoImageProcessor.from_pretrained(str(directory), local_files_only=True, use_fast=False)
            except (OSError, ValueError, KeyError, ImportError):
                processor = None
    mean, std = cfg.get("image_mean"), cfg.get("image_std")

    def read(paths: Sequence[Path]) -> np.ndarray:
        if processor is not None:
            x = load_images(paths, image_processor=processor)
        else:
            x = load_images(paths, size=hw, mean=mean, std=std)
        if hw is not None and tuple(x.shape[-2:]) != hw:
            raise DataError(f"preprocessed images are {tuple(x.shape[-2:])} but input {input_name!r} expects {hw}",
                            hint="pass --processor with the checkpoint's preprocessor_config.json")
        return x

    return read


def image_feeds(directory: Optional[Path], spec: IOSpec) -> Callable[[Sequence[Path]], dict[str, np.ndarray]]:
    """``paths -> feeds`` for an image tower: every image input by name. A plain tower takes ``pixel_values``
    [N, C, H, W]; a NaFlex tower (SigLIP2: ``pixel_values`` [N, patches, C*p*p], ``pixel_attention_mask``,
    ``spatial_shapes``) gets each image resized to the square patch grid its I/O spec (and the export) fixes,
    normalised with the processor's mean/std and cut into patches in Siglip2ImageProcessor's order."""
    names = [i.name for i in spec.inputs if i.modality == "image"]
    if "spatial_shapes" not in names:
        reader = load_image_reader(directory, spec, names[0])
        return lambda paths: {names[0]: reader(paths)}
    pix, n = spec.input("pixel_values"), spec.input("pixel_values").shape[1]
    g = int(spec.input("spatial_shapes").range[0])
    if not isinstance(n, int) or not isinstance(pix.shape[2], int) or g * g > n:
        raise DataError(f"cannot build NaFlex image inputs for shape {list(pix.shape)} with a {g}x{g} patch grid",
                        hint="pass calibration data as an .npz with arrays named like the inputs")
    p = math.isqrt(pix.shape[2] // 3)
    cfg = processor_config(directory)
    mean, std = cfg.get("image_mean", [0.5] * 3), cfg.get("image_std", [0.5] * 3)

    def read(paths: Sequence[Path]) -> dict[str, np.ndarray]:
        x = load_images(paths, size=(g * p, g * p), mean=mean, std=std)  # [N, C, H, W]
        k = len(x)
        patches = x.reshape(k, 3, g, p, g, p).transpose(0, 2, 4, 3, 5, 1).reshape(k, g * g, p * p * 3)
        feeds = {"pixel_values": np.zeros((k, n, p * p * 3), np.float32),
                 "pixel_attention_mask": np.zeros((k, n), NUMPY_DTYPES[spec.input("pixel_attention_mask").dtype]),
                 "spatial_shapes": np.full((k, 2), g, NUMPY_DTYPES[spec.input("spatial_shapes").dtype])}
        feeds["pixel_values"][:, :g * g] = patches
        feeds["pixel_attention_mask"][:, :g * g] = 1
        return feeds

    return read


def seq_length(spec: IOSpec, default: int = 77) -> Optional[int]:
    """The padded text length for a text tower: its seq dim's max capped at ``default`` (CLIP's 77)."""
    for i in spec.inputs:
        if i.modality == "text" and len(i.shape) >= 2:
            d = i.shape[1]
            if isinstance(d, int):
                return d
            lo, hi = spec.dims.get(d, (1, default))
            return max(lo, min(hi, default))
    return None
