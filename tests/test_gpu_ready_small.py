"""GPU-ready hot paths (issue 16), checked on the CPU where possible:

* the per-step training paths (``IPDiffusionTrainer.training_step`` / ``loss``, the tokenizers'
  ``training_step`` / ``loss``) read nothing back from the device: every Python-level host read
  (``item``, ``bool``, ``float``, ``int``, ``index``, ``tolist``) is counted and must be 0, and the
  tokenizer's Trainer path also runs on the ``meta`` device (where any read would raise); bad
  input at the boundary still gets the clear error;
* ``EMA.update`` is one fused ``torch._foreach_lerp_`` per (device, dtype) group and equals the
  closed form ema = d ema + (1 - d) p (float64 recompute), resumes exactly and leaves buffers alone;
* the samplers take a CPU generator or one on the sampling device (the CUDA part runs only where
  CUDA is), draw on the generator's device, and give the same draws for the same seed.
"""
from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from latentar.diffusion import IPDiffusionTrainer, build_unet, ddpm_scheduler, sample
from latentar.diffusion.sampling import SAMPLERS, check_generator, reverse_diffusion
from latentar.tokenizers import AE, VAE, SigmaVAE
from latentar.train.ema import EMA

cuda = pytest.mark.cuda  # skipped without a CUDA device (tests/conftest.py)
HOST_READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist")
IMAGE = dict(modality="image", in_channels=1, latent_dim=4, channels=(8, 16), strides=(2, 1))
AUDIO = dict(modality="audio", in_channels=1, latent_dim=4, channels=(8, 16), strides=(4, 4), sample_rate=16000,
             mel_n_ffts=(64, 128))
LATENT = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", timestep_spacing="leading",
              clip_sample=False)


@pytest.fixture
def host_reads(monkeypatch):
    """The list of host reads made on any tensor since the last ``.clear()`` (originals still run)."""
    calls: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


# ------------------------------------------------------------------------------ no host reads
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ip_training_step_makes_no_host_read(host_reads, prediction_type):
    torch.manual_seed(0)
    task = IPDiffusionTrainer(build_unet("tiny", 1, 8), ddpm_scheduler(), gamma=0.1, prediction_type=prediction_type)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    host_reads.clear()
    task.training_step(x0).backward()
    task.loss(x0, noise=torch.randn_like(x0))
    assert host_reads == []
    task.loss(x0, timesteps=torch.tensor([0, 5, 10, 999]))   # caller's timesteps: the boundary, checked
    assert host_reads                                        # (and the counter does see reads)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 999\]"):
        task.loss(x0, timesteps=torch.tensor([0, 5, 10, 1000]))


@pytest.mark.parametrize("cls", [SigmaVAE, VAE, AE])
def test_tokenizer_training_path_makes_no_host_read(host_reads, cls):
    torch.manual_seed(0)
    tok = cls(**IMAGE)
    x = torch.randn(2, 1, 8, 8)
    host_reads.clear()
    loss, _ = tok.training_step(x)                 # CPU data: scanned with no value read into Python
    loss.backward()
    tok.loss(x, validate=False)
    assert host_reads == []
    # The Trainer's path on an accelerator (batch already on the device): no scan, no read; on
    # "meta" any read of the data would raise as well.
    meta = cls(**IMAGE).to("meta")
    loss, metrics = meta.training_step(torch.randn(2, 1, 8, 8, device="meta"))
    assert host_reads == [] and loss.device.type == "meta" and loss.shape == ()
    tok.encode(x)                                  # the boundary scans the values: the counter sees it
    assert "item" in host_reads


def test_audio_tokenizer_training_path_makes_no_host_read(host_reads):
    torch.manual_seed(0)
    tok = SigmaVAE(**AUDIO)
    x = torch.randn(2, 1, 300)
    host_reads.clear()
    loss, metrics = tok.training_step(x)
    loss.backward()
    tok.loss(x, validate=False)
    assert host_reads == [] and "mel" in metrics


