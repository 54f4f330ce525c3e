"""Part D's empirical question (D2): run a short branch-selector study with a personal seed, report its
counts in PART_D.json; the grader reruns the same study for that seed and compares.

The study is bench/branch_outcomes.py (docs/compass.md) on the matched worlds `early` and `late`,
selectors fci and entropy only, STUDY_PROMPTS prompts × G = 6 initial responses, N = 2 forks per
response (192 forks per world and selector). The seed is personal, so the counts cannot be read off
the published shares:

    seed = int(sha256(student_id.strip().lower()).hexdigest()[:8], 16) % 1_000_000

PART_D.json is data, never code: the grader reads it with json.loads, accepts exactly the template's
keys (whole numbers or null, a student id, a free-text answer) and nothing else, and it is the one
file outside the exercise regions a submission may change (grade.compare, pack).

Scoring: each of the COUNTS scores when |answer - rerun| <= tolerance(rerun) = max(1, round(0.02 *
rerun)): one count of slack for a sampling difference across machines (a rare token flip in a
float-rounding tie), not enough for the published shares times the fork count (docs/teaching.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass

from .registry import QUESTIONS

ANSWERS_FILE = next(q.answers_file for q in QUESTIONS if q.id == "D2")      # "PART_D.json"
STUDY_PROMPTS = 16
STUDY_WORLDS = ("early", "late")
STUDY_SELECTORS = ("fci", "entropy")
MAX_ANSWERS_BYTES = 64_000
MAX_WHY_CHARS = 4000
# key: what it counts (a line of the handout's table)
COUNTS = {
    "early.initial_correct": "`early`: initial responses that are correct (of 16 × 6 = 96)",
    "late.initial_correct": "`late`: initial responses that are correct (of 96)",
    "early.fci.mixed": "`early`, fci: mixed forks (of 192)",
    "early.entropy.mixed": "`early`, entropy: mixed forks (of 192)",
    "late.fci.mixed": "`late`, fci: mixed forks (of 192)",
    "late.entropy.mixed": "`late`, entropy: mixed forks (of 192)",
    "late.fci.at": "`late`, fci: forks that fall at a decision (of 192)",
    "late.fci.mixed_at": "`late`, fci: mixed forks among those at a decision",
}


def seed_of(student_id: str) -> int:
    """The personal seed: the first 8 hex digits of sha256(the id, stripped, lower case), mod 10^6."""
    key = student_id.strip().lower()
    if not key:
        raise ValueError("the student id is empty")
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 1_000_000


def tolerance(truth: int) -> int:
    return max(1, round(0.02 * truth))


def template() -> dict:
    """The PART_D.json a student copy starts with."""
    return {"student_id": "", "counts": {k: None for k in COUNTS}, "why": ""}


def write_template(path: str) -> None:
    with open(path, "w") as f:
        json.dump(template(), f, indent=1)
        f.write("\n")


@dataclass
class Answers:
    student_id: str
    counts: dict[str, int | None]
    why: str


def parse_answers(text: str | bytes, where: str = ANSWERS_FILE) -> Answers:
    """PART_D.json's content, validated as data; ValueError with one line naming what is wrong."""
    if len(text) > MAX_ANSWERS_BYTES:
        raise ValueError(f"{where}: {len(text)} bytes, more than {MAX_ANSWERS_BYTES}")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or set(data) != {"student_id", "counts", "why"}:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{where}: needs exactly the keys student_id, counts, why (got {got})")
    sid, counts, why = data["student_id"], data["counts"], data["why"]
    if not isinstance(sid, str) or not sid.strip() or len(sid) > 100:
        raise ValueError(f"{where}: student_id must be your id as a non-empty string (at most 100 characters)")
    if not isinstance(why, str) or len(why) > MAX_WHY_CHARS:
        raise ValueError(f"{where}: why must be a string of at most {MAX_WHY_CHARS} characters")
    if not isinstance(counts, dict) or set(counts) != set(COUNTS):
        got = sorted(counts) if isinstance(counts, dict) else type(counts).__name__
        raise ValueError(f"{where}: counts needs exactly the keys {', '.join(COUNTS)} (got {got})")
    for k, v in counts.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10_000):
            raise ValueError(f"{where}: counts[{k!r}] must be a whole number from 0 to 10000 or null, got {v!r}")
    return Answers(sid.strip(), {k: counts[k] for k in COUNTS}, why)


