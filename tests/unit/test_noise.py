"""Noisy-machine detection for the bench: steal time from /proc/stat and the scatter of per-round ratios."""

from __future__ import annotations

import pytest

from mmdeploy_kit.runtime.cpu_check import NoiseProbe, noise_assessment, read_cpu_times, round_ratio_cv


def _stat(path, user, idle, steal):
    path.write_text(f"cpu  {user} 0 {user // 10} {idle} 0 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")


def test_steal_fraction_over_a_run(tmp_path):
    stat = tmp_path / "stat"
    _stat(stat, 1000, 5000, 100)
    assert read_cpu_times(stat) == (1000 + 100 + 5000 + 100, 100)
    probe = NoiseProbe(stat).start()
    _stat(stat, 1600, 5300, 400)  # +600 user +60 system +300 idle +300 steal
    assert probe.stop() == pytest.approx(300 / 1260)
    assert read_cpu_times(tmp_path / "missing") is None and NoiseProbe(tmp_path / "missing").start().stop() is None


def test_this_machine_reports_cpu_times():
    t = read_cpu_times()
    assert t is None or (t[0] > 0 and 0 <= t[1] <= t[0])


def test_round_ratio_cv():
    assert round_ratio_cv([[2.0], [2.0], [2.0]], [[1.0], [1.0], [1.0]]) == 0.0
    assert round_ratio_cv([[2.0], [3.0]], [[1.0], [1.0]]) == pytest.approx(0.2828, abs=1e-3)


def test_quiet_machine_keeps_the_gate():
    assert noise_assessment(0.01, [0.02, 0.03], "wall", 0.10) == (0.10, [])


def test_steal_with_wall_clock_widens_the_gate_and_says_why():
    gate, warnings = noise_assessment(0.33, [0.04, 0.07], "wall", 0.10)
    assert gate == pytest.approx(0.10 + 2 * 0.07)
    assert len(warnings) == 1 and "33% of CPU time was stolen" in warnings[0] and "widened from 10% to 24%" in warnings[0]
    assert "--clock cpu --threads 1" in warnings[0]


def test_scattered_ratios_alone_count_as_noise():
    gate, warnings = noise_assessment(None, [0.15], "wall", 0.05)
    assert gate == pytest.approx(0.35) and "CV 15%" in warnings[0]


def test_cpu_clock_keeps_the_gate_but_records_the_noise():
    gate, warnings = noise_assessment(0.33, [0.02], "cpu", 0.10)
    assert gate == 0.10 and "CPU clock" in warnings[0]


def test_no_gate_recommends_the_cpu_clock():
    gate, warnings = noise_assessment(0.2, [], "wall", None)
    assert gate is None and "use --clock cpu --threads 1" in warnings[0]
