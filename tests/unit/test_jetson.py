"""tegrastats / nvpmodel / jetson_clocks parsing on Orin Nano and AGX Orin output, and the energy arithmetic."""

from __future__ import annotations

import pytest

from mmdeploy_kit.runtime import env
from mmdeploy_kit.runtime.jetson import (energy, mean_total_w, parse_jetson_clocks, parse_nvpmodel,
                                       parse_tegrastats_line, rail_stats)
from tests.conftest import FIXTURES

JET = FIXTURES / "jetson"


def lines(name: str) -> list[str]:
    return [ln for ln in (JET / name).read_text().splitlines() if ln.strip()]


def test_orin_nano_root_line_all_fields():
    s = parse_tegrastats_line(lines("orin_nano_tegrastats.txt")[2])
    assert s.stamp == "11-29-2026 14:02:11"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (2391, 7620, 0)
    assert s.cpu_load_pct == [41, 12, 9, 6, 4, 3] and s.cpu_freq_mhz == [1510] * 6
    assert (s.gpu_load_pct, s.gpu_freq_mhz, s.emc_load_pct, s.emc_freq_mhz) == (97, 624, 18, 3199)
    assert s.rails_mw == {"VDD_IN": 9647, "VDD_CPU_GPU_CV": 4271, "VDD_SOC": 2774}
    assert s.rails_avg_mw["VDD_IN"] == 6218
    assert s.temps_c["tj"] == pytest.approx(51.781) and s.temps_c["gpu"] == pytest.approx(51.781)
    assert s.total_mw() == (9647, "VDD_IN")   # the module input rail, not the sum


def test_orin_nano_user_line_has_no_clocks_and_offline_cores():
    s = parse_tegrastats_line(lines("orin_nano_tegrastats_user.txt")[1])
    assert s.gpu_load_pct == 96 and s.gpu_freq_mhz is None and s.emc_freq_mhz is None
    assert s.cpu_load_pct == [35, 9, None, None, 2, 1]
    assert s.total_mw()[0] == 9208


def test_agx_orin_has_no_input_rail_so_total_is_the_sum():
    s = parse_tegrastats_line(lines("agx_orin_tegrastats.txt")[1])
    assert set(s.rails_mw) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    total, src = s.total_mw()
    assert total == 14821 + 1592 + 5120 + 1908 and src.startswith("sum of rails")
    assert (s.gpu_freq_mhz, s.emc_freq_mhz, s.ram_total_mb, len(s.cpu_load_pct)) == (1300, 3199, 62841, 12)
    assert "RAM" not in s.rails_mw and "SWAP" not in s.rails_mw


@pytest.mark.parametrize("line,expected", [
    ("RAM 1234/1979MB (lfb 4x4MB) SWAP 0/989MB (cached 0MB) CPU [12%@1479,17%@1479,off,off] EMC_FREQ 0%@1600 "
     "GR3D_FREQ 25%@921 PLL@29C CPU@29.5C GPU@28C POM_5V_IN 1812/1812 POM_5V_GPU 120/120", (1812, "POM_5V_IN")),
    ("RAM 2272/7620MB (lfb 4x4MB) VDD_GPU_SOC 3034mW/3049mW/3412mW VDD_CPU_CV 1137mW/1296mW/2273mW",
     (3034 + 1137, "sum")),
    ("RAM 100/200MB VDD_IN 4.5W/4.4W", (4500, "VDD_IN")),
])
def test_older_and_newer_rail_formats(line, expected):
    s = parse_tegrastats_line(line)
    total, src = s.total_mw()
    assert total == pytest.approx(expected[0]) and src.startswith(expected[1])


def test_non_tegrastats_lines_are_ignored():
    assert parse_tegrastats_line("") is None
    assert parse_tegrastats_line("tegrastats: permission denied") is None


def test_nvpmodel_outputs():
    assert parse_nvpmodel((JET / "orin_nano_nvpmodel.txt").read_text()) == ("15W", 0)
    assert parse_nvpmodel((JET / "agx_orin_nvpmodel.txt").read_text()) == ("MAXN", 0)
    assert parse_nvpmodel((JET / "agx_orin_nvpmodel_30w.txt").read_text()) == ("30W", 2)
    assert parse_nvpmodel("NV Fan Mode:quiet\nNV Power Mode: MODE_15W_6CORE\n2\n") == ("MODE_15W_6CORE", 2)
    assert parse_nvpmodel("garbage") == (None, None)


