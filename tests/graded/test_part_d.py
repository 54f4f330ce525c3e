"""Graded tests, part D (the branch-selector study). Every expected value is worked out by hand in the comments.

A test is graded for the exercise named by its prefix: test_d1_... counts for exercise D1. (D2, the
empirical question, is graded by rerunning the study: attnrl_mini/assignment/part_d.py.)
"""
import pytest

from attnrl_mini.tools.fork_stats import bootstrap_ratio


def fork(is_mixed, tokens=0):
    return {"mixed": is_mixed, "tokens": tokens}


def share(f):
    return f["mixed"]


def one(f):
    return 1


def tokens(f):
    return f["tokens"]


def test_d1_pooled_not_mean_of_prompts():
    # prompt 0: 2 forks, both mixed; prompt 1: 4 forks, none mixed; prompt 2: 2 forks, one mixed.
    # pooled share = (2 + 0 + 1) / (2 + 4 + 2) = 3/8, not the mean of the prompts' shares (1 + 0 + 1/2) / 3 = 1/2
    forks = [[fork(1, 10), fork(1, 20)], [fork(0, 5)] * 4, [fork(1, 8), fork(0, 2)]]
    value, lo, hi = bootstrap_ratio(forks, share, one, n=200, seed=1)
    assert value == pytest.approx(3 / 8)
    assert 0.0 <= lo <= value <= hi <= 1.0
    # tokens per mixed fork = (10 + 20 + 4·5 + 8 + 2) / 3 mixed = 60 / 3 = 20
    assert bootstrap_ratio(forks, tokens, share, n=200, seed=1)[0] == pytest.approx(20.0)


def test_d1_resamples_prompts_not_forks():
    # one prompt with 4 forks, 2 mixed: every resample draws that prompt, so no spread at all
    # (resampling single forks would give shares from 0 to 1)
    assert bootstrap_ratio([[fork(1), fork(0), fork(1), fork(0)]], share, one, n=300) == (0.5, 0.5, 0.5)
    # five identical prompts: the same
    assert bootstrap_ratio([[fork(1), fork(0)]] * 5, share, one, n=300, seed=3) == (0.5, 0.5, 0.5)


def test_d1_empty_resamples_dropped():
    # tokens per mixed fork. prompt A: one unmixed fork of 10 tokens; prompt B: one mixed fork of 4 tokens.
    # all prompts: (10 + 4) / 1 = 14. Resamples of two prompts: AA -> den 0, dropped (not a 0);
    # AB or BA -> 14 / 1 = 14; BB -> 8 / 2 = 4. Kept: 4 (a third of them) and 14 (two thirds), so the
    # 2.5% draw is 4 and the 97.5% draw is 14; the ratio itself is 14, not the mean of the draws (≈ 10.7).
    forks = [[fork(0, 10)], [fork(1, 4)]]
    assert bootstrap_ratio(forks, tokens, share, n=1000, seed=0) == (14.0, 4.0, 14.0)
    # no mixed fork anywhere: no ratio, no interval
    assert bootstrap_ratio([[fork(0, 3)], [fork(0, 5)]], tokens, share, n=50) == (None, None, None)
    # no resample: the ratio, no interval
    assert bootstrap_ratio([[fork(1), fork(0)]], share, one, n=0) == (0.5, None, None)


def test_d1_percentile_interval():
    # 10 prompts of one fork each, 5 mixed: a resample's share is X/10 with X ~ Binomial(10, 1/2).
    # P(X <= 1) = (1 + 10) / 2^10 = 0.011 < 0.025 <= P(X <= 2) = (1 + 10 + 45) / 2^10 = 0.055, so the
    # 2.5% draw is 2/10 = 0.2 and, by symmetry, the 97.5% draw is 8/10 = 0.8 (4,000 resamples: the
    # count at X <= 1 is 9 standard deviations below the cut, for any seed). The range would be 0.1 or wider.
    forks = [[fork(1)] for _ in range(5)] + [[fork(0)] for _ in range(5)]
    for seed in (0, 7):
        assert bootstrap_ratio(forks, share, one, n=4000, seed=seed) == pytest.approx((0.5, 0.2, 0.8))
    # the same seed gives the same interval
    assert bootstrap_ratio(forks, share, one, n=300, seed=5) == bootstrap_ratio(forks, share, one, n=300, seed=5)
