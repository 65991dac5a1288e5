"""Save and load any latentar model in diffusers' layout: ``config.json`` + ``diffusion_pytorch_model.safetensors``.

Every saved model class subclasses :class:`PretrainedMixin` (diffusers' ``ModelMixin`` and
``ConfigMixin``) and decorates ``__init__`` with ``@register_to_config``, the pattern of third-party
diffusers models: ``model.config`` holds the constructor arguments, ``config.json`` adds
``_class_name`` and ``_diffusers_version``, and ``save_pretrained`` / ``from_pretrained`` take
diffusers' options (``torch_dtype=``, ``variant=``, ``subfolder=``, ...). Numbers that matter (latent
scale, C_sigma, beta) live in the config or in registered buffers, never as constants in a loop.

What this module adds to diffusers, and why:

* saving is atomic (written beside, then renamed), so an interrupted save never leaves half a model;
* loading is strict, with errors that name the file: wrong class, a saved config that lacks an
  argument (a saved setting is never replaced by today's default), unknown arguments, missing,
  unexpected or misshapen weights, corrupt files, NaN weights (diffusers only warns and re-initialises);
* loading leaves the caller's global RNG alone and builds the model normally
  (``low_cpu_mem_usage=False`` unless a ``device_map`` asks otherwise);
* directories of the earlier latentar layout (``config.json = {"class", "config"}`` +
  ``model.safetensors``) still load; :func:`convert_legacy` rewrites one in the new layout.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import FrozenDict, register_to_config
from safetensors import safe_open
from safetensors.torch import load_file

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "LEGACY_WEIGHTS_NAME", "PretrainedMixin", "register_to_config",
           "saved_class_name", "saved_config", "is_saved", "is_legacy_dir", "convert_legacy", "load_state_checked"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"   # diffusers' SAFETENSORS_WEIGHTS_NAME
LEGACY_WEIGHTS_NAME = "model.safetensors"              # the earlier latentar layout
INDEX_NAME = WEIGHTS_NAME + ".index.json"              # a sharded save
# Keys diffusers stores in a config that are not constructor arguments; kept out of ``model.config``.
_BOOKKEEPING = ("_use_default_values", "_name_or_path", "_class_name", "_diffusers_version", "_ignore_files")


def plain(obj: Any) -> Any:
    """Mappings / sequences (tuples, Hydra's DictConfig / ListConfig) as JSON-ready dicts / lists."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [plain(v) for v in obj]
    return obj


class PretrainedMixin(ModelMixin, ConfigMixin):
    """Base of every saved latentar model: ``class M(PretrainedMixin)`` with ``@register_to_config``
    on ``__init__``. ``model.config`` is the frozen dict of constructor arguments (``config["k"]`` or
    ``config.k``); change it only through ``self.register_to_config(k=v)``."""

    config_name = CONFIG_NAME
    _supports_param_buffer_assignment = False  # load by copying into the built model (keeps its dtypes, ties)

    # -- config ------------------------------------------------------------------------------------
    def register_to_config(self, **kwargs):
        """diffusers' ``register_to_config`` keeping only constructor arguments, as plain JSON values."""
        kwargs = {k: plain(v) for k, v in kwargs.items() if k not in _BOOKKEEPING}
        super().register_to_config(**kwargs)

    def to_json_string(self) -> str:
        # diffusers writes _class_name / _diffusers_version into the live config; serialise a copy.
        live = self.__dict__.get("_internal_dict")
        if live is None:
            return super().to_json_string()
        self._internal_dict = FrozenDict(dict(live))
        try:
            return super().to_json_string()
        finally:
            self._internal_dict = live

    def __getattr__(self, name: str) -> Any:
        # Plain nn.Module lookup: diffusers' fallback to (deprecated) config attributes would shadow
        # submodules named like a config key (LatentAR.head is a module, config["head"] a string).
        return torch.nn.Module.__getattr__(self, name)

    def to(self, *args, **kwargs):
        """``nn.Module.to``. (diffusers' override warns about float32 modules on every dtype cast,
        even when none are declared; it still runs where its checks apply.)"""
        if self._keep_in_fp32_modules or getattr(self, "is_quantized", False) or _group_offloaded(self):
            return super().to(*args, **kwargs)
        return torch.nn.Module.to(self, *args, **kwargs)

    # -- save --------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> Path:
        """diffusers' ``save_pretrained`` (``variant=``, ``max_shard_size=``, ...), made atomic: the files
        are written into a temporary folder beside, then renamed into ``save_directory``, config last."""
        path = Path(save_directory)
        if path.is_file():
            raise NotADirectoryError(f"save_pretrained: {path} is a file; pass a directory")
        path.mkdir(parents=True, exist_ok=True)
        was_legacy = is_legacy_dir(path)
        if kwargs.get("push_to_hub"):
            kwargs.setdefault("repo_id", path.resolve().name)
        tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=path))
        try:
            super().save_pretrained(tmp, **kwargs)
            written = sorted(os.listdir(tmp), key=lambda f: f == CONFIG_NAME)  # config.json last
            for f in written:
                os.replace(tmp / f, path / f)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        stale = _weight_file_pattern(kwargs.get("variant"))
        for f in os.listdir(path):  # weights of an earlier save (another shard count) would be read back
            if f not in written and stale.fullmatch(f):
                (path / f).unlink(missing_ok=True)
        if was_legacy:
            (path / LEGACY_WEIGHTS_NAME).unlink(missing_ok=True)
        return path

    # -- load --------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        map_location: str | torch.device | None = None, **kwargs):
        """Rebuild the model saved in a local directory, in eval mode.

        ``map_location``: device to move the model to. Keyword arguments that name constructor
        arguments override the saved config (a different architecture then fails naming the
        misshapen weights); the others are diffusers' (``torch_dtype``, ``variant``, ``subfolder``,
        ``device_map``, ``low_cpu_mem_usage`` (default False), ...). Every failure names the file;
        the caller's random numbers are not consumed (a warm cache and a cold one give the same
        results downstream). Directories of the earlier layout load too.
        """
        root = Path(pretrained_model_name_or_path)
        folder = root / kwargs["subfolder"] if kwargs.get("subfolder") else root
        meta = read_config(folder, cls.__name__)
        name = _class_name_in(meta, folder / CONFIG_NAME)
        if name != cls.__name__:
            raise ValueError(f"{folder} holds a {name!r} checkpoint, not a {cls.__name__}; "
                             f"load it with latentar.{name}.from_pretrained")
        torch_dtype, dtype = kwargs.pop("torch_dtype", None), kwargs.pop("dtype", None)  # diffusers takes either
        torch_dtype = dtype if dtype is not None else torch_dtype
        if torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
            raise TypeError(f"torch_dtype must be a torch.dtype such as torch.bfloat16, got {torch_dtype!r}")
        params = _init_params(cls)
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in params}
        want_info = kwargs.pop("output_loading_info", False)
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's RNG alone
            if is_legacy_config(meta):
                model, info = cls._from_legacy(folder, meta, overrides, kwargs), None
            else:
                model, info = cls._from_diffusers(root, folder, meta, overrides, kwargs)
        if torch_dtype is not None:
            model = model.to(dtype=torch_dtype)
        if map_location is not None:
            model = model.to(map_location)
        model.eval()
        return (model, info) if want_info else model

    @classmethod
    def _from_diffusers(cls, root: Path, folder: Path, meta: dict[str, Any], overrides: dict[str, Any],
                        kwargs: dict[str, Any]):
        cfg_file = folder / CONFIG_NAME
        saved = {k: v for k, v in meta.items() if not k.startswith("_") and k != "quantization_config"}
        unknown = sorted(set(saved) - _init_params(cls))
        if unknown:
            raise ValueError(f"{cfg_file} does not fit {cls.__name__}: {', '.join(map(repr, unknown))} "
                             f"{'is not an argument' if len(unknown) == 1 else 'are not arguments'} of "
                             f"{cls.__name__}; the file was edited or written by another version")
        check_config_complete(cls, {**saved, **overrides}, cfg_file)
        files = weight_files(folder, kwargs.get("variant"), cls.__name__)
        for f in files:
            check_safetensors(f)
        kwargs.setdefault("low_cpu_mem_usage", kwargs.get("device_map") is not None)
        keep_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        try:
            model, info = super().from_pretrained(str(root), output_loading_info=True, ignore_mismatched_sizes=True,
                                                  **overrides, **kwargs)
        except TypeError as e:
            raise ValueError(f"{cfg_file} does not fit {cls.__name__}: {e}") from e
        mismatched = [] if keep_mismatched else [(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]]
        raise_incompatible(cls.__name__, str(folder), sorted(info["missing_keys"]),
                           sorted(info["unexpected_keys"]), mismatched)
        check_finite(model.state_dict(), ", ".join(str(f) for f in files))
        return model, info

    @classmethod
    def _from_legacy(cls, folder: Path, meta: dict[str, Any], overrides: dict[str, Any], kwargs: dict[str, Any]):
        """The earlier layout: ``{"class", "config"}`` + ``model.safetensors``."""
        if kwargs.get("variant"):
            raise ValueError(f"{folder} is in the earlier latentar layout (one {LEGACY_WEIGHTS_NAME}); it has no "
                             f"variant {kwargs['variant']!r}")
        w_file = folder / LEGACY_WEIGHTS_NAME
        if not w_file.is_file():
            raise FileNotFoundError(f"{cls.__name__}.from_pretrained: missing {w_file} (expected a directory "
                                    "written by save_pretrained)")
        config = {**meta["config"], **overrides}
        check_config_complete(cls, config, folder / CONFIG_NAME)
        try:
            model = cls(**config)
        except TypeError as e:
            raise ValueError(f"{folder / CONFIG_NAME} does not fit {cls.__name__}: {e}") from e
        load_state_checked(model, read_weights(w_file), source=str(folder))
        return model


