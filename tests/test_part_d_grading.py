"""Part D (optional): the default build is unchanged; D2's answers file is data with one-line errors; an
honest answer scores full, the README's shares and another seed's counts do not; a malformed file
costs D2 only. One real run of the study (the smallest: 1 prompt), in the student copy, then graded."""
import hashlib
import json
import os
import zipfile

import pytest

from attnrl_mini.assignment import build as build_mod
from attnrl_mini.assignment import check, grade, part_d, regions
from attnrl_mini.assignment.pack import pack
from attnrl_mini.assignment.registry import BY_ID

# seed 202's counts of the short study (16 prompts), measured like check._TRUTH (seed 101): another student's table
OTHER_SEED = {"early.initial_correct": 40, "late.initial_correct": 47, "early.fci.mixed": 103, "early.entropy.mixed": 110,
              "late.fci.mixed": 92, "late.entropy.mixed": 12, "late.fci.at": 118, "late.fci.mixed_at": 86}


def answers_text(counts, student_id="alice", why=""):
    return json.dumps({"student_id": student_id, "counts": counts, "why": why})


def points(counts, truth):
    return sum(ok for _, ok, _ in part_d.score(part_d.parse_answers(answers_text(counts)), truth))


def test_seed_rule():
    expected = int(hashlib.sha256(b"s1234567").hexdigest()[:8], 16) % 1_000_000
    assert part_d.seed_of("s1234567") == part_d.seed_of("  S1234567 ") == expected
    assert part_d.seed_of("s1234568") != expected
    with pytest.raises(ValueError, match="empty"):
        part_d.seed_of("   ")


def test_tolerance_by_hand():
    # max(1, round(2% of the rerun)): 4 -> 1, 62 -> 1 (1.24), 108 -> 2 (2.16), 133 -> 3 (2.66)
    assert [part_d.tolerance(t) for t in (0, 4, 62, 108, 133)] == [1, 1, 1, 2, 3]


def test_truth_full_readme_and_other_seed_less():
    truth = check._TRUTH
    assert points(truth, truth) == 8
    assert points({k: v + part_d.tolerance(v) for k, v in truth.items()}, truth) == 8      # at the edge: passes
    assert points({k: v + part_d.tolerance(v) + 1 for k, v in truth.items()}, truth) == 0  # one past it: fails
    readme = {k: round(v) for k, v in check._PUBLISHED.items()}
    assert points(readme, truth) == 2                    # late.entropy.mixed (4) and late.fci.mixed_at (58) hit
    assert points(OTHER_SEED, truth) == 0                # seed 202's table for seed 101: nothing within tolerance
    nulls = {k: None for k in truth}
    assert [m for _, _, m in part_d.score(part_d.parse_answers(answers_text(nulls)), truth)] == ["not answered"] * 8


@pytest.mark.parametrize("text, says", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "needs exactly the keys student_id, counts, why"),
    (json.dumps({"student_id": "", "counts": {}, "why": ""}), "student_id must be"),
    (json.dumps({"student_id": "a", "counts": {"late.fci.mixed": 3}, "why": ""}), "counts needs exactly the keys"),
    (answers_text({**{k: 1 for k in part_d.COUNTS}, "late.fci.mixed": 31.5}), "counts['late.fci.mixed'] must be a whole"),
    (answers_text({**{k: 1 for k in part_d.COUNTS}, "late.fci.mixed": True}), "counts['late.fci.mixed'] must be a whole"),
    (answers_text({k: 1 for k in part_d.COUNTS}, why=7), "why must be a string"),
    ("x" * 70_000, "more than 64000"),
])
def test_malformed_answers_are_one_line_errors(text, says):
    with pytest.raises(ValueError) as err:
        part_d.parse_answers(text)
    assert says in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("PART_D.json: ")


