"""Adaptive sampling (ADS, paper §3.2; docs/algorithm.md §e): Eq. 8–10 and the zero-advantage filter.

Per prompt, from the accuracy a of its G initial responses:
  - how many responses get branched:     M(a) = ceil(G·e^(−a))  (release; the paper writes Round)
  - which ones: a = 0 all; 0 < a < 1 the minority outcome + random majority ones up to M;
    a = 1 only if the prompt's mean FCI beats a running mean (else the prompt is dropped)
After the trees are built:
  - prompts whose trained leaves all have the same reward are dropped (no learning signal)
  - the number of prompts of the next batch is steered toward B′ training sequences (Eq. 10).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from .tree import TrainSequence

BRANCH_COUNT_RULES = ("ceil", "round", "uniform")


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def branch_count(accuracy: float, G: int = 6, rule: str = "ceil") -> int:
    """Eq. 9: number of responses of a prompt to branch, from its initial accuracy a.

      ceil     M = ceil(G·e^(−a))          the official release   (G=6: 6,6,5,4,4,3,3 for 0/6..6/6)
      round    M = Round(G·e^(−a))         the paper, half up     (G=6: 6,5,4,4,3,3,2)
      uniform  M = G                       ablation "w/o difficulty-aware expansion"
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    if G < 1:
        raise ValueError(f"G must be >= 1, got {G}")
    # BEGIN SOLUTION C6
    x = G * math.exp(-accuracy)
    if rule == "ceil":
        return math.ceil(x)
    if rule == "round":
        return _round_half_up(x)
    if rule == "uniform":
        return G
    # END SOLUTION C6
    raise ValueError(f"unknown branch-count rule {rule!r}; choose one of {', '.join(BRANCH_COUNT_RULES)}")


class RunningMean:
    """Threshold of the all-correct attention filter: a running mean of prompt mean-FCIs.

    kind="cumulative" (release): the count-weighted mean of every value seen since the start.
    kind="ema":   mean ← α·batch_mean + (1−α)·mean, starting from the first batch's mean
                  (the release's RunningAverage with α > 0; it forgets an old policy's scores).
    """

    def __init__(self, kind: str = "cumulative", alpha: float = 0.1):
        if kind not in ("cumulative", "ema"):
            raise ValueError(f"unknown running-mean kind {kind!r}; choose cumulative or ema")
        if kind == "ema" and not 0.0 < alpha <= 1.0:
            raise ValueError(f"ema alpha must be in (0, 1], got {alpha}")
        self.kind, self.alpha = kind, alpha
        self.count = 0
        self._mean = 0.0

    @property
    def mean(self) -> float | None:
        """None before any value was seen."""
        return self._mean if self.count > 0 else None

    def update(self, values: Sequence[float]) -> None:
        """Add one batch of values (an empty batch changes nothing)."""
        values = [float(v) for v in values]
        if not values:
            return
        batch_mean = sum(values) / len(values)
        if self.count == 0:
            self._mean = batch_mean
        elif self.kind == "cumulative":
            self._mean = (self._mean * self.count + batch_mean * len(values)) / (self.count + len(values))
        else:
            self._mean = self.alpha * batch_mean + (1 - self.alpha) * self._mean
        self.count += len(values)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "alpha": self.alpha, "count": self.count, "mean": self._mean}

    def load_state_dict(self, state: dict) -> None:
        self.kind, self.alpha = state["kind"], state["alpha"]
        self.count, self._mean = int(state["count"]), float(state["mean"])


def prompt_mean_fci(fci_per_response: Sequence[torch.Tensor]) -> float:
    """mean_attn(q) = (1/G) Σ_i mean_k y_{i,k}: the inner mean runs over all S_i steps, zeros
    included (§e.1). A response without steps counts as 0."""
    if len(fci_per_response) == 0:
        raise ValueError("prompt_mean_fci needs the FCI of at least one response")
    means = [float(y.float().mean()) if y.numel() > 0 else 0.0 for y in fci_per_response]
    return sum(means) / len(means)


def choose_responses_to_branch(rewards: Sequence[float], mean_fci: float | None, running_mean: RunningMean | None,
                               rng: random.Random, rule: str = "ceil", attention_filter: bool = True,
                               G: int | None = None, drop_easy: bool = False) -> list[int] | None:
    """Which initial responses of one prompt to branch (§e.1). None = drop the prompt.

      a = 0       all responses.
      0 < a < 1   M(a) responses: every response of the minority outcome (the incorrect ones if
                  a >= 0.5, else the correct ones) plus a uniform random sample, without
                  replacement, of the majority outcome to reach M.
      a = 1       drop_easy: dropped. attention_filter: kept only if mean_fci > running mean
                  (strict; the caller adds this batch's all-correct prompts to the running mean
                  *before* the test, see choose_for_batch). Kept: responses 0 .. M(1)−1 by index.
    G (default: len(rewards)) is the G of M(a) = ceil(G·e^(−a)). Returned indices are sorted.
    """
    n = len(rewards)
    if n == 0:
        raise ValueError("a prompt needs at least one initial response")
    G = n if G is None else G
    # BEGIN SOLUTION C7
    correct = [i for i, r in enumerate(rewards) if r > 0.5]
    wrong = [i for i, r in enumerate(rewards) if r <= 0.5]
    accuracy = len(correct) / n
    m = min(branch_count(accuracy, G, rule), n)

    if not wrong:  # a = 1: the easy prompts
        if drop_easy:
            return None
        if attention_filter:
            if running_mean is None or running_mean.mean is None or mean_fci is None:
                raise ValueError("the attention filter needs mean_fci and a running mean that has seen this batch")
            if not mean_fci > running_mean.mean:
                return None
        return list(range(m))
    if not correct:  # a = 0: the hard prompts
        return list(range(n))
    minority, majority = (wrong, correct) if accuracy >= 0.5 else (correct, wrong)
    extra = rng.sample(majority, max(0, min(m - len(minority), len(majority))))
    return sorted(minority + extra)
    # END SOLUTION C7


