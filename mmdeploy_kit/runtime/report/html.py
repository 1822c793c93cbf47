"""A self-contained HTML page (inline CSS + inline SVG, no scripts or CDN): opens offline, attaches to CI."""

from __future__ import annotations

import html
import math
from typing import Any, Optional, Sequence

from ..accuracy import headline_metric
from ..schema import BenchReport, LatencyResult
from .markdown import (CLASSIFIER_HEADERS, DRIFT_HEADERS, GATE_HEADERS, SUMMARY_HEADERS, _f,
                       classifier_rows, confidence_pct, drift_rows, environment_rows, fmt_bytes, fmt_speedup,
                       gate_rows, gate_status, pair_headers, pair_rows, run_note, summary_rows)

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 7px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.PASS{color:#2a7a2a;
font-weight:600}.FAIL{color:#b00020;font-weight:700}.info{color:#777}.charts{display:flex;flex-wrap:wrap;gap:1em}
.note{color:#555;font-size:.9em}svg text{font-family:inherit}"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], classes: Optional[Sequence[str]] = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for k, r in enumerate(rows):
        cls = f' class="{esc(classes[k])}"' if classes else ""
        body.append("<tr>" + "".join(f"<td{cls if j == 0 else ''}>{esc(c)}</td>" for j, c in enumerate(r)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    return [start + k * step for k in range(int(math.ceil((hi - start) / step)) + 1)]


def _frame(w: int, h: int, pad: tuple[int, int, int, int], xt: Sequence[tuple[float, str]], yt: Sequence[tuple[float, str]],
           xlabel: str, ylabel: str, title: str) -> list[str]:
    left, right, top, bottom = pad
    out = [f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="#fff" stroke="#999"/>',
           f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13" font-weight="600">{esc(title)}</text>',
           f'<text x="{w / 2}" y="{h - 6}" text-anchor="middle" font-size="11">{esc(xlabel)}</text>',
           f'<text x="12" y="{h / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 12 {h / 2})">{esc(ylabel)}</text>']
    for x, lab in xt:
        out.append(f'<line x1="{x:.1f}" y1="{h - bottom}" x2="{x:.1f}" y2="{h - bottom + 4}" stroke="#999"/>'
                   f'<text x="{x:.1f}" y="{h - bottom + 16}" text-anchor="middle" font-size="10">{esc(lab)}</text>')
    for y, lab in yt:
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{left - 5}" y="{y + 3:.1f}" text-anchor="end" font-size="10">{esc(lab)}</text>')
    return out


def pareto_svg(report: BenchReport) -> str:
    """Latency (relative to the baseline, from interleaved rounds) vs headline accuracy; frontier highlighted."""
    pts = []
    metric_name = None
    for a in report.artifacts:
        rel = 1.0 if a.label == report.baseline else (1.0 / report.speedups[a.label].ratio
                                                      if a.label in report.speedups else None)
        if rel is None:
            continue
        acc = None
        if report.accuracy is not None:
            head = headline_metric(report.accuracy.primary.get(a.label, {}))
            if head:
                metric_name, acc = head
        pts.append((a.label, rel, acc))
    w, h, pad = 520, 340, (60, 20, 28, 44)
    xs = [p[1] for p in pts] or [1.0]
    ys = [p[2] for p in pts if p[2] is not None]
    x_lo, x_hi = 0.0, max(xs) * 1.15
    y_lo, y_hi = (min(ys) - 5, max(ys) + 5) if ys else (0.0, 1.0)
    y_lo, y_hi = max(0.0, y_lo), min(100.0, y_hi) if ys and max(ys) <= 100 else y_hi
    if y_hi <= y_lo:
        y_hi = y_lo + 1

    def sx(v: float) -> float:
        return pad[0] + (v - x_lo) / (x_hi - x_lo) * (w - pad[0] - pad[1])

    def sy(v: float) -> float:
        return h - pad[3] - (v - y_lo) / (y_hi - y_lo) * (h - pad[2] - pad[3])

    ylabel = f"{metric_name} (%)" if metric_name else "accuracy (no --data)"
    out = _frame(w, h, pad, [(sx(t), f"{t:g}") for t in _ticks(x_lo, x_hi) if t <= x_hi],
                 [(sy(t), f"{t:g}") for t in _ticks(y_lo, y_hi) if y_lo <= t <= y_hi],
                 f"latency relative to {report.baseline} (geomean over configs; lower is better)", ylabel,
                 "Latency vs accuracy (Pareto)")
    scored = [p for p in pts if p[2] is not None]
    front = [p for p in scored if not any((q[1] <= p[1] and q[2] >= p[2]) and (q[1] < p[1] or q[2] > p[2])
                                          for q in scored)]
    front.sort(key=lambda p: p[1])
    if len(front) > 1:
        path = " ".join(f"{sx(p[1]):.1f},{sy(p[2]):.1f}" for p in front)
        out.append(f'<polyline class="pareto-front" points="{path}" fill="none" stroke="#555" stroke-dasharray="4 3"/>')
    for k, (label, rel, acc) in enumerate(pts):
        y = sy(acc) if acc is not None else sy(y_lo)
        color = PALETTE[k % len(PALETTE)]
        on_front = any(p[0] == label for p in front)
        out.append(f'<circle cx="{sx(rel):.1f}" cy="{y:.1f}" r="{6 if on_front else 4.5}" fill="{color}" '
                   f'stroke="#000" stroke-width="{1.5 if on_front else 0.5}"><title>{esc(label)}: '
                   f'{rel:.3f}x latency, {metric_name or "accuracy"} {_f(acc)}</title></circle>'
                   f'<text x="{sx(rel) + 8:.1f}" y="{y - 6:.1f}" font-size="11">{esc(label)}</text>')
    return (f'<svg class="pareto" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="latency vs accuracy">{"".join(out)}</svg>')


def batch_chart_svg(tower: str, seq: Optional[int], rows: Sequence[LatencyResult], labels: Sequence[str]) -> str:
    """p50 latency per batch size for every artifact (whiskers: p90), one chart per tower (x seq)."""
    batches = sorted({r.batch for r in rows})
    w, h, pad = 420, 280, (60, 110, 28, 44)
    y_hi = max(r.stats.p90_ms for r in rows) * 1.1 or 1.0

    def sx(i: int) -> float:
        span = w - pad[0] - pad[1]
        return pad[0] + (i + 0.5) * span / max(1, len(batches))

    def sy(v: float) -> float:
        return h - pad[3] - v / y_hi * (h - pad[2] - pad[3])

    title = f"{tower}" + (f" (seq {seq})" if seq is not None else "") + ": p50 latency by batch"
    out = _frame(w, h, pad, [(sx(i), str(b)) for i, b in enumerate(batches)],
                 [(sy(t), f"{t:g}") for t in _ticks(0, y_hi) if t <= y_hi], "batch size", "ms (p50, whisker p90)", title)
    for k, label in enumerate(labels):
        color = PALETTE[k % len(PALETTE)]
        mine = {r.batch: r for r in rows if r.artifact == label}
        pts = [(sx(i), mine[b]) for i, b in enumerate(batches) if b in mine]
        if not pts:
            continue
        if len(pts) > 1:
            out.append(f'<polyline points="{" ".join(f"{x:.1f},{sy(r.stats.p50_ms):.1f}" for x, r in pts)}" '
                       f'fill="none" stroke="{color}" stroke-width="2"/>')
        for x, r in pts:
            out.append(f'<line x1="{x:.1f}" y1="{sy(r.stats.p50_ms):.1f}" x2="{x:.1f}" y2="{sy(r.stats.p90_ms):.1f}" '
                       f'stroke="{color}"/><circle cx="{x:.1f}" cy="{sy(r.stats.p50_ms):.1f}" r="3.5" fill="{color}">'
                       f'<title>{esc(label)} batch {r.batch}: p50 {r.stats.p50_ms:.3f} ms, p90 {r.stats.p90_ms:.3f} ms'
                       f'</title></circle>')
        ly = pad[2] + 14 + 16 * k
        out.append(f'<rect x="{w - pad[1] + 10}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{w - pad[1] + 25}" y="{ly}" font-size="11">{esc(label)}</text>')
    return (f'<svg class="batch-chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{esc(title)}">{"".join(out)}</svg>')


def render_html(report: BenchReport) -> str:
    r = report
    labels = [a.label for a in r.artifacts]
    charts = []
    for key in dict.fromkeys((x.tower, x.seq) for x in r.latency):
        rows = [x for x in r.latency if (x.tower, x.seq) == key]
        charts.append(batch_chart_svg(key[0], key[1], rows, labels))
    conf = confidence_pct(r)
    note = run_note(r, strong=lambda s: f"<b>{esc(s)}</b>", text=esc)
    body = [f"<h1>mmdk bench: {esc(', '.join(labels))}</h1>",
            f'<p class="note">{note}<br>{esc(r.environment.short())}</p>',
            f'<p class="{"PASS" if r.passed else "FAIL"}">Result: {"PASSED" if r.passed else "FAILED"}</p>',
            "<h2>Summary</h2>",
            html_table(SUMMARY_HEADERS, summary_rows(r)),
            "<h2>Latency vs accuracy</h2>", pareto_svg(r),
            "<h2>Latency by batch</h2>", f'<div class="charts">{"".join(charts)}</div>',
            html_table(["artifact", "tower", "batch", "seq", "backend", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "mean ms",
                        "std ms", "CV", "items/s", "first run ms", "peak RSS", f"speedup [{conf}% CI]"],
                       [[x.artifact, x.tower, x.batch, x.seq if x.seq is not None else "-", x.backend,
                         _f(x.stats.p50_ms, 3), _f(x.stats.p90_ms, 3), _f(x.stats.p95_ms, 3), _f(x.stats.p99_ms, 3),
                         _f(x.stats.mean_ms, 3), _f(x.stats.std_ms, 3), _f(x.stats.cv, 3),
                         _f(x.stats.throughput_items_per_s, 1), _f(x.first_run_ms, 2), fmt_bytes(x.peak_rss_bytes),
                         fmt_speedup(x.speedup)] for x in r.latency])]
    if r.telemetry is not None:
        from .markdown import ENERGY_HEADERS, energy_rows, rail_rows, telemetry_note

        t = r.telemetry
        body += ["<h2>Power and energy (Jetson)</h2>", f'<p class="note">{esc(telemetry_note(t))}</p>',
                 html_table(ENERGY_HEADERS, energy_rows(t))]
        if t.rails:
            body.append(html_table(["rail", "avg W", "peak W"], rail_rows(t)))
        if t.warnings:
            body.append("<ul>" + "".join(f"<li>{esc(w)}</li>" for w in t.warnings) + "</ul>")
    if r.accuracy is not None:
        a = r.accuracy
        body += ["<h2>Task accuracy</h2>",
                 f'<p class="note">{a.n_samples} samples from {esc(a.data)}; {a.n_classes} classes; templates '
                 f"{esc(', '.join(a.templates) or '-')}</p>"]
        if a.pairs:
            body.append(html_table(pair_headers(a), pair_rows(a)))
        if a.drift:
            body.append(html_table(DRIFT_HEADERS, drift_rows(a)))
        if a.classifiers:
            body.append(html_table(CLASSIFIER_HEADERS, classifier_rows(a)))
    if r.gates:
        body += ["<h2>Gates</h2>", html_table(GATE_HEADERS, gate_rows(r.gates), classes=[gate_status(g) for g in r.gates])]
    if r.warnings:
        body += ["<h2>Warnings</h2><ul>" + "".join(f"<li>{esc(w)}</li>" for w in r.warnings) + "</ul>"]
    body += ["<h2>Environment</h2>", html_table(["key", "value"], environment_rows(r.environment))]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>mmdk bench report</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
