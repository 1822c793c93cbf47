"""A deterministic synthetic image–caption dataset: coloured shapes on noisy neutral backgrounds.

``synthesize_dataset(out)`` writes::

    out/images/000000.png ...   RGB PNGs, image_size x image_size
    out/train.jsonl             {"image": "images/000123.png", "text": "...", "label": "red circle"}
    out/val.jsonl
    out/classes.json            ordered list of class labels ("<colour> <shape>")
    out/README.md

Same arguments -> byte-identical files (PIL + numpy only, no torch, no timestamps). The images are
not trivial: shape size and position vary, colours and background are jittered, the background has a
gradient, a faint distractor line may cross it and Gaussian noise is added.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..artifacts import atomic_output_dir
from ..errors import UserInputError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 215, 40),
    "purple": (140, 55, 185),
    "orange": (245, 140, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
BACKGROUNDS: dict[str, int] = {"white": 240, "light grey": 190, "grey": 130, "dark grey": 75, "black": 20}
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "center")

CAPTION_TEMPLATES: tuple[str, ...] = (
    "{a} {size} {color} {shape} on {abg} {bg} background",
    "a photo of {a} {color} {shape}",
    "a picture of {a} {size} {color} {shape}",
    "{a} {color} {shape}",
    "{size} {color} {shape} in the {pos}",
    "an image of {a} {color} {shape} near the {pos}",
    "there is {a} {color} {shape} on {abg} {bg} background",
    "{a} {color} {shape} drawn on {bg}",
    "a {bg} image with {a} {size} {color} {shape}",
)
# radius / image side. Large, roughly centred, upright shapes: a small ViT trained from scratch on 2 CPU cores
# learns shape from them in minutes; with radii of 0.11-0.33 and free rotation it only learned colour
# (zero-shot top-1 ~34%); a star was too close to a triangle at 32 px, a cross is not.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.28, 0.34), "large": (0.36, 0.44)}
ROTATION_JITTER_DEG = 0.0  # shapes are drawn upright, then rotated by +-this
NOISE_STD = (4.0, 14.0)
DISTRACTOR_P = 0.5  # chance of a faint neutral line crossing the image
SUPERSAMPLE = 4
_FORMAT_VERSION = 2  # bump whenever the rendering or its constants change (part of the demo's data-cache key)


def class_labels() -> list[str]:
    """The 24 class labels in their canonical order: colour-major, e.g. ``"red circle"``."""
    return [f"{c} {s}" for c in COLORS for s in SHAPES]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(angle + math.pi / 4 + k * math.pi / 2) * r, math.sin(angle + math.pi / 4 + k * math.pi / 2) * r)
               for k in range(4)]
    elif shape == "triangle":
        pts = [(math.cos(angle + k * 2 * math.pi / 3) * r, math.sin(angle + k * 2 * math.pi / 3) * r) for k in range(3)]
    elif shape == "cross":
        w = r * 0.36
        base = [(w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w),
                (-w, -r)]
        ca, sa = math.cos(angle + math.pi / 2), math.sin(angle + math.pi / 2)
        pts = [(x * ca - y * sa, x * sa + y * ca) for x, y in base]
    else:  # pragma: no cover - guarded by caller
        raise ValueError(shape)
    return [(cx + x, cy + y) for x, y in pts]


def _render(rng: np.random.Generator, color: str, shape: str, image_size: int) -> tuple[np.ndarray, dict]:
    """Draw one image; return uint8 HxWx3 and the attributes used for its caption."""
    from PIL import Image, ImageDraw

    s = image_size
    big = s * SUPERSAMPLE
    bg_name = str(rng.choice(list(BACKGROUNDS)))
    level = BACKGROUNDS[bg_name] + rng.integers(-12, 13)
    tint = rng.integers(-8, 9, size=3)
    # vertical/horizontal gradient on the background
    gx, gy = rng.uniform(-18, 18, size=2)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / max(s - 1, 1) - 0.5
    bg = level + tint[None, None, :] + (gx * xx + gy * yy)[:, :, None]

    size_name = "small" if rng.random() < 0.5 else "large"
    frac = rng.uniform(*SIZE_RANGES[size_name])
    r = frac * s
    margin = r * 1.05 + 1
    cx = rng.uniform(margin, s - margin)
    cy = rng.uniform(margin, s - margin)
    angle = -math.pi / 2 + math.radians(rng.uniform(-ROTATION_JITTER_DEG, ROTATION_JITTER_DEG))
    rgb = np.clip(np.array(COLORS[color]) + rng.integers(-18, 19, size=3), 0, 255)

    # shape mask drawn supersampled, then box-filtered down (anti-aliased edges)
    mask_img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask_img)
    k = SUPERSAMPLE
    if shape == "circle":
        draw.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=255)
    else:
        draw.polygon([(x * k, y * k) for x, y in _polygon(shape, cx, cy, r, angle)], fill=255)
    # faint distractor line in a neutral tone
    line = None
    if rng.random() < DISTRACTOR_P:
        p = rng.uniform(0, big, size=4)
        line = (p, float(rng.integers(60, 200)), int(rng.integers(1, 3)) * k)
    mask = np.asarray(mask_img.resize((s, s), Image.BOX), dtype=np.float32)[:, :, None] / 255.0

    img = bg
    if line is not None:
        pts, tone, width = line
        lm = Image.new("L", (big, big), 0)
        ImageDraw.Draw(lm).line([(pts[0], pts[1]), (pts[2], pts[3])], fill=255, width=width)
        lmask = np.asarray(lm.resize((s, s), Image.BOX), dtype=np.float32)[:, :, None] / 255.0 * 0.5
        img = img * (1 - lmask) + tone * lmask
    img = img * (1 - mask) + rgb[None, None, :] * mask
    img = img + rng.normal(0.0, rng.uniform(*NOISE_STD), size=img.shape)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    col = "left" if cx < s / 3 else ("right" if cx > 2 * s / 3 else "")
    row = "top" if cy < s / 3 else ("bottom" if cy > 2 * s / 3 else "")
    pos = f"{row} {col}".strip() if row and col else "center"
    if pos not in POSITIONS:
        pos = "center"
    return out, {"size": size_name, "bg": bg_name, "pos": pos}


def _caption(rng: np.random.Generator, color: str, shape: str, attrs: dict) -> str:
    tmpl = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    first = attrs["size"] if "{a} {size}" in tmpl else color
    return tmpl.format(a=_article(first), size=attrs["size"], color=color, shape=shape,
                       abg=_article(attrs["bg"]), bg=attrs["bg"], pos=attrs["pos"])


def _balanced_labels(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    return labels


# The one set of synthetic-data defaults (the demo's dataset): `mmdk data synth`, `mmdk.synth_data` and the demo
# checkpoint read them here.
SYNTH_DEFAULTS = {"n_train": 4000, "n_val": 400, "image_size": 32, "seed": 0}


def synthesize_dataset(out: str | Path, n_train: int = SYNTH_DEFAULTS["n_train"], n_val: int = SYNTH_DEFAULTS["n_val"],
                       image_size: int = SYNTH_DEFAULTS["image_size"], seed: int = SYNTH_DEFAULTS["seed"],
                       overwrite: bool = False) -> Path:
    """Write the synthetic coloured-shapes dataset to ``out`` and return its (resolved) path.

    Classes are balanced within each split. Deterministic: the same arguments give byte-identical
    files. The folder appears atomically (nothing is left behind if generation fails).
    """
    from PIL import Image

    if n_train < 1 or n_val < 1:
        raise UserInputError(f"n_train and n_val must be >= 1 (got {n_train}, {n_val})")
    if image_size < 16:
        raise UserInputError(f"image_size must be >= 16 (got {image_size})", hint="use e.g. --image-size 64")
    classes = class_labels()
    splits = {"train": n_train, "val": n_val}
    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        idx = 0
        for split_no, (split, n) in enumerate(splits.items()):
            rng = np.random.default_rng([seed, split_no, _FORMAT_VERSION])
            labels = _balanced_labels(rng, n, len(classes))
            rows = []
            for lab in labels:
                label = classes[int(lab)]
                color, shape = label.split(" ", 1)
                pixels, attrs = _render(rng, color, shape, image_size)
                rel = f"images/{idx:06d}.png"
                Image.fromarray(pixels).save(tmp / rel, format="PNG", optimize=False)
                rows.append({"image": rel, "text": _caption(rng, color, shape, attrs), "label": label})
                idx += 1
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        (tmp / "classes.json").write_text(json.dumps(classes, indent=1) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_readme(n_train, n_val, image_size, seed, classes), encoding="utf-8")
    return out.resolve()


def _readme(n_train: int, n_val: int, image_size: int, seed: int, classes: list[str]) -> str:
    return (
        "# mmdk synthetic shapes dataset\n\n"
        f"Generated by `mmdeploy_kit.data.synth.synthesize_dataset` (format v{_FORMAT_VERSION}, seed {seed}).\n\n"
        f"- {n_train} train / {n_val} val RGB PNG images of {image_size}x{image_size} pixels in `images/`\n"
        f"- {len(classes)} balanced classes = {len(COLORS)} colours x {len(SHAPES)} shapes "
        "(`classes.json`, e.g. `red circle`)\n"
        "- `train.jsonl` / `val.jsonl`: one JSON object per line with `image` (path relative to the "
        "manifest), `text` (a varied caption) and `label`\n"
        "- variation: shape size (small/large), position, colour jitter, neutral background "
        "with tint and gradient, optional faint distractor line, Gaussian noise\n\n"
        "Same arguments give byte-identical files. Regenerate with "
        f"`mmdk data synth -o DIR --n-train {n_train} --n-val {n_val} --image-size {image_size} --seed {seed}`.\n"
    )
