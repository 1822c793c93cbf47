"""torch eager backend: the tower's ``TowerModule`` on CPU, or on CUDA timed with CUDA events."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import numpy as np

from ..._lazy import require
from ...errors import BackendUnavailableError, SpecError
from ...model.tower import Tower
from .base import Backend


class TorchEagerBackend(Backend):
    name: ClassVar[str] = "torch"
    kinds: ClassVar[tuple[str, ...]] = ("torch",)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def __init__(self, tower: Tower, device: str = "cpu", threads: Optional[int] = None):
        super().__init__(tower, device, threads)
        self.torch = require("torch")
        if tower.module is None:
            raise BackendUnavailableError(f"tower {tower.name!r} has no torch module to run")
        if threads:
            self.torch.set_num_threads(int(threads))
        self.threads = self.torch.get_num_threads()
        self.module = tower.module.eval()
        if device == "cuda":
            self.module = self.module.to("cuda")
        self._names = tower.spec.input_names

    @classmethod
    def check_available(cls, device: str) -> None:
        super().check_available(device)
        torch = require("torch")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("torch cannot see a CUDA device (torch.cuda.is_available() is False)",
                                          hint="install a CUDA build of torch, or use --target cpu")

    def _tensors(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        torch = self.torch
        missing = [n for n in self._names if n not in feeds]
        if missing:
            raise SpecError(f"tower {self.tower.name!r} needs input {missing[0]!r}, not provided")
        ts = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self._names]
        return [t.to(self.device) for t in ts] if self.device != "cpu" else ts

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            outs = self.module(*self._tensors(feeds))
        return {n: o.detach().float().cpu().numpy() for n, o in zip(self.tower.spec.output_names, outs)}

    def prepare(self, feeds: dict[str, np.ndarray]) -> Any:
        return self._tensors(feeds)

    def run_prepared(self, prepared: Any) -> Any:
        with self.torch.inference_mode():
            return self.module(*prepared)

    def synchronize(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def time_once(self, prepared: Any) -> float:
        if self.device != "cuda":
            return super().time_once(prepared)
        start = self.torch.cuda.Event(enable_timing=True)
        end = self.torch.cuda.Event(enable_timing=True)
        start.record()
        self.run_prepared(prepared)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def memory(self) -> dict[str, int]:
        if self.device != "cuda":
            return {}
        return {"gpu_peak_bytes": int(self.torch.cuda.max_memory_allocated()),
                "gpu_allocated_bytes": int(self.torch.cuda.memory_allocated())}

    def reset_memory_peak(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()
