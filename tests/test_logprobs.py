"""Chunked LM-head log-probs/entropies equal the plain full-logits computation, values and gradients."""
import math

import pytest
import torch
from torch import nn

from attnrl_mini.algorithm.logprobs import default_chunk, token_logprobs_from_hidden


def test_two_token_vocab_by_hand():
    # logits (0, log 3) -> probabilities (1/4, 3/4)
    head = nn.Linear(1, 2, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, math.log(3.0)]))
    logp, ent = token_logprobs_from_hidden(torch.zeros(2, 1), head, torch.tensor([0, 1]), with_entropy=True)
    torch.testing.assert_close(logp, torch.tensor([math.log(0.25), math.log(0.75)]))
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    torch.testing.assert_close(ent, torch.tensor([h, h]))


def test_default_chunk_by_hand():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    # 32 MiB / (4 bytes x 151,936 rows) = 33,554,432 / 607,744 = 55.2 positions
    assert default_chunk(151_936, cpu) == 55
    assert default_chunk(8_192, cpu) == 1024                 # exactly 32 MiB at 1024 positions
    assert default_chunk(8_193, cpu) == 1023
    assert default_chunk(300, cpu) == 1024                   # small vocabularies: the cap
    assert default_chunk(10_000_000, cpu) == 1               # never below one position
    assert default_chunk(151_936, gpu) == 1024               # a GPU's allocator caches blocks itself


@pytest.mark.parametrize("chunk", [None, 1, 3, 7, 100])
def test_chunked_equals_full(chunk):
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=False)
    hidden = torch.randn(23, 16)
    targets = torch.randint(0, 50, (23,))
    logp_all = torch.log_softmax(head(hidden), -1)
    logp, ent = token_logprobs_from_hidden(hidden, head, targets, chunk=chunk, with_entropy=True)
    torch.testing.assert_close(logp, logp_all[torch.arange(23), targets])
    torch.testing.assert_close(ent, -(logp_all.exp() * logp_all).sum(-1))
    logp_only, none = token_logprobs_from_hidden(hidden, head, targets, chunk=chunk)
    assert none is None
    torch.testing.assert_close(logp_only, logp)


def test_gradients_equal_full_computation():
    torch.manual_seed(1)
    head = nn.Linear(8, 30, bias=False)
    hidden = torch.randn(10, 8, requires_grad=True)
    targets = torch.randint(0, 30, (10,))
    weights = torch.randn(10)

    logp, ent = token_logprobs_from_hidden(hidden, head, targets, chunk=3, with_entropy=True)
    ((logp * weights).sum() + ent.sum()).backward()
    got_h, got_w = hidden.grad.clone(), head.weight.grad.clone()

    hidden.grad = None
    head.weight.grad = None
    logp_all = torch.log_softmax(head(hidden), -1)
    ref = (logp_all[torch.arange(10), targets] * weights).sum() - (logp_all.exp() * logp_all).sum()
    ref.backward()
    torch.testing.assert_close(got_h, hidden.grad)
    torch.testing.assert_close(got_w, head.weight.grad)


def test_empty_and_bad_input():
    head = nn.Linear(4, 5)
    logp, ent = token_logprobs_from_hidden(torch.zeros(0, 4), head, torch.zeros(0, dtype=torch.long),
                                           with_entropy=True)
    assert logp.shape == ent.shape == (0,)
    with pytest.raises(ValueError, match=r"hidden must be \[N, D\]"):
        token_logprobs_from_hidden(torch.zeros(2, 3, 4), head, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        token_logprobs_from_hidden(torch.zeros(3, 4), head, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk"):
        token_logprobs_from_hidden(torch.zeros(3, 4), head, torch.zeros(3, dtype=torch.long), chunk=0)