def _group_offloaded(module: torch.nn.Module) -> bool:
    try:
        from diffusers.hooks.group_offloading import _is_group_offload_enabled
    except ImportError:  # another diffusers version: let its own ``to`` decide
        return True
    return _is_group_offload_enabled(module)


# -- reading a saved directory --------------------------------------------------------------------
def read_config(path: Path, who: str = "from_pretrained") -> dict[str, Any]:
    """The parsed ``path/config.json`` (either layout), or an error naming the directory or file."""
    path = Path(path)
    cfg_file = path / CONFIG_NAME
    if not path.is_dir():
        raise FileNotFoundError(f"{who}.from_pretrained: {path} is not a directory (expected one written by save_pretrained)")
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{who}.from_pretrained: missing {cfg_file} (expected a directory written by save_pretrained)")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_file} is not valid JSON ({e}); the file is truncated or corrupt: "
                         "save the model again") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{cfg_file} holds a JSON {type(meta).__name__}, not a config; it was not written by "
                         "save_pretrained")
    return meta


def is_legacy_config(meta: Mapping[str, Any]) -> bool:
    """Whether a parsed config.json is of the earlier layout ``{"class": name, "config": {...}}``."""
    return "_class_name" not in meta and "class" in meta


def _class_name_in(meta: Mapping[str, Any], cfg_file: Path) -> str:
    if is_legacy_config(meta):
        if not isinstance(meta.get("class"), str) or not isinstance(meta.get("config"), dict):
            raise ValueError(f"{cfg_file} lacks its 'class' name or its 'config' section (a dict of constructor "
                             "arguments); it was not written by latentar's save_pretrained")
        return meta["class"]
    name = meta.get("_class_name")
    if not isinstance(name, str):
        raise ValueError(f"{cfg_file} names no model class ('_class_name'); it was not written by save_pretrained")
    return name


