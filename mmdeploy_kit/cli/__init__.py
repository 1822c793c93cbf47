"""``mmdk``: a thin Typer shell over ``mmdeploy_kit.api``. Parses arguments, calls api, prints.

``app.py`` holds the Typer app, shared options and the entry point; importing this package registers the commands
of ``commands_model`` (inspect, export, quantize, prune, distill, build-engines), ``commands_bench`` (bench,
compare, doctor) and ``commands_pipeline`` (run, recipes, demo, data synth).
"""

from __future__ import annotations

# importing registers the commands; this order is the order of `mmdk --help`
from . import commands_model, commands_pipeline, commands_bench, commands_search  # noqa: F401,I001
from .app import app, main

__all__ = ["app", "main"]
