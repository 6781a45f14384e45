"""Wrong-method answers for llm-101 (see __init__.py)."""

from . import WrongMethod

WRONG_METHODS = {
    "tokenization": [
        WrongMethod("sol-get-pair-counts", ("test-get-pair-counts",),
                    "Counter.most_common(): right counts, but ordered by frequency, so the first-occurrence tie rule is lost",
                    "def get_pair_counts(ids):\n"
                    "    '''Count adjacent pairs. Returns {(a, b): count}, keys in order of first occurrence.'''\n"
                    "    return dict(Counter(zip(ids, ids[1:])).most_common())\n"),
        WrongMethod("sol-merge", ("test-merge",),
                    "merges in place with del (quadratic, and it rewrites the caller's list)",
                    "def merge(ids, pair, new_id):\n"
                    "    '''Return a new list where each non-overlapping occurrence of `pair` is replaced by `new_id`.'''\n"
                    "    i = 0\n"
                    "    while i < len(ids) - 1:\n"
                    "        if (ids[i], ids[i + 1]) == tuple(pair):\n"
                    "            ids[i] = new_id\n"
                    "            del ids[i + 1]\n"
                    "        i += 1\n"
                    "    return ids\n"),
        WrongMethod("sol-train-bpe", ("test-train-bpe",),
                    "GPT-2-style split into words first (pairs never cross a word boundary): not the byte-level BPE asked",
                    "def train_bpe(text, vocab_size):\n"
                    "    '''Learn vocab_size - 256 byte-pair merges from `text`. Returns {(a, b): new_id}.'''\n"
                    "    assert vocab_size >= 256\n"
                    "    import re\n"
                    "    freq = Counter(re.findall(r' ?\\S+|\\s+', text))\n"
                    "    words = {w: list(w.encode('utf-8')) for w in freq}\n"
                    "    merges = {}\n"
                    "    for new_id in range(256, vocab_size):\n"
                    "        counts = {}\n"
                    "        for w, ids in words.items():\n"
                    "            for p in zip(ids, ids[1:]):\n"
                    "                counts[p] = counts.get(p, 0) + freq[w]\n"
                    "        if not counts:\n"
                    "            break\n"
                    "        pair = max(counts, key=counts.get)\n"
                    "        words = {w: merge(ids, pair, new_id) for w, ids in words.items()}\n"
                    "        merges[pair] = new_id\n"
                    "    return merges\n"),
        WrongMethod("sol-encode-decode", ("test-encode-decode",),
                    "greedy longest match against the vocabulary instead of replaying the merges by rank",
                    "def encode(text, merges):\n"
                    "    '''Text -> list of token ids using the learned merges.'''\n"
                    "    pieces = {i: bytes([i]) for i in range(256)}\n"
                    "    for (a, b), idx in merges.items():\n"
                    "        pieces[idx] = pieces[a] + pieces[b]\n"
                    "    lookup = {p: i for i, p in pieces.items()}\n"
                    "    longest = max(len(p) for p in lookup)\n"
                    "    data, ids, i = text.encode('utf-8'), [], 0\n"
                    "    while i < len(data):\n"
                    "        for n in range(min(longest, len(data) - i), 0, -1):\n"
                    "            if data[i:i + n] in lookup:\n"
                    "                ids.append(lookup[data[i:i + n]])\n"
                    "                i += n\n"
                    "                break\n"
                    "    return ids\n"
                    "\n"
                    "\n"
                    "def decode(ids, merges):\n"
                    "    '''List of token ids -> text.'''\n"
                    "    vocab = {i: bytes([i]) for i in range(256)}\n"
                    "    for (a, b), idx in merges.items():\n"
                    "        vocab[idx] = vocab[a] + vocab[b]\n"
                    "    return b''.join(vocab[i] for i in ids).decode('utf-8', errors='replace')\n"),
    ],
    "tiny-gpt": [
        WrongMethod("sol-get-batch", ("test-get-batch",),
                    "one random offset, then consecutive windows reshaped: the rows are not independent samples",
                    "def get_batch(data, batch_size, block_size, generator=None):\n"
                    "    i = int(torch.randint(len(data) - batch_size * block_size, (1,), generator=generator))\n"
                    "    x = data[i : i + batch_size * block_size].view(batch_size, block_size)\n"
                    "    y = data[i + 1 : i + batch_size * block_size + 1].view(batch_size, block_size)\n"
                    "    return x, y\n"),
        WrongMethod("sol-perplexity", ("test-lm-loss", "test-perplexity", "test-training"),
                    "loss as log(softmax) (underflows on confident logits); perplexity = exp(loss) of the first "
                    "window only, not of the whole data",
                    "def lm_loss(logits, targets):\n"
                    "    probs = logits.softmax(-1)\n"
                    "    return -probs.gather(-1, targets[..., None]).log().mean()\n"
                    "\n"
                    "\n"
                    "def perplexity(model, data, block_size):\n"
                    "    dev = next(model.parameters()).device\n"
                    "    model.eval()\n"
                    "    with torch.no_grad():\n"
                    "        x = data[:block_size].to(dev)[None]\n"
                    "        y = data[1 : block_size + 1].to(dev)[None]\n"
                    "        loss = lm_loss(model(x), y)\n"
                    "    model.train()\n"
                    "    return math.exp(loss.item())\n"),
        WrongMethod("sol-train-step", ("test-train-step",),
                    "no gradient clipping",
                    "def train_step(model, optimizer, x, y, max_norm=1.0):\n"
                    "    optimizer.zero_grad(set_to_none=True)\n"
                    "    loss = lm_loss(model(x), y)\n"
                    "    loss.backward()\n"
                    "    optimizer.step()\n"
                    "    return loss.item()\n"),
    ],
    "attention": [
        WrongMethod("sol-softmax", ("test-softmax",),
                    "softmax through the library's log_softmax, exponentiated (no max subtraction of its own)",
                    "def stable_softmax(x, dim=-1):\n"
                    "    return torch.log_softmax(x, dim=dim).exp()\n"),
        WrongMethod("sol-sdpa", ("test-sdpa",),
                    "output from F.scaled_dot_product_attention, weights recomputed only for the plots",
                    "def causal_mask(T, device=None):\n"
                    "    return torch.ones(T, T, dtype=torch.bool, device=device).tril()\n"
                    "\n"
                    "\n"
                    "def scaled_dot_product_attention(q, k, v, mask=None):\n"
                    "    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n"
                    "    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])\n"
                    "    if mask is not None:\n"
                    "        scores = scores.masked_fill(~mask, float('-inf'))\n"
                    "    return out, stable_softmax(scores, dim=-1)\n"),
        WrongMethod("sol-mha", ("test-mha",),
                    "heads computed by F.scaled_dot_product_attention instead of the learner's attention",
                    "class MultiHeadAttention(nn.Module):\n"
                    "    def __init__(self, d_model, n_heads, causal=True):\n"
                    "        super().__init__()\n"
                    "        assert d_model % n_heads == 0, 'd_model must be divisible by n_heads'\n"
                    "        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads\n"
                    "        self.causal = causal\n"
                    "        self.qkv = nn.Linear(d_model, 3 * d_model)\n"
                    "        self.proj = nn.Linear(d_model, d_model)\n"
                    "        self.last_attn = None\n"
                    "\n"
                    "    def forward(self, x):\n"
                    "        B, T, C = x.shape\n"
                    "        q, k, v = self.qkv(x).split(self.d_model, dim=-1)\n"
                    "        q, k, v = (t.view(B, T, self.n_heads, self.d_head).transpose(1, 2) for t in (q, k, v))\n"
                    "        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)\n"
                    "        with torch.no_grad():\n"
                    "            s = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)\n"
                    "            if self.causal:\n"
                    "                s = s.masked_fill(~causal_mask(T, x.device), float('-inf'))\n"
                    "            self.last_attn = stable_softmax(s, dim=-1)\n"
                    "        return self.proj(y.transpose(1, 2).reshape(B, T, C))\n"),
        WrongMethod("sol-block", ("test-block",),
                    "one LayerNorm (ln1) before both sub-layers: identical to ln2 at initialisation only",
                    "class Block(nn.Module):\n"
                    "    def __init__(self, d_model, n_heads, mlp_ratio=4):\n"
                    "        super().__init__()\n"
                    "        self.ln1 = nn.LayerNorm(d_model)\n"
                    "        self.attn = MultiHeadAttention(d_model, n_heads, causal=True)\n"
                    "        self.ln2 = nn.LayerNorm(d_model)\n"
                    "        self.mlp = nn.Sequential(\n"
                    "            nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model))\n"
                    "\n"
                    "    def forward(self, x):\n"
                    "        x = x + self.attn(self.ln1(x))\n"
                    "        return x + self.mlp(self.ln1(x))\n"),
    ],
}
