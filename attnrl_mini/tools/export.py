"""Hand a run over to verl when one GPU is not enough.

    python -m attnrl_mini.tools.export verl --run runs/toy --out export/toy

writes into --out:
  OUT/data/train.parquet, OUT/data/val.parquet   the run's training and held-out problems as verl rows (prompt /
                                        reward_model / data_source / extra_info): what data.load_problems reads
  adapter/                              the run's latest LoRA adapter, peft format (upstream verl's lora_adapter_path)
  merged_model/                         base + adapter merged into full weights, with the tokenizer (the official
                                        AttnRL recipe fine-tunes full weights, so it starts from this)
  reward_fn.py                          our grader (attnrl_mini.worlds.reward.is_correct) as a verl custom reward function
  run_verl_grpo.sh                      upstream verl GRPO with LoRA (github.com/volcengine/verl), our config on its keys
  run_attnrl_recipe.sh                  the official AttnRL recipe (github.com/RyanLiu112/AttnRL, recipe/attnrl)
  key_map.md                            which of our fields went to which key, and which have none

Every key these scripts set exists in the config files of those repositories: `--check` applies the
scripts' overrides to pinned copies of verl 0.9.1's and the recipe's composed YAML configs (export_check.py);
the key lists in tests/data/ are read from the same files. A `+key` is one the recipe's own launch
script adds. What has no key is listed in key_map.md with the reason
(mostly constants the release hard-codes, docs/algorithm.md §j).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable

from attnrl_mini import worlds
from attnrl_mini.config import Config
from attnrl_mini.worlds import WORLD_NAMES

NO_KEY = None


@dataclass
class KeyMap:
    """One Config field and the key it sets in upstream verl and in the AttnRL recipe (None: no key)."""
    field: str
    verl: str | None
    recipe: str | None
    value: Callable[[Config], Any] | None = None     # default: the field's value
    note: str = ""


ACTOR, ROLLOUT = "actor_rollout_ref.actor", "actor_rollout_ref.rollout"
KEY_MAP = [
    KeyMap("lora_rank", "actor_rollout_ref.model.lora_rank", NO_KEY, note="the recipe trains full weights (merged_model/)"),
    KeyMap("lora_alpha", "actor_rollout_ref.model.lora_alpha", NO_KEY, note="as lora_rank"),
    KeyMap("lora_target_modules", "actor_rollout_ref.model.target_modules", NO_KEY,
           value=lambda c: [m.strip() for m in c.lora_target_modules.split(",") if m.strip()], note="as lora_rank"),
    KeyMap("gradient_checkpointing", "actor_rollout_ref.model.enable_gradient_checkpointing",
           "actor_rollout_ref.model.enable_gradient_checkpointing"),
    KeyMap("n_initial", f"{ROLLOUT}.n", f"{ROLLOUT}.n", note="G"),
    KeyMap("temperature", f"{ROLLOUT}.temperature", f"{ROLLOUT}.temperature"),
    KeyMap("eval_temperature", f"{ROLLOUT}.val_kwargs.temperature", f"{ROLLOUT}.val_kwargs.temperature"),
    KeyMap("gpu_memory_utilization", f"{ROLLOUT}.gpu_memory_utilization", f"{ROLLOUT}.gpu_memory_utilization"),
    KeyMap("max_prompt_tokens", "data.max_prompt_length", "data.max_prompt_length"),
    KeyMap("max_response_tokens", "data.max_response_length", "data.max_response_length"),
    KeyMap("prompts_per_step", "data.train_batch_size", "data.train_batch_size", note="the initial B (Eq. 10)"),
    KeyMap("lr", f"{ACTOR}.optim.lr", f"{ACTOR}.optim.lr"),
    KeyMap("weight_decay", f"{ACTOR}.optim.weight_decay", f"{ACTOR}.optim.weight_decay"),
    KeyMap("clip_low", f"{ACTOR}.clip_ratio_low", f"{ACTOR}.clip_ratio_low", note="ε_low"),
    KeyMap("clip_high", f"{ACTOR}.clip_ratio_high", f"{ACTOR}.clip_ratio_high", note="ε_high"),
    KeyMap("clip_c", f"{ACTOR}.clip_ratio_c", f"{ACTOR}.clip_ratio_c", note="dual clip c"),
    KeyMap("kl_coef", f"{ACTOR}.kl_loss_coef", f"{ACTOR}.kl_loss_coef", note="k3 (low_var_kl) loss term"),
    KeyMap("grad_clip", f"{ACTOR}.optim.clip_grad", f"{ACTOR}.grad_clip",
           note="verl 0.9.x's engine reads optim.clip_grad (actor.grad_clip is kept but unread)"),
    KeyMap("mini_batch_sequences", f"{ACTOR}.ppo_mini_batch_size", f"{ACTOR}.ppo_mini_batch_size",
           value=lambda c: max(1, c.mini_batch_sequences // c.n_initial), note="verl counts prompts: sequences / G"),
    KeyMap("micro_batch_tokens", f"{ACTOR}.ppo_max_token_len_per_gpu", f"{ACTOR}.ppo_max_token_len_per_gpu",
           note="with use_dynamic_bsz=True"),
    KeyMap("steps", "trainer.total_training_steps", "trainer.total_training_steps"),
    KeyMap("eval_every", "trainer.test_freq", "trainer.test_freq"),
    KeyMap("save_every", "trainer.save_freq", "trainer.save_freq"),
    KeyMap("dr_grpo", "algorithm.norm_adv_by_std_in_grpo", NO_KEY, value=lambda c: not c.dr_grpo,
           note="Dr. GRPO = no division by the group's std; the recipe's tree advantages have no such switch"),
    KeyMap("seed", "data.seed", NO_KEY, note="the recipe's data order has no seed key"),
    KeyMap("report_to", "trainer.logger", "trainer.logger",
           value=lambda c: ["console"] + [n.strip() for n in c.report_to.split(",") if n.strip() not in ("", "none")]),
    # AttnRL's own switches: the recipe's + keys (docs/algorithm.md §c, §e, §f); upstream GRPO has none
    KeyMap("branch_selector", NO_KEY, "+algorithm.split_criterion",
           value=lambda c: {"fci": "FCI", "entropy": "entropy"}.get(c.branch_selector),
           note="fci → FCI, entropy → entropy; first_steps, random, step_entropy and fci_entropy have no recipe value"),
    KeyMap("branch_count_rule", NO_KEY, "+algorithm.mc_diff_type",
           value=lambda c: {"ceil": "exp", "uniform": "uniform"}.get(c.branch_count_rule),
           note="ceil → exp, uniform → uniform; the paper's round has no recipe value"),
    KeyMap("attention_filter", NO_KEY, "+algorithm.mc_type",
           value=lambda c: "attention_based_filtering" if c.attention_filter else "uniform",
           note="the release has no filter-off mode with difficulty expansion (§e.1)"),
    KeyMap("zero_adv_filter", NO_KEY, "+algorithm.filter_zero_std_adv_to_train"),
    KeyMap("dynamic_batch", NO_KEY, "+data.dynamic_bsz"),
    KeyMap("batch_lambda", NO_KEY, "+data.dynamic_bsz_ema_alpha", value=lambda c: round(1 - c.batch_lambda, 10),
           note="the recipe's EMA weight is 1 − λ"),
    KeyMap("one_step_stale", NO_KEY, "+algorithm.off_policy"),
]
# Fields with no key in either project, and why.
UNMAPPED = {
    "n_branch_points": "N = 2 is hard-coded in the release", "n_continuations": "T = 2 is hard-coded in the release",
    "fci_delta": "Δ = 4 is hard-coded", "fci_quantile": "the 0.8 quantile is hard-coded",
    "min_branch_gap": "512 tokens, hard-coded", "min_branch_start": "512 tokens, hard-coded",
    "target_sequences": "B′ = 64·6·5 is hard-coded", "max_prompts_per_step": "no key in the recipe",
    "running_mean": "no key (the release's running mean is cumulative)", "running_mean_ema": "as running_mean",
    "drop_easy": "no key (no mc_type drops every all-correct prompt)", "train_unbranched": "no key (never trained)",
    "fci_query_chunk": "the recipe's attn_block_size is set to max_prompt+max_response",
    "score_batch_size": "verl packs by tokens", "logprob_chunk_tokens": "verl computes log-probs its own way",
    "load_in_4bit": "verl trains bf16 with FSDP", "dtype": "verl trains bf16 with FSDP",
    "algo": "both scripts are written: GRPO is run_verl_grpo.sh; AttnRL and TreeRL are the recipe, told apart "
            "by the mapped switches (treerl: split_criterion=entropy, mc_type=uniform)",
    "init_adapter": "the exported adapter/merged_model is the starting point", "model": "model.path (see the scripts)",
    "train_data": "data.train_files = OUT/data/train.parquet", "eval_data": "data.val_files = OUT/data/val.parquet",
    "eval_problems": "the rows of OUT/data/val.parquet", "max_generated_tokens": "no token budget in verl",
    **{name: "how this machine runs, not the method" for name in
       ("device", "threads", "generator", "fast_sampler", "vllm_url", "vllm_connect_timeout", "vllm_sleep", "out", "dump_trees", "vocab_guard", "update_packing",
        "fci_kernel")},
}


def hydra_value(value: Any) -> str:
    """A value as a Hydra command-line override (shell-quoted where needed)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return "'[" + ",".join(f"{v}" for v in value) + "]'"
    return str(value)


