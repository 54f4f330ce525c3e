"""The policy loss (docs/algorithm.md §g): PPO clip-higher with dual clip, k3 KL, true token-mean.

Per response token t (all tensors [B, T], padded positions have mask 0):
    ρ_t    = exp(clamp(log π_θ − log π_old, −20, 20))                       importance ratio
    L_t    = max(−Â_t·ρ_t, −Â_t·clip(ρ_t, 1 − ε_low, 1 + ε_high))           clip-higher (0.2 / 0.28)
    L_t    = min(L_t, −Â_t·c)            for Â_t < 0                        dual clip (c = 3)
    kl_t   = exp(d) − d − 1,  d = clamp(log π_ref − log π_θ, −20, 20),      k3 "low-variance" KL,
             clamped to [−10, 10]
    loss   = Σ_t mask_t·(L_t + β·kl_t) / N                                  N = valid tokens of the mini-batch

Token-mean: every valid token of the mini-batch weighs the same, so a long sequence counts more than
a short one (unlike a mean of per-sequence means). To split a mini-batch into micro-batches, pass
n_tokens = the mini-batch's valid-token count to every micro-batch call: the summed gradients are then
exactly those of the whole mini-batch.

This true mini-batch token-mean is a departure (docs/algorithm.md §g, "Departures"): the release
(verl 0.4) takes a token-mean per micro-batch and weights each by its number of sequences, so its
loss depends on how the micro-batches happen to be packed.
"""
from __future__ import annotations

import torch


def ppo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor | None,
             advantages: torch.Tensor, mask: torch.Tensor, clip_low: float = 0.2, clip_high: float = 0.28,
             clip_c: float = 3.0, kl_coef: float = 0.001,
             n_tokens: int | float | None = None) -> tuple[torch.Tensor, dict]:
    """PPO clip-higher + dual clip + k3 KL, token-mean over the mask (see the module docstring).

    logprobs [B, T] (with grad), old_logprobs / ref_logprobs / advantages / mask [B, T].
    ref_logprobs may be None when kl_coef == 0.
    n_tokens: the normaliser N; default mask.sum() (this call is the whole mini-batch).
    Returns (loss, stats); stats are floats averaged over this call's valid tokens.
    """
    shape = logprobs.shape
    for name, t in (("old_logprobs", old_logprobs), ("advantages", advantages), ("mask", mask)):
        if t.shape != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)} like logprobs")
    if ref_logprobs is not None and ref_logprobs.shape != shape:
        raise ValueError(f"ref_logprobs has shape {tuple(ref_logprobs.shape)}, expected {tuple(shape)}")
    if kl_coef != 0 and ref_logprobs is None:
        raise ValueError("kl_coef != 0 needs ref_logprobs")
    if clip_c <= 1.0:
        raise ValueError(f"dual-clip constant must be > 1, got {clip_c}")

    mask = mask.to(logprobs.dtype)
    old_logprobs, advantages = old_logprobs.to(logprobs.dtype), advantages.to(logprobs.dtype)
    n_valid = mask.sum()
    if n_tokens is None:
        denom = n_valid.clamp_min(1.0)
    else:
        if n_tokens <= 0:
            raise ValueError(f"n_tokens must be > 0, got {n_tokens}")
        denom = torch.as_tensor(float(n_tokens), dtype=logprobs.dtype, device=logprobs.device)

    # BEGIN SOLUTION A4
    log_ratio = torch.clamp(logprobs - old_logprobs, -20.0, 20.0)         # [B, T]
    ratio = torch.exp(log_ratio)                                          # ρ
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss_clip = torch.maximum(loss_unclipped, loss_clipped)               # pessimistic of the two
    loss_dual = torch.minimum(loss_clip, -advantages * clip_c)            # caps −Â·ρ when Â < 0, ρ ≫ 1
    pg = torch.where(advantages < 0, loss_dual, loss_clip)                # [B, T]

    if ref_logprobs is not None:
        d = torch.clamp(ref_logprobs.to(logprobs.dtype) - logprobs, -20.0, 20.0)
        kl = torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0)             # k3, >= 0
    else:
        kl = torch.zeros_like(pg)

    # true token-mean over the mini-batch; the release averages per-micro-batch means (a departure, see above)
    loss = ((pg + kl_coef * kl) * mask).sum() / denom
    # END SOLUTION A4

    with torch.no_grad():
        def masked_mean(x: torch.Tensor) -> float:
            return float((x.float() * mask).sum() / n_valid.clamp_min(1.0))
        stats = {
            "pg_loss": masked_mean(pg),
            "kl": masked_mean(kl),
            "ratio_mean": masked_mean(ratio),
            "clip_frac": masked_mean(loss_clipped > loss_unclipped),             # clip region active
            "dual_clip_frac": masked_mean((advantages < 0) & (loss_clip > -advantages * clip_c)),
            "approx_kl_old": masked_mean(-log_ratio),                             # E[log π_old − log π_θ]
            "n_tokens": float(n_valid),
        }
    return loss, stats


__all__ = ["ppo_loss"]
