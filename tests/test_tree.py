"""Rollout trees, Eq. 2 values, Eq. 3 advantages, training sequences (docs/algorithm.md §c.4, §d)."""
import json
import math
import random

import pytest

from attnrl_mini.algorithm.tree import (Continuation, Rollout, assign_values_and_advantages, build_prompt_tree,
                              grpo_advantages, grpo_sequences, training_sequences, tree_to_dict)

S3, S5 = math.sqrt(3), math.sqrt(5)


def response(first_id, n):
    """n distinct token ids, and old log-probs −0.001·id (so every token's log-prob is recognisable)."""
    ids = list(range(first_id, first_id + n))
    return ids, [-0.001 * t for t in ids]


def cont(first_id, n, reward):
    ids = list(range(first_id, first_id + n))
    return Continuation(token_ids=ids, logprobs=[-0.5 - 0.001 * t for t in ids], reward=float(reward))


def build(rollouts):
    root = build_prompt_tree(rollouts)
    assign_values_and_advantages(root)
    return root


# ------------------------------------------------------------------------------- a two-level tree

def test_two_level_tree_by_hand():
    # o0 (reward 0) branched once at p = 2 with continuations c1 (1) and c2 (0); o1 (reward 1) unbranched.
    #   R ── A = o0[0:2] ── C = o0[2:5] (0), c1 (1), c2 (0)
    #     └─ o1 (1)
    o0, lp0 = response(10, 5)
    o1, lp1 = response(20, 3)
    root = build([Rollout(o0, lp0, 0.0, [2], [[cont(100, 2, 1), cont(200, 3, 0)]]),
                  Rollout(o1, lp1, 1.0)])
    A, leaf_o1 = root.children
    C, c1, c2 = A.children
    assert A.tokens == [10, 11] and C.tokens == [12, 13, 14] and leaf_o1.tokens == o1
    assert (c1.is_continuation, c2.is_continuation, C.is_continuation, A.is_continuation) == (True, True, False, False)

    # Eq. 2: V(R) = 2 correct / 4 leaves; V(A) = 1/3 over its 3 leaves
    assert root.value == pytest.approx(0.5) and root.n_leaves == 4
    assert A.value == pytest.approx(1 / 3) and A.n_leaves == 3
    # Eq. 3
    assert A.advantage == pytest.approx(2 * (1 / 3 - 0.5) / S3)           # −0.19245
    assert C.advantage == pytest.approx((0 - 0.5) + (0 - 1 / 3))          # −5/6
    assert c1.advantage == pytest.approx((1 - 0.5) + (1 - 1 / 3))         # 7/6
    assert c2.advantage == pytest.approx(-5 / 6)
    assert leaf_o1.advantage == pytest.approx(2 * (1 - 0.5))              # 1, parent is R

    seqs = training_sequences(root, prompt_ids=[1, 2], prompt_index=7)
    assert len(seqs) == 3                                                  # o1 unbranched: not trained
    by_tokens = {tuple(s.response_ids): s for s in seqs}
    s_c1 = by_tokens[(10, 11, 100, 101)]
    assert s_c1.advantages == pytest.approx([A.advantage] * 2 + [7 / 6] * 2)
    assert s_c1.old_logprobs == pytest.approx([-0.010, -0.011, -0.6, -0.601])   # prefix from o0, rest from c1
    assert s_c1.prompt_ids == [1, 2] and s_c1.prompt_index == 7 and s_c1.reward == 1.0
    s_o0 = by_tokens[tuple(o0)]
    assert s_o0.old_logprobs == pytest.approx(lp0) and s_o0.reward == 0.0

    with_unbranched = training_sequences(root, [1, 2], 7, train_unbranched=True)
    assert len(with_unbranched) == 4
    s_o1 = next(s for s in with_unbranched if s.response_ids == o1)
    assert s_o1.advantages == pytest.approx([1.0] * 3)


# ------------------------------------------------------------------------------- §d.5 worked example

