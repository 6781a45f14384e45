"""Wrong-method answers for llm-301's serving and scaling-laws assignments (see __init__.py)."""

from . import WrongMethod

# ---------------------------------------------------------------- serving
_CACHE_PREALLOCATED = '''
class PagedKVCache:
    """K/V of many sequences in one pool of fixed-size blocks, found through one block table per sequence."""

    def __init__(self, n_layer, n_head, head_dim, num_blocks, block_size=16, max_seq_len=None, device="cpu"):
        self.n_layer, self.n_head, self.head_dim = n_layer, n_head, head_dim
        self.num_blocks, self.block_size, self.max_seq_len = num_blocks, block_size, max_seq_len
        self.k = torch.zeros(n_layer, num_blocks, n_head, block_size, head_dim, device=device)
        self.v = torch.zeros_like(self.k)
        self.free_blocks = list(range(num_blocks))
        self.tables, self.lengths = {}, {}

    def blocks_for(self, n_tokens):
        return -(-n_tokens // self.block_size)

    @property
    def num_free(self):
        return len(self.free_blocks)

    def add(self, seq_id):
        # "paged" in name only: a contiguous run of blocks for the longest sequence the model allows
        n = self.blocks_for(self.max_seq_len or 4 * self.block_size)
        start = self.free_blocks[-n]
        self.tables[seq_id] = self.free_blocks[-n:]
        del self.free_blocks[-n:]
        self.lengths[seq_id] = 0

    def append(self, seq_id, n):
        start = self.lengths[seq_id]
        table = self.tables[seq_id]
        need = self.blocks_for(start + n) - len(table)
        if need > len(self.free_blocks):
            raise RuntimeError("out of KV blocks")
        for _ in range(max(0, need)):
            table.append(self.free_blocks.pop())
        self.lengths[seq_id] = start + n
        return torch.arange(start, start + n, device=self.k.device)

    def slots(self, seq_id, positions):
        table = torch.tensor(self.tables[seq_id], dtype=torch.long, device=self.k.device)
        return table[positions // self.block_size], positions % self.block_size

    def gather(self, layer, seq_id):
        table = torch.tensor(self.tables[seq_id], dtype=torch.long, device=self.k.device)
        n = self.lengths[seq_id]
        k = self.k[layer, table].transpose(0, 1).reshape(self.n_head, -1, self.head_dim)[:, :n]
        v = self.v[layer, table].transpose(0, 1).reshape(self.n_head, -1, self.head_dim)[:, :n]
        return k, v

    def free(self, seq_id):
        self.free_blocks.extend(self.tables.pop(seq_id))
        del self.lengths[seq_id]
'''

_FORWARD_RECOMPUTES = '''
@torch.no_grad()
def paged_forward(model, cache, seq_ids, new_tokens):
    # keeps every sequence's tokens and reruns the whole model on them: right logits, no cache used
    if not hasattr(cache, "history"):
        cache.history = {}
    out = []
    for sid, toks in zip(seq_ids, new_tokens):
        cache.append(sid, len(toks))
        cache.history[sid] = cache.history.get(sid, []) + list(toks)
        out.append(model(torch.tensor([cache.history[sid]], device=cache.k.device))[0, -1])
    return torch.stack(out)
'''

