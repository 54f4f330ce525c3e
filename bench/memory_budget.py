"""What one training step of the 24 GB preset costs on the trainer's side, phase by phase.

Memory and speed depend on a model's *shape*, not on its trained values, so a randomly initialised
model of the real shape costs what the real one costs. This script builds one (Qwen2.5-Math-1.5B's
public config, a tiny shape for tests, or any config.json), saves it, loads it back the way the
trainer does (`policy.load_model`, bf16 or the 4-bit nf4 base), adds the LoRA adapter
(`policy.add_lora`, gradient checkpointing as the preset says) and measures one step's phases:

  fci_forward    no-grad forward over initial responses: old log-probs + entropies + FCI
                 (`fci.score_responses` with steps; trainer step 3)
  plain_forward  the same call without steps, i.e. without FCI: the denominator of the time ratio
  ref_logprobs   reference log-probs, adapter disabled, no grad (`logprobs.response_logprobs`)
  ppo_update     micro-batches of `micro_batch_tokens`: log-probs with grad, `loss.ppo_loss`,
                 backward; then grad clipping and an AdamW step (trainer step 4)

For each phase: peak memory (the CUDA allocator's peak on a GPU, reset before the phase; sampled
RSS on a CPU), seconds and tokens/s (prompt + response tokens through the model). Every phase runs
once untimed first (kernels, allocator, AdamW state), then `--repeats` times measured, the phases
interleaved (median time, largest peak). Sequences all have the
full length (the worst case a length cap allows); responses are random token ids cut into steps of
`--step-tokens` tokens.

The budget: the vLLM sidecar holds `gpu_memory_utilization` x card (0.3 x 24 GiB = 7.2 GiB). The
trainer's peak as the driver sees it (peak reserved by the allocator + the CUDA context) plus that
share must stay under the card (24 GiB) and, with headroom, under 22 GiB.

Usage:
  python bench/memory_budget.py --shape qwen2.5-math-1.5b --device cuda --out results/memory_budget.json
  python bench/memory_budget.py --device cuda --precisions bf16 --repeats 3 --fci-query-chunk 1024
  python bench/memory_budget.py --quick            # tiny shape on the CPU, seconds
Results on an H100 and what they mean for the preset: docs/performance.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import inspect
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from attnrl_mini.algorithm import logprobs  # noqa: E402
from attnrl_mini.models import policy  # noqa: E402
from attnrl_mini.config import make_config  # noqa: E402

GIB = 1024 ** 3
PHASES = ("fci_forward", "plain_forward", "ref_logprobs", "ppo_update")

# Public config of Qwen/Qwen2.5-Math-1.5B (Qwen2ForCausalLM, bf16, tied embeddings).
SHAPES: dict[str, dict] = {
    "qwen2.5-math-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                              num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                              max_position_embeddings=4096, rope_theta=10000.0, tie_word_embeddings=True,
                              rms_norm_eps=1e-6),
    # Head size 32 (vLLM's minimum, as the toy model), small enough for a CPU test in seconds.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=512, max_position_embeddings=4096, rope_theta=10000.0,
                 tie_word_embeddings=True, rms_norm_eps=1e-6),
}


# --------------------------------------------------------------------------------------------
# Measuring memory
# --------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; falls back to the lifetime peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory inside a `with` block.

    GPU: the allocator's peak (allocated and reserved) since `reset_peak_memory_stats` at entry.
    CPU: the largest RSS seen by a thread sampling every `interval` seconds (RSS has no reset).
    """

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device, self.interval = device, interval
        self.peak_allocated = self.peak_reserved = self.before = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            self.before = self.peak_allocated = _rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak_allocated = max(self.peak_allocated, _rss_bytes())
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_allocated = torch.cuda.max_memory_allocated(self.device)
            self.peak_reserved = torch.cuda.max_memory_reserved(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_allocated = max(self.peak_allocated, _rss_bytes())
            self.peak_reserved = self.peak_allocated
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_context_gib(device: torch.device) -> float:
    """Memory the process holds outside the allocator (CUDA context, cuBLAS workspaces): driver-used − reserved."""
    if device.type != "cuda":
        return 0.0
    free, total = torch.cuda.mem_get_info(device)
    return max(0.0, (total - free - torch.cuda.memory_reserved(device)) / GIB)


# --------------------------------------------------------------------------------------------
# The model of the real shape, random weights
# --------------------------------------------------------------------------------------------
def model_config(shape: str | None, config_json: str | None):
    from transformers import AutoConfig
    if config_json:
        with open(config_json) as f:
            d = json.load(f)
        model_type = d.pop("model_type", "qwen2")
        d.pop("architectures", None)
        return AutoConfig.for_model(model_type, **d), os.path.basename(config_json)
    if shape not in SHAPES:
        raise ValueError(f"unknown --shape {shape!r}; known shapes: {', '.join(SHAPES)} (or pass --config-json)")
    return AutoConfig.for_model("qwen2", **SHAPES[shape]), shape


def save_random_model(config, directory: str, device: torch.device, seed: int) -> int:
    """Random-init a causal LM of `config` in bf16 (built on `device`, which is fast on a GPU), save it.

    Returns its parameter count. The bf16 and 4-bit runs then load it with `policy.load_model`,
    exactly the path the trainer takes for real weights.
    """
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(directory)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return n_params


# --------------------------------------------------------------------------------------------
# The workload: full-length sequences of random tokens, cut into equal steps
# --------------------------------------------------------------------------------------------
@dataclass
class Workload:
    prompts: list[list[int]]
    responses: list[list[int]]
    steps: list[list[tuple[int, int]]]      # response-relative half-open spans

    def head(self, n: int) -> "Workload":
        return Workload(self.prompts[:n], self.responses[:n], self.steps[:n])

    @property
    def tokens(self) -> int:
        return sum(len(p) + len(r) for p, r in zip(self.prompts, self.responses))


def make_workload(n: int, prompt_tokens: int, response_tokens: int, step_tokens: int, vocab: int,
                  seed: int) -> Workload:
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(1, vocab, (n, prompt_tokens), generator=g).tolist()     # 0 is the pad id here
    responses = torch.randint(1, vocab, (n, response_tokens), generator=g).tolist()
    spans = [(s, min(s + step_tokens, response_tokens)) for s in range(0, response_tokens, step_tokens)]
    return Workload(prompts, responses, [list(spans) for _ in range(n)])


def micro_batch_size(max_tokens: int, seq_len: int) -> int:
    """Rows per micro-batch under the trainer's packing rule (rows × longest row <= max_tokens, at least 1)."""
    return max(1, max_tokens // seq_len)


# --------------------------------------------------------------------------------------------
# The phases
# --------------------------------------------------------------------------------------------
@dataclass
class Knobs:
    """The memory knobs of the preset (config.py), possibly overridden on the command line."""
    micro_batch_tokens: int
    logprob_chunk_tokens: int | None   # None: logprobs.default_chunk
    fci_query_chunk: int
    fci_kernel: str
    gradient_checkpointing: bool
    score_batch_size: int            # rows per no-grad scoring forward (score_responses' batch_size)
    lora_rank: int
    lora_alpha: int
    lora_target_modules: str
    fci_delta: int
    lr: float
    weight_decay: float
    grad_clip: float
    clip_low: float
    clip_high: float
    clip_c: float
    kl_coef: float
    gpu_memory_utilization: float


def run_phase(device: torch.device, fn, tokens: int) -> dict:
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        seconds = time.perf_counter() - t0
    return dict(peak_gib=mem.peak_allocated / GIB, reserved_gib=mem.peak_reserved / GIB,
                before_gib=mem.before / GIB, seconds=seconds, tokens=tokens,
                tokens_per_s=tokens / max(seconds, 1e-9))


def _summarise(samples: list[dict]) -> dict:
    """One phase over its repeats: the largest peak, the median time."""
    if any("error" in x for x in samples):
        return next(x for x in samples if "error" in x)
    times = sorted(x["seconds"] for x in samples)
    median = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    tokens = samples[0]["tokens"]
    return dict(peak_gib=max(x["peak_gib"] for x in samples), reserved_gib=max(x["reserved_gib"] for x in samples),
                before_gib=samples[0]["before_gib"], seconds=median, tokens=tokens,
                tokens_per_s=tokens / max(median, 1e-9), all_seconds=[x["seconds"] for x in samples])


def scoring_phase(model, work: Workload, knobs: Knobs, with_fci: bool):
    from attnrl_mini.algorithm.fci import score_responses

    def fn():
        model.eval()
        out = score_responses(model, work.prompts, work.responses,
                              steps=work.steps if with_fci else None,
                              think_end_steps=[-1] * len(work.responses) if with_fci else None,
                              delta=knobs.fci_delta, query_chunk=knobs.fci_query_chunk, kernel=knobs.fci_kernel,
                              batch_size=knobs.score_batch_size, pad_id=0,
                              logprob_chunk=knobs.logprob_chunk_tokens)
        if len(out) != len(work.responses) or (with_fci and out[0].fci is None):
            raise RuntimeError("score_responses returned an unexpected result: "
                               f"{len(out)} items for {len(work.responses)} responses")
    return fn


def ref_phase(model, work: Workload, knobs: Knobs, rows: int):
    def fn():
        model.eval()
        for i in range(0, len(work.responses), rows):
            with torch.no_grad(), model.disable_adapter():
                logprobs.response_logprobs(model, work.prompts[i:i + rows], work.responses[i:i + rows],
                                         pad_id=0, chunk=knobs.logprob_chunk_tokens)
    return fn


def ppo_phase(model, optimizer, work: Workload, knobs: Knobs, rows: int, seed: int):
    """One optimiser step over `work`, micro-batched as trainer._update does (without the ref forward)."""
    from attnrl_mini.algorithm.loss import ppo_loss
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    n_tokens = sum(len(r) for r in work.responses)

    def fn():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        for i in range(0, len(work.responses), rows):
            prompts, responses = work.prompts[i:i + rows], work.responses[i:i + rows]
            logp = logprobs.response_logprobs(model, prompts, responses, pad_id=0,
                                            chunk=knobs.logprob_chunk_tokens)                  # [B, R], grad
            shape, dev = logp.shape, logp.device
            old = logp.detach() + 0.05 * torch.randn(shape, generator=g).to(dev)              # ratios != 1
            ref = logp.detach() + 0.05 * torch.randn(shape, generator=g).to(dev)
            adv = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(dev)
            mask = torch.ones(shape, device=dev)
            loss, _ = ppo_loss(logp, old, ref, adv, mask, clip_low=knobs.clip_low, clip_high=knobs.clip_high,
                               clip_c=knobs.clip_c, kl_coef=knobs.kl_coef, n_tokens=n_tokens)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, knobs.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return fn


# --------------------------------------------------------------------------------------------
# One precision: load, add LoRA, measure every length
# --------------------------------------------------------------------------------------------
def measure_precision(model_dir: str, precision: str, device: torch.device, knobs: Knobs, lengths: list[int],
                      prompt_tokens: int, step_tokens: int, vocab: int, batches: int, micro_batches: int,
                      seed: int, log, wanted: tuple[str, ...] = PHASES, repeats: int = 1) -> list[dict]:
    model = policy.load_model(model_dir, dtype="bfloat16", device=device, attn_implementation="sdpa",
                              load_in_4bit=(precision == "4bit"))
    model = policy.add_lora(model, knobs.lora_rank, knobs.lora_alpha, knobs.lora_target_modules,
                            gradient_checkpointing=knobs.gradient_checkpointing)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=knobs.lr, weight_decay=knobs.weight_decay)
    weights_gib = (torch.cuda.memory_allocated(device) / GIB) if device.type == "cuda" else _rss_bytes() / GIB
    log(f"[{precision}] model loaded: {weights_gib:.2f} GiB resident, "
        f"{sum(p.numel() for p in params) / 1e6:.1f}M trainable LoRA parameters")
    runs = []
    try:
        for R in lengths:
            L = prompt_tokens + R
            score_rows = knobs.score_batch_size
            micro_rows = micro_batch_size(knobs.micro_batch_tokens, L)
            score_work = make_workload(score_rows * batches, prompt_tokens, R, step_tokens, vocab, seed)
            micro_work = make_workload(micro_rows * micro_batches, prompt_tokens, R, step_tokens, vocab, seed + 1)
            phases = {
                "fci_forward": (scoring_phase(model, score_work, knobs, True), score_work),
                "plain_forward": (scoring_phase(model, score_work, knobs, False), score_work),
                "ref_logprobs": (ref_phase(model, micro_work, knobs, micro_rows), micro_work),
                "ppo_update": (ppo_phase(model, optimizer, micro_work, knobs, micro_rows, seed), micro_work),
            }
            phases = {name: phases[name] for name in PHASES if name in wanted}
            # Warm-up: every phase once on one batch (kernels, autotuning, AdamW state), unmeasured.
            scoring_phase(model, score_work.head(score_rows), knobs, True)()
            scoring_phase(model, score_work.head(score_rows), knobs, False)()
            ref_phase(model, micro_work.head(micro_rows), knobs, micro_rows)()
            ppo_phase(model, optimizer, micro_work.head(micro_rows), knobs, micro_rows, seed)()
            result = dict(precision=precision, response_tokens=R, prompt_tokens=prompt_tokens,
                          score_rows=score_rows, micro_rows=micro_rows, resident_after_load_gib=weights_gib,
                          phases={})
            # Repeats interleave the phases (fci, plain, ref, ppo, fci, ...) so that drift hits all alike;
            # a phase reports its largest peak and its median time.
            samples: dict[str, list[dict]] = {name: [] for name in phases}
            for _ in range(repeats):
                for name, (fn, work) in phases.items():
                    if samples[name] and "error" in samples[name][-1]:
                        continue
                    try:
                        samples[name].append(run_phase(device, fn, work.tokens))
                    except torch.cuda.OutOfMemoryError as e:  # record it and go on: the table shows "OOM"
                        samples[name].append(dict(error=f"out of memory: {str(e).splitlines()[0]}"))
                        gc.collect()
                        torch.cuda.empty_cache()
            for name, runs_of_phase in samples.items():
                result["phases"][name] = p = _summarise(runs_of_phase)
                if "error" in p:
                    log(f"[{precision}] R={R} {name}: {p['error']}")
                else:
                    log(f"[{precision}] R={R} {name}: peak {p['peak_gib']:.2f} GiB (reserved "
                        f"{p['reserved_gib']:.2f}), {p['tokens_per_s']:.0f} tok/s, {p['seconds']:.2f} s "
                        f"(median of {len(p['all_seconds'])})")
            f, pl = result["phases"].get("fci_forward", {}), result["phases"].get("plain_forward", {})
            result["fci_time_ratio"] = (f["seconds"] / pl["seconds"]) if "seconds" in f and "seconds" in pl else None
            runs.append(result)
    finally:
        del optimizer, model, params
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return runs


# --------------------------------------------------------------------------------------------
# The budget and the report
# --------------------------------------------------------------------------------------------
def budget(runs: list[dict], context_gib: float, card_gib: float, utilization: float, headroom_gib: float) -> dict:
    """Trainer's driver-level peak (reserved + context) + the sidecar's share vs the card and 22 GiB."""
    sidecar = utilization * card_gib
    per_run = []
    for r in runs:
        ok = [p for p in r["phases"].values() if "error" not in p]
        oom = any("error" in p for p in r["phases"].values())
        peak = max((p["peak_gib"] for p in ok), default=0.0)
        reserved = max((p["reserved_gib"] for p in ok), default=0.0)
        total = reserved + context_gib + sidecar
        per_run.append(dict(precision=r["precision"], response_tokens=r["response_tokens"],
                            trainer_peak_gib=peak, trainer_reserved_gib=reserved,
                            trainer_total_gib=reserved + context_gib, with_sidecar_gib=total,
                            fits_card=(not oom) and total <= card_gib,
                            fits_headroom=(not oom) and total <= headroom_gib))
    return dict(card_gib=card_gib, gpu_memory_utilization=utilization, sidecar_gib=sidecar,
                headroom_gib=headroom_gib, cuda_context_gib=context_gib, runs=per_run)


def format_markdown(result: dict) -> str:
    lines = ["| precision | response | phase | rows | peak GiB | reserved GiB | tokens/s | seconds |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["runs"]:
        for name in PHASES:
            if name not in r["phases"]:
                continue
            p = r["phases"][name]
            rows = r["score_rows"] if name in ("fci_forward", "plain_forward") else r["micro_rows"]
            if "error" in p:
                lines.append(f"| {r['precision']} | {r['response_tokens']} | {name} | {rows} | OOM | | | |")
                continue
            lines.append(f"| {r['precision']} | {r['response_tokens']} | {name} | {rows} | {p['peak_gib']:.2f} | "
                         f"{p['reserved_gib']:.2f} | {p['tokens_per_s']:,.0f} | {p['seconds']:.3f} |")
    lines += ["", "| precision | response | FCI / plain time | trainer peak GiB | trainer total GiB "
              "(reserved + context) | + sidecar GiB | fits card | fits headroom |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    b = result["budget"]
    for r, br in zip(result["runs"], b["runs"]):
        ratio = f"{r['fci_time_ratio']:.2f}x" if r["fci_time_ratio"] is not None else "n/a"
        lines.append(f"| {r['precision']} | {r['response_tokens']} | {ratio} | {br['trainer_peak_gib']:.2f} | "
                     f"{br['trainer_total_gib']:.2f} | {br['with_sidecar_gib']:.2f} | "
                     f"{'yes' if br['fits_card'] else 'NO'} | {'yes' if br['fits_headroom'] else 'NO'} |")
    lines.append("")
    lines.append(f"Sidecar: {b['gpu_memory_utilization']} x {b['card_gib']:g} GiB = {b['sidecar_gib']:.2f} GiB; "
                 f"CUDA context {b['cuda_context_gib']:.2f} GiB; headroom line {b['headroom_gib']:g} GiB.")
    for e in result.get("skipped", []):
        lines.append(f"Skipped: {e}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default=None, help=f"one of {', '.join(SHAPES)} (default qwen2.5-math-1.5b)")
    ap.add_argument("--config-json", default=None, help="a model config.json (overrides --shape)")
    ap.add_argument("--preset", default="qwen2.5-math-1.5b-24gb")
    ap.add_argument("--device", default=None, help="auto | cpu | cuda (default auto)")
    ap.add_argument("--precisions", default="bf16,4bit", help="comma list of bf16, 4bit")
    ap.add_argument("--response-lengths", default=None, help="comma list (default 1024,2048,3072)")
    ap.add_argument("--prompt-tokens", type=int, default=None, help="default 512")
    ap.add_argument("--step-tokens", type=int, default=None,
                    help="tokens per reasoning step of the fake responses (default 64)")
    ap.add_argument("--batches", type=int, default=None, help="scoring forwards measured per length (default 2)")
    ap.add_argument("--micro-batches", type=int, default=2, help="micro-batches per measured optimiser step")
    ap.add_argument("--repeats", type=int, default=1, help="measured runs of each phase (median time, max peak)")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma list, a subset of " + ", ".join(PHASES))
    # the preset's memory knobs, overridable to try other values
    ap.add_argument("--micro-batch-tokens", type=int, default=None)
    ap.add_argument("--logprob-chunk-tokens", type=int, default=None)
    ap.add_argument("--fci-query-chunk", type=int, default=None)
    ap.add_argument("--fci-kernel", default=None, choices=("auto", "torch", "triton"),
                    help="how score_responses computes FCI (default: the preset's, auto)")
    ap.add_argument("--gradient-checkpointing", choices=("on", "off"), default=None)
    ap.add_argument("--score-batch-size", type=int, default=None,
                    help="rows per scoring forward (default: score_responses' own default, as the trainer calls it)")
    ap.add_argument("--lora-rank", type=int, default=None)
    ap.add_argument("--card-gib", type=float, default=24.0)
    ap.add_argument("--headroom-gib", type=float, default=22.0)
    ap.add_argument("--model-dir", default=None,
                    help="where to save the random model (reused if it already holds one); default a temp dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--markdown", default=None, help="write the tables as markdown here")
    ap.add_argument("--quick", action="store_true",
                    help="tiny CPU smoke run: tiny shape on the CPU, short lengths, small knobs (flags given still win)")
    args = ap.parse_args(argv)
    # Defaults: the real run, or the quick smoke run; anything given on the command line wins.
    defaults = dict(shape="qwen2.5-math-1.5b", device="auto", response_lengths="1024,2048,3072",
                    prompt_tokens=512, step_tokens=64, batches=2)
    if args.quick:
        defaults = dict(shape="tiny", device="cpu", response_lengths="24,48", prompt_tokens=8, step_tokens=8,
                        batches=1, micro_batch_tokens=112, logprob_chunk_tokens=32, fci_query_chunk=16,
                        score_batch_size=2, lora_rank=4)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    cfg = make_config(args.preset)
    device = policy.resolve_device(args.device)
    from attnrl_mini.algorithm.fci import score_responses
    default_score_batch = inspect.signature(score_responses).parameters["batch_size"].default
    knobs = Knobs(
        micro_batch_tokens=args.micro_batch_tokens or cfg.micro_batch_tokens,
        logprob_chunk_tokens=args.logprob_chunk_tokens or cfg.logprob_chunk_tokens or None,
        fci_query_chunk=args.fci_query_chunk or cfg.fci_query_chunk,
        fci_kernel=args.fci_kernel or cfg.fci_kernel,
        gradient_checkpointing=(cfg.gradient_checkpointing if args.gradient_checkpointing is None
                                else args.gradient_checkpointing == "on"),
        score_batch_size=args.score_batch_size or default_score_batch,
        lora_rank=args.lora_rank or cfg.lora_rank,
        lora_alpha=(2 * args.lora_rank) if args.lora_rank else cfg.lora_alpha,
        lora_target_modules=cfg.lora_target_modules, fci_delta=cfg.fci_delta, lr=cfg.lr,
        weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
        clip_c=cfg.clip_c, kl_coef=cfg.kl_coef, gpu_memory_utilization=cfg.gpu_memory_utilization)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for p in precisions:
        if p not in ("bf16", "4bit"):
            raise ValueError(f"unknown precision {p!r} in --precisions; use bf16 and/or 4bit")
    lengths = [int(x) for x in args.response_lengths.split(",")]
    wanted = tuple(x.strip() for x in args.phases.split(",") if x.strip())
    if not wanted or set(wanted) - set(PHASES):
        raise ValueError(f"--phases must be a non-empty subset of {', '.join(PHASES)}; got {args.phases!r}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {args.repeats}")
    config, shape_name = model_config(args.shape, args.config_json)
    if max(lengths) + args.prompt_tokens > config.max_position_embeddings:
        raise ValueError(f"prompt {args.prompt_tokens} + response {max(lengths)} tokens exceed the model's "
                         f"max_position_embeddings ({config.max_position_embeddings})")

    import transformers
    result = dict(
        date=datetime.date.today().isoformat(), shape=shape_name, preset=args.preset,
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        torch=torch.__version__, transformers=transformers.__version__,
        memory_measure="cuda max_memory_allocated/reserved" if device.type == "cuda" else "sampled process RSS",
        knobs=dataclasses.asdict(knobs), prompt_tokens=args.prompt_tokens, step_tokens=args.step_tokens,
        repeats=args.repeats, phases=list(wanted),
        argv=sys.argv[1:] if argv is None else list(argv), runs=[], skipped=[])
    log(f"memory_budget: shape {shape_name}, device {result['device_name']}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, knobs {result['knobs']}")

    if device.type == "cuda":
        torch.zeros(1, device=device)  # create the context before reading it
    context_gib = cuda_context_gib(device)

    tmp = None
    model_dir = args.model_dir
    if model_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="memory_budget_")
        model_dir = tmp.name
    try:
        if os.path.isfile(os.path.join(model_dir, "config.json")):
            log(f"reusing the random model in {model_dir}")
            result["n_params"] = None
        else:
            t0 = time.perf_counter()
            result["n_params"] = save_random_model(config, model_dir, device, args.seed)
            log(f"random {shape_name} model ({result['n_params'] / 1e6:.1f}M parameters) saved to {model_dir} "
                f"in {time.perf_counter() - t0:.1f} s")
        for precision in precisions:
            if precision == "4bit":
                try:
                    import bitsandbytes  # noqa: F401
                except Exception as e:  # not installed, or no build for this machine
                    result["skipped"].append(f"4bit: bitsandbytes is not importable here ({type(e).__name__}: {e})")
                    log(result["skipped"][-1])
                    continue
            result["runs"] += measure_precision(model_dir, precision, device, knobs, lengths, args.prompt_tokens,
                                                args.step_tokens, config.vocab_size, args.batches,
                                                args.micro_batches, args.seed, log, wanted, args.repeats)
    finally:
        if tmp is not None:
            tmp.cleanup()

    result["budget"] = budget(result["runs"], context_gib, args.card_gib, knobs.gpu_memory_utilization,
                              args.headroom_gib)
    table = format_markdown(result)
    print(table, flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return result


if __name__ == "__main__":
    main()
