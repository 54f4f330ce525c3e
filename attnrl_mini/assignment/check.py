"""`assignment check` (run in CI): the assignment is sound.

  1. every exercise has a region in the source, >= 1 graded test and >= 3 planted bugs; every graded
     test counts for a listed exercise
  2. the reference passes every graded test
  3. stubbing one exercise fails each of its graded tests with its message, while the tests of every
     other exercise still pass (a test that calls another exercise's function patches in a plain
     version of it, so each exercise is graded on its own)
  4. every planted bug is caught by its exercise's graded tests
  5. a student copy of all parts (A-D) holds no line of any exercise's solution (nor a near copy of one);
     graded as a submission (grade.py: regions spliced into a clean copy, record in a subprocess,
     replay here) every graded test fails with its exercise's message, its unanswered PART_D.json
     scores nothing, and it scores 0
  6. part D's scoring (part_d.py) on a fixed table of counts, without running the study: the true
     counts score full, the published shares times the fork count and a malformed file do not
  7. the end-to-end checks (short "ci" length) pass on the reference

The stub and planted-bug runs swap one function's code in this process (regions.changed_function)
and call the graded test functions directly (no pytest session per run), so they take seconds.
"""
from __future__ import annotations

import ast
import difflib
import re
import os
import tempfile
import time
import warnings

from . import e2e, grade, part_d, regions, sandbox
from .build import REPO, build
from .planted import PLANTED
from .registry import BY_ID, EXERCISES, PARTS, QUESTIONS, exercise_of_test

ALL_PARTS = ",".join(PARTS)


MIN_PLANTED = 3          # planted bugs per exercise, at least
_modules: dict[str, object] = {}


def _test_function(node_id: str):
    path, name = node_id.split("::")
    return sandbox.load_test_function(os.path.join(REPO, path), name, _modules)


def run_tests(node_ids: list[str], stop_first: bool = False) -> dict[str, tuple[bool, str]]:
    """Call graded test functions directly (they take no fixtures): {nodeid: (passed, failure text)}."""
    results = {}
    for node in node_ids:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _test_function(node)()
            results[node] = (True, "")
        except Exception as err:  # noqa: BLE001 - any failure of a test is a failed test
            results[node] = (False, f"{type(err).__name__}: {err}")
            if stop_first:
                break
    return results


