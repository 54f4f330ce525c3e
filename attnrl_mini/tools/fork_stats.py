"""The branch-selector study's statistics (bench/branch_outcomes.py): where a fork falls, and a pooled
ratio over forks with its 95% interval, bootstrapped over prompts.

A fork is one branch point: the original response and its T continuations from that offset. It is
*mixed* when their rewards are not all equal: only a mixed fork gives the tree advantages contrast
(Eq. 2-3 give every node of an all-equal fork the same value).

Every column of the study's table is a pooled ratio over the forks of a batch of prompts,

    ratio = Σ_prompts Σ_forks num(fork) / Σ_prompts Σ_forks den(fork)       (None when the den sum is 0)

(mixed share: num = mixed, den = 1; tokens per mixed fork: num = tokens, den = mixed), and its 95%
interval is the percentile bootstrap over PROMPTS: the forks of one prompt share its initial
responses, so they are not independent, and resampling single forks would give too narrow an interval.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence

PLACES = ("before", "at", "between", "after")


def mixed(rewards: Sequence[float]) -> bool:
    """A fork's rewards (original first, then its continuations) are not all equal."""
    return len(set(rewards)) > 1


def fork_place(offset: int, decision_spans: list[tuple[int, int, int]]) -> str | None:
    """Where a fork at response offset `offset` falls, given each decision's (step start, step end, digit
    position), in order: before (the fork regenerates every decision), at (inside a decision step, at or
    before its digit), between (after a decision, before the next), after (regenerates none); None
    without decisions."""
    if not decision_spans:
        return None
    if offset < decision_spans[0][0]:
        return "before"
    for start, end, digit in decision_spans:
        if start <= offset <= digit:
            return "at"
    if offset > decision_spans[-1][2]:
        return "after"
    return "between"


def pooled_ratio(per_prompt: list[list[dict]], num: Callable[[dict], float], den: Callable[[dict], float]) -> float | None:
    """Σ num(fork) / Σ den(fork) over every fork of every prompt; None when the den sum is 0."""
    d = sum(den(f) for forks in per_prompt for f in forks)
    return sum(num(f) for forks in per_prompt for f in forks) / d if d else None


def bootstrap_ratio(per_prompt: list[list[dict]], num: Callable[[dict], float], den: Callable[[dict], float],
                    n: int = 1000, seed: int = 0) -> tuple[float | None, float | None, float | None]:
    """(ratio, lo, hi): the pooled ratio of the module docstring over all prompts, and its 95% percentile
    bootstrap interval over prompts.

    per_prompt[i] is the list of prompt i's forks (dicts; num and den read them). One resample draws
    len(per_prompt) prompts with replacement, `rng.randrange(len(per_prompt))` each, rng =
    random.Random(seed), and takes the pooled ratio of the forks of the drawn prompts; n resamples,
    drawn one after the other. Resamples whose ratio is None (their den sums to 0) are dropped; of the
    k kept ones, sorted ascending, lo is the one at index int(0.025 k) and hi the one at index
    min(k - 1, int(0.975 k)). With no ratio over all prompts, or no resample kept: (ratio, None, None).
    """
    # BEGIN SOLUTION D1
    value = pooled_ratio(per_prompt, num, den)
    rng = random.Random(seed)
    draws = []
    for _ in range(n):
        resample = [per_prompt[rng.randrange(len(per_prompt))] for _ in per_prompt]
        v = pooled_ratio(resample, num, den)
        if v is not None:
            draws.append(v)
    draws.sort()
    if value is None or not draws:
        return value, None, None
    return value, draws[int(0.025 * len(draws))], draws[min(len(draws) - 1, int(0.975 * len(draws)))]
    # END SOLUTION D1
