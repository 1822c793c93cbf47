"""`export --target cpu` times its candidates on the shapes the data has when no --seq is given (a tiny text
tower's fastest runtime differed between the I/O spec's opt seq 32 and the data's seq 12: the demo's text tower)."""

from __future__ import annotations

import numpy as np

from mmdeploy_kit.model.iospec import IOSpec
from mmdeploy_kit.passes.export.cpu_choice import _data_sizes

TEXT = IOSpec.model_validate({"inputs": [{"name": "input_ids", "modality": "text", "dtype": "int64",
                                          "shape": ["batch", "seq"]},
                                         {"name": "attention_mask", "modality": "text", "dtype": "int64",
                                          "shape": ["batch", "seq"]}],
                              "outputs": ["text_embeds"], "dims": {"batch": {"min": 1, "max": 64},
                                                                    "seq": {"min": 4, "opt": 32, "max": 77}}})


def test_the_data_sets_the_timed_seq_not_the_spec_opt():
    held_out = {"input_ids": np.zeros((8, 12), np.int64), "attention_mask": np.ones((8, 12), np.int64)}
    assert _data_sizes(TEXT, held_out) == {"seq": 12}        # the batch stays the configured one


def test_data_sizes_stay_inside_the_spec_and_ignore_what_does_not_match():
    assert _data_sizes(TEXT, {"input_ids": np.zeros((2, 200), np.int64)}) == {"seq": 77}
    assert _data_sizes(TEXT, {"input_ids": np.zeros((2, 2), np.int64)}) == {"seq": 4}
    assert _data_sizes(TEXT, {"other": np.zeros((2, 9))}) == {}
    assert _data_sizes(TEXT, {"input_ids": np.zeros((9,), np.int64)}) == {}   # rank differs: not the spec's input
