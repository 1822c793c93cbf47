"""Capability detection (tensorrt importable? CUDA GPU? Jetson?), build-mode defaults, and the refusal of
engines built by another TensorRT version or for another GPU (sidecar checks) - all without TensorRT."""

from __future__ import annotations

import pytest

from mmdeploy_kit.runtime import env
from mmdeploy_kit.runtime.backends.tensorrt import TensorRTBackend, check_engine_compat, read_sidecar
from mmdeploy_kit.errors import BackendUnavailableError, MmdkError, UserInputError
from mmdeploy_kit.runtime import trt_env
from mmdeploy_kit.passes.export.tensorrt import TensorRTExportConfig
from mmdeploy_kit.passes.export.trt_build import check_plan_version


def _caps(**kw):
    base = dict(tensorrt_importable=False, tensorrt_version=None, torch_tensorrt_importable=False, cuda_gpu=False)
    return trt_env.TrtCapabilities(**{**base, **kw})


@pytest.fixture
def fake_machine(monkeypatch):
    """Pretend hardware: ``set(gpu=..., trt=..., jetson=...)``."""
    def set_(gpu=False, trt=None, jetson=None):
        monkeypatch.setattr(env, "nvidia_gpus", lambda: (env.GpuInfo(name="NVIDIA H100", cuda="12.8"),) if gpu else ())
        monkeypatch.setattr(env, "jetson_info", lambda: jetson)
        monkeypatch.setattr(env, "has_nvidia_gpu", lambda: gpu or jetson is not None)
        monkeypatch.setattr(trt_env, "module_importable", lambda name: trt is not None and name == "tensorrt")
        monkeypatch.setattr(trt_env, "tensorrt_version", lambda: trt)
        return trt_env.detect()
    return set_


def test_this_machine_has_no_tensorrt_build():
    caps = trt_env.detect()
    d = caps.to_dict()
    assert set(d) >= {"tensorrt_importable", "cuda_gpu", "is_jetson", "can_build", "missing", "trtexec"}
    if not caps.can_build:
        assert d["missing"] and not d["can_build"]


def test_detect_absent_and_present(fake_machine):
    caps = fake_machine()
    assert not caps.can_build and caps.missing() == ["the tensorrt Python package is not installed",
                                                    "no NVIDIA GPU with a CUDA driver was found"]
    with pytest.raises(BackendUnavailableError) as ei:
        trt_env.require_build(caps)
    assert ei.value.exit_code == 3
    assert str(ei.value) == ("building TensorRT engines needs the tensorrt package and an NVIDIA GPU (hint: --build defer "
                             "writes the bundle and build script for the target)")
    gpu_only = fake_machine(gpu=True)
    assert gpu_only.cuda_gpu and not gpu_only.can_build and gpu_only.gpu_names == ("NVIDIA H100",)
    full = fake_machine(gpu=True, trt="10.13.0.35")
    assert full.can_build and full.tensorrt_version == "10.13.0.35" and trt_env.require_build(full) is full


def test_jetson_detection_and_build_mode_defaults(fake_machine):
    orin = env.JetsonInfo(model="NVIDIA Jetson Orin Nano Developer Kit", l4t="36.4.3", power_mode="15W")
    caps = fake_machine(trt="10.3.0.30", jetson=orin)
    assert caps.is_jetson and caps.can_build and caps.power_mode == "15W"
    assert trt_env.on_device("jetson-orin-nano", caps) and not trt_env.on_device("jetson-agx-orin", caps)
    assert TensorRTExportConfig(device="jetson-orin-nano").build_mode(caps) == "local"  # on that board: build here
    assert TensorRTExportConfig(device="jetson-agx-orin").build_mode(caps) == "defer"
    server = fake_machine()
    assert TensorRTExportConfig().build_mode(server) == "local"
    assert TensorRTExportConfig(device="jetson-orin-nano").build_mode(server) == "defer"
    assert TensorRTExportConfig(device="jetson-orin-nano").resolved_trt_version(server, "defer") == "10.3"
    assert TensorRTExportConfig().resolved_trt_version(server, "defer") == "10"
    assert TensorRTExportConfig(trt_version="11.4").resolved_trt_version(server, "defer") == "11.4"


@pytest.mark.parametrize("fields,match", [({"device": "cpu"}, "not a TensorRT target"),
                                          ({"device": "jetson-orin-nano", "dla": 0}, "has 0 DLA core"),
                                          ({"precision": "int4"}, "precision"), ({"trt_version": "x"}, "TensorRT version")])
def test_config_rejects(fields, match):
    with pytest.raises((ValueError, MmdkError), match=match):
        TensorRTExportConfig(**fields)


SIDECAR = {"tensorrt": {"version": "10.3.0.30"}, "gpu": {"name": "Orin (nvgpu)", "compute_capability": "8.7"},
           "build": {"version_compatible": False, "hardware_compatibility_level": "none"}}


def test_engine_refused_for_another_tensorrt_version_or_gpu():
    check_engine_compat(SIDECAR, {"trt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(BackendUnavailableError, match="built by TensorRT 10.3.0.30, but this machine has TensorRT 10.7.0") as ei:
        check_engine_compat(SIDECAR, {"trt_version": "10.7.0.23", "compute_capability": "8.7"}, "vision.plan")
    assert ei.value.exit_code == 3 and "build-engines" in ei.value.hint
    with pytest.raises(BackendUnavailableError, match=r"compute capability 8.7\), but this GPU is NVIDIA L4"):
        check_engine_compat(SIDECAR, {"trt_version": "10.3.0.30", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"})
    compat = {**SIDECAR, "build": {"version_compatible": True, "hardware_compatibility_level": "ampere+"}}
    check_engine_compat(compat, {"trt_version": "10.7.0.23", "compute_capability": "8.9"})  # later 10.x, Ampere+
    with pytest.raises(BackendUnavailableError):  # version-compatible engines do not cross a major
        check_engine_compat(compat, {"trt_version": "11.0.0", "compute_capability": "8.7"})
    with pytest.raises(BackendUnavailableError):  # ... nor run on an older TensorRT
        check_engine_compat(compat, {"trt_version": "10.1.0", "compute_capability": "8.7"})


def test_sidecar_missing_and_bundle_major_mismatch(tmp_path):
    (tmp_path / "vision.plan").write_bytes(b"x")
    with pytest.raises(UserInputError, match="has no sidecar vision.plan.json"):
        read_sidecar(tmp_path / "vision.plan")
    with pytest.raises(BackendUnavailableError, match="prepared for TensorRT 10.3, but this machine has TensorRT 11.4"):
        check_plan_version({"trt_version": "10.3"}, "11.4.0.106")
    assert check_plan_version({"trt_version": "10.3"}, "10.3.0.30") is None
    assert "same major" in check_plan_version({"trt_version": "10.3"}, "10.7.0.23")
    assert check_plan_version({"trt_version": "10"}, "10.7.0.23") is None


def test_tensorrt_backend_refuses_cpu_target():
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"):
        TensorRTBackend.check_available("cpu")
