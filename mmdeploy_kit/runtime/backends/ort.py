"""ONNX Runtime backend: CPU EP on CPU targets, CUDA EP (or TensorRT EP) on NVIDIA targets. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from ..._lazy import require
from ...errors import BackendUnavailableError, SpecError
from ...model.tower import Tower
from .base import Backend

_NP_FROM_ORT = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
                "tensor(bool)": np.bool_, "tensor(double)": np.float64}


def ort_session(path: str | Path, providers: Optional[list[Any]] = None, threads: Optional[int] = None,
                optimization: str = "all", spinning: bool = True) -> Any:
    """An ``InferenceSession`` with quiet logging, ``threads`` intra-op threads and the given providers.

    ``spinning=False`` stops idle worker threads from busy-waiting after a run, so ORT does not steal
    cores from whatever runs next (interleaved benchmarks, other processes).
    """
    ort = require("onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 4  # failures surface as one-line MmdkErrors; keep ORT quiet
    if threads:
        so.intra_op_num_threads = threads
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so.graph_optimization_level = levels[optimization]
    return ort.InferenceSession(str(path), sess_options=so, providers=providers or ["CPUExecutionProvider"])


class OrtBackend(Backend):
    name: ClassVar[str] = "onnxruntime"
    kinds: ClassVar[tuple[str, ...]] = ("onnx",)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    gpu_provider: ClassVar[str] = "CUDAExecutionProvider"
    spinning: ClassVar[bool] = False

    def __init__(self, tower: Tower, device: str = "cpu", threads: Optional[int] = None):
        super().__init__(tower, device, threads)
        if tower.path is None:
            raise BackendUnavailableError(f"tower {tower.name!r} has no ONNX file to run")
        self.providers = [self.gpu_provider, "CUDAExecutionProvider", "CPUExecutionProvider"] \
            if device == "cuda" else ["CPUExecutionProvider"]
        self.providers = list(dict.fromkeys(self.providers))
        self.session = ort_session(tower.path, providers=self.provider_specs(), threads=threads, spinning=self.spinning)
        active = self.session.get_providers()
        if device == "cuda" and (not active or active[0] != self.providers[0]):
            raise BackendUnavailableError(f"ONNX Runtime did not enable {self.providers[0]} for {tower.path} "
                                          f"(active: {', '.join(active)})",
                                          hint="install onnxruntime-gpu matching your CUDA, or use --target cpu")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_types = {i.name: _NP_FROM_ORT.get(i.type) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.active_providers = list(active)
        self._ort = require("onnxruntime")

    def provider_specs(self) -> list[Any]:
        """``providers`` as given to the session (a provider may come with its options)."""
        return list(self.providers)

    @classmethod
    def check_available(cls, device: str) -> None:
        super().check_available(device)
        ort = require("onnxruntime")
        if device == "cuda" and cls.gpu_provider not in ort.get_available_providers():
            raise BackendUnavailableError(f"this onnxruntime build has no {cls.gpu_provider} "
                                          f"(it has {', '.join(ort.get_available_providers())})",
                                          hint="pip install onnxruntime-gpu (on a Jetson: the JetPack wheel)")

    def _feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name in self.input_names:
            if name not in feeds:
                raise SpecError(f"{self.tower.path} needs input {name!r}, which was not provided")
            arr = feeds[name]
            want = self.input_types.get(name)
            out[name] = np.ascontiguousarray(arr if want is None or arr.dtype == want else arr.astype(want))
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(None, self._feeds(feeds))
        return {n: np.asarray(o) for n, o in zip(self.output_names, outs)}

    def prepare(self, feeds: dict[str, np.ndarray]) -> Any:
        feeds = self._feeds(feeds)
        if self.device != "cuda":
            return feeds
        binding = self.session.io_binding()  # inputs resident on the GPU; outputs stay there too
        for name, arr in feeds.items():
            binding.bind_ortvalue_input(name, self._ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        return binding

    def run_prepared(self, prepared: Any) -> Any:
        if self.device == "cuda":
            self.session.run_with_iobinding(prepared)  # synchronises the stream at the end of the run
            return None
        return self.session.run(None, prepared)

    def memory(self) -> dict[str, int]:
        if self.device != "cuda":
            return {}
        from ..env import gpu_memory_used_bytes

        used = gpu_memory_used_bytes()
        return {} if used is None else {"gpu_device_used_bytes": used}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "providers": self.active_providers}

    def close(self) -> None:
        self.session = None


class OrtTensorrtBackend(OrtBackend):
    """ONNX Runtime with the TensorRT execution provider (engines built on first run, cached by ORT)."""

    name: ClassVar[str] = "onnxruntime-trt"
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    gpu_provider: ClassVar[str] = "TensorrtExecutionProvider"

    def provider_specs(self) -> list[Any]:
        """The TensorRT EP with the tower's optimization profile (the one ``mmdk export --target tensorrt`` uses:
        min/max from the I/O spec dims, opt from its ``opt`` or the default rule) and an engine cache."""
        from ...artifacts import default_cache_dir
        from ...model.profiles import derive_profile

        if self.device != "cuda":
            return list(self.providers)
        prof = derive_profile(self.tower.spec)
        shapes = {k: ",".join(f"{n}:{'x'.join(str(d) for d in p[k])}" for n, p in prof.items())
                  for k in ("min", "opt", "max")}
        opts = {"trt_profile_min_shapes": shapes["min"], "trt_profile_opt_shapes": shapes["opt"],
                "trt_profile_max_shapes": shapes["max"], "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(default_cache_dir() / "ort_trt_engines"),
                "trt_fp16_enable": "True" if self.tower.precision == "fp16" else "False"}
        return [(self.providers[0], opts), *self.providers[1:]]
