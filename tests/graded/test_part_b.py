"""Graded tests, part B (tree rollouts). Every expected value is worked out by hand in the comments.

A test is graded for the exercise named by its prefix: test_b3_... counts for exercise B3.
"""
import math

import pytest
import torch

from attnrl_mini.algorithm.branching import entropy_branch_points
from attnrl_mini.algorithm.steps import segment_steps
from attnrl_mini.algorithm.tree import (Continuation, Rollout, TreeNode, assign_values_and_advantages, build_prompt_tree,
                              training_sequences)

SEP, NL, THINK = {9}, {8}, 7          # token 9 is a "\n\n" separator, 8 a single "\n", 7 is </think>


# ---- B1: step segmentation ------------------------------------------------------------------------

def test_b1_separator_ends_its_step():
    assert segment_steps([1, 2, 9, 3, 9, 4], SEP, NL).steps == [(0, 3), (3, 5), (5, 6)]
    assert segment_steps([1, 9, 2, 9], SEP, NL).steps == [(0, 2), (2, 4)]       # no empty trailing step
    assert segment_steps([], SEP, NL).steps == []


def test_b1_fallbacks():
    assert segment_steps([1, 8, 2], SEP, NL).steps == [(0, 2), (2, 3)]          # no "\n\n": cut at "\n"
    assert segment_steps([1, 2, 3], SEP, NL).steps == [(0, 1), (1, 2), (2, 3)]  # no line break: tokens


def test_b1_newline_is_only_a_fallback():
    # a "\n\n" exists, so single "\n"s do not cut (they are not used together with the separators)
    assert segment_steps([1, 8, 2, 9, 3, 8, 4], SEP, NL).steps == [(0, 4), (4, 7)]
    assert segment_steps([8, 8, 1], SEP, NL).steps == [(0, 1), (1, 2), (2, 3)]   # newline fallback, one per "\n"


def test_b1_think_end_on_a_step_boundary():
    # </think> as the first token of step 1 (offset 2, right after a separator): step 1, not step 0
    assert segment_steps([1, 9, 7, 2], SEP, NL, think_end_id=THINK).think_end_step == 1
    # </think> as the very first token: step 0;  as the last token of the response: the last step
    assert segment_steps([7, 9, 1, 9, 2], SEP, NL, think_end_id=THINK).think_end_step == 0
    assert segment_steps([1, 9, 2, 7], SEP, NL, think_end_id=THINK).think_end_step == 1
    # </think> just before the separator that ends its step: still that step
    assert segment_steps([1, 7, 9, 2], SEP, NL, think_end_id=THINK).think_end_step == 0


def test_b1_think_end_is_the_last_one():
    seg = segment_steps([7, 9, 1, 7, 9, 2], SEP, NL, think_end_id=THINK)
    assert seg.steps == [(0, 2), (2, 5), (5, 6)]
    assert seg.think_end_step == 1                                              # the last </think> (offset 3)
    assert segment_steps([1, 9, 2], SEP, NL, think_end_id=THINK).think_end_step == -1


# ---- B2: building one prompt's tree -----------------------------------------------------------------

def cont(tokens, reward):
    return Continuation(token_ids=tokens, logprobs=[-0.5] * len(tokens), reward=reward)


def toks(nodes):
    return [n.tokens for n in nodes]


def test_b2_tree_shape_by_hand():
    # o = [1 2 3 4 5] cut at 1 and 3: R -> A=[1] -> B=[2 3] -> C=[4 5] (leaf, reward 1);
    # c1 hangs off A (sampled from o[:1]), c2 and c3 off B (sampled from o[:3]); o' = [6 7] is a leaf under R
    o = Rollout(response_ids=[1, 2, 3, 4, 5], old_logprobs=[-.1, -.2, -.3, -.4, -.5], reward=1.0,
                branch_points=[1, 3], continuations=[[cont([11], 0.0)], [cont([12, 13], 1.0), cont([14], 0.0)]])
    o2 = Rollout(response_ids=[6, 7], old_logprobs=[-.6, -.7], reward=0.0)
    root = build_prompt_tree([o, o2])
    assert toks(root.children) == [[1], [6, 7]]
    A, leaf2 = root.children
    assert leaf2.is_leaf and leaf2.reward == 0.0 and not leaf2.is_continuation
    assert toks(A.children) == [[2, 3], [11]]
    B, c1 = A.children
    assert c1.is_continuation and c1.reward == 0.0 and c1.old_logprobs == [-0.5]
    assert toks(B.children) == [[4, 5], [12, 13], [14]]
    assert B.old_logprobs == [-.2, -.3]
    assert [c.reward for c in B.children] == [1.0, 1.0, 0.0]
    assert A.reward is None and B.reward is None


def test_b2_equal_branch_points_share_a_node():
    o = Rollout(response_ids=[1, 2, 3], old_logprobs=[-1.0] * 3, reward=1.0,
                branch_points=[2, 2], continuations=[[cont([21], 0.0)], [cont([22], 1.0)]])
    root = build_prompt_tree([o])
    assert toks(root.children) == [[1, 2]]
    assert toks(root.children[0].children) == [[3], [21], [22]]


# ---- B3: Eq. 2 values and Eq. 3 advantages -----------------------------------------------------------

def leaf(tokens, reward, is_continuation=False):
    return TreeNode(tokens=tokens, old_logprobs=[-0.1] * len(tokens), reward=reward, is_continuation=is_continuation)


