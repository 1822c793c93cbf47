"""Towers of Hugging Face models by capability: every ``get_<modality>_features`` method is one tower.

A model with ``get_image_features`` and ``get_text_features`` (CLIP, SigLIP, SigLIP2, ChineseCLIP, AltCLIP,
ALIGN, BLIP, FLAVA, OWL-ViT, GroupViT, MetaCLIP 2, VisionTextDualEncoder, ...), ``get_audio_features``
(CLAP) or ``get_video_features`` (X-CLIP) splits into towers ``vision`` / ``text`` / ``audio`` / ``video``.
Inputs come from the method's signature, the modality's sub-config and the processor files
(``hf_inputs``); the output is the method's embedding, pooled the way the family's own ``forward`` pools it
when the method returns a sequence or a ``ModelOutput`` (transformers 5), and L2-normalised as in
``CLIPModel.forward``.

A few families ship a ``get_*_features`` that does not run in some transformers versions (ChineseCLIP's text
method reads a pooler its text model does not have; X-CLIP's video method indexes a tuple as a ModelOutput):
for those the tower runs the same computation as the family's ``forward``, from its submodules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import CheckpointError, MmdkError, SpecError
from .hf_inputs import IO_HINT, modality_inputs, read_processor_files, sub_config
from .iospec import IOSpec

# (modality of get_<modality>_features, tower name, output name, top-level children that belong to the tower)
MODALITIES = (
    ("image", "vision", "image_embeds", ("vision", "visual", "image")),
    ("text", "text", "text_embeds", ("text",)),
    ("audio", "audio", "audio_embeds", ("audio",)),
    ("video", "video", "video_embeds", ("vision", "visual", "mit", "prompts")),
)


def feature_modalities(model: Any) -> list[str]:
    """The modalities ``model`` has a ``get_<modality>_features`` method for."""
    return [m for m, *_ in MODALITIES if callable(getattr(model, f"get_{m}_features", None))]


def is_feature_model(model: Any) -> bool:
    """Two or more feature methods: a dual (or more) encoder, split into one tower per modality."""
    return len(feature_modalities(model)) >= 2


# ---- family computations where the method itself is broken -------------------------------------------------
def _chinese_clip_text(model: Any, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> Any:
    """ChineseCLIPModel.forward: CLS token of the text model's last hidden state, then the projection."""
    out = model.text_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    return model.text_projection(out[0][:, 0, :])


def _xclip_video(model: Any, pixel_values: Any) -> Any:
    """XCLIPModel.forward: per-frame CLS -> projection -> multi-frame integration transformer's pooled output."""
    b, f, c, h, w = pixel_values.shape
    frames = model.vision_model(pixel_values=pixel_values.reshape(-1, c, h, w))[1]
    cls = model.visual_projection(frames).view(b, f, -1)
    return model.mit(cls)[1]


def fix_naflex_grid(model: Any, spec: IOSpec, torch: Any) -> None:
    """SigLIP2 (NaFlex) resizes its position table per sample to ``spatial_shapes`` with an antialiased bilinear
    interpolation: data-dependent sizes no ONNX exporter takes. The tower's I/O spec fixes the patch grid
    (``spatial_shapes`` range: one square grid of ``max_num_patches``), so while exporting, the resized table for
    that grid is a constant; in eager mode the family's own code runs for any grid."""
    if "spatial_shapes" not in spec.input_names:
        return
    g = int(spec.input("spatial_shapes").range[0])
    n = int(spec.input("pixel_values").shape[1])
    for emb in model.modules():
        orig = getattr(emb, "resize_positional_embeddings", None)
        if orig is None or getattr(orig, "_mmdk_fixed", False):
            continue

        def resize(positional_embeddings: Any, spatial_shapes: Any, max_length: int, _orig: Any = orig,
                   _cache: dict = {}) -> Any:  # noqa: B006 - the per-module table, refreshed by every eager call
            exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
            if not exporting or "table" not in _cache:
                with torch.no_grad():
                    _cache["table"] = _orig(positional_embeddings.detach(), torch.tensor([[g, g]]), n).detach()
            if not exporting:
                return _orig(positional_embeddings, spatial_shapes, max_length)
            return _cache["table"].expand(spatial_shapes.shape[0], -1, -1)

        resize._mmdk_fixed = True  # type: ignore[attr-defined]
        emb.resize_positional_embeddings = resize


OVERRIDES: dict[tuple[str, str], Callable[..., Any]] = {
    ("chinese_clip", "text"): _chinese_clip_text,
    ("xclip", "video"): _xclip_video,
}
# families whose feature methods return per-token sequences, and how their forward pools them
SEQUENCE_POOLING = {"flava": "cls"}


