"""TensorRT build plan: profiles from I/O spec dims, trtexec / Polygraphy flags per TensorRT version, and the
generated scripts (``bash -n`` and a run against fake ``trtexec`` / ``polygraphy`` that record their arguments)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mmdeploy_kit.errors import SpecError
from mmdeploy_kit.model.iospec import IOSpec, SpecFile
from mmdeploy_kit.passes.export import trt_plan

TEXT = {"inputs": [{"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"]},
                   {"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"]}],
        "outputs": ["text_embeds"], "dims": {"batch": [1, 32], "seq": [4, 77]}}
IMAGE = {"inputs": [{"name": "pixel_values", "modality": "image", "shape": ["batch", 3, 224, 224]}],
         "outputs": ["image_embeds"], "dims": {"batch": [1, 4]}}


def test_profile_rule_batch_8_clipped_other_dims_max():
    prof = trt_plan.derive_profile(IOSpec.model_validate(TEXT))
    assert prof["input_ids"] == {"min": [1, 4], "opt": [8, 77], "max": [32, 77]}
    assert prof["attention_mask"] == prof["input_ids"]
    img = trt_plan.derive_profile(IOSpec.model_validate(IMAGE))["pixel_values"]
    assert img == {"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [4, 3, 224, 224]}  # 8 clipped to max 4


def test_profile_opt_from_spec_and_static_for_dla():
    spec = SpecFile.parse({**TEXT, "dims": {"batch": {"min": 1, "opt": 2, "max": 32}, "seq": {"min": 4, "opt": 16, "max": 77}}})
    s = spec.towers["model"]
    assert s.dims == {"batch": (1, 32), "seq": (4, 77)} and s.opt == {"batch": 2, "seq": 16}
    assert trt_plan.derive_profile(s)["input_ids"] == {"min": [1, 4], "opt": [2, 16], "max": [32, 77]}
    assert trt_plan.derive_profile(s, static=True)["input_ids"] == {"min": [2, 16], "opt": [2, 16], "max": [2, 16]}
    assert trt_plan.profile_sizes(s, "max") == {"batch": 32, "seq": 77}
    with pytest.raises(SpecError, match="outside dims.batch"):
        SpecFile.parse({**TEXT, "dims": {"batch": {"min": 1, "opt": 64, "max": 32}}})
    with pytest.raises(SpecError, match="min and max"):
        SpecFile.parse({**TEXT, "dims": {"batch": {"opt": 4}}})


def _plan(trt_version="10.3", precision="fp16", dla=None, **kw):
    spec = IOSpec.model_validate(TEXT)
    towers = [{"name": "text", "onnx": "text.onnx", "onnx_sha256": "0" * 64,
               "profile": trt_plan.derive_profile(spec, static=dla is not None)}]
    return trt_plan.build_plan(towers, trt_version=trt_version, device="jetson-orin-nx" if dla is not None else "gpu",
                               precision=precision, workspace_mb=2048, builder_optimization_level=4, dla_core=dla, **kw)


def test_trtexec_flags_per_version():
    p10 = _plan("10.3")
    a10 = trt_plan.trtexec_args(p10, p10["towers"][0])
    assert a10[:3] == ["--onnx=text.onnx", "--saveEngine=text.plan", "--skipInference"]
    assert "--minShapes=input_ids:1x4,attention_mask:1x4" in a10 and "--maxShapes=input_ids:32x77,attention_mask:32x77" in a10
    assert "--stronglyTyped" in a10 and not {"--fp16", "--int8"} & set(a10)
    assert {"--timingCacheFile=timing.cache", "--memPoolSize=workspace:2048M", "--builderOptimizationLevel=4",
            "--profilingVerbosity=detailed", "--exportLayerInfo=text.layers.json"} <= set(a10)
    p11 = _plan("11.4", precision="int8")
    a11 = trt_plan.trtexec_args(p11, p11["towers"][0])
    assert not {"--stronglyTyped", "--fp16", "--int8", "--best"} & set(a11) and p11["builder_flags"] == []
    pdla = _plan("10.3", precision="int8", dla=1)
    adla = trt_plan.trtexec_args(pdla, pdla["towers"][0])
    assert pdla["typing"] == "weakly-typed" and pdla["builder_flags"] == ["INT8", "FP16", "GPU_FALLBACK"]
    assert {"--int8", "--fp16", "--useDLACore=1", "--allowGPUFallback"} <= set(adla) and "--stronglyTyped" not in adla
    assert "--optShapes=input_ids:8x77,attention_mask:8x77" in adla and "--minShapes=input_ids:8x77,attention_mask:8x77" in adla
    hw = _plan("10.3", hardware_compatibility_level="ampere+", version_compatible=True)
    ahw = trt_plan.trtexec_args(hw, hw["towers"][0])
    assert "--hardwareCompatibilityLevel=ampere+" in ahw and "--versionCompatible" in ahw


def test_polygraphy_flags_match_the_plan():
    p = _plan("10.3")
    a = trt_plan.polygraphy_args(p, p["towers"][0])
    assert a[:6] == ["convert", "text.onnx", "--convert-to", "trt", "-o", "text.plan"]
    i = a.index("--trt-opt-shapes")
    assert a[i + 1:i + 3] == ["input_ids:[8,77]", "attention_mask:[8,77]"] and "--strongly-typed" in a
    assert a[a.index("--pool-limit") + 1] == "workspace:2048M" and a[a.index("--builder-optimization-level") + 1] == "4"
    p11 = _plan("11.0")
    assert "--strongly-typed" not in trt_plan.polygraphy_args(p11, p11["towers"][0])


def _fake_tool(bindir: Path, name: str) -> Path:
    """A stand-in for trtexec/polygraphy: records its arguments (one per line) and writes the engine file."""
    log = bindir / f"{name}.args"
    script = bindir / name
    script.write_text(f"""#!/usr/bin/env bash
