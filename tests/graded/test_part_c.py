"""Graded tests, part C (AttnRL). Every expected value is worked out by hand in the comments.

A test is graded for the exercise named by its prefix: test_c2_... counts for exercise C2.
"""
import copy
import math
import random
from unittest import mock

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from attnrl_mini.algorithm.adaptive import (BatchSizeController, RunningMean, branch_count, choose_responses_to_branch,
                                  drop_zero_advantage_prompts)
from attnrl_mini.algorithm.branching import fci_branch_points, fci_candidate_steps
from attnrl_mini.algorithm.fci import FCI_ATTENTION, FCIContext, left_pad, step_attention_to_fci, step_weight_matrix, use_attention
from attnrl_mini.algorithm.tree import TrainSequence

# A step-level attention matrix α[a, b] (query range a, key range b): range 0 = prompt, 1..4 = steps 0..3
ALPHA = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0],
                      [0.5, 0.5, 0.0, 0.0, 0.0],
                      [0.2, 0.3, 0.5, 0.0, 0.0],
                      [0.1, 0.2, 0.3, 0.4, 0.0],
                      [0.1, 0.1, 0.2, 0.3, 0.3]])


# ---- C1: Eq. 4's averaging matrix -----------------------------------------------------------------

def test_c1_step_weight_matrix_by_hand():
    W = step_weight_matrix([(0, 2), (2, 3), (3, 6)], seq_len=7)
    torch.testing.assert_close(W, torch.tensor([[0.5, 0.5, 0, 0, 0, 0, 0],
                                                [0, 0, 1.0, 0, 0, 0, 0],
                                                [0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0]]), rtol=0, atol=1e-7)


def test_c1_double_mean():
    # W A Wᵀ [a, b] is the mean of A over the block r_a × r_b
    A = torch.arange(36.0).view(6, 6)
    W = step_weight_matrix([(0, 2), (2, 3), (3, 6)], seq_len=6)
    assert float((W @ A @ W.T)[2, 0]) == pytest.approx(float(A[3:6, 0:2].mean()), abs=1e-5)   # 22.5
    assert float((W @ A @ W.T)[0, 1]) == pytest.approx(float(A[0:2, 2].mean()), abs=1e-5)     # 5.0


# ---- C2: Eq. 5 ---------------------------------------------------------------------------------------

def test_c2_eq5_by_hand():
    # Δ = 1: y[k] = Σ_{a >= k+2} α[a, k+1];  step 0 forced to 0 (would be 0.2 + 0.1 + 0.1)
    #   step 1: α[3,2] + α[4,2] = 0.3 + 0.2 = 0.5;  step 2: α[4,3] = 0.3;  step 3: nothing later = 0
    torch.testing.assert_close(step_attention_to_fci(ALPHA, delta=1), torch.tensor([0.0, 0.5, 0.3, 0.0]))
    # Δ = 2: step 1: α[4,2] = 0.2; step 2: nothing 2 steps later
    torch.testing.assert_close(step_attention_to_fci(ALPHA, delta=2), torch.tensor([0.0, 0.2, 0.0, 0.0]))


def test_c2_think_end_and_batch_dims():
    # </think> in step 2: steps 2.. get 0
    torch.testing.assert_close(step_attention_to_fci(ALPHA, delta=1, think_end_step=2),
                               torch.tensor([0.0, 0.5, 0.0, 0.0]))
    two_heads = torch.stack([ALPHA, 2 * ALPHA])                                       # [2, 5, 5]
    torch.testing.assert_close(step_attention_to_fci(two_heads, delta=1),
                               torch.tensor([[0.0, 0.5, 0.3, 0.0], [0.0, 1.0, 0.6, 0.0]]))


# ---- C3: Eq. 6, the max over heads and layers ---------------------------------------------------------

