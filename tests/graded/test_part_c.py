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
from attnrl_mini.algorithm.fci import (FCI_ATTENTION, FCIContext, fci_attention, left_pad, step_attention_to_fci,
                                       step_weight_matrix, use_attention)
from attnrl_mini.assignment.memory import LargestAllocation
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


def test_c2_think_end_zeroes_every_later_step():
    # </think> in step 1: steps 1, 2, 3 all get 0 (not only step 1); </think> in step 0: everything 0
    torch.testing.assert_close(step_attention_to_fci(ALPHA, delta=1, think_end_step=1), torch.zeros(4))
    torch.testing.assert_close(step_attention_to_fci(ALPHA, delta=1, think_end_step=0), torch.zeros(4))
    torch.testing.assert_close(step_attention_to_fci(ALPHA, delta=1, think_end_step=3),
                               torch.tensor([0.0, 0.5, 0.3, 0.0]))


# ---- C3: Eq. 6, the max over heads and layers ---------------------------------------------------------

def column_sums(alpha, delta=4, think_end_step=-1):
    """Stands in for C2 (so that C3 is graded on its own). Not Eq. 5: every query range's attention
    to step k, no Δ, no masking: y[..., k] = Σ_a α[..., a, k+1]."""
    return alpha.sum(-2)[..., 1:]


def ctx5(**kw):
    return FCIContext(ranges=[[(0, 1)] * 5], step_weights=[torch.zeros(5, 5)], pad_offsets=[0],
                      think_end_steps=[-1], delta=1, **kw)


@mock.patch("attnrl_mini.algorithm.fci.step_attention_to_fci", column_sums)
def test_c3_running_max_over_heads_and_layers():
    # column sums of ALPHA (steps 0..3 = columns 1..4): [1.1, 1.0, 0.7, 0.3]
    ctx = ctx5()
    other = torch.zeros(5, 5)
    other[0, 3] = 1.5                                                   # head 2: y = [0, 0, 1.5, 0]
    ctx.add_layer(0, torch.stack([ALPHA, other]))
    torch.testing.assert_close(ctx.fci[0], torch.tensor([1.1, 1.0, 1.5, 0.3]))
    ctx.add_layer(0, torch.stack([0.2 * ALPHA, 0.2 * ALPHA]))           # layer 2, smaller everywhere
    torch.testing.assert_close(ctx.fci[0], torch.tensor([1.1, 1.0, 1.5, 0.3]))
    ctx.add_layer(0, torch.stack([2 * ALPHA]))                          # layer 3: [2.2, 2.0, 1.4, 0.6]
    torch.testing.assert_close(ctx.fci[0], torch.tensor([2.2, 2.0, 1.5, 0.6]))


@mock.patch("attnrl_mini.algorithm.fci.step_attention_to_fci", column_sums)
def test_c3_heads_differ_on_shared_entries():
    # the max is over each head's y, taken after the sum: heads that differ on the same entries
    h1, h2 = torch.zeros(5, 5), torch.zeros(5, 5)
    h1[2, 1], h1[3, 1] = 0.6, 0.1          # head 1: y[0] = 0.7
    h2[2, 1], h2[3, 1] = 0.1, 0.5          # head 2: y[0] = 0.6   (max of α first would give 0.6 + 0.5 = 1.1)
    ctx = ctx5(keep_step_attention=True)
    ctx.add_layer(0, torch.stack([h1, h2]))
    torch.testing.assert_close(ctx.fci[0], torch.tensor([0.7, 0.0, 0.0, 0.0]))
    # kept α: the elementwise max over heads, then over layers
    torch.testing.assert_close(ctx.step_attention[0][2:4, 1], torch.tensor([0.6, 0.5]))
    h3 = torch.zeros(5, 5)
    h3[2, 1], h3[4, 2] = 0.2, 0.4
    ctx.add_layer(0, torch.stack([h3, h3]))                             # layer 2: y = [0.2, 0.4, 0, 0]
    torch.testing.assert_close(ctx.fci[0], torch.tensor([0.7, 0.4, 0.0, 0.0]))
    want = torch.zeros(5, 5)
    want[2, 1], want[3, 1], want[4, 2] = 0.6, 0.5, 0.4
    torch.testing.assert_close(ctx.step_attention[0], want)


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


