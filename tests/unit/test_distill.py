"""The distill pass through ``mmdeploy_kit.distill`` on tiny CLIPs (a few steps each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mmdeploy_kit as mmdk  # noqa: E402
from mmdeploy_kit.errors import CheckpointError, DataError, UserInputError  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(cache):
    """Every test gets an empty step cache, so a run is never served from another test's output."""
    return cache


def _image_embeds(model_dir: Path, data: Path) -> np.ndarray:
    from mmdeploy_kit.runtime.preprocess import load_image_reader
    from mmdeploy_kit.data.manifest import load_manifest

    model = mmdk.load(model_dir)
    tower = model.towers["vision"]
    rows = load_manifest(data / "val.jsonl")
    hf = model.hf_dir or Path(model.details["manifest"].source["hf_dir"])
    x = load_image_reader(hf, tower.spec, "pixel_values")([r.image for r in rows])
    return tower.module.run_numpy({"pixel_values": x})["image_embeds"]


def _distill(pair, out, **kw):
    kw.setdefault("steps", 4)
    kw.setdefault("batch", 8)
    kw.setdefault("lr", 1e-3)
    return mmdk.distill(pair.student, out, teacher=pair.teacher, data=pair.data / "train.jsonl", quiet=True, **kw)


def test_feature_distillation_pulls_student_embeddings_towards_the_teacher(clip_teacher_student, tmp_path):
    pair = clip_teacher_student
    m = _distill(pair, tmp_path / "out", steps=30, loss="feature=1", val=pair.data / "val.jsonl", warmup_steps=0)
    teacher = _image_embeds(pair.teacher, pair.data)
    before = (_image_embeds(pair.student, pair.data) * teacher).sum(1).mean()
    after = (_image_embeds(tmp_path / "out", pair.data) * teacher).sum(1).mean()
    assert after > before + 0.05, (before, after)
    # the manifest records teacher, losses and weights, steps, world size, wall time, eval figures per epoch
    assert m.pass_name == "distill" and m.source["teacher"] == str(pair.teacher)
    assert m.metrics["losses"] == {"feature": 1.0} and m.metrics["steps"] == 30 and m.metrics["world_size"] == 1
    assert m.metrics["wall_seconds"] > 0
    spe = m.metrics["steps_per_epoch"]
    assert [e["step"] for e in m.metrics["eval"]] == [*range(spe, 31, spe), *([30] if 30 % spe else [])]
    assert all("zero_shot_top1" in e for e in m.metrics["eval"])
    assert m.metrics["best"]["step"] in [e["step"] for e in m.metrics["eval"]]
    # an unpruned HF student is written as a save_pretrained directory with its tokenizer
    assert (tmp_path / "out" / "model" / "config.json").is_file()
    assert (tmp_path / "out" / "model" / "tokenizer.json").is_file()
    assert not (tmp_path / "out.ckpt").exists()


def test_default_losses_for_a_dual_encoder_and_a_frozen_partner_tower(clip_teacher_student, tmp_path):
    pair = clip_teacher_student
    m = _distill(pair, tmp_path / "out", towers=["vision"])
    assert m.metrics["losses"] == {"feature": 1.0, "affinity": 1.0, "contrastive": 0.5}
    assert m.metrics["towers"] == ["vision"]
    from safetensors.torch import load_file

    before, after = load_file(pair.student / "model.safetensors"), load_file(tmp_path / "out/model/model.safetensors")
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert "vision_model" in changed and "text_model" not in changed  # the text tower stays as it was


def test_killed_run_resumes_to_the_same_weights(clip_teacher_student, tmp_path):
    pair = clip_teacher_student
    from safetensors.torch import load_file

    _distill(pair, tmp_path / "full", steps=6, checkpoint_every=2)  # the runs below use force=True: no cache hit

    def crash(step):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _distill(pair, tmp_path / "run", steps=6, checkpoint_every=2, on_checkpoint=crash, force=True)
    assert not (tmp_path / "run").exists()  # nothing half-written
    assert (tmp_path / "run.ckpt" / "LATEST").read_text() == "step-0000004"
    with pytest.raises(UserInputError, match="--resume"):
        _distill(pair, tmp_path / "run", steps=6, checkpoint_every=2, force=True)
    m = _distill(pair, tmp_path / "run", steps=6, checkpoint_every=2, resume=True, force=True)
    assert m.metrics["resumed_from_step"] == 4 and m.metrics["steps"] == 6
    a, b = load_file(tmp_path / "full/model/model.safetensors"), load_file(tmp_path / "run/model/model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_corrupt_resume_checkpoint_is_a_one_line_error(clip_teacher_student, tmp_path):
    pair = clip_teacher_student

    def crash(step):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _distill(pair, tmp_path / "run", steps=4, checkpoint_every=2, on_checkpoint=crash)
    weights = tmp_path / "run.ckpt" / "step-0000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt") as info:
        _distill(pair, tmp_path / "run", steps=4, checkpoint_every=2, resume=True)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_label_loss_without_labels_is_a_data_error(clip_teacher_student, late_fusion_factory, tmp_path):
    pair = clip_teacher_student
    rows = [json.loads(ln) for ln in (pair.data / "train.jsonl").read_text().splitlines()]
    unlabeled = tmp_path / "train.jsonl"
    for r in rows:
        r["image"] = str(pair.data / r["image"])
    unlabeled.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "label"}) + "\n" for r in rows))
    src, io = late_fusion_factory
    with pytest.raises(DataError, match="label loss needs a 'label'"):
        mmdk.distill(src, tmp_path / "out", teacher=src, data=unlabeled, loss="logits=1,label=1", steps=2, batch=4,
                     processor=str(pair.teacher), load_options={"io": io}, teacher_load_options={"io": io}, quiet=True)
    assert not (tmp_path / "out").exists()


def test_student_whose_towers_do_not_match_the_teacher(clip_teacher_student, tmp_path, tiny_vit_dir):
    from conftest import build_captioned_clip

    pair = clip_teacher_student
    narrow = build_captioned_clip(tmp_path / "narrow", pair.data, 1, 16, 2, projection_dim=8)
    with pytest.raises(UserInputError, match="embeds into 8 dims, the teacher into 16"):
        _distill(pair.__class__(student=narrow, teacher=pair.teacher, data=pair.data), tmp_path / "out")
    m = _distill(pair.__class__(student=narrow, teacher=pair.teacher, data=pair.data), tmp_path / "out2", loss="feature=1")
    assert sorted(m.metrics["projections"]) == ["text__text_embeds", "vision__image_embeds"]
    with pytest.raises(UserInputError, match="the teacher has no tower 'text'"):
        mmdk.distill(pair.student, tmp_path / "out3", teacher=tiny_vit_dir, data=pair.data / "train.jsonl",
                     towers=["text"], steps=2, quiet=True)
    with pytest.raises(UserInputError, match="unknown loss 'kd'"):
        _distill(pair, tmp_path / "out4", loss="kd=1")
    assert not any((tmp_path / n).exists() for n in ("out", "out3", "out4"))
