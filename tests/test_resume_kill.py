"""Exact resumption after a hard kill (SIGKILL: no handler, no save on exit).

Every (model, strategy) pair is trained three ways: straight for N steps; killed with ``kill -9`` at
a seeded random step k, mid-step, after its last checkpoint; resumed from that checkpoint in another
process (with a different initialisation, so everything must come from the checkpoint). The
resumed parameters, loss and per-step metrics must be bit-identical to the straight run's, and
``metrics.jsonl`` must hold each step once. BASH and RAC regenerate their pool at step 1 and 9:
the checkpoint (step 4) and the kill (5..7) fall between two regenerations, so the resumed run must
get the pool from the checkpoint. RAC relabels tokens, so it runs on CharLM only.

To pay the (slow) import once, one worker process forks a child per pair; each child trains and
stalls at its kill step after writing ``reached`` (its pid); this test sends it SIGKILL. The worker
runs the straight runs meanwhile, then every resume, and writes ``results.json``.
Run as a script, this file is that worker.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

N_STEPS, CKPT_EVERY, KILL_STEPS = 12, 4, (5, 6, 7)  # checkpoint at 4, kill in 5..7, regenerations at 1, 9
PAIRS = [("latent", s) for s in ("teacher_forcing", "scheduled_sampling", "context_noise", "bash")] + \
        [("char", s) for s in ("teacher_forcing", "scheduled_sampling", "context_noise", "bash", "rac")]
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _watch(proc: subprocess.Popen, markers: list[Path], deadline_s: float, kill) -> list[Path]:
    """Until ``proc`` exits: ``kill(marker)`` for every marker file as soon as it appears."""
    done: list[Path] = []
    t0 = time.monotonic()
    while proc.poll() is None:
        for m in markers:
            if m not in done and m.exists() and m.read_text().strip():
                kill(m)
                done.append(m)
        if time.monotonic() - t0 > deadline_s:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"worker still running after {deadline_s} s; killed markers {done}")
        time.sleep(0.02)
    return done


def test_kill9_then_resume_is_bit_identical_for_every_strategy(tmp_path):
    rng = random.Random(12)
    spec = [{"model": m, "strategy": s, "kill_at": rng.choice(KILL_STEPS), "dir": f"{m}-{s}"} for m, s in PAIRS]
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen([sys.executable, __file__, str(tmp_path), json.dumps(spec)], env=_env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    markers = [tmp_path / c["dir"] / "reached" for c in spec]
    killed = _watch(proc, markers, 300, lambda m: os.kill(int(m.read_text()), signal.SIGKILL))
    log.close()
    assert proc.returncode == 0, (tmp_path / "worker.log").read_text()[-4000:]
    assert len(killed) == len(spec)
    results = json.loads((tmp_path / "results.json").read_text())
    for c in spec:
        r = results[c["dir"]]
        assert r["killed_by"] == signal.SIGKILL, (c, r)
        # the kill landed after the checkpoint: steps ckpt+1..kill were logged and are redone
        assert r["ckpt_step"] == CKPT_EVERY < r["logged_before_kill"] == c["kill_at"], (c, r)
        if c["strategy"] in ("bash", "rac"):
            assert r["regen_steps_straight"] == [1, 9] and r["regen_steps_resumed"] == [9], (c, r)
        assert r["mismatched_params"] == [], (c, r)
        assert r["strategy_state_equal"], (c, r)  # the final pool, its statistics and its step
        assert r["loss_resumed"] == r["loss_straight"], (c, r)
        assert r["metrics_steps"] == list(range(1, N_STEPS + 1)), (c, r)
        assert r["metrics_equal_straight"], (c, r)


def test_ddp_two_ranks_kill9_then_resume_equals_straight_with_per_rank_dropout(tmp_path):
    worker = Path(__file__).parent / "ddp_worker.py"

    def torchrun(*extra: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
               str(tmp_path / "ddp"), "8", "--dropout", "0.2", "--run-dir", str(tmp_path / "run"), *extra]
        return subprocess.Popen(cmd, env=_env(), stdout=open(tmp_path / "ddp.log", "a"),
                                stderr=subprocess.STDOUT, start_new_session=True)

    kill_at = random.Random(3).choice([5, 6, 7])  # checkpoints every 4 steps of 12
    killed = torchrun("--stall-at", str(kill_at))
    _watch(killed, [tmp_path / "run" / "reached"], 240,
           lambda m: os.killpg(killed.pid, signal.SIGKILL))  # torchrun and both ranks
    assert killed.returncode == -signal.SIGKILL, (tmp_path / "ddp.log").read_text()[-3000:]
    assert not (tmp_path / "ddp.rank0.pt").exists()
    # resume (from another initialisation), then a straight two-rank run in the same launch
    resumed = torchrun("--init-seed", "7", "--straight-dir", str(tmp_path / "straight"))
    assert resumed.wait(timeout=240) == 0, (tmp_path / "ddp.log").read_text()[-3000:]
    b = [torch.load(tmp_path / f"ddp.rank{r}.pt") for r in (0, 1)]
    s = [torch.load(tmp_path / f"ddp-straight.rank{r}.pt") for r in (0, 1)]
    assert b[0]["start_step"] == b[1]["start_step"] == 4 and s[0]["start_step"] == 0
    for r in (0, 1):
        for k, v in s[r]["params"].items():
            assert torch.equal(v, b[r]["params"][k]), (r, k)
        assert torch.equal(s[r]["rng"], b[r]["rng"]), f"rank {r} did not resume its own RNG stream"
        assert torch.equal(s[r]["last_mask"], b[r]["last_mask"])
        assert s[r]["loss"] == b[r]["loss"]
    # dropout differs between ranks: different streams, different masks at the last step
    assert not torch.equal(b[0]["rng"], b[1]["rng"])
    assert not torch.equal(b[0]["last_mask"], b[1]["last_mask"])
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 13))


# ------------------------------------------------------------------------------------------ the worker
def _build(model_kind: str, strategy: str, init_seed: int):
    """(task, train_data) for one pair; the model initialised from ``init_seed``."""
    from torch.utils.data import Dataset

    from latentar.data import SeqTask
    from latentar.exposure import BASH, RAC, ContextNoise, ExposureTask, ScheduledSampling, TeacherForcing
    from latentar.models.char_lm import CharLM
    from latentar.models.latent_ar import LatentAR

    pool = dict(warmup_steps=1, regen_every=8, pool_size=16, gen_batch_size=16)
    make = {"teacher_forcing": TeacherForcing, "scheduled_sampling": lambda: ScheduledSampling("linear"),
            "context_noise": lambda: ContextNoise(0.3), "bash": lambda: BASH(beta=0.3, **pool),
            "rac": lambda: RAC(**pool)}
    strat = make[strategy]()
    if model_kind == "latent":
        class Latents(Dataset):
            x = torch.randn(64, 8, 3, generator=torch.Generator().manual_seed(0))

            def __len__(self):
                return len(self.x)

            def __getitem__(self, i):
                return self.x[i]

        torch.manual_seed(init_seed)
        model = LatentAR(latent_dim=3, d_model=16, depth=1, num_heads=2, max_len=8, dropout=0.1,
                         head_kwargs={"num_mixtures": 2})
        data = base = Latents()
    else:
        base = SeqTask("reverse", 3, 64, seed=0)
        data = strat.sft_dataset(base) if strategy == "rac" else base
        torch.manual_seed(init_seed)
        model = CharLM(d_model=16, depth=1, num_heads=2, max_len=data[0]["tokens"].numel(), dropout=0.1)
    return ExposureTask(model, strat, data=base), data


def _trainer(out_dir: Path):
    from latentar.train import Trainer
    return Trainer(max_steps=N_STEPS, batch_size=8, lr=3e-3, warmup_steps=2, ckpt_every=CKPT_EVERY, log_every=1,
                   device="cpu", progress=False, seed=5, out_dir=str(out_dir))


def _count_regens(task) -> list[int]:
    steps: list[int] = []
    if hasattr(task.strategy, "regenerate"):
        original = task.strategy.regenerate
        task.strategy.regenerate = lambda *a, **k: steps.append(task.step) or original(*a, **k)
    return steps


def _child(root: Path, c: dict) -> None:
    """Train until step ``kill_at``, then announce it and wait for SIGKILL, mid-step."""
    task, data = _build(c["model"], c["strategy"], init_seed=0)
    marker = root / c["dir"] / "reached"
    original = task.training_step

    def stalling(batch):
        if task.step == c["kill_at"]:
            marker.write_text(str(os.getpid()))
            time.sleep(600)
        return original(batch)

    task.training_step = stalling
    _trainer(root / c["dir"]).fit(task, data)


def _equal(a, b) -> bool:
    """Bitwise equality of two nests of dicts / lists / tensors / plain values."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a if k != "seconds")
    return a == b


