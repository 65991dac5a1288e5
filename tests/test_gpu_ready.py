"""The hot paths are GPU-ready, checked on CPU: no graph breaks under torch.compile, one compiled
decode step for every position, no device-to-host read inside the training loop between log steps,
and a KV cache in the compute dtype (bf16 under autocast)."""
from __future__ import annotations

import os
import sys

import pytest
import torch
import torch._dynamo as dynamo

from latentar.exposure import ExposureTask, ScheduledSampling, TokenUnlikelihood
from latentar.models import CharLM, JointDiffusion, LatentAR
from latentar.tokenizers import SigmaVAE
from latentar.models.transformer import CausalTransformer, KVCache
from latentar.train import Trainer
from torch.utils.data import TensorDataset

sys.path.insert(0, os.path.dirname(__file__))


def _ar(head: str, num_classes: int = 10) -> LatentAR:
    torch.manual_seed(0)
    kw = {"num_sampling_steps": 10, "width": 32} if head == "diffusion" else {}
    return LatentAR(4, head=head, d_model=32, depth=2, num_heads=2, max_len=12, num_classes=num_classes,
                    head_kwargs=kw)


@pytest.mark.parametrize("head", ["gmm", "diffusion"])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_latent_ar_training_step_has_no_graph_breaks(head, num_classes):
    m = _ar(head, num_classes)
    x = torch.randn(8, 12, 4)
    batch = (x, torch.randint(0, 10, (8,))) if num_classes else (x,)
    dynamo.reset()
    e = dynamo.explain(m.training_step)(batch)
    assert (e.graph_count, e.graph_break_count) == (1, 0), [r.reason for r in e.break_reasons]


def test_char_lm_training_step_has_no_graph_breaks():
    torch.manual_seed(0)
    m = CharLM(vocab_size=20, d_model=32, depth=2, num_heads=2, max_len=16)
    batch = {"tokens": torch.randint(0, 20, (4, 16)), "loss_mask": torch.ones(4, 15, dtype=torch.bool)}
    dynamo.reset()
    e = dynamo.explain(m.training_step)(batch)
    assert e.graph_break_count == 0, [r.reason for r in e.break_reasons]


