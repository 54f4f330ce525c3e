"""The second toy world, "toy-plan": a decision early in the solution that later steps read back.

A problem names two numbers; the solver must pick the larger one (the DECISION), then apply two
operations to the picked number and add the results:

    Let x be the larger of 7 and 4.
    (a) Add 5 to x.
    (b) Multiply x by 2.
    What is the sum of the results?

Gold solution (steps separated by "\\n\\n"):

    Compare 7 and 4.          <- neutral restatement (its wording and order vary)
    x is 7.                   <- the decision step: the later steps read the chosen value back
    (a) 7+5=12                <- operand order of + and * varies (harmless)
    (b) 7*2=14
    12+14=26
    \\boxed{26}

Why this shape (the properties the world is defined by, docs/worlds.md):
- a. decisive steps: step 2 makes a choice that every later step depends on and reads back by
  value; the shipped model learnt from solutions whose decision is wrong with a probability that
  grows as the two numbers get closer (`DECISION_ERROR`), while the arithmetic is never wrong, so
  its mistakes are mostly wrong choices. A wrong choice always gives a wrong answer: the answer
  is strictly increasing in x. The decision is step 2, not step 1, because the release gives the
  first response step FCI 0 (docs/algorithm.md §b), so a first-step decision could never be a branch point.
- b. harmless variability: the restatement step has four wordings, "x is" / "So x is", and the
  operands of + and * are written in either order; none of it changes the answer.
- c. difficulty spread: the level is set by the gap between the two numbers (level 1: gap >= 5 ...
  level 4: gap 1), so some prompts are nearly always solved and some nearly never.

Train and test splits are disjoint by construction, as in the first world: a problem is held out iff
a hash of its canonical text falls in bucket 0 of TEST_BUCKETS.
"""
from __future__ import annotations

import hashlib
import random
import re

from attnrl_mini.worlds.problem import Problem
from attnrl_mini.worlds.toy.problems import draw_test_split, draw_train_split

SOURCE = "toy-plan"
LEVELS = (1, 2, 3, 4)
GAPS = {1: (5, 6, 7, 8), 2: (3, 4), 3: (2,), 4: (1,)}            # level -> |a - b| of the two numbers
# P(the SFT solution picks the SMALLER number) per level: the calibrated, difficulty-dependent mistake.
DECISION_ERROR = {1: 0.03, 2: 0.3, 3: 0.65, 4: 0.93}
OPERATIONS = {"Add": "+", "Multiply": "*"}
ADD_OPERANDS = range(1, 10)
MUL_OPERANDS = range(2, 6)
TEST_BUCKETS = 10
TEST_SEED = "attnrl-mini toy-plan test set"
QUESTION = "What is the sum of the results?"
RESTATEMENTS = ("Compare {a} and {b}.", "Compare {b} and {a}.", "We compare {a} and {b}.", "Look at {b} and {a}.")
DECISIONS = ("x is {x}.", "So x is {x}.")


def problem_text(a: int, b: int, ops: list[tuple[str, int]]) -> str:
    lines = [f"Let x be the larger of {a} and {b}."]
    for label, (name, operand) in zip("ab", ops):
        lines.append(f"({label}) Add {operand} to x." if name == "Add" else f"({label}) Multiply x by {operand}.")
    return "\n".join(lines + [QUESTION])


_PROBLEM_RE = re.compile(r"Let x be the larger of (\d) and (\d)\.\n"
                         r"\(a\) (?:Add (\d) to x|Multiply x by (\d))\.\n"
                         r"\(b\) (?:Add (\d) to x|Multiply x by (\d))\.\n" + re.escape(QUESTION) + r"$")


