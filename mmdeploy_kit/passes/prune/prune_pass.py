"""The prune pass: structured pruning of the chosen towers of a torch model, written so it reloads anywhere.

Output directory::

    mmdk_manifest.json   artifacts per tower, params before/after, per-layer heads/widths, cosine vs unpruned
    model/               model.safetensors + mmdk_arch.json (+ the source config.json, tokenizer / processor
                         files, or the factory's .py file): rebuilt by ``mmdk.load`` without Torch-Pruning
    hf/                  a plain ``save_pretrained`` directory, only when the HF config can express the result
                         (no head removed, one MLP width per tower): then the artifacts point here
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from ..._lazy import require
from ...artifacts import Artifact, Manifest, package_versions, sha256_file, size_on_disk
from ...errors import UserInputError, VerificationError
from ...model.arch_record import ARCH_RECORD_NAME, WEIGHTS_NAME, build_source, module_changes, save_pruned
from ...runtime.verify import compare_outputs, min_cosine_floor
from ...model.tower import LoadedModel, Tower
from ..base import Pass, PassConfig, RunContext
from ..export.onnx import source_info
from .config import PruneConfig
from .engine import TowerPruner, TowerPruneSpec, UnhandledModuleError, count_params, run_tower_pruning
from .hf_attention import discover_attention
from .importance import gradient_refresher, loss_kind, make_importance

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


class PrunePass(Pass):
    name: ClassVar[str] = "prune"
    version: ClassVar[str] = "1"
    config_cls: ClassVar[type[PassConfig]] = PruneConfig
    accepts: ClassVar[tuple[str, ...]] = ("torch",)
    produces: ClassVar[str] = "torch"
    forbidden_after: ClassVar[tuple[str, ...]] = ()
    data_fields: ClassVar[tuple[str, ...]] = ("calib_data",)
    tower_field: ClassVar[Optional[str]] = "towers"

    def run(self, model: LoadedModel, config: PruneConfig, ctx: RunContext, workdir: Path) -> Manifest:
        torch = require("torch")
        require("torch_pruning", "prune")
        from ...train.save import single_root

        model = single_root(model)  # a pruned / distilled mmdk dir: its one torch model, towers sharing a root
        source = _source_record(model)
        ratios, counts = config.tower_targets([n for n, t in model.towers.items() if t.is_torch])
        names = [n for n in model.towers if n in ratios or n in counts]
        for n in [*ratios, *counts]:
            model.tower(n)  # unknown tower -> one-line error naming the towers
        for n in names:
            t = model.tower(n)
            if not t.is_torch or model.root is None:
                raise UserInputError(f"tower {n!r} of {model.source} is {t.kind}; pruning needs the torch model",
                                     hint="prune the checkpoint (HF dir, factory module or pruned dir), then export")
        torch.manual_seed(config.seed)
        root = model.root
        root.eval()
        feeds = _verification_feeds(model, config, ctx, names)
        reference = {n: _run(model.towers[n], feeds[n]["verify"]) for n in names}
        param_names = {n: _tower_param_names(root, model.towers[n], torch) for n in model.towers
                       if model.towers[n].is_torch}
        targets = _loss_targets(model, names, feeds, torch)
        results: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        refusals: list[UnhandledModuleError] = []
        for n in names:
            try:
                results[n] = self._prune_tower(model, n, config, ctx, feeds, param_names, targets.get(n), torch,
                                               ratios.get(n), counts.get(n))
            except UnhandledModuleError as exc:
                if config.towers or len(names) == 1:  # a tower the user named: refused as asked
                    raise
                # every tower by default (a recipe's prune step): the others prune, this one stays as it was
                skipped[n] = str(exc)
                refusals.append(exc)
                ctx.log(f"tower {n!r} skipped (kept unpruned): {exc.message}")
        if not results:
            raise refusals[0]
        names = [n for n in names if n in results]
        for n in names:
            cmp = _compare(reference[n], _run(model.towers[n], feeds[n]["verify"]))
            results[n]["verification"] = {"vs_unpruned": {k: cmp[k] for k in ("cosine_min", "cosine_mean", "max_abs_error")},
                                          "data": feeds[n]["what"]}
            if config.min_cosine is not None and cmp["cosine_min"] < config.min_cosine:
                raise VerificationError(
                    f"pruned tower {n!r} agrees with the unpruned one at cosine {cmp['cosine_min']:.4f} < "
                    f"min_cosine {config.min_cosine}", hint="prune less (--ratio), or distill after pruning and drop min_cosine")
        ctx.log("writing the pruned model and its architecture record")
        layout = _write(model, root, source, param_names, results, workdir)
        reload_figs = _check_reload(workdir / "model", model, names, feeds)
        artifacts = []
        kind, rel = ("hf", "hf") if layout["hf"] else ("torch", "model")
        for n, t in model.towers.items():
            details = {"pruned": n in results, **({k: v for k, v in results[n].items()
                                                   if k not in ("verification", "history")} if n in results else {}),
                       **({"skipped": skipped[n]} if n in skipped else {})}
            verification = {"cosine_min": results[n]["verification"]["vs_unpruned"]["cosine_min"],
                            **results[n]["verification"], "reload": reload_figs[n]} if n in results else {}
            artifacts.append(Artifact(kind=kind, tower=n, path=rel, precision="fp32", io_spec=t.spec.to_dict(),
                                      verification=verification, details=details,
                                      sha256=sha256_file(workdir / rel), size_bytes=size_on_disk(workdir / rel)))
        metrics = {"towers": {n: {k: results[n][k] for k in ("params_before", "params_after", "removed_fraction",
                                                             "target_removed_fraction")}
                              for n in names},
                   "save_pretrained": layout["hf_reason"], "importance": config.importance,
                   "loss": loss_kind(next((targets[n] for n in names if targets.get(n)), None)),
                   **({"skipped_towers": skipped} if skipped else {})}
        return Manifest(pass_name=self.name, config=config.model_dump(mode="json"), source=source_info(model),
                        versions=package_versions("torch", "transformers", "torch-pruning", "safetensors"),
                        artifacts=artifacts, metrics=metrics)

    def _prune_tower(self, model: LoadedModel, name: str, config: PruneConfig, ctx: RunContext, feeds: dict,
                     param_names: dict[str, set[str]], targets: Optional[list], torch: Any,
                     ratio: Optional[float], count: Optional[int]) -> dict[str, Any]:
        tower = model.towers[name]
        root = model.root
        before = count_params(root, param_names[name])
        if ratio is not None:
            target_removed = int(np.ceil(float(ratio) * before))
        else:
            if int(count) >= before:
                raise UserInputError(f"--target-params {int(count):,} for tower {name!r} is not below its "
                                     f"{before:,} parameters", hint="give a smaller count")
            target_removed = before - int(count)
        others = set().union(*[v for k, v in param_names.items() if k != name]) if len(param_names) > 1 else set()
        spec = TowerPruneSpec(tower=name, target_removed=target_removed, scope=tuple(config.scope),
                              round_to=config.round_to, step=config.step, max_layer_ratio=config.max_layer_ratio)
        example = _torch_args(tower, feeds[name]["example"], torch)
        ctx.log(f"tower {name!r}: building the dependency graph ({before:,} parameters)")
        pruner = TowerPruner(root, tower.module, example, param_names[name], others & param_names[name],
                             tuple(config.ignore), discover_attention(root))
        importance = make_importance(config.importance)
        batches = [_torch_args(tower, b, torch) for b in feeds[name]["calib"]]
        refresh = gradient_refresher(config.importance, importance, root, tower.module, batches, targets or [],
                                     tower.spec.output_names, ctx.log)
        res = run_tower_pruning(pruner, spec, importance, refresh, ctx.log)
        root.zero_grad(set_to_none=True)
        return {"params_before": res.params_before, "params_after": res.params_after,
                "removed_fraction": round(1 - res.params_after / res.params_before, 6),
                "target_removed_fraction": round(target_removed / before, 6), "steps": res.steps,
                "layer_fraction": round(res.layer_fraction, 4), "layers": res.layers, "kept_groups": res.kept,
                "history": res.history}


# ---- feeds and targets ---------------------------------------------------------------------------------
def _torch_args(tower: Tower, feed: dict[str, np.ndarray], torch: Any) -> tuple:
    return tuple(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in tower.spec.input_names)


def _run(tower: Tower, batches: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return [tower.module.run_numpy(b) for b in batches]


def _compare(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Worst / mean agreement over batches (batches may differ in shape, e.g. sequence length)."""
    per = [compare_outputs(r, c) for r, c in zip(reference, candidate)]
    return {"cosine_min": float(min(p["cosine_min"] for p in per)),
            "cosine_mean": float(np.mean([p["cosine_mean"] for p in per])),
            "max_abs_error": float(max(p["max_abs_error"] for p in per))}


