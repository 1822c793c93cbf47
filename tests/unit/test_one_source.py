"""One source each: the NAME=VALUE parser (--tower-precision / --data, --ratio, --loss) and the synthetic-data
defaults (`mmdk data synth`, `mmdk.synth_data`, the demo checkpoint)."""

from __future__ import annotations

import pytest

from mmdeploy_kit.errors import UserInputError
from mmdeploy_kit.passes.base import name_value_pairs


def test_repeated_and_comma_separated_items():
    assert name_value_pairs(["vision=int8, text=fp32", "audio=fp16"], "--tower-precision", "v=int8") == [
        ("vision", "int8"), ("text", "fp32"), ("audio", "fp16")]
    assert name_value_pairs("feature,affinity=0.5", "--loss", "feature=1", bare="1") == [("feature", "1"),
                                                                                        ("affinity", "0.5")]
    assert name_value_pairs(None, "--data", "calib=x.jsonl") == []


@pytest.mark.parametrize("bad", ["vision", "=int8", "vision="])
def test_malformed_items_are_one_line_errors(bad):
    with pytest.raises(UserInputError, match="--tower-precision expects NAME=VALUE"):
        name_value_pairs([bad], "--tower-precision", "vision=int8")


def test_every_caller_uses_it():
    from mmdeploy_kit.cli.app import _pairs_opt
    from mmdeploy_kit.passes.distill import parse_losses
    from mmdeploy_kit.passes.prune.config import tower_values

    assert _pairs_opt(["calib=a.jsonl,val=b.jsonl"], "--data") == {"calib": "a.jsonl", "val": "b.jsonl"}
    assert parse_losses("feature,contrastive=0.5") == (("feature", 1.0), ("contrastive", 0.5))
    assert tower_values("vision=0.4,text=0.3", (), None, "ratio") == (("vision", 0.4), ("text", 0.3))
    with pytest.raises(UserInputError, match="--data expects NAME=PATH"):
        _pairs_opt(["calib"], "--data")
    with pytest.raises(UserInputError, match="--ratio expects TOWER=VALUE"):
        tower_values("vision=", (), None, "ratio")


def test_synthetic_data_defaults_are_defined_once():
    import inspect

    import typer.main

    from mmdeploy_kit.cli.app import app
    from mmdeploy_kit.data.synth import SYNTH_DEFAULTS, synthesize_dataset

    sig = inspect.signature(synthesize_dataset).parameters
    assert {k: sig[k].default for k in SYNTH_DEFAULTS} == SYNTH_DEFAULTS
    synth = typer.main.get_command(app).commands["data"].commands["synth"]
    cli = {p.name: p.default for p in synth.params if p.name in SYNTH_DEFAULTS}
    assert set(cli) == set(SYNTH_DEFAULTS)
    # None = "the synthesizer's own default" (images, audio and video differ); a value must be the same one
    assert all(v is None or v == SYNTH_DEFAULTS[k] for k, v in cli.items()), cli
    import mmdeploy_kit.demo_checkpoint as demo

    assert not hasattr(demo, "DEFAULT_DATA")  # the demo reads SYNTH_DEFAULTS


def test_source_files_named_in_docstrings_exist():
    """No stale names after a rename (``bench/env.py`` after bench/ became runtime/)."""
    import re
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[2] / "mmdeploy_kit"
    named = {(p.relative_to(pkg).as_posix(), m) for p in pkg.rglob("*.py")
             for m in re.findall(r"``((?:[a-z_]+/)+[a-z_]+\.py)``", p.read_text())}
    assert len(named) >= 10
    missing = [f"{where}: {m}" for where, m in sorted(named)
               if not (pkg / m).is_file() and not (pkg.parent / m).is_file()]
    assert missing == []