def test_jetson_clocks_locked_and_dynamic():
    dyn = parse_jetson_clocks((JET / "orin_nano_jetson_clocks_dynamic.txt").read_text())
    assert dyn.locked is False and dyn.power_mode == "15W"
    assert dyn.clocks_mhz["gpu"] == {"min": 306.0, "max": 624.75, "current": 306.0}
    assert dyn.clocks_mhz["emc"]["current"] == 2133.0 and dyn.clocks_mhz["cpu1"]["current"] == pytest.approx(1036.8)
    locked = parse_jetson_clocks((JET / "orin_nano_jetson_clocks_locked.txt").read_text())
    assert locked.locked is True and locked.clocks_mhz["gpu"]["current"] == 624.75
    agx = parse_jetson_clocks((JET / "agx_orin_jetson_clocks_locked.txt").read_text())
    assert agx.locked is True and len([k for k in agx.clocks_mhz if k.startswith("cpu")]) == 12
    assert agx.power_mode == "MAXN"
    assert parse_jetson_clocks("Error: Run this script(/usr/bin/jetson_clocks) as a root user").locked is None


def test_rail_stats_and_mean_over_samples():
    samples = [parse_tegrastats_line(ln) for ln in lines("orin_nano_tegrastats.txt")[2:]]
    stats = {r.rail: r for r in rail_stats(samples)}
    assert stats["VDD_IN"].avg_w == pytest.approx((9647 + 9887 + 9727) / 3 / 1000, abs=1e-4)
    assert stats["VDD_IN"].peak_w == pytest.approx(9.887)
    assert mean_total_w(samples) == pytest.approx((9647 + 9887 + 9727) / 3 / 1000)
    assert mean_total_w([]) is None


def test_energy_arithmetic():
    # 9.75 W for 2 s, 400 runs of batch 8: 19.5 J; 48.75 mJ per run, 6.09375 mJ per item; 164.1 items/J
    e = energy(9.75, 2.0, 400, 8, idle_power_w=4.5)
    assert e["energy_j"] == pytest.approx(19.5)
    assert e["mj_per_run"] == pytest.approx(48.75)
    assert e["mj_per_item"] == pytest.approx(6.09375)
    assert e["items_per_joule"] == pytest.approx(3200 / 19.5)
    assert e["mj_per_item_above_idle"] == pytest.approx((9.75 - 4.5) * 2.0 * 1e3 / 3200)
    assert energy(None, 2.0, 10, 1)["mj_per_item"] is None
    assert energy(5.0, 1.0, 0, 1)["items_per_joule"] is None


def test_l4t_release_parsing_reuses_env(monkeypatch, tmp_path):
    text = (JET / "orin_nano_nv_tegra_release.txt").read_text()
    real_read = env._read
    monkeypatch.setattr(env, "_read", lambda p: text if str(p) == "/etc/nv_tegra_release" else
                        ("NVIDIA Jetson Orin Nano Developer Kit\x00" if "device-tree" in str(p) else real_read(p)))
    monkeypatch.setattr(env, "_run", lambda cmd, timeout=5.0: None)
    env.jetson_info.cache_clear()
    try:
        info = env.jetson_info()
        assert info.l4t == "36.3.0" and info.model == "NVIDIA Jetson Orin Nano Developer Kit"
    finally:
        env.jetson_info.cache_clear()


def _jetson_report(mode: str | None, tmp_path, name: str):
    from mmdeploy_kit.runtime.env import JetsonInfo
    from mmdeploy_kit.runtime.schema import Telemetry
    from tests.unit.test_bench_reports import make_report

    r = make_report()
    if mode is not None:
        r.environment.jetson = JetsonInfo(model="NVIDIA Jetson Orin Nano Developer Kit", l4t="36.3.0", power_mode=mode)
        r.telemetry = Telemetry(interval_ms=100, energy_window_s=1.0, power_mode=mode)
    path = tmp_path / name
    path.write_text(r.to_json())
    return path


def test_compare_refuses_different_power_modes(tmp_path, mmdk):
    a = _jetson_report("15W", tmp_path, "a.json")
    b = _jetson_report("7W", tmp_path, "b.json")
    res = mmdk("compare", a, b)
    assert res.code == 2 and res.one_line_error()
    assert "different Jetson power modes (15W vs 7W)" in res.err and "--allow-power-mode-mismatch" in res.err
    res = mmdk("compare", a, b, "--allow-power-mode-mismatch")
    assert res.code == 0 and "warning: the reports were taken in different Jetson power modes" in res.err
    assert mmdk("compare", a, _jetson_report("15W", tmp_path, "c.json")).code == 0
    assert mmdk("compare", a, _jetson_report(None, tmp_path, "cpu.json")).code == 0   # not both Jetsons
