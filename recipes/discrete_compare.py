"""SFT vs scheduled sampling vs BASH vs RAC vs relabelling vs unlikelihood vs REINFORCE / MIXER on
byte seq2seq tasks (a thin Hydra front end).

    python recipes/discrete_compare.py preset=quick tasks=[running_sum,chain] lengths=[6,10] out=runs/discrete
    python recipes/discrete_compare.py preset=smoke +model=char_lm model.d_model=64 model.depth=2

Config: latentar/configs/discrete_compare.yaml (keys = latentar.sweeps.discrete.CompareConfig).
The same run from the CLI: ``latentar compare discrete --task running_sum,chain --len 6,10 --preset quick``.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from latentar.configs import record_recipe
from latentar.sweeps.discrete import CompareConfig, run

MODEL_KEYS = ("d_model", "depth", "num_heads")


@hydra.main(config_path="pkg://latentar.configs", config_name="discrete_compare", version_base=None)
def main(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    model = c.pop("model", None) or {}
    preset = c.pop("preset")
    overrides = {k: v for k, v in c.items() if v is not None}
    overrides.update({k: model[k] for k in MODEL_KEYS if k in model})
    config = CompareConfig.from_preset(preset, **overrides)
    record_recipe(cfg, config.out)
    run(config)


if __name__ == "__main__":
    main()
