"""Where to branch a response: the branch-point selectors (paper Eq. 7; docs/algorithm.md §c.1, §h).

A branch point is a token offset p inside the response: a continuation is sampled from the prefix
prompt + response[:p], so the token at p (the start of the chosen step) is regenerated.

Selectors (all return sorted response offsets):
  - fci          ATB, the paper's method: earliest high-FCI steps (Eq. 7) + the release's spacing rule
  - entropy      TreeRL: the N highest-entropy token positions
  - first_steps  ablation "w/ first-2-step branching": the starts of steps 1, 2, ...
  - random       a control: starts of random steps
  - step_entropy DATPO's sentence-level entropy (a step's mean token entropy) in place of FCI, with
                 ATB's rules (named departure, docs/algorithm.md)
  - fci_entropy  "important and uncertain": Eq. 7's FCI candidates, most uncertain step first
                 (named departure, docs/algorithm.md)
  - none         no branching (the GRPO baseline)
"""
from __future__ import annotations

import random

import torch


def _fallback_steps(n_steps: int, chosen: list[int], starts: list[int], n: int) -> list[int]:
    """Release fallback (§c.1.4): add step starts of k = 1, 2, 3, ... not yet chosen; then cycle
    again over k = 1, 2, ... allowing duplicates, until there are n offsets."""
    chosen = list(chosen)
    for k in range(1, n_steps):
        if len(chosen) >= n:
            return chosen
        if starts[k] not in chosen:
            chosen.append(starts[k])
    k = 1
    while len(chosen) < n:  # cycling with duplicates (needs n_steps >= 2, checked by the callers)
        chosen.append(starts[k])
        k = k + 1 if k + 1 < n_steps else 1
    return chosen


def fci_candidate_steps(fci: torch.Tensor, quantile: float = 0.8) -> list[int]:
    """Eq. 7: C = {k | y_k >= tau}, tau = the (1 − ρ)-quantile of y over all S steps, step 0 removed.

    The paper writes C = {k | y_k >= Quantile(y, ρ)} with ρ = 0.2 and means "the top 20%" of steps;
    read literally a 0.2-quantile would keep the top 80%. The release computes torch.quantile(y, 0.8),
    i.e. ρ is the fraction kept and `quantile` (config `fci_quantile`) is the code's 1 − ρ = 0.8.

    - The quantile uses linear interpolation (torch.quantile) and includes the steps whose FCI was
      forced to 0 (the first step, the post-</think> steps): that lowers tau, as in the release.
    - If tau == 0 while some y_k > 0, tau becomes the smallest positive y_k (otherwise every
      zeroed step would be a candidate).
    - Step 0 is never a candidate (its FCI is masked anyway; branching there = resampling).
    Returned in ascending step order.
    """
    y = fci.detach().to(torch.float64).reshape(-1)  # [S]
    if y.numel() == 0:
        return []
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    # BEGIN SOLUTION C4
    tau = torch.quantile(y, quantile).item()
    if tau == 0 and bool((y > 0).any()):
        tau = y[y > 0].min().item()
    return [k for k in range(1, y.numel()) if y[k].item() >= tau]
    # END SOLUTION C4


def _check_fci_inputs(fci: torch.Tensor, steps: list[tuple[int, int]], n: int) -> None:
    """One FCI score per step, and at least one branch point asked for (ATB and the hybrid)."""
    if fci.numel() != len(steps):
        raise ValueError(f"fci has {fci.numel()} scores but the response has {len(steps)} steps")
    if n < 1:
        raise ValueError(f"n (branch points per response) must be >= 1, got {n}")


def fci_branch_points(fci: torch.Tensor, steps: list[tuple[int, int]], prompt_len: int, n: int = 2,
                      quantile: float = 0.8, min_gap: int = 512, min_start: int = 512) -> list[int]:
    """ATB (§c.1): offsets of the N earliest high-FCI steps, spaced as in the release.

    Greedy earliest-first scan of the candidates (not by score). Step k is accepted if
      - its absolute start (prompt_len + start_k) is >= min_start, and
      - its token gap to every accepted step is >= min_gap (end-to-start, either direction).
    Short of n, fall back to steps 1, 2, 3, ... (ignoring FCI and spacing), then cycle with duplicates.

    Returns n sorted offsets (duplicates possible), or [] for a response with fewer than 2 steps
    (no step other than step 0 to branch at; the release loops forever there).
    """
    _check_fci_inputs(fci, steps, n)
    if len(steps) < 2:
        return []
    # BEGIN SOLUTION C5
    starts = [start for start, _ in steps]

    def far_enough(k: int, accepted: list[int]) -> bool:
        start, end = steps[k]
        if prompt_len + start < min_start:
            return False
        for j in accepted:
            other_start, other_end = steps[j]
            if other_start >= end and other_start - end < min_gap:  # accepted step lies after k
                return False
            if start >= other_end and start - other_end < min_gap:  # accepted step lies before k
                return False
        return True

    accepted: list[int] = []
    for k in fci_candidate_steps(fci, quantile):
        if far_enough(k, accepted):
            accepted.append(k)
        if len(accepted) == n:
            break
    offsets = _fallback_steps(len(steps), [starts[k] for k in accepted], starts, n)
    return sorted(offsets)
    # END SOLUTION C5


