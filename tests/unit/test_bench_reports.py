"""Report schema, renderings (JSON / Markdown / HTML / JUnit), gates and report comparison on a synthetic report."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from mmdeploy_kit.runtime import env
from mmdeploy_kit.runtime.gates import bench_gates, compare_reports
from mmdeploy_kit.runtime.report import render, write_reports
from mmdeploy_kit.runtime.schema import (AccuracyReport, ArtifactInfo, BenchConfig, BenchReport, DriftResult,
                                       LatencyResult, LatencyStats, PairResult, Speedup, TowerInfo, json_schema,
                                       schema_path)
from mmdeploy_kit.runtime.stats import summarize
from mmdeploy_kit.runtime.targets import get_target
from mmdeploy_kit.errors import UserInputError

jsonschema = pytest.importorskip("jsonschema")


def _tower(name, backend):
    return TowerInfo(name=name, kind="onnx" if backend == "onnxruntime" else "torch", precision="fp32",
                     backend=backend, device="cpu", session_seconds=0.01)


def _lat(art, tower, batch, ms, ratio=None):
    stats = LatencyStats(**summarize([ms / 1e3 * f for f in (0.95, 1.0, 1.05, 1.0)], items_per_run=batch))
    sp = None if ratio is None else Speedup(baseline="torch", ratio=ratio, ci_low=ratio * 0.95, ci_high=ratio * 1.05,
                                            confidence=0.95, rounds=12)
    return LatencyResult(artifact=art, tower=tower, backend="torch" if art == "torch" else "onnxruntime",
                         batch=batch, seq=32 if tower == "text" else None, sizes={"batch": batch}, stats=stats,
                         first_run_ms=ms * 3, warmup_runs=5, rounds=12, block_runs=10, speedup=sp,
                         peak_rss_bytes=300 * 2**20)


def make_report(scale: float = 1.0, onnx_top1: float = 90.0, onnx_ratio: float = 2.0) -> BenchReport:
    lat = []
    for tower in ("vision", "text"):
        for batch, ms in ((1, 2.0), (8, 10.0)):
            lat.append(_lat("torch", tower, batch, ms))
            lat.append(_lat("onnx", tower, batch, ms / onnx_ratio * scale, ratio=onnx_ratio / scale))
    acc = AccuracyReport(
        data="val.jsonl", n_samples=1000, n_images=1000, n_captions=1000, n_classes=3, templates=["a photo of a {label}."],
        pairs=[PairResult(vision=v, text=t, cross=v != t, zero_shot_top1=90.0 if v == t == "torch" else onnx_top1,
                          zero_shot_top5=100.0, image_to_text={"R@1": 50.0, "R@5": 90.0, "R@10": 100.0},
                          text_to_image={"R@1": 55.0, "R@5": 90.0, "R@10": 100.0})
               for v in ("torch", "onnx") for t in ("torch", "onnx")],
        drift=[DriftResult(artifact="onnx", tower=t, output="embeds", n=10, cosine_mean=0.99999, cosine_min=0.9999,
                           max_abs_error=1e-6) for t in ("vision", "text")],
        primary={"torch": {"zero_shot_top1": 90.0, "zero_shot_top5": 100.0, "i2t_R@1": 50.0, "t2i_R@1": 55.0},
                 "onnx": {"zero_shot_top1": onnx_top1, "zero_shot_top5": 100.0, "i2t_R@1": 50.0, "t2i_R@1": 55.0}})
    rep = BenchReport(
        mmdk_version="0.1.0", created="2026-01-01T00:00:00+00:00", duration_s=3.0,
        config=BenchConfig(target="cpu", backend="auto", batches=[1, 8]), target=get_target("cpu"),
        environment=env.fingerprint(2), reference="torch", baseline="torch",
        artifacts=[ArtifactInfo(label=lab, source=f"/x/{lab}", format=fmt, role=role, load_seconds=0.1,
                                size_on_disk_bytes=1000, towers={t: _tower(t, be) for t in ("vision", "text")})
                   for lab, fmt, role, be in (("torch", "hf", "reference", "torch"),
                                              ("onnx", "mmdk", "artifact", "onnxruntime"))],
        latency=lat, speedups={"onnx": Speedup(baseline="torch", ratio=onnx_ratio / scale, ci_low=1.8, ci_high=2.2,
                                               confidence=0.95, rounds=12)},
        accuracy=acc)
    rep.gates = bench_gates(rep, None, None)
    return rep


def test_committed_schema_is_current_and_validates_reports():
    committed = json.loads(schema_path().read_text())
    assert committed == json.loads(json.dumps(json_schema(), sort_keys=True)), \
        "regenerate with: python -m mmdeploy_kit.runtime.schema"
    jsonschema.Draft202012Validator.check_schema(committed)
    jsonschema.validate(json.loads(render(make_report(), "json")), committed)
    bad = json.loads(render(make_report(), "json"))
    del bad["latency"][0]["stats"]["p50_ms"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, committed)


def test_json_round_trip_and_version_checks(tmp_path):
    rep = make_report()
    p = tmp_path / "r.json"
    write_reports(rep, json=p)
    assert BenchReport.read(p) == rep
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(UserInputError, match="not an mmdk bench report"):
        BenchReport.read(other)
    newer = json.loads(p.read_text())
    newer["schema_version"] = 99
    other.write_text(json.dumps(newer))
    with pytest.raises(UserInputError, match="newer"):
        BenchReport.read(other)


def test_markdown_tables():
    md = render(make_report(), "markdown")
    for heading in ("## Summary", "## Latency", "## Task accuracy", "## Gates"):
        assert heading in md
    assert "| onnx | vision | 1 | - | onnxruntime |" in md
    assert "2.00x [1.90, 2.10]" in md and "cross" in md and "Result: PASSED" in md


def test_html_is_self_contained_with_plots():
    page = render(make_report(), "html")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and not re.search(r"""(src|href)=["']?https?:""", page)
    svgs = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    classes = [ET.fromstring(s).get("class") for s in svgs]  # each SVG is well-formed XML
    assert classes.count("pareto") == 1 and classes.count("batch-chart") == 2
    # onnx is faster at equal accuracy: it dominates torch, so the front is one point and no line is drawn
    assert 'class="pareto-front"' not in page
    # faster but less accurate: both are on the front, joined fastest first (onnx at 0.5x, torch at 1.0x)
    traded = render(make_report(onnx_top1=88.0), "html")
    front = re.search(r'<polyline class="pareto-front" points="([^"]+)"', traded)
    assert front is not None
    xs = [float(pt.split(",")[0]) for pt in front.group(1).split()]
    assert len(xs) == 2 and xs[0] < xs[1]