# ---- the study: run it, read its counts --------------------------------------------------------------------

def study_command(root: str, seed: int, out_dir: str, prompts: int) -> list[str]:
    return [sys.executable, os.path.join(root, "bench", "branch_outcomes.py"), "--worlds", ",".join(STUDY_WORLDS),
            "--selectors", ",".join(STUDY_SELECTORS), "--prompts", str(prompts), "--seed", str(seed),
            "--out", out_dir]


def run_study(root: str, seed: int, out_dir: str, prompts: int | None = None, quiet: bool = False) -> dict:
    """Run the study of `root` (a checkout or a student copy) in a subprocess, one torch thread; its counts."""
    if not all(os.path.exists(os.path.join(out_dir, f"{w}.json")) for w in STUDY_WORLDS):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": root}
        proc = subprocess.run(study_command(root, seed, out_dir, prompts or STUDY_PROMPTS), cwd=root, env=env, text=True,
                              capture_output=quiet)
        if proc.returncode != 0:
            tail = (proc.stderr or "").strip().splitlines()[-1:] if quiet else []
            raise RuntimeError(f"the study exited with status {proc.returncode}" + (f": {tail[0]}" if tail else ""))
    return counts_of(out_dir)


def counts_of(out_dir: str) -> dict[str, int]:
    """COUNTS from the study's early.json and late.json."""
    out = {}
    for w in STUDY_WORLDS:
        with open(os.path.join(out_dir, f"{w}.json")) as f:
            r = json.load(f)
        out[f"{w}.initial_correct"] = int(r["initial_correct"])
        for sel in STUDY_SELECTORS:
            out[f"{w}.{sel}.mixed"] = int(r["rows"][sel]["mixed_forks"])
        if w == "late":
            out["late.fci.at"] = int(r["rows"]["fci"]["place_counts"]["at"])
            out["late.fci.mixed_at"] = int(r["rows"]["fci"]["mixed_by_place_counts"]["at"])
    return out


def reference_counts(repo: str, seed: int, cache_dir: str) -> dict[str, int]:
    """The instructor's rerun for a seed (the study of the checkout `repo`), cached in cache_dir/seed_<seed>/."""
    return run_study(repo, seed, os.path.join(cache_dir, f"seed_{seed}"), prompts=STUDY_PROMPTS, quiet=True)


# ---- scoring ----------------------------------------------------------------------------------------------

def score(answers: Answers, truth: dict[str, int]) -> list[tuple[str, bool, str]]:
    """[(count key, passed, message)]: a count passes within tolerance(truth) of the rerun. The message
    never gives the rerun's value (a resubmission would then not need the run)."""
    out = []
    for k in COUNTS:
        v = answers.counts[k]
        if v is None:
            out.append((k, False, "not answered"))
        elif abs(v - truth[k]) <= tolerance(truth[k]):
            out.append((k, True, ""))
        else:
            out.append((k, False, f"{v} is not within the tolerance of the rerun of your seed"))
    return out


def table(counts: dict[str, int]) -> str:
    rows = ["| key in counts | what it counts | value |", "|---|---|---:|"] + \
        [f"| {k} | {COUNTS[k]} | {counts[k]} |" for k in COUNTS]
    return "\n".join(rows)


def main(argv=None) -> int:
    """`python -m attnrl_mini.assignment study --student-id ID` in a student copy."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m attnrl_mini.assignment study")
    p.add_argument("--student-id", required=True)
    p.add_argument("--out", default="part_d_study", help="folder for the study's results (default part_d_study)")
    args = p.parse_args(argv)
    root = os.getcwd()
    if not os.path.exists(os.path.join(root, "bench", "branch_outcomes.py")):
        raise FileNotFoundError("run this in the student copy's root (it needs bench/branch_outcomes.py)")
    seed = seed_of(args.student_id)
    print(f"student id {args.student_id.strip()!r} -> seed {seed}; running the study (a few minutes on a laptop CPU)")
    counts = run_study(root, seed, os.path.join(args.out, f"seed_{seed}"))
    print(f"\nThe counts of your study (seed {seed}); copy them into {ANSWERS_FILE}, with your student id:\n")
    print(table(counts))
    return 0