def test_c4_zero_threshold_takes_the_smallest_positive():
    # 12 steps, 10 of them 0: the 0.8 quantile (position 8.8 of the sorted values) is 0, so τ = 0.1
    y = torch.zeros(12)
    y[4], y[9] = 0.3, 0.1
    assert fci_candidate_steps(y, 0.8) == [4, 9]
    # τ from all S scores (step 0 included in the quantile): [0.5, .1, .2, .3, .4] -> sorted position 3.2 -> 0.42
    assert fci_candidate_steps(torch.tensor([0.5, 0.1, 0.2, 0.3, 0.4]), 0.8) == []


# ---- C5: ATB branch points ----------------------------------------------------------------------------

STEPS5 = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
FCI5 = torch.tensor([0.0, 0.1, 0.9, 0.2, 0.8])        # quantile 0.5 -> τ = 0.2 -> candidates 2, 3, 4


CANDIDATES = {(0.0, 0.1, 0.9, 0.2, 0.8): [2, 3, 4], (0.0, 0.5): [1], (0.0,): [], (0.0, 0.9, 0.8, 0.7): [1, 2, 3]}


def table_candidates(fci, quantile=0.8):
    """Stands in for C4 (so that C5 is graded on its own): the candidates of the inputs below, by hand."""
    return list(CANDIDATES[tuple(round(float(v), 6) for v in fci)])


C4_PLAIN = mock.patch("attnrl_mini.algorithm.branching.fci_candidate_steps", table_candidates)


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


@C4_PLAIN
def test_c5_spacing_both_ways_and_absolute_start():
    # candidates 1, 2, 3 in that order; steps (0,2) (2,5) (5,6) (6,9): min_gap 2
    steps = [(0, 2), (2, 5), (5, 6), (6, 9)]
    fci = torch.tensor([0.0, 0.9, 0.8, 0.7])
    # min_gap 1: step 1 (2..5) accepted; step 2 starts 0 tokens after it: rejected; step 3 starts 1 after: accepted
    assert fci_branch_points(fci, steps, prompt_len=3, n=2, min_gap=1, min_start=0) == [2, 6]
    # min_start counts from the prompt's start: 3 + 2 = 5 < 6 rejects step 1; step 2 (3 + 5 = 8) is accepted,
    # step 3 starts 0 tokens after it: rejected; the fallback adds step 1 (offset 2)
    assert fci_branch_points(fci, steps, prompt_len=3, n=2, min_gap=1, min_start=6) == [2, 5]
    # exactly at the limits is allowed: step 2 starts at 3 + 5 = 8 = min_start, step 3 is min_gap = 1 after step 1
    assert fci_branch_points(fci, steps, prompt_len=3, n=2, min_gap=1, min_start=8) == [2, 5]
    # n = 3 and no spacing: all three candidates, and no more than n
    assert fci_branch_points(fci, steps, prompt_len=3, n=3, min_gap=0, min_start=0) == [2, 5, 6]
    assert fci_branch_points(fci, steps, prompt_len=3, n=1, min_gap=0, min_start=0) == [2]


# ---- C6: Eq. 9 branch counts ----------------------------------------------------------------------------

def test_c6_branch_counts_g6():
    accs = [k / 6 for k in range(7)]
    assert [branch_count(a, 6, "ceil") for a in accs] == [6, 6, 5, 4, 4, 3, 3]     # ceil(6·e^-a), release
    assert [branch_count(a, 6, "round") for a in accs] == [6, 5, 4, 4, 3, 3, 2]    # Round(6·e^-a), paper
    assert [branch_count(a, 6, "uniform") for a in accs] == [6] * 7


def test_c6_other_g():
    assert branch_count(1.0, 4, "ceil") == 2         # 4/e = 1.47 -> 2
    assert branch_count(0.5, 4, "round") == 2        # 4·e^-0.5 = 2.43 -> 2


