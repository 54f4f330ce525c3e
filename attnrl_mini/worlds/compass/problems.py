"""The matched pair of worlds "early" and "late" (issue #22: when is attention a compass?).

One generator, one switch: `placement`. Both worlds have the SAME problems, answers, decisions and
wording variants; they differ only in WHERE the harmless wording variability sits in the solution.

A problem names two pairs of numbers; the solver must pick the larger of each (two DECISIONS),
then apply one operation to each pick and add x and y; the answer is the sum of the three results:

    Let x be the larger of 7 and 4.
    Let y be the larger of 3 and 8.
    (a) Add 5 to x.
    (b) Multiply y by 2.
    (c) Add x and y.
    What is the sum of the results?

Gold solution, placement "early" (wording variability BEFORE the decisions):

    Solve.                    <- fixed first step: no free wording at offset 0
    Compare 7 and 4.          <- restatement 1: one of four wordings (harmless)
    Compare 3 and 8.          <- restatement 2: one of four wordings (harmless)
    x is 7.                   <- decision 1
    (a) 7+5=12                <- reads x back
    y is 8.                   <- decision 2
    (b) 8*2=16                <- reads y back
    (c) 7+8=15                <- reads x and y back (two and four steps after them)
    12+16=28                  <- the results added two at a time (see "Revision" below)
    28+15=43
    \\boxed{43}

Placement "late": the same eleven steps, the two restatements moved after every decision and every
step that reads one back (Solve, x is, (a), y is, (b), (c), Compare, Compare, sums, boxed). Same
variants, same number of free tokens; the decision block (decision 1 .. (c)) is identical, so each
decision is read back at the same distances in both worlds.

Why this shape (the properties the pair is defined by, docs/compass.md):
- two decisions, each read back by later steps, so a second fork can hit a live choice; they are
  9 tokens apart (the "(a)" step), more than the toy preset's min_branch_gap = 4, so ATB's spacing
  rule does not reject decision 2 for being too close to decision 1 (it did on toy-plan);
- a fixed first step: the release gives step 0 FCI 0, and a free first token was the top-entropy
  token of 99.9% of toy-plan responses (a fork at offset 0 is a fresh sample);
- a wrong decision always gives a wrong answer: the answer is strictly increasing in x and in y
  (adding, multiplying by >= 2, adding x and y), and a wrong pick is the smaller number;
- the arithmetic of the pre-training solutions is never wrong; each decision is wrong,
  independently, with probability DECISION_ERROR[level] (declared here, before any model or RL run);
- difficulty: the level sets the gap of BOTH pairs (level 1: gap >= 5 ... level 4: gap 1).

Revision (2026-12-03, before any RL run): the first build wrote the total as ONE three-term sum
("12+16+15=43"); its pretrained `early` model learnt the declared decision rates but not that
sum (held-out accuracy 12%; half of its wrong responses had right decisions). The total
is now two two-term sums, the step toy-plan's model learnt. Problems, answers and decisions are
unchanged (docs/compass.md).

Train and test splits are disjoint by construction: a problem is held out iff a hash of its text
falls in bucket 0 of TEST_BUCKETS (the text does not depend on the placement, so neither does the split).
"""
from __future__ import annotations

import hashlib
import random
import re

from attnrl_mini.worlds.problem import Problem
from attnrl_mini.worlds.toy.problems import draw_test_split, draw_train_split

