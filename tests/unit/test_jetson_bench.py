"""The tegrastats sampler during a real (CPU, ONNX Runtime) bench run: a fake ``tegrastats`` and ``nvpmodel`` on
PATH print Orin Nano lines at a known constant power, and the report carries energy per inference."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

JET = Path(__file__).resolve().parents[1] / "fixtures" / "jetson"
POWER_MW = 7250  # VDD_IN printed by the fake tegrastats


def _tiny_onnx(path: Path, seed: int = 0) -> Path:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(seed).standard_normal((64, 64)).astype("float32"), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])], [w])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake_jetson_tools(tmp_path, monkeypatch):
    """``tegrastats --interval MS`` printing an Orin Nano line (root format) every MS at VDD_IN = POWER_MW, and
    ``nvpmodel -q`` printing the Orin Nano fixture."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    line = ("11-29-2026 14:02:11 RAM 2391/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [41%@1510,12%@1510] "
            "EMC_FREQ 18%@3199 GR3D_FREQ 97%@[624] cpu@50.25C gpu@51.781C tj@51.781C "
            f"VDD_IN {POWER_MW}mW/{POWER_MW}mW VDD_CPU_GPU_CV 4271mW/4271mW VDD_SOC 2774mW/2774mW")
    _executable(bin_dir / "tegrastats", "#!/bin/sh\n# fake tegrastats: --interval MS\nms=1000\n"
                'while [ $# -gt 0 ]; do [ "$1" = --interval ] && ms=$2; shift; done\n'
                's=$(awk "BEGIN{print $ms/1000}")\n'
                f"while true; do echo '{line}' || exit 0; sleep $s; done\n")
    _executable(bin_dir / "nvpmodel", f"#!/bin/sh\ncat '{JET / 'orin_nano_nvpmodel.txt'}'\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_bench_records_energy_per_inference(fake_jetson_tools, tmp_path, mmdk):
    model = _tiny_onnx(tmp_path / "mm.onnx")
    rep, md, html = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.html"
    res = mmdk("bench", model, "--batch", "1,4", "--threads", "1", "--min-time", "0.05", "--min-runs", "3",
               "--min-rounds", "3", "--warmup", "1", "--report", rep, "--markdown", md, "--html", html, "--quiet")
    assert res.code == 0, res.err
    t = json.loads(rep.read_text())["telemetry"]
    assert t["power_mode"] == "15W" and t["power_mode_id"] == 0 and t["total_rail"] == "VDD_IN"
    assert t["idle_power_w"] == pytest.approx(POWER_MW / 1e3)
    assert t["samples"] > 0 and t["avg_power_w"] == pytest.approx(POWER_MW / 1e3)
    assert {r["rail"] for r in t["rails"]} == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert t["gpu_freq_mhz_avg"] == 624 and t["emc_freq_mhz_avg"] == 3199 and t["ram_total_mb"] == 7620
    assert [(e["tower"], e["batch"]) for e in t["energy"]] == [("mm", 1), ("mm", 4)]
    for e in t["energy"]:
        assert e["samples"] >= 3 and e["avg_power_w"] == pytest.approx(POWER_MW / 1e3)
        # energy per item = power x the window's time per item, from the window's own runs
        assert e["energy_mj_per_item"] == pytest.approx(POWER_MW / 1e3 * e["seconds"] * 1e3 / e["items"], rel=1e-3)
        assert e["items_per_joule"] == pytest.approx(1e3 / e["energy_mj_per_item"], rel=1e-3)
        assert e["energy_mj_per_item_above_idle"] == pytest.approx(0.0, abs=1e-6)  # constant power: nothing above idle
    text = md.read_text()
    assert "## Power and energy (Jetson)" in text and "mJ / inference" in text and "power mode 15W (id 0)" in text
    assert f"{t['energy'][0]['energy_mj_per_item']:.3f}" in text
    assert "Power and energy" in html.read_text()
    assert not any(_comm(p) == "tegrastats" for p in Path("/proc").glob("[0-9]*/comm"))  # the sampler stopped


def _comm(p: Path) -> str:
    try:
        return p.read_text().strip()
    except OSError:
        return ""


def test_no_tegrastats_no_telemetry(tmp_path, mmdk, monkeypatch):
    import shutil

    if shutil.which("tegrastats"):
        pytest.skip("this machine has a tegrastats")
    model = _tiny_onnx(tmp_path / "mm.onnx")
    rep = tmp_path / "r.json"
    res = mmdk("bench", model, "--batch", "1", "--threads", "1", "--min-time", "0.02", "--min-runs", "3",
               "--min-rounds", "3", "--warmup", "1", "--report", rep, "--quiet")
    assert res.code == 0, res.err
    assert json.loads(rep.read_text())["telemetry"] is None