def overrides(cfg: Config, target: str, paths: dict[str, str]) -> list[str]:
    """The `key=value` lines of one launch script: mapped Config fields + what the target needs to run."""
    out = []
    for m in KEY_MAP:
        key = m.verl if target == "verl" else m.recipe
        value = m.value(cfg) if m.value else getattr(cfg, m.field)
        if key is not None and value is not None:
            out.append(f"{key}={hydra_value(value)}")
    common = [f"data.train_files={paths['train']}", f"data.val_files={paths['val']}", "data.prompt_key=prompt",
              "data.filter_overlong_prompts=True", f"{ACTOR}.use_kl_loss={cfg.kl_coef > 0}",
              f"{ACTOR}.kl_loss_type=low_var_kl", f"{ACTOR}.loss_agg_mode=token-mean", f"{ACTOR}.entropy_coeff=0",
              f"{ACTOR}.use_dynamic_bsz=True", f"{ROLLOUT}.name=vllm", f"{ROLLOUT}.top_p=1.0", f"{ROLLOUT}.top_k=-1",
              "algorithm.use_kl_in_reward=False", 'trainer.n_gpus_per_node="${NGPUS_PER_NODE:-8}"',
              'trainer.nnodes="${NNODES:-1}"', "trainer.project_name=attnrl-mini",
              f"trainer.experiment_name={paths['name']}", 'trainer.default_local_dir="${CKPTS_DIR:-checkpoints}"']
    if target == "verl":
        return out + common + [
            f"actor_rollout_ref.model.path={paths['base']}", f"actor_rollout_ref.model.lora_adapter_path={paths['adapter']}",
            f"{ROLLOUT}.load_format=safetensors", "algorithm.adv_estimator=grpo",
            # verl 0.9.x: the reward function sits under reward. (top-level custom_reward_function is legacy)
            f"reward.custom_reward_function.path={paths['reward_fn']}", "reward.custom_reward_function.name=compute_score"]
    return out + common + [
        f"actor_rollout_ref.model.path={paths['merged']}", "algorithm.adv_estimator=attnrl",
        "+actor_rollout_ref.actor.output_attentions=True",                     # FCI needs the attention path
        f"+actor_rollout_ref.actor.attn_block_size={cfg.max_prompt_tokens + cfg.max_response_tokens}",
        '+algorithm.process_attn_type="after_step_sum"', "+data.train_bsz_ema_alpha=1.0",
        "reward_model.reward_manager=rllm_skywork", "+reward_model.reward_kwargs.reward_type=v2_math-verify",
        "+reward_model.reward_kwargs.reward_timeout=5"]


