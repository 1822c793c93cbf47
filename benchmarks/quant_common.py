"""Shared helpers of the benchmark scripts (quant_*.py, bench_stability.py): the demo checkpoint, Optimum
comparison, embedding accuracy, timing, result files.

Timing goes through mmdk's own bench harness (interleaved rounds, paired speedup ratios with 95% CIs),
so every path is measured in the same run on the same inputs. Cosines, L2 normalisation, ONNX Runtime
sessions and the machine fingerprint come from the package (``mmdeploy_kit.runtime``), not from copies here.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
NOTE_THREADS = ("Read the 1-thread rows: on a shared 2-core VM (load average in the Environment line) torch's "
                "OpenMP pool at 2 threads spin-waits on descheduled peers, so its 2-thread latency - and the "
                "2-thread ratios - are inflated; ONNX Runtime runs with spinning disabled.")


def demo_checkpoint(checkpoint: Optional[str | Path] = None, quiet: bool = False) -> Any:
    """``DemoResult`` of ``train_demo_checkpoint()`` (trains when the recipe changed, else reuses the cache),
    or of an already trained demo checkpoint directory (one with ``mmdk_demo.json``)."""
    from mmdeploy_kit.demo_checkpoint import load_demo_checkpoint, train_demo_checkpoint

    return train_demo_checkpoint(quiet=quiet) if checkpoint is None else load_demo_checkpoint(checkpoint)


def final_model_dir(run_dir: Path) -> Path:
    """The model a run ended with: the output of its last step that is not a bench (a report)."""
    rec = json.loads((Path(run_dir) / "mmdk_run.json").read_text())
    return Path([s for s in rec["steps"] if s["pass_name"] != "bench"][-1]["output_dir"])


def search_table(s: dict[str, Any], title: str, search_s: float, metric: str, metric_name: str) -> list[str]:
    """Markdown of an ``mmdk optimize`` summary: counts, the front, one row per trial (task ``metric``)."""
    c = s["counts"]
    lines = [title, "", f"Finished trials: {c['complete']} ({c['distinct_complete']} distinct recipes), failed "
             f"{c['fail']}, invalid {c['pruned']}; search wall time {search_s / 60:.1f} min",
             f"Pareto front (inside the budget): {len(s['pareto'])} trial(s): {s['pareto']}", "",
             f"| trial | config | speedup (search) | {metric_name} | drop | budget | front |", "|---|---|---|---|---|---|---|"]
    for t in s["trials"]:
        f = t["figures"] or {}
        task = f.get("task") or {}
        desc = (t["recipe"] or {}).get("description", "").removeprefix("mmdk optimize trial: ")
        lines.append(f"| {t['number']}{' ★' if t['number'] == s['best'] else ''} | {desc}"
                     f"{' — ' + t['error'] if t['error'] else ''} | {f.get('speedup') or 0:.2f}x "
                     f"| {task.get(metric, float('nan')):.2f} | {task.get(metric + '_drop', float('nan')):.2f} "
                     f"| {'ok' if t['feasible'] else 'over'} | {'●' if t['number'] in s['pareto'] else ''} |")
    return lines


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


def optimum_variants(fp32_onnx: Path, out_dir: Path) -> tuple[dict[bool, dict[str, Any]], dict[str, Path]]:
    """Optimum per-tensor and per-channel on ``fp32_onnx``: ({per_channel: result}, {label: model.onnx})."""
    opt = {pc: optimum_quantize(fp32_onnx, out_dir, per_channel=pc) for pc in (False, True)}
    paths = {f"optimum_vnni_{'per_channel' if pc else 'per_tensor'}": o["dir"] / "model.onnx"
             for pc, o in opt.items() if "dir" in o}
    return opt, paths


def optimum_line(opt: dict[bool, dict[str, Any]]) -> str:
    return "Optimum: " + "; ".join(o.get("config", o.get("error", "")) for o in opt.values())


def optimum_json(opt: dict[bool, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {str(k): {kk: str(vv) for kk, vv in v.items()} for k, v in opt.items()}


def ort_outputs(path: Path, batches: list[dict[str, np.ndarray]], threads: int = 2) -> np.ndarray:
    from mmdeploy_kit.runtime.backends.ort import ort_session

    sess = ort_session(path, threads=threads, spinning=False)
    names = [i.name for i in sess.get_inputs()]
    return np.concatenate([sess.run(None, {k: b[k] for k in names})[0] for b in batches])


def embedding_accuracy(ref: np.ndarray, paths: dict[str, Path], batches: list[dict[str, np.ndarray]], digits: int,
                       extra: Optional[Callable[[np.ndarray, np.ndarray], dict[str, float]]] = None
                       ) -> dict[str, dict[str, float]]:
    """Per path: mean / min per-sample cosine of its ONNX Runtime output vs ``ref`` (+ ``extra(ref, out)``)."""
    from mmdeploy_kit.runtime.metrics import drift

    out = {}
    for label, p in paths.items():
        emb = ort_outputs(p, batches)
        d = drift(ref, emb)
        out[label] = {"cosine_mean": round(d["cosine_mean"], digits), "cosine_min": round(d["cosine_min"], digits),
                      **(extra(ref, emb) if extra else {})}
    return out


def min_cosine(ref: list[np.ndarray], outs: list[np.ndarray]) -> float:
    """The lowest per-sample cosine of ``outs`` vs ``ref`` (batches of one output), by ``runtime.metrics.drift``."""
    from mmdeploy_kit.runtime.metrics import drift

    return float(drift(np.concatenate(ref), np.concatenate(outs))["cosine_min"])


def bench_artifacts(paths: dict[str, Path]) -> list[str]:
    """``label=path`` arguments for mmdk.bench: mmdk output dirs (mmdk_*, ort_*) as dirs, other files as files."""
    return [f"{k}={v.parent if k.startswith(('mmdk', 'ort')) else v}" for k, v in paths.items()]


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


def timed_threads(artifacts: list[str], reference: str, batch: int, seq: Optional[int], io: Optional[dict],
                  timing: dict, threads: Iterable[int] = (1, 2)) -> dict[int, dict[str, Any]]:
    """:func:`timed` once per thread count: {threads: {label: row}}."""
    return {th: timed(artifacts, reference, th, batch, seq, io=io, timing=timing) for th in threads}


def environment() -> dict[str, Any]:
    """A short fingerprint for the result files, from mmdk's own probes (mmdeploy_kit.runtime.env, .artifacts)."""
    from mmdeploy_kit.artifacts import package_versions
    from mmdeploy_kit.runtime.env import available_cores, cpu_info, detect_isa, load_average

    names = ("torch", "onnxruntime", "optimum-onnx", "transformers")
    versions = package_versions(*names)
    load = load_average()
    flags = cpu_info()[1]
    isa = detect_isa() + ("+bf16" if "avx512_bf16" in flags or "amx_bf16" in flags else "")
    return {"cpu": cpu_info()[0], "isa": isa, "cores": available_cores(), "loadavg_1m": load[0] if load else None,
            **{n: versions.get(n, "-") for n in names}, "date": time.strftime("%Y-%m-%d %H:%M")}


def write_results(name: str, data: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(f"\nresults: {RESULTS / (name + '.json')} and .md")


def finish(name: str, data: dict[str, Any], lines: list[str]) -> None:
    """Append the environment line, print the Markdown and write results/<name>.json / .md (the JSON gets
    the same fingerprint under "environment")."""
    env = environment()
    text = "\n".join([*lines, "", f"Environment: {env}"])
    print("\n" + text)
    write_results(name, {**data, "environment": env}, text)


def timing_table(timings: dict[int, dict[str, Any]], reference: str) -> list[str]:
    lines = ["| threads | path | p50 ms (batch 8) | speedup vs " + reference + " [95% CI] |", "|---|---|---|---|"]
    for th, rows in timings.items():
        for label, row in rows.items():
            sp = f"{row['speedup']:.2f}x [{row['ci'][0]:.2f}, {row['ci'][1]:.2f}]" if "speedup" in row else "1.00x"
            lines.append(f"| {th} | {label} | {row['p50_ms']:.1f} | {sp} |")
    return lines + ["", NOTE_THREADS]
