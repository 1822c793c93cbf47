"""Torch side of towers: wrap any callable into a module with named kwargs in, a tuple of outputs out."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import SpecError, VerificationError
from .iospec import IOSpec

_TORCH_DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPES[name]


def select_outputs(result: Any, spec: IOSpec, where: str) -> tuple[torch.Tensor, ...]:
    """Pick the spec's outputs, in order, from a tensor / tuple / dict / ModelOutput result."""
    names = spec.output_names
    if isinstance(result, torch.Tensor):
        if len(names) != 1:
            raise SpecError(f"{where} returned one tensor but the I/O spec lists outputs {names}")
        return (result,)
    if isinstance(result, dict) or hasattr(result, "keys"):
        keys = list(result.keys())
        missing = [n for n in names if n not in keys]
        if missing:
            raise SpecError(f"{where} has no output named {missing[0]!r}",
                            hint=f"its outputs are: {', '.join(map(str, keys))}")
        return tuple(result[n] for n in names)
    if isinstance(result, (tuple, list)):
        if len(result) < len(names):
            raise SpecError(f"{where} returned {len(result)} outputs but the I/O spec lists {len(names)}: {names}")
        return tuple(result[: len(names)])
    raise SpecError(f"{where} returned {type(result).__name__}, not a tensor, tuple or dict")


class TowerModule(nn.Module):
    """``forward(*inputs in spec order)`` -> tuple of spec outputs; ``fn`` receives keyword arguments.

    Positional forward is what ``torch.onnx.export`` and TensorRT tooling want; ``fn`` is the user's
    module (or a bound method such as ``CLIPModel.get_image_features`` plus a normalisation).
    """

    def __init__(self, inner: nn.Module, spec: IOSpec, fn: Callable[..., Any] | None = None, where: str = ""):
        super().__init__()
        self.inner = inner
        self.spec = spec
        self._fn = fn
        self._where = where or type(inner).__name__

    def train(self, mode: bool = True) -> "TowerModule":
        """Like nn.Module.train, but tolerate torch.export modules, whose mode is fixed at export."""
        self.training = mode
        try:
            self.inner.train(mode)
        except NotImplementedError:
            pass
        return self

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs = dict(zip(self.spec.input_names, args))
        fn = self._fn if self._fn is not None else self.inner
        return select_outputs(fn(**kwargs), self.spec, self._where)

    def run_numpy(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.spec.input_names]
        try:
            with torch.inference_mode():
                outs = self(*args)
        except (SpecError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the user's forward can raise anything
            shapes = {n: list(a.shape) for n, a in zip(self.spec.input_names, args)}
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise VerificationError(f"{self._where} failed at input shapes {shapes}: {first[:200]}",
                                    hint="check the I/O spec's shapes and dims match what the model accepts") from None
        return {n: o.detach().float().cpu().numpy() for n, o in zip(self.spec.output_names, outs)}


def check_forward_signature(fn: Callable[..., Any], spec: IOSpec, where: str) -> None:
    """Fail early when the spec names an input ``fn`` does not take (or omits a required one)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins / scripted functions: checked when run
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name in spec.input_names:
        if name not in accepted:
            raise SpecError(f"the I/O spec names input {name!r}, which {where}.forward does not take",
                            hint=f"it takes: {', '.join(accepted) or '(nothing)'}; rename the input in the I/O spec")
    required = [n for n in accepted if params[n].default is inspect.Parameter.empty]
    missing = [n for n in required if n not in spec.input_names]
    if missing:
        raise SpecError(f"{where}.forward requires {missing[0]!r}, which the I/O spec does not list",
                        hint="add it to the I/O spec's inputs")


def numpy_to_torch(feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
