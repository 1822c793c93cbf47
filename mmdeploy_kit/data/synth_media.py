"""Deterministic synthetic audio-caption and video-caption datasets (numpy + stdlib ``wave`` + PIL, no torch).

``synthesize_audio_dataset(out)`` writes::

    out/audio/000000.wav ...   mono 16-bit PCM clips (default 1 s at 16 kHz)
    out/train.jsonl            {"audio": "audio/000123.wav", "text": "a soft rising chirp", "label": "rising chirp"}
    out/val.jsonl
    out/classes.json           ordered class labels (low tone, high tone, rising chirp, ...)
    out/README.md

``synthesize_video_dataset(out)`` writes ``videos/000000/frame_00.png ...`` (a frames folder per clip: a
coloured shape moving or changing size on a noisy background) with ``{"video": ..., "text": ..., "label": ...}``
rows. Same arguments -> byte-identical files. Audio-text and video-text towers calibrate and are scored
(zero-shot classification, retrieval recall) on them without downloads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..artifacts import atomic_output_dir
from ..errors import UserInputError
from .media import write_wav

AUDIO_CLASSES: tuple[str, ...] = ("low tone", "high tone", "rising chirp", "falling chirp", "noise burst",
                                  "pulsing tone")
AUDIO_TEMPLATES: tuple[str, ...] = (
    "a {adj} {label}",
    "the sound of a {label}",
    "a recording of a {adj} {label}",
    "a {label} over {bg} background noise",
    "a {label}",
    "you can hear a {adj} {label}",
)
_ALT_PHRASES = {"low tone": ("a low steady tone", "a deep hum, a low tone"), "high tone": ("a high steady tone",
                "a high pitched tone"), "rising chirp": ("a chirp rising in pitch",), "falling chirp":
                ("a chirp falling in pitch",), "noise burst": ("a burst of noise", "short bursts of noise"),
                "pulsing tone": ("a tone pulsing on and off", "a pulsing, throbbing tone")}
VIDEO_MOTIONS: tuple[str, ...] = ("moving left", "moving right", "moving up", "moving down", "growing", "shrinking")
VIDEO_COLORS: dict[str, tuple[int, int, int]] = {"red": (215, 40, 40), "green": (40, 165, 60),
                                                 "blue": (40, 80, 225), "yellow": (235, 215, 40)}
VIDEO_SHAPES: tuple[str, ...] = ("circle", "square")
_FORMAT_VERSION = 1  # bump whenever the generation or its constants change


def audio_class_labels() -> list[str]:
    return list(AUDIO_CLASSES)


def video_class_labels() -> list[str]:
    return list(VIDEO_MOTIONS)


# ---- audio --------------------------------------------------------------------------------------------
def _envelope(n: int, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Where the event sounds (a random span with 10 ms fades) and whether it is 'short' or 'long'."""
    length = int(n * rng.uniform(0.45, 0.95))
    start = int(rng.integers(0, n - length + 1))
    env = np.zeros(n, dtype=np.float64)
    env[start:start + length] = 1.0
    fade = max(1, int(0.01 * sr))
    ramp = np.linspace(0.0, 1.0, fade)
    env[start:start + fade] *= ramp[:len(env[start:start + fade])]
    tail = env[start + length - fade:start + length]
    env[start + length - fade:start + length] = tail * ramp[::-1][:len(tail)]
    return env, ("short" if length < 0.7 * n else "long")


