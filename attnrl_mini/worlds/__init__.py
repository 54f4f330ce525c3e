"""What is trained on. The built-in toy worlds, by name, with their shipped models (this file); the math
data, its prompt template (data.py) and the grader (reward.py); `Problem` (problem.py).

    world = get_world("toy-plan"); world.train_problems(1000, seed=0); world.test_problems(500)

- "toy": multi-step arithmetic whose mistakes are slipped digits (toy/).
- "toy-plan": an early decision that later steps read back, mistakes are wrong decisions
  (toy_plan/). docs/worlds.md sets the two side by side.
- "early" / "late": a matched pair from one generator with one switch, where the harmless wording
  variability sits (before / after two decisions; compass/, docs/compass.md).

Both use the same prompt template (the chat template, no system turn) and the same grader.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

from attnrl_mini.worlds.problem import Problem

_HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class World:
    name: str
    model_dir: str                                              # shipped Qwen2ForCausalLM + tokenizer
    train_problems: Callable[..., list[Problem]]                # (n, seed=0) -> never from the test split
    test_problems: Callable[[int], list[Problem]]               # (n) -> the fixed held-out set
    max_test_problems: int                                      # a larger draw fails (a level's test split runs out)
    build: str = ""                                             # the command that (re)builds model_dir


def _toy() -> World:
    from attnrl_mini.worlds.toy import problems
    return World("toy", os.path.join(_HERE, "toy", "model"), problems.train_problems, problems.test_problems,
                 1000, "python -m attnrl_mini.worlds.toy.pretrain")


def _toy_plan() -> World:
    from attnrl_mini.worlds.toy_plan import problems
    return World("toy-plan", os.path.join(_HERE, "toy_plan", "model"), problems.train_problems, problems.test_problems,
                 900, "python -m attnrl_mini.worlds.toy_plan.pretrain")


COMPASS_MAX_TEST = 8000   # measured: a draw of 8,000 completes for either placement


def _compass(placement: str) -> Callable[[], World]:
    def factory() -> World:
        from attnrl_mini.worlds.compass import problems
        return World(placement, os.path.join(_HERE, "compass", f"model_{placement}"),
                     functools.partial(problems.train_problems, placement=placement),
                     functools.partial(problems.test_problems, placement=placement),
                     COMPASS_MAX_TEST, f"python -m attnrl_mini.worlds.compass.pretrain --placement {placement}")
    return factory


_FACTORIES = {"toy": _toy, "toy-plan": _toy_plan, "early": _compass("early"), "late": _compass("late")}
WORLD_NAMES = tuple(_FACTORIES)


def get_world(name: str) -> World:
    if name not in _FACTORIES:
        raise ValueError(f"unknown world {name!r}; choose from {', '.join(WORLD_NAMES)}")
    return _FACTORIES[name]()


def run_problems(cfg) -> tuple[list[Problem], list[Problem]]:
    """A run's training and held-out problems: a built-in world's (cfg.train_data one of WORLD_NAMES),
    or those of the data files (held-out default: MATH-500)."""
    from attnrl_mini.worlds import data
    if cfg.train_data in WORLD_NAMES:
        world = get_world(cfg.train_data)
        return world.train_problems(20_000, seed=cfg.seed), world.test_problems(cfg.eval_problems)
    return (data.load_problems(cfg.train_data),
            data.load_problems(cfg.eval_data or data.BENCHMARKS["math500"])[:cfg.eval_problems])