def test_worked_example_of_algorithm_md_d5():
    """a = 3/6, M = 4 responses branched (o0, o3, o4, o5), each at p1 = 3, p2 = 7 with 2 + 2 continuations.

    Rewards              r_C   b1 b2 (from o[:3])   b3 b4 (from o[:7])
      o0                  1    1  0                 1  1
      o1, o2 unbranched   1, 1
      o3                  0    0  0                 1  0
      o4                  0    1  0                 0  0
      o5                  0    0  0                 0  0
    Leaves: 6 originals + 16 continuations = 22; correct: 3 + (3 + 1 + 1 + 0) = 8 -> V(R) = 8/22 = 4/11.

    o0: V_A = (1+1+0+1+1)/5 = 4/5, V_B = (1+1+1)/3 = 1
        Â(A)  = 2(4/5 − 4/11)/√5            = 48/(55√5) ≈  0.39030
        Â(B)  = [(1 − 4/11) + (1 − 4/5)]/√3 = (46/55)/√3 ≈  0.48288
        Â(C)  = (1 − 4/11) + (1 − 1)        = 7/11      ≈  0.63636
        Â(b1) = (1 − 4/11) + (1 − 4/5)      = 46/55     ≈  0.83636
        Â(b2) = (0 − 4/11) + (0 − 4/5)      = −64/55    ≈ −1.16364
        Â(b3) = Â(b4) = (1 − 4/11) + (1 − 1) = 7/11
    o3: V_A = (0+0+0+1+0)/5 = 1/5, V_B = (0+1+0)/3 = 1/3
        Â(A)  = 2(1/5 − 4/11)/√5             = −18/(55√5) ≈ −0.14636
        Â(B)  = [(1/3 − 4/11) + (1/3 − 1/5)]/√3 = (17/165)/√3 ≈ 0.05949
        Â(C)  = (0 − 4/11) + (0 − 1/3)       = −23/33
        Â(b3) = (1 − 4/11) + (1 − 1/3)       = 43/33
        Â(b1) = (0 − 4/11) + (0 − 1/5)       = −31/55
    """
    rewards = {0: (1, [1, 0], [1, 1]), 3: (0, [0, 0], [1, 0]), 4: (0, [1, 0], [0, 0]), 5: (0, [0, 0], [0, 0])}
    rollouts = []
    for i in range(6):
        ids, lps = response(1000 * (i + 1), 10)
        if i in rewards:
            r_c, early, late = rewards[i]
            conts = [[cont(1000 * (i + 1) + 100 + 10 * j, 4, r) for j, r in enumerate(early)],
                     [cont(1000 * (i + 1) + 200 + 10 * j, 4, r) for j, r in enumerate(late)]]
            rollouts.append(Rollout(ids, lps, float(r_c), [3, 7], conts))
        else:
            rollouts.append(Rollout(ids, lps, 1.0))
    root = build(rollouts)
    assert root.n_leaves == 22 and root.value == pytest.approx(4 / 11)

    A0 = root.children[0]
    B0, b1, b2 = A0.children
    C0, b3, b4 = B0.children
    assert (A0.tokens, B0.tokens, C0.tokens) == ([1000, 1001, 1002], [1003, 1004, 1005, 1006], [1007, 1008, 1009])
    assert (A0.n_leaves, B0.n_leaves) == (5, 3)                     # |L(A)| = 5, |L(B)| = 3
    assert (A0.value, B0.value) == (pytest.approx(4 / 5), pytest.approx(1.0))
    assert A0.advantage == pytest.approx(48 / (55 * S5))
    assert B0.advantage == pytest.approx((46 / 55) / S3)
    assert C0.advantage == pytest.approx(7 / 11)
    assert b1.advantage == pytest.approx(46 / 55)
    assert b2.advantage == pytest.approx(-64 / 55)
    assert b3.advantage == pytest.approx(7 / 11) and b4.advantage == pytest.approx(7 / 11)

    A3 = root.children[3]
    B3, b1_3, _ = A3.children
    C3, b3_3, _ = B3.children
    assert A3.advantage == pytest.approx(-18 / (55 * S5))
    assert B3.advantage == pytest.approx((17 / 165) / S3)
    assert C3.advantage == pytest.approx(-23 / 33)
    assert b3_3.advantage == pytest.approx(43 / 33)
    assert b1_3.advantage == pytest.approx(-31 / 55)

    seqs = training_sequences(root, prompt_ids=[5], prompt_index=0)
    assert len(seqs) == 20                                          # 4 branched responses × (1 + 4)
    by_tokens = {tuple(s.response_ids): s for s in seqs}
    # sequence C = s_A|s_B|s_C carries Â(A), Â(B), Â(C)
    seq_c = by_tokens[tuple(range(1000, 1010))]
    assert seq_c.advantages == pytest.approx([48 / (55 * S5)] * 3 + [(46 / 55) / S3] * 4 + [7 / 11] * 3)
    # sequence b1 = s_A|b1 carries Â(A), Â(b1); b3 = s_A|s_B|b3 carries Â(A), Â(B), Â(b3)
    seq_b1 = by_tokens[(1000, 1001, 1002, 1100, 1101, 1102, 1103)]
    assert seq_b1.advantages == pytest.approx([48 / (55 * S5)] * 3 + [46 / 55] * 4)
    seq_b3 = by_tokens[tuple(range(1000, 1007)) + (1200, 1201, 1202, 1203)]
    assert seq_b3.advantages == pytest.approx([48 / (55 * S5)] * 3 + [(46 / 55) / S3] * 4 + [7 / 11] * 4)
    assert seq_b3.old_logprobs == pytest.approx([-0.001 * t for t in range(1000, 1007)]
                                                + [-0.5 - 0.001 * t for t in range(1200, 1204)])


