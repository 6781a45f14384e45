"""Wrong-method answers for llm-201's compute-budgets and lora assignments (see __init__.py)."""

from . import WrongMethod

WRONG_METHODS = {
    "compute-budgets": [
        WrongMethod("sol-param-count", ("test-param-count",),
                    "builds the model on the meta device and sums p.numel() instead of using the formula",
                    "def param_count(cfg):\n"
                    "    with torch.device('meta'):\n"
                    "        return int(sum(p.numel() for p in GPT(cfg).parameters()))\n"),
        WrongMethod("sol-flops", ("test-flops",),
                    "Chinchilla optimum by a grid search over model sizes instead of solving C = 120 N^2",
                    "def training_flops(n_params, n_tokens):\n"
                    "    return 6 * n_params * n_tokens\n"
                    "\n"
                    "\n"
                    "def chinchilla_tokens(n_params):\n"
                    "    return 20 * n_params\n"
                    "\n"
                    "\n"
                    "def chinchilla_optimal(compute_flops):\n"
                    "    sizes = [10 ** (k / 100) for k in range(600, 1400)]\n"
                    "    n = min(sizes, key=lambda n: abs(training_flops(n, chinchilla_tokens(n)) - compute_flops))\n"
                    "    return n, chinchilla_tokens(n)\n"),
        WrongMethod("sol-adam-memory", ("test-adam-memory",),
                    "the 16 bytes/parameter rule of thumb, whatever the precisions asked",
                    "def adam_memory_bytes(n_params, param_bytes=2, grad_bytes=2, master_weights=True):\n"
                    "    return 16 * n_params\n"),
        WrongMethod("sol-activation", ("test-activation",),
                    "the first form of the formula with a float division: returns a float, not an exact int",
                    "def activation_memory_bytes(cfg, batch_size, seq_len, flash=False):\n"
                    "    s, b, h, a = seq_len, batch_size, cfg.d_model, cfg.n_head\n"
                    "    return cfg.n_layer * s * b * h * (34 + (0 if flash else 5 * a * s / h))\n"),
        WrongMethod("sol-mfu", ("test-mfu",),
                    "reads the peak from the H200 constant instead of the peak_flops argument",
                    "def mfu(tokens_per_s, n_params, peak_flops):\n"
                    "    return 6 * n_params * tokens_per_s / H200_PEAK_BF16\n"
                    "\n"
                    "\n"
                    "def training_days(n_params, n_tokens, n_gpus, peak_flops, mfu_fraction):\n"
                    "    return training_flops(n_params, n_tokens) / (n_gpus * H200_PEAK_BF16 * mfu_fraction) / 86400\n"),
    ],
    "lora": [
        WrongMethod("sol-lora-linear", ("test-lora-linear", "test-merge"),
                    "forward() forms the full matrix W0 + (alpha/r) B A at every call; merge() adds it into the "
                    "base layer in place and returns that",
                    "class LoRALinear(nn.Module):\n"
                    "    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0):\n"
                    "        super().__init__()\n"
                    "        self.base = base\n"
                    "        for p in self.base.parameters():\n"
                    "            p.requires_grad_(False)\n"
                    "        self.r, self.alpha, self.scaling = r, alpha, alpha / r\n"
                    "        w = base.weight\n"
                    "        self.A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))\n"
                    "        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))\n"
                    "        self.B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))\n"
                    "\n"
                    "    def forward(self, x):\n"
                    "        return F.linear(x, self.base.weight + self.scaling * (self.B @ self.A), self.base.bias)\n"
                    "\n"
                    "    def merge(self):\n"
                    "        with torch.no_grad():\n"
                    "            self.base.weight += self.scaling * (self.B @ self.A)\n"
                    "        return self.base\n"),
        WrongMethod("sol-add-lora", ("test-add-lora",),
                    "hard-codes the four layers of this GPT instead of matching the module names against targets",
                    "TARGETS = ('attn.qkv', 'attn.proj', 'mlp.0', 'mlp.2')\n"
                    "\n"
                    "\n"
                    "def lora_param_count(d_in, d_out, r):\n"
                    "    return r * (d_in + d_out)\n"
                    "\n"
                    "\n"
                    "def add_lora(model, r, alpha, targets=TARGETS):\n"
                    "    model.requires_grad_(False)\n"
                    "    for blk in model.blocks:\n"
                    "        blk.attn.qkv = LoRALinear(blk.attn.qkv, r, alpha)\n"
                    "        blk.attn.proj = LoRALinear(blk.attn.proj, r, alpha)\n"
                    "        blk.mlp[0] = LoRALinear(blk.mlp[0], r, alpha)\n"
                    "        blk.mlp[2] = LoRALinear(blk.mlp[2], r, alpha)\n"
                    "    return model\n"
                    "\n"
                    "\n"
                    "def count_trainable(model):\n"
                    "    return sum(p.numel() for p in model.parameters() if p.requires_grad)\n"
                    "\n"
                    "\n"
                    "def merge_lora(model):\n"
                    "    # replace every LoRALinear by its merged nn.Linear (uses your merge())\n"
                    "    for name, m in list(model.named_modules()):\n"
                    "        if isinstance(m, LoRALinear):\n"
                    "            parent_name, _, child = name.rpartition('.')\n"
                    "            setattr(model.get_submodule(parent_name) if parent_name else model, child, m.merge())\n"
                    "    return model\n"),
        WrongMethod("sol-lora-linear", ("test-lora-linear",),
                    "trains the whole weight: the wrapped base layer is left trainable (only A, B were to be trained)",
                    "class LoRALinear(nn.Module):\n"
                    "    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0):\n"
                    "        super().__init__()\n"
                    "        self.base = base\n"
                    "        self.r, self.alpha, self.scaling = r, alpha, alpha / r\n"
                    "        w = base.weight\n"
                    "        self.A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))\n"
                    "        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))\n"
                    "        self.B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))\n"
                    "\n"
                    "    def forward(self, x):\n"
                    "        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scaling\n"
                    "\n"
                    "    def merge(self):\n"
                    "        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,\n"
                    "                           device=self.base.weight.device, dtype=self.base.weight.dtype)\n"
                    "        with torch.no_grad():\n"
                    "            merged.weight.copy_(self.base.weight + self.scaling * (self.B @ self.A))\n"
                    "            if self.base.bias is not None:\n"
                    "                merged.bias.copy_(self.base.bias)\n"
                    "        return merged\n"),
        WrongMethod("sol-add-lora", ("test-add-lora", "test-finetune"),
                    "wraps the target layers but leaves the rest of the model (embeddings, LayerNorms, head) "
                    "trainable: the 'LoRA' run fine-tunes them too",
                    "TARGETS = ('attn.qkv', 'attn.proj', 'mlp.0', 'mlp.2')\n"
                    "\n"
                    "\n"
                    "def lora_param_count(d_in, d_out, r):\n"
                    "    return r * (d_in + d_out)\n"
                    "\n"
                    "\n"
                    "def add_lora(model, r, alpha, targets=TARGETS):\n"
                    "    names = [name for name, m in model.named_modules()\n"
                    "             if isinstance(m, nn.Linear) and any(name.endswith(t) for t in targets)]\n"
                    "    for name in names:\n"
                    "        parent_name, _, child = name.rpartition('.')\n"
                    "        parent = model.get_submodule(parent_name) if parent_name else model\n"
                    "        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha))\n"
                    "    return model\n"
                    "\n"
                    "\n"
                    "def count_trainable(model):\n"
                    "    return sum(p.numel() for p in model.parameters() if p.requires_grad)\n"
                    "\n"
                    "\n"
                    "def merge_lora(model):\n"
                    "    # replace every LoRALinear by its merged nn.Linear (uses your merge())\n"
                    "    for name, m in list(model.named_modules()):\n"
                    "        if isinstance(m, LoRALinear):\n"
                    "            parent_name, _, child = name.rpartition('.')\n"
                    "            setattr(model.get_submodule(parent_name) if parent_name else model, child, m.merge())\n"
                    "    return model\n"),
    ],
}
