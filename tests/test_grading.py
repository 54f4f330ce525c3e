"""Tamper-proof grading (attnrl_mini/assignment/grade.py, sandbox.py): the two known attacks score 0
with a message naming the refused file, an attack from inside a region cannot help, and an honest
correct submission (packed as a zip, as students hand it in) scores full marks."""
import csv
import json
import os
import shutil
import zipfile

import pytest

from attnrl_mini.assignment import build as build_mod
from attnrl_mini.assignment import grade, regions
from attnrl_mini.assignment.pack import pack
from attnrl_mini.assignment.registry import BY_ID, DEFAULT_PARTS, exercises_of

EXERCISES = exercises_of(DEFAULT_PARTS)          # parts A-C: what build and grade use by default
FULL = sum(e.points for e in EXERCISES)


def student_copy(tmp_path, name="copy"):
    out = str(tmp_path / name)
    build_mod.build(out, "A,B,C")
    return out


def put_region(copy_dir, xid, text):
    """Write `text` between the markers of exercise xid in the copy (what a student does)."""
    e = BY_ID[xid]
    path = os.path.join(copy_dir, *e.module.split(".")) + ".py"
    with open(path) as f:
        source = f.read()
    begin, end, _ = regions.find_regions(source, path)[xid]
    lines = source.splitlines(keepends=True)
    lines[begin + 1:end] = [text]
    with open(path, "w") as f:
        f.write("".join(lines))


def honest(copy_dir, except_for=()):
    for e in EXERCISES:
        if e.id not in except_for:
            put_region(copy_dir, e.id, regions.region_text(e))


GRADE_PY_ATTACK = '''

def grade_submission(*args, **kwargs):            # the attack: every exercise at full marks
    g = _real_grade_submission(*args, **kwargs)
    for s in g.scores:
        s.outcomes = [TestOutcome("test", True)]
    return g
'''

INIT_ATTACK = '''
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):        # the attack: every test report says "passed"
    outcome = yield
    report = outcome.get_result()
    report.outcome, report.longrepr = "passed", None
'''


def test_modified_grade_py_is_refused(tmp_path):
    copy_dir = student_copy(tmp_path)
    path = os.path.join(copy_dir, "attnrl_mini", "assignment", "grade.py")
    with open(path) as f:
        source = f.read().replace("def grade_submission(", "def _real_grade_submission(", 1)
    with open(path, "w") as f:
        f.write(source + GRADE_PY_ATTACK)
    g = grade.grade_submission(copy_dir)
    assert g.total == 0 and all(s.score == 0 for s in g.scores)
    assert g.refused == ["attnrl_mini/assignment/grade.py: differs from the distributed copy (it holds no exercise)"]
    assert "attnrl_mini/assignment/grade.py" in grade.results_json(g)["output"]


def test_package_init_rewriting_reports_is_refused(tmp_path):
    copy_dir = student_copy(tmp_path)
    honest(copy_dir, except_for=("C10",))                   # even with most regions right: refused as a whole
    with open(os.path.join(copy_dir, "attnrl_mini", "__init__.py"), "a") as f:
        f.write(INIT_ATTACK)
    with open(os.path.join(copy_dir, "conftest.py"), "w") as f:
        f.write("from attnrl_mini import pytest_runtest_makereport  # noqa\n")
    g = grade.grade_submission(copy_dir)
    assert g.total == 0
    assert g.refused == ["conftest.py: not in the distributed copy",
                         "attnrl_mini/__init__.py: differs from the distributed copy (it holds no exercise)"]
    out = grade.results_json(g)["output"]
    assert out.startswith("Submission refused (score 0)") and "attnrl_mini/__init__.py" in out


def test_changed_code_outside_a_region_is_refused(tmp_path):
    copy_dir = student_copy(tmp_path)
    path = os.path.join(copy_dir, "attnrl_mini", "algorithm", "adaptive.py")
    with open(path) as f:
        source = f.read()
    with open(path, "w") as f:                              # the helper C6 uses, changed outside C6's region
        f.write(source.replace("return math.floor(x + 0.5)", "return math.floor(x + 0.5) + 0"))
    with pytest.raises(ValueError, match="adaptive.py"):
        pack(copy_dir)
    g = grade.grade_submission(copy_dir)
    assert g.total == 0
    assert g.refused == ["attnrl_mini/algorithm/adaptive.py: differs from the distributed copy outside the exercise regions"]


def test_honest_submission_scores_full_marks_from_its_zip(tmp_path):
    copy_dir = student_copy(tmp_path)
    honest(copy_dir)
    zip_path, files = pack(copy_dir, str(tmp_path / "alice.zip"))
    assert "attnrl_mini/algorithm/fci.py" in files and "attnrl_mini/assignment/grade.py" not in files
    g = grade.grade_submission(zip_path)
    assert g.refused == []
    assert g.total == FULL, grade.table(g)