# ------------------------------------------------------------------------------- shapes and edge cases

def test_equal_branch_points_share_one_node():
    ids, lps = response(0, 6)
    root = build([Rollout(ids, lps, 1.0, [4, 4], [[cont(100, 1, 0), cont(110, 1, 0)],
                                                  [cont(120, 1, 1), cont(130, 1, 1)]])])
    (A,) = root.children
    assert A.tokens == [0, 1, 2, 3] and len(A.children) == 5 and A.n_leaves == 5
    assert A.children[0].tokens == [4, 5] and not A.children[0].is_continuation
    assert [c.tokens for c in A.children[1:]] == [[100], [110], [120], [130]]
    # V(R) = V(A) = 3/5, so Â(A) = 0; C (reward 1) gets 2·(1 − 3/5) = 0.8
    assert A.advantage == pytest.approx(0.0) and A.children[0].advantage == pytest.approx(0.8)


def test_branch_point_zero_gives_an_empty_first_segment():
    # (TreeRL can fork at position 0: the continuation regenerates the whole response)
    ids, lps = response(0, 3)
    root = build([Rollout(ids, lps, 0.0, [0], [[cont(100, 2, 1)]])])
    (A,) = root.children
    assert A.tokens == [] and A.n_leaves == 2
    seqs = training_sequences(root, [9], 0)
    assert sorted(s.response_ids for s in seqs) == [[0, 1, 2], [100, 101]]


def test_bad_rollouts_are_rejected():
    ids, lps = response(0, 4)
    with pytest.raises(ValueError, match="3 old log-probs for 4 response tokens"):
        build_prompt_tree([Rollout(ids, lps[:3], 1.0)])
    with pytest.raises(ValueError, match="outside the response"):
        build_prompt_tree([Rollout(ids, lps, 1.0, [4], [[cont(9, 1, 1)]])])
    with pytest.raises(ValueError, match="must be sorted"):
        build_prompt_tree([Rollout(ids, lps, 1.0, [3, 1], [[], []])])
    with pytest.raises(ValueError, match="one list per point"):
        build_prompt_tree([Rollout(ids, lps, 1.0, [1, 2], [[cont(9, 1, 1)]])])
    with pytest.raises(ValueError, match="no responses"):
        assign_values_and_advantages(build_prompt_tree([]))


# ------------------------------------------------------------------------------- naive reference

