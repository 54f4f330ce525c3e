"""Pre-train the toy-plan model (reproduces toy_plan/model/) with the first world's SFT loop.

    python -m attnrl_mini.worlds.toy_plan.pretrain                 # rebuild attnrl_mini/worlds/toy_plan/model/
    python -m attnrl_mini.worlds.toy_plan.pretrain --out /tmp/plan --steps 20

Same recipe as toy/pretrain.py (next-token loss on the solution tokens, AdamW, warm-up + cosine,
fixed seed and one CPU thread, so a rebuild on the same machine is bit-identical); only the data
differ: each training solution has varied wording (problems.solution_steps with an rng) and its
decision is wrong with probability DECISION_ERROR[level], never its arithmetic. DECISION_ERROR was
set once from the world's target properties (docs/worlds.md), not from RL results.
"""
from __future__ import annotations

import os
import random

import torch

from attnrl_mini.worlds.toy.pretrain import PretrainConfig, pack_sft_batch
from attnrl_mini.worlds.toy.pretrain import main as toy_pretrain_main
from attnrl_mini.worlds.toy_plan.problems import LEVELS, sft_solution, test_problems, train_problems
from attnrl_mini.worlds.toy_plan.tokenizer import build_plan_tokenizer

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")
PLAN_LAYERS = 3   # one more layer than the first world's model: it must compare, copy and add two-digit sums


def plan_batch(step: int, cfg: PretrainConfig, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's batch: problems of one level (levels in turn), solutions with wording variants and
    the level's decision-error rate."""
    problems = train_problems(cfg.batch_size, seed=cfg.seed * 1_000_003 + step, levels=(LEVELS[step % len(LEVELS)],))
    rng = random.Random(f"plan solutions {cfg.seed} {step}")
    return pack_sft_batch(tokenizer, problems, [sft_solution(p, rng) for p in problems])


def main(argv=None) -> None:
    toy_pretrain_main(argv, description=__doc__.split("\n")[0], default_out=DEFAULT_OUT, num_layers=PLAN_LAYERS,
                      test_set=test_problems, tokenizer=build_plan_tokenizer(), make_batch=plan_batch)


if __name__ == "__main__":
    main()
