"""`mmdk export --target tensorrt` / `mmdk build-engines` end to end on tiny models.

On CPU: the refusal without TensorRT + GPU (exit 3, nothing written), the deferred bundle (TensorRT-ready ONNX run
in ONNX Runtime against torch at the profile's min/opt/max shapes, lint, plan, scripts), INT8 QDQ bundles, DLA
plans, lint errors (exit 4) and --allow-unsupported. Real engine builds and runs are marked tensorrt/gpu.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from mmdeploy_kit.runtime import trt_env

CAN_BUILD = trt_env.detect().can_build
needs_no_trt = pytest.mark.skipif(CAN_BUILD, reason="this machine can build TensorRT engines")
EXIT3 = ("error: building TensorRT engines needs the tensorrt package and an NVIDIA GPU (hint: --build defer writes "
         "the bundle and build script for the target)")
REPO = Path(__file__).resolve().parents[2]


def _man(out: Path) -> dict:
    return json.loads((out / "mmdk_manifest.json").read_text())


@pytest.fixture(scope="module")
def fp16_bundle(tiny_clip_dir, tmp_path_factory):
    import mmdeploy_kit as mmdk

    out = tmp_path_factory.mktemp("trt") / "bundle"
    mmdk.export(tiny_clip_dir, out, target="tensorrt", precision="fp16", build="defer")
    return out


@needs_no_trt
def test_local_build_without_tensorrt_exits_3_and_writes_nothing(mmdk, tiny_clip_dir, tmp_path):
    out = tmp_path / "trt"
    r = mmdk("export", tiny_clip_dir, "--target", "tensorrt", "--precision", "fp16", "-o", out)
    assert r.code == 3 and r.error_lines == [EXIT3] and r.one_line_error()
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(trt_env.detect().torch_tensorrt_importable and CAN_BUILD, reason="torch-tensorrt and a GPU are here")
def test_torch_tensorrt_without_it_exits_3(mmdk, tiny_clip_dir, tmp_path):
    r = mmdk("export", tiny_clip_dir, "--target", "torch-tensorrt", "-o", tmp_path / "tt")
    assert r.code == 3 and r.one_line_error() and "torch_tensorrt package and an NVIDIA GPU" in r.err
    assert not (tmp_path / "tt").exists()


def test_deferred_bundle_is_complete(mmdk, tiny_clip_dir, tmp_path):
    out = tmp_path / "bundle"
    r = mmdk("export", tiny_clip_dir, "--target", "tensorrt", "--build", "defer", "-o", out)
    assert r.code == 0, r.err
    assert "engines deferred" in r.out and f"mmdk build-engines {out}" in r.out
    assert sorted(p.name for p in out.iterdir()) == ["build_polygraphy.sh", "build_trtexec.sh", "mmdk_manifest.json",
                                                     "text.onnx", "trt_build_plan.json", "vision.onnx"]
    man = _man(out)
    assert man["pass_name"] == "export_tensorrt" and man["metrics"]["tensorrt"]["engines"] == "deferred"
    plan = json.loads((out / "trt_build_plan.json").read_text())
    assert plan["precision"] == "fp16" and plan["typing"] == "strongly-typed" and plan["trt_version"] == "10"
    assert [t["name"] for t in plan["towers"]] == ["vision", "text"]
    text = next(t for t in plan["towers"] if t["name"] == "text")
    assert text["profile"]["input_ids"]["opt"][0] == 8  # batch opt rule
    for art in man["artifacts"]:
        assert art["kind"] == "onnx" and art["precision"] == "fp16"
        assert art["details"]["engine"]["status"] == "deferred"
        assert [c["shape"] for c in art["verification"]["checks"]] == ["min", "opt", "max"]
        assert art["verification"]["cosine_min"] >= 0.999
        assert art["details"]["lint"]["errors"] == []
    for script in ("build_trtexec.sh", "build_polygraphy.sh"):
        assert subprocess.run(["bash", "-n", str(out / script)]).returncode == 0
    # the FP16 graph keeps FP32 I/O and has FP16 math inside
    g = onnx.load(str(out / "vision.onnx")).graph
    assert g.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in g.initializer)


def test_bundle_onnx_matches_torch_at_min_opt_max(fp16_bundle, tiny_clip_dir):
    """Independently of the manifest: run the bundle's ONNX in ONNX Runtime and torch at the profile shapes."""
    import onnxruntime as ort

    import mmdeploy_kit as mmdk
    from mmdeploy_kit.runtime.metrics import drift
    from mmdeploy_kit.model.profiles import profile_sizes

    src = mmdk.load(tiny_clip_dir)
    for name, tower in src.towers.items():
        sess = ort.InferenceSession(str(fp16_bundle / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        for k, which in enumerate(("min", "opt", "max")):
            feeds = tower.spec.dummy_inputs(profile_sizes(tower.spec, which), seed=10 + k)
            import torch

            with torch.no_grad():
                ref = tower.module(*[torch.from_numpy(feeds[n]) for n in tower.spec.input_names])[0].numpy()
            got = sess.run(None, feeds)[0]
            assert got.shape == ref.shape
            assert drift(ref, got)["cosine_min"] > 0.999, (name, which)


@needs_no_trt
def test_build_engines_without_tensorrt_exits_3_and_keeps_bundle(mmdk, fp16_bundle):
    before = {p.name: p.stat().st_mtime_ns for p in fp16_bundle.iterdir()}
    r = mmdk("build-engines", fp16_bundle)
    assert r.code == 3 and r.one_line_error()
    assert r.error_lines[0].startswith("error: building TensorRT engines needs the tensorrt package and an NVIDIA GPU")
    assert {p.name: p.stat().st_mtime_ns for p in fp16_bundle.iterdir()} == before


def test_build_engines_refuses_a_non_bundle(mmdk, tiny_clip_dir, tmp_path):
    import mmdeploy_kit as mmdk_api

    onnx_dir = tmp_path / "onnx"
    mmdk_api.export(tiny_clip_dir, onnx_dir, towers=["vision"])
    r = mmdk("build-engines", onnx_dir)
    assert r.code == 2 and "is not a TensorRT bundle" in r.err


def test_jetson_defaults_to_deferred_tensorrt_10_3(mmdk, tiny_clip_dir, tmp_path):
    out = tmp_path / "orin"
    r = mmdk("export", tiny_clip_dir, "--target", "tensorrt", "--device", "jetson-orin-nano", "--tower", "vision",
             "-o", out)
    assert r.code == 0, r.err
    trt = _man(out)["metrics"]["tensorrt"]
    assert trt["engines"] == "deferred" and trt["build"] == "defer" and trt["trt_version"] == "10.3"
    assert "--stronglyTyped" in (out / "build_trtexec.sh").read_text()


def test_dla_plan_is_static_weakly_typed_with_gpu_fallback(mmdk, tiny_clip_dir, tmp_path):
    out = tmp_path / "nx"
    r = mmdk("-q", "export", tiny_clip_dir, "--target", "tensorrt", "--device", "jetson-orin-nx", "--dla", "1",
             "--tower", "vision", "-o", out)
    assert r.code == 0, r.err
    plan = json.loads((out / "trt_build_plan.json").read_text())
    prof = plan["towers"][0]["profile"]["pixel_values"]
    assert prof["min"] == prof["opt"] == prof["max"] and plan["dla"] == {"core": 1, "allow_gpu_fallback": True}
    script = (out / "build_trtexec.sh").read_text()
    assert "--useDLACore=1" in script and "--fp16" in script and "--stronglyTyped" not in script
    dla = _man(out)["artifacts"][0]["details"]["lint"]["dla"]
    assert 0 < dla["gpu_fallback_nodes"] < dla["nodes"]  # LayerNorm/Erf/Gather... stay on the GPU
    r = mmdk("export", tiny_clip_dir, "--target", "tensorrt", "--device", "jetson-orin-nano", "--dla", "0", "-o",
             tmp_path / "nano")
    assert r.code == 2 and "has 0 DLA core" in r.err and not (tmp_path / "nano").exists()


def test_int8_needs_calibration_data(mmdk, tiny_clip_dir, tmp_path):
    r = mmdk("export", tiny_clip_dir, "--target", "tensorrt", "--precision", "int8", "--build", "defer", "-o",
             tmp_path / "q")
    assert r.code == 2 and "calibration data" in r.err and not (tmp_path / "q").exists()


def test_int8_bundle_is_symmetric_qdq(mmdk, tiny_clip_dir, tmp_path):
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.npz"
    np.savez(calib, pixel_values=rng.standard_normal((40, 3, 32, 32)).astype(np.float32),
             input_ids=rng.integers(0, 99, (40, 12)), attention_mask=np.ones((40, 12), np.int64))
    out = tmp_path / "int8"
    r = mmdk("-q", "export", tiny_clip_dir, "--target", "tensorrt", "--precision", "int8", "--calib-data", calib,
             "--build", "defer", "--tower", "vision", "-o", out)
    assert r.code == 0, r.err
    art = _man(out)["artifacts"][0]
    assert art["details"]["steps"]["quantize"]["tensorrt_qdq_check"] == "passed"
    assert art["details"]["lint"]["errors"] == [] and art["verification"]["cosine_min"] >= 0.98
    g = onnx.load(str(out / "vision.onnx")).graph
    assert sum(n.op_type == "QuantizeLinear" for n in g.node) > 0
    zps = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            assert not numpy_helper.to_array(zps[n.input[2]]).any()


def _onnx_with_det(path: Path) -> Path:
    """A tiny FP32 graph whose Det op TensorRT's parser does not support (ONNX Runtime runs it)."""
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                           helper.make_node("Det", ["h"], ["y"], name="the_det")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])], initializer=[w])
    onnx.save(helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_lint_error_stops_export_with_exit_4_unless_allowed(mmdk, tmp_path):
    src = _onnx_with_det(tmp_path / "det.onnx")
    r = mmdk("export", src, "--target", "tensorrt", "--precision", "fp32", "--build", "defer", "-o", tmp_path / "a")
    assert r.code == 4 and r.one_line_error() and "Det node 'the_det'" in r.err and "--allow-unsupported" in r.err
    assert not (tmp_path / "a").exists()
    r = mmdk("-q", "export", src, "--target", "tensorrt", "--precision", "fp32", "--build", "defer",
             "--allow-unsupported", "-o", tmp_path / "b")
    assert r.code == 0, r.err
    lint = _man(tmp_path / "b")["artifacts"][0]["details"]["lint"]
    assert [(e["rule"], e["node"]) for e in lint["errors"]] == [("unsupported-op", "the_det")]


def test_recipes_validate_against_the_config(tmp_path):
    from mmdeploy_kit.passes.registry import get_pass, resolve_pass_name

    for name in ("clip-gpu-fp16-tensorrt", "clip-jetson-orin-int8"):
        path = next(p for p in (REPO / "mmdeploy_kit" / "recipes" / f"{name}.yaml", REPO / "recipes" / f"{name}.yaml")
                    if p.exists())
        recipe = yaml.safe_load(path.read_text())
        exports = [s["export"] for s in recipe["steps"] if "export" in s]
        assert exports, name
        for opts in exports:
            step = resolve_pass_name("export", opts)
            assert step == "export_tensorrt"
            fields = {k: (recipe["data"][v] if k == "calib_data" else v) for k, v in opts.items()}
            get_pass(step).config_cls(**fields)


def test_build_engines_bookkeeping_with_the_tensorrt_calls_replaced(fp16_bundle, tmp_path, monkeypatch):
    """Not a TensorRT test: ``build_engines`` / ``verify_engines`` (the TensorRT calls) are replaced by functions
    that write placeholder plans, to check what `mmdk build-engines` does around them: copy, manifest, atomicity."""
    import shutil

    import mmdeploy_kit as mmdk
    from mmdeploy_kit.errors import VerificationError
    from mmdeploy_kit.passes.base import RunContext
    from mmdeploy_kit.passes.export import trt_build

    bundle = tmp_path / "b"
    shutil.copytree(fp16_bundle, bundle)
    monkeypatch.setattr(trt_env, "require_build", lambda *a, **k: trt_env.TrtCapabilities(
        tensorrt_importable=True, tensorrt_version="10.3.0.30", torch_tensorrt_importable=False, cuda_gpu=True,
        gpu_names=("Orin",)))

    def fake_build(d, plan, caps, log):
        out = {}
        for t in plan["towers"]:
            (d / t["plan"]).write_bytes(b"plan-" + t["name"].encode())
            out[t["name"]] = {"tensorrt": {"version": "10.3.0.30"}, "gpu": {"name": "Orin", "compute_capability": "8.7"}}
        return out

    def fake_verify(d, plan, refs, specs, min_cosine, seed, log):
        assert set(refs) == {t["name"] for t in plan["towers"]} and all(r.kind == "onnx" for r in refs.values())
        return {t["name"]: {"reference": "onnx", "checks": [], "cosine_min": 0.9995} for t in plan["towers"]}

    monkeypatch.setattr(trt_build, "build_engines", fake_build)
    monkeypatch.setattr(trt_build, "verify_engines", fake_verify)
    man = mmdk.build_engines(bundle)
    assert man.metrics["tensorrt"]["engines"] == "built" and man.history[-1]["pass_name"] == "export_tensorrt"
    on_disk = _man(bundle)
    assert [(a["kind"], a["path"]) for a in on_disk["artifacts"]] == [("trt_engine", "vision.plan"), ("trt_engine", "text.plan")]
    assert on_disk["artifacts"][0]["details"]["onnx_verification"]["checks"][0]["shape"] == "min"  # kept from export
    assert (bundle / "vision.onnx").exists() and (bundle / "build_trtexec.sh").exists()

    # a step of the runner (issue 18): its history is the runner's, and the same bundle here is a cache hit
    from mmdeploy_kit.passes.export.tensorrt import BuildEnginesConfig, BuildEnginesPass

    deferred = _man(fp16_bundle)
    assert [h["pass_name"] for h in on_disk["history"]] == [*[h["pass_name"] for h in deferred["history"]],
                                                             "export_tensorrt"]
    assert on_disk["metrics"]["step"]["key"].startswith("build_engines-")
    (tmp_path / "d").mkdir()
    direct = BuildEnginesPass().run(mmdk.load(fp16_bundle), BuildEnginesConfig(), RunContext(), tmp_path / "d")
    assert direct.history == []  # a pass writes no history of its own

    def failing_verify(*a, **k):
        raise VerificationError("engine disagrees")

    again = tmp_path / "c"
    shutil.copytree(fp16_bundle, again)
    monkeypatch.setattr(trt_build, "verify_engines", failing_verify)
    assert mmdk.build_engines(again, out=tmp_path / "e").metrics["tensorrt"]["engines"] == "built"  # cached
    with pytest.raises(VerificationError):
        mmdk.build_engines(again, force=True)
    assert not list(again.glob("*.plan")) and _man(again)["metrics"]["tensorrt"]["engines"] == "deferred"


# ---- with TensorRT and a GPU (skipped elsewhere, with the reason) -------------------------------------------------
@pytest.mark.gpu
@pytest.mark.tensorrt
def test_local_build_verify_and_bench(mmdk, tiny_clip_dir, tmp_path):
    out = tmp_path / "trt"
    r = mmdk("export", tiny_clip_dir, "--target", "tensorrt", "--precision", "fp16", "-o", out)
    assert r.code == 0, r.err
    man = _man(out)
    assert man["metrics"]["tensorrt"]["engines"] == "built"
    for art in man["artifacts"]:
        t = art["tower"]
        assert art["kind"] == "trt_engine" and (out / f"{t}.plan").stat().st_size > 0
        side = json.loads((out / f"{t}.plan.json").read_text())
        assert side["gpu"]["compute_capability"] and side["plan_sha256"] == art["sha256"]
        spec_names = {i["name"] for i in art["io_spec"]["inputs"]} | {o["name"] for o in art["io_spec"]["outputs"]}
        assert {io["name"] for io in side["io"]} == spec_names
        assert json.loads((out / f"{t}.layers.json").read_text())
        assert [c["shape"] for c in art["verification"]["checks"]] == ["min", "opt", "max"]
        assert art["verification"]["cosine_min"] >= 0.999
    assert (out / "timing.cache").stat().st_size > 0
    r = mmdk("bench", out, "--reference", tiny_clip_dir, "--target", "gpu", "--batch", "1,8", "--min-time", "0.1",
             "--min-runs", "5", "--min-rounds", "2")
    assert r.code == 0, r.err and "tensorrt" in r.out


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_build_engines_on_a_deferred_bundle(mmdk, fp16_bundle, tmp_path):
    out = tmp_path / "built"
    r = mmdk("build-engines", fp16_bundle, "-o", out)
    assert r.code == 0, r.err
    assert _man(out)["metrics"]["tensorrt"]["engines"] == "built"
    assert sorted(p.name for p in out.glob("*.plan")) == ["text.plan", "vision.plan"]


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_torch_tensorrt_export(mmdk, tiny_clip_dir, tmp_path):
    pytest.importorskip("torch_tensorrt")
    out = tmp_path / "tt"
    r = mmdk("export", tiny_clip_dir, "--target", "torch-tensorrt", "--precision", "fp16", "-o", out)
    assert r.code == 0, r.err
    assert all(a["verification"]["cosine_min"] >= 0.999 for a in _man(out)["artifacts"])