def test_bad_tokenizer_input_still_gets_the_clear_error_at_the_boundary():
    tok = SigmaVAE(**IMAGE)
    bad = torch.randn(2, 1, 8, 8)
    bad[0, 0, 1, 2] = float("nan")
    for call in (tok.encode, tok.loss, tok.training_step, tok.reconstruct, lambda v: tok.loss(v, validate=True)):
        with pytest.raises(ValueError, match="1 NaN or inf"):
            call(bad)
    loss, _ = tok.loss(bad, validate=False)         # unscanned: NaN in, NaN loss out (the Trainer stops on it)
    assert not torch.isfinite(loss)
    with pytest.raises(ValueError, match="1 channel"):   # metadata checks always run
        tok.loss(torch.randn(2, 3, 8, 8), validate=False)


# ------------------------------------------------------------------------------ EMA
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.wide = nn.Parameter(torch.zeros(5, dtype=torch.float64))   # a second (device, dtype) group


def _perturb(net, g):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_ema_is_one_fused_update_per_group_equal_to_the_closed_form(monkeypatch):
    net, d, g = _Net(), 0.9, torch.Generator().manual_seed(0)
    ema = EMA(net, d)
    assert set(ema.shadow) == {"lin.weight", "lin.bias", "norm.weight", "norm.bias", "wide"}   # trainable only
    want = {n: p.detach().double().clone() for n, p in net.named_parameters() if n in ema.shadow}
    fused, per_param = [], []
    real = torch._foreach_lerp_
    monkeypatch.setattr(torch, "_foreach_lerp_", lambda *a: (fused.append(len(a[0])), real(*a))[1])
    monkeypatch.setattr(torch.Tensor, "lerp_", lambda *a, **k: per_param.append(1))
    for _ in range(4):
        _perturb(net, g)
        ema.update(net)
        for n, p in net.named_parameters():
            if n in want:
                want[n] = d * want[n] + (1 - d) * p.detach().double()
    assert per_param == [] and fused == [1, 4] * 4          # per update: the float64 group (1), the float32 one (4)
    for n, v in ema.shadow.items():
        torch.testing.assert_close(v.double(), want[n], rtol=0, atol=1e-6 if v.dtype == torch.float32 else 1e-12)


def test_ema_resumes_exactly_and_swaps_only_parameters():
    g = torch.Generator().manual_seed(1)
    net = _Net()
    straight, first = EMA(net, 0.8), None
    for step in range(6):
        _perturb(net, g)
        straight.update(net)
        if step == 2:
            first = {k: v.clone() for k, v in straight.state_dict()["shadow"].items()}
            resumed = EMA(_Net(), 0.8)                   # a fresh model and EMA, as after a restart
            resumed.load_state_dict({"decay": 0.8, "shadow": first})
        elif step > 2:
            resumed.update(net)
    for k in straight.shadow:
        assert torch.equal(straight.shadow[k], resumed.shadow[k])
    net.norm.running_mean.fill_(3.0)
    live = {n: p.detach().clone() for n, p in net.named_parameters()}
    with straight.swapped_in(net) as m:
        assert torch.equal(m.lin.weight, straight.shadow["lin.weight"]) and torch.equal(m.wide, straight.shadow["wide"])
        assert torch.equal(m.frozen, live["frozen"]) and torch.all(m.norm.running_mean == 3.0)   # buffers: live
    for n, p in net.named_parameters():
        assert torch.equal(p, live[n])
    with pytest.raises(ValueError, match="differing keys"):
        straight.load_state_dict({"decay": 0.8, "shadow": {"lin.weight": first["lin.weight"]}})


