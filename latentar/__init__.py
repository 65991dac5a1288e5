"""latentar: continuous-latent autoregressive generation, and tools to measure and fix exposure bias.

The public API is re-exported here; see README.md.
"""
from latentar.train import Trainer

__version__ = "0.1.0"
__all__ = ["Trainer"]
