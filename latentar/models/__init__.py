"""Sequence models: the CausalTransformer backbone (with KV cache), LatentAR (backbone + head) and
JointDiffusion (the bidirectional, non-autoregressive control)."""
from latentar.models.char_lm import CharLM, TokenLMProtocol
from latentar.models.hf_adapter import HFCausalLM, HFSeqTask
from latentar.models.joint_diffusion import JointDiffusion
from latentar.models.latent_ar import LatentAR
from latentar.models.transformer import CausalTransformer, KVCache

__all__ = ["CausalTransformer", "KVCache", "LatentAR", "JointDiffusion", "CharLM", "TokenLMProtocol", "HFCausalLM",
           "HFSeqTask"]
