"""The toy reasoning world: multi-step arithmetic problems with worked, step-by-step solutions.

A problem is a chain of operations on a running value, for example

    Start with 7.
    (a) Add 5.
    (b) Multiply by 2.
    (c) Subtract 9.
    What is the result?

and its gold solution is one step per operation, steps separated by "\n\n", then the answer:

    (a) 7+5=12

    (b) 12*2=24

    (c) 24-9=15

    \boxed{15}

The difficulty level is the number of operations (2..5), so a solution has level + 1 steps: the
same step format (and the same grader) as real math, at a size a CPU can learn in minutes.
Operands are single digits and every running value stays in 0..MAX_VALUE, so each step is a
small arithmetic fact; a model that slips on a step now and then (see pretrain.py) fails the
longer problems more often. The labels (a), (b), ... tie each step to its operation in the problem:
without them a small model must learn to count steps, and it learnt the task more slowly.

Train and test sets are disjoint *by construction*: a problem belongs to the held-out test split
iff a hash of its canonical text falls in bucket 0 of TEST_BUCKETS. `test_problems` draws only
from that bucket, `train_problems` never does.
"""
from __future__ import annotations

import hashlib
import random
import re
from typing import Callable

from attnrl_mini.worlds.problem import Problem

LEVELS = (2, 3, 4, 5)          # number of operations
MAX_VALUE = 50                 # every running value stays in 0..MAX_VALUE
TEST_BUCKETS = 10              # 1 in 10 of all possible problems is reserved for the test split
TEST_SEED = "attnrl-mini toy test set"
SOURCE = "toy"

# operation name in the problem text -> symbol in the solution
OPERATIONS = {"Add": "+", "Subtract": "-", "Multiply by": "*"}
QUESTION = "What is the result?"
LABELS = "abcde"               # operation k is labelled "(a)", "(b)", ... in problem and solution


def apply_operation(value: int, symbol: str, operand: int) -> int:
    if symbol == "+":
        return value + operand
    if symbol == "-":
        return value - operand
    if symbol == "*":
        return value * operand
    raise ValueError(f"unknown operation symbol {symbol!r}; expected one of + - *")


def _valid_operands(value: int, symbol: str) -> list[int]:
    """Single-digit operands that keep the running value inside 0..MAX_VALUE."""
    candidates = range(2, 10) if symbol == "*" else range(1, 10)  # "* 1" would be a no-op step
    return [d for d in candidates if 0 <= apply_operation(value, symbol, d) <= MAX_VALUE]


def problem_text(start: int, ops: list[tuple[str, int]]) -> str:
    """The canonical text of a problem; ops are (operation name, operand) pairs."""
    if len(ops) > len(LABELS):
        raise ValueError(f"at most {len(LABELS)} operations, got {len(ops)}")
    lines = ([f"Start with {start}."] + [f"({label}) {name} {operand}." for label, (name, operand) in zip(LABELS, ops)]
             + [QUESTION])
    return "\n".join(lines)


_START_RE = re.compile(r"Start with (\d+)\.")
_OP_RE = re.compile(r"\n\(([a-z])\) (Add|Subtract|Multiply by) (\d+)\.")


def parse_problem(text: str) -> tuple[int, list[tuple[str, int]]]:
    """Inverse of `problem_text`: (start value, [(operation name, operand), ...])."""
    start_match = _START_RE.match(text)
    if start_match is None or not text.endswith("\n" + QUESTION):
        raise ValueError(f"not a toy problem (expected 'Start with N.\\n(a) ...\\n{QUESTION}'): {text!r}")
    body = text[start_match.end():-len("\n" + QUESTION)]
    ops = [(m.group(2), int(m.group(3))) for m in _OP_RE.finditer(body)]
    if problem_text(int(start_match.group(1)), ops) != text:
        raise ValueError(f"not a toy problem (unreadable operations {body!r}): {text!r}")
    return int(start_match.group(1)), ops


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_test_problem(text: str) -> bool:
    """The split rule: a problem is held out iff the hash of its text lands in bucket 0."""
    return int(_digest(text)[:8], 16) % TEST_BUCKETS == 0


