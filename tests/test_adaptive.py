"""Adaptive sampling (ADS, docs/algorithm.md §e): Eq. 8–10, the filters and the batch-size controller."""
import math
import random

import pytest
import torch

from attnrl_mini.algorithm.adaptive import (BatchSizeController, RunningMean, branch_count, choose_for_batch,
                                  choose_responses_to_branch, drop_zero_advantage_prompts, prompt_mean_fci)
from attnrl_mini.algorithm.tree import TrainSequence

# ------------------------------------------------------------------------------- Eq. 9, the table of §e.1


def test_branch_count_table():
    # #correct/6:             0     1     2     3     4     5     6
    # 6·e^(−a):            6.00  5.08  4.30  3.64  3.08  2.61  2.21
    assert [round(6 * math.exp(-k / 6), 2) for k in range(7)] == [6.0, 5.08, 4.3, 3.64, 3.08, 2.61, 2.21]
    assert [branch_count(k / 6, 6, "ceil") for k in range(7)] == [6, 6, 5, 4, 4, 3, 3]     # release
    assert [branch_count(k / 6, 6, "round") for k in range(7)] == [6, 5, 4, 4, 3, 3, 2]    # paper
    assert [branch_count(k / 6, 6, "uniform") for k in range(7)] == [6] * 7                # ablation


def test_round_is_half_up():
    # G = 5, a = ln 2: 5·e^(−ln 2) = 2.5 exactly; half up gives 3 (Python's round() would give 2)
    assert 5 * math.exp(-math.log(2)) == 2.5
    assert branch_count(math.log(2), G=5, rule="round") == 3


def test_branch_count_rejects_bad_input():
    with pytest.raises(ValueError, match="accuracy must be in"):
        branch_count(1.5)
    with pytest.raises(ValueError, match="unknown branch-count rule"):
        branch_count(0.5, rule="floor")


# ------------------------------------------------------------------------------- running mean

def test_cumulative_running_mean_is_count_weighted():
    rm = RunningMean("cumulative")
    assert rm.mean is None
    rm.update([1.0, 2.0, 3.0])
    assert rm.mean == pytest.approx(2.0)
    rm.update([6.0])                     # (2·3 + 6)/4 = 3, not the mean of batch means (2 + 6)/2 = 4
    assert rm.mean == pytest.approx(3.0) and rm.count == 4
    rm.update([])
    assert rm.mean == pytest.approx(3.0) and rm.count == 4


def test_ema_running_mean_and_state_dict():
    rm = RunningMean("ema", alpha=0.5)
    rm.update([1.0, 3.0])                # first batch: its mean, 2
    rm.update([6.0])                     # 0.5·6 + 0.5·2 = 4
    assert rm.mean == pytest.approx(4.0)
    copy = RunningMean()
    copy.load_state_dict(rm.state_dict())
    copy.update([0.0])                   # 0.5·0 + 0.5·4 = 2: the kind and alpha travelled too
    assert copy.mean == pytest.approx(2.0)


def test_prompt_mean_fci_averages_step_means_with_zeros():
    # response 1: mean(0, 0.3, 0.6) = 0.3; response 2: mean(0, 0.1) = 0.05; empty response: 0
    fci = [torch.tensor([0.0, 0.3, 0.6]), torch.tensor([0.0, 0.1]), torch.zeros(0)]
    assert prompt_mean_fci(fci) == pytest.approx((0.3 + 0.05 + 0.0) / 3)


# ------------------------------------------------------------------------------- which responses

def choose(rewards, rule="ceil", seed=0, **kw):
    return choose_responses_to_branch(rewards, None, None, random.Random(seed), rule=rule, **kw)


def test_all_wrong_branches_everything():
    assert choose([0] * 6) == [0, 1, 2, 3, 4, 5]
    assert choose([0] * 6, rule="round") == [0, 1, 2, 3, 4, 5]


def test_minority_outcome_plus_random_majority():
    # a = 3/6 (>= 0.5): minority = the incorrect ones {3, 4, 5}; M = 4 -> one random correct one
    picks = {tuple(choose([1, 1, 1, 0, 0, 0], seed=s)) for s in range(50)}
    assert picks == {(0, 3, 4, 5), (1, 3, 4, 5), (2, 3, 4, 5)}
    # a = 2/6 (< 0.5): minority = the correct ones {0, 3}; ceil M = 5 -> 3 of {1, 2, 4, 5}; round M = 4 -> 2
    for s in range(20):
        got = choose([1, 0, 0, 1, 0, 0], seed=s)
        assert len(got) == 5 and {0, 3} <= set(got)
        got = choose([1, 0, 0, 1, 0, 0], rule="round", seed=s)
        assert len(got) == 4 and {0, 3} <= set(got)
    # a = 1/6: ceil M = 6 -> everything; round M = 5 -> the correct one + 4 of the 5 wrong ones
    assert choose([0, 0, 1, 0, 0, 0]) == [0, 1, 2, 3, 4, 5]
    got = choose([0, 0, 1, 0, 0, 0], rule="round")
    assert len(got) == 5 and 2 in got
    # a = 5/6: M = 3 (both rules) -> the wrong one + 2 correct ones
    got = choose([1, 1, 1, 1, 0, 1])
    assert len(got) == 3 and 4 in got
    # a = 4/6: ceil M = 4 -> {2, 5} + 2; round M = 3 -> {2, 5} + 1
    assert len(choose([1, 1, 0, 1, 1, 0])) == 4 and len(choose([1, 1, 0, 1, 1, 0], rule="round")) == 3
    # uniform: every response, whatever the accuracy
    assert choose([1, 1, 0, 1, 1, 0], rule="uniform") == [0, 1, 2, 3, 4, 5]