def loop_eq5(alpha, delta=4, think_end_step=-1):
    """C2's job done with loops (Eq. 5 + masking), so that C3 is graded on its own. alpha [..., S+1, S+1]."""
    n = alpha.shape[-1]
    y = torch.zeros(*alpha.shape[:-2], n - 1)
    for k in range(1, n - 1):
        if not 0 <= think_end_step <= k:
            y[..., k] = sum(alpha[..., a, k + 1] for a in range(k + 1 + delta, n)) if k + 1 + delta < n else 0.0
    return y


@mock.patch("attnrl_mini.algorithm.fci.step_attention_to_fci", loop_eq5)
def test_c3_running_max_over_heads_and_layers():
    ctx = FCIContext(ranges=[[(0, 1)] * 5], step_weights=[torch.zeros(5, 5)], pad_offsets=[0],
                     think_end_steps=[-1], delta=1)
    other = ALPHA.clone()
    other[3, 2], other[4, 2], other[4, 3] = 0.0, 0.0, 0.9              # head 2: y = [0, 0, 0.9, 0]
    ctx.add_layer(0, torch.stack([ALPHA, other]))                       # layer 1, heads y = [0,.5,.3,0], [0,0,.9,0]
    torch.testing.assert_close(ctx.fci[0], torch.tensor([0.0, 0.5, 0.9, 0.0]))
    ctx.add_layer(0, torch.stack([0.2 * ALPHA, 0.2 * ALPHA]))           # layer 2, smaller everywhere
    torch.testing.assert_close(ctx.fci[0], torch.tensor([0.0, 0.5, 0.9, 0.0]))
    ctx.add_layer(0, torch.stack([2 * ALPHA]))                          # layer 3: step 1 rises to 1.0
    torch.testing.assert_close(ctx.fci[0], torch.tensor([0.0, 1.0, 0.9, 0.0]))


# ---- C4: Eq. 7 candidates -----------------------------------------------------------------------------

def test_c4_quantile_threshold_by_hand():
    y = torch.tensor([0.0, 0.5, 0.1, 0.4, 0.2])
    # sorted 0, .1, .2, .4, .5: the 0.8 quantile sits at position 3.2 -> 0.4 + 0.2·0.1 = 0.42
    assert fci_candidate_steps(y, 0.8) == [1]
    assert fci_candidate_steps(y, 0.5) == [1, 3, 4]          # τ = 0.2, y >= τ (inclusive)


def test_c4_step0_excluded_and_zero_threshold():
    assert fci_candidate_steps(torch.tensor([0.9, 0.1, 0.2, 0.3, 0.4]), 0.8) == []   # τ = 0.5; step 0 never
    # τ = 0 while some y > 0: τ becomes the smallest positive y, else every zeroed step would qualify
    assert fci_candidate_steps(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.3]), 0.8) == [5]


# ---- C5: ATB branch points ----------------------------------------------------------------------------

STEPS5 = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
FCI5 = torch.tensor([0.0, 0.1, 0.9, 0.2, 0.8])        # quantile 0.5 -> τ = 0.2 -> candidates 2, 3, 4


def plain_candidates(fci, quantile=0.8):
    """C4's job for these inputs (no τ = 0 case), so that C5 is graded on its own."""
    tau = float(torch.quantile(fci.double(), quantile))
    return [k for k in range(1, fci.numel()) if float(fci[k]) >= tau]


C4_PLAIN = mock.patch("attnrl_mini.algorithm.branching.fci_candidate_steps", plain_candidates)


@C4_PLAIN
def test_c5_earliest_candidates_not_highest():
    assert fci_branch_points(FCI5, STEPS5, prompt_len=10, n=2, quantile=0.5, min_gap=0, min_start=0) == [4, 6]


