"""``mmdk optimize``: check everything up front, open (or join, or resume) the study, run the trials in this
process or in K worker processes (or on SSH hosts, one trial per device at a time), report progress, and write
the Pareto report, ``best.yaml`` and ``best/``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import UserInputError
from .objectives import check_budgets, parse_search_budget, resolve_path
from .space import check_space, load_space
from .trial import InvalidChoice, Settings, build_recipe, check_recipe

SETTINGS = "search.json"
Log = Optional[Callable[[str], None]]


def prepare(model: Any, out: str | Path, *, target: str = "cpu", data: Optional[str | Path] = None,
            calib_data: Optional[str | Path] = None, train_data: Optional[str | Path] = None,
            budgets: Sequence[str] = (), objectives: Sequence[str] = ("latency",), space: Any = None,
            max_trials: int = 20, max_minutes: Optional[float] = None, workers: int = 1,
            storage: Optional[str] = None, study_name: str = "mmdk-optimize", hosts: Sequence[str] = (),
            sampler: str = "tpe", seed: int = 0, bench: Optional[dict[str, Any]] = None,
            remote: Optional[dict[str, Any]] = None, seed_trials: bool = True) -> Settings:
    """Every check that needs no trial: budgets, objectives, data, space, towers. Raises UserInputError (exit 2)."""
    from ..runtime.targets import TARGETS

    if target not in TARGETS:
        raise UserInputError(f"unknown target {target!r}", hint=f"targets: {', '.join(TARGETS)}")
    if max_trials < 1 or workers < 1 or (max_minutes is not None and max_minutes <= 0):
        raise UserInputError("--max-trials, --workers and --max-minutes must be positive")
    if sampler not in ("tpe", "nsga2", "random"):
        raise UserInputError(f"unknown sampler {sampler!r}", hint="use tpe, nsga2 or random")
    parsed = [parse_search_budget(b) for b in budgets]
    val, calib, train = resolve_path(data), resolve_path(calib_data), resolve_path(train_data)
    if isinstance(space, (str, Path)) or isinstance(space, dict) or space is None:
        sp = load_space(space)
    else:
        sp = space
    from ..model.loaders import load

    src = model if isinstance(model, (str, Path)) else getattr(model, "source", model)
    model_path = str(Path(src).resolve()) if Path(str(src)).exists() else str(src)
    loaded = load(model_path)
    towers = list(loaded.towers)
    check_space(sp, target, towers, where=str(space) if isinstance(space, (str, Path)) else "the search space")
    task_metric = check_budgets(parsed, list(objectives), target, val, towers)
    s = Settings(model=model_path, out=str(Path(out).resolve()), target=target, val=val, calib=calib, train=train,
                 budgets=[b.text for b in parsed], objectives=list(objectives),
                 space=sp.model_dump(mode="json", exclude_defaults=True), towers=towers, task_metric=task_metric,
                 max_trials=max_trials, max_minutes=max_minutes, workers=max(workers, len(hosts) or 1),
                 storage=storage, study_name=study_name, sampler=sampler, seed=seed, hosts=list(hosts),
                 remote=dict(remote or {}), bench=dict(bench or {}), seed_trials=seed_trials)
    _check_not_empty(s)
    return s


def _check_not_empty(s: Settings) -> None:
    """At least one combination of the categorical choices makes a recipe the passes accept."""
    import itertools

    space = s.search_space()
    dims: list[tuple[str, list[Any]]] = []
    for t in s.towers:
        lo, hi = space.tower_prune(t)
        dims.append((f"{t}.prune", sorted({lo, hi})))
        dims.append((f"{t}.precision", list(space.tower_precisions(t, s.target))))
    dims += [("distill_steps", list(space.distill_steps)), ("calibration", list(space.calibration)),
             ("runtime", list(space.runtimes(s.target))), ("batch", list(space.batch))]
    reasons: list[str] = []
    for n, combo in enumerate(itertools.product(*[v for _, v in dims])):
        if n >= 4000:
            return   # too many to enumerate: trials that break a rule are skipped one by one
        params = dict(zip([k for k, _ in dims], combo))
        try:
            check_recipe(build_recipe(params, s))
            return
        except InvalidChoice as exc:
            reasons.append(str(exc))
    raise UserInputError(f"the search space is empty: no combination of its choices is a valid recipe "
                         f"(e.g. {reasons[0] if reasons else 'no choices'})",
                         hint="widen --space (precision, runtime) or pass the data the choices need (--calib-data)")


def _write_settings(s: Settings) -> Path:
    from ..artifacts import write_json_atomic

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / SETTINGS
    write_json_atomic(path, dataclasses.asdict(s))
    return path


def read_settings(path: str | Path) -> Settings:
    return Settings(**json.loads(Path(path).read_text()))


def run_search(s: Settings, log: Log = None) -> dict[str, Any]:
    """Open/resume the study, run the trials, write the outputs; returns the Pareto summary."""
    from .report import write_outputs
    from .study import make_study, recover_stale, run_worker, seed_trials

    t0 = time.time()
    path = _write_settings(s)
    study = make_study(s)
    recover_stale(study, log, shared=s.storage is not None)
    if s.seed_trials:
        seed_trials(study, s)
    deadline = t0 + s.max_minutes * 60 if s.max_minutes else None
    progress = Progress(s, study, t0, deadline, log)
    if s.workers == 1 and not s.hosts:
        run_worker(s, log=None, on_trial=progress.update, deadline=deadline)
    else:
        _run_processes(s, path, deadline, progress)
    progress.close()
    return write_outputs(make_study(s), s, time.time() - t0)


def _run_processes(s: Settings, settings_path: Path, deadline: Optional[float], progress: "Progress") -> None:
    """K worker processes on this machine (one per --host when hosts are given) sharing the study's storage."""
    logs = Path(s.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    n = max(s.workers, len(s.hosts))
    procs = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                    os.environ.get("PYTHONPATH")]))}
    for i in range(n):
        cmd = [sys.executable, "-m", "mmdeploy_kit.search.worker", str(settings_path)]
        if s.hosts:
            cmd += ["--host", s.hosts[i % len(s.hosts)]]
        if deadline is not None:
            cmd += ["--deadline", repr(deadline)]
        with open(logs / f"worker-{i}.log", "ab") as fh:
            procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env))
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            progress.update()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    bad = [i for i, p in enumerate(procs) if p.returncode not in (0, None)]
    if bad and progress.log:
        progress.log(f"warning: worker(s) {bad} exited with an error; see {logs}")


