"""Tokenizers: SigmaVAE (fixed-noise posterior), VAE (learned variance) and AE, for images and audio.

    tok = SigmaVAE(modality="image", in_channels=1, latent_dim=4, c_sigma=0.5)
    mu = tok.encode(x); z = tok.sample_posterior(mu); x_hat = tok.decode(z)
    report = latent_report(tok, data); plot_tolerance(report, "tolerance.png")
    tok = load_tokenizer("runs/tok")   # any tokenizer written by save_pretrained
"""
from latentar.tokenizers.ae import AE
from latentar.tokenizers.base import NETWORK_PRESETS, LatentTokenizer
from latentar.tokenizers.crops import CropTraining, random_crops
from latentar.tokenizers.load import TOKENIZERS, load_tokenizer
from latentar.tokenizers.losses import MultiResolutionMelLoss
from latentar.tokenizers.plots import plot_reconstructions, plot_spectrograms, plot_tolerance
from latentar.tokenizers.report import latent_report
from latentar.tokenizers.sigma_vae import SigmaVAE
from latentar.tokenizers.vae import VAE

__all__ = ["AE", "VAE", "SigmaVAE", "LatentTokenizer", "CropTraining", "random_crops", "MultiResolutionMelLoss", "NETWORK_PRESETS", "TOKENIZERS",
           "load_tokenizer", "latent_report", "plot_tolerance", "plot_reconstructions", "plot_spectrograms"]
