"""Progress bars: live on a terminal, sparse in CI logs (a 3600-step training once wrote ~10 MB of redraws)."""

from __future__ import annotations

import io
import sys

import pytest

pytest.importorskip("tqdm")

from mmdeploy_kit._progress import progress_bar  # noqa: E402


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream,interval", [(io.StringIO(), 30.0), (_Tty(), 0.2)])
def test_redraw_interval_follows_the_terminal(monkeypatch, stream, interval):
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress_bar(range(3), desc="x", file=stream)
    assert bar.mininterval == interval and bar.leave is False
    bar.close()


def test_log_output_stays_small(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar(range(2000), desc="train", file=log)
    for i in bar:
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}", refresh=False)
    bar.close()
    assert len(log.getvalue()) < 2000  # a handful of redraws, not one per step