def entropy_branch_points(entropies: torch.Tensor, n: int = 2) -> list[int]:
    """TreeRL / EPTree (§h): the n token positions of highest entropy among 0 .. R-2.

    The last token is excluded (branching there would regenerate only the final token). Ties go to
    the earlier position. If the window has fewer than n positions, they are cycled (duplicates);
    a response of length 1 branches at offset 0.
    """
    if n < 1:
        raise ValueError(f"n (branch points per response) must be >= 1, got {n}")
    # BEGIN SOLUTION B5
    window = entropies.detach().reshape(-1)[:-1]  # positions 0 .. R-2
    if window.numel() == 0:
        return [0] * n if entropies.numel() > 0 else []
    order = torch.sort(window, descending=True, stable=True).indices.tolist()
    picks = [order[i % len(order)] for i in range(n)]
    return sorted(picks)
    # END SOLUTION B5


def first_step_branch_points(steps: list[tuple[int, int]], n: int = 2) -> list[int]:
    """Ablation "w/ first-2-step branching" ([ICLR] Table 2): the starts of steps 1 .. n.

    Same fallback as ATB when the response has fewer steps (cycle with duplicates);
    [] when it has fewer than 2 steps.
    """
    if n < 1:
        raise ValueError(f"n (branch points per response) must be >= 1, got {n}")
    if len(steps) < 2:
        return []
    return sorted(_fallback_steps(len(steps), [], [s for s, _ in steps], n))


def random_branch_points(steps: list[tuple[int, int]], n: int, rng: random.Random) -> list[int]:
    """A control: the starts of n distinct random steps among 1 .. S-1 (all of them, cycled with
    duplicates, if there are fewer than n); [] when the response has fewer than 2 steps."""
    if n < 1:
        raise ValueError(f"n (branch points per response) must be >= 1, got {n}")
    if len(steps) < 2:
        return []
    starts = [s for s, _ in steps]
    ks = rng.sample(range(1, len(steps)), min(n, len(steps) - 1))
    return sorted(_fallback_steps(len(steps), [starts[k] for k in ks], starts, n))


def step_entropies(entropies: torch.Tensor, steps: list[tuple[int, int]], reduce: str = "mean") -> torch.Tensor:
    """[S] one uncertainty per step from the [R] token entropies: the mean (DATPO's sentence-level
    entropy, H_k = (1/|s_k|) sum_{t in s_k} H_t) or the max (the step's most uncertain token) over
    the step's tokens [start, end)."""
    h = entropies.detach().to(torch.float64).reshape(-1)   # [R]
    if steps and steps[-1][1] > h.numel():
        raise ValueError(f"steps reach offset {steps[-1][1]} but there are only {h.numel()} token entropies")
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    if any(end <= start for start, end in steps):
        raise ValueError(f"every step needs at least one token, got {steps}")
    return torch.stack([h[a:b].mean() if reduce == "mean" else h[a:b].max() for a, b in steps]) if steps \
        else torch.zeros(0, dtype=torch.float64)


def step_entropy_branch_points(entropies: torch.Tensor, steps: list[tuple[int, int]], prompt_len: int, n: int = 2,
                               quantile: float = 0.8, min_gap: int = 512, min_start: int = 512) -> list[int]:
    """DATPO's sentence-level entropy with ATB's rules (a named departure, docs/algorithm.md).

    Rule: score each step by its mean token entropy H_k (`step_entropies`, reduce="mean"), then
    exactly ATB (`fci_branch_points`) with H in place of the FCI y: candidates H_k >= the
    `quantile` of H over all steps (step 0 removed), scanned earliest first, the same spacing
    (min_gap, min_start) and the same fallback (steps 1, 2, ..., then cycling).
    """
    return fci_branch_points(step_entropies(entropies, steps, "mean"), steps, prompt_len, n, quantile, min_gap,
                             min_start)


