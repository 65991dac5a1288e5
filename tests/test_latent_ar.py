"""LatentAR: teacher-forced loss and its context hook, generation with the KV cache, CFG, references,
save / load. MSE-head checks use that the MSE head samples its mean deterministically, so a
generated sequence must be a fixed point of teacher forcing on itself."""
import pytest
import torch

from latentar.models import LatentAR

D, T, B = 3, 10, 4


def make(head="mse", num_classes=0, pos="rope", seed=0, **kw):
    torch.manual_seed(seed)
    model = LatentAR(latent_dim=D, head=head, d_model=32, depth=2, num_heads=4, max_len=16,
                     num_classes=num_classes, pos=pos, **kw)
    # the heads start near zero (zero-init output layers); randomise so outputs depend on the state
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- loss / context hook
def test_loss_with_context_z_equals_plain_loss_and_reductions():
    model = make("gmm")
    z = torch.randn(B, T, D)
    plain = model.loss(z)
    assert torch.equal(model.loss(z, context=z), plain)
    per = model.loss(z, reduction="none")
    assert per.shape == (B, T)
    assert torch.allclose(per.mean(), plain) and torch.allclose(model.loss(z, reduction="sum"), per.sum())
    keep = torch.rand(B, T, generator=gen(0)) < 0.5
    assert torch.allclose(model.loss(z, loss_mask=keep), per[keep].mean())
    assert torch.equal(model.loss(z, loss_mask=keep, reduction="none") == 0, ~keep)


def test_context_is_shifted_right_and_targets_stay_z():
    model = make("mse")
    z = torch.randn(B, T, D)
    ctx = z.clone()
    ctx[:, 4] += torch.randn(B, D)  # corrupt one context position
    base = model.loss(z, reduction="none")
    corrupted = model.loss(z, context=ctx, reduction="none")
    # position t sees context[:, :t]: only positions 5.. change
    assert torch.allclose(corrupted[:, :5], base[:, :5], atol=1e-6)
    assert (corrupted[:, 5:] - base[:, 5:]).abs().min() > 1e-7
    # targets are z, not the context: closed-form squared error against z
    mean = model.head.mean(model.cond_states(ctx))
    assert torch.allclose(corrupted, (z - mean).pow(2).sum(-1), atol=1e-5)
    assert not torch.allclose(corrupted, model.loss(ctx, context=ctx, reduction="none"))


def test_predict_parallel_is_causal_and_matches_head_on_states():
    model = make("mse")
    z = torch.randn(B, T, D)
    pred = model.predict_parallel(z)
    assert pred.shape == (B, T, D) and not pred.requires_grad
    z2 = z.clone()
    z2[:, 6:] = torch.randn(B, T - 6, D)
    pred2 = model.predict_parallel(z2)
    assert torch.allclose(pred[:, :7], pred2[:, :7], atol=1e-6)  # position 6 sees z[:, :6] only
    assert not torch.allclose(pred[:, 7:], pred2[:, 7:], atol=1e-4)


def test_training_step_batches_and_label_dropout():
    model = make("gmm", num_classes=5, class_dropout=0.5).train()
    z, y = torch.randn(64, T, D), torch.randint(0, 5, (64,))
    seen = []
    hook = model.class_emb.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    loss = model.training_step((z, y))
    assert loss.dim() == 0 and loss.requires_grad
    dropped = seen[-1] == 5
    assert 10 < int(dropped.sum()) < 54  # about half replaced by the null class
    assert torch.equal(seen[-1][~dropped], y[~dropped])
    model.eval()
    model.loss(z, y)
    assert torch.equal(seen[-1], y)  # no dropout in eval
    hook.remove()
    assert make("gmm").training_step(z).dim() == 0
    unlabelled = make("gmm")
    torch.manual_seed(1)
    bare = unlabelled.training_step(z).item()
    torch.manual_seed(1)
    assert unlabelled.training_step((z,)).item() == bare  # an unlabelled TensorDataset's batch
    with pytest.raises(ValueError, match=r"LatentAR.training_step expects .*\(latents,\)"):
        unlabelled.training_step(["not", "tensors"])
    with pytest.raises(ValueError, match="unconditional"):
        make("gmm").loss(z, labels=y)


def test_training_reduces_loss():
    torch.manual_seed(0)
    model = make("gmm", num_classes=2).train()
    # class 0: a rising ramp; class 1: a falling ramp; small noise
    y = torch.randint(0, 2, (128,))
    ramp = torch.linspace(-1, 1, T)[None, :, None].expand(128, T, D)
    z = torch.where(y[:, None, None] == 0, ramp, -ramp) + 0.05 * torch.randn(128, T, D)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.eval()
    before = model.loss(z, y).item()
    model.train()
    for _ in range(60):
        opt.zero_grad()
        model.loss(z, y).backward()
        opt.step()
    model.eval()
    assert model.loss(z, y).item() < before - 1.0


# ---------------------------------------------------------------------------- generation
@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_generation_is_a_fixed_point_of_teacher_forcing(pos):
    model = make("mse", pos=pos)
    out = model.generate(B, T)
    assert out.shape == (B, T, D)
    assert torch.allclose(model.predict_parallel(out), out, atol=1e-5)


