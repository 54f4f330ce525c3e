"""The grader: answer extraction, equivalence table, timeouts, and every bundled gold answer.

Run: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pytest -q tests/test_reward.py   (45-75 s: the
two Math-Verify sweeps over the benchmarks' gold answers take 12-25 s each on 2 cores)
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnrl_mini.worlds.reward import (Grader, decide_without_math_verify, extract_boxed, gold_answers, is_correct,
                                last_boxed, math_verify_equal, normalize_answer)

DATA = Path(__file__).resolve().parent.parent / "attnrl_mini" / "data"
BENCHMARK_FILES = ["math500", "aime24", "aime25", "amc23", "minerva", "olympiad"]

# ------------------------------------------------------------------------------------------------
# Extraction


@pytest.mark.parametrize("text, expected", [
    ("so the answer is \\boxed{5}.", "5"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),                     # nested braces
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),                           # escaped braces don't count
    ("first \\boxed{3}, then \\boxed{5}", "5"),                    # the last one
    ("\\fbox{7}", "7"),
    ("\\boxed {42}", "42"),                                        # a space before the brace
    ("<think>maybe \\boxed{1}</think> so \\boxed{2}", "2"),
    ("<think>\\boxed{1}</think>a</think> \\boxed{3}", "3"),        # after the LAST </think>
    ("<think>\\boxed{1}</think> The answer is 1.", None),          # boxed only inside the thinking
    ("<think>still thinking \\boxed{4}", "4"),                     # no </think>: the whole text
    ("the answer is \\boxed{12", None),                            # truncated: unclosed
    ("\\boxed{3} ... \\boxed{", None),                             # the LAST boxed is unclosed
    ("\\boxed{}", None),                                           # empty box
    ("no box here: 5", None),
    ("", None),
    (None, None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_last_boxed_handles_double_backslash_before_brace():
    # "\\\\" is a LaTeX line break (two backslashes): the brace after it is a real brace.
    assert last_boxed("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}") == "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"


def test_gold_answers_unwraps_boxed_and_lists():
    assert gold_answers("\\boxed{7}") == ["7"]
    assert gold_answers(["0.01\n", "0.02\n"]) == ["0.01", "0.02"]
    with pytest.raises(ValueError, match="ground truth"):
        gold_answers([])
    with pytest.raises(ValueError, match="ground truth"):
        gold_answers(3)


@pytest.mark.parametrize("raw, normalized", [
    ("\\dfrac{3}{4}", "\\frac{3}{4}"),
    ("\\frac34", "\\frac{3}{4}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("90^\\circ", "90"),
    ("10 \\text{ cm}", "10"),
    ("\\$32,\\!348", "32348"),
    ("x = 5", "5"),
    ("\\sqrt2", "\\sqrt{2}"),
    (".5", "0.5"),
    ("-3/4", "-\\frac{3}{4}"),
    ("\\text{(C)}", "(C)"),
    ("1,2", "1,2"),                 # not a thousands separator: stays a list of answers
    ("1 = 5", "1=5"),               # only a variable-like left side is dropped
    ("ab = 3", "3"),
    ("½", "\\frac{1}{2}"),           # unicode math -> LaTeX
    ("√2", "\\sqrt{2}"),
    ("√(x+1)", "\\sqrt{x+1}"),
    ("2πr", "2\\pir"),              # spaces go last, as for LaTeX input
])
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


@pytest.mark.parametrize("pred, golds, verdict", [
    ("\\dfrac12", ["\\frac{1}{2}"], True),      # equal after normalisation
    ("17", ["18"], False),                       # two different plain numbers: no sympy needed
    ("2.50", ["2.5"], True),
    ("17", ["18", "17.0"], True),
    ("17", ["\\frac{34}{2}"], None),             # needs Math-Verify
    ("x+1", ["1+x"], None),
])
def test_decide_without_math_verify(pred, golds, verdict):
    assert decide_without_math_verify(pred, golds) is verdict


# ------------------------------------------------------------------------------------------------
# The equivalence table: (model's boxed answer, ground truth, equal?)

EQUIVALENCE_TABLE = [
    # fractions and decimals
    ("\\frac{1}{2}", "0.5", True),
    ("0.5", "\\frac{1}{2}", True),
    ("\\dfrac{3}{4}", "\\frac{3}{4}", True),
    ("\\tfrac34", "\\frac{3}{4}", True),
    ("3/4", "\\frac{3}{4}", True),
    ("-\\frac{1}{3}", "-1/3", True),
    ("1.25", "\\frac{5}{4}", True),
    (".35625", "0.35625", True),
    ("2.0", "2", True),
    ("0.50", "0.5", True),
    ("-0", "0", True),
    ("\\frac{1}{3}", "0.5", False),
    ("0.33", "\\frac{1}{3}", False),
    ("\\frac{2}{1}", "\\frac{1}{2}", False),
    ("-5", "5", False),
    ("12", "21", False),
    # LaTeX spellings, tuples
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("(3, \\frac{\\pi}{2})", "(3, \\frac{\\pi}{3})", False),
    ("\\text{(C)}", "C", True),
    ("\\text{(B)}", "\\text{(C)}", False),
    ("\\text{Evelyn}", "Evelyn", True),
    ("10,080", "10080", True),
    ("\\$32,\\!348", "32348", True),
    ("1000", "1,000", True),
    ("100", "1,000", False),
    # an equation answers the gold only if its left side is a variable or equals the gold too
    ("1=5", "5", False),
    ("1 = 5", "5", False),
    ("2+3=5", "5", True),
    ("x = 5", "5", True),
    # unicode math symbols
    ("½", "\\frac{1}{2}", True),
    ("¾", "0.75", True),
    ("√2", "\\sqrt{2}", True),
    ("2√3", "2\\sqrt{3}", True),
    ("−3", "-3", True),
    ("√3", "\\sqrt{2}", False),
    ("⅓", "\\frac{1}{2}", False),
    # intervals and sets, several answers
    ("(1, 2]", "(1,2]", True),
    ("(1,2)", "(1,2]", False),
    ("[1,2]", "(1,2)", False),
    ("(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty,0)\\cup(1,\\infty)", True),
    ("\\{1, 2\\}", "\\{2, 1\\}", True),
    ("\\{1,2\\}", "\\{1,2,3\\}", False),
    ("1, 2", "2, 1", True),
    ("1, 2", "1, 2, 3", False),
    # units and degrees
    ("10", "10 \\text{ cm}", True),
    ("10\\text{ cm}", "10", True),
    ("11", "10 \\text{ cm}", False),
    ("90", "90^\\circ", True),
    ("90^{\\circ}", "90^\\circ", True),
    ("45^\\circ", "90^\\circ", False),
    ("50\\%", "50", True),
    ("\\frac{270}{7}", "\\frac{270}7\\text{ degrees}", True),
    # pi, roots, powers, expressions
    ("\\pi", "\\pi", True),
    ("2\\pi", "\\pi \\cdot 2", True),
    ("3.14", "\\pi", False),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("\\sqrt2", "\\sqrt{2}", True),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True),
    ("\\sqrt{3}", "\\sqrt{2}", False),
    ("2\\sqrt{2}", "\\sqrt{2}", False),
    ("2^{10}", "1024", True),
    ("1025", "2^{10}", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+1", "(x+1)^2", False),
    ("6 - 5i", "6-5i", True),
    ("6+5i", "6-5i", False),
    # equations with a variable on the left
    ("x = 5", "5", True),
    ("5", "x=5", True),
    ("x = 6", "5", False),
    # matrices
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    ("\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", False),
    # several acceptable ground truths (a list): any may match
    ("0.02", ["0.01", "0.02"], True),
    ("0.03", ["0.01", "0.02"], False),
]


def test_table_is_big_and_balanced():
    assert len(EQUIVALENCE_TABLE) >= 40
    assert sum(eq for *_, eq in EQUIVALENCE_TABLE) >= 20
    assert sum(not eq for *_, eq in EQUIVALENCE_TABLE) >= 20


@pytest.mark.parametrize("pred, gold, equal", EQUIVALENCE_TABLE)
def test_is_correct_table(pred, gold, equal):
    assert is_correct(f"The final answer is $\\boxed{{{pred}}}$.", gold) is equal


def test_grader_agrees_with_is_correct_on_the_table():
    """The pool (fast path + workers) gives the same verdicts as the in-process function."""
    texts = [f"so \\boxed{{{pred}}}" for pred, _, _ in EQUIVALENCE_TABLE]
    golds = [gold for _, gold, _ in EQUIVALENCE_TABLE]
    with Grader(workers=2, timeout=30.0) as grader:
        rewards = grader.grade(texts, golds)
        stats = grader.stats()
    assert rewards == [1.0 if equal else 0.0 for *_, equal in EQUIVALENCE_TABLE]
    assert stats["graded"] == len(EQUIVALENCE_TABLE) and stats["timeouts"] == 0
    assert stats["correct"] == sum(eq for *_, eq in EQUIVALENCE_TABLE)
    assert stats["fast_path"] + stats["worker_calls"] == len(EQUIVALENCE_TABLE)
    assert stats["fast_path"] > 0 and stats["worker_calls"] > 0


# ------------------------------------------------------------------------------------------------
# Empty / truncated responses, counters


def test_empty_and_truncated_responses_are_incorrect_and_counted():
    texts = ["", None, "Let me compute 2+2 step by step and the answer is \\boxed{4", "<think>\\boxed{4}</think>",
             "\\boxed{4}"]
    with Grader(workers=1) as grader:
        assert grader.grade(texts, ["4"] * 5) == [0.0, 0.0, 0.0, 0.0, 1.0]
        stats = grader.stats()
    assert stats["parse_failures"] == 4 and stats["correct"] == 1 and stats["graded"] == 5
    assert stats["worker_calls"] == 0  # no worker started for any of these (all decided in-process)


def test_grader_rejects_mismatched_lengths_and_bad_arguments():
    with pytest.raises(ValueError, match="2 texts but 1 answers"):
        Grader(workers=1).grade(["a", "b"], ["1"])
    with pytest.raises(ValueError, match="at least 1 worker"):
        Grader(workers=0)
    with pytest.raises(ValueError, match="timeout"):
        Grader(timeout=0)


# ------------------------------------------------------------------------------------------------
# Timeouts: a pathological answer is cut off, counted, and its worker really killed.

# sympy evaluates 9^(9^9) = 9^387420489 exactly (a 370-million-digit integer): minutes of work.
PATHOLOGICAL = "\\boxed{9^{9^{9}}}"


def test_pathological_answer_times_out_and_the_worker_is_replaced():
    # 2 s: minutes short of what 9^{9^{9}} needs, ~100x what the ordinary answers below need.
    with Grader(workers=1, timeout=2.0) as grader:
        assert grader.grade(["\\boxed{2^{10}}"], ["1024"]) == [1.0]   # worker up, through Math-Verify
        stuck_process = grader._workers[0].process
        rewards = grader.grade([PATHOLOGICAL, "\\boxed{\\sqrt{8}}"], ["1", "2\\sqrt{2}"])
        assert rewards == [0.0, 1.0]   # the other call still got its answer
        stats = grader.stats()
        assert stats["timeouts"] == 1 and stats["errors"] == 0
        assert not stuck_process.is_alive()                   # the stuck worker was killed...
        assert grader._workers[0].process is not stuck_process  # ...and replaced
        assert grader.grade(["\\boxed{0.5}"], ["\\frac{1}{2}"]) == [1.0]   # the new one works
        assert grader.stats()["timeouts"] == 1


def test_a_worker_killed_from_outside_is_replaced():
    with Grader(workers=1, timeout=30.0) as grader:
        assert grader.grade(["\\boxed{2^{10}}"], ["1024"]) == [1.0]
        victim = grader._workers[0].process
        victim.kill()
        victim.join()
        assert grader.grade(["\\boxed{\\sqrt{8}}"], ["2\\sqrt{2}"]) == [1.0]
        assert grader._workers[0].process is not victim and grader.stats()["errors"] == 0


def test_close_stops_every_worker():
    grader = Grader(workers=2)
    grader.grade(["\\boxed{0.5}"], ["\\frac12 + 0"])
    processes = [w.process for w in grader._workers]
    assert len(processes) == 2 and all(p.is_alive() for p in processes)
    grader.close()
    assert not any(p.is_alive() for p in processes)


# ------------------------------------------------------------------------------------------------
# Every bundled benchmark's gold answer, boxed, is graded correct.

# Known exceptions: (problem id, gold) -> why. None today; a new failure fails the test.
KNOWN_GOLD_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _boxed_golds():
    """(benchmark, problem id, gold string, full answer) for every acceptable gold of every problem."""
    items = []
    for name in BENCHMARK_FILES:
        for line in (DATA / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
            items += [(name, row["id"], gold, row["answer"]) for gold in answers]
    return items


def _check_gold_sweep(fast_path: bool):
    items = _boxed_golds()
    assert len(items) == 1625
    if not fast_path:  # the slow sweep grades each distinct (gold, ground truth) pair once: 1,187 of them
        seen: set = set()
        items = [it for it in items if not ((it[0], it[2], str(it[3])) in seen or seen.add((it[0], it[2], str(it[3]))))]
    with Grader(workers=2, timeout=30.0, fast_path=fast_path) as grader:  # generous: busy CI machines
        rewards = grader.grade([f"\\boxed{{{gold}}}" for _, _, gold, _ in items],
                               [answer for *_, answer in items])
        stats = grader.stats()
    failures = {(pid, gold) for (_, pid, gold, _), r in zip(items, rewards) if r == 0.0}
    rates = {name: sum(r for (bench, *_), r in zip(items, rewards) if bench == name) for name in BENCHMARK_FILES}
    assert failures - set(KNOWN_GOLD_EXCEPTIONS) == set(), f"new gold answers graded wrong; correct per benchmark: {rates}"
    assert stats["timeouts"] == 0 and stats["errors"] == 0
    assert stats["worker_calls"] == (0 if fast_path else len(items))


def test_every_bundled_gold_answer_is_graded_correct():
    _check_gold_sweep(fast_path=True)


def test_every_bundled_gold_answer_passes_math_verify():
    """The same through the worker pool and Math-Verify, no cheap path (12-25 s on 2 cores)."""
    _check_gold_sweep(fast_path=False)


def test_cheap_path_agrees_with_math_verify_on_real_answers():
    """Cross-check of the cheap path against Math-Verify on the benchmarks' own gold answers:
    (a) golds that normalise to the same string (54 pairs: "\\frac43" / "\\frac{4}{3}", ...) are
    equal for Math-Verify too; (b) distinct plain-number golds (decided False without sympy) are
    different for Math-Verify too."""
    golds = sorted({gold.strip() for _, _, gold, _ in _boxed_golds()})
    by_form: dict[str, list[str]] = {}
    for gold in golds:
        by_form.setdefault(normalize_answer(gold), []).append(gold)
    merged = [(group[0], other) for group in by_form.values() for other in group[1:]]
    assert len(merged) >= 50
    assert [pair for pair in merged if not math_verify_equal(pair[1], pair[0])] == []
    numbers = [g for g in golds if decide_without_math_verify(g, ["0"]) is not None][:60]
    pairs = list(zip(numbers, numbers[1:]))
    assert len(pairs) >= 50 and all(decide_without_math_verify(a, [b]) is False for a, b in pairs)
    assert [pair for pair in pairs if math_verify_equal(pair[0], pair[1])] == []


# Gold answers Math-Verify cannot turn into a sympy object: only the exact same string (after
# normalisation) can match them, an equivalent rewriting cannot. (problem id, gold) -> why.
KNOWN_UNPARSED_GOLDS: dict[tuple[str, str], str] = {
    ("minerva-27", "\\frac{dM}{dt}=\\frac{10^{5} L_{\\odot}}{0.007 c^{2} M_{\\odot}^{6}} M^{6}"):
        "a differential equation with \\odot subscripts: the LaTeX parser gives up",
    ("minerva-266", "E_{1},E_{2}"): "a list of two subscripted symbols (names of energy levels) is not parsed",
    ("minerva-270", "E_1, E_2"): "same as minerva-266",
    ("olympiad-34", "$m_{\\max }=n^{2}-n-1$"): "the subscript \\max is not parsed",
    ("olympiad-95", "$t(0,4]$"): "'t' followed by a half-open interval is not an expression",
}


def test_math_verify_parses_every_gold_answer_to_sympy():
    """Beyond string equality: Math-Verify must understand the gold answers (in-process, 12-20 s)."""
    from math_verify import parse

    unparsed, verdicts = set(), {}
    for _, pid, gold, _ in _boxed_golds():
        gold = gold.strip()
        if gold not in verdicts:  # 1,035 distinct strings
            parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)
            verdicts[gold] = bool(parsed) and not isinstance(parsed[0], str)
        if not verdicts[gold]:
            unparsed.add((pid, gold))
    assert unparsed - set(KNOWN_UNPARSED_GOLDS) == set(), "new gold answers that Math-Verify cannot parse"
    assert set(KNOWN_UNPARSED_GOLDS) - unparsed == set(), "a known exception is fixed: remove it from the list"
