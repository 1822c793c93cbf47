"""Shared fixtures: tiny HF checkpoints built from configs (nothing downloads) and an in-process CLI runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """Tests never read or fill the user's cache (``~/.cache/mmdeploy_kit``): one temp cache per session
    (the pipeline's step cache lives there too; ``empty_cache`` gives a test its own)."""
    old = os.environ.get("MMDK_CACHE_DIR")
    os.environ["MMDK_CACHE_DIR"] = str(tmp_path_factory.mktemp("mmdk_cache"))
    yield
    if old is None:
        os.environ.pop("MMDK_CACHE_DIR", None)
    else:
        os.environ["MMDK_CACHE_DIR"] = old


# The model-loading tests `make test-tf5` runs again under transformers 5 (`pytest -m hf`); a test elsewhere
# joins them with @pytest.mark.hf.
HF_MODEL_TEST_FILES = {"test_loaders.py", "test_prune_engine.py", "test_prune_pass.py", "test_prune_config.py",
                       "test_prune_cli.py", "test_export_cli.py", "test_quant_cli.py", "test_open_clip.py",
                       "test_demo_train.py", "test_distill.py", "test_distill_cli.py", "test_quant_towers.py",
                       "test_zoo.py", "test_zoo_recipes.py", "test_hf_towers.py", "test_media_feeds.py"}


def pytest_collection_modifyitems(config, items):
    import importlib.util

    for item in items:
        if item.path.name in HF_MODEL_TEST_FILES:
            item.add_marker(pytest.mark.hf)

    no_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU (none on this machine)")
    no_trt = pytest.mark.skip(reason="needs the tensorrt package and a GPU (absent here)")
    gpu = _has_cuda() if any("gpu" in i.keywords or "tensorrt" in i.keywords for i in items) else False
    trt = gpu and importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(no_gpu)
        if "tensorrt" in item.keywords and not trt:
            item.add_marker(no_trt)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """The ``error: ...`` lines on stderr (progress lines excluded)."""
        return [ln for ln in self.err.splitlines() if ln.startswith("error:")]

    def one_line_error(self) -> bool:
        return len(self.error_lines) == 1 and "Traceback" not in self.err


@pytest.fixture
def mmdk(capsys):
    """Run ``mmdk ARGS...`` in-process; returns exit code, stdout, stderr."""

    def run(*args) -> CliResult:
        from mmdeploy_kit.cli import main

        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def _save(model, path: Path) -> Path:
    model.save_pretrained(str(path), safe_serialization=True)
    return path


TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=32)
VISION = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
              num_attention_heads=4)


def build_tiny_clip(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    return _save(CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)).eval(), path)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="needs torch (the ONNX-in paths are tested without it)")
    return build_tiny_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(0)
    cfg = SiglipConfig(text_config={**TEXT, "projection_size": 32}, vision_config=VISION)
    return _save(SiglipModel(cfg).eval(), tmp_path_factory.mktemp("hf") / "tiny-siglip")


@pytest.fixture(scope="session")
def tiny_vtde_dir(tmp_path_factory) -> Path:
    """VisionTextDualEncoderModel = ViT + BERT."""
    import torch
    from transformers import (BertConfig, ViTConfig, VisionTextDualEncoderConfig,
                              VisionTextDualEncoderModel)

    torch.manual_seed(0)
    cfg = VisionTextDualEncoderConfig.from_vision_text_configs(
        ViTConfig(**VISION), BertConfig(**{**TEXT, "max_position_embeddings": 64}), projection_dim=16)
    return _save(VisionTextDualEncoderModel(cfg).eval(), tmp_path_factory.mktemp("hf") / "tiny-vtde")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return _save(BertModel(BertConfig(**{**TEXT, "max_position_embeddings": 64})).eval(),
                 tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    return _save(ViTModel(ViTConfig(**VISION)).eval(), tmp_path_factory.mktemp("hf") / "tiny-vit")


@pytest.fixture
def late_fusion_factory() -> tuple[str, Path]:
    """(MODEL string, I/O spec path) of the BERT-like text + CNN image late-fusion classifier."""
    return f"{FIXTURES / 'fusion_models.py'}:late_fusion", FIXTURES / "late_fusion.yaml"


@pytest.fixture
def late_fusion_example(late_fusion_factory) -> SimpleNamespace:
    """The late-fusion model loaded, with example inputs at batch 2, seq 6: ``.model``, ``.io`` (spec path),
    ``.spec``, ``.feeds`` (numpy, by name) and ``.args`` (the same as torch tensors, in spec order)."""
    import torch

    import mmdeploy_kit as mmdk

    src, io = late_fusion_factory
    model = mmdk.load(src, io=io)
    spec = model.towers["model"].spec
    feeds = spec.dummy_inputs({"batch": 2, "seq": 6})
    return SimpleNamespace(model=model, io=io, spec=spec, feeds=feeds,
                           args=tuple(torch.from_numpy(feeds[n]) for n in spec.input_names))


@pytest.fixture
def tri_modal_factory() -> tuple[str, Path]:
    """(MODEL string, I/O spec path) of the text + image + audio attention-fusion classifier."""
    return f"{FIXTURES / 'fusion_models.py'}:tri_modal", FIXTURES / "tri_modal.yaml"


# ---- demo training ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A tiny synthetic shapes dataset (48 train / 24 val, 32 px) for fast demo-training runs."""
    from mmdeploy_kit.data.synth import synthesize_dataset

    return synthesize_dataset(tmp_path_factory.mktemp("data") / "shapes", n_train=48, n_val=24, image_size=32, seed=1)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty mmdk cache (``$MMDK_CACHE_DIR``) for this test only."""
    monkeypatch.setenv("MMDK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---- distillation ----------------------------------------------------------------------------------------
def build_captioned_clip(path: Path, data_dir: Path, layers: int, width: int, seed: int, projection_dim: int = 16) -> Path:
    """A tiny CLIPModel with the demo's word tokenizer (over ``data_dir``'s captions) and a 32 px image processor."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from mmdeploy_kit.data.manifest import load_manifest
    from mmdeploy_kit.demo_checkpoint import DEFAULT_TEMPLATES, _image_processor, _word_tokenizer

    samples = load_manifest(data_dir / "train.jsonl") + load_manifest(data_dir / "val.jsonl")
    labels = sorted({s.label for s in samples if s.label})
    tok = _word_tokenizer([s.text for s in samples if s.text] + [t.format(label=c) for t in DEFAULT_TEMPLATES for c in labels])
    torch.manual_seed(seed)
    text = dict(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                num_attention_heads=2, max_position_embeddings=32, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    vision = dict(image_size=32, patch_size=8, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                  num_attention_heads=2)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)).eval()
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    _image_processor(32).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def clip_teacher_student(tmp_path_factory, small_data) -> SimpleNamespace:
    """``.teacher`` (2 layers, width 32) and ``.student`` (1 layer, width 16): tiny CLIPs with tokenizers, plus
    ``.data`` (the small synthetic dataset they were built for)."""
    root = tmp_path_factory.mktemp("distill")
    return SimpleNamespace(teacher=build_captioned_clip(root / "teacher", small_data, 2, 32, 0),
                           student=build_captioned_clip(root / "student", small_data, 1, 16, 1), data=small_data)
