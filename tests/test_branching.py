"""Branch-point selectors (Eq. 7, docs/algorithm.md §c.1 and §h), on hand-computed examples."""
import random

import numpy as np
import pytest
import torch

from attnrl_mini.algorithm.branching import (SELECTORS, entropy_branch_points, fci_branch_points, fci_candidate_steps,
                                   fci_entropy_branch_points, first_step_branch_points, random_branch_points,
                                   select_branch_points, step_entropies, step_entropy_branch_points)

# Eight steps of 3 tokens: step k covers [3k, 3k+3).
STEPS8 = [(3 * k, 3 * k + 3) for k in range(8)]


def y(*values):
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- candidates (quantile, τ == 0, step 0)

def test_quantile_uses_linear_interpolation():
    # sorted y = [0, .1, .2, .5, .9]; position 0.8·(5−1) = 3.2 -> τ = .5 + .2·(.9 − .5) = .58
    assert fci_candidate_steps(y(0, 0.1, 0.5, 0.2, 0.9)) == [4]


def test_value_equal_to_the_quantile_is_a_candidate():
    # y = 0..5: position 0.8·5 = 4 -> τ = 4 exactly; y ≥ τ keeps steps 4 and 5
    assert fci_candidate_steps(y(0, 1, 2, 3, 4, 5)) == [4, 5]
    assert fci_candidate_steps(y(0, 1, 2, 3, 4, 5), quantile=0.5) == [3, 4, 5]   # τ = 2.5


def test_tau_zero_becomes_smallest_positive_score():
    # 10 steps, one positive: position 7.2 lies among the zeros -> τ = 0 -> τ = 0.3
    assert fci_candidate_steps(y(0, 0, 0, 0.3, 0, 0, 0, 0, 0, 0)) == [3]
    # 11 steps, two positives: position 8 is still a zero -> τ = min positive = 0.1
    assert fci_candidate_steps(y(0, 0, 0, 0.3, 0, 0, 0, 0.1, 0, 0, 0)) == [3, 7]
    # all zero: no positive score, τ stays 0 and every step but step 0 is a candidate
    assert fci_candidate_steps(y(0, 0, 0, 0)) == [1, 2, 3]


def test_step_zero_is_never_a_candidate():
    # sorted [0,0,0,0,5], position 3.2 -> τ = 0.2·5 = 1.0 -> C = {0} -> removed
    assert fci_candidate_steps(y(5, 0, 0, 0, 0)) == []


def test_candidates_match_numpy_percentile_reference():
    rng = np.random.default_rng(0)
    for _ in range(100):
        s = int(rng.integers(1, 20))
        scores = rng.random(s) * (rng.random(s) < 0.5)   # about half of them zero
        tau = np.quantile(scores, 0.8, method="linear")
        if tau == 0 and (scores > 0).any():
            tau = scores[scores > 0].min()
        expected = [k for k in range(1, s) if scores[k] >= tau]
        assert fci_candidate_steps(torch.tensor(scores)) == expected


# ---------------------------------------------------------------- greedy scan with spacing, fallbacks

# y on STEPS8: sorted [0,0,0,0,1,1,1,1], position 5.6 -> τ = 1 -> C = {2, 3, 5, 7}
Y8 = y(0, 0, 1, 1, 0, 1, 0, 1)


def test_earliest_first_scan_with_min_gap():
    # accept step 2 [6,9); step 3 [9,12): gap 9−9 = 0 < 4, rejected; step 5 [15,18): gap 6 ≥ 4 -> [6, 15]
    assert fci_branch_points(Y8, STEPS8, prompt_len=10, n=2, min_gap=4, min_start=0) == [6, 15]
    # gap exactly min_gap is allowed
    assert fci_branch_points(Y8, STEPS8, prompt_len=10, n=2, min_gap=6, min_start=0) == [6, 15]
    # min_gap 7: step 5 rejected (6 < 7), step 7 [21,24): gap 12 -> [6, 21]
    assert fci_branch_points(Y8, STEPS8, prompt_len=10, n=2, min_gap=7, min_start=0) == [6, 21]
    # min_gap 13: only step 2 passes -> fallback adds step 1 (start 3)
    assert fci_branch_points(Y8, STEPS8, prompt_len=10, n=2, min_gap=13, min_start=0) == [3, 6]


