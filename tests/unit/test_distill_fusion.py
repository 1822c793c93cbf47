"""The fusion-classifier demo (tiny run) and logits + label distillation of a factory-built classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mmdeploy_kit as mmdk  # noqa: E402
from mmdeploy_kit.demo_fusion import train_fusion_demo  # noqa: E402


@pytest.fixture(scope="module")
def fusion_pair(tmp_path_factory, small_data):
    root = tmp_path_factory.mktemp("fusion")
    teacher = train_fusion_demo(out=root / "teacher", data_dir=small_data, steps=20, quiet=True)
    student = train_fusion_demo(out=root / "student", data_dir=small_data, steps=1, seed=1, quiet=True)
    return teacher, student


def _logits(model_dir, manifest):
    from mmdeploy_kit.runtime.accuracy import _Inputs
    from mmdeploy_kit.data.manifest import load_manifest

    model = mmdk.load(model_dir)
    tower = model.towers["model"]
    inp = _Inputs(load_manifest(manifest), model_dir if (model_dir / "tokenizer.json").is_file() else model_dir / "model", ())
    feeds = inp.row_feeds(tower.spec, list(range(len(inp.samples))))
    return tower.module.run_numpy(feeds)["logits"]


def _kl(t, s):
    t = torch.from_numpy(t).log_softmax(-1)
    s = torch.from_numpy(s).log_softmax(-1)
    return float((t.exp() * (t - s)).sum(-1).mean())


def test_fusion_demo_is_cached_and_loads_without_options(fusion_pair):
    teacher, _ = fusion_pair
    model = mmdk.load(teacher.path)
    assert model.tower_names == ["model"] and model.towers["model"].spec.output_names == ["logits"]
    assert model.towers["model"].spec.input_names == ["input_ids", "attention_mask", "pixel_values"]
    info = json.loads((teacher.path / "mmdk_demo.json").read_text())
    assert [e["step"] for e in info["metrics"]["eval"]][-1] == 20 and 0 <= teacher.metrics["accuracy"] <= 100
    rows = [json.loads(ln) for ln in open(info["train_manifest"])]
    assert not any(w in r["text"].split() for r in rows for w in ("circle", "square", "triangle", "cross"))
    again = train_fusion_demo(out=teacher.path, data_dir=teacher.data_dir, steps=20, quiet=True)
    assert again.reused


def test_logits_and_label_distillation_of_the_fusion_classifier(fusion_pair, tmp_path, cache):
    teacher, student = fusion_pair
    info = json.loads((teacher.path / "mmdk_demo.json").read_text())
    train = info["train_manifest"]
    m = mmdk.distill(student.path, tmp_path / "default", teacher=teacher.path, data=train, val=info["val_manifest"],
                     steps=2, batch=16, quiet=True)
    assert m.metrics["losses"] == {"logits": 1.0, "label": 1.0}  # the classifier default
    assert all("accuracy" in e for e in m.metrics["eval"])
    assert [a.kind for a in m.artifacts] == ["torch"] and (tmp_path / "default/model/fusion_model.py").is_file()
    mmdk.distill(student.path, tmp_path / "out", teacher=teacher.path, data=train, loss="logits=1", steps=24,
                 batch=16, lr=3e-3, warmup_steps=0, quiet=True)
    t = _logits(teacher.path, train)
    before, after = _kl(t, _logits(student.path, train)), _kl(t, _logits(tmp_path / "out", train))
    assert after < before * 0.8, (before, after)
    assert np.isfinite(after)
