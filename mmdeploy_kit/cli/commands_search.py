"""``mmdk optimize``: the search over prune x distill x precision x runtime (mmdeploy_kit.search)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import (app, _STATE, AcceptNewHostKeyOpt, RemoteMmdkOpt, SshKeyOpt, SshOptionOpt, echo)


@app.command()
def optimize(
    model: str = typer.Argument(..., help="Source model (HF directory, mmdk directory, ...)."),
    out: Path = typer.Option(..., "-o", "--out", help="Search directory: pareto.{json,md,html}, best.yaml, best/, "
                             "trials/NNNN/, study.journal. Run the same command again to resume."),
    target: str = typer.Option("cpu", "--target", help="cpu | gpu | jetson-* (sets the default space)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Held-out JSONL manifest: the task metric and the "
                                        "bench's accuracy."),
    calib_data: Optional[Path] = typer.Option(None, "--calib-data", help="Calibration data for static INT8."),
    train_data: Optional[Path] = typer.Option(None, "--train-data", help="Training manifest for distillation "
                                              "(without it pruned towers are not distilled)."),
    budget: Optional[List[str]] = typer.Option(None, "--budget", help="A constraint, e.g. 'zero_shot_top1_drop<=1' "
                                               "or 'size_mb<=50' (repeatable)."),
    objective: Optional[List[str]] = typer.Option(None, "--objective", help="latency | throughput | size | energy "
                                                  "(repeatable; default latency). The task metric is maximised too."),
    space: Optional[Path] = typer.Option(None, "--space", help="Search space YAML (or a recipe with a search: "
                                         "block); default: the target's."),
    max_trials: int = typer.Option(20, "--max-trials", help="Trials in the study (finished ones count on resume)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Start no trial after this long."),
    workers: int = typer.Option(1, "--workers", help="Trial processes on this machine sharing the study."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (sqlite:///s.db, "
                                          "postgresql://...) or journal file path: workers elsewhere join it."),
    study_name: str = typer.Option("mmdk-optimize", "--study-name", help="Study name inside the storage."),
    host: Optional[List[str]] = typer.Option(None, "--host", help="Bench trials on this SSH device (repeatable; "
                                             "one trial per device at a time)."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe (multi-objective, constraints) | nsga2 | random."),
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
    bench_set: Optional[List[str]] = typer.Option(None, "--bench", help="Bench step option FIELD=VALUE for every "
                                                  "trial, e.g. --bench min_time_s=0.5 --bench threads=1."),
    ssh_key: Optional[str] = SshKeyOpt,
    ssh_option: Optional[List[str]] = SshOptionOpt,
    accept_new_host_key: bool = AcceptNewHostKeyOpt,
    remote_mmdk: Optional[str] = RemoteMmdkOpt,
) -> None:
    """Search every tower's prune ratio x distillation x precision x runtime for the fastest deployment that
    keeps the task metric inside the budgets (a Pareto front; parallel; resumable).

    Example:
      mmdk optimize ./my-clip --data val.jsonl --calib-data train.jsonl --train-data train.jsonl \\
        --budget 'zero_shot_top1_drop<=1' --max-minutes 30 --workers 2 -o runs/opt
      mmdk run runs/opt/best.yaml -o runs/best      # reproduces the chosen trial
    """
    import yaml

    from .. import api
    from ..errors import UserInputError

    bench = {}
    for item in bench_set or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise UserInputError(f"--bench expects FIELD=VALUE, got {item!r}", hint="e.g. --bench min_time_s=0.5")
        bench[k.strip()] = yaml.safe_load(v)
    remote = {k: v for k, v in dict(ssh_key=ssh_key, ssh_options=tuple(ssh_option or ()),
                                    accept_new_host_key=accept_new_host_key, remote_mmdk=remote_mmdk).items()
              if v not in (None, (), False)}
    s = api.optimize(model, out, target=target, data=data, calib_data=calib_data, train_data=train_data,
                     budget=budget or [], objective=objective or ["latency"], space=space, max_trials=max_trials,
                     max_minutes=max_minutes, workers=workers, storage=storage, study_name=study_name,
                     hosts=host or [], sampler=sampler, seed=seed, bench=bench, remote=remote,
                     progress=None if _STATE["quiet"] else echo)
    c = s["counts"]
    typer.echo(f"trials: {c['complete']} finished ({c['distinct_complete']} distinct), {c['fail']} failed, "
               f"{c['pruned']} invalid; Pareto front: {len(s['pareto'])} trial(s) {s['pareto']}")
    if s["best"] is None:
        typer.echo("no finished trial meets every budget; see pareto.md")
    else:
        best = next(r for r in s["trials"] if r["number"] == s["best"])
        f = best["figures"] or {}
        tm = s["task_metric"]
        task = f", {tm} {f['task'][tm]:.2f} (drop {f['task'].get(tm + '_drop', 0):.2f})" if tm and tm in f.get("task", {}) else ""
        typer.echo(f"best: trial {s['best']} ({best['recipe']['description'].removeprefix('mmdk optimize trial: ')})"
                   f": {f.get('speedup') or 0:.2f}x vs source, {f.get('size_mb') or 0:.2f} MB{task}")
        typer.echo(f"recipe: {Path(out) / 'best.yaml'} (mmdk run {Path(out) / 'best.yaml'} -o RUN); "
                   f"artifacts: {Path(out) / 'best'}")
    typer.echo(f"report: {Path(out) / 'pareto.html'} (.md, .json)")
