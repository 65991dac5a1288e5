"""Huszar's argument on the length-2 toy: teacher forcing recovers the joint, fully annealed
scheduled sampling lands on the product of the marginals, context noise keeps the dependence."""
import json
import math

import pytest
import torch

from latentar import cli
from latentar.data.toys import length2_joint, product_of_marginals
from latentar.demos.huszar import PairLM, kl, run_huszar


@pytest.fixture(scope="module")
def numbers():
    return run_huszar(steps=300, seed=0)


def test_scheduled_sampling_converges_to_the_product_of_marginals(numbers):
    ss = numbers["strategies"]["scheduled_sampling_p1"]
    assert ss["kl_product"] < 0.02 and ss["kl_joint"] > 0.2
    assert not ss["targets_valid"]


def test_teacher_forcing_recovers_the_joint(numbers):
    tf = numbers["strategies"]["teacher_forcing"]
    assert tf["kl_joint"] < 0.02
    assert tf["kl_product"] == pytest.approx(numbers["reference"]["mutual_information"], abs=0.05)


def test_context_noise_does_not_collapse(numbers):
    cn = numbers["strategies"]["context_noise"]
    mi = numbers["reference"]["mutual_information"]
    assert cn["kl_product"] > 0.5 * mi and cn["kl_joint"] < 0.1
    assert cn["targets_valid"]


def test_reference_numbers_are_closed_form():
    joint = length2_joint(4, 0.9)
    # mutual information of the toy: log K - H(0.9, 0.1/3, 0.1/3, 0.1/3)
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1 / 3))
    assert kl(joint, product_of_marginals(joint)) == pytest.approx(math.log(4.0) - h, abs=1e-12)
    assert kl(joint, joint) == 0.0


def test_pair_lm_joint_table_matches_its_sampler():
    torch.manual_seed(0)
    m = PairLM(num_symbols=3)
    Q = m.joint_table()
    assert Q.sum().item() == pytest.approx(1.0, abs=1e-9)
    x = m.generate(20000, 2, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(x[:, 0] * 3 + x[:, 1], minlength=9).double().view(3, 3) / 20000
    assert torch.allclose(freq, Q, atol=0.015)
    # and its loss is the table's negative log-likelihood
    xs = torch.tensor([[0, 1], [2, 2]])
    expected = -Q[xs[:, 0], xs[:, 1]].log().mean() / 2
    assert m.loss(xs).item() == pytest.approx(expected.item(), rel=1e-5)


def test_cli_demo_prints_the_numbers(capsys):
    assert cli.main(["demo", "huszar", "--steps", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["strategies"]) == {"teacher_forcing", "scheduled_sampling_p1", "context_noise"}
    assert cli.main(["demo", "huszar", "--steps", "5"]) == 0
    assert "KL(model||product)" in capsys.readouterr().out
