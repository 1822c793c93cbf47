"""`mmdk bench` / `mmdk compare` end to end: a tiny CLIP exported to ONNX vs its torch reference."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

FAST = ["--min-time", "0.02", "--min-runs", "3", "--min-rounds", "3", "--warmup", "1", "--threads", "1"]


def add_processor(hf_dir: Path, data_dir: Path) -> None:
    """A word-level tokenizer over the dataset's words (fits vocab_size=99) + a 32 px CLIP image processor."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    rows = [json.loads(line) for f in ("train.jsonl", "val.jsonl") for line in (data_dir / f).read_text().splitlines()]
    corpus = [r["text"] for r in rows] + [f"a photo of a {c}." for c in json.loads((data_dir / "classes.json").read_text())]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(sorted(set(corpus)), trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"]))
    assert tok.get_vocab_size() <= 99
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]",
                            pad_token="[PAD]", model_max_length=32).save_pretrained(hf_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(hf_dir)


@pytest.fixture(scope="module")
def setup(tiny_clip_dir, tmp_path_factory):
    """(torch CLIP dir with tokenizer, ONNX export dir, val manifest, work dir)."""
    import mmdeploy_kit as mk
    from mmdeploy_kit.data.synth import synthesize_dataset

    work = tmp_path_factory.mktemp("bench")
    data = synthesize_dataset(work / "data", n_train=4, n_val=40, image_size=32, seed=0)
    clip = work / "clip"
    shutil.copytree(tiny_clip_dir, clip)
    add_processor(clip, Path(data))
    mk.export(clip, work / "onnx")
    return clip, work / "onnx", Path(data) / "val.jsonl", work


def _cli(*args) -> int:
    from mmdeploy_kit.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


@pytest.fixture(scope="module")
def run(setup):
    clip, onnx, val, work = setup
    out = work / "reports"
    code = _cli("bench", f"onnx={onnx}", "--reference", f"torch={clip}", "--data", val, "--batch", "1,4", *FAST,
                "--report", out / "r.json", "--markdown", out / "r.md", "--html", out / "r.html",
                "--junit", out / "r.xml", "--max-latency-regression", "50%", "--max-accuracy-drop", "0.5", "-q")
    return code, out


def test_bench_writes_every_report_format(run):
    jsonschema = pytest.importorskip("jsonschema")
    from mmdeploy_kit.runtime.schema import schema_path

    code, out = run
    assert code == 0
    data = json.loads((out / "r.json").read_text())
    jsonschema.validate(data, json.loads(schema_path().read_text()))
    assert data["reference"] == "torch" and [a["label"] for a in data["artifacts"]] == ["torch", "onnx"]
    configs = {(r["artifact"], r["tower"], r["batch"]) for r in data["latency"]}
    assert configs == {(a, t, b) for a in ("torch", "onnx") for t in ("vision", "text") for b in (1, 4)}
    for r in data["latency"]:
        assert r["stats"]["n"] >= 3 and r["stats"]["p50_ms"] > 0 and r["first_run_ms"] > 0
        assert (r["speedup"] is None) == (r["artifact"] == "torch")
    sp = data["speedups"]["onnx"]
    assert sp["ci_low"] <= sp["ratio"] <= sp["ci_high"] and sp["baseline"] == "torch"
    acc = data["accuracy"]
    assert acc["n_images"] == 40 and acc["n_classes"] >= 2
    pairs = {(p["vision"], p["text"]): p for p in acc["pairs"]}
    assert set(pairs) == {("torch", "torch"), ("torch", "onnx"), ("onnx", "torch"), ("onnx", "onnx")}
    assert pairs[("onnx", "torch")]["cross"] and not pairs[("onnx", "onnx")]["cross"]
    for p in pairs.values():  # an exact export: every pairing scores the same as the reference
        assert p["zero_shot_top1"] == pytest.approx(pairs[("torch", "torch")]["zero_shot_top1"])
        assert set(p["image_to_text"]) == {"R@1", "R@5", "R@10"} and set(p["text_to_image"]) == {"R@1", "R@5", "R@10"}
    assert {d["tower"] for d in acc["drift"]} == {"vision", "text"}
    assert all(d["cosine_min"] > 0.9999 for d in acc["drift"])
    assert data["environment"]["cpu_cores_logical"] >= 1 and "onnxruntime" in data["environment"]["packages"]
    assert {s["scenario"] for s in data["scenarios"]} == {"single-stream", "offline"}

    root = ET.parse(out / "r.xml").getroot()
    assert len(root.findall(".//testcase")) == len(data["gates"]) > 0
    page = (out / "r.html").read_text()
    assert '<svg class="pareto"' in page and 'class="batch-chart"' in page and "<script" not in page
    md = (out / "r.md").read_text()
    assert "## Latency" in md and "## Task accuracy" in md and "| onnx | text | 4 |" in md


def test_compare_exit_codes(run, tmp_path, mmdk):
    _, out = run
    base = out / "r.json"
    worse = json.loads(base.read_text())
    for r in worse["latency"]:
        if r["artifact"] == "onnx":
            r["stats"]["p50_ms"] *= 1.2
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    same = mmdk("compare", base, base)
    assert same.code == 0 and "no regressions" in same.out
    # absolute p50 times are shown but gated only with --gate-absolute (they drift between runs)
    assert mmdk("compare", base, tmp_path / "worse.json", "--max-latency-regression", "10%").code == 0
    bad = mmdk("compare", base, tmp_path / "worse.json", "--max-latency-regression", "10%", "--gate-absolute")
    assert bad.code == 1 and bad.one_line_error() and "FAIL" in bad.out
    junit = tmp_path / "cmp.xml"
    assert mmdk("compare", base, tmp_path / "worse.json", "--max-latency-regression", "25%", "--gate-absolute",
                "--junit", junit).code == 0
    assert ET.parse(junit).getroot().findall(".//testcase")
    slower = json.loads(base.read_text())   # the ratio vs the reference 2x worse, intervals as measured
    for r in slower["latency"]:
        if r["speedup"] is not None:
            r["speedup"].update({k: r["speedup"][k] / 2 for k in ("ratio", "ci_low", "ci_high")})
    (tmp_path / "slower.json").write_text(json.dumps(slower))
    bad = mmdk("compare", base, tmp_path / "slower.json", "--max-latency-regression", "10%")
    assert bad.code == 1 and bad.one_line_error() and "regression" in bad.out
    broken = json.loads(base.read_text())
    del broken["latency"][0]["stats"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    r = mmdk("compare", base, tmp_path / "broken.json")
    assert r.code == 2 and r.one_line_error() and "does not match the schema: latency.0.stats: Field required" in r.err


def test_library_api_pairs_a_single_tower_with_the_reference(setup):
    import mmdeploy_kit as mk
    from mmdeploy_kit.runtime.schema import BenchReport

    clip, onnx, val, _ = setup
    r = mk.bench(onnx / "vision.onnx", reference=clip, data=val, batch=[2], quiet=True, threads=1,
                 timing={"min_time_s": 0.02, "min_runs": 3, "min_rounds": 3, "warmup_runs": 1, "clock": "cpu",
                         "processes": 1})
    assert isinstance(r, BenchReport) and r.passed
    assert r.speedups["vision"].clock == "cpu" and r.config.timing.clock == "cpu"
    assert all(x.cpu_stats is not None and x.cpu_stats.p50_ms > 0 for x in r.latency)
    assert {(x.artifact, x.tower) for x in r.latency} == {("clip", "vision"), ("vision", "vision")}
    pairs = {(p.vision, p.text) for p in r.accuracy.pairs}
    assert pairs == {("clip", "clip"), ("vision", "clip")}  # ONNX vision tower + torch text tower
    assert r.accuracy.primary["vision"]["zero_shot_top1"] == pytest.approx(r.accuracy.primary["clip"]["zero_shot_top1"])


def _bad_manifest(work: Path) -> Path:
    p = work / "bad.jsonl"
    p.write_text('{"image": "nope/missing.png", "text": "a red circle", "label": "red circle"}\n')
    return p


@pytest.mark.parametrize("case", ["unknown_kind", "missing_files", "different_towers", "batch_above_max",
                                  "tensorrt_on_cpu", "bad_template", "bad_clock"])
def test_bad_input_is_one_line_and_writes_nothing(setup, mmdk, tmp_path, case):
    clip, onnx, val, work = setup
    report = tmp_path / "r.json"
    args = {
        "unknown_kind": [tmp_path / "model.xyz"],
        "missing_files": [onnx, "--data", _bad_manifest(tmp_path)],
        "different_towers": [onnx, "--reference", onnx / "vision.onnx"],
        "batch_above_max": [onnx, "--batch", "1,64"],
        "tensorrt_on_cpu": [onnx, "--backend", "tensorrt"],
        "bad_template": [onnx, "--data", val, "--template", "a photo"],
        "bad_clock": [onnx, "--clock", "gpu"],
    }[case]
    (tmp_path / "model.xyz").write_text("?")
    r = mmdk("bench", *args, *FAST, "--report", report, "--html", tmp_path / "r.html")
    assert r.code != 0 and r.one_line_error(), r.err
    assert not report.exists() and not (tmp_path / "r.html").exists()
    expected = {"unknown_kind": "unknown checkpoint kind", "missing_files": "do not exist",
                "different_towers": "has no tower 'text'", "batch_above_max": "outside the I/O spec's range",
                "tensorrt_on_cpu": "backend 'tensorrt' cannot run tower", "bad_template": "placeholder",
                "bad_clock": "invalid timing option clock: Input should be 'wall' or 'cpu' (got 'gpu')"}[case]
    assert expected in r.error_lines[0]


def test_quiet_prints_results_only(setup, mmdk):
    _, onnx, _, _ = setup
    r = mmdk("bench", onnx / "text.onnx", "--batch", "1", "--seq", "8,16", *FAST, "--quiet")
    assert r.code == 0, r.err
    assert "bench " not in r.err and "·" not in r.err and "loading" not in r.err
    assert [ln.split()[3] for ln in r.out.splitlines() if "seq=" in ln] == ["seq=8", "seq=16"]


def test_gpu_target_without_gpu_is_refused(setup, mmdk):
    from mmdeploy_kit.runtime import env

    if env.has_nvidia_gpu():
        pytest.skip("this machine has an NVIDIA GPU")
    r = mmdk("bench", setup[1], "--target", "gpu", *FAST)
    assert r.code == 3 and r.one_line_error() and "needs an NVIDIA GPU" in r.err


BLOCKER = 'import sys\nfor _m in ("torch", "torchvision", "torchaudio"):\n    sys.modules[_m] = None\n'


def test_onnx_bench_runs_with_torch_unimportable(setup, tmp_path):
    _, onnx, val, _ = setup
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block")}
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "halted" in check.stderr  # the blocker works
    report = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "mmdeploy_kit.cli", "bench", str(onnx), "--data", str(val),
                          "--batch", "1,2", *FAST, "--report", str(report), "-q"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["accuracy"]["pairs"][0]["zero_shot_top1"] is not None
    towers = [t for a in data["artifacts"] for t in a["towers"].values()]
    assert {t["backend"] for t in towers} == {"onnxruntime"} and {t["kind"] for t in towers} == {"onnx"}


@pytest.mark.gpu
def test_gpu_bench_uses_cuda(setup, mmdk, tmp_path):
    clip, onnx, _, _ = setup
    r = mmdk("bench", onnx, "--reference", clip, "--target", "gpu", *FAST, "--report", tmp_path / "g.json")
    assert r.code == 0, r.err
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["environment"]["gpus"]
    assert all(t["device"] == "cuda" for a in data["artifacts"] for t in a["towers"].values())


def test_fusion_classifier_top1_agreement(setup, late_fusion_factory, tmp_path):
    import mmdeploy_kit as mk

    clip, _, val, _ = setup
    model, io = late_fusion_factory
    r = mk.bench(f"copy={model}", reference=f"ref={model}", io=io, data=val, processor=clip, batch=[1], seq=[16],
                 quiet=True, threads=1, timing={"min_time_s": 0.02, "min_runs": 3, "min_rounds": 3, "warmup_runs": 1},
                 markdown=tmp_path / "r.md")
    assert not r.accuracy.pairs  # one multi-modal tower: no dual-encoder metrics
    (drift,) = r.accuracy.drift
    assert drift.output == "logits" and drift.cosine_min == pytest.approx(1.0) and drift.top1_agreement == 100.0
    assert r.accuracy.primary["copy"]["top1_agreement"] == 100.0
    assert "top-1 agreement" in (tmp_path / "r.md").read_text()


def test_demo_command_prints_the_bench_summary(mmdk, monkeypatch):
    import mmdeploy_kit.api as api

    summary = {"checkpoint": "/x/ckpt", "reused": True, "train_seconds": 1.0, "zero_shot_top1": 95.0,
               "zero_shot_top5": 100.0, "target_top1": 90.0, "passed": True,
               "recall": {"image_to_text": {"R@1": 61.0, "R@5": 88.5, "R@10": 97.25},
                          "text_to_image": {"R@1": 55.0, "R@5": 80.0, "R@10": 90.0}}, "data_dir": "/x/data", "onnx_dir": "/x/onnx", "export": {},
               "bench": {"speedup": 2.5, "speedup_ci": [2.4, 2.6], "confidence": 0.95, "torch_zero_shot_top1": 95.0,
                         "onnx_zero_shot_top1": 95.0, "reports": {"html": "/x/reports/bench.html"}}}
    monkeypatch.setattr(api, "demo", lambda *a, **k: summary)
    r = mmdk("demo")
    assert r.code == 0, r.err
    assert "speedup 2.50x [2.40, 2.60] (95% CI)" in r.out and "onnx 95.0%" in r.out and "/x/reports" in r.out
    assert "[PASS: target >= 90%]" in r.out
    assert "retrieval image to text: R@1 61.0, R@5 88.5, R@10 97.2" in r.out
    assert "retrieval text to image: R@1 55.0, R@5 80.0, R@10 90.0" in r.out


def test_unexpected_exception_is_one_line_with_traceback_behind_debug(mmdk, monkeypatch):
    import mmdeploy_kit.api as api

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(api, "demo", boom)
    r = mmdk("demo")
    assert r.code == 1 and r.one_line_error(), r.err
    assert "internal error RuntimeError: kaboom" in r.err and "--debug" in r.err
    r = mmdk("--debug", "demo")
    assert r.code == 1 and "Traceback" in r.err


def test_bench_twice_reuses_the_cached_step_unless_noisy_and_force_measures_again(setup, mmdk, cache, tmp_path):
    """Issue 18: `mmdk bench` is the bench step through the runner, so the step cache applies as in `mmdk run`:
    the same models, data, options and machine reuse the measurement (identical report figures, a note that
    says so and how to force a fresh one) unless the first run's timings were noisy; --force measures again."""
    from mmdeploy_kit.passes.bench_step import NOISY_WARNINGS

    clip, onnx, val, _ = setup
    args = ["bench", f"onnx={onnx}", "--reference", f"torch={clip}", "--data", val, "--batch", "1", *FAST]
    first = mmdk(*args, "--report", tmp_path / "a.json", "--markdown", tmp_path / "a.md")
    assert first.code == 0, first.err
    assert "reused a cached measurement" not in first.err
    a = json.loads((tmp_path / "a.json").read_text())
    cacheable = not any(w.startswith(NOISY_WARNINGS) for w in a["warnings"])
    assert bool(list((cache / "steps").glob("bench-*"))) == cacheable  # a noisy measurement is not kept
    second = mmdk(*args, "--report", tmp_path / "b.json", "--markdown", tmp_path / "b.md")
    assert second.code == 0, second.err
    cached = "reused a cached measurement" in second.err
    assert cached == cacheable
    b = json.loads((tmp_path / "b.json").read_text())
    if cached:
        assert "--force" in second.err
        assert b == a and (tmp_path / "b.md").read_text() == (tmp_path / "a.md").read_text()
    else:
        assert b["created"] != a["created"] or b["latency"] != a["latency"]
    forced = mmdk(*args, "--force", "--report", tmp_path / "c.json")
    assert forced.code == 0 and "reused a cached measurement" not in forced.err
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["created"] != a["created"] or c["latency"] != a["latency"]  # measured again
    other = mmdk(*args[:-len(FAST)], *FAST[:-1], "2", "--report", tmp_path / "d.json")  # --threads 2: another key
    assert other.code == 0 and "reused a cached measurement" not in other.err


def test_a_kept_measurement_is_reused_with_identical_reports(setup, cache, tmp_path, monkeypatch):
    """The cache-hit path itself, on any machine: the noise refusal is switched off, so the first measurement is
    kept; the second call reuses it (same figures, reports copied from the cached step), --force does not, and
    other data or another artifact file is another key."""
    import mmdeploy_kit as mk
    from mmdeploy_kit.passes.bench_step import BenchPass

    monkeypatch.setattr(BenchPass, "cacheable", staticmethod(lambda manifest: True))
    clip, onnx, val, _ = setup
    timing = {"min_time_s": 0.02, "min_runs": 3, "min_rounds": 3, "warmup_runs": 1}
    notes: list[str] = []

    def bench(report: str, **kw):
        return mk.bench([f"onnx={onnx}"], reference=f"torch={clip}", data=val, batch=[1], threads=1, timing=timing,
                        quiet=True, notice=notes.append, report=tmp_path / report, html=tmp_path / f"{report}.html",
                        **kw)

    first = bench("a.json")
    assert not notes
    second = bench("b.json")
    assert len(notes) == 1 and "reused a cached measurement" in notes[0] and "--force" in notes[0]
    assert second.model_dump() == first.model_dump()
    assert (tmp_path / "b.json").read_bytes() == (tmp_path / "a.json").read_bytes()
    assert (tmp_path / "b.json.html").read_bytes() == (tmp_path / "a.json.html").read_bytes()
    bench("c.json", force=True)
    assert len(notes) == 1
    other = tmp_path / "onnx2"
    shutil.copytree(onnx, other)
    for content, reused in (("v1", 1), ("v1", 2), ("v2", 2)):  # the artifact's files are in the key, not its path
        (other / "extra.txt").write_text(content)
        mk.bench([f"onnx={other}"], reference=f"torch={clip}", data=val, batch=[1], threads=1, timing=timing,
                 quiet=True, notice=notes.append)
        assert len(notes) == reused, content