def test_all_correct_attention_filter_is_strict():
    rm = RunningMean()
    rm.update([0.4])
    pick = lambda fci, **kw: choose_responses_to_branch([1] * 6, fci, rm, random.Random(0), **kw)  # noqa: E731
    assert pick(0.5) == [0, 1, 2]                      # kept: the first M(1) = 3 by index
    assert pick(0.5, rule="round") == [0, 1]           # paper: M(1) = 2
    assert pick(0.5, rule="uniform") == [0, 1, 2, 3, 4, 5]
    assert pick(0.4) is None                           # equal to the running mean: dropped (strict ">")
    assert pick(0.3) is None
    assert pick(0.9, drop_easy=True) is None           # Fig. 7: every easy prompt dropped
    assert pick(0.1, attention_filter=False) == [0, 1, 2]   # ablation "w/o attention filtering"


def test_batch_adds_its_easy_prompts_before_the_test():
    rm = RunningMean()
    rm.update([0.1, 0.1])
    rewards = [[1] * 6, [1] * 6, [1, 0, 0, 0, 0, 0]]
    mean_fci = [0.5, 0.2, 0.9]
    got = choose_for_batch(rewards, mean_fci, rm, random.Random(0))
    # running mean = (0.1·2 + 0.5 + 0.2)/4 = 0.225 (the mixed prompt's 0.9 is not added)
    assert rm.mean == pytest.approx(0.225) and rm.count == 4
    assert got[0] == [0, 1, 2]
    assert got[1] is None        # 0.2 < 0.225 (it would have passed against the old mean 0.1)
    assert got[2] == [0, 1, 2, 3, 4, 5]


def test_a_lone_easy_prompt_on_a_fresh_running_mean_is_dropped():
    # the running mean then equals its own score, and the test is strict
    assert choose_for_batch([[1] * 6], [0.7], RunningMean(), random.Random(0)) == [None]


# ------------------------------------------------------------------------------- zero-advantage filter

def seq(prompt_index, reward):
    return TrainSequence([0], [1], [0.0], [0.0], prompt_index, float(reward))


def test_drop_zero_advantage_prompts():
    seqs = [seq(0, 1), seq(1, 1), seq(0, 1), seq(1, 0), seq(2, 0), seq(0, 1), seq(1, 1)]
    kept = drop_zero_advantage_prompts(seqs)
    assert kept == [seqs[1], seqs[3], seqs[6]]     # prompt 0 all correct, prompt 2 all wrong: dropped
    assert drop_zero_advantage_prompts([]) == []


# ------------------------------------------------------------------------------- Eq. 10 controller

def test_batch_size_release_and_paper_forms():
    c = BatchSizeController(initial=64, target_sequences=1920, lam=0.9, max_prompts=512)
    # target = floor(64·1920/1600) = floor(76.8) = 76; B = ceil(0.1·76 + 0.9·64) = ceil(65.2) = 66
    assert c.next_batch_size(64, 1600) == 66 and c.batch_size == 66
    p = BatchSizeController(initial=64, target_sequences=1920, lam=0.9, max_prompts=512, rule="paper")
    # Round(0.9·64 + 0.1·(1920/1600)·64) = Round(57.6 + 7.68) = Round(65.28) = 65
    assert p.next_batch_size(64, 1600) == 65
    # too many sequences: target = floor(64·1920/2400) = 51; ceil(5.1 + 57.6) = 63
    assert c.next_batch_size(64, 2400) == 63


def test_batch_size_float_noise_and_clamps():
    c = BatchSizeController(initial=13, target_sequences=1920, lam=0.9, max_prompts=512)
    # target = floor(13·1920/8000) = 3; 0.1·3 + 0.9·13 = 12 exactly, but is 12.000000000000002 in floats
    assert (1 - 0.9) * 3 + 0.9 * 13 > 12
    assert c.next_batch_size(13, 8000) == 12
    assert c.next_batch_size(64, 1920) == 64              # on target: unchanged
    assert c.next_batch_size(500, 10) == 512              # clamped to max_prompts
    assert c.next_batch_size(64, 0) == 109                # nothing survived: target = 512 -> ceil(51.2 + 57.6)
    assert BatchSizeController(1, 1920, lam=0.0).next_batch_size(1, 10 ** 6) == 1   # target 0 -> at least 1


def test_batch_size_state_dict():
    c = BatchSizeController(initial=64, target_sequences=1920, rule="paper", max_prompts=100)
    c.next_batch_size(64, 1600)
    d = BatchSizeController(initial=1, target_sequences=1)
    d.load_state_dict(c.state_dict())
    assert (d.batch_size, d.target_sequences, d.rule, d.max_prompts) == (65, 1920, "paper", 100)
    assert d.next_batch_size(65, 1000) == c.next_batch_size(65, 1000)
