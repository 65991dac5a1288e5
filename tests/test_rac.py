"""RAC (Cen et al. 2025, Alg. 2): correction labels, the indicator mask, the objective, the
reference-conditioned SFT data, and the offline schedule on the shared Trainer."""
import pytest
import torch

from latentar.data.seq_tasks import BOS, EOS, PAD, SEP, SeqTask
from latentar.exposure import ExposureTask, RAC
from latentar.exposure.base import make_batch
from latentar.exposure.rac import ReferenceAugmented, ReferenceTemplate, split_example
from latentar.models.char_lm import CharLM
from latentar.train import Trainer


def ids(s: str) -> list[int]:
    return list(s.encode())


class ReferenceCopier(torch.nn.Module):
    """A hand-built 'model' with the protocol methods RAC calls.

    generate: feeds the reference where asked and otherwise emits a fixed free run ``z_answer``;
    predict_parallel(argmax): the ideal reference reader: inside ``x BOS y SEP z`` it predicts
    y^j for the j-th token after SEP (EOS after y); elsewhere it repeats the input token.
    """

    def __init__(self, z_answer: list[int]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.z_answer = z_answer
        self.calls = []

    def generate(self, batch_size, length, reference=None, use_reference=None, **kw):
        self.calls.append("generate")
        out = reference.clone()
        for i in range(batch_size):
            free = (~use_reference[i]).nonzero().flatten()
            out[i, free] = torch.tensor(self.z_answer[: free.numel()])
        return out

    def predict_parallel(self, x, mode="sample", **kw):
        self.calls.append(("predict_parallel", mode))
        out = x.clone()
        for i, row in enumerate(x.tolist()):
            b, s = row.index(BOS), row.index(SEP)
            y = row[b + 1: s] + [EOS]
            for j in range(len(y)):
                if s + 1 + j < len(row):
                    out[i, s + 1 + j] = y[j]
        return out


def seq_batch(prompt: str, answer: str, pad: int = 0):
    tokens = torch.tensor([ids(prompt) + [SEP] + ids(answer) + [EOS] + [PAD] * pad])
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[0, len(prompt) + 1: len(prompt) + 2 + len(answer)] = True
    return tokens, mask


def test_labels_are_masked_exactly_where_the_correction_agrees_with_the_free_run():
    # x = "abcd", y = "dcba"; the free run z = "dcab" EOS errs at answer positions 2 and 3.
    tokens, mask = seq_batch("abcd", "dcba", pad=2)
    z_answer = ids("dcab") + [EOS]
    model = ReferenceCopier(z_answer)
    rac = RAC(warmup_steps=0, pool_size=4, template=ReferenceTemplate())
    stats = rac.regenerate(model, make_batch(tokens, loss_mask=mask))
    pool = rac.pool
    answer_pos = mask[0].nonzero().flatten()
    assert pool["context"][0, answer_pos].tolist() == z_answer                    # z
    assert pool["labels"][0, answer_pos].tolist() == ids("dcba") + [EOS]          # zbar = argmax p(. | f(x, y), z^<j)
    expected = torch.zeros_like(mask)
    expected[0, answer_pos[2:4]] = True                                           # 'a' != 'b', 'b' != 'a'
    assert torch.equal(pool["loss_mask"], expected)
    assert stats["corrected_share"] == pytest.approx(2 / 5)
    assert stats["label_acc"] == pytest.approx(1.0)
    assert ("predict_parallel", "argmax") in model.calls                          # labels are argmax, not samples


def test_rac_loss_is_sft_plus_indicator_weighted_correction_nll():
    """Eqs. 1, 6-7: J = (1/B) sum_rows [S_SFT + S_RAC] with per-row sums over answer positions,
    S_RAC = sum_j 1[zbar^j != z^j] NLL(zbar^j | x, z^<j). The implementation divides both sums by the
    SFT batch's answer-token count n: loss = (B / n) J, so the ratio of the two terms is the paper's.
    The pool row has a different answer length from the SFT row, so a per-pool count would differ."""
    torch.manual_seed(0)
    model = CharLM(d_model=32, depth=1, num_heads=2, max_len=24).eval()
    tokens, mask = seq_batch("abcd", "dcba", pad=1)                      # SFT row: 5 answer tokens
    z, pmask = seq_batch("ab", "bac", pad=0)                             # pool row: 4 answer tokens
    zbar = z.clone()
    ans = pmask[0].nonzero().flatten()
    zbar[0, ans] = torch.tensor(ids("abc") + [EOS])                      # corrects positions 0 and 1
    rac = RAC(warmup_steps=0)
    rac.pool = {"context": z, "labels": zbar, "loss_mask": pmask & (z != zbar)}
    rac.last_regen = {}
    loss, metrics = rac.loss(model, tokens, loss_mask=mask)
    # independent float64 recompute of the paper's per-sequence sums
    lp_y = torch.log_softmax(model(tokens).double(), -1).gather(-1, tokens[..., None])[..., 0]
    lp_c = torch.log_softmax(model(z).double(), -1).gather(-1, zbar[..., None])[..., 0]
    s_sft = -(lp_y * mask).sum()
    s_rac = -(lp_c * (pmask & (z != zbar))).sum()
    B, n = tokens.shape[0], int(mask.sum())
    assert int((pmask & (z != zbar)).sum()) == 2 and int(pmask.sum()) != n
    j_paper = (s_sft + s_rac) / B
    assert metrics["rac_active"] == 1.0
    assert loss.item() == pytest.approx((B / n * j_paper).item(), rel=1e-5)
    assert metrics["rac"] / metrics["sft"] == pytest.approx((s_rac / s_sft).item(), rel=1e-5)


def test_batched_relabel_equals_row_by_row_argmax():
    """Right-padded batching (ragged f(x, y) lengths) gives the same labels as one row at a time."""
    torch.manual_seed(1)
    model = CharLM(d_model=32, depth=2, num_heads=2, max_len=64).eval()
    rows = [seq_batch("ab", "ba", pad=8), seq_batch("abcdef", "fedcba", pad=0)]
    tokens = torch.cat([r[0] for r in rows])
    mask = torch.cat([r[1] for r in rows])
    z = torch.where(mask, torch.randint(0, 256, tokens.shape), tokens)
    rac = RAC(gen_batch_size=8)
    zbar = rac.relabel(model, tokens, z, mask)
    template = ReferenceTemplate()
    for i in range(2):
        prompt, answer, start = split_example(tokens[i], mask[i], EOS)
        span = mask[i].nonzero().flatten()
        seq = torch.cat([template(prompt, answer), z[i, span]])[None]
        head = seq.shape[1] - span.numel()
        expected = model(seq)[0, head:].argmax(-1)
        assert torch.equal(zbar[i, span], expected)
        assert torch.equal(zbar[i, ~mask[i]], tokens[i, ~mask[i]])


def test_template_shows_the_reference_before_the_separator():
    f = ReferenceTemplate()
    out = f(torch.tensor(ids("abc") + [SEP]), torch.tensor(ids("cba")))
    assert out.tolist() == ids("abc") + [BOS] + ids("cba") + [SEP]
    g = ReferenceTemplate(ref_ids=[7, 8], sep_len=2)
    assert g(torch.tensor([1, 2, 3, 4]), torch.tensor([9])).tolist() == [1, 2, 7, 8, 9, 3, 4]


def test_reference_augmented_sft_data():
    base = SeqTask("reverse", 5, 400, seed=0)
    data = ReferenceAugmented(base, ReferenceTemplate(), fraction=0.25, seed=0)
    flags = [data.is_reference(i) for i in range(len(data))]
    assert 0.17 < sum(flags) / len(flags) < 0.33
    assert data.seq_len == base.seq_len + 1 + 5
    i = flags.index(True)
    item, (prompt, answer) = data[i], base.example(i)
    toks = item["tokens"].tolist()
    n = 2 * len(answer) + len(prompt) + 3
    assert toks[:n] == list(prompt) + [BOS] + list(answer) + [SEP] + list(answer) + [EOS]
    assert all(t == PAD for t in toks[n:])
    targets_trained = [t for t, m in zip(toks[1:], item["loss_mask"].tolist()) if m]
    assert targets_trained == list(answer) + [EOS]
    j = flags.index(False)
    assert data[j]["tokens"][: base.seq_len].tolist() == base[j]["tokens"].tolist()
    assert torch.equal(data[j]["loss_mask"][: base.seq_len - 1], base[j]["loss_mask"])
    assert data[j]["reference"] is False


def test_offline_schedule_on_the_trainer():
    torch.manual_seed(0)
    base = SeqTask("reverse", 3, 256, seed=0)
    rac = RAC(warmup_steps=4, regen_every=3, pool_size=32, gen_batch_size=16)
    data = rac.sft_dataset(base)
    model = CharLM(d_model=32, depth=1, num_heads=2, max_len=data.seq_len)
    task = ExposureTask(model, rac, data=base)
    calls = []
    original = rac.regenerate
    rac.regenerate = lambda *a, **k: calls.append(1) or original(*a, **k)
    result = Trainer(max_steps=10, batch_size=8, device="cpu", progress=False, log_every=1).fit(task, data)
    assert len(calls) == 2                                   # before (0-based) steps 4 and 7
    assert [h["rac_active"] for h in result["history"]] == [0.0] * 4 + [1.0] * 6
    assert rac.pool["context"].shape == (32, base.seq_len)


def test_rac_needs_tokens_and_data():
    rac = RAC()
    with pytest.raises(ValueError, match="continuous"):
        rac.loss(CharLM(d_model=16, depth=1, num_heads=2, max_len=8), torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="ExposureTask"):
        rac.regenerate(CharLM(d_model=16, depth=1, num_heads=2, max_len=8), None)
    with pytest.raises(ValueError, match="probability"):
        RAC(reference_fraction=1.5)
    for kw, match in (({"rac_weight": float("nan")}, "rac_weight"), ({"temperature": float("nan")}, "temperature"),
                      ({"reference_fraction": float("nan")}, "reference_fraction")):
        with pytest.raises(ValueError, match=match):
            RAC(**kw)
