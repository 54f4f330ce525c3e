"""Graded tests, part A (GRPO). Every expected value is worked out by hand in the comments.

A test is graded for the exercise named by its prefix: test_a2_... counts for exercise A2.
"""
import copy
import math
from unittest import mock

import pytest
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from attnrl_mini.algorithm.logprobs import token_logprobs_from_hidden
from attnrl_mini.algorithm.loss import ppo_loss
from attnrl_mini.algorithm.logprobs import response_logprobs
from attnrl_mini.algorithm.tree import grpo_advantages

LN2, LN3 = math.log(2.0), math.log(3.0)


def identity_head(vocab: int = 3) -> nn.Linear:
    head = nn.Linear(vocab, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(vocab))   # logits = hidden
    return head


# ---- A1: token log-probs and entropies ------------------------------------------------------

def a1_inputs():
    # row 0: logits (0, ln 2, 0) -> probs (1/4, 1/2, 1/4); row 1: (0, 0, 0) -> uniform 1/3
    hidden = torch.tensor([[0.0, LN2, 0.0], [0.0, 0.0, 0.0]])
    return hidden, torch.tensor([1, 2])


def test_a1_logprobs_and_entropy_by_hand():
    hidden, targets = a1_inputs()
    logp, ent = token_logprobs_from_hidden(hidden, identity_head(), targets, chunk=1, with_entropy=True)
    # log p = ln(1/2), ln(1/3); H = -(2·¼·ln¼ + ½·ln½) = 1.5·ln 2, H(uniform 3) = ln 3
    torch.testing.assert_close(logp, torch.tensor([-LN2, -LN3]), rtol=0, atol=1e-6)
    torch.testing.assert_close(ent, torch.tensor([1.5 * LN2, LN3]), rtol=0, atol=1e-6)


def test_a1_gradient_path_matches():
    hidden, targets = a1_inputs()
    hidden.requires_grad_(True)
    logp, _ = token_logprobs_from_hidden(hidden, identity_head(), targets, chunk=2)
    logp.sum().backward()
    # d log softmax(z)[y] / dz = onehot(y) - softmax(z)
    expected = torch.tensor([[-0.25, 0.5, -0.25], [-1 / 3, -1 / 3, 2 / 3]])
    torch.testing.assert_close(hidden.grad, expected, rtol=0, atol=1e-6)


# ---- A2: response log-probs of a left-padded batch -------------------------------------------

def tiny_lm() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64)
    return Qwen2ForCausalLM(copy.deepcopy(cfg)).eval()


def plain_token_logprobs(hidden, lm_head, targets, chunk=1024, with_entropy=False):
    """A1's job done plainly, so that A2 is graded on its own."""
    logp = torch.log_softmax(lm_head(hidden).float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    return logp, None


def test_a2_response_logprobs_against_full_logits():
    model = tiny_lm()
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    responses = [[10, 11, 12, 13], [14], [15, 16]]        # uneven: right-aligned in a [3, 4] result
    with torch.no_grad(), mock.patch("attnrl_mini.algorithm.logprobs.token_logprobs_from_hidden", plain_token_logprobs):
        got = response_logprobs(model, prompts, responses, pad_id=0, chunk=3)
        assert got.shape == (3, 4)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            ids = torch.tensor([p + r])
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)          # unpadded, one row
            want = torch.stack([logp[len(p) - 1 + j, tok] for j, tok in enumerate(r)])
            torch.testing.assert_close(got[i, 4 - len(r):], want, rtol=0, atol=1e-5)
            assert torch.all(got[i, :4 - len(r)] == 0), "left padding positions must be 0"
            assert torch.all(want < -0.5), "sanity: a random model gives no token a high probability"


# ---- A3: group-normalised advantages (GRPO, Dr. GRPO) -----------------------------------------

