"""Train a tokenizer and write its model, report and figures (a thin Hydra front end).

    python recipes/train_tokenizer.py tokenizer=sigma_vae data=digits tokenizer.c_sigma=0.5 out_dir=runs/tok

Config groups: ``tokenizer=sigma_vae|vae|ae`` (latentar/configs/tokenizer), ``data=digits|speech|
wavfolder`` (latentar/configs/data), ``trainer=default|smoke`` (default: this recipe's budget,
recipe_trainer/train_tokenizer/default.yaml; smoke: 20 steps); top level:
latentar/configs/train_tokenizer.yaml. The tokenizer's modality, channels and sample rate come
from the data. Outputs in ``out_dir``: ``model/`` (from_pretrained-able), ``report.json``
(``latent_report``: latent stats, collapse, PSNR or mel distance / SI-SNR, decoder tolerance),
``tolerance.png``, ``reconstructions.png`` or ``spectrograms.png``, and ``train/`` (checkpoint,
metrics.jsonl; a rerun resumes).
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from latentar.configs import record_recipe
from latentar.tokenizers.pipeline import fit_tokenizer, infer_data_spec


@hydra.main(version_base=None, config_path="pkg://latentar.configs", config_name="train_tokenizer")
def main(cfg: DictConfig) -> dict:
    record_recipe(cfg, cfg.out_dir)
    train_data = hydra.utils.instantiate(cfg.data)
    eval_data = train_data
    if "split" in cfg.data and cfg.eval_split:
        eval_data = hydra.utils.instantiate(cfg.data, split=cfg.eval_split)
    tokenizer = hydra.utils.instantiate(cfg.tokenizer, **infer_data_spec(train_data))
    trainer = hydra.utils.instantiate(cfg.trainer)
    report = fit_tokenizer(tokenizer, train_data, trainer, eval_data=eval_data, out_dir=cfg.out_dir,
                           radii=OmegaConf.to_container(cfg.report.radii), report_examples=cfg.report.max_examples,
                           scale_examples=cfg.scale_examples)
    main_metric = report["tolerance"]["metric"]
    print(f"{report['model']} on {OmegaConf.select(cfg, 'data._target_')}: {main_metric} "
          f"{report[main_metric]:.3f}, tolerance {main_metric} by radius "
          f"{[round(v, 3) for v in report['tolerance'][main_metric]]} -> {cfg.out_dir}")
    return report


if __name__ == "__main__":
    main()
