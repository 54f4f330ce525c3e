"""Grade a copy: run its graded (and hidden) tests in a fresh interpreter, score each exercise, and
write a Gradescope-style results.json (score / max_score / output per exercise) and a terminal table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from .build import GRADED_TESTS, HIDDEN_TESTS, MANIFEST
from .registry import BY_ID, EXERCISES, exercise_of_test


@dataclass
class TestOutcome:
    name: str
    passed: bool
    message: str = ""


@dataclass
class ExerciseScore:
    id: str
    title: str
    max_score: float
    outcomes: list[TestOutcome] = field(default_factory=list)

    @property
    def score(self) -> float:
        if not self.outcomes:
            return 0.0
        return round(self.max_score * sum(o.passed for o in self.outcomes) / len(self.outcomes), 4)


def run_tests(copy_dir: str, timeout: float = 900.0) -> list[TestOutcome]:
    """pytest on the copy's graded (and hidden) tests, in a subprocess that imports the copy's package."""
    dirs = [d for d in (GRADED_TESTS, HIDDEN_TESTS) if os.path.isdir(os.path.join(copy_dir, d))]
    if GRADED_TESTS not in dirs:
        raise FileNotFoundError(f"{copy_dir} has no {GRADED_TESTS} folder (is it a copy built by `assignment build`?)")
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = os.path.join(tmp, "junit.xml")
        env = {**os.environ, "PYTHONPATH": os.path.abspath(copy_dir), "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run([sys.executable, "-m", "pytest", *dirs, "-q", "-p", "no:cacheprovider",
                               "--rootdir", ".", "-o", "junit_family=xunit2", f"--junitxml={xml_path}"],
                              cwd=copy_dir, env=env, capture_output=True, text=True, timeout=timeout)
        if not os.path.exists(xml_path):
            raise RuntimeError(f"pytest produced no report in {copy_dir}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        root = ET.parse(xml_path).getroot()
    outcomes = []
    for case in root.iter("testcase"):
        bad = [c for c in case if c.tag in ("failure", "error")]
        skipped = any(c.tag == "skipped" for c in case)
        message = "" if not bad else (bad[0].get("message") or "") + "\n" + (bad[0].text or "")
        outcomes.append(TestOutcome(case.get("name"), passed=not bad and not skipped,
                                    message=message.strip() if bad else ("skipped" if skipped else "")))
    return outcomes


def score(copy_dir: str, outcomes: list[TestOutcome]) -> list[ExerciseScore]:
    """Per exercise of the copy's manifest (every exercise when there is none)."""
    manifest = os.path.join(copy_dir, MANIFEST)
    ids = json.load(open(manifest))["exercises"] if os.path.exists(manifest) else [e.id for e in EXERCISES]
    scores = {i: ExerciseScore(i, BY_ID[i].title, BY_ID[i].points) for i in ids}
    for o in outcomes:
        xid = exercise_of_test(o.name)
        if xid in scores:
            scores[xid].outcomes.append(o)
    return list(scores.values())


def results_json(scores: list[ExerciseScore]) -> dict:
    """Gradescope's results.json format."""
    tests = []
    for s in scores:
        lines = [f"{'PASS' if o.passed else 'FAIL'} {o.name}" + (f"\n    {o.message.splitlines()[0][:300]}"
                 if o.message else "") for o in s.outcomes] or ["no graded test ran"]
        tests.append({"name": f"{s.id} {s.title}", "number": s.id, "score": s.score, "max_score": s.max_score,
                      "output": "\n".join(lines)})
    total = sum(s.score for s in scores)
    return {"score": round(total, 4), "output": f"{total:g} / {sum(s.max_score for s in scores):g} points",
            "tests": tests}


def table(scores: list[ExerciseScore]) -> str:
    width = max([len("title")] + [len(s.title) for s in scores]) + 2     # full titles, never cut
    rows = [f"{'exercise':<10}{'title':<{width}}{'tests':>9}{'score':>13}"]
    for s in scores:
        passed = sum(o.passed for o in s.outcomes)
        rows.append(f"{s.id:<10}{s.title:<{width}}{f'{passed}/{len(s.outcomes)}':>9}"
                    f"{f'{s.score:g}/{s.max_score:g}':>13}")
    total, max_total = sum(s.score for s in scores), sum(s.max_score for s in scores)
    rows.append(f"{'total':<10}{'':<{width}}{'':>9}{f'{total:g}/{max_total:g}':>13}")
    return "\n".join(rows)


def grade(copy_dir: str, results_path: str | None = None) -> tuple[list[ExerciseScore], dict]:
    scores = score(copy_dir, run_tests(copy_dir))
    results = results_json(scores)
    results_path = results_path or os.path.join(copy_dir, "results.json")
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)
    return scores, results
