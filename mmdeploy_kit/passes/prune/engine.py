"""Structured pruning of one tower on Torch-Pruning's dependency graph.

Torch-Pruning (``tp.DependencyGraph``) finds which channels are coupled (a group: the layer whose outputs
shrink plus every layer that reads them) and removes them consistently; its importance estimators score
the channels. This module decides *which* groups may shrink and by how much:

- every group is classified (``classify_group``): ``heads`` (the q/k/v projections of an HF attention),
  ``mlp`` (a Linear's hidden width), ``channels`` (conv channels with their BatchNorms and residual
  partners, LSTM hidden sizes), or kept: ``output`` (reaches the tower's output: its embedding width stays),
  ``hidden`` (a transformer's residual width: embeddings, LayerNorms, the inputs of q/k/v, out_proj/fc2
  outputs), ``shared`` (a module another tower uses too), ``ignored`` (``--ignore``);
- a group in scope that would change a module Torch-Pruning cannot handle (``nn.MultiheadAttention``,
  GRU, a multi-layer or bidirectional LSTM, a custom module with its own parameters) is a one-line error
  naming the module and the ``--ignore`` that keeps it;
- the per-layer fraction ``f`` grows by ``step`` per iteration (importance re-estimated each time, as
  iterative pruning recommends) until the tower has lost the requested share of its parameters.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from ..._lazy import require
from ...errors import UserInputError

KEPT = ("output", "hidden", "shared", "ignored")


class UnhandledModuleError(UserInputError):
    """A module in a prunable group that Torch-Pruning cannot prune correctly."""


def _lstm_pruner_cls() -> Any:
    """A correct hidden-size pruner for single-direction ``nn.LSTM`` (any number of layers), plugged into
    Torch-Pruning as a customized pruner: its own LSTM pruner (1.6.1) indexes the gate rows wrongly."""
    torch = require("torch")
    tp = require("torch_pruning", "prune")

    class LSTMHiddenPruner(tp.pruner.function.BasePruningFunc):
        def _keep(self, n: int, idxs: list) -> Any:
            return torch.tensor(sorted(set(range(n)) - set(int(i) for i in idxs)), dtype=torch.long)

        def prune_out_channels(self, layer: Any, idxs: list) -> Any:
            h = layer.hidden_size
            keep = self._keep(h, idxs)
            gates = torch.cat([keep + g * h for g in range(4)])
            for k in range(layer.num_layers):
                for name, dim_keep in ((f"weight_ih_l{k}", [(0, gates)] + ([(1, keep)] if k > 0 else [])),
                                       (f"weight_hh_l{k}", [(0, gates), (1, keep)]),
                                       (f"bias_ih_l{k}", [(0, gates)]), (f"bias_hh_l{k}", [(0, gates)])):
                    p = getattr(layer, name, None)
                    if p is None:
                        continue
                    for dim, kp in dim_keep:
                        p = self._prune_parameter_and_grad(p, kp.tolist(), dim)
                    setattr(layer, name, p)
            layer.hidden_size = len(keep)
            layer._init_flat_weights()
            return layer

        def prune_in_channels(self, layer: Any, idxs: list) -> Any:
            keep = self._keep(layer.input_size, idxs)
            layer.weight_ih_l0 = self._prune_parameter_and_grad(layer.weight_ih_l0, keep.tolist(), 1)
            layer.input_size = len(keep)
            layer._init_flat_weights()
            return layer

        def get_out_channels(self, layer: Any) -> int:
            return layer.hidden_size

        def get_in_channels(self, layer: Any) -> int:
            return layer.input_size

    return LSTMHiddenPruner


def _frozen_pruner_cls() -> Any:
    """For an ``--ignore``d recurrent module Torch-Pruning does not know: gives the dependency graph its widths
    so that every group touching it is recognised (and kept); it never prunes."""
    tp = require("torch_pruning", "prune")

    class FrozenPruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer: Any, idxs: list) -> Any:
            raise RuntimeError(f"{type(layer).__name__} is kept unpruned (--ignore)")

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer: Any) -> int:
            return layer.hidden_size * (2 if layer.bidirectional else 1)

        def get_in_channels(self, layer: Any) -> int:
            return layer.input_size

    return FrozenPruner


@contextlib.contextmanager
def _opaque(modules: list, torch: Any) -> Iterator[None]:
    """While the graph is traced, run ``modules`` as one opaque autograd op each: on CPU a GRU's autograd
    graph is its unrolled cell (splits, unbinds), whose index mapping Torch-Pruning gets wrong (or loops on);
    an ignored module only has to show where its input comes from and where its output goes."""

    class Opaque(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, fn: Any, x: Any, *rest: Any) -> Any:
            with torch.no_grad():
                out = fn(x, *rest)
            return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in out) if isinstance(out, tuple) \
                else out.clone()

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            return (None,) * 64

    saved = []
    for m in modules:
        saved.append((m, m.forward))
        m.forward = (lambda fwd: lambda x, *a, **k: Opaque.apply(lambda *t: _flat(fwd(*t, **k)), x, *a))(m.forward)
    try:
        yield
    finally:
        for m, fwd in saved:
            m.forward = fwd


def _flat(out: Any) -> Any:
    """(output, (h, c)) -> (output, h, c): autograd Functions return flat tuples of tensors."""
    if isinstance(out, tuple):
        flat = []
        for o in out:
            flat.extend(o if isinstance(o, tuple) else (o,))
        return tuple(flat)
    return out


@dataclass
class TowerPruneSpec:
    tower: str
    target_removed: int                 # parameters to remove from the tower
    scope: tuple[str, ...]
    round_to: int = 1
    step: float = 0.05
    max_layer_ratio: float = 0.9


@dataclass
class TowerPruneResult:
    params_before: int
    params_after: int
    steps: int
    layer_fraction: float
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    history: list = field(default_factory=list)   # Torch-Pruning's pruning_history (JSON-ready)


def _is_unhandled(m: Any, nn: Any) -> Optional[str]:
    if isinstance(m, nn.MultiheadAttention):
        return "nn.MultiheadAttention (its heads are packed in one in_proj weight)"
    if isinstance(m, nn.LSTM) and (m.bidirectional or m.proj_size):
        return "a bidirectional / projected nn.LSTM"
    if isinstance(m, nn.RNNBase) and not isinstance(m, nn.LSTM):
        return f"nn.{type(m).__name__}"
    return None


class TowerPruner:
    """Prunes one tower of ``root`` in place (``tower_module`` is the tower's ``TowerModule``)."""

    def __init__(self, root: Any, tower_module: Any, example_args: tuple, param_names: set[str],
                 other_tower_params: set[str], ignore: tuple[str, ...], attention: dict[Any, Any]):
        torch = require("torch")
        tp = require("torch_pruning", "prune")
        self.torch, self.tp, self.nn = torch, tp, torch.nn
        self.root, self.tower_module = root, tower_module
        self.param_names = param_names
        self.attention = attention
        self.names = {m: n for n, m in root.named_modules()}
        self.owner = {id(p): n.rpartition(".")[0] for n, p in root.named_parameters()}
        shared_modules = {n.rpartition(".")[0] for n in other_tower_params}
        self.shared = {m for m, n in self.names.items() if n in shared_modules}
        self.ignored: set[Any] = set()
        # BLIP-style attention packs q, k and v in one Linear: Torch-Pruning's grouping overruns it (IndexError),
        # so those keep their widths (the MLPs around them still prune)
        self.ignored.update(q for m in root.modules() if isinstance(q := getattr(m, "qkv", None), self.nn.Linear)
                            and q.out_features == 3 * q.in_features)
        modules = dict(root.named_modules())
        for name in ignore:
            if name not in modules:
                raise UserInputError(f"--ignore {name!r}: the model has no module of that name",
                                     hint="give module names as 'mmdk inspect' / model.named_modules() show them")
            self.ignored.update(modules[name].modules())
        custom: dict[Any, Any] = {torch.nn.LSTM: _lstm_pruner_cls()()}
        for name, m in tower_module.named_modules():
            if isinstance(m, torch.nn.RNNBase) and _is_unhandled(m, torch.nn):
                rname = self.names.get(m, name)
                if m not in self.ignored:  # unknown to Torch-Pruning: it would slice their weights blindly
                    raise UnhandledModuleError(
                        f"Torch-Pruning cannot prune {_is_unhandled(m, torch.nn)} at {rname!r}",
                        hint=f"keep it with --ignore {rname} (its input and output widths then stay as they are)")
                custom[type(m)] = _frozen_pruner_cls()()
        frozen = [m for m in tower_module.modules() if type(m) in custom and type(m) is not torch.nn.LSTM]
        with torch.enable_grad(), _opaque(frozen, torch):
            self.dg = tp.DependencyGraph().build_dependency(
                tower_module, example_inputs=list(example_args), customized_pruners=custom, verbose=False)
        # layers whose output *is* a tower output (no output op follows them in the graph): width stays
        self.terminal = {m for m, node in self.dg.module2node.items() if not node.outputs}

    # ---- groups -------------------------------------------------------------------------------------
    def _name(self, target: Any) -> str:
        if isinstance(target, self.nn.Parameter):
            return self.owner.get(id(target), "?") + " (parameter)"
        return self.names.get(target, type(target).__name__)

    def groups(self) -> list[tuple[str, Any, Any]]:
        """(kind, group, root module) for every group in the tower."""
        roots = [self.nn.Linear, self.nn.modules.conv._ConvNd, self.nn.LSTM]
        out = []
        for g in self.dg.get_all_groups(root_module_types=roots):
            kind = self.classify_group(g)
            out.append((kind, g, g[0].dep.target.module))
        return out

    def classify_group(self, group: Any) -> str:
        ops = self.tp.ops
        real = [(dep.target.module, dep) for dep, _ in group if dep.target.type != ops.OPTYPE.OUTPUT
                and not type(dep.target.module).__name__.startswith("_")]
        if any(dep.target.type == ops.OPTYPE.OUTPUT or (dep.target.module in self.terminal
                                                        and self.dg.is_out_channel_pruning_fn(dep.handler))
               for dep, _ in group):
            return "output"
        if any(m in self.ignored or (isinstance(m, self.nn.Parameter) and self._owner_ignored(m)) for m, _ in real):
            return "ignored"
        if any(m in self.shared for m, _ in real):
            return "shared"
        out_mods = [m for m, dep in real if self.dg.is_out_channel_pruning_fn(dep.handler)]
        if any(m in self.attention for m in out_mods):
            return "heads"
        if any(isinstance(m, (self.nn.Embedding, self.nn.LayerNorm)) for m, _ in real) or \
                any(m in self.attention for m, dep in real if self.dg.is_in_channel_pruning_fn(dep.handler)):
            return "hidden"
        root = group[0].dep.target.module
        return "mlp" if isinstance(root, self.nn.Linear) else "channels"

    def _owner_ignored(self, p: Any) -> bool:
        owner = self.owner.get(id(p))
        return any(self.names.get(m) == owner for m in self.ignored)

    def check_unhandled(self, group: Any) -> None:
        for dep, _ in group:
            m = dep.target.module
            what = _is_unhandled(m, self.nn) if isinstance(m, self.nn.Module) else None
            name = self._name(m)
            if what is None and isinstance(m, self.nn.Parameter):
                owner_mod = dict(self.root.named_modules()).get(self.owner.get(id(m), ""))
                if owner_mod is not None and not isinstance(owner_mod, (self.nn.Embedding,)):
                    what = (_is_unhandled(owner_mod, self.nn)
                            or f"a {type(owner_mod).__name__} with its own parameters")
                    name = self.owner.get(id(m), "?")
            if what is not None:
                raise UnhandledModuleError(
                    f"Torch-Pruning cannot prune {what} at {name!r}, which this group of layers would change",
                    hint=f"keep it with --ignore {name} (its input and output widths then stay as they are)")

    # ---- one step ------------------------------------------------------------------------------------
    def prune_step(self, fraction: float, spec: TowerPruneSpec, importance: Any, initial: dict[Any, int]) -> None:
        for kind, group, root in self.groups():
            if kind in KEPT or kind not in spec.scope:
                continue
            self.check_unhandled(group)
            if kind == "heads":
                self._prune_heads(group, fraction, spec, importance)
            else:
                self._prune_width(group, root, fraction, spec, importance, initial)

    def _prune_heads(self, group: Any, fraction: float, spec: TowerPruneSpec, importance: Any) -> None:
        q_mod = next(dep.target.module for dep, _ in group if dep.target.module in self.attention
                     and self.dg.is_out_channel_pruning_fn(dep.handler))
        info = self.attention[q_mod]
        h0, hc = info.initial_heads, info.heads
        keep = max(1, h0 - int(math.floor(fraction * h0 + 1e-9)), int(math.ceil(h0 * (1 - spec.max_layer_ratio))))
        n_remove = hc - keep
        if n_remove <= 0:
            return
        out_fn = self.dg.get_pruner_of_module(info.q).prune_out_channels
        full = self.dg.get_pruning_group(info.q, out_fn, list(range(info.q.out_features)))
        imp = importance(full)
        if imp is None:
            return
        head_imp = imp.view(hc, -1).mean(1)
        drop = self.torch.topk(head_imp, k=n_remove, largest=False).indices.tolist()
        idxs = [h * info.head_dim + j for h in sorted(drop) for j in range(info.head_dim)]
        g = self.dg.get_pruning_group(info.q, out_fn, idxs)
        if self.dg.check_pruning_group(g):
            g.prune()
        from .hf_attention import patch_attention

        patch_attention(info)

    def _prune_width(self, group: Any, root: Any, fraction: float, spec: TowerPruneSpec, importance: Any,
                     initial: dict[Any, int]) -> None:
        current = self.dg.get_out_channels(root)
        c0 = initial.setdefault(root, current)
        keep = c0 - int(math.floor(fraction * c0 + 1e-9))
        unit = spec.round_to  # GroupNorm needs its channel count to stay a multiple of its group count
        for dep, _ in group:
            if isinstance(dep.target.module, self.nn.GroupNorm):
                unit = math.lcm(unit, dep.target.module.num_groups)
        if unit > 1:
            keep = max(unit, unit * int(round(keep / unit)))
        keep = max(keep, 1, int(math.ceil(c0 * (1 - spec.max_layer_ratio))))
        n_remove = current - keep
        if n_remove <= 0:
            return
        try:
            imp = importance(group)
        except IndexError as exc:  # Torch-Pruning's grouping does not match the layer (fused / reshaped weights)
            name = self._name(root)
            raise UnhandledModuleError(f"Torch-Pruning cannot group the layers around {name!r} ({exc})",
                                       hint=f"keep it with --ignore {name} (its input and output widths then stay "
                                            "as they are), or narrow --scope") from None
        if imp is None:
            return
        drop = self.torch.topk(imp, k=n_remove, largest=False).indices.tolist()
        fn = self.dg.get_pruner_of_module(root).prune_out_channels
        g = self.dg.get_pruning_group(root, fn, sorted(drop))
        if self.dg.check_pruning_group(g):
            g.prune()

    # ---- reporting ----------------------------------------------------------------------------------
    def layer_report(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        layers: dict[str, dict[str, Any]] = {}
        kept: dict[str, int] = {}
        seen_attn = set()
        for kind, group, root in self.groups():
            if kind in KEPT:
                kept[kind] = kept.get(kind, 0) + 1
                continue
            if kind == "heads":
                info = next(self.attention[dep.target.module] for dep, _ in group
                            if dep.target.module in self.attention)
                if info.name not in seen_attn:
                    seen_attn.add(info.name)
                    layers[info.name] = {"kind": "heads", "heads": info.heads, "initial": info.initial_heads,
                                         "head_dim": info.head_dim}
            else:
                layers[self.names.get(root, "?")] = {"kind": kind, "width": int(self.dg.get_out_channels(root))}
        return layers, kept


def count_params(root: Any, names: set[str]) -> int:
    return sum(p.numel() for n, p in root.named_parameters() if n in names)


def run_tower_pruning(pruner: TowerPruner, spec: TowerPruneSpec, importance: Any,
                      prepare: Callable[[], None], log: Callable[[str], None]) -> TowerPruneResult:
    """Iterate pruning steps (``prepare`` refreshes gradients for data-driven importances) until the tower has
    lost ``spec.target_removed`` parameters; a target out of reach is a one-line error."""
    before = count_params(pruner.root, pruner.param_names)
    for kind, group, _root in pruner.groups():  # refuse before the first cut: the tower stays as it was
        if kind not in KEPT and kind in spec.scope:
            pruner.check_unhandled(group)
    initial: dict[Any, int] = {}
    fraction, steps = 0.0, 0
    removed = 0
    while removed < spec.target_removed:
        if fraction >= spec.max_layer_ratio - 1e-9:
            raise UserInputError(
                f"tower {spec.tower!r}: cannot remove {spec.target_removed:,} of its {before:,} parameters with scope "
                f"{','.join(spec.scope)}; at most {removed / before:.1%} (every prunable layer cut to "
                f"{1 - spec.max_layer_ratio:.0%} of its width)",
                hint="ask for a smaller --ratio, widen --scope, or raise max_layer_ratio")
        inc = spec.step
        if removed > 0:  # near the target, smaller steps (the last step decides how far past it we land)
            slope = removed / fraction
            inc = min(spec.step, max(spec.step / 10, (spec.target_removed - removed) / slope))
        fraction = min(spec.max_layer_ratio, fraction + inc)
        steps += 1
        prepare()
        pruner.prune_step(fraction, spec, importance, initial)
        removed = before - count_params(pruner.root, pruner.param_names)
        log(f"tower {spec.tower!r}: step {steps}, layer fraction {fraction:.2f}, removed {removed / before:.1%}")
    layers, kept = pruner.layer_report()
    history = [[str(name), bool(out), [int(i) for i in idxs]] for name, out, idxs in pruner.dg.pruning_history()]
    return TowerPruneResult(before, before - removed, steps, fraction, layers, kept, history)