def test_min_start_counts_the_prompt():
    # step 2 starts at 6, absolute 10 + 6 = 16
    assert fci_branch_points(Y8, STEPS8, prompt_len=10, n=2, min_gap=4, min_start=16) == [6, 15]
    # min_start 17: step 2 rejected; step 3 (abs 19) accepted; step 5 gap 15−12 = 3 < 4; step 7 gap 9
    assert fci_branch_points(Y8, STEPS8, prompt_len=10, n=2, min_gap=4, min_start=17) == [9, 21]


def test_scan_is_by_position_not_by_score():
    # step 5 has the highest score, but steps 2 and 3 are earlier candidates
    scores = y(0, 0, 1, 1, 0, 9, 0, 0)   # position 5.6 -> τ = 1 -> C = {2, 3, 5}
    assert fci_branch_points(scores, STEPS8, prompt_len=0, n=2, min_gap=0, min_start=0) == [6, 9]


def test_fallback_then_cycling_with_duplicates():
    steps = [(0, 2), (2, 4), (4, 6)]
    zeros = y(0, 0, 0)
    # nothing passes min_start -> steps 1, 2 (offsets 2, 4), then cycle 1, 2, 1, ...
    assert fci_branch_points(zeros, steps, prompt_len=0, n=2, min_gap=0, min_start=99) == [2, 4]
    assert fci_branch_points(zeros, steps, prompt_len=0, n=3, min_gap=0, min_start=99) == [2, 2, 4]
    # all-zero scores: C = {1, 2}, both accepted (gap 4−4 = 0 ≥ 0), then cycling: 2, 4, 2
    assert fci_branch_points(zeros, steps, prompt_len=0, n=5, min_gap=0, min_start=0) == [2, 2, 2, 4, 4]
    # a two-step response and n = 2: step 1 twice
    assert fci_branch_points(y(0, 0), [(0, 3), (3, 5)], prompt_len=0, n=2, min_gap=0, min_start=0) == [3, 3]


def test_fallback_skips_offsets_already_chosen():
    # sorted y = 7 zeros and a 5; position 5.6 -> τ = 0 -> τ = 5 -> C = {2}; step 2 (offset 6) accepted.
    # Fallback for n = 3: step 1 (offset 3) added, step 2 skipped (already chosen), step 3 (offset 9) added.
    scores = y(0, 0, 5, 0, 0, 0, 0, 0)
    assert fci_branch_points(scores, STEPS8, prompt_len=0, n=3, min_gap=0, min_start=0) == [3, 6, 9]


def test_fci_short_or_mismatched_responses():
    assert fci_branch_points(y(0.0), [(0, 4)], prompt_len=5, n=2) == []   # one step: nothing to branch at
    with pytest.raises(ValueError, match="3 scores but the response has 2 steps"):
        fci_branch_points(y(0, 1, 2), [(0, 1), (1, 2)], prompt_len=0)


# ---------------------------------------------------------------- entropy (TreeRL), first steps, random

def test_entropy_top_n_excludes_the_last_token():
    # positions 0..3 are eligible; the last token (entropy 9) is not
    assert entropy_branch_points(y(0.5, 2.0, 0.1, 3.0, 9.0), n=2) == [1, 3]
    assert entropy_branch_points(y(1, 1, 1, 0), n=2) == [0, 1]      # ties -> earlier positions
    assert entropy_branch_points(y(4.0, 1.0), n=2) == [0, 0]        # one eligible position, cycled
    assert entropy_branch_points(y(4.0), n=2) == [0, 0]
    assert entropy_branch_points(torch.zeros(0), n=2) == []


