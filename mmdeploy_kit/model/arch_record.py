"""Architecture records: rebuild a structurally pruned module from its source + a small JSON record, then
load its safetensors weights strictly. No Torch-Pruning and no pickle at load time.

A pruned directory (written by ``mmdk prune``) holds

- ``model.safetensors``: the pruned weights;
- ``mmdk_arch.json``: where the module comes from (an HF ``config.json`` next to it, or a factory
  ``file.py:function`` + I/O spec) and, for every submodule whose shape changed, the new parameter /
  buffer shapes and the scalar attributes that changed (``out_features``, ``num_heads``, ``hidden_size``,
  ...) plus named patches (``pruned_attention``: an HF attention whose width no longer equals the hidden
  size, see :func:`patch_pruned_attention`);
- the source ``config.json`` (for HF models) and the tokenizer / image-processor files.

``load_pruned_dir`` builds the source architecture, applies the record (empty tensors of the recorded
shapes, attributes, patches) and loads the weights with ``strict=True``: a record that does not describe
the weights exactly is an error, never a silent re-initialisation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._lazy import require
from ..errors import CheckpointError

ARCH_RECORD_NAME = "mmdk_arch.json"
WEIGHTS_NAME = "model.safetensors"
RECORD_FORMAT = "mmdk-arch/1"
_SCALARS = (int, float, bool, str)
_SKIP_ATTRS = {"training", "_is_hf_initialized"}


# ---- patches -----------------------------------------------------------------------------------------
def _pruned_attention_forward(self: Any, hidden_states: Any, attention_mask: Any = None,
                              causal_attention_mask: Any = None, output_attentions: bool = False,
                              **kwargs: Any) -> Any:
    """HF ``q_proj/k_proj/v_proj/out_proj`` attention (CLIP, SigLIP) whose width is ``num_heads * head_dim``
    rather than the hidden size: the stock forward reshapes its output to the input width, which fails
    once heads are removed. Same computation, reshaped to the module's own width."""
    import sys

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    b, s, _ = hidden_states.shape
    q = self.q_proj(hidden_states).view(b, s, -1, self.head_dim).transpose(1, 2)
    k = self.k_proj(hidden_states).view(b, s, -1, self.head_dim).transpose(1, 2)
    v = self.v_proj(hidden_states).view(b, s, -1, self.head_dim).transpose(1, 2)
    mask = attention_mask
    if causal_attention_mask is not None:
        mask = causal_attention_mask if mask is None else mask + causal_attention_mask
    impl = getattr(getattr(self, "config", None), "_attn_implementation", "eager")
    fn = (getattr(sys.modules[type(self).__mro__[1].__module__], "eager_attention_forward", None)
          if impl in (None, "eager") else ALL_ATTENTION_FUNCTIONS.get(impl))
    scale = getattr(self, "scale", None) or getattr(self, "scaling", None) or self.head_dim ** -0.5
    dropout = float(getattr(self, "dropout", 0.0) or 0.0) if self.training else 0.0
    # transformers 5 passes ``is_causal=True`` from the text transformer (its mask may then be None: SDPA
    # applies causality itself); 4.x sets causality through ``causal_attention_mask`` / ``self.is_causal``
    is_causal = kwargs.get("is_causal")
    is_causal = getattr(self, "is_causal", False) if is_causal is None else is_causal
    if fn is None:  # families with their attention written inline (OWL-ViT, GroupViT, ...): the same maths
        w = (q @ k.transpose(-1, -2)) * scale
        if is_causal and mask is None:
            w = w + torch_causal_bias(w)
        w = (w + mask if mask is not None else w).softmax(dim=-1)
        out, weights = (w @ v).transpose(1, 2), w
    else:
        out, weights = fn(self, q, k, v, mask, is_causal=is_causal, scaling=scale,
                          dropout=dropout, output_attentions=output_attentions)
    out = self.out_proj(out.reshape(b, s, -1).contiguous())
    extra = (None,) * (getattr(self, "_mmdk_return_arity", 2) - 2)  # 4.x wav2vec2 / HuBERT also return a cache
    return (out, (weights if output_attentions else None), *extra)


def _return_arity(fn: Any) -> int:
    """How many values the stock attention forward returns (its last ``return a, b[, c]``); 2 when unknown."""
    import inspect
    import re

    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return 2
    returns = re.findall(r"^\s*return ([^()\n]+)$", src, re.M)
    return max(2, returns[-1].count(",") + 1) if returns else 2


