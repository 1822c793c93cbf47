"""Are `mmdk bench` speedup ratios reproducible on a noisy shared machine?

On the demo checkpoint (trained once, then cached): export it to ONNX, run
``mmdk bench onnx=EXPORT --reference torch=CHECKPOINT --data val.jsonl`` twice back to back, and compare
the two runs' speedup ratios (ONNX Runtime over torch eager, geometric mean over towers x batch sizes,
from interleaved rounds). Target: the two ratios within 5% of each other. Absolute latencies are printed
too, to show how much more they drift than the ratios. Also checks the `mmdk compare` exit codes on
an identical report (0) and on one whose p50 latency is 20% worse (1).

Defaults are for a small machine shared with other jobs (the one this repo is developed on): one
intra-op thread (with 2 threads on 2 busy cores, torch's OpenMP workers wait for each other for
hundreds of ms per run) and ``--clock cpu`` (speedups from process CPU time per run, which preemption
by other processes does not inflate). Wall-clock p50 ratios from the same runs are printed alongside.

    .venv/bin/python benchmarks/bench_stability.py [--min-time 2] [--threads 1] [--clock cpu]

Writes benchmarks/results/bench_stability.txt (and the first run's HTML/Markdown reports next to it,
as bench_stability_run1.html / .md). ``--checkpoint DIR`` benchmarks an existing demo checkpoint instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quant_common import RESULTS, demo_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MMDK = [sys.executable, "-m", "mmdeploy_kit.cli"]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, text=True, capture_output=True, **kw)


def bench_once(k: int, ckpt: Path, onnx: Path, val: Path, work: Path, args: argparse.Namespace) -> dict:
    from mmdeploy_kit.demo_checkpoint import DEFAULT_TEMPLATES

    tmpl = [x for t in DEFAULT_TEMPLATES for x in ("--template", t)]
    out = work / f"run{k}"
    cmd = [*MMDK, "bench", f"onnx={onnx}", "--reference", f"torch={ckpt}", "--data", val, "--batch", "1,8",
           *tmpl, "--min-time", args.min_time, "--min-rounds", args.min_rounds, "--clock", args.clock, "--quiet",
           "--report", out.with_suffix(".json"), "--markdown", out.with_suffix(".md"),
           "--html", out.with_suffix(".html"), "--junit", out.with_suffix(".xml")]
    if args.threads and args.threads != "0":
        cmd += ["--threads", args.threads]
    t0 = time.perf_counter()
    res = run(cmd)
    if res.returncode != 0:
        sys.exit(f"bench run {k} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    data = json.loads(out.with_suffix(".json").read_text())
    data["_wall_s"] = time.perf_counter() - t0
    return data


def per_config(rep: dict) -> dict[tuple, dict]:
    out = {}
    for r in rep["latency"]:
        key = (r["tower"], r["batch"], r["seq"])
        out.setdefault(key, {})[r["artifact"]] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-time", default="2.0", help="seconds of timed runs per artifact and shape")
    ap.add_argument("--min-rounds", default="20", help="minimum interleaved rounds per shape")
    ap.add_argument("--threads", default="1", help="intra-op threads ('0': all available cores)")
    ap.add_argument("--clock", default="cpu", choices=("wall", "cpu"), help="clock the speedups come from")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="an HF demo checkpoint dir (with mmdk_demo.json) instead of train_demo_checkpoint()")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_stability.txt")
    args = ap.parse_args()

    from mmdeploy_kit.runtime.stats import relative_difference

    demo = demo_checkpoint(args.checkpoint, quiet=True)
    ckpt, data_dir, variant = demo.path, Path(demo.data_dir), demo.variant
    val = data_dir / "val.jsonl"
    work = Path(tempfile.mkdtemp(prefix="mmdk-bench-stability-"))
    onnx = work / "onnx"
    res = run([*MMDK, "--quiet", "export", ckpt, "-o", onnx])
    if res.returncode != 0:
        sys.exit(f"export failed:\n{res.stderr[-3000:]}")

    runs = [bench_once(k, ckpt, onnx, val, work, args) for k in (1, 2)]
    lines = ["# mmdk bench stability: ONNX Runtime export vs torch eager, demo checkpoint, two consecutive runs",
             f"checkpoint: {ckpt.name} ({variant}); data: {val.name} ({runs[0]['accuracy']['n_samples']} "
             f"samples); batches 1,8; min_time {args.min_time} s, min_rounds {args.min_rounds}, "
             f"threads {runs[0]['environment']['threads']}, speedups from the {args.clock} clock",
             f"machine: {runs[0]['environment']['cpu_model']}, {runs[0]['environment']['cpu_cores_available']} cores, "
             f"flags {' '.join(runs[0]['environment']['cpu_flags'])}; "
             + ", ".join(f"{k} {v}" for k, v in runs[0]["environment"]["packages"].items()
                         if k in ("torch", "onnxruntime", "transformers")), ""]
    ratios = []
    for k, rep in enumerate(runs, 1):
        sp = rep["speedups"]["onnx"]
        ratios.append(sp["ratio"])
        prim = rep["accuracy"]["primary"]
        lines.append(f"run {k}: speedup {sp['ratio']:.3f}x  {int(sp['confidence'] * 100)}% CI "
                     f"[{sp['ci_low']:.3f}, {sp['ci_high']:.3f}]  ({rep['_wall_s']:.0f} s wall); zero-shot top-1 "
                     f"torch {prim['torch']['zero_shot_top1']:.2f}% / onnx {prim['onnx']['zero_shot_top1']:.2f}%; "
                     f"i2t R@1 {prim['torch']['i2t_R@1']:.1f} / {prim['onnx']['i2t_R@1']:.1f}; "
                     f"t2i R@1 {prim['torch']['t2i_R@1']:.1f} / {prim['onnx']['t2i_R@1']:.1f}")
    diff = relative_difference(*ratios)
    verdict = "PASS" if diff <= 0.05 else "FAIL"
    lines += [f"relative difference of the two speedup ratios: {diff * 100:.2f}%  [{verdict}: target <= 5%]", "",
              f"per shape: {args.clock}-clock speedup run1 / run2 (rel. diff) | wall p50 ratio run1 / run2 "
              "(rel. diff) | torch wall p50 ms run1 / run2 (rel. diff) | onnx wall p50 ms run1 / run2 (rel. diff)"]
    c1, c2 = per_config(runs[0]), per_config(runs[1])
    for key in c1:
        a, b = c1[key], c2[key]
        s1, s2 = a["onnx"]["speedup"]["ratio"], b["onnx"]["speedup"]["ratio"]
        t1, t2 = a["torch"]["stats"]["p50_ms"], b["torch"]["stats"]["p50_ms"]
        o1, o2 = a["onnx"]["stats"]["p50_ms"], b["onnx"]["stats"]["p50_ms"]
        name = f"{key[0]} b={key[1]}" + (f" seq={key[2]}" if key[2] else "")
        w1, w2 = t1 / o1, t2 / o2
        lines.append(f"  {name:<18} {s1:6.3f}x / {s2:6.3f}x ({relative_difference(s1, s2) * 100:4.1f}%) | "
                     f"{w1:6.3f}x / {w2:6.3f}x ({relative_difference(w1, w2) * 100:4.1f}%) | "
                     f"{t1:8.3f} / {t2:8.3f} ({relative_difference(t1, t2) * 100:4.1f}%) | "
                     f"{o1:7.3f} / {o2:7.3f} ({relative_difference(o1, o2) * 100:4.1f}%)")

    # mmdk compare: identical report -> 0; p50 20% worse -> 1
    r1 = work / "run1.json"
    worse = json.loads(r1.read_text())
    for r in worse["latency"]:
        r["stats"]["p50_ms"] *= 1.2
    (work / "worse.json").write_text(json.dumps(worse))
    same = run([*MMDK, "compare", r1, r1]).returncode
    slower = run([*MMDK, "compare", r1, work / "worse.json", "--max-latency-regression", "10%"]).returncode
    lines += ["", f"mmdk compare run1 run1 -> exit {same} (expect 0); "
                  f"mmdk compare run1 run1-with-p50x1.2 --max-latency-regression 10% -> exit {slower} (expect 1)"]

    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    for ext in ("html", "md"):
        shutil.copy(work / f"run1.{ext}", args.out.with_name(f"{args.out.stem}_run1.{ext}"))
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if verdict == "PASS" and same == 0 and slower == 1 else 1)


if __name__ == "__main__":
    main()
