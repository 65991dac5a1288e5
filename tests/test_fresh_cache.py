"""A fresh machine has an empty cache: every cached artifact must build from nothing, whatever
grad or eval mode its first caller is in, and two processes finding the empty cache at once must
not corrupt it (latentar.data.cache.build_once)."""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from latentar.data.cache import build_once

ROOT = Path(__file__).resolve().parents[1]


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, LATENTAR_CACHE=str(cache), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("LATENTAR_DEBUG", None)
    return env


def test_demo_path_from_an_empty_cache(tmp_path):
    """What `make demo` runs (smoke size), in a new process, with nothing cached: the digits
    classifier is first needed inside a ``torch.no_grad()`` report and must still train."""
    cache, out = tmp_path / "cache", tmp_path / "sweep"
    cmd = [sys.executable, "-m", "latentar.cli", "sweep", "variance", "--preset", "smoke", "--c-sigma", "0.5",
           "--generators", "gmm", "--strategies", "tf", "--cfg", "1", "--seeds", "1", "--steps", "20",
           "--tok-steps", "20", "--out", str(out), "--quiet"]
    r = subprocess.run(cmd, env=_env(cache), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["fd_cfg1"]))
    assert (out / "fd_vs_c_sigma.png").stat().st_size > 0
    assert (cache / "digits_classifier" / "v1" / "diffusion_pytorch_model.safetensors").is_file()
    assert not [p for p in (cache / "digits_classifier").iterdir() if p.name.endswith(".tmp")]


_RACE = textwrap.dedent("""
    import sys, time, torch
    from latentar.metrics.digits_classifier import load_digits_classifier
    while time.time() < float(sys.argv[1]):
        time.sleep(0.01)
    with torch.inference_mode():
        m = load_digits_classifier()
    print(sum(float(p.double().sum()) for p in m.parameters()))
""")


def test_two_processes_build_one_classifier_from_an_empty_cache(tmp_path):
    """Both start at the same instant under inference mode; both get the same complete model."""
    import time
    cache = tmp_path / "cache"
    start = str(time.time() + 4.0)  # both interpreters are up and waiting by then
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, start], env=_env(cache), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
    sums = [float(o.strip().splitlines()[-1]) for o, _ in outs]
    assert sums[0] == sums[1]
    folder = cache / "digits_classifier"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["v1"]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_build_once_runs_with_grad_and_a_forked_rng_whatever_the_caller(tmp_path):
    calls = []

    def build(tmp: Path) -> None:
        calls.append(1)
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        w = torch.zeros(3, requires_grad=True)
        (w * torch.randn(3)).sum().backward()  # a training step: needs grad
        (tmp / "w.txt").write_text(str(w.grad.tolist()))

    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    with torch.inference_mode():
        build_once(tmp_path / "art", build)
    assert torch.equal(torch.rand(2), expected)  # the build did not move the caller's RNG
    build_once(tmp_path / "art", build)  # complete: not built again
    assert calls == [1] and (tmp_path / "art" / "w.txt").is_file()


def test_build_once_leaves_nothing_half_built_when_the_build_fails(tmp_path):
    def build(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        build_once(tmp_path / "art", build)
    assert not (tmp_path / "art").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".art.lock"]


def test_build_once_replaces_an_incomplete_artifact(tmp_path):
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "partial").write_text("x")
    build_once(tmp_path / "art", lambda tmp: (tmp / "done").write_text("ok"), ready=lambda p: (p / "done").is_file())
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["done"]


def test_text_charlm_builds_under_no_grad_from_an_empty_cache(tmp_path, monkeypatch):
    """The soft-prompt LM cache trains with the shared Trainer; its first caller may be in no_grad."""
    from latentar.softprompt import pretrained_charlm as pc

    monkeypatch.setenv("LATENTAR_CACHE", str(tmp_path))
    tiny = (dict(d_model=16, depth=1, num_heads=2, max_len=32),
            dict(max_steps=3, batch_size=4, block_size=16, lr=3e-3, max_bytes=20_000))
    monkeypatch.setitem(pc.TEXT_CHARLM_PRESETS, "tiny", tiny)
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    with torch.no_grad():
        lm = pc.text_charlm("tiny")
    assert torch.equal(torch.rand(1), expected)
    again = pc.text_charlm("tiny")  # from the cache now
    for a, b in zip(lm.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        fresh = pc.text_charlm("tiny", cache=False)  # trained again, identically
    for a, b in zip(lm.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
