"""Wrong-method answers for llm-301's memory-at-scale and flash-attention (see __init__.py)."""

from . import WrongMethod

WRONG_METHODS = {
    "memory-at-scale": [
        WrongMethod(
            "sol-zero-formula", ("test-zero-formula",),
            "shards N/G as a real number: no padding to equal shards (right only when G divides N)",
            '''def zero_bytes_per_rank(n_params, world_size, stage, param_bytes=2, grad_bytes=2, optim_bytes=12):
    """Bytes of weights + gradients + optimizer state held by one of `world_size` data-parallel ranks."""
    n = n_params
    shard = n // world_size if n % world_size == 0 else n / world_size
    if stage == 0:
        return n * (param_bytes + grad_bytes + optim_bytes)
    if stage == 1:
        return n * (param_bytes + grad_bytes) + shard * optim_bytes
    if stage == 2:
        return n * param_bytes + shard * (grad_bytes + optim_bytes)
    if stage == 3:
        return shard * (param_bytes + grad_bytes + optim_bytes)
    raise ValueError(stage)
'''),
        WrongMethod(
            "sol-measure", ("test-measure",),
            "adds numel * element_size of every tensor: counts views as memory and ignores the storage behind them",
            '''def measured_bytes(tensors):
    """Bytes of the distinct storages behind `tensors` (an iterable of tensors)."""
    return sum(t.numel() * t.element_size() for t in tensors)
'''),
        WrongMethod(
            "sol-zero-adam", ("test-zero-adam",),
            "runs torch.optim.Adam on the full model; the 'shards' are views of full-size state buffers",
            '''class ZeroAdam:
    """Adam with its fp32 master weights and moments sharded over `world_size` simulated ranks (ZeRO stage 1)."""

    def __init__(self, params, world_size, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = [p for p in params]
        self.world_size, self.lr, self.betas, self.eps = world_size, lr, betas, eps
        self.t = 0
        self.inner = torch.optim.Adam(self.params, lr=lr, betas=betas, eps=eps)
        self.n = sum(p.numel() for p in self.params)
        S = self.shard_size = -(-self.n // world_size)
        self.full = {k: torch.zeros(S * world_size) for k in ("master", "exp_avg", "exp_avg_sq")}
        self.full["master"][:self.n] = torch.cat([p.detach().reshape(-1).float() for p in self.params])
        self.shards = [{k: buf[r * S:(r + 1) * S] for k, buf in self.full.items()} for r in range(world_size)]

    @torch.no_grad()
    def step(self):
        self.inner.step()
        self.full["master"][:self.n] = torch.cat([p.detach().reshape(-1).float() for p in self.params])
        for k in ("exp_avg", "exp_avg_sq"):
            self.full[k][:self.n] = torch.cat([self.inner.state[p][k].reshape(-1) for p in self.params])

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None
'''),
        WrongMethod(
            "sol-checkpoint", ("test-checkpoint",),
            "'saves memory' by running the blocks under torch.no_grad instead of checkpointing them",
            '''def saved_activation_bytes(model, fn):
    """Run fn() and return (its output, bytes of the distinct non-parameter storages saved for backward)."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in param_storages:
            saved[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(saved.values())


def checkpointed_forward(model, idx):
    """GPT.forward with every block checkpointed."""
    B, T = idx.shape
    x = model.tok_emb(idx) + model.pos_emb(torch.arange(T, device=idx.device))
    with torch.no_grad():
        for block in model.blocks:
            x = block(x)
    return model.head(model.ln_f(x))
'''),
        WrongMethod(
            "sol-accum", ("test-accum",),
            "one forward/backward over the whole batch: the numbers of accumulation without its micro-batches",
            '''def accumulation_step(model, opt, x, y, accum):
    """One optimizer step on (x, y), computed as `accum` micro-batches; returns the batch's mean loss."""
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    opt.step()
    return loss.item()
'''),
    ],
    "flash-attention": [
        WrongMethod(
            "sol-online-softmax", ("test-online-softmax",),
            "two passes: keeps every block, takes the max in a first pass and the sum in a second",
            '''def online_softmax_stats(blocks):
    """Running max and rescaled sum of exp over column blocks of a matrix, in one pass."""
    blocks = list(blocks)
    m = blocks[0].amax(dim=-1)
    for b in blocks[1:]:
        m = torch.maximum(m, b.amax(dim=-1))
    l = sum(torch.exp(b - m[:, None]).sum(dim=-1) for b in blocks)
    return m, l
'''),
        WrongMethod(
            "sol-flash-forward", ("test-flash-forward", "test-causal"),
            "builds the full T x T score matrix and calls torch.softmax; the tile count is a formula",
            '''def flash_attention_forward(q, k, v, block_q=64, block_k=64, causal=False):
    """Tiled attention with an online softmax. Returns (out, lse, tiles processed)."""
    T, d = q.shape[-2], q.shape[-1]
    s = q @ k.transpose(-2, -1) / math.sqrt(d)
    if causal:
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    out = torch.softmax(s, dim=-1) @ v
    lse = torch.logsumexp(s, dim=-1)
    tiles = sum(1 for i in range(0, T, block_q) for j in range(0, T, block_k)
                if not causal or j <= min(i + block_q, T) - 1)
    return out, lse, tiles
'''),
        WrongMethod(
            "sol-io", ("test-io",),
            "closed form with T / block as a real number: ignores the ragged last blocks the kernel really reads",
            '''def naive_hbm_bytes(B, H, T, d, bytes_per_el=2):
    """HBM bytes read + written by standard attention (S and P materialised)."""
    return int(bytes_per_el * B * H * (4 * T * d + 4 * T * T))


def flash_hbm_bytes(B, H, T, d, block_q, block_k, causal=False, bytes_per_el=2):
    """HBM bytes read + written by the tiled forward pass (one kernel), including the fp32 log-sum-exp."""
    n_q = T / block_q
    kv_rows = n_q * (n_q + 1) / 2 * block_q if causal else n_q * T
    return int(B * H * (bytes_per_el * (2 * T * d + 2 * kv_rows * d) + 4 * T))
'''),
        WrongMethod(
            "sol-timing", ("test-timing",),
            "times the whole loop with one sync at the end and returns the mean",
            '''def median_time(fn, warmup=2, reps=10):
    """Median wall-clock seconds of fn() over `reps` synchronised calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps
'''),
    ],
}
