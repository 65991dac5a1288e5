"""Sequence models: the CausalTransformer backbone (with KV cache), LatentAR (backbone + head) and
JointDiffusion (the bidirectional, non-autoregressive control)."""
from latentar.models.joint_diffusion import JointDiffusion
from latentar.models.latent_ar import LatentAR
from latentar.models.transformer import CausalTransformer, KVCache

__all__ = ["CausalTransformer", "KVCache", "LatentAR", "JointDiffusion"]
