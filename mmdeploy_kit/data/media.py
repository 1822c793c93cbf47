"""Audio clips and video frames named by a manifest, read into numpy (torch-free, no new dependency).

- audio: ``.wav`` with the standard library's ``wave`` module (8/16/24/32-bit PCM; 32/64-bit float WAVs
  through a small RIFF reader); any other format (FLAC, OGG, MP3, ...) through ``soundfile`` when it is
  installed (the ``audio`` extra), else a one-line error naming it. Multi-channel audio is averaged to
  mono; :func:`resample` converts to the checkpoint's sampling rate with a windowed-sinc polyphase filter.
- video: a folder of frame images (PNG/JPEG/..., in name order), an animated GIF/WebP/APNG (PIL), or a
  video file through PyAV when it is installed (the ``video`` extra). :func:`read_video` samples
  ``num_frames`` frames evenly over the clip, as X-CLIP's processor expects.
"""

from __future__ import annotations

import math
import struct
import wave
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._lazy import available
from ..errors import DataError

AUDIO_EXTRA_HINT = "pip install 'mmdeploy-kit[audio]' (soundfile) to read FLAC/OGG/MP3, or convert the clips to WAV"
VIDEO_EXTRA_HINT = ("pip install 'mmdeploy-kit[video]' (PyAV) to read video files, or give a folder of frame "
                    "images (or an animated GIF) instead")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
ANIMATED_SUFFIXES = (".gif", ".webp", ".apng", ".png")


# ---- audio ------------------------------------------------------------------------------------------------
def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """``(mono float32 samples in [-1, 1], sampling rate)`` of one audio file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file {path} does not exist", hint="paths in a manifest are relative to its folder")
    if path.suffix.lower() in (".wav", ".wave"):
        return _read_wav(path)
    if not available("soundfile"):
        raise DataError(f"cannot read {path.name}: only WAV is read without the 'soundfile' package",
                        hint=AUDIO_EXTRA_HINT)
    import soundfile

    try:
        data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:  # type: ignore[attr-defined]
        raise DataError(f"cannot read audio {path}: {str(exc).splitlines()[0][:160]}") from None
    return _mono(np.asarray(data, dtype=np.float32)), int(sr)


def _mono(frames: np.ndarray) -> np.ndarray:
    """[samples, channels] -> [samples] (channel mean)."""
    return np.ascontiguousarray(frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0], dtype=np.float32)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, sr, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except wave.Error as exc:
        if "unknown format: 3" in str(exc):  # IEEE float: the wave module reads PCM only
            return _read_float_wav(path)
        raise DataError(f"cannot read WAV {path}: {exc}", hint="write 16-bit PCM or float WAV files") from None
    except (EOFError, OSError) as exc:
        raise DataError(f"cannot read WAV {path}: {exc or 'truncated file'}") from None
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    else:  # pragma: no cover - wave rejects other widths
        raise DataError(f"cannot read WAV {path}: {8 * width}-bit samples")
    if channels < 1 or len(x) % channels:
        raise DataError(f"cannot read WAV {path}: truncated sample data")
    return _mono(x.reshape(-1, channels)), int(sr)


def _read_float_wav(path: Path) -> tuple[np.ndarray, int]:
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataError(f"cannot read WAV {path}: not a RIFF/WAVE file")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None or fmt[5] not in (32, 64):
        raise DataError(f"cannot read WAV {path}: unsupported float layout", hint="write 16-bit PCM WAV files")
    _tag, channels, sr, _rate, _align, bits = fmt
    x = np.frombuffer(payload[:len(payload) - len(payload) % (bits // 8 * channels)],
                      dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    return _mono(x.reshape(-1, channels)), int(sr)


def write_wav(path: str | Path, samples: np.ndarray, sampling_rate: int) -> None:
    """Write mono float samples in [-1, 1] as a 16-bit PCM WAV (deterministic bytes)."""
    pcm = np.clip(np.rint(np.asarray(samples, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sampling_rate))
        w.writeframes(pcm.tobytes())


@lru_cache(maxsize=16)
def _filter_bank(up: int, down: int, zero_crossings: int) -> tuple[np.ndarray, int]:
    """Polyphase windowed-sinc (Kaiser, beta 8.6) taps: [up, 2 * half + 1] and ``half`` (in input samples)."""
    cutoff = min(1.0, up / down) * 0.97  # relative to the input's Nyquist; a little below for the transition band
    half = int(math.ceil(zero_crossings / cutoff))
    k = np.arange(-half, half + 1, dtype=np.float64)
    phases = np.arange(up, dtype=np.float64)[:, None] / up  # fractional delay of each output phase
    t = k[None, :] - phases
    window = np.kaiser(2 * half + 3, 8.6)[1:-1]  # symmetric, length 2 * half + 1
    w = np.interp(t, k, window, left=0.0, right=0.0)
    taps = cutoff * np.sinc(cutoff * t) * w
    return (taps / taps.sum(axis=1, keepdims=True)).astype(np.float32), half


def resample(x: np.ndarray, orig_sr: int, target_sr: int, zero_crossings: int = 16) -> np.ndarray:
    """Band-limited resampling of a mono signal from ``orig_sr`` to ``target_sr`` (numpy only).

    Rational polyphase filtering: output sample ``n`` sits at input time ``n * orig / target``; its value is
    a windowed-sinc interpolation of the neighbouring input samples, low-passed below the lower Nyquist
    rate so downsampling does not alias. Output length is ``ceil(len(x) * target / orig)``.
    """
    x = np.asarray(x, dtype=np.float32)
    if orig_sr <= 0 or target_sr <= 0:
        raise DataError(f"sampling rates must be positive (got {orig_sr} -> {target_sr})")
    if orig_sr == target_sr or len(x) == 0:
        return x.copy()
    g = math.gcd(int(orig_sr), int(target_sr))
    up, down = int(target_sr) // g, int(orig_sr) // g
    taps, half = _filter_bank(up, down, zero_crossings)
    n_out = int(math.ceil(len(x) * up / down))
    padded = np.concatenate([np.zeros(half + 1, np.float32), x, np.zeros(half + 2, np.float32)])
    offsets = np.arange(-half, half + 1)
    out = np.empty(n_out, dtype=np.float32)
    step = max(1, (1 << 22) // len(offsets))  # bounded memory per chunk
    for start in range(0, n_out, step):
        n = np.arange(start, min(n_out, start + step), dtype=np.int64)
        base, phase = (n * down) // up, (n * down) % up
        idx = base[:, None] + offsets[None, :] + half + 1
        # tap k of a phase weighs input sample base + k (the kernel is symmetric in time)
        out[start:start + len(n)] = np.einsum("ij,ij->i", padded[idx], taps[phase])
    return out


def load_audio(path: str | Path, sampling_rate: int | None = None) -> np.ndarray:
    """Mono float32 samples of ``path``, resampled to ``sampling_rate`` when given."""
    x, sr = read_audio(path)
    if sampling_rate is not None and sr != sampling_rate:
        x = resample(x, sr, int(sampling_rate))
    return x


# ---- video --------------------------------------------------------------------------------------------
def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def count_video_frames(path: str | Path) -> int:
    """Number of frames of a frames folder or an animated image (no decoding of pixels for folders)."""
    path = Path(path)
    if path.is_dir():
        return len(_frame_files(path))
    return len(_read_video_file(path, None))


def sample_indices(total: int, num_frames: int) -> list[int]:
    """``num_frames`` indices spread evenly over ``total`` frames (centre of each segment; repeats if short)."""
    if total < 1:
        return []
    return [min(total - 1, int((i + 0.5) * total / num_frames)) for i in range(num_frames)]


def read_video(path: str | Path, num_frames: int) -> list[Any]:
    """``num_frames`` RGB PIL images sampled evenly from a frames folder, an animated image or a video file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise DataError(f"video folder {path} holds no frame images",
                            hint=f"put the frames in it as {'/'.join(s.lstrip('.') for s in FRAME_SUFFIXES[:3])} files")
        frames = []
        for f in (files[i] for i in sample_indices(len(files), num_frames)):
            try:
                with Image.open(f) as im:
                    frames.append(im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"cannot read video frame {f}: {exc}") from None
        return frames
    if not path.exists():
        raise DataError(f"video {path} does not exist", hint="paths in a manifest are relative to its folder")
    return _read_video_file(path, num_frames)


