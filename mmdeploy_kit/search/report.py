"""The search's outputs: ``OUT/pareto.{json,md,html}`` (every trial: config, figures, state; the Pareto front
plotted as an inline SVG: latency vs the task metric, size as colour, the budget line), ``OUT/best.yaml`` (the
chosen trial as a plain recipe ``mmdk run`` reproduces) and its artifacts in ``OUT/best/``."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any, Optional

from ..artifacts import atomic_output_file, write_json_atomic
from .objectives import OBJECTIVES, parse_search_budget
from .trial import Settings


def collect(study: Any, s: Settings) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if ua.get("skipped"):
            continue
        cons = ua.get("constraints") or []
        rows.append({
            "number": t.number, "state": t.state.name.lower(), "values": list(t.values) if t.values else None,
            "choices": ua.get("choices") or dict(t.params), "recipe": ua.get("recipe"),
            "figures": ua.get("figures"), "constraints": cons,
            "feasible": bool(t.values) and all(c <= 0 for c in cons),
            "duplicate_of": ua.get("duplicate_of"), "error": ua.get("error"), "invalid": ua.get("invalid"),
            "stale": bool(ua.get("stale")), "seconds": ua.get("seconds"), "run_dir": ua.get("run_dir"),
            "host": ua.get("host"), "worker": ua.get("worker"), "config_key": ua.get("config_key"),
        })
    return rows


def pareto(rows: list[dict[str, Any]], dirs: list[str]) -> list[int]:
    """Numbers of the non-dominated feasible, finished, distinct trials."""
    pts = [r for r in rows if r["state"] == "complete" and r["feasible"] and r["duplicate_of"] is None]
    sign = [1.0 if d == "minimize" else -1.0 for d in dirs]

    def dominates(a: list[float], b: list[float]) -> bool:
        ka, kb = [x * s for x, s in zip(a, sign)], [x * s for x, s in zip(b, sign)]
        return all(x <= y for x, y in zip(ka, kb)) and any(x < y for x, y in zip(ka, kb))

    return sorted(r["number"] for r in pts if not any(dominates(o["values"], r["values"]) for o in pts if o is not r))


def choose_best(rows: list[dict[str, Any]], front: list[int], dirs: list[str]) -> Optional[dict[str, Any]]:
    """Inside every budget: the best first objective (the fastest), ties broken by the task metric."""
    cands = [r for r in rows if r["number"] in front]
    if not cands:
        return None
    sign = [1.0 if d == "minimize" else -1.0 for d in dirs]
    return min(cands, key=lambda r: [v * s for v, s in zip(r["values"], sign)])


def write_outputs(study: Any, s: Settings, elapsed_s: float) -> dict[str, Any]:
    from .objectives import directions

    dirs = directions(s.objectives, s.task_metric)
    rows = collect(study, s)
    front = pareto(rows, dirs)
    best = choose_best(rows, front, dirs)
    out = Path(s.out)
    states = {st: sum(r["state"] == st for r in rows) for st in ("complete", "fail", "pruned", "running")}
    summary = {
        "schema": "mmdk.optimize.pareto", "study": s.study_name, "storage": s.storage or str(out / "study.journal"),
        "model": s.model, "target": s.target, "objectives": s.objectives, "task_metric": s.task_metric,
        "directions": dirs, "budgets": s.budgets, "space": s.space, "elapsed_s": round(elapsed_s, 1),
        "trials": rows, "counts": {**states, "distinct_complete": sum(r["state"] == "complete" and
                                                                      r["duplicate_of"] is None for r in rows)},
        "pareto": front, "best": best["number"] if best else None,
        "workers": sorted(k.removeprefix("worker:") for k in study.user_attrs if k.startswith("worker:")),
    }
    write_json_atomic(out / "pareto.json", summary)
    with atomic_output_file(out / "pareto.md") as tmp:
        tmp.write_text(render_markdown(summary))
    with atomic_output_file(out / "pareto.html") as tmp:
        tmp.write_text(render_html(summary))
    if best is not None and best.get("recipe"):
        _write_best(best, s, out)
    return summary


def _write_best(best: dict[str, Any], s: Settings, out: Path) -> None:
    from ..pipeline.recipe import dump_recipe

    recipe = dict(best["recipe"])
    if not any("bench" in st for st in recipe["steps"]):   # benched on a remote host: add the local bench
        recipe["steps"] = [*recipe["steps"], {"bench": {"target": s.target, **s.bench,
                                                        **({"data": "val"} if s.val else {})}}]
        if s.val:
            recipe["data"] = {**recipe.get("data", {}), "val": s.val}
    recipe["description"] = f"mmdk optimize: best trial {best['number']} of study {s.study_name} " \
                            f"({recipe.get('description', '').removeprefix('mmdk optimize trial: ')})"
    with atomic_output_file(out / "best.yaml") as tmp:
        tmp.write_text(f"# mmdk run {out / 'best.yaml'} -o RUN   reproduces trial {best['number']}\n"
                       + dump_recipe(recipe))
    src = Path(best.get("run_dir") or "")
    if src.is_dir():
        dest = out / "best"
        tmp_dest = out / ".best.tmp"
        shutil.rmtree(tmp_dest, ignore_errors=True)
        shutil.copytree(src, tmp_dest)
        shutil.rmtree(dest, ignore_errors=True)
        tmp_dest.rename(dest)


# ---- rendering ----------------------------------------------------------------------------------------------------
def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _describe(r: dict[str, Any]) -> str:
    return (r.get("recipe") or {}).get("description", "").removeprefix("mmdk optimize trial: ") or \
        json.dumps(r["choices"])


def _table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    tm = summary["task_metric"]
    head = ["trial", "state", "config", "speedup", "latency ms", "size MB", *([tm, f"{tm} drop"] if tm else []),
            "budgets", "pareto"]
    body = []
    for r in summary["trials"]:
        f = r["figures"] or {}
        task = f.get("task") or {}
        state = r["state"] + (f" (= {r['duplicate_of']})" if r["duplicate_of"] is not None else "") + \
            (" (killed, re-queued)" if r["stale"] else "")
        note = r["error"] or r["invalid"]
        body.append([str(r["number"]) + (" ★" if r["number"] == summary["best"] else ""), state,
                     _describe(r) + (f" — {note}" if note else ""), _fmt(f.get("speedup")), _fmt(f.get("latency_ms")),
                     _fmt(f.get("size_mb")), *([_fmt(task.get(tm)), _fmt(task.get(f"{tm}_drop"))] if tm else []),
                     ("ok" if r["feasible"] else "over") if r["values"] else "—",
                     "●" if r["number"] in summary["pareto"] else ""])
    return head, body


def render_markdown(summary: dict[str, Any]) -> str:
    head, body = _table(summary)
    c = summary["counts"]
    lines = [f"# mmdk optimize: {Path(summary['model']).name} on {summary['target']}", "",
             f"Objectives: {', '.join(summary['objectives'])}" + (f" + {summary['task_metric']} (maximised)"
                                                                 if summary["task_metric"] else ""),
             f"Budgets (constraints): {', '.join(summary['budgets']) or 'none'}",
             f"Trials: {c['complete']} finished ({c['distinct_complete']} distinct), {c['fail']} failed, "
             f"{c['pruned']} invalid, {c['running']} running; {summary['elapsed_s']:.0f} s",
             f"Pareto front (inside the budgets): trials {', '.join(map(str, summary['pareto'])) or 'none'}",
             f"Best (fastest inside the budgets): trial {summary['best']}" if summary["best"] is not None else
             "Best: no finished trial meets every budget", "",
             "Speedup = source model latency / trial latency (interleaved rounds of the bench harness); the drop is "
             "in points vs the source model on --data.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _svg(summary: dict[str, Any]) -> str:
    """Latency ratio (x, lower is faster) vs the task metric (y); colour = size; the budget line dashed."""
    tm = summary["task_metric"]
    pts = [r for r in summary["trials"] if r["state"] == "complete" and r["figures"] and r["duplicate_of"] is None]
    xs = [r["figures"].get("latency_ratio") for r in pts]
    ys = [(r["figures"].get("task") or {}).get(tm) if tm else r["figures"].get("size_mb") for r in pts]
    pts = [(r, x, y) for r, x, y in zip(pts, xs, ys) if x is not None and y is not None]
    W, H, M = 640, 400, 56
    if not pts:
        return f'<svg width="{W}" height="80"><text x="10" y="40">no finished trial to plot</text></svg>'
    x0, x1 = min(p[1] for p in pts), max(p[1] for p in pts)
    y0, y1 = min(p[2] for p in pts), max(p[2] for p in pts)
    ref = None
    budget = next((parse_search_budget(b) for b in summary["budgets"] if tm and b.startswith(f"{tm}_drop")), None)
    src = next((r["figures"].get("source_task", {}).get(tm) for r, _, _ in pts if tm), None)
    if budget is not None and src is not None:
        ref = src - budget.value
        y0, y1 = min(y0, ref), max(y1, ref, src)
    x0, x1 = min(x0, 1.0) * 0.95, max(x1, 1.0) * 1.05
    pad = (y1 - y0) * 0.08 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    sx = lambda x: M + (x - x0) / (x1 - x0) * (W - 2 * M)  # noqa: E731
    sy = lambda y: H - M - (y - y0) / (y1 - y0) * (H - 2 * M)  # noqa: E731
    sizes = [r["figures"].get("size_mb") or 0 for r, _, _ in pts]
    s0, s1 = min(sizes), max(sizes)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect x="{M}" y="{M}" width="{W - 2 * M}" height="{H - 2 * M}" fill="none" stroke="#999"/>',
           f'<text x="{W / 2}" y="{H - 14}" text-anchor="middle">latency vs source (ratio, lower is faster)</text>',
           f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">'
           f'{html.escape(tm or "size MB")}</text>']
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{sx(xv):.1f}" y="{H - M + 14}" text-anchor="middle">{xv:.2f}</text>')
        out.append(f'<text x="{M - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.1f}</text>')
    out.append(f'<line x1="{sx(1.0):.1f}" y1="{M}" x2="{sx(1.0):.1f}" y2="{H - M}" stroke="#bbb" stroke-dasharray="2,3"/>')
    if ref is not None:
        out.append(f'<line x1="{M}" y1="{sy(ref):.1f}" x2="{W - M}" y2="{sy(ref):.1f}" stroke="#c00" '
                   f'stroke-dasharray="6,4"/><text x="{W - M - 4}" y="{sy(ref) - 4:.1f}" text-anchor="end" '
                   f'fill="#c00">budget {html.escape(budget.text)}</text>')
    front = [(x, y) for r, x, y in sorted(pts, key=lambda p: p[1]) if r["number"] in summary["pareto"]]
    if len(front) > 1:
        out.append('<polyline fill="none" stroke="#36c" stroke-width="1.5" points="'
                   + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in front) + '"/>')
    for (r, x, y), size in zip(pts, sizes):
        t = (size - s0) / (s1 - s0) if s1 > s0 else 0.5
        colour = f"rgb({int(40 + 200 * t)},{int(160 - 100 * t)},{int(220 - 180 * t)})"
        on = r["number"] in summary["pareto"]
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{7 if on else 5}" fill="{colour}" '
                   f'stroke="{"#000" if on else "none"}"><title>trial {r["number"]}: {html.escape(_describe(r))}; '
                   f'{size:.2f} MB</title></circle>')
        out.append(f'<text x="{sx(x) + 8:.1f}" y="{sy(y) - 6:.1f}">{r["number"]}</text>')
    out.append(f'<text x="{W - M}" y="{M - 8}" text-anchor="end">colour: size {s0:.1f} MB (blue) → {s1:.1f} MB '
               '(red); ● outlined: Pareto front</text></svg>')
    return "\n".join(out)


def render_html(summary: dict[str, Any]) -> str:
    head, body = _table(summary)
    md = render_markdown(summary).split("\n| ")[0]
    intro = "".join(f"<p>{html.escape(ln.lstrip('# '))}</p>" for ln in md.splitlines() if ln.strip())
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>mmdk optimize</title><style>"
            "body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px}"
            "table{border-collapse:collapse}</style></head><body>"
            f"{intro}{_svg(summary)}<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{rows}"
            "</table></body></html>\n")


__all__ = ["write_outputs", "collect", "pareto", "choose_best", "OBJECTIVES"]
