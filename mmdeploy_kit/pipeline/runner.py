"""The pipeline runner: ordered steps, content-addressed cache, resume, provenance (work in progress)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from ..artifacts import Manifest, atomic_output_dir


def run_single_step(step: str, config: Any, source: Any, out: str | Path, *, overwrite: bool = False,
                    progress: Optional[Callable[[str], None]] = None, load_options: Optional[dict[str, Any]] = None,
                    reference: Any = None, extras: Optional[dict[str, Any]] = None, quiet: bool = False) -> Manifest:
    from ..model.loaders import load
    from ..model.tower import LoadedModel
    from ..passes.base import RunContext
    from ..passes.registry import get_pass

    pass_cls = get_pass(step)
    model = source if isinstance(source, LoadedModel) else load(source, **(load_options or {}))
    if pass_cls.tower_field:
        model.select(getattr(config, pass_cls.tower_field, ()) or ())
    ctx = RunContext(seed=getattr(config, "seed", 0), progress=progress, reference=reference,
                     extras=dict(extras or {}), quiet=quiet)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        manifest = pass_cls().run(model, config, ctx, tmp)
        manifest.write(tmp)
    return manifest
