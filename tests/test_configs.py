"""Compose and instantiate every config shipped in latentar/configs (lightning-hydra-template style),
and check each group config field by field against its target's constructor signature: every yaml
key is a constructor parameter, every value arrived in the object (its saved ``config`` dict, else
the attribute of that name), and every parameter the yaml leaves out holds the signature default."""
import inspect
import math
import wave
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object
from omegaconf import OmegaConf

import latentar.configs
import latentar.data
import latentar.data.speech

ROOT = Path(latentar.configs.__file__).parent
GROUP_CONFIGS = sorted(p.relative_to(ROOT) for p in ROOT.glob("*/*.yaml"))
PRIMARY_CONFIGS = sorted(p.stem for p in ROOT.glob("*.yaml"))


def _plain(v):
    """OmegaConf containers -> Python; lists -> tuples (objects store sequences as either)."""
    if OmegaConf.is_config(v):
        v = OmegaConf.to_container(v, resolve=True)
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _same(stored, given) -> bool:
    stored, given = _plain(stored), _plain(given)
    if isinstance(given, bool) or isinstance(stored, bool):  # True == 1.0 must not pass
        return type(stored) is type(given) and stored == given
    if isinstance(given, Path) or isinstance(stored, Path):
        return Path(stored) == Path(given)
    try:
        return bool(stored == given)
    except Exception:
        return False


def _resolved_tokenizer_preset(key):
    def check(obj, given, cfg):
        from latentar.tokenizers import NETWORK_PRESETS
        return given is None and _same(obj.config[key], NETWORK_PRESETS[cfg["modality"]][key])
    return check


def _check_unet(obj, given, cfg):
    from latentar.diffusion import UNET_PRESETS
    c = obj.model.config
    preset = UNET_PRESETS[given["preset"]]
    return (c.in_channels == c.out_channels == given["in_channels"] and c.sample_size == given["sample_size"]
            and _same(c.block_out_channels, preset["block_out_channels"])
            and c.layers_per_block == preset["layers_per_block"])


def _check_scheduler(obj, given, cfg):
    c = obj.scheduler.config
    return all(_same(c[k], v) for k, v in given.items() if k != "_target_")


