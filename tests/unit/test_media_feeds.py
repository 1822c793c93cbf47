"""Audio / video tower feeds from the checkpoint's own processor files (CLAP, wav2vec2, Whisper, X-CLIP style),
keyed by the tower's I/O-spec input names; calibration sets built from audio / video manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmdeploy_kit.data.calib import load_calibration
from mmdeploy_kit.data.media import load_audio, write_wav
from mmdeploy_kit.data.synth_media import synthesize_audio_dataset, synthesize_video_dataset
from mmdeploy_kit.errors import DataError
from mmdeploy_kit.model.iospec import IOSpec
from mmdeploy_kit.runtime import preprocess_media as pm

pytest.importorskip("transformers")

CLAP_SPEC = IOSpec.model_validate({
    "inputs": [{"name": "input_features", "modality": "audio", "dtype": "float32", "shape": ["batch", 1, 101, 16]},
               {"name": "is_longer", "modality": "audio", "dtype": "bool", "shape": ["batch", 1]}],
    "outputs": ["audio_embeds"], "dims": {"batch": [1, 32]}})
TEXT_SPEC = IOSpec.model_validate({
    "inputs": [{"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"], "range": [0, 40]},
               {"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"],
                "range": [1, 2]}],
    "outputs": ["text_embeds"], "dims": {"batch": [1, 32], "seq": [1, 16]}})


def _clap_fe(truncation: str = "rand_trunc"):
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1,
                                fft_window_size=400, frequency_max=8000, truncation=truncation)


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "a the of sound recording low high tone rising falling chirp noise burst pulsing".split()
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                            model_max_length=16).save_pretrained(str(path))


@pytest.fixture(scope="module")
def audio_set(tmp_path_factory) -> Path:
    # 22.05 kHz clips: the featurizer must resample them to the extractor's 16 kHz
    return synthesize_audio_dataset(tmp_path_factory.mktemp("a") / "d", n_train=12, n_val=6, sampling_rate=22050)


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clap")
    _clap_fe().save_pretrained(str(d))
    _tokenizer(d)
    return d


def test_tower_medium():
    assert pm.tower_medium(CLAP_SPEC) == "audio" and pm.tower_medium(TEXT_SPEC) == "text"
    mixed = IOSpec.model_validate({"inputs": [TEXT_SPEC.inputs[0].model_dump(), CLAP_SPEC.inputs[0].model_dump()],
                                   "outputs": ["y"]})
    assert pm.tower_medium(mixed) is None


def test_clap_feeds_match_its_extractor(clap_dir, audio_set, tmp_path):
    paths = sorted((audio_set / "audio").glob("*.wav"))[:3]
    feeds = pm.AudioFeaturizer(clap_dir, CLAP_SPEC)(paths)
    assert set(feeds) == {"input_features", "is_longer"}
    assert feeds["input_features"].shape == (3, 1, 101, 16) and feeds["input_features"].dtype == np.float32
    assert feeds["is_longer"].dtype == np.bool_ and not feeds["is_longer"].any()
    waves = [load_audio(p, 16000) for p in paths]
    ref = _clap_fe()(waves, sampling_rate=16000, return_tensors="np")["input_features"]
    np.testing.assert_allclose(feeds["input_features"], ref, rtol=1e-5, atol=1e-4)
    # a clip longer than max_length_s: is_longer is its real length test, and the random crop is repeatable
    write_wav(tmp_path / "long.wav", np.sin(np.arange(28000) / 7.0) * 0.3, 16000)
    one = pm.AudioFeaturizer(clap_dir, CLAP_SPEC)([paths[0], tmp_path / "long.wav"])
    two = pm.AudioFeaturizer(clap_dir, CLAP_SPEC)([paths[0], tmp_path / "long.wav"])
    assert one["is_longer"][:, 0].tolist() == [False, True]
    np.testing.assert_array_equal(one["input_features"], two["input_features"])


@pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
def test_clap_numpy_features_match_transformers(audio_set, truncation):
    """Without torch (ClapFeatureExtractor imports it) the numpy version gives the same features."""
    fe = _clap_fe(truncation)
    waves = [load_audio(p, 16000)[:n] for p, n in zip(sorted((audio_set / "audio").glob("*.wav"))[:3],
                                                        (16000, 9000, 3000))]
    ref = fe(waves, sampling_rate=16000, return_tensors="np")["input_features"]
    got = pm._clap_numpy(fe.to_dict(), waves, 16000)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)


def test_clap_without_torch_uses_numpy(clap_dir, audio_set, monkeypatch):
    import transformers

    paths = sorted((audio_set / "audio").glob("*.wav"))[:2]
    ref = pm.AudioFeaturizer(clap_dir, CLAP_SPEC)(paths)

    def no_torch(*a, **k):
        raise ImportError("ClapFeatureExtractor requires the PyTorch library")

    monkeypatch.setattr(transformers.AutoFeatureExtractor, "from_pretrained", no_torch)
    fz = pm.AudioFeaturizer(clap_dir, CLAP_SPEC)
    assert fz.extractor is None and "numpy" in fz.how
    np.testing.assert_allclose(fz(paths)["input_features"], ref["input_features"], rtol=1e-5, atol=1e-3)


def test_wav2vec2_and_whisper_feeds(tmp_path, audio_set):
    from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    paths = sorted((audio_set / "audio").glob("*.wav"))[:2]
    w2v = tmp_path / "w2v"
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True).save_pretrained(str(w2v))
    spec = IOSpec.model_validate({
        "inputs": [{"name": "input_values", "modality": "audio", "dtype": "float32", "shape": ["batch", "samples"]}],
        "outputs": ["last_hidden_state"], "dims": {"batch": [1, 8], "samples": [1600, 12000]}})
    x = pm.AudioFeaturizer(w2v, spec)(paths)["input_values"]
    assert x.shape == (2, 12000) and abs(float(x[0].mean())) < 0.05 and 0.8 < float(x[0].std()) < 1.2  # capped
    whisper = tmp_path / "whisper"
    WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=1,
                            n_fft=400).save_pretrained(str(whisper))
    spec = IOSpec.model_validate({
        "inputs": [{"name": "input_features", "modality": "audio", "dtype": "float32", "shape": ["batch", 16, 64]}],
        "outputs": ["last_hidden_state"]})
    x = pm.AudioFeaturizer(whisper, spec)(paths)["input_features"]
    assert x.shape == (2, 16, 64) and np.isfinite(x).all()  # cropped to the encoder's 2 x positions


def test_audio_needs_a_feature_extractor(tmp_path):
    with pytest.raises(DataError, match="preprocessor_config.json") as err:
        pm.AudioFeaturizer(tmp_path, CLAP_SPEC)
    assert "--processor" in err.value.hint


def test_calibration_from_an_audio_manifest(clap_dir, audio_set):
    data = load_calibration(audio_set / "train.jsonl", {"audio": CLAP_SPEC, "text": TEXT_SPEC}, clap_dir,
                            n_calib=8, n_holdout=4, batch_size=4)
    a = data.towers["audio"]
    assert a.n_calib == 8 and a.n_holdout == 4
    assert a.calib[0]["input_features"].shape == (4, 1, 101, 16) and a.calib[0]["is_longer"].dtype == np.bool_
    assert "ClapFeatureExtractor" in a.details["preprocessing"]
    assert data.towers["text"].calib[0]["input_ids"].shape[0] == 4
    assert len(data.holdout_samples) == 4 and all(s.audio for s in data.holdout_samples)


def test_calibration_refuses_a_manifest_without_audio(clap_dir, tmp_path):
    m = tmp_path / "t.jsonl"
    m.write_text("".join(f'{{"text": "a tone {i}"}}\n' for i in range(4)))
    with pytest.raises(DataError, match="needs 'audio'"):
        load_calibration(m, {"audio": CLAP_SPEC}, clap_dir)


@pytest.fixture(scope="module")
def video_set(tmp_path_factory) -> Path:
    return synthesize_video_dataset(tmp_path_factory.mktemp("v") / "d", n_train=6, n_val=6, image_size=24,
                                    num_frames=4)


@pytest.mark.parametrize("processor", ["videomae", "clip"])
def test_video_feeds(tmp_path, video_set, processor):
    from transformers import CLIPImageProcessor, VideoMAEImageProcessor

    cls = VideoMAEImageProcessor if processor == "videomae" else CLIPImageProcessor
    cls(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(tmp_path))
    spec = IOSpec.model_validate({
        "inputs": [{"name": "pixel_values", "modality": "video", "dtype": "float32", "shape": ["batch", 2, 3, 32, 32]}],
        "outputs": ["video_embeds"], "dims": {"batch": [1, 8]}})
    data = load_calibration(video_set / "train.jsonl", {"video": spec}, tmp_path, n_calib=4, n_holdout=2,
                            batch_size=2)
    x = data.towers["video"].calib[0]["pixel_values"]
    assert x.shape == (2, 2, 3, 32, 32) and x.dtype == np.float32 and np.isfinite(x).all()
    # frames differ over time (the shapes move) and the processor normalised them
    assert np.abs(x[:, 0] - x[:, 1]).max() > 0.1 and -3 < float(x.mean()) < 3


def test_clap_feeds_without_torch_installed(clap_dir, audio_set, tmp_path):
    """The ONNX path runs where torch is absent: a process that cannot import torch gets the same features."""
    import subprocess
    import sys

    paths = sorted((audio_set / "audio").glob("*.wav"))[:2]
    np.save(tmp_path / "ref.npy", pm.AudioFeaturizer(clap_dir, CLAP_SPEC)(paths)["input_features"])
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchaudio'] = None\n"
        "import numpy as np\n"
        "from mmdeploy_kit.runtime.preprocess_media import AudioFeaturizer\n"
        "from mmdeploy_kit.model.iospec import IOSpec\n"
        f"spec = IOSpec.model_validate({CLAP_SPEC.to_dict()!r})\n"
        f"fz = AudioFeaturizer(__import__('pathlib').Path({str(clap_dir)!r}), spec)\n"
        f"x = fz([{', '.join(repr(str(p)) for p in paths)}])['input_features']\n"
        f"np.testing.assert_allclose(x, np.load({str(tmp_path / 'ref.npy')!r}), rtol=1e-5, atol=1e-3)\n"
        "assert 'numpy' in fz.how and sys.modules['torch'] is None\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_text_tower_without_tokenizer_files_is_a_data_error(clap_dir, tmp_path):
    """A checkpoint saved with only its feature extractor (no tokenizer) is a one-line error, not a TypeError."""
    from mmdeploy_kit.runtime.preprocess import load_tokenizer

    _clap_fe().save_pretrained(str(tmp_path))
    with pytest.raises(DataError, match="no tokenizer files") as err:
        load_tokenizer(tmp_path)
    assert "save_pretrained" in err.value.hint
    assert load_tokenizer(clap_dir)(["a rising chirp"], 8)["input_ids"].shape == (1, 8)


def test_calibration_of_a_fusion_tower_from_a_manifest(clap_dir, audio_set):
    """A tower taking text and audio at once (late fusion) calibrates from rows that have both."""
    spec = IOSpec.model_validate({"inputs": [*(i.model_dump() for i in TEXT_SPEC.inputs),
                                             *(i.model_dump() for i in CLAP_SPEC.inputs)],
                                  "outputs": ["logits"], "dims": {"batch": [1, 8], "seq": [1, 12]}})
    data = load_calibration(audio_set / "train.jsonl", {"model": spec}, clap_dir, n_calib=6, n_holdout=3,
                            batch_size=3)
    b = data.towers["model"].calib[0]
    assert set(b) == {"input_ids", "attention_mask", "input_features", "is_longer"}
    assert b["input_ids"].shape == (3, 12) and b["input_features"].shape == (3, 1, 101, 16)
    assert "fusion rows" in data.towers["model"].details["preprocessing"]
    generic = IOSpec.model_validate({"inputs": [*(i.model_dump() for i in TEXT_SPEC.inputs),
                                                {"name": "extra", "shape": ["batch", 4]}], "outputs": ["y"]})
    with pytest.raises(DataError, match="cannot build calibration inputs"):
        load_calibration(audio_set / "train.jsonl", {"model": generic}, clap_dir)


NAFLEX_SPEC = IOSpec.model_validate({
    "inputs": [{"name": "pixel_values", "modality": "image", "dtype": "float32", "shape": ["batch", 16, 192]},
               {"name": "pixel_attention_mask", "modality": "image", "dtype": "int32", "shape": ["batch", 16],
                "range": [1, 2]},
               {"name": "spatial_shapes", "modality": "image", "dtype": "int64", "shape": ["batch", 2], "range": [4, 5]}],
    "outputs": ["image_embeds"], "dims": {"batch": [1, 32]}})


def test_siglip2_naflex_feeds_match_its_processor_and_calibrate_from_a_manifest(tmp_path):
    """SigLIP2's vision tower takes patches + a patch mask + the grid: built from JSONL images as
    Siglip2ImageProcessor builds them (clip-cpu-best / -int8 on SigLIP2 once stopped: 'cannot build calibration
    inputs for tower vision ... from a JSONL manifest')."""
    from PIL import Image
    from transformers import Siglip2ImageProcessor

    from mmdeploy_kit.data.manifest import load_manifest
    from mmdeploy_kit.data.synth import synthesize_dataset
    from mmdeploy_kit.runtime.preprocess import image_feeds

    data = synthesize_dataset(tmp_path / "d", n_train=8, n_val=4, image_size=32, seed=0)
    proc = tmp_path / "proc"
    Siglip2ImageProcessor(patch_size=8, max_num_patches=16).save_pretrained(proc)
    rows = load_manifest(Path(data) / "val.jsonl")
    got = image_feeds(proc, NAFLEX_SPEC)([r.image for r in rows])
    ref = Siglip2ImageProcessor.from_pretrained(proc)([Image.open(r.image).convert("RGB") for r in rows], return_tensors="np")
    assert {k: v.shape for k, v in got.items()} == {"pixel_values": (4, 16, 192), "pixel_attention_mask": (4, 16),
                                                    "spatial_shapes": (4, 2)}
    assert np.allclose(got["pixel_values"], ref["pixel_values"], atol=1e-5)
    assert (got["pixel_attention_mask"] == ref["pixel_attention_mask"]).all()
    assert (got["spatial_shapes"] == ref["spatial_shapes"]).all()
    cs = load_calibration(Path(data) / "train.jsonl", {"vision": NAFLEX_SPEC}, processor_dir=proc, n_calib=6,
                          n_holdout=2, batch_size=3)
    batch = cs.towers["vision"].calib[0]
    assert set(batch) == {"pixel_values", "pixel_attention_mask", "spatial_shapes"} and batch["spatial_shapes"][0, 0] == 4
