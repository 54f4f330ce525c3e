"""Pre-train the early or the late model (reproduces compass/model_early/, compass/model_late/) with
the first world's SFT loop.

    python -m attnrl_mini.worlds.compass.pretrain --placement early     # rebuild compass/model_early/
    python -m attnrl_mini.worlds.compass.pretrain --placement late      # rebuild compass/model_late/
    python -m attnrl_mini.worlds.compass.pretrain --placement late --out /tmp/late --steps 20

Same recipe as toy/pretrain.py and toy_plan/pretrain.py (next-token loss on the solution tokens,
AdamW, warm-up + cosine, fixed seed and one CPU thread, so a rebuild on the same machine is
bit-identical), the same for both placements, with toy-plan's three layers. Each step's batch is
the same problems, the same decision errors and the same restatement wordings in both worlds; only
the placement of the restatements differs. DECISION_ERROR (problems.py) was declared before either
model was trained and is never tuned on RL results.
"""
from __future__ import annotations

import argparse
import os
import random
import sys

import torch

from attnrl_mini.worlds.compass.problems import LEVELS, PLACEMENTS, sft_solution, test_problems, train_problems
from attnrl_mini.worlds.compass.tokenizer import build_compass_tokenizer
from attnrl_mini.worlds.toy.pretrain import PretrainConfig, pack_sft_batch
from attnrl_mini.worlds.toy.pretrain import main as toy_pretrain_main
from attnrl_mini.worlds.toy_plan.pretrain import PLAN_LAYERS

HERE = os.path.dirname(os.path.abspath(__file__))


def model_dir(placement: str) -> str:
    return os.path.join(HERE, f"model_{placement}")


def compass_batch(placement: str):
    """make_batch for `placement`: one level's problems (levels in turn), each decision wrong w.p.
    DECISION_ERROR[level], restatement wordings drawn from the step's rng."""
    def make_batch(step: int, cfg: PretrainConfig, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
        problems = train_problems(cfg.batch_size, seed=cfg.seed * 1_000_003 + step,
                                  levels=(LEVELS[step % len(LEVELS)],), placement=placement)
        rng = random.Random(f"compass solutions {cfg.seed} {step}")     # no placement in the seed: same draws
        return pack_sft_batch(tokenizer, problems, [sft_solution(p, placement, rng) for p in problems])
    return make_batch


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--placement", choices=PLACEMENTS, required="-h" not in argv and "--help" not in argv)
    args, rest = ap.parse_known_args(argv)
    placement = args.placement or PLACEMENTS[0]
    toy_pretrain_main(rest, description=__doc__.split("\n")[0] + " (--placement early|late)",
                      default_out=model_dir(placement), num_layers=PLAN_LAYERS,
                      test_set=lambda n: test_problems(n, placement=placement),
                      tokenizer=build_compass_tokenizer(), make_batch=compass_batch(placement))


if __name__ == "__main__":
    main()
