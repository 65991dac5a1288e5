import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentar.train import Trainer, TrainingInterrupted, load_checkpoint
from latentar.train import checkpoint as ckpt_mod
from latentar.train.trainer import cosine_with_warmup

sys.path.insert(0, os.path.dirname(__file__))
from tiny_task import make_task, tiny_data  # noqa: E402

KW = dict(batch_size=8, lr=0.02, warmup_steps=3, ema_decay=0.9, device="cpu", progress=False, seed=1, log_every=1)


def params(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


class InterruptAt:
    """Sends a signal to this process at a given step, as Ctrl-C (SIGINT) or a scheduler (SIGTERM) would."""

    def __init__(self, task, step, sig=signal.SIGINT):
        self.task, self.at, self.sig = task, step, sig

    def __call__(self, trainer):
        if trainer.step == self.at:
            os.kill(os.getpid(), self.sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_resume_is_exact(tmp_path, sig):
    n = 20  # 64 examples / batch 8 = 8 batches per epoch: the interrupt lands mid-epoch
    straight = make_task()
    res_a = Trainer(max_steps=n, **KW).fit(straight, tiny_data())

    task = make_task()
    task.on_train_step_start = InterruptAt(task, n // 2, sig)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(max_steps=n, out_dir=tmp_path, **KW).fit(task, tiny_data())
    # the signal came during the step hook: the run stops before that step's update
    assert info.value.step == n // 2 and task.calls == n // 2
    assert info.value.checkpoint == tmp_path / "checkpoint.pt"
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == n // 2

    resumed = make_task(seed=123)  # different init: everything must come from the checkpoint
    res_b = Trainer(max_steps=n, out_dir=tmp_path, **KW).fit(resumed, tiny_data())
    for k, v in params(straight).items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert res_a["loss"] == res_b["loss"]
    assert res_b["step"] == n
    # metrics.jsonl holds one line per step across both runs
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == n


def test_finished_run_is_not_retrained(tmp_path):
    task = make_task()
    Trainer(max_steps=4, out_dir=tmp_path, **KW).fit(task, tiny_data())
    before = params(task)
    again = make_task(seed=5)
    res = Trainer(max_steps=4, out_dir=tmp_path, **KW).fit(again, tiny_data())
    assert res["step"] == 4 and all(torch.equal(v, again.state_dict()[k]) for k, v in before.items())


def test_interrupted_write_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    task = make_task()
    trainer = Trainer(max_steps=3, out_dir=tmp_path, **KW)
    trainer.fit(task, tiny_data())
    good = (tmp_path / "checkpoint.pt").read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3


def test_resume_rejects_incompatible_checkpoint(tmp_path):
    Trainer(max_steps=2, out_dir=tmp_path, **KW).fit(make_task(), tiny_data())
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(max_steps=4, out_dir=tmp_path, **{**KW, "batch_size": 4}).fit(make_task(), tiny_data())
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        Trainer(max_steps=4, out_dir=tmp_path, **KW).fit(make_task(), tiny_data())


def test_nan_loss_names_the_step():
    with pytest.raises(FloatingPointError, match="at step 5"):
        Trainer(max_steps=10, **KW).fit(make_task(nan_at_step=5), tiny_data())


def test_grad_accumulation_matches_big_batch():
    a, b = make_task(dropout=0.0), make_task(dropout=0.0)
    kw = {**KW, "ema_decay": None}
    Trainer(max_steps=6, **{**kw, "batch_size": 8}).fit(a, tiny_data())
    Trainer(max_steps=6, **{**kw, "batch_size": 4, "grad_accum": 2}).fit(b, tiny_data())
    for k, v in params(a).items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=1e-5, atol=1e-6)


def test_cosine_schedule_closed_form():
    f = cosine_with_warmup(warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_ema_tracks_weights():
    task = make_task(dropout=0.0)
    tr = Trainer(max_steps=5, **KW)
    tr.fit(task, tiny_data())
    live = params(task)
    with tr.ema_model() as m:
        assert any(not torch.equal(v, m.state_dict()[k]) for k, v in live.items())
    assert all(torch.equal(v, task.state_dict()[k]) for k, v in live.items())


def test_ddp_two_ranks_match_single_process(tmp_path):
    worker = Path(__file__).parent / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           str(worker), str(tmp_path / "ddp"), "4"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = tmp_path / "single"
    proc = subprocess.run([sys.executable, str(worker), str(single), "8"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(f"{tmp_path}/ddp.rank0.pt"), torch.load(f"{tmp_path}/ddp.rank1.pt")
    ref = torch.load(f"{single}.rank0.pt")
    for k in ref:
        assert torch.equal(r0[k], r1[k]), k
        torch.testing.assert_close(r0[k], ref[k], rtol=1e-5, atol=1e-6)


def test_signal_during_a_step_stops_after_that_step(tmp_path):
    task = make_task()
    original = task.training_step

    def step_then_sigterm(batch):
        if task.calls == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(batch)

    task.training_step = step_then_sigterm
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(max_steps=10, out_dir=tmp_path, **KW).fit(task, tiny_data())
    assert info.value.step == 4 and task.calls == 4


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    torch.save({"version": 2, "step": 0, "payload": Evil(marker)}, ckpt)
    with pytest.raises(ValueError, match="refused to load checkpoint") as info:
        Trainer(max_steps=2, out_dir=ckpt.parent, **KW).fit(make_task(), tiny_data())
    assert str(ckpt) in str(info.value) and "system" in str(info.value)
    assert not marker.exists()
    # the payload is real: an unrestricted load would have run it
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np
    random.seed(4), np.random.seed(4), torch.manual_seed(4)
    random.gauss(0, 1), np.random.normal()  # cached gaussians are part of the state
    ckpt_mod.atomic_save({"rng": ckpt_mod.rng_state()}, tmp_path / "c.pt")
    first = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.normal(), torch.rand(3))
    ckpt_mod.set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.normal(), torch.rand(3))
    assert first[:4] == again[:4] and torch.equal(first[4], again[4])


def test_orphan_temporary_files_are_removed(tmp_path):
    orphans = [tmp_path / "checkpoint.pt.k3j9x.tmp", tmp_path / "metrics.jsonl.a1b2.tmp"]
    for p in orphans:
        p.write_bytes(b"half a file")
    (tmp_path / "notes.tmp").write_text("not ours")
    Trainer(max_steps=2, out_dir=tmp_path, **KW).fit(make_task(), tiny_data())
    assert not any(p.exists() for p in orphans)
    assert (tmp_path / "notes.tmp").exists() and sorted(p.name for p in tmp_path.glob("*.tmp")) == ["notes.tmp"]


def test_metrics_are_cut_back_to_the_checkpoint_and_a_longer_run_warns(tmp_path):
    Trainer(max_steps=4, out_dir=tmp_path, **KW).fit(make_task(), tiny_data())
    with open(tmp_path / "metrics.jsonl", "a") as f:  # what a run killed after its checkpoint leaves
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + '{"step": 6, "lo')
    with pytest.warns(UserWarning, match="cosine lr schedule changes"):
        Trainer(max_steps=6, out_dir=tmp_path, **KW).fit(make_task(), tiny_data())
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("key, value", [("lr", 0.01), ("betas", (0.8, 0.95)), ("weight_decay", 0.1),
                                        ("warmup_steps", 1), ("min_lr_ratio", 0.5), ("grad_clip", 0.5)])
def test_resume_refuses_changed_optimizer_settings(tmp_path, key, value):
    Trainer(max_steps=2, out_dir=tmp_path, **KW).fit(make_task(), tiny_data())
    before = {**KW, "grad_clip": 1.0, "weight_decay": 0.0, "betas": (0.9, 0.95), "min_lr_ratio": 0.1}[key]
    with pytest.raises(ValueError, match=key) as info:
        Trainer(max_steps=4, out_dir=tmp_path, **{**KW, key: value}).fit(make_task(), tiny_data())
    msg = str(info.value)
    for v in (before, value):
        assert repr(list(v) if isinstance(v, tuple) else float(v) if key != "warmup_steps" else v) in msg, msg


def test_resume_refuses_fewer_max_steps_than_done(tmp_path):
    Trainer(max_steps=4, out_dir=tmp_path, **KW).fit(make_task(), tiny_data())
    with pytest.raises(ValueError, match=r"already done 4 steps.*max_steps=2"):
        Trainer(max_steps=2, out_dir=tmp_path, **KW).fit(make_task(), tiny_data())


@pytest.mark.parametrize("kw", [{"grad_clip": -1.0}, {"grad_clip": float("nan")}, {"lr": 0.0}, {"lr": -1e-3},
                                {"lr": float("inf")}, {"lr": float("nan")}, {"betas": (1.0, 0.9)},
                                {"betas": (0.9, float("nan"))}, {"betas": (0.9,)}, {"weight_decay": -0.1},
                                {"weight_decay": float("nan")}, {"warmup_steps": -1}, {"min_lr_ratio": 1.5},
                                {"min_lr_ratio": -0.1}, {"ema_decay": 1.0}, {"ema_decay": 0.0},
                                {"ema_decay": float("nan")}])
def test_bad_optimizer_arguments_are_refused(kw):
    key = next(iter(kw))
    with pytest.raises(ValueError, match=key):
        Trainer(**{**KW, **kw})
