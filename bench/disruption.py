"""The paper's Fig. 3 in miniature: how much does a step matter to the rest of a correct response?

    python bench/disruption.py                               # both worlds -> docs/results/disruption/
    python bench/disruption.py --worlds toy-plan --responses 20 --out /tmp/d   # quick look

From correct responses of a world's shipped model (temperature 1, training-split prompts): pick a
step, keep the response up to the end of that step, and generate the rest again (`--regens` samples)
while every new token's attention to the step's tokens is zeroed after the softmax, without
renormalising (attnrl_mini/tools/disruption.py, the release's `disrupted_token_ranges`). Grade.
The same prefixes are also regenerated without disruption (the control), so

    normalised accuracy (group) = accuracy of the disrupted regenerations / accuracy of the controls

is 1 when the step does not matter and 0 when losing it always breaks the answer.
Groups, one step of each per response (steps other than the last; the last has nothing after it):
- fci_top20: a step drawn from the FCI top 20% (Eq. 7's candidates),
- fci_20_100: a step drawn from the others,
- entropy_top20: the step holding a token drawn from the response's top-20% entropy tokens.
95% intervals: bootstrap over the disrupted steps (2,000 resamples of the ratio). The paper's
values (read off its Fig. 3): 0.24 / 0.37 / 0.30. Accuracy against relative position: the step's
middle token over the response length, 5 bins, all groups pooled.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch

from world_sample import ROOT, load, measure_worlds, sample_and_score, top_fraction

from attnrl_mini.algorithm.branching import fci_candidate_steps
from attnrl_mini.tools.disruption import disrupted
from attnrl_mini.generation import GenRequest
from attnrl_mini.worlds.reward import Grader
from attnrl_mini.worlds import get_world

GROUPS = ("fci_top20", "fci_20_100", "entropy_top20")
PAPER = {"fci_top20": 0.24, "fci_20_100": 0.37, "entropy_top20": 0.30}


def pick_steps(sample, quantile: float, rng: random.Random) -> dict[str, int]:
    """One step per group for this response (a group with no eligible step is left out)."""
    eligible = set(range(len(sample.steps) - 1))
    top = set(fci_candidate_steps(sample.fci, quantile)) & eligible
    rest = eligible - top
    hot_tokens = sorted(top_fraction(sample.entropies[:-1]))
    hot_steps = sorted({k for t in hot_tokens for k, (s, e) in enumerate(sample.steps) if s <= t < e} & eligible)
    picks = {}
    for name, pool in (("fci_top20", sorted(top)), ("fci_20_100", sorted(rest))):
        if pool:
            picks[name] = rng.choice(pool)
    hot = [t for t in hot_tokens if any(s <= t < e for k, (s, e) in enumerate(sample.steps) if k in hot_steps)]
    if hot:
        t = rng.choice(hot)
        picks["entropy_top20"] = next(k for k, (s, e) in enumerate(sample.steps) if s <= t < e)
    return picks


def regen_request(wm, sample, step: int, n: int) -> GenRequest:
    """n continuations of the response kept up to the end of `step`."""
    e = sample.steps[step][1]
    return GenRequest(sample.prompt_ids + sample.response_ids[:e], n, max(1, wm.cfg.max_response_tokens - e))


def full_texts(wm, sample, step: int, comps) -> list[str]:
    prefix = sample.response_ids[:sample.steps[step][1]]
    return [wm.tokenizer.decode(prefix + c.token_ids, skip_special_tokens=True) for c in comps]


def bootstrap_ratio(dis: list[float], ctl: list[float], rng: random.Random, n: int = 2000) -> tuple[float, float]:
    idx = range(len(dis))
    ratios = []
    for _ in range(n):
        pick = [rng.choice(idx) for _ in idx]
        c = sum(ctl[i] for i in pick)
        if c > 0:
            ratios.append(sum(dis[i] for i in pick) / c)
    ratios.sort()
    return ratios[int(0.025 * len(ratios))], ratios[int(0.975 * len(ratios)) - 1]


def study(world_name: str, n_responses: int, regens: int, seed: int, grader: Grader, log=print) -> dict:
    wm = load(world_name)
    world = get_world(world_name)
    rng = random.Random(seed)
    t0 = time.time()
    # correct responses with all three groups present: 2 samples per prompt, drawn until enough
    chosen, batch = [], 0
    while len(chosen) < n_responses:
        problems = world.train_problems(100, seed=seed * 1000 + batch + 5000)
        for g in sample_and_score(wm, problems, 2, seed + batch, grader):
            for smp in g:
                if smp.reward == 1.0 and len(chosen) < n_responses:
                    picks = pick_steps(smp, wm.cfg.fci_quantile, rng)
                    if len(picks) == len(GROUPS):
                        chosen.append((smp, picks))
        batch += 1
    log(f"[disruption] {world_name}: {len(chosen)} correct responses ({time.time() - t0:.0f}s)")
    jobs = [(smp, group, step) for smp, picks in chosen for group, step in picks.items()]
    # controls: every prefix regenerated without disruption, in one batched call
    controls = wm.generator.generate([regen_request(wm, smp, step, regens) for smp, _, step in jobs], seed=seed + 99)
    items = []   # one per (response, group): disrupted and control accuracies over `regens` samples
    for i, ((smp, group, step), ctl) in enumerate(zip(jobs, controls)):
        P, (s, e) = len(smp.prompt_ids), smp.steps[step]
        with disrupted(wm.model, P + s, P + e):    # one prefix per call: the key range is the same for all rows
            dis = wm.generator.generate([regen_request(wm, smp, step, regens)], seed=seed * 100_003 + i)[0]
        rewards = grader.grade(full_texts(wm, smp, step, dis) + full_texts(wm, smp, step, ctl),
                               [smp.problem.answer] * (2 * regens))
        items.append({"group": group, "step": step, "n_steps": len(smp.steps),
                      "rel_pos": (s + e) / 2 / len(smp.response_ids),
                      "disrupted": statistics.mean(rewards[:regens]), "control": statistics.mean(rewards[regens:])})
        if (i + 1) % 150 == 0:
            log(f"[disruption] {world_name}: {i + 1}/{len(jobs)} disruptions ({time.time() - t0:.0f}s)")
    result = {"world": world_name, "responses": len(chosen), "regens": regens, "groups": {}, "by_position": []}
    for group in GROUPS:
        its = [it for it in items if it["group"] == group]
        dis, ctl = [it["disrupted"] for it in its], [it["control"] for it in its]
        lo, hi = bootstrap_ratio(dis, ctl, rng)
        result["groups"][group] = {"n": len(its), "disrupted_acc": statistics.mean(dis), "control_acc": statistics.mean(ctl),
                                   "normalised": sum(dis) / sum(ctl), "ci95": [lo, hi], "paper": PAPER[group]}
    for b in range(5):
        its = [it for it in items if b / 5 <= it["rel_pos"] < (b + 1) / 5 or (b == 4 and it["rel_pos"] == 1.0)]
        if its:
            ctl = sum(it["control"] for it in its)
            result["by_position"].append({"bin": [b / 5, (b + 1) / 5], "n": len(its),
                                          "normalised": sum(it["disrupted"] for it in its) / ctl if ctl else None})
    result["seconds"] = time.time() - t0
    result["items"] = items
    return result


def table(results: list[dict]) -> str:
    lines = ["| group | paper (Fig. 3) | " + " | ".join(f"`{r['world']}`: normalised acc. [95% CI] (n)" for r in results) + " |",
             "|---|---|" + "---|" * len(results)]
    for g in GROUPS:
        cells = [f"{r['groups'][g]['normalised']:.2f} [{r['groups'][g]['ci95'][0]:.2f}, {r['groups'][g]['ci95'][1]:.2f}] "
                 f"({r['groups'][g]['n']})" for r in results]
        lines.append(f"| {g} | ≈{PAPER[g]:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Normalised accuracy by relative position of the disrupted step (5 bins, groups pooled):", "",
              "| world | " + " | ".join(f"{b / 5:.1f}–{(b + 1) / 5:.1f}" for b in range(5)) + " |", "|---|" + "---|" * 5]
    for r in results:
        cells = {tuple(p["bin"]): p for p in r["by_position"]}
        lines.append(f"| `{r['world']}` | " + " | ".join(
            (f"{cells[(b / 5, (b + 1) / 5)]['normalised']:.2f} ({cells[(b / 5, (b + 1) / 5)]['n']})"
             if (b / 5, (b + 1) / 5) in cells and cells[(b / 5, (b + 1) / 5)]['normalised'] is not None else "–")
            for b in range(5)) + " |")
    lines += ["", "Control accuracy (same prefixes, no disruption): " + "; ".join(
        f"{r['world']} " + ", ".join(f"{g} {r['groups'][g]['control_acc']:.2f}" for g in GROUPS) for r in results) + "."]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / (len(results) + 1)
    for j, r in enumerate(results + [None]):
        xs = [i + (j - len(results) / 2) * width for i in range(len(GROUPS))]
        if r is None:
            ax1.bar(xs, [PAPER[g] for g in GROUPS], width, color="lightgray", label="paper (Fig. 3, read off)")
            continue
        vals = [r["groups"][g]["normalised"] for g in GROUPS]
        err = [[v - r["groups"][g]["ci95"][0] for g, v in zip(GROUPS, vals)],
               [r["groups"][g]["ci95"][1] - v for g, v in zip(GROUPS, vals)]]
        ax1.bar(xs, vals, width, yerr=err, capsize=3, label=r["world"])
        pos = [p for p in r["by_position"] if p["normalised"] is not None]
        ax2.plot([(p["bin"][0] + p["bin"][1]) / 2 for p in pos], [p["normalised"] for p in pos], "o-", label=r["world"])
    ax1.set_xticks(range(len(GROUPS)), GROUPS)
    ax1.set_ylabel("normalised accuracy after disruption")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("relative position of the disrupted step")
    ax2.set_ylabel("normalised accuracy")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", default="toy,toy-plan")
    ap.add_argument("--responses", type=int, default=210, help="correct responses per world (one disruption per group each)")
    ap.add_argument("--regens", type=int, default=4, help="regenerations per disrupted prefix (and per control)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "disruption"))
    args = ap.parse_args(argv)
    results = measure_worlds(args.out, args.worlds,
                             lambda w, grader: study(w, args.responses, args.regens, args.seed, grader), table)
    plot(results, os.path.join(args.out, "disruption.png"))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
