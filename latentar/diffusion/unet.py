"""Small diffusers ``UNet2DModel`` presets for 8x8 digits (pixels) and 4x4 latent grids.

The network is diffusers' UNet2DModel unchanged (time embedding, ResNet blocks, skip connections);
only the sizes are ours. No attention: at 8x8 it costs more than it helps on two CPU cores.
Measured on one CPU core (float32, one Adam step on a batch of 128 8x8 images / one forward on
512): ``tiny`` (16, 32): ~165k parameters, ~70 ms / ~90 ms; ``small`` (32, 64): ~650k, ~160 ms /
~220 ms; ``base`` (64, 128): ~2.6M, ~450 ms / ~600 ms.

Two resolution levels (one 2x down/up-sampling), so the grid side must be even: 8x8 -> 4x4 for
pixels, 4x4 -> 2x2 for the SigmaVAE's 4x4 latent grid.
"""
from __future__ import annotations

from diffusers import DDPMScheduler, UNet2DModel

# name -> UNet2DModel keyword arguments (besides sample_size / in_channels / out_channels)
UNET_PRESETS: dict[str, dict] = {
    "tiny": dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
    "small": dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8),
    "base": dict(block_out_channels=(64, 128), layers_per_block=2, norm_num_groups=16),
}


def build_unet(preset: str = "small", in_channels: int = 1, sample_size: int = 8) -> UNet2DModel:
    """A UNet2DModel for ``(B, in_channels, sample_size, sample_size)`` inputs from ``UNET_PRESETS``."""
    if preset not in UNET_PRESETS:
        raise ValueError(f"unknown UNet preset {preset!r}; expected one of {sorted(UNET_PRESETS)}")
    if int(in_channels) < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if int(sample_size) < 2 or int(sample_size) % 2:
        raise ValueError(f"sample_size must be an even number >= 2 (one 2x downsampling), got {sample_size}; "
                         "pad the images to an even side")
    kw = UNET_PRESETS[preset]
    levels = len(kw["block_out_channels"])
    return UNet2DModel(sample_size=int(sample_size), in_channels=int(in_channels), out_channels=int(in_channels),
                       down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels, **kw)


def ddpm_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                   prediction_type: str = "epsilon", clip_sample: bool = True) -> DDPMScheduler:
    """The training schedule: diffusers' DDPMScheduler with "trailing" timestep spacing (every step
    count starts at t = T - 1; safe on the linear schedule, see the spacing rule in
    ``latentar.diffusion.sampling``; with squaredcos_cap_v2 and eps-prediction prefer "leading").

    ``clip_sample`` clips the predicted x0 to [-1, 1] while sampling: right for pixels in
    [-1, 1], wrong for latents (turn it off there).
    """
    if int(num_train_timesteps) < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
    return DDPMScheduler(num_train_timesteps=int(num_train_timesteps), beta_schedule=beta_schedule,
                         prediction_type=prediction_type, clip_sample=bool(clip_sample),
                         timestep_spacing="trailing")
