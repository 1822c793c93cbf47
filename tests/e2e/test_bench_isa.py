"""`mmdk bench` of an INT8 model quantized for another CPU kind: a warning (report + console) with its
accuracy re-verified on this machine against the reference."""

from __future__ import annotations

import json

import mmdeploy_kit as mmdk_api
from mmdeploy_kit.runtime.env import detect_isa

FAST = ["--batch", "2", "--min-runs", "2", "--min-time", "0.01", "--min-rounds", "2", "--warmup", "1"]


def test_bench_warns_and_reverifies_when_the_isa_differs(mmdk, tiny_clip_dir, tmp_path):
    fp32 = tmp_path / "fp32"
    mmdk_api.export(tiny_clip_dir, fp32, towers=["vision"])
    q = tmp_path / "q"
    man = mmdk_api.quantize(fp32, q, method="dynamic")
    here = detect_isa()
    assert man.metrics["target_cpu"] == {"isa": here, "requested": "auto", "quantized_on": here}
    r = mmdk("-q", "bench", f"int8={q}", "--reference", f"fp32={fp32}", *FAST, "--report", tmp_path / "same.json")
    assert r.code == 0, r.err
    assert not any("was quantized for" in w for w in json.loads((tmp_path / "same.json").read_text())["warnings"])

    other = "arm64" if here != "arm64" else "avx2"
    data = json.loads((q / "mmdk_manifest.json").read_text())
    data["metrics"]["target_cpu"]["isa"] = other  # as if quantized with --target-cpu OTHER
    (q / "mmdk_manifest.json").write_text(json.dumps(data))
    r = mmdk("bench", f"int8={q}", "--reference", f"fp32={fp32}", *FAST, "--quiet", "--report", tmp_path / "r.json")
    assert r.code == 0, r.err
    warns = [w for w in json.loads((tmp_path / "r.json").read_text())["warnings"] if "was quantized for" in w]
    assert len(warns) == 1 and f"quantized for {other} but runs on {here}" in warns[0]
    assert "vision: cosine mean 0.9" in warns[0] and "(manifest: " in warns[0]
    assert f"--target-cpu {here}" in warns[0] and "warning: int8 was quantized for" in r.err
    r = mmdk("bench", f"int8={q}", *FAST, "--quiet")  # no reference: says it could not re-verify
    assert r.code == 0 and "not re-verified (no --reference" in r.err


def test_noisy_machine_widens_a_wall_clock_gate_with_a_warning(mmdk, tiny_clip_dir, tmp_path, monkeypatch):
    """Steal time (faked: 40% of /proc/stat's CPU time) -> the report warns and widens the latency gate."""
    from mmdeploy_kit.runtime import cpu_check

    ticks = iter(range(1, 1000))

    def fake_times(path="/proc/stat"):
        k = next(ticks)
        return 1000.0 * k, 400.0 * k

    monkeypatch.setattr(cpu_check, "read_cpu_times", fake_times)
    fp32 = tmp_path / "fp32"
    mmdk_api.export(tiny_clip_dir, fp32, towers=["vision"])
    r = mmdk("bench", f"a={fp32}", "--reference", f"b={fp32}", *FAST, "--quiet", "--max-latency-regression", "50%",
             "--report", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    noise = [w for w in report["warnings"] if w.startswith("noisy machine")]
    assert len(noise) == 1 and "40% of CPU time was stolen" in noise[0] and "widened from 50% to" in noise[0]
    gate = next(g for g in report["gates"] if g["kind"] == "latency")
    assert gate["threshold"] > 0.5 and "warning: noisy machine" in r.err
    r = mmdk("bench", f"a={fp32}", "--reference", f"b={fp32}", *FAST, "--quiet", "--clock", "cpu", "--processes", "1",
             "--max-latency-regression", "50%", "--report", tmp_path / "c.json")
    report = json.loads((tmp_path / "c.json").read_text())
    assert next(g for g in report["gates"] if g["kind"] == "latency")["threshold"] == 0.5
    assert any("CPU clock" in w for w in report["warnings"])
