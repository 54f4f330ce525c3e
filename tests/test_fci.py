"""FCI (Eq. 4-6): hand-checkable aggregation, and the chunked one-pass FCI against the naive reference."""
import copy
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from attnrl_mini.algorithm.fci import (FCI_ATTENTION, left_pad, make_fci_context, naive_fci, score_responses,
                             step_attention_to_fci, step_ranges, step_weight_matrix, two_pass_kernel, use_attention)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_qwen2(seed: int = 0, layers: int = 3, attn: str = "sdpa") -> Qwen2ForCausalLM:
    """Random GQA Qwen2: 4 query heads share 2 key/value heads, head_dim 32, vocab 64."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                      max_position_embeddings=256, attn_implementation=attn)
    model = Qwen2ForCausalLM(copy.deepcopy(cfg)).eval()
    with torch.no_grad():  # sharper attention than the default init, so steps differ clearly
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    return model


def random_steps(R: int, n_steps: int, g: torch.Generator) -> list[tuple[int, int]]:
    cuts = sorted((torch.randperm(R - 1, generator=g)[: n_steps - 1] + 1).tolist())
    bounds = [0] + cuts + [R]
    return list(zip(bounds[:-1], bounds[1:]))


def random_batch(seed: int = 1):
    """Three (prompt, response) pairs of different lengths, with steps and think-end steps."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 64, (n,), generator=g).tolist() for n in (5, 11, 3)]
    responses = [torch.randint(0, 64, (n,), generator=g).tolist() for n in (24, 13, 37)]
    steps = [random_steps(24, 9, g), random_steps(13, 7, g), random_steps(37, 12, g)]
    think_end_steps = [-1, 5, 9]
    return prompts, responses, steps, think_end_steps


# ------------------------------------------------------------------------------------------------
# The aggregation, on paper
# ------------------------------------------------------------------------------------------------

def test_step_matrix_is_the_double_mean_by_hand():
    # 4 tokens: range 0 = token 0 (the prompt), range 1 = tokens 1-2, range 2 = token 3.
    A = torch.tensor([[1.0, 0.0, 0.0, 0.0],
                      [0.5, 0.5, 0.0, 0.0],
                      [0.2, 0.4, 0.4, 0.0],
                      [0.1, 0.2, 0.3, 0.4]])
    ranges = step_ranges(prompt_len=1, steps=[(0, 2), (2, 3)])
    assert ranges == [(0, 1), (1, 3), (3, 4)]
    W = step_weight_matrix(ranges, 4)
    # α[1,0] = (A[1,0]+A[2,0])/2 = .35 ; α[1,1] = (.5+0+.4+.4)/(2·2) = .325 ; α[2,1] = (.2+.3)/2 = .25
    expected = torch.tensor([[1.00, 0.000, 0.0],
                             [0.35, 0.325, 0.0],
                             [0.10, 0.250, 0.4]])
    torch.testing.assert_close(W @ A @ W.T, expected)


def test_step_ranges_put_the_prompt_first():
    assert step_ranges(prompt_len=2, steps=[(0, 3), (3, 4)]) == [(0, 2), (2, 5), (5, 6)]


def test_forward_influence_by_hand():
    # ranges 0 (prompt) .. 4 (response steps 0..3); α[a, b] = attention of range a to range b
    alpha = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0],
                          [0.5, 0.5, 0.0, 0.0, 0.0],
                          [0.4, 0.3, 0.3, 0.0, 0.0],
                          [0.1, 0.2, 0.3, 0.4, 0.0],
                          [0.2, 0.1, 0.2, 0.3, 0.2]])
    # Δ=1: step0 (range 1) <- ranges 2,3,4: .3+.2+.1 = .6 but the first step is zeroed;
    #      step1 (range 2) <- ranges 3,4: .3+.2 = .5;  step2 (range 3) <- range 4: .3;  step3: nothing later
    torch.testing.assert_close(step_attention_to_fci(alpha, delta=1), torch.tensor([0.0, 0.5, 0.3, 0.0]))
    # Δ=2: step1 (range 2) <- range 4 only: .2; step2 would need range 5
    torch.testing.assert_close(step_attention_to_fci(alpha, delta=2), torch.tensor([0.0, 0.2, 0.0, 0.0]))
    # </think> in step 2: steps 2 and 3 are zeroed
    torch.testing.assert_close(step_attention_to_fci(alpha, delta=1, think_end_step=2),
                               torch.tensor([0.0, 0.5, 0.0, 0.0]))
    # </think> in step 0 zeroes everything
    assert step_attention_to_fci(alpha, delta=1, think_end_step=0).abs().sum() == 0
    # a leading (layer, head) dimension is kept: the max over it is Eq. 6, taken by the caller
    two_heads = torch.stack([alpha, 2 * alpha])
    torch.testing.assert_close(step_attention_to_fci(two_heads, delta=1).amax(0), torch.tensor([0.0, 1.0, 0.6, 0.0]))


