"""Benchmark harness: backends, latency engine, task accuracy, targets, environment, reports, gates.

``mmdeploy_kit.bench(...)`` is the library entry point (``api.bench``). Because this subpackage has the
same name, importing it would shadow that function on the package; the module is therefore made
callable and forwards calls to ``api.bench``, so ``mmdeploy_kit.bench(...)`` works either way.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from ..api import bench

        return bench(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
