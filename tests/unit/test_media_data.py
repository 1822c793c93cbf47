"""Audio / video manifest data: WAV reading, resampling, frame folders, synthetic audio and video sets (torch-free)."""

from __future__ import annotations

import hashlib
import json
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from mmdeploy_kit.data import media
from mmdeploy_kit.data.manifest import class_names, load_manifest
from mmdeploy_kit.data.media import (count_video_frames, load_audio, read_audio, read_video, resample,
                                     sample_indices, write_wav)
from mmdeploy_kit.data.synth_media import (audio_class_labels, synthesize_audio_dataset,
                                           synthesize_video_dataset, video_class_labels)
from mmdeploy_kit.errors import DataError, UserInputError


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _pcm_wav(path: Path, x: np.ndarray, sr: int, width: int, channels: int = 1) -> None:
    """Write ``x`` ([samples] or [samples, channels], in [-1, 1]) as integer PCM of ``width`` bytes."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), channels)
    if width == 1:
        raw = np.clip(np.rint(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 3:
        v = np.clip(np.rint(x * (2 ** 23 - 1)), -2 ** 23, 2 ** 23 - 1).astype(np.int32).ravel()
        raw = b"".join(int(s).to_bytes(3, "little", signed=True) for s in v)
    else:
        dt = {2: "<i2", 4: "<i4"}[width]
        raw = np.clip(np.rint(x * (2 ** (8 * width - 1) - 1)), -2 ** (8 * width - 1),
                      2 ** (8 * width - 1) - 1).astype(dt).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(sr)
        w.writeframes(raw)


def _float_wav(path: Path, x: np.ndarray, sr: int) -> None:
    data = np.asarray(x, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sr, sr * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _tone(sr: int, f: float = 440.0, n: int | None = None) -> np.ndarray:
    t = np.arange(n or sr) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("width,tol", [(1, 1e-2), (2, 1e-4), (3, 1e-6), (4, 1e-6)])
def test_pcm_wav_widths_read_back(tmp_path, width, tol):
    x = _tone(8000, n=800)
    _pcm_wav(tmp_path / "a.wav", x, 8000, width)
    y, sr = read_audio(tmp_path / "a.wav")
    assert sr == 8000 and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < tol


def test_float_and_stereo_wav(tmp_path):
    x = _tone(16000, n=1600)
    _float_wav(tmp_path / "f.wav", x, 16000)
    y, sr = read_audio(tmp_path / "f.wav")
    assert sr == 16000 and np.allclose(y, x, atol=1e-7)
    stereo = np.stack([x, -x * 0.5], axis=1)
    _pcm_wav(tmp_path / "s.wav", stereo, 16000, 2, channels=2)
    y, _ = read_audio(tmp_path / "s.wav")
    assert y.shape == (1600,) and np.allclose(y, x * 0.25, atol=1e-4)  # channel mean


def test_write_wav_is_16bit_pcm_and_deterministic(tmp_path):
    x = _tone(22050)
    write_wav(tmp_path / "a.wav", x, 22050)
    write_wav(tmp_path / "b.wav", x, 22050)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getsampwidth(), w.getnchannels(), w.getframerate()) == (2, 1, 22050)


@pytest.mark.parametrize("src,dst", [(48000, 16000), (16000, 48000), (44100, 16000), (22050, 8000), (8000, 16000)])
def test_resample_keeps_in_band_tones(src, dst):
    t = np.arange(src) / src
    x = (np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 1500 * t)).astype(np.float32)
    y = resample(x, src, dst)
    assert len(y) == dst and y.dtype == np.float32
    tt = np.arange(len(y)) / dst
    ref = np.sin(2 * np.pi * 440 * tt) + 0.5 * np.sin(2 * np.pi * 1500 * tt)
    assert np.abs(y - ref)[100:-100].max() < 5e-3  # edges see the zero padding


def test_resample_suppresses_aliasing_and_checks_rates():
    x = np.sin(2 * np.pi * 12000 * np.arange(48000) / 48000).astype(np.float32)  # above 16 kHz's Nyquist
    assert np.abs(resample(x, 48000, 16000))[100:-100].max() < 1e-3
    assert np.array_equal(resample(x, 100, 100), x)
    with pytest.raises(DataError):
        resample(x, 0, 16000)


def test_load_audio_resamples(tmp_path):
    write_wav(tmp_path / "a.wav", _tone(16000), 16000)
    assert load_audio(tmp_path / "a.wav").shape == (16000,)
    assert load_audio(tmp_path / "a.wav", 48000).shape == (48000,)


def test_audio_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(DataError, match="cannot read WAV"):
        read_audio(tmp_path / "bad.wav")
    (tmp_path / "a.flac").write_bytes(b"fLaC")
    monkeypatch.setattr(media, "available", lambda name: False)
    with pytest.raises(DataError, match="soundfile") as err:
        read_audio(tmp_path / "a.flac")
    assert "mmdeploy-kit[audio]" in err.value.hint


def test_frames_folder_gif_and_video_file(tmp_path, monkeypatch):
    from PIL import Image

    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (12, 10), (i * 50, 0, 0)).save(folder / f"f{i:02d}.png")
    (folder / "notes.txt").write_text("ignored")
    assert count_video_frames(folder) == 5
    frames = read_video(folder, 3)
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 100, 200]  # evenly spread, in name order
    assert len(read_video(folder, 8)) == 8  # short clips repeat frames
    gif = [Image.new("RGB", (8, 8), (0, i * 60, 0)) for i in range(4)]
    gif[0].save(tmp_path / "c.gif", save_all=True, append_images=gif[1:])
    assert count_video_frames(tmp_path / "c.gif") == 4 and len(read_video(tmp_path / "c.gif", 2)) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no frame images"):
        read_video(tmp_path / "empty", 2)
    (tmp_path / "v.mp4").write_bytes(b"\x00")
    monkeypatch.setattr(media, "available", lambda name: False)
    with pytest.raises(DataError, match="PyAV") as err:
        read_video(tmp_path / "v.mp4", 2)
    assert "mmdeploy-kit[video]" in err.value.hint
    assert sample_indices(10, 4) == [1, 3, 6, 8] and sample_indices(0, 3) == []


def test_manifest_audio_and_video_fields(tmp_path):
    write_wav(tmp_path / "a.wav", _tone(8000), 8000)
    (tmp_path / "v").mkdir()
    m = tmp_path / "m.jsonl"
    m.write_text('{"audio": "a.wav", "text": "a tone", "label": "tone"}\n{"video": "v", "label": "clip"}\n')
    rows = load_manifest(m)
    assert rows[0].audio == tmp_path / "a.wav" and rows[0].video is None
    assert rows[1].video == tmp_path / "v" and rows[1].text is None and rows[1].extra == {}
    m.write_text('{"video": "nowhere", "text": "x"}\n')
    with pytest.raises(DataError, match="do not exist"):
        load_manifest(m)
    m.write_text('{"label": "x"}\n')
    with pytest.raises(DataError, match="'video'"):
        load_manifest(m)


@pytest.fixture(scope="module")
def audio_set(tmp_path_factory) -> Path:
    return synthesize_audio_dataset(tmp_path_factory.mktemp("a") / "audio", n_train=18, n_val=12, seed=1)


def test_synth_audio_is_deterministic_and_balanced(tmp_path, audio_set):
    again = synthesize_audio_dataset(tmp_path / "again", n_train=18, n_val=12, seed=1)
    assert _digest(again) == _digest(audio_set)
    other = synthesize_audio_dataset(tmp_path / "other", n_train=18, n_val=12, seed=2)
    assert _digest(other)["train.jsonl"] != _digest(audio_set)["train.jsonl"]
    classes = json.loads((audio_set / "classes.json").read_text())
    assert classes == audio_class_labels() and "rising chirp" in classes and "noise burst" in classes
    rows = [json.loads(x) for x in (audio_set / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 18 and all(set(r) == {"audio", "text", "label"} and r["text"] for r in rows)
    assert sorted(r["label"] for r in rows) == sorted(classes * 3)
    val = load_manifest(audio_set / "val.jsonl")
    assert class_names(val) == classes
    x, sr = read_audio(val[0].audio)
    assert sr == 16000 and x.shape == (16000,) and 0.05 < np.abs(x).max() <= 1.0


def test_synth_audio_classes_differ_in_sound(audio_set):
    """Low tones sit low, high tones high, chirps sweep: the labels describe what is in the clip."""
    def centroid(x: np.ndarray, sr: int) -> float:
        spec = np.abs(np.fft.rfft(x)) ** 2
        return float((np.fft.rfftfreq(len(x), 1 / sr) * spec).sum() / spec.sum())

    rows = load_manifest(audio_set / "train.jsonl")
    by = {}
    for s in rows:
        x, sr = read_audio(s.audio)
        by.setdefault(s.label, []).append(x)
    assert max(centroid(x, 16000) for x in by["low tone"]) < 600 < min(centroid(x, 16000) for x in by["high tone"])
    for x in by["rising chirp"]:
        on = np.flatnonzero(np.abs(x) > 0.05)
        first, last = x[on[0]:on[0] + 1600], x[on[-1] - 1600:on[-1]]
        assert centroid(first, 16000) < centroid(last, 16000)


def test_synth_audio_rejects_bad_arguments(tmp_path):
    with pytest.raises(UserInputError):
        synthesize_audio_dataset(tmp_path / "a", n_train=0)
    with pytest.raises(UserInputError, match="sampling rate"):
        synthesize_audio_dataset(tmp_path / "b", sampling_rate=100)
    with pytest.raises(UserInputError, match="duration"):
        synthesize_audio_dataset(tmp_path / "c", duration=0.01)


def test_synth_video_frames_folders(tmp_path):
    out = synthesize_video_dataset(tmp_path / "v", n_train=6, n_val=6, image_size=24, num_frames=4, seed=0)
    again = synthesize_video_dataset(tmp_path / "v2", n_train=6, n_val=6, image_size=24, num_frames=4, seed=0)
    assert _digest(out) == _digest(again)
    rows = load_manifest(out / "train.jsonl")
    assert sorted(r.label for r in rows) == sorted(video_class_labels())
    assert all(r.video.is_dir() and count_video_frames(r.video) == 4 for r in rows)
    frames = read_video(rows[0].video, 4)
    assert frames[0].size == (24, 24)


def test_cli_synth_modalities(tmp_path, mmdk):
    r = mmdk("data", "synth", "--modality", "audio", "-o", tmp_path / "a", "--n-train", 6, "--n-val", 6,
             "--sampling-rate", 8000, "--duration", 0.5)
    assert r.code == 0 and "train.jsonl (6)" in r.out
    assert read_audio(load_manifest(tmp_path / "a" / "val.jsonl")[0].audio)[0].shape == (4000,)
    r = mmdk("data", "synth", "--modality", "video", "-o", tmp_path / "v", "--n-train", 6, "--n-val", 6,
             "--frames", 3)
    assert r.code == 0 and (tmp_path / "v" / "videos" / "000000" / "frame_02.png").is_file()
    r = mmdk("data", "synth", "--modality", "smell", "-o", tmp_path / "s")
    assert r.code == 2 and r.one_line_error() and "unknown modality" in r.err


def test_image_default_unchanged(tmp_path):
    """`mmdk data synth` without --modality writes the same bytes as before (the demo's data-cache key)."""
    from mmdeploy_kit import api
    from mmdeploy_kit.data.synth import synthesize_dataset

    a = api.synth_data(tmp_path / "a", n_train=4, n_val=2, image_size=16)
    b = synthesize_dataset(tmp_path / "b", n_train=4, n_val=2, image_size=16)
    assert _digest(a) == _digest(b)


def test_optional_readers_soundfile_and_pyav(tmp_path, monkeypatch):
    """FLAC goes through soundfile and video files through PyAV when they are installed (faked here)."""
    import sys
    import types

    from PIL import Image

    sf = types.ModuleType("soundfile")
    sf.read = lambda path, dtype, always_2d: (np.stack([np.full(10, 0.5), np.zeros(10)], axis=1).astype(dtype), 44100)
    sf.LibsndfileError = RuntimeError
    av = types.ModuleType("av")

    class _Frame:
        def __init__(self, i):
            self.i = i

        def to_image(self):
            return Image.new("RGB", (6, 4), (self.i * 40, 0, 0))

    class _Container:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def decode(self, video):
            return [_Frame(i) for i in range(6)]

    av.open = lambda path: _Container()
    monkeypatch.setitem(sys.modules, "soundfile", sf)
    monkeypatch.setitem(sys.modules, "av", av)
    monkeypatch.setattr(media, "available", lambda name: True)
    (tmp_path / "a.flac").write_bytes(b"fLaC")
    x, sr = read_audio(tmp_path / "a.flac")
    assert sr == 44100 and x.shape == (10,) and np.allclose(x, 0.25)  # stereo -> mono
    (tmp_path / "v.mp4").write_bytes(b"\x00")
    frames = read_video(tmp_path / "v.mp4", 3)
    assert [f.getpixel((0, 0))[0] for f in frames] == [40, 120, 200]