def test_first_steps():
    steps = [(0, 3), (3, 5), (5, 9), (9, 10)]
    assert first_step_branch_points(steps, n=2) == [3, 5]
    assert first_step_branch_points(steps, n=4) == [3, 3, 5, 9]
    assert first_step_branch_points(steps[:2], n=2) == [3, 3]
    assert first_step_branch_points(steps[:1], n=2) == []


def test_random_steps_are_distinct_step_starts():
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        pts = random_branch_points(STEPS8, 2, rng)
        assert pts == sorted(pts) and len(set(pts)) == 2
        assert all(p in {3 * k for k in range(1, 8)} for p in pts)
        seen.update(pts)
    assert seen == {3 * k for k in range(1, 8)}   # every step but step 0 gets drawn
    assert random_branch_points([(0, 1), (1, 2)], 3, rng) == [1, 1, 1]


def test_dispatcher():
    common = dict(steps=STEPS8, prompt_len=10, n=2, quantile=0.8, min_gap=4, min_start=0, rng=random.Random(1))
    ent = torch.arange(24, dtype=torch.float32)
    assert select_branch_points("fci", fci=Y8, entropies=None, **common) == [6, 15]
    assert select_branch_points("entropy", fci=None, entropies=ent, **common) == [21, 22]
    assert select_branch_points("first_steps", fci=None, entropies=None, **common) == [3, 6]
    assert len(select_branch_points("random", fci=None, entropies=None, **common)) == 2
    assert select_branch_points("none", fci=None, entropies=None, **common) == []
    with pytest.raises(ValueError, match="unknown branch selector"):
        select_branch_points("attention", fci=Y8, entropies=ent, **common)
    with pytest.raises(ValueError, match="needs the response's FCI"):
        select_branch_points("fci", fci=None, entropies=ent, **common)


# ---------------------------------------------------------------- step_entropy and fci_entropy (departures)
# Six steps: [0,2) [2,5) [5,7) [7,12) [12,14) [14,16); sixteen token entropies.
STEPS6 = [(0, 2), (2, 5), (5, 7), (7, 12), (12, 14), (14, 16)]
H16 = y(2.0, 0.0, 0.3, 0.3, 0.3, 0.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.0, 0.0)
FCI6 = y(0.0, 0.5, 0.4, 0.8, 0.45, 0.1)


def test_step_entropies_mean_and_max():
    # means: (2+0)/2, (.3·3)/3, (0+1)/2, (.1·5)/5, (.9+.9)/2, 0;  maxima: 2, .3, 1, .1, .9, 0
    assert step_entropies(H16, STEPS6, "mean").tolist() == pytest.approx([1.0, 0.3, 0.5, 0.1, 0.9, 0.0])
    assert step_entropies(H16, STEPS6, "max").tolist() == pytest.approx([2.0, 0.3, 1.0, 0.1, 0.9, 0.0])
    with pytest.raises(ValueError, match="only 15 token entropies"):
        step_entropies(H16[:15], STEPS6)
    with pytest.raises(ValueError, match="reduce"):
        step_entropies(H16, STEPS6, "median")


def test_step_entropy_uses_atb_rules_on_mean_step_entropy():
    common = dict(prompt_len=10, n=2, min_start=0)
    # H = [1, .3, .5, .1, .9, 0]; 0.8-quantile: position 4 of sorted [0,.1,.3,.5,.9,1] -> τ = .9 -> C = {4}
    # (step 0's 1.0 is never a candidate); short of 2 -> ATB's fallback adds step 1 (offset 2)
    assert step_entropy_branch_points(H16, STEPS6, quantile=0.8, min_gap=4, **common) == [2, 12]
    # 0.5-quantile: position 2.5 -> τ = .3 + .5·(.5 − .3) = .4 -> C = {2, 4}, earliest first:
    # step 2 [5,7) accepted, step 4 [12,14) is 12 − 7 = 5 tokens later: kept at min_gap 4 ...
    assert step_entropy_branch_points(H16, STEPS6, quantile=0.5, min_gap=4, **common) == [5, 12]
    # ... rejected at min_gap 6, so the fallback adds step 1 (offset 2)
    assert step_entropy_branch_points(H16, STEPS6, quantile=0.5, min_gap=6, **common) == [2, 5]
    # the token with the highest entropy (offset 0, 2.0 nats) is never chosen: it is step 0
    assert select_branch_points("entropy", fci=None, entropies=H16, steps=STEPS6, **common, quantile=0.8,
                                min_gap=4) == [0, 6]