def brute_force_sequences(rollouts):
    """Per-token advantages without building a tree.

    The leaves under the segment [s, e) of response o are o itself and every continuation of o
    whose prefix o[:p] contains the whole segment (p >= e). The segment's parent is the segment of o
    that ends at s (the root if s == 0).
    """
    leaves = [r.reward for r in rollouts] + [c.reward for r in rollouts for cs in r.continuations for c in cs]
    v_root = sum(leaves) / len(leaves)

    def value_and_count(r, e):
        rs = [r.reward] + [c.reward for p, cs in zip(r.branch_points, r.continuations) if p >= e for c in cs]
        return sum(rs) / len(rs), len(rs)

    expected = {}
    for r in rollouts:
        if not r.branch_points:
            continue
        bounds = [0] + sorted(set(r.branch_points)) + [len(r.response_ids)]
        seg_adv = {}
        for s, e in zip(bounds[:-1], bounds[1:]):
            v, n = value_and_count(r, e)
            v_parent = v_root if s == 0 else value_and_count(r, s)[0]
            seg_adv[(s, e)] = ((v - v_root) + (v - v_parent)) / math.sqrt(n)

        def prefix_advs(p):  # advantage of each token t < p: that of its segment
            return [next(a for (s, e), a in seg_adv.items() if s <= t < e) for t in range(p)]

        n_tokens = len(r.response_ids)
        expected[tuple(r.response_ids)] = (prefix_advs(n_tokens), list(r.old_logprobs))
        for p, cs in zip(r.branch_points, r.continuations):
            v_parent = value_and_count(r, p)[0]
            for c in cs:
                adv_leaf = (c.reward - v_root) + (c.reward - v_parent)
                expected[tuple(r.response_ids[:p] + c.token_ids)] = (
                    prefix_advs(p) + [adv_leaf] * len(c.token_ids), r.old_logprobs[:p] + c.logprobs)
    return expected


def test_matches_brute_force_on_random_trees():
    rng = random.Random(0)
    next_id = [0]

    def fresh(n):
        ids = list(range(next_id[0], next_id[0] + n))
        next_id[0] += n
        return ids

    def random_continuation():
        tokens = fresh(rng.randint(1, 4))
        return Continuation(tokens, [rng.random() for _ in tokens], float(rng.random() < 0.5))

    for _ in range(50):
        rollouts = []
        for _ in range(rng.randint(1, 6)):
            n = rng.randint(2, 12)
            ids = fresh(n)
            points = sorted(rng.randrange(1, n) for _ in range(rng.choice([0, 0, 1, 2, 3])))
            conts = [[random_continuation() for _ in range(rng.randint(1, 3))] for _ in points]
            rollouts.append(Rollout(ids, [rng.random() for _ in ids], float(rng.random() < 0.5), points, conts))
        root = build(rollouts)
        got = {tuple(s.response_ids): (s.advantages, s.old_logprobs) for s in training_sequences(root, [0], 0)}
        expected = brute_force_sequences(rollouts)
        assert got.keys() == expected.keys()
        for key, (advs, lps) in expected.items():
            assert got[key][0] == pytest.approx(advs)
            assert got[key][1] == pytest.approx(lps)


# ------------------------------------------------------------------------------- GRPO, dump

def test_grpo_advantages():
    # mean 0.5, unbiased std = sqrt(4·0.25/3) = 0.57735 -> ±0.5/0.57735 = ±0.86603
    assert grpo_advantages([1, 0, 0, 1]) == pytest.approx([0.8660254, -0.8660254, -0.8660254, 0.8660254], rel=1e-5)
    assert grpo_advantages([1, 1, 1]) == [0.0, 0.0, 0.0]
    assert grpo_advantages([1.0]) == pytest.approx([1 / (1 + 1e-6)])   # verl: a group of one -> mean 0, std 1
    assert grpo_advantages([]) == []
    ids, lps = response(0, 2)
    seqs = grpo_sequences([Rollout(ids, lps, 1.0), Rollout([7], [-0.7], 0.0)], [3], 4)
    assert [s.advantages for s in seqs] == [pytest.approx([0.7071061] * 2), pytest.approx([-0.7071061])]
    assert seqs[1].old_logprobs == [-0.7] and seqs[0].prompt_index == 4


def test_tree_dump_is_plain_json():
    ids, lps = response(0, 5)
    root = build([Rollout(ids, lps, 0.0, [2], [[cont(100, 2, 1)]]), Rollout([9], [-0.1], 1.0)])
    d = json.loads(json.dumps(tree_to_dict(root)))
    assert d["n_leaves"] == 3 and d["value"] == pytest.approx(2 / 3) and d["tokens"] == []
    A = d["children"][0]
    assert A["tokens"] == [0, 1] and A["advantage"] == pytest.approx(2 * (0.5 - 2 / 3) / math.sqrt(2))
    assert [c["is_continuation"] for c in A["children"]] == [False, True]
    assert A["children"][1] == {"tokens": [100, 101], "is_continuation": True, "reward": 1.0, "value": 1.0,
                                "n_leaves": 1, "advantage": pytest.approx((1 - 2 / 3) + (1 - 0.5))}
