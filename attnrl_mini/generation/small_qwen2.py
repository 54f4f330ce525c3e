"""A Qwen2 decoder written out for sampling from small models: one batched forward per token, a
preallocated KV cache, the LoRA adapter folded into the weights once per call.

At toy scale (0.5M parameters) a token's arithmetic is microseconds; what costs is the per-call
machinery of a general forward: peft's LoRA wrappers (three matmuls per projection), transformers'
mask building, output capturing and a growing cache object, dozens of Python frames per layer. Here
each decode step is ~15 tensor ops per layer on plain tensors:

    x = embed(token)                                               [B, 1, d]
    per layer:  h = RMSNorm(x);  q, k, v = h W_qᵀ + b_q, ...       (W = W₀ + (α/r)·B A, folded once)
                q, k = RoPE(q, k);  K[:, :, t], V[:, :, t] = k, v  (the preallocated cache)
                x = x + softmax(q Kᵀ/√d_h + mask) V W_oᵀ
                x = x + W_down(silu(W_gate RMSNorm(x)) * W_up RMSNorm(x))
    logits = RMSNorm(x) W_embᵀ                                     [B, V]

It computes the same function as transformers' Qwen2ForCausalLM (with its peft adapter), up to float
rounding (folding B A into W and a different attention reduction order change the last bits), so it
samples the same distribution; tests/test_generation_hf.py checks its log-probs against the model's
own forward and its samples against the general loop for one seed.

`SmallQwen2.from_model(model)` returns None for anything it does not cover exactly (another
architecture, sliding windows, a non-default RoPE, quantised layers, LoRA dropout in training mode, DoRA, a model over
`max_params`), and the caller then uses the general loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_PARAMS = 50_000_000   # above this, a folded copy of the weights costs real memory and the general forward's
#                           overhead is small next to its arithmetic: the general loop is used


def _folded(linear: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) of an nn.Linear or of a peft LoRA Linear with its active adapters folded in:
    W₀ + Σ_adapters scaling·B A. None for any other layer (quantised, dropout on, DoRA, ...)."""
    if type(linear) is nn.Linear:
        return linear.weight, linear.bias
    base = getattr(linear, "base_layer", None)
    if type(base) is not nn.Linear or not hasattr(linear, "lora_A"):
        return None
    weight = base.weight
    if getattr(linear, "merged", False) or getattr(linear, "disable_adapters", False):
        return None if getattr(linear, "merged", False) else (weight, base.bias)
    for name in linear.active_adapters:
        if name not in linear.lora_A:
            continue
        dropout = linear.lora_dropout[name]   # an nn.Dropout in eval mode (sampling runs in eval) is the identity
        if not (isinstance(dropout, nn.Identity) or (isinstance(dropout, nn.Dropout) and not dropout.training)) \
                or linear.use_dora.get(name, False):
            return None
        a, b = linear.lora_A[name].weight, linear.lora_B[name].weight   # [r, in], [out, r]
        weight = weight + linear.scaling[name] * (b @ a)
    return weight, base.bias


@dataclass
class _Layer:
    norm1: torch.Tensor                      # [d]
    qkv_w: torch.Tensor                      # [(H + 2·KVH)·d_h, d]: q, k, v projections stacked
    qkv_b: torch.Tensor | None
    o_w: torch.Tensor                        # [d, H·d_h]
    norm2: torch.Tensor                      # [d]
    gate_up_w: torch.Tensor                  # [2·d_ff, d]
    down_w: torch.Tensor                     # [d, d_ff]


