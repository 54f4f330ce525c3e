"""Grade submissions with code they cannot change: only their exercise regions are used.

For each submission (a folder or a zip, e.g. the one `assignment pack` writes):
  1. compare it with the distributed copy, built here from this checkout: every file it holds must be
     identical, except the text between `# BEGIN SOLUTION <id>` and `# END SOLUTION <id>` of the
     files that hold exercises. A submission with any other difference (a changed grade.py, an added
     conftest.py, a changed package __init__.py, ...) is refused: it scores 0 and the report lists
     the refused files;
  2. splice its regions into a clean copy of the distributed files;
  3. run the graded (and hidden) tests in a subprocess in that copy, logging what the exercise
     functions return (sandbox.record), then run the trusted tests of this checkout here against
     those logs (sandbox.replay): the assertions, the scores and the report never run in the
     submission's process;
  4. write a Gradescope-style results.json (score / max_score / output per exercise) per submission
     and, for a folder of submissions, a class summary (summary.csv + a table).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field

from . import part_d, sandbox
from .build import REPO, build, hidden_test_names
from .pack import IGNORED_DIRS, MANIFEST, copy_files
from .regions import find_regions, outside_regions
from .registry import BY_ID, DEFAULT_PARTS, Question, exercise_of_test, exercises_of, questions_of

HIDDEN_DEST = os.path.join("tests", "hidden")


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
    note: str = ""

    @property
    def score(self) -> float:
        if not self.outcomes:
            return 0.0
        return round(self.max_score * sum(o.passed for o in self.outcomes) / len(self.outcomes), 4)


@dataclass
class Graded:
    name: str
    scores: list[ExerciseScore]
    refused: list[str]          # why the submission was refused ([] = graded)

    @property
    def total(self) -> float:
        return round(sum(s.score for s in self.scores), 4)


# ---- 1. the submission against the distributed copy -----------------------------------------------------

def _region_texts(text: str, where: str) -> dict[str, str]:
    lines = text.splitlines(keepends=True)
    return {x: "".join(lines[b + 1:e]) for x, (b, e, _) in find_regions(text, where).items()}


def compare(submission: str, distributed: str, exercise_ids: list[str],
            answers_files: tuple[str, ...] = ()) -> tuple[dict[str, str], list[str]]:
    """({exercise id: the submission's region text}, [refused file: why]). The answers files (part D's
    PART_D.json) may differ: they are data, read and validated on their own (part_d.parse_answers)."""
    regions, refused = {}, []
    dist_files, sub_files = copy_files(distributed), copy_files(submission)
    refused += [f"{f}: not in the distributed copy" for f in sorted(sub_files - dist_files)]
    for rel in sorted(sub_files & dist_files):
        if rel in answers_files:
            continue
        with open(os.path.join(distributed, rel), "rb") as f:
            want = f.read()
        with open(os.path.join(submission, rel), "rb") as f:
            got = f.read()
        if got == want:
            if rel.endswith(".py"):
                regions.update({x: t for x, t in _region_texts(got.decode(), rel).items() if x in exercise_ids})
            continue
        if not rel.endswith(".py"):
            refused.append(f"{rel}: differs from the distributed copy")
            continue
        try:
            got_text, want_text = got.decode(), want.decode()
            theirs, ours = find_regions(got_text, rel), find_regions(want_text, rel)
        except (UnicodeDecodeError, ValueError) as err:
            refused.append(f"{rel}: its solution markers are damaged ({err})")
            continue
        if not ours:
            refused.append(f"{rel}: differs from the distributed copy (it holds no exercise)")
        elif set(theirs) != set(ours):
            refused.append(f"{rel}: solution markers added or removed ({', '.join(sorted(set(theirs) ^ set(ours)))})")
        elif outside_regions(got_text, rel) != outside_regions(want_text, rel):
            refused.append(f"{rel}: differs from the distributed copy outside the exercise regions")
        else:
            regions.update({x: t for x, t in _region_texts(got_text, rel).items() if x in exercise_ids})
    return regions, refused


def splice(distributed: str, regions: dict[str, str], out: str) -> None:
    """A copy of the distributed files with the submission's region texts put inside their markers."""
    shutil.copytree(distributed, out)
    for rel in copy_files(out):
        if not rel.endswith(".py"):
            continue
        path = os.path.join(out, rel)
        with open(path) as f:
            text = f.read()
        found = {x: r for x, r in find_regions(text, rel).items() if x in regions}
        if not found:
            continue
        lines = text.splitlines(keepends=True)
        for xid, (begin, end, _) in sorted(found.items(), key=lambda kv: -kv[1][0]):
            lines[begin + 1:end] = [regions[xid]]
        with open(path, "w") as f:
            f.write("".join(lines))


def unpack(path: str, tmp: str) -> str:
    """The submission's root folder: `path` itself, or a zip's contents (one top folder is entered)."""
    if os.path.isdir(path):
        return path
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is neither a folder nor a zip file")
    dest = os.path.join(tmp, "unzipped")
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            name = os.path.normpath(info.filename)
            if name.startswith(("..", "/")) or os.path.isabs(name):
                raise ValueError(f"{path}: entry {info.filename!r} points outside the zip")
        z.extractall(dest)
    entries = [e for e in os.listdir(dest) if e not in IGNORED_DIRS and e != "__MACOSX"]
    if len(entries) == 1 and os.path.isdir(os.path.join(dest, entries[0])):
        return os.path.join(dest, entries[0])
    return dest


# ---- 2-3. record in a subprocess, replay here ------------------------------------------------------------

def _test_nodes(exercise_ids: list[str], overlay: str | None) -> list[tuple[str, str]]:
    """[(node id relative to a copy, trusted file path)] of the graded and hidden tests of the exercises."""
    nodes = [(n, os.path.join(REPO, n.split("::")[0])) for x in exercise_ids for n in BY_ID[x].node_ids]
    if overlay:
        for rel, name in hidden_test_names(overlay):
            if exercise_of_test(name) in exercise_ids:
                nodes.append((f"{HIDDEN_DEST}/{rel}::{name}", os.path.join(overlay, rel)))
    return nodes


def _recording_env(copy_dir: str) -> dict:
    keep = ("PATH", "HOME", "LANG", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(PYTHONPATH=copy_dir, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONDONTWRITEBYTECODE="1")
    return env


def run_submission(copy_dir: str, nodes: list[tuple[str, str]], exercise_ids: list[str],
                   timeout: float) -> dict[str, tuple[bool, str]]:
    with tempfile.TemporaryDirectory(prefix="assignment_log_") as logs:
        try:
            subprocess.run([sys.executable, "-m", "attnrl_mini.assignment.sandbox", logs, ",".join(exercise_ids),
                            *[n for n, _ in nodes]], cwd=copy_dir, env=_recording_env(copy_dir),
                           capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            pass                                 # the tests it finished have their logs
        recorded = sandbox.read_logs(logs)
    return sandbox.replay(recorded, nodes, exercise_ids)


# ---- the whole thing -------------------------------------------------------------------------------------

def grade_submission(path: str, parts: str = DEFAULT_PARTS, overlay: str | None = None, timeout: float = 900.0,
                     name: str | None = None, study_cache: str | None = None) -> Graded:
    """Grade one submission. study_cache: where part D's reruns are kept per seed (None: not kept)."""
    chosen = [e.id for e in exercises_of(parts)]
    questions = questions_of(parts)
    name = name or os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    with tempfile.TemporaryDirectory(prefix="assignment_grade_") as tmp:
        scores = [ExerciseScore(x, BY_ID[x].title, BY_ID[x].points) for x in chosen]
        scores += [ExerciseScore(q.id, q.title, q.points) for q in questions]
        try:
            submission = unpack(path, tmp)
        except (ValueError, zipfile.BadZipFile) as err:
            return Graded(name, _all_refused(scores, [str(err)]), [str(err)])
        distributed = os.path.join(tmp, "distributed")
        build(distributed, parts)
        regions, refused = compare(submission, distributed, chosen, tuple(q.answers_file for q in questions))
        if refused:
            return Graded(name, _all_refused(scores, refused), refused)
        answer_texts = {}
        for q in questions:
            p = os.path.join(submission, q.answers_file)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    answer_texts[q.id] = f.read(part_d.MAX_ANSWERS_BYTES + 1)
        spliced = os.path.join(tmp, "spliced")
        splice(distributed, regions, spliced)
        if overlay:
            shutil.copytree(overlay, os.path.join(spliced, HIDDEN_DEST), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        nodes = _test_nodes(chosen, overlay)
        results = run_submission(spliced, nodes, chosen, timeout)
    by_id = {s.id: s for s in scores}
    for node, _ in nodes:
        passed, text = results[node]
        by_id[exercise_of_test(node)].outcomes.append(TestOutcome(node.split("::")[1], passed, text))
    for s in scores:
        if s.id in BY_ID and s.id not in regions:
            s.note = "its region is not in the submission (the distributed stub was graded)"
    for q in questions:
        grade_question(q, answer_texts.get(q.id), by_id[q.id], study_cache)
    return Graded(name, scores, [])


def grade_question(q: Question, text: bytes | None, s: ExerciseScore, study_cache: str | None) -> None:
    """Part D's D2: the answers file, validated as data; each count against the rerun for its seed.
    A malformed file costs this question only, with a one-line reason."""
    if text is None:
        s.outcomes, s.note = [TestOutcome(q.answers_file, False, f"{q.answers_file} is not in the submission")], ""
        return
    try:
        answers = part_d.parse_answers(text, q.answers_file)
    except ValueError as err:
        s.outcomes, s.note = [TestOutcome(q.answers_file, False, str(err))], str(err)
        return
    seed = part_d.seed_of(answers.student_id)
    s.note = f"student id {answers.student_id!r}, seed {seed}"
    if all(v is None for v in answers.counts.values()):
        truth = {k: 0 for k in part_d.COUNTS}                  # nothing to compare: no rerun needed
    else:
        try:
            with tempfile.TemporaryDirectory(prefix="part_d_") as tmp:
                truth = part_d.reference_counts(REPO, seed, study_cache or tmp)
        except (RuntimeError, OSError, KeyError) as err:
            s.outcomes = [TestOutcome(q.answers_file, False, f"the grader's rerun of the study failed ({err}); regrade")]
            return
    s.outcomes = [TestOutcome(k, ok, msg) for k, ok, msg in part_d.score(answers, truth)]


def _all_refused(scores: list[ExerciseScore], refused: list[str]) -> list[ExerciseScore]:
    for s in scores:
        s.note = "submission refused"
    return scores


def results_json(graded: Graded) -> dict:
    """Gradescope's results.json format."""
    tests = []
    for s in graded.scores:
        lines = [f"{'PASS' if o.passed else 'FAIL'} {o.name}" + (f"\n    {o.message.splitlines()[0][:300]}"
                 if o.message else "") for o in s.outcomes] or [s.note or "no graded test ran"]
        tests.append({"name": f"{s.id} {s.title}", "number": s.id, "score": s.score, "max_score": s.max_score,
                      "output": "\n".join(lines)})
    max_total = sum(s.max_score for s in graded.scores)
    output = f"{graded.total:g} / {max_total:g} points"
    if graded.refused:
        output = ("Submission refused (score 0): it changes files outside the exercise regions, which grading "
                  "does not accept. Refused:\n" + "\n".join(f"  {r}" for r in graded.refused))
    return {"score": graded.total, "output": output, "tests": tests}


def table(graded: Graded) -> str:
    width = max([len("title")] + [len(s.title) for s in graded.scores]) + 2     # full titles, never cut
    rows = [f"{'exercise':<10}{'title':<{width}}{'tests':>9}{'score':>13}"]
    for s in graded.scores:
        passed = sum(o.passed for o in s.outcomes)
        rows.append(f"{s.id:<10}{s.title:<{width}}{f'{passed}/{len(s.outcomes)}':>9}"
                    f"{f'{s.score:g}/{s.max_score:g}':>13}")
    max_total = sum(s.max_score for s in graded.scores)
    rows.append(f"{'total':<10}{'':<{width}}{'':>9}{f'{graded.total:g}/{max_total:g}':>13}")
    if graded.refused:
        rows.append("REFUSED (score 0):\n" + "\n".join(f"  {r}" for r in graded.refused))
    return "\n".join(rows)


def submissions_in(path: str) -> list[str]:
    """One submission (a copy, or a zip), or a folder of them (one zip or folder per student)."""
    if zipfile.is_zipfile(path) or not os.path.isdir(path):
        return [path]
    if os.path.exists(os.path.join(path, MANIFEST)) or os.path.isdir(os.path.join(path, "attnrl_mini")):
        return [path]
    return [os.path.join(path, e) for e in sorted(os.listdir(path))
            if not e.startswith(".") and (e.endswith(".zip") or os.path.isdir(os.path.join(path, e)))]


def grade_all(paths: list[str], out_dir: str, parts: str = DEFAULT_PARTS, overlay: str | None = None,
              timeout: float = 900.0, log=print) -> list[Graded]:
    """Grade every submission; write OUT/<name>/results.json and OUT/summary.csv (part D's reruns are
    kept per seed in OUT/part_d_studies/)."""
    subs = [s for p in paths for s in submissions_in(p)]
    if not subs:
        raise FileNotFoundError(f"no submission (folder or .zip) in {', '.join(paths)}")
    os.makedirs(out_dir, exist_ok=True)
    graded = []
    for sub in subs:
        g = grade_submission(sub, parts, overlay, timeout, study_cache=os.path.join(out_dir, "part_d_studies"))
        graded.append(g)
        dest = os.path.join(out_dir, g.name)
        os.makedirs(dest, exist_ok=True)
        with open(os.path.join(dest, "results.json"), "w") as f:
            json.dump(results_json(g), f, indent=1)
        log(f"{g.name}: {g.total:g}" + (f" (refused: {'; '.join(g.refused)})" if g.refused else ""))
    ids = [s.id for s in graded[0].scores]
    with open(os.path.join(out_dir, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["submission", "total", *ids, "status"])
        for g in graded:
            w.writerow([g.name, f"{g.total:g}", *[f"{s.score:g}" for s in g.scores],
                        "refused: " + "; ".join(g.refused) if g.refused else "graded"])
    return graded
