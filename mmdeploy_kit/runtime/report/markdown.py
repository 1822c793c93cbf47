"""Markdown tables ready for a CI step summary (``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from ..accuracy import headline_metric
from ..env import Environment
from ..schema import AccuracyReport, BenchReport, Gate, Speedup, Telemetry


def fmt_speedup(s: Optional[Speedup]) -> str:
    if s is None:
        return "baseline"
    return f"{s.ratio:.2f}x [{s.ci_low:.2f}, {s.ci_high:.2f}]"


def fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MB"


def _f(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(out)


def gate_status(g: Gate) -> str:
    return "PASS" if g.passed else "FAIL" if g.passed is False else "info"


SUMMARY_HEADERS = ["artifact", "role", "towers", "speedup", "accuracy", "size on disk", "load", "RSS added by load",
                   "peak RSS (process)"]


def summary_rows(report: BenchReport) -> list[list[Any]]:
    rows = []
    for a in report.artifacts:
        head = None
        if report.accuracy is not None:
            head = headline_metric(report.accuracy.primary.get(a.label, {}))
        peak = max((r.peak_rss_bytes or 0 for r in report.latency if r.artifact == a.label), default=0) or None
        rows.append([a.label, a.role, ", ".join(f"{t.name}:{t.backend}/{t.precision}" for t in a.towers.values()),
                     fmt_speedup(report.speedups.get(a.label)) if a.label != report.baseline else "baseline",
                     f"{head[0]} {head[1]:.2f}" if head else "-", fmt_bytes(a.size_on_disk_bytes),
                     f"{a.load_seconds:.2f} s", fmt_bytes(a.rss_load_delta_bytes), fmt_bytes(peak)])
    return rows


# ---- pieces shared with the HTML page (cells are plain values; each renderer escapes them) -------------
def confidence_pct(report: BenchReport) -> int:
    return int(round(report.config.timing.confidence * 100))


def run_note(report: BenchReport, strong: Callable[[str], str] = lambda s: f"**{s}**",
             text: Callable[[Any], str] = str) -> str:
    """What ran where and how to read the speedups; ``strong``/``text`` apply the renderer's markup/escaping."""
    r = report
    spread = (f" spread over {r.processes} worker processes (intervals resample whole processes, so they cover "
              "run-to-run variation)" if r.processes > 1 else "")
    want = r.config.timing.precision
    prec = "" if r.precision_reached_pct is None else (
        f" Precision reached: +-{r.precision_reached_pct:.1f}%" + (f" (asked: +-{want * 100:g}%)." if want else "."))
    return (f"Target {strong(r.target.name)} ({text(r.target.description)}); baseline {strong(str(r.baseline))}; "
            f"{text(r.created)}; {r.duration_s:.1f} s. Speedups are baseline time / artifact time from interleaved "
            f"rounds{spread}, with {confidence_pct(r)}% confidence intervals: read them, not absolute times, on shared "
            f"machines.{prec}")


PAIR_HEADERS = ["image tower", "text tower", "pairing", "zero-shot top-1", "top-5", "i→t R@1", "i→t R@5", "i→t R@10",
                "t→i R@1", "t→i R@5", "t→i R@10"]
DRIFT_HEADERS = ["artifact", "tower", "output", "n", "cosine mean", "cosine min", "max abs error", "top-1 agreement"]
CLASSIFIER_HEADERS = ["artifact", "tower", "output", "accuracy", "top-1 agreement"]
GATE_HEADERS = ["status", "gate", "verdict", "change [CI]", "detail"]
_RECALL_KS = ("R@1", "R@5", "R@10")


def pair_headers(a: AccuracyReport) -> list[str]:
    """PAIR_HEADERS named for the pair's media (audio / video towers: "a→t" / "v→t" recall)."""
    mod = a.modality or "image"
    if mod == "image":
        return PAIR_HEADERS
    m = mod[0]
    return [f"{mod} tower", *[h.replace("i→t", f"{m}→t").replace("t→i", f"t→{m}") for h in PAIR_HEADERS[1:]]]


def pair_rows(a: AccuracyReport) -> list[list[Any]]:
    return [[p.vision, p.text, "cross" if p.cross else "native", _f(p.zero_shot_top1), _f(p.zero_shot_top5),
             *[_f(p.image_to_text.get(k)) for k in _RECALL_KS], *[_f(p.text_to_image.get(k)) for k in _RECALL_KS]]
            for p in a.pairs]


def drift_rows(a: AccuracyReport) -> list[list[Any]]:
    return [[d.artifact, d.tower, d.output, d.n, _f(d.cosine_mean, 6), _f(d.cosine_min, 6),
             "non-finite" if d.max_abs_error is None else f"{d.max_abs_error:.3g}", _f(d.top1_agreement)]
            for d in a.drift]


def classifier_rows(a: AccuracyReport) -> list[list[Any]]:
    return [[c.artifact, c.tower, c.output, _f(c.accuracy), _f(c.top1_agreement)] for c in a.classifiers]


