"""The courses' one GPT and one tokenizer: what llm-101 has learners build, kept as a module that
later notebooks import instead of copying (a release puts this file beside the notebook when the
catalogue declares it in ``data:``).

- ``ByteBPE``: the byte-level byte-pair encoding of llm-101/tokenization (train, encode, decode).
- ``GPTConfig``, ``GPT``: the pre-norm decoder of llm-101/tiny-gpt, parameter names unchanged
  (``tok_emb``, ``pos_emb``, ``blocks[i].attn.qkv``/``proj``, ``mlp.0``/``mlp.2``, ``ln_f``, ``head``).
  The defaults are that model; ``mlp_ratio``, ``bias``, ``tie_embeddings`` and ``attention`` give the
  GPT-2 layout (llm-201/compute-budgets) and attention as explicit matmuls that a FLOP counter sees.
- ``corpus``, ``get_batch``: the shared text (python-docs.txt, or corpus.txt) and random windows of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


def find_data(name: str) -> Path:
    """A data file beside the notebook (a release), or in the course tree's data/ (a checkout)."""
    here = Path(__file__).resolve().parent
    for p in (Path(name), here / name, Path("..") / "data" / name):
        if p.exists():
            return p
    raise FileNotFoundError(f"{name}: not beside the notebook, nor in {here}")


def corpus(name: str = "python-docs.txt", limit: int | None = None) -> str:
    """The shared text, or its first ``limit`` characters (a CPU run needs only a slice)."""
    text = find_data(name).read_text(encoding="utf-8")
    return text[:limit] if limit else text


class ByteBPE:
    """Byte-level BPE: ``merges`` maps a pair of ids to the id that replaces it, in learned order."""

    def __init__(self, merges: dict[tuple[int, int], int] | None = None):
        self.merges = dict(merges or {})
        self.vocab = {i: bytes([i]) for i in range(256)}
        for (a, b), idx in self.merges.items():
            self.vocab[idx] = self.vocab[a] + self.vocab[b]

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    @staticmethod
    def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
        out, i, n = [], 0, len(ids)
        while i < n:
            if i < n - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "ByteBPE":
        """Learn vocab_size - 256 merges, the most frequent adjacent pair first (ties: first seen)."""
        ids, merges = list(text.encode("utf-8")), {}
        for new_id in range(256, vocab_size):
            counts: dict[tuple[int, int], int] = {}
            for pair in zip(ids, ids[1:]):
                counts[pair] = counts.get(pair, 0) + 1
            if not counts:
                break
            pair = max(counts, key=counts.get)
            ids = cls._merge(ids, pair, new_id)
            merges[pair] = new_id
        return cls(merges)

    def encode(self, text: str) -> list[int]:
        ids = list(text.encode("utf-8"))
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.merges.get(p, math.inf))
            if pair not in self.merges:
                break
            ids = self._merge(ids, pair, self.merges[pair])
        return ids

    def decode(self, ids) -> str:
        return b"".join(self.vocab[int(i)] for i in ids).decode("utf-8", errors="replace")


ATTENTION = ("sdpa", "explicit")


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 64      # context length T
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    mlp_ratio: int = 4        # MLP hidden width = mlp_ratio * d_model
    bias: bool = True         # biases of the linear layers and LayerNorms (the head never has one)
    tie_embeddings: bool = False   # the head reuses the token-embedding matrix (GPT-2)
    # "sdpa": PyTorch's fused attention kernel; "explicit": q k^T, causal mask, softmax and @ v spelled out
    # as matrix products, which torch.utils.flop_counter.FlopCounterMode counts
    attention: str = "sdpa"

    def __post_init__(self):
        if self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, not {self.attention!r}")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.d_model, self.attention = cfg.n_head, cfg.d_model, cfg.attention
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.attention == "explicit":       # the matmuls spelled out, visible to a FLOP counter
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = torch.softmax(att.masked_fill(~causal, float("-inf")), dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d, h, b = cfg.d_model, cfg.mlp_ratio * cfg.d_model, cfg.bias
        self.ln1, self.attn = nn.LayerNorm(d, bias=b), CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(d, bias=b)
        self.mlp = nn.Sequential(nn.Linear(d, h, bias=b), nn.GELU(), nn.Linear(h, d, bias=b))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight    # one matrix, listed once by parameters()
        self.apply(self._init)
        for name, p in self.named_parameters():
            # residual projections scaled down with depth (GPT-2), so the residual stream stays O(1)
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx):
        B, T = idx.shape
        assert T <= self.cfg.block_size, "sequence longer than the context"
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def get_batch(data: torch.Tensor, batch_size: int, block_size: int, generator=None):
    """``batch_size`` random windows of ``data`` (1-D ids) and the same windows shifted by one."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i: i + block_size] for i in ix.tolist()])
    y = torch.stack([data[i + 1: i + 1 + block_size] for i in ix.tolist()])
    return x, y