SCRIPT = """#!/usr/bin/env bash
# {what}
# Written by `python -m attnrl_mini.tools.export verl` from {run}; key_map.md says where each field went.
# {how}
set -euo pipefail
{env}python3 -m {module} \\
    {lines}
"""


def write_scripts(cfg: Config, out: str, run: str, base_model: str) -> dict[str, list[str]]:
    paths = {"train": f"{out}/data/train.parquet", "val": f"{out}/data/val.parquet", "adapter": f"{out}/adapter",
             "merged": f"{out}/merged_model", "reward_fn": f"{out}/reward_fn.py", "base": base_model,
             "name": os.path.basename(os.path.normpath(run))}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    emitted = {}
    for target, file, what, how, module, env in (
        ("verl", "run_verl_grpo.sh", "Upstream verl GRPO with LoRA, continuing from this run's adapter.",
         "Run it in a verl checkout (github.com/volcengine/verl) with attnrl-mini on PYTHONPATH (reward_fn.py imports it).",
         "verl.trainer.main_ppo", f'export PYTHONPATH="${{ATTNRL_MINI:-{repo}}}:${{PYTHONPATH:-}}"\n'),
        ("recipe", "run_attnrl_recipe.sh", "The official AttnRL recipe, full-weight training from merged_model/.",
         "Run it in a checkout of github.com/RyanLiu112/AttnRL (see its recipe/attnrl/run_attnrl_r1_distill_1.5b_8k.sh for the environment).",
         "recipe.attnrl.main_attnrl", ""),
    ):
        lines = overrides(cfg, target, paths)
        emitted[target] = lines
        path = os.path.join(out, file)
        with open(path, "w") as f:
            f.write(SCRIPT.format(what=what, run=run, how=how, env=env, module=module, lines=" \\\n    ".join(lines)))
        os.chmod(path, 0o755)
    return emitted


def key_map_table() -> str:
    """The markdown table of key_map.md (and of docs/scaling.md)."""
    rows = ["| our field | upstream verl (GRPO + LoRA) | AttnRL recipe | note |", "| --- | --- | --- | --- |"]
    rows += [f"| `{m.field}` | {f'`{m.verl}`' if m.verl else '—'} | {f'`{m.recipe}`' if m.recipe else '—'} | {m.note} |"
             for m in KEY_MAP]
    rows += [f"| `{name}` | — | — | {why} |" for name, why in UNMAPPED.items()]
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------
# Data and weights


