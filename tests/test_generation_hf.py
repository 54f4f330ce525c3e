"""The in-process HF sampler and the shared generation helpers.

A tiny random Qwen2 (vocab 16, EOS = token 1) whose LM head is scaled up so its next-token
distributions are far from uniform: then temperature, log-probs and adapters visibly matter.
"""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

from attnrl_mini.generation import (Completion, GenRequest, check_requests, eos_token_ids,
                                    logprob_mismatch, make_generator)
from attnrl_mini.generation.hf import HFGenerator
from attnrl_mini.generation.small_qwen2 import SmallQwen2

VOCAB, EOS, PAD = 16, 1, 0
TOKENIZER = SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD)


def tiny_model(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                         max_position_embeddings=256, eos_token_id=EOS, pad_token_id=PAD,
                         tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(12.0)  # peaky distributions (random init gives nearly uniform ones)
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def recompute_logprobs(model, prompt: list[int], response: list[int], temperature: float = 1.0) -> list[float]:
    """Naive reference: one forward over prompt + response, no padding, no cache."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()                        # [P + R, V]
    logits = logits[len(prompt) - 1: len(prompt) + len(response) - 1]        # predicts response tokens
    logp = F.log_softmax(logits / temperature, dim=-1)
    return logp.gather(1, torch.tensor(response)[:, None]).squeeze(1).tolist()


PROMPTS = [[2, 3, 4], [5], [6, 7, 8, 9, 10, 11, 2], [3, 3]]


def test_shapes_and_eos_semantics(model):
    gen = HFGenerator(model, TOKENIZER)
    requests = [GenRequest(p, n=n, max_new_tokens=12) for p, n in zip(PROMPTS, [2, 3, 1, 4])]
    out = gen.generate(requests, seed=0)
    assert [len(c) for c in out] == [2, 3, 1, 4]
    reasons = set()
    for completions in out:
        for c in completions:
            assert isinstance(c, Completion)
            assert len(c.token_ids) == len(c.logprobs) >= 1
            assert all(0 <= t < VOCAB for t in c.token_ids)
            assert all(lp <= 0.0 and math.isfinite(lp) for lp in c.logprobs)
            reasons.add(c.finish_reason)
            if c.finish_reason == "stop":     # EOS is the last token and appears only there
                assert c.token_ids[-1] == EOS and EOS not in c.token_ids[:-1]
            else:
                assert c.finish_reason == "length"
                assert len(c.token_ids) == 12 and EOS not in c.token_ids
    assert reasons == {"stop", "length"}  # this seed produces both kinds (checks the test is not vacuous)


def test_per_request_max_new_tokens():
    # No EOS at all: every row must stop exactly at its own limit, even in one mixed batch.
    model = tiny_model()
    gen = HFGenerator(model, TOKENIZER, eos_token_ids=[], batch_size=5)
    limits = [1, 7, 0, 3, 12]
    out = gen.generate([GenRequest([2, 3], n=2, max_new_tokens=m) for m in limits], seed=1)
    for m, completions in zip(limits, out):
        for c in completions:
            assert len(c.token_ids) == m and len(c.logprobs) == m and c.finish_reason == "length"
    # With EOS on, nothing may exceed its limit either.
    gen = HFGenerator(model, TOKENIZER, batch_size=3)
    out = gen.generate([GenRequest(p, n=3, max_new_tokens=m) for p, m in zip(PROMPTS, [2, 9, 5, 1])], seed=2)
    for m, completions in zip([2, 9, 5, 1], out):
        assert all(len(c.token_ids) <= m for c in completions)


@pytest.mark.parametrize("fast", [True, False])   # small_qwen2's written-out forward / the model's own
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_a_forward_pass(model, temperature, fast):
    # Left padding + KV cache in the sampler vs. one unpadded forward: the same numbers.
    assert (SmallQwen2.from_model(model) is not None)   # the fast case really takes the fast forward
    gen = HFGenerator(model, TOKENIZER, batch_size=4, fast=fast)
    requests = [GenRequest(p, n=2, max_new_tokens=20) for p in PROMPTS]
    out = gen.generate(requests, temperature=temperature, seed=3)
    for r, completions in zip(requests, out):
        for c in completions:
            ref = recompute_logprobs(model, r.prompt_ids, c.token_ids, temperature)
            assert c.logprobs == pytest.approx(ref, abs=1e-4)


def test_samples_follow_softmax_over_temperature(model):
    # 6000 one-token samples from one prompt: empirical frequencies vs softmax(logits / T).
    temperature = 0.5
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[2, 3, 4]])).logits[0, -1].float()
    expected = F.softmax(logits / temperature, dim=-1)
    assert 0.5 * (expected - F.softmax(logits, dim=-1)).abs().sum() > 0.15  # T visibly matters here
    gen = HFGenerator(model, TOKENIZER, eos_token_ids=[], batch_size=2000)
    out = gen.generate([GenRequest([2, 3, 4], n=6000, max_new_tokens=1)], temperature=temperature, seed=4)
    counts = torch.bincount(torch.tensor([c.token_ids[0] for c in out[0]]), minlength=VOCAB).float()
    total_variation = 0.5 * (counts / counts.sum() - expected).abs().sum()
    assert total_variation < 0.04


@pytest.mark.parametrize("fast", [True, False])
def test_greedy_is_argmax(model, fast):
    gen = HFGenerator(model, TOKENIZER, eos_token_ids=[], fast=fast)
    c = gen.generate([GenRequest([2, 3, 4], n=2, max_new_tokens=5)], temperature=0.0)[0]
    assert c[0].token_ids == c[1].token_ids
    ids = [2, 3, 4]
    for t in c[0].token_ids:  # naive greedy decoding, one full forward per token
        with torch.no_grad():
            assert t == int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        ids.append(t)


def test_seed_makes_it_reproducible(model):
    gen = HFGenerator(model, TOKENIZER)
    requests = [GenRequest(p, n=3, max_new_tokens=15) for p in PROMPTS]
    a, b, c = gen.generate(requests, seed=7), gen.generate(requests, seed=7), gen.generate(requests, seed=8)
    assert a == b
    assert a != c
    state = torch.get_rng_state()
    gen.generate(requests, seed=7)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


@pytest.mark.parametrize("fast", [True, False])
def test_peft_model_samples_the_live_adapter(fast):
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                                    target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.train()
    gen = HFGenerator(model, TOKENIZER, fast=fast)
    gen.load_adapter("/nonexistent/unused", version=3)
    assert gen.version == 3
    requests = [GenRequest(p, n=2, max_new_tokens=20) for p in PROMPTS]
    out = gen.generate(requests, seed=5)
    assert model.training  # training mode restored after sampling (which ran in eval mode)
    model.eval()
    sampled = [c.logprobs for cs in out for c in cs]
    with_adapter = [recompute_logprobs(model, r.prompt_ids, c.token_ids) for r, cs in zip(requests, out) for c in cs]
    with model.disable_adapter():
        base = [recompute_logprobs(model, r.prompt_ids, c.token_ids) for r, cs in zip(requests, out) for c in cs]
    assert logprob_mismatch(sampled, with_adapter)["mean_abs_diff"] < 1e-4
    assert logprob_mismatch(sampled, base)["mean_abs_diff"] > 0.1   # the adapter was really used


def _peft_tiny(seed: int = 5):
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_fast_forward_gives_the_general_loops_samples(temperature):
    # Same seed, same rows, same multinomial draws: the folded-LoRA forward differs from peft's only
    # in float rounding (~1e-6 in log-probs), so the sampled tokens are the same ones.
    model = _peft_tiny()
    assert SmallQwen2.from_model(model) is not None
    requests = [GenRequest(p, n=3, max_new_tokens=m) for p, m in zip(PROMPTS, [25, 9, 30, 1])]
    fast = HFGenerator(model, TOKENIZER, batch_size=5, fast=True).generate(requests, temperature=temperature, seed=11)
    slow = HFGenerator(model, TOKENIZER, batch_size=5, fast=False).generate(requests, temperature=temperature, seed=11)
    assert [[c.token_ids for c in cs] for cs in fast] == [[c.token_ids for c in cs] for cs in slow]
    assert [[c.finish_reason for c in cs] for cs in fast] == [[c.finish_reason for c in cs] for cs in slow]
    for cs_f, cs_s in zip(fast, slow):
        for f, s in zip(cs_f, cs_s):
            assert f.logprobs == pytest.approx(s.logprobs, abs=1e-4)
    assert sum(len(c.token_ids) for cs in fast for c in cs) > 40   # long enough to exercise the cache


def test_fast_forward_declines_what_it_does_not_cover(model):
    assert SmallQwen2.from_model(model, max_params=1000) is None          # too big to fold
    sliding = tiny_model()
    sliding.config.use_sliding_window = True
    assert SmallQwen2.from_model(sliding) is None
    from peft import LoraConfig, get_peft_model
    dropout = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj"]))
    assert SmallQwen2.from_model(dropout.train()) is None        # a live dropout is not a fixed function
    assert SmallQwen2.from_model(dropout.eval()) is not None     # in eval mode (as sampling runs) it is the identity
    dora = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj"]))
    assert SmallQwen2.from_model(dora) is None
    gen = HFGenerator(dora, TOKENIZER)   # and then the general forward samples it
    assert len(gen.generate([GenRequest([2, 3], n=2, max_new_tokens=4)], seed=0)[0]) == 2


def test_bad_requests_are_named():
    with pytest.raises(ValueError, match="request 1 has an empty prompt"):
        check_requests([GenRequest([1], 1, 1), GenRequest([], 1, 1)], 1.0)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        check_requests([GenRequest([1], 0, 1)], 1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        check_requests([GenRequest([1], 1, -2)], 1.0)
    with pytest.raises(ValueError, match="temperature"):
        check_requests([GenRequest([1], 1, 1)], -1.0)


def test_logprob_mismatch_by_hand():
    # d = log s - log t = [0, -0.5]; |d| mean = 0.25; k3 = mean((e^{-d} - 1) + d) = (0 + e^{0.5} - 1.5) / 2
    m = logprob_mismatch([[-1.0, -2.0]], [[-1.0, -1.5]])
    assert m["mean_abs_diff"] == pytest.approx(0.25)
    assert m["kl_estimate"] == pytest.approx((math.exp(0.5) - 1.5) / 2)
    assert m["max_abs_diff"] == pytest.approx(0.5) and m["n_tokens"] == 2
    assert logprob_mismatch([[-0.3, -4.0], [-1.0]], [[-0.3, -4.0], [-1.0]])["kl_estimate"] == 0.0
    with pytest.raises(ValueError, match="sequence 0: 2 sampler log-probs but 1 trainer"):
        logprob_mismatch([[-1.0, -2.0]], [[-1.0]])


def test_eos_ids_and_factory(model):
    assert eos_token_ids(TOKENIZER, model=model) == [EOS]
    logs = []
    gen = make_generator("hf", tokenizer=TOKENIZER, model_dir="", model=model, log=logs.append)
    assert isinstance(gen, HFGenerator) and gen.name == "hf" and gen.eos_ids == [EOS]
    with pytest.raises(ValueError, match="unknown generator 'fast'"):
        make_generator("fast", tokenizer=TOKENIZER, model_dir="", model=model)
    with pytest.raises(ValueError, match="pass model="):
        make_generator("hf", tokenizer=TOKENIZER, model_dir="")