class SmallQwen2:
    def __init__(self, embed, layers, final_norm, lm_head, *, n_heads, n_kv_heads, head_dim, eps, inv_freq):
        self.embed, self.layers, self.final_norm, self.lm_head = embed, layers, final_norm, lm_head
        self.n_heads, self.n_kv_heads, self.head_dim, self.eps = n_heads, n_kv_heads, head_dim, eps
        self.inv_freq = inv_freq                                                       # [d_h / 2]
        self.scale = head_dim ** -0.5

    @classmethod
    @torch.no_grad()
    def from_model(cls, model, max_params: int = MAX_PARAMS) -> "SmallQwen2 | None":
        """The folded decoder of a (peft-wrapped) Qwen2ForCausalLM, or None where it would not be exact."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model   # peft -> Qwen2ForCausalLM
        cfg = getattr(inner, "config", None)
        if cfg is None or getattr(cfg, "model_type", None) != "qwen2" or not hasattr(inner, "lm_head"):
            return None
        if sum(p.numel() for p in inner.parameters()) > max_params:
            return None
        rope = getattr(cfg, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default" or getattr(cfg, "use_sliding_window", False) \
                or cfg.hidden_act != "silu" or any(t != "full_attention" for t in (cfg.layer_types or [])):
            return None
        decoder = inner.model
        if decoder.config._attn_implementation not in ("sdpa", "eager"):   # a hook (disruption, FCI) decides
            return None                                                   # what attention computes: keep it
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        layers = []
        for layer in decoder.layers:
            at, mlp = layer.self_attn, layer.mlp
            parts = [_folded(m) for m in (at.q_proj, at.k_proj, at.v_proj, at.o_proj,
                                          mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
            if any(p is None for p in parts):
                return None
            (qw, qb), (kw, kb), (vw, vb), (ow, ob), (gw, gb), (uw, ub), (dw, db) = parts
            if ob is not None or gb is not None or ub is not None or db is not None:
                return None
            biases = (qb, kb, vb)
            qkv_b = None if all(b is None for b in biases) else torch.cat(
                [b if b is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
                 for b, w in zip(biases, (qw, kw, vw))])
            layers.append(_Layer(layer.input_layernorm.weight, torch.cat([qw, kw, vw]), qkv_b, ow,
                                 layer.post_attention_layernorm.weight, torch.cat([gw, uw]), dw))
        head = _folded(inner.lm_head)
        if head is None or head[1] is not None:
            return None
        inv_freq = 1.0 / (rope.get("rope_theta", 10000.0) ** (
            torch.arange(0, head_dim, 2, dtype=torch.float, device=head[0].device) / head_dim))
        return cls(decoder.embed_tokens.weight, layers, decoder.norm.weight, head[0],
                   n_heads=cfg.num_attention_heads, n_kv_heads=cfg.num_key_value_heads, head_dim=head_dim,
                   eps=cfg.rms_norm_eps, inv_freq=inv_freq)

    def _norm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).to(dtype)

    def new_cache(self, B: int, length: int, like: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (K, V), each [B, KVH, length, d_h], filled as positions are computed."""
        shape = (B, self.n_kv_heads, length, self.head_dim)
        return [(like.new_zeros(shape), like.new_zeros(shape)) for _ in self.layers]

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, cache, start: int,
                key_mask: torch.Tensor) -> torch.Tensor:
        """Logits of the last position of `ids` [B, n], written into cache slots start .. start+n.

        positions: [B, n] RoPE positions; key_mask: [B, n, start+n] bool, True where a query may attend.
        """
        B, n = ids.shape
        H, KVH, dh = self.n_heads, self.n_kv_heads, self.head_dim
        x = F.embedding(ids, self.embed)                                               # [B, n, d]
        freqs = positions[..., None].float() * self.inv_freq                           # [B, n, d_h/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype)[:, None], emb.sin().to(x.dtype)[:, None]      # [B, 1, n, d_h]
        mask = ~key_mask[:, None]                                                      # [B, 1, n, L] True = masked
        end = start + n
        for layer, (K, V) in zip(self.layers, cache):
            qkv = F.linear(self._norm(x, layer.norm1), layer.qkv_w, layer.qkv_b)      # [B, n, (H+2KVH)·d_h]
            q, k, v = qkv.view(B, n, H + 2 * KVH, dh).transpose(1, 2).split([H, KVH, KVH], dim=1)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)                              # [B, H|KVH, n, d_h]
            K[:, :, start:end], V[:, :, start:end] = k, v
            # GQA without copying K, V: the H / KVH query heads of a KV head are one [G·n] block of rows
            qg = q.reshape(B, KVH, (H // KVH) * n, dh)                                 # [B, KVH, G·n, d_h]
            scores = (qg @ K[:, :, :end].transpose(-1, -2)) * self.scale               # [B, KVH, G·n, L]
            scores = scores.view(B, H, n, end).masked_fill(mask, float("-inf"))
            att = torch.softmax(scores, dim=-1).view(B, KVH, (H // KVH) * n, end) @ V[:, :, :end]
            x = x + F.linear(att.view(B, H, n, dh).transpose(1, 2).reshape(B, n, H * dh), layer.o_w)
            gate, up = F.linear(self._norm(x, layer.norm2), layer.gate_up_w).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down_w)
        return F.linear(self._norm(x[:, -1], self.final_norm), self.lm_head)          # [B, V]


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


__all__ = ["SmallQwen2", "MAX_PARAMS"]
