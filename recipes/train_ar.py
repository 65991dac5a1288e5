"""Train LatentAR (GMM / diffusion / MSE head) or JointDiffusion on a saved tokenizer's latents.

    python recipes/train_ar.py tokenizer_dir=runs/tok/model model.head=gmm out_dir=runs/ar
    python recipes/train_ar.py tokenizer_dir=runs/tok/model trainer=smoke   # 20 steps: a wiring check

Loads the tokenizer (SigmaVAE, VAE or AE), encodes the training split with ``ar_latents``
(``posterior_draws`` posterior samples per example; an AE's means), trains with the shared Trainer
(through the configured exposure strategy for AR models), generates class-conditional samples at
each ``sample.cfg_scale`` (every diffusion arm with ``sample.sampler`` / ``sample.sampling_steps``,
every arm at ``sample.temperature``), decodes them and scores them against the test split (digits:
classifier-feature FD and class accuracy; audio: log-mel FD).
Outputs in ``out_dir``: ``model/`` (from_pretrained-able), ``results.json``, ``samples_cfg<X>.png``
(wav files too for audio), ``exposure.png`` / ``exposure.json`` (AR models), ``train/`` (checkpoint,
metrics.jsonl; a rerun resumes). Config: latentar/configs/train_ar.yaml; its default budget
(2000 steps) is recipe_trainer/train_ar/default.yaml, replaced as a whole by e.g. ``trainer=smoke``.
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from latentar.configs import record_recipe
from latentar.exposure import ExposureTask
from latentar.generation import SamplingConfig, encode_for_ar, held_out_exposure, sample_and_score
from latentar.metrics.domains import make_domain
from latentar.models import JointDiffusion
from latentar.tokenizers import load_tokenizer


def run(cfg: DictConfig) -> dict:
    out = Path(cfg.out_dir)
    tok = load_tokenizer(cfg.tokenizer_dir)
    # audio at the tokenizer's own sample rate (its mel loss was computed at it)
    domain = make_domain(cfg.data, seconds=cfg.audio_seconds, sample_rate=tok.config["sample_rate"])
    latents = encode_for_ar(tok, domain.train_x, domain.train_y, draws=cfg.posterior_draws)
    torch.manual_seed(cfg.seed)
    model = hydra.utils.instantiate(cfg.model, latent_dim=latents.dim, max_len=latents.length,
                                    num_classes=domain.num_classes)
    data = latents.dataset()
    task = model if isinstance(model, JointDiffusion) else ExposureTask(model, hydra.utils.instantiate(cfg.strategy), data=data)
    trainer = hydra.utils.instantiate(cfg.trainer)
    fit = trainer.fit(task, data)
    model.eval()
    sampling = SamplingConfig(cfg.sample.sampler, cfg.sample.sampling_steps, float(cfg.sample.temperature))
    results = {"train_step": fit["step"], "train_loss": fit["loss"], **sampling.row()}
    for scale in cfg.sample.cfg_scale:
        if scale != 1.0 and not domain.num_classes:
            continue
        scores = sample_and_score(model, tok, domain, latents, cfg.sample.num_samples, scale, seed=cfg.sample.seed,
                                  sampling=sampling,
                                  samples_png=out / f"samples_cfg{scale:g}.png", title=f"cfg={scale:g}")
        results.update({f"{k}_cfg{scale:g}": v for k, v in scores.items()})
    if not isinstance(model, JointDiffusion):
        results.update(held_out_exposure(model, tok, domain, cfg.sample.seed, cfg.exposure.prefix_len,
                                         cfg.exposure.num_samples, out / "exposure.json", out / "exposure.png",
                                         sampling=sampling))
    model.cpu().save_pretrained(out / "model")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


@hydra.main(version_base=None, config_path="pkg://latentar.configs", config_name="train_ar")
def main(cfg: DictConfig) -> dict:
    record_recipe(cfg, cfg.out_dir)
    return run(cfg)


if __name__ == "__main__":
    main()
