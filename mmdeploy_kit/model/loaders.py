"""``load(MODEL)``: one entry point for every checkpoint format mmdk accepts.

- HF directory (config.json + safetensors/bin)          -> hf.load_hf_directory
- open_clip directory (open_clip_config.json + weights)  -> open_clip.load_open_clip_directory (as HF CLIP)
- ``file.py:factory`` / ``pkg.module:factory``          -> factory + ``--weights`` + ``--io``
- TorchScript (``.ts``, or a scripted ``.pt``)          -> torch.jit.load + ``--io``
- ``torch.export`` program (``.pt2``)                   -> torch.export.load + ``--io``
- ``.onnx`` file                                        -> I/O spec read from the graph
- an mmdk output directory (``mmdk_manifest.json``)     -> its per-tower artifacts
- a whole pickled module (``.pt``)                      -> only with ``trust_remote_code=True``
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any, Optional

from .._lazy import require
from .._quiet import quiet
from ..artifacts import MANIFEST_NAME, Manifest
from ..errors import CheckpointError, MissingBackendError, SpecError, UserInputError
from .iospec import IOSpec, SpecFile
from .tower import LoadedModel, Tower
from .module_tools import _import_target, _towers_from_spec
from .weights import read_state_dict  # noqa: F401 - also part of this module's interface (passes/distill.py)

_FACTORY_RE = re.compile(r"^(?P<target>.+?):(?P<attr>[A-Za-z_][\w.]*)$")


def load(source: str | Path, weights: Optional[str | Path] = None, io: Optional[str | Path | dict] = None,
         trust_remote_code: bool = False) -> LoadedModel:
    src = str(source)
    path = Path(src)
    if path.is_dir():
        if (path / MANIFEST_NAME).exists():
            return load_mmdk_dir(path)
        if (path / "mmdk_arch.json").exists():  # a pruned model: source + architecture record + safetensors
            from .arch_record import load_pruned_dir

            return load_pruned_dir(path)
        if (path / "config.json").exists():
            from .hf import load_hf_directory

            return load_hf_directory(path, trust_remote_code=trust_remote_code)
        from .open_clip import is_open_clip_dir, load_open_clip_directory, read_open_clip_config, unsupported

        if is_open_clip_dir(path):  # open_clip_config.json + open_clip_model.safetensors (the Hub format)
            reason = unsupported(read_open_clip_config(path)["model_cfg"])
            if reason and importlib.util.find_spec("open_clip") is not None:  # the extra builds what mmdk cannot map
                from .open_clip_native import load_with_open_clip

                return load_with_open_clip(path, reason)
            return load_open_clip_directory(path)
        raise CheckpointError(f"{path} is a directory without config.json, open_clip_config.json or {MANIFEST_NAME}",
                              hint="point at a Hugging Face or open_clip model directory or an mmdk output directory")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            return load_onnx_file(path, io=io)
        if suffix in (".ts", ".pt", ".pth", ".jit", ".torchscript"):
            return _load_torch_file(path, io, trust_remote_code)
        if suffix == ".pt2":
            return _load_exported_program(path, io)
        if suffix in (".safetensors", ".bin"):
            raise CheckpointError(f"{path} holds weights only; mmdk needs the model code too",
                                  hint="pass MODEL as path/to/model.py:factory with --weights " + str(path))
        raise CheckpointError(f"{path}: unknown checkpoint kind {suffix!r}",
                              hint="use an HF directory, file.py:factory, .ts/.pt (TorchScript), .pt2 or .onnx")
    m = _FACTORY_RE.match(src)
    if m and not src.startswith(("http:", "https:")):
        return load_factory(m["target"], m["attr"], weights, io)
    raise CheckpointError(f"{src} does not exist",
                          hint="give a path to a checkpoint, or a factory as path/to/file.py:function")


# ---- factory modules -------------------------------------------------------------------------------
def load_factory(target: str, attr: str, weights: Optional[str | Path], io: Any) -> LoadedModel:
    torch = require("torch")
    mod = _import_target(target)
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n)))
            raise CheckpointError(f"{target} has no factory named {attr!r}",
                                  hint=f"callables defined there: {', '.join(public[:12]) or '(none)'}")
        obj = getattr(obj, part)
    try:
        root = obj() if not isinstance(obj, torch.nn.Module) else obj
    except TypeError as exc:
        raise CheckpointError(f"factory {target}:{attr} could not be called without arguments: {exc}",
                              hint="the factory must build the model with no arguments") from None
    if not isinstance(root, torch.nn.Module):
        raise CheckpointError(f"factory {target}:{attr} returned {type(root).__name__}, not a torch.nn.Module")
    files = []
    if weights is not None:
        files.append(Path(weights))
        load_weights_into(root, Path(weights))
    root.eval()
    towers = _towers_from_spec(root, _spec_file(io, f"{target}:{attr}"), f"{target}:{attr}")
    return LoadedModel(source=f"{target}:{attr}", format="factory", architecture=type(root).__name__,
                       towers=towers, root=root, files=files + ([Path(target)] if Path(target).is_file() else []))


def load_weights_into(root: Any, path: Path) -> None:
    state = read_state_dict(path)
    result = root.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        what = []
        if missing:
            what.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            what.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        raise CheckpointError(f"weights {path} do not match the model: {', '.join(what)} keys",
                              hint="check the factory builds the same architecture the weights were saved from")


def _spec_file(io: Any, where: str) -> SpecFile:
    if io is None:
        raise SpecError(f"{where} needs an I/O spec", hint="pass --io SPEC.yaml (see 'The I/O spec' in README.md)")
    if isinstance(io, SpecFile):
        return io
    if isinstance(io, IOSpec):
        return SpecFile(towers={"model": io})
    if isinstance(io, dict):
        return SpecFile.parse(io)
    return SpecFile.from_yaml(io)


# ---- TorchScript / pickled modules / torch.export ----------------------------------------------------
def _load_torch_file(path: Path, io: Any, trust_remote_code: bool) -> LoadedModel:
    torch = require("torch")
    try:
        root = torch.jit.load(str(path), map_location="cpu")
        fmt = "torchscript"
    except RuntimeError as exc:
        if "zip archive" not in str(exc) and "constants.pkl" not in str(exc) and "torch.load" not in str(exc):
            raise CheckpointError(f"{path} is not a readable TorchScript file ({str(exc).splitlines()[0][:120]})",
                                  hint="re-save it with torch.jit.save, or pass file.py:factory --weights FILE") from None
        root, fmt = _load_pickled_module(path, trust_remote_code), "pickle"
    root.eval()
    towers = _towers_from_spec(root, _spec_file(io, str(path)), str(path))
    return LoadedModel(source=str(path), format=fmt, architecture=getattr(root, "original_name", type(root).__name__),
                       towers=towers, root=root, files=[path])


def _load_pickled_module(path: Path, trust_remote_code: bool) -> Any:
    torch = require("torch")
    if not trust_remote_code:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - any failure here means "not a plain state dict"
            raise CheckpointError(f"{path} is a pickled Python object; loading it would execute its code",
                                  hint="re-run with --trust-remote-code if you trust it, or save a state_dict") from None
        raise CheckpointError(f"{path} is a state dict ({len(obj) if hasattr(obj, '__len__') else '?'} entries), not a model",
                              hint=f"pass MODEL as path/to/model.py:factory --weights {path}")
    obj = torch.load(str(path), map_location="cpu", weights_only=False)
    if not isinstance(obj, torch.nn.Module):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module",
                              hint=f"pass MODEL as path/to/model.py:factory --weights {path}")
    return obj


def _register_quantized_ops() -> None:
    """Programs quantized with pt2e (INC, torchao) call ``torch.ops.torchao.*`` / ``quantized_decomposed.*``
    ops, which exist only once their libraries are imported; ``torch.export.load`` fails without them."""
    for name in ("torch.ao.quantization.fx._decomposed", "torchao.quantization.pt2e"):
        if importlib.util.find_spec(name.split(".")[0]) is None:
            continue
        try:
            with quiet("torchao", ""):  # torchao logs about CUDA kernels it cannot load on CPU
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - optional; a missing op then gives the clear error below
            pass



def _load_exported_program(path: Path, io: Any) -> LoadedModel:
    torch = require("torch")
    _register_quantized_ops()
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - torch.export.load raises many unrelated types
        if "torchao" in str(exc):
            raise MissingBackendError(f"{path} uses torchao's quantized ops but torchao is not installed",
                                      hint="pip install 'mmdeploy-kit[inc]' (or: pip install torchao)") from None
        raise CheckpointError(f"{path} is not a readable torch.export program ({type(exc).__name__})",
                              hint="re-save it with torch.export.save") from None
    spec_file = _spec_file(io, str(path))
    if len(spec_file.towers) != 1 or next(iter(spec_file.towers.values())).module:
        raise SpecError(f"{path}: a .pt2 program is a single tower; its I/O spec cannot declare submodules")
    from .torch_tower import TowerModule

    name, spec = next(iter(spec_file.towers.items()))
    module = ep.module()
    example = getattr(ep, "example_inputs", None) or ((), {})
    positional = not example[1]  # exported with positional args -> call positionally, in spec order
    if positional and example[0] and len(example[0]) != len(spec.input_names):
        raise SpecError(f"{path} takes {len(example[0])} positional inputs but the I/O spec lists "
                        f"{len(spec.input_names)}: {spec.input_names}", hint="list every input, in forward order")

    def call(**kwargs: Any) -> Any:
        return module(*[kwargs[n] for n in spec.input_names]) if positional else module(**kwargs)

    tower = Tower(name, spec, "torch", module=TowerModule(module, spec, call, "ExportedProgram"),
                  details={"exported_program": ep})
    return LoadedModel(source=str(path), format="pt2", architecture="ExportedProgram", towers={name: tower},
                       root=module, files=[path])


# ---- ONNX files and mmdk output directories -------------------------------------------------------------
def load_onnx_file(path: Path, spec: Optional[IOSpec] = None, tower: str | None = None,
                   precision: str | None = None, io: Any = None) -> LoadedModel:
    """One ONNX file. Its I/O spec comes from ``io`` (``--io``: checked against the graph; several towers
    split the graph by their outputs), else from the graph itself (dims inferred from the first Conv, a
    position-embedding table or config files beside it); a combined dual encoder (outputs ``image_embeds``
    and ``text_embeds`` on disjoint inputs, e.g. Optimum's CLIP export) becomes ``vision`` + ``text`` towers."""
    from .onnx_io import (check_spec_against_graph, dual_encoder_split, extract_tower, load_onnx_model,
                          onnx_precision, spec_from_onnx)

    model = load_onnx_model(path)
    files = [path] + ([path.with_name(path.name + ".data")] if path.with_name(path.name + ".data").exists() else [])
    precision = precision or onnx_precision(path)
    specs: dict[str, IOSpec] = {}
    if spec is None and io is not None:
        specs = dict(_spec_file(io, str(path)).towers)
        if list(specs) == ["model"]:
            specs = {tower or path.stem: specs["model"]}
        for name, s in specs.items():
            check_spec_against_graph(path, model, s, name)
    elif spec is None and tower is None:
        split = dual_encoder_split(model)
        if split is not None:
            specs = {name: None for name in split}  # type: ignore[misc]  # read from each extracted graph
    g = model.graph
    whole = ({vi.name for vi in g.input} - {i.name for i in g.initializer}, {o.name for o in g.output})
    if len(specs) == 1 and next(iter(specs.values())) is not None and \
            (set(next(iter(specs.values())).input_names), set(next(iter(specs.values())).output_names)) == whole:
        pass  # the spec covers the whole graph: no cut needed
    elif len(specs) == 1:
        specs = {**specs, "": None}  # type: ignore[dict-item]  # forces the cut below; removed there
    if len(specs) <= 1:
        name = tower or (next(iter(specs)) if specs else path.stem)
        spec = spec or specs.get(name) or spec_from_onnx(path, model)
        t = Tower(name, spec, "onnx", path=path, precision=precision)
        return LoadedModel(source=str(path), format="onnx", architecture="onnx", towers={name: t}, files=files)
    from .onnx_io import inputs_reaching

    towers = {}
    for name, s in specs.items():
        if name == "":
            continue
        outs = s.output_names if s is not None else dual_encoder_split(model)[name][1]  # type: ignore[index]
        ins = s.input_names if s is not None else inputs_reaching(model.graph, outs)
        sub = extract_tower(path, model, ins, outs, name)
        towers[name] = Tower(name, s or spec_from_onnx(path, load_onnx_model(sub)), "onnx", path=sub,
                             precision=precision, details={"split_from": str(path)})
    return LoadedModel(source=str(path), format="onnx", architecture="onnx (split by outputs)", towers=towers,
                       files=files)


def load_mmdk_dir(directory: Path) -> LoadedModel:
    manifest = Manifest.read(directory)
    towers: dict[str, Tower] = {}
    files: list[Path] = []
    for art in manifest.artifacts:
        p = directory / art.path
        if not p.exists():
            raise CheckpointError(f"{directory}: manifest lists {art.path} but it is missing",
                                  hint="re-run the mmdk command that produced this directory")
        spec = IOSpec.model_validate(art.io_spec) if art.io_spec else None
        if art.kind == "onnx":
            sub = load_onnx_file(p, spec=spec, tower=art.tower, precision=art.precision)
            towers[art.tower] = sub.towers[art.tower]
            files.extend(sub.files)
        elif art.kind in ("hf", "torch"):
            inner = load(p)
            towers[art.tower] = inner.tower(art.tower) if art.tower in inner.towers else inner.select(None)[0]
            files.extend(inner.files)
        elif art.kind in ("pt2", "ts") and spec is not None:  # e.g. INC's quantized towers: <tower>.pt2
            loader = _load_exported_program if art.kind == "pt2" else (
                lambda f, s: _load_torch_file(f, s, trust_remote_code=False))
            if art.details.get("runtime") == "torch_tensorrt":  # its TensorRT ops register on import
                require("torch_tensorrt")
            inner = loader(p, SpecFile(towers={art.tower: spec}))
            towers[art.tower] = inner.tower(art.tower)
            if art.details.get("runtime"):
                towers[art.tower].details["runtime"] = art.details["runtime"]
            towers[art.tower].precision = art.precision or "fp32"
            towers[art.tower].path = p
            files.extend(inner.files)
        elif spec is not None:
            towers[art.tower] = Tower(art.tower, spec, art.kind, path=p, precision=art.precision)
            files.append(p)
            if art.kind == "openvino" and p.with_suffix(".bin").exists():  # IR weights live beside the .xml
                files.append(p.with_suffix(".bin"))
        else:
            raise UserInputError(f"{directory}: artifact {art.path} of kind {art.kind!r} has no I/O spec")
    if not towers:
        raise CheckpointError(f"{directory}/{MANIFEST_NAME} lists no artifacts")
    return LoadedModel(source=str(directory), format="mmdk", architecture=manifest.source.get("architecture", "?"),
                       towers=towers, files=files, details={"manifest": manifest})
