"""Differences between transformers 4.x and 5.x that code outside the loaders meets.

- ``get_image_features`` / ``get_text_features`` (and the audio / video ones) return a tensor in 4.x and a
  ``BaseModelOutputWithPooling`` in 5.x, whose ``pooler_output`` holds the same projected embedding.
"""

from __future__ import annotations

from typing import Any


def feature_tensor(out: Any) -> Any:
    """The embedding tensor of a ``get_<modality>_features`` result, on transformers 4.x and 5.x."""
    if hasattr(out, "dim") and hasattr(out, "shape"):  # a torch.Tensor already
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"get_*_features returned {type(out).__name__} without a pooler_output")
    return pooled