def choose_for_batch(rewards_per_prompt: Sequence[Sequence[float]], mean_fci_per_prompt: Sequence[float | None],
                     running_mean: RunningMean | None, rng: random.Random, rule: str = "ceil",
                     attention_filter: bool = True, G: int | None = None,
                     drop_easy: bool = False) -> list[list[int] | None]:
    """choose_responses_to_branch for every prompt of a batch, with the release's order of events:
    first the running mean takes in the mean FCI of this batch's all-correct prompts, then each
    all-correct prompt is tested against it."""
    if len(rewards_per_prompt) != len(mean_fci_per_prompt):
        raise ValueError(f"{len(rewards_per_prompt)} reward groups but {len(mean_fci_per_prompt)} mean FCIs")
    if attention_filter and not drop_easy:
        easy = [f for rs, f in zip(rewards_per_prompt, mean_fci_per_prompt) if all(r > 0.5 for r in rs)]
        if easy and running_mean is None:
            raise ValueError("the attention filter needs a RunningMean")
        if running_mean is not None:
            running_mean.update(easy)
    return [choose_responses_to_branch(rs, f, running_mean, rng, rule, attention_filter, G, drop_easy)
            for rs, f in zip(rewards_per_prompt, mean_fci_per_prompt)]


def drop_zero_advantage_prompts(seqs: list[TrainSequence]) -> list[TrainSequence]:
    """§e.2: drop every sequence of a prompt whose trained leaves all have the same reward
    (all 0 or all 1). Prompt-level: a kept prompt may still have segments with Â = 0."""
    # BEGIN SOLUTION C8
    rewards_of: dict[int, set[float]] = {}
    for s in seqs:
        rewards_of.setdefault(s.prompt_index, set()).add(s.reward)
    return [s for s in seqs if len(rewards_of[s.prompt_index]) > 1]
    # END SOLUTION C8


class BatchSizeController:
    """Eq. 10: the number of prompts of the next batch, steered toward B′ training sequences.

    rule="release" (the official code):
        target = floor(B_prev · B′ / B″)
        B_new  = ceil((1 − λ)·target + λ·B_prev)
    rule="paper" (Eq. 10):
        B_new  = Round(λ·B_prev + (1 − λ)·(B′/B″)·B_prev)      (half up)
    B″ = training sequences that survived the filters; B_new is clamped to [1, max_prompts].
    B″ = 0 (everything filtered) is treated as target = max_prompts.
    Before rounding, values are rounded to 9 decimals, so float noise (0.9·70 = 63.00000000000001)
    cannot push a steady state up by one.
    """

    def __init__(self, initial: int, target_sequences: int, lam: float = 0.9, max_prompts: int = 512,
                 rule: str = "release"):
        if rule not in ("release", "paper"):
            raise ValueError(f"unknown batch-size rule {rule!r}; choose release or paper")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lambda must be in [0, 1], got {lam}")
        if not 1 <= initial <= max_prompts:
            raise ValueError(f"initial batch size {initial} must be in [1, max_prompts={max_prompts}]")
        self.target_sequences, self.lam, self.max_prompts, self.rule = target_sequences, lam, max_prompts, rule
        self.batch_size = initial

    def next_batch_size(self, prev_prompts: int, n_sequences: int) -> int:
        """B_prev = prev_prompts (the release uses its last chosen batch size), B″ = n_sequences."""
        if n_sequences < 0 or prev_prompts < 1:
            raise ValueError(f"need prev_prompts >= 1 and n_sequences >= 0, got {prev_prompts}, {n_sequences}")
        # BEGIN SOLUTION C9
        if self.rule == "release":
            target = self.max_prompts if n_sequences == 0 else (prev_prompts * self.target_sequences) // n_sequences
            new = math.ceil(round((1 - self.lam) * target + self.lam * prev_prompts, 9))
        else:
            target = self.max_prompts if n_sequences == 0 else self.target_sequences / n_sequences * prev_prompts
            new = _round_half_up(round(self.lam * prev_prompts + (1 - self.lam) * target, 9))
        self.batch_size = max(1, min(self.max_prompts, new))
        return self.batch_size
        # END SOLUTION C9

    def state_dict(self) -> dict:
        return {"batch_size": self.batch_size, "target_sequences": self.target_sequences, "lam": self.lam,
                "max_prompts": self.max_prompts, "rule": self.rule}

    def load_state_dict(self, state: dict) -> None:
        self.batch_size = int(state["batch_size"])
        self.target_sequences, self.lam = int(state["target_sequences"]), float(state["lam"])
        self.max_prompts, self.rule = int(state["max_prompts"]), state["rule"]


__all__ = ["BRANCH_COUNT_RULES", "branch_count", "RunningMean", "prompt_mean_fci", "choose_responses_to_branch",
           "choose_for_batch", "drop_zero_advantage_prompts", "BatchSizeController"]
