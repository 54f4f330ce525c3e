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


def tagged_logprobs(hidden, lm_head, targets, chunk=1024, with_entropy=False):
    """Stands in for A1 (so that A2 is graded on its own): not a log-prob, but a value that says which
    hidden state was paired with which target: hidden[:, 0] + 0.001·target."""
    return hidden[:, 0] + 0.001 * targets.float(), None


def a2_expected(model, prompt, response):
    """What A2 must return for one row, from the unpadded row's own hidden states: position t predicts t+1."""
    h = model.model(input_ids=torch.tensor([prompt + response])).last_hidden_state[0]      # [P+R, D]
    return torch.stack([h[len(prompt) - 1 + j, 0] + 0.001 * tok for j, tok in enumerate(response)])


def check_a2(prompts, responses):
    model = tiny_lm()
    width = max(map(len, responses))
    with torch.no_grad(), mock.patch("attnrl_mini.algorithm.logprobs.token_logprobs_from_hidden", tagged_logprobs):
        got = response_logprobs(model, prompts, responses, pad_id=0, chunk=3)
        assert got.shape == (len(responses), width)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            torch.testing.assert_close(got[i, width - len(r):], a2_expected(model, p, r), rtol=0, atol=1e-5)
            assert torch.all(got[i, :width - len(r)] == 0), "left padding positions must be 0"


def test_a2_response_logprobs_against_full_logits():
    check_a2([[1, 2, 3], [4, 5], [6, 7, 8, 9]], [[10, 11, 12, 13], [14], [15, 16]])   # right-aligned in [3, 4]


def test_a2_longest_response_not_first():
    # R_max is the longest response (4, in row 1), not the first row's; a prompt of one token
    check_a2([[4, 5], [1, 2, 3], [6]], [[14], [10, 11, 12, 13], [15, 16, 17]])


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


def one_token_loss(ratio, adv, **kw):
    logp = torch.log(torch.tensor([[ratio]]))
    loss, _ = ppo_loss(logp, torch.zeros(1, 1), None, torch.tensor([[adv]]), torch.ones(1, 1), kl_coef=0.0, **kw)
    return float(loss)


def test_a4_asymmetric_clip_one_token_at_a_time():
    # ε_low = 0.1, ε_high = 0.4, each token alone (so two wrong clips cannot cancel):
    #   ρ=1.6, Â=+1: max(-1.6, -1.4) = -1.4      ρ=0.5, Â=-1: max(0.5, 0.9) = 0.9
    #   ρ=1.2, Â=+1: inside [0.9, 1.4]: -1.2     ρ=0.85, Â=+2: max(-1.7, -1.8) = -1.7 (below 1-ε_low: unclipped)
    kw = dict(clip_low=0.1, clip_high=0.4)
    assert one_token_loss(1.6, 1.0, **kw) == pytest.approx(-1.4, abs=1e-6)
    assert one_token_loss(0.5, -1.0, **kw) == pytest.approx(0.9, abs=1e-6)
    assert one_token_loss(1.2, 1.0, **kw) == pytest.approx(-1.2, abs=1e-6)
    assert one_token_loss(0.85, 2.0, **kw) == pytest.approx(-1.7, abs=1e-6)
    # dual clip, c = 3: ρ=5, Â=-2: max(10, 2.8) = 10 -> min(10, 6) = 6;  ρ=2, Â=-1: max(2, 1.4) = 2 (< 3, kept)
    assert one_token_loss(5.0, -2.0, **kw) == pytest.approx(6.0, abs=1e-5)
    assert one_token_loss(2.0, -1.0, **kw) == pytest.approx(2.0, abs=1e-6)


def test_a4_padding_positions_ignored():
    # tokens 0, 1 valid (ρ = 1, Â = +1: loss -1 each), tokens 2, 3 padding
    # with garbage: log π = 3, log π_old = -2, Â = 7, log π_ref = 5. Only the 2 valid tokens count: (-1 - 1) / 2.
    logp = torch.tensor([[0.0, 0.0, 3.0, 3.0]]).requires_grad_(True)
    old = torch.tensor([[0.0, 0.0, -2.0, -2.0]])
    ref = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    adv = torch.tensor([[1.0, 1.0, 7.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    loss, _ = ppo_loss(logp, old, ref, adv, mask, kl_coef=0.5)
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)           # k3 = 0 on the valid tokens (log π = log π_ref)
    loss.backward()
    # d(-Â·ρ)/d log π = -Â·ρ = -1 per valid token, / N = 2 (+ β·dk3 = 0 at d = 0); padding gets no gradient
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, -0.5, 0.0, 0.0]]), rtol=0, atol=1e-6)


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
