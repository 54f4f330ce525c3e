"""The properties a world is judged by (docs/worlds.md), measured on its shipped model.

    python bench/world_properties.py                         # both worlds -> docs/results/world_properties/
    python bench/world_properties.py --worlds toy-plan --prompts 50

For each world, G = 6 samples at temperature 1 on `--prompts` training-split problems, plus one
sample per held-out problem (the test set, as eval.py scores it):
- mean token entropy at the decision tokens vs all other response tokens;
- share of the FCI top-20% steps (Eq. 7's candidates) that are decision steps, and share of the
  top-20% entropy tokens (per response) that are decision tokens;
- per-prompt outcomes at G = 6: all-correct / all-wrong / mixed (= the prompt valid ratio), by level;
- share of the wrong responses with a wrong decision (toy-plan: x is not the larger number; early /
  late: x or y is not the larger of its pair);
- per level, the accuracy of each decision, and the share of prompts whose G decisions all agree
  (every response picked the same number: such a prompt's decision is settled, a fork there cannot
  give contrast);
- held-out accuracy by level.
Decision tokens (bench/world_sample.py): toy-plan, early, late, the chosen numbers in the decision steps; toy, the
written results after "=" (where its slips are made; toy has no decision step, so its
"decision step" is any step holding a written result).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from world_sample import ROOT, decisions_right, load, measure_worlds, sample_and_score, top_fraction

from attnrl_mini.algorithm.branching import fci_candidate_steps
from attnrl_mini.worlds.reward import Grader
from attnrl_mini.worlds import get_world


def decision_summary(prompts: list[list[list[bool | None]]]) -> dict:
    """Per decision i: the share of responses that got it right, the share of prompts whose G responses
    all made the same pick; and the share of prompts where every decision agrees. prompts: [P][G][D]."""
    D = len(prompts[0][0])
    agree = [[len({resp[i] for resp in g}) == 1 for i in range(D)] for g in prompts]     # [P][D]
    return {"accuracy_per_decision": [statistics.mean(resp[i] is True for g in prompts for resp in g) for i in range(D)],
            "prompts_agreeing_per_decision": [statistics.mean(a[i] for a in agree) for i in range(D)],
            "prompts_all_decisions_agree": statistics.mean(all(a) for a in agree), "prompts": len(prompts)}


def measure(world_name: str, n_prompts: int, n_test: int, G: int, seed: int, grader: Grader) -> dict:
    wm = load(world_name)
    world = get_world(world_name)
    t0 = time.time()
    groups = sample_and_score(wm, world.train_problems(n_prompts, seed=seed + 777), G, seed, grader)
    samples = [s for g in groups for s in g]
    ent_dec, ent_rest, fci_top, fci_top_dec, ent_top, ent_top_dec = [], [], 0, 0, 0, 0
    for s in samples:
        for t, h in enumerate(s.entropies.tolist()):
            (ent_dec if t in s.decision_tokens else ent_rest).append(h)
        dec_steps = {k for k, (a, b) in enumerate(s.steps) if any(a <= t < b for t in s.decision_tokens)}
        top_steps = fci_candidate_steps(s.fci, wm.cfg.fci_quantile)
        fci_top += len(top_steps)
        fci_top_dec += sum(k in dec_steps for k in top_steps)
        top_tokens = top_fraction(s.entropies[:-1])          # the EOS position is never a branch point
        ent_top += len(top_tokens)
        ent_top_dec += len(top_tokens & s.decision_tokens)
    outcomes = {"all_correct": 0, "all_wrong": 0, "mixed": 0}
    by_level: dict[int, dict] = {}
    for g in groups:
        k = sum(s.reward for s in g)
        kind = "all_correct" if k == len(g) else "all_wrong" if k == 0 else "mixed"
        outcomes[kind] += 1
        lv = by_level.setdefault(g[0].problem.level, {"prompts": 0, "mixed": 0, "accuracy": []})
        lv["prompts"] += 1
        lv["mixed"] += kind == "mixed"
        lv["accuracy"] += [s.reward for s in g]
    wrong = [s for s in samples if s.reward == 0]
    has_decisions = world_name in ("toy-plan", "early", "late")
    per_level_picks: dict[int, list] = {}                  # level -> per prompt [G][D] True / False / None
    for g in groups:
        per_level_picks.setdefault(g[0].problem.level, []).append([decisions_right(world_name, s.problem, s.text) for s in g])
    test = sample_and_score(wm, world.test_problems(n_test), 1, seed + 1, grader)
    test_by_level: dict[int, list[float]] = {}
    for g in test:
        test_by_level.setdefault(g[0].problem.level, []).append(g[0].reward)
    n = len(groups)
    return {
        "world": world_name, "prompts": n, "G": G, "responses": len(samples),
        "entropy_decision_tokens": statistics.mean(ent_dec), "entropy_other_tokens": statistics.mean(ent_rest),
        "fci_top20_steps_that_are_decision_steps": fci_top_dec / fci_top,
        "entropy_top20_tokens_that_are_decision_tokens": ent_top_dec / ent_top,
        "outcomes_G6": {k: v / n for k, v in outcomes.items()},
        "prompt_valid_ratio": outcomes["mixed"] / n,
        "train_accuracy": statistics.mean(s.reward for s in samples),
        "by_level_G6": {lv: {"mixed": d["mixed"] / d["prompts"], "accuracy": statistics.mean(d["accuracy"]),
                             "prompts": d["prompts"]} for lv, d in sorted(by_level.items())},
        "wrong_responses_with_wrong_decision":
            statistics.mean(not all(decisions_right(world_name, s.problem, s.text)) for s in wrong)
            if wrong and has_decisions else None,
        "decisions_by_level": {lv: decision_summary(prompts) for lv, prompts in sorted(per_level_picks.items())}
        if has_decisions else None,
        "held_out_accuracy": statistics.mean(r for rs in test_by_level.values() for r in rs),
        "held_out_by_level": {lv: statistics.mean(rs) for lv, rs in sorted(test_by_level.items())},
        "held_out_n": sum(len(rs) for rs in test_by_level.values()),
        "seconds": time.time() - t0,
    }


def table(results: list[dict]) -> str:
    def pct(x):
        return "–" if x is None else f"{100 * x:.0f}%"
    rows = [
        ("mean token entropy: decision tokens / other tokens (nats)",
         lambda r: f"{r['entropy_decision_tokens']:.2f} / {r['entropy_other_tokens']:.2f}"),
        ("FCI top-20% steps that are decision steps", lambda r: pct(r["fci_top20_steps_that_are_decision_steps"])),
        ("top-20% entropy tokens that are decision tokens", lambda r: pct(r["entropy_top20_tokens_that_are_decision_tokens"])),
        ("wrong responses whose decision was wrong", lambda r: pct(r["wrong_responses_with_wrong_decision"])),
        ("prompts all-correct / all-wrong / mixed at G = 6 (train split)",
         lambda r: " / ".join(pct(r["outcomes_G6"][k]) for k in ("all_correct", "all_wrong", "mixed"))),
        ("prompt valid ratio at G = 6, by level",
         lambda r: ", ".join(f"L{lv} {d['mixed']:.2f}" for lv, d in r["by_level_G6"].items())),
        ("decision accuracy by level (x / y)", lambda r: "–" if not r.get("decisions_by_level") else ", ".join(
            f"L{lv} " + " / ".join(pct(a) for a in d["accuracy_per_decision"]) for lv, d in r["decisions_by_level"].items())),
        ("prompts whose G decisions all agree, by level (x / y; all)", lambda r: "–" if not r.get("decisions_by_level") else ", ".join(
            f"L{lv} " + " / ".join(pct(a) for a in d["prompts_agreeing_per_decision"]) + f"; {pct(d['prompts_all_decisions_agree'])}"
            for lv, d in r["decisions_by_level"].items())),
        ("held-out accuracy (one sample each, T = 1)", lambda r: f"{pct(r['held_out_accuracy'])} (n = {r['held_out_n']})"),
        ("held-out accuracy by level", lambda r: ", ".join(f"L{lv} {pct(a)}" for lv, a in r["held_out_by_level"].items())),
    ]
    lines = ["| property | " + " | ".join(f"`{r['world']}`" for r in results) + " |",
             "|---|" + "---|" * len(results)]
    lines += [f"| {name} | " + " | ".join(f(r) for r in results) + " |" for name, f in rows]
    n = ", ".join(f"{r['world']}: {r['prompts']} prompts × {r['G']}" for r in results)
    return "\n".join(lines) + f"\n\n({n}; temperature 1; decision tokens as defined in bench/world_properties.py.)\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", default="toy,toy-plan,early,late")
    ap.add_argument("--prompts", type=int, default=200, help="training-split prompts per world (G samples each)")
    ap.add_argument("--test", type=int, default=500, help="held-out problems per world (one sample each)")
    ap.add_argument("--G", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "world_properties"))
    args = ap.parse_args(argv)
    measure_worlds(args.out, args.worlds,
                   lambda w, grader: measure(w, args.prompts, args.test, args.G, args.seed, grader), table)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