def test_fci_entropy_orders_fci_candidates_by_uncertainty():
    common = dict(prompt_len=10, n=2, min_start=0)
    # FCI 0.5-quantile: sorted [0,.1,.4,.45,.5,.8], position 2.5 -> τ = .425 -> C = {1, 3, 4};
    # by max token entropy u = .3, .1, .9 -> scan order 4, 1, 3
    # min_gap 4: step 4 [12,14) accepted; step 1 [2,5) ends 7 tokens before it: accepted -> [2, 12]
    assert fci_entropy_branch_points(FCI6, H16, STEPS6, quantile=0.5, min_gap=4, **common) == [2, 12]
    # min_gap 8: step 1 (gap 7) and step 3 [7,12) (gap 0) rejected; fallback = remaining steps by u:
    # step 2 (u = 1.0) -> [5, 12].  ATB (earliest first) instead keeps step 1, rejects 3 and 4, falls back to step 2
    assert fci_entropy_branch_points(FCI6, H16, STEPS6, quantile=0.5, min_gap=8, **common) == [5, 12]
    assert fci_branch_points(FCI6, STEPS6, quantile=0.5, min_gap=8, **common) == [2, 5]
    # the uncertain step 2 (u = 1.0) is not important (FCI .4 < τ): with room for both candidates it is not taken
    assert fci_entropy_branch_points(FCI6, H16, STEPS6, quantile=0.5, min_gap=0, **common) == [2, 12]


def test_fci_entropy_ties_short_responses_and_errors():
    flat = torch.zeros(16)
    # equal uncertainty everywhere: earliest candidates first, as ATB (C = {1, 3, 4} at the 0.5-quantile)
    assert fci_entropy_branch_points(FCI6, flat, STEPS6, prompt_len=0, n=2, quantile=0.5, min_gap=0, min_start=0) == [2, 7]
    two = [(0, 2), (2, 4)]
    assert fci_entropy_branch_points(y(0, 1), torch.ones(4), two, prompt_len=0, n=3, min_gap=0, min_start=0) == [2, 2, 2]
    assert fci_entropy_branch_points(y(0), torch.ones(2), [(0, 2)], prompt_len=0, n=2) == []
    with pytest.raises(ValueError, match="3 scores but the response has 6 steps"):
        fci_entropy_branch_points(y(0, 1, 2), H16, STEPS6, prompt_len=0)


def test_new_selectors_through_the_dispatcher_and_config():
    from attnrl_mini.config import Config
    import dataclasses
    common = dict(steps=STEPS6, prompt_len=10, n=2, quantile=0.5, min_gap=8, min_start=0)
    assert select_branch_points("step_entropy", fci=None, entropies=H16, **common) == [2, 5]
    assert select_branch_points("fci_entropy", fci=FCI6, entropies=H16, **common) == [5, 12]
    with pytest.raises(ValueError, match="needs the response's FCI"):
        select_branch_points("fci_entropy", fci=None, entropies=H16, **common)
    with pytest.raises(ValueError, match="needs the response's token entropies"):
        select_branch_points("step_entropy", fci=FCI6, entropies=None, **common)
    choices = next(f for f in dataclasses.fields(Config) if f.name == "branch_selector").metadata["choices"]
    assert set(choices) == set(SELECTORS)
