"""Progress bars for long work: live on a terminal only. Off a terminal (``2>log``, CI) a bar writes nothing:
tqdm frames are carriage-return redraws, noise in a log; the steps log their own one-line progress."""

from __future__ import annotations

import sys
from typing import Any


def on_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default: stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress_bar(*args: Any, **kwargs: Any) -> Any:
    """``tqdm`` with mmdk's defaults: transient (``leave=False``), redrawn at most every 0.2 s, and disabled when
    its stream is not a terminal. Use ``set_postfix(..., refresh=False)``."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.2)
    kwargs["disable"] = kwargs.get("disable", False) or not on_terminal(kwargs.get("file"))
    return tqdm(*args, **kwargs)