def make_problem(rng: random.Random, level: int) -> Problem:
    """A random problem with `level` operations (train or test split, whichever the hash says).

    Each operation is drawn uniformly among those that have at least one valid operand, then
    the operand uniformly among the valid ones.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS} (the number of operations), got {level!r}")
    start = rng.randint(1, 9)
    value, ops = start, []
    for _ in range(level):
        choices = [(name, _valid_operands(value, sym)) for name, sym in OPERATIONS.items()]
        name, operands = rng.choice([c for c in choices if c[1]])  # "Add" is valid while value <= 49
        operand = rng.choice(operands)
        value = apply_operation(value, OPERATIONS[name], operand)
        ops.append((name, operand))
    text = problem_text(start, ops)
    return Problem(id=f"toy-L{level}-{_digest(text)[:12]}", problem=text, answer=str(value),
                   source=SOURCE, level=level)


def solution_steps(problem: Problem | str, slip: Callable[[int], int] | None = None) -> list[str]:
    """The gold steps: one "(label) a op b=c" line per operation, then "\\boxed{answer}".

    `slip` is for pre-training data only: it maps each correct step result to the result written
    down (an arithmetic slip), and the later steps carry on from the written value, as a person
    who slipped would.
    """
    text = problem.problem if isinstance(problem, Problem) else problem
    value, ops = parse_problem(text)
    steps = []
    for label, (name, operand) in zip(LABELS, ops):
        symbol = OPERATIONS[name]
        result = apply_operation(value, symbol, operand)
        if slip is not None:
            result = slip(result)
        steps.append(f"({label}) {value}{symbol}{operand}={result}")
        value = result
    steps.append(f"\\boxed{{{value}}}")
    return steps


def gold_solution(problem: Problem | str) -> str:
    """The worked solution: steps joined by "\\n\\n", ending in \\boxed{answer}."""
    return "\n\n".join(solution_steps(problem))


def test_problems(n: int = 500) -> list[Problem]:
    """The fixed held-out set: n distinct test-split problems, levels interleaved 2,3,4,5,2,...

    Deterministic, and test_problems(k) is a prefix of test_problems(n) for k <= n.
    """
    return draw_test_split(make_problem, is_test_problem, LEVELS, TEST_SEED, n)


def train_problems(n: int, seed: int = 0, levels: tuple[int, ...] = LEVELS) -> list[Problem]:
    """n training problems (level uniform over `levels`; repeats possible), never from the test split."""
    return draw_train_split(make_problem, is_test_problem, levels, n, seed)


# The two split draws, shared with the other worlds (toy_plan/, compass/).
MAX_MISSES = 200_000


def draw_test_split(make: Callable[[random.Random, int], Problem], is_test: Callable[[str], bool],
                    levels: tuple[int, ...], seed: str, n: int) -> list[Problem]:
    """n distinct problems from the test split, levels interleaved; a fixed draw from `seed`.

    A level whose test split is exhausted (toy-plan's holds 232-386 problems per level) is an error,
    not an endless loop: after MAX_MISSES draws in a row without a new test problem."""
    rng = random.Random(seed)
    problems, seen = [], set()
    while len(problems) < n:
        level = levels[len(problems) % len(levels)]
        misses = 0
        while True:
            p = make(rng, level)
            if is_test(p.problem) and p.problem not in seen:
                break
            misses += 1
            if misses >= MAX_MISSES:
                have = sum(q.level == level for q in problems)
                raise ValueError(f"test split of level {level} seems exhausted at {have} distinct problems "
                                 f"({MAX_MISSES:,} draws without a new one); asked for {n} problems in all")
        seen.add(p.problem)
        problems.append(p)
    return problems


def draw_train_split(make: Callable[[random.Random, int], Problem], is_test: Callable[[str], bool],
                     levels: tuple[int, ...], n: int, seed: int) -> list[Problem]:
    """n problems (level uniform over `levels`; repeats possible) that are never in the test split."""
    rng = random.Random(seed)
    problems = []
    while len(problems) < n:
        p = make(rng, rng.choice(levels))
        if not is_test(p.problem):
            problems.append(p)
    return problems