PLACEMENTS = ("early", "late")                                    # the switch; also the worlds' names
LEVELS = (1, 2, 3, 4)
GAPS = {1: (5, 6, 7, 8), 2: (3, 4), 3: (2,), 4: (1,)}            # level -> |a - b| of each pair
# P(a pre-training solution picks the SMALLER number), per decision, independently for the two decisions.
# Declared before any model was trained: a response is right w.p. (1 - e)^2 = 0.90, 0.64, 0.42, 0.25,
# and level 3-4 decisions are close to coin flips, so a good share of prompts stay uncertain at G = 6.
DECISION_ERROR = {1: 0.05, 2: 0.2, 3: 0.35, 4: 0.5}
OPERATIONS = {"Add": "+", "Multiply": "*"}
ADD_OPERANDS = range(1, 10)
MUL_OPERANDS = range(2, 6)
TEST_BUCKETS = 10
TEST_SEED = "attnrl-mini compass test set"
QUESTION = "What is the sum of the results?"
FIRST_STEP = "Solve."
RESTATEMENTS = ("Compare {a} and {b}.", "Compare {b} and {a}.", "We compare {a} and {b}.", "Look at {b} and {a}.")
# Step layout per placement: R = restatement, D = decision, A/B/C = the (a)/(b)/(c) lines.
LAYOUT = {"early": ("first", "R1", "R2", "D1", "A", "D2", "B", "C", "sum1", "sum2", "boxed"),
          "late": ("first", "D1", "A", "D2", "B", "C", "R1", "R2", "sum1", "sum2", "boxed")}
DECISION_STEPS = {p: (LAYOUT[p].index("D1"), LAYOUT[p].index("D2")) for p in PLACEMENTS}   # early (3, 5), late (1, 3)
RESTATEMENT_STEPS = {p: (LAYOUT[p].index("R1"), LAYOUT[p].index("R2")) for p in PLACEMENTS}


def _check_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")


def problem_text(pairs: tuple[tuple[int, int], tuple[int, int]], ops: list[tuple[str, int]]) -> str:
    (a, b), (c, d) = pairs
    lines = [f"Let x be the larger of {a} and {b}.", f"Let y be the larger of {c} and {d}."]
    for label, var, (name, operand) in zip("ab", "xy", ops):
        lines.append(f"({label}) Add {operand} to {var}." if name == "Add" else f"({label}) Multiply {var} by {operand}.")
    return "\n".join(lines + ["(c) Add x and y.", QUESTION])


_OP = r"\((?:a|b)\) (?:Add (\d) to [xy]|Multiply [xy] by (\d))\.\n"
_PROBLEM_RE = re.compile(r"Let x be the larger of (\d) and (\d)\.\nLet y be the larger of (\d) and (\d)\.\n"
                         + _OP + _OP + r"\(c\) Add x and y\.\n" + re.escape(QUESTION) + r"$")


def parse_problem(text: str) -> tuple[tuple[tuple[int, int], tuple[int, int]], list[tuple[str, int]]]:
    """Inverse of `problem_text`: (((a, b), (c, d)), [(operation, operand) for x, for y])."""
    m = _PROBLEM_RE.match(text)
    if m is None:
        raise ValueError(f"not an early/late problem (expected 'Let x be the larger of A and B.\\n"
                         f"Let y be the larger of C and D.\\n(a) ...'): {text!r}")
    g = m.groups()
    ops = [("Add", int(g[4])) if g[4] else ("Multiply", int(g[5])), ("Add", int(g[6])) if g[6] else ("Multiply", int(g[7]))]
    return ((int(g[0]), int(g[1])), (int(g[2]), int(g[3]))), ops


def apply(v: int, op: tuple[str, int]) -> int:
    return v + op[1] if op[0] == "Add" else v * op[1]


def answer_for(x: int, y: int, ops: list[tuple[str, int]]) -> int:
    """The answer when the decisions picked x and y: (a) + (b) + (c), strictly increasing in x and in y."""
    return apply(x, ops[0]) + apply(y, ops[1]) + x + y


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_test_problem(text: str) -> bool:
    return int(_digest(text)[:8], 16) % TEST_BUCKETS == 0


def _pair(rng: random.Random, level: int) -> tuple[int, int]:
    gap = rng.choice(GAPS[level])
    low = rng.randint(1, 9 - gap)
    return (low, low + gap) if rng.random() < 0.5 else (low + gap, low)


