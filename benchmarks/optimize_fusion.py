"""Benchmark (issue 17): `mmdk optimize` on the fusion classifier demo - its own Pareto front on accuracy.

    .venv/bin/python benchmarks/optimize_fusion.py --max-minutes 10

1. the fusion demo checkpoint (``mmdk demo --variant fusion`` trains it once, cached): a BERT-style text encoder and
   a small ResNet fused by an MLP into 24 shape classes (a factory module with its tokenizer / image processor);
2. ``mmdk.optimize`` it for ``--max-minutes``: one tower ``model`` (prune 0 ... 0.5, distillation with the
   classifier's logits + label losses, FP32 / INT8 dynamic / INT8 static), budget ``accuracy_drop<=1`` on the
   held-out split; objectives latency (+ accuracy);
3. one interleaved bench of the front's trials against the source model (torch eager FP32), batch 8, 1 thread.

Writes benchmarks/results/optimize_fusion.{json,md}.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quant_common import final_model_dir, finish, search_table  # noqa: E402


def main() -> None:
    import argparse

    import mmdeploy_kit as mmdk
    from mmdeploy_kit import api
    from mmdeploy_kit.demo_fusion import train_fusion_demo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-minutes", type=float, default=10.0)
    ap.add_argument("--max-trials", type=int, default=40)
    ap.add_argument("--budget", default="accuracy_drop<=1")
    ap.add_argument("--distill-steps", default="0,300", help="distillation steps the search may choose")
    ap.add_argument("--distill-minutes", type=float, default=1.5, help="cap per distillation inside the search")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    demo = train_fusion_demo(quiet=True)
    info = json.loads((demo.path / "mmdk_demo.json").read_text())
    train, val = info["train_manifest"], info["val_manifest"]
    print(f"fusion demo checkpoint {demo.path} (accuracy {demo.metrics['accuracy']:.1f}% at training time)")
    tmp = Path(a.out or tempfile.mkdtemp(prefix="mmdk-optimize-fusion-"))
    log = lambda m: print("  ·", m, flush=True)  # noqa: E731
    bench = {"threads": 1, "warmup_runs": 3, "min_runs": 10, "min_time_s": 0.3, "min_rounds": 6, "max_time_s": 15.0}
    space = {"prune": [0.0, 0.5], "prune_step": 0.05, "distill_steps": [int(x) for x in a.distill_steps.split(",")],
             "distill_batch": 64, "distill_lr": 2e-3, "distill_max_minutes": a.distill_minutes,
             "calibration": ["minmax", "percentile"], "runtime": ["ort"], "batch": [8]}

    t0 = time.perf_counter()
    s = api.optimize(demo.path, tmp / "search", data=val, calib_data=train, train_data=train, budget=[a.budget],
                     space=space, max_trials=a.max_trials, max_minutes=a.max_minutes, bench=bench, progress=log)
    search_s = time.perf_counter() - t0
    c = s["counts"]
    print(f"search: {c['complete']} finished trials ({c['distinct_complete']} distinct), {c['fail']} failed, "
          f"Pareto front {len(s['pareto'])} in {search_s / 60:.1f} min")

    front = [t for t in s["trials"] if t["number"] in s["pareto"]]
    arts = [f"t{t['number']}={final_model_dir(Path(t['run_dir']))}" for t in front]
    sp, acc = {}, {}
    if arts:
        r = mmdk.bench(arts, reference=f"source={demo.path}", data=val, batch=[8], quiet=True, threads=1,
                       timing={"warmup_runs": 5, "min_runs": 20, "min_time_s": 1.0, "min_rounds": 10, "max_time_s": 60})
        sp = {k: v.model_dump() for k, v in r.speedups.items()}
        acc = {k: v.get("accuracy") for k, v in r.accuracy.primary.items()}

    lines = search_table(s, f"# mmdk optimize on the fusion classifier demo: {a.max_minutes:g} min, budget {a.budget}",
                         search_s, "accuracy", "accuracy")
    if arts:
        lines += ["", "The front in one interleaved bench vs the source model (torch eager FP32), batch 8, 1 thread, "
                  "held-out split:", "| model | speedup vs source [95% CI] | accuracy |", "|---|---|---|",
                  f"| source | 1.00x | {acc.get('source', float('nan')):.2f} |"]
        for k in sorted(sp):
            lines.append(f"| {k} | {sp[k]['ratio']:.2f}x [{sp[k]['ci_low']:.2f}, {sp[k]['ci_high']:.2f}] "
                         f"| {acc.get(k, float('nan')):.2f} |")
    else:
        lines += ["", "No trial met the budget."]
    finish("optimize_fusion", {"checkpoint": str(demo.path), "max_minutes": a.max_minutes, "budget": a.budget,
                               "space": space, "counts": c, "pareto": s["pareto"], "best": s["best"],
                               "trials": [{k: t[k] for k in ("number", "state", "figures", "feasible", "error",
                                                             "duplicate_of", "seconds")} | {"recipe": t["recipe"]}
                                          for t in s["trials"]],
                               "search_seconds": round(search_s, 1), "final_bench": {"speedups": sp, "accuracy": acc},
                               "out": str(tmp)}, lines)


if __name__ == "__main__":
    main()