_CONTINUOUS_ONE_CALL_PER_SEQUENCE = '''
def continuous_batching(model, cache, requests, clock, max_batch=8):
    def need(r):
        return cache.blocks_for(len(r.prompt) + r.max_new_tokens)

    pending = deque(sorted(requests, key=lambda r: r.arrival))
    waiting, running = deque(), []
    while pending or waiting or running:
        now = clock.now()
        while pending and pending[0].arrival <= now:
            waiting.append(pending.popleft())
        reserved = sum(need(r) - len(cache.tables[r.rid]) for r in running)
        while waiting and len(running) < max_batch and need(waiting[0]) <= cache.num_free - reserved:
            r = waiting.popleft()
            cache.add(r.rid)
            running.append(r)
            reserved += need(r)
        if not running:
            if pending:
                clock.sleep_until(pending[0].arrival)
            continue
        still = []
        for r in running:                  # a "batch" that runs the model once per sequence
            tokens = r.output[-1:] if r.output else r.prompt
            tok = paged_forward(model, cache, [r.rid], [tokens]).argmax(-1).item()
            t = clock.now()
            r.output.append(tok)
            if len(r.output) == 1:
                r.t_first = t
            if len(r.output) == r.max_new_tokens:
                r.t_done = t
                cache.free(r.rid)
            else:
                still.append(r)
        running = still
    return requests
'''

_STATS_FROM_TRACE_START = '''
def latency_stats(requests):
    ttft = [r.t_first for r in requests]                 # from the start of the trace, not the arrival
    tpot = [(r.t_done - r.t_first) / (len(r.output) - 1) if len(r.output) > 1 else float("nan") for r in requests]
    return ttft, tpot
'''

_STATIC_ONE_CALL_PER_SEQUENCE = '''
def static_batching(model, cache, requests, clock, max_batch=8):
    def need(r):
        return cache.blocks_for(len(r.prompt) + r.max_new_tokens)

    pending = deque(sorted(requests, key=lambda r: r.arrival))
    waiting = deque()
    while pending or waiting:
        now = clock.now()
        while pending and pending[0].arrival <= now:
            waiting.append(pending.popleft())
        if not waiting:
            clock.sleep_until(pending[0].arrival)
            continue
        batch, used = [], 0
        while waiting and len(batch) < max_batch and used + need(waiting[0]) <= cache.num_free:
            r = waiting.popleft()
            cache.add(r.rid)
            batch.append(r)
            used += need(r)
        running = list(batch)
        while running:
            for r in running:              # one forward call per sequence and step
                tokens = r.output[-1:] if r.output else r.prompt
                tok = paged_forward(model, cache, [r.rid], [tokens]).argmax(-1).item()
                t = clock.now()
                r.output.append(tok)
                if len(r.output) == 1:
                    r.t_first = t
                if len(r.output) == r.max_new_tokens:
                    r.t_done = t
            running = [r for r in running if len(r.output) < r.max_new_tokens]
        for r in batch:
            cache.free(r.rid)
    return requests
'''

WRONG_METHODS = {
    "serving": [
        WrongMethod("sol-cache", ("test-cache",),
                    "reserves a contiguous max-length run of blocks per sequence when it is added",
                    _CACHE_PREALLOCATED),
        WrongMethod("sol-forward", ("test-forward",),
                    "reruns the whole model on each sequence's history instead of reading K/V from the pool",
                    _FORWARD_RECOMPUTES),
        WrongMethod("sol-continuous", ("test-continuous",),
                    "continuous batching that calls the model once per running sequence",
                    _CONTINUOUS_ONE_CALL_PER_SEQUENCE),
        WrongMethod("sol-stats", ("test-stats",),
                    "TTFT measured from the start of the trace instead of the request's arrival",
                    _STATS_FROM_TRACE_START),
        WrongMethod("sol-static", ("test-static",),
                    "static batching that calls the model once per sequence and step",
                    _STATIC_ONE_CALL_PER_SEQUENCE),
    ],
}


# ---------------------------------------------------------------- scaling-laws
_FLOPS_ALL_PARAMETERS = """
def non_embedding_params(cfg):
    # counts the embedding tables too (every parameter of the model)
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(cfg).parameters())


def training_flops(n_params, n_tokens):
    return 6 * n_params * n_tokens


def tokens_for_budget(compute, n_params):
    return int(compute // (6 * n_params))
"""

