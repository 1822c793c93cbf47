"""`mmdk doctor`: machine facts and the feature table, torch-free; a fake Jetson (nvpmodel/tegrastats on PATH)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mmdeploy_kit.runtime import doctor
from mmdeploy_kit.runtime import env

JET = Path(__file__).resolve().parents[1] / "fixtures" / "jetson"


def test_collect_is_json_and_matches_this_machine():
    info = doctor.collect()
    json.dumps(info)
    model, flags = env.cpu_info()
    assert info["cpu"]["model"] == model and info["cpu"]["flags"] == flags
    assert info["cpu"]["cores_available"] == env.available_cores() and info["ram_total_mb"] == env.ram_total_mb()
    if "avx2" in flags:
        assert "AVX2" in info["cpu"]["isa"]
    feats = {f["feature"]: f for f in info["features"]}
    ort = pytest.importorskip("onnxruntime")
    assert feats["bench: onnxruntime on CPU"]["available"] is ("CPUExecutionProvider" in ort.get_available_providers())
    assert info["onnxruntime"]["providers"] == list(ort.get_available_providers())
    assert feats["TensorRT engines (build / bench --backend tensorrt)"]["available"] is bool(info["tensorrt"]["can_build"])
    assert info["targets"]["cpu"]["available"] is True
    if not env.has_nvidia_gpu():
        assert info["targets"]["gpu"]["available"] is False and "NVIDIA GPU" in info["targets"]["gpu"]["why"]
        assert info["gpus"] == [] and info["tensorrt"]["can_build"] is False
    assert all(f["needs"] for f in info["features"])


def test_tensorrt_fallback_without_trt_env(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mmdeploy_kit.runtime.trt_env" else real(name, *a))
    t = doctor._tensorrt()
    assert t["detected_by"].startswith("importlib.util.find_spec")
    assert t["tensorrt_importable"] is (real("tensorrt") is not None)


def test_fake_jetson(monkeypatch, tmp_path):
    from mmdeploy_kit.runtime.env import JetsonInfo

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nvpmodel", f"cat '{JET / 'orin_nano_nvpmodel.txt'}'"),
                       ("jetson_clocks", f"cat '{JET / 'orin_nano_jetson_clocks_locked.txt'}'"),
                       ("tegrastats", "sleep 60")):
        p = bin_dir / name
        p.write_text(f"#!/bin/sh\n{text}\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(env, "jetson_info", lambda: JetsonInfo(model="NVIDIA Jetson Orin Nano Developer Kit",
                                                                l4t="36.3.0", jetpack="6.0+b106"))
    info = doctor.collect()
    j = info["jetson"]
    assert (j["power_mode"], j["power_mode_id"], j["clocks_locked"], j["l4t"]) == ("15W", 0, True, "36.3.0")
    feats = {f["feature"]: f["available"] for f in info["features"]}
    assert feats["Jetson power / energy per inference (tegrastats)"] is True
    text = doctor.render(info)
    assert "power mode 15W (id 0); clocks locked" in text and "L4T 36.3.0" in text


def test_cli_doctor_prints_table_and_json(mmdk):
    res = mmdk("doctor")
    assert res.code == 0 and "feature" in res.out and "remote bench / doctor on a device (--host)" in res.out
    res = mmdk("doctor", "--json")
    assert res.code == 0 and json.loads(res.out)["mmdk_version"] == "0.1.0"


def test_doctor_and_version_do_not_import_torch():
    code = ("import sys; from mmdeploy_kit.cli import main\n"
            "try: main(['doctor', '--json'])\nexcept SystemExit: pass\n"
            "assert 'torch' not in sys.modules and 'tensorrt' not in sys.modules, 'heavy import'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-m", "mmdeploy_kit.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "mmdk 0.1.0"
