"""JSONL data manifests (image / text / audio / video / label) and numpy preprocessing named like tower inputs.

Torch-free. A manifest is a ``.jsonl`` file, one JSON object per line::

    {"image": "images/000123.png", "text": "a small red circle", "label": "red circle"}
    {"audio": "audio/000007.wav", "text": "a rising chirp", "label": "rising chirp"}
    {"video": "videos/000003", "text": "a red circle moving left", "label": "moving left"}

``audio`` is a WAV (FLAC/OGG with ``soundfile``) file; ``video`` is a folder of frame images, an animated
GIF or a video file (with PyAV) - see :mod:`.media`.
Relative paths are resolved against the manifest's folder; any other keys land in ``Sample.extra``.
The benchmark and the calibration readers build on :func:`load_manifest`, :func:`load_images` and
:func:`tokenize`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import DataError

CLASSES_FILE = "classes.json"
MEDIA_KEYS = ("image", "audio", "video")
INPUT_KEYS = ("image", "text", "audio", "video")
# CLIP's normalisation; the default when no image processor is given
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Sample:
    """One manifest row. Media paths are absolute (resolved against the manifest's folder)."""

    image: Path | None = None
    text: str | None = None
    audio: Path | None = None
    label: str | None = None
    video: Path | None = None  # a frames folder or a video file
    extra: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None  # the manifest file this row came from
    line: int | None = None  # 1-based line number in that manifest


def load_manifest(path: str | Path, check_files: bool = True) -> list[Sample]:
    """Read a JSONL manifest into :class:`Sample` objects.

    Raises :class:`DataError` (one line + hint) for a missing manifest, invalid JSON (naming the
    line), a row with none of image/text/audio/video, an empty manifest, and - when ``check_files`` -
    referenced media files (or video frame folders) that do not exist (how many, and the first one).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.jsonl"))
        raise DataError(f"manifest {path} is a directory",
                        hint=f"point at one of its .jsonl files: {', '.join(found)}" if found
                        else "point at a .jsonl file (one JSON object per line)")
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist",
                        hint="create one with `mmdk data synth -o DIR` or check the path")
    base = path.resolve().parent
    samples: list[Sample] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno} is not valid JSON ({exc.msg} at column {exc.colno})",
                                hint="each line must be one JSON object, e.g. "
                                     '{"image": "a.png", "text": "a caption"}') from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno} is a JSON {type(row).__name__}, expected an object",
                                hint='each line must be one JSON object, e.g. {"image": "a.png"}')
            samples.append(_row_to_sample(row, base, path, lineno))
    if not samples:
        raise DataError(f"manifest {path} has no rows", hint="add one JSON object per line")
    if check_files:
        _check_files(samples, path)
    return samples


def _row_to_sample(row: Mapping[str, Any], base: Path, path: Path, lineno: int) -> Sample:
    if not any(row.get(k) not in (None, "") for k in INPUT_KEYS):
        raise DataError(f"{path}:{lineno} has none of 'image', 'text', 'audio', 'video' (keys: {sorted(row)})",
                        hint="every row needs at least one input field")
    resolved: dict[str, Path | None] = {}
    for key in MEDIA_KEYS:
        value = row.get(key)
        if value in (None, ""):
            resolved[key] = None
        elif not isinstance(value, str):
            raise DataError(f"{path}:{lineno} field {key!r} must be a path string, got {type(value).__name__}")
        else:
            p = Path(value).expanduser()
            resolved[key] = p if p.is_absolute() else base / p
    text = row.get("text")
    if text is not None and not isinstance(text, str):
        raise DataError(f"{path}:{lineno} field 'text' must be a string, got {type(text).__name__}")
    label = row.get("label")
    extra = {k: v for k, v in row.items() if k not in (*INPUT_KEYS, "label")}
    return Sample(image=resolved["image"], text=text, audio=resolved["audio"], video=resolved["video"],
                  label=None if label is None else str(label), extra=extra, source=path.resolve(), line=lineno)


def _check_files(samples: Sequence[Sample], path: Path) -> None:
    missing = [p for s in samples for p in (s.image, s.audio) if p is not None and not p.is_file()]
    missing += [s.video for s in samples if s.video is not None and not s.video.exists()]
    if missing:
        raise DataError(f"{len(missing)} file(s) referenced by {path} do not exist, first: {missing[0]}",
                        hint="paths in a manifest are relative to the manifest's folder")


def class_names(samples: Sequence[Sample], classes_file: str | Path | None = None) -> list[str]:
    """Class labels in a stable order.

    ``classes_file`` (or ``classes.json`` beside the samples' manifest, when present) gives the order;
    otherwise the sorted unique labels. Every label used by a sample must be listed in the file.
    """
    used = {s.label for s in samples if s.label is not None}
    if classes_file is None:
        sources = {s.source.parent for s in samples if s.source is not None}
        if len(sources) == 1:
            cand = next(iter(sources)) / CLASSES_FILE
            classes_file = cand if cand.is_file() else None
    if classes_file is None:
        if not used:
            raise DataError("no sample has a 'label'", hint="add a \"label\" field to the manifest rows")
        return sorted(used)
    classes_file = Path(classes_file)
    try:
        names = json.loads(classes_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"classes file {classes_file} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"classes file {classes_file} is not valid JSON ({exc.msg})",
                        hint='it must be a JSON list of label strings, e.g. ["cat", "dog"]') from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"classes file {classes_file} must be a JSON list of strings")
    unknown = sorted(used - set(names))
    if unknown:
        raise DataError(f"{len(unknown)} label(s) are not listed in {classes_file}, first: {unknown[0]!r}",
                        hint="add them to the classes file or fix the manifest labels")
    return list(names)


def label_indices(samples: Sequence[Sample], classes: Sequence[str]) -> np.ndarray:
    """Class index of every sample (int64); raises DataError for an unlabeled/unknown sample."""
    lookup = {c: i for i, c in enumerate(classes)}
    out = np.empty(len(samples), dtype=np.int64)
    for i, s in enumerate(samples):
        if s.label not in lookup:
            where = f"{s.source}:{s.line}" if s.source else f"sample {i}"
            raise DataError(f"{where} has label {s.label!r}, which is not a known class",
                            hint="every evaluated sample needs a label from the class list")
        out[i] = lookup[s.label]
    return out


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def load_images(paths: Iterable[str | Path], image_processor: Any = None, size: int | Sequence[int] | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """Read images as a float32 ``[N, 3, H, W]`` array ready for a vision tower (``pixel_values``).

    With a Hugging Face ``image_processor`` (e.g. ``AutoImageProcessor.from_pretrained(d, use_fast=False)``)
    its own resize/crop/normalisation is used. Otherwise each image is converted to RGB, resized to
    ``size`` (int or (H, W); default: keep the size, which must then be the same for all images) with
    bicubic filtering, scaled to [0, 1] and normalised with ``mean``/``std`` (default: CLIP's).
    """
    from PIL import Image, UnidentifiedImageError

    paths = [Path(p) for p in paths]
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        except FileNotFoundError:
            raise DataError(f"image {p} does not exist") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"cannot read image {p}: {exc}", hint="use PNG/JPEG files") from None
    return images_to_array(images, image_processor, size, mean, std)


def images_to_array(images: Sequence[Any], image_processor: Any = None, size: int | Sequence[int] | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """RGB PIL images -> float32 ``[N, 3, H, W]``, as :func:`load_images` (which reads them from paths)."""
    from PIL import Image

    images = list(images)
    if image_processor is not None:
        if not images:
            raise DataError("no images to load")
        out = image_processor(images=images, return_tensors="np")["pixel_values"]
        return np.ascontiguousarray(out, dtype=np.float32)
    target = _pair(size) if size is not None else None
    arrays = []
    for im in images:
        if target is not None and (im.height, im.width) != target:
            im = im.resize((target[1], target[0]), Image.BICUBIC)
        arrays.append(np.asarray(im, dtype=np.float32))
    if not arrays:
        h, w = target or (0, 0)
        return np.zeros((0, 3, h, w), dtype=np.float32)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(s[:2] for s in shapes)[:3]}",
                        hint="pass size=... (or an image processor) to resize them")
    x = np.stack(arrays) / 255.0
    m = np.asarray(CLIP_MEAN if mean is None else mean, dtype=np.float32)
    sd = np.asarray(CLIP_STD if std is None else std, dtype=np.float32)
    x = (x - m) / sd
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def tokenize(texts: Iterable[str], tokenizer: Any, max_length: int | None = None, pad_to_max: bool = True,
             include_token_type_ids: bool = False) -> dict[str, np.ndarray]:
    """Tokenize ``texts`` into int64 ``input_ids`` / ``attention_mask`` arrays ``[N, L]``.

    ``pad_to_max`` pads every row to ``max_length`` (a fixed shape, as histogram calibrators and static
    engines need); otherwise to the longest row. ``max_length`` defaults to the tokenizer's
    ``model_max_length`` (capped at 512). Longer texts are truncated.
    """
    texts = [str(t) for t in texts]
    if max_length is None:
        max_length = int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))
    enc = tokenizer(texts, padding="max_length" if pad_to_max else "longest", truncation=True,
                    max_length=int(max_length), return_tensors="np")
    keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if include_token_type_ids else [])
    out = {}
    for k in keys:
        if k in enc:
            out[k] = np.asarray(enc[k], dtype=np.int64)
        elif k == "attention_mask":
            out[k] = np.ones_like(out["input_ids"])
        elif k == "token_type_ids":
            out[k] = np.zeros_like(out["input_ids"])
    return out