def _worker(root: Path, spec: list[dict]) -> None:
    torch.set_num_threads(1)
    import latentar.models  # noqa: F401  (import before forking: once for all)
    from latentar.train import load_checkpoint

    children = {}
    for c in spec:
        (root / c["dir"]).mkdir(parents=True)
        pid = os.fork()
        if pid == 0:
            try:
                _child(root, c)
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                os._exit(1)  # reached only if the child was not killed
        children[c["dir"]] = pid

    results, straight = {}, {}
    for c in spec:  # the straight runs, while the children train
        task, data = _build(c["model"], c["strategy"], init_seed=0)
        regens = _count_regens(task)
        res = _trainer(root / f"{c['dir']}-straight").fit(task, data)
        straight[c["dir"]] = (task.state_dict(), res, regens)
    for c in spec:
        d = root / c["dir"]
        _, status = os.waitpid(children[c["dir"]], 0)
        r = {"killed_by": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
             "ckpt_step": load_checkpoint(d / "checkpoint.pt")["step"],
             "logged_before_kill": max(json.loads(x)["step"] for x in (d / "metrics.jsonl").read_text().splitlines())}
        task, data = _build(c["model"], c["strategy"], init_seed=123)  # everything must come from the checkpoint
        regens = _count_regens(task)
        res = _trainer(d).fit(task, data)
        ref_state, ref_res, ref_regens = straight[c["dir"]]
        state = task.state_dict()
        r["mismatched_params"] = [k for k, v in ref_state.items() if torch.is_tensor(v) and not torch.equal(v, state[k])]
        pool, ref_pool = state["_extra_state"]["state"], ref_state["_extra_state"]["state"]
        r["strategy_state_equal"] = _equal(pool, ref_pool)
        r["loss_straight"], r["loss_resumed"] = ref_res["loss"], res["loss"]
        r["regen_steps_straight"], r["regen_steps_resumed"] = ref_regens, regens
        records = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        ref = [json.loads(x) for x in (root / f"{c['dir']}-straight" / "metrics.jsonl").read_text().splitlines()]
        r["metrics_steps"] = [x["step"] for x in records]
        strip = lambda rs: [{k: v for k, v in x.items() if k != "samples_per_s"} for x in rs]  # noqa: E731
        r["metrics_equal_straight"] = strip(records) == strip(ref)
        results[c["dir"]] = r
    (root / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), json.loads(sys.argv[2]))
