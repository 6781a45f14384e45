"""Wrong-method answers for llm-201/inference (see __init__.py)."""

from . import WrongMethod

WRONG_METHODS = {
    "inference": [
        WrongMethod(
            "sol-attn-cache", ("test-attn-cache",),
            "a 'cache' that keeps the inputs and recomputes every key and value at each step",
            '''def attention_with_cache(attn, x, cache):
    B, T_new, C = x.shape
    H = attn.n_head
    past = getattr(cache, "inputs", None)
    xs = x if past is None else torch.cat([past, x], dim=1)
    cache.inputs = xs
    T = xs.shape[1]
    q, k, v = attn.qkv(xs).split(C, dim=-1)
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
    cache.k[:, :, :T], cache.v[:, :, :T] = k, v
    cache.length = T
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)[:, :, -T_new:]
    return attn.proj(y.transpose(1, 2).reshape(B, T_new, C))
'''),
        WrongMethod(
            "sol-forward-cache", ("test-forward-cache", "test-generate-equal"),
            "runs the whole model over every token so far at each step (the ids kept beside the cache)",
            '''def forward_with_cache(model, idx, caches):
    seen = getattr(caches[0], "ids", None)
    ids = idx if seen is None else torch.cat([seen, idx], dim=1)
    caches[0].ids = ids
    for c in caches:
        c.length = ids.shape[1]
    return model(ids)[:, -idx.shape[1]:]
'''),
        WrongMethod(
            "sol-kv-bytes", ("test-kv-bytes",),
            "the text's 0.5 MB per token of a Llama-2-7B-like model, not the formula",
            '''def kv_cache_bytes(n_layer, n_kv_heads, head_dim, seq_len, batch_size=1, bytes_per_value=2):
    per_token = 2 * 32 * 32 * 128 * 2 // 32 * n_kv_heads      # 0.5 MiB per token for 32 KV heads
    return per_token * seq_len * batch_size
'''),
        WrongMethod(
            "sol-filters", ("test-filters",),
            "decides the nucleus on the sorted logits and returns them in sorted order (no scatter back)",
            '''def top_k_filter(logits, k):
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    remove = (probs.cumsum(dim=-1) - probs) >= p
    return logits.masked_fill(remove, float("-inf"))
'''),
        WrongMethod(
            "sol-sample", ("test-sample",),
            "draws from the global random generator instead of the one given (not reproducible)",
            '''def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1)
    z = logits / temperature
    if top_k is not None:
        z = top_k_filter(z, top_k)
    if top_p is not None:
        z = top_p_filter(z, top_p)
    return torch.multinomial(torch.softmax(z, dim=-1), num_samples=1).squeeze(-1)
'''),
        WrongMethod(
            "sol-quant", ("test-quant",),
            "calls PyTorch's own per-channel quantizer instead of writing the scale and rounding",
            '''def quantize_int8(w):
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
    q = torch.quantize_per_channel(w, scale.squeeze(1).double(), torch.zeros(w.shape[0], dtype=torch.long), 0,
                                   torch.qint8).int_repr()
    return q, scale


def dequantize(q, scale):
    return q.float() * scale
'''),
    ],
}
