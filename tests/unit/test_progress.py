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
    """2000 steps of 50 ms each (a fake clock): about 4 redraws off a terminal, not one per step."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    clock = iter(range(10**6))
    bar = progress_bar(range(2000), desc="train", file=log)
    bar._time = lambda: next(clock) * 0.05  # tqdm reads its clock through this attribute
    bar.start_t = bar.last_print_t = bar._time()
    for i in bar:
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}", refresh=False)
    bar.close()
    redraws = log.getvalue().count("train:")
    assert 1 <= redraws <= 10, redraws
