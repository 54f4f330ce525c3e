"""The prefix-shared update (packing.py) against the per-path reference: the same log-probs, loss,
gradients and statistics on toy trees with branch points (fp32, 1e-5 relative)."""
from __future__ import annotations

import random

import pytest
import torch

from attnrl_mini.algorithm import packing, tree
from attnrl_mini.config import make_config
from attnrl_mini.algorithm.loss import ppo_loss
from attnrl_mini.algorithm.logprobs import response_logprobs
from attnrl_mini.models.policy import add_lora, load_model, load_tokenizer
from attnrl_mini.worlds.toy import TOY_MODEL_DIR
from attnrl_mini.trainer import Trainer
from attnrl_mini.algorithm.tree import Continuation, Rollout


def test_pack_paths_by_hand():
    # paths 1 2 3 | 1 2 4 | 7 after prompt 5 6: "1 2" is shared by the first two
    t = packing.pack_paths([5, 6], [[1, 2, 3], [1, 2, 4], [7]])
    assert t.input_ids == [5, 6, 1, 2, 3, 4, 7]
    assert t.parent == [-1, 0, 1, 2, 3, 3, 1]
    assert t.position_ids == [0, 1, 2, 3, 4, 4, 2]
    assert t.index == [[2, 3, 4], [2, 3, 5], [6]]
    assert (t.n_path_tokens, t.n_response_tokens) == (7, 5)
    assert t.subtree_end == [7, 7, 6, 6, 5, 6, 7]      # "1" (index 2) heads the run 2..5: 1 2 3 4
    end = torch.tensor([t.subtree_end + [8]])           # one padding position (index 7)
    allowed = packing.tree_attention_mask(end)[0, 0]
    assert allowed[5].nonzero().flatten().tolist() == [0, 1, 2, 3, 5]     # token 4 sees 5 6 1 2 and itself
    assert allowed[6].nonzero().flatten().tolist() == [0, 1, 6]           # token 7 sees only the prompt
    assert allowed[7].nonzero().flatten().tolist() == [7]                 # padding: itself only


def ancestors_mask(parent: list[int]) -> torch.Tensor:
    """The naive reference: allowed[q] = allowed[parent[q]] ∪ {q}, row by row."""
    allowed = torch.zeros(len(parent), len(parent), dtype=torch.bool)
    for q, p in enumerate(parent):
        if p >= 0:
            allowed[q] = allowed[p]
        allowed[q, q] = True
    return allowed


def test_pack_paths_is_depth_first_when_a_later_path_forks_higher():
    # the third path forks from the first below its fork with the second: inserted last, placed
    # right after the first path's subtree so that every subtree stays one contiguous run
    t = packing.pack_paths([9], [[1, 2, 3, 4], [1, 5, 6], [1, 2, 7]])
    assert t.input_ids == [9, 1, 2, 3, 4, 7, 5, 6]
    assert t.parent == [-1, 0, 1, 2, 3, 2, 1, 6]
    assert t.index == [[1, 2, 3, 4], [1, 6, 7], [1, 2, 5]]
    assert t.subtree_end == [8, 8, 6, 5, 5, 6, 8, 8]
    assert torch.equal(packing.tree_attention_mask(torch.tensor([t.subtree_end]))[0, 0], ancestors_mask(t.parent))


def test_tree_mask_equals_the_naive_ancestor_mask_on_random_tries():
    rng = random.Random(0)
    for _ in range(20):
        responses = [[rng.randrange(3) for _ in range(rng.randrange(1, 8))] for _ in range(rng.randrange(1, 7))]
        t = packing.pack_paths([0, 1], responses)
        for path, ix in zip(responses, t.index):       # every path reads back from the packed row
            assert [t.input_ids[i] for i in ix] == path
            assert [t.position_ids[i] for i in ix] == list(range(2, 2 + len(path)))
        assert torch.equal(packing.tree_attention_mask(torch.tensor([t.subtree_end]))[0, 0], ancestors_mask(t.parent))


def test_pack_groups_splits_by_prompt_and_size():
    packed = packing.pack_groups([[1], [2], [1], [1]], [[3, 4], [3], [3, 5], [6, 6, 6]], max_tokens=4)
    # prompt 1: paths 0 and 2 share "3" (1+3 packed tokens), path 3 would make 7 > 4: a second tree
    assert [(t.input_ids, m) for t, m in packed] == [([1, 3, 4, 5], [0, 2]), ([1, 6, 6, 6], [3]), ([2, 3], [1])]


