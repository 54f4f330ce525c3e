"""Qwen3 (per-head query/key RMS norms before RoPE) through the FCI forward, the Triton two-pass path,
the disruption hook and the packed update (issue #24, item 4).

Qwen3Attention normalises each head's query and key (q_norm, k_norm) before RoPE and then calls the
registered attention function with the post-norm, post-RoPE tensors: the FCI and disruption hooks see
exactly what the model attends with, so they need nothing Qwen3-specific. These tests check that.
"""
import copy
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from attnrl_mini.algorithm import packing
from attnrl_mini.algorithm.fci import naive_fci, score_responses
from attnrl_mini.algorithm.logprobs import response_logprobs
from attnrl_mini.generation import GenRequest
from attnrl_mini.generation.hf import HFGenerator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_fci import random_batch  # noqa: E402  (three prompts/responses of a 64-token vocabulary, with steps)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_qwen3(seed: int = 0, layers: int = 3, attn: str = "sdpa") -> Qwen3ForCausalLM:
    """Random GQA Qwen3: 4 query heads share 2 key/value heads, head_dim 32, vocab 64."""
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                      tie_word_embeddings=True, attn_implementation=attn)
    model = Qwen3ForCausalLM(copy.deepcopy(cfg)).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            # q_norm / k_norm undo any scaling of q_proj / k_proj: sharpen attention through the norms'
            # weights instead, and make them differ per dimension so the norms matter
            layer.self_attn.q_norm.weight.copy_(torch.rand(32) * 4 + 1)
            layer.self_attn.k_norm.weight.copy_(torch.rand(32) * 4 + 1)
    return model


def test_the_model_has_per_head_qk_norms():
    attn = tiny_qwen3().model.layers[0].self_attn
    assert hasattr(attn, "q_norm") and hasattr(attn, "k_norm") and attn.q_norm.weight.shape == (32,)


@pytest.mark.parametrize("query_chunk", [5, 64])
def test_fci_on_qwen3_equals_the_naive_reference(query_chunk):
    model = tiny_qwen3()
    prompts, responses, steps, think_end = random_batch()
    got = score_responses(model, prompts, responses, steps, think_end, delta=2, query_chunk=query_chunk, batch_size=3)
    ref = naive_fci(model, prompts, responses, steps, think_end, delta=2)
    for g, r, s, te in zip(got, ref, steps, think_end):
        assert r.abs().max() > 0.01                       # real, non-zero FCI values
        torch.testing.assert_close(g.fci, r, atol=1e-5, rtol=0)
        if te >= 0:
            assert torch.all(g.fci[te:] == 0)             # the </think> step and after: forced 0


def test_fci_on_qwen3_sees_the_qk_norms():
    """With q_norm/k_norm reset to ones the FCI changes: the hook really uses the post-norm queries."""
    model, plain = tiny_qwen3(), tiny_qwen3()
    with torch.no_grad():
        for layer in plain.model.layers:
            layer.self_attn.q_norm.weight.fill_(1.0)
            layer.self_attn.k_norm.weight.fill_(1.0)
    prompts, responses, steps, think_end = random_batch()
    a = score_responses(model, prompts, responses, steps, think_end, delta=2)
    b = score_responses(plain, prompts, responses, steps, think_end, delta=2)
    assert max((x.fci - y.fci).abs().max().item() for x, y in zip(a, b)) > 1e-3


def two_pass_differences_qwen3(device: str) -> dict[str, float]:
    """kernel="triton" on the tiny Qwen3 against the naive reference and the torch path."""
    model = tiny_qwen3().to(device)
    prompts, responses, steps, think_end = random_batch()
    kw = dict(delta=2, batch_size=3, return_step_attention=True)
    got = score_responses(model, prompts, responses, steps, think_end, kernel="triton", **kw)
    torch_path = score_responses(model, prompts, responses, steps, think_end, kernel="torch", query_chunk=7, **kw)
    ref = naive_fci(model, prompts, responses, steps, think_end, delta=2, return_step_attention=True)
    return dict(
        fci=max((g.fci - y).abs().max().item() for g, (y, _) in zip(got, ref)),
        step_attention=max((g.step_attention - a).abs().max().item() for g, (_, a) in zip(got, ref)),
        logprobs=max((g.logprobs - t.logprobs).abs().max().item() for g, t in zip(got, torch_path)),
        fci_max=max(y.abs().max().item() for y, _ in ref))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_two_pass_fci_on_qwen3_equals_naive_in_the_triton_interpreter():
    script = ("import json, sys; sys.path.insert(0, 'tests'); from test_qwen3_fci import two_pass_differences_qwen3; "
              "print(json.dumps(two_pass_differences_qwen3('cpu')))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr[-3000:]
    diff = json.loads(proc.stdout.strip().splitlines()[-1])
    assert diff["fci_max"] > 0.01
    assert diff["fci"] <= 1e-5 and diff["step_attention"] <= 1e-5 and diff["logprobs"] <= 1e-5, diff


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_two_pass_fci_on_qwen3_equals_naive_on_cuda():
    diff = two_pass_differences_qwen3("cuda")
    assert diff["fci"] <= 1e-5 and diff["step_attention"] <= 1e-5 and diff["logprobs"] <= 1e-5, diff


class _Tok:
    """The two attributes HFGenerator needs of a tokenizer, for a 64-token model."""
    eos_token_id, pad_token_id = 63, 63


def test_the_disruption_hook_on_qwen3():
    from attnrl_mini.tools.disruption import DISRUPT_ATTENTION, disrupted
    model = tiny_qwen3()
    gen = HFGenerator(model, _Tok(), eos_token_ids=[])
    prompt = list(range(3, 20))
    plain = gen.generate([GenRequest(prompt, 2, 12)], seed=7)[0]
    with disrupted(model, 1_000, 1_001):                  # hook on, no query after the range: no change
        same = gen.generate([GenRequest(prompt, 2, 12)], seed=7)[0]
    assert [c.token_ids for c in plain] == [c.token_ids for c in same]
    for a, b in zip(plain, same):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)
    with disrupted(model, 0, len(prompt) - 2):            # most of the prompt removed for the response
        cut = gen.generate([GenRequest(prompt, 1, 12)], seed=7)[0][0]
    assert abs(cut.logprobs[0] - plain[0].logprobs[0]) > 1e-4 or cut.token_ids[0] != plain[0].token_ids[0]
    assert model.config._attn_implementation != DISRUPT_ATTENTION      # restored


def test_packed_logprobs_on_qwen3_equal_per_path():
    """The packed update's forward (one token trie per prompt, tree attention mask) on Qwen3."""
    model = tiny_qwen3()
    g = torch.Generator().manual_seed(4)
    prompt = torch.randint(0, 64, (6,), generator=g).tolist()
    trunk = torch.randint(0, 64, (9,), generator=g).tolist()
    responses = [trunk + torch.randint(0, 64, (n,), generator=g).tolist() for n in (4, 7, 1)] + [trunk[:3] + [5, 6]]
    (packed, members), = packing.pack_groups([prompt] * len(responses), responses, max_tokens=10_000)
    assert len(packed.input_ids) - len(prompt) < packed.n_path_tokens         # prefixes really shared
    order = list(members)
    with torch.no_grad():
        got = packing.gather_paths(packing.packed_token_logprobs(model, [packed], chunk=5), [packed])
        ref = response_logprobs(model, [prompt] * len(order), [responses[i] for i in order], 0, 5)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
