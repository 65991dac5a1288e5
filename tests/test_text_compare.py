"""`latentar compare text`: the long-form metrics against hand-worked examples and a loop
recompute, and the smoke preset end to end from the CLI (table, plots, resume)."""
import csv
import math

import pytest
import torch

from latentar import cli
from latentar.metrics.text import seq_rep_n
from latentar.models.char_lm import CharLM
from latentar.sweeps import text_compare as tc


def test_distinct_n_and_loops_on_worked_examples():
    assert tc.distinct_n([[1, 2, 3, 4, 5], [1, 2, 3, 4, 9]], 4) == pytest.approx(3 / 4)  # (1,2,3,4) twice
    assert math.isnan(tc.distinct_n([[1, 2]], 4))
    assert tc.is_loop([5, 6, 7] + [1, 2, 3] * 6)                 # period 3 through the tail
    assert tc.is_loop([9] * 20)                                  # period 1
    assert not tc.is_loop(list(range(20)))
    assert not tc.is_loop([1, 2, 3, 4, 5, 6, 7, 8, 9] * 3)       # period 9 > LOOP_PERIOD
    assert not tc.is_loop([1, 2] * 10 + [3])                     # the loop was broken at the end


def test_reference_nll_matches_a_position_by_position_recompute():
    torch.manual_seed(0)
    model = CharLM(d_model=32, depth=1, num_heads=2, max_len=16).eval()
    prompts = torch.randint(0, 256, (3, 4))
    ref, own = torch.randint(0, 256, (3, 5)), torch.randint(0, 256, (3, 5))
    nll_ref, nll_own = tc.reference_nll(model, prompts, ref, own)
    for i in range(3):
        for t in range(5):
            for prefix, got in ((ref, nll_ref), (own, nll_own)):
                ctx = torch.cat([prompts[i], prefix[i, :t]])[None]
                # the next-byte distribution after ctx, from the cached generator's first step
                logits = model(torch.cat([ctx, ref[i, t].view(1, 1)], 1)).double()[0, -1]
                expected = -torch.log_softmax(logits, -1)[ref[i, t]]
                assert got[i, t].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)
    assert torch.allclose(tc.reference_nll(model, prompts, ref, ref)[1], nll_ref)  # own = ref: no gap


def test_text_metrics_cut_each_length():
    gen = torch.tensor([[1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2], list(range(18))])
    nll = torch.arange(36, dtype=torch.float).view(2, 18)
    m = tc.text_metrics(gen, nll, nll + 1.0, [4, 18])
    assert m["seq_rep_4_L18"] == pytest.approx(seq_rep_n([gen[0].tolist(), gen[1].tolist()], 4))
    assert m["loop_rate_L18"] == 0.5 and m["nll_gap_L4"] == pytest.approx(1.0)
    assert m["nll_ref_L4"] == pytest.approx(float(nll[:, :4].mean()))


@pytest.mark.parametrize("argv, message", [
    (["--strategies", "sft,relabel"], "relabel"),
    (["--gen-len", "8,x"], "--gen-len"),
    (["--seeds", "0"], "--seeds must be an integer >= 1"),
    (["--block-size", "32", "--prompt-len", "16", "--gen-len", "32"], "never trained on"),
])
def test_bad_options_name_the_problem(capsys, tmp_path, argv, message):
    assert cli.main(["compare", "text", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentar compare text: error: ") and message in err and err.count("\n") == 1


def test_smoke_preset_end_to_end_and_resume(tmp_path):
    out = tmp_path / "text"
    argv = ["compare", "text", "--preset", "smoke", "--strategies", "sft,unlikelihood,bash,mixer", "--out", str(out),
            "--device", "cpu", "--no-progress", "--workers", "1"]
    assert cli.main(argv) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["strategy"] for r in rows] == ["sft", "unlikelihood", "bash", "mixer"]
    for r in rows:
        for L in (8, 16):
            assert 0.0 <= float(r[f"seq_rep_4_L{L}"]) <= 1.0 and 0.0 <= float(r[f"loop_rate_L{L}"]) <= 1.0
            assert float(r[f"nll_gap_L{L}"]) == pytest.approx(float(r[f"nll_own_L{L}"]) - float(r[f"nll_ref_L{L}"]))
    md = (out / "results.md").read_text()
    assert "## nll_gap" in md and "Every strategy against SFT" in md
    for png in [f"text_{m}.png" for m in tc.METRICS] + ["nll_by_position.png"]:
        assert (out / png).stat().st_size > 1000
    assert cli.main(argv) == 0  # every cell finished: no retraining, the same table
    with open(out / "results.csv") as f:
        assert list(csv.DictReader(f)) == rows


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", "text", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for action in tc.build_parser()._actions:
        for opt in action.option_strings:
            assert opt in text
        assert action.help, f"{action.option_strings} has no help"


def test_mixer_on_text_is_rewarded_by_bleu_and_gets_a_signal():
    """On text the sequence-level arms score n-gram overlap: a sampled continuation that shares no
    prefix with the block still earns a nonzero, row-varying reward (the prefix credit was ~0)."""
    from latentar.exposure.sequence_level import bleu_reward, prefix_reward
    strategy = tc.build_strategy("mixer", tc.TextCompareConfig())
    assert strategy.reward == "bleu"
    block = torch.tensor(list(b"def f(x):\n    return x + 1\n"))
    sample = torch.stack([block.roll(3), block.flip(0), torch.full_like(block, ord(" "))])
    assert (prefix_reward(sample, block, exact_bonus=0.5) == 0).all()
    bleu = bleu_reward(sample, block)
    assert (bleu > 0).all() and bleu[0] > bleu[1] > bleu[2]  # shifted copy > reversed > a run of spaces
