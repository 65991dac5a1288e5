"""CausalTransformer: causality, KV-cache decoding equals the full pass, bidirectional variant, errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from latentar.models import CausalTransformer, KVCache
from latentar.models.transformer import apply_rope, rope_tables


def make(pos="rope", causal=True, max_len=24, seed=0):
    torch.manual_seed(seed)
    return CausalTransformer(d_model=32, depth=3, num_heads=4, max_len=max_len, pos=pos, causal=causal).eval()


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_kv_cache_one_position_at_a_time_equals_full_pass(pos):
    model = make(pos)
    x = torch.randn(3, 20, 32)
    with torch.no_grad():
        full = model(x)
        cache = KVCache()
        steps = [model(x[:, t:t + 1], cache=cache, start_pos=t) for t in range(20)]
    assert cache.length == 20
    for t, h in enumerate(steps):
        assert (h[:, 0] - full[:, t]).abs().max().item() < 1e-5, f"position {t}"


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_kv_cache_chunked_prefill_then_decode(pos):
    model = make(pos)
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        full = model(x)
        cache = KVCache()
        a = model(x[:, :7], cache=cache)          # prefill 0..6 (start_pos defaults to cache.length)
        b = model(x[:, 7:12], cache=cache)        # a chunk of 5 with an offset causal mask
        c = torch.cat([model(x[:, t:t + 1], cache=cache) for t in range(12, 17)], dim=1)
    got = torch.cat([a, b, c], dim=1)
    assert (got - full).abs().max().item() < 1e-5


def test_causal_future_does_not_leak():
    model = make()
    x = torch.randn(2, 12, 32)
    y = x.clone()
    y[:, 8:] = torch.randn(2, 4, 32)
    with torch.no_grad():
        hx, hy = model(x), model(y)
    assert torch.allclose(hx[:, :8], hy[:, :8], atol=1e-6)
    assert not torch.allclose(hx[:, 8:], hy[:, 8:], atol=1e-3)


def test_bidirectional_earlier_sees_later():
    model = make(causal=False)
    x = torch.randn(2, 12, 32)
    y = x.clone()
    y[:, -1] = torch.randn(2, 32)  # (a constant shift would vanish in the first LayerNorm)
    with torch.no_grad():
        assert (model(x)[:, 0] - model(y)[:, 0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="causal=True"):
        model(x, cache=KVCache())


def attention_reference(model, x):
    """float64 re-implementation of the forward pass from the module's weights (independent code path)."""
    m = model.double()
    x = x.double()
    B, T, C = x.shape
    H, hd = m.num_heads, m.head_dim
    if m.pos == "learned":
        x = x + m.pos_emb.weight[:T]
    for blk in m.blocks:
        a = F.layer_norm(x, (C,), blk.ln1.weight, blk.ln1.bias, blk.ln1.eps)
        q, k, v = (a @ blk.attn.qkv.weight.T + blk.attn.qkv.bias).split(C, dim=-1)
        q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v))
        if m.pos == "rope":
            p = torch.arange(T, dtype=torch.float64)[:, None]
            ang = p * 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
            rot = lambda t: torch.cat([t[..., :hd // 2] * ang.cos() - t[..., hd // 2:] * ang.sin(),
                                       t[..., :hd // 2] * ang.sin() + t[..., hd // 2:] * ang.cos()], -1)
            q, k = rot(q), rot(k)
        s = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if m.causal:
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        y = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ blk.attn.proj.weight.T + blk.attn.proj.bias
        a = F.layer_norm(x, (C,), blk.ln2.weight, blk.ln2.bias, blk.ln2.eps)
        x = x + F.gelu(a @ blk.mlp.fc.weight.T + blk.mlp.fc.bias) @ blk.mlp.proj.weight.T + blk.mlp.proj.bias
    return F.layer_norm(x, (C,), m.ln_f.weight, m.ln_f.bias, m.ln_f.eps)


@pytest.mark.parametrize("pos,causal", [("rope", True), ("learned", True), ("rope", False)])
def test_forward_matches_float64_reference(pos, causal):
    model = make(pos, causal)
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        got = model(x).double()
        ref = attention_reference(model, x)
    assert (got - ref).abs().max().item() < 1e-4


def test_rope_preserves_norm_and_is_relative():
    cos, sin = rope_tables(16, 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    rq = lambda t, p: apply_rope(t, cos[p:p + 1], sin[p:p + 1])
    assert torch.allclose(rq(q, 5).norm(), q.norm(), atol=1e-5)
    # <R_m q, R_n k> depends only on m - n
    d1 = (rq(q, 7) * rq(k, 3)).sum()
    d2 = (rq(q, 12) * rq(k, 8)).sum()
    assert torch.allclose(d1, d2, atol=1e-5)


def test_errors_are_clear():
    model = make(max_len=8)
    with pytest.raises(ValueError, match="max_len=8"):
        model(torch.randn(1, 9, 32))
    cache = KVCache()
    model(torch.randn(1, 8, 32), cache=cache)
    with pytest.raises(ValueError, match="max_len=8"):
        model(torch.randn(1, 1, 32), cache=cache)
    with pytest.raises(ValueError, match=r"\(B, T, 32\)"):
        model(torch.randn(1, 4, 31))
    with pytest.raises(ValueError, match="batch size"):
        model(torch.randn(2, 1, 32), cache=cache, start_pos=3)
    with pytest.raises(ValueError, match="gap"):
        c2 = KVCache()
        model(torch.randn(1, 2, 32), cache=c2)
        model(torch.randn(1, 1, 32), cache=c2, start_pos=4)
    with pytest.raises(ValueError, match="divisible"):
        CausalTransformer(30, 1, 4, 8)


def test_cache_overwrite_allows_re_decoding():
    """Rewinding start_pos overwrites cached positions: decoding a different continuation is exact."""
    model = make()
    x = torch.randn(1, 10, 32)
    y = x.clone()
    y[:, 6:] = torch.randn(1, 4, 32)
    with torch.no_grad():
        cache = KVCache()
        model(x, cache=cache)
        h = model(y[:, 6:], cache=cache, start_pos=6)
        assert (h - model(y)[:, 6:]).abs().max().item() < 1e-5