# Parameters an object stores resolved (a None default filled in, a unit conversion, a nested object),
# not verbatim: (class, parameter) -> check(obj, value given, whole config) of the documented resolution.
RESOLVED = {
    ("DiffusionHead", "width"): lambda o, v, c: v is None and o.config["width"] == c["cond_dim"],
    ("LatentAR", "head_kwargs"): lambda o, v, c: v is None and o.config["head_kwargs"] == {},
    **{(cls, key): _resolved_tokenizer_preset(key) for cls in ("SigmaVAE", "VAE", "AE") for key in ("channels", "strides")},
    **{(cls, "recon_loss"): (lambda o, v, c: v is None and o.config["recon_loss"] == "mse")  # image default
       for cls in ("SigmaVAE", "VAE", "AE")},
    ("SpeechCorpus", "root"): lambda o, v, c: v is None and o.root.parent == latentar.data.cache_dir("speech"),
    ("SpeechCorpus", "sentences"): lambda o, v, c: v is None and o.sentences == latentar.data.speech.SENTENCES,
    ("SpeechCorpus", "voices"): lambda o, v, c: v is None and o.voices == latentar.data.speech.VOICES,
    ("SpeechCorpus", "rates"): lambda o, v, c: v is None and o.rates == latentar.data.speech.RATES,
    ("SpeechCorpus", "crop_seconds"): lambda o, v, c: o.crop_length == round(v * c["sample_rate"]),
    ("WavFolder", "crop_seconds"): lambda o, v, c: o.crop_length == round(v * c["sample_rate"]),
    ("WavFolder", "validate"): lambda o, v, c: v is True and len(o.files) == 1,   # construction-time check only
    ("IPDiffusionTrainer", "model"): _check_unet,
    ("IPDiffusionTrainer", "scheduler"): _check_scheduler,
    ("IPDiffusionTrainer", "prediction_type"): lambda o, v, c: (
        v is None and o.prediction_type == o.scheduler.config.prediction_type),
    ("IPDiffusionTrainer", "sample_shape"): lambda o, v, c: v is None and tuple(o.sample_shape) == (
        c["model"]["in_channels"], c["model"]["sample_size"], c["model"]["sample_size"]),
    ("RAC", "template"): lambda o, v, c: v is None and o.template.ref_ids == [latentar.data.BOS],
    ("Trainer", "precision"): lambda o, v, c: v == "auto" and o.precision == (
        "bf16" if o.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"),
    ("Trainer", "device"): lambda o, v, c: v == "auto" and isinstance(o.device, torch.device),
    ("Trainer", "progress"): lambda o, v, c: _same(o.show_progress, v),  # ``progress`` is the training fraction
}


def _write_wav(path: Path, seconds: float = 0.5, sr: int = 16000) -> None:
    t = np.arange(int(seconds * sr)) / sr
    pcm = (0.3 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


@pytest.fixture(autouse=True)
def _hydra():
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="latentar.configs", version_base=None):
        yield
    GlobalHydra.instance().clear()


def test_there_are_configs():
    assert len(GROUP_CONFIGS) >= 2


def _halve_positive_floats(group: str, cfg) -> list[str]:
    """Overrides that halve every positive float of the top level: shipped values often equal the
    constructor defaults, so only a changed value shows that it really travels into the object."""
    return [f"{group}.{k}={cfg[k] / 2!r}" for k in cfg
            if isinstance(cfg[k], float) and not isinstance(cfg[k], bool) and cfg[k] > 0]


def _has_positive_float(rel: Path) -> bool:
    return bool(_halve_positive_floats("x", OmegaConf.to_container(OmegaConf.load(ROOT / rel))))  # "???" kept


# every config as shipped, and those with a positive float once more with each halved
CASES = [pytest.param(rel, False, id=f"{rel}-shipped") for rel in GROUP_CONFIGS] + [
    pytest.param(rel, True, id=f"{rel}-floats_halved") for rel in GROUP_CONFIGS if _has_positive_float(rel)]


@pytest.mark.parametrize("rel, perturb", CASES)
def test_group_config_matches_constructor_signature(rel, perturb, tmp_path):
    group, name = rel.parent.as_posix(), rel.stem
    overrides = [f"+{group}={name}"]
    if (group, name) == ("data", "wavfolder"):  # its mandatory root (???): one small wav
        _write_wav(tmp_path / "a.wav")
        overrides.append(f"{group}.root={tmp_path}")
    cfg = compose(config_name=None, overrides=overrides)[group]
    if perturb:
        extra = _halve_positive_floats(group, cfg)
        assert extra, f"{rel}: no positive float to halve"
        cfg = compose(config_name=None, overrides=overrides + extra)[group]
    assert not OmegaConf.missing_keys(cfg)
    assert "_target_" in cfg, f"{rel} has no _target_"
    target = get_object(cfg._target_)
    params = inspect.signature(target).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), f"{target} takes **kwargs: keys unchecked"
    given = {k: cfg[k] for k in cfg if k != "_target_"}
    unknown = set(given) - set(params)
    assert not unknown, f"{rel}: {sorted(unknown)} are not parameters of {cfg._target_}"
    required = {n for n, p in params.items() if p.default is p.empty}
    assert required <= set(given), f"{rel} leaves required {sorted(required - set(given))} unset"

    obj = hydra.utils.instantiate(cfg)
    assert isinstance(obj, target)
    cls = type(obj).__name__
    saved = getattr(obj, "config", None)
    if isinstance(saved, dict):
        assert set(saved) == set(params), f"{cls}.config keys differ from its signature"
    container = OmegaConf.to_container(cfg, resolve=True)
    for name_, p in params.items():
        value = given[name_] if name_ in given else p.default
        if (cls, name_) in RESOLVED:
            assert RESOLVED[cls, name_](obj, _plain(value), container), f"{rel}: {name_}={value!r} not resolved as documented"
        elif isinstance(saved, dict):
            assert _same(saved[name_], value), f"{rel}: config[{name_!r}] = {saved[name_]!r}, given {value!r}"
        else:
            assert hasattr(obj, name_), f"{rel}: {cls} keeps no attribute {name_!r} (add it to RESOLVED with its rule)"
            assert _same(getattr(obj, name_), value), f"{rel}: {cls}.{name_} = {getattr(obj, name_)!r}, given {value!r}"


def _target_nodes(node, path=""):
    """Every (path, node) with a ``_target_`` inside a config as plain containers."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for k, v in node.items():
            yield from _target_nodes(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _target_nodes(v, f"{path}[{i}]")


@pytest.mark.parametrize("name", PRIMARY_CONFIGS)
def test_primary_config_composes_with_valid_target_keys(name):
    """Composition (defaults lists, group files, the primary file's own overrides) leaves every
    instantiable node with keys its target accepts, so recipes fail at no typo'd key."""
    cfg = OmegaConf.to_container(compose(config_name=name), resolve=False)
    assert cfg
    for path, node in _target_nodes(cfg):
        params = inspect.signature(get_object(node["_target_"])).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        unknown = {k for k in node if not str(k).startswith("_")} - set(params)
        assert not unknown, f"{name}.yaml: {path} sets {sorted(unknown)}, not parameters of {node['_target_']}"


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