def saved_class_name(path: str | os.PathLike) -> str:
    """The class name recorded in ``path/config.json``, in either layout (``_class_name`` or ``class``)."""
    path = Path(path)
    return _class_name_in(read_config(path, "saved_class_name"), path / CONFIG_NAME)


def saved_config(path: str | os.PathLike) -> dict[str, Any]:
    """The constructor arguments recorded in ``path/config.json``, in either layout."""
    path = Path(path)
    meta = read_config(path, "saved_config")
    _class_name_in(meta, path / CONFIG_NAME)
    if is_legacy_config(meta):
        return dict(meta["config"])
    return {k: v for k, v in meta.items() if not k.startswith("_")}


def is_legacy_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a model of the earlier layout (``{"class", "config"}`` + model.safetensors)."""
    try:
        meta = json.loads((Path(path) / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and is_legacy_config(meta) and (Path(path) / LEGACY_WEIGHTS_NAME).is_file()


def is_saved(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a complete save (config.json and its weights, in either layout):
    the ``ready`` test of a ``build_once`` cache."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        return False
    return any((path / f).is_file() for f in (WEIGHTS_NAME, INDEX_NAME, LEGACY_WEIGHTS_NAME))


def _weight_file_pattern(variant: str | None) -> re.Pattern:
    v = re.escape(f".{variant}") if variant else ""
    return re.compile(rf"diffusion_pytorch_model(-\d{{5}}-of-\d{{5}})?{v}\.safetensors|"
                      rf"diffusion_pytorch_model\.safetensors\.index{v}\.json")


def weight_files(folder: Path, variant: str | None = None, who: str = "from_pretrained") -> list[Path]:
    """The safetensors file(s) of a save in the diffusers layout (one file, or the shards of an index)."""
    add = (lambda n: n.replace(".safetensors", f".{variant}.safetensors")) if variant else (lambda n: n)
    single = folder / add(WEIGHTS_NAME)
    index = folder / (f"{WEIGHTS_NAME}.index.{variant}.json" if variant else INDEX_NAME)
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index} is not a valid shard index ({e}); save the model again") from e
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{who}.from_pretrained: {index} lists missing shard(s) {missing}")
        return [folder / s for s in shards]
    if not single.is_file():
        others = sorted(f.name for f in folder.glob("diffusion_pytorch_model*.safetensors"))
        hint = f"; the folder has {others} (pass variant=...)" if others else ""
        raise FileNotFoundError(f"{who}.from_pretrained: missing {single} (expected a directory written by "
                                f"save_pretrained{', variant=' + repr(variant) if variant else ''}){hint}")
    return [single]


def check_safetensors(w_file: Path) -> None:
    """A truncated or corrupt safetensors file (its header does not cover the file) is an error naming it."""
    try:
        with safe_open(str(w_file), framework="pt") as f:
            f.keys()
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError on short reads)
        raise ValueError(f"{w_file} is corrupt or truncated ({type(e).__name__}: {e}); save the model again") from e


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """NaN or inf in any floating tensor is an error naming ``source`` and the first tensors."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{source} holds NaN or inf in {len(bad)} tensor(s) ({', '.join(bad[:4])}"
                         f"{' ...' if len(bad) > 4 else ''}); the model diverged before it was saved")


