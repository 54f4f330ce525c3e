"""Does the prefix-shared update train like the per-path one? Held-out curves over seeds (issue #16).

Runs `python train.py --threads 1 --update-packing MODE --seed S --steps 60 --out OUT/MODE_sS` (the
toy preset) for every mode and seed, `--parallel` at a time, then reads each run's metrics.jsonl:
held-out accuracy at every evaluation, the training phase's seconds (sum of `seconds_train`), and
the trained vs computed response tokens. Runs already finished in OUT are read, not redone.

The question, fixed before the runs: per_path is the reference; a mode trains "the same" if, at the
last evaluation and on the mean over the evaluations after step 0, the difference of its seed mean
from per_path's is within (a) the larger of the two modes' seed ranges (max - min over seeds) and
(b) twice the binomial standard error of a difference of two seed means, sqrt(2 p (1 - p) / (n k)),
with n held-out problems and k seeds.

    python bench/packing_curves.py --out runs/packing_curves --markdown docs/results/packing_curves.md
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_dir(out: str, mode: str, seed: int) -> str:
    return os.path.join(out, f"{mode}_s{seed}")


def finished(path: str, steps: int) -> bool:
    try:
        return any(r.get("step") == steps and "eval_accuracy" in r for r in read_metrics(path))
    except FileNotFoundError:
        return False


def read_metrics(path: str) -> list[dict]:
    with open(os.path.join(path, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_all(out: str, modes: list[str], seeds: list[int], parallel: int, steps: int) -> None:
    todo = [(m, s) for s in seeds for m in modes if not finished(run_dir(out, m, s), steps)]
    running: list[subprocess.Popen] = []
    for mode, seed in todo:
        if len(running) >= parallel:
            running.pop(0).wait()
        path = run_dir(out, mode, seed)
        cmd = [sys.executable, os.path.join(REPO, "train.py"), "--threads", "1", "--update-packing", mode,
               "--seed", str(seed), "--steps", str(steps), "--out", path]
        print("running:", " ".join(cmd[1:]), flush=True)
        os.makedirs(out, exist_ok=True)
        running.append(subprocess.Popen(cmd, stdout=open(path + ".log", "w"), stderr=subprocess.STDOUT))
    for p in running:
        p.wait()


def summarise(path: str) -> dict:
    rows = read_metrics(path)
    evals = {r["step"]: r["eval_accuracy"] for r in rows if "eval_accuracy" in r}
    train_rows = [r for r in rows if "seconds_train" in r]
    return dict(evals=evals, seconds_train=sum(r["seconds_train"] for r in train_rows),
                trained=sum(r.get("trained_tokens", 0) for r in train_rows),
                computed=sum(r.get("update_computed_tokens", 0) for r in train_rows))


def table(out: str, modes: list[str], seeds: list[int], n_eval: int) -> str:
    runs = {(m, s): summarise(run_dir(out, m, s)) for m in modes for s in seeds}
    steps = sorted(runs[(modes[0], seeds[0])]["evals"])
    later = [t for t in steps if t > 0]
    mean = lambda xs: sum(xs) / len(xs)   # noqa: E731
    lines = ["| mode | seed | held-out accuracy at steps " + " / ".join(map(str, steps))
             + " | mean over steps > 0 | training phase (s) | trained / computed response tokens |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    stats = {}
    for m in modes:
        per_seed = [runs[(m, s)] for s in seeds]
        for s, r in zip(seeds, per_seed):
            lines.append(f"| {m} | {s} | " + " / ".join(f"{100 * r['evals'][t]:.1f}" for t in steps)
                         + f" | {100 * mean([r['evals'][t] for t in later]):.1f} | {r['seconds_train']:,.0f} | "
                         f"{r['trained']:,} / {r['computed']:,} |")
        final = [r["evals"][steps[-1]] for r in per_seed]
        overall = [mean([r["evals"][t] for t in later]) for r in per_seed]
        stats[m] = dict(final=mean(final), final_range=max(final) - min(final), overall=mean(overall),
                        overall_range=max(overall) - min(overall), seconds=mean([r["seconds_train"] for r in per_seed]))
        lines.append(f"| **{m}** | mean | " + " / ".join(
            f"{100 * mean([r['evals'][t] for r in per_seed]):.1f}" for t in steps)
            + f" | {100 * stats[m]['overall']:.1f} | {stats[m]['seconds']:,.0f} | |")
    ref = stats[modes[0]]
    p = ref["final"]
    se2 = 2 * math.sqrt(2 * p * (1 - p) / (n_eval * len(seeds)))
    lines += ["", f"Against {modes[0]} (seed means; ranges over {len(seeds)} seeds; 2 x binomial standard error of a "
                  f"difference of seed means at n = {n_eval}: {100 * se2:.1f} points):", "",
              "| mode | final: difference | final: larger seed range | mean over steps > 0: difference | "
              "its larger seed range | training phase vs " + modes[0] + " | same curve? |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for m in modes[1:]:
        st = stats[m]
        d_final, d_all = st["final"] - ref["final"], st["overall"] - ref["overall"]
        r_final, r_all = max(st["final_range"], ref["final_range"]), max(st["overall_range"], ref["overall_range"])
        same = abs(d_final) <= min(r_final, se2) and abs(d_all) <= min(r_all, se2)
        lines.append(f"| {m} | {100 * d_final:+.1f} | {100 * r_final:.1f} | {100 * d_all:+.1f} | {100 * r_all:.1f} | "
                     f"{ref['seconds'] / st['seconds']:.2f}x less | {'yes' if same else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/packing_curves")
    ap.add_argument("--modes", default="per_path,shared,shared_trees", help="the first one is the reference")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--parallel", type=int, default=2, help="trainings at a time (one thread each)")
    ap.add_argument("--steps", type=int, default=60, help="training steps (the toy preset's)")
    ap.add_argument("--eval-problems", type=int, default=500, help="held-out problems per evaluation (the preset's)")
    ap.add_argument("--table-only", action="store_true", help="only read the finished runs in --out")
    ap.add_argument("--markdown", default="", help="also write the tables here")
    args = ap.parse_args(argv)
    modes, seeds = args.modes.split(","), [int(s) for s in args.seeds.split(",")]
    if not args.table_only:
        train_all(args.out, modes, seeds, args.parallel, args.steps)
    text = table(args.out, modes, seeds, args.eval_problems)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"`python bench/packing_curves.py --out {args.out}` (toy preset, 60 steps, `--threads 1`)\n\n"
                    + text + "\n")


if __name__ == "__main__":
    main()
