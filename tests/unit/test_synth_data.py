"""Synthetic dataset generation and JSONL manifest reading (torch-free)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mmdeploy_kit.data.manifest import (Sample, class_names, label_indices, load_images, load_manifest,
                                        tokenize)
from mmdeploy_kit.data.synth import class_labels, synthesize_dataset
from mmdeploy_kit.errors import DataError, MmdkError, UserInputError


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return synthesize_dataset(tmp_path_factory.mktemp("d") / "shapes", n_train=30, n_val=12, image_size=32, seed=3)


def test_synth_is_deterministic(tmp_path, tiny_data):
    again = synthesize_dataset(tmp_path / "again", n_train=30, n_val=12, image_size=32, seed=3)
    assert _digest(again) == _digest(tiny_data)
    other = synthesize_dataset(tmp_path / "other", n_train=30, n_val=12, image_size=32, seed=4)
    assert _digest(other)["train.jsonl"] != _digest(tiny_data)["train.jsonl"]


def test_synth_layout_and_fields(tiny_data):
    from PIL import Image

    classes = json.loads((tiny_data / "classes.json").read_text())
    assert classes == class_labels() and len(classes) == 24 and classes[0] == "red circle"
    assert (tiny_data / "README.md").read_text().startswith("# ")
    rows = [json.loads(line) for line in (tiny_data / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 30
    for row in rows:
        assert set(row) == {"image", "text", "label"}
        assert row["image"].startswith("images/") and row["image"].endswith(".png")
        assert row["label"] in classes
        color, shape = row["label"].split()
        assert color in row["text"] and shape in row["text"]
        with Image.open(tiny_data / row["image"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    val = load_manifest(tiny_data / "val.jsonl")
    assert len(val) == 12 and not {s.image for s in val} & {tiny_data / r["image"] for r in rows}
    assert len(list((tiny_data / "images").glob("*.png"))) == 42
    # balanced: 30 rows over 24 classes -> every class at least once
    assert {r["label"] for r in rows} == set(classes)


def test_synth_refuses_non_empty_output(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserInputError, match="not empty"):
        synthesize_dataset(out, n_train=2, n_val=2, image_size=16)
    assert (out / "keep.txt").exists()
    synthesize_dataset(out, n_train=2, n_val=2, image_size=16, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "train.jsonl").exists()
    with pytest.raises(UserInputError):
        synthesize_dataset(tmp_path / "bad", n_train=0)


def test_load_manifest_resolves_paths_and_extra(tiny_data, tmp_path):
    samples = load_manifest(tiny_data / "train.jsonl")
    s = samples[0]
    assert isinstance(s, Sample) and s.image.is_absolute() and s.image.is_file()
    assert s.text and s.label and s.audio is None and s.line == 1
    m = tmp_path / "m.jsonl"
    m.write_text('{"text": "hello", "label": "a", "score": 3}\n\n{"text": "bye", "label": "b"}\n')
    rows = load_manifest(m)
    assert [r.text for r in rows] == ["hello", "bye"] and rows[0].extra == {"score": 3} and rows[0].image is None


def test_class_names_order(tiny_data, tmp_path):
    samples = load_manifest(tiny_data / "val.jsonl")
    assert class_names(samples) == class_labels()  # classes.json order, not sorted
    m = tmp_path / "m.jsonl"
    m.write_text('{"text": "x", "label": "zebra"}\n{"text": "y", "label": "ant"}\n{"text": "z", "label": "ant"}\n')
    rows = load_manifest(m)
    assert class_names(rows) == ["ant", "zebra"]
    assert label_indices(rows, ["ant", "zebra"]).tolist() == [1, 0, 0]
    (tmp_path / "classes.json").write_text('["zebra"]')
    with pytest.raises(DataError, match="not listed"):
        class_names(rows)


def test_load_manifest_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist") as exc:
        load_manifest(tmp_path / "nope.jsonl")
    assert exc.value.hint and "\n" not in str(exc.value)


def test_load_manifest_bad_json_names_line(tmp_path):
    m = tmp_path / "bad.jsonl"
    m.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 is not valid JSON") as exc:
        load_manifest(m)
    assert exc.value.hint and "\n" not in str(exc.value)
    m.write_text('["a list"]\n')
    with pytest.raises(DataError, match="expected an object"):
        load_manifest(m)


def test_load_manifest_row_without_inputs(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"text": "ok"}\n{"label": "cat"}\n')
    with pytest.raises(DataError, match=r"m.jsonl:2 has none of 'image', 'text', 'audio'"):
        load_manifest(m)


def test_load_manifest_missing_images(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    m = tmp_path / "m.jsonl"
    m.write_text('{"image": "a.png"}\n{"image": "gone1.png"}\n{"image": "sub/gone2.png", "text": "t"}\n')
    with pytest.raises(DataError, match=r"2 file\(s\) referenced by .* do not exist, first: .*gone1.png") as exc:
        load_manifest(m)
    assert isinstance(exc.value, MmdkError) and exc.value.hint
    assert len(load_manifest(m, check_files=False)) == 3


def test_load_images_without_processor(tiny_data):
    samples = load_manifest(tiny_data / "val.jsonl")[:4]
    x = load_images([s.image for s in samples])
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32
    y = load_images([s.image for s in samples], size=48, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert y.shape == (4, 3, 48, 48) and -1.01 <= y.min() and y.max() <= 1.01


class _FakeTokenizer:
    model_max_length = 8

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        ids = [[1] + [len(w) + 3 for w in t.split()][: max_length - 2] + [2] for t in texts]
        width = max_length if padding == "max_length" else max(map(len, ids))
        return {"input_ids": np.array([r + [0] * (width - len(r)) for r in ids], dtype=np.int32),
                "attention_mask": np.array([[1] * len(r) + [0] * (width - len(r)) for r in ids], dtype=np.int32)}


def test_tokenize_pads_to_fixed_length():
    enc = tokenize(["a b", "a b c d"], _FakeTokenizer(), max_length=8)
    assert set(enc) == {"input_ids", "attention_mask"}
    assert enc["input_ids"].shape == (2, 8) and enc["input_ids"].dtype == np.int64
    assert enc["attention_mask"].sum(axis=1).tolist() == [4, 6]
    short = tokenize(["a b", "a b c d"], _FakeTokenizer(), max_length=8, pad_to_max=False)
    assert short["input_ids"].shape == (2, 6)
