"""Adaptive length (--precision): one process adds rounds, several add worker processes, until the speedup
interval is that narrow or the time is spent; the report states the precision reached. Fake backends and
fake worker processes, so this runs in well under a second."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from mmdeploy_kit.runtime.latency import Contender, measure
from mmdeploy_kit.runtime.rounds import Config, measure_latency
from mmdeploy_kit.runtime.schema import TimingConfig


class FakeBackend:
    """``time_once`` returns a made-up duration (mean ``ms``, lognormal scatter); nothing runs."""

    name = "fake"

    def __init__(self, ms: float, cv: float, seed: int):
        self.ms, self.cv, self.rng = ms, cv, np.random.default_rng(seed)
        self.tower = SimpleNamespace(name="vision")

    def prepare(self, feeds):
        return feeds

    def time_once(self, prepared):
        return self.ms / 1e3 * math.exp(self.rng.normal(0, self.cv))

    def reset_memory_peak(self):
        pass

    def memory(self):
        return {}


def _timing(**kw):
    return TimingConfig(**{"warmup_runs": 0, "min_runs": 1, "min_time_s": 0.0, "min_rounds": 3, "round_time_s": 0.004,
                           "clock": "wall", "max_time_s": 30.0, **kw})


def _contenders(cv):
    return [Contender("ref", FakeBackend(2.0, cv, 0), {}), Contender("new", FakeBackend(1.0, cv, 1), {})]


def test_one_process_adds_rounds_until_the_interval_is_within_precision():
    plain = measure(_contenders(0.1), _timing())
    assert plain.rounds == 3
    adaptive = measure(_contenders(0.1), _timing(precision=0.03))
    assert adaptive.rounds > 3 and not adaptive.hit_max_time
    from mmdeploy_kit.runtime.latency import precision_reached

    assert precision_reached(adaptive.contenders, _timing()) <= 3.0
    capped = measure(_contenders(0.1), _timing(precision=0.0001, max_time_s=0.05))
    assert capped.hit_max_time


def _fake_worker(offsets, ratio=2.0, rounds=4):
    """A stand-in for run_worker: process k's ratio is off by offsets[k] (between-process variation)."""
    calls = []

    def run_worker(job, timing, index, timeout_s):
        calls.append(index)
        rng = np.random.default_rng(index)
        r = ratio * math.exp(offsets[index % len(offsets)])
        ref = [[1e-3 * math.exp(rng.normal(0, 0.01))] for _ in range(rounds)]
        new = [[t[0] / r] for t in ref]
        cs = [{"label": lab, "rounds": rr, "cpu_rounds": rr, "first_run_s": 0.01, "warmup_times": [0.001],
               "peak_rss": 100, "peak_rss_delta": 10, "gpu_memory": {}} for lab, rr in (("ref", ref), ("new", new))]
        return {"pid": 1, "configs": [{"rounds": rounds, "seconds": 0.01, "hit_max_time": False, "contenders": cs}
                                      for _ in job["configs"]]}
    return run_worker, calls


def _setup():
    models = [SimpleNamespace(label=lab, role=role, spec=f"/x/{lab}.onnx", backends={"vision": FakeBackend(1, 0, 0)})
              for lab, role in (("ref", "reference"), ("new", "artifact"))]
    configs = [Config(tower="vision", sizes={"batch": b}, owners=models, batch=b, seq=None, desc=f"vision batch={b}")
               for b in (1, 8)]
    return models, configs


@pytest.mark.parametrize("precision", [None, 0.05])
def test_worker_processes_are_added_until_precise(monkeypatch, precision):
    import mmdeploy_kit.runtime.workers as workers

    fake, calls = _fake_worker([0.06, -0.05, 0.02, -0.03, 0.04, -0.01])
    monkeypatch.setattr(workers, "run_worker", fake)
    models, configs = _setup()
    out = measure_latency(models, configs, timing=TimingConfig(clock="cpu", precision=precision),
                          profile=SimpleNamespace(device="cpu"), max_latency_regression=0.1, quiet=True,
                          log=lambda _m: None, job_args={"target": "cpu", "backend": "auto", "threads": 1,
                                                          "load_kwargs": {}})
    sp = out.speedups["new"]
    if precision is None:
        assert len(calls) == out.processes == 3 and sp.processes == 3       # the CPU-clock default
    else:
        assert len(calls) == out.processes > 3 and sp.half_width_pct <= 5.0
        assert not any(w.startswith("precision") for w in out.warnings)
    assert out.precision_reached_pct == pytest.approx(sp.half_width_pct)
    assert sp.ci_low < 2.0 < sp.ci_high
    new = [r for r in out.latency if r.artifact == "new"]
    assert all(r.processes == out.processes and r.rounds == 4 * out.processes for r in new)
    assert all(r.speedup is not None and r.speedup.processes == out.processes for r in new)


def test_precision_not_reached_is_stated(monkeypatch):
    import mmdeploy_kit.runtime.workers as workers

    fake, calls = _fake_worker([0.3, -0.3])
    monkeypatch.setattr(workers, "run_worker", fake)
    monkeypatch.setattr("mmdeploy_kit.runtime.rounds.MAX_PROCESSES", 5)
    models, configs = _setup()
    out = measure_latency(models, configs, timing=TimingConfig(clock="cpu", precision=0.01),
                          profile=SimpleNamespace(device="cpu"), max_latency_regression=None, quiet=True,
                          log=lambda _m: None, job_args={"target": "cpu", "backend": "auto", "threads": 1,
                                                          "load_kwargs": {}})
    assert len(calls) == 5
    assert any(w.startswith("precision: the speedup intervals reached") for w in out.warnings)


def test_a_failing_worker_is_one_line(tmp_path):
    from mmdeploy_kit.errors import UserInputError
    from mmdeploy_kit.runtime.workers import run_worker

    job = {"target": "cpu", "backend": "auto", "threads": 1, "load_kwargs": {}, "configs": [],
           "models": [{"label": "gone", "role": "artifact", "source": str(tmp_path / "gone.onnx"), "towers": ["gone"]}]}
    with pytest.raises(UserInputError) as exc:
        run_worker(job, TimingConfig(), 0, timeout_s=120)
    assert "gone.onnx" in exc.value.message and "\n" not in str(exc.value)


def test_timing_options_have_one_source():
    """The recipe bench step's timing fields and the remote command line map onto TimingConfig's fields,
    with the same defaults."""
    from mmdeploy_kit.passes.bench_step import BenchStepConfig
    from mmdeploy_kit.remote.bench import _TIMING_FLAGS

    fields = TimingConfig.model_fields
    shared = [k for k in BenchStepConfig.model_fields if k in fields]
    assert {"warmup_runs", "min_runs", "min_time_s", "min_rounds", "max_time_s", "clock", "processes",
            "precision"} <= set(shared)
    assert all(BenchStepConfig.model_fields[k].default == fields[k].default for k in shared)
    assert set(_TIMING_FLAGS) <= set(fields)
