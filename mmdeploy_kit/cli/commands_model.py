"""Commands that turn a model into another: inspect, export (ONNX / TensorRT / torch-tensorrt), quantize, prune,
distill, build-engines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from .app import (app, OverwriteOpt, _STATE, WeightsOpt, IoOpt, TrustOpt, TowerOpt, SaveRecipeOpt, ForceOpt,
                  SshKeyOpt, SshOptionOpt, AcceptNewHostKeyOpt, RemoteMmdkOpt, _dflt, load_kwargs, progress,
                  _pairs_opt)
from ..runtime.verify import min_cosine_help as _floors  # help texts read the one tolerance table


@app.command()
def inspect(
    model: str = typer.Argument(..., help="Checkpoint to describe."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    weights: Optional[Path] = WeightsOpt,
    io: Optional[Path] = IoOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Show towers, their inputs/outputs (modality, dtype, symbolic dims), parameters, size and dtype."""
    from .. import api

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
                               "scripts, engines where TensorRT and a GPU are), torch-tensorrt, openvino (IR; "
                               "--precision fp32 or bf16), cpu (per tower the fastest of ONNX Runtime FP32/INT8 and "
                               "OpenVINO FP32/BF16/INT8 on this CPU within cosine>=0.99; INT8 needs --calib-data)."),
    tower: Optional[List[str]] = TowerOpt,
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (TensorRT 8.6+/10 handle 17) "
                                        f"{_dflt('export_onnx', 'opset')}."),
    exporter: Optional[str] = typer.Option(None, "--exporter", help="auto (TorchScript exporter, falling back to "
                                           "dynamo if export or verification fails), torchscript, or dynamo "
                                           f"{_dflt('export_onnx', 'exporter')}."),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="Verification floor for every check "
                                               f"(default: onnx {_floors('export_onnx')}; tensorrt bundle ONNX "
                                               f"{_floors('tensorrt_onnx')}, engines {_floors('tensorrt_engine')})."),
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
    workspace_mb: Optional[int] = typer.Option(None, "--workspace-mb", help="tensorrt / torch-tensorrt: builder "
                                               f"workspace in MiB {_dflt('export_tensorrt', 'workspace_mb')}."),
    accuracy_budget: Optional[List[str]] = typer.Option(None, "--accuracy-budget", help="cpu: per-tower budget "
                                                        "each candidate must hold, e.g. 'cosine>=0.995' (repeatable; "
                                                        "default 'cosine>=0.99')."),
    overwrite: bool = OverwriteOpt,
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
    from .. import api

    options: dict[str, Any] = {"precision": precision, "calib_data": calib_data, "device": device, "dla": dla,
                               "build": build, "allow_unsupported": allow_unsupported or None,
                               "trt_version": trt_version, "min_cosine": min_cosine, "workspace_mb": workspace_mb,
                               "accuracy_budget": tuple(accuracy_budget) if accuracy_budget else None}
    if target != "torch-tensorrt":  # the options the other targets' configs reject as unknown stay unset
        options.update(opset=opset, exporter=exporter)
    manifest = api.export(model, out, target=target, towers=tower or (), overwrite=overwrite, progress=progress(),
                          save_recipe=save_recipe, force=force,
                          **{k: v for k, v in options.items() if v is not None},
                          **load_kwargs(weights, io, trust_remote_code))
    if target == "cpu":
        for name, c in manifest.metrics.get("cpu_choice", {}).items():
            row = c["candidates"][c["chosen"]]
            typer.echo(f"{name}: {c['chosen']}  {c['chosen_speedup']:.2f}x vs {c['baseline']}  cosine {row['cosine']:.5f}"
                       f"  (tried {', '.join(c['candidates'])})")
        return
    if target not in ("onnx", "openvino"):
        _print_trt_export(out, manifest)
        return
    for a in manifest.artifacts:
        v = a.verification
        if not v:  # a tower copied unchanged (export --tower selects others)
            continue
        runs_in = f"  runs in {a.details['inference_precision']}" if a.details.get("inference_precision") else ""
        typer.echo(f"{out / a.path}  cosine_min={v['cosine_min']:.6f}  max_abs_error={v['max_abs_error']:.2e}  "
                   f"({len(v['checks'])} shape checks){runs_in}")


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
                                               f"is lower (default without a budget: {_floors('quantize')})."),
    max_fp32_fraction: Optional[float] = typer.Option(None, "--max-fp32-fraction", help="Most of a tower's weights "
                                                      "mixed precision may keep in FP32 before giving up "
                                                      f"{_dflt('quantize', 'max_fp32_fraction')}."),
    sensitivity: Optional[str] = typer.Option(None, "--sensitivity", help="Sensitivity unit: node, layer, or auto "
                                              f"{_dflt('quantize', 'sensitivity')}."),
    backend: Optional[str] = typer.Option(None, "--backend", help="ort (ONNX Runtime), inc (neural-compressor, "
                                          "extra 'inc') or nncf (OpenVINO IR, extra 'openvino') "
                                          f"{_dflt('quantize', 'backend')}."),
    nncf_ignored_types: Optional[List[str]] = typer.Option(None, "--nncf-ignored-types", help="nncf: OpenVINO op "
                                                           "types kept in float, e.g. MatMul (repeatable)."),
    processor: Optional[Path] = typer.Option(None, "--processor", help="HF dir with tokenizer / image processor "
                                             "(default: the checkpoint's)."),
    target_cpu: Optional[str] = typer.Option(None, "--target-cpu", help="CPU the INT8 model will run on: auto "
                                             "(this machine), avx512_vnni, avx2, arm64; the cpu preset picks per ISA "
                                             "(reduce_range on AVX2 without VNNI). Recorded in the manifest."),
    overwrite: bool = OverwriteOpt,
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
    from .. import api

    ops = tuple(p.strip() for item in op_types or [] for p in item.split(",") if p.strip())
    manifest = api.quantize(model, out, precision=precision, method=method, towers=tower or (),
                            tower_precision=_pairs_opt(tower_precision, "--tower-precision"),
                            tower_method=_pairs_opt(tower_method, "--tower-method"), calib_data=calib_data,
                            processor=processor, accuracy_budget=accuracy_budget or (), overwrite=overwrite,
                            progress=progress(), load_options=load_kwargs(weights, io, trust_remote_code),
                            calibration=calibration, percentile=percentile, per_channel=per_channel, preset=preset,
                            calib_samples=calib_samples, holdout_samples=holdout_samples, op_types=ops,
                            min_cosine=min_cosine, max_fp32_fraction=max_fp32_fraction, sensitivity=sensitivity,
                            backend=backend, save_recipe=save_recipe, force=force, target_cpu=target_cpu,
                            nncf_ignored_types=tuple(nncf_ignored_types) if nncf_ignored_types else None)
    for a in manifest.artifacts:
        v, d = a.verification, a.details
        if v.get("copied"):
            skipped = f"  skipped: {d['skipped']}" if d.get("skipped") else ""
            typer.echo(f"{out / a.path}  fp32 (copied){skipped}")
            continue
        nodes = d.get("nodes", {})
        kept = f"  fp32 nodes {len(nodes.get('fp32_nodes', []))}/{nodes.get('candidate_nodes')}" if nodes else ""
        how = d.get("quantizer", {}).get("method", "") if a.precision == "int8" else ""
        how = how or (d.get("backend", "") if a.kind == "openvino" else "")
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
                                               f"(default per precision: {_floors('tensorrt_engine')})."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out directory."),
    force: bool = typer.Option(False, "--force", help="Build again even if the step cache holds engines built from "
                               "this bundle with this TensorRT and GPU."),
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
    from .. import api

    remote = {"host": host, "ssh_key": ssh_key, "ssh_options": tuple(ssh_option or ()),
              "accept_new_host_key": accept_new_host_key,
              **({"remote_mmdk": remote_mmdk} if remote_mmdk else {})} if host else {}
    manifest = api.build_engines(bundle, out=out, min_cosine=min_cosine, overwrite=overwrite, progress=progress(),
                                 **(remote or {"force": force}))
    _print_trt_export(out or bundle, manifest)


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
    overwrite: bool = OverwriteOpt,
    weights: Optional[Path] = WeightsOpt,
    io: Optional[Path] = IoOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Distill a student against a frozen teacher, tower by tower (checkpoints, --resume, eval each epoch).

    Examples:
      mmdk distill pruned/ --teacher ./my-clip --data train.jsonl --val val.jsonl -o distilled/
      mmdk distill pruned/ --teacher ./fusion --data train.jsonl --loss logits=1,label=1 --nproc 2 -o d/
    """
    from .. import api

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
    overwrite: bool = OverwriteOpt,
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
    from .. import api

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
