"""bench/gpu_train.py at its CPU smoke size, so the GPU benchmark never rots without a GPU."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import load_bench


def _bench():
    return load_bench("gpu_train")


def test_smoke_run_prints_a_parsable_result(capsys):
    assert _bench().main(["--tiny", "--device", "cpu", "--peak-flops", "1e11", "--compile-backend", "aot_eager",
                          "--steps", "2", "--windows", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("RESULT ")
    values = dict(kv.split("=") for kv in last.split()[1:])
    assert set(values) == {"tokens_per_s", "mfu", "tokens_per_s_diffusion", "mfu_diffusion", "params_m"}
    for k in ("tokens_per_s", "tokens_per_s_diffusion"):
        assert float(values[k]) > 0
    for k in ("mfu", "mfu_diffusion"):
        assert 0 < float(values[k]) < 1


def test_counted_flops_match_the_closed_form_for_a_plain_backbone():
    """FlopCounterMode on a step of the MSE-head model (head: one linear layer) against 6N + 12LTd
    tokens: the two agree to within the head, the input projection and the attention-mask terms."""
    bench = _bench()
    args = type("Args", (), dict(bench.TINY))()
    model = bench.LatentAR(args.latent_dim, head="mse", d_model=args.d_model, depth=args.depth,
                           num_heads=args.num_heads, max_len=args.tokens, num_classes=10)
    counted = bench.step_flops(model, args, torch.device("cpu"), "fp32")
    estimate = bench.estimate_flops(model, args)
    assert math.isfinite(counted) and 0.9 * estimate < counted < 1.5 * estimate, (counted, estimate)


def test_bad_arguments_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as e:
        _bench().main(["--tiny", "--heads", "gmm,lstm", "--peak-flops", "1e11"])
    assert e.value.code == 2 and "lstm" in capsys.readouterr().err