def pool_features(out: Any, torch: Any, pooling: str = "cls") -> Any:
    """One embedding per sample from what a feature method returned: a tensor, a ``ModelOutput`` (its
    ``pooler_output``, else its first tensor) or a tuple; a per-token sequence is pooled (CLS or mean)."""
    if not isinstance(out, torch.Tensor):
        pooled = getattr(out, "pooler_output", None)
        if isinstance(pooled, torch.Tensor):
            out = pooled
        else:
            items = out.values() if hasattr(out, "values") else out
            out = next((v for v in items if isinstance(v, torch.Tensor)), None)
            if out is None:
                raise SpecError("the feature method returned no tensor", hint=IO_HINT)
    if out.dim() == 3:
        out = out.mean(dim=1) if pooling == "mean" else out[:, 0]
    return out


def _embed_fn(model: Any, modality: str, model_type: str, torch: Any) -> Callable[..., Any]:
    F = torch.nn.functional
    override = OVERRIDES.get((model_type, modality))
    method = getattr(model, f"get_{modality}_features")
    pooling = SEQUENCE_POOLING.get(model_type, "cls")

    def embed(**kwargs: Any) -> Any:
        out = override(model, **kwargs) if override is not None else method(**kwargs)
        return F.normalize(pool_features(out, torch, pooling), dim=-1)

    return embed


def padded_position_limit(module: Any, torch: Any) -> Optional[int]:
    """The longest sequence a RoBERTa-style position table takes (its ids start after ``padding_idx``), found from
    the modules themselves: any ``position_embeddings`` Embedding with a padding index. None when there is none."""
    limits = [m.num_embeddings - m.padding_idx - 1 for n, m in module.named_modules()
              if n.endswith("position_embeddings") and isinstance(m, torch.nn.Embedding) and m.padding_idx is not None]
    return min(limits) if limits else None


def cap_seq(dims: dict[str, Any], limit: Optional[int]) -> dict[str, Any]:
    if limit is not None and "seq" in dims and dims["seq"][1] > limit >= dims["seq"][0]:
        return {**dims, "seq": [dims["seq"][0], limit]}
    return dims


def count_children(model: Any, keys: tuple[str, ...]) -> int:
    """Parameters of the top-level children whose name mentions one of ``keys`` (one tower's share)."""
    return sum(p.numel() for n, child in model.named_children() if any(k in n for k in keys)
               for p in child.parameters())


def feature_towers(model: Any, directory: Optional[Path], torch: Any, probe: bool = True) -> dict[str, Any]:
    """One tower per ``get_<modality>_features`` method of ``model`` (see the module docstring)."""
    from .tower import Tower
    from .torch_tower import TowerModule

    proc = read_processor_files(directory)
    model_type = str(getattr(model.config, "model_type", "") or "")
    cls = type(model).__name__
    have = set(feature_modalities(model))
    towers: dict[str, Any] = {}
    for modality, name, output, keys in MODALITIES:
        if modality not in have:
            continue
        where = f"{cls}.get_{modality}_features"
        try:
            inputs, dims = modality_inputs(modality, getattr(model, f"get_{modality}_features"),
                                           sub_config(model.config, modality), proc, where)
            dims = cap_seq(dims, padded_position_limit(model, torch))
            spec = IOSpec.model_validate({"inputs": inputs, "outputs": [output], "dims": dims})
        except (ValueError, TypeError) as exc:  # a config value the spec cannot hold (pydantic: ValueError)
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise CheckpointError(f"{where}: cannot describe its inputs from the config ({first[:160]})",
                                  hint=IO_HINT) from None
        if modality == "image":
            fix_naflex_grid(model, spec, torch)
        module = TowerModule(model, spec, _embed_fn(model, modality, model_type, torch), where).eval()
        towers[name] = Tower(name, spec, "torch", module=module,
                             details={"parameters": count_children(model, keys), "method": where})
    if probe:
        for tower in towers.values():
            probe_tower(tower, cls)
    return towers


def probe_tower(tower: Any, cls: str) -> None:
    """Run the tower once at its smallest shapes (batch 1, two tokens): a family whose inputs the kit got
    wrong fails here, at load, as a one-line error naming the tower instead of deep inside an export."""
    spec = tower.spec
    sizes = {d: max(lo, min(hi, 2)) if d != "batch" else lo for d, (lo, hi) in spec.dims.items()}
    try:
        tower.module.run_numpy(spec.dummy_inputs(sizes))
    except MmdkError as exc:
        raise CheckpointError(f"{cls}: tower {tower.name!r} does not run on the inputs mmdk built for it "
                              f"({', '.join(spec.input_names)}): {exc.message}", hint=IO_HINT) from None
