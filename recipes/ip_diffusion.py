"""Train one input-perturbation diffusion model on digits and print its FD at each number of sampling steps.

    python recipes/ip_diffusion.py gamma=0.1 trainer.max_steps=1000 out_dir=runs/ip_g0.1
    python recipes/ip_diffusion.py space=latent tokenizer=runs/tok/model gamma=0.1
    python recipes/ip_diffusion.py gamma=0 trainer=smoke sampling.steps=[5] sampling.num_samples=64   # wiring check

Config: latentar/configs/ip_diffusion.yaml (groups ``trainer``, ``diffusion=ip``; ``gamma`` is short
for ``diffusion.gamma``; the default budget is recipe_trainer/ip_diffusion/default.yaml). The UNet's
input channels and size and the scheduler's clipping follow the space (pixels: 1x8x8, clipped;
latents: the tokenizer's grid, unclipped). Outputs in ``out_dir``: the Trainer's checkpoint (a
rerun resumes), ``unet_ema/`` and ``scheduler/`` (diffusers ``save_pretrained``) and
``results.json`` (FD per step count, with the noise and real-data reference FDs). The grid over
gamma, seeds and step counts is ``latentar sweep ip``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from latentar.configs import record_recipe
from latentar.diffusion.digits_space import digits_space
from latentar.diffusion.evaluate import fd_at_steps, reference_fds


@hydra.main(version_base=None, config_path="pkg://latentar.configs", config_name="ip_diffusion")
def main(cfg: DictConfig) -> dict:
    trainer = hydra.utils.instantiate(cfg.trainer)
    space = digits_space(cfg.space, cfg.tokenizer, device=trainer.device)
    channels, side = space.sample_shape[0], space.sample_shape[1]
    task = hydra.utils.instantiate(cfg.diffusion, model={"in_channels": channels, "sample_size": side},
                                   scheduler={"clip_sample": space.clip_sample})
    trainer.fit(task, space.train)
    with trainer.ema_model() as ema_task:
        unet = copy.deepcopy(ema_task.model).eval()
    out = Path(cfg.out_dir)
    record_recipe(cfg, out)
    unet.save_pretrained(out / "unet_ema")
    task.scheduler.save_pretrained(out / "scheduler")
    s = cfg.sampling
    scores = fd_at_steps(unet, task.scheduler, space, list(s.steps), s.num_samples, sampler=s.sampler, seed=s.seed,
                         eps_scale=s.eps_scale)
    result = {"gamma": task.gamma, "space": cfg.space, "sampler": s.sampler, "eps_scale": s.eps_scale,
              "fd": {str(k): v["fd"] for k, v in scores.items()}, "references": reference_fds(s.num_samples),
              "config": OmegaConf.to_container(cfg, resolve=True)}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"gamma={task.gamma} {cfg.space} {s.sampler}: FD by steps "
          + ", ".join(f"{k}: {v['fd']:.2f}" for k, v in scores.items())
          + f" (noise {result['references']['noise']:.1f}, data {result['references']['data']:.2f}) -> {out}")
    return result


if __name__ == "__main__":
    main()
