"""Pipeline overhead: export -> quantize -> bench on the demo checkpoint, three ways, interleaved in one run.

    .venv/bin/python benchmarks/pipeline_overhead.py [--checkpoint DIR] [--rounds 2]

- ``direct``: the three passes called straight (pass objects + atomic output dirs, no runner, no cache) — what
  the verbs did before the runner existed.
- ``runner``: the same three steps as a recipe through ``mmdk.run`` with an empty step cache (the runner hashes
  inputs and data, stores each step in the cache, writes mmdk_run.json and the waterfall report).
- ``cached``: the same recipe again with the cache filled: every step is a cache hit.

Targets (issue 8): the runner adds <= 5% to the direct path; a fully cached re-run takes <= 5% of the first
run. Each round runs direct, runner and cached back to back (order alternating), so machine noise hits all
three alike; the ratios are medians over rounds. The bench step uses a fixed number of runs (no time-based
stopping), so the three paths do the same work.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quant_common import demo_checkpoint, finish  # noqa: E402

BENCH = dict(target="cpu", batch=(1, 8), warmup_runs=2, min_runs=10, min_time_s=0.0, min_rounds=5, max_time_s=30.0,
             threads=1)


def recipe(calib: Path, val: Path) -> dict:
    return {"data": {"calib": str(calib), "val": str(val)},
            "steps": [{"export": {"target": "onnx"}},
                      {"quantize": {"precision": "int8", "calib_data": "calib"}},
                      {"bench": {**{k: list(v) if isinstance(v, tuple) else v for k, v in BENCH.items()},
                                 "data": "val"}}]}


def direct(checkpoint: Path, calib: Path, val: Path, out: Path) -> float:
    """The three passes without the runner (as the verbs were wired before issue 8)."""
    from mmdeploy_kit.artifacts import atomic_output_dir
    from mmdeploy_kit.model.loaders import load
    from mmdeploy_kit.passes.base import RunContext
    from mmdeploy_kit.passes.bench_step import BenchPass, BenchStepConfig
    from mmdeploy_kit.passes.export.onnx import OnnxExportConfig, OnnxExportPass
    from mmdeploy_kit.passes.quantize.config import QuantizeConfig
    from mmdeploy_kit.passes.quantize.quantize_pass import QuantizePass

    t0 = time.perf_counter()
    source = load(checkpoint)
    steps = [(OnnxExportPass(), OnnxExportConfig()),
             (QuantizePass(), QuantizeConfig(precision="int8", calib_data=str(calib))),
             (BenchPass(), BenchStepConfig(data=str(val), **BENCH))]
    model = source
    for i, (p, cfg) in enumerate(steps, 1):
        dest = out / f"{i:02d}-{p.name}"
        with atomic_output_dir(dest) as tmp:
            p.run(model, cfg, RunContext(reference=source, quiet=True), tmp).write(tmp)
        if p.produces != "report":
            model = load(dest)
    return time.perf_counter() - t0


def through_runner(checkpoint: Path, calib: Path, val: Path, out: Path) -> tuple[float, list[bool]]:
    import mmdeploy_kit as mmdk

    t0 = time.perf_counter()
    res = mmdk.run(recipe(calib, val), checkpoint, out, quiet=True)
    return time.perf_counter() - t0, [s.cached for s in res.steps]


def main() -> None:
    import argparse
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a trained demo checkpoint directory (default: train/reuse the cached one)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    demo = demo_checkpoint(args.checkpoint, quiet=True)
    data = Path(demo.data_dir)
    work = Path(tempfile.mkdtemp(prefix="mmdk-pipe-bench-"))
    rows: list[dict] = []
    os.environ["MMDK_CACHE_DIR"] = str(work / "cache-warmup")  # warm-up (imports, first-run costs): not counted
    direct(demo.path, data / "train.jsonl", data / "val.jsonl", work / "warm-d")
    through_runner(demo.path, data / "train.jsonl", data / "val.jsonl", work / "warm-r")
    for r in range(args.rounds):
        os.environ["MMDK_CACHE_DIR"] = str(work / f"cache{r}")  # an empty step cache per round
        order = ["direct", "runner"] if r % 2 == 0 else ["runner", "direct"]
        got: dict = {}
        for what in order:
            if what == "direct":
                got["direct"] = direct(demo.path, data / "train.jsonl", data / "val.jsonl", work / f"d{r}")
            else:
                got["runner"], cached = through_runner(demo.path, data / "train.jsonl", data / "val.jsonl",
                                                       work / f"r{r}")
                assert not any(cached), cached
        got["cached"], cached = through_runner(demo.path, data / "train.jsonl", data / "val.jsonl", work / f"r{r}")
        assert all(cached), cached
        rows.append(got)
        print(f"round {r + 1}: direct {got['direct']:.1f} s, runner {got['runner']:.1f} s, "
              f"cached re-run {got['cached']:.2f} s", flush=True)
    overhead = statistics.median(g["runner"] / g["direct"] - 1 for g in rows)
    cached_frac = statistics.median(g["cached"] / g["runner"] for g in rows)
    lines = ["# Pipeline overhead (export -> quantize int8 -> bench, demo checkpoint)", "",
             "| round | direct (s) | runner, empty cache (s) | cached re-run (s) |", "|---|---|---|---|",
             *[f"| {i + 1} | {g['direct']:.1f} | {g['runner']:.1f} | {g['cached']:.2f} |" for i, g in enumerate(rows)],
             "", f"Runner overhead vs direct (median of rounds): {overhead * 100:+.1f}% (target <= +5%) "
                 f"[{'PASS' if overhead <= 0.05 else 'FAIL'}]",
             f"Cached re-run / first run (median): {cached_frac * 100:.1f}% (target <= 5%) "
             f"[{'PASS' if cached_frac <= 0.05 else 'FAIL'}]"]
    finish("pipeline_overhead", {"rounds": rows, "overhead": overhead, "cached_fraction": cached_frac,
                                 "checkpoint": str(demo.path)}, lines)


if __name__ == "__main__":
    main()
