"""Progress bars: live on a terminal only (a 3600-step training once wrote ~10 MB of redraws into a CI log, and
`mmdk bench 2>log` wrote carriage-return frames)."""

from __future__ import annotations

import io
import sys

import pytest

pytest.importorskip("tqdm")

from mmdeploy_kit._progress import progress_bar  # noqa: E402


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_live_bar(monkeypatch):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    bar = progress_bar(range(3), desc="x", file=tty)
    assert not bar.disable and bar.mininterval == 0.2 and bar.leave is False
    for _ in bar:
        pass
    bar.close()
    assert "x:" in tty.getvalue()


def test_off_a_terminal_a_bar_writes_nothing(monkeypatch):
    """2000 steps (`2>log`): no frame, no carriage return in the log."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar(range(2000), desc="train")
    for i in bar:
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}", refresh=False)
    bar.close()
    assert bar.disable and log.getvalue() == ""
    explicit = progress_bar(range(3), file=log)  # a non-terminal file given explicitly: the same
    list(explicit)
    explicit.close()
    assert log.getvalue() == ""
