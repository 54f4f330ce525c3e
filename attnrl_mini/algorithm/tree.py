"""Rollout trees: Monte-Carlo values (Eq. 2), tree advantages (Eq. 3), training sequences.

Shape of one prompt's tree (docs/algorithm.md §c.4, depth-1 branching as in TreeRL):

    R (virtual root, shared by the G initial responses of the prompt)
    ├── A = o[0:p1] ──┬── B = o[p1:p2] ──┬── C = o[p2:]     leaf, reward of o
    │                 │                  ├── b3, b4         continuations sampled from o[:p2]
    │                 └── b1, b2                            continuations sampled from o[:p1]
    └── o' (a response without branch points: one leaf directly under R)

A response is cut at its sorted, distinct branch offsets; the continuations sampled from the prefix
o[:p] hang off the node that ends at p. Equal offsets (fallback duplicates) share that node.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Continuation:
    """One sampled continuation of a prefix (from the generator + grader)."""
    token_ids: list[int]
    logprobs: list[float]   # behaviour-policy log-probs of token_ids
    reward: float           # graded on prefix + continuation


@dataclass
class Rollout:
    """One initial response of a prompt, with its branch points and their continuations."""
    response_ids: list[int]
    old_logprobs: list[float]   # behaviour-policy log-probs of response_ids (trainer recompute)
    reward: float
    branch_points: list[int] = field(default_factory=list)                  # sorted offsets (may repeat)
    continuations: list[list[Continuation]] = field(default_factory=list)   # continuations[i] hang off branch_points[i]


@dataclass
class TreeNode:
    """A segment of tokens. Leaves carry a reward; values/advantages are filled by
    assign_values_and_advantages."""
    tokens: list[int]
    old_logprobs: list[float]
    children: list["TreeNode"] = field(default_factory=list)
    reward: float | None = None     # leaves only
    is_continuation: bool = False   # True for a sampled continuation, False for a piece of an initial response
    value: float = 0.0              # V(s), Eq. 2
    n_leaves: int = 0               # |L(s)|
    advantage: float = 0.0          # Â(s), Eq. 3

    @property
    def is_leaf(self) -> bool:
        return not self.children


@dataclass
class TrainSequence:
    """One root-to-leaf path, ready for the PPO loss."""
    prompt_ids: list[int]
    response_ids: list[int]
    advantages: list[float]     # per response token
    old_logprobs: list[float]   # per response token, from the policy that generated that token
    prompt_index: int           # which prompt of the batch (for the zero-advantage filter)
    reward: float               # the leaf's reward


def _check_rollout(i: int, r: Rollout) -> None:
    n = len(r.response_ids)
    if len(r.old_logprobs) != n:
        raise ValueError(f"rollout {i}: {len(r.old_logprobs)} old log-probs for {n} response tokens")
    if len(r.continuations) != len(r.branch_points):
        raise ValueError(f"rollout {i}: {len(r.branch_points)} branch points but "
                         f"{len(r.continuations)} lists of continuations (need one list per point)")
    if list(r.branch_points) != sorted(r.branch_points):
        raise ValueError(f"rollout {i}: branch points must be sorted, got {r.branch_points}")
    for p in r.branch_points:
        if not 0 <= p < n:
            raise ValueError(f"rollout {i}: branch point {p} outside the response [0, {n})")
    for conts in r.continuations:
        for c in conts:
            if len(c.logprobs) != len(c.token_ids):
                raise ValueError(f"rollout {i}: a continuation has {len(c.logprobs)} log-probs "
                                 f"for {len(c.token_ids)} tokens")


def build_prompt_tree(rollouts: list[Rollout]) -> TreeNode:
    """Build the tree of one prompt: a virtual root R over all G initial responses (§c.4)."""
    # BEGIN SOLUTION B2
    root = TreeNode(tokens=[], old_logprobs=[])
    for i, r in enumerate(rollouts):
        _check_rollout(i, r)
        cuts = sorted(set(r.branch_points))  # distinct offsets; duplicates share a node
        bounds = [0] + cuts + [len(r.response_ids)]
        parent = root
        node_ending_at: dict[int, TreeNode] = {}
        for start, end in zip(bounds[:-1], bounds[1:]):
            node = TreeNode(tokens=r.response_ids[start:end], old_logprobs=r.old_logprobs[start:end])
            parent.children.append(node)
            node_ending_at[end] = node
            parent = node
        parent.reward = float(r.reward)  # the last segment (or the whole response) is o's leaf
        for p, conts in zip(r.branch_points, r.continuations):
            for c in conts:
                node_ending_at[p].children.append(TreeNode(
                    tokens=list(c.token_ids), old_logprobs=list(c.logprobs),
                    reward=float(c.reward), is_continuation=True))
    return root
    # END SOLUTION B2


def assign_values_and_advantages(root: TreeNode) -> None:
    """Fill value, n_leaves and advantage of every node.

    Eq. 2 (Monte-Carlo value):  V(s) = (1/|L(s)|) Σ_{l ∈ L(s)} r(l), the success rate of the leaves under s.
    Eq. 3 (tree advantage):     Â(s) = [ (V(s) − V(R)) + (V(s) − V(parent(s))) ] / sqrt(|L(s)|)
                                       global advantage      local advantage
    The first segment of a response has parent R, so Â = 2(V(s) − V(R))/sqrt|L(s)|. A leaf has
    |L| = 1. The root itself gets advantage 0 (it holds no tokens).
    """
    # BEGIN SOLUTION B3
    def count(node: TreeNode) -> float:  # post-order: returns the reward sum under node
        if node.is_leaf:
            if node.reward is None:
                raise ValueError("a leaf without a reward (every leaf must be graded)")
            node.n_leaves, total = 1, node.reward
        else:
            node.n_leaves, total = 0, 0.0
            for child in node.children:
                total += count(child)
                node.n_leaves += child.n_leaves
        node.value = total / node.n_leaves
        return total

    if root.is_leaf:
        raise ValueError("the prompt tree has no responses")
    count(root)
    root.advantage = 0.0

    def spread(node: TreeNode) -> None:  # pre-order: advantage of each child from its parent
        for child in node.children:
            child.advantage = ((child.value - root.value) + (child.value - node.value)) / math.sqrt(child.n_leaves)
            spread(child)

    spread(root)
    # END SOLUTION B3


def root_to_leaf_paths(root: TreeNode) -> list[list[TreeNode]]:
    """Every path from (but excluding) the root to a leaf, in depth-first order."""
    paths: list[list[TreeNode]] = []

    def walk(node: TreeNode, path: list[TreeNode]) -> None:
        for child in node.children:
            if child.is_leaf:
                paths.append(path + [child])
            else:
                walk(child, path + [child])

    walk(root, [])
    return paths


def training_sequences(root: TreeNode, prompt_ids: list[int], prompt_index: int,
                       train_unbranched: bool = False) -> list[TrainSequence]:
    """One training sequence per root-to-leaf path (§d.4), after assign_values_and_advantages.

    Tokens are the concatenated segments; every token of a segment carries that segment's Â, and the
    old log-prob of the policy that generated it (initial-response tokens keep the initial
    response's, continuation tokens the continuation's).
    Paths of length 1 (responses that got no branch point) are skipped, as in the release: they count
    in V(R) but are not trained on, unless train_unbranched=True.
    """
    # BEGIN SOLUTION B4
    seqs = []
    for path in root_to_leaf_paths(root):
        if len(path) == 1 and not train_unbranched:
            continue
        response_ids, advantages, old_logprobs = [], [], []
        for node in path:
            response_ids += node.tokens
            advantages += [node.advantage] * len(node.tokens)
            old_logprobs += node.old_logprobs
        seqs.append(TrainSequence(prompt_ids=list(prompt_ids), response_ids=response_ids,
                                  advantages=advantages, old_logprobs=old_logprobs,
                                  prompt_index=prompt_index, reward=path[-1].reward))
    return seqs
    # END SOLUTION B4


def grpo_advantages(rewards: list[float], eps: float = 1e-6, scale_by_std: bool = True) -> list[float]:
    """GRPO outcome advantage (§d.6): Â_i = (r_i − mean(r)) / (std(r) + eps), std unbiased (n−1).

    scale_by_std=False is Dr. GRPO's mean-only advantage Â_i = r_i − mean(r) (Liu et al. 2025,
    "Understanding R1-Zero-Like Training"; verl's norm_adv_by_std_in_grpo=False): dividing by the
    std up-weights groups that are almost all right or all wrong.
    As in verl, a group of one response uses mean 0 and std 1, so Â = r / (1 + eps) (Dr. GRPO: r).
    """
    # BEGIN SOLUTION A3
    n = len(rewards)
    if n == 0:
        return []
    if n == 1:
        mean, std = 0.0, 1.0
    else:
        mean = sum(rewards) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (n - 1))
    if not scale_by_std:
        return [r - mean for r in rewards]
    return [(r - mean) / (std + eps) for r in rewards]
    # END SOLUTION A3


def grpo_sequences(rollouts: list[Rollout], prompt_ids: list[int], prompt_index: int,
                   eps: float = 1e-6, scale_by_std: bool = True) -> list[TrainSequence]:
    """The GRPO baseline's training sequences: every initial response, its group advantage on every token."""
    advs = grpo_advantages([r.reward for r in rollouts], eps, scale_by_std)
    return [TrainSequence(prompt_ids=list(prompt_ids), response_ids=list(r.response_ids),
                          advantages=[a] * len(r.response_ids), old_logprobs=list(r.old_logprobs),
                          prompt_index=prompt_index, reward=float(r.reward))
            for r, a in zip(rollouts, advs)]


def tree_to_dict(node: TreeNode) -> dict:
    """A plain-dict copy of a tree for a JSONL dump (the caller decodes token ids to text)."""
    d = {"tokens": list(node.tokens), "is_continuation": node.is_continuation, "reward": node.reward,
         "value": node.value, "n_leaves": node.n_leaves, "advantage": node.advantage}
    if node.children:
        d["children"] = [tree_to_dict(c) for c in node.children]
    return d


__all__ = ["Continuation", "Rollout", "TreeNode", "TrainSequence", "build_prompt_tree",
           "assign_values_and_advantages", "root_to_leaf_paths", "training_sequences",
           "grpo_advantages", "grpo_sequences", "tree_to_dict"]
