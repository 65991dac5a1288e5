"""The compounding tasks (latentar.data.compounding): answers, checkers and the expert against
hand-worked examples, and their SeqTask packing (checker on ids, expert targets after every prefix)."""
import random

import pytest
import torch

from latentar.data.compounding import COMPOUNDING
from latentar.data.seq_tasks import EOS, PAD, SEP, SeqTask, encode_bytes, solve

# (task, prompt, answer worked by hand, final answer)
WORKED = [
    ("running_sum", b"2614", b"2893", b"3"),                      # 2, 2+6=8, 8+1=9, 9+4=13 -> 3
    ("chain", b"23-6+8+8-2", b"17;25;33;31;", b"31;"),            # 23-6=17, +8=25, +8=33, -2=31
    ("chain", b"95+7-9", b"02;93;", b"93;"),                      # mod 100: 95+7=102 -> 02, 2-9 -> 93
    # LSD first: a = 4356, b = 6654; digit/carry per column: 6+4=10 -> "01", 5+5+1=11 -> "11", ...
    ("add_lsd", b"6534+4566", b"01110111", b"11010"),             # 4356 + 6654 = 11010
]


@pytest.mark.parametrize("task, prompt, answer, final", WORKED)
def test_answers_and_checker_on_worked_examples(task, prompt, answer, final):
    t = COMPOUNDING[task]
    assert solve(task, prompt) == answer
    assert t.final(t.states(prompt)) == final
    assert t.check(prompt, answer) == {"final_exact": 1.0, "step_exact": 1.0, "step_valid": 1.0, "exact": 1.0}


def test_checker_separates_a_fresh_mistake_from_inherited_ones():
    t = COMPOUNDING["running_sum"]
    # "2614": step 2 writes 7 (wrong: 2+6=8); steps 3 and 4 are right *given* what was written
    # (7+1=8, 8+4=12 -> 2) but differ from the reference 9, 3: one fresh mistake, two inherited.
    assert t.check(b"2614", b"2782") == {"final_exact": 0.0, "step_exact": 0.25, "step_valid": 0.75, "exact": 0.0}
    # a truncated answer: missing steps are neither exact nor valid, and there is no final answer
    assert t.check(b"2614", b"28") == {"final_exact": 0.0, "step_exact": 0.5, "step_valid": 0.5, "exact": 0.0}
    c = COMPOUNDING["chain"]
    # an unreadable field ("1x;") is wrong; the next step is scored against the true state 17
    got = c.check(b"23-6+8", b"1x;25;")
    assert got["step_valid"] == 0.5 and got["step_exact"] == 0.5 and got["final_exact"] == 0.0


def test_add_lsd_final_answer_follows_the_written_steps():
    t = COMPOUNDING["add_lsd"]
    # the written steps are internally consistent with a wrong first digit: the final answer is
    # the sum those steps spell (MSD first), which is not the true sum
    assert t.check(b"6534+4566", b"11110111") == {"final_exact": 0.0, "step_exact": 0.75, "step_valid": 0.75,
                                                   "exact": 0.0}


def test_expert_continues_from_the_prefix_as_written():
    rs, ch, add = COMPOUNDING["running_sum"], COMPOUNDING["chain"], COMPOUNDING["add_lsd"]
    assert rs.next_byte(b"2614", b"") == ord("2")
    assert rs.next_byte(b"2614", b"27") == ord("8")        # 7 + 1, not the reference 9
    assert rs.next_byte(b"2614", b"2789") is None          # complete: EOS
    assert ch.next_byte(b"23-6+8", b"17;") == ord("2")
    assert ch.next_byte(b"23-6+8", b"18;2") == ord("6")    # 18 + 8 = 26
    assert ch.next_byte(b"23-6+8", b"1x;") == ord("2")     # unreadable: from the true state 17 -> 25
    assert ch.next_byte(b"23-6+8", b"17") == ord(";")
    assert add.next_byte(b"6534+4566", b"00") == ord("0")  # no carry written: 5 + 5 + 0 = 10 -> "0"
    assert add.next_byte(b"6534+4566", b"000") == ord("1")


@pytest.mark.parametrize("task", sorted(COMPOUNDING))
def test_expert_reproduces_the_reference_and_prompts_parse(task):
    t = COMPOUNDING[task]
    rng = random.Random(0)
    for n in (1, 3, 7):
        for _ in range(20):
            p = t.draw_prompt(rng, n)
            assert len(p) == t.prompt_len(n)
            ref = t.solve(p)
            assert len(ref) == t.answer_len(n)
            assert bytes(t.next_byte(p, ref[:j]) for j in range(len(ref))) == ref
            assert t.next_byte(p, ref) is None
    with pytest.raises(ValueError, match=task):
        t.parse(b"x?")


def test_seq_task_packs_a_compounding_task_with_its_checker_and_expert():
    ds = SeqTask("chain", 4, 50, seed=0)
    assert ds.max_answer_len == 12 and ds.max_prompt_len == 10
    item = ds[0]
    assert item["tokens"].shape[0] == ds.seq_len
    prompt, answer = ds.example(0)
    assert ds.check(prompt, torch.tensor(encode_bytes(answer) + [EOS, PAD]))["exact"] == 1.0
    # the expert after every prefix of a corrupted answer: the continuation right for that prefix
    bad = bytearray(answer)
    bad[1] = ord("0") + (bad[1] - ord("0") + 1) % 10           # the first value written wrong
    ids = torch.tensor(encode_bytes(bytes(bad)) + [EOS, PAD])
    targets = ds.expert_targets(item["prompt_ids"], ids)
    t = COMPOUNDING["chain"]
    expected = [t.next_byte(prompt, bytes(bad[:j])) for j in range(len(bad))]
    assert targets[:len(bad)].tolist() == expected and targets[len(bad)].item() == EOS
    assert targets[len(bad) + 1].item() == PAD                 # after EOS nothing is continued
    assert item["prompt_ids"][-1].item() == SEP
    with pytest.raises(ValueError, match="compounding"):
        SeqTask("reverse", 4, 5).check(b"abcd", [1, 2])


@pytest.mark.slow
def test_a_trained_sft_model_compounds_its_errors_on_chain(tmp_path):
    """The proof a task must give (measured: err_own 0.33 vs err_gt 0.23 at this budget): an SFT
    CharLM part-way through learning ``chain`` errs more under its own prefix than under the
    reference prefix, because a wrong intermediate value makes every later value wrong."""
    from latentar.sweeps import discrete
    cfg = discrete.CompareConfig.from_preset("quick", tasks=["chain"], lengths=[6], strategies=["sft"], seeds=1,
                                             steps=1000, device="cpu", out=str(tmp_path), progress=False)
    r = discrete.run_cell({"task": "chain", "strategy": "sft", "len": 6, "seed": 0}, tmp_path, cfg)
    assert r["err_gt_mean"] < 0.5                     # competent under teacher forcing ...
    assert r["exposure_gap"] > 0.03                   # ... and worse on its own prefix
    assert r["step_valid"] > r["step_exact"]          # its later steps follow its own (wrong) values
