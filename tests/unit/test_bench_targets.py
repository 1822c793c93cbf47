"""Target profiles, hardware checks, environment fingerprint and backend selection (no models needed)."""

from __future__ import annotations

import importlib.util

import pytest

from mmdeploy_kit.runtime import env
from mmdeploy_kit.runtime.backends.base import REGISTRY, backend_class, choose_backend
from mmdeploy_kit.runtime.env import JetsonInfo
from mmdeploy_kit.runtime.targets import TARGETS, get_target, resolve_target
from mmdeploy_kit.errors import BackendUnavailableError, MissingBackendError, UserInputError
from mmdeploy_kit.model.iospec import IOSpec
from mmdeploy_kit.model.tower import Tower

SPEC = IOSpec.model_validate({"inputs": [{"name": "x", "shape": ["batch", 4]}], "outputs": ["y"]})


def test_every_target_is_data():
    assert set(TARGETS) == {"cpu", "gpu", "jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx"}
    for t in TARGETS.values():
        assert t.backends and "fp32" in t.precisions
        assert all(b in REGISTRY for b in t.backends)
    assert TARGETS["jetson-orin-nano"].dla_cores == 0 and TARGETS["jetson-agx-orin"].dla_cores == 2
    assert TARGETS["jetson-orin-nano"].memory_budget_mb < TARGETS["jetson-agx-orin"].memory_budget_mb
    assert TARGETS["cpu"].device == "cpu" and TARGETS["cpu"].backends[0] == "onnxruntime"


def test_unknown_target_is_a_user_error():
    with pytest.raises(UserInputError, match="unknown target 'tpu'"):
        get_target("tpu")


def test_gpu_target_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(env, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(env, "jetson_info", lambda: None)
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU") as exc:
        resolve_target("gpu")
    assert exc.value.hint and "--target cpu" in exc.value.hint
    with pytest.raises(BackendUnavailableError, match="not a Jetson"):
        resolve_target("jetson-orin-nx")
    assert resolve_target("cpu").name == "cpu"


def test_jetson_board_must_match(monkeypatch):
    monkeypatch.setattr(env, "jetson_info", lambda: JetsonInfo(model="NVIDIA Jetson AGX Orin Developer Kit"))
    monkeypatch.setattr(env, "has_nvidia_gpu", lambda: True)
    assert resolve_target("jetson-agx-orin").dla_cores == 2
    with pytest.raises(BackendUnavailableError, match="AGX Orin") as exc:
        resolve_target("jetson-orin-nano")
    assert "jetson-agx-orin" in exc.value.hint


def test_fingerprint_reads_this_machine():
    fp = env.fingerprint(threads=2)
    assert fp.cpu_cores_logical >= 1 and fp.cpu_cores_available >= 1
    assert fp.python and fp.os and fp.threads == 2
    assert "numpy" in fp.packages and "python" not in fp.packages  # python/platform have their own fields
    assert set(fp.cpu_flags) <= set(env.ISA_FLAGS)
    assert fp.short()


def test_cpu_flags_from_cpuinfo(monkeypatch):
    text = "processor\t: 0\nmodel name\t: Intel Xeon Fake\nflags\t\t: fpu avx avx2 avx512f avx512_vnni amx_tile\n"
    monkeypatch.setattr(env, "_read", lambda p: text if p == "/proc/cpuinfo" else None)
    model, flags = env.cpu_info()
    assert model == "Intel Xeon Fake"
    assert {"avx2", "avx512_vnni", "amx_tile"} <= set(flags) and "fpu" not in flags


def test_peak_rss_is_readable():
    import sys

    rss = env.rss_bytes()
    peak = env.peak_rss_bytes()
    if sys.platform.startswith("linux"):  # /proc/self/status: both counters exist, and the peak is a maximum
        assert rss is not None and rss > 0 and peak is not None and peak >= rss
    else:
        assert rss is None or rss > 0


def _tower(kind):
    return Tower("t", SPEC, kind)


def test_backend_selection_rules():
    cpu = get_target("cpu")
    assert choose_backend(_tower("onnx"), "auto", cpu).name == "onnxruntime"
    if importlib.util.find_spec("torch") is not None:  # the ONNX-in install has no torch backend
        assert choose_backend(_tower("torch"), "auto", cpu).name == "torch"
    with pytest.raises(UserInputError, match="cannot run tower 't' of kind 'torch'"):
        choose_backend(_tower("torch"), "onnxruntime", cpu)
    with pytest.raises(UserInputError, match="unknown backend"):
        backend_class("tvm")
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"):
        choose_backend(_tower("trt_engine"), "tensorrt", cpu)
    with pytest.raises(UserInputError, match="of kind 'onnx' .it runs trt_engine"):  # build engines first
        choose_backend(_tower("onnx"), "tensorrt", get_target("gpu"))
    with pytest.raises(BackendUnavailableError, match="no backend of target 'cpu'"):
        choose_backend(_tower("trt_engine"), "auto", cpu)


def test_tensorrt_backends_need_the_package_and_a_gpu():
    gpu = get_target("gpu")  # profile only: no hardware check here
    for name, kind in (("tensorrt", "trt_engine"), ("torch-tensorrt", "torch")):
        with pytest.raises((MissingBackendError, BackendUnavailableError)):
            choose_backend(_tower(kind), name, gpu)


def test_bench_modules_and_help_do_not_import_heavy_runtimes():
    import subprocess
    import sys

    code = ("import sys\n"
            "import mmdeploy_kit.runtime.harness, mmdeploy_kit.runtime.gates, mmdeploy_kit.runtime.report.html\n"
            "import mmdeploy_kit.runtime.report.markdown, mmdeploy_kit.runtime.report.junit, mmdeploy_kit.runtime.backends.ort\n"
            "from mmdeploy_kit.cli import main\n"
            "for a in (['bench', '--help'], ['compare', '--help']):\n"
            "    try:\n        main(a)\n    except SystemExit:\n        pass\n"
            "print('HEAVY=' + ','.join(m for m in ('torch', 'onnxruntime', 'transformers', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY="


def test_bench_stays_the_api_function_after_importing_the_subpackage(monkeypatch):
    import mmdeploy_kit
    import mmdeploy_kit.api as api
    import mmdeploy_kit.runtime.harness  # noqa: F401

    calls = []
    monkeypatch.setattr(api, "bench", lambda *a, **k: calls.append((a, k)) or "report")
    assert mmdeploy_kit.bench("a.onnx", reference="ref", batch=[1]) == "report"
    assert calls == [(("a.onnx",), {"reference": "ref", "batch": [1]})]


def test_reference_must_have_the_same_towers_and_inputs():
    from mmdeploy_kit.runtime.harness import _match_towers
    from mmdeploy_kit.model.tower import LoadedModel

    other = IOSpec.model_validate({"inputs": [{"name": "z", "shape": ["batch", 4]}], "outputs": ["y"]})

    def model(**towers):
        return LoadedModel(source="m", format="onnx", architecture="x",
                           towers={n: Tower(n, s, "onnx") for n, s in towers.items()})

    ref = model(vision=SPEC, text=SPEC)
    assert _match_towers(ref, "ref", model(vision=SPEC), "art", ()) == ["vision"]
    with pytest.raises(UserInputError, match="takes inputs \\['z'\\]"):
        _match_towers(ref, "ref", model(vision=other), "art", ())
    with pytest.raises(UserInputError, match="has no tower 'audio'"):
        _match_towers(ref, "ref", model(audio=SPEC), "art", ())
