"""The paper's Fig. 6 in miniature: do FCI branch points buy more contrasting outcomes than entropy ones?

    python bench/branch_outcomes.py                          # both worlds -> docs/results/branch_outcomes/
    python bench/branch_outcomes.py --worlds toy-plan --prompts 20 --out /tmp/b

One batch of `--prompts` training prompts × G = 6 initial responses (temperature 1) from a world's
shipped model; then, on the SAME initial responses, the trainer's own planning step
(Trainer._score_and_plan: steps, entropies, FCI, ADS, branch points) and branch generation
(T = 2 continuations per branch point) for three rows of docs/algorithm.md §h:
- entropy: TreeRL (entropy forks, every response branched, no filters),
- fci: ATB (FCI forks, every response branched, no filters),
- fci + ADS: AttnRL's sampling (FCI forks, Eq. 8 branch counts, attention filter).
Reported per row: the share of branch points whose continuations together with the original
response are all-correct / all-wrong / mixed, and the prompt valid ratio (prompts whose leaves do not
all share one reward) before branching (the 6 initial responses) and after (all leaves).
"""
from __future__ import annotations

import argparse
import copy
import os
import time

import torch

from world_sample import ROOT, load, measure_worlds

from attnrl_mini.run.config import algo_overrides, make_config
from attnrl_mini.models.policy import add_lora
from attnrl_mini.worlds.toy import toy_prompt_ids
from attnrl_mini.trainer import Trainer
from attnrl_mini.worlds.reward import Grader
from attnrl_mini.worlds import get_world

ROWS = {
    "entropy (TreeRL)": dict(algo_overrides("treerl")),
    "fci (ATB)": dict(algo_overrides("treerl"), branch_selector="fci"),
    "fci + ADS (AttnRL)": dict(algo_overrides("attnrl"), one_step_stale=False),
}


def mixed(rewards) -> bool:
    return len(set(rewards)) > 1


def measure(world_name: str, n_prompts: int, seed: int, grader: Grader) -> dict:
    wm = load(world_name)
    base = make_config(world_name, seed=seed)
    model = add_lora(wm.model, base.lora_rank, base.lora_alpha, base.lora_target_modules)  # B = 0: the base model
    world = get_world(world_name)
    problems = world.train_problems(n_prompts, seed=seed + 4242)

    def trainer(cfg):
        t = Trainer(cfg, model, wm.tokenizer, wm.generator, grader, problems, lambda p: toy_prompt_ids(wm.tokenizer, p),
                    log=lambda s: None)
        t.prompt_batch_size = n_prompts
        return t

    t0 = time.time()
    first = trainer(base)
    batch = first._new_batch()
    comps = wm.generator.generate(first._initial_requests(batch), temperature=1.0, seed=seed)
    texts, answers = first._texts(batch, comps, branch=False)
    first._attach_initials(batch, comps, grader.grade(texts, answers))
    before = sum(mixed([r.reward for r in g.rollouts]) for g in batch.groups) / len(batch.groups)
    out = {"world": world_name, "prompts": len(batch.groups), "initial_accuracy":
           sum(g.accuracy for g in batch.groups) / len(batch.groups), "valid_before": before, "rows": {}}
    for name, overrides in ROWS.items():
        t = trainer(make_config(world_name, seed=seed, **overrides))
        b = copy.deepcopy(batch)
        t._score_and_plan(b)
        bcomps = wm.generator.generate(t._branch_requests(b), temperature=1.0, seed=seed + 1)
        texts, answers = t._texts(b, bcomps, branch=True)
        rewards = grader.grade(texts, answers)
        counts = {"all_correct": 0, "all_wrong": 0, "mixed": 0}
        k = 0
        leaves = [[r.reward for r in g.rollouts] for g in b.groups]
        for br, cs in zip(b.branches, bcomps):
            rs = rewards[k:k + len(cs)]
            k += len(cs)
            leaves[br.prompt_idx] += rs
            own = b.groups[br.prompt_idx].rollouts[br.response_idx].reward
            both = [own] + rs
            counts["mixed" if mixed(both) else "all_correct" if both[0] == 1.0 else "all_wrong"] += 1
        n = max(1, len(b.branches))
        out["rows"][name] = {"branch_points": len(b.branches), **{key: v / n for key, v in counts.items()},
                             "valid_after": sum(mixed(lv) for lv in leaves) / len(leaves),
                             "prompts_filtered": sum(g.dropped for g in b.groups)}
    out["seconds"] = time.time() - t0
    return out


def table(results: list[dict]) -> str:
    lines = ["| world | branching | branch points | all-correct | all-wrong | mixed | prompt valid ratio before → after |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for name, row in r["rows"].items():
            lines.append(f"| `{r['world']}` | {name} | {row['branch_points']} | {row['all_correct']:.2f} | "
                         f"{row['all_wrong']:.2f} | **{row['mixed']:.2f}** | {r['valid_before']:.2f} → {row['valid_after']:.2f} |")
    lines.append("")
    lines.append("(" + "; ".join(f"{r['world']}: {r['prompts']} prompts × 6, initial accuracy {r['initial_accuracy']:.2f}"
                                 for r in results) + "; all rows branch the same initial responses.)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", default="toy,toy-plan")
    ap.add_argument("--prompts", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "branch_outcomes"))
    args = ap.parse_args(argv)
    measure_worlds(args.out, args.worlds, lambda w, grader: measure(w, args.prompts, args.seed, grader), table)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
