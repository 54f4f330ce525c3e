"""Pre-train the toy-plan model (reproduces toy_plan/model/) with the first world's SFT loop.

    python -m attnrl_mini.toy_plan.pretrain                 # rebuild attnrl_mini/toy_plan/model/
    python -m attnrl_mini.toy_plan.pretrain --out /tmp/plan --steps 20

Same recipe as toy/pretrain.py (next-token loss on the solution tokens, AdamW, warm-up + cosine,
fixed seed and one CPU thread, so a rebuild on the same machine is bit-identical); only the data
differ: each training solution has varied wording (problems.solution_steps with an rng) and its
decision is wrong with probability DECISION_ERROR[level], never its arithmetic. DECISION_ERROR was
set once from the world's target properties (README "When does attention help?"), not from RL results.
"""
from __future__ import annotations

import argparse
import os
import random
import time

import torch

from attnrl_mini.toy.pretrain import (PretrainConfig, format_accuracy_table, pack_sft_batch, sampled_accuracy,
                                      save, train)
from attnrl_mini.toy_plan.problems import LEVELS, sft_solution, test_problems, train_problems
from attnrl_mini.toy_plan.tokenizer import build_plan_tokenizer

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")
PLAN_LAYERS = 3   # one more layer than the first world's model: it must compare, copy and add two-digit sums


def plan_batch(step: int, cfg: PretrainConfig, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's batch: problems of one level (levels in turn), solutions with wording variants and
    the level's decision-error rate."""
    problems = train_problems(cfg.batch_size, seed=cfg.seed * 1_000_003 + step, levels=(LEVELS[step % len(LEVELS)],))
    rng = random.Random(f"plan solutions {cfg.seed} {step}")
    return pack_sft_batch(tokenizer, problems, [sft_solution(p, rng) for p in problems])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: the shipped toy_plan/model/)")
    parser.add_argument("--steps", type=int, default=PretrainConfig.steps)
    parser.add_argument("--eval-every", type=int, default=0, help="calibration only: print test accuracy every N steps")
    args = parser.parse_args(argv)
    cfg = PretrainConfig(steps=args.steps, num_layers=PLAN_LAYERS)
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    tests = test_problems(cfg.eval_problems)

    def report(step, model, tokenizer):
        r = sampled_accuracy(model, tokenizer, tests, temperature=cfg.eval_temperature, seed=cfg.eval_seed)
        print(f"[eval] step {step}: overall {100 * r['overall']:.1f}%  per level "
              + "  ".join(f"L{lv} {100 * a:.1f}%" for lv, a in r["per_level"].items()), flush=True)

    model, tokenizer = train(cfg, log=lambda s: print(s, flush=True), eval_every=args.eval_every, eval_fn=report,
                             tokenizer=build_plan_tokenizer(), make_batch=plan_batch)
    save(model, tokenizer, args.out)
    result = sampled_accuracy(model, tokenizer, tests, temperature=cfg.eval_temperature, seed=cfg.eval_seed)
    print(format_accuracy_table(result, f"held-out test set, temperature {cfg.eval_temperature}, one sample "
                                        f"per problem, seed {cfg.eval_seed}:"))
    print(f"saved to {args.out}; total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