def verl_row(problem, split: str, as_list: bool = False) -> dict:
    """A Problem as a verl row; data.problem_from_verl_row reads it back (toy prompts carry no instruction).
    as_list: the ground truth as a list of acceptable answers (a parquet column cannot mix lists and strings)."""
    from attnrl_mini.worlds.data import math_prompt
    prefix = f"{problem.source}-"
    index = problem.id[len(prefix):] if problem.id.startswith(prefix) else problem.id
    content = problem.problem if problem.source in WORLD_NAMES else math_prompt(problem.problem)
    return {"data_source": problem.source, "prompt": [{"role": "user", "content": content}], "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": [problem.answer] if as_list and isinstance(
                problem.answer, str) else problem.answer},
            "extra_info": {"split": split, "index": index, "level": problem.level}}


def write_parquet(problems: list, path: str, split: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(os.path.dirname(path), exist_ok=True)
    as_list = any(isinstance(p.answer, list) for p in problems)
    pq.write_table(pa.Table.from_pylist([verl_row(p, split, as_list) for p in problems]), path)


def merge_adapter(model_dir: str, adapter_dir: str, out_dir: str, dtype: str) -> None:
    """W' = W + (α/r)·B·A for every adapted matrix, saved as a plain model directory with the tokenizer."""
    from attnrl_mini.models import policy
    merged = policy.load_adapter(policy.load_model(model_dir, dtype=dtype), adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    policy.load_tokenizer(model_dir).save_pretrained(out_dir)


REWARD_FN = '''"""verl custom reward function: attnrl-mini's grader (the last \\\\boxed{} after </think>, Math-Verify)."""
from attnrl_mini.worlds.reward import is_correct


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    return float(is_correct(solution_str, ground_truth))
'''


def export_verl(run: str, out: str) -> dict:
    from attnrl_mini.run import checkpoint
    from attnrl_mini.models import policy
    with open(os.path.join(run, "config.json")) as f:
        saved = json.load(f)
    known = {f.name for f in dataclasses.fields(Config)}
    cfg = Config(**{k: v for k, v in saved.items() if k in known})
    adapter = checkpoint.resolve_adapter(run, "--run")
    model_dir = policy.resolve_model(cfg.model)
    os.makedirs(out, exist_ok=True)
    out = os.path.abspath(out)
    train, val = worlds.run_problems(cfg)
    write_parquet(train, os.path.join(out, "data", "train.parquet"), "train")
    write_parquet(val, os.path.join(out, "data", "val.parquet"), "test")
    shutil.copytree(adapter, os.path.join(out, "adapter"), dirs_exist_ok=True)
    merge_adapter(model_dir, adapter, os.path.join(out, "merged_model"),
                  "bfloat16" if cfg.dtype == "bfloat16" else "float32")
    with open(os.path.join(out, "reward_fn.py"), "w") as f:
        f.write(REWARD_FN)
    base = cfg.model if cfg.model not in WORLD_NAMES else model_dir
    emitted = write_scripts(cfg, out, run, base)
    with open(os.path.join(out, "key_map.md"), "w") as f:
        f.write(f"# {run} → verl\n\n{key_map_table()}\n")
    print(f"wrote {out}: data/ ({len(train)} train, {len(val)} val rows), adapter/ ({adapter}), merged_model/, "
          "reward_fn.py, run_verl_grpo.sh, run_attnrl_recipe.sh, key_map.md")
    return emitted


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", choices=["verl"], help="what to export for")
    ap.add_argument("--run", required=True, help="a train.py run directory (config.json + checkpoints/)")
    ap.add_argument("--out", required=True, help="directory to write (created)")
    ap.add_argument("--check", action="store_true", help="then apply both scripts' overrides to verl "
                    "0.9.1's and the AttnRL recipe's config files (export_check.py); an unknown key, a wrong type or a batch "
                    "that does not divide by the GPU count fails, naming the key")
    ap.add_argument("--gpus", type=int, default=None, help="with --check: GPUs per node (default: NGPUS_PER_NODE, else 8)")
    args = ap.parse_args(argv)
    if not os.path.isfile(os.path.join(args.run, "config.json")):
        raise SystemExit(f"error: --run {args.run}: no config.json there (a train.py run directory holds one)")
    from attnrl_mini.tools.export_check import ExportCheckError, check_export
    try:
        emitted = export_verl(args.run, args.out)
        if args.check:
            check_export(args.out, args.gpus)
        return emitted
    except (FileNotFoundError, ExportCheckError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