def make_problem(rng: random.Random, level: int, placement: str) -> Problem:
    """Two pairs of distinct digits 1..9, both with a gap in GAPS[level], then an operation for x and
    one for y. The draw does not depend on `placement` (it only names the world the problem is for)."""
    _check_placement(placement)
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS} (gap class of the two pairs), got {level!r}")
    pairs = (_pair(rng, level), _pair(rng, level))
    ops = []
    for _ in range(2):
        name = rng.choice(list(OPERATIONS))
        ops.append((name, rng.choice(ADD_OPERANDS if name == "Add" else MUL_OPERANDS)))
    text = problem_text(pairs, ops)
    return Problem(id=f"compass-L{level}-{_digest(text)[:12]}", problem=text,
                   answer=str(answer_for(max(pairs[0]), max(pairs[1]), ops)), source=placement, level=level)


def solution_steps(problem: Problem | str, placement: str, rng: random.Random | None = None,
                   wrong: tuple[bool, bool] = (False, False)) -> list[str]:
    """The solution's steps in `placement`'s layout. rng=None: the canonical wordings; otherwise the two
    restatements' wordings are drawn from rng (outcome-neutral; drawn in the same order whatever the
    placement). wrong[i] (pre-training data only) makes decision i pick the smaller number; the later
    steps carry on from it, as a solver who chose wrongly would."""
    _check_placement(placement)
    text = problem.problem if isinstance(problem, Problem) else problem
    pairs, ops = parse_problem(text)
    pick = rng.choice if rng is not None else (lambda options: options[0])
    x, y = (min(p) if w else max(p) for p, w in zip(pairs, wrong))
    ra, rb, rc = apply(x, ops[0]), apply(y, ops[1]), x + y
    total = ra + rb + rc
    (a, b), (c, d) = pairs
    step = {
        "first": FIRST_STEP,
        "R1": pick(RESTATEMENTS).format(a=a, b=b),
        "R2": pick(RESTATEMENTS).format(a=c, b=d),
        "D1": f"x is {x}.",
        "A": f"(a) {x}{OPERATIONS[ops[0][0]]}{ops[0][1]}={ra}",
        "D2": f"y is {y}.",
        "B": f"(b) {y}{OPERATIONS[ops[1][0]]}{ops[1][1]}={rb}",
        "C": f"(c) {x}+{y}={rc}",
        "sum1": f"{ra}+{rb}={ra + rb}",
        "sum2": f"{ra + rb}+{rc}={total}",
        "boxed": f"\\boxed{{{total}}}",
    }
    return [step[name] for name in LAYOUT[placement]]


def gold_solution(problem: Problem | str, placement: str, rng: random.Random | None = None) -> str:
    return "\n\n".join(solution_steps(problem, placement, rng))


def sft_solution(problem: Problem, placement: str, rng: random.Random) -> str:
    """A pre-training solution: each decision wrong w.p. DECISION_ERROR[level] (drawn first, so the
    draws are the same for both placements), then the restatement wordings."""
    e = DECISION_ERROR[problem.level]
    wrong = (rng.random() < e, rng.random() < e)
    return "\n\n".join(solution_steps(problem, placement, rng, wrong))


def test_problems(n: int = 500, placement: str = "early") -> list[Problem]:
    """The fixed held-out set: n distinct test-split problems, levels interleaved 1,2,3,4,1,..."""
    _check_placement(placement)
    return draw_test_split(lambda rng, lv: make_problem(rng, lv, placement), is_test_problem, LEVELS, TEST_SEED, n)


def train_problems(n: int, seed: int = 0, levels: tuple[int, ...] = LEVELS, placement: str = "early") -> list[Problem]:
    """n training problems (level uniform over `levels`), never from the test split."""
    _check_placement(placement)
    return draw_train_split(lambda rng, lv: make_problem(rng, lv, placement), is_test_problem, levels, n, seed)