@C4_PLAIN
def test_c5_spacing_and_start_rules():
    # min_gap 3: step 3 starts 0 tokens after step 2 ends, step 4 2 tokens: rejected; fallback adds step 1
    assert fci_branch_points(FCI5, STEPS5, prompt_len=10, n=2, quantile=0.5, min_gap=3, min_start=0) == [2, 4]
    assert fci_branch_points(FCI5, STEPS5, prompt_len=10, n=2, quantile=0.5, min_gap=2, min_start=0) == [4, 8]
    # min_start 15: step 2's absolute start 10 + 4 = 14 is too early
    assert fci_branch_points(FCI5, STEPS5, prompt_len=10, n=2, quantile=0.5, min_gap=0, min_start=15) == [6, 8]


@C4_PLAIN
def test_c5_fallback_cycles():
    assert fci_branch_points(torch.tensor([0.0, 0.5]), [(0, 3), (3, 5)], prompt_len=4, n=3,
                             min_gap=0, min_start=0) == [3, 3, 3]
    assert fci_branch_points(torch.tensor([0.0]), [(0, 3)], prompt_len=4, n=2) == []


# ---- C6: Eq. 9 branch counts ----------------------------------------------------------------------------

def test_c6_branch_counts_g6():
    accs = [k / 6 for k in range(7)]
    assert [branch_count(a, 6, "ceil") for a in accs] == [6, 6, 5, 4, 4, 3, 3]     # ceil(6·e^-a), release
    assert [branch_count(a, 6, "round") for a in accs] == [6, 5, 4, 4, 3, 3, 2]    # Round(6·e^-a), paper
    assert [branch_count(a, 6, "uniform") for a in accs] == [6] * 7


def test_c6_other_g():
    assert branch_count(1.0, 4, "ceil") == 2         # 4/e = 1.47 -> 2
    assert branch_count(0.5, 4, "round") == 2        # 4·e^-0.5 = 2.43 -> 2


# ---- C7: which responses to branch (difficulty-aware, attention filter) ------------------------------------

def plain_branch_count(accuracy, G=6, rule="ceil"):
    """C6's job, so that C7 is graded on its own."""
    x = G * math.exp(-accuracy)
    return {"ceil": math.ceil(x), "round": math.floor(x + 0.5), "uniform": G}[rule]


C6_PLAIN = mock.patch("attnrl_mini.algorithm.adaptive.branch_count", plain_branch_count)


@C6_PLAIN
def test_c7_minority_first():
    rng = random.Random(0)
    assert choose_responses_to_branch([0] * 6, None, None, rng) == [0, 1, 2, 3, 4, 5]       # a = 0: all
    got = choose_responses_to_branch([1, 1, 1, 1, 0, 0], None, None, rng)                  # a = 4/6: M = 4
    assert len(got) == 4 and {4, 5} <= set(got) and got == sorted(got)                     # both wrong ones
    got = choose_responses_to_branch([1, 0, 0, 0, 0, 1], None, None, rng, rule="round")    # a = 2/6: M = 4
    assert len(got) == 4 and {0, 5} <= set(got)                                            # both right ones


@C6_PLAIN
def test_c7_attention_filter_is_strict():
    rm = RunningMean()
    rm.update([0.4])
    assert choose_responses_to_branch([1] * 6, 0.5, rm, random.Random(0)) == [0, 1, 2]    # M(1) = ceil(6/e) = 3
    assert choose_responses_to_branch([1] * 6, 0.4, rm, random.Random(0)) is None         # not > running mean
    assert choose_responses_to_branch([1] * 6, 0.5, rm, random.Random(0), drop_easy=True) is None


# ---- C8: the zero-advantage filter ------------------------------------------------------------------------

def test_c8_drop_prompts_without_contrast():
    def seq(prompt, reward):
        return TrainSequence(prompt_ids=[0], response_ids=[1], advantages=[0.0], old_logprobs=[0.0],
                             prompt_index=prompt, reward=reward)
    seqs = [seq(0, 1.0), seq(0, 1.0), seq(1, 1.0), seq(1, 0.0), seq(2, 0.0), seq(3, 0.0), seq(3, 0.0)]
    kept = drop_zero_advantage_prompts(seqs)
    assert [(s.prompt_index, s.reward) for s in kept] == [(1, 1.0), (1, 0.0)]