def test_default_build_has_no_part_d(tmp_path):
    build_mod.build(str(tmp_path / "abc"), "A,B,C")
    assert not (tmp_path / "abc" / "PART_D.json").exists() and not (tmp_path / "abc" / "bench").exists()
    manifest = json.loads((tmp_path / "abc" / "assignment.json").read_text())
    assert "answers" not in manifest and "D1" not in manifest["exercises"]
    assert "Part D" not in (tmp_path / "abc" / "HANDOUT.md").read_text()
    build_mod.build(str(tmp_path / "abcd"), "A,B,C,D")
    copy = tmp_path / "abcd"
    assert json.loads((copy / "PART_D.json").read_text()) == part_d.template()
    assert (copy / "bench" / "branch_outcomes.py").exists() and (copy / "bench" / "world_sample.py").exists()
    assert json.loads((copy / "assignment.json").read_text())["answers"] == ["PART_D.json"]
    handout = (copy / "HANDOUT.md").read_text()
    assert "## Part D" in handout and "python -m attnrl_mini.assignment study --student-id YOUR_ID" in handout
    assert "Exercise D1" in (copy / "attnrl_mini" / "tools" / "fork_stats.py").read_text()


@pytest.fixture(scope="module")
def studied(tmp_path_factory):
    """A part-D copy with D1 done, the study run in it (1 prompt) for alice's seed, PART_D.json filled."""
    tmp = tmp_path_factory.mktemp("part_d")
    copy_dir = str(tmp / "copy")
    build_mod.build(copy_dir, "D")
    e = BY_ID["D1"]
    path = os.path.join(copy_dir, *e.module.split(".")) + ".py"
    source = open(path).read()
    begin, end, _ = regions.find_regions(source, path)[e.id]
    lines = source.splitlines(keepends=True)
    lines[begin + 1:end] = [regions.region_text(e)]
    open(path, "w").write("".join(lines))
    seed = part_d.seed_of("alice")
    counts = part_d.run_study(copy_dir, seed, os.path.join(copy_dir, "part_d_study"), prompts=1, quiet=True)
    with open(os.path.join(copy_dir, "PART_D.json"), "w") as f:
        f.write(answers_text(counts, why="fci forks sit on the decisions on late"))
    return tmp, copy_dir, counts


def test_honest_answer_scores_full_through_pack_and_grade(studied, monkeypatch):
    tmp, copy_dir, counts = studied
    assert counts["late.fci.at"] + counts["late.fci.mixed_at"] >= 0 and len(counts) == 8
    zip_path, _ = pack(copy_dir, str(tmp / "alice.zip"))
    assert "PART_D.json" in zipfile.ZipFile(zip_path).namelist()
    real = part_d.run_study                                   # the grader's rerun (this checkout): the same 1-prompt study
    monkeypatch.setattr(part_d, "run_study", lambda root, seed, out, prompts=None, quiet=False:
                        real(root, seed, out, prompts=1, quiet=quiet))
    g = grade.grade_submission(zip_path, "D", study_cache=str(tmp / "cache"))
    scores = {s.id: s for s in g.scores}
    assert g.refused == [] and scores["D1"].score == 5 and scores["D2"].score == 10, grade.table(g)
    assert os.path.exists(tmp / "cache" / f"seed_{part_d.seed_of('alice')}" / "late.json")   # kept per seed


def test_malformed_answers_cost_d2_only(studied):
    tmp, copy_dir, _ = studied
    bad = tmp / "bad"
    import shutil
    shutil.copytree(copy_dir, bad)
    (bad / "PART_D.json").write_text('{"student_id": "alice", "counts": {"late.fci.mixed": "thirty"}, "why": ""}')
    g = grade.grade_submission(str(bad), "D")
    scores = {s.id: s for s in g.scores}
    assert g.refused == [] and scores["D1"].score == 5 and scores["D2"].score == 0
    out = [t for t in grade.results_json(g)["tests"] if t["number"] == "D2"][0]["output"]
    assert "PART_D.json: counts needs exactly the keys" in out and len(out.splitlines()) <= 2
