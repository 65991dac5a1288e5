"""Input-perturbation diffusion (Ning et al. 2023) on diffusers models and schedulers."""
from latentar.diffusion.input_perturbation import IPDiffusionTrainer, NoisedBatch, check_gamma, perturbed_noising
from latentar.diffusion.sampling import SAMPLERS, epsilon_scaling, make_sampling_scheduler, sample, sample_at_steps
from latentar.diffusion.unet import UNET_PRESETS, build_unet, ddpm_scheduler

__all__ = ["IPDiffusionTrainer", "NoisedBatch", "perturbed_noising", "check_gamma", "SAMPLERS", "sample",
           "sample_at_steps", "epsilon_scaling", "make_sampling_scheduler", "UNET_PRESETS", "build_unet",
           "ddpm_scheduler"]
