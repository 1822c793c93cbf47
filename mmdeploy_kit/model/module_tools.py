"""Building towers from user modules: import a factory target (``file.py`` or ``package.module``) and wrap
a root module's submodules as towers from an I/O spec. Shared by the loaders and the architecture-record
rebuild (pruned models), so neither imports the other."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .._lazy import require
from ..errors import CheckpointError, SpecError
from .iospec import SpecFile
from .tower import Tower


def _import_target(target: str) -> Any:
    p = Path(target)
    if target.endswith(".py") or p.is_file():
        if not p.is_file():
            raise CheckpointError(f"factory file {p} does not exist", hint="check the path before the ':'")
        name = f"mmdk_user_{abs(hash(str(p.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, p)
        if spec is None or spec.loader is None:
            raise CheckpointError(f"cannot import {p} as a Python module")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except SyntaxError as exc:
            raise CheckpointError(f"{p} has a syntax error at line {exc.lineno}: {exc.msg}") from None
        return mod
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise CheckpointError(f"cannot import module {target!r} ({exc.name} not found)",
                              hint="use path/to/file.py:factory or make the package importable") from None


def _towers_from_spec(root: Any, spec_file: SpecFile, where: str) -> dict[str, Tower]:
    from .torch_tower import TowerModule, check_forward_signature

    towers: dict[str, Tower] = {}
    for name, spec in spec_file.towers.items():
        sub = root
        if spec.module:
            try:
                sub = root.get_submodule(spec.module)
            except AttributeError:
                children = [n for n, _ in root.named_children()]
                raise SpecError(f"tower {name!r}: {where} has no submodule {spec.module!r}",
                                hint=f"its children are: {', '.join(children) or '(none)'}") from None
        fwd = getattr(sub, "forward", sub)
        if not _is_scripted(sub):
            check_forward_signature(fwd, spec, f"{type(sub).__name__}")
        towers[name] = Tower(name, spec, "torch", module=TowerModule(sub, spec, None, type(sub).__name__).eval())
    return towers


def _is_scripted(module: Any) -> bool:
    torch = require("torch")
    return isinstance(module, (torch.jit.ScriptModule, torch.jit.RecursiveScriptModule))
