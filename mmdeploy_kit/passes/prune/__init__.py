"""Structured pruning per tower on Torch-Pruning (see ``prune_pass.py`` for the output layout)."""

from .config import PruneConfig

__all__ = ["PruneConfig"]