_TRAIN_FIXED_STEPS = """
def train_run(cfg, n_tokens, seed=0):
    steps = 40                           # the same schedule for every run, whatever its share of the budget
    torch.manual_seed(seed)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr(cfg), betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr(cfg))
        x, y = get_batch(train_data, BATCH, cfg.block_size, generator=g)
        loss = F.cross_entropy(model(x.to(device)).flatten(0, 1), y.to(device).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return val_loss(model)
"""

_SWEEP_TOKENS_FROM_ALL_PARAMETERS = """
def isoflop_sweep(budgets, configs, min_steps=60, max_steps=500):
    rows = []
    for C in budgets:
        for cfg in configs:
            N = non_embedding_params(cfg)
            with torch.device("meta"):
                n_all = sum(p.numel() for p in GPT(cfg).parameters())
            D = int(C // (6 * n_all))         # tokens from the total count, not the N of the fit
            if not (min_steps <= D // (BATCH * cfg.block_size) <= max_steps):
                continue
            rows.append({"C": C, "cfg": cfg, "N": N, "D": D, "loss": train_run(cfg, D)})
    return rows
"""

_PARABOLA_SAMPLE_ARGMIN = """
def fit_isoflop_minimum(Ns, losses):
    x = np.log(np.asarray(Ns, dtype=float))
    alpha, beta, gamma = np.polyfit(x, np.asarray(losses, dtype=float), 2)
    if alpha <= 0:
        raise ValueError("no minimum")
    best = int(np.argmin(losses))        # the best run instead of the fitted parabola's minimum
    return float(Ns[best]), (float(alpha), float(beta), float(gamma))
"""

_POWER_LAW_AVERAGE_EXPONENT = """
def fit_power_law(Cs, N_stars):
    lc, ln = np.log(np.asarray(Cs, dtype=float)), np.log(np.asarray(N_stars, dtype=float))
    a = float(np.mean(np.diff(ln) / np.diff(lc)))       # average of the exponents between neighbours
    return a, float(np.exp(np.mean(ln - a * lc)))


def compute_optimal(C, a, k):
    N = k * C ** a
    return float(N), float(C / (6 * N))
"""

_ANALYSIS_POWER_LAW_OVER_ALL_RUNS = """
def isoflop_analysis(rows, C_target):
    minima, skipped = {}, []
    for C in sorted({r["C"] for r in rows}):
        mine = [r for r in rows if r["C"] == C]
        if len(mine) < 3:
            skipped.append(C)
            continue
        try:
            minima[C] = fit_isoflop_minimum([r["N"] for r in mine], [r["loss"] for r in mine])[0]
        except ValueError:
            skipped.append(C)
    if len(minima) < 2:
        raise ValueError("cannot fit a power law")
    a, k = fit_power_law([r["C"] for r in rows], [r["N"] for r in rows])     # every run, not the minima
    N, D = compute_optimal(C_target, a, k)
    return {"minima": minima, "skipped": skipped, "a": a, "k": k, "N": N, "D": D}
"""

WRONG_METHODS["scaling-laws"] = [
    WrongMethod("sol-flops", ("test-flops",), "counts the embedding tables in N", _FLOPS_ALL_PARAMETERS),
    WrongMethod("sol-train", ("test-train",), "trains every run for the same 40 steps, whatever its tokens",
                _TRAIN_FIXED_STEPS),
    WrongMethod("sol-sweep", ("test-sweep",), "tokens per run from the total parameter count, not C / (6 N)",
                _SWEEP_TOKENS_FROM_ALL_PARAMETERS),
    WrongMethod("sol-parabola", ("test-parabola",), "the best sampled size instead of the least-squares parabola's minimum",
                _PARABOLA_SAMPLE_ARGMIN),
    WrongMethod("sol-powerlaw", ("test-powerlaw",), "averages the exponents between neighbouring budgets instead of a fit",
                _POWER_LAW_AVERAGE_EXPONENT),
    WrongMethod("sol-analysis", ("test-analysis",), "fits the power law to every run's size, not to the budgets' minima",
                _ANALYSIS_POWER_LAW_OVER_ALL_RUNS),
]
