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

`response_logprobs` applies this to a batch of (prompt, response) rows: left-padded, so the responses
come out right-aligned as [B, R_max]; `decoder_and_head` reaches the decoder and head through peft.
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


# glibc's largest heap block (its M_MMAP_THRESHOLD maximum on 64-bit): a freed block up to this size is
# reused by the next allocation; a larger one is a fresh mapping, faulted in and zeroed page by page.
CPU_CHUNK_BYTES = 32 << 20


def default_chunk(vocab_size: int, device: torch.device) -> int:
    """Positions per chunk when none is given: 1024; on a CPU at most as many as keep one chunk's fp32
    logits within CPU_CHUNK_BYTES (a 151,936-row vocabulary: 55 positions; the toy worlds': 1024).

    Why: at 1024 positions a Qwen-vocabulary chunk is 622 MB, mapped afresh for every chunk; a tiny
    model of that vocabulary trained on the CPU spent a quarter of its time in the kernel's page faults
    (docs/performance.md, "Log-prob chunks on a CPU"). The arithmetic is the same either way."""
    if device.type != "cpu":
        return 1024
    return max(1, min(1024, CPU_CHUNK_BYTES // (4 * vocab_size)))


def token_logprobs_from_hidden(hidden: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor,
                               chunk: int | None = None, with_entropy: bool = False
                               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of `targets` (and optionally the full-distribution entropies), temperature 1.

    hidden:  [N, D]  hidden state at the position *before* each target (it predicts the target)
    targets: [N]     token ids
    chunk:   positions per LM-head call; None = default_chunk for this vocabulary and device
    Returns (logprobs [N] fp32, entropies [N] fp32 or None). Differentiable when grad is enabled.
    """
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [N, D]; got shape {tuple(hidden.shape)}")
    if targets.dim() != 1 or targets.shape[0] != hidden.shape[0]:
        raise ValueError(f"targets must be [N] with N = hidden.shape[0] = {hidden.shape[0]}; "
                         f"got shape {tuple(targets.shape)}")
    if chunk is None:
        chunk = default_chunk(lm_head.weight.shape[0], hidden.device)
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


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(the inner transformer that returns hidden states, the LM head), through peft wrappers."""
    from peft import PeftModel
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return base.model, base.lm_head


def pad_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-pad prompt+response rows. Returns input_ids [B, L], attention_mask [B, L], L."""
    rows = [p + r for p, r in zip(prompts, responses)]
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, L - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, L - len(r):] = 1
    return ids.to(device), mask.to(device), L


def response_positions(hidden: torch.Tensor, ids: torch.Tensor, responses: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which hidden state scores which response token, in a batch of left-padded prompt+response rows.

    hidden [B, L, D] and ids [B, L] are the padded rows; responses[i] is the response ending row i.
    Returns (h [B, R_max, D], targets [B, R_max], valid [B, R_max] bool): h[i, c] is the hidden state
    that predicts targets[i, c]; the responses come out right-aligned (response token j of row i at
    column R_max - R_i + j) and valid is False on the left padding. `response_logprobs` and
    `fci.score_responses` both read the response tokens' log-probs through this one function.
    """
    L = ids.shape[1]
    # BEGIN SOLUTION A2
    R = max(len(r) for r in responses)
    # hidden at position t predicts token t+1: the R response tokens are predicted from positions L-R-1 .. L-2
    h = hidden[:, L - R - 1:L - 1, :]                                    # [B, R, D]
    targets = ids[:, L - R:]                                             # [B, R]
    valid = torch.zeros(targets.shape, dtype=torch.bool, device=targets.device)
    for i, r in enumerate(responses):
        valid[i, R - len(r):] = True
    return h, targets, valid
    # END SOLUTION A2


def response_logprobs(model: nn.Module, prompts: list[list[int]], responses: list[list[int]],
                      pad_id: int, chunk: int | None = None) -> torch.Tensor:
    """log π(response token | prefix) for a batch, as a right-aligned [B, R_max] tensor (0 on padding).

    Differentiable when called with grad enabled (the PPO update). Rows are left-padded, so the
    responses are right-aligned: response token j of row i sits at column R_max - R_i + j.
    """
    device = next(model.parameters()).device
    ids, mask, L = pad_batch(prompts, responses, pad_id, device)
    decoder, head = decoder_and_head(model)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=position_ids).last_hidden_state  # [B, L, D]
    h, targets, valid = response_positions(hidden, ids, responses)     # [B, R, D], [B, R], [B, R]
    logp, _ = token_logprobs_from_hidden(h.reshape(-1, h.shape[-1]), head, targets.reshape(-1), chunk=chunk)
    return logp.view(valid.shape).masked_fill(~valid, 0.0)
