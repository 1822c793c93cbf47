"""OpenVINO runtime: bench backend (threads, inference precision in the report), `mmdk export --target openvino`
(FP32 / BF16, verified), BF16 refused on CPUs without it, `mmdk quantize --backend nncf`, and the whole path
without torch installed. Tiny ONNX graphs built here; seconds each."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")

from mmdeploy_kit.runtime import env  # noqa: E402
from mmdeploy_kit.runtime.backends.openvino import cpu_supports_bf16  # noqa: E402

BF16_HERE = cpu_supports_bf16()

TINY_ONNX = '''
import numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto as T

def build(path, seed=0):
    """Attention-like tower: x[batch, 8, 16] -> softmax(x Wq (x Wk)^T) x Wv -> mean -> Linear -> y[batch, 12]."""
    rng = np.random.default_rng(seed)
    w = {n: numpy_helper.from_array((rng.standard_normal(s) * 0.1).astype(np.float32), n)
         for n, s in (("Wq", (16, 16)), ("Wk", (16, 16)), ("Wv", (16, 16)), ("Wo", (16, 12)))}
    nodes = [helper.make_node("MatMul", ["x", "Wq"], ["q"]), helper.make_node("MatMul", ["x", "Wk"], ["k"]),
             helper.make_node("MatMul", ["x", "Wv"], ["v"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["a"]),
             helper.make_node("ReduceMean", ["a"], ["m"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["m", "Wo"], ["y"])]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", T.FLOAT, ["batch", 8, 16])],
                          [helper.make_tensor_value_info("y", T.FLOAT, ["batch", 12])], list(w.values()))
    onnx.save(helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path
'''


def _build(path: Path) -> Path:
    ns: dict = {}
    exec(TINY_ONNX, ns)  # noqa: S102 - the same source runs in the torch-free subprocess below
    return ns["build"](path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("ov") / "tiny.onnx")


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ovc") / "calib.npz"
    np.savez(p, x=np.random.default_rng(1).standard_normal((48, 8, 16)).astype(np.float32))
    return p


def _man(out: Path) -> dict:
    return json.loads((out / "mmdk_manifest.json").read_text())


def test_backend_threads_and_read_back_precision(tiny):
    from mmdeploy_kit.model.loaders import load
    from mmdeploy_kit.runtime.backends.openvino import OpenVINOBackend

    tower = next(iter(load(tiny).towers.values()))
    b = OpenVINOBackend(tower, threads=1)
    assert b.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    d = b.describe()
    assert d["backend"] == "openvino" and d["precision"] == "fp32" and d["inference_precision"] == "fp32"
    x = np.random.default_rng(0).standard_normal((3, 8, 16)).astype(np.float32)
    from mmdeploy_kit.runtime.backends.ort import OrtBackend

    ref = OrtBackend(tower, threads=1).run({"x": x})["y"]
    assert np.allclose(b.run({"x": x})["y"], ref, atol=1e-4)
    # an FP32 tower OpenVINO computes in BF16 is reported as bf16, never fp32
    b.inference_precision = "bf16"
    assert b.describe()["precision"] == "bf16"


def test_export_openvino_fp32_verified_and_benched(mmdk, tiny, tmp_path):
    out = tmp_path / "ir"
    r = mmdk("export", tiny, "--target", "openvino", "-o", out)
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["mmdk_manifest.json", "tiny.bin", "tiny.xml"]
    art = _man(out)["artifacts"][0]
    assert art["kind"] == "openvino" and art["precision"] == "fp32" and art["details"]["inference_precision"] == "fp32"
    assert art["verification"]["cosine_min"] >= 0.9999 and len(art["verification"]["checks"]) >= 2
    rep = tmp_path / "r.json"
    r = mmdk("bench", f"ov={out}", "--reference", tiny, "--batch", "2", "--threads", "1", "--warmup", "1",
             "--min-runs", "3", "--min-time", "0.05", "--report", rep, "--quiet")
    assert r.code == 0, r.err
    towers = {a["label"]: a["towers"]["tiny"] for a in json.loads(rep.read_text())["artifacts"]}
    assert towers["ov"]["backend"] == "openvino" and towers["ov"]["inference_precision"] == "fp32"
    assert towers["ov"]["threads"] == 1


@pytest.mark.skipif(not BF16_HERE, reason="this CPU has no AVX512_BF16 / AMX")
def test_export_openvino_bf16_runs_in_bf16(mmdk, tiny, tmp_path):
    out = tmp_path / "bf16"
    r = mmdk("export", tiny, "--target", "openvino", "--precision", "bf16", "-o", out)
    assert r.code == 0, r.err
    art = _man(out)["artifacts"][0]
    assert art["precision"] == "bf16" and art["details"]["inference_precision"] == "bf16"
    assert 0.999 <= art["verification"]["cosine_min"] < 1.0  # verified like FP16, and really reduced precision


def test_bf16_refused_without_cpu_support(mmdk, tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(env, "cpu_info", lambda: ("Fake AVX2 CPU", ["avx", "avx2", "fma", "avx512_vnni"]))
    r = mmdk("export", tiny, "--target", "openvino", "--precision", "bf16", "-o", tmp_path / "no")
    assert r.code == 3 and r.one_line_error() and "AVX512_BF16 or AMX" in r.err
    assert not (tmp_path / "no").exists()


def test_quantize_nncf_int8(mmdk, tiny, calib, tmp_path):
    out = tmp_path / "q"
    r = mmdk("-q", "quantize", tiny, "--backend", "nncf", "--calib-data", calib, "--calib-samples", "32",
             "--holdout-samples", "16", "--accuracy-budget", "cosine>=0.98", "-o", out)
    assert r.code == 0, r.err
    man = _man(out)
    art = man["artifacts"][0]
    assert art["kind"] == "openvino" and art["precision"] == "int8" and art["path"] == "tiny.xml"
    assert art["details"]["model_type"] == "transformer" and art["details"]["tried"][-1]["holds"]
    assert art["verification"]["cosine"] >= 0.98 and man["metrics"]["budgets"][0]["holds"]
    xml = (out / "tiny.xml").read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml  # really quantized


def test_quantize_nncf_options_are_recorded(tiny, calib, tmp_path):
    import mmdeploy_kit as mmdk_api

    man = mmdk_api.quantize(tiny, tmp_path / "q", backend="nncf", calib_data=calib, calib_samples=32,
                            holdout_samples=16, nncf_smooth_quant=False, min_cosine=0.9)
    d = man.artifacts[0].details
    assert d["smooth_quant"] is False and d["tried"][0]["how"] == "defaults" and d["inference_precision"]


def test_nncf_needs_calibration_data(mmdk, tiny, tmp_path):
    r = mmdk("quantize", tiny, "--backend", "nncf", "-o", tmp_path / "q")
    assert r.code == 2 and r.one_line_error() and "calibration data" in r.err


def test_openvino_path_without_torch(tmp_path):
    """ONNX in -> IR -> bench, with torch / transformers imports blocked (as on a box without them)."""
    code = textwrap.dedent('''
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("torch", "transformers"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Block())
        ''') + TINY_ONNX + textwrap.dedent(f'''
        import mmdeploy_kit as mmdk
        src = build({str(tmp_path / "t.onnx")!r})
        mmdk.export(src, {str(tmp_path / "ir")!r}, target="openvino")
        rep = mmdk.bench([{str(tmp_path / "ir")!r}], backend="openvino", batch=[2], threads=1, quiet=True,
                         timing={{"warmup_runs": 1, "min_runs": 3, "min_time_s": 0.05}})
        assert "torch" not in sys.modules
        print("OK", rep.artifacts[0].towers["t"].backend, rep.artifacts[0].towers["t"].inference_precision)
        ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "OK openvino fp32"


def test_export_target_cpu_keeps_the_fastest_within_budget(tiny, calib, tmp_path):
    import mmdeploy_kit as mmdk_api

    cands = ("ort:fp32", "openvino:fp32", "openvino:int8", "openvino:bf16")
    man = mmdk_api.export(tiny, tmp_path / "best", target="cpu", candidates=cands, calib_data=calib, threads=1,
                          accuracy_budget=("cosine>=0.95",), batch=4, min_time_s=0.1, min_rounds=2, calib_samples=32,
                          holdout_samples=16)
    c = man.metrics["cpu_choice"]["tiny"]
    rows = c["candidates"]
    assert set(rows) == set(cands) and c["chosen"] in cands and c["baseline"] == "ort:fp32"
    measured = [k for k, r in rows.items() if "ms_per_batch" in r]
    assert "ort:fp32" in measured and "openvino:int8" in measured
    assert rows["openvino:int8"]["within_budget"] and rows["openvino:int8"]["precision"] == "int8"
    assert (rows["openvino:bf16"].get("skipped") is not None) == (not BF16_HERE)
    best = max((k for k in measured if rows[k]["within_budget"]), key=lambda k: rows[k]["speedup_vs_ort_fp32"][0])
    assert c["chosen"] == best
    art = man.artifacts[0]
    assert art.details["cpu_choice"] == best and (tmp_path / "best" / art.path).is_file()
    assert art.kind == ("onnx" if best.startswith("ort") else "openvino")


def test_export_target_cpu_rejects_unknown_candidates_and_task_budgets(mmdk, tiny, tmp_path):
    import mmdeploy_kit as mmdk_api
    from mmdeploy_kit.errors import UserInputError

    with pytest.raises(UserInputError, match="unknown candidate"):
        mmdk_api.export(tiny, tmp_path / "x", target="cpu", candidates=("tensorrt:fp16",))
    with pytest.raises(UserInputError, match="per-tower budgets"):
        mmdk_api.export(tiny, tmp_path / "y", target="cpu", accuracy_budget=("zero_shot_top1_drop<=1",))


def test_gelu_output_matmuls_are_found(tmp_path):
    """The MLP down-projection after an Erf-form GELU is the one the budget ladder keeps in float."""
    from onnx import TensorProto as T, helper, numpy_helper

    from mmdeploy_kit.passes.quantize.nncf import gelu_output_matmuls

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W1", (8, 16)), ("W2", (16, 8)))] + \
            [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("r2", 1.4142135), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"), helper.make_node("Div", ["h", "r2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["e", "one"], ["a"]),
             helper.make_node("Mul", ["h", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["g"]),
             helper.make_node("MatMul", ["g", "W2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", T.FLOAT, ["batch", 8])],
                          [helper.make_tensor_value_info("y", T.FLOAT, ["batch", 8])], inits)
    onnx.save(helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "mlp.onnx"))
    found = gelu_output_matmuls(ov.Core().read_model(str(tmp_path / "mlp.onnx")))
    assert len(found) == 1 and found[0] in ("fc2", "y")  # OpenVINO may name the last op by its output


def test_nncf_int8_of_a_token_pooled_projection_keeps_the_declared_output_rank(mmdk, tmp_path):
    """OpenVINO's CPU plugin compiles the INT8 graph of ... -> MatMul -> h[:, 0] -> MatMul (a text tower pooled at
    its first token, then projected: AltCLIP) with a [1, batch, 16] output for its declared [batch, 16]; mmdk's
    `clip-cpu-best` on AltCLIP ended in an internal 'shape mismatch' error. Outputs keep the declared rank."""
    from onnx import TensorProto, helper, numpy_helper

    from mmdeploy_kit.model.loaders import load
    from mmdeploy_kit.runtime.backends.openvino import OpenVINOBackend

    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "W1"),
            numpy_helper.from_array(rng.standard_normal((16, 12)).astype(np.float32), "W"),
            numpy_helper.from_array(np.array(0, dtype=np.int64), "idx")]
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=-1),  # a Softmax: NNCF's transformer preset
             helper.make_node("MatMul", ["s", "W1"], ["h"]), helper.make_node("Gather", ["h", "idx"], ["p"], axis=1),
             helper.make_node("MatMul", ["p", "W"], ["y"])]
    g = helper.make_graph(nodes, "pooled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 12])], init)
    src = tmp_path / "pooled.onnx"
    onnx.save(helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 13)]), str(src))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=rng.standard_normal((32, 8, 16)).astype(np.float32))
    out = tmp_path / "q"
    r = mmdk("-q", "quantize", src, "--backend", "nncf", "--calib-data", calib, "--calib-samples", "24",
             "--holdout-samples", "8", "-o", out)
    assert r.code == 0, r.err
    assert _man(out)["artifacts"][0]["verification"]["cosine"] >= 0.9
    b = OpenVINOBackend(next(iter(load(out).towers.values())), threads=1)
    assert b.run({"x": rng.standard_normal((3, 8, 16)).astype(np.float32)})["y"].shape == (3, 12)
    from mmdeploy_kit.runtime.backends.openvino import fit_rank

    assert fit_rank(np.zeros((1, 3, 12)), 2).shape == (3, 12) and fit_rank(np.zeros((1, 12)), 2).shape == (1, 12)


def test_an_average_pool_whose_window_covers_its_input_reads_as_a_global_pool(mmdk, tmp_path):
    """ALIGN's pooler is AvgPool2d(hidden_dim, ceil_mode=True): a kernel larger than the feature map. OpenVINO's
    ONNX reader refuses it ('Kernel ... larger than the data shape') - and with ALIGN's computed 'same' pads it
    crashed the process (segmentation fault) in clip-cpu-best. It is read as the GlobalAveragePool it is."""
    from onnx import TensorProto, helper, numpy_helper

    from mmdeploy_kit.runtime.backends.openvino import global_average_pools

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[8, 8], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["c"], ["p"], kernel_shape=[16, 16], strides=[16, 16], ceil_mode=1),
             helper.make_node("Flatten", ["p"], ["y"])]
    g = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w])
    src = tmp_path / "pool.onnx"
    onnx.save(helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    out = tmp_path / "ir"
    r = mmdk("-q", "export", src, "--target", "openvino", "-o", out)
    assert r.code == 0, r.err
    assert _man(out)["artifacts"][0]["verification"]["cosine_min"] >= 0.9999
    assert global_average_pools(onnx.load(str(src))) == 1
    nodes[1] = helper.make_node("AveragePool", ["c"], ["p"], kernel_shape=[1, 1], strides=[1, 1])  # 4 windows of 1x1
    assert global_average_pools(helper.make_model(helper.make_graph(nodes, "ok", g.input, g.output, [w]))) == 0



def test_export_target_cpu_of_one_tower_keeps_the_others_as_fp32_onnx(mmdk, tiny_clip_dir, tmp_path):
    """`--tower text` on a checkpoint: the text tower is chosen, the vision tower is its verified FP32 ONNX (an internal
    FileNotFoundError before: it was copied after its scratch folder was gone)."""
    out = tmp_path / "best"
    r = mmdk("-q", "export", tiny_clip_dir, "--tower", "text", "--target", "cpu", "-o", out)
    assert r.code == 0, r.err
    man = _man(out)
    by = {a["tower"]: a for a in man["artifacts"]}
    assert set(by) == {"vision", "text"} and list(man["metrics"]["cpu_choice"]) == ["text"]
    assert by["vision"]["precision"] == "fp32" and (out / by["vision"]["path"]).is_file()
    assert (out / by["text"]["path"]).is_file()


def test_a_graph_openvino_cannot_compile_is_one_line_and_cpu_choice_rejects_that_candidate(tiny, calib, tmp_path,
                                                                                          monkeypatch):
    """OpenVINO 2026.4 fails to compile some NNCF INT8 graphs (AltCLIP's text tower exported by transformers 5:
    'Check convert->constant_fold(...) failed'): an ExportError naming the file, and `--target cpu` goes on with
    the other candidates instead of an internal error."""
    import openvino as ov

    import mmdeploy_kit as mmdk_api
    from mmdeploy_kit.errors import ExportError
    from mmdeploy_kit.runtime.backends.openvino import compile_tower

    real = ov.Core.compile_model

    def fails_on_int8(self, model, *args, **kwargs):
        if any("FakeQuantize" == op.get_type_name() for op in model.get_ops()):
            raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\nCheck 'convert->constant_fold("
                               "replacements, convert->input_values())' failed at constant_folding.cpp:71\n")
        return real(self, model, *args, **kwargs)

    monkeypatch.setattr(ov.Core, "compile_model", fails_on_int8)
    with pytest.raises(ExportError, match="OpenVINO cannot compile tiny.onnx"):
        monkeypatch.setattr(ov.Core, "compile_model", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        compile_tower(tiny, "fp32", threads=1)
    kw = dict(target="cpu", candidates=("ort:fp32", "openvino:int8"), calib_data=calib, threads=1,
              accuracy_budget=("cosine>=0.95",), batch=4, min_time_s=0.1, min_rounds=2, calib_samples=32,
              holdout_samples=16)
    monkeypatch.setattr(ov.Core, "compile_model", real)
    mmdk_api.export(tiny, tmp_path / "warm", **kw)  # the INT8 sub-step now comes from the step cache: no compile there
    monkeypatch.setattr(ov.Core, "compile_model", fails_on_int8)
    for run in ("cached", "fresh"):  # the failure met when timing a cached build, and when building it
        # (min_rounds only changes the choice step's own key: its INT8 sub-step is a cache hit unless forced)
        man = mmdk_api.export(tiny, tmp_path / run, force=(run == "fresh"), **{**kw, "min_rounds": 3})
        rows = man.metrics["cpu_choice"]["tiny"]["candidates"]
        assert "OpenVINO cannot compile" in rows["openvino:int8"]["rejected"], run
        assert man.metrics["cpu_choice"]["tiny"]["chosen"] == "ort:fp32"


def _patch_tower(path: Path, stride: int = 4, pads=(0, 0, 0, 0)) -> Path:
    """A ViT-like tower: patch-embedding Conv (kernel 4, stride ``stride``) -> tokens -> MatMul -> mean."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {n: numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
         for n, s in (("w", (16, 3, 4, 4)), ("b", (16,)), ("Wf", (16, 16)))}
    w["shape"] = numpy_helper.from_array(np.array([0, 16, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[4, 4], strides=[stride, stride],
                              pads=list(pads)),
             helper.make_node("Reshape", ["c", "shape"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "Wf"], ["h"]), helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("ReduceMean", ["a"], ["y"], axes=[1], keepdims=0)]
    g = helper.make_graph(nodes, "patch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], list(w.values()))
    onnx.save(helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_nncf_reads_a_patch_embedding_conv_as_the_matmul_it_is(tmp_path):
    """OpenVINO's INT8 Conv runs a ViT patch embedding (stride = kernel, 3 input channels) at half its INT8 MatMul
    throughput (benchmarks/ov_int8_headroom.py): the IRs mmdk writes (NNCF INT8, export --target openvino) have it
    as Reshape/Transpose + MatMul, the same function (FP32 outputs equal), and the manifest says so. Convs that
    overlap or pad are left alone; recipes can turn it off (nncf_patch_matmul / patch_matmul: false)."""
    import mmdeploy_kit as mmdk_api
    from mmdeploy_kit.runtime.backends.openvino import patch_convs_as_matmul, read_model_rewritten

    src = _patch_tower(tmp_path / "patch.onnx")
    core = ov.Core()
    x = np.random.default_rng(1).standard_normal((5, 3, 16, 16)).astype(np.float32)
    model, n = read_model_rewritten(core, src, patch_matmul=True)
    assert n == 1 and not any(op.get_type_name() == "Convolution" for op in model.get_ops())
    cfg = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    want = core.compile_model(core.read_model(str(src)), "CPU", cfg)(x)[0]
    np.testing.assert_allclose(core.compile_model(model, "CPU", cfg)(x)[0], want, rtol=1e-5, atol=1e-5)
    assert patch_convs_as_matmul(onnx.load(str(_patch_tower(tmp_path / "overlap.onnx", stride=2)))) == 0
    assert patch_convs_as_matmul(onnx.load(str(_patch_tower(tmp_path / "pad.onnx", pads=(1, 1, 1, 1))))) == 0

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(2).standard_normal((48, 3, 16, 16)).astype(np.float32))
    for on in (True, False):
        out = tmp_path / f"q_{on}"
        man = mmdk_api.quantize(src, out, backend="nncf", calib_data=calib, calib_samples=32, holdout_samples=16,
                                min_cosine=0.9, nncf_patch_matmul=on)
        art = man.artifacts[0]
        assert art.details["patch_convs_as_matmul"] == (1 if on else 0)
        ops = {op.get_type_name() for op in core.read_model(str(out / art.path)).get_ops()}
        assert ("Convolution" in ops) is not on and "FakeQuantize" in ops
        assert art.verification["cosine"] >= 0.9
        ir = mmdk_api.export(src, tmp_path / f"ir_{on}", target="openvino", patch_matmul=on).artifacts[0]
        assert ir.details["patch_convs_as_matmul"] == (1 if on else 0) and ir.verification["cosine_min"] >= 0.9999
        ops = {op.get_type_name() for op in core.read_model(str(tmp_path / f"ir_{on}" / ir.path)).get_ops()}
        assert ("Convolution" in ops) is not on