def test_forward_influence_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        step_attention_to_fci(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="delta"):
        step_attention_to_fci(torch.zeros(3, 3), delta=0)


# ------------------------------------------------------------------------------------------------
# The chunked one-pass FCI against the naive eager reference
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query_chunk", [1, 5, 7, 16, 64])
def test_chunked_fci_equals_naive(query_chunk):
    model = tiny_qwen2()
    prompts, responses, steps, think_end = random_batch()
    for delta in (2, 4):
        ref = naive_fci(model, prompts, responses, steps, think_end, delta=delta)
        got = score_responses(model, prompts, responses, steps, think_end, delta=delta,
                              query_chunk=query_chunk, batch_size=3)    # one left-padded batch of 3
        for r, g, s in zip(ref, got, steps):
            assert g.fci.shape == (len(s),)
            assert r.max() > 1e-3          # the comparison is not between two zero vectors
            torch.testing.assert_close(g.fci, r, atol=1e-5, rtol=0)


def test_fci_masking_in_the_full_pipeline():
    model = tiny_qwen2()
    prompts, responses, steps, think_end = random_batch()
    got = score_responses(model, prompts, responses, steps, think_end, delta=2, query_chunk=8)
    for g, te, s in zip(got, think_end, steps):
        assert g.fci[0] == 0                                 # first response step
        if te >= 0:
            assert (g.fci[te:] == 0).all()                   # from the </think> step on
        assert (g.fci[len(s) - 2:] == 0).all()               # no step >= Δ=2 later exists
        assert (g.fci >= 0).all()


def test_step_attention_matrix_equals_naive_and_is_a_max_of_row_stochastic_averages():
    model = tiny_qwen2()
    prompts, responses, steps, think_end = random_batch()
    ref = naive_fci(model, prompts, responses, steps, think_end, return_step_attention=True)
    got = score_responses(model, prompts, responses, steps, think_end, query_chunk=7, return_step_attention=True)
    for (_, ref_alpha), g, s in zip(ref, got, steps):
        assert g.step_attention.shape == (len(s) + 1, len(s) + 1)
        torch.testing.assert_close(g.step_attention, ref_alpha, atol=1e-5, rtol=0)
        assert torch.triu(g.step_attention, diagonal=1).abs().max() == 0     # causal: no attention to later steps


