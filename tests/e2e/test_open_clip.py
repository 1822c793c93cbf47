"""open_clip checkpoints (Hub format) load without open_clip, match open_clip's own embeddings, and go through
export / INT8 / prune like an HF CLIP; what cannot be mapped is refused in one line.

The reference embeddings in ``tests/fixtures/open_clip/reference.npz`` were computed by open_clip itself
(``tests/fixtures/make_open_clip_fixture.py``, run where open_clip can be installed)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import mmdeploy_kit as mmdk_api  # noqa: E402
from mmdeploy_kit.errors import CheckpointError, DataError  # noqa: E402

FIXTURE = Path(__file__).parents[1] / "fixtures" / "open_clip"
HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None


@pytest.fixture(autouse=True)
def _own_cache(cache):
    """Conversions and step-cache entries go to this test's tmp dir."""


def _copy(tmp_path: Path, layout: str = "safetensors") -> Path:
    """The fixture checkpoint; ``layout`` "bin": weights as ``open_clip_pytorch_model.bin``; "custom_text": keys as
    open_clip's ``CustomTextCLIP`` writes them (text tower under ``text.``)."""
    from safetensors.torch import load_file, save_file

    d = tmp_path / "oc"
    d.mkdir()
    shutil.copy2(FIXTURE / "open_clip_config.json", d)
    state = load_file(str(FIXTURE / "open_clip_model.safetensors"))
    if layout == "bin":
        torch.save(state, d / "open_clip_pytorch_model.bin")
    elif layout == "custom_text":
        save_file({k if k.startswith("visual.") or k == "logit_scale" else f"text.{k}": v for k, v in state.items()},
                  str(d / "open_clip_model.safetensors"))
    else:
        shutil.copy2(FIXTURE / "open_clip_model.safetensors", d)
    return d


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("layout", ["safetensors", "bin", "custom_text"])
def test_open_clip_matches_open_clips_own_embeddings(tmp_path, layout):
    model = mmdk_api.load(_copy(tmp_path, layout))
    assert "open_clip" not in sys.modules  # mapped onto HF CLIP modules, not built by open_clip
    assert model.tower_names == ["vision", "text"] and model.architecture.startswith("open_clip")
    ref = np.load(FIXTURE / "reference.npz")
    img = model.towers["vision"].module.run_numpy({"pixel_values": ref["pixel_values"]})["image_embeds"]
    ids = ref["input_ids"]
    mask = (np.arange(ids.shape[1])[None] <= ids.argmax(axis=1)[:, None]).astype(np.int64)  # up to the eot
    txt = model.towers["text"].module.run_numpy({"input_ids": ids, "attention_mask": mask})["text_embeds"]
    assert _cosines(img, ref["image_embeds"]).min() >= 0.9999
    assert _cosines(txt, ref["text_embeds"]).min() >= 0.9999
    # preprocessing comes from preprocess_cfg
    proc = json.loads((Path(model.hf_dir) / "preprocessor_config.json").read_text())
    cfg = json.loads((FIXTURE / "open_clip_config.json").read_text())
    assert proc["image_mean"] == cfg["preprocess_cfg"]["mean"] and proc["crop_size"] == {"height": 32, "width": 32}


def test_open_clip_export_quantize_prune_cli(mmdk, tmp_path):
    src = _copy(tmp_path)
    r = mmdk("inspect", src)
    assert r.code == 0, r.err
    onnx_dir = tmp_path / "onnx"
    r = mmdk("export", src, "--target", "onnx", "-o", onnx_dir)
    assert r.code == 0, r.err
    man = json.loads((onnx_dir / "mmdk_manifest.json").read_text())
    assert {a["tower"] for a in man["artifacts"]} == {"vision", "text"}
    assert all(a["verification"]["cosine_min"] >= 0.9999 for a in man["artifacts"])
    r = mmdk("quantize", onnx_dir, "--precision", "int8", "--method", "dynamic", "-o", tmp_path / "q")
    assert r.code == 0, r.err
    assert (tmp_path / "q" / "vision.onnx").is_file() and (tmp_path / "q" / "text.onnx").is_file()
    r = mmdk("prune", src, "--tower", "vision", "--ratio", "0.3", "-o", tmp_path / "pruned")
    assert r.code == 0, r.err
    before, after = ({n: t.parameter_count() for n, t in mmdk_api.load(p).towers.items()} for p in (src, tmp_path / "pruned"))
    assert after["vision"] <= 0.75 * before["vision"] and after["text"] == before["text"]