def torch_causal_bias(w: Any) -> Any:
    """An additive causal mask (0 on and below the diagonal, -inf above) shaped like attention scores ``w``."""
    s = w.shape[-1]
    return w.new_full((s, s), float("-inf")).triu(1)


_PATCH_CLASSES: dict[type, type] = {}


def patch_pruned_attention(module: Any) -> None:
    """Give one HF attention module a forward that works at a width other than the hidden size (the class is
    swapped for a subclass named ``Pruned<Class>``; nothing else changes)."""
    cls = type(module)
    if cls.__name__.startswith("Pruned"):
        return
    sub = _PATCH_CLASSES.get(cls)
    if sub is None:
        sub = type(f"Pruned{cls.__name__}", (cls,), {"forward": _pruned_attention_forward, "__module__": __name__,
                                                      "_mmdk_return_arity": _return_arity(cls.forward)})
        _PATCH_CLASSES[cls] = sub
    module.__class__ = sub


PATCHES = {"pruned_attention": patch_pruned_attention}


# ---- recording ---------------------------------------------------------------------------------------
def _scalar_attrs(module: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in vars(module).items():
        if k in _SKIP_ATTRS or k.startswith("_"):  # private: loader state (transformers 5: _weight_conversions)
            continue
        if isinstance(v, _SCALARS) or (isinstance(v, (tuple, list)) and all(isinstance(x, _SCALARS) for x in v)):
            out[k] = list(v) if isinstance(v, (tuple, list)) else v
    return out


def module_changes(pruned: Any, fresh: Any) -> dict[str, dict[str, Any]]:
    """Per submodule name: the parameter / buffer shapes and scalar attributes in which ``pruned`` differs
    from ``fresh`` (the same architecture built from its source), and the patches applied to it."""
    fresh_modules = dict(fresh.named_modules())
    changes: dict[str, dict[str, Any]] = {}
    for name, mod in pruned.named_modules():
        ref = fresh_modules.get(name)
        if ref is None:
            raise CheckpointError(f"pruned module has a submodule {name!r} its source does not have",
                                  hint="an architecture record describes shape changes only, not new modules")
        entry: dict[str, Any] = {}
        for kind, items, ref_items in (("params", mod.named_parameters(recurse=False), dict(ref.named_parameters(recurse=False))),
                                       ("buffers", mod.named_buffers(recurse=False), dict(ref.named_buffers(recurse=False)))):
            shapes = {n: list(t.shape) for n, t in items
                      if n not in ref_items or tuple(ref_items[n].shape) != tuple(t.shape)}
            if shapes:
                entry[kind] = shapes
        new, old = _scalar_attrs(mod), _scalar_attrs(ref)
        attrs = {k: v for k, v in new.items() if old.get(k) != v}
        if attrs:
            entry["attrs"] = attrs
        if type(mod) is not type(ref) and type(mod).__name__ == f"Pruned{type(ref).__name__}":
            entry["patches"] = ["pruned_attention"]
        if entry:
            entry["type"] = type(ref).__name__
            changes[name] = entry
    return changes


def apply_changes(root: Any, changes: dict[str, dict[str, Any]]) -> None:
    """Reshape ``root`` (freshly built from the source) into the recorded architecture; weights are
    uninitialised until loaded."""
    torch = require("torch")
    for name, entry in changes.items():
        try:
            mod = root.get_submodule(name) if name else root
        except AttributeError:
            raise CheckpointError(f"architecture record names submodule {name!r}, which the source model lacks",
                                  hint="rebuild from the same source checkpoint / factory the model was pruned from") from None
        if type(mod).__name__ != entry.get("type", type(mod).__name__):
            raise CheckpointError(f"architecture record: {name!r} is a {type(mod).__name__}, the record says "
                                  f"{entry['type']}", hint="the source model changed since it was pruned")
        for pname, shape in entry.get("params", {}).items():
            old = getattr(mod, pname, None)
            grad = bool(old.requires_grad) if old is not None else True
            setattr(mod, pname, torch.nn.Parameter(torch.empty(shape), requires_grad=grad))
        for bname, shape in entry.get("buffers", {}).items():
            mod.register_buffer(bname, torch.empty(shape, dtype=getattr(mod, bname).dtype))
        for k, v in entry.get("attrs", {}).items():
            setattr(mod, k, tuple(v) if isinstance(v, list) else v)
        for patch in entry.get("patches", []):
            if patch not in PATCHES:
                raise CheckpointError(f"architecture record uses patch {patch!r}, unknown to this mmdk version")
            PATCHES[patch](mod)
        if isinstance(mod, torch.nn.RNNBase):
            mod._init_flat_weights()


# ---- writing and loading -----------------------------------------------------------------------------
def save_pruned(root: Any, directory: Path, record: dict[str, Any]) -> None:
    """Write ``model.safetensors`` + ``mmdk_arch.json`` (``record`` holds ``source`` and ``modules``)."""
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    save_model(root, str(directory / WEIGHTS_NAME))
    (directory / ARCH_RECORD_NAME).write_text(json.dumps({"format": RECORD_FORMAT, **record}, indent=1) + "\n")


def read_record(directory: Path) -> dict[str, Any]:
    path = directory / ARCH_RECORD_NAME
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})",
                              hint="re-run mmdk prune; the architecture record is damaged") from None
    if record.get("format") != RECORD_FORMAT:
        raise CheckpointError(f"{path} has format {record.get('format')!r}; this mmdk reads {RECORD_FORMAT!r}")
    return record