def test_batching_does_not_change_fci():
    model = tiny_qwen2()
    prompts, responses, steps, think_end = random_batch()
    together = score_responses(model, prompts, responses, steps, think_end, batch_size=3, query_chunk=16)
    alone = score_responses(model, prompts, responses, steps, think_end, batch_size=1, query_chunk=16)
    for a, b in zip(together, alone):
        torch.testing.assert_close(a.fci, b.fci, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------
# Log-probs, entropies and the layer outputs of the FCI forward
# ------------------------------------------------------------------------------------------------

def full_logits_reference(model, prompt, response):
    """log π and entropy of each response token from the plain full [T, vocab] logits, unpadded."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()                     # [T, vocab]
    logp_all = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)        # rows that predict the response
    logp = logp_all.gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


@pytest.mark.parametrize("with_fci", [False, True])
def test_logprobs_and_entropies_equal_full_logits(with_fci):
    model = tiny_qwen2()
    prompts, responses, steps, think_end = random_batch()
    got = score_responses(model, prompts, responses, steps if with_fci else None,
                          think_end if with_fci else None, query_chunk=5, logprob_chunk=7)
    for p, r, g in zip(prompts, responses, got):
        logp, ent = full_logits_reference(model, p, r)
        assert g.logprobs.shape == g.entropies.shape == (len(r),)
        torch.testing.assert_close(g.logprobs, logp, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g.entropies, ent, atol=1e-5, rtol=1e-5)
        assert (g.fci is not None) == with_fci


def test_fci_forward_layer_outputs_equal_sdpa():
    model = tiny_qwen2()
    prompts, responses, steps, think_end = random_batch()
    batch = left_pad([p + r for p, r in zip(prompts, responses)], pad_id=0)
    ctx = make_fci_context(batch, [len(p) for p in prompts], steps, think_end, query_chunk=6)
    with torch.no_grad():
        sdpa_logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            position_ids=batch.position_ids).logits
        with use_attention(model.model, FCI_ATTENTION):
            fci_logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               position_ids=batch.position_ids, fci_context=ctx).logits
    assert all(f is not None for f in ctx.fci)                     # the FCI path really ran
    real = batch.attention_mask.bool()                             # pad positions carry no meaning
    torch.testing.assert_close(fci_logits[real], sdpa_logits[real], atol=1e-5, rtol=1e-5)
    assert model.config._attn_implementation == "sdpa"            # restored


def test_without_context_the_registered_attention_is_plain_sdpa():
    model = tiny_qwen2()
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with use_attention(model.model, FCI_ATTENTION):
            got = model(input_ids=ids).logits
            generated = model.generate(ids[:1], max_new_tokens=3, do_sample=False)   # KV cache path
    torch.testing.assert_close(got, ref)
    assert generated.shape == (1, 13)


def test_score_responses_restores_mode_and_attention():
    model = tiny_qwen2()
    model.train()
    prompts, responses, steps, think_end = random_batch()
    score_responses(model, prompts, responses, steps, think_end)
    assert model.training and model.config._attn_implementation == "sdpa"


def test_naive_reference_does_not_flip_the_model():
    model = tiny_qwen2()
    prompts, responses, steps, think_end = random_batch()
    naive_fci(model, prompts[:1], responses[:1], steps[:1])
    assert model.config._attn_implementation == "sdpa"


def test_bad_steps_are_rejected():
    model = tiny_qwen2(layers=1)
    with pytest.raises(ValueError, match="outside"):
        score_responses(model, [[1, 2]], [[3, 4, 5]], [[(0, 2), (2, 4)]])
    with pytest.raises(ValueError, match="empty"):
        score_responses(model, [[1, 2]], [[3, 4, 5]], [[(0, 0), (0, 3)]])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        score_responses(model, [[]], [[3, 4, 5]])


# ------------------------------------------------------------------------------------------------
# peft LoRA
# ------------------------------------------------------------------------------------------------

def test_works_on_a_peft_lora_model():
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(tiny_qwen2(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"]))
    torch.manual_seed(3)
    with torch.no_grad():   # LoRA's B starts at zero (a no-op adapter): make the adapter matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    prompts, responses, steps, think_end = random_batch()
    got = score_responses(model, prompts, responses, steps, think_end, query_chunk=7)
    ref = naive_fci(model, prompts, responses, steps, think_end)
    with model.disable_adapter():
        base = score_responses(model, prompts, responses, steps, think_end, query_chunk=7)
    for g, r, b, p, resp in zip(got, ref, base, prompts, responses):
        torch.testing.assert_close(g.fci, r, atol=1e-5, rtol=0)
        logp, _ = full_logits_reference(model, p, resp)
        torch.testing.assert_close(g.logprobs, logp, atol=1e-5, rtol=1e-5)
        assert (g.logprobs - b.logprobs).abs().max() > 1e-3     # the adapter was active


# ------------------------------------------------------------------------------------------------
# The two-pass GPU path (fci_triton.py): flash attention + a Triton pass for Eq. 4
# ------------------------------------------------------------------------------------------------

def two_pass_differences(device: str) -> dict[str, float]:
    """Largest differences of kernel="triton" against the naive reference and the torch path."""
    model = tiny_qwen2().to(device)
    prompts, responses, steps, think_end = random_batch()
    kw = dict(delta=2, batch_size=3, return_step_attention=True)        # one left-padded batch of 3
    got = score_responses(model, prompts, responses, steps, think_end, kernel="triton", **kw)
    # without the whole α, the second pass reads only what Eq. 5 needs (fci_triton.range_tiles)
    eq5_only = score_responses(model, prompts, responses, steps, think_end, kernel="triton", delta=2, batch_size=3)
    torch_path = score_responses(model, prompts, responses, steps, think_end, kernel="torch", query_chunk=7, **kw)
    ref = naive_fci(model, prompts, responses, steps, think_end, delta=2, return_step_attention=True)
    return dict(
        fci=max((g.fci - y).abs().max().item() for g, (y, _) in zip(got, ref)),
        fci_eq5_only=max((g.fci - y).abs().max().item() for g, (y, _) in zip(eq5_only, ref)),
        step_attention=max((g.step_attention - a).abs().max().item() for g, (_, a) in zip(got, ref)),
        logprobs=max((g.logprobs - t.logprobs).abs().max().item() for g, t in zip(got, torch_path)),
        fci_max=max(y.abs().max().item() for y, _ in ref))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_two_pass_fci_equals_naive_in_the_triton_interpreter():
    # TRITON_INTERPRET must be set before triton compiles the kernel, so a fresh process runs it (CPU, fp32)
    script = ("import json, sys; sys.path.insert(0, 'tests'); from test_fci import two_pass_differences; "
              "print(json.dumps(two_pass_differences('cpu')))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr[-3000:]
    diff = json.loads(proc.stdout.strip().splitlines()[-1])
    assert diff["fci_max"] > 0.01                      # the check compares real, non-zero FCI values
    assert max(diff[k] for k in ("fci", "fci_eq5_only", "step_attention", "logprobs")) <= 1e-5, diff


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_two_pass_fci_equals_naive_on_cuda():
    diff = two_pass_differences("cuda")
    assert max(diff[k] for k in ("fci", "fci_eq5_only", "step_attention", "logprobs")) <= 1e-5, diff


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_two_pass_tiles_cover_only_what_eq5_reads():
    from attnrl_mini.algorithm.fci_triton import range_tiles
    # the prompt (0..3), then response steps 1..3 at 3..5, 5..8, 8..10 (range index = step number)
    ranges = [(0, 3), (3, 5), (5, 8), (8, 10)]
    # Δ = 1: only range 3 (>= 2 + Δ) queries, against the keys of ranges 2 .. 3 - Δ = 2, i.e. 5..8
    starts, ends, which, key_starts, key_ends, _ = range_tiles(ranges, "cpu", delta=1)
    assert list(zip(starts.tolist(), ends.tolist(), which.tolist(), key_starts.tolist(), key_ends.tolist())) \
        == [(8, 10, 3, 5, 8)]
    assert range_tiles(ranges, "cpu", delta=2)[0].numel() == 0      # no range is >= 2 + 2: FCI is all 0
    # the whole α: every range's queries against all keys up to the tile's end
    starts, ends, which, key_starts, key_ends, _ = range_tiles(ranges, "cpu")
    assert which.tolist() == [0, 1, 2, 3] and key_starts.tolist() == [0] * 4 and key_ends.tolist() == [3, 5, 8, 10]


def test_fci_kernel_choice():
    fp32_cpu = torch.zeros(1, 4, 8, 32)
    assert two_pass_kernel("auto", fp32_cpu) is None           # auto: only bf16/fp16 on CUDA
    assert two_pass_kernel("auto", fp32_cpu.bfloat16()) is None
    assert two_pass_kernel("torch", fp32_cpu) is None
    with pytest.raises(ValueError, match="triton"):
        two_pass_kernel("triton", torch.zeros(1, 4, 8, 24))    # head size 24: not a power of two (or no triton)
    with pytest.raises(ValueError, match="kernel must be one of"):
        make_fci_context(left_pad([[1, 2]]), [1], [[(0, 1)]], [-1], kernel="cuda")
