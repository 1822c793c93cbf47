"""Worker processes for ``mmdk bench --processes N`` (pyperf's approach to run-to-run variation).

Variation *between* processes (memory layout, allocator state, thread placement, a neighbour on the sibling
hyperthread for a while) is larger than between rounds inside one process, so the harness starts fresh
worker processes one after another. Each loads the artifacts itself, creates its backends, runs the
interleaved rounds of every configuration (``latency.measure``) and writes the raw per-round times as
JSON; the parent pools them and resamples whole processes for the intervals (``stats.hierarchical_speedup``).

Run as ``python -m mmdeploy_kit.runtime.workers JOB.json OUT.json`` (the parent does this). A failure in a
worker is written as ``{"error": ..., "hint": ...}`` and becomes one line in the parent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import MmdkError, UserInputError
from .schema import TimingConfig

WORKER_MODULE = "mmdeploy_kit.runtime.workers"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def job_spec(models: Sequence[Any], configs: Sequence[tuple[str, dict[str, int], Sequence[str]]], *, target: str,
             backend: str, threads: Optional[int], load_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a worker needs to rebuild the parent's contenders (``models``: the harness's BenchModels)."""
    return {"target": target, "backend": backend, "threads": threads,
            "load_kwargs": {k: (str(v) if isinstance(v, Path) else v) for k, v in load_kwargs.items()},
            "models": [{"label": m.label, "role": m.role, "source": str(m.spec), "towers": list(m.backends)}
                       for m in models if m.backends],
            "configs": [{"tower": t, "sizes": sizes, "labels": list(labels)} for t, sizes, labels in configs]}


def run_worker(job: dict[str, Any], timing: TimingConfig, index: int, timeout_s: float) -> dict[str, Any]:
    """Run one worker process to completion; its result (see ``_work``) or a one-line error."""
    with tempfile.TemporaryDirectory(prefix="mmdk-bench-worker-") as tmp:
        job_file, out_file = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps({**job, "timing": timing.model_dump(mode="json"), "index": index}))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        try:
            proc = subprocess.run([sys.executable, "-m", WORKER_MODULE, str(job_file), str(out_file)], env=env,
                                  capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UserInputError(f"bench worker process {index + 1} did not finish within {timeout_s:.0f} s",
                                 hint="raise --max-time, or use --processes 1") from None
        data = json.loads(out_file.read_text()) if out_file.is_file() else None
    if isinstance(data, dict) and "error" in data:
        err = UserInputError(data["error"], hint=data.get("hint"))
        err.exit_code = int(data.get("exit_code") or err.exit_code)  # e.g. 3 for missing hardware
        raise err
    if proc.returncode != 0 or not isinstance(data, dict):
        last = next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "no output")[:240]
        raise UserInputError(f"bench worker process {index + 1} failed (exit {proc.returncode}): {last}",
                             hint="rerun with --processes 1 to measure in this process")
    return data


def _work(job: dict[str, Any]) -> dict[str, Any]:
    from .backends.base import create_backend
    from .bench_models import backend_request, load_source, widen_guessed_dims
    from .latency import Contender, measure
    from .targets import resolve_target

    profile = resolve_target(job["target"])
    timing = TimingConfig.model_validate(job["timing"])
    models: dict[str, Any] = {}
    backends: dict[str, dict[str, Any]] = {}
    try:
        for m in job["models"]:
            model, _secs, _rss = load_source(m["source"], job["load_kwargs"])
            widen_guessed_dims(model)
            models[m["label"]] = model
            backends[m["label"]] = {}
            for t in m["towers"]:
                tower = model.towers[t]
                backends[m["label"]][t] = create_backend(tower, backend_request(m["role"], tower.kind, job["backend"]),
                                                         profile, threads=job["threads"])
        out = []
        for cfg in job["configs"]:
            t, labels = cfg["tower"], cfg["labels"]
            feeds = models[labels[0]].towers[t].spec.dummy_inputs(cfg["sizes"], seed=timing.seed)
            contenders = [Contender(label, backends[label][t], feeds) for label in labels]
            meas = measure(contenders, timing)
            out.append({"rounds": meas.rounds, "seconds": meas.seconds, "hit_max_time": meas.hit_max_time,
                        "contenders": [{"label": c.label, "rounds": c.rounds, "cpu_rounds": c.cpu_rounds,
                                        "first_run_s": c.first_run_s, "warmup_times": c.warmup_times,
                                        "peak_rss": c.peak_rss, "peak_rss_delta": c.peak_rss_delta,
                                        "gpu_memory": c.gpu_memory} for c in contenders]})
        return {"pid": os.getpid(), "configs": out}
    finally:
        for per_tower in backends.values():
            for b in per_tower.values():
                b.close()


def contenders_from(result: dict[str, Any], backends: dict[str, Any]) -> list[list[Any]]:
    """A worker's result as ``Contender`` objects per config (``backends``: label -> backend, for names)."""
    from .latency import Contender

    per_config = []
    for cfg in result["configs"]:
        cs = []
        for c in cfg["contenders"]:
            x = Contender(c["label"], backends.get(c["label"]), {})
            x.rounds, x.cpu_rounds = c["rounds"], c["cpu_rounds"]
            x.first_run_s, x.warmup_times = c["first_run_s"], c["warmup_times"]
            x.peak_rss, x.peak_rss_delta, x.gpu_memory = c["peak_rss"], c["peak_rss_delta"], c["gpu_memory"]
            cs.append(x)
        per_config.append(cs)
    return per_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m mmdeploy_kit.runtime.workers JOB.json OUT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text())
    try:
        result = _work(job)
    except MmdkError as exc:
        Path(args[1]).write_text(json.dumps({"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}))
        return 2
    Path(args[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":  # pragma: no cover - run by run_worker
    sys.exit(main())
