"""TeacherForcing, ScheduledSampling and ContextNoise on LatentAR (latents) and CharLM (tokens)."""
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset, default_collate

from latentar.data import SeqTask
from latentar.exposure import (BASH, ContextNoise, ExposureTask, ScheduledSampling, TeacherForcing, unpack_batch)
from latentar.exposure.base import mix
from latentar.models import LatentAR
from latentar.models.char_lm import CharLM
from latentar.train import Trainer

B, T, D = 6, 8, 3


def latent_model(**kw):
    torch.manual_seed(0)
    return LatentAR(latent_dim=D, d_model=32, depth=1, num_heads=2, max_len=T, head_kwargs={"num_mixtures": 3}, **kw)


def token_model(**kw):
    torch.manual_seed(0)
    return CharLM(d_model=32, depth=1, num_heads=2, max_len=16, **kw)


def latents(seed=1, n=B):
    return torch.randn(n, T, D, generator=torch.Generator().manual_seed(seed))


def seq_batch(n=4):
    data = SeqTask("copy", 4, n, alphabet="abcd")
    return unpack_batch(default_collate([data[i] for i in range(n)]))


class Spy(nn.Module):
    """Forwards the protocol to a model and records what the strategy handed it."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.preds, self.pred_inputs, self.loss_calls = [], [], []

    def predict_parallel(self, x, **kw):
        self.pred_inputs.append(x.clone())
        out = self.model.predict_parallel(x, **kw)
        self.preds.append(out.clone())
        return out

    def loss(self, x, **kw):
        self.loss_calls.append({"x": x.clone(), **{k: v.clone() if torch.is_tensor(v) else v for k, v in kw.items()}})
        return self.model.loss(x, **kw)

    def generate(self, *a, **kw):
        return self.model.generate(*a, **kw)


def loss_and_grads(model, fn, seed=123):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------------------- teacher forcing = model.loss
def test_teacher_forcing_is_the_model_loss():
    m = latent_model()
    m.eval()
    x = latents()
    loss, metrics = TeacherForcing()(m, x)
    assert torch.equal(loss, m.loss(x)) and metrics == {}
    assert TeacherForcing.targets_valid and ContextNoise.targets_valid
    assert not ScheduledSampling.targets_valid and not BASH.targets_valid


# ---------------------------------------------------------------------------- p = 0 is teacher forcing, exactly
@pytest.mark.parametrize("schedule", [0.0, "linear"])
def test_ss_p0_equals_teacher_forcing_exactly_latents(schedule):
    # class dropout and transformer dropout both draw from the RNG: equality must be bitwise anyway
    m = latent_model(num_classes=3, class_dropout=0.5, dropout=0.1)
    m.train()
    x, y = latents(), torch.tensor([0, 1, 2, 0, 1, 2])
    tf_loss, tf_grads = loss_and_grads(m, lambda: TeacherForcing()(m, x, labels=y)[0])
    ss = ScheduledSampling(schedule)
    ss_loss, ss_grads = loss_and_grads(m, lambda: ss(m, x, progress=0.0, labels=y)[0])
    assert torch.equal(tf_loss, ss_loss)
    assert tf_grads.keys() == ss_grads.keys() and len(tf_grads) > 5
    for k in tf_grads:
        assert torch.equal(tf_grads[k], ss_grads[k]), k


def test_ss_p0_equals_teacher_forcing_exactly_tokens():
    m = token_model(dropout=0.1)
    m.train()
    b = seq_batch()
    tf_loss, tf_grads = loss_and_grads(m, lambda: TeacherForcing()(m, b.x, loss_mask=b.loss_mask)[0])
    ss = ScheduledSampling("exponential", mode="argmax")
    ss_loss, ss_grads = loss_and_grads(m, lambda: ss(m, b.x, progress=0.0, loss_mask=b.loss_mask)[0])
    assert torch.equal(tf_loss, ss_loss)
    for k in tf_grads:
        assert torch.equal(tf_grads[k], ss_grads[k]), k


def test_ss_with_no_position_replaced_runs_both_passes_and_equals_teacher_forcing():
    m = latent_model()  # unconditional, no dropout: the loss does not depend on the RNG
    spy = Spy(m)
    x = latents()
    tf_loss, tf_grads = loss_and_grads(m, lambda: m.loss(x))
    ss = ScheduledSampling(1e-12)
    ss_loss, ss_grads = loss_and_grads(m, lambda: ss(spy, x)[0])
    assert len(spy.preds) == 1  # pass 1 ran
    assert torch.equal(spy.loss_calls[0]["context"], x)
    assert torch.equal(tf_loss, ss_loss)
    for k in tf_grads:
        assert torch.equal(tf_grads[k], ss_grads[k]), k


# ---------------------------------------------------------------------------- p = 1 feeds only samples
def test_ss_p1_feeds_only_model_samples_and_keeps_targets_latents():
    spy = Spy(latent_model())
    x = latents()
    x0 = x.clone()
    loss, metrics = ScheduledSampling(1.0)(spy, x)
    call = spy.loss_calls[0]
    assert torch.equal(call["context"], spy.preds[0])          # every context position is a sample
    assert not torch.isclose(call["context"], x).any()          # ... none is the ground truth
    assert torch.equal(call["x"], x0) and torch.equal(x, x0)    # targets unchanged, input not mutated
    assert metrics["ss_p"] == 1.0 and metrics["ss_share"] == 1.0
    assert loss.requires_grad


def test_ss_p1_tokens_replaces_only_trained_positions():
    spy = Spy(token_model())
    b = seq_batch()
    x0 = b.x.clone()
    ScheduledSampling(1.0, mode="sample")(spy, b.x, loss_mask=b.loss_mask)
    call = spy.loss_calls[0]
    ctx, pred, mask = call["context"], spy.preds[0], b.loss_mask
    assert torch.equal(ctx[mask], pred[mask])        # answer positions: the model's tokens
    assert torch.equal(ctx[~mask], x0[~mask])        # prompt and SEP: ground truth
    assert torch.equal(call["x"], x0) and torch.equal(call["loss_mask"], mask)


def test_ss_argmax_tokens_are_the_model_argmax():
    m = token_model()
    spy = Spy(m)
    b = seq_batch()
    ScheduledSampling(1.0, mode="argmax")(spy, b.x, loss_mask=b.loss_mask)
    with torch.no_grad():
        expected = m(b.x).argmax(-1)
    assert torch.equal(spy.preds[0], expected)


def test_ss_argmax_on_latents_is_refused():
    with pytest.raises(ValueError, match="tokens only"):
        ScheduledSampling(1.0, mode="argmax")(latent_model(), latents())


def test_ss_share_follows_p():
    torch.manual_seed(0)
    spy = Spy(latent_model())
    x = latents(n=64)
    p = 0.3
    _, metrics = ScheduledSampling("linear", {"end": 1.0})(spy, x, progress=p)
    n = x.shape[0] * T
    assert abs(metrics["ss_share"] - p) < 4 * (p * (1 - p) / n) ** 0.5
    replaced = (spy.loss_calls[0]["context"] != x).any(-1)
    assert replaced.float().mean().item() == pytest.approx(metrics["ss_share"])


def test_ss_more_passes_iterate_on_their_own_output():
    torch.manual_seed(0)
    spy = Spy(latent_model())
    x = latents()
    ScheduledSampling(0.5, passes=4)(spy, x)
    assert len(spy.preds) == 3
    ctx = spy.loss_calls[0]["context"]
    replaced = (ctx != x).any(-1)                       # the coins, drawn once
    assert torch.equal(spy.pred_inputs[0], x)
    for k in (1, 2):                                    # pass k reads the mix of pass k-1's samples
        assert torch.equal(spy.pred_inputs[k], mix(replaced, spy.preds[k - 1], x))
    assert torch.equal(ctx, mix(replaced, spy.preds[2], x))


def test_ss_argument_errors():
    with pytest.raises(ValueError, match="passes"):
        ScheduledSampling(passes=1)
    with pytest.raises(ValueError, match="mode"):
        ScheduledSampling(mode="greedy")
    with pytest.raises(ValueError, match="probability"):
        ScheduledSampling(lambda e: 2.0).probability(0.5)
    with pytest.raises(ValueError, match="nan"):
        ScheduledSampling(float("nan"))
    with pytest.raises(ValueError, match="nan"):
        ScheduledSampling(lambda e: float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        ScheduledSampling(temperature=float("nan"))
    for sigma in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="sigma_ctx"):
            ContextNoise(sigma)


# ---------------------------------------------------------------------------- context noise
def test_context_noise_latents_noises_the_context_only():
    spy = Spy(latent_model())
    x = latents(n=64)
    torch.manual_seed(0)
    ContextNoise(sigma_ctx=0.3)(spy, x)
    call = spy.loss_calls[0]
    assert torch.equal(call["x"], x)                               # clean targets
    noise = call["context"] - x
    assert noise.std().item() == pytest.approx(0.3, rel=0.05)
    assert abs(noise.mean().item()) < 0.02


def test_context_noise_latents_respects_a_loss_mask():
    class MaskedToy(nn.Module):
        def loss(self, x, context=None, loss_mask=None):
            self.seen = (x, context, loss_mask)
            return (context - x).pow(2).sum()
        predict_parallel = generate = None

    toy = MaskedToy()
    x = latents()
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, 3:] = True
    ContextNoise(sigma_ctx=1.0)(toy, x, loss_mask=mask)
    _, context, seen_mask = toy.seen
    assert torch.equal(context[~mask], x[~mask]) and (context[mask] != x[mask]).all()
    assert torch.equal(seen_mask, mask)


def test_context_noise_tokens_uses_the_model_embedding_noise_on_trained_positions():
    m = token_model()
    spy = Spy(m)
    b = seq_batch()
    torch.manual_seed(5)
    loss, _ = ContextNoise(sigma_ctx=0.7)(spy, b.x, loss_mask=b.loss_mask)
    scale = spy.loss_calls[0]["context_noise"]
    assert torch.equal(scale, 0.7 * b.loss_mask.float())
    torch.manual_seed(5)
    assert torch.equal(loss, m.loss(b.x, context_noise=0.7 * b.loss_mask.float(), loss_mask=b.loss_mask))
    assert not torch.equal(loss, m.loss(b.x, loss_mask=b.loss_mask))


# ---------------------------------------------------------------------------- ExposureTask + Trainer
def test_exposure_task_feeds_training_progress_to_the_schedule():
    data = TensorDataset(latents(n=32))
    task = ExposureTask(latent_model(), ScheduledSampling("linear"))

    class Unwrap(torch.utils.data.Dataset):  # yield bare (T, D) tensors, not 1-tuples
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i][0]

    trainer = Trainer(max_steps=4, batch_size=8, lr=1e-3, log_every=1, device="cpu", progress=False,
                      handle_signals=False)
    trainer.fit(task, Unwrap())
    assert [h["ss_p"] for h in trainer.history] == [0.0, 0.25, 0.5, 0.75]
    # validation is the teacher-forced loss, whatever the strategy
    first8 = torch.utils.data.Subset(Unwrap(), range(8))
    val = trainer.evaluate(first8)["val/loss"]
    with torch.no_grad():
        task.model.eval()
        assert val == pytest.approx(float(task.model.loss(data.tensors[0][:8])), rel=1e-6)


def test_exposure_task_rejects_a_model_without_the_protocol():
    with pytest.raises(TypeError, match="sequence-model protocol"):
        ExposureTask(nn.Linear(2, 2), TeacherForcing())


def test_unpack_batch_layouts():
    x = latents()
    y = torch.arange(B)
    assert unpack_batch(x).x is x
    assert unpack_batch([x]).x is x and unpack_batch([x]).labels is None  # an unlabelled TensorDataset (audio)
    b = unpack_batch((x, y))
    assert b.labels is y and b.loss_mask is None
    inp, tgt = torch.randint(0, 9, (2, 5)), torch.randint(0, 9, (2, 5))
    b = unpack_batch((inp, tgt))
    assert torch.equal(b.x[:, 1:], tgt) and not b.loss_mask[:, 0].any() and b.loss_mask[:, 1:].all()
    sb = seq_batch()
    assert sb.loss_mask.shape == sb.x.shape and not sb.loss_mask[:, :5].any() and sb.loss_mask[:, 5:].all()
    with pytest.raises(ValueError, match="tokens"):
        unpack_batch({"input_ids": inp})
    with pytest.raises(ValueError, match="loss_mask"):
        unpack_batch({"tokens": inp, "loss_mask": torch.ones(2, 3, dtype=torch.bool)})