def test_an_attack_inside_a_region_gains_nothing(tmp_path):
    # C6's region disables the assertion helpers and forges a passing report in its own process, then
    # returns a wrong count: the assertions run in the grading process, so only C6 loses its points.
    copy_dir = student_copy(tmp_path)
    honest(copy_dir, except_for=("C6",))
    put_region(copy_dir, "C6", '''    import sys
    import torch
    torch.testing.assert_close = lambda *a, **k: None
    if "pytest" in sys.modules:
        sys.modules["pytest"].approx = lambda *a, **k: a[0]
    return 0
''')
    g = grade.grade_submission(copy_dir)
    scores = {s.id: s.score for s in g.scores}
    assert scores["C6"] == 0
    assert g.total == FULL - BY_ID["C6"].points, grade.table(g)


def test_a_folder_of_zips_gives_results_per_student_and_a_summary(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    for student in ("bob", "carol"):                        # two refused submissions: fast, nothing runs
        copy_dir = student_copy(tmp_path, student)
        with open(os.path.join(copy_dir, "attnrl_mini", "__init__.py"), "a") as f:
            f.write(f"# {student} was here\n")
        shutil.make_archive(str(folder / student), "zip", copy_dir)
    with open(folder / "notes.txt", "w") as f:
        f.write("not a submission")
    out = tmp_path / "grades"
    graded = grade.grade_all([str(folder)], str(out), log=lambda *_: None)
    assert [g.name for g in graded] == ["bob", "carol"]
    for student in ("bob", "carol"):
        results = json.loads((out / student / "results.json").read_text())
        assert results["score"] == 0 and len(results["tests"]) == len(EXERCISES)
        assert "attnrl_mini/__init__.py" in results["output"]
    rows = list(csv.reader(open(out / "summary.csv")))
    assert rows[0][:2] == ["submission", "total"] and [r[0] for r in rows[1:]] == ["bob", "carol"]
    assert all(r[-1].startswith("refused: attnrl_mini/__init__.py") for r in rows[1:])


def test_unscored_hidden_test_is_a_build_error(tmp_path):
    overlay = tmp_path / "hidden"
    overlay.mkdir()
    (overlay / "test_extra.py").write_text("def test_c2_more():\n    pass\n\n\ndef test_misc_thing():\n    pass\n")
    with pytest.raises(ValueError, match="test_extra.py::test_misc_thing would count for no exercise"):
        build_mod.build(str(tmp_path / "copy"), "A,B,C", str(overlay))
    with pytest.raises(ValueError, match="test_c2_more"):    # C2 is not in part A
        build_mod.build(str(tmp_path / "copy_a"), "A", str(overlay))


def test_zip_entries_outside_the_folder_are_refused(tmp_path):
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../outside.py", "x = 1\n")
    g = grade.grade_submission(str(bad))
    assert g.total == 0 and "points outside the zip" in g.refused[0]


def test_pasting_test_helpers_scores_nothing():
    # Every helper function of tests/graded/, pasted as an exercise's body and called with the
    # exercise's parameters, passes none of that exercise's graded tests (no helper is a solution).
    import ast
    import textwrap

    from attnrl_mini.assignment import check
    from attnrl_mini.assignment.registry import EXERCISES as ALL_EXERCISES      # part D's D1 too

    helpers = []
    for name in sorted(os.listdir(os.path.join(check.REPO, "tests", "graded"))):
        if name.endswith(".py"):
            source = open(os.path.join(check.REPO, "tests", "graded", name)).read()
            helpers += [(n.name, ast.get_source_segment(source, n)) for n in ast.parse(source).body
                        if isinstance(n, ast.FunctionDef) and not n.name.startswith("test_")]
    assert len(helpers) >= 10
    passing = []
    for e in ALL_EXERCISES:
        code = regions.function_object(e).__code__
        params = [p for p in code.co_varnames[:code.co_argcount] if p != "self"]
        for helper, source in helpers:
            body = textwrap.indent(f"{source}\nreturn {helper}({', '.join(params)})\n", "    " * (1 + ("." in e.function)))

            def paste(module_source, body=body):
                begin, end, _ = regions.find_regions(module_source, e.module)[e.id]
                lines = module_source.splitlines(keepends=True)
                return "".join(lines[:begin + 1]) + body + "".join(lines[end:])
            with regions.changed_function(e, paste):
                results = check.run_tests(e.node_ids)
            passing += [f"{e.id} <- {helper}: {n}" for n, (ok, _) in results.items() if ok]
    assert passing == []