def test_open_clip_tokenizer_from_beside_or_a_clear_error(tmp_path):
    from mmdeploy_kit.demo_checkpoint import _word_tokenizer
    from mmdeploy_kit.runtime.preprocess import load_tokenizer

    bare = mmdk_api.load(_copy(tmp_path))
    with pytest.raises(DataError, match="open_clip checkpoint .* has no tokenizer files") as exc:
        load_tokenizer(Path(bare.hf_dir))
    assert "--processor" in exc.value.hint
    with_tok = tmp_path / "with_tok"
    shutil.copytree(tmp_path / "oc", with_tok)
    _word_tokenizer(["a photo of a red circle", "a blue square"]).save_pretrained(str(with_tok))
    model = mmdk_api.load(with_tok)
    enc = load_tokenizer(Path(model.hf_dir))(["a photo of a blue circle"], 16)
    assert enc["input_ids"].shape == (1, 16) and enc["input_ids"].max() < 64


@pytest.mark.skipif(HAS_OPEN_CLIP, reason="open_clip is installed: it builds these towers itself")
@pytest.mark.parametrize("change,message", [
    ({"vision_cfg": {"timm_model_name": "convnext_base", "image_size": 32}}, "timm image tower ('convnext_base')"),
    ({"vision_cfg": {"layers": [3, 4, 6, 3], "width": 64, "image_size": 32}}, "ModifiedResNet"),
    ({"text_cfg": {"hf_model_name": "xlm-roberta-base"}}, "Hugging Face text tower ('xlm-roberta-base')"),
    ({"vision_cfg": {"ls_init_value": 1e-5, "image_size": 32}}, "ls_init_value"),
    ({"text_cfg": {"pool_type": "last"}}, "pool_type"),
])
def test_unmappable_open_clip_towers_are_refused_naming_the_extra(mmdk, tmp_path, change, message):
    d = _copy(tmp_path)
    cfg = json.loads((d / "open_clip_config.json").read_text())
    for key, value in change.items():
        cfg["model_cfg"][key] = {**cfg["model_cfg"][key], **value}
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    r = mmdk("inspect", d)
    assert r.code == 2 and r.one_line_error(), r.err
    assert message in r.err and "mmdeploy_kit[open_clip]" in r.err


def test_broken_open_clip_directories_are_one_line_errors(mmdk, tmp_path):
    d = _copy(tmp_path)
    (d / "open_clip_model.safetensors").unlink()
    r = mmdk("inspect", d)
    assert r.code == 2 and r.one_line_error() and "no weights" in r.err
    torch.save({"weights": torch.zeros(2), "code": CheckpointError}, d / "open_clip_pytorch_model.bin")  # a pickled class
    r = mmdk("inspect", d)
    assert r.code == 2 and r.one_line_error() and "pickled code" in r.err
    (d / "open_clip_config.json").write_text("{not json")
    r = mmdk("inspect", d)
    assert r.code == 2 and r.one_line_error() and "not valid JSON" in r.err


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="needs the open_clip extra (its torchvision does not load with the pinned torch)")
def test_timm_towers_are_built_by_open_clip_when_installed(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    cfg = {"embed_dim": 16, "vision_cfg": {"timm_model_name": "test_convnext", "image_size": 32},
           "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    ref = open_clip.CLIP(**cfg).eval()
    d = tmp_path / "timm"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    model = mmdk_api.load(d)
    assert model.format == "open_clip" and model.tower_names == ["vision", "text"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = ref.encode_image(x, normalize=True).numpy()
    got = model.towers["vision"].module.run_numpy({"pixel_values": x.numpy()})["image_embeds"]
    assert _cosines(got, want).min() >= 0.9999