def read_weights(w_file: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of one safetensors file; a corrupt file or non-finite weights are errors naming it."""
    try:
        state = load_file(str(w_file), device=str(map_location))
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError on short reads)
        raise ValueError(f"{w_file} is corrupt or truncated ({type(e).__name__}: {e}); save the model again") from e
    check_finite(state, str(w_file))
    return state


def _init_params(cls: type) -> set[str]:
    """Named constructor arguments of ``cls`` that its config records (``ignore_for_config`` left out)."""
    params = inspect.signature(cls.__init__).parameters.values()
    ignore = set(getattr(cls, "ignore_for_config", ()))
    return {p.name for p in params
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in ignore}


def check_config_complete(cls: type, config: Mapping[str, Any], source: Path) -> None:
    """Every named constructor argument of ``cls`` must be in the saved ``config``: a value that the
    model was trained with is never silently replaced by today's default."""
    missing = sorted(_init_params(cls) - set(config))
    if missing:
        raise ValueError(f"{source} has no value for {', '.join(missing)} (arguments of {cls.__name__}); a saved "
                         "setting is never replaced by a default: restore the file or save the model again")


def raise_incompatible(who: str, source: str, missing: list[str], unexpected: list[str],
                       shapes: list[tuple[str, tuple, tuple]]) -> None:
    """One error naming every missing, unexpected or misshapen key (``shapes``: key, checkpoint, model)."""
    if not (missing or unexpected or shapes):
        return
    lines = [f"incompatible {source} for {who}:"]
    if shapes:
        lines.append("  shape mismatch (different architecture or latent size?): " + "; ".join(
            f"{k}: checkpoint {a} vs model {b}" for k, a, b in shapes[:8]))
    if missing:
        lines.append(f"  missing keys: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        lines.append(f"  unexpected keys: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    raise ValueError("\n".join(lines))


def load_state_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with an error that names every missing, unexpected or misshapen key."""
    own = module.state_dict()
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in sorted(set(own) & set(state))
              if torch.is_tensor(own[k]) and torch.is_tensor(state[k]) and own[k].shape != state[k].shape]
    raise_incompatible(type(module).__name__, source, sorted(set(own) - set(state)), sorted(set(state) - set(own)),
                       shapes)
    module.load_state_dict(state, strict=True)


# -- the earlier layout ---------------------------------------------------------------------------
_MODEL_MODULES = ("latentar.tokenizers", "latentar.heads", "latentar.models.latent_ar", "latentar.models.joint_diffusion",
                  "latentar.models.char_lm", "latentar.metrics.digits_classifier", "latentar.softprompt.prompt")


def _model_class(name: str) -> type:
    """The PretrainedMixin subclass called ``name`` (its module imported first)."""
    import importlib

    for m in _MODEL_MODULES:
        importlib.import_module(m)
    todo, seen = [PretrainedMixin], {}
    while todo:
        c = todo.pop()
        for s in c.__subclasses__():
            seen.setdefault(s.__name__, s)
            todo.append(s)
    if name not in seen:
        raise ValueError(f"no latentar model class is named {name!r}")
    return seen[name]


def convert_legacy(path: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Rewrite a directory of the earlier layout (``{"class", "config"}`` + model.safetensors) in the
    diffusers layout, into ``dest`` (default: in place, replacing the old files); returns the folder."""
    path = Path(path)
    if not is_legacy_dir(path):
        raise ValueError(f"convert_legacy: {path} does not hold a model of the earlier latentar layout "
                         f"({CONFIG_NAME} with 'class' and 'config', and {LEGACY_WEIGHTS_NAME})")
    model = _model_class(saved_class_name(path)).from_pretrained(path)
    return model.save_pretrained(path if dest is None else dest)
