"""The paper's comparison in miniature, on a toy world: GRPO vs TreeRL vs AttnRL + the ablation ladder.

    python bench/compare_methods.py                      # full: every method × 3 seeds, equal token budget
    python bench/compare_methods.py --smoke              # seconds-scale smoke run (used by the tests)
    python bench/compare_methods.py --methods grpo,attnrl --seeds 0,1 --budget 150000
    python bench/compare_methods.py --world toy-plan --out results/compare_plan   # the second world
    python bench/compare_methods.py --world late --seeds 0,1,2,3,4 --eval-problems 2000 \
        --methods grpo,treerl,atb,attnrl,treerl_step_entropy,attnrl_fci_entropy --out results/compare_late

Every run is `python train.py --preset <world> ...` with the same generated-token budget
(--max-generated-tokens), so methods are compared at equal sampling cost (paper Table 3's axis).
Writes to --out (default results/compare): runs/<method>_s<seed>/ (each run's metrics.jsonl),
table.md (mean ± std over seeds, like the paper's Tables 1-3), accuracy_vs_tokens.png and
accuracy_vs_seconds.png, summary.json. `--earlier OLD/summary.json` puts an earlier invocation's methods
(same seeds and budget; the per-seed records are kept in the file) into the table next to this one's.

Accuracy AT the budget: a run stops at the first step whose generated tokens reach the budget, so
it overshoots by up to one step's tokens, and methods overshoot differently. The table's "at
budget" column therefore INTERPOLATES linearly between the two held-out evaluations that bracket
the budget (`accuracy_at_budget`; the last evaluation is always at or past the budget, because the
trainer evaluates at the step that spends it). Paired by seed: AttnRL − TreeRL and AttnRL − GRPO at
the budget, mean over seeds ± its standard error (std of the per-seed differences / sqrt(seeds)).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from attnrl_mini.worlds import WORLD_NAMES  # noqa: E402

# docs/algorithm.md §h, as switches of the one loop (train.py flags). Ladder rows are on-policy like TreeRL;
# one-step-stale is an orthogonal switch, on for AttnRL only (and for the "TreeRL + stale" row).
ADS = ["--branch-count-rule", "ceil", "--attention-filter", "true", "--zero-adv-filter", "true", "--dynamic-batch", "true"]
METHODS: dict[str, list[str]] = {
    "grpo": ["--algo", "grpo"],
    "treerl": ["--algo", "treerl"],
    "treerl_stale": ["--algo", "treerl", "--one-step-stale", "true"],
    "first2_steps": ["--algo", "treerl", "--branch-selector", "first_steps"],
    "atb": ["--algo", "treerl", "--branch-selector", "fci"],
    "atb_ads_no_filter": ["--algo", "treerl", "--branch-selector", "fci", *ADS, "--attention-filter", "false"],
    "atb_ads_no_expansion": ["--algo", "treerl", "--branch-selector", "fci", *ADS, "--branch-count-rule", "uniform"],
    "attnrl": ["--algo", "attnrl"],
    # not a row of the paper: AttnRL without the stale pipeline, to separate ADS's effect from staleness
    "attnrl_on_policy": ["--algo", "attnrl", "--one-step-stale", "false"],
    # the two selectors beyond the paper (docs/compass.md): DATPO's step entropy in TreeRL, our hybrid in AttnRL
    "treerl_step_entropy": ["--algo", "treerl", "--branch-selector", "step_entropy"],
    "attnrl_fci_entropy": ["--algo", "attnrl", "--branch-selector", "fci_entropy"],
}


def run_one(method: str, seed: int, args, out_dir: str) -> dict:
    run_dir = os.path.join(out_dir, "runs", f"{method}_s{seed}")
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics) and any(json.loads(line).get("final_budget") == args.budget for line in open(metrics)):
        return {"method": method, "seed": seed, "dir": run_dir, "reused": True}
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--preset", args.world, *METHODS[method],
           "--seed", str(seed), "--out", run_dir, "--steps", str(args.max_steps),
           "--max-generated-tokens", str(args.budget), "--eval-every", str(args.eval_every),
           "--eval-problems", str(args.eval_problems), "--threads", str(args.threads),
           "--generator", "hf", "--save-every", str(args.max_steps), *args.extra]
    if os.path.exists(run_dir):
        cmd.append("--resume")
    t0 = time.time()
    with open(os.path.join(out_dir, "logs", f"{method}_s{seed}.log"), "w") as logf:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed (exit {proc.returncode}); see {out_dir}/logs/{method}_s{seed}.log")
    with open(metrics, "a") as f:  # marks the run complete for re-use by a later invocation
        f.write(json.dumps({"step": 10**9, "final_budget": args.budget, "wall_seconds": time.time() - t0}) + "\n")
    return {"method": method, "seed": seed, "dir": run_dir, "reused": False}


def load_run(run_dir: str) -> dict:
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    steps = [r for r in rows if "final_budget" not in r]
    trained = [r for r in steps if r["step"] > 0]
    # the step-0 evaluation runs before any generation (the stale pipeline's warm-up comes after it)
    evals = [(0 if r["step"] == 0 else r["cumulative_generated_tokens"], r["eval_accuracy"])
             for r in steps if "eval_accuracy" in r]
    seconds = 0.0
    curve_s = []
    for r in steps:
        seconds += r.get("seconds", 0.0)
        if "eval_accuracy" in r:
            curve_s.append((seconds, r["eval_accuracy"]))
    phase = {}
    for r in trained:
        for k, v in r.items():
            if k.startswith("seconds_") and k != "seconds_eval":
                phase[k[8:]] = phase.get(k[8:], 0.0) + v
    bs = [r["branch_stats"] for r in trained if r.get("branch_stats", {}).get("n")]
    return {
        "first_eval": evals[0][1], "final_eval": evals[-1][1], "curve_tokens": evals, "curve_seconds": curve_s,
        "generated_tokens": steps[-1]["cumulative_generated_tokens"],
        "trained_tokens": sum(r.get("trained_tokens", 0) for r in trained),
        "prompt_valid_ratio": statistics.mean(r["prompt_valid_ratio"] for r in trained) if trained else 0.0,
        "trained_valid_ratio": statistics.mean(r["trained_valid_ratio"] for r in trained) if trained else 0.0,
        "steps": len(trained), "train_seconds": sum(phase.values()), "phase_seconds": phase,
        "branch_at_step_start": statistics.mean(b["at_step_start"] for b in bs) if bs else None,
        "branch_mean_rel_pos": statistics.mean(b["mean_relative_position"] for b in bs) if bs else None,
        "branch_mixed_outcome": statistics.mean(b["mixed_outcome"] for b in bs) if bs else None,
    }


def accuracy_at_budget(curve: list[tuple[float, float]], budget: float) -> float | None:
    """Held-out accuracy at exactly `budget` generated tokens: linear interpolation between the two
    evaluations that bracket it (curve = [(tokens, accuracy)] in increasing tokens); None if the run
    never reached the budget."""
    if not curve or curve[-1][0] < budget:
        return None
    if budget <= curve[0][0]:
        return curve[0][1]
    for (t0, a0), (t1, a1) in zip(curve, curve[1:]):
        if t0 <= budget <= t1:
            return a0 if t1 == t0 else a0 + (a1 - a0) * (budget - t0) / (t1 - t0)
    raise ValueError(f"curve tokens are not increasing: {curve}")


def paired_difference(a: list[float | None], b: list[float | None]) -> tuple[float, float | None, int] | None:
    """Per-seed a − b (seeds where both have a value): (mean, standard error, seeds); None if no seed."""
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    if not diffs:
        return None
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
    return statistics.mean(diffs), se, len(diffs)


def tokens_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    for tokens, acc in curve:
        if acc >= target:
            return tokens
    return None


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _ms(values: list[float], fmt: str = "{:.1f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def report(results: dict[str, list[dict]], out_dir: str, budget: int, world: str = "toy") -> str:
    lines = [f"World `{world}`, equal generated-token budget {budget:,} per run; mean ± std over seeds "
             f"({', '.join(str(len(v)) for v in results.values())} seeds).", "",
             "| method | held-out acc. start → last eval (%) | at exactly the budget (%, interpolated) | gain (pts) | steps | generated tokens | trained tokens | "
             "prompt valid ratio (sampled) | valid ratio (trained seqs) | train wall-clock (s) | "
             "branch at step start | branch rel. pos. | branch mixed outcome |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, runs in results.items():
        lines.append(
            f"| {m} | {_ms([100 * r['first_eval'] for r in runs])} → {_ms([100 * r['final_eval'] for r in runs])} | "
            f"{_ms([_pct(accuracy_at_budget(r['curve_tokens'], budget)) for r in runs])} | "
            f"{_ms([100 * (r['final_eval'] - r['first_eval']) for r in runs])} | {_ms([r['steps'] for r in runs], '{:.0f}')} | "
            f"{_ms([r['generated_tokens'] for r in runs], '{:.0f}')} | "
            f"{_ms([r['trained_tokens'] for r in runs], '{:.0f}')} | {_ms([r['prompt_valid_ratio'] for r in runs], '{:.2f}')} | "
            f"{_ms([r['trained_valid_ratio'] for r in runs], '{:.2f}')} | {_ms([r['train_seconds'] for r in runs], '{:.0f}')} | "
            f"{_ms([r['branch_at_step_start'] for r in runs], '{:.2f}')} | {_ms([r['branch_mean_rel_pos'] for r in runs], '{:.2f}')} | "
            f"{_ms([r['branch_mixed_outcome'] for r in runs], '{:.2f}')} |")
    at_budget = {m: [accuracy_at_budget(r["curve_tokens"], budget) for r in runs] for m, runs in results.items()}
    pairs = [(a, b) for a, b in (("attnrl", "treerl"), ("attnrl", "grpo"), ("attnrl_fci_entropy", "treerl"),
                                 ("treerl_step_entropy", "treerl")) if a in results and b in results]
    if pairs:
        lines += ["", "Paired by seed, at exactly the budget (interpolated), mean ± standard error (points):", ""]
        for a, b in pairs:
            d = paired_difference(at_budget[a], at_budget[b])
            lines.append(f"- {a} − {b}: " + ("no seed reached the budget" if d is None else
                         f"{100 * d[0]:+.1f}" + (f" ± {100 * d[1]:.1f}" if d[1] is not None else " (one seed, no SE)")
                         + f" over {d[2]} seeds"))
    if "treerl" in results and "attnrl" in results:
        target = statistics.mean(r["final_eval"] for r in results["treerl"])
        reach = [tokens_to_reach(r["curve_tokens"], target) for r in results["attnrl"]]
        lines += ["", f"Generated tokens AttnRL needed to reach TreeRL's mean final accuracy ({100 * target:.1f}%): "
                      + ", ".join("never" if t is None else f"{t:,.0f}" for t in reach) + f" (budget {budget:,})."]
    phases = sorted({k for runs in results.values() for r in runs for k in r["phase_seconds"]})
    lines += ["", "Wall-clock per phase (s, mean over seeds):", "",
              "| method | " + " | ".join(phases) + " |", "|---|" + "---|" * len(phases)]
    for m, runs in results.items():
        lines.append(f"| {m} | " + " | ".join(f"{statistics.mean(r['phase_seconds'].get(p, 0.0) for r in runs):.0f}"
                                            for p in phases) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(text)
    return text


def plot(results: dict[str, list[dict]], out_dir: str) -> None:
    """Thin lines: each seed's evaluations. Thick line: the mean over seeds, each seed's curve
    linearly interpolated onto a common x grid (up to where the shortest seed ends)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    for key, xlabel, name in (("curve_tokens", "generated tokens", "accuracy_vs_tokens.png"),
                              ("curve_seconds", "wall-clock seconds (train + eval)", "accuracy_vs_seconds.png")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, (m, runs) in enumerate(results.items()):
            color = f"C{i}"
            for r in runs:
                xs, ys = zip(*r[key])
                ax.plot(xs, [100 * y for y in ys], "-", lw=0.6, alpha=0.3, color=color)
            grid = np.linspace(0, min(r[key][-1][0] for r in runs), 50)
            mean = np.mean([np.interp(grid, *zip(*r[key])) for r in runs], axis=0)
            ax.plot(grid, 100 * mean, "-", lw=2.2, color=color, label=f"{m} (mean of {len(runs)})")
        ax.set_xlabel(xlabel); ax.set_ylabel("held-out accuracy (%)"); ax.grid(alpha=0.3); ax.legend(fontsize=8)
        fig.tight_layout(); fig.savefig(os.path.join(out_dir, name), dpi=100); plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="toy", choices=list(WORLD_NAMES), help="which built-in toy world")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=int, default=150_000, help="generated tokens per run")
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-problems", type=int, default=500)
    p.add_argument("--parallel", type=int, default=2, help="runs at once (each with --threads torch threads)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "compare"))
    p.add_argument("--earlier", default="", help="an earlier invocation's summary.json: its methods (same seeds and "
                   "budget) join the table without being run again, e.g. new selectors next to the committed runs")
    p.add_argument("--smoke", action="store_true", help="tiny budget, 1 seed, 2 methods: checks the plumbing only")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: extra train.py flags for every run")
    args = p.parse_args(argv)
    args.extra = [a for a in args.extra if a != "--"]
    if args.smoke:
        args.methods, args.seeds, args.budget, args.max_steps = "grpo,attnrl", "0", 1000, 3
        args.eval_every, args.eval_problems, args.parallel = 2, 16, 1
        args.extra += ["--prompts-per-step", "4", "--n-initial", "4", "--max-response-tokens", "48"]
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    earlier = {}
    if args.earlier:   # read before any run: a bad file is an error now, not after hours of training
        if not os.path.isfile(args.earlier):
            p.error(f"--earlier {args.earlier}: no such file (an earlier invocation's summary.json)")
        with open(args.earlier) as f:
            earlier = {m: runs for m, runs in json.load(f).items() if m not in methods}
        short = [m for m, runs in earlier.items() if len(runs) != len(seeds)]
        if short:
            p.error(f"--earlier {args.earlier}: {short} have a different number of seeds than --seeds {args.seeds}")
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    jobs = [(m, s) for s in seeds for m in methods]
    t0 = time.time()
    with ThreadPoolExecutor(args.parallel) as pool:
        for done in pool.map(lambda job: run_one(job[0], job[1], args, args.out), jobs):
            print(f"[compare] {done['method']} seed {done['seed']} {'re-used' if done['reused'] else 'done'} "
                  f"({time.time() - t0:.0f}s elapsed)", flush=True)
    results = {**earlier, **{m: [load_run(os.path.join(args.out, "runs", f"{m}_s{s}")) for s in seeds] for m in methods}}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, args.out)
    print(report(results, args.out, args.budget, args.world))
    print(f"[compare] total wall-clock {time.time() - t0:.0f}s; results in {args.out}")


if __name__ == "__main__":
    main()
