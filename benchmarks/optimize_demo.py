"""Benchmark (issue 17): `mmdk optimize` on the demo CLIP vs the built-in `clip-prune-distill-int8` recipe.

    .venv/bin/python benchmarks/optimize_demo.py --max-minutes 30          # the issue's budget
    .venv/bin/python benchmarks/optimize_demo.py --max-minutes 12 --builtin-distill-minutes 3

1. ``mmdk.optimize`` the demo checkpoint (``mmdk demo`` trains it once, ~3 min, cached) for ``--max-minutes``:
   prune ratio per tower (0 ... 0.5), distillation steps, precision per tower, calibration; budget
   ``zero_shot_top1_drop<=1`` on val.jsonl; objectives latency (+ zero-shot top-1).
2. the built-in ``clip-prune-distill-int8`` recipe on the same checkpoint and data (its distillation capped at
   ``--builtin-distill-minutes``; pruning is what makes it fast, distillation what keeps its accuracy);
3. one interleaved bench of the best trial and the built-in recipe's INT8 model against the source model (torch
   eager FP32), batch 8, 1 thread: speedups, zero-shot top-1, and their ratio.

Prints the number of finished trials, the Pareto front's size and the best trial inside the budget vs the
built-in recipe; writes benchmarks/results/optimize_demo.{json,md}.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quant_common import demo_checkpoint, final_model_dir, finish, search_table  # noqa: E402


def main() -> None:
    import argparse

    import mmdeploy_kit as mmdk
    from mmdeploy_kit import api
    from mmdeploy_kit.demo_checkpoint import DEFAULT_TEMPLATES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="an already trained demo checkpoint directory (default: train/reuse)")
    ap.add_argument("--max-minutes", type=float, default=30.0)
    ap.add_argument("--max-trials", type=int, default=60)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--budget", default="zero_shot_top1_drop<=1")
    ap.add_argument("--distill-steps", default="0,400", help="distillation steps the search may choose")
    ap.add_argument("--distill-minutes", type=float, default=2.0, help="cap per distillation inside the search")
    ap.add_argument("--builtin-distill-minutes", type=float, default=3.0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    demo = demo_checkpoint(a.checkpoint)
    data = Path(demo.data_dir)
    print(f"demo checkpoint {demo.path} (zero-shot top-1 {demo.zero_shot_top1:.1f}% at training time)")
    tmp = Path(a.out or tempfile.mkdtemp(prefix="mmdk-optimize-"))
    log = lambda m: print("  ·", m, flush=True)  # noqa: E731
    bench = {"threads": 1, "templates": list(DEFAULT_TEMPLATES), "warmup_runs": 3, "min_runs": 10,
             "min_time_s": 0.3, "min_rounds": 6, "max_time_s": 15.0}
    space = {"prune": [0.0, 0.5], "prune_step": 0.05, "distill_steps": [int(x) for x in a.distill_steps.split(",")],
             "distill_batch": 64, "distill_lr": 1e-3, "distill_max_minutes": a.distill_minutes,
             "calibration": ["minmax", "percentile"], "batch": [8]}

    t0 = time.perf_counter()
    s = api.optimize(demo.path, tmp / "search", data=data / "val.jsonl", calib_data=data / "train.jsonl",
                     train_data=data / "train.jsonl", budget=[a.budget], space=space, max_trials=a.max_trials,
                     max_minutes=a.max_minutes, workers=a.workers, bench=bench, progress=log)
    search_s = time.perf_counter() - t0
    c = s["counts"]
    print(f"search: {c['complete']} finished trials ({c['distinct_complete']} distinct), {c['fail']} failed, "
          f"Pareto front {len(s['pareto'])} in {search_s / 60:.1f} min")

    t0 = time.perf_counter()
    builtin = mmdk.run("clip-prune-distill-int8", demo.path, tmp / "builtin",
                       data={"train": data / "train.jsonl", "val": data / "val.jsonl"},
                       overrides={"distill.max_minutes": a.builtin_distill_minutes, "distill.lr": 1e-3,
                                  "bench.threads": 1, "bench.batch": [8], "bench.templates": list(DEFAULT_TEMPLATES)},
                       overwrite=True, quiet=True, progress=None)
    builtin_s = time.perf_counter() - t0
    builtin_dir = final_model_dir(builtin.out)
    arts = [f"builtin={builtin_dir}"]
    best = next((t for t in s["trials"] if t["number"] == s["best"]), None)
    if best is not None:
        arts.insert(0, f"best={final_model_dir(Path(best['run_dir']))}")
    r = mmdk.bench(arts, reference=f"source={demo.path}", data=data / "val.jsonl", batch=[8],
                   templates=DEFAULT_TEMPLATES, quiet=True, threads=1,
                   timing={"warmup_runs": 5, "min_runs": 20, "min_time_s": 1.0, "min_rounds": 10, "max_time_s": 60})
    prim = r.accuracy.primary
    sp = {k: v.model_dump() for k, v in r.speedups.items()}
    top1 = {k: prim[k]["zero_shot_top1"] for k in prim}
    ratio = sp["best"]["ratio"] / sp["builtin"]["ratio"] if best is not None else None

    lines = search_table(s, f"# mmdk optimize on the demo CLIP: {a.max_minutes:g} min, {a.workers} worker(s), "
                            f"budget {a.budget}", search_s, "zero_shot_top1", "zero-shot top-1")
    lines += ["", f"Built-in clip-prune-distill-int8 (distillation capped at {a.builtin_distill_minutes:g} min, lr 1e-3): "
              f"{builtin_s / 60:.1f} min", "",
              "One interleaved bench vs the source model (torch eager FP32), batch 8, 1 thread, val split, 4 templates:",
              "| model | speedup vs source [95% CI] | zero-shot top-1 |", "|---|---|---|",
              f"| source | 1.00x | {top1['source']:.2f} |"]
    for k in ("best", "builtin"):
        if k in sp:
            lines.append(f"| {k} | {sp[k]['ratio']:.2f}x [{sp[k]['ci_low']:.2f}, {sp[k]['ci_high']:.2f}] | {top1[k]:.2f} |")
    if ratio is not None:
        lines += ["", f"Best trial {s['best']} vs built-in recipe: {ratio:.2f}x the built-in's speedup "
                  f"({'at least as fast' if ratio >= 1 else 'slower'}); top-1 drop vs source "
                  f"{top1['source'] - top1['best']:.2f} (built-in {top1['source'] - top1['builtin']:.2f})"]
    else:
        lines += ["", "No trial met the budget."]
    finish("optimize_demo", {"checkpoint": str(demo.path), "max_minutes": a.max_minutes, "workers": a.workers,
                             "budget": a.budget, "space": space, "counts": c, "pareto": s["pareto"], "best": s["best"],
                             "trials": [{k: t[k] for k in ("number", "state", "figures", "feasible", "error",
                                                           "duplicate_of", "seconds")} | {"recipe": t["recipe"]}
                                        for t in s["trials"]],
                             "search_seconds": round(search_s, 1), "builtin_seconds": round(builtin_s, 1),
                             "final_bench": {"speedups": sp, "zero_shot_top1": top1}, "best_vs_builtin": ratio,
                             "out": str(tmp)}, lines)


if __name__ == "__main__":
    main()