# ------------------------------------------------------------------------------ generators
class _Fixed(nn.Module):
    """f(x, t) = tanh(x W + t / T b) for (N, 3) inputs."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(3, 3, generator=g))
        self.b = nn.Parameter(torch.randn(3, generator=g))

    def forward(self, x, t):
        return torch.tanh(x @ self.w + t.float()[:, None] / 1000 * self.b)


def _run(sampler, generator, device="cpu", first=None, model=None):
    """reverse_diffusion of a fixed net; ``first`` collects the first network input (x_T)."""
    f = (model or _Fixed()).to(device)

    def denoise(x, t):
        if first is not None and not first:
            first.append(x.clone())
        return f(x, t)
    eta = 0.5 if sampler == "ddim" else 0.0
    return reverse_diffusion(denoise, DDPMScheduler(**LATENT), (6, 3), sampler=sampler, num_steps=5, eta=eta,
                             temperature=0.7 if sampler != "dpmsolver" else 1.0, generator=generator, device=device)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cpu_generator_same_seed_same_draws(sampler):
    a = _run(sampler, torch.Generator().manual_seed(3))
    b = _run(sampler, torch.Generator(device="cpu").manual_seed(3))
    c = _run(sampler, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = _run(sampler, None)
    torch.manual_seed(5)
    assert torch.equal(d, _run(sampler, None))        # no generator: torch.manual_seed still fixes the draws
    first: list[torch.Tensor] = []
    _run(sampler, torch.Generator().manual_seed(3), first=first)
    assert torch.equal(first[0], torch.randn(6, 3, generator=torch.Generator().manual_seed(3)))   # x_T


def test_sample_accepts_the_generator_of_the_model_device_and_rejects_others():
    model = build_unet("tiny", 1, 8)
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(0)
    a = sample(model, ddpm_scheduler(), 2, (2, 1, 8, 8), generator=gen)
    b = sample(model, ddpm_scheduler(), 2, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="torch.Generator"):
        sample(model, ddpm_scheduler(), 2, (2, 1, 8, 8), generator=0)
    assert check_generator(None, "cpu").device.type == "cpu"


@cuda
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cuda_generator_same_seed_same_draws_on_its_device(sampler):
    first: list[torch.Tensor] = []
    a = _run(sampler, torch.Generator(device="cuda").manual_seed(3), device="cuda", first=first)
    b = _run(sampler, torch.Generator(device="cuda").manual_seed(3), device="cuda")
    assert a.device.type == "cuda" and torch.equal(a, b)
    x_T = torch.randn(6, 3, generator=torch.Generator(device="cuda").manual_seed(3), device="cuda")
    assert torch.equal(first[0], x_T)                   # drawn on the generator's device, as the heads draw
    # a CPU generator gives the same samples on every device (up to the device's arithmetic)
    on_cuda = _run(sampler, torch.Generator().manual_seed(3), device="cuda")
    torch.testing.assert_close(on_cuda.cpu(), _run(sampler, torch.Generator().manual_seed(3)), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="generator is on cuda"):
        _run(sampler, torch.Generator(device="cuda").manual_seed(3), device="cpu")


@cuda
def test_cuda_generator_drives_sample_and_the_diffusion_head():
    from latentar.heads import DiffusionHead
    model = build_unet("tiny", 1, 8).cuda()
    a, b = (sample(model, ddpm_scheduler(), 2, (2, 1, 8, 8), generator=torch.Generator("cuda").manual_seed(0))
            for _ in range(2))
    assert a.device.type == "cuda" and torch.equal(a, b)
    head = DiffusionHead(dim=3, cond_dim=8, width=16, depth=2, num_sampling_steps=3).cuda()
    cond = torch.randn(2, 3, 8, device="cuda")
    x, y = (head.sample(cond, generator=torch.Generator("cuda").manual_seed(1)) for _ in range(2))
    assert torch.equal(x, y)
    x_cpu_gen = head.sample(cond, generator=torch.Generator().manual_seed(1))
    assert x_cpu_gen.device.type == "cuda"
