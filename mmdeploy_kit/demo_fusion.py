"""The second demo model: a late-fusion classifier (small BERT-style text encoder + small ResNet, concat -> MLP ->
class) trained on the kit's synthetic shapes dataset, cached like the CLIP demo.

The task is made a real fusion task: the classifier's captions have the *shape* word removed ("a large red on
a grey background"), so the text tells the colour and only the image tells the shape (label = colour + shape).
The derived manifests (``fusion_train.jsonl`` / ``fusion_val.jsonl``, absolute image paths) are written next to
the checkpoint.

``train_fusion_demo()`` writes a directory that ``mmdk.load`` reads without options: ``model.safetensors`` +
``mmdk_arch.json`` (an architecture record naming the factory ``fusion_model.py:build``, with no shape
changes: the format ``mmdk prune`` writes) + the word tokenizer and image-processor files + ``mmdk_demo.json``.
Training uses the kit's own loop (``train.loop.TrainLoop``) and evaluates with the bench harness's evaluator.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .artifacts import atomic_output_dir, default_cache_dir, package_versions
from .data.manifest import Sample, class_names, label_indices, load_images, load_manifest, tokenize
from .demo_checkpoint import DEFAULT_TEMPLATES, DEMO_FILE, MAX_TEXT_LEN, DemoResult, _default_data_dir, \
    _fingerprint, _image_processor, _word_tokenizer
from .errors import UserInputError

FUSION_RECIPE_VERSION = 1
FUSION_RECIPE: dict[str, Any] = {
    "steps": 600, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.01, "warmup_steps": 30,
    "text": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "image_channels": [16, 32, 64], "fusion_hidden": 128, "image_size": 32,
}
FACTORY_FILE = "fusion_model.py"
_FACTORY_SOURCE = '''"""Factory of the mmdk fusion demo classifier (written by mmdeploy_kit.demo_fusion; mmdk.load calls build())."""
from mmdeploy_kit.demo_fusion import FusionClassifier

CONFIG = {config}


def build():
    return FusionClassifier(**CONFIG)
'''


# ---------------------------------------------------------------------------------------------- the model
class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BN, identity (or 1x1 conv + BN) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        c0 = channels[0]
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        blocks, cin = [], c0
        for i, c in enumerate(channels):
            blocks.append(BasicBlock(cin, c, stride=1 if i == 0 else 2))
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(pixel_values))).flatten(1)


class FusionClassifier(nn.Module):
    """``forward(input_ids, attention_mask, pixel_values) -> logits``: BERT [CLS] state and ResNet pooled
    features, concatenated, through a 2-layer MLP."""

    def __init__(self, vocab_size: int, num_classes: int, text: Optional[dict] = None,
                 image_channels: tuple[int, ...] | list[int] = (16, 32, 64), fusion_hidden: int = 128,
                 max_len: int = MAX_TEXT_LEN):
        super().__init__()
        from transformers import BertConfig, BertModel

        t = dict(FUSION_RECIPE["text"], **(text or {}))
        cfg = BertConfig(vocab_size=vocab_size, max_position_embeddings=max_len, pad_token_id=0,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **t)
        self.text_encoder = BertModel(cfg, add_pooling_layer=False)
        self.image_encoder = SmallResNet(tuple(image_channels))
        self.head = nn.Sequential(nn.Linear(t["hidden_size"] + int(image_channels[-1]), fusion_hidden), nn.ReLU(),
                                  nn.Linear(fusion_hidden, num_classes))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        text = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        return self.head(torch.cat([text, self.image_encoder(pixel_values)], dim=-1))


def io_spec(vocab_size: int, image_size: int = 32) -> dict[str, Any]:
    return {"towers": {"model": {
        "inputs": [{"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"],
                    "range": [0, vocab_size]},
                   {"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"],
                    "range": [1, 2]},
                   {"name": "pixel_values", "modality": "image", "dtype": "float32",
                    "shape": ["batch", 3, image_size, image_size]}],
        "outputs": ["logits"]}},
        "dims": {"batch": [1, 32], "seq": [2, MAX_TEXT_LEN]}}


# ---------------------------------------------------------------------------------------------- the data
_SHAPE_RE = re.compile(r"\s*\b(circle|square|triangle|cross)\b")


def fusion_manifests(data_dir: Path, dest: Path) -> tuple[Path, Path]:
    """``fusion_{train,val}.jsonl`` in ``dest``: the dataset's rows with the shape word removed from the caption
    (absolute image paths; ``classes.json`` copied so the class order is the dataset's)."""
    out = []
    for split in ("train", "val"):
        lines = []
        for s in load_manifest(data_dir / f"{split}.jsonl"):
            text = _SHAPE_RE.sub("", s.text or "").strip()
            lines.append(json.dumps({"image": str(s.image), "text": text, "label": s.label}))
        p = dest / f"fusion_{split}.jsonl"
        p.write_text("\n".join(lines) + "\n")
        out.append(p)
    if (data_dir / "classes.json").is_file():
        (dest / "classes.json").write_text((data_dir / "classes.json").read_text())
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------- training
def _tower_model(model: nn.Module, spec: dict[str, Any], directory: Path) -> Any:
    from .model.iospec import SpecFile
    from .model.loaders import _towers_from_spec
    from .model.tower import LoadedModel

    towers = _towers_from_spec(model, SpecFile.parse(spec), "FusionClassifier")
    return LoadedModel(source=str(directory), format="factory", architecture="FusionClassifier", towers=towers,
                       root=model, files=[directory / FACTORY_FILE])


def _train(model: nn.Module, tokenizer: Any, processor: Any, train: list[Sample], val_path: Path, spec: dict,
           proc_dir: Path, recipe: dict, seed: int, quiet: bool) -> dict[str, Any]:
    import torch.nn.functional as F

    from .runtime.accuracy import headline_metric
    from .train.distill import batch_inputs
    from .train.loop import LoopSettings, TrainLoop
    from .train.run import _make_eval

    classes = class_names(train)
    labels = torch.from_numpy(label_indices(train, classes))
    enc = tokenize([s.text for s in train], tokenizer, max_length=MAX_TEXT_LEN, pad_to_max=True)
    feeds = {"input_ids": torch.from_numpy(enc["input_ids"]), "attention_mask": torch.from_numpy(enc["attention_mask"]),
             "pixel_values": torch.from_numpy(load_images([s.image for s in train], processor))}
    loaded = _tower_model(model, spec, proc_dir)
    tower = loaded.towers["model"]

    def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.cross_entropy(tower.module(*batch_inputs(tower, feeds, idx))[0], labels[idx])
        return loss, {"label": float(loss.detach())}

    settings = LoopSettings(steps=int(recipe["steps"]), batch=int(recipe["batch_size"]), lr=float(recipe["lr"]),
                            weight_decay=float(recipe["weight_decay"]), warmup_steps=int(recipe["warmup_steps"]),
                            seed=seed)
    eval_fn = _make_eval(loaded, load_manifest(val_path), str(val_path), proc_dir, DEFAULT_TEMPLATES, headline_metric)
    r = TrainLoop({"model": model}, len(train), settings, loss_fn, eval_fn=eval_fn, desc="mmdk demo [fusion]",
                  quiet=quiet).run()
    return {"accuracy": r.best["accuracy"] if r.best else None, "best_step": r.best["step"] if r.best else None,
            "eval": r.history, "final_loss": r.final_loss, "steps": r.steps_done}


def train_fusion_demo(out: str | Path | None = None, data_dir: str | Path | None = None, steps: int | None = None,
                      seed: int = 0, quiet: bool = False, force: bool = False,
                      threads: int | None = None) -> DemoResult:
    """Train (or reuse from ``default_cache_dir()/demo/fusion-<hash>``) the fusion classifier demo.
    ``metrics``: held-out ``accuracy`` (%) and the per-epoch eval history."""
    from .artifacts import MANIFEST_NAME  # noqa: F401 - the directory is an arch-record dir, not an mmdk output
    from .model.arch_record import save_pruned

    recipe = json.loads(json.dumps(FUSION_RECIPE))
    if steps is not None:
        if int(steps) < 1:
            raise UserInputError(f"steps must be >= 1 (got {steps})")
        recipe["steps"] = int(steps)
    data_dir = Path(data_dir).expanduser().resolve() if data_dir is not None else _default_data_dir().resolve()
    config = {"variant": "fusion", "recipe_version": FUSION_RECIPE_VERSION, "seed": int(seed), **recipe,
              "data": {"fingerprint": _fingerprint(data_dir)}}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    out = Path(out).expanduser() if out is not None else default_cache_dir() / "demo" / f"fusion-{key}"
    info_path = out / DEMO_FILE
    if out.is_dir() and info_path.is_file() and not force:
        info = json.loads(info_path.read_text())
        if info.get("config_hash") == key and (out / "model.safetensors").is_file():
            return DemoResult(path=out.resolve(), metrics=info["metrics"], train_seconds=info["train_seconds"],
                              reused=True, data_dir=data_dir, variant="fusion")
    if out.is_dir() and any(out.iterdir()) and not force and out.parent != default_cache_dir() / "demo":
        raise UserInputError(f"output directory {out} is not empty", hint="pass --force to replace it")

    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads) if threads else min(2, torch.get_num_threads())))
    torch.manual_seed(seed)
    try:
        with atomic_output_dir(out, overwrite=True) as tmp:
            train_path, val_path = fusion_manifests(data_dir, tmp)
            train = load_manifest(train_path)
            classes = class_names(train)
            corpus = [s.text for s in load_manifest(data_dir / "train.jsonl") if s.text] + [s.text for s in train] + [
                t.format(label=c) for t in DEFAULT_TEMPLATES for c in classes]
            tokenizer = _word_tokenizer(corpus)
            processor = _image_processor(int(recipe["image_size"]))
            tokenizer.save_pretrained(str(tmp))
            processor.save_pretrained(str(tmp))
            arch = {"vocab_size": len(tokenizer), "num_classes": len(classes), "text": recipe["text"],
                    "image_channels": list(recipe["image_channels"]), "fusion_hidden": recipe["fusion_hidden"]}
            (tmp / FACTORY_FILE).write_text(_FACTORY_SOURCE.format(config=json.dumps(arch)))
            model = FusionClassifier(**arch)
            spec = io_spec(len(tokenizer), int(recipe["image_size"]))
            t0 = time.perf_counter()
            metrics = _train(model, tokenizer, processor, train, val_path, spec, tmp, recipe, seed, quiet)
            train_seconds = round(time.perf_counter() - t0, 2)
            model.eval()
            target = str((out.resolve() / FACTORY_FILE))
            save_pruned(model, tmp, {"source": {"kind": "factory", "target": target, "attr": "build", "io": spec},
                                     "modules": {}})
            info = {"variant": "fusion", "config_hash": key, "config": config, "metrics": metrics,
                    "train_seconds": train_seconds, "data_dir": str(data_dir), "classes": classes,
                    "train_manifest": str(out.resolve() / train_path.name),
                    "val_manifest": str(out.resolve() / val_path.name),
                    "versions": package_versions("torch", "transformers", "tokenizers")}
            (tmp / DEMO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    finally:
        torch.set_num_threads(prev)
    return DemoResult(path=out.resolve(), metrics=metrics, train_seconds=train_seconds, reused=False,
                      data_dir=data_dir, variant="fusion")
