"""bench/branch_outcomes.py (the branch-selector study) and its statistics (attnrl_mini/tools/fork_stats.py):
where a fork falls, the interval, the --selectors flag, a tiny real run."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import branch_outcomes as bo  # noqa: E402

from attnrl_mini.tools.fork_stats import bootstrap_ratio, fork_place, pooled_ratio  # noqa: E402


def test_fork_place_relative_to_two_decisions():
    # decision 1 = step [10, 15) with its digit at 13; decision 2 = step [24, 29), digit at 27
    spans = [(10, 15, 13), (24, 29, 27)]
    assert [fork_place(p, spans) for p in (0, 9, 10, 13, 14, 20, 24, 27, 28, 40)] == \
        ["before", "before", "at", "at", "between", "between", "at", "at", "after", "after"]
    assert fork_place(5, []) is None


def test_ratio_and_bootstrap_over_prompts():
    forks = [[{"m": 1}, {"m": 1}], [{"m": 0}, {"m": 0}, {"m": 0}, {"m": 0}], [{"m": 1}, {"m": 0}]]
    num, one = (lambda f: f["m"]), (lambda f: 1)
    assert pooled_ratio(forks, num, one) == pytest.approx(3 / 8)
    value, lo, hi = bootstrap_ratio(forks, num, one, n=2000, seed=1)
    assert value == pytest.approx(3 / 8) and 0.0 <= lo < value < hi <= 1.0
    # identical prompts: no spread at all
    assert bootstrap_ratio([[{"m": 1}, {"m": 0}]] * 5, num, one, n=100) == (0.5, 0.5, 0.5)
    # a denominator that sums to 0 (no mixed fork): no value, no interval
    assert bootstrap_ratio(forks, one, lambda f: 0, n=10) == (None, None, None)


def test_selectors_flag():
    assert bo.rows_of("entropy,fci") == ("fci", "entropy")                # in the table's order
    assert bo.rows_of("attnrl") == ("fci + ADS (AttnRL)",)
    with pytest.raises(SystemExit, match="unknown fcii"):
        bo.rows_of("fcii")


def test_a_tiny_real_study_on_toy_plan():
    import torch
    from attnrl_mini.worlds.reward import Grader
    torch.set_grad_enabled(False)
    try:
        with Grader(workers=1, timeout=5.0) as grader:
            setup = bo.make_setup("toy-plan", ["--model", "toy-plan"], n_prompts=2, seed=0)
            r = bo.measure(setup, n_prompts=2, seed=0, grader=grader)
    finally:
        torch.set_grad_enabled(True)
    assert set(r["rows"]) == set(bo.ROWS) and r["prompts"] == 2
    for name in bo.SELECTOR_ROWS:        # TreeRL sampling: every response forks at N = 2 points
        row = r["rows"][name]
        assert row["branch_points"] == 2 * 6 * 2, name                  # prompts × G × N
        assert sum(row["place_share"].values()) == pytest.approx(1.0)
        assert 1.0 <= row["distinct"][0] <= 3.0 and 0.0 <= row["mixed"][0] <= 1.0
        # the counts part D asks for agree with the shares
        assert row["mixed_forks"] == round(row["mixed"][0] * row["branch_points"]), name
        assert sum(row["place_counts"].values()) == row["branch_points"]
        assert sum(row["mixed_by_place_counts"].values()) == row["mixed_forks"]
    assert 0 <= r["initial_correct"] <= 2 * 6
    # toy-plan's decision is step 1: first_steps forks at steps 1 and 2, i.e. half "at", half "after"
    assert r["rows"]["first_steps"]["place_share"]["at"] == pytest.approx(0.5)
    assert "| `toy-plan` | fci |" in bo.table([r])