printf '%s\\n' "--- $PWD" "$@" >> {log}
for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${{a#--saveEngine=}}";; esac; done
""")
    script.chmod(0o755)
    return log


@pytest.fixture
def bundle(tmp_path):
    plan = _plan("10.3")
    d = tmp_path / "bundle dir"  # a space: paths must be quoted
    d.mkdir()
    (d / "text.onnx").write_text("fake")
    (d / trt_plan.TRTEXEC_SCRIPT).write_text(trt_plan.trtexec_script(plan))
    (d / trt_plan.POLYGRAPHY_SCRIPT).write_text(trt_plan.polygraphy_script(plan))
    (d / trt_plan.PLAN_NAME).write_text(json.dumps(plan))
    return d, plan


def test_scripts_are_valid_bash(bundle):
    d, _ = bundle
    for name in (trt_plan.TRTEXEC_SCRIPT, trt_plan.POLYGRAPHY_SCRIPT):
        r = subprocess.run(["bash", "-n", str(d / name)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_trtexec_script_runs_fake_trtexec_from_path(bundle, tmp_path):
    d, plan = bundle
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = _fake_tool(bindir, "trtexec")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    env.pop("TRTEXEC", None)
    r = subprocess.run(["bash", str(d / trt_plan.TRTEXEC_SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == f"--- {d}"  # the script runs inside the bundle, wherever it is called from
    assert lines[1:] == trt_plan.trtexec_args(plan, plan["towers"][0])
    assert (d / "text.plan").read_text() == "engine\n"


def test_trtexec_script_without_trtexec_exits_3(bundle, tmp_path):
    d, _ = bundle
    if Path("/usr/src/tensorrt/bin/trtexec").exists():
        pytest.skip("this machine has JetPack's trtexec")
    env = {"PATH": str(Path(shutil.which("bash")).parent), "HOME": str(tmp_path)}
    r = subprocess.run(["bash", str(d / trt_plan.TRTEXEC_SCRIPT)], env=env, capture_output=True, text=True)
    assert r.returncode == 3 and "trtexec not found" in r.stderr


def test_polygraphy_script_runs_fake_polygraphy(bundle, tmp_path):
    d, plan = bundle
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = _fake_tool(bindir, "polygraphy")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(d / trt_plan.POLYGRAPHY_SCRIPT)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines()[1:] == trt_plan.polygraphy_args(plan, plan["towers"][0])


def test_onnxruntime_trt_ep_gets_the_same_profile():
    from mmdeploy_kit.runtime.backends.ort import OrtTensorrtBackend
    from mmdeploy_kit.model.tower import Tower

    backend = OrtTensorrtBackend.__new__(OrtTensorrtBackend)  # no session: only the provider options
    backend.device, backend.tower = "cuda", Tower("text", IOSpec.model_validate(TEXT), "onnx", precision="fp16")
    backend.providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    (name, opts), *rest = backend.provider_specs()
    assert name == "TensorrtExecutionProvider" and rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert opts["trt_profile_min_shapes"] == "input_ids:1x4,attention_mask:1x4"
    assert opts["trt_profile_opt_shapes"] == "input_ids:8x77,attention_mask:8x77"
    assert opts["trt_profile_max_shapes"] == "input_ids:32x77,attention_mask:32x77" and opts["trt_fp16_enable"] == "True"