def test_a3_grpo_unbiased_std_by_hand():
    # [1, 0, 0]: mean 1/3, unbiased var ((2/3)² + 2·(1/3)²)/2 = 1/3, std 0.57735
    got = grpo_advantages([1.0, 0.0, 0.0], eps=0.0)
    assert got == pytest.approx([(2 / 3) / math.sqrt(1 / 3), -(1 / 3) / math.sqrt(1 / 3),
                                 -(1 / 3) / math.sqrt(1 / 3)], abs=1e-9)
    # [1, 0, 0, 1]: mean 1/2, unbiased std sqrt(1/3): ±0.866025
    assert grpo_advantages([1.0, 0.0, 0.0, 1.0], eps=0.0) == pytest.approx([0.866025404, -0.866025404] * 1 + [-0.866025404, 0.866025404], abs=1e-8)


def test_a3_grpo_edge_groups():
    assert grpo_advantages([1.0], eps=1e-6) == pytest.approx([1.0 / (1.0 + 1e-6)], abs=1e-12)  # verl: mean 0, std 1
    assert grpo_advantages([1.0, 1.0, 1.0]) == [0.0, 0.0, 0.0]                            # no signal
    assert grpo_advantages([]) == []


def test_a3_dr_grpo_mean_only():
    assert grpo_advantages([1.0, 0.0, 0.0], scale_by_std=False) == pytest.approx([2 / 3, -1 / 3, -1 / 3], abs=1e-12)
    assert grpo_advantages([1.0], scale_by_std=False) == pytest.approx([1.0], abs=1e-12)


# ---- A4: the PPO loss ---------------------------------------------------------------------------

def test_a4_clip_higher_and_dual_clip_by_hand():
    # four tokens, ratios ρ = 1.5, 4, 0.5, 0.5 and advantages +1, -1, -1, +1 (ε_low 0.2, ε_high 0.28, c 3):
    #   ρ=1.5, Â=+1: max(-1.5, -1.28) = -1.28          (clip-higher caps the gain at 1.28)
    #   ρ=4,   Â=-1: max(4, 1.28) = 4 -> dual clip min(4, 3) = 3
    #   ρ=0.5, Â=-1: max(0.5, 0.8) = 0.8
    #   ρ=0.5, Â=+1: max(-0.5, -0.8) = -0.5
    # token-mean: (-1.28 + 3 + 0.8 - 0.5) / 4 = 0.505
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 4.0, 0.5, 0.5]])).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    loss, _ = ppo_loss(logp, old, None, adv, torch.ones(1, 4), kl_coef=0.0)
    assert loss.item() == pytest.approx(0.505, abs=1e-6)
    loss.backward()
    # only the unclipped 4th token has a gradient: d(-Â·ρ)/d log π = -Â·ρ = -0.5, divided by N = 4
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, 0.0, -0.125]]), rtol=0, atol=1e-6)


def test_a4_k3_kl_by_hand():
    # Â = 0, log π_ref − log π_θ = ln 2: k3 = e^{ln 2} − ln 2 − 1 = 1 − ln 2 = 0.306853; β = 0.5
    logp = torch.zeros(1, 2)
    ref = torch.full((1, 2), LN2)
    loss, stats = ppo_loss(logp, logp.clone(), ref, torch.zeros(1, 2), torch.ones(1, 2), kl_coef=0.5)
    assert float(loss) == pytest.approx(0.5 * (1 - LN2), abs=1e-6)
    assert stats["kl"] == pytest.approx(1 - LN2, abs=1e-6)


def test_a4_token_mean_not_sequence_mean():
    # row 0 has 1 valid token with ρ = 1, Â = +1 (loss -1); row 1 has 3 valid tokens with Â = 0.
    # token-mean: -1 / 4 = -0.25 (a mean of per-sequence means would give -0.5)
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    z = torch.zeros(2, 3)
    loss, _ = ppo_loss(z, z, None, adv, mask, kl_coef=0.0)
    assert float(loss) == pytest.approx(-0.25, abs=1e-6)
    loss8, _ = ppo_loss(z, z, None, adv, mask, kl_coef=0.0, n_tokens=8)   # a micro-batch of a bigger mini-batch
    assert float(loss8) == pytest.approx(-1 / 8, abs=1e-6)