def parse_problem(text: str) -> tuple[int, int, list[tuple[str, int]]]:
    """Inverse of `problem_text`: (a, b, [(operation, operand), (operation, operand)])."""
    m = _PROBLEM_RE.match(text)
    if m is None:
        raise ValueError(f"not a toy-plan problem (expected 'Let x be the larger of A and B.\\n(a) ...'): {text!r}")
    g = m.groups()
    ops = [("Add", int(g[2])) if g[2] else ("Multiply", int(g[3])), ("Add", int(g[4])) if g[4] else ("Multiply", int(g[5]))]
    return int(g[0]), int(g[1]), ops


def apply(x: int, op: tuple[str, int]) -> int:
    return x + op[1] if op[0] == "Add" else x * op[1]


def answer_for(x: int, ops: list[tuple[str, int]]) -> int:
    """The answer when the decision picked x: sum of the two operation results (strictly increasing in x)."""
    return sum(apply(x, op) for op in ops)


def level_of(a: int, b: int) -> int:
    return next(level for level, gaps in GAPS.items() if abs(a - b) in gaps)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_test_problem(text: str) -> bool:
    return int(_digest(text)[:8], 16) % TEST_BUCKETS == 0


def make_problem(rng: random.Random, level: int) -> Problem:
    """Two distinct digits 1..9 whose gap is in GAPS[level] (order random), then two random operations."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS} (gap class of the two numbers), got {level!r}")
    gap = rng.choice(GAPS[level])
    low = rng.randint(1, 9 - gap)
    a, b = (low, low + gap) if rng.random() < 0.5 else (low + gap, low)
    ops = []
    for _ in range(2):
        name = rng.choice(list(OPERATIONS))
        ops.append((name, rng.choice(ADD_OPERANDS if name == "Add" else MUL_OPERANDS)))
    text = problem_text(a, b, ops)
    return Problem(id=f"plan-L{level}-{_digest(text)[:12]}", problem=text, answer=str(answer_for(max(a, b), ops)),
                   source=SOURCE, level=level)


def solution_steps(problem: Problem | str, rng: random.Random | None = None, wrong_choice: bool = False) -> list[str]:
    """The solution's steps. rng=None: the canonical wording; otherwise the wording/order variants are
    drawn from rng (outcome-neutral). wrong_choice=True (pre-training data only) picks the smaller
    number; the later steps carry on from it, as a solver who chose wrongly would."""
    text = problem.problem if isinstance(problem, Problem) else problem
    a, b, ops = parse_problem(text)
    pick = rng.choice if rng is not None else (lambda options: options[0])
    x = min(a, b) if wrong_choice else max(a, b)
    steps = [pick(RESTATEMENTS).format(a=a, b=b), pick(DECISIONS).format(x=x)]
    results = []
    for label, op in zip("ab", ops):
        r = apply(x, op)
        left, right = pick(((x, op[1]), (op[1], x)))
        steps.append(f"({label}) {left}{OPERATIONS[op[0]]}{right}={r}")
        results.append(r)
    steps += [f"{results[0]}+{results[1]}={sum(results)}", f"\\boxed{{{sum(results)}}}"]
    return steps


DECISION_STEP = 1   # index of the decision step in a solution's steps


def gold_solution(problem: Problem | str, rng: random.Random | None = None) -> str:
    return "\n\n".join(solution_steps(problem, rng))


def sft_solution(problem: Problem, rng: random.Random) -> str:
    """A pre-training solution: varied wording, and the decision wrong w.p. DECISION_ERROR[level]."""
    return "\n\n".join(solution_steps(problem, rng, wrong_choice=rng.random() < DECISION_ERROR[problem.level]))


def test_problems(n: int = 500) -> list[Problem]:
    """The fixed held-out set: n distinct test-split problems, levels interleaved 1,2,3,4,1,..."""
    return draw_test_split(make_problem, is_test_problem, LEVELS, TEST_SEED, n)


def train_problems(n: int, seed: int = 0, levels: tuple[int, ...] = LEVELS) -> list[Problem]:
    """n training problems (level uniform over `levels`), never from the test split."""
    return draw_train_split(make_problem, is_test_problem, levels, n, seed)
