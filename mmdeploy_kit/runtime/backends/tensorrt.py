"""TensorRT engine and torch-tensorrt backends (NVIDIA GPUs, Jetson included).

``TensorRTBackend`` runs a serialized engine (``<tower>.plan``) through the TensorRT Python API:
``Runtime.deserialize_cuda_engine`` -> execution context -> per run ``set_input_shape`` +
``set_tensor_address`` on CUDA tensors that torch allocates -> ``execute_async_v3`` on a torch CUDA stream;
timed with CUDA events; GPU memory from torch's allocator plus the engine's own device memory.

Before deserializing, the engine's sidecar (``<tower>.plan.json``, written at build time) is checked against
this machine: an engine built by another TensorRT version or for another GPU architecture is refused with
a one-line error (unless it was built version-compatible / with a hardware-compatibility level).

``TorchTensorRTBackend`` runs torch towers compiled with ``torch_tensorrt.compile(ir="dynamo")`` (or a
tower exported by ``mmdk export --target torch-tensorrt``, already compiled).

tensorrt, torch and torch_tensorrt are imported only inside these classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from ..._lazy import require
from ...errors import BackendUnavailableError, SpecError, UserInputError
from ...model.tower import Tower
from .base import Backend
from .torch_eager import TorchEagerBackend

SIDECAR_SUFFIX = ".json"  # vision.plan -> vision.plan.json


def sidecar_path(plan: str | Path) -> Path:
    p = Path(plan)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def read_sidecar(plan: str | Path) -> dict[str, Any]:
    path = sidecar_path(plan)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"{plan} has no sidecar {path.name}; mmdk cannot tell which TensorRT version and GPU "
                             "built it", hint="rebuild it with `mmdk build-engines BUNDLE`") from None
    except ValueError as exc:
        raise UserInputError(f"{path} is not valid JSON: {exc}") from None


def _ver3(v: Optional[str]) -> tuple[str, ...]:
    return tuple(str(v or "").split(".")[:3])


def check_engine_compat(sidecar: dict[str, Any], runtime: dict[str, Any], plan: str | Path = "engine") -> None:
    """Refuse an engine built by another TensorRT version or for another GPU.

    ``runtime``: ``{"trt_version": "10.3.0.30", "gpu_name": ..., "compute_capability": "8.7"}`` of this machine.
    An engine built ``version_compatible`` runs on later TensorRT versions of the same major; one built with
    a ``hardware_compatibility_level`` other than ``none`` runs on any GPU of that level (Ampere or newer).
    """
    built = sidecar.get("tensorrt", {})
    gpu = sidecar.get("gpu", {})
    flags = sidecar.get("build", {})
    bv, rv = built.get("version"), runtime.get("trt_version")
    if bv and rv and _ver3(bv) != _ver3(rv):
        same_major_later = _ver3(bv)[:1] == _ver3(rv)[:1] and _vt(rv) >= _vt(bv)
        if not (flags.get("version_compatible") and same_major_later):
            raise BackendUnavailableError(
                f"{Path(plan).name} was built by TensorRT {bv}, but this machine has TensorRT {rv}; engines only run "
                "on the version that built them", hint="rebuild on this machine: mmdk build-engines BUNDLE")
    bcc, rcc = gpu.get("compute_capability"), runtime.get("compute_capability")
    if bcc and rcc and str(bcc) != str(rcc):
        level = flags.get("hardware_compatibility_level", "none")
        if level in (None, "none") or _vt(str(rcc)) < (8, 0):
            raise BackendUnavailableError(
                f"{Path(plan).name} was built for {gpu.get('name', 'another GPU')} (compute capability {bcc}), but this "
                f"GPU is {runtime.get('gpu_name', '?')} (compute capability {rcc})",
                hint="rebuild on this machine: mmdk build-engines BUNDLE (or build with a hardware-compatibility level)")


def _vt(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in str(v).split(".") if x.isdigit())


def runtime_facts(trt: Any, torch: Any) -> dict[str, Any]:
    """This machine's TensorRT version and GPU 0 (name, compute capability)."""
    major, minor = torch.cuda.get_device_capability(0)
    return {"trt_version": trt.__version__, "gpu_name": torch.cuda.get_device_name(0),
            "compute_capability": f"{major}.{minor}"}


