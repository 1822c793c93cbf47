"""Training: one loop (``loop.TrainLoop``: loss / eval / checkpoint+resume / torch.distributed hooks) and the
distillation losses (``losses``). Used by the ``distill`` pass and the fusion demo.

Imports torch lazily: ``import mmdeploy_kit.train`` is cheap; the submodules import torch.
"""
