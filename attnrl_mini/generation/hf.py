"""In-process sampling with the trainer's own model (the backend when vLLM is absent).

A plain autoregressive loop with a KV cache, written out instead of calling `model.generate`:
- the sampling distribution is exactly softmax(logits / T) (no top-k=50 or other defaults sneaking
  in from a model's generation_config), so the returned log-probs are those of that distribution;
- each row stops at its own `max_new_tokens` (branch continuations all have different budgets);
- only one [B, vocab] row of logits is alive per step (`output_scores` would keep all of them:
  ~100 GB for 64 x 3072 tokens with a 152k vocabulary);
- a seeded `torch.Generator` makes a call reproducible without touching the global RNG.

For small Qwen2 models (the toy worlds) the forward itself is `small_qwen2.SmallQwen2`: the same
function written out on plain tensors, with the LoRA adapter folded into the weights once per call
and a preallocated KV cache, so a token costs ~15 tensor ops per layer instead of the general
forward's per-call machinery (`fast=False`, `--fast-sampler false`, keeps the general forward).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .interface import Completion, GenRequest, check_completions, check_requests
from .interface import eos_token_ids as default_eos_token_ids
from .small_qwen2 import SmallQwen2


class HFGenerator:
    """Samples from `model` in place. With a peft model the live adapter is used, so
    `load_adapter` has nothing to load: it only records which policy version that is."""

    name = "hf"

    def __init__(self, model, tokenizer, *, eos_token_ids: list[int] | None = None,
                 pad_token_id: int | None = None, batch_size: int = 64, vocab_size: int | None = None,
                 fast: bool = True):
        self.model = model
        self.fast = fast   # small Qwen2 models: the written-out forward (small_qwen2.py); else the model's own
        # Ids >= vocab_size (the tokenizer's size) are padding rows of the output layer (Qwen2.5: 151,936
        # rows, 151,665 tokens): their logits are set to -inf, so they are never sampled. None = no guard.
        self.vocab_size = vocab_size
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if eos_token_ids is None:
            eos_token_ids = default_eos_token_ids(tokenizer, model=model)
        self.eos_ids = sorted(set(int(t) for t in eos_token_ids))  # [] = never stop early
        if pad_token_id is None:
            pad_token_id = getattr(tokenizer, "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = self.eos_ids[0] if self.eos_ids else 0
        self.pad_id = int(pad_token_id)   # fills left padding; masked out, so its value is irrelevant
        self.version: int | None = None

    def load_adapter(self, adapter_dir: str, version: int) -> None:
        self.version = version  # the in-process peft model already holds the updated adapter

    def close(self) -> None:
        pass

    def generate(self, requests: list[GenRequest], temperature: float = 1.0,
                 seed: int | None = None) -> list[list[Completion]]:
        check_requests(requests, temperature, self.vocab_size)
        # One row per sample. Rows are sorted by their budget so a chunk's rows stop at similar times.
        rows = [(i, r.prompt_ids, r.max_new_tokens) for i, r in enumerate(requests) for _ in range(r.n)]
        order = sorted(range(len(rows)), key=lambda k: (-rows[k][2], -len(rows[k][1])))
        device = next(self.model.parameters()).device
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))

        results: list[list[Completion]] = [[] for _ in requests]
        by_row: dict[int, Completion] = {}
        was_training = self.model.training
        self.model.eval()  # no LoRA dropout, and gradient checkpointing would turn the KV cache off
        try:
            with torch.no_grad():   # the live adapter folded once per call: the weights do not change within it
                small = SmallQwen2.from_model(self.model) if self.fast else None
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                completions = self._sample_chunk([rows[k][1] for k in chunk], [rows[k][2] for k in chunk],
                                                 temperature, generator, device, small)
                by_row.update(zip(chunk, completions))
        finally:
            self.model.train(was_training)
        for k, (i, _, _) in enumerate(rows):  # rows of a request are contiguous: keep their order
            results[i].append(by_row[k])
        check_completions(results, self.vocab_size, self.name)
        return results

    @torch.no_grad()
    def _sample_chunk(self, prompts: list[list[int]], limits: list[int], temperature: float,
                      generator: torch.Generator | None, device, small: SmallQwen2 | None = None) -> list[Completion]:
        B, L = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long, device=device)   # [B, L] left-padded
        attention_mask = torch.zeros((B, L), dtype=torch.long, device=device)          # [B, L] 1 = real token
        for b, p in enumerate(prompts):
            input_ids[b, L - len(p):] = torch.tensor(p, dtype=torch.long)
            attention_mask[b, L - len(p):] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)                     # [B, L] 0 at first real token
        limit = torch.tensor(limits, device=device)                                      # [B]
        eos = torch.tensor(self.eos_ids, dtype=torch.long, device=device)                # [E]

        tokens = torch.full((B, max(limits)), self.pad_id, dtype=torch.long, device=device)  # [B, T]
        logprobs = torch.zeros((B, max(limits)), dtype=torch.float32, device=device)         # [B, T]
        length = torch.zeros(B, dtype=torch.long, device=device)       # tokens kept per row
        stopped = torch.zeros(B, dtype=torch.bool, device=device)      # sampled an EOS
        done = limit == 0                                              # [B] finished rows
        if bool(done.all()):
            return [Completion([], [], "length") for _ in prompts]

        if small is not None:
            real = attention_mask.bool()                                                 # [B, L]
            keys = torch.zeros((B, L + max(limits)), dtype=torch.bool, device=device)    # [B, L+T] attendable keys
            keys[:, :L] = real
            cache = small.new_cache(B, L + max(limits), small.embed)
            # a padding query sees itself only, so no row of the softmax is empty (its output is never read)
            causal = torch.ones((L, L), dtype=torch.bool, device=device).tril()
            prefill_mask = causal & (real[:, None, :] | torch.eye(L, dtype=torch.bool, device=device))  # [B, L, L]
            logits = small.forward(input_ids, position_ids, cache, 0, prefill_mask)     # [B, V]
        else:
            # Prefill: logits of the last prompt position only ([B, 1, V], not [B, L, V]).
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=True, logits_to_keep=1)
            cache, logits = out.past_key_values, out.logits[:, -1, :]                   # [B, V]
        for t in range(max(limits)):
            if self.vocab_size is not None and logits.shape[-1] > self.vocab_size:
                logits[:, self.vocab_size:] = float("-inf")                             # padding rows
            if temperature > 0:
                step_logprobs = F.log_softmax(logits.float() / temperature, dim=-1)     # [B, V]
                next_token = torch.multinomial(step_logprobs.exp(), 1, generator=generator).squeeze(1)  # [B]
            else:  # greedy; log-probs of the untempered distribution (vLLM does the same)
                step_logprobs = F.log_softmax(logits.float(), dim=-1)
                next_token = step_logprobs.argmax(dim=-1)
            active = ~done
            next_token = torch.where(active, next_token, torch.full_like(next_token, self.pad_id))
            tokens[:, t] = next_token
            logprobs[:, t] = step_logprobs.gather(1, next_token[:, None]).squeeze(1)
            length += active.long()
            stopped |= active & torch.isin(next_token, eos)
            done = done | stopped | (length >= limit)
            if bool(done.all()):
                break
            position_ids = position_ids[:, -1:] + 1                                     # [B, 1]
            if small is not None:
                keys[:, L + t] = True
                logits = small.forward(next_token[:, None], position_ids, cache, L + t, keys[:, None, :L + t + 1])
                continue
            attention_mask = torch.cat([attention_mask, torch.ones((B, 1), dtype=attention_mask.dtype,
                                                                    device=device)], dim=1)
            out = self.model(input_ids=next_token[:, None], attention_mask=attention_mask,
                             position_ids=position_ids, past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1, :]

        tokens, logprobs = tokens.tolist(), logprobs.tolist()
        return [Completion(tokens[b][:n], logprobs[b][:n], "stop" if s else "length")
                for b, (n, s) in enumerate(zip(length.tolist(), stopped.tolist()))]


__all__ = ["HFGenerator"]