# ---------------------------------------------------------------------------------------------
# A toy batch with every edge case, on the toy model with a random (non-zero) LoRA adapter
# ---------------------------------------------------------------------------------------------
def _toy_batch(seed: int = 0) -> list[tree.TrainSequence]:
    rng = random.Random(seed)

    def toks(n):
        return [rng.randrange(3, 40) for _ in range(n)]

    def cont(n):
        return Continuation(toks(n), [-rng.random() for _ in range(n)], float(rng.random() < 0.5))

    def rollout(resp, points, n_cont=2):
        return Rollout(resp, [-rng.random() for _ in resp], float(rng.random() < 0.5), points,
                       [[cont(rng.randrange(1, 9)) for _ in range(n_cont)] for _ in points])

    common = toks(4)                       # two responses that start alike: shared tokens, different Â
    prompts = [
        [rollout(toks(12), [0, 5]),        # a branch point at offset 0
         rollout(toks(10), [4, 4]),        # two branch points at the same offset
         rollout(toks(9), []),             # unbranched (trained only with train_unbranched)
         rollout(common + toks(6), [7]),
         rollout(common + toks(5), [2])],
        [rollout(toks(8), [3], n_cont=0),  # branch points without continuations
         rollout(toks(11), [])],
    ]
    seqs = []
    for i, rollouts in enumerate(prompts):
        root = tree.build_prompt_tree(rollouts)
        tree.assign_values_and_advantages(root)
        rollout_seqs = tree.training_sequences(root, [1, 2 + i, 2], i, train_unbranched=True)
        for s in rollout_seqs:   # off-policy old log-probs, so ratios and clipping are not trivial
            s.old_logprobs = [lp * 0.05 - 3.5 for lp in s.old_logprobs]
        seqs += rollout_seqs
    return seqs


def _trainer(packing_mode: str, **kw) -> Trainer:
    torch.manual_seed(0)
    cfg = make_config("toy", update_packing=packing_mode, kl_coef=0.1, grad_clip=1e9, **kw)
    tok = load_tokenizer(TOY_MODEL_DIR)
    model = add_lora(load_model(TOY_MODEL_DIR), 4, 8, "q_proj,v_proj,up_proj")
    with torch.no_grad():   # peft starts B at 0, which would make the adapter (and the KL) vanish
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return Trainer(cfg, model, tok, None, None, [], lambda p: [])


def _run_update(tr: Trainer, seqs) -> tuple[dict, list[list[torch.Tensor]]]:
    """_update with the optimiser step replaced by a recording of the gradients it would apply."""
    grads = []
    params = [p for p in tr.model.parameters() if p.requires_grad]
    tr.optimizer.step = lambda: grads.append([p.grad.clone() for p in params])
    return tr._update(list(seqs)), grads


def _assert_close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5):
    assert (a - b).abs().max().item() <= rel * max(b.abs().max().item(), 1e-12)


def test_packed_logprobs_and_loss_equal_per_path():
    tr = _trainer("shared")
    seqs = _toy_batch()
    prompts, responses = [s.prompt_ids for s in seqs], [s.response_ids for s in seqs]
    packed = packing.pack_groups(prompts, responses, max_tokens=10_000)
    order = [i for _, members in packed for i in members]
    trees = [t for t, _ in packed]
    assert sum(t.n_response_tokens for t in trees) < sum(len(r) for r in responses)   # something is shared
    with torch.no_grad(), tr.model.disable_adapter():   # the reference policy
        _assert_close(packing.gather_paths(packing.packed_token_logprobs(tr.model, trees), trees),
                      response_logprobs(tr.model, [prompts[i] for i in order], [responses[i] for i in order], 0))

    params = [p for p in tr.model.parameters() if p.requires_grad]
    R = max(len(r) for r in responses)
    results = []
    for shared in (False, True):
        if shared:
            logp = packing.gather_paths(packing.packed_token_logprobs(tr.model, trees, chunk=16), trees)
        else:
            logp = response_logprobs(tr.model, [prompts[i] for i in order], [responses[i] for i in order], 0, 16)
        mask = torch.zeros(len(order), R)
        old, adv = torch.zeros_like(mask), torch.zeros_like(mask)
        for row, i in enumerate(order):
            n = len(responses[i])
            mask[row, R - n:] = 1
            old[row, R - n:] = torch.tensor(seqs[i].old_logprobs)
            adv[row, R - n:] = torch.tensor(seqs[i].advantages)
        loss, _ = ppo_loss(logp, old, logp.detach() - 0.1, adv, mask, kl_coef=0.1)
        results.append((logp.detach(), loss.detach(), torch.autograd.grad(loss, params)))
    (lp0, loss0, g0), (lp1, loss1, g1) = results
    _assert_close(lp1, lp0)
    _assert_close(loss1, loss0)
    for a, b in zip(g1, g0):
        _assert_close(a, b)


@pytest.mark.parametrize("mode,mini_batch,micro_tokens", [
    ("shared", 64, 8192),          # one mini-batch holding the batch
    ("shared_trees", 64, 8192),
    ("shared", 5, 80),             # several mini-batches and micro-batches: the same mini-batches as per path
])
def test_shared_update_equals_per_path(mode, mini_batch, micro_tokens):
    seqs = _toy_batch(1)
    kw = dict(mini_batch_sequences=mini_batch, micro_batch_tokens=micro_tokens)
    ref_stats, ref_grads = _run_update(_trainer("per_path", **kw), seqs)
    stats, grads = _run_update(_trainer(mode, **kw), seqs)
    assert len(grads) == len(ref_grads) == -(-len(seqs) // mini_batch)
    for k in ("pg_loss", "kl", "ratio_mean", "clip_frac", "dual_clip_frac", "approx_kl_old", "n_tokens", "grad_norm"):
        assert stats[k] == pytest.approx(ref_stats[k], rel=1e-5, abs=1e-9), k
    assert ref_stats["update_computed_tokens"] == sum(len(s.response_ids) for s in seqs)
    assert stats["update_computed_tokens"] < ref_stats["update_computed_tokens"]
    for step, ref_step in zip(grads, ref_grads):
        for a, b in zip(step, ref_step):
            _assert_close(a, b)
