"""The attention-disruption hook behind the paper's Fig. 3 (docs/algorithm.md §b, §i).

The release's `eager_attention_forward` has a `disrupted_token_ranges` switch: after the softmax,
the attention probabilities of the chosen keys are set to 0 and NOT renormalised, so the query
simply loses that part of its context:

    o_t = Σ_{s ∉ D} softmax(q_t·K / √d)_s · v_s        (D = the disrupted key range)

Here that is a transformers attention function registered under DISRUPT_ATTENTION (as fci.py
registers its own), switched on for a model with `disrupted(model, start, end)`:

    with disrupted(model, start=prompt_len + s, end=prompt_len + e):   # key positions [start, end)
        generator.generate(...)                                        # the rest is regenerated

Only queries at positions >= `end` are disrupted: the prefix up to and including the step is
computed as usual, and every token generated after it cannot see the step. Positions are indices
into the keys of an UNPADDED row (one prompt per call: generate the disruptions one prefix at a time).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from attnrl_mini.algorithm.fci import use_attention
from attnrl_mini.algorithm.logprobs import decoder_and_head

DISRUPT_ATTENTION = "attnrl_disrupt"


@dataclass
class KeyRange:
    start: int    # first disrupted key position
    end: int      # one past the last


_ACTIVE: list[KeyRange] = []   # the range of the `disrupted` block being run (at most one)


def disrupted_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                        **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention; with an active KeyRange, post-softmax weights of those keys are zeroed for the
    queries at positions >= range.end, without renormalising.

    query [B, H, q, d], key/value [B, Hkv, k, d] (post-RoPE; the q queries are the last q of the k
    positions, as in a KV-cached forward). attention_mask: sdpa's bool mask [B, 1, q, k] (True =
    may attend) or None (no padding: plain causal). Returns ([B, q, H, d], weights [B, H, q, k]).
    """
    B, H, q_len, _ = query.shape
    k_len = key.shape[2]
    groups = H // key.shape[1]
    logits = torch.matmul(query, repeat_kv(key, groups).transpose(2, 3)) * scaling        # [B, H, q, k]
    q_pos = torch.arange(k_len - q_len, k_len, device=query.device)                        # [q] absolute positions
    k_pos = torch.arange(k_len, device=query.device)                                       # [k]
    allowed = k_pos[None, :] <= q_pos[:, None]                                             # [q, k] causal
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, :, :, -k_len:].bool()                       # [B, 1, q, k]
    logits = logits.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(logits.float(), dim=-1)                                        # [B, H, q, k], fp32
    if _ACTIVE:
        r = _ACTIVE[0]
        hit = (q_pos[:, None] >= r.end) & (k_pos[None, :] >= r.start) & (k_pos[None, :] < r.end)  # [q, k]
        weights = weights.masked_fill(hit, 0.0)                                            # no renormalisation
    weights = weights.to(value.dtype)
    out = torch.matmul(weights, repeat_kv(value, groups))                                 # [B, H, q, d]
    return out.transpose(1, 2).contiguous(), weights


AttentionInterface.register(DISRUPT_ATTENTION, disrupted_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(DISRUPT_ATTENTION, sdpa_mask)


@contextlib.contextmanager
def disrupted(model: nn.Module, start: int, end: int):
    """Run `model` with attention to key positions [start, end) removed for every later query."""
    if not 0 <= start < end:
        raise ValueError(f"disrupted key range must satisfy 0 <= start < end, got [{start}, {end})")
    decoder, _ = decoder_and_head(model)
    _ACTIVE[:] = [KeyRange(start, end)]
    try:
        with use_attention(decoder, DISRUPT_ATTENTION):
            yield
    finally:
        _ACTIVE.clear()
