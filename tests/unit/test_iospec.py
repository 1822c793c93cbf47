from __future__ import annotations

import numpy as np
import pytest

from mmdeploy_kit.errors import SpecError
from mmdeploy_kit.model.iospec import IOSpec, SpecFile

ISSUE_SPEC = """
inputs:
  - {name: input_ids, modality: text, dtype: int64, shape: [batch, seq], range: [0, 1000]}
  - {name: attention_mask, modality: text, dtype: int64, shape: [batch, seq], range: [1, 2]}
  - {name: pixel_values, modality: image, dtype: float32, shape: [batch, 3, 64, 64]}
  - {name: audio_features, modality: audio, dtype: float32, shape: [batch, frames, 40]}
outputs: [{name: logits}]
dims: {batch: [1, 8], seq: [4, 32], frames: [10, 100]}
"""


def _spec(tmp_path, text: str) -> SpecFile:
    p = tmp_path / "io.yaml"
    p.write_text(text)
    return SpecFile.from_yaml(p)


def test_issue_format_parses_and_generates_inputs(tmp_path):
    spec = _spec(tmp_path, ISSUE_SPEC).towers["model"]
    assert spec.input_names == ["input_ids", "attention_mask", "pixel_values", "audio_features"]
    assert spec.modalities == ["audio", "image", "text"]
    assert spec.dims == {"batch": (1, 8), "seq": (4, 32), "frames": (10, 100)}
    feeds = spec.dummy_inputs({"batch": 3, "seq": 7, "frames": 12}, seed=1)
    assert feeds["input_ids"].shape == (3, 7) and feeds["input_ids"].dtype == np.int64
    assert feeds["input_ids"].min() >= 0 and feeds["input_ids"].max() < 1000
    assert (feeds["attention_mask"] == 1).all()  # range is half-open: [1, 2) -> ones
    assert feeds["pixel_values"].shape == (3, 3, 64, 64) and feeds["pixel_values"].dtype == np.float32
    assert feeds["audio_features"].shape == (3, 12, 40)
    again = spec.dummy_inputs({"batch": 3, "seq": 7, "frames": 12}, seed=1)
    assert all((feeds[k] == again[k]).all() for k in feeds)
    assert spec.dynamic_axes()["audio_features"] == {0: "batch", 1: "frames"}


def test_verification_sizes_cover_two_batches_and_two_lengths(tmp_path):
    spec = _spec(tmp_path, ISSUE_SPEC).towers["model"]
    grid = spec.verification_sizes(max_batch=4)
    assert len({g["batch"] for g in grid}) >= 2
    assert len({g["seq"] for g in grid}) >= 2
    assert len({g["frames"] for g in grid}) >= 2


def test_multi_tower_spec_shares_dims(tmp_path):
    sf = _spec(tmp_path, """
towers:
  vision: {module: image_encoder, inputs: [{name: pixel_values, modality: image, shape: [batch, 3, 8, 8]}],
           outputs: [image_embeds]}
  text: {module: text_encoder, inputs: [{name: input_ids, modality: text, dtype: int64, shape: [batch, seq],
         range: [0, 5]}], outputs: [text_embeds]}
dims: {batch: [1, 4], seq: [2, 9]}
""")
    assert set(sf.towers) == {"vision", "text"}
    assert sf.towers["text"].dims["seq"] == (2, 9)
    assert sf.towers["vision"].module == "image_encoder"


@pytest.mark.parametrize("bad, needle", [
    ("inputs: [{name: x, modality: smell, shape: [batch]}]\noutputs: [y]", "modality"),
    ("inputs: [{name: x, dtype: complex128, shape: [batch]}]\noutputs: [y]", "dtype"),
    ("inputs: [{name: x, shape: [batch], colour: red}]\noutputs: [y]", "colour"),
    ("inputs: [{name: x, shape: [batch]}]\noutputs: [x]", "duplicate"),
    ("inputs: [{name: x, shape: [0]}]\noutputs: [y]", "positive"),
    ("inputs: [{name: x, shape: [batch]}]\noutputs: [y]\ndims: {batch: [4, 2]}", "min <= max"),
    ("towers: {}\n", "empty"),
    ("- just a list", "mapping"),
])
def test_bad_specs_are_one_line_errors(tmp_path, bad, needle):
    with pytest.raises(SpecError) as info:
        _spec(tmp_path, bad)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_sizes_outside_dims_are_rejected():
    spec = IOSpec.model_validate({"inputs": [{"name": "x", "shape": ["batch", 4]}], "outputs": ["y"],
                                  "dims": {"batch": [1, 8]}})
    with pytest.raises(SpecError, match=r"batch=9 is outside"):
        spec.resolve({"batch": 9})
    assert spec.resolve({"batch": 8}) == {"x": (8, 4)}


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        SpecFile.from_yaml(tmp_path / "nope.yaml")
