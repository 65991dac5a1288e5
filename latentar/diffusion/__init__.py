"""Diffusion in latentar: the one reverse-diffusion loop (``reverse_diffusion``) and scheduler factory
shared by every arm, and input-perturbation diffusion (Ning et al. 2023) on diffusers models and schedulers."""
from latentar.diffusion.input_perturbation import IPDiffusionTrainer, NoisedBatch, check_gamma, perturbed_noising
from latentar.diffusion.sampling import (DEFAULT_NUM_STEPS, DEFAULT_SAMPLER, PREDICTION_TYPES, SAMPLERS,
                                         TEMPERATURE_MODES, classifier_free_guidance, epsilon_scaling,
                                         make_sampling_scheduler, reverse_diffusion, sample, sample_at_steps)
from latentar.diffusion.unet import UNET_PRESETS, build_unet, ddpm_scheduler

__all__ = ["IPDiffusionTrainer", "NoisedBatch", "perturbed_noising", "check_gamma", "SAMPLERS", "PREDICTION_TYPES",
           "TEMPERATURE_MODES", "DEFAULT_SAMPLER", "DEFAULT_NUM_STEPS", "reverse_diffusion",
           "classifier_free_guidance", "sample", "sample_at_steps", "epsilon_scaling", "make_sampling_scheduler",
           "UNET_PRESETS", "build_unet", "ddpm_scheduler"]
