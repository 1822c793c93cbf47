"""``nproc=2`` (torchrun, gloo, 2 CPU ranks) gives the weights one process gives on the same global batch."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import mmdeploy_kit as mmdk  # noqa: E402


@pytest.mark.slow  # two torchrun ranks each import torch + transformers: ~25 s on 2 busy cores
def test_two_ranks_match_one_process(clip_teacher_student, tmp_path, cache):
    from safetensors.torch import load_file

    pair = clip_teacher_student
    outs = {}
    for n in (1, 2):
        m = mmdk.distill(pair.student, tmp_path / f"n{n}", teacher=pair.teacher, data=pair.data / "train.jsonl",
                         steps=3, batch=8, lr=1e-3, nproc=n, quiet=True)  # default losses: feature+affinity+contrastive
        assert m.metrics["world_size"] == n and m.metrics["batch"] == 8
        outs[n] = load_file(tmp_path / f"n{n}" / "model" / "model.safetensors")
    start = load_file(pair.student / "model.safetensors")
    moved = max(float((outs[1][k] - start[k]).abs().max()) for k in start)
    gap = max(float((outs[1][k] - outs[2][k]).abs().max()) for k in start)
    assert moved > 1e-3  # training changed the weights...
    assert gap < 1e-5  # ...and the two runs agree to float rounding