class _CountingBackend:
    """A torch.compile backend that counts compilations and runs the graph as traced."""

    def __init__(self):
        self.compiles = 0

    def __call__(self, gm, example_inputs):
        self.compiles += 1
        return gm.forward


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_static_cache_decode_compiles_once_for_every_position(pos):
    torch.manual_seed(0)
    net = CausalTransformer(32, 2, 4, max_len=10, pos=pos).eval()
    x = torch.randn(3, 10, 32)
    full = net(x)
    backend = _CountingBackend()
    dynamo.reset()
    step = torch.compile(net, fullgraph=True, dynamic=False, backend=backend)
    cache = net.new_cache(3, "cpu", torch.float32)
    with torch.no_grad():
        states = [step(x[:, t:t + 1], cache=cache, start_pos=torch.tensor(t)) for t in range(10)]
    assert backend.compiles == 1
    torch.testing.assert_close(torch.cat(states, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head, num_classes", [("gmm", 10), ("diffusion", 10), ("gmm", 0)])
def test_compiled_generate_equals_eager_and_compiles_once(head, num_classes):
    m = _ar(head, num_classes)
    labels, cfg = (torch.tensor([1, 2]), 2.0) if num_classes else (None, 1.0)
    kw = dict(labels=labels, cfg_scale=cfg)
    eager = m.generate(2, 12, generator=torch.Generator().manual_seed(3), **kw)
    backend = _CountingBackend()
    dynamo.reset()
    for _ in range(2):  # a second call reuses the graph (a fresh cache, the same shapes)
        compiled = m.generate(2, 12, generator=torch.Generator().manual_seed(3), compile=backend, **kw)
    assert backend.compiles == 1
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


def test_kv_cache_is_allocated_in_the_autocast_dtype():
    torch.manual_seed(0)
    net = CausalTransformer(32, 2, 4, max_len=8).eval()
    x = torch.randn(2, 8, 32)
    cache = KVCache()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = net(x)
        steps = torch.cat([net(x[:, t:t + 1], cache=cache) for t in range(8)], 1)
    assert all(k.dtype == torch.bfloat16 for k in cache.k + cache.v)
    torch.testing.assert_close(steps.float(), full.float(), rtol=0.05, atol=0.05)


class _HostReads:
    """Counts the ways a tensor's value reaches Python (each is a device sync on CUDA)."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch):
        self.calls = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(t, *a, _original=original, **kw):
                self.calls += 1
                return _original(t, *a, **kw)
            monkeypatch.setattr(torch.Tensor, name, counted)


def _reads_per_run(monkeypatch, make_task, data, steps: int, **trainer_kw) -> int:
    task = make_task()
    trainer = Trainer(max_steps=steps, log_every=steps, batch_size=4, lr=1e-3, device="cpu", progress=False,
                      ema_decay=0.9, **trainer_kw)
    with monkeypatch.context() as mp:
        reads = _HostReads(mp)
        trainer.fit(task, data)
    return reads.calls


def _seq_data():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 20, (64, 12), generator=g)  # one epoch covers every run below
    return [{"tokens": t, "loss_mask": torch.ones(11, dtype=torch.bool)} for t in tokens]


CASES = {
    "gmm": (lambda: _ar("gmm"), lambda: TensorDataset(torch.randn(64, 12, 4), torch.randint(0, 10, (64,)))),
    "diffusion": (lambda: _ar("diffusion", 0), lambda: TensorDataset(torch.randn(64, 12, 4))),
    "joint_diffusion": (lambda: JointDiffusion(4, d_model=32, depth=1, num_heads=2, max_len=12, num_classes=10),
                        lambda: TensorDataset(torch.randn(64, 12, 4), torch.randint(0, 10, (64,)))),
    "sigma_vae": (lambda: SigmaVAE(in_channels=1, latent_dim=4), lambda: TensorDataset(torch.rand(64, 1, 16, 16))),
    "char_lm+ss": (lambda: ExposureTask(CharLM(vocab_size=20, d_model=32, depth=1, num_heads=2, max_len=16),
                                        ScheduledSampling(schedule="linear")), _seq_data),
    "char_lm+ul": (lambda: ExposureTask(CharLM(vocab_size=20, d_model=32, depth=1, num_heads=2, max_len=16),
                                        TokenUnlikelihood()), _seq_data),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_loop_reads_nothing_back_between_log_steps(monkeypatch, case):
    """A run of 9 steps and one of 3 steps, each logging once at its end, read the same number of
    values back to Python: the steps themselves read none (grad clipping and EMA on)."""
    make_task, make_data = CASES[case]
    short = _reads_per_run(monkeypatch, make_task, make_data(), 3, grad_clip=1.0)
    long = _reads_per_run(monkeypatch, make_task, make_data(), 9, grad_clip=1.0)
    assert long == short


def test_nan_is_detected_on_device_and_raised_at_the_log_step_naming_its_step(tmp_path):
    from tiny_task import TinyTask, tiny_data
    trainer = Trainer(max_steps=20, log_every=8, ckpt_every=4, batch_size=8, device="cpu", progress=False,
                      out_dir=tmp_path)
    with pytest.raises(FloatingPointError, match="at step 5 "):
        trainer.fit(TinyTask(nan_at_step=5), tiny_data())
    from latentar.train.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4  # the NaN's weights were never saved


@pytest.mark.parametrize("head", ["gmm", "diffusion"])
def test_trainer_compiles_the_training_step_once(head):
    """torch.compile through the Trainer: one graph for every step (no guard on a step counter)."""
    backend = _CountingBackend()
    dynamo.reset()
    Trainer(max_steps=4, log_every=2, batch_size=4, device="cpu", progress=False, compile=backend).fit(
        _ar(head), TensorDataset(torch.randn(16, 12, 4), torch.randint(0, 10, (16,))))
    assert backend.compiles == 1
