"""Keep third-party chatter (exporter IR dumps, optional-kernel notices, deprecation warnings) out of mmdk's
output, so users see mmdk's progress lines and one-line errors. Errors from those libraries still reach
the logs at ERROR level."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet(*loggers: str, streams: bool = False, fds: bool = False) -> Iterator[None]:
    """Inside: Python warnings ignored; the named loggers (``""`` is the root logger) at ERROR; with
    ``streams`` Python-level stdout/stderr swallowed; with ``fds`` file descriptors 1 and 2 too (output
    printed from C++)."""
    levels = {n: logging.getLogger(n or None).level for n in loggers}
    for n in loggers:
        logging.getLogger(n or None).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.simplefilter("ignore")
            if fds:
                stack.enter_context(_silenced_fds())
            if streams or fds:
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            yield
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n or None).setLevel(lvl)


@contextlib.contextmanager
def _silenced_fds() -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def quiet_transformers() -> None:
    """Import transformers without its torch-less advisory banner, and keep its loggers quiet."""
    key = "TRANSFORMERS_NO_ADVISORY_WARNINGS"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        import transformers  # noqa: F401
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
    logging.getLogger("transformers").setLevel(logging.ERROR)
