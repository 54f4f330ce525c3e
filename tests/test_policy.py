"""logprobs.response_logprobs, where the PPO gradient flows: left padding, uneven lengths, full logits."""
import copy

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from attnrl_mini.algorithm.logprobs import response_logprobs

PAD = 0


def tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                      max_position_embeddings=64, attn_implementation="sdpa")
    return Qwen2ForCausalLM(copy.deepcopy(cfg)).eval()


def naive_logprobs(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """One unpadded row: log_softmax of the full [L, V] logits, picked at each response token."""
    ids = torch.tensor([prompt + response])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)     # [L, V]
    P = len(prompt)
    # the logits at position t predict token t+1
    return torch.stack([logp[P + j - 1, tok] for j, tok in enumerate(response)])  # [R]


# prompts and responses of uneven lengths, so each row has its own amount of left padding;
# pad id 0 also occurs as a real token, so only the mask can tell pads apart
PROMPTS = [[5, 9, 2], [7], [3, 0, 8, 8, 1, 4]]
RESPONSES = [[11, 12, 13, 14, 15], [0, 21], [30, 31, 32]]


def test_one_token_response_is_the_softmax_at_the_prompt_token():
    # A one-token response to a one-token prompt is log_softmax(logits at the prompt token)[response token].
    model = tiny_qwen2()
    with torch.no_grad():
        got = response_logprobs(model, [[4]], [[7]], pad_id=PAD)
        want = torch.log_softmax(model(input_ids=torch.tensor([[4]])).logits[0, 0], -1)[7]
    assert got.shape == (1, 1)
    torch.testing.assert_close(got[0, 0], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", [1, 4, 1024])
def test_left_padded_batch_equals_each_row_alone(chunk):
    model = tiny_qwen2()
    with torch.no_grad():
        got = response_logprobs(model, PROMPTS, RESPONSES, pad_id=PAD, chunk=chunk)   # [B, R_max]
    R = max(len(r) for r in RESPONSES)
    assert got.shape == (len(RESPONSES), R)
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
        want = naive_logprobs(model, p, r)
        # right-aligned: response token j of row i at column R - len(r) + j; zeros to its left
        torch.testing.assert_close(got[i, R - len(r):], want, atol=1e-5, rtol=0)
        assert torch.all(got[i, :R - len(r)] == 0)
        assert torch.all(got[i, R - len(r):] < 0)   # real log-probs are negative, so not a zero fill


def test_gradient_equals_the_unpadded_rows():
    # The PPO update differentiates through this function: the gradient of Σ w·logp must match the
    # one obtained row by row without padding.
    model = tiny_qwen2(seed=3)
    R = max(len(r) for r in RESPONSES)
    torch.manual_seed(0)
    weights = torch.randn(len(RESPONSES), R)
    (response_logprobs(model, PROMPTS, RESPONSES, pad_id=PAD) * weights).sum().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    ref = sum((naive_logprobs(model, p, r) * weights[i, R - len(r):]).sum()
              for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES)))
    ref.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, atol=1e-5, rtol=1e-4, msg=f"gradient of {n}")
    assert any(g.abs().max() > 0 for g in got.values())