def test_b3_values_and_advantages_by_hand():
    # R -> A -> {B (1), c1 (0), c2 (0)};  R -> D (1).   V(R) = 2/4 = 0.5, V(A) = 1/3
    B, c1, c2, D = leaf([2], 1.0), leaf([3], 0.0, True), leaf([4], 0.0, True), leaf([5], 1.0)
    A = TreeNode(tokens=[1], old_logprobs=[-0.1], children=[B, c1, c2])
    root = TreeNode(tokens=[], old_logprobs=[], children=[A, D])
    assign_values_and_advantages(root)
    assert (root.value, A.value, B.value) == pytest.approx((0.5, 1 / 3, 1.0))
    assert (root.n_leaves, A.n_leaves, B.n_leaves) == (4, 3, 1)
    assert A.advantage == pytest.approx(2 * (1 / 3 - 0.5) / math.sqrt(3), abs=1e-12)      # -0.19245
    assert B.advantage == pytest.approx((1 - 0.5) + (1 - 1 / 3), abs=1e-12)             # 1.16667
    assert c1.advantage == pytest.approx((0 - 0.5) + (0 - 1 / 3), abs=1e-12)            # -0.83333
    assert D.advantage == pytest.approx(2 * (1 - 0.5), abs=1e-12)                       # 1.0
    assert root.advantage == 0.0


def test_b3_deeper_tree_uses_parent_and_root():
    # R -> A -> B -> {C (1), e (1)};  A -> f (0);  R -> g (0).  V(R) = 2/4, V(A) = 2/3, V(B) = 1
    C, e, f, g = leaf([3], 1.0), leaf([4], 1.0, True), leaf([5], 0.0, True), leaf([6], 0.0)
    Bn = TreeNode(tokens=[2], old_logprobs=[-0.1], children=[C, e])
    A = TreeNode(tokens=[1], old_logprobs=[-0.1], children=[Bn, f])
    root = TreeNode(tokens=[], old_logprobs=[], children=[A, g])
    assign_values_and_advantages(root)
    assert Bn.advantage == pytest.approx(((1 - 0.5) + (1 - 2 / 3)) / math.sqrt(2), abs=1e-12)   # 0.589256
    assert C.advantage == pytest.approx((1 - 0.5) + (1 - 1), abs=1e-12)                         # 0.5
    assert g.advantage == pytest.approx(2 * (0 - 0.5), abs=1e-12)                               # -1.0


# ---- B4: training sequences -------------------------------------------------------------------------

def b4_tree():
    # R -> A [1 2] (Â .5) -> {B [3] (Â 1, r 1), c [4 5] (Â -1, r 0, continuation)};  R -> D [6] (Â 2, r 1)
    B = TreeNode(tokens=[3], old_logprobs=[-.3], reward=1.0, advantage=1.0)
    c = TreeNode(tokens=[4, 5], old_logprobs=[-.4, -.5], reward=0.0, is_continuation=True, advantage=-1.0)
    A = TreeNode(tokens=[1, 2], old_logprobs=[-.1, -.2], children=[B, c], advantage=0.5)
    D = TreeNode(tokens=[6], old_logprobs=[-.6], reward=1.0, advantage=2.0)
    return TreeNode(tokens=[], old_logprobs=[], children=[A, D])


def test_b4_one_sequence_per_branched_path():
    seqs = training_sequences(b4_tree(), prompt_ids=[100, 101], prompt_index=3)
    assert [s.response_ids for s in seqs] == [[1, 2, 3], [1, 2, 4, 5]]        # D has no branch: not trained
    assert [s.advantages for s in seqs] == [[0.5, 0.5, 1.0], [0.5, 0.5, -1.0, -1.0]]
    assert [s.old_logprobs for s in seqs] == [[-.1, -.2, -.3], [-.1, -.2, -.4, -.5]]
    assert [s.reward for s in seqs] == [1.0, 0.0]
    assert all(s.prompt_ids == [100, 101] and s.prompt_index == 3 for s in seqs)


def test_b4_train_unbranched_switch():
    seqs = training_sequences(b4_tree(), prompt_ids=[100], prompt_index=0, train_unbranched=True)
    assert [s.response_ids for s in seqs] == [[1, 2, 3], [1, 2, 4, 5], [6]]
    assert seqs[2].advantages == [2.0]


# ---- B5: entropy branch points (TreeRL) -------------------------------------------------------------

def test_b5_highest_entropy_positions():
    H = torch.tensor([0.1, 0.9, 0.5, 0.9, 2.0])   # the last token (2.0) never counts
    assert entropy_branch_points(H, n=2) == [1, 3]               # tie 0.9/0.9: both, earlier first
    assert entropy_branch_points(H, n=3) == [1, 2, 3]            # returned sorted by position


def test_b5_ties_in_a_long_window():
    # 40 positions (39 in the window): 1.0 at every third position, 0.5 elsewhere, the rest tied;
    # ties go to the earlier position, so the first four 1.0s win
    H = torch.full((40,), 0.5)
    H[::3] = 1.0
    assert entropy_branch_points(H, n=4) == [0, 3, 6, 9]
    assert entropy_branch_points(torch.ones(64), n=5) == [0, 1, 2, 3, 4]       # all tied: the first five
    # 14 of 1.0 (positions 0, 3, .., 39 of a 41-long response: 39 is the last in the window), then 0.5s from 1
    H = torch.full((41,), 0.5)
    H[::3] = 1.0
    assert entropy_branch_points(H, n=15) == sorted(list(range(0, 40, 3)) + [1])


def test_b5_short_responses_cycle():
    assert entropy_branch_points(torch.tensor([0.3, 0.1, 5.0]), n=3) == [0, 0, 1]   # window [0.3, 0.1], cycled
    assert entropy_branch_points(torch.tensor([1.0]), n=2) == [0, 0]
    assert entropy_branch_points(torch.tensor([]), n=2) == []