def _graded_test_names() -> dict[str, list[str]]:
    """{test file: [test function names]} of tests/graded/."""
    out = {}
    folder = os.path.join(REPO, "tests", "graded")
    for name in sorted(os.listdir(folder)):
        if name.startswith("test_") and name.endswith(".py"):
            with open(os.path.join(folder, name)) as f:
                tree = ast.parse(f.read())
            out[f"tests/graded/{name}"] = [n.name for n in tree.body
                                           if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    return out


def check_registry() -> list[str]:
    problems = []
    marked = {}
    for module in regions.all_marked_modules():
        with open(regions.module_file(module)) as f:
            for xid in regions.find_regions(f.read(), module):
                marked[xid] = module
    for e in EXERCISES:
        if marked.get(e.id) != e.module:
            problems.append(f"{e.id}: no solution region in {e.module}")
        if not e.tests:
            problems.append(f"{e.id}: no graded test")
        if sum(b.exercise == e.id for b in PLANTED) < MIN_PLANTED:
            problems.append(f"{e.id}: fewer than {MIN_PLANTED} planted bugs")
        problems += [f"{e.id}: unknown dependency {d}" for d in e.depends_on if d not in BY_ID]
    problems += [f"region {x} in {m} has no exercise" for x, m in marked.items() if x not in BY_ID]
    listed = {n for e in EXERCISES for n in e.node_ids}
    problems += [f"{e.id} lists {t}, whose name says exercise {exercise_of_test(t)}"
                 for e in EXERCISES for t in e.tests if exercise_of_test(t) != e.id]
    existing = {f"{path}::{name}" for path, names in _graded_test_names().items() for name in names}
    problems += [f"{n} is not listed by any exercise" for n in sorted(existing - listed)]
    problems += [f"{n} is listed but does not exist" for n in sorted(listed - existing)]
    return problems


def _normalise(line: str) -> str:
    """A code line without its comment and whitespace (so re-indented or re-spaced copies still match)."""
    return re.sub(r"\s+", "", line.split("#")[0])


SCANNED = (".py", ".md", ".txt", ".json", ".ini", ".sh", ".toml", ".cfg", ".ipynb")
MIN_SCANNED = 16          # shorter normalised lines (`return W`, `else:`) say nothing on their own


# Solution lines that also say nothing specific: the same line is ordinary code elsewhere in the package.
GENERIC = {_normalise(line) for line in ("R = max(len(r) for r in responses)",     # trainer.py pads the same way
                                         "for child in node.children:",            # every tree walk in tree.py
                                         "rng = random.Random(seed)")}             # worlds/toy/problems.py seeds so


def scan_for_solutions(copy_dir: str, similarity: float = 0.9) -> list[str]:
    """Lines of a student copy equal or near (difflib ratio >= similarity) to a line of any exercise's
    reference region: ["file:line: exercise X: text"]."""
    solution: dict[str, str] = {}
    for e in EXERCISES:
        for line in regions.region_text(e).splitlines():
            n = _normalise(line)
            if len(n) >= MIN_SCANNED and n not in GENERIC:
                solution.setdefault(n, e.id)
    lines_of: dict[str, tuple[str, int, str]] = {}          # normalised line -> (file, line number, text), first seen
    for dirpath, _, filenames in os.walk(copy_dir):
        for name in sorted(filenames):
            if name.endswith(SCANNED):
                path = os.path.join(dirpath, name)
                with open(path, errors="replace") as f:
                    for i, line in enumerate(f.read().splitlines()):
                        n = _normalise(line)
                        if len(n) >= MIN_SCANNED:
                            lines_of.setdefault(n, (os.path.relpath(path, copy_dir), i + 1, line.strip()))
    by_length: dict[int, list[str]] = {}
    for n in lines_of:
        by_length.setdefault(len(n), []).append(n)
    grams = {n: {n[i:i + 3] for i in range(len(n) - 2)} for n in lines_of}     # a cheap filter before difflib
    hits = []
    for cand, xid in solution.items():
        sm = difflib.SequenceMatcher(None, autojunk=False)
        sm.set_seq2(cand)                                   # difflib caches the second sequence
        cand_grams = {cand[i:i + 3] for i in range(len(cand) - 2)}
        for length in range(int(len(cand) * similarity), int(len(cand) / similarity) + 2):
            for n in by_length.get(length, ()):
                if n != cand:
                    if len(cand_grams & grams[n]) < 0.7 * max(len(cand_grams), len(grams[n])):
                        continue
                    sm.set_seq1(n)
                    if sm.ratio() < similarity:
                        continue
                rel, i, text = lines_of[n]
                hits.append(f"{rel}:{i}: exercise {xid}: {text[:100]}")
    return sorted(set(hits))


# A fixed table of counts (seed 101's run) and the published shares of docs/compass.md times the counts of
# the short study (96 initial responses, 192 forks per world and selector).
_TRUTH = {"early.initial_correct": 57, "late.initial_correct": 62, "early.fci.mixed": 108, "early.entropy.mixed": 114,
          "late.fci.mixed": 62, "late.entropy.mixed": 4, "late.fci.at": 133, "late.fci.mixed_at": 58}
_PUBLISHED = {"early.initial_correct": 0.55 * 96, "late.initial_correct": 0.57 * 96, "early.fci.mixed": 0.51 * 192,
              "early.entropy.mixed": 0.50 * 192, "late.fci.mixed": 0.31 * 192, "late.entropy.mixed": 0.02 * 192,
              "late.fci.at": 0.62 * 192, "late.fci.mixed_at": 0.49 * 0.62 * 192}


def check_question_scoring() -> list[str]:
    import json
    problems = []

    def points(counts: dict) -> int:
        text = json.dumps({"student_id": "x", "counts": counts, "why": ""})
        return sum(ok for _, ok, _ in part_d.score(part_d.parse_answers(text), _TRUTH))
    if points(_TRUTH) != len(_TRUTH):
        problems.append("part D: the true counts do not score full")
    if points({k: round(v) for k, v in _PUBLISHED.items()}) >= len(_TRUTH) // 2:
        problems.append("part D: the published shares times the fork count score half or more")
    try:
        part_d.parse_answers('{"student_id": "x", "counts": {}, "why": ""}')
        problems.append("part D: an answers file without its counts is accepted")
    except ValueError:
        pass
    return problems


def check(run_e2e: bool = True, log=print) -> bool:
    t_start = time.time()
    os.chdir(REPO)
    ok = True

    def fail(msg: str) -> None:
        nonlocal ok
        ok = False
        log(f"  FAIL {msg}")

    all_nodes = [n for e in EXERCISES for n in e.node_ids]
    log(f"[check] {len(EXERCISES)} exercises, {len(all_nodes)} graded tests, {len(PLANTED)} planted bugs")
    for p in check_registry():
        fail(p)

    t = time.time()
    res = run_tests(all_nodes)
    bad = [n for n in all_nodes if not res.get(n, (False, ""))[0]]
    for n in bad:
        fail(f"reference fails {n}: {res.get(n, (False, 'not run'))[1][-500:]}")
    log(f"[check] reference passes {len(all_nodes) - len(bad)}/{len(all_nodes)} graded tests ({time.time() - t:.0f} s)")

    t = time.time()
    n_ok = 0
    for e in EXERCISES:
        with regions.stubbed(e):
            res = run_tests(all_nodes)
        good = True
        for n in e.node_ids:
            passed, text = res[n]
            if passed or f"Exercise {e.id} " not in text and f"Exercise {e.id}:" not in text:
                good = False
                fail(f"stubbed {e.id}: {n} does not fail with its message")
        for n in all_nodes:
            if n not in e.node_ids and not res[n][0]:
                good = False
                fail(f"stubbed {e.id}: {n} of another exercise fails: {res[n][1][:200]}")
        n_ok += good
    log(f"[check] stubbing each exercise fails its own tests only: {n_ok}/{len(EXERCISES)} ({time.time() - t:.0f} s)")

    t = time.time()
    caught = 0
    caught_of = {e.id: 0 for e in EXERCISES}
    for bug in PLANTED:
        e = BY_ID[bug.exercise]
        try:
            with regions.planted(e, bug.old, bug.new):
                res = run_tests(e.node_ids, stop_first=True)
        except (ValueError, SyntaxError) as err:
            fail(f"planted bug {bug.exercise} '{bug.what}' cannot be planted: {err}")
            continue
        if any(not passed for passed, _ in res.values()):
            caught += 1
            caught_of[bug.exercise] += 1
        else:
            fail(f"planted bug {bug.exercise} '{bug.what}' is not caught by {', '.join(e.tests)}")
    log(f"[check] planted bugs caught {caught}/{len(PLANTED)} ({time.time() - t:.0f} s); per exercise (caught/planted): "
        + ", ".join(f"{x} {c}/{sum(b.exercise == x for b in PLANTED)}" for x, c in caught_of.items()))

    t = time.time()
    with tempfile.TemporaryDirectory(prefix="student_copy_") as tmp:
        copy_dir = os.path.join(tmp, "copy")
        build(copy_dir, ALL_PARTS)
        hits = scan_for_solutions(copy_dir)
        for hit in hits:
            fail(f"student copy holds solution text: {hit}")
        log(f"[check] solution scan of the student copy: {len(hits)} hits ({time.time() - t:.0f} s)")
        t = time.time()
        graded = grade.grade_submission(copy_dir, ALL_PARTS, name="student copy")
        questions = {q.id for q in QUESTIONS}
        for s in graded.scores:
            if s.id in questions and (s.score != 0 or not s.outcomes or any(o.passed for o in s.outcomes)):
                fail(f"student copy: question {s.id} scores {s.score} from the template")
        outcomes = [o for s in graded.scores if s.id not in questions for o in s.outcomes]
        names = {o.name for o in outcomes}
        for name in [t for e in EXERCISES for t in e.tests if t not in names]:
            fail(f"student copy: {name} did not run")
        for o in outcomes:
            xid = exercise_of_test(o.name)
            if o.passed or f"Exercise {xid}" not in o.message:
                fail(f"student copy: {o.name} does not fail with exercise {xid}'s message: {o.message[:200]}")
        if graded.refused or graded.total != 0:
            fail(f"student copy scores {graded.total} (refused: {graded.refused}), not 0")
    log(f"[check] student copy, graded by record/replay: {len(outcomes)} graded tests, "
        f"{sum(not o.passed for o in outcomes)} fail with their exercise's message, score {graded.total:g} "
        f"({time.time() - t:.0f} s)")

    scoring_problems = check_question_scoring()
    for p in scoring_problems:
        fail(p)
    log(f"[check] part D's scoring on a fixed table (the truth scores full, the published shares under half, a "
        f"malformed file is refused): {'ok' if not scoring_problems else f'{len(scoring_problems)} problem(s)'}")

    if run_e2e:
        for part in ("A", "B", "C"):
            r = e2e.run_part(part, "ci")
            log(f"[check] e2e {r.summary()}")
            if not r.passed:
                fail(f"end-to-end check of part {part} on the reference: gain {r.gain:+.3f} < {r.min_gain}")
            if r.diverged_at is not None:
                log(f"  note: the reference run left the recorded reference at step {r.diverged_at}")
    log(f"[check] {'OK' if ok else 'FAILED'}: {len(EXERCISES)} exercises, {len(all_nodes)} graded tests, "
        f"planted bugs caught {caught}/{len(PLANTED)} ({time.time() - t_start:.0f} s)")
    return ok
