"""Renderings of a :class:`~mmdeploy_kit.runtime.schema.BenchReport`: JSON (source of truth), Markdown,
self-contained HTML and JUnit XML. ``write_reports`` renders everything first, then writes each file
atomically, so a failure never leaves a partial report behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ...artifacts import atomic_output_file
from ..schema import BenchReport


def render(report: BenchReport, fmt: str) -> str:
    if fmt == "json":
        return report.to_json()
    if fmt == "markdown":
        from .markdown import render_markdown

        return render_markdown(report)
    if fmt == "html":
        from .html import render_html

        return render_html(report)
    if fmt == "junit":
        from .junit import render_junit

        return render_junit(report.gates, suite="mmdk.bench", duration_s=report.duration_s)
    raise ValueError(f"unknown report format {fmt!r}")


def write_reports(report: BenchReport, json: Optional[str | Path] = None, markdown: Optional[str | Path] = None,
                  html: Optional[str | Path] = None, junit: Optional[str | Path] = None) -> dict[str, Path]:
    """Render the requested formats, then write them; returns {format: path}."""
    wanted = {"json": json, "markdown": markdown, "html": html, "junit": junit}
    texts = {fmt: render(report, fmt) for fmt, path in wanted.items() if path is not None}
    return {fmt: write_report_file(wanted[fmt], text) for fmt, text in texts.items()}  # type: ignore[arg-type]


def write_report_file(path: str | Path, text: str) -> Path:
    """Write one report atomically (temp file, then rename), readable as the umask allows."""
    path = Path(path)
    with atomic_output_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        _readable(tmp)
    return path


def _readable(path: Path) -> None:
    """mkstemp files are 0600; reports are meant to be shared (CI artifacts): honour the umask instead."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