def _read_video_file(path: Path, num_frames: int | None) -> list[Any]:
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() in ANIMATED_SUFFIXES:
        try:
            with Image.open(path) as im:
                n = int(getattr(im, "n_frames", 1))
                picks = range(n) if num_frames is None else sample_indices(n, num_frames)
                frames = []
                for i in picks:
                    im.seek(i)
                    frames.append(im.convert("RGB"))
                return frames
        except (UnidentifiedImageError, OSError, EOFError) as exc:
            raise DataError(f"cannot read video {path}: {exc}") from None
    if not available("av"):
        raise DataError(f"cannot read video file {path.name}: decoding {path.suffix or 'it'} needs PyAV",
                        hint=VIDEO_EXTRA_HINT)
    import av

    try:
        with av.open(str(path)) as container:
            decoded = [f.to_image().convert("RGB") for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError) as exc:  # type: ignore[attr-defined]
        raise DataError(f"cannot read video {path}: {str(exc).splitlines()[0][:160]}") from None
    if not decoded:
        raise DataError(f"video {path} has no frames")
    return decoded if num_frames is None else [decoded[i] for i in sample_indices(len(decoded), num_frames)]


def pad_or_trim(arrays: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Stack 1-D arrays into ``[N, length]``: longer ones cut, shorter ones zero-padded at the end."""
    out = np.zeros((len(arrays), length), dtype=np.float32)
    for i, a in enumerate(arrays):
        n = min(length, len(a))
        out[i, :n] = a[:n]
    return out
