"""The Optuna study of ``mmdk optimize``: storage (a journal file in OUT by default, or any Optuna storage URL),
sampler (TPE with ``constant_liar`` when trials run at once, or NSGA-II; budgets as constraints), the worker
loop (ask -> recipe -> runner -> tell) and the resume rules:

- a trial that finished is never run again: a new sample that makes the same recipe reuses its figures;
- a trial left RUNNING by a killed worker of this machine is marked failed (``stale``) and its choices are
  queued again, so a re-run finishes the search without re-running anything that finished.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .._lazy import require
from ..errors import MmdkError, UserInputError
from .objectives import directions, objective_values, parse_search_budget
from .trial import (InvalidChoice, Settings, budget_value, build_recipe, check_recipe, choices, config_key,
                    run_trial, suggest)

JOURNAL = "study.journal"
UNMET = 1e12   # the constraint value of a budget that could not be measured
Log = Optional[Callable[[str], None]]


def _optuna() -> Any:
    optuna = require("optuna", "search", "the mmdk optimize search engine")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(s: Settings) -> Any:
    """An RDB URL (``sqlite:///x.db``, ``postgresql://...``) as Optuna takes it; anything else is a journal file
    (``OUT/study.journal`` by default; a path on shared storage lets other machines join)."""
    optuna = _optuna()
    url = s.storage or str(Path(s.out) / JOURNAL)
    if "://" in url:
        try:
            return optuna.storages.RDBStorage(url)
        except (ImportError, ModuleNotFoundError) as exc:
            raise UserInputError(f"storage {url}: {exc}", hint="install the database driver for that URL") from None
        except Exception as exc:  # noqa: BLE001 - sqlalchemy raises its own types for a bad URL or server
            raise UserInputError(f"cannot open storage {url}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                                 hint="check the URL (e.g. sqlite:///study.db, postgresql://user@host/db)") from None
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages import JournalStorage

    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:   # optuna < 4
        from optuna.storages import JournalFileStorage as JournalFileBackend  # type: ignore[no-redef]
    return JournalStorage(JournalFileBackend(url))


def _has_set_constraint(optuna: Any) -> bool:
    return hasattr(optuna.trial.Trial, "set_constraint")


def _set_constraints(trial: Any, values: list[float], names: list[str]) -> None:
    values = [min(float(v), UNMET) for v in values]   # finite: storages keep JSON
    trial.set_user_attr("constraints", values)
    if hasattr(trial, "set_constraint"):
        for name, v in zip(names, values):
            trial.set_constraint(name, v)


def _constraints(trial: Any) -> list[float]:
    return list(trial.user_attrs.get("constraints") or [])


def make_study(s: Settings, storage: Any = None) -> Any:
    optuna = _optuna()
    parallel = s.workers > 1 or s.storage is not None or len(s.hosts) > 1
    # Optuna >= 5: constraints are set on the trial (Trial.set_constraint); older: a constraints_func
    cfunc = _constraints if s.budgets and not _has_set_constraint(optuna) else None
    if s.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=s.seed, constraints_func=cfunc,
                                                population_size=max(4, min(50, s.max_trials // 3)))
    elif s.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=s.seed, constant_liar=parallel, constraints_func=cfunc,
                                             n_startup_trials=max(3, min(10, s.max_trials // 3)))
    study = optuna.create_study(study_name=s.study_name, storage=storage if storage is not None else open_storage(s),
                                directions=directions(s.objectives, s.task_metric), sampler=sampler,
                                load_if_exists=True)
    ident = study.user_attrs.get("mmdk_identity")
    if ident is None:
        study.set_user_attr("mmdk_identity", s.identity())
        study.set_user_attr("mmdk_objectives", s.objectives + ([s.task_metric] if s.task_metric else []))
    elif ident != s.identity():
        raise UserInputError(f"study {s.study_name!r} in {s.storage or Path(s.out) / JOURNAL} was started with a "
                             "different model, data, space, budgets or objectives",
                             hint="use another -o / --study-name, or the same options as the first run")
    return study


# ---- bookkeeping -----------------------------------------------------------------------------------------------
def _counted(t: Any) -> bool:
    """Trials that use up the trial budget: all but stale (killed), skipped (over the budget) and queued ones (the
    seeded configurations wait in the study until a worker asks for them)."""
    if t.state.name == "WAITING":
        return False
    return not (t.user_attrs.get("stale") or t.user_attrs.get("skipped"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale(study: Any, log: Log = None, shared: bool = False) -> int:
    """Mark RUNNING trials of dead workers on this machine as failed + ``stale`` and queue their choices again."""
    optuna = _optuna()
    host, n = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or ""
        w_host, _, w_pid = worker.rpartition(":")
        if worker and (w_host != host or _alive(int(w_pid))):
            continue
        if not worker and shared:   # on a shared storage a worker elsewhere may have just asked for it
            continue
        study._storage.set_trial_user_attr(t._trial_id, "stale", True)
        study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
        if t.params:
            study.enqueue_trial(dict(t.params), skip_if_exists=False)
        n += 1
    if n and log:
        log(f"resume: {n} trial(s) left running by a killed search are queued again")
    return n


def seed_trials(study: Any, s: Settings) -> None:
    """A first run queues a few informed configurations (the search space's corners a person would try first):
    INT8 per tower as the quantize preset would pick it, then the same on the most-pruned distilled towers."""
    if study.get_trials(deepcopy=False):
        return
    space = s.search_space()
    seeds = []
    prec = {}
    for t in s.towers:
        opts = space.tower_precisions(t, s.target)
        want = ("int8_dynamic", "int8", "int8_static") if "text" in t else ("int8_static", "int8", "int8_dynamic")
        prec[t] = next((p for p in want if p in opts), opts[0])
    base: dict[str, Any] = {f"{t}.precision": p for t, p in prec.items()}
    seeds.append({**base, **{f"{t}.prune": space.tower_prune(t)[0] for t in s.towers}})
    top = {}
    for t in s.towers:
        lo, hi = space.tower_prune(t)
        top[f"{t}.prune"] = round(lo + int(round((hi - lo) / space.prune_step, 6)) * space.prune_step, 6)
    seeds.append({**base, **top, "distill_steps": max(space.distill_steps)})
    probe = {"calibration": space.calibration[0], "runtime": space.runtimes(s.target)[0], "batch": space.batch[0]}
    for seed in seeds:
        params = {**probe, **seed}
        try:
            check_recipe(build_recipe(params, s))
        except InvalidChoice:
            continue
        study.enqueue_trial(params, skip_if_exists=True)


def _find_done(study: Any, key: str) -> Any:
    optuna = _optuna()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.user_attrs.get("config_key") == key and t.user_attrs.get("figures"):
            return t
    return None


# ---- the worker loop ---------------------------------------------------------------------------------------------
def run_worker(s: Settings, host: Optional[str] = None, log: Log = None, on_trial: Log = None,
               deadline: Optional[float] = None) -> int:
    """Ask, run and tell trials until the trial budget or the deadline is spent; returns trials run here."""
    optuna = _optuna()
    TS = optuna.trial.TrialState
    study = make_study(s)
    budgets = [parse_search_budget(b) for b in s.budgets]
    names = [b.text for b in budgets]
    me = f"{socket.gethostname()}:{os.getpid()}"
    study.set_user_attr(f"worker:{me}", time.time())   # who joined the study (shown in pareto.json)
    ran = 0
    while True:
        if deadline is not None and time.time() >= deadline:
            break
        if sum(_counted(t) for t in study.get_trials(deepcopy=False)) >= s.max_trials:
            break
        trial = study.ask()
        trial.set_user_attr("worker", me)
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and _counted(t)]
        if len(earlier) >= s.max_trials:   # another worker took the last slot
            trial.set_user_attr("skipped", True)
            study.tell(trial, state=TS.FAIL)
            break
        t0 = time.time()
        trial.set_user_attr("started", t0)
        if host:
            trial.set_user_attr("host", host)
        try:
            params = suggest(trial, s)
            recipe = build_recipe(params, s, with_bench=host is None)
            check_recipe(recipe)
        except InvalidChoice as exc:
            trial.set_user_attr("invalid", str(exc))
            _set_constraints(trial, [UNMET] * len(budgets), names)
            study.tell(trial, state=TS.PRUNED)
            _note(on_trial, f"trial {trial.number}: skipped ({exc})")
            continue
        key = config_key(recipe)
        trial.set_user_attr("config_key", key)
        trial.set_user_attr("recipe", recipe)
        trial.set_user_attr("choices", choices(params, s))
        done = _find_done(study, key)
        if done is not None:   # the same recipe finished before: its figures, not a re-run
            trial.set_user_attr("duplicate_of", done.number)
            trial.set_user_attr("figures", done.user_attrs["figures"])
            _set_constraints(trial, list(done.user_attrs.get("constraints") or []), names)
            trial.set_user_attr("run_dir", done.user_attrs.get("run_dir"))
            study.tell(trial, values=done.values)
            _note(on_trial, f"trial {trial.number}: same recipe as trial {done.number}")
            continue
        run_dir = Path(s.out) / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            figs = run_trial(recipe, s, run_dir, host=host, log=log, batch=choices(params, s)["batch"])
        except Exception as exc:  # noqa: BLE001 - one trial's failure (a pass error or a bug) fails that trial only
            msg = f"{type(exc).__name__}: {exc}" if not isinstance(exc, MmdkError) else str(exc)
            trial.set_user_attr("error", msg.splitlines()[0][:500] if msg else type(exc).__name__)
            trial.set_user_attr("seconds", round(time.time() - t0, 2))
            study.tell(trial, state=TS.FAIL)
            _note(on_trial, f"trial {trial.number}: failed: {msg.splitlines()[0][:200] if msg else ''}")
            ran += 1
            continue
        values = objective_values(figs, s.objectives, s.task_metric)
        trial.set_user_attr("figures", figs)
        trial.set_user_attr("seconds", round(time.time() - t0, 2))
        _set_constraints(trial, [b.violation(budget_value(figs, b.metric)) for b in budgets], names)
        if values is None:
            trial.set_user_attr("error", "the bench measured no value for an objective (no --data for the task "
                                         "metric, or no energy telemetry)")
            study.tell(trial, state=TS.FAIL)
        else:
            study.tell(trial, values=values)
        ran += 1
        _note(on_trial, f"trial {trial.number}: done in {time.time() - t0:.0f} s")
    return ran


def _note(cb: Log, msg: str) -> None:
    if cb:
        cb(msg)