def fci_entropy_branch_points(fci: torch.Tensor, entropies: torch.Tensor, steps: list[tuple[int, int]],
                              prompt_len: int, n: int = 2, quantile: float = 0.8, min_gap: int = 512,
                              min_start: int = 512) -> list[int]:
    """"Important and uncertain" (our design, a named departure, docs/algorithm.md).

    Rule, fixed before it was measured:
    1. important: the candidates C of Eq. 7 on the FCI (`fci_candidate_steps`: top 20% of FCI,
       step 0 removed), exactly as ATB;
    2. uncertain: C is scanned in order of the step's most uncertain token, u_k = max_{t in s_k} H_t
       (`step_entropies`, reduce="max"), highest first, ties to the earlier step (ATB scans earliest
       first). The max, not the mean: a live choice is one token (a decision's digit) inside an
       otherwise copied step, and the mean would dilute it by the step's length;
    3. ATB's spacing rule (min_gap, min_start) on that scan;
    4. short of n: the remaining steps 1 .. S-1 in the same u_k order, spacing ignored (ATB's fallback
       takes steps 1, 2, ... whatever they hold), then cycling with duplicates.
    Returns n sorted offsets, or [] for a response with fewer than 2 steps.
    """
    # BEGIN REFERENCE C5
    _check_fci_inputs(fci, steps, n)
    if len(steps) < 2:
        return []
    u = step_entropies(entropies, steps, "max").tolist()                  # [S]

    def by_uncertainty(ks):
        return sorted(ks, key=lambda k: (-u[k], k))

    starts = [start for start, _ in steps]
    accepted: list[int] = []
    for k in by_uncertainty(fci_candidate_steps(fci, quantile)):
        if len(accepted) == n:
            break
        if _far_enough(steps, k, accepted, prompt_len, min_gap, min_start):
            accepted.append(k)
    for k in by_uncertainty([k for k in range(1, len(steps)) if k not in accepted]):
        if len(accepted) == n:
            break
        accepted.append(k)
    offsets = [starts[k] for k in accepted]
    offsets += [offsets[i % len(offsets)] for i in range(n - len(offsets))]   # fewer steps than n: cycle
    return sorted(offsets)
    # END REFERENCE C5


def _far_enough(steps: list[tuple[int, int]], k: int, accepted: list[int], prompt_len: int, min_gap: int,
                min_start: int) -> bool:
    """ATB's spacing test (as in fci_branch_points): step k starts at absolute position >= min_start and
    lies >= min_gap tokens (end to start, either direction) from every accepted step."""
    # BEGIN REFERENCE C5
    start, end = steps[k]
    if prompt_len + start < min_start:
        return False
    for j in accepted:
        other_start, other_end = steps[j]
        if other_start >= end and other_start - end < min_gap:
            return False
        if start >= other_end and start - other_end < min_gap:
            return False
    return True
    # END REFERENCE C5


SELECTORS = ("fci", "entropy", "step_entropy", "fci_entropy", "first_steps", "random", "none")
NEEDS_FCI = ("fci", "fci_entropy")   # the selectors that read the FCI (the trainer scores it for them)


def select_branch_points(selector: str, *, fci: torch.Tensor | None, entropies: torch.Tensor | None,
                         steps: list[tuple[int, int]], prompt_len: int, n: int = 2, quantile: float = 0.8,
                         min_gap: int = 512, min_start: int = 512,
                         rng: random.Random | None = None) -> list[int]:
    """One entry point for the trainer: dispatch on `selector` (config.branch_selector)."""
    if selector == "none":
        return []
    if selector in NEEDS_FCI and fci is None:
        raise ValueError(f"selector {selector!r} needs the response's FCI scores (fci=None was given)")
    if selector in ("entropy", "step_entropy", "fci_entropy") and entropies is None:
        raise ValueError(f"selector {selector!r} needs the response's token entropies (entropies=None was given)")
    if selector == "fci":
        return fci_branch_points(fci, steps, prompt_len, n, quantile, min_gap, min_start)
    if selector == "entropy":
        return entropy_branch_points(entropies, n)
    if selector == "step_entropy":
        return step_entropy_branch_points(entropies, steps, prompt_len, n, quantile, min_gap, min_start)
    if selector == "fci_entropy":
        return fci_entropy_branch_points(fci, entropies, steps, prompt_len, n, quantile, min_gap, min_start)
    if selector == "first_steps":
        return first_step_branch_points(steps, n)
    if selector == "random":
        if rng is None:
            raise ValueError("selector 'random' needs rng=random.Random(...)")
        return random_branch_points(steps, n, rng)
    raise ValueError(f"unknown branch selector {selector!r}; choose one of {', '.join(SELECTORS)}")


__all__ = ["fci_candidate_steps", "fci_branch_points", "entropy_branch_points", "first_step_branch_points",
           "random_branch_points", "step_entropies", "step_entropy_branch_points", "fci_entropy_branch_points",
           "select_branch_points", "SELECTORS", "NEEDS_FCI"]
