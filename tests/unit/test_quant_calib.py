"""Calibration data: JSONL (own tokenizer / processor, fixed text length), .npz, .npy folders, mismatches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmdeploy_kit.data.calib import calibration_reader, load_calibration
from mmdeploy_kit.errors import DataError
from mmdeploy_kit.model.iospec import IOSpec

VISION = IOSpec.model_validate({"inputs": [{"name": "pixel_values", "modality": "image", "shape": ["batch", 3, 16, 16]}],
                                "outputs": ["image_embeds"]})
TEXT = IOSpec.model_validate({"inputs": [
    {"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"], "range": [0, 50]},
    {"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"], "range": [1, 2]}],
    "outputs": ["text_embeds"], "dims": {"batch": [1, 32], "seq": [1, 32]}})
WORDS = ["a", "red", "blue", "green", "circle", "square", "big", "small", "photo", "of"]


def make_processor_dir(path):
    """Word-level tokenizer + CLIP image processor saved like a checkpoint's own files."""
    pytest.importorskip("transformers", reason="the processor files are written with transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(str(path))
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(str(path))
    return path


def make_manifest(path, n=12, with_text=True, with_image=True):
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        row = {"label": WORDS[1 + i % 3]}
        if with_image:
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path / f"{i}.png")
            row["image"] = f"{i}.png"
        if with_text:
            row["text"] = " ".join(WORDS[: 2 + i % 7])
        rows.append(json.dumps(row))
    (path / "m.jsonl").write_text("\n".join(rows) + "\n")
    return path / "m.jsonl"


def test_jsonl_uses_own_processor_and_pads_text_to_one_length(tmp_path):
    proc = make_processor_dir(tmp_path / "proc")
    manifest = make_manifest(tmp_path / "data", n=12)
    cs = load_calibration(manifest, {"vision": VISION, "text": TEXT}, proc, n_calib=8, n_holdout=4, batch_size=4)
    v, t = cs.towers["vision"], cs.towers["text"]
    assert v.n_calib == 8 and v.n_holdout == 4
    assert all(b["pixel_values"].shape == (4, 3, 16, 16) for b in v.calib)
    lengths = {b["input_ids"].shape for b in t.calib + t.holdout}
    assert len({s[1] for s in lengths}) == 1 and t.details["seq_len"] == 8  # longest caption: 8 words
    assert t.calib[0]["input_ids"].dtype == np.int64 and "tokenizer" in t.details["preprocessing"]
    assert len(cs.holdout_samples) == 4


def test_jsonl_without_needed_field_is_a_data_error(tmp_path):
    proc = make_processor_dir(tmp_path / "proc")
    manifest = make_manifest(tmp_path / "data", n=6, with_text=False)
    with pytest.raises(DataError, match="needs 'text' fields, the manifest has only image"):
        load_calibration(manifest, {"text": TEXT}, proc)


def test_npz_by_input_name_or_tower_prefix(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", **{"vision/pixel_values": rng.standard_normal((10, 3, 16, 16)),
                                    "input_ids": rng.integers(0, 50, (10, 7)), "attention_mask": np.ones((10, 7), int)})
    cs = load_calibration(tmp_path / "c.npz", {"vision": VISION, "text": TEXT}, n_calib=6, n_holdout=2, batch_size=4)
    v = cs.towers["vision"]
    assert v.calib[0]["pixel_values"].dtype == np.float32  # float64 arrays conform to the input dtype
    assert v.n_calib == 4 and v.n_holdout == 2 and len(v.calib) == 1  # equal-shape batches only


def test_npy_folder(tmp_path):
    (tmp_path / "d" / "text").mkdir(parents=True)
    np.save(tmp_path / "d" / "text" / "input_ids.npy", np.ones((5, 4), np.int64))
    np.save(tmp_path / "d" / "attention_mask.npy", np.ones((5, 4), np.int64))
    cs = load_calibration(tmp_path / "d", {"text": TEXT}, n_calib=3, n_holdout=2, batch_size=8)
    assert cs.towers["text"].n_calib == 3 and cs.towers["text"].n_holdout == 2


@pytest.mark.parametrize("arrays,match", [
    ({"pixel": np.zeros((4, 3, 16, 16), np.float32)}, "no array for input"),
    ({"pixel_values": np.zeros((4, 3, 8, 8), np.float32)}, "size 8 on axis 2"),
    ({"pixel_values": np.zeros((4, 16, 16), np.float32)}, r"has shape \[4, 16, 16\].*first axis = samples"),
    ({"pixel_values": np.full((4, 3, 16, 16), np.nan, np.float32)}, "NaN"),
    ({"pixel_values": np.zeros((1, 3, 16, 16), np.float32)}, "at least 2"),
])
def test_npz_mismatches(tmp_path, arrays, match):
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_calibration(tmp_path / "c.npz", {"vision": VISION})


def test_float_token_ids_and_missing_paths_are_rejected(tmp_path):
    np.savez(tmp_path / "c.npz", input_ids=np.zeros((4, 3)), attention_mask=np.ones((4, 3), int))
    with pytest.raises(DataError, match="integers"):
        load_calibration(tmp_path / "c.npz", {"text": TEXT})
    with pytest.raises(DataError, match="does not exist"):
        load_calibration(tmp_path / "nope.npz", {"text": TEXT})


def test_reader_supports_strided_ranges():
    pytest.importorskip("onnxruntime")
    batches = [{"x": np.full((2, 2), i, np.float32)} for i in range(4)]
    r = calibration_reader(batches)
    assert len(r) == 4
    r.set_range(2, 4)
    assert [b["x"][0, 0] for b in iter(r.get_next, None)] == [2.0, 3.0]
