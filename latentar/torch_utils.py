"""Small torch helpers shared across the package."""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module):
    """Run a block with ``module.eval()`` and restore the previous train/eval mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
