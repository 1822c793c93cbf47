"""The run's report: a waterfall of what each step did to size, parameters, speed and the task metric.

Written as ``OUT/run_report.json`` / ``.md`` / ``.html`` (tables rendered with the bench report's helpers);
the Markdown is appended to ``$GITHUB_STEP_SUMMARY`` when that is set (a CI job's summary page).
Latency ratio and task metric come from bench steps: a bench step's figures belong to the model it measured
(the step before it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

WATERFALL_HEADERS = ["step", "pass", "cached", "seconds", "size on disk", "parameters", "speedup vs source",
                     "task metric", "verification cosine_min"]


def waterfall(result: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"step": "source", "pass": "", "cached": None, "seconds": None,
                                   "size_bytes": result.source_size_bytes, "parameters": result.source_parameters,
                                   "speedup": 1.0, "task_metric": None, "task_value": None, "cosine_min": None}]
    for s in result.steps:
        if s.pass_name == "bench":
            target = rows[-1]
            target["speedup"] = s.metrics.get("speedup") if rows[-1]["step"] != "source" else 1.0
            target["speedup_ci"] = s.metrics.get("speedup_ci")
            target["task_metric"] = s.metrics.get("task_metric")
            target["task_value"] = s.metrics.get("task_value")
            if rows[0]["task_value"] is None:
                rows[0]["task_metric"] = s.metrics.get("task_metric")
                rows[0]["task_value"] = s.metrics.get("reference_task_value")
            target["bench_step"] = s.name
            target["gates_failed"] = s.metrics.get("failed_gates") or []
            continue
        rows.append({"step": s.name, "pass": s.pass_name, "cached": s.cached, "seconds": s.seconds,
                     "size_bytes": s.size_bytes, "parameters": s.parameters, "speedup": None,
                     "task_metric": None, "task_value": None, "cosine_min": s.verification.get("cosine_min")})
    return rows


def _cells(row: dict[str, Any]) -> list[str]:
    from ..runtime.report.markdown import fmt_bytes

    speed = "—" if row.get("speedup") is None else f"{row['speedup']:.2f}x"
    if row.get("speedup_ci"):
        lo, hi = row["speedup_ci"]
        speed += f" [{lo:.2f}, {hi:.2f}]"
    task = "—" if row.get("task_value") is None else f"{row['task_metric']} {row['task_value']:.2f}"
    cos = "—" if row.get("cosine_min") is None else f"{row['cosine_min']:.5f}"
    cached = "" if row.get("cached") is None else ("yes" if row["cached"] else "no")
    secs = "" if row.get("seconds") is None else f"{row['seconds']:.1f}"
    params = "—" if row.get("parameters") is None else f"{row['parameters']:,}"
    return [row["step"], row["pass"], cached, secs, fmt_bytes(row["size_bytes"]) if row["size_bytes"] else "—",
            params, speed, task, cos]


def render_markdown(result: Any, rows: list[dict[str, Any]]) -> str:
    from ..runtime.report.markdown import table

    status = "passed" if result.passed else "**FAILED** (a bench gate failed)"
    lines = [f"## mmdk run: {result.recipe.get('description') or 'recipe'}", "",
             f"Source `{result.source}` → `{result.out}`; {len(result.steps)} step(s), {status}.", "",
             table(WATERFALL_HEADERS, [_cells(r) for r in rows]), ""]
    for r in rows:
        for g in r.get("gates_failed") or []:
            lines.append(f"- FAIL {g}")
    return "\n".join(lines) + "\n"


def render_html(result: Any, rows: list[dict[str, Any]]) -> str:
    from ..runtime.report.html import CSS, esc, html_table

    bench_links = "".join(f'<li><a href="{esc(Path(s.output_dir).name)}/bench.html">{esc(s.name)}</a></li>'
                          for s in result.steps if s.pass_name == "bench")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>mmdk run</title><style>{CSS}</style></head>"
            f"<body><h1>mmdk run: {esc(result.recipe.get('description') or 'recipe')}</h1>"
            f"<p>Source <code>{esc(result.source)}</code>; {'passed' if result.passed else 'FAILED'}.</p>"
            f"{html_table(WATERFALL_HEADERS, [_cells(r) for r in rows])}"
            + (f"<h2>Bench reports</h2><ul>{bench_links}</ul>" if bench_links else "") + "</body></html>\n")


def write_run_reports(result: Any, summary_env: Optional[str] = "GITHUB_STEP_SUMMARY") -> dict[str, Path]:
    from ..artifacts import write_json_atomic
    from ..runtime.report import write_report_file

    rows = waterfall(result)
    out = Path(result.out)
    md = render_markdown(result, rows)
    paths = {"json": write_json_atomic(out / "run_report.json", {"passed": result.passed, "waterfall": rows}),
             "markdown": write_report_file(out / "run_report.md", md),
             "html": write_report_file(out / "run_report.html", render_html(result, rows))}
    summary = os.environ.get(summary_env or "")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md + "\n")
    return paths


def load_waterfall(out: str | Path) -> list[dict[str, Any]]:
    return json.loads((Path(out) / "run_report.json").read_text())["waterfall"]