def _clip(label: str, n: int, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    t = np.arange(n, dtype=np.float64) / sr
    nyq = 0.45 * sr
    env, span = _envelope(n, sr, rng)
    if label in ("low tone", "high tone"):
        f = rng.uniform(110, 320) if label == "low tone" else rng.uniform(min(1800, nyq * 0.5), min(4200, nyq))
        phase = rng.uniform(0, 2 * math.pi)
        x = np.sin(2 * math.pi * f * t + phase)
        if label == "low tone":
            x = x + 0.3 * np.sin(4 * math.pi * f * t + phase)
    elif label in ("rising chirp", "falling chirp"):
        lo, hi = rng.uniform(150, 500), rng.uniform(min(2000, nyq * 0.6), min(4500, nyq))
        f0, f1 = (lo, hi) if label == "rising chirp" else (hi, lo)
        on = env > 0
        tt = np.cumsum(on) / sr  # sweep over the sounding span only
        dur = max(tt[-1], 1.0 / sr)
        k = math.log(f1 / f0) / dur
        x = np.sin(2 * math.pi * f0 * (np.exp(k * tt) - 1.0) / k)
    elif label == "noise burst":
        x = rng.standard_normal(n) * 0.6
        gate = np.zeros(n)
        for _ in range(int(rng.integers(1, 4))):
            w = int(sr * rng.uniform(0.05, 0.2))
            s = int(rng.integers(0, max(1, n - w)))
            gate[s:s + w] = 1.0
        env = env * np.maximum(gate, 0.0) if (env * gate).any() else gate
    elif label == "pulsing tone":
        f, rate = rng.uniform(450, 1400), rng.uniform(3.0, 8.0)
        x = np.sin(2 * math.pi * f * t) * (0.55 + 0.45 * np.sign(np.sin(2 * math.pi * rate * t)))
    else:  # pragma: no cover - guarded by caller
        raise ValueError(label)
    amp = rng.uniform(0.15, 0.8)
    bg_std = rng.uniform(0.002, 0.03)
    y = amp * env * x + rng.standard_normal(n) * bg_std
    return np.clip(y, -1.0, 1.0), {"adj": "soft" if amp < 0.4 else "loud", "span": span,
                                   "bg": "faint" if bg_std < 0.012 else "some"}


def _audio_caption(rng: np.random.Generator, label: str, attrs: dict) -> str:
    if rng.random() < 0.25:
        alts = _ALT_PHRASES[label]
        return alts[int(rng.integers(len(alts)))]
    tmpl = AUDIO_TEMPLATES[int(rng.integers(len(AUDIO_TEMPLATES)))]
    adj = attrs["adj"] if rng.random() < 0.6 else attrs["span"]
    return tmpl.format(adj=adj, label=label, bg=attrs["bg"])


def synthesize_audio_dataset(out: str | Path, n_train: int = 600, n_val: int = 120, sampling_rate: int = 16000,
                             duration: float = 1.0, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the synthetic tones / chirps / noise-bursts dataset to ``out``; return its resolved path.

    Classes are balanced within each split; the same arguments give byte-identical files; the folder appears
    atomically.
    """
    if n_train < 1 or n_val < 1:
        raise UserInputError(f"n_train and n_val must be >= 1 (got {n_train}, {n_val})")
    if not 8000 <= sampling_rate <= 96000:
        raise UserInputError(f"sampling rate must be within 8000..96000 Hz (got {sampling_rate})",
                             hint="use e.g. --sampling-rate 16000 (CLAP checkpoints resample on load)")
    if not 0.25 <= duration <= 30:
        raise UserInputError(f"duration must be within 0.25..30 s (got {duration})", hint="use e.g. --duration 1")
    classes = audio_class_labels()
    n = int(round(sampling_rate * duration))
    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "audio").mkdir()
        idx = 0
        for split_no, (split, count) in enumerate({"train": n_train, "val": n_val}.items()):
            rng = np.random.default_rng([seed, split_no, _FORMAT_VERSION, 7])
            labels = np.arange(count) % len(classes)
            rng.shuffle(labels)
            rows = []
            for lab in labels:
                label = classes[int(lab)]
                samples, attrs = _clip(label, n, sampling_rate, rng)
                rel = f"audio/{idx:06d}.wav"
                write_wav(tmp / rel, samples, sampling_rate)
                rows.append({"audio": rel, "text": _audio_caption(rng, label, attrs), "label": label})
                idx += 1
            _write_jsonl(tmp / f"{split}.jsonl", rows)
        (tmp / "classes.json").write_text(json.dumps(classes, indent=1) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(
            "# mmdk synthetic audio dataset\n\n"
            f"Generated by `mmdeploy_kit.data.synth_media.synthesize_audio_dataset` (format v{_FORMAT_VERSION}, "
            f"seed {seed}).\n\n"
            f"- {n_train} train / {n_val} val mono 16-bit WAV clips of {duration:g} s at {sampling_rate} Hz in `audio/`\n"
            f"- {len(classes)} balanced classes (`classes.json`): {', '.join(classes)}\n"
            "- `train.jsonl` / `val.jsonl`: `audio` (path relative to the manifest), `text` (a varied caption), `label`\n"
            "- variation: pitch, sweep range, loudness, event span and position, background noise\n\n"
            "Same arguments give byte-identical files. Regenerate with `mmdk data synth --modality audio -o DIR "
            f"--n-train {n_train} --n-val {n_val} --sampling-rate {sampling_rate} --duration {duration:g} --seed {seed}`.\n",
            encoding="utf-8")
    return out.resolve()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---- video --------------------------------------------------------------------------------------------
def _video_frames(rng: np.random.Generator, motion: str, color: str, shape: str, size: int,
                  n_frames: int) -> list[np.ndarray]:
    from PIL import Image, ImageDraw

    bg = rng.integers(20, 235)
    rgb = np.clip(np.array(VIDEO_COLORS[color]) + rng.integers(-15, 16, size=3), 0, 255)
    r0 = size * rng.uniform(0.14, 0.2)
    cx, cy = size * rng.uniform(0.35, 0.65), size * rng.uniform(0.35, 0.65)
    travel = size * rng.uniform(0.25, 0.4)
    noise_std = rng.uniform(2.0, 8.0)
    frames = []
    for i in range(n_frames):
        a = i / max(1, n_frames - 1) - 0.5  # -0.5 .. 0.5 over the clip
        x, y, r = cx, cy, r0
        if motion == "moving left":
            x = cx - a * travel
        elif motion == "moving right":
            x = cx + a * travel
        elif motion == "moving up":
            y = cy - a * travel
        elif motion == "moving down":
            y = cy + a * travel
        elif motion == "growing":
            r = r0 * (1.0 + 1.2 * (a + 0.5))
        else:  # shrinking
            r = r0 * (2.2 - 1.2 * (a + 0.5))
        im = Image.new("RGB", (size, size), (int(bg),) * 3)
        box = [x - r, y - r, x + r, y + r]
        fill = tuple(int(c) for c in rgb)
        (ImageDraw.Draw(im).ellipse if shape == "circle" else ImageDraw.Draw(im).rectangle)(box, fill=fill)
        arr = np.asarray(im, dtype=np.float64) + rng.normal(0.0, noise_std, size=(size, size, 3))
        frames.append(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    return frames


def synthesize_video_dataset(out: str | Path, n_train: int = 240, n_val: int = 60, image_size: int = 32,
                             num_frames: int = 8, seed: int = 0, overwrite: bool = False) -> Path:
    """Write synthetic moving-shape clips (one frames folder each) with captions; return the resolved path."""
    from PIL import Image

    if n_train < 1 or n_val < 1:
        raise UserInputError(f"n_train and n_val must be >= 1 (got {n_train}, {n_val})")
    if image_size < 16 or not 2 <= num_frames <= 64:
        raise UserInputError(f"image size must be >= 16 and frames within 2..64 (got {image_size}, {num_frames})")
    classes = video_class_labels()
    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "videos").mkdir()
        idx = 0
        for split_no, (split, count) in enumerate({"train": n_train, "val": n_val}.items()):
            rng = np.random.default_rng([seed, split_no, _FORMAT_VERSION, 11])
            labels = np.arange(count) % len(classes)
            rng.shuffle(labels)
            rows = []
            for lab in labels:
                motion = classes[int(lab)]
                color = list(VIDEO_COLORS)[int(rng.integers(len(VIDEO_COLORS)))]
                shape = VIDEO_SHAPES[int(rng.integers(len(VIDEO_SHAPES)))]
                rel = f"videos/{idx:06d}"
                (tmp / rel).mkdir()
                for k, frame in enumerate(_video_frames(rng, motion, color, shape, image_size, num_frames)):
                    Image.fromarray(frame).save(tmp / rel / f"frame_{k:02d}.png", format="PNG", optimize=False)
                text = f"a {color} {shape} {motion}" if rng.random() < 0.5 else f"a video of a {shape} {motion}"
                rows.append({"video": rel, "text": text, "label": motion})
                idx += 1
            _write_jsonl(tmp / f"{split}.jsonl", rows)
        (tmp / "classes.json").write_text(json.dumps(classes, indent=1) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(
            "# mmdk synthetic video dataset\n\n"
            f"Generated by `mmdeploy_kit.data.synth_media.synthesize_video_dataset` (format v{_FORMAT_VERSION}, "
            f"seed {seed}).\n\n"
            f"- {n_train} train / {n_val} val clips, each a folder of {num_frames} PNG frames of "
            f"{image_size}x{image_size} pixels in `videos/`\n"
            f"- {len(classes)} balanced classes (`classes.json`): {', '.join(classes)}\n\n"
            "Same arguments give byte-identical files. Regenerate with `mmdk data synth --modality video -o DIR "
            f"--n-train {n_train} --n-val {n_val} --image-size {image_size} --frames {num_frames} --seed {seed}`.\n",
            encoding="utf-8")
    return out.resolve()