class Progress:
    """Trials finished / running / failed, the best inside the budgets so far, an ETA (a tqdm bar on a terminal)."""

    def __init__(self, s: Settings, study: Any, t0: float, deadline: Optional[float], log: Log) -> None:
        self.s, self.study, self.t0, self.deadline, self.log = s, study, t0, deadline, log
        self.last = ""
        self.bar = None
        if log is not None and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=s.max_trials, desc="trials", unit="trial", file=sys.stderr)
            except ModuleNotFoundError:
                self.bar = None

    def update(self, note: Optional[str] = None) -> None:
        if self.log is None:
            return
        from .report import choose_best, collect, pareto
        from .objectives import directions

        rows = collect(self.study, self.s)
        done = [r for r in rows if r["state"] in ("complete", "fail", "pruned") and not r["stale"]]
        running = sum(r["state"] == "running" for r in rows)
        failed = sum(r["state"] == "fail" and not r["stale"] for r in rows)
        dirs = directions(self.s.objectives, self.s.task_metric)
        best = choose_best(rows, pareto(rows, dirs), dirs)
        elapsed = time.time() - self.t0
        secs = [r["seconds"] for r in done if r.get("seconds")]
        left = self.s.max_trials - len(done) - running
        eta = (sum(secs) / len(secs)) * max(left, 0) / max(self.s.workers, 1) if secs else None
        if eta is not None and self.deadline is not None:
            eta = min(eta, max(self.deadline - time.time(), 0))
        b = "none inside the budgets yet"
        if best is not None:
            f = best["figures"] or {}
            tm = self.s.task_metric
            b = f"trial {best['number']}: {f.get('speedup') or 0:.2f}x" + \
                (f", {tm} {(f.get('task') or {}).get(tm, float('nan')):.1f}" if tm else "") + \
                f", {f.get('size_mb') or 0:.1f} MB"
        line = (f"trials {len(done)}/{self.s.max_trials} done ({failed} failed), {running} running; best {b}; "
                f"{elapsed / 60:.1f} min" + (f", ETA {eta / 60:.1f} min" if eta is not None else ""))
        if self.bar is not None:
            self.bar.n = len(done)
            self.bar.set_postfix_str(f"{running} running; best {b}")
            self.bar.refresh()
            if note:
                self.bar.write(note)
            return
        if note:
            self.log(note)
        if line != self.last:
            self.log(line)
            self.last = line

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