def _verification_feeds(model: LoadedModel, config: PruneConfig, ctx: RunContext, names: list[str]) -> dict:
    """Per tower: an example batch (graph tracing), calibration batches (importance) and verification batches
    (the held-out calibration rows, or inputs generated from the I/O spec)."""
    out: dict[str, dict[str, Any]] = {}
    calib = None
    if config.calib_data:
        from ...runtime.preprocess import processor_dir
        from ...data.calib import load_calibration

        paired = _paired(model) and (model.details.get("has_tokenizer") or not str(config.calib_data).endswith(".jsonl"))
        wanted = list(model.towers) if paired else names
        calib = load_calibration(config.calib_data, {n: model.towers[n].spec for n in wanted},
                                 processor_dir([model]), n_calib=config.calib_samples,
                                 n_holdout=config.holdout_samples, batch_size=config.batch_size, seed=config.seed)
    for n in (wanted if calib is not None else names):
        spec = model.towers[n].spec
        if calib is not None and n in calib.towers:
            td = calib.towers[n]
            out[n] = {"calib": td.calib, "verify": td.holdout, "example": td.calib[0],
                      "what": f"{td.n_holdout} held-out rows of {Path(config.calib_data).name}"}
        else:
            sizes = spec.verification_sizes(4)
            out[n] = {"calib": [], "verify": [spec.dummy_inputs(s, seed=config.seed + k) for k, s in enumerate(sizes)],
                      "example": spec.dummy_inputs({d: max(lo, min(hi, 2)) for d, (lo, hi) in spec.dims.items()},
                                                   seed=config.seed),
                      "what": f"inputs generated from the I/O spec at {len(sizes)} shapes"}
    return out