# ---- C9: Eq. 10 batch size -------------------------------------------------------------------------------

def test_c9_release_rule_by_hand():
    ctl = BatchSizeController(16, target_sequences=480, lam=0.9, max_prompts=48)
    # target = floor(16·480/400) = 19; ceil(0.1·19 + 0.9·16) = ceil(16.3) = 17
    assert ctl.next_batch_size(16, 400) == 17 and ctl.batch_size == 17
    # nothing survived: target = max_prompts = 48; ceil(4.8 + 14.4) = 20
    assert ctl.next_batch_size(16, 0) == 20
    # 10 sequences from 48 prompts: far above max_prompts -> clamped to 48
    assert ctl.next_batch_size(48, 10) == 48


def test_c9_paper_rule_by_hand():
    ctl = BatchSizeController(16, target_sequences=480, lam=0.9, max_prompts=48, rule="paper")
    assert ctl.next_batch_size(16, 400) == 16      # Round(0.9·16 + 0.1·(480/400)·16) = Round(16.32)
    assert ctl.next_batch_size(16, 240) == 18      # Round(14.4 + 3.2) = Round(17.6)


# ---- C10 (challenge): the exact chunked FCI attention ---------------------------------------------------

def tiny_gqa_model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                      attn_implementation="eager")
    model = Qwen2ForCausalLM(copy.deepcopy(cfg)).eval()
    with torch.no_grad():  # sharper attention, so that steps differ clearly
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(6.0)
    return model


class RecordingContext(FCIContext):
    """Keeps every layer's step matrices instead of folding them (C2, C3 are not needed here)."""

    def add_layer(self, row, step_attention):
        self.fci[row] = (self.fci[row] or []) + [step_attention.clone()]


def test_c10_chunked_attention_matches_eager():
    model = tiny_gqa_model()
    prompts = [[1, 2, 3, 4], [5, 6]]
    responses = [[7, 8, 9, 10, 11, 12, 13, 14, 15], [16, 17, 18, 19, 20, 21]]
    steps = [[(0, 2), (2, 3), (3, 6), (6, 8), (8, 9)], [(0, 1), (1, 3), (3, 4), (4, 6)]]
    rows = [p + r for p, r in zip(prompts, responses)]
    batch = left_pad(rows)                                                   # row 1 gets 5 left pads
    ranges = [[(0, len(p))] + [(len(p) + s, len(p) + e) for s, e in st] for p, st in zip(prompts, steps)]
    weights = []
    for rg, row in zip(ranges, rows):                                        # Eq. 4's W, built here by hand
        W = torch.zeros(len(rg), len(row))
        for a, (s, e) in enumerate(rg):
            W[a, s:e] = 1.0 / (e - s)
        weights.append(W)
    ctx = RecordingContext(ranges, weights, batch.pad_offsets, [-1, -1], delta=1, query_chunk=3)
    decoder = model.model
    with torch.no_grad():
        with use_attention(decoder, FCI_ATTENTION):
            hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, use_cache=False, fci_context=ctx).last_hidden_state
        for i, (row, rg) in enumerate(zip(rows, ranges)):
            out = decoder(input_ids=torch.tensor([row]), output_attentions=True, use_cache=False)
            # the layer's output: the same hidden states as eager attention on the unpadded row
            torch.testing.assert_close(hidden[i, -len(row):], out.last_hidden_state[0], rtol=0, atol=1e-5)
            # Eq. 4 per layer and head: the mean of A over the block r_a x r_b
            assert len(ctx.fci[i]) == len(out.attentions)
            for got, A in zip(ctx.fci[i], out.attentions):
                want = torch.tensor([[[float(A[0, h, sa:ea, sb:eb].mean()) for sb, eb in rg] for sa, ea in rg]
                                     for h in range(A.shape[1])])
                assert float(want[:, 2:, 1:-1].max()) > 0.05
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