def _require_cuda_torch() -> Any:
    torch = require("torch")
    if not torch.cuda.is_available():
        raise BackendUnavailableError("torch cannot see a CUDA device (torch.cuda.is_available() is False)",
                                      hint="the TensorRT backends use torch for CUDA memory: install a CUDA build "
                                           "of torch (JetPack: NVIDIA's torch wheel)")
    return torch


class TensorRTBackend(Backend):
    name: ClassVar[str] = "tensorrt"
    kinds: ClassVar[tuple[str, ...]] = ("trt_engine",)
    devices: ClassVar[tuple[str, ...]] = ("cuda",)

    @classmethod
    def check_available(cls, device: str) -> None:
        if device not in cls.devices:
            raise BackendUnavailableError(f"backend {cls.name!r} needs an NVIDIA GPU, but the target device is "
                                          f"{device}", hint="use --target gpu (or a jetson-* target) on such a machine")
        require("tensorrt")
        _require_cuda_torch()

    def __init__(self, tower: Tower, device: str = "cuda", threads: Optional[int] = None):
        super().__init__(tower, device, threads)
        if tower.path is None:
            raise BackendUnavailableError(f"tower {tower.name!r} has no engine file to run")
        self.trt = trt = require("tensorrt")
        self.torch = torch = _require_cuda_torch()
        self.sidecar = read_sidecar(tower.path)
        check_engine_compat(self.sidecar, runtime_facts(trt, torch), tower.path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if self.sidecar.get("build", {}).get("version_compatible"):
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(Path(tower.path).read_bytes())
        if self.engine is None:
            raise BackendUnavailableError(f"TensorRT could not deserialize {tower.path} (built by another version or "
                                          "for another GPU?)", hint="rebuild it here: mmdk build-engines BUNDLE")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.np_types = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.stream = torch.cuda.Stream()

    # ---- running -----------------------------------------------------------------------------------------
    def prepare(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        """Inputs copied to the GPU and output buffers sized for these shapes."""
        torch = self.torch
        inputs = {}
        for n in self.input_names:
            if n not in feeds:
                raise SpecError(f"engine {self.tower.path} needs input {n!r}, which was not provided")
            arr = np.ascontiguousarray(feeds[n].astype(self.np_types[n], copy=False))
            inputs[n] = torch.from_numpy(arr).to("cuda")
            if not self.context.set_input_shape(n, tuple(arr.shape)):
                raise SpecError(f"input {n!r} shape {tuple(arr.shape)} is outside the engine's optimization profile "
                                f"{self._profile(n)}", hint="bench within the I/O spec dims the engine was built for")
        outputs = {}
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            outputs[n] = torch.empty(shape, dtype=_torch_dtype(torch, self.np_types[n]), device="cuda")
        self.stream.wait_stream(torch.cuda.current_stream())  # the copies above ran on the default stream
        return {"inputs": inputs, "outputs": outputs}

    def _profile(self, name: str) -> list[list[int]]:
        return [list(s) for s in self.engine.get_tensor_profile_shape(name, 0)]

    def run_prepared(self, prepared: dict[str, Any]) -> dict[str, Any]:
        for n, t in prepared["inputs"].items():
            self.context.set_input_shape(n, tuple(t.shape))
            self.context.set_tensor_address(n, t.data_ptr())
        for n, t in prepared["outputs"].items():
            self.context.set_tensor_address(n, t.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendUnavailableError(f"TensorRT failed to run {self.tower.path} (execute_async_v3 returned False)")
        return prepared["outputs"]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.run_prepared(self.prepare(feeds))
        self.synchronize()
        return {n: t.cpu().numpy() for n, t in outs.items()}

    def synchronize(self) -> None:
        self.stream.synchronize()

    def time_once(self, prepared: Any) -> float:
        start = self.torch.cuda.Event(enable_timing=True)
        end = self.torch.cuda.Event(enable_timing=True)
        start.record(self.stream)
        self.run_prepared(prepared)
        end.record(self.stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def memory(self) -> dict[str, int]:
        size = getattr(self.engine, "device_memory_size_v2", None)
        if size is None:
            size = getattr(self.engine, "device_memory_size", 0)
        return {"gpu_peak_bytes": int(self.torch.cuda.max_memory_allocated()) + int(size),
                "gpu_allocated_bytes": int(self.torch.cuda.memory_allocated()),
                "trt_engine_device_memory_bytes": int(size)}

    def reset_memory_peak(self) -> None:
        self.torch.cuda.reset_peak_memory_stats()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tensorrt": self.trt.__version__,
                "built_for": self.sidecar.get("gpu", {}).get("name"), "precision": self.sidecar.get("precision")}

    def close(self) -> None:
        self.context = None
        self.engine = None


def _torch_dtype(torch: Any, dt: np.dtype) -> Any:
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16, np.dtype(np.int64): torch.int64,
            np.dtype(np.int32): torch.int32, np.dtype(np.int8): torch.int8, np.dtype(np.uint8): torch.uint8,
            np.dtype(np.bool_): torch.bool}[np.dtype(dt)]


# ---- torch-tensorrt --------------------------------------------------------------------------------------------
def torch_trt_inputs(torch_trt: Any, torch: Any, spec: Any, profile: dict[str, dict[str, list[int]]]) -> list[Any]:
    """``torch_tensorrt.Input(min_shape, opt_shape, max_shape, dtype)`` per spec input, in spec order."""
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64,
              "int32": torch.int32, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
    return [torch_trt.Input(min_shape=profile[i.name]["min"], opt_shape=profile[i.name]["opt"],
                            max_shape=profile[i.name]["max"], dtype=dtypes[i.dtype]) for i in spec.inputs]


def compile_torch_tensorrt(tower: Tower, precision: str = "fp32", workspace_mb: int = 4096) -> Any:
    """``torch_tensorrt.compile(ir="dynamo")`` of a torch tower with one dynamic profile from its I/O spec."""

    torch = _require_cuda_torch()
    torch_trt = require("torch_tensorrt")
    from ...model.profiles import derive_profile

    inputs = torch_trt_inputs(torch_trt, torch, tower.spec, derive_profile(tower.spec))
    precisions = {"fp32": {torch.float32}, "fp16": {torch.float16, torch.float32},
                  "int8": {torch.int8, torch.float16, torch.float32}}[precision]
    module = tower.module.eval().to("cuda")
    return torch_trt.compile(module, ir="dynamo", inputs=inputs, enabled_precisions=precisions,
                             workspace_size=workspace_mb << 20)


class TorchTensorRTBackend(TorchEagerBackend):
    """A torch tower compiled with torch-tensorrt (compiled here, or loaded already compiled)."""

    name: ClassVar[str] = "torch-tensorrt"
    kinds: ClassVar[tuple[str, ...]] = ("torch",)
    devices: ClassVar[tuple[str, ...]] = ("cuda",)

    @classmethod
    def check_available(cls, device: str) -> None:
        if device not in cls.devices:
            raise BackendUnavailableError(f"backend {cls.name!r} needs an NVIDIA GPU, but the target device is "
                                          f"{device}", hint="use --target gpu on such a machine")
        require("torch_tensorrt")
        _require_cuda_torch()

    def __init__(self, tower: Tower, device: str = "cuda", threads: Optional[int] = None):
        super().__init__(tower, device, threads)
        if tower.details.get("runtime") != "torch_tensorrt":
            self.module = compile_torch_tensorrt(tower, tower.precision if tower.precision in ("fp16", "int8")
                                                 else "fp32")
