"""Optional torch-side backend: Intel Neural Compressor (extra ``inc``), pt2e static INT8.

``--backend inc`` quantizes torch towers with INC 3.x's PT2E flow (``export`` -> ``prepare`` ->
calibrate on ``--calib-data`` -> ``convert``) and, with an accuracy budget, INC's accuracy-aware
``autotune`` over a few static configs (tolerable loss derived from a ``cosine>=X`` budget, measured on
held-out data). Each tower is written as a ``torch.export`` program ``<tower>.pt2`` (load it with its I/O
spec; fast on CPU after ``torch.compile`` with freezing - see FIELD_NOTES), verified against FP32 torch.
Needs ``neural-compressor``, ``torchao`` (pt2e on torch >= 2.11), ``py-cpuinfo``, ``psutil``,
``accelerate`` and ``prettytable``: a missing one is a one-line error naming the ``inc`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..._lazy import require
from ..._quiet import quiet
from ...artifacts import Artifact, Manifest, describe_file, package_versions
from ...errors import BudgetError, DataError, UserInputError, VerificationError
from ..base import RunContext
from ..export.onnx import source_info, torch_export_dims
from .config import DEFAULT_MIN_COSINE
from .evaluate import Outputs, check_budgets, output_drift

_INC_MODULES = ("neural_compressor", "torchao", "cpuinfo", "psutil", "accelerate", "prettytable")


def _quiet() -> Any:
    return quiet("neural_compressor", "torch.export", "torch._dynamo", "torchao", "", streams=True)


def _args(torch: Any, spec: Any, feeds: dict[str, np.ndarray]) -> tuple:
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.input_names)


def _outputs(torch: Any, module: Any, spec: Any, batches: list[dict[str, np.ndarray]]) -> Outputs:
    acc: Outputs = {n: [] for n in spec.output_names}
    with torch.no_grad():
        for b in batches:
            out = module(*_args(torch, spec, b))
            out = out if isinstance(out, (tuple, list)) else (out,)
            for n, o in zip(spec.output_names, out):
                acc[n].append(o.detach().float().numpy())
    return acc


def run_inc(model: Any, config: Any, plans: dict, ctx: RunContext, workdir: Path) -> Manifest:
    with _quiet():  # torchao prints about optional CUDA kernels it cannot load on CPU
        for mod in _INC_MODULES:
            require(mod, extra="inc", purpose="the neural-compressor quantization backend")
        torch = require("torch")
        from neural_compressor.torch.export import export as inc_export
        from neural_compressor.torch.quantization import StaticQuantConfig, TuningConfig, autotune, convert, prepare

    from .evaluate import load_tower_data

    active = [n for n, p in plans.items() if p.precision != "fp32"]
    for n in active:
        if plans[n].precision != "int8" or model.towers[n].kind != "torch":
            raise UserInputError(f"--backend inc quantizes torch towers to int8; tower {n!r} is "
                                 f"{model.towers[n].kind} / {plans[n].precision}", hint="use --backend ort")
    budgets = config.budgets()
    if any(b.metric != "cosine" for b in budgets):
        raise UserInputError("--backend inc supports 'cosine>=X' budgets only", hint="use --backend ort for task budgets")
    if config.calib_data is None:
        raise DataError("--backend inc (static INT8) needs calibration data", hint="pass --calib-data")
    data, _ = load_tower_data(model, config, ctx, active)
    artifacts = []
    rows: list[dict[str, Any]] = []
    for name, tower in model.towers.items():
        spec, module = tower.spec, tower.module
        td = data.towers.get(name)
        example = _args(torch, spec, td.calib[0] if td else spec.dummy_inputs({d: 2 for d in spec.dims}))
        shapes = torch_export_dims(torch, spec, min_batch=2)
        details: dict[str, Any] = {"backend": "neural-compressor pt2e", "plan": plans[name].describe()}
        if name in active:
            ctx.log(f"INC: exporting and quantizing tower {name!r}")
            ref = _outputs(torch, module, spec, td.holdout)

            def calibrate(m: Any) -> None:
                for b in td.calib:
                    m(*_args(torch, spec, b))

            tower_budgets = [b for b in budgets if b.tower in (None, name)]
            with _quiet():
                exported = inc_export(module, example, dynamic_shapes=(shapes,))
                if tower_budgets:
                    floor = min(b.value for b in tower_budgets)

                    def eval_fn(m: Any) -> float:
                        return float(output_drift(ref, _outputs(torch, m, spec, td.holdout))["cosine"])

                    tune = TuningConfig(config_set=[StaticQuantConfig(), StaticQuantConfig(act_granularity="per_tensor",
                                                                                           w_granularity="per_channel")],
                                        tolerable_loss=max(1e-6, 1.0 - floor), max_trials=4)
                    qmodel = autotune(exported, tune_config=tune, eval_fn=eval_fn, run_fn=calibrate,
                                      example_inputs=example)
                    if qmodel is None:
                        raise BudgetError(f"INC autotune found no config meeting cosine>={floor} on tower {name!r}",
                                          hint="relax the budget or use --backend ort (per-node FP32 fallback)")
                else:
                    qmodel = prepare(exported, StaticQuantConfig())
                    calibrate(qmodel)
                    qmodel = convert(qmodel)
            figs = output_drift(ref, _outputs(torch, qmodel, spec, td.holdout))
            figs.pop("outputs")
            if not figs["finite"]:
                raise VerificationError(f"tower {name!r} produces NaN/Inf after INC quantization")
            floor = config.min_cosine if config.min_cosine is not None else \
                (None if budgets else DEFAULT_MIN_COSINE["int8"])
            if floor is not None and figs["cosine"] < floor:
                raise VerificationError(f"tower {name!r} drifted from FP32 after INC INT8: cosine {figs['cosine']:.4f} "
                                        f"< {floor}", hint="add --accuracy-budget or use --backend ort")
            rows += check_budgets(tower_budgets, {name: figs}, None, [name])
            verification = {**{k: (round(v, 6) if isinstance(v, float) else v) for k, v in figs.items()},
                            "data": "held-out calibration data", "n_samples": td.n_holdout}
            details["calibration_data"] = td.details
            out_module, precision = qmodel, "int8"
        else:
            out_module, precision, verification = module, "fp32", {"copied": True, "precision": "fp32"}
        rel = f"{name}.pt2"
        with _quiet():
            try:
                program = torch.export.export(out_module, example, dynamic_shapes=shapes)
            except Exception:  # noqa: BLE001 - fall back to the batch-static program rather than fail
                program = torch.export.export(out_module, example)
                details["dynamic_shapes"] = False
            torch.export.save(program, str(workdir / rel))
        artifacts.append(Artifact(kind="pt2", tower=name, path=rel, precision=precision, io_spec=spec.to_dict(),
                                  verification=verification, details=details, **describe_file(workdir, rel)))
    return Manifest(pass_name="quantize", config=config.model_dump(mode="json"), source=source_info(model),
                    versions=package_versions("torch", "neural_compressor", "torchao"), artifacts=artifacts,
                    metrics={"budgets": rows})
