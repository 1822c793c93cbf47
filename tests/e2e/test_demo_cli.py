"""``mmdk demo`` end to end through the CLI: a fast smoke run on a tiny dataset, and the real thing (slow):
the default recipe, trained from scratch into an empty cache, must reach the issue's >= 90% zero-shot top-1
on the held-out split and say so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")



def _figure(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in:\n{text}"
    return float(m.group(1))


def _check_outputs(out: Path) -> None:
    """The demo is the built-in `demo` recipe: OUT/01-export (ONNX), OUT/02-bench (reports), the run record."""
    assert sorted(p.name for p in (out / "01-export").iterdir()) == ["mmdk_manifest.json", "text.onnx",
                                                                     "vision.onnx"]
    assert {"bench.html", "bench.json", "bench.md", "bench.xml"} <= {p.name for p in (out / "02-bench").iterdir()}
    assert (out / "mmdk_run.json").is_file() and (out / "run_report.html").is_file()
    manifest = json.loads((out / "01-export" / "mmdk_manifest.json").read_text())
    assert {a["tower"] for a in manifest["artifacts"]} == {"vision", "text"}
    assert all(a["verification"]["cosine_min"] >= 0.9999 for a in manifest["artifacts"])


def test_demo_smoke_through_the_cli(mmdk, small_data, cache, tmp_path):
    out = tmp_path / "demo"
    r = mmdk("demo", "--data", small_data, "--steps", "3", "--threads", "1", "-o", out)
    assert r.code == 0, r.err
    top1 = _figure(r"zero-shot top-1 ([\d.]+)%", r.out)
    assert ("[PASS" in r.out) == (top1 >= 90)  # 3 steps: far below the target, and it says so
    assert "BELOW TARGET" in r.out and "trained in" in r.out
    assert "retrieval image to text: R@1" in r.out and "ONNX vision: cosine_min" in r.out
    assert _figure(r"onnx ([\d.]+)%", r.out) == pytest.approx(_figure(r"torch ([\d.]+)%", r.out))
    _check_outputs(out)
    again = mmdk("demo", "--data", small_data, "--steps", "3", "--threads", "1", "-o", out)
    assert again.code == 0 and "reused from cache" in again.out
    assert _figure(r"zero-shot top-1 ([\d.]+)%", again.out) == top1


def test_demo_bad_data_dir_is_one_line(mmdk, cache, tmp_path):
    r = mmdk("demo", "--data", tmp_path / "nowhere", "-o", tmp_path / "out")
    assert r.code == 2 and r.one_line_error() and "does not exist" in r.err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_default_demo_reaches_90_percent_and_says_so(mmdk, cache, tmp_path):
    """The issue's bar: fresh cache -> synthetic data generated, CLIP trained from scratch (about 3 min on 2
    idle cores), exported, benchmarked; zero-shot top-1 >= 90% on the held-out split, torch and ONNX alike."""
    out = tmp_path / "demo"
    r = mmdk("demo", "-o", out)
    assert r.code == 0, r.err
    assert "trained in" in r.out
    top1 = _figure(r"zero-shot top-1 ([\d.]+)%", r.out)
    assert top1 >= 90.0 and "[PASS: target >= 90%]" in r.out, r.out
    assert _figure(r"retrieval image to text: R@1 [\d.]+, R@5 [\d.]+, R@10 ([\d.]+)", r.out) > 50.0
    assert _figure(r"onnx ([\d.]+)%", r.out) >= 90.0
    _check_outputs(out)
