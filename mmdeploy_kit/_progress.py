"""Progress bars for long work: live on a terminal, a few lines a minute in CI logs (not one per step)."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(*args: Any, **kwargs: Any) -> Any:
    """``tqdm`` with mmdk's defaults: transient (``leave=False``) and, when stderr is not a terminal,
    redrawn at most every 30 s so CI logs stay readable. Use ``set_postfix(..., refresh=False)``."""
    from tqdm.auto import tqdm

    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.2 if tty else 30.0)
    return tqdm(*args, **kwargs)
