"""``mmdk prune`` end to end on a tiny CLIP: prune -> verified ONNX export -> INT8; bad input -> one-line errors,
non-zero exit, nothing written."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_pruning")


@pytest.fixture(autouse=True)
def _own_cache(cache):
    """Step-cache entries go to this test's tmp dir, not ~/.cache."""


def test_prune_then_export_and_quantize(mmdk, tiny_clip_dir, tmp_path):
    out = tmp_path / "pruned"
    r = mmdk("prune", tiny_clip_dir, "--tower", "vision", "--ratio", "0.4", "--tower", "text", "--ratio", "0.3",
             "--round-to", "2", "-o", out)
    assert r.code == 0, r.err
    assert "vision: 20,938 ->" in r.out and "text:" in r.out
    man = json.loads((out / "mmdk_manifest.json").read_text())
    figs = {a["tower"]: a["details"] for a in man["artifacts"]}
    assert figs["vision"]["removed_fraction"] >= 0.4 and figs["text"]["removed_fraction"] >= 0.3
    assert man["config"]["ratio"] == [["vision", 0.4], ["text", 0.3]] and man["config"]["round_to"] == 2
    assert (out / "model" / "mmdk_arch.json").is_file() and (out / "model" / "config.json").is_file()

    onnx = tmp_path / "onnx"
    r = mmdk("export", out, "--target", "onnx", "-o", onnx)
    assert r.code == 0, r.err
    exp = json.loads((onnx / "mmdk_manifest.json").read_text())
    assert {a["tower"] for a in exp["artifacts"]} == {"vision", "text"}
    assert all(a["verification"]["cosine_min"] >= 0.9999 for a in exp["artifacts"])  # verified vs pruned torch
    assert exp["source"]["pass_name"] == "prune"

    q = tmp_path / "q"
    r = mmdk("quantize", onnx, "--precision", "int8", "--method", "dynamic", "-o", q)
    assert r.code == 0, r.err
    assert (q / "vision.onnx").is_file() and (q / "text.onnx").is_file()


def test_pair_form_and_scope(mmdk, tiny_clip_dir, tmp_path):
    out = tmp_path / "p"
    r = mmdk("prune", tiny_clip_dir, "--ratio", "vision=0.2", "--scope", "mlp", "-o", out)
    assert r.code == 0, r.err
    man = json.loads((out / "mmdk_manifest.json").read_text())
    vis = next(a for a in man["artifacts"] if a["tower"] == "vision")
    layers = vis["details"]["layers"].values()
    assert any(v["kind"] == "mlp" and v["width"] < 37 for v in layers)             # MLP widths shrank ...
    assert all(v["heads"] == v["initial"] for v in layers if v["kind"] == "heads")  # ... heads did not


@pytest.mark.parametrize("args,message", [
    (("--ratio", "1.5"), "strictly between 0 and 1"),
    (("--ratio", "0"), "strictly between 0 and 1"),
    (("--tower", "audio", "--ratio", "0.3"), "no tower named 'audio'"),
    (("--ratio", "vision=0.3", "--importance", "taylor"), "needs data"),
    (("--ratio", "vision=0.3", "--scope", "layers"), "unknown pruning scope"),
    (("--tower", "vision", "--tower", "text", "--ratio", "0.1", "--ratio", "0.2", "--ratio", "0.3"), "3 --ratio values"),
])
def test_bad_input_is_a_one_line_error_and_writes_nothing(mmdk, tiny_clip_dir, tmp_path, args, message):
    out = tmp_path / "never"
    r = mmdk("prune", tiny_clip_dir, *args, "-o", out)
    assert r.code == 2 and r.one_line_error() and message in r.err, r.err
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_unhandled_module_names_it_and_the_ignore(mmdk, tri_modal_factory, tmp_path):
    src, io = tri_modal_factory
    out = tmp_path / "never"
    r = mmdk("prune", src, "--io", io, "--ratio", "0.1", "-o", out)
    assert r.code == 2 and r.one_line_error() and "'fusion'" in r.err and "--ignore fusion" in r.err
    assert not out.exists()
    r = mmdk("prune", src, "--io", io, "--ratio", "0.1", "--ignore", "fusion", "-o", out)
    assert r.code == 0, r.err
