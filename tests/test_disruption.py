"""The disruption hook (attnrl_mini/tools/disruption.py): plain attention when nothing is disrupted, and
exactly the chosen keys removed (without renormalising) when something is."""
import torch

from attnrl_mini.tools import disruption
from attnrl_mini.tools.disruption import disrupted, disrupted_attention
from attnrl_mini.generation import GenRequest
from attnrl_mini.generation.hf import HFGenerator
from attnrl_mini.models.policy import load_model, load_tokenizer
import pytest

from attnrl_mini.worlds.toy import TOY_MODEL_DIR, toy_prompt_ids
from attnrl_mini.worlds.toy import problems as toy_problems


def test_hand_checked_case():
    # one head, d = 1, all logits 0: the last query attends 1/3 to each of 3 keys with values 1, 2, 4
    q = torch.zeros(1, 1, 1, 1)
    k = torch.zeros(1, 1, 3, 1)
    v = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 3, 1)
    out, _ = disrupted_attention(None, q, k, v, None, scaling=1.0)
    assert torch.allclose(out.flatten(), torch.tensor([7 / 3]))
    disruption._ACTIVE[:] = [disruption.KeyRange(1, 2)]          # remove key 1 (value 2): (1 + 4) / 3
    try:
        out, w = disrupted_attention(None, q, k, v, None, scaling=1.0)
    finally:
        disruption._ACTIVE.clear()
    assert torch.allclose(out.flatten(), torch.tensor([5 / 3]))
    assert torch.allclose(w.flatten(), torch.tensor([1 / 3, 0.0, 1 / 3]))   # not renormalised


def test_only_queries_after_the_range_lose_it():
    # 4 positions, all logits 0 (causal): query 1 lies inside range [1, 2) and keeps it, queries 2, 3 lose it
    q, k = torch.zeros(1, 1, 4, 1), torch.zeros(1, 1, 4, 1)
    v = torch.tensor([1.0, 2.0, 4.0, 8.0]).view(1, 1, 4, 1)
    disruption._ACTIVE[:] = [disruption.KeyRange(1, 2)]
    try:
        out, _ = disrupted_attention(None, q, k, v, None, scaling=1.0)
    finally:
        disruption._ACTIVE.clear()
    assert torch.allclose(out.flatten(), torch.tensor([1.0, 3 / 2, 5 / 3, 13 / 4]))


@pytest.fixture(scope="module")
def toy():
    tok = load_tokenizer(TOY_MODEL_DIR)
    model = load_model(TOY_MODEL_DIR, dtype="float32", device="cpu").eval()
    return model, tok, toy_prompt_ids(tok, toy_problems.test_problems(1)[0]), HFGenerator(model, tok)


def test_equals_plain_attention_when_nothing_is_disrupted(toy):
    model, tok, prompt, gen = toy
    plain = gen.generate([GenRequest(prompt, 3, 40)], seed=7)[0]
    with disrupted(model, 10_000, 10_001):   # the hook is on, but no query comes after this range
        hooked = gen.generate([GenRequest(prompt, 3, 40)], seed=7)[0]
    assert [c.token_ids for c in plain] == [c.token_ids for c in hooked]
    for a, b in zip(plain, hooked):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)


def test_disrupting_the_prompt_changes_the_sampled_distribution(toy):
    model, tok, prompt, gen = toy
    plain = gen.generate([GenRequest(prompt, 1, 20)], seed=3)[0][0]
    with disrupted(model, 0, len(prompt) - 4):   # the problem text is gone for the response
        hooked = gen.generate([GenRequest(prompt, 1, 20)], seed=3)[0][0]
    assert plain.logprobs[:1] != hooked.logprobs[:1]
    assert model.config._attn_implementation != disruption.DISRUPT_ATTENTION   # restored