def build_source(directory: Path, source: dict[str, Any]) -> Any:
    """The unpruned architecture the record applies to (random init; weights come later)."""
    kind = source.get("kind")
    if kind == "hf":
        transformers = require("transformers")
        config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
        cls = getattr(transformers, source.get("class") or "", None) or transformers.AutoModel
        return cls._from_config(config) if hasattr(cls, "_from_config") else cls.from_config(config)
    if kind == "factory":
        from .module_tools import _import_target

        target = source["target"]
        if not Path(target).is_file() and (directory / Path(target).name).is_file():
            target = str(directory / Path(target).name)  # the copy written next to the weights
        obj: Any = _import_target(target)
        for part in source["attr"].split("."):
            obj = getattr(obj, part)
        torch = require("torch")
        return obj if isinstance(obj, torch.nn.Module) else obj()
    raise CheckpointError(f"{directory / ARCH_RECORD_NAME}: unknown source kind {kind!r}")


def rebuild(directory: Path) -> tuple[Any, dict[str, Any]]:
    """(pruned root module with weights loaded strictly, the record)."""
    from safetensors.torch import load_model

    record = read_record(directory)
    root = build_source(directory, record.get("source", {}))
    apply_changes(root, record.get("modules", {}))
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{directory} has {ARCH_RECORD_NAME} but no {WEIGHTS_NAME}",
                              hint="re-run mmdk prune; the output is incomplete")
    try:
        load_model(root, str(weights), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise CheckpointError(f"{weights} does not match the architecture in {ARCH_RECORD_NAME}: {first}",
                              hint="the weights and the record come from different runs; re-run mmdk prune") from None
    return root.eval(), record


def load_pruned_dir(directory: Path) -> Any:
    """``mmdk.load`` of a directory holding ``mmdk_arch.json``: the rebuilt model split into towers."""
    from .iospec import SpecFile
    from .tower import LoadedModel

    torch = require("torch")
    root, record = rebuild(directory)
    source = record.get("source", {})
    files = [directory / ARCH_RECORD_NAME, directory / WEIGHTS_NAME]
    if source.get("kind") == "hf":
        from .hf import _has_tokenizer, hf_model_towers

        towers = hf_model_towers(root, directory, torch)
        return LoadedModel(source=str(directory), format="pruned", architecture=source.get("class") or "?",
                           towers=towers, root=root, hf_dir=directory, files=[directory / "config.json", *files],
                           details={"model_type": source.get("model_type", ""), "has_tokenizer": _has_tokenizer(directory),
                                    "has_image_processor": (directory / "preprocessor_config.json").exists(),
                                    "arch_record": record})
    from .module_tools import _towers_from_spec

    spec_file = SpecFile.parse(source["io"], source=str(directory / ARCH_RECORD_NAME))
    towers = _towers_from_spec(root, spec_file, str(directory))
    return LoadedModel(source=str(directory), format="pruned", architecture=type(root).__name__, towers=towers,
                       root=root, files=files, details={"arch_record": record})

