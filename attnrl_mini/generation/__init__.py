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

import importlib.util
import json
import math
import numbers
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass
class GenRequest:
    prompt_ids: list[int]     # the prompt (or a branch prefix: prompt + part of a response), token ids
    n: int                    # how many independent completions to sample
    max_new_tokens: int       # this request's own limit (continuations: response budget - prefix length)


@dataclass
class Completion:
    token_ids: list[int]      # sampled tokens; ends with EOS when finish_reason == "stop"
    logprobs: list[float]     # log-prob of each sampled token under the sampling distribution
    finish_reason: str        # "stop" (EOS sampled) | "length" (hit max_new_tokens)


class Generator(Protocol):
    name: str                                            # "hf" | "vllm"

    def generate(self, requests: list[GenRequest], temperature: float = 1.0,
                 seed: int | None = None) -> list[list[Completion]]:
        """result[i] holds requests[i].n completions of requests[i]."""
        ...

    def load_adapter(self, adapter_dir: str, version: int) -> None:
        """Later generate() calls sample with this adapter (policy version `version`)."""
        ...

    def close(self) -> None:
        ...


def check_requests(requests: list[GenRequest], temperature: float, vocab_size: int | None = None) -> None:
    """Raise a ValueError that names the bad request; shared by both backends.

    vocab_size: the tokenizer's size. A prompt holding an id >= it (a padding row of the output
    layer, which the tokenizer cannot decode) is never sent."""
    if not isinstance(requests, (list, tuple)):
        raise ValueError(f"generate() takes a list of GenRequest, got {type(requests).__name__}")
    if not (temperature >= 0.0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    for i, r in enumerate(requests):
        if not isinstance(r, GenRequest):
            raise ValueError(f"request {i} is a {type(r).__name__}, not a GenRequest")
        if len(r.prompt_ids) == 0:
            raise ValueError(f"request {i} has an empty prompt; a prompt needs at least one token")
        if not all(isinstance(t, numbers.Integral) and t >= 0 for t in r.prompt_ids):
            raise ValueError(f"request {i}: prompt_ids must be non-negative ints (token ids)")
        if vocab_size is not None and max(r.prompt_ids) >= vocab_size:
            position = next(p for p, t in enumerate(r.prompt_ids) if t >= vocab_size)
            raise ValueError(f"request {i}: prompt token {position} is id {r.prompt_ids[position]}, beyond the "
                             f"tokenizer's {vocab_size} tokens (a padding row of the output layer); not sent")
        if not (isinstance(r.n, int) and r.n >= 1):
            raise ValueError(f"request {i}: n must be an int >= 1, got {r.n!r}")
        if not (isinstance(r.max_new_tokens, int) and r.max_new_tokens >= 0):
            raise ValueError(f"request {i}: max_new_tokens must be an int >= 0, got {r.max_new_tokens!r}")


def check_completions(results: list[list[Completion]], vocab_size: int | None, backend: str) -> None:
    """Raise if a sampler returned an id >= the tokenizer's size: it would be stored, vanish from
    the decoded text that is graded, and go back to the sampler in a branch prefix (older vLLM
    refuses such a prompt, vllm#13175; 0.32 accepts it)."""
    if vocab_size is None:
        return
    for i, completions in enumerate(results):
        for c in completions:
            if c.token_ids and max(c.token_ids) >= vocab_size:
                raise RuntimeError(f"the {backend} sampler returned token id {max(c.token_ids)} for request {i}, "
                                   f"beyond the tokenizer's {vocab_size} tokens; the vocabulary guard failed")


def output_rows(model_dir: str = "", model=None) -> int | None:
    """Rows of the model's output layer (config vocab_size): 151,936 for Qwen2.5, whose tokenizer
    has 151,665 tokens; the extra rows are padding."""
    path = os.path.join(model_dir, "config.json") if model_dir else ""
    if path and os.path.isfile(path):
        with open(path) as f:
            rows = json.load(f).get("vocab_size")
        if rows is not None:
            return int(rows)
    rows = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(rows) if rows is not None else None


def eos_token_ids(tokenizer=None, model_dir: str = "", model=None) -> list[int]:
    """Token ids that end a completion: the tokenizer's EOS plus the generation config's EOS
    (Qwen2.5 instruct models end turns with <|im_end|>, which only the generation config names).
    Both backends stop on exactly this set, so they sample the same distribution."""
    ids: set[int] = set()

    def add(value):
        if value is None:
            return
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if v is not None:
                ids.add(int(v))

    add(getattr(tokenizer, "eos_token_id", None))
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        add(getattr(generation_config, "eos_token_id", None))
    path = os.path.join(model_dir, "generation_config.json") if model_dir else ""
    if path and os.path.isfile(path):
        with open(path) as f:
            add(json.load(f).get("eos_token_id"))
    return sorted(ids)


def logprob_mismatch(sampler_logprobs: list[list[float]],
                     trainer_logprobs: list[list[float]]) -> dict[str, float]:
    """How far the sampler's policy is from the trainer's, measured on the sampled tokens.

    Tokens y_t were drawn from the sampler's policy s; the trainer recomputes log t(y_t).
    With d_t = log s(y_t) - log t(y_t) over all N sampled tokens:
        mean_abs_diff = (1/N) sum_t |d_t|
        kl_estimate   = (1/N) sum_t [(r_t - 1) - log r_t],  r_t = t(y_t)/s(y_t) = exp(-d_t)
    kl_estimate is the k3 estimator of KL(s || t): unbiased, never negative, and ~0 only when both
    policies agree. Same weights -> ~1e-6 (float noise); stale or base weights -> clearly larger.
    """
    if len(sampler_logprobs) != len(trainer_logprobs):
        raise ValueError(f"got log-probs of {len(sampler_logprobs)} sampled sequences but "
                         f"{len(trainer_logprobs)} recomputed ones; they must pair up")
    diffs: list[float] = []
    for i, (s, t) in enumerate(zip(sampler_logprobs, trainer_logprobs)):
        if len(s) != len(t):
            raise ValueError(f"sequence {i}: {len(s)} sampler log-probs but {len(t)} trainer log-probs")
        diffs.extend(float(a) - float(b) for a, b in zip(s, t))
    if not diffs:
        return {"mean_abs_diff": 0.0, "kl_estimate": 0.0, "max_abs_diff": 0.0, "n_tokens": 0}
    k3 = [math.expm1(-d) + d for d in diffs]          # (r - 1) - log r with log r = -d
    return {
        "mean_abs_diff": sum(abs(d) for d in diffs) / len(diffs),
        "kl_estimate": sum(k3) / len(k3),
        "max_abs_diff": max(abs(d) for d in diffs),
        "n_tokens": len(diffs),
    }


def adapter_scratch_dir() -> str:
    """A fresh directory for the adapters the sidecar loads: in tmpfs (/dev/shm, RAM) when the
    machine has one, so saving an adapter each step costs no disk writes; else the temp dir.
    The caller saves version v to os.path.join(dir, f"v{v}") and may delete it once loaded."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="attnrl_adapters_", dir=base)


def vllm_available() -> bool:
    """True if the `vllm` package is installed (cheap: does not import it)."""
    return importlib.util.find_spec("vllm") is not None


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
                   server_log: str = "", enable_sleep_mode: bool = False, vocab_guard: bool = True) -> Generator:
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
        return HFGenerator(model, tokenizer, eos_token_ids=eos_ids, vocab_size=vocab_size)

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
                           padding_ids=padding_ids, log=log)

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
