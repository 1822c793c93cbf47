"""The CPU an INT8 model is quantized for, and what the ``cpu`` preset picks on each (torch/ORT-free).

ONNX Runtime's x86 INT8 GEMM kernels differ by instruction set, and so do accuracy and speed:

- ``avx512_vnni`` (also AVX-VNNI / AMX machines): ``vpdpbusd`` multiplies u8 x s8 and accumulates in
  32 bit - no saturation. Preset: U8S8 (uint8 activations, int8 weights), full 8-bit weights.
- ``avx2`` (AVX2 + FMA, no VNNI - many cloud VMs and older servers): u8 x s8 goes through ``vpmaddubsw``,
  which adds two u8*s8 products into a *saturating* int16 (255*127*2 > 32767). ORT's documentation
  recommends ``reduce_range`` (7-bit weights: 255*63*2 fits) or U8U8 there. Measured on this project's
  AVX2 VM: ``benchmarks/quant_clip_vit.py`` (U8S8 / U8S8 reduce_range / U8U8 on CLIP ViT-B/32) and
  ``benchmarks/quant_fusion.py`` (hybrid with and without reduce_range), results in
  ``benchmarks/results/quant_{clip_vit,fusion}_avx2.md``. reduce_range keeps the u8s8 kernels (same speed)
  and removes the saturation: the preset uses it (``AVX2_CHOICE``).
- ``arm64`` (Jetson Orin's Cortex-A78AE, Graviton, Apple): not measured here (no ARM machine). Chosen by
  reasoning: ARMv8.2 dot-product instructions (SDOT/UDOT, ``asimddp``) accumulate 4 products in 32 bit, so
  there is no saturation to avoid; reduce_range would only throw away a bit. Preset: U8S8, 8-bit weights
  (ORT's ARM64 MLAS runs it through its dot-product kernels).

``target_cpu="auto"`` means the machine running ``mmdk quantize``; the manifest records the ISA, and
``mmdk bench`` warns and re-verifies accuracy when it runs on a machine of another kind.
"""

from __future__ import annotations

from typing import Any, Optional

from ...runtime.env import CPU_ISAS as ISAS, detect_isa  # noqa: F401 - detection lives with the env probes

# AVX2 without VNNI: what the cpu preset uses (see the module docstring and the benchmark result file).
AVX2_CHOICE = {"reduce_range": True, "weight_type": "int8"}


def resolve_isa(target_cpu: Optional[str]) -> str:
    """``auto``/None -> this machine's ISA; anything else as given."""
    return detect_isa() if target_cpu in (None, "auto") else str(target_cpu)


def cpu_int8_options(target_cpu: Optional[str], preset: str = "cpu") -> dict[str, Any]:
    """Quantizer options the ``cpu`` preset picks for ``target_cpu`` (the tensorrt preset ignores the CPU)."""
    isa = resolve_isa(target_cpu)
    if preset != "cpu":
        return {"isa": isa, "reduce_range": False, "weight_type": "int8"}
    if isa == "avx2":
        return {"isa": isa, **AVX2_CHOICE}
    return {"isa": isa, "reduce_range": False, "weight_type": "int8"}

