"""Commands that measure: bench, compare, doctor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from .app import (app, _STATE, WeightsOpt, IoOpt, TrustOpt, TowerOpt, SshKeyOpt, SshOptionOpt, AcceptNewHostKeyOpt,
                  RemoteMmdkOpt, load_kwargs, echo, progress)


def _timing_dflt(field: str) -> str:
    """``(default: X)`` read from TimingConfig, the one source of the timing options' defaults."""
    from ..runtime.schema import TimingConfig

    return f"(default: {TimingConfig.model_fields[field].default})"


@app.command()
def bench(
    artifacts: List[str] = typer.Argument(..., help="Artifacts: .onnx files, anything MODEL accepts, or mmdk output "
                                          "directories (all towers in them). LABEL=PATH names one in reports."),
    reference: Optional[str] = typer.Option(None, "--reference", "-r", help="Reference model, matched tower by "
                                            "tower (speedups and accuracy drops are relative to it)."),
    target: str = typer.Option("cpu", "--target", help="cpu, gpu, jetson-orin-nano, jetson-orin-nx, "
                               "jetson-agx-orin, jetson-xavier-nx."),
    backend: str = typer.Option("auto", "--backend", help="auto (target's order), torch, onnxruntime, "
                                "onnxruntime-trt, openvino, tensorrt, torch-tensorrt."),
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
    warmup: Optional[int] = typer.Option(None, "--warmup", help=f"Warm-up runs per artifact and shape "
                                         f"{_timing_dflt('warmup_runs')}."),
    min_runs: Optional[int] = typer.Option(None, "--min-runs", help=f"Minimum timed runs per artifact and shape "
                                           f"{_timing_dflt('min_runs')}."),
    min_time: Optional[float] = typer.Option(None, "--min-time", help=f"Minimum timed seconds per artifact and shape "
                                             f"{_timing_dflt('min_time_s')}."),
    min_rounds: Optional[int] = typer.Option(None, "--min-rounds", help=f"Minimum interleaved rounds per shape "
                                             f"{_timing_dflt('min_rounds')}."),
    clock: Optional[str] = typer.Option(None, "--clock", help="Speedups from wall-clock latency (wall) or from process "
                                        "CPU time per run (cpu: immune to preemption on busy shared CPU machines) "
                                        f"{_timing_dflt('clock')}."),
    max_time: Optional[float] = typer.Option(None, "--max-time", help=f"Stop a shape after this many seconds "
                                             f"{_timing_dflt('max_time_s')}."),
    processes: Optional[int] = typer.Option(None, "--processes", help="Spread the interleaved rounds over N fresh "
                                            "worker processes, one after another (intervals then cover run-to-run "
                                            "variation). Default: 3 with --clock cpu (the CI mode), else 1."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Adaptive length: continue (rounds, or "
                                            "processes) until speedup intervals are within +-this, e.g. 3%, or "
                                            "--max-time per shape is spent; the report states the precision reached."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the JSON report (versioned schema)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write Markdown tables (CI step summary)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML report with plots."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML, one test case per gate."),
    max_latency_regression: Optional[str] = typer.Option(None, "--max-latency-regression", help="Fail if an "
                                                         "artifact is slower than the reference by more, e.g. 10%."),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop", help="Fail if a task metric "
                                                      "drops more than this many points vs the reference."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or messages (CI logs)."),
    force: bool = typer.Option(False, "--force", help="Measure again even if the step cache holds a measurement "
                               "of the same models, data and options on this machine (kept only when the "
                               "machine was not noisy)."),
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

    A measurement of the same models, data and options on this machine is reused from the step cache (unless
    it was taken on a noisy machine); --force measures again. With --host the device measures.

    Example: mmdk bench out/onnx --reference ./clip-dir --data val.jsonl --batch 1,8 --report r.json --html r.html
    """
    from .. import api
    from ..runtime.harness import parse_int_list
    from ..errors import RegressionError

    quiet = quiet or _STATE["quiet"]
    from ..runtime.harness import parse_fraction

    # only the flags given: TimingConfig holds the defaults (and a remote device applies its own)
    timing = {k: v for k, v in {"warmup_runs": warmup, "min_runs": min_runs, "min_time_s": min_time,
                                "min_rounds": min_rounds, "max_time_s": max_time, "clock": clock,
                                "processes": processes, "precision": parse_fraction(precision, "precision")}.items()
              if v is not None}
    r = api.bench(artifacts, reference, target=target, backend=backend, batch=parse_int_list(batch, "batch"),
                  seq=parse_int_list(seq, "seq"), towers=tower or (), data=data, data_limit=data_limit,
                  templates=template or None, processor=processor, threads=threads, timing=timing, report=report,
                  markdown=markdown, html=html, junit=junit, max_latency_regression=max_latency_regression,
                  max_accuracy_drop=max_accuracy_drop, quiet=quiet, force=force, notice=echo,
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
    from ..runtime.accuracy import headline_metric
    from ..runtime.report.markdown import fmt_speedup

    typer.echo(f"target {r.target.name}; baseline {r.baseline}; {r.environment.short()}")
    for x in r.latency:
        seq = f" seq={x.seq}" if x.seq is not None else ""
        typer.echo(f"  {x.artifact:<16} {x.tower:<8} b={x.batch:<3}{seq:<8} {x.backend:<12} p50 {x.stats.p50_ms:9.3f} ms"
                   f"  p90 {x.stats.p90_ms:9.3f} ms  cv {x.stats.cv:5.2f}  {x.stats.throughput_items_per_s:9.1f} items/s"
                   f"  {fmt_speedup(x.speedup)}")
    for label, s in r.speedups.items():
        prec = f", +-{s.half_width_pct:.1f}%" if s.half_width_pct is not None else ""
        typer.echo(f"speedup {label} vs {r.baseline}: {fmt_speedup(s)} ({int(s.confidence * 100)}% CI, geomean, "
                   f"{s.clock} clock, {s.processes} process{'es' if s.processes > 1 else ''}{prec})")
    if r.accuracy is not None:
        for p in r.accuracy.pairs:
            zs = f"zero-shot top-1 {p.zero_shot_top1:.2f} top-5 {p.zero_shot_top5:.2f}" if p.zero_shot_top1 is not None else ""
            to_text = {"image": "i2t", "audio": "a2t", "video": "v2t"}.get(p.modality, "i2t")
            rec = " ".join(f"{to_text} {k} {v:.1f}" for k, v in p.image_to_text.items())
            typer.echo(f"  {p.modality}:{p.vision} + text:{p.text}{' (cross)' if p.cross else ''}: {zs} {rec}".rstrip())
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
    latency_metric: str = typer.Option("speedup", "--latency-metric", help="speedup (each report's ratio vs its "
                                       "own reference, noise-aware; the default) or p50 (= --gate-absolute)."),
    gate_absolute: bool = typer.Option(False, "--gate-absolute", help="Also gate absolute p50 latencies (shown "
                                       "either way; they drift between runs on shared machines)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write the comparison as Markdown (CI step "
                                            "summary)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML, one test case per comparison."),
    allow_power_mode_mismatch: bool = typer.Option(False, "--allow-power-mode-mismatch", help="Compare Jetson "
                                                   "reports taken in different nvpmodel power modes anyway."),
) -> None:
    """Side-by-side table of two bench reports; exits 1 on a latency or accuracy regression, 0 otherwise."""
    from .. import api
    from ..errors import RegressionError

    res = api.compare(base, new, max_latency_regression=max_latency_regression, max_accuracy_drop=max_accuracy_drop,
                      latency_metric=latency_metric, junit=junit, allow_power_mode_mismatch=allow_power_mode_mismatch,
                      gate_absolute=gate_absolute, markdown=markdown)
    from ..runtime.report.markdown import compare_cells

    typer.echo(f"{'':4} {'kind':<9} {'artifact':<16} {'subject':<34} {'base':>22} {'new':>22} {'change':>25}  verdict")
    for row in res.rows:
        base_s, new_s, change = compare_cells(row)
        flag = "FAIL" if row.regression else "ok" if row.gated else "-"
        typer.echo(f"{flag:<4} {row.kind:<9} {row.artifact:<16} {row.subject:<34} {base_s:>22} {new_s:>22} "
                   f"{change:>25}  {row.verdict}")
    for w in res.warnings:
        echo(f"warning: {w}")
    if res.regressions:
        worst = res.regressions[0]
        raise RegressionError(f"{len(res.regressions)} regression(s), first: {worst.kind} {worst.artifact} "
                              f"{worst.subject}", hint="see the table above")
    typer.echo("no regressions")


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
    from .. import api
    from ..runtime.doctor import render

    info = api.doctor(host=host, ssh_key=ssh_key, ssh_options=tuple(ssh_option or ()),
                      accept_new_host_key=accept_new_host_key, **({"remote_mmdk": remote_mmdk} if remote_mmdk else {}))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    remote = info.get("remote")
    typer.echo(render(info, host=f"{remote['host']} ({remote['address']})" if remote else None))
