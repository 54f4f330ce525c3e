"""Where does the first toy run spend its time? The phase breakdown of `python train.py`, A against B.

Runs the default toy run (`python train.py`, or its first `--steps` steps) as a subprocess and reads
its metrics.jsonl: per step the seconds of each phase the trainer logs (generate, grade, score,
train, publish, eval) and the step's total. It also measures start-up: the wall time from launching
the process to the first generation call (the step-0 held-out evaluation), i.e. imports, model and
tokenizer loading, problem building and filtering, and the trainer's construction.

Given a second variant, the two run in the same invocation, interleaved (A, B, A, B, ... with
`--repeats`), so a machine shared with other jobs slows both alike; the report gives B / A ratios.

- `--rev REV`: B is git revision REV of this repository, checked out with `git worktree` into a
  temporary folder (removed afterwards) and run with its own code;
- `--flags "..."`: B is this checkout run with these extra train.py flags (both may be given).

    python bench/first_run.py --steps 10                          # this checkout alone
    python bench/first_run.py --steps 10 --rev ff735e7            # ff735e7 (A) against this checkout (B)
    python bench/first_run.py --steps 10 --flags "--update-packing per_path"

Each run writes into a fresh temporary --out; every extra argument after `--` goes to both variants.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("generate", "grade", "score", "train", "publish", "eval")


def run_once(code_dir: str, flags: list[str], steps: int | None) -> dict:
    """One `train.py` run: its metrics records and the seconds from launch to the first generation."""
    with tempfile.TemporaryDirectory(prefix="first_run_") as out:
        cmd = [sys.executable, os.path.join(code_dir, "train.py"), "--out", os.path.join(out, "run")]
        if steps is not None:
            cmd += ["--steps", str(steps)]
        cmd += flags
        metrics = os.path.join(out, "run", "metrics.jsonl")
        t_launch = time.time()
        proc = subprocess.Popen(cmd, cwd=code_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first_write = None
        while proc.poll() is None:   # the step-0 record's write time: step 1 takes seconds, 0.1 s polling is enough
            if first_write is None and os.path.exists(metrics) and os.path.getsize(metrics) > 0:
                first_write = os.path.getmtime(metrics)
            time.sleep(0.1)
        err = proc.stderr.read()
        t_end = time.time()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(map(shlex.quote, cmd))} failed ({proc.returncode}):\n{err[-3000:]}")
        with open(metrics) as f:
            records = [json.loads(line) for line in f if line.strip()]
        if first_write is None:
            first_write = os.path.getmtime(metrics)
        step0 = records[0]
        # the step-0 record is written after its held-out evaluation and warm-up, which took step0["seconds"]
        startup = first_write - step0["seconds"] - t_launch
        return {"records": records, "startup": startup, "wall": t_end - t_launch}


def summarise(run: dict) -> dict:
    """Phase totals over the run (step 0's eval and warm-up included), start-up and wall time."""
    tot = {p: sum(r.get(f"seconds_{p}", 0.0) for r in run["records"]) for p in PHASES}
    tot["steps"] = sum(r.get("seconds", 0.0) for r in run["records"])
    tot["startup"] = run["startup"]
    tot["wall"] = run["wall"]
    return tot


def print_steps(name: str, run: dict) -> None:
    print(f"\n{name}: per step (seconds)")
    print("step " + " ".join(f"{p:>8}" for p in PHASES) + "    total  eval_acc")
    for r in run["records"]:
        acc = r.get("eval_accuracy")
        print(f"{r['step']:4d} " + " ".join(f"{r.get(f'seconds_{p}', 0.0):8.2f}" for p in PHASES)
              + f" {r.get('seconds', 0.0):8.2f}  " + (f"{acc:.3f}" if acc is not None else ""))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    common: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, common = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the toy preset's 60)")
    p.add_argument("--rev", default="", help="A = this git revision (a temporary worktree), B = this checkout")
    p.add_argument("--flags", default="", help="B = this checkout with these extra train.py flags")
    p.add_argument("--repeats", type=int, default=1, help="interleaved runs of each variant (medians reported)")
    args = p.parse_args(argv)

    variants = []          # (name, code_dir, flags)
    worktree = None
    if args.rev:
        worktree = tempfile.mkdtemp(prefix="first_run_rev_")
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", worktree, args.rev],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        variants.append((f"A (rev {args.rev})", worktree, common))
    variants.append(("A (this checkout)" if not args.rev else "B (this checkout)", REPO, common))
    if args.flags:
        variants.append((f"{'C' if args.rev else 'B'} (this checkout {args.flags})", REPO,
                         common + shlex.split(args.flags)))
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in variants}
    try:
        for rep in range(args.repeats):
            for name, code_dir, flags in variants:   # interleaved: A, B, A, B, ...
                runs[name].append(run_once(code_dir, flags, args.steps))
                print(f"[{rep + 1}/{args.repeats}] {name}: {runs[name][-1]['wall']:.1f} s "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        if worktree:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", worktree],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for name in runs:
        print_steps(name, runs[name][-1])
    keys = PHASES + ("steps", "startup", "wall")
    med = {name: {k: statistics.median(summarise(r)[k] for r in rs) for k in keys} for name, rs in runs.items()}
    names = list(runs)
    print("\ntotals (seconds; median over repeats)")
    print(f"{'':>10} " + " ".join(f"{n[:22]:>22}" for n in names) + ("".join(f" {'ratio ' + n[0] + '/' + names[0][0]:>12}"
                                                                            for n in names[1:])))
    for k in keys:
        line = f"{k:>10} " + " ".join(f"{med[n][k]:22.2f}" for n in names)
        for n in names[1:]:
            base = med[names[0]][k]
            line += f" {med[n][k] / base:12.3f}" if base > 0 else f" {'-':>12}"
        print(line)
    accs = {n: [(r["step"], r["eval_accuracy"]) for r in runs[n][-1]["records"] if r.get("eval_accuracy") is not None]
            for n in names}
    for n in names:
        print(f"held-out accuracy {n}: " + ", ".join(f"step {s} {a:.3f}" for s, a in accs[n]))
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
