"""The Generator interface every backend implements: requests and completions as token ids, their
checks, the ids a backend may sample, where adapters are staged, and the sampler/trainer log-prob check."""
from __future__ import annotations

import importlib.util
import json
import math
import numbers
import os
import tempfile
from dataclasses import dataclass
from typing import Protocol


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


SCRATCH_PREFIX = "attnrl_adapters_"


def adapter_scratch_dir() -> str:
    """A fresh directory for the adapters the sidecar loads: in tmpfs (/dev/shm, RAM) when the
    machine has one, so saving an adapter each step costs no disk writes; else the temp dir.
    The caller saves version v to os.path.join(dir, f"v{v}") and may delete it once loaded.

    Its name holds the owner's PID (`attnrl_adapters_<pid>_<random>`): a SIGKILLed trainer cannot
    remove its folder, so every new one first removes those of processes that are gone."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    remove_stale_scratch_dirs(base or tempfile.gettempdir())
    return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}_", dir=base)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def remove_stale_scratch_dirs(base: str, legacy_age_s: float = 3600.0) -> list[str]:
    """Remove the adapter folders in `base` whose owner process is gone. A folder of the older naming
    (no PID) is removed once untouched for `legacy_age_s`: a live run writes a version into its folder
    every step, so an hour without a change means its owner is gone."""
    import re
    import shutil
    import time

    removed = []
    for name in os.listdir(base) if os.path.isdir(base) else []:
        if not name.startswith(SCRATCH_PREFIX):
            continue
        path = os.path.join(base, name)
        owner = re.match(rf"{SCRATCH_PREFIX}(\d+)_", name)
        try:
            stale = (not _pid_alive(int(owner.group(1)))) if owner else \
                time.time() - os.path.getmtime(path) > legacy_age_s
        except OSError:
            continue
        if stale and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def vllm_available() -> bool:
    """True if the `vllm` package is installed (cheap: does not import it)."""
    return importlib.util.find_spec("vllm") is not None
