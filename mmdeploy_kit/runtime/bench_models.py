"""Loading the models a benchmark compares, shared by the harness and its worker processes (``workers.py``)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..artifacts import MANIFEST_NAME
from ..errors import UserInputError
from ..model.tower import LoadedModel
from . import env
from .backends.base import Backend, backend_class

_LABEL_RE = re.compile(r"^(?P<label>[A-Za-z0-9_.+-]+)=(?P<path>.+)$")


@dataclass
class BenchModel:
    label: str
    role: str
    model: LoadedModel
    load_seconds: float
    rss_delta: Optional[int]
    towers: list[str] = field(default_factory=list)          # the towers benchmarked for this model
    declared: dict[str, Any] = field(default_factory=dict)   # tower -> I/O spec as loaded (before widening)
    backends: dict[str, Backend] = field(default_factory=dict)
    session_seconds: dict[str, float] = field(default_factory=dict)
    spec: Any = None                                         # what was loaded (a path, or a LoadedModel)


def split_label(spec: Any) -> tuple[Optional[str], Any]:
    """``"int8=out/q"`` -> ("int8", "out/q"); ``(label, model)`` -> as is; a path or a LoadedModel -> (None, it)."""
    if isinstance(spec, tuple) and len(spec) == 2:
        return spec
    if isinstance(spec, (str, Path)):
        m = _LABEL_RE.match(str(spec))
        if m and not Path(str(spec)).exists():
            return m["label"], m["path"]
    return None, spec


def spec_path(spec: Any) -> Optional[Path]:
    """The file or folder a bench source names (``LABEL=PATH``, ``file.py:factory``), or None (a LoadedModel,
    a name that is no path)."""
    _label, src = split_label(spec)
    if not isinstance(src, (str, Path)):
        return None
    p = Path(str(src))
    if not p.exists() and ":" in p.name:
        p = p.with_name(p.name.rsplit(":", 1)[0])
    return p if p.exists() else None


def default_label(src: Any) -> str:
    if isinstance(src, LoadedModel):
        src = src.source
    p = Path(str(src))
    if ":" in p.name and not p.exists():  # path/to/file.py:factory
        return p.name.rsplit(":", 1)[1]
    name = p.stem if p.suffix.lower() in (".onnx", ".ts", ".pt", ".pt2", ".engine", ".plan") else p.name
    return name or str(src)


def unique_label(label: str, taken: set[str]) -> str:
    out, k = label, 2
    while out in taken:
        out, k = f"{label}#{k}", k + 1
    taken.add(out)
    return out


def warm_imports(spec: Any) -> None:
    """Import the runtime a source needs before its load is timed (import time is not load time)."""
    import importlib

    if isinstance(spec, LoadedModel):
        return
    p = Path(str(spec))
    kinds: set[str] = set()
    if p.suffix.lower() == ".onnx":
        kinds.add("onnx")
    elif p.is_dir() and (p / MANIFEST_NAME).is_file():
        from ..artifacts import Manifest

        try:
            kinds = {"onnx" if a.kind == "onnx" else "torch" for a in Manifest.read(p).artifacts}
        except UserInputError:
            return
    else:
        kinds.add("torch")
    mods = {"onnx": ("onnx", "onnxruntime"), "torch": ("torch", "transformers")}
    for kind in kinds:
        for mod in mods[kind]:
            try:
                importlib.import_module(mod)
            except ImportError:  # the loader reports a missing runtime with its own hint
                pass


def load_source(spec: Any, load_kwargs: dict[str, Any]) -> tuple[LoadedModel, float, Optional[int]]:
    from ..model.loaders import load

    warm_imports(spec)
    rss0 = env.rss_bytes()
    t0 = time.perf_counter()
    model = spec if isinstance(spec, LoadedModel) else load(spec, **load_kwargs)
    secs = time.perf_counter() - t0
    rss1 = env.rss_bytes()
    return model, secs, (rss1 - rss0) if rss0 is not None and rss1 is not None else None


def match_towers(ref: LoadedModel, ref_label: str, other: LoadedModel, label: str, towers: Sequence[str]) -> list[str]:
    names = [t for t in other.towers if not towers or t in towers]
    missing = [t for t in names if t not in ref.towers]
    if missing:
        raise UserInputError(f"reference {ref_label!r} has no tower {missing[0]!r} (its towers: "
                             f"{', '.join(ref.towers)}), but {label!r} has towers {', '.join(other.towers)}",
                             hint="benchmark against the checkpoint the artifact was made from, or pick --tower")
    for t in names:
        a, r = set(other.towers[t].spec.input_names), set(ref.towers[t].spec.input_names)
        if a != r:
            raise UserInputError(f"tower {t!r}: {label!r} takes inputs {sorted(a)} but reference {ref_label!r} "
                                 f"takes {sorted(r)}", hint="the reference must have the same towers and inputs")
    return names



def widen_guessed_dims(model: LoadedModel) -> dict[str, Any]:
    """A bare ``.onnx`` file declares no dim ranges (the loader guesses [1, 8]): trust explicit sizes there
    (a shape the graph cannot take fails at its first run). Returns the original specs, for defaults."""
    original = {name: t.spec for name, t in model.towers.items()}
    if model.format == "onnx":
        for t in model.towers.values():
            t.spec = t.spec.model_copy(update={"dims": {d: (lo, max(hi, 1 << 31)) for d, (lo, hi) in t.spec.dims.items()}})
    return original



def backend_request(role: str, kind: str, backend: str) -> str:
    """The backend to ask for: ``--backend`` picks the artifacts' runtime; a reference it cannot run (torch vs
    onnxruntime) uses auto."""
    if role == "artifact" or backend == "auto" or kind in backend_class(backend).kinds:
        return backend
    return "auto"