def test_c6_exact_half_rounds_up():
    # e^(-ln 2) = 0.5 exactly: 5·0.5 = 2.5 -> 3 and 9·0.5 = 4.5 -> 5 (half up; Python's round() gives 2 and 4)
    assert branch_count(math.log(2.0), 5, "round") == 3
    assert branch_count(math.log(2.0), 9, "round") == 5
    assert branch_count(math.log(2.0), 5, "ceil") == 3 and branch_count(math.log(2.0), 6, "ceil") == 3
    assert branch_count(0.0, 7, "ceil") == 7 and branch_count(0.3, 5, "uniform") == 5


# ---- C7: which responses to branch (difficulty-aware, attention filter) ------------------------------------

BRANCH_COUNTS = {(0, 6, "ceil"): 6, (4, 6, "ceil"): 4, (2, 6, "round"): 4, (6, 6, "ceil"): 3, (5, 6, "ceil"): 3,
                 (1, 6, "ceil"): 6, (3, 6, "ceil"): 4}


def table_branch_count(accuracy, G=6, rule="ceil"):
    """Stands in for C6 (so that C7 is graded on its own): M for the accuracies k/6 below, by hand."""
    return BRANCH_COUNTS[(round(accuracy * 6), G, rule)]


C6_PLAIN = mock.patch("attnrl_mini.algorithm.adaptive.branch_count", table_branch_count)


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


@C6_PLAIN
def test_c7_distinct_majority_sample():
    # a = 5/6: M = 3 = the wrong one + 2 distinct correct ones; a = 1/6: M = 6 = all (the minority 0 + 5)
    for seed in range(40):
        got = choose_responses_to_branch([1, 1, 0, 1, 1, 1], None, None, random.Random(seed))
        assert len(got) == 3 and len(set(got)) == 3 and 2 in got and got == sorted(got)
        got = choose_responses_to_branch([0, 1, 0, 0, 0, 0], None, None, random.Random(seed))
        assert got == [0, 1, 2, 3, 4, 5]
    # every majority response is reachable: the sample is random, not the first ones
    seen = {i for seed in range(40) for i in choose_responses_to_branch([1, 1, 0, 1, 1, 1], None, None,
                                                                           random.Random(seed))}
    assert seen == {0, 1, 2, 3, 4, 5}


# ---- C8: the zero-advantage filter ------------------------------------------------------------------------

def test_c8_drop_prompts_without_contrast():
    def seq(prompt, reward):
        return TrainSequence(prompt_ids=[0], response_ids=[1], advantages=[0.0], old_logprobs=[0.0],
                             prompt_index=prompt, reward=reward)
    seqs = [seq(0, 1.0), seq(0, 1.0), seq(1, 1.0), seq(1, 0.0), seq(2, 0.0), seq(3, 0.0), seq(3, 0.0)]
    kept = drop_zero_advantage_prompts(seqs)
    assert [(s.prompt_index, s.reward) for s in kept] == [(1, 1.0), (1, 0.0)]


def test_c8_keeps_the_input_order():
    def seq(prompt, reward, tag):
        return TrainSequence(prompt_ids=[0], response_ids=[tag], advantages=[0.0], old_logprobs=[0.0],
                             prompt_index=prompt, reward=reward)
    # prompts 2 and 1 have both rewards, prompt 0 only one: kept in the order given, not regrouped
    seqs = [seq(2, 0.0, 1), seq(1, 0.0, 2), seq(2, 1.0, 3), seq(1, 1.0, 4), seq(0, 0.0, 5), seq(2, 0.0, 6)]
    assert [s.response_ids[0] for s in drop_zero_advantage_prompts(seqs)] == [1, 2, 3, 4, 6]
    assert drop_zero_advantage_prompts([]) == []


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


def test_c9_floor_noise_and_clamps():
    # target = floor(10·61/20) = floor(30.5) = 30: ceil(0.1·30 + 0.9·10) = 12 (with 30.5: ceil(12.05) = 13)
    assert BatchSizeController(10, target_sequences=61, lam=0.9, max_prompts=64).next_batch_size(10, 20) == 12
    # float noise: 0.9·70 = 63.00000000000001 and target = floor(70·1/100) = 0: 63, not 64
    assert BatchSizeController(70, target_sequences=1, lam=0.9, max_prompts=100).next_batch_size(70, 100) == 63
    # 0.1·3 + 0.9·13 = 12.000000000000002 in floats: 12
    assert BatchSizeController(13, target_sequences=61, lam=0.9, max_prompts=64).next_batch_size(13, 199) == 12
    # λ = 0, target = floor(1·10/100) = 0: B_new = 0 -> clamped up to 1
    assert BatchSizeController(1, target_sequences=10, lam=0.0, max_prompts=8).next_batch_size(1, 100) == 1


