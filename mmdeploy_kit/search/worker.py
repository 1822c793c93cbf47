"""A worker process of ``mmdk optimize``: ``python -m mmdeploy_kit.search.worker OUT/search.json [--host H]
[--deadline EPOCH]``. Joins the study named in the settings and runs trials until the budget is spent. Started by
``--workers K`` (K of them on this machine); start it by hand on another machine to join a shared ``--storage``."""

from __future__ import annotations

import argparse
import sys
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    from ..errors import MmdkError
    from .optimize import read_settings
    from .study import run_worker

    ap = argparse.ArgumentParser(prog="python -m mmdeploy_kit.search.worker")
    ap.add_argument("settings")
    ap.add_argument("--host", default=None)
    ap.add_argument("--deadline", type=float, default=None)
    args = ap.parse_args(argv)
    try:
        s = read_settings(args.settings)
        n = run_worker(s, host=args.host, log=None, on_trial=lambda m: print(m, flush=True), deadline=args.deadline)
    except MmdkError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    print(f"worker finished: {n} trial(s) run here", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
