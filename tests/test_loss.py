"""PPO clip-higher + dual clip + k3 KL with token-mean (docs/algorithm.md §g), on tiny hand-computed tensors."""
import math

import pytest
import torch

from attnrl_mini.algorithm.loss import ppo_loss

LN2 = math.log(2)


def row(*values):
    return torch.tensor([values], dtype=torch.float64)   # [1, T]


# One token per clipping region; old log-prob 0, so ρ = exp(logπ).
#   Â     ρ     −Â·ρ   −Â·clip(ρ, 0.8, 1.28)   max      dual (Â<0): min(·, −3Â)   region
#   +1   1.5    −1.5   −1.28                   −1.28    –                        clipped high (no gradient)
#   +1   0.5    −0.5   −0.8                    −0.5     –                        not clipped (Â > 0, ρ low)
#   −1   0.5     0.5    0.8                     0.8     0.8                      clipped low (no gradient)
#   −1   1.1     1.1    1.1                     1.1     1.1                      inside the trust region
#   −1   5.0     5.0    1.28                    5.0     3.0                      dual clip (no gradient)
#   +2   1.0    −2.0   −2.0                    −2.0     –                        inside
# token-mean = (−1.28 − 0.5 + 0.8 + 1.1 + 3.0 − 2.0)/6 = 1.12/6
ADV = row(1, 1, -1, -1, -1, 2)
RATIO = row(1.5, 0.5, 0.5, 1.1, 5.0, 1.0)


def test_each_clipping_region_by_hand():
    logp = RATIO.log().requires_grad_(True)
    loss, stats = ppo_loss(logp, torch.zeros_like(logp), None, ADV, torch.ones_like(logp), kl_coef=0.0)
    assert loss.item() == pytest.approx(1.12 / 6)
    # clipped by the clip range: tokens 1 and 3; dual clip: token 5
    assert stats["clip_frac"] == pytest.approx(2 / 6)
    assert stats["dual_clip_frac"] == pytest.approx(1 / 6)
    assert stats["ratio_mean"] == pytest.approx((1.5 + 0.5 + 0.5 + 1.1 + 5.0 + 1.0) / 6)
    assert stats["n_tokens"] == 6
    # d(−Â·ρ)/d logπ = −Â·ρ where not clipped, 0 where clipped; then /6 for the token-mean
    loss.backward()
    expected = torch.tensor([[0.0, -0.5, 0.0, 1.1, 0.0, -2.0]], dtype=torch.float64) / 6
    assert torch.allclose(logp.grad, expected)


def test_k3_kl_by_hand():
    # ρ = 1 and Â = 0, so only the KL term remains.  d = log π_ref − log π:
    #   d =  ln 2: e^d − d − 1 = 2 − ln 2 − 1   = 0.306853
    #   d = −ln 2:             = 0.5 + ln 2 − 1 = 0.193147
    #   d =  0:                = 0
    #   d = +30 -> clamped to 20: e^20 − 21 is huge -> clamped to 10
    #   d = −30 -> clamped to −20: e^−20 + 19 ≈ 19 -> clamped to 10
    logp = torch.zeros(1, 5, dtype=torch.float64)
    ref = row(LN2, -LN2, 0.0, 30.0, -30.0)
    kls = [1 - LN2, LN2 - 0.5, 0.0, 10.0, 10.0]
    loss, stats = ppo_loss(logp, logp, ref, torch.zeros_like(logp), torch.ones_like(logp), kl_coef=0.5)
    assert stats["kl"] == pytest.approx(sum(kls) / 5)
    assert stats["pg_loss"] == pytest.approx(0.0)
    assert loss.item() == pytest.approx(0.5 * sum(kls) / 5)


def test_token_mean_differs_from_mean_of_sequence_means():
    # ρ = 1 everywhere, so each valid token's loss is −Â (and Â < 0 stays under the dual clip −3Â).
    # sequence 0: 3 valid tokens of loss 1; sequence 1: 1 valid token of loss 4 (two padded positions).
    adv = torch.tensor([[-1.0, -1.0, -1.0], [-4.0, 1000.0, 1000.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    logp = torch.zeros(2, 3)
    logp[1, 1:] = 50.0                          # garbage at padded positions must not matter
    loss, _ = ppo_loss(logp, torch.zeros(2, 3), None, adv, mask, kl_coef=0.0)
    assert loss.item() == pytest.approx((3 * 1 + 4) / 4)           # token-mean 1.75
    assert loss.item() != pytest.approx((1 + 4) / 2)                # mean of sequence means would be 2.5


def test_micro_batches_with_n_tokens_add_up_to_the_mini_batch():
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(4, 6, generator=g)).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(4, 6, generator=g)
    ref = logp.detach() + 0.2 * torch.randn(4, 6, generator=g)
    adv = torch.randn(4, 6, generator=g)
    mask = (torch.rand(4, 6, generator=g) < 0.7).float()
    mask[:, 0] = 1.0

    full, _ = ppo_loss(logp, old, ref, adv, mask)
    (full_grad,) = torch.autograd.grad(full, logp)

    n = mask.sum().item()
    parts = [ppo_loss(logp[i:i + 2], old[i:i + 2], ref[i:i + 2], adv[i:i + 2], mask[i:i + 2], n_tokens=n)[0]
             for i in (0, 2)]
    (split_grad,) = torch.autograd.grad(parts[0] + parts[1], logp)
    assert (parts[0] + parts[1]).item() == pytest.approx(full.item(), rel=1e-6)
    assert torch.allclose(split_grad, full_grad, atol=1e-7)
    # without n_tokens each micro-batch normalises by its own count: a different (wrong) total
    own = [ppo_loss(logp[i:i + 2], old[i:i + 2], ref[i:i + 2], adv[i:i + 2], mask[i:i + 2])[0] for i in (0, 2)]
    assert (own[0] + own[1]).item() != pytest.approx(full.item(), rel=1e-3)


def test_extreme_log_ratio_is_clamped_not_infinite():
    # logπ − logπ_old = 50 -> clamped to 20: ρ = e^20, finite; Â = +1 is clipped to −1.28, Â = −1 dual-clipped to 3
    logp = torch.tensor([[50.0, 50.0]])
    loss, stats = ppo_loss(logp, torch.zeros(1, 2), None, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), kl_coef=0.0)
    assert loss.item() == pytest.approx((-1.28 + 3.0) / 2)
    assert math.isfinite(stats["ratio_mean"])


def test_bad_input_is_rejected():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages has shape"):
        ppo_loss(x, x, x, torch.zeros(2, 2), x)
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        ppo_loss(x, x, None, x, x, kl_coef=0.001)
    with pytest.raises(ValueError, match="n_tokens must be > 0"):
        ppo_loss(x, x, x, x, x, n_tokens=0)
