"""The ``mmdk`` Typer app, the options shared by commands, and the entry point that turns every MmdkError into
one line and its exit code. The commands live in ``commands_*.py`` and register on ``app`` when
``mmdeploy_kit.cli`` is imported.

Must not import torch/onnxruntime at import time (``mmdk --help`` stays fast; a test checks it).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from ..errors import MmdkError

app = typer.Typer(
    name="mmdk",
    help="mmdeploy_kit: make multimodal PyTorch checkpoints deployable, tower by tower.\n\n"
    "MODEL is a Hugging Face directory, path/to/file.py:factory (with --weights and --io), a TorchScript "
    "(.ts/.pt) or torch.export (.pt2) file (with --io), an .onnx file, or a directory written by mmdk.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Datasets: generate the synthetic demo dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_STATE = {"debug": False, "quiet": False}

# ---- shared options ------------------------------------------------------------------------------------
WeightsOpt = typer.Option(None, "--weights", help="State dict for a factory MODEL (.safetensors, or .pt/.bin "
                          "loaded with weights_only=True).")
IoOpt = typer.Option(None, "--io", help="I/O spec YAML (inputs, outputs, dims; or towers:). Required for "
                     "factory, TorchScript and .pt2 models.")
TrustOpt = typer.Option(False, "--trust-remote-code", help="Allow executing code shipped with the checkpoint "
                        "(HF auto_map, pickled modules). Off by default.")
TowerOpt = typer.Option(None, "--tower", help="Only these towers (repeatable). Default: all.")
SaveRecipeOpt = typer.Option(None, "--save-recipe", help="Also write this command as a one-step recipe YAML "
                             "(run it later with `mmdk run FILE`).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace a non-empty output directory.")
ForceOpt = typer.Option(False, "--force", help="Ignore the step cache ($MMDK_CACHE_DIR/steps) and recompute.")
SshKeyOpt = typer.Option(None, "--ssh-key", help="--host: private key file (ssh -i).")
SshOptionOpt = typer.Option(None, "--ssh-option", help="--host: extra ssh option KEY=VALUE (repeatable), e.g. "
                            "ProxyJump=bastion.")
AcceptNewHostKeyOpt = typer.Option(False, "--accept-new-host-key", help="--host: trust the device's key on first "
                                   "connection (StrictHostKeyChecking=accept-new; otherwise an unknown key is refused).")
RemoteMmdkOpt = typer.Option(None, "--remote-mmdk", help="--host: the mmdk command on the device (default: mmdk on "
                             "its PATH, ~/.local/bin included).")


def _dflt(pass_name: str, field: str) -> str:
    """``(default: X)`` read from the pass's config class, so a default is written once (in the config)."""
    import importlib

    from ..passes.registry import PASS_REGISTRY

    module, _, cls = PASS_REGISTRY[pass_name].target.partition(":")
    config_cls = getattr(importlib.import_module(module), cls).config_cls
    return f"(default: {config_cls.model_fields[field].default})"


def load_kwargs(weights: Optional[Path], io: Optional[Path], trust_remote_code: bool) -> dict[str, Any]:
    return {"weights": weights, "io": io, "trust_remote_code": trust_remote_code}


def echo(msg: str) -> None:
    if not _STATE["quiet"]:
        typer.echo(msg, err=True)


def progress() -> Optional[Callable[[str], None]]:
    return None if _STATE["quiet"] else (lambda m: typer.echo(f"  · {m}", err=True))


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"mmdk {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print results and errors (for CI logs)."),
    version: bool = typer.Option(False, "--version", is_eager=True, help="Print the mmdk version and exit.",
                                 callback=lambda v: _print_version(v)),
) -> None:
    _STATE["debug"] = debug
    _STATE["quiet"] = quiet


def _pairs_opt(values: Optional[List[str]], what: str) -> dict[str, str]:
    """``['vision=int8,text=fp32', 'audio=fp16']`` -> ``{'vision': 'int8', 'text': 'fp32', 'audio': 'fp16'}``."""
    from ..passes.base import name_value_pairs

    if what == "--data":
        return dict(name_value_pairs(values, what, "calib=train.jsonl", form="NAME=PATH"))
    return dict(name_value_pairs(values, what, "vision=int8,text=fp32", form="TOWER=VALUE"))


recipes_app = typer.Typer(help="Built-in recipes and the recipe format.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")


# ---- entry point ------------------------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None) -> None:
    try:
        app(args=argv, standalone_mode=True)
    except MmdkError as exc:
        if _STATE["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted; nothing was written", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug in mmdk or a dependency: one line, the traceback behind --debug
        if _STATE["debug"]:
            traceback.print_exc()
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        typer.echo(f"error: internal error {type(exc).__name__}: {exc}{at} (rerun with --debug for the traceback "
                   "and report it)", err=True)
        sys.exit(1)


