"""JointDiffusion: closed-form noising (with input perturbation), bidirectional attention, training
reduces the loss, seeded CFG sampling, save / load. Sampler outputs against a diffusers reference
loop: tests/test_diffusion_sampling.py."""
import math

import pytest
import torch

from latentar.models import JointDiffusion

D, T, B = 2, 6, 8


def make(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(latent_dim=D, d_model=32, depth=2, num_heads=4, max_len=8)
    args.update(kw)
    model = JointDiffusion(**args)
    with torch.no_grad():  # the output layers are zero-initialised (DiT); randomise so outputs depend on inputs
        for p in list(model.out.parameters()) + list(model.ada_out.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def cosine_alphas_cumprod(n=1000):
    """float64 squaredcos_cap_v2 (Nichol & Dhariwal 2021): beta_i = min(1 - f(i+1)/f(i), 0.999)."""
    f = lambda i: math.cos((i / n + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(n)], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_loss_matches_closed_form_noising_with_unperturbed_target(gamma):
    model = make(input_perturbation=gamma)
    z, eps, xi = torch.randn(B, T, D), torch.randn(B, T, D), torch.randn(B, T, D)
    t = torch.randint(0, 1000, (B,))
    abar = cosine_alphas_cumprod()[t].view(B, 1, 1)
    x_t = (abar.sqrt() * z.double() + (1 - abar).sqrt() * (eps.double() + gamma * xi.double())).float()
    expected = (model(x_t, t) - eps).pow(2).mean()
    got = model.loss(z, noise=eps, timesteps=t, perturbation=xi)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    if gamma:  # the perturbation enters x_t, never the target
        assert not torch.allclose(got, model.loss(z, noise=eps, timesteps=t, perturbation=torch.zeros_like(xi)))


def test_attention_is_bidirectional():
    model = make()
    x = torch.randn(B, T, D)
    y = x.clone()
    y[:, -1] = torch.randn(B, D)
    t = torch.full((B,), 500)
    with torch.no_grad():
        change = (model(x, t) - model(y, t))[:, 0].abs().max()
    assert change > 1e-4  # the first position sees the last one


def test_training_reduces_loss():
    torch.manual_seed(0)
    model = make(num_classes=2, class_dropout=0.1, input_perturbation=0.1).train()
    v = torch.randn(T, D)
    y = torch.randint(0, 2, (128,))
    z = torch.where(y[:, None, None] == 0, v, -v) + 0.1 * torch.randn(128, T, D)
    fixed = dict(noise=torch.randn_like(z), timesteps=torch.randint(0, 1000, (128,)), perturbation=torch.randn_like(z))
    model.eval()
    before = model.loss(z, y, **fixed).item()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(40):
        opt.zero_grad()
        model.training_step((z, y)).backward()
        opt.step()
    model.eval()
    assert model.loss(z, y, **fixed).item() < 0.8 * before
    # sampling against a hand-written diffusers loop: tests/test_diffusion_sampling.py


def test_generate_seeded_cfg_and_null_class():
    model = make(num_classes=3)
    y = torch.tensor([0, 1, 2, 0])
    g = lambda: torch.Generator().manual_seed(3)
    a = model.generate(4, T, labels=y, num_steps=5, generator=g())
    assert torch.equal(a, model.generate(4, T, labels=y, cfg_scale=1.0, num_steps=5, generator=g()))
    seen = []
    hook = model.class_emb.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    guided = model.generate(4, T, labels=y, cfg_scale=3.0, num_steps=5, generator=g())
    hook.remove()
    assert all(torch.equal(s, torch.cat([y, torch.full((4,), 3)])) for s in seen)  # cond | null
    assert not torch.allclose(a, guided)
    with pytest.raises(ValueError, match="class-conditional"):
        make().generate(2, T, cfg_scale=2.0)
    with pytest.raises(ValueError, match="sampler"):
        model.generate(2, T, sampler="euler")
    with pytest.raises(ValueError, match="max_len=8"):
        model.generate(2, 9)


def test_save_load_round_trip(tmp_path):
    model = make(num_classes=3, input_perturbation=0.1)
    model.save_pretrained(tmp_path / "jd")
    loaded = JointDiffusion.from_pretrained(tmp_path / "jd").eval()
    assert loaded.config == model.config
    x, t = torch.randn(B, T, D), torch.randint(0, 1000, (B,))
    assert torch.equal(loaded(x, t), model(x, t))
    with pytest.raises(ValueError, match="shape mismatch"):
        JointDiffusion.from_pretrained(tmp_path / "jd", latent_dim=3)


def test_training_step_reads_unlabelled_dataset_batches():
    """An unlabelled TensorDataset yields ``(x,)`` (speech latents): same loss as the bare tensor."""
    model = make().train()
    z = torch.randn(4, T, D)
    losses = []
    for batch in (z, (z,), [z]):
        torch.manual_seed(3)
        losses.append(model.training_step(batch).item())
    assert losses[0] == losses[1] == losses[2]
    with pytest.raises(ValueError, match=r"JointDiffusion.training_step expects .*\(latents,\)"):
        model.training_step((z, torch.zeros(4), torch.zeros(4)))
