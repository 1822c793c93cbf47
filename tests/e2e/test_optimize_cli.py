"""`mmdk optimize` end to end on a tiny CLIP built in the test: the search, its outputs, best.yaml reproduced by
`mmdk run`, budget errors before any trial, two worker processes on one study, resume after kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_bench_cli import add_processor  # noqa: E402  (same folder)

pytest.importorskip("optuna")

FAST_BENCH = ["--bench", "warmup_runs=1", "--bench", "min_runs=2", "--bench", "min_time_s=0", "--bench",
              "min_rounds=2", "--bench", "max_time_s=3"]
SPACE = """search:
  prune: [0.0, 0.3]
  prune_step: 0.1
  precision: [fp32, int8_dynamic, int8_static]
  distill_steps: [0, 2]
  distill_batch: 8
  calibration: [minmax]
  calib_samples: 16
  runtime: [ort]      # ort's INT8 methods; OpenVINO trials (fp32/bf16/NNCF INT8 only) have their own test
"""


@pytest.fixture(scope="module")
def setup(tiny_clip_dir, tmp_path_factory):
    """(CLIP dir with tokenizer + image processor, data dir, space file)."""
    from mmdeploy_kit.data.synth import synthesize_dataset

    work = tmp_path_factory.mktemp("opt")
    data = Path(synthesize_dataset(work / "data", n_train=24, n_val=16, image_size=32, seed=0))
    clip = work / "clip"
    shutil.copytree(tiny_clip_dir, clip)
    add_processor(clip, data)
    space = work / "space.yaml"
    space.write_text(SPACE)
    return clip, data, space


def _args(setup, out, *extra):
    clip, data, space = setup
    return ["optimize", clip, "-o", out, "--data", data / "val.jsonl", "--calib-data", data / "train.jsonl",
            "--train-data", data / "train.jsonl", "--budget", "zero_shot_top1_drop<=5", "--space", space,
            *FAST_BENCH, *extra]


def _pareto(out: Path) -> dict:
    return json.loads((out / "pareto.json").read_text())


def test_optimize_end_to_end_and_best_yaml_reproduces(mmdk, setup, tmp_path):
    out = tmp_path / "opt"
    r = mmdk(*_args(setup, out, "--max-trials", "3"))
    assert r.code == 0, r.err
    assert "trials 3/3 done" in r.err and "best:" in r.out
    p = _pareto(out)
    assert p["counts"]["complete"] == 3 and p["task_metric"] == "zero_shot_top1"
    assert p["directions"] == ["minimize", "maximize"]
    assert p["best"] is not None and p["best"] in p["pareto"]
    for t in p["trials"]:
        assert t["recipe"]["steps"][-1].get("bench") and t["figures"]["speedup"] > 0
        assert t["figures"]["task"]["zero_shot_top1_drop"] <= 5 + 1e-9 or not t["feasible"]
    # the seeded second trial prunes + distills: the runner ran those steps into the trial's own directory
    pruned = [t for t in p["trials"] if "prune" in t["recipe"]["steps"][0]]
    assert pruned and (Path(pruned[0]["run_dir"]) / "02-distill").is_dir()
    # ... and every trial is compared with the same, unpruned source model (pruning works on its own copy)
    assert len({json.dumps(t["figures"]["source_task"], sort_keys=True) for t in p["trials"]}) == 1
    html = (out / "pareto.html").read_text()
    assert "<svg" in html and "budget zero_shot_top1_drop" in html
    assert "| trial |" in (out / "pareto.md").read_text()
    assert (out / "best" / "mmdk_run.json").is_file()

    # best.yaml is a plain recipe: mmdk run reproduces the best trial's accuracy exactly
    best = next(t for t in p["trials"] if t["number"] == p["best"])
    r2 = mmdk("run", out / "best.yaml", "-o", tmp_path / "again")
    assert r2.code == 0, r2.err
    rec = json.loads((tmp_path / "again" / "mmdk_run.json").read_text())
    bench = rec["steps"][-1]["metrics"]
    assert bench["task_value"] == best["figures"]["task"]["zero_shot_top1"]
    assert [s["name"] for s in rec["steps"]] == [next(iter(s)) for s in best["recipe"]["steps"]]

    # running it again resumes the finished study: nothing is re-run
    r3 = mmdk(*_args(setup, out, "--max-trials", "3"))
    assert r3.code == 0, r3.err
    assert _pareto(out)["counts"]["complete"] == 3 and "trial 3:" not in r3.err


@pytest.mark.parametrize("extra, expect", [
    (["--budget", "top1_loss<=1"], "unknown budget metric 'top1_loss'"),
    (["--objective", "speed"], "unknown objective 'speed'"),
    (["--objective", "energy"], "energy objective is measured only on Jetson"),
])
def test_budget_errors_exit_2_before_any_trial(mmdk, setup, tmp_path, extra, expect):
    out = tmp_path / "opt"
    r = mmdk(*_args(setup, out, *extra))
    assert r.code == 2 and r.one_line_error() and expect in r.err, r.err
    assert not (out / "trials").exists() and not (out / "study.journal").exists()


def test_label_metric_on_unlabelled_data_and_empty_space_exit_2(mmdk, setup, tmp_path):
    clip, data, space = setup
    rows = [json.loads(x) for x in (data / "val.jsonl").read_text().splitlines()]
    nolabel = data / "val_nolabel.jsonl"
    nolabel.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "label"}) + "\n" for r in rows))
    r = mmdk("optimize", clip, "-o", tmp_path / "a", "--data", nolabel, "--budget", "zero_shot_top1_drop<=1")
    assert r.code == 2 and r.one_line_error() and "needs labels" in r.err, r.err
    # static INT8 everywhere but no calibration data: every combination breaks a pass's rule
    only_static = tmp_path / "static.yaml"
    only_static.write_text("search:\n  precision: [int8_static]\n")
    r = mmdk("optimize", clip, "-o", tmp_path / "b", "--data", data / "val.jsonl", "--space", only_static)
    assert r.code == 2 and "search space is empty" in r.err and "--calib-data" in r.err, r.err
    # an unknown dimension names its line; a precision this install lacks is refused
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  prune: [0, 0.2]\n  precison: [fp32]\n")
    r = mmdk("optimize", clip, "-o", tmp_path / "c", "--space", bad)
    assert r.code == 2 and "line 3" in r.err and "did you mean 'precision'" in r.err, r.err
    r = mmdk("optimize", clip, "-o", tmp_path / "d", "--space", bad.with_name("x.yaml"))
    assert r.code == 2 and "does not exist" in r.err
    assert not any((tmp_path / d / "trials").exists() for d in "abcd")


def _cli(setup, out, *extra) -> list[str]:
    return [sys.executable, "-m", "mmdeploy_kit.cli", *map(str, _args(setup, out, *extra))]


def _env() -> dict:
    root = Path(__file__).resolve().parents[2]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1"}


def test_two_worker_processes_share_one_study(setup, tmp_path):
    out = tmp_path / "opt"
    proc = subprocess.run(_cli(setup, out, "--max-trials", "4", "--workers", "2"), env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    p = _pareto(out)
    assert len(p["workers"]) == 2, p["workers"]                       # both processes joined the study
    numbers = [t["number"] for t in p["trials"]]
    assert sorted(numbers) == list(range(len(numbers))) and p["counts"]["complete"] + p["counts"]["fail"] == 4
    ran_by = {t["worker"] for t in p["trials"]}
    assert ran_by <= set(p["workers"]) and os.getpid() not in {int(w.rpartition(":")[2]) for w in ran_by}
    logs = sorted((out / "logs").glob("worker-*.log"))
    assert len(logs) == 2 and all("worker finished" in f.read_text() for f in logs)


def test_resume_after_kill_does_not_rerun_finished_trials(setup, tmp_path):
    import optuna

    from mmdeploy_kit.search.optimize import read_settings
    from mmdeploy_kit.search.study import make_study

    out = tmp_path / "opt"
    cmd = _cli(setup, out, "--max-trials", "4")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    done: dict[int, float] = {}
    t0 = time.time()
    try:
        while time.time() - t0 < 240 and proc.poll() is None:
            time.sleep(0.5)
            if (out / "study.journal").exists() and (out / "search.json").exists():
                study = make_study(read_settings(out / "search.json"))
                done = {t.number: t.user_attrs["started"] for t in study.get_trials(
                    states=(optuna.trial.TrialState.COMPLETE,))}
                if done:
                    break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert done, "no trial finished before the kill"
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    p = _pareto(out)
    by_number = {t["number"]: t for t in p["trials"]}
    counted = [t for t in p["trials"] if not t["stale"]]
    assert len(counted) == 4 and p["counts"]["complete"] >= 4 - p["counts"]["fail"] - p["counts"]["pruned"]
    study = make_study(read_settings(out / "search.json"))
    for n, started in done.items():                                    # finished before the kill: untouched
        assert by_number[n]["state"] == "complete" and study.trials[n].user_attrs["started"] == started
    keys_before = {by_number[n]["config_key"] for n in done}
    rerun = [t for t in p["trials"] if t["number"] not in done and t["config_key"] in keys_before
             and t["duplicate_of"] is None]
    assert not rerun, "a finished trial's recipe was run again"


def test_fusion_classifier_gets_its_own_front_on_accuracy(mmdk, small_data, tmp_path):
    """The fusion demo (late-fusion classifier, factory source): the search's task metric is the classifier's
    accuracy, budgets name it, and the front is made of trials measured on it."""
    from mmdeploy_kit.demo_fusion import train_fusion_demo

    demo = train_fusion_demo(out=tmp_path / "fusion", data_dir=small_data, steps=20, quiet=True)
    info = json.loads((demo.path / "mmdk_demo.json").read_text())
    space = tmp_path / "space.yaml"
    space.write_text("search:\n  prune: [0.0, 0.3]\n  prune_step: 0.1\n  precision: [fp32, int8_dynamic]\n"
                     "  distill_steps: [0, 2]\n  distill_batch: 8\n  runtime: [ort]\n")
    out = tmp_path / "opt"
    r = mmdk("optimize", demo.path, "-o", out, "--data", info["val_manifest"], "--calib-data", info["train_manifest"],
             "--train-data", info["train_manifest"], "--budget", "accuracy_drop<=100", "--space", space, "--max-trials", "2", *FAST_BENCH)
    assert r.code == 0, r.err
    p = _pareto(out)
    assert p["task_metric"] == "accuracy" and p["budgets"] == ["accuracy_drop<=100"]
    assert p["counts"]["complete"] == 2 and p["pareto"] and p["best"] in p["pareto"]
    for t in p["trials"]:
        assert 0 <= t["figures"]["task"]["accuracy"] <= 100
        assert 0 <= t["figures"]["source_task"]["accuracy"] <= 100
    # the seeded second trial prunes and distills the classifier (logits + label losses), then quantizes it
    pruned = [t for t in p["trials"] if "prune" in t["recipe"]["steps"][0]]
    assert pruned and (Path(pruned[0]["run_dir"]) / "02-distill").is_dir()
    assert "accuracy" in (out / "pareto.md").read_text()
