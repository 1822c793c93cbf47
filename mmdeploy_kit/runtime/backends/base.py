"""The backend interface: load a tower, run it on named numpy inputs, synchronise, report memory.

A backend is small on purpose so TensorRT engines and torch-tensorrt plug in the same way::

    backend = create_backend(tower, "auto", target)      # load (session / module on device)
    outputs = backend.run({"pixel_values": x})            # numpy in, numpy out (accuracy, verification)
    handle = backend.prepare(feeds)                       # inputs resident on the device, for timing
    seconds = backend.time_once(handle)                   # one synchronised, timed inference
    backend.memory()                                      # device memory figures, {} on CPU

Backends are registered by name -> "module:Class" and imported only when used, so the ONNX Runtime
path never imports torch.
"""

from __future__ import annotations

import importlib
import time
from typing import Any, ClassVar, Optional

import numpy as np

from ...errors import BackendUnavailableError, MissingBackendError, UserInputError
from ...model.tower import Tower

# name -> "module:Class" (relative to this package). The TensorRT issue replaces the tensorrt entries.
REGISTRY: dict[str, str] = {
    "torch": ".torch_eager:TorchEagerBackend",
    "onnxruntime": ".ort:OrtBackend",
    "onnxruntime-trt": ".ort:OrtTensorrtBackend",
    "openvino": ".openvino:OpenVINOBackend",
    "tensorrt": ".tensorrt:TensorRTBackend",
    "torch-tensorrt": ".tensorrt:TorchTensorRTBackend",
}


class Backend:
    """Base class. Subclasses set ``name`` and ``kinds`` and implement ``__init__`` (load) and the runs."""

    name: ClassVar[str] = "?"
    kinds: ClassVar[tuple[str, ...]] = ()        # tower kinds this backend can run
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(self, tower: Tower, device: str = "cpu", threads: Optional[int] = None):
        self.tower = tower
        self.device = device
        self.threads = threads

    # ---- availability ---------------------------------------------------------------------------------
    @classmethod
    def check_available(cls, device: str) -> None:
        """Raise MissingBackendError (package absent) or BackendUnavailableError (hardware absent)."""
        if device not in cls.devices:
            raise BackendUnavailableError(f"backend {cls.name!r} does not run on {device}",
                                          hint=f"it runs on: {', '.join(cls.devices)}")

    # ---- running ----------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs as float/int numpy arrays keyed by output name (host memory)."""
        raise NotImplementedError

    def prepare(self, feeds: dict[str, np.ndarray]) -> Any:
        """Inputs in the form :meth:`run_prepared` wants (on the device), built once per timed config."""
        return feeds

    def run_prepared(self, prepared: Any) -> Any:
        return self.run(prepared)

    def synchronize(self) -> None:
        """Wait until queued device work is done (no-op on CPU)."""

    def time_once(self, prepared: Any) -> float:
        """Seconds for one inference, synchronised (subclasses on GPUs use device events)."""
        t0 = time.perf_counter()
        self.run_prepared(prepared)
        self.synchronize()
        return time.perf_counter() - t0

    def memory(self) -> dict[str, int]:
        """Device memory figures in bytes (e.g. ``{"gpu_peak_bytes": ...}``); empty on CPU."""
        return {}

    def reset_memory_peak(self) -> None:
        """Reset the device's peak-memory counter, if it has one."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "threads": self.threads}

    def close(self) -> None:
        """Release sessions / device memory."""


def backend_class(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise UserInputError(f"unknown backend {name!r}", hint=f"choose one of auto, {', '.join(REGISTRY)}")
    mod_name, _, cls_name = REGISTRY[name].partition(":")
    module = importlib.import_module(mod_name, package=__package__) if mod_name.startswith(".") \
        else importlib.import_module(mod_name)
    return getattr(module, cls_name)


def choose_backend(tower: Tower, requested: str, target: Any) -> type[Backend]:
    """The backend class for ``tower`` on ``target`` (a TargetProfile): explicit, or the target's order."""
    if requested != "auto":
        cls = backend_class(requested)
        if tower.kind not in cls.kinds:
            raise UserInputError(f"backend {requested!r} cannot run tower {tower.name!r} of kind {tower.kind!r} "
                                 f"(it runs {', '.join(cls.kinds)})",
                                 hint="use --backend auto, or export the tower first (mmdk export)"
                                 if tower.kind == "torch" else "use --backend auto")
        cls.check_available(target.device)
        return cls
    reasons = []
    for name in target.backends:
        cls = backend_class(name)
        if tower.kind not in cls.kinds:
            continue
        try:
            cls.check_available(target.device)
        except (MissingBackendError, BackendUnavailableError) as exc:
            reasons.append(f"{name}: {exc.message}")
            continue
        return cls
    why = "; ".join(reasons) or f"none of {', '.join(target.backends)} runs {tower.kind!r} towers"
    raise BackendUnavailableError(f"no backend of target {target.name!r} can run tower {tower.name!r} "
                                  f"({tower.kind}): {why}",
                                  hint="install the missing runtime or pick another --target/--backend")


def create_backend(tower: Tower, requested: str, target: Any, threads: Optional[int] = None) -> Backend:
    cls = choose_backend(tower, requested, target)
    return cls(tower, device=target.device, threads=threads)
