"""Attention modules whose heads can be pruned, and the attribute patches they need afterwards.

Torch-Pruning removes channels; an attention module also keeps its head count (and, in HF models, its
width) in plain attributes, which it must be told about (FIELD_NOTES: "patch the module's own attributes").

- ``qkv`` family (CLIP, SigLIP: ``q_proj/k_proj/v_proj/out_proj``, ``num_heads``, ``head_dim``,
  ``embed_dim``): the stock forward reshapes the output to the *input* width, so the module also gets the
  ``pruned_attention`` patch (see ``model/arch_record.py``; the architecture record replays it at load).
- ``bert`` family (BERT, ViT and friends: ``query/key/value``, ``num_attention_heads``,
  ``attention_head_size``, ``all_head_size``): attributes only; the output projection lives in the sibling
  ``output.dense`` module, which Torch-Pruning's dependency graph finds on its own.

``nn.MultiheadAttention`` packs its heads into one ``in_proj_weight`` and requires width == embed_dim;
Torch-Pruning cannot remove its heads (its issues #507, #196), so a group that would change it is reported
as unhandled (see ``engine.classify_group``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...model.arch_record import patch_pruned_attention


@dataclass
class AttentionInfo:
    name: str            # module name in the root model
    module: Any
    family: str          # "qkv" | "o_proj" | "bert"
    q: Any
    k: Any
    v: Any
    head_dim: int
    initial_heads: int

    @property
    def heads(self) -> int:
        return int(self.q.out_features) // self.head_dim


def discover_attention(root: Any) -> dict[Any, AttentionInfo]:
    """Every prunable attention module of ``root``, keyed by its query projection (and k / v projections)."""
    from torch import nn

    found: dict[Any, AttentionInfo] = {}
    for name, m in root.named_modules():
        info = None
        if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q_proj", "k_proj", "v_proj", "out_proj")) \
                and isinstance(getattr(m, "head_dim", None), int) and isinstance(getattr(m, "num_heads", None), int):
            info = AttentionInfo(name, m, "qkv", m.q_proj, m.k_proj, m.v_proj, m.head_dim, m.num_heads)
        elif all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q_proj", "k_proj", "v_proj", "o_proj")) \
                and isinstance(getattr(m, "head_dim", None), int) \
                and isinstance(getattr(m, "num_attention_heads", None), int):
            # transformers 5 ViT / BERT-style attention: views by head_dim, reshapes to -1, so any head count runs
            info = AttentionInfo(name, m, "o_proj", m.q_proj, m.k_proj, m.v_proj, m.head_dim, m.num_attention_heads)
        elif all(isinstance(getattr(m, a, None), nn.Linear) for a in ("query", "key", "value")) \
                and isinstance(getattr(m, "attention_head_size", None), int) \
                and isinstance(getattr(m, "num_attention_heads", None), int):
            info = AttentionInfo(name, m, "bert", m.query, m.key, m.value, m.attention_head_size,
                                 m.num_attention_heads)
        if info is not None:
            for proj in (info.q, info.k, info.v):
                found[proj] = info
    return found


def patch_attention(info: AttentionInfo) -> None:
    """Bring the module's attributes in line with its (pruned) projections."""
    heads = info.heads
    m = info.module
    if info.family == "qkv":
        m.num_heads = heads
        m.embed_dim = heads * info.head_dim
        if heads != info.initial_heads:
            patch_pruned_attention(m)
    elif info.family == "o_proj":
        m.num_attention_heads = heads
    else:
        m.num_attention_heads = heads
        m.all_head_size = heads * info.head_dim
