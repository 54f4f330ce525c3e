"""Do two revisions train identically? Fixed-seed toy runs at a git revision and at the working tree,
one-step-stale and on-policy, compared field by field (every metrics.jsonl field but the timings).

    python bench/same_metrics.py HEAD~1                 # 10 steps each, the toy preset, seed 0
    python bench/same_metrics.py HEAD~1 --steps 4 --eval-problems 50

A refactoring that promises "no behaviour change" must print `identical` for both schedules.
The revision is checked out into a temporary git worktree; each run is a `python train.py` subprocess.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("seconds", "grader_timeouts")   # wall-clock fields (and the grader's, which depend on load)


def records(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if not k.startswith(TIMING)} for line in f]


def first_difference(a: list[dict], b: list[dict]) -> str | None:
    """None when the two runs' records agree on every field, else where they first differ."""
    if len(a) != len(b):
        return f"{len(a)} records vs {len(b)}"
    for ra, rb in zip(a, b):
        for k in sorted(set(ra) | set(rb)):
            if ra.get(k) != rb.get(k):
                return f"step {ra.get('step')}: {k} = {ra.get(k)!r} vs {rb.get(k)!r}"
    return None


def run(code_dir: str, out: str, stale: bool, args) -> None:
    cmd = [sys.executable, "train.py", "--steps", str(args.steps), "--eval-every", str(args.eval_every),
           "--eval-problems", str(args.eval_problems), "--seed", str(args.seed),
           "--one-step-stale", "true" if stale else "false", "--out", out]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=code_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        sys.exit(f"error: {' '.join(cmd)} in {code_dir} failed:\n{proc.stderr[-3000:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revision", help="the git revision to compare the working tree with")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--eval-problems", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        old = os.path.join(tmp, "old")
        subprocess.run(["git", "worktree", "add", "--detach", old, args.revision], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for stale in (True, False):
                name = "one-step-stale" if stale else "on-policy"
                run(old, os.path.join(tmp, f"old_{name}"), stale, args)
                run(REPO, os.path.join(tmp, f"new_{name}"), stale, args)
                diff = first_difference(records(os.path.join(tmp, f"old_{name}")),
                                        records(os.path.join(tmp, f"new_{name}")))
                print(f"{name:15s} {args.steps} steps: " + ("identical" if diff is None else f"DIFFERENT ({diff})"))
                differ += diff is not None
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", old], cwd=REPO, check=False)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
