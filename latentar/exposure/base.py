"""What every exposure strategy shares: the ``Strategy`` interface, batch reading, and
``ExposureTask``, which turns a model + a strategy into a task for the shared Trainer.

A strategy changes the *context* a sequence model is trained on and keeps the *targets* at the
data: it calls the model's protocol methods (docs/CONTRIBUTING.md, "sequence-model protocol"):

* ``model.loss(x, labels=..., context=..., loss_mask=..., context_noise=...)``: targets x, inputs
  the context;
* ``model.predict_parallel(x, ...)``: a sample for every position from the ground-truth prefix;
* ``model.generate(B, T, reference=..., use_reference=...)``: cached decoding that feeds the
  reference where asked.

Each strategy declares ``targets_valid``: whether the supervision it attaches to the context it
builds is still correct for that context, the criterion that separates sound fixes (teacher
forcing, isotropic context noise) from improper ones (scheduled sampling, whose fully annealed
optimum is the product of the marginals: Huszar 2015, arXiv 1511.05101).

Data layouts: continuous latents ``x (B, T, D)`` float (``LatentAR``), tokens ``x (B, T)`` long
(``CharLM``). An optional ``loss_mask (B, T)`` bool over positions of x marks the positions the
model is trained on (a seq2seq answer); the others (the prompt, padding) are given at inference,
so strategies never corrupt them.
"""
from __future__ import annotations

import inspect
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import default_collate


@dataclass
class SeqBatch:
    """One batch in the protocol's terms.

    x: ``(B, T, D)`` float latents or ``(B, T)`` long tokens (the targets).
    labels: ``(B,)`` long class labels (class-conditional latent models) or None.
    loss_mask: ``(B, T)`` bool over positions of x, True where the model is trained; None = all.
    """

    x: torch.Tensor
    labels: torch.Tensor | None = None
    loss_mask: torch.Tensor | None = None

    @property
    def discrete(self) -> bool:
        return is_discrete(self.x)

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """The keyword arguments of ``model.loss`` this batch carries (only those that are set, so a
        model without a ``loss_mask`` argument, or an unconditional one, is never handed them)."""
        kw: dict[str, torch.Tensor] = {}
        if self.labels is not None:
            kw["labels"] = self.labels
        if self.loss_mask is not None:
            kw["loss_mask"] = self.loss_mask
        return kw

    def rows(self, idx: torch.Tensor) -> "SeqBatch":
        """The sub-batch of rows ``idx``."""
        return SeqBatch(self.x[idx], None if self.labels is None else self.labels[idx],
                        None if self.loss_mask is None else self.loss_mask[idx])

    def to(self, device: torch.device) -> "SeqBatch":
        return SeqBatch(self.x.to(device), None if self.labels is None else self.labels.to(device),
                        None if self.loss_mask is None else self.loss_mask.to(device))


def is_discrete(x: torch.Tensor) -> bool:
    """Tokens (integer ``(B, T)``) rather than continuous latents (float ``(B, T, D)``)."""
    return not (x.dtype.is_floating_point or x.dtype.is_complex)


def _check_x(x: Any) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"expected a tensor of latents (B, T, D) or tokens (B, T), got {type(x).__name__}")
    if is_discrete(x):
        if x.dim() != 2 or x.dtype == torch.bool:
            raise ValueError(f"tokens must be integer ids of shape (B, T), got {x.dtype} {tuple(x.shape)}")
    elif x.dim() != 3:
        raise ValueError(f"continuous latents must have shape (B, T, D), got {tuple(x.shape)}" + (
            "; a tokenizer's latent grid (B, D, h, w) becomes tokens via tok.to_sequence(z)" if x.dim() == 4 else ""))
    return x


