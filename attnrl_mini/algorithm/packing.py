"""Prefix sharing: a prompt's training paths packed into one sequence, every token computed once.

The per-path update (trainer.Trainer._update) feeds every root-to-leaf path as its own row, so a
branch prefix o[:p] is recomputed once per leaf under it. Here the paths of one prompt become a
token trie, laid out as one packed row:

    packed row:   [ prompt | o[:p] | o[p:] | b1 | b2 ]        (b1, b2 continue o from offset p)
    parent:         ...      ...     p-1     p-1  p-1          each token's previous token on its path
    position id:    0..      ..      p..     p..  p..          = depth in the trie (RoPE positions)

The row is in depth-first order (a node, then the whole subtree of its first child, then the
next child's...), so the subtree of token k is the contiguous run k .. subtree_end[k]-1. Token q
attends to token k iff k is on q's own path (an ancestor of q, or q itself), that is iff
k <= q < subtree_end[k]: a 4-D "tree attention mask", built on the model's device from that one
comparison and passed to the model as is (transformers uses a ready 4-D mask unchanged). Every
packed token then has exactly the hidden state it has in each per-path row that contains it, so

    log π(y | path prefix) for response token j of path i  =  token_logp[index[i][j]]

and the PPO loss is computed on the per-path tensors gathered back from the packed log-probs: each
path keeps its own old log-probs and advantages (paths through a shared token may differ there, e.g.
two responses that happen to start alike), the token-mean normaliser is the per-path token count,
and autograd sums the gradient of a shared token over the paths through it. The loss, its gradient
and the statistics are therefore those of the per-path update; only the transformer's forward and
backward run once per distinct token. Sharing is by token identity (a trie), which is exact because
a token's log-prob depends only on the tokens before it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnrl_mini.algorithm.logprobs import token_logprobs_from_hidden
from attnrl_mini.algorithm.logprobs import decoder_and_head


@dataclass
class PackedTree:
    """Paths with one common prompt, packed as a token trie (see the module docstring)."""
    input_ids: list[int]        # [P] the prompt once, then every distinct response token
    parent: list[int]           # [P] index of the previous token on the path (-1 for the first)
    position_ids: list[int]     # [P] depth in the trie = position in every path holding the token
    index: list[list[int]]      # per path, the packed index of each of its response tokens
    prompt_len: int
    subtree_end: list[int]      # [P] token k's subtree is k .. subtree_end[k]-1 (depth-first order)

    @property
    def n_path_tokens(self) -> int:
        return sum(len(ix) for ix in self.index)

    @property
    def n_response_tokens(self) -> int:
        return len(self.input_ids) - self.prompt_len


def pack_paths(prompt_ids: list[int], responses: list[list[int]]) -> PackedTree:
    """Insert each response into a trie rooted at the prompt (tokens seen on an earlier path are
    reused), then lay the trie out in depth-first order, children in the order they were first seen."""
    if not prompt_ids:
        raise ValueError("pack_paths: empty prompt (the first response token needs a token to predict it from)")
    P0 = len(prompt_ids)
    ids, parent = list(prompt_ids), list(range(-1, P0 - 1))
    pos = list(range(P0))
    children: dict[tuple[int, int], int] = {}     # (packed index, token) -> packed index of that child
    index = []
    for resp in responses:
        node, ix = P0 - 1, []
        for tok in resp:
            child = children.get((node, tok))
            if child is None:
                child = len(ids)
                children[(node, tok)] = child
                ids.append(tok)
                parent.append(node)
                pos.append(pos[node] + 1)
            ix.append(child)
            node = child
        index.append(ix)
    return _depth_first(PackedTree(ids, parent, pos, index, P0, []))


def _depth_first(t: PackedTree) -> PackedTree:
    """The same trie in depth-first order, with each token's subtree end."""
    children: list[list[int]] = [[] for _ in t.input_ids]
    for k, p in enumerate(t.parent):
        if p >= 0:
            children[p].append(k)
    order, stack = [], [0]
    while stack:
        k = stack.pop()
        order.append(k)
        stack.extend(reversed(children[k]))
    new = {old: i for i, old in enumerate(order)}
    size = [1] * len(order)
    for k in reversed(order):                       # children come after their parent in `order`
        size[k] += sum(size[c] for c in children[k])
    return PackedTree(input_ids=[t.input_ids[k] for k in order],
                      parent=[new[t.parent[k]] if t.parent[k] >= 0 else -1 for k in order],
                      position_ids=[t.position_ids[k] for k in order],
                      index=[[new[k] for k in ix] for ix in t.index], prompt_len=t.prompt_len,
                      subtree_end=[new[k] + size[k] for k in order])


