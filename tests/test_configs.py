"""Compose and instantiate every config shipped in latentar/configs (lightning-hydra-template style)."""
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import latentar.configs

ROOT = Path(latentar.configs.__file__).parent
GROUP_CONFIGS = sorted(p.relative_to(ROOT) for p in ROOT.glob("*/*.yaml"))
PRIMARY_CONFIGS = sorted(p.stem for p in ROOT.glob("*.yaml"))


@pytest.fixture(autouse=True)
def _hydra():
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="latentar.configs", version_base=None):
        yield
    GlobalHydra.instance().clear()


def test_there_are_configs():
    assert len(GROUP_CONFIGS) >= 2


@pytest.mark.parametrize("rel", GROUP_CONFIGS, ids=str)
def test_group_config_instantiates(rel):
    group, name = rel.parent.as_posix(), rel.stem
    cfg = compose(config_name=None, overrides=[f"+{group}={name}"])[group]
    missing = OmegaConf.missing_keys(cfg)
    if missing:
        pytest.skip(f"{rel} leaves {sorted(missing)} for the user to set")
    assert "_target_" in cfg, f"{rel} has no _target_"
    obj = hydra.utils.instantiate(cfg)
    assert obj is not None


@pytest.mark.parametrize("name", PRIMARY_CONFIGS)
def test_primary_config_composes(name):
    cfg = compose(config_name=name)
    assert OmegaConf.to_container(cfg, resolve=False)


def test_bad_key_names_the_key():
    from hydra.errors import ConfigCompositionException
    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        compose(config_name=None, overrides=["+trainer=default", "trainer.no_such_key=3"])


def test_every_cli_command_resolves(capsys):
    import importlib

    from latentar import cli
    for words, (module, _) in cli.COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(getattr(mod, "main", None)), f"{module} has no main() for `latentar {' '.join(words)}`"
    assert cli.main(["--help"]) == 0
    assert "sweep variance" in capsys.readouterr().out
    assert cli.main(["no-such-command"]) == 2
