"""An example overlay of hidden tests (docs/teaching.md): `build --out grader --overlay tests/hidden_example/`
puts this folder into the autograder's copy only. A hidden test counts for the exercise its name starts
with (test_a3_... for A3), like the graded tests. Write your own in a private folder of the same shape;
this one is public, so it is an example, not a secret. It also runs in this repository's own suite."""
import pytest

from attnrl_mini.algorithm.tree import grpo_advantages


def test_a3_hidden_one_correct_of_three():
    # rewards 1, 0, 0: mean 1/3; unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3) = 0.57735
    # (1 - 1/3) / 0.57735 = 1.15470; (0 - 1/3) / 0.57735 = -0.57735 (eps 1e-6 moves the 6th digit)
    assert grpo_advantages([1.0, 0.0, 0.0]) == pytest.approx([1.15470, -0.57735, -0.57735], abs=1e-4)


def test_a3_hidden_dr_grpo_keeps_the_scale():
    # Dr. GRPO: r - mean(r), no division: 1 - 1/3, 0 - 1/3, 0 - 1/3
    assert grpo_advantages([1.0, 0.0, 0.0], scale_by_std=False) == pytest.approx([2 / 3, -1 / 3, -1 / 3], abs=1e-6)
