"""The one shape every pass has: a frozen, typed config + input model -> output artifacts in a work dir.

A pass never mutates its input. Runtime objects (data loaders, teacher models, devices, progress
callbacks) live in ``RunContext``, never in the config, so a config hashes and serializes cleanly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

from pydantic import BaseModel, ConfigDict

from ..artifacts import Manifest


class PassConfig(BaseModel):
    """Base of every ``XxxConfig``: unknown keys are errors, instances are immutable and hashable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(f"{type(self).__name__}:{self.canonical_json()}".encode()).hexdigest()[:16]


@dataclass
class RunContext:
    """Things a pass needs at run time that do not belong in a config."""

    quiet: bool = False
    seed: int = 0
    calibration: Any = None          # calibration data source (manifest rows / arrays)
    reference: Any = None            # a reference model (teacher, FP32 source)
    progress: Optional[Callable[[str], None]] = None
    extras: dict[str, Any] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        if self.progress is not None and not self.quiet:
            self.progress(msg)


class Pass:
    """Subclass with ``name``, ``config_cls`` and ``run``. Registered passes are listed by ``PASSES``."""

    name: ClassVar[str]
    config_cls: ClassVar[type[PassConfig]]

    def run(self, model: Any, config: PassConfig, ctx: RunContext, workdir: Path) -> Manifest:
        """Write this pass's artifacts into ``workdir`` and return their manifest (not yet written)."""
        raise NotImplementedError


PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    if cls.name in PASSES:
        raise RuntimeError(f"pass {cls.name!r} registered twice")
    PASSES[cls.name] = cls
    return cls
