"""``mmdk distill`` end to end on tiny CLIPs: output, one-line errors, and --resume after a real kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _isolated_cache(cache):
    return cache


def _args(pair, out, *extra):
    return ["distill", str(pair.student), "--teacher", str(pair.teacher), "--data", str(pair.data / "train.jsonl"),
            "-o", str(out), "--batch", "8", "--lr", "1e-3", *extra]


def test_distill_cli_writes_a_loadable_student_and_prints_eval(mmdk, clip_teacher_student, tmp_path):
    pair = clip_teacher_student
    r = mmdk(*_args(pair, tmp_path / "out", "--steps", "7", "--val", str(pair.data / "val.jsonl"), "--tower", "vision",
                    "--loss", "feature=1,affinity=0.5"))
    assert r.code == 0, r.err
    assert "distilled vision in 7 steps" in r.out and "losses feature=1,affinity=0.5" in r.out
    assert "eval step 6 (epoch 1): zero_shot_top1" in r.out and "eval step 7" in r.out
    import mmdeploy_kit as mmdk_api

    model = mmdk_api.load(tmp_path / "out")
    assert model.tower_names == ["vision", "text"]
    m = model.details["manifest"]
    assert m.metrics["eval"][0]["step"] == 6 and m.config["losses"] == [["feature", 1.0], ["affinity", 0.5]]


@pytest.mark.parametrize("extra, message", [
    (("--loss", "label=1"), "the label loss needs a tower output named like 'logits'"),
    (("--loss", "feature=1", "--tower", "audio"), "no tower named 'audio'"),
    (("--steps", "0"), "invalid distill option steps"),
])
def test_distill_cli_bad_input_is_one_line(mmdk, clip_teacher_student, tmp_path, extra, message):
    r = mmdk(*_args(clip_teacher_student, tmp_path / "out", *extra))
    assert r.code == 2 and r.one_line_error() and message in r.err, r.err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.ckpt").exists()


@pytest.mark.slow  # a separate mmdk process that is killed with SIGKILL mid-run (~20 s on 2 busy cores)
def test_resume_continues_a_killed_run(mmdk, clip_teacher_student, tmp_path):
    pair = clip_teacher_student
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mmdeploy_kit.cli", *_args(pair, out, "--steps", "3000", "--checkpoint-every", "5")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    latest = tmp_path / "out.ckpt" / "LATEST"
    deadline = time.time() + 120
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest.exists() and not out.exists()
    r = mmdk(*_args(pair, out, "--steps", "3000", "--checkpoint-every", "5"))
    assert r.code == 2 and "--resume" in r.err  # a leftover run is never silently restarted
    r = mmdk(*_args(pair, out, "--steps", "3000", "--checkpoint-every", "5", "--resume", "--max-minutes", "0.02"))
    assert r.code == 0, r.err
    import mmdeploy_kit as mmdk_api

    metrics = mmdk_api.load(out).details["manifest"].metrics
    assert metrics["resumed_from_step"] >= 5 and metrics["stopped_by_time"]
    assert metrics["resumed_from_step"] <= metrics["steps"] < 3000
    assert not Path(str(out) + ".ckpt").exists()
