"""Shared helpers of the quantization benchmarks (quant_*.py): Optimum comparison, timing, result files.

Timing goes through mmdk's own bench harness (interleaved rounds, paired speedup ratios with 95% CIs),
so every path is measured in the same run on the same inputs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
NOTE_THREADS = ("Read the 1-thread rows: on this shared 2-core VM (load average 5-9 from other jobs) torch's "
                "OpenMP pool at 2 threads spin-waits on descheduled peers, so its 2-thread latency - and the "
                "2-thread ratios - are inflated; ONNX Runtime runs with spinning disabled.")


def optimum_quantize(fp32_onnx: Path, out_dir: Path, per_channel: bool) -> dict[str, Any]:
    """Optimum's ORTQuantizer with its avx512_vnni preset (dynamic) on the very same FP32 graph.

    Returns {"dir": folder with model.onnx, "seconds": ...} or {"error": why} when optimum is absent.
    """
    try:
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
    except ImportError as exc:
        return {"error": f"optimum-onnx not installed ({exc.name})"}
    src = out_dir / "src"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fp32_onnx, src / "model.onnx")
    t0 = time.perf_counter()
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=per_channel)
    ORTQuantizer.from_pretrained(src, file_name="model.onnx").quantize(qconfig, save_dir=out_dir / "q")
    seconds = time.perf_counter() - t0
    final = out_dir / ("per_channel" if per_channel else "per_tensor")
    final.mkdir()
    shutil.copyfile(out_dir / "q" / "model_quantized.onnx", final / "model.onnx")
    shutil.rmtree(out_dir / "q")
    shutil.rmtree(src)
    return {"dir": final, "seconds": round(seconds, 1),
            "config": f"AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel={per_channel})"}


def ort_outputs(path: Path, batches: list[dict[str, np.ndarray]], threads: int = 2) -> np.ndarray:
    from mmdeploy_kit.bench.backends.ort import ort_session

    sess = ort_session(path, threads=threads, spinning=False)
    names = [i.name for i in sess.get_inputs()]
    return np.concatenate([sess.run(None, {k: b[k] for k in names})[0] for b in batches])


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def timed(artifacts: list[str], reference: str, threads: int, batch: int, seq: Optional[int],
          io: Optional[dict] = None, timing: Optional[dict] = None) -> dict[str, Any]:
    """Interleaved latency at one batch size: {label: {"p50_ms", "speedup", "ci"}} vs ``reference``."""
    import mmdeploy_kit as mmdk

    kwargs = {"io": io} if io is not None else {}
    r = mmdk.bench(artifacts, reference=reference, batch=[batch], seq=[seq] if seq else None, threads=threads,
                   timing=timing or {}, quiet=True, **kwargs)
    out: dict[str, Any] = {}
    for x in r.latency:
        row = {"p50_ms": round(x.stats.p50_ms, 2), "cv": round(x.stats.cv, 3)}
        if x.speedup is not None:
            row.update(speedup=round(x.speedup.ratio, 3), ci=[round(x.speedup.ci_low, 3), round(x.speedup.ci_high, 3)],
                       rounds=x.speedup.rounds)
        out[x.artifact] = row
    return out


def environment() -> dict[str, Any]:
    from importlib import metadata

    def v(n: str) -> str:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            return "-"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "loadavg_1m": load,
            "torch": v("torch"), "onnxruntime": v("onnxruntime"), "optimum-onnx": v("optimum-onnx"),
            "transformers": v("transformers"), "date": time.strftime("%Y-%m-%d %H:%M")}


def write_results(name: str, data: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(f"\nresults: {RESULTS / (name + '.json')} and .md")


def timing_table(timings: dict[int, dict[str, Any]], reference: str) -> list[str]:
    lines = ["| threads | path | p50 ms (batch 8) | speedup vs " + reference + " [95% CI] |", "|---|---|---|---|"]
    for th, rows in timings.items():
        for label, row in rows.items():
            sp = f"{row['speedup']:.2f}x [{row['ci'][0]:.2f}, {row['ci'][1]:.2f}]" if "speedup" in row else "1.00x"
            lines.append(f"| {th} | {label} | {row['p50_ms']:.1f} | {sp} |")
    return lines + ["", NOTE_THREADS]
