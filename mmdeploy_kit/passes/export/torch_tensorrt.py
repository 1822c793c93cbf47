"""``export: {target: torch-tensorrt}``: each torch tower compiled with ``torch_tensorrt.compile(ir="dynamo")``
using one dynamic ``Input(min, opt, max)`` profile from its I/O spec, saved as an ExportedProgram
(``<tower>.pt2``, ``torch_tensorrt.save(output_format="exported_program")``) and verified against torch eager at
the profile's min / opt / max shapes. Needs an NVIDIA GPU, torch with CUDA and torch-tensorrt (exit 3
otherwise, before any work). The output directory loads back as a MODEL (``mmdk bench tt/ --target gpu``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field

from ..._lazy import require
from ...artifacts import Artifact, Manifest, describe_file, package_versions
from ...errors import BackendUnavailableError
from ...model.profiles import derive_profile, profile_sizes
from ...model.tower import LoadedModel
from ..base import Pass, PassConfig, RunContext


class TorchTensorRTExportConfig(PassConfig):
    target: Literal["torch-tensorrt"] = "torch-tensorrt"
    precision: Literal["fp16", "fp32"] = "fp16"
    towers: tuple[str, ...] = ()
    workspace_mb: int = Field(4096, ge=16)
    min_cosine: Optional[float] = Field(None, ge=-1, le=1)  # vs torch eager (None: runtime.verify.MIN_COSINE)
    seed: int = 0


class TorchTensorRTExportPass(Pass):
    name: ClassVar[str] = "export_torch_tensorrt"
    config_cls: ClassVar[type[PassConfig]] = TorchTensorRTExportConfig
    accepts: ClassVar[tuple[str, ...]] = ("torch",)
    produces: ClassVar[str] = "trt"
    forbidden_after: ClassVar[tuple[str, ...]] = ("prune", "distill", "quantize")

    @staticmethod
    def preflight(config: TorchTensorRTExportConfig) -> None:
        """Exit 3 before any work where torch-tensorrt or the GPU is missing."""
        from ...runtime import trt_env

        caps = trt_env.detect()
        if not (caps.torch_tensorrt_importable and caps.cuda_gpu):
            raise BackendUnavailableError("compiling with torch-tensorrt needs the torch_tensorrt package and an "
                                          "NVIDIA GPU", hint="use --target tensorrt --build defer to prepare a bundle "
                                                             "for the device instead")

    def run(self, model: LoadedModel, config: TorchTensorRTExportConfig, ctx: RunContext, workdir: Path) -> Manifest:
        from ...runtime.backends.tensorrt import TorchTensorRTBackend, compile_torch_tensorrt
        from ...runtime.backends.torch_eager import TorchEagerBackend
        from ...runtime.verify import min_cosine_floor, profile_batches, verify_runs
        from .onnx import source_info

        self.preflight(config)
        TorchTensorRTBackend.check_available("cuda")
        torch = require("torch")
        torch_trt = require("torch_tensorrt")
        floor = min_cosine_floor("torch_tensorrt", config.precision, config.min_cosine)
        artifacts = []
        for tower in model.select(config.towers):
            if tower.kind != "torch":
                raise BackendUnavailableError(f"tower {tower.name!r} is {tower.kind}; torch-tensorrt compiles torch towers",
                                              hint="export the torch checkpoint, or use --target tensorrt for ONNX")
            ctx.log(f"compiling tower {tower.name!r} with torch-tensorrt ({config.precision})")
            compiled = compile_torch_tensorrt(tower, config.precision, config.workspace_mb)
            ref = TorchEagerBackend(tower, device="cuda")

            def run_compiled(feeds: dict, tower: Any = tower, compiled: Any = compiled) -> dict:
                args = [torch.from_numpy(feeds[n]).to("cuda") for n in tower.spec.input_names]
                with torch.inference_mode():
                    outs = compiled(*args)
                return {n: o.detach().float().cpu().numpy() for n, o in zip(tower.spec.output_names, outs)}

            fig = {"reference": "torch", **verify_runs(
                ref.run, run_compiled, profile_batches(tower.spec, config.seed), floor,
                what=f"torch-tensorrt tower {tower.name!r}", against="torch", hint="try --precision fp32",
                nan_hint="try --precision fp32")}
            rel = f"{tower.name}.pt2"
            opt = tower.spec.dummy_inputs(profile_sizes(tower.spec, "opt"), seed=config.seed)
            example = [torch.from_numpy(opt[n]).to("cuda") for n in tower.spec.input_names]
            torch_trt.save(compiled, str(workdir / rel), output_format="exported_program", arg_inputs=example)
            artifacts.append(Artifact(kind="pt2", tower=tower.name, path=rel, precision=config.precision,
                                      io_spec=tower.spec.to_dict(), verification=fig,
                                      details={"runtime": "torch_tensorrt", "torch_tensorrt": torch_trt.__version__,
                                               "profile": derive_profile(tower.spec)},
                                      **describe_file(workdir, rel)))
        return Manifest(pass_name=self.name, config=config.model_dump(mode="json"), source=source_info(model),
                        versions=package_versions("torch", "torch_tensorrt", "tensorrt"), artifacts=artifacts)