def _change_ci(g: Gate) -> str:
    if g.kind != "latency" or g.value is None:
        return "-"
    ci = f" [{g.ci_low * 100:+.1f}%, {g.ci_high * 100:+.1f}%]" if g.ci_low is not None and g.ci_high is not None else ""
    return f"{g.value * 100:+.1f}%{ci}"


def gate_rows(gates: Sequence[Gate]) -> list[list[Any]]:
    return [[gate_status(g), g.name, g.verdict or "-", _change_ci(g), g.message] for g in gates]


# ---- mmdk compare ------------------------------------------------------------------------------------------
def compare_cells(row: Any) -> tuple[str, str, str]:
    """(base, new, change) cells of a compare row, with intervals where the reports have them."""
    def val(v: Optional[float], ci: Optional[tuple[float, float]]) -> str:
        if v is None:
            return "-"
        return f"{v:.4g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")

    if row.change is None:
        change = "-"
    elif row.kind == "latency":
        change = f"{row.change * 100:+.1f}%" + (f" [{row.change_ci[0] * 100:+.1f}, {row.change_ci[1] * 100:+.1f}]"
                                                if row.change_ci else "")
    else:
        change = f"{row.change:+.2f}pt"
    return val(row.base, row.base_ci), val(row.new, row.new_ci), change


COMPARE_HEADERS = ["status", "kind", "artifact", "subject", "base", "new", "change [CI]", "verdict"]


def render_compare_markdown(result: Any) -> str:
    """``mmdk compare`` as Markdown: one row per comparison with intervals and the verdict."""
    rows = []
    for r in result.rows:
        b, n, c = compare_cells(r)
        rows.append(["FAIL" if r.regression else "ok" if r.gated else "shown", r.kind, r.artifact, r.subject, b, n, c,
                     r.verdict or "-"])
    status = "PASSED" if result.passed else f"FAILED ({len(result.regressions)} regression(s))"
    parts = [f"# mmdk compare: {result.base} -> {result.new}",
             "Latency is gated on each report's speedup vs the reference measured in the same run; a change beyond "
             "the threshold fails only outside the noise (its interval, from both reports' intervals, excludes no "
             "change) and reads *within noise* otherwise. Absolute p50 times are shown"
             + (" and gated." if result.latency_metric == "p50" else ", not gated (--gate-absolute)."),
             table(COMPARE_HEADERS, rows)]
    if result.warnings:
        parts.append("\n".join(f"- {w}" for w in result.warnings))
    parts.append(f"**Result: {status}**")
    return "\n\n".join(parts) + "\n"


def environment_rows(env: Environment) -> list[list[Any]]:
    return [["cpu", env.cpu_model], ["flags", " ".join(env.cpu_flags) or "-"],
            ["cores (available/logical)", f"{env.cpu_cores_available}/{env.cpu_cores_logical}"],
            ["RAM", f"{env.ram_total_mb} MB"], ["os", env.os], ["python", env.python],
            *[[k, v] for k, v in env.packages.items()],
            *[["gpu", f"{g.name} (driver {g.driver}, CUDA {g.cuda})"] for g in env.gpus],
            *([["jetson", env.jetson.model_dump_json()]] if env.jetson else []),
            *([["remote host", f"{env.remote.host} ({env.remote.address})"
                + (f"; {env.remote.mmdk}" if env.remote.mmdk else "")]] if env.remote else [])]


# ---- Jetson power and energy (present when tegrastats ran) -----------------------------------------------
ENERGY_HEADERS = ["artifact", "tower", "batch", "seq", "mJ / inference (item)", "items / J", "mJ / item above idle",
                  "avg W", "peak W", "latency ms", "runs", "samples"]


def telemetry_note(t: Telemetry) -> str:
    clocks = {True: "clocks locked (jetson_clocks)", False: "clocks NOT locked (dynamic frequency scaling)",
              None: "clock locking unknown (jetson_clocks --show needs root)"}[t.clocks_locked]
    board = ", ".join(x for x in (t.model, f"L4T {t.l4t}" if t.l4t else "", f"JetPack {t.jetpack}" if t.jetpack else "")
                      if x)
    gpu = (f"; GPU {_f(t.gpu_load_pct_avg, 0)}% load" + (f" at {_f(t.gpu_freq_mhz_avg, 0)} MHz (max "
           f"{_f(t.gpu_freq_mhz_max, 0)})" if t.gpu_freq_mhz_avg is not None else "")) if t.gpu_load_pct_avg is not None else ""
    emc = f"; EMC {_f(t.emc_freq_mhz_avg, 0)} MHz, {_f(t.emc_load_pct_avg, 0)}% load" if t.emc_freq_mhz_avg is not None else ""
    ram = (f"; RAM {_f(t.ram_used_mb_avg, 0)} MB avg, {_f(t.ram_used_mb_peak, 0)} MB peak of {t.ram_total_mb} MB"
           if t.ram_used_mb_avg is not None else "")
    return (f"{board + '; ' if board else ''}power mode {t.power_mode or 'unknown'}"
            f"{f' (id {t.power_mode_id})' if t.power_mode_id is not None else ''}; {clocks}. Total power = "
            f"{t.total_rail}; idle {_f(t.idle_power_w)} W; during the timed rounds {_f(t.avg_power_w)} W avg, "
            f"{_f(t.peak_power_w)} W peak ({t.samples} tegrastats samples every {t.interval_ms} ms){gpu}{emc}{ram}. "
            f"Energy: each artifact alone for {t.energy_window_s:g} s per shape.")