def _paired(model: LoadedModel) -> bool:
    return set(model.towers) == {"vision", "text"} and model.format in ("hf", "pruned")


def _tower_param_names(root: Any, tower: Tower, torch: Any) -> set[str]:
    """The parameters one forward of ``tower`` reaches (what 'the tower's parameters' means)."""
    spec = tower.spec
    feed = spec.dummy_inputs({d: max(lo, min(hi, 2)) for d, (lo, hi) in spec.dims.items()})
    flags = {n: p.requires_grad for n, p in root.named_parameters()}
    root.zero_grad(set_to_none=True)
    try:
        for p in root.parameters():
            p.requires_grad_(True)
        with torch.enable_grad():
            outs = tower.module(*_torch_args(tower, feed, torch))
            sum(o.float().sum() for o in outs).backward()
        return {n for n, p in root.named_parameters() if p.grad is not None}
    finally:
        for n, p in root.named_parameters():
            p.requires_grad_(flags.get(n, True))
        root.zero_grad(set_to_none=True)


def _loss_targets(model: LoadedModel, names: list[str], feeds: dict, torch: Any) -> dict[str, list[dict[str, Any]]]:
    """Per pruned tower and calibration batch: what its label-free loss compares against, computed on the
    unpruned model (the partner tower's embeddings for pairs, else the tower's own outputs)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for n in names:
        if not feeds[n]["calib"]:
            continue
        partner = next((p for p in model.towers if p != n and p in feeds), None) if _paired(model) else None
        with torch.no_grad():
            if partner is not None and len(feeds[partner]["calib"]) == len(feeds[n]["calib"]):
                ptower = model.towers[partner]
                out[n] = [{"partner": ptower.module(*_torch_args(ptower, b, torch))[0]} for b in feeds[partner]["calib"]]
            else:
                tower = model.towers[n]
                out[n] = [dict(zip(tower.spec.output_names, tower.module(*_torch_args(tower, b, torch))))
                          for b in feeds[n]["calib"]]
    return out


# ---- writing -----------------------------------------------------------------------------------------
def _source_record(model: LoadedModel) -> dict[str, Any]:
    """Where the architecture comes from, as the record stores it."""
    if model.format == "pruned":
        return dict(model.details["arch_record"]["source"])
    if model.format == "hf" and model.hf_dir is not None:
        return {"kind": "hf", "class": type(model.root).__name__, "model_type": model.details.get("model_type", ""),
                "dir": str(Path(model.hf_dir).resolve())}
    if model.format == "factory":
        target, _, attr = model.source.rpartition(":")
        target = str(Path(target).resolve()) if Path(target).is_file() else target
        io = {"towers": {n: t.spec.to_dict() for n, t in model.towers.items()}}
        return {"kind": "factory", "target": target, "attr": attr, "io": io}
    raise UserInputError(f"{model.source} ({model.format}) cannot be pruned",
                         hint="prune a Hugging Face directory, a file.py:factory module or a directory written by mmdk prune")


def _source_dir(model: LoadedModel, source: dict[str, Any]) -> Optional[Path]:
    if source["kind"] == "hf":
        return Path(model.hf_dir) if model.hf_dir is not None else Path(source["dir"])
    return None


def _write(model: LoadedModel, root: Any, source: dict[str, Any], param_names: dict[str, set[str]],
           results: dict[str, Any], workdir: Path) -> dict[str, Any]:
    src_dir = _source_dir(model, source)
    mdir = workdir / "model"
    mdir.mkdir()
    if src_dir is not None:
        _copy_side_files(src_dir, mdir)
    elif source["kind"] == "factory" and Path(source["target"]).is_file():
        shutil.copy2(source["target"], mdir / Path(source["target"]).name)
    fresh = build_source(mdir if src_dir is not None else workdir, source)
    changes = module_changes(root, fresh)
    prefixes = {n: sorted({p.rpartition(".")[0] for p in names}) for n, names in param_names.items()}
    save_pruned(root, mdir, {"source": {k: v for k, v in source.items() if k != "dir"}, "modules": changes,
                             "towers": {n: {"parameters": count_params(root, param_names[n]),
                                            "modules": len(prefixes[n])} for n in param_names},
                             # which channels / heads went: Torch-Pruning's pruning_history, module names relative
                             # to the tower module (tp.DependencyGraph.load_pruning_history replays it)
                             "pruned": {n: {"layers": r["layers"], "history": r["history"]} for n, r in results.items()}})
    hf, reason = False, "not an HF model"
    if source["kind"] == "hf":
        hf, reason = _save_pretrained_if_expressible(root, changes, src_dir, workdir / "hf")
    return {"hf": hf, "hf_reason": reason}


def _copy_side_files(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """config.json, tokenizer and image-processor files (everything but weights, mmdk's own files, ``skip``)."""
    for f in sorted(src.iterdir()):
        if f.is_file() and not f.name.endswith(_WEIGHT_SUFFIXES) and not f.name.startswith("mmdk_") \
                and not f.name.endswith(".index.json") and f.name not in skip:
            shutil.copy2(f, dst / f.name)


def _save_pretrained_if_expressible(root: Any, changes: dict, src_dir: Path, out: Path) -> tuple[bool, str]:
    """A plain ``save_pretrained`` dir when the config can say it: no head removed and one MLP width per
    sub-config (checked by rebuilding from the edited config and finding no shape left to record)."""
    import copy

    if any(e.get("patches") or "num_heads" in e.get("attrs", {}) or "num_attention_heads" in e.get("attrs", {})
           for e in changes.values()):
        return False, "attention heads were removed: HF configs cannot express an attention width != hidden size"
    config = copy.deepcopy(root.config)
    subs = {k: getattr(config, k) for k in ("vision_config", "text_config") if getattr(config, k, None) is not None}
    subs = subs or {"": config}
    for key, sub in subs.items():
        widths = {e["attrs"]["out_features"] for n, e in changes.items() if "out_features" in e.get("attrs", {})
                  and (not key or n.startswith(_sub_prefix(root, key)))}
        if len(widths) > 1:
            return False, f"per-layer MLP widths differ in {key or 'the model'} ({sorted(widths)})"
        if widths and hasattr(sub, "intermediate_size"):
            sub.intermediate_size = widths.pop()
    fresh = type(root)._from_config(config)
    if module_changes(root, fresh):
        return False, "the pruned shapes are not expressible as config fields"
    root.config = config
    root.save_pretrained(str(out), safe_serialization=True)
    _copy_side_files(src_dir, out, skip=("config.json", *(f.name for f in out.iterdir())))
    return True, "hf/ (config intermediate sizes updated)"


def _sub_prefix(root: Any, key: str) -> str:
    names = [n for n, _ in root.named_children()]
    want = "vision" if key.startswith("vision") else "text"
    return next((n for n in names if n.startswith(want)), want)


def _check_reload(mdir: Path, model: LoadedModel, names: list[str], feeds: dict) -> dict[str, Any]:
    """Rebuild the written model from its record (as ``mmdk.load`` will) and compare with the in-memory one."""
    from ...model.arch_record import load_pruned_dir

    reloaded = load_pruned_dir(mdir)
    figs = {}
    for n in names:
        cmp = _compare(_run(model.towers[n], feeds[n]["verify"]), _run(reloaded.towers[n], feeds[n]["verify"]))
        if cmp["cosine_min"] < min_cosine_floor("prune_reload"):
            raise VerificationError(f"tower {n!r} rebuilt from {ARCH_RECORD_NAME} + {WEIGHTS_NAME} disagrees with the "
                                    f"pruned model (cosine {cmp['cosine_min']:.6f})",
                                    hint="report this: the architecture record misses a change")
        figs[n] = {"cosine_min": cmp["cosine_min"], "max_abs_error": cmp["max_abs_error"]}
    return figs
