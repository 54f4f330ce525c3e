"""Sampling completions from the policy: one interface, two backends.

Every backend takes prompts as **token ids** (a branch continuation must continue exactly from a
token prefix) and returns completions as token ids plus the log-probability of each sampled token
under the distribution it was sampled from (softmax of logits / temperature; top-p 1, top-k off).

- `hf.HFGenerator`: in-process sampling with the trainer's own (peft) model. Always available.
- `vllm_sidecar.VLLMSidecar`: a real vLLM OpenAI-compatible server in a child process (or one the
  user started, `--vllm-url`); the LoRA adapter of each policy version is hot-loaded under a new name.

`logprob_mismatch` is the built-in check that the sampler really samples the current policy: the
trainer recomputes the log-probs of the sampled tokens and compares.
"""
from __future__ import annotations

from typing import Callable

from .interface import (Completion, GenRequest, Generator, adapter_scratch_dir, check_completions,  # noqa: F401
                        check_requests, eos_token_ids, logprob_mismatch, output_rows, vllm_available)


def _is_4bit(model) -> bool:
    base = model
    for _ in range(3):  # peft wraps the transformers model: PeftModel -> LoraModel -> PreTrainedModel
        if getattr(base, "is_loaded_in_4bit", False):
            return True
        base = getattr(base, "base_model", getattr(base, "model", None))
        if base is None:
            break
    return False


def make_generator(kind: str, *, tokenizer, model_dir: str, model=None, dtype: str = "float32",
                   device: str = "cpu", max_lora_rank: int = 16, max_model_len: int = 2048,
                   gpu_memory_utilization: float = 0.3, vllm_url: str = "", seed: int = 0,
                   log: Callable[[str], None] = print, load_in_4bit: bool = False,
                   server_log: str = "", enable_sleep_mode: bool = False, vocab_guard: bool = True,
                   fast_sampler: bool = True, connect_timeout_s: float = 30.0) -> Generator:
    """Build the sampling backend. kind: "auto" | "vllm" | "hf".

    "hf" samples from the in-process `model` (the trainer's live peft model: updates are seen at
    once). "vllm" starts the sidecar on `model_dir` (or connects to `vllm_url`) and raises if it
    cannot; it never falls back. "auto" takes vLLM when it is installed (or a URL is given),
    else HF, and says which in one `log` line (also when a failed sidecar start sends it to HF).

    vocab_guard: both backends sample only ids < len(tokenizer) (HF: those logits are set to -inf;
    vLLM: a logit bias of -100, its maximum, on the output layer's padding rows), never send a
    prompt holding a larger id, and raise if one comes back anyway.
    """
    if kind not in ("auto", "vllm", "hf"):
        raise ValueError(f"unknown generator {kind!r}; choose auto, vllm or hf")
    eos_ids = eos_token_ids(tokenizer, model_dir, model)
    vocab_size = len(tokenizer) if vocab_guard and hasattr(tokenizer, "__len__") else None  # len = base + added tokens
    rows = output_rows(model_dir, model)
    padding_ids = list(range(vocab_size, rows)) if vocab_size is not None and rows is not None else []

    def build_hf() -> Generator:
        if model is None:
            raise ValueError("the hf generator samples from the trainer's model: pass model=")
        from .hf import HFGenerator
        return HFGenerator(model, tokenizer, eos_token_ids=eos_ids, vocab_size=vocab_size, fast=fast_sampler)

    def build_vllm() -> Generator:
        from .vllm_sidecar import VLLMSidecar
        quantization = None
        if load_in_4bit or (model is not None and _is_4bit(model)):
            if device.startswith("cuda") and not vllm_url:
                quantization = "bitsandbytes"
            elif not vllm_url:
                log("WARNING: the trainer's base model is 4-bit (bitsandbytes) but vLLM on CPU cannot "
                    "load it 4-bit: the sidecar samples from the unquantised base, so rollouts come "
                    "from a slightly different policy; the logprob-mismatch metric will show it.")
        return VLLMSidecar(model_dir, url=vllm_url, eos_token_ids=eos_ids, dtype=dtype, device=device,
                           max_lora_rank=max_lora_rank, max_model_len=max_model_len,
                           gpu_memory_utilization=gpu_memory_utilization, seed=seed,
                           quantization=quantization, log_path=server_log,
                           enable_sleep_mode=enable_sleep_mode, vocab_size=vocab_size,
                           padding_ids=padding_ids, connect_timeout_s=connect_timeout_s, log=log)

    if kind == "hf":
        return build_hf()
    if kind == "vllm":
        return build_vllm()
    # auto
    if not (vllm_url or vllm_available()):
        log("generator: in-process HF sampling (vllm is not installed; install vllm for the sidecar)")
        return build_hf()
    from .vllm_sidecar import SidecarError
    try:
        generator = build_vllm()
    except SidecarError as error:
        if model is None:
            raise
        reason = str(error).splitlines()[0]
        log(f"generator: in-process HF sampling, because the vLLM sidecar failed: {reason} "
            "(pass --generator vllm to make this an error)")
        return build_hf()
    log(f"generator: vLLM sidecar ({'server at ' + vllm_url if vllm_url else 'vllm is installed'})")
    return generator


__all__ = ["GenRequest", "Completion", "Generator", "check_requests", "check_completions", "output_rows",
           "eos_token_ids", "logprob_mismatch", "adapter_scratch_dir", "vllm_available", "make_generator"]