def test_junit_one_testcase_per_gate():
    rep = make_report(onnx_top1=88.0)
    rep.gates = bench_gates(rep, max_latency_regression=0.10, max_accuracy_drop=0.5)
    root = ET.fromstring(render(rep, "junit"))
    cases = root.findall(".//testcase")
    assert len(cases) == len(rep.gates) == 4 + 4  # 4 latency configs + 4 gated accuracy metrics
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["accuracy onnx vs torch: zero_shot_top1"]
    assert root.get("failures") == "1"


def test_bench_gates_latency_and_accuracy():
    slow = make_report(onnx_ratio=0.8)  # onnx takes 1.25x the reference's time
    gates = bench_gates(slow, max_latency_regression=0.10, max_accuracy_drop=None)
    lat = [g for g in gates if g.kind == "latency"]
    assert lat and all(g.passed is False for g in lat) and lat[0].value == pytest.approx(0.25)
    assert all(g.passed is None for g in gates if g.kind == "accuracy")
    ok = bench_gates(slow, max_latency_regression=0.30, max_accuracy_drop=0.5)
    assert all(g.passed for g in ok)


def test_compare_flags_20_percent_slower_p50_only():
    base = make_report()
    same = compare_reports(base, make_report(), max_latency_regression=0.10)
    assert same.passed and same.rows
    worse = compare_reports(base, make_report(scale=1.2), max_latency_regression=0.10)
    assert not worse.passed
    assert {r.artifact for r in worse.regressions} == {"onnx"}
    assert all(r.change == pytest.approx(0.2) for r in worse.regressions)
    assert compare_reports(base, make_report(scale=1.2), max_latency_regression=0.25).passed
    acc = compare_reports(base, make_report(onnx_top1=89.0), max_accuracy_drop=0.5)
    assert [r.subject for r in acc.regressions] == ["zero_shot_top1"]
    by_ratio = compare_reports(base, make_report(scale=1.2), latency_metric="speedup")
    assert not by_ratio.passed and all(r.kind == "latency" for r in by_ratio.regressions)
    assert len(by_ratio.gates()) == len(by_ratio.rows)


def test_write_reports_is_all_or_nothing(tmp_path, monkeypatch):
    import mmdeploy_kit.runtime.report.html as html_mod

    def boom(_r):
        raise RuntimeError("render failed")

    monkeypatch.setattr(html_mod, "render_html", boom)
    with pytest.raises(RuntimeError):
        write_reports(make_report(), json=tmp_path / "r.json", html=tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []
