"""Benchmark (issue 10): prune the fusion-classifier demo and distill it with logits + label losses.

    .venv/bin/python benchmarks/prune_distill_fusion.py     # ~10 min on 2 busy cores once the fusion demo is cached

The fusion demo (``mmdk demo --variant fusion``: BERT-style text encoder + small ResNet, concat -> MLP) is
pruned by ``--ratio`` of its parameters (attention heads, MLP widths, conv channels; the classifier's output
layer is kept), then distilled against the unpruned model (logits=1,label=1) on its train manifest. Held-out
accuracy of teacher / pruned / distilled comes from one bench run on the val manifest.

Target: >= 40% of parameters removed, accuracy drop <= 1 point after distillation.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quant_common import finish  # noqa: E402


def main() -> None:
    import argparse
    import json

    import mmdeploy_kit as mmdk
    from mmdeploy_kit.demo_fusion import train_fusion_demo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.45)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 on a machine shared with other jobs)")
    a = ap.parse_args()
    demo = train_fusion_demo()
    info = json.loads((demo.path / "mmdk_demo.json").read_text())
    train, val = Path(info["train_manifest"]), Path(info["val_manifest"])
    print(f"fusion demo {demo.path} (held-out accuracy {demo.metrics['accuracy']:.2f}% at training time)")
    tmp = Path(tempfile.mkdtemp(prefix="mmdk-fusion-"))
    log = lambda m: print("  ·", m)  # noqa: E731
    t0 = time.perf_counter()
    pruned = mmdk.prune(demo.path, tmp / "pruned", ratio=a.ratio, ignore=("head.2",), progress=log)
    prune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    kd = mmdk.distill(tmp / "pruned", tmp / "kd", teacher=demo.path, data=train, val=val, loss="logits=1,label=1",
                      steps=a.steps, batch=64, lr=a.lr, max_minutes=a.max_minutes, threads=a.threads, progress=log, force=True)
    kd_s = time.perf_counter() - t0
    r = mmdk.bench([f"pruned={tmp / 'pruned'}", f"kd={tmp / 'kd'}"], reference=f"teacher={demo.path}", data=val,
                   processor=demo.path, batch=[8], quiet=True, threads=1,
                   timing={"warmup_runs": 2, "min_runs": 5, "min_time_s": 0.2, "min_rounds": 3, "max_time_s": 10})
    acc = {k: r.accuracy.primary[k]["accuracy"] for k in ("teacher", "pruned", "kd")}
    tower = pruned.metrics["towers"]["model"]
    drop = acc["teacher"] - acc["kd"]
    speed = {x.artifact: x.speedup.model_dump() for x in r.latency if x.speedup}
    lines = [f"# Fusion classifier demo: prune {a.ratio:.0%}, distill with logits=1,label=1 (2 cores, AVX2)", "",
             f"parameters {tower['params_before']:,} -> {tower['params_after']:,} "
             f"({tower['removed_fraction']:.1%} removed); val: {r.accuracy.n_samples} rows, {r.accuracy.n_classes} classes",
             "", "| model | accuracy | drop vs teacher |", "|---|---|---|",
             f"| teacher | {acc['teacher']:.2f} | |",
             f"| pruned, no training | {acc['pruned']:.2f} | {acc['teacher'] - acc['pruned']:+.2f} pt |",
             f"| pruned + distilled ({kd.metrics['steps']} steps, {kd_s:.0f}s) | {acc['kd']:.2f} | {drop:+.2f} pt |",
             "", f"Targets: >= 40% removed {'PASS' if tower['removed_fraction'] >= 0.40 else 'FAIL'}; "
             f"drop <= 1 pt {'PASS' if drop <= 1.0 else 'FAIL'}",
             "torch eager batch 8, 1 thread (AVX2), vs teacher: " + ", ".join(
                 f"{k} {v['ratio']:.2f}x [{v['ci_low']:.2f}, {v['ci_high']:.2f}]" for k, v in speed.items()),
             f"prune took {prune_s:.0f}s"]
    finish("prune_distill_fusion", {"checkpoint": str(demo.path), "ratio": a.ratio, "params": tower, "accuracy": acc,
                                    "accuracy_drop": round(drop, 3), "distill": {k: kd.metrics[k] for k in (
                                        "steps", "epochs", "train_seconds", "stopped_by_time", "best", "eval")},
                                    "torch_speedup_batch8": speed, "prune_seconds": round(prune_s, 1)}, lines)


if __name__ == "__main__":
    main()