def test_c9_paper_rule_half_up_and_clamps():
    # λ = 0.5: 0.5·10 + 0.5·(230/100)·10 = 5 + 11.5 = 16.5 -> 17 (half up; round() would give 16)
    assert BatchSizeController(10, target_sequences=230, lam=0.5, max_prompts=64, rule="paper").next_batch_size(10, 100) == 17
    # nothing survived: target = max_prompts = 20: Round(0.5·10 + 0.5·20) = 15
    assert BatchSizeController(10, target_sequences=230, lam=0.5, max_prompts=20, rule="paper").next_batch_size(10, 0) == 15
    # λ = 0, (1/1000)·1 -> Round(0.001) = 0 -> clamped up to 1;  far above max -> max
    assert BatchSizeController(1, target_sequences=1, lam=0.0, max_prompts=8, rule="paper").next_batch_size(1, 1000) == 1
    assert BatchSizeController(8, target_sequences=800, lam=0.0, max_prompts=8, rule="paper").next_batch_size(8, 10) == 8


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
    # Eq. 4's W for these ranges, written out (C1 is not needed here): range sizes 4, 2, 1, 3, 2, 1 and 2, 1, 2, 1, 2
    weights = [torch.tensor([[1 / 4] * 4 + [0] * 9,
                             [0] * 4 + [1 / 2] * 2 + [0] * 7,
                             [0] * 6 + [1.0] + [0] * 6,
                             [0] * 7 + [1 / 3] * 3 + [0] * 3,
                             [0] * 10 + [1 / 2] * 2 + [0],
                             [0] * 12 + [1.0]]),
               torch.tensor([[1 / 2] * 2 + [0] * 6,
                             [0] * 2 + [1.0] + [0] * 5,
                             [0] * 3 + [1 / 2] * 2 + [0] * 3,
                             [0] * 5 + [1.0] + [0] * 2,
                             [0] * 6 + [1 / 2] * 2])]
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


def test_c10_never_builds_the_full_attention():
    # One row of T = 128 tokens, H = 4 heads (2 key/value heads), query_chunk 8. The full [H, T, T]
    # probabilities are 4·128·128·4 B = 256 KiB; the chunked path needs a [H, 8, T] block (16 KiB), the
    # inputs (16 KiB) and WA [H, 9, T] (18 KiB). The largest tensor any operation inside fci_attention
    # creates must stay under 1/8 of the full block (32 KiB): one head's [T, T] (64 KiB) is too much too.
    torch.manual_seed(0)
    H, Hkv, T, d = 4, 2, 128, 8
    q, k, v = torch.randn(1, H, T, d), torch.randn(1, Hkv, T, d), torch.randn(1, Hkv, T, d)
    # 9 "ranges" that each cover all T tokens (W[a, t] = 1/T): then every α[a, b] = 1/T, by hand
    ranges = [[(0, T)] * 9]
    W = torch.full((9, T), 1.0 / T)
    ctx = RecordingContext(ranges, [W], [0], [-1], delta=1, query_chunk=8, kernel="torch")
    with LargestAllocation() as peak:
        out, _ = fci_attention(None, q, k, v, None, scaling=d ** -0.5, fci_context=ctx)
    assert out.shape == (1, T, H, d)
    assert len(ctx.fci[0]) == 1 and ctx.fci[0][0].shape == (H, 9, 9)
    # α[a, b] = (1/T²) Σ_t Σ_s A[t, s] = (1/T²)·T = 1/T: every query's softmax row sums to 1
    torch.testing.assert_close(ctx.fci[0][0], torch.full((H, 9, 9), 1.0 / T), rtol=0, atol=1e-6)
    full = H * T * T * 4
    assert peak.nbytes < full / 8, (f"fci_attention created a {peak.nbytes} B tensor; the full [H, T, T] "
                                    f"block is {full} B: work one block of query_chunk rows at a time")