@pytest.mark.parametrize("head,kw", [("gmm", {}), ("diffusion", {"num_steps": 4})])
def test_cache_and_full_recompute_agree_with_the_same_generator(head, kw):
    model = make(head, num_classes=3)
    y = torch.tensor([0, 1, 2, 1])
    a = model.generate(B, T, labels=y, generator=gen(7), **kw)
    b = model.generate(B, T, labels=y, generator=gen(7), use_cache=False, **kw)
    c = model.generate(B, T, labels=y, generator=gen(8), **kw)
    assert torch.isfinite(a).all()
    assert (a - b).abs().max().item() < 1e-5 * max(1.0, a.abs().max().item())  # float32 rounding, relative
    assert not torch.allclose(a, c)


def test_backbone_calls_and_cache_use():
    model = make("gmm")
    shapes = []
    hook = model.backbone.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    model.num_backbone_calls = 0
    model.generate(2, T, generator=gen(0))
    assert model.num_backbone_calls == T
    assert shapes == [(2, 1, 32)] * T  # one new position per call: the cache holds the rest
    shapes.clear()
    model.generate(2, T, generator=gen(0), use_cache=False)
    assert model.num_backbone_calls == 2 * T
    assert shapes == [(2, t + 1, 32) for t in range(T)]  # the baseline recomputes the prefix
    hook.remove()


def test_cfg_scale_one_is_conditional_sampling_and_null_class_feeds_uncond_branch():
    model = make("gmm", num_classes=4)
    y = torch.tensor([0, 3, 1, 2])
    seen = []
    hook = model.class_emb.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    plain = model.generate(B, T, labels=y, generator=gen(3))
    assert all(int(s.max()) < 4 for s in seen)  # the null row is never touched without guidance
    seen.clear()
    same = model.generate(B, T, labels=y, cfg_scale=1.0, generator=gen(3))
    assert torch.equal(plain, same)
    assert all(int(s.max()) < 4 for s in seen)
    seen.clear()
    guided = model.generate(B, T, labels=y, cfg_scale=3.0, generator=gen(3))
    looked_up = torch.cat(seen)
    assert torch.equal(looked_up, torch.cat([y, torch.full((B,), 4)]))  # cond | null, one 2B batch
    assert not torch.allclose(guided, plain)
    hook.remove()


def test_cfg_mixes_cond_and_null_states_of_the_fed_sequence():
    """Guided MSE generation: x_t = mu_u + s (mu_c - mu_u), both branches on the same fed prefix."""
    model = make("mse", num_classes=4)
    y, s = torch.tensor([0, 3, 1, 2]), 2.5
    out = model.generate(B, T, labels=y, cfg_scale=s)
    mu_c = model.head.mean(model.cond_states(out, y))
    mu_u = model.head.mean(model.cond_states(out, torch.full((B,), 4)))
    assert torch.allclose(out, mu_u + s * (mu_c - mu_u), atol=1e-5)
    with pytest.raises(ValueError, match="class-conditional"):
        make("mse").generate(2, 4, cfg_scale=2.0)


def test_reference_all_true_prefix_and_bernoulli_mix():
    model = make("mse")
    ref = torch.randn(B, T, D)
    every = model.generate(B, T, reference=ref, use_reference=torch.ones(B, T, dtype=torch.bool))
    assert torch.equal(every, ref)
    prefix = torch.zeros(B, T, dtype=torch.bool)
    prefix[:, :4] = True
    out = model.generate(B, T, reference=ref, use_reference=prefix)
    assert torch.equal(out[:, :4], ref[:, :4])
    pred = model.predict_parallel(out)  # sampled positions continue the reference prefix
    assert torch.allclose(out[:, 4:], pred[:, 4:], atol=1e-5)
    mask = torch.rand(B, T, generator=gen(1)) < 0.4
    mixed = model.generate(B, T, reference=ref, use_reference=mask)
    assert torch.equal(mixed[mask], ref[mask])
    assert torch.allclose(mixed[~mask], model.predict_parallel(mixed)[~mask], atol=1e-5)
    with pytest.raises(ValueError, match="use_reference"):
        model.generate(B, T, reference=ref, use_reference=mask.float())


def test_generate_errors_and_mode_restored():
    model = make("gmm").train()
    with pytest.raises(ValueError, match="max_len=16"):
        model.generate(1, 17)
    with pytest.raises(ValueError, match=r"\(B, T, 3\)"):
        model.loss(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="unknown head"):
        LatentAR(latent_dim=3, head="flow")
    model.generate(1, 3)
    assert model.training  # generate runs in eval mode and restores the caller's mode


# ---------------------------------------------------------------------------- save / load
def test_save_load_round_trip_and_latent_dim_mismatch(tmp_path):
    model = make("gmm", num_classes=3, head_kwargs={"num_mixtures": 4})
    z, y = torch.randn(B, T, D), torch.tensor([0, 1, 2, 0])
    model.save_pretrained(tmp_path / "ar")
    loaded = LatentAR.from_pretrained(tmp_path / "ar").eval()
    assert loaded.config == model.config
    assert torch.equal(loaded.loss(z, y, reduction="none"), model.loss(z, y, reduction="none"))
    assert torch.equal(loaded.generate(B, T, labels=y, cfg_scale=2.0, generator=gen(5)),
                       model.generate(B, T, labels=y, cfg_scale=2.0, generator=gen(5)))
    with pytest.raises(ValueError, match="shape mismatch"):
        LatentAR.from_pretrained(tmp_path / "ar", latent_dim=5)
