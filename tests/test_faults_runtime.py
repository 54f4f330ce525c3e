"""Runtime faults (issue #14): a 4-bit base on any CPU, a sidecar whose generate never completes.

- 4-bit: bitsandbytes packs a 4-bit weight into its CPU inference layout on CPUs with AVX512-BF16
  after an eval pass, and cannot train through that layout. The packed-format test runs only on such
  a CPU (its id says `packed-format`); elsewhere it is skipped with the reason.
- SIGTERM to a real `train.py` talking to a vLLM sidecar, and a SIGSTOPped sidecar: in
  tests/test_vllm_sidecar.py, on its server (one vLLM start fewer).
- The deadline scaled to the work is checked against a stand-in server that never answers.
"""
import http.server
import json
import threading
import time

import pytest
import torch

from attnrl_mini.algorithm import logprobs
from attnrl_mini.models import policy
from attnrl_mini.generation import GenRequest
from attnrl_mini.generation.vllm_sidecar import SidecarError, VLLMSidecar

TOY = policy.resolve_model("toy")

try:
    from bitsandbytes.functional import has_avx512bf16
    CPU_PACKS = bool(has_avx512bf16())
    BNB = True
except Exception:
    CPU_PACKS = BNB = False
requires_bnb = pytest.mark.skipif(not BNB, reason="bitsandbytes is not installed")


# ---------------------------------------------------------------------------------------------
# 4-bit LoRA training on the CPU

def _toy_batch(tok):
    prompts = [tok.encode("Start with 7. Add 5. Multiply by 2.")] * 2
    responses = [tok.encode("(a) 7+5=12\n\n(b) 12*2=24\n\n\\boxed{24}"), tok.encode("(a) 7+5=12\n\n\\boxed{13}")]
    return prompts, responses


def _lora_grads(model, tok) -> dict[str, torch.Tensor]:
    """One update's gradients: train mode, grad on, the trainer's log-prob function."""
    model.train()
    prompts, responses = _toy_batch(tok)
    logprobs.response_logprobs(model, prompts, responses, tok.pad_token_id).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


def _packed_layers(model) -> int:
    from bitsandbytes.nn import Linear4bit
    return sum(bool(getattr(m.weight.quant_state, "packing_format_for_cpu", False))
               for m in model.modules() if isinstance(m, Linear4bit))


def _lora_4bit(tok, seed=0):
    torch.manual_seed(seed)
    model = policy.load_model(TOY, load_in_4bit=True)
    return policy.add_lora(model, 4, 8, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")


@requires_bnb
def test_4bit_lora_update_after_an_eval_pass_matches_one_without():
    # The trainer's order: a no-grad eval pass (scoring, sampling), then the update. The update's
    # gradients must not depend on whether an eval pass ran before it.
    tok = policy.load_tokenizer(TOY)
    reference = _lora_grads(_lora_4bit(tok), tok)
    model = _lora_4bit(tok)
    model.eval()
    prompts, responses = _toy_batch(tok)
    with torch.no_grad():
        logprobs.response_logprobs(model, prompts, responses, tok.pad_token_id)
    assert _packed_layers(model) == 0
    grads = _lora_grads(model, tok)
    assert grads.keys() == reference.keys()
    for name, g in grads.items():
        assert torch.equal(g, reference[name]), name
    first_layer_b = [g for n, g in grads.items() if "layers.0." in n and "lora_B" in n]
    assert first_layer_b and all(g.abs().sum() > 0 for g in first_layer_b)   # the gradient reaches layer 0


@requires_bnb
@pytest.mark.parametrize("cpu", [pytest.param(
    "packed-format", marks=pytest.mark.skipif(
        not CPU_PACKS, reason="this CPU lacks AVX512-BF16: bitsandbytes never packs 4-bit weights here"))])
def test_packed_format_path_and_why_training_avoids_it(cpu):
    # On this CPU bitsandbytes really packs: a plain 4-bit model (no add_lora) packs in an eval pass,
    # computes different log-probs there, and add_lora then refuses it with a clear error.
    from peft import LoraConfig, get_peft_model
    tok = policy.load_tokenizer(TOY)
    prompts, responses = _toy_batch(tok)
    model = policy.load_model(TOY, load_in_4bit=True)
    with torch.no_grad():
        model.train()                                      # (from_pretrained returns eval mode)
        unpacked = logprobs.response_logprobs(model, prompts, responses, tok.pad_token_id)   # train mode: no packing
        assert _packed_layers(model) == 0
        model.eval()
        packed = logprobs.response_logprobs(model, prompts, responses, tok.pad_token_id)
    n_packed = _packed_layers(model)
    print(f"\n{n_packed} layers packed; packed vs standard log-probs differ by up to "
          f"{(packed - unpacked).abs().max().item():.4f}")
    assert n_packed == 14                                  # 2 layers x 7 projections
    assert not torch.equal(packed, unpacked)               # bf16 kernel whatever the compute dtype
    with pytest.raises(RuntimeError, match="already in bitsandbytes' packed CPU format"):
        policy.add_lora(model, 4, 8, "q_proj")
    # The bitsandbytes 0.50.2 bug itself (if this stops raising, a new bitsandbytes fixed it and
    # policy.keep_4bit_weights_unpacked may be revisited):
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    lora.train()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        logprobs.response_logprobs(lora, prompts, responses, tok.pad_token_id).sum().backward()


# ---------------------------------------------------------------------------------------------
# No vLLM needed: the deadline scaled to the work, against a server that never completes

class _Silent(http.server.BaseHTTPRequestHandler):
    """Healthy, lists one model, and never answers a completion (a frozen engine behind a live API)."""

    def do_GET(self):
        body = json.dumps({"data": [{"id": "base"}]}).encode() if self.path == "/v1/models" else b""
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.server.release.wait(30)

    def log_message(self, *args):
        pass


def test_the_generate_deadline_is_scaled_to_the_work():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
    httpd.release = threading.Event()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = VLLMSidecar(url=f"http://127.0.0.1:{httpd.server_port}", request_timeout_s=1.0,
                             min_tokens_per_s=20.0, health_probe_s=0.2, log=lambda s: None)
        t0 = time.monotonic()
        with pytest.raises(SidecarError, match=r"did not finish generate \(2 requests, 40 new tokens at most\) "
                                               r"within 3 s \(request_timeout_s 1 \+ 40 tokens"):
            client.generate([GenRequest([1, 2], n=2, max_new_tokens=10), GenRequest([3], n=1, max_new_tokens=20)])
        elapsed = time.monotonic() - t0
        assert 3.0 <= elapsed < 10.0       # 1 s + 40 tokens / 20 tok/s, not the HTTP requests' own timeout
    finally:
        httpd.release.set()
        httpd.shutdown()
