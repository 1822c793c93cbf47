"""Audio and video manifest rows -> tower inputs, with the checkpoint's own feature extractor / image processor.

``preprocessor_config.json`` beside the checkpoint names the feature extractor (``ClapFeatureExtractor``,
``WhisperFeatureExtractor``, ``Wav2Vec2FeatureExtractor``, ``ASTFeatureExtractor``, ...); clips are read and
resampled to its ``sampling_rate`` (:mod:`..data.media`), run through it, and the results are keyed by the
tower's I/O-spec input names (CLAP: ``input_features`` + ``is_longer``; wav2vec2: ``input_values``).
Video towers (X-CLIP: ``pixel_values`` ``[batch, frames, 3, H, W]``) get ``frames`` frames sampled evenly
from each clip and the checkpoint's image processor applied per frame.

Deterministic: CLAP's extractor picks random crops / a random "longer" row; here it runs under a fixed seed
and ``is_longer`` is the clip's real length test. Torch-free: transformers' CLAP extractor imports torch, so
without torch the same log-mel features are computed with ``transformers.audio_utils`` (numpy).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .._lazy import available
from ..data.manifest import images_to_array
from ..data.media import load_audio, pad_or_trim, read_video
from ..errors import DataError
from ..model.iospec import NUMPY_DTYPES, IOSpec

MEDIA = ("image", "audio", "video")
DEFAULT_FRAMES = 8


def tower_medium(spec: IOSpec) -> Optional[str]:
    """The manifest field a tower is fed from: 'text', 'image', 'audio' or 'video' (None: a mix / unknown).

    Inputs marked ``generic`` (flags such as CLAP's ``is_longer``) do not count.
    """
    mods = {i.modality for i in spec.inputs} - {"generic"}
    if len(mods) != 1:
        return None
    (mod,) = mods
    return mod if mod in ("text", *MEDIA) else None


def processor_config(directory: Optional[Path]) -> dict[str, Any]:
    """``preprocessor_config.json`` beside the checkpoint ({} when there is none; one-line error when corrupt)."""
    if directory is None or not (directory / "preprocessor_config.json").is_file():
        return {}
    try:
        return json.loads((directory / "preprocessor_config.json").read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{directory / 'preprocessor_config.json'} is not valid JSON ({exc.msg})") from None


# ---- audio --------------------------------------------------------------------------------------------
class AudioFeaturizer:
    """``paths -> {input name: array}`` for an audio tower, from the checkpoint's feature extractor."""

    def __init__(self, directory: Optional[Path], spec: IOSpec):
        cfg = processor_config(directory)
        if not cfg or "sampling_rate" not in cfg:
            raise DataError(f"audio tower inputs ({', '.join(spec.input_names)}) need the checkpoint's feature "
                            f"extractor, but {directory or 'no processor directory'} has no preprocessor_config.json "
                            "with a sampling_rate",
                            hint="pass --processor HF_DIR (the checkpoint directory with preprocessor_config.json)")
        self.spec = spec
        self.cfg = cfg
        self.kind = str(cfg.get("feature_extractor_type") or "")
        self.sampling_rate = int(cfg["sampling_rate"])
        self.extractor: Any = None
        self.how = f"{self.kind or 'feature extractor'} from {directory}"
        if available("transformers"):
            from .._quiet import quiet_transformers

            quiet_transformers()
            from transformers import AutoFeatureExtractor

            try:
                self.extractor = AutoFeatureExtractor.from_pretrained(str(directory), local_files_only=True)
            except ImportError:  # e.g. ClapFeatureExtractor without torch: the numpy version below
                self.extractor = None
            except (OSError, ValueError, KeyError) as exc:
                raise DataError(f"cannot load the feature extractor in {directory}: "
                                f"{str(exc).splitlines()[0][:200]}", hint="check preprocessor_config.json") from None
        if self.extractor is None:
            raw = "input_values" in spec.input_names and len(spec.input("input_values").shape) == 2
            if self.kind != "ClapFeatureExtractor" and not raw:
                raise DataError(f"cannot build audio features with {self.kind or 'an unnamed feature extractor'} "
                                "without transformers (and torch where it needs it)",
                                hint="pip install transformers torch, or pass --calib-data as an .npz of features")
            self.how += " (numpy, no torch)"

    # ---- per kind ----
    def _clap(self, waves: list[np.ndarray]) -> dict[str, np.ndarray]:
        max_len = int(self.cfg.get("max_length_s", 10) * self.sampling_rate)
        longer = np.array([[len(w) > max_len] for w in waves], dtype=bool)
        if self.extractor is not None:
            state = np.random.get_state()
            np.random.seed(0)  # its crops of long clips are random; fixed here so every run sees the same
            try:
                enc = self.extractor(waves, sampling_rate=self.sampling_rate, return_tensors="np")
            finally:
                np.random.set_state(state)
            feats = np.asarray(enc["input_features"], dtype=np.float32)
        else:
            feats = _clap_numpy(self.cfg, waves, self.sampling_rate)
        return {"input_features": feats, "is_longer": longer}

    def _generic(self, waves: list[np.ndarray]) -> dict[str, np.ndarray]:
        kw: dict[str, Any] = {"sampling_rate": self.sampling_rate, "return_tensors": "np"}
        raw = "input_values" in self.spec.input_names and len(self.spec.input("input_values").shape) == 2
        if raw:  # a raw waveform [batch, samples]: one fixed length, so batches stack
            kw.update(padding="max_length", truncation=True, max_length=self._samples(waves))
        if "attention_mask" in self.spec.input_names:
            kw["return_attention_mask"] = True
        if self.extractor is None:  # wav2vec2-style raw input without transformers
            x = pad_or_trim([self._normalise(w) for w in waves], self._samples(waves))
            return {"input_values": x, "attention_mask": np.ones(x.shape, dtype=np.int64)}
        enc = self.extractor(waves, **kw)
        return {k: np.asarray(v) for k, v in enc.items()}

    def _normalise(self, w: np.ndarray) -> np.ndarray:
        if not self.cfg.get("do_normalize", True):
            return w
        return (w - w.mean()) / np.sqrt(w.var() + 1e-7)

    def _samples(self, waves: list[np.ndarray]) -> int:
        """Fixed raw-audio length: the spec's static size, else the longest clip within its dim's range."""
        shape = self.spec.input("input_values").shape if "input_values" in self.spec.input_names else ("batch", "s")
        last = shape[-1]
        if isinstance(last, int):
            return last
        lo, hi = self.spec.dims.get(last, (1, 1 << 30))
        return int(max(lo, min(hi, max(len(w) for w in waves))))

    def __call__(self, paths: Sequence[Path]) -> dict[str, np.ndarray]:
        if not paths:
            raise DataError("no audio clips to load")
        waves = [load_audio(p, self.sampling_rate) for p in paths]
        enc = self._clap(waves) if self.kind == "ClapFeatureExtractor" else self._generic(waves)
        feeds: dict[str, np.ndarray] = {}
        for inp in self.spec.inputs:
            if inp.name in enc:
                arr = _conform(np.asarray(enc[inp.name]), inp.shape, inp.name)
            elif inp.name == "attention_mask" or inp.name.endswith("_mask"):
                first = next(iter(feeds.values()), None)
                arr = np.ones(first.shape[:2] if first is not None else (len(waves), 1), dtype=np.int64)
            else:
                raise DataError(f"the feature extractor ({self.kind or 'unnamed'}) gives {', '.join(sorted(enc))}, "
                                f"not the tower's input {inp.name!r}",
                                hint="pass --calib-data as an .npz with arrays named like the tower inputs")
            feeds[inp.name] = np.ascontiguousarray(arr.astype(NUMPY_DTYPES[inp.dtype], copy=False))
        return feeds


def _conform(arr: np.ndarray, shape: Sequence[Any], name: str) -> np.ndarray:
    """Crop / zero-pad static axes (beyond batch) to the spec's size; a rank mismatch is an error."""
    if arr.ndim != len(shape):
        raise DataError(f"the feature extractor gives {name} of shape {list(arr.shape)}, the tower takes "
                        f"{list(shape)}", hint="pass --processor with the checkpoint's own preprocessor_config.json")
    for axis, want in enumerate(shape):
        if axis == 0 or not isinstance(want, int) or arr.shape[axis] == want:
            continue
        if arr.shape[axis] > want:
            arr = np.take(arr, np.arange(want), axis=axis)
        else:
            pad = [(0, 0)] * arr.ndim
            pad[axis] = (0, want - arr.shape[axis])
            arr = np.pad(arr, pad)
    return arr


def _clap_numpy(cfg: dict[str, Any], waves: list[np.ndarray], sr: int) -> np.ndarray:
    """ClapFeatureExtractor's log-mel features in numpy (its 'repeatpad' padding; long clips centre-cropped)."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    n_fft, hop = int(cfg.get("fft_window_size", 1024)), int(cfg.get("hop_length", 480))
    n_mels = int(cfg.get("feature_size", 64))
    fusion = cfg.get("truncation", "fusion") == "fusion"
    filters = mel_filter_bank(num_frequency_bins=(n_fft >> 1) + 1, num_mel_filters=n_mels,
                              min_frequency=float(cfg.get("frequency_min", 0)),
                              max_frequency=float(cfg.get("frequency_max", 14000)), sampling_rate=sr,
                              norm=None if fusion else "slaney", mel_scale="htk" if fusion else "slaney")
    max_len = int(cfg.get("max_length_s", 10) * sr)
    padding = cfg.get("padding", "repeatpad")
    out = []
    for w in waves:
        w = np.asarray(w, dtype=np.float64)
        if len(w) > max_len:
            start = (len(w) - max_len) // 2
            w = w[start:start + max_len]
        elif len(w) < max_len:
            if padding == "repeat":
                w = np.tile(w, int(max_len / len(w)) + 1)[:max_len]
            elif padding == "repeatpad":
                w = np.tile(w, int(max_len / len(w)))
            w = np.pad(w, (0, max_len - len(w)))
        mel = spectrogram(w, window_function(n_fft, "hann"), frame_length=n_fft, hop_length=hop, power=2.0,
                          mel_filters=filters, log_mel="dB").T
        out.append(np.stack([mel] * 4) if fusion else mel[None])
    return np.stack(out).astype(np.float32)


# ---- video --------------------------------------------------------------------------------------------
def num_frames(spec: IOSpec, name: str, directory: Optional[Path]) -> int:
    """Frames per clip: the spec's static frames axis, else config.json's ``num_frames``, else 8."""
    shape = spec.input(name).shape
    if len(shape) == 5 and isinstance(shape[1], int):
        return int(shape[1])
    if directory is not None and (directory / "config.json").is_file():
        cfg = json.loads((directory / "config.json").read_text())
        for c in (cfg, cfg.get("vision_config") or {}):
            if isinstance(c.get("num_frames"), int):
                return int(c["num_frames"])
    if len(shape) == 5 and isinstance(shape[1], str):
        return int(min(DEFAULT_FRAMES, spec.dims.get(shape[1], (1, DEFAULT_FRAMES))[1]))
    return DEFAULT_FRAMES


def load_video_reader(directory: Optional[Path], spec: IOSpec, name: str) -> Callable[[Sequence[Path]], np.ndarray]:
    """A function ``paths -> float32 [N, frames, 3, H, W]`` for a video tower's ``name`` input."""
    shape = spec.input(name).shape
    if len(shape) != 5:
        raise DataError(f"video input {name!r} has shape {list(shape)}; expected [batch, frames, channels, H, W]",
                        hint="pass --calib-data as an .npz with arrays named like the tower inputs")
    frames = num_frames(spec, name, directory)
    hw = tuple(int(d) for d in shape[-2:]) if all(isinstance(d, int) for d in shape[-2:]) else None
    cfg = processor_config(directory)
    processor = None
    if cfg and available("transformers"):
        from .._quiet import quiet_transformers

        quiet_transformers()
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(str(directory), local_files_only=True, use_fast=False)
        except (OSError, ValueError, KeyError, ImportError):
            processor = None
    takes_videos = processor is not None and \
        next(iter(inspect.signature(processor.preprocess).parameters), "") == "videos"

    def read(paths: Sequence[Path]) -> np.ndarray:
        clips = [read_video(p, frames) for p in paths]
        if not clips:
            raise DataError("no videos to load")
        if takes_videos:  # VideoMAEImageProcessor (X-CLIP): clips in, [N, T, C, H, W] out
            x = np.asarray(processor(clips, return_tensors="np")["pixel_values"], dtype=np.float32)
        else:  # an image processor (or plain resize + mean/std) on every frame
            flat = images_to_array([f for c in clips for f in c], processor, size=hw,
                                   mean=cfg.get("image_mean"), std=cfg.get("image_std"))
            x = flat.reshape(len(clips), frames, *flat.shape[1:])
        if hw is not None and tuple(x.shape[-2:]) != hw:
            raise DataError(f"preprocessed frames are {tuple(x.shape[-2:])} but input {name!r} expects {hw}",
                            hint="pass --processor with the checkpoint's preprocessor_config.json")
        return np.ascontiguousarray(x, dtype=np.float32)

    return read


def media_feeds(kind: str, directory: Optional[Path], spec: IOSpec) -> Callable[[Sequence[Path]], dict[str, np.ndarray]]:
    """``paths -> feeds`` for an 'audio' or 'video' tower (all of its inputs, keyed by name)."""
    if kind == "audio":
        return AudioFeaturizer(directory, spec)
    if kind == "video":
        name = next(i.name for i in spec.inputs if i.modality == "video")
        reader = load_video_reader(directory, spec, name)
        others = [i.name for i in spec.inputs if i.name != name]
        if others:
            raise DataError(f"video tower input(s) {', '.join(others)} cannot be built from a manifest",
                            hint="pass --calib-data as an .npz with arrays named like the tower inputs")
        return lambda paths: {name: reader(paths)}
    raise DataError(f"no reader for {kind!r} inputs")  # pragma: no cover - callers pass audio/video


def describe(kind: str, directory: Optional[Path], feeds_fn: Any) -> str:
    if kind == "audio":
        return feeds_fn.how
    return f"video frames + image processor from {directory}" if directory is not None else \
        "video frames, resize + CLIP mean/std (no image processor found)"
