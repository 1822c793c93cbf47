"""Do `mmdk bench` intervals cover run-to-run variation? N back-to-back runs of the CI mode, then overlap and compare.

Builds a small VisionTextDualEncoder (ViT + BERT, random weights, from configs: nothing downloads), exports it
with ``mmdk export``, then runs the command the README recommends for CI gates N times back to back
(issue 19's setting):

    mmdk bench exp=EXPORT --reference ckpt=CHECKPOINT --target cpu --batch 4 --clock cpu --threads 1 --report sK.json

(the CI mode spreads its rounds over 3 worker processes by default and resamples whole processes for the
intervals). It prints each run's speedup with its 95% interval, how many of the N(N-1)/2 pairs of runs have
overlapping intervals (headline and per shape), the largest run-to-run difference of the speedups, and the
exit code of ``mmdk compare sK.json sL.json --max-latency-regression 10%`` for every pair (0 expected: same
artifacts). ``--contrast`` repeats the N runs with ``--processes 1`` (the single-process intervals of before).

    .venv/bin/python benchmarks/bench_stability.py [--runs 5] [--contrast] [--precision 5%] [--out FILE]

Writes benchmarks/results/bench_stability.txt (and the first run's Markdown report next to it, as
bench_stability_ci_run1.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MMDK = [sys.executable, "-m", "mmdeploy_kit.cli"]


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, text=True, capture_output=True, **kw)


def build_model(path: Path) -> Path:
    """A small ViT + BERT dual encoder (about 1-2 ms per tower at batch 4 on one core)."""
    import torch
    from transformers import BertConfig, ViTConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    torch.manual_seed(0)
    vision = ViTConfig(image_size=64, patch_size=8, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                       num_attention_heads=4)
    text = BertConfig(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                      num_attention_heads=4, max_position_embeddings=64)
    cfg = VisionTextDualEncoderConfig.from_vision_text_configs(vision, text, projection_dim=64)
    VisionTextDualEncoderModel(cfg).eval().save_pretrained(str(path), safe_serialization=True)
    return path


def bench(k: int, ckpt: Path, exp: Path, work: Path, args: argparse.Namespace, processes: str | None) -> dict:
    out = work / f"s{k}{'_p' + processes if processes else ''}.json"
    cmd = [*MMDK, "bench", f"exp={exp}", "--reference", f"ckpt={ckpt}", "--target", "cpu", "--batch", "4",
           "--clock", "cpu", "--threads", "1", "--quiet", "--report", out]
    if processes:
        cmd += ["--processes", processes]
    if args.precision:
        cmd += ["--precision", args.precision]
    if k == 1 and not processes:
        cmd += ["--markdown", work / "run1.md"]
    t0 = time.perf_counter()
    res = run(cmd)
    if res.returncode != 0:
        sys.exit(f"bench run {k} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    data = json.loads(out.read_text())
    data["_wall_s"] = time.perf_counter() - t0
    data["_path"] = str(out)
    return data


def overlap(a: dict, b: dict) -> bool:
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]


def summarize(runs: list[dict], title: str) -> tuple[list[str], dict]:
    from mmdeploy_kit.runtime.stats import relative_difference

    lines = [title]
    for k, rep in enumerate(runs, 1):
        sp = rep["speedups"]["exp"]
        lines.append(f"  run {k}: {sp['ratio']:.3f}x [{sp['ci_low']:.3f}, {sp['ci_high']:.3f}] (+-{sp['half_width_pct']:.1f}%, "
                     f"{rep['processes']} process(es), {rep['_wall_s']:.0f} s)")
    pairs = list(itertools.combinations(range(len(runs)), 2))
    head = [r["speedups"]["exp"] for r in runs]
    ov = sum(overlap(head[i], head[j]) for i, j in pairs)
    diff = max(relative_difference(head[i]["ratio"], head[j]["ratio"]) for i, j in pairs)
    lines.append(f"  headline: {ov}/{len(pairs)} pairs of intervals overlap; largest run-to-run difference of the "
                 f"speedups {diff * 100:.1f}%")
    shapes = {}
    for r in runs:
        for x in r["latency"]:
            if x["speedup"] is not None:
                shapes.setdefault(f"{x['tower']} b={x['batch']}" + (f" s={x['seq']}" if x["seq"] else ""), []).append(x)
    worst_shape = 0.0
    for name, xs in shapes.items():
        sps = [x["speedup"] for x in xs]
        o = sum(overlap(sps[i], sps[j]) for i, j in pairs)
        d = max(relative_difference(sps[i]["ratio"], sps[j]["ratio"]) for i, j in pairs)
        p50 = [x["stats"]["p50_ms"] for x in xs]
        worst_shape = max(worst_shape, d)
        ratios = " ".join(f"{s['ratio']:.3f}" for s in sps)
        lines.append(f"  {name:<14} speedups {ratios}; {o}/{len(pairs)} overlap; "
                     f"largest difference {d * 100:.1f}% (exp wall p50 ms {min(p50):.3f}..{max(p50):.3f}, "
                     f"{(max(p50) / min(p50) - 1) * 100:.0f}% apart)")
    codes = [run([*MMDK, "compare", runs[i]["_path"], runs[j]["_path"], "--max-latency-regression", "10%"]).returncode
             for i, j in pairs]
    lines.append(f"  mmdk compare sI sJ --max-latency-regression 10% (same artifacts): exit codes {codes} "
                 f"-> {sum(c == 0 for c in codes)}/{len(codes)} pass")
    absolute = [run([*MMDK, "compare", runs[i]["_path"], runs[j]["_path"], "--max-latency-regression", "10%",
                     "--gate-absolute"]).returncode for i, j in pairs]
    lines.append(f"  the same with --gate-absolute (absolute p50 gated too, as compare did before): "
                 f"{sum(c == 0 for c in absolute)}/{len(absolute)} pass")
    return lines, {"overlap": ov, "pairs": len(pairs), "diff": diff, "shape_diff": worst_shape,
                   "compare_pass": sum(c == 0 for c in codes)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--contrast", action="store_true", help="also N runs with --processes 1")
    ap.add_argument("--precision", default=None, help="pass --precision to every run, e.g. 5%%")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_stability.txt")
    args = ap.parse_args()
    if args.runs < 2:
        sys.exit("--runs must be >= 2")

    work = Path(tempfile.mkdtemp(prefix="mmdk-bench-stability-"))
    ckpt = build_model(work / "ckpt")
    exp = work / "exp"
    res = run([*MMDK, "--quiet", "export", ckpt, "-o", exp])
    if res.returncode != 0:
        sys.exit(f"export failed:\n{res.stderr[-3000:]}")
    load = os.getloadavg()
    t0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs = [bench(k, ckpt, exp, work, args, None) for k in range(1, args.runs + 1)]
    e = runs[0]["environment"]
    lines = ["# mmdk bench stability: N back-to-back runs of the CI mode (issue 19)",
             f"model: VisionTextDualEncoder (ViT 4x128 @64px + BERT 4x128, random init), ONNX export (exp) vs torch "
             f"checkpoint (ckpt); `mmdk bench exp --reference ckpt --target cpu --batch 4 --clock cpu --threads 1"
             f"{' --precision ' + args.precision if args.precision else ''}`",
             f"machine: {e['cpu_model']}, {e['cpu_cores_available']} cores, flags {' '.join(e['cpu_flags'])}; "
             + ", ".join(f"{k} {v}" for k, v in e["packages"].items() if k in ("torch", "onnxruntime", "transformers"))
             + f"; started {t0}, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared with other jobs)",
             ""]
    block, figs = summarize(runs, f"CI mode, default worker processes ({runs[0]['processes']}):")
    lines += block
    if args.contrast:
        single = [bench(k, ckpt, exp, work, args, "1") for k in range(1, args.runs + 1)]
        block, _ = summarize(single, "\nthe same with --processes 1 (rounds in one process; the intervals of before):")
        lines += block
    widths = [r["precision_reached_pct"] for r in runs]
    overlap_all = figs["overlap"] == figs["pairs"]
    close = figs["diff"] <= 0.05
    compare_ok = figs["compare_pass"] == figs["pairs"]
    lines += ["", "target (issue 19): every pair of intervals overlaps and the medians are within 5% of each other "
                  "(or the report says the precision it could reach, and compare does not fail on it):",
              f"  every pair overlaps: {'yes' if overlap_all else 'NO'}; medians within 5%: "
              f"{'yes' if close else 'no'} ({figs['diff'] * 100:.1f}%); precision stated in every report: "
              f"+-{min(widths):.1f}% .. +-{max(widths):.1f}%; compare passed {figs['compare_pass']}/{figs['pairs']} "
              f"-> {'MET' if overlap_all and (close or compare_ok) else 'NOT MET'}"]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if (work / "run1.md").exists():
        shutil.copy(work / "run1.md", args.out.with_name(f"{args.out.stem}_ci_run1.md"))
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if figs["compare_pass"] == figs["pairs"] else 1)


if __name__ == "__main__":
    main()