def energy_rows(t: Telemetry) -> list[list[Any]]:
    return [[e.artifact, e.tower, e.batch, e.seq if e.seq is not None else "-", _f(e.energy_mj_per_item, 3),
             _f(e.items_per_joule, 1), _f(e.energy_mj_per_item_above_idle, 3), _f(e.avg_power_w, 3),
             _f(e.peak_power_w, 3), _f(e.latency_ms_mean, 3), e.runs, e.samples] for e in t.energy]


def rail_rows(t: Telemetry) -> list[list[Any]]:
    return [[r.rail, _f(r.avg_w, 3), _f(r.peak_w, 3)] for r in t.rails]


# ---- Markdown --------------------------------------------------------------------------------------------
def render_markdown(report: BenchReport) -> str:
    r = report
    conf = confidence_pct(r)
    parts = [f"# mmdk bench: {', '.join(a.label for a in r.artifacts)}",
             run_note(r),
             f"Environment: {r.environment.short()}; threads {r.environment.threads}.",
             "## Summary",
             table(SUMMARY_HEADERS, summary_rows(r)),
             "## Latency",
             table(["artifact", "tower", "batch", "seq", "backend", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms",
                    "CV", "items/s", "first run ms", f"speedup [{conf}% CI]"],
                   [[x.artifact, x.tower, x.batch, x.seq if x.seq is not None else "-", x.backend,
                     _f(x.stats.p50_ms, 3), _f(x.stats.p90_ms, 3), _f(x.stats.p99_ms, 3),
                     f"{x.stats.mean_ms:.3f} ± {x.stats.std_ms:.3f}", _f(x.stats.cv, 3),
                     _f(x.stats.throughput_items_per_s, 1), _f(x.first_run_ms, 2), fmt_speedup(x.speedup)]
                    for x in r.latency])]
    if r.scenarios:
        parts += ["## Scenarios (MLPerf names)",
                  table(["scenario", "artifact", "tower", "batch", "seq", "value"],
                        [[s.scenario, s.artifact, s.tower, s.batch, s.seq if s.seq is not None else "-",
                          f"{s.value:.3f} {s.unit}"] for s in r.scenarios])]
    if r.telemetry is not None:
        t = r.telemetry
        parts += ["## Power and energy (Jetson)", telemetry_note(t), table(ENERGY_HEADERS, energy_rows(t))]
        if t.rails:
            parts.append(table(["rail", "avg W", "peak W"], rail_rows(t)))
        if t.warnings:
            parts.append("\n".join(f"- {w}" for w in t.warnings))
    if r.accuracy is not None:
        parts += _accuracy_md(r)
    if r.gates:
        parts += ["## Gates", table(GATE_HEADERS, gate_rows(r.gates))]
    if r.warnings:
        parts += ["## Warnings", "\n".join(f"- {w}" for w in r.warnings)]
    parts += ["<details><summary>Environment</summary>\n", table(["key", "value"], environment_rows(r.environment)),
              "\n</details>"]
    status = "PASSED" if r.passed else "FAILED"
    parts.append(f"**Result: {status}** ({sum(g.passed is False for g in r.gates)} failed gate(s)).")
    return "\n\n".join(parts) + "\n"


def _accuracy_md(r: BenchReport) -> list[str]:
    a = r.accuracy
    assert a is not None
    out = ["## Task accuracy",
           f"{a.n_samples} samples from `{a.data}` ({_media_count(a)}, {a.n_captions} captions, {a.n_classes} "
           f"classes); same preprocessed inputs for every artifact" +
           (f"; templates: {', '.join(repr(t) for t in a.templates)}" if a.templates else "") + "."]
    if a.pairs:
        out.append(table(pair_headers(a), pair_rows(a)))
    if a.drift:
        out += [f"Drift vs {r.baseline}:", table(DRIFT_HEADERS, drift_rows(a))]
    if a.classifiers:
        out.append(table(CLASSIFIER_HEADERS, classifier_rows(a)))
    return out


def _media_count(a: AccuracyReport) -> str:
    if a.modality in (None, "image"):
        return f"{a.n_images} images"
    return f"{a.n_media} {a.modality} clips"
