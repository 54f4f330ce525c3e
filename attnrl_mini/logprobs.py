"""Token log-probs (and entropies) from the last hidden states, the LM head applied in chunks.

For a response token y_t the policy's log-probability is

    log π(y_t | x, y_<t) = log softmax(lm_head(h_{t-1}))[y_t]          (temperature 1)

and the entropy of the full next-token distribution at that position is

    H_t = - Σ_v π(v | x, y_<t) · log π(v | x, y_<t).

Why chunks: the logits of one long sequence are [T, vocab] — for Qwen2.5 (vocab 151,936) and
T = 4096 that is 2.5 GB in fp32. We apply the head `chunk` positions at a time, so at most
[chunk, vocab] logits exist at once. With grad enabled (the PPO update) each chunk is wrapped in
activation checkpointing, so autograd does not keep every chunk's logits either: the backward pass
recomputes one chunk's logits at a time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _chunk_logprobs(hidden: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor,
                    with_entropy: bool) -> tuple[torch.Tensor, ...]:
    """log π(target) (and entropy) for one chunk of positions. hidden [n, D], targets [n]."""
    # BEGIN SOLUTION A1
    logits = lm_head(hidden).float()                                   # [n, vocab], fp32 for the softmax
    logp_all = F.log_softmax(logits, dim=-1)                           # [n, vocab]
    logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)           # [n]
    if not with_entropy:
        return (logp,)
    entropy = -(logp_all.exp() * logp_all).sum(-1)                     # [n]
    return logp, entropy
    # END SOLUTION A1


def token_logprobs_from_hidden(hidden: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor,
                               chunk: int = 1024, with_entropy: bool = False
                               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of `targets` (and optionally the full-distribution entropies), temperature 1.

    hidden:  [N, D]  hidden state at the position *before* each target (it predicts the target)
    targets: [N]     token ids
    Returns (logprobs [N] fp32, entropies [N] fp32 or None). Differentiable when grad is enabled.
    """
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [N, D]; got shape {tuple(hidden.shape)}")
    if targets.dim() != 1 or targets.shape[0] != hidden.shape[0]:
        raise ValueError(f"targets must be [N] with N = hidden.shape[0] = {hidden.shape[0]}; "
                         f"got shape {tuple(targets.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    targets = targets.to(device=hidden.device, dtype=torch.long)
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in lm_head.parameters()))

    logps, entropies = [], []
    for start in range(0, hidden.shape[0], chunk):
        h, y = hidden[start:start + chunk], targets[start:start + chunk]
        if needs_grad:  # recompute this chunk's logits in the backward instead of storing them
            out = checkpoint(_chunk_logprobs, h, lm_head, y, with_entropy, use_reentrant=False)
        else:
            out = _chunk_logprobs(h, lm_head, y, with_entropy)
        logps.append(out[0])
        if with_entropy:
            entropies.append(out[1])

    if not logps:  # N == 0
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, (empty.clone() if with_entropy else None)
    return torch.cat(logps), (torch.cat(entropies) if with_entropy else None)
