"""The run context is typed: what passes need are declared fields the runner sets (no untyped side channel)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mmdeploy_kit"


def test_run_context_has_declared_fields_only():
    from mmdeploy_kit.passes.base import Checkpoints, RunContext

    names = {f.name for f in dataclasses.fields(RunContext)}
    assert "extras" not in names and "calibration" not in names  # calibration data is a config path (hashed)
    assert {"load_options", "reference_load_options", "checkpoints"} <= names
    assert RunContext().checkpoints == Checkpoints()


def test_no_pass_reads_an_untyped_side_channel():
    hits = [f"{p.relative_to(PKG)}:{n}" for p in PKG.rglob("*.py")
            for n, line in enumerate(p.read_text().splitlines(), 1) if "extras[" in line or "ctx.extras" in line]
    assert hits == []


def test_every_training_pass_declares_checkpoints():
    from mmdeploy_kit.passes.registry import get_pass

    assert get_pass("distill").checkpoints and not get_pass("quantize").checkpoints