def _align_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A loss mask over positions of x; a SeqTask mask over next-token targets ``x[:, 1:]`` gets a
    leading False (position 0 is never a target there)."""
    B, T = x.shape[:2]
    if mask.dim() == 2 and mask.shape == (B, T - 1):
        mask = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1)
    if tuple(mask.shape) != (B, T):
        raise ValueError(f"loss_mask must have shape (B, T) = {(B, T)} over the positions of x "
                         f"(or (B, T-1) over next-token targets), got {tuple(mask.shape)}")
    return mask.bool()


def unpack_batch(batch: Any) -> SeqBatch:
    """Read what the Trainer's DataLoader yields into a :class:`SeqBatch`.

    Accepted layouts:
    * ``x``: latents ``(B, T, D)`` or tokens ``(B, T)``, or ``(x,)`` (an unlabelled TensorDataset's batch);
    * ``(x, labels)``: labels ``(B,)`` integers;
    * ``(input, target)``: two ``(B, n)`` token tensors (a TextCorpus pair): x = [input_0, target],
      position 0 not trained;
    * a dict with ``tokens`` (SeqTask) or ``x`` / ``latents``, and optionally ``labels`` and
      ``loss_mask`` (over positions of x, or over next-token targets ``x[:, 1:]`` as SeqTask stores it).
    """
    if torch.is_tensor(batch):
        return SeqBatch(_check_x(batch))
    if isinstance(batch, (tuple, list)) and len(batch) == 1 and torch.is_tensor(batch[0]):
        return SeqBatch(_check_x(batch[0]))
    if isinstance(batch, Mapping):
        key = next((k for k in ("tokens", "x", "latents") if k in batch), None)
        if key is None:
            raise ValueError(f"a dict batch needs 'tokens', 'x' or 'latents' (plus optional 'labels', "
                             f"'loss_mask'); got keys {sorted(batch)}")
        x = _check_x(batch[key])
        mask = batch.get("loss_mask")
        return SeqBatch(x, batch.get("labels"), None if mask is None else _align_mask(mask, x))
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(torch.is_tensor(b) for b in batch):
        a, b = batch
        if b.dim() == 1:
            if b.dtype.is_floating_point:
                raise ValueError(f"labels must be integers, got {b.dtype}")
            return SeqBatch(_check_x(a), b)
        if a.shape == b.shape and a.dim() == 2 and is_discrete(a) and is_discrete(b):
            x = torch.cat([a[:, :1], b], dim=1)
            mask = torch.ones_like(x, dtype=torch.bool)
            mask[:, 0] = False
            return SeqBatch(x, None, mask)
    raise ValueError(f"cannot read a sequence batch from {type(batch).__name__}: pass latents (B, T, D), "
                     f"tokens (B, T), (x, labels), an (input, target) token pair, or a dict with 'tokens'/'x'")


def make_batch(x: Any, labels: torch.Tensor | None = None, loss_mask: torch.Tensor | None = None) -> SeqBatch:
    """A checked :class:`SeqBatch` (loss mask aligned to the positions of x and moved to x's device)."""
    x = _check_x(x)
    if loss_mask is not None:
        loss_mask = _align_mask(torch.as_tensor(loss_mask), x).to(x.device)
    if labels is not None:
        labels = torch.as_tensor(labels, device=x.device)
    return SeqBatch(x, labels, loss_mask)


def trainable_mask(x: torch.Tensor, loss_mask: torch.Tensor | None) -> torch.Tensor:
    """``(B, T)`` bool: the positions a strategy may corrupt (all, or the loss mask)."""
    B, T = x.shape[:2]
    if loss_mask is None:
        return torch.ones(B, T, dtype=torch.bool, device=x.device)
    return _align_mask(loss_mask, x).to(x.device)


def bernoulli_mask(shape: tuple[int, ...], p: float, device: torch.device,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``(shape)`` bool, each True with probability p (independent coins)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability, got {p}")
    if generator is not None and generator.device != torch.device(device):
        return (torch.rand(shape, generator=generator, device=generator.device) < p).to(device)
    return torch.rand(shape, generator=generator, device=device) < p


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a model with neither."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def check_finite(name: str, value: Any, low: float | None = 0.0, high: float | None = None) -> float:
    """``float(value)`` if it is a finite number in [low, high], else a ValueError naming it (NaN
    passes no comparison, so it would otherwise slip through a range check or train silently)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        span = (f" in [{low}, {high}]" if low is not None and high is not None else
                f" >= {low}" if low is not None else f" <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be a finite number{span}, got {value!r}")
    return float(value)


@torch.no_grad()
def rollout(model: nn.Module, source: SeqBatch, use_reference: torch.Tensor, temperature: float = 1.0,
            gen_batch_size: int = 256, generator: torch.Generator | None = None, greedy: bool = False) -> torch.Tensor:
    """The model's own sequences, with the source fed where ``use_reference (n, T)`` is True:
    ``model.generate(reference=source.x, use_reference=...)`` (KV cache) in chunks of
    ``gen_batch_size`` rows; labels travel with their rows. For tokens, the leading columns that
    every row takes from the source (the prompt) are fed as ``prompt=`` in one pass. The free runs
    and mixed contexts of BASH, RAC, Relabel and the sequence-level objective."""
    n, T = source.x.shape[:2]
    x, use_reference = source.x, use_reference.to(source.x.device)
    # Token LMs: the columns every row takes from the source (a common prompt) go in one cached pass.
    P = int(use_reference.all(0).long().cumprod(0).sum()) if source.discrete else 0
    if P == T:
        return x.clone()
    out = x.clone()
    for start in range(0, n, gen_batch_size):
        rows = slice(start, min(n, start + gen_batch_size))
        kw: dict[str, Any] = {"reference": x[rows, P:], "use_reference": use_reference[rows, P:],
                              "temperature": temperature}
        if P:
            kw["prompt"] = x[rows, :P]
        if greedy:
            kw["greedy"] = True
        if source.labels is not None:
            kw["labels"] = source.labels[rows]
        if generator is not None:
            kw["generator"] = generator
        out[rows, P:] = model.generate(rows.stop - rows.start, T - P, **kw).to(out.dtype)
    return out


def mix(mask: torch.Tensor, sample: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``sample`` where ``mask (B, T)`` is True, ``truth`` elsewhere (tokens or latents)."""
    m = mask if truth.dim() == 2 else mask.unsqueeze(-1)
    return torch.where(m, sample.to(truth.dtype), truth)


class Strategy(ABC):
    """Base class of the exposure strategies.

    Subclasses set ``name``, ``targets_valid`` and implement
    ``loss(model, x, progress=..., labels=None, loss_mask=None) -> (loss, metrics)``: the scalar
    training loss of targets ``x`` under the context the strategy builds, and a dict of floats to
    log. ``on_train_step_start(task, trainer)`` runs before every optimizer step (offline strategies
    such as BASH rebuild their data there); it must be idempotent per step (a run stopped right after
    it resumes by calling it again at the same step).

    ``state_dict() / load_state_dict(state)``: what the strategy carries between steps (an offline
    pool), as tensors and plain containers; :class:`ExposureTask` puts it in its ``state_dict`` so
    Trainer checkpoints hold it and a resumed run continues exactly. Default: no state.
    """

    name: str = "strategy"
    targets_valid: bool = True

    @abstractmethod
    def loss(self, model: nn.Module, x: torch.Tensor, progress: float = 0.0, labels: torch.Tensor | None = None,
             loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Scalar loss of targets x under this strategy's context, and metrics to log."""

    def __call__(self, model: nn.Module, x: torch.Tensor, progress: float = 0.0, **kw):
        return self.loss(model, x, progress=progress, **kw)

    def on_train_step_start(self, task: "ExposureTask", trainer: Any) -> None:
        """Hook before each optimizer step; nothing by default."""

    def state_dict(self) -> dict[str, Any]:
        """The strategy's training state (tensors and plain containers); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (tensors already on the model's device)."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but the checkpoint holds {sorted(state)} for it; "
                             f"was it written with another strategy?")

    def __repr__(self) -> str:
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in names if hasattr(self, n))
        return f"{type(self).__name__}({args})"


class ExposureTask(nn.Module):
    """A model + a strategy as a Trainer task.

    ``training_step(batch)`` reads the batch (:func:`unpack_batch`) and returns
    ``strategy.loss(model, x, progress, labels, loss_mask)``, with the training progress (0..1)
    taken from the Trainer in ``on_train_step_start``. ``data`` is the training dataset, needed by
    strategies that regenerate data offline (BASH).

        task = ExposureTask(LatentAR(latent_dim=4), ScheduledSampling("linear"))
        Trainer(max_steps=1000).fit(task, latents_dataset)

    The strategy's state (``Strategy.state_dict``) travels in ``state_dict()`` under ``_extra_state``
    (nn.Module's hook), so checkpoints resume an offline pool exactly with no special case.
    """

    def __init__(self, model: nn.Module, strategy: Strategy, data: Any = None):
        super().__init__()
        for method in ("loss", "predict_parallel", "generate"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"{type(model).__name__} does not implement the sequence-model protocol: "
                                f"it has no {method}() (see docs/CONTRIBUTING.md)")
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a latentar.exposure Strategy, got {type(strategy).__name__}")
        self.model = model
        self.strategy = strategy
        self.data = data
        self.progress = 0.0
        self.step = 0

    def on_train_step_start(self, trainer: Any) -> None:
        self.progress = float(trainer.progress)
        self.step = int(trainer.step)
        self.strategy.on_train_step_start(self, trainer)

    def get_extra_state(self) -> dict[str, Any]:
        return {"strategy": type(self.strategy).__name__, "state": self.strategy.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("strategy") != type(self.strategy).__name__:
            raise ValueError(f"the state was saved for a {state.get('strategy')} strategy, not a "
                             f"{type(self.strategy).__name__}")
        from latentar.train.trainer import move_to  # the Trainer's own nested-tensor mover
        self.strategy.load_state_dict(move_to(state["state"], model_device(self.model)))

    def training_step(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        b = unpack_batch(batch)
        return self.strategy.loss(self.model, b.x, progress=self.progress, labels=b.labels, loss_mask=b.loss_mask)

    def validation_step(self, batch: Any) -> torch.Tensor:
        """Teacher-forced loss: the number every strategy is compared on."""
        b = unpack_batch(batch)
        return self.model.loss(b.x, **b.model_kwargs())


def draw_rows(data: Any, pool_size: int, generator: torch.Generator | None, who: str) -> SeqBatch:
    """``min(pool_size, len(data))`` training sequences drawn without replacement, as a SeqBatch:
    the raw material of an offline pool (BASH, RAC). ``data``: a SeqBatch, a tensor or a dataset."""
    if data is None:
        raise ValueError(f"{who} regenerates its pool from the training data: build the task as "
                         f"ExposureTask(model, {who}(...), data=train_dataset)")
    size = data.x.shape[0] if isinstance(data, SeqBatch) else len(data)
    if size < 1:
        raise ValueError(f"{who} got an empty training dataset")
    n = min(pool_size, size)
    cpu_gen = generator if generator is not None and generator.device.type == "cpu" else None
    order = torch.randperm(size, generator=cpu_gen)[:n] if n < size else torch.arange(size)
    if isinstance(data, SeqBatch):
        return data.rows(order.to(data.x.device))
    if torch.is_tensor(data):
        return unpack_batch(data[order])
    return unpack_batch(default_collate([data[int(i)] for i in order]))


class OfflinePoolStrategy(Strategy):
    """The offline, batched mechanism BASH and RAC share (Cen et al. 2025, Algorithms 1 and 2): SFT
    alone for ``warmup_steps``, then a pool of ``pool_size`` training rows regenerated by
    ``regenerate(model, data, autocast)`` every ``regen_every`` steps and trained on beside J_SFT.

    The pool, its statistics and the step it was built at are the strategy's state
    (:meth:`state_dict`), so a run resumed from a checkpoint trains on the same pool and regenerates
    on the same schedule as a straight run."""

    def _init_pool(self, warmup_steps: int, regen_every: int, pool_size: int, gen_batch_size: int,
                   temperature: float) -> None:
        for name, v, lo in (("warmup_steps", warmup_steps, 0), ("regen_every", regen_every, 1),
                            ("pool_size", pool_size, 1), ("gen_batch_size", gen_batch_size, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        self.warmup_steps, self.regen_every, self.pool_size = warmup_steps, regen_every, pool_size
        self.gen_batch_size = gen_batch_size
        self.temperature = check_finite("temperature", temperature)
        self.pool: dict[str, torch.Tensor | None] | None = None
        self.last_regen: dict[str, float] = {}
        self.pool_step: int | None = None  # the trainer step the pool was built for

    def due(self, step: int) -> bool:
        """Whether the pool must be (re)built before optimizer step ``step`` (never twice for one step)."""
        if step < self.warmup_steps:
            return False
        if self.pool is None:
            return True
        return step != self.pool_step and (step - self.warmup_steps) % self.regen_every == 0

    def on_train_step_start(self, task: "ExposureTask", trainer: Any) -> None:
        step = int(trainer.step)
        if self.due(step):
            self.regenerate(task.model, task.data, autocast=trainer.autocast())
            self.pool_step = step

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "last_regen": dict(self.last_regen), "pool_step": self.pool_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"pool", "last_regen", "pool_step"} - set(state)
        if missing:
            raise ValueError(f"{type(self).__name__} state lacks {sorted(missing)}")
        self.pool, self.last_regen, self.pool_step = state["pool"], dict(state["last_regen"]), state["pool_step"]

    def _draw(self, data: Any, generator: torch.Generator | None) -> SeqBatch:
        """``min(pool_size, len(data))`` training sequences, drawn without replacement."""
        return draw_rows(data, self.pool_size, generator, type(self).__name__)
