"""BASH: the offline mixed-context pool (share of samples, cache use, sequential mixing) and its loss."""
import math

import pytest
import torch
from torch.utils.data import Dataset

from latentar.data import SeqTask
from latentar.exposure import BASH, ExposureTask
from latentar.data.gauss_markov import GaussMarkov, GaussMarkovModel
from latentar.models import LatentAR
from latentar.models.char_lm import CharLM
from latentar.train import Trainer

T, D = 8, 3


def latent_model(**kw):
    torch.manual_seed(0)
    return LatentAR(latent_dim=D, d_model=32, depth=1, num_heads=2, max_len=T, head_kwargs={"num_mixtures": 3}, **kw)


class Latents(Dataset):
    def __init__(self, n=200, labels=False):
        self.x = torch.randn(n, T, D, generator=torch.Generator().manual_seed(0))
        self.y = torch.arange(n) % 3 if labels else None

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] if self.y is None else (self.x[i], self.y[i])


def test_pool_sample_share_is_beta_and_generation_uses_the_kv_cache():
    model = latent_model(num_classes=3)
    lengths = []
    model.backbone.register_forward_hook(lambda mod, args, out: lengths.append(args[0].shape[1]))
    data = Latents(n=200, labels=True)
    bash = BASH(beta=0.2, pool_size=200, gen_batch_size=64)
    torch.manual_seed(1)
    calls0 = model.num_backbone_calls
    stats = bash.regenerate(model, data)
    chunks = math.ceil(200 / 64)
    # the cache: one backbone call per position and chunk, each on one new position (T, not T^2 / 2)
    assert model.num_backbone_calls - calls0 == stats["backbone_calls"] == chunks * T
    assert lengths == [1] * (chunks * T)
    n = 200 * T
    assert abs(stats["sample_share"] - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)
    pool = bash.pool
    sampled = (pool["g"] != pool["y"]).any(-1)                       # (N, T)
    assert sampled.float().mean().item() == pytest.approx(stats["sample_share"])
    assert torch.equal(pool["labels"].sort().values, data.y.sort().values)  # labels travel with their rows


def test_pool_is_mixed_sequentially_from_its_own_context():
    # a deterministic model (temperature 0): a sampled g^j must be computed from g^{<j}, not y^{<j}
    proc = GaussMarkov(dim=D, length=T, a=0.8, theta=0.3)
    oracle = GaussMarkovModel(proc, bias=0.5)
    data = proc.sample(100, torch.Generator().manual_seed(0))
    bash = BASH(beta=0.5, pool_size=100, temperature=0.0)
    torch.manual_seed(0)
    bash.regenerate(oracle, data)
    g, y = bash.pool["g"], bash.pool["y"]
    sampled = (g != y).any(-1)
    A = oracle.A
    expected = torch.cat([torch.zeros_like(g[:, :1]), g[:, :-1]], 1) @ A.T + 0.5
    assert sampled[:, 1:].any() and (sampled[:, :-1] & sampled[:, 1:]).any()
    assert torch.allclose(g[sampled], expected[sampled], atol=1e-5)
    assert torch.equal(g[~sampled], y[~sampled])


def test_tokens_pool_never_samples_the_prompt():
    torch.manual_seed(0)
    model = CharLM(d_model=32, depth=1, num_heads=2, max_len=16)
    data = SeqTask("copy", 4, 120, alphabet="abcd")
    bash = BASH(beta=0.3, pool_size=120)
    torch.manual_seed(2)
    stats = bash.regenerate(model, data)
    pool = bash.pool
    mask = pool["loss_mask"]
    assert torch.equal(pool["g"][~mask], pool["y"][~mask])
    assert stats["trainable_tokens"] == mask.sum().item() == 120 * 5
    assert abs(stats["sample_share"] - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 600)
    # the shared prompt goes in one cached pass, then one pass per later position
    prompt_columns = int(mask.any(0).long().argmax())
    assert prompt_columns == 5  # "abcd" SEP
    assert stats["backbone_calls"] == pool["y"].shape[1] - prompt_columns


def test_warmup_then_regeneration_every_k_steps_and_the_loss_is_sft_plus_bash():
    model = latent_model()
    data = Latents(n=64)
    bash = BASH(beta=0.2, warmup_steps=3, regen_every=2, pool_size=32)
    regen_steps = []
    original = bash.regenerate

    def counting(m, d, **kw):
        regen_steps.append(trainer.step)
        return original(m, d, **kw)

    bash.regenerate = counting
    trainer = Trainer(max_steps=8, batch_size=16, lr=1e-3, log_every=1, device="cpu", progress=False,
                      handle_signals=False)
    trainer.fit(ExposureTask(model, bash, data=data), data)
    assert regen_steps == [3, 5, 7]
    assert [h["bash_active"] for h in trainer.history] == [0, 0, 0, 1, 1, 1, 1, 1]
    for h in trainer.history[3:]:
        assert h["loss"] == pytest.approx(h["sft"] + h["bash"], rel=1e-5)

    # the loss is J_SFT on the batch + J_BASH on a pool batch (targets y, context g)
    x = data.x[:16]
    torch.manual_seed(7)
    loss, metrics = bash(model, x)
    torch.manual_seed(7)
    idx = torch.randint(0, 32, (16,))
    expected = model.loss(x) + model.loss(bash.pool["y"][idx], context=bash.pool["g"][idx])
    assert torch.allclose(loss, expected, rtol=1e-6)


def test_bash_needs_the_training_data():
    bash = BASH(warmup_steps=0)
    trainer = Trainer(max_steps=1, batch_size=8, device="cpu", progress=False, handle_signals=False)
    with pytest.raises(ValueError, match="data=train_dataset"):
        trainer.fit(ExposureTask(latent_model(), bash), Latents(n=16))


@pytest.mark.parametrize("kw, match", [({"beta": 1.5}, "beta"), ({"regen_every": 0}, "regen_every"),
                                       ({"pool_size": 0}, "pool_size"), ({"beta": float("nan")}, "beta.*nan"),
                                       ({"temperature": float("nan")}, "temperature"),
                                       ({"temperature": float("inf")}, "temperature"),
                                       ({"bash_weight": float("nan")}, "bash_weight")])
def test_bash_argument_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        BASH(**kw)


def test_the_pool_travels_in_the_task_state_dict():
    # the one mechanism the Trainer's checkpoints use: ExposureTask's extra state holds the pool
    data = Latents(n=32)
    task = ExposureTask(latent_model(), BASH(beta=0.5, warmup_steps=0, pool_size=16), data=data)
    torch.manual_seed(0)
    task.strategy.regenerate(task.model, data)
    task.strategy.pool_step = 3
    fresh = ExposureTask(latent_model(), BASH(beta=0.5, warmup_steps=0, pool_size=16), data=data)
    assert fresh.strategy.pool is None
    fresh.load_state_dict(task.state_dict())
    for k in ("y", "g"):
        assert torch.equal(fresh.strategy.pool[k], task.strategy.pool[k])
    assert fresh.strategy.last_regen == task.strategy.last_regen and fresh.strategy.pool_step == 3
    assert not fresh.strategy.due(3) and fresh.strategy.due(4) == task.strategy.due(4)
