"""Step cache units: damaged entries are misses, keys change with config / data / pass version, and bench
timings taken on a busy machine are not kept."""

from __future__ import annotations

from mmdeploy_kit.artifacts import Manifest
from mmdeploy_kit.passes.bench_step import BenchPass, BenchStepConfig
from mmdeploy_kit.pipeline.cache import StepCache, step_key


def test_store_lookup_and_a_damaged_entry_is_a_miss(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"x" * 100)
    cache = StepCache(tmp_path / "cache")
    cache.store("k1", out, {"pass": "p"})
    hit = cache.lookup("k1")
    assert hit is not None and (hit / "model.onnx").read_bytes() == b"x" * 100
    (cache.entry("k1") / "output" / "model.onnx").write_bytes(b"x" * 50)  # truncated after the fact
    assert cache.lookup("k1") is None
    assert cache.lookup("never-stored") is None


def test_key_changes_with_config_input_data_and_version(monkeypatch):
    a = BenchStepConfig(batch=(1, 8))
    base = step_key(BenchPass, a, "in", {"data": "d1"})
    assert base == step_key(BenchPass, BenchStepConfig(batch=(1, 8)), "in", {"data": "d1"})
    assert base != step_key(BenchPass, BenchStepConfig(batch=(1,)), "in", {"data": "d1"})
    assert base != step_key(BenchPass, a, "other", {"data": "d1"})
    assert base != step_key(BenchPass, a, "in", {"data": "d2"})
    assert base != step_key(BenchPass, a, "in", {"data": "d1"}, reference_hash="r")
    monkeypatch.setattr(BenchPass, "version", "999")
    assert base != step_key(BenchPass, a, "in", {"data": "d1"})


def test_bench_on_a_busy_machine_is_not_cached():
    quiet = Manifest(pass_name="bench", metrics={"warnings": ["3 of 8 timings ..."]})
    noisy = Manifest(pass_name="bench", metrics={"warnings": ["noisy machine: per-round speedup ratios scatter"]})
    busy = Manifest(pass_name="bench", metrics={"warnings": ["the machine was busy (load average 2.8 on 2 cores)"]})
    assert BenchPass.cacheable(quiet) and not BenchPass.cacheable(noisy) and not BenchPass.cacheable(busy)