def tree_attention_mask(subtree_end: torch.Tensor) -> torch.Tensor:
    """allowed [B, 1, P, P] bool from subtree_end [B, P]: q may attend to k iff k <= q < subtree_end[k].

    For a padding position k, subtree_end[k] = k + 1: it attends to itself only (no empty softmax row).
    """
    P = subtree_end.shape[-1]
    q = torch.arange(P, device=subtree_end.device)[:, None]      # [P, 1]
    k = torch.arange(P, device=subtree_end.device)[None, :]      # [1, P]
    return ((k <= q) & (q < subtree_end[:, None, :]))[:, None]    # [B, 1, P, P]


def packed_token_logprobs(model: nn.Module, trees: list[PackedTree], chunk: int | None = None) -> torch.Tensor:
    """log π(input_ids[q] | its path's tokens before q) for every packed response token q.

    One forward over the packed rows (right-padded to the longest) with the tree mask and trie
    positions. Returns [B, P_max] fp32, 0 at prompt and padding positions; differentiable when
    grad is enabled.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):   # a 4-bit base: compute dtype
        dtype = torch.float32
    B, P = len(trees), max(len(t.input_ids) for t in trees)
    ids = torch.zeros(B, P, dtype=torch.long)
    pos = torch.zeros(B, P, dtype=torch.long)
    end = torch.arange(1, P + 1).repeat(B, 1)          # [B, P]; padding: k + 1 (itself only)
    for b, t in enumerate(trees):
        n = len(t.input_ids)
        ids[b, :n] = torch.tensor(t.input_ids)
        pos[b, :n] = torch.tensor(t.position_ids)
        end[b, :n] = torch.tensor(t.subtree_end)
    allowed = tree_attention_mask(end.to(device))                                     # [B, 1, P, P]
    # additive float mask (0 = attend, dtype-min = blocked): read the same way by sdpa and eager
    mask = torch.zeros((), dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=ids.to(device), attention_mask=mask,
                     position_ids=pos.to(device)).last_hidden_state                   # [B, P, D]
    # response token q is predicted from its parent's hidden state
    rows, cols, pars = [], [], []
    for b, t in enumerate(trees):
        q = list(range(t.prompt_len, len(t.input_ids)))
        rows += [b] * len(q)
        cols += q
        pars += [t.parent[i] for i in q]
    rows_t, cols_t = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
    h = hidden[rows_t.to(device), torch.tensor(pars, dtype=torch.long, device=device)]  # [N, D]
    logp, _ = token_logprobs_from_hidden(h, head, ids[rows_t, cols_t], chunk=chunk)     # [N]
    out = torch.zeros(B, P, dtype=torch.float32, device=device)
    return out.index_put((rows_t.to(device), cols_t.to(device)), logp)


def gather_paths(token_logp: torch.Tensor, trees: list[PackedTree]) -> torch.Tensor:
    """Per-path log-probs, right-aligned [n_paths, R_max] like logprobs.response_logprobs (0 on padding).

    token_logp [B, P] from packed_token_logprobs; paths in the order of the trees, then of their index.
    """
    paths = [(b, ix) for b, t in enumerate(trees) for ix in t.index]
    R = max(len(ix) for _, ix in paths)
    P = token_logp.shape[1]
    flat = torch.full((len(paths), R), -1, dtype=torch.long)                          # -1 = padding
    for i, (b, ix) in enumerate(paths):
        if ix:
            flat[i, R - len(ix):] = b * P + torch.tensor(ix)
    flat = flat.to(token_logp.device)
    gathered = token_logp.reshape(-1)[flat.clamp(min=0)]                              # [n_paths, R]
    return gathered.masked_fill(flat < 0, 0.0)


def pack_groups(prompts: list[list[int]], responses: list[list[int]], max_tokens: int
                ) -> list[tuple[PackedTree, list[int]]]:
    """Pack sequences sharing a prompt into tries of at most max_tokens packed tokens each.

    Returns (tree, the input positions of its paths) in first-seen order of the prompts. A tree is
    closed when the next path would push it past max_tokens (a single path may exceed it alone).
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(tuple(p), []).append(i)
    out = []
    for prompt, members in groups.items():
        cur: list[int] = []
        trie: dict[tuple[int, int], int] = {}    # (parent node, token) -> node, response tokens only
        for i in members:
            node, matched = -1, 0                 # how much of response i is in the trie already?
            for tok in responses[i]:
                if (node, tok) not in trie:
                    break
                node, matched = trie[(node, tok)], matched + 1
            if cur and len(prompt) + len(trie) + len(responses[i]) - matched > max_tokens:
                out.append((pack_paths(list(prompt), [responses[j] for j in cur]), cur))
                cur, trie, node, matched = [], {}, -1, 0
            for tok in responses[i][matched:]:
                trie[(node, tok)] = node = len(trie)
            cur.append(i)
        out.append((pack_paths(list(prompt), [responses[j] for j in cur]), cur))
    return out
