"""The branch-selector study (the paper's Fig. 6, widened; issue #22): which selector buys contrast?

    python bench/branch_outcomes.py                                  # four worlds -> docs/results/selector_study/
    python bench/branch_outcomes.py --worlds early,late --prompts 90 --out /tmp/b
    python bench/branch_outcomes.py --worlds early,late --selectors fci,entropy --prompts 8 --out /tmp/d
    python bench/branch_outcomes.py --worlds "" --train-args "--model MODEL --train-data DATA.jsonl" --prompts 32 --out /tmp/mine

A practitioner's pre-flight check: on YOUR model and prompts (`--train-args` takes any train.py
command line; the run's settings come from it exactly as train.py builds them), which selector
gives forks whose outcomes disagree?

One batch of `--prompts` training prompts × G initial responses (temperature 1); then, on the SAME
initial responses, the trainer's own planning step (Trainer._score_and_plan: steps, entropies, FCI,
branch points) and branch generation (T continuations per branch point) for each row:
- one row per selector (fci, entropy, step_entropy, fci_entropy, first_steps, random), each with
  TreeRL's sampling (every response branched at N points, no filters), so only WHERE the forks fall
  differs between these rows;
- fci + ADS (AttnRL): the method's own sampling (Eq. 8 branch counts, attention filter).
Per row, over its branch points (a branch point = the original response + its T continuations):
- where the forks fall relative to the decisions (built-in worlds with decisions: toy-plan, early,
  late; `decision_step_indices` in bench/world_sample.py): before (the fork regenerates every decision),
  at (inside a decision step, at or before its digit), between (after a decision, before the next:
  regenerates only later ones), after (regenerates none);
- the mixed-outcome share (rewards of the original and its continuations not all equal), also by
  place; sibling diversity (distinct texts among the original's suffix and the T continuations, 1..T+1);
  generated tokens per mixed fork (all continuation tokens of the row / its mixed forks);
- the prompt valid ratio before branching (the G initial responses) and after (all leaves).
95% intervals: percentile bootstrap over PROMPTS (1000 resamples; the forks of one prompt are not
independent, so resampling forks would give too narrow intervals).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import random
import shlex
import time

import torch

from world_sample import ROOT, decision_step_indices, measure_worlds

from attnrl_mini.config import algo_overrides, validate
from attnrl_mini.tools.fork_stats import PLACES, bootstrap_ratio, fork_place, mixed, pooled_ratio
from attnrl_mini.trainer import Trainer
from attnrl_mini.worlds.reward import Grader

SELECTOR_ROWS = ("fci", "entropy", "step_entropy", "fci_entropy", "first_steps", "random")
ROWS = {**{sel: dict(algo_overrides("treerl"), branch_selector=sel) for sel in SELECTOR_ROWS},
        "fci + ADS (AttnRL)": dict(algo_overrides("attnrl"), one_step_stale=False)}
ROW_OF_FLAG = {**{sel: sel for sel in SELECTOR_ROWS}, "attnrl": "fci + ADS (AttnRL)"}    # --selectors names


def rows_of(selectors: str) -> tuple[str, ...]:
    """The ROWS named by --selectors ("fci,entropy"; "attnrl" = the fci + ADS row), in ROWS' order."""
    names = [x.strip() for x in selectors.split(",") if x.strip()]
    unknown = [x for x in names if x not in ROW_OF_FLAG]
    if unknown or not names:
        raise SystemExit(f"error: --selectors {selectors!r}: unknown {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(ROW_OF_FLAG)}")
    return tuple(r for r in ROWS if r in {ROW_OF_FLAG[x] for x in names})


def decision_spans(tok, response_ids: list[int], steps: list[tuple[int, int]], world: str | None) -> list[tuple[int, int, int]]:
    """(start, end, first digit offset) of each decision step of a built-in world's response."""
    if world is None:
        return []
    token_texts = [tok.decode([t]) for t in response_ids]
    texts = ["".join(token_texts[s:e]) for s, e in steps]
    spans = []
    for k in decision_step_indices(world, texts):
        s, e = steps[k]
        digit = next((t for t in range(s, e) if token_texts[t].strip().isdigit()), e - 1)
        spans.append((s, e, digit))
    return spans


@dataclasses.dataclass
class Setup:                     # what train.py would run on, without the training
    label: str
    world: str | None            # the built-in world, when it is one (decisions known by construction)
    cfg: object
    model: torch.nn.Module
    tok: object
    generator: object
    problems: list
    encode: object


def make_setup(label: str, train_argv: list[str], n_prompts: int, seed: int) -> Setup:
    """The model, generator and training prompts of a train.py command line (train.parse_args, so any
    model and data train.py accepts); LoRA added with B = 0, i.e. the base model's outputs."""
    import train
    from attnrl_mini.generation import make_generator
    from attnrl_mini.models import policy
    from attnrl_mini.models.precision import resolve_dtype
    from attnrl_mini.worlds import WORLD_NAMES, data, run_problems
    cfg, _ = train.parse_args(train_argv + ["--seed", str(seed)])
    validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model_dir = policy.resolve_model(cfg.model)
    tok = policy.load_tokenizer(model_dir)
    device = policy.resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype, device))   # auto -> this device's dtype
    model = policy.load_model(model_dir, dtype=cfg.dtype, device=device, load_in_4bit=cfg.load_in_4bit).eval()
    model = policy.add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_target_modules)
    generator = make_generator(
        cfg.generator, tokenizer=tok, model_dir=model_dir, model=model, dtype=cfg.dtype, device=str(device),
        max_lora_rank=cfg.lora_rank, max_model_len=cfg.max_prompt_tokens + cfg.max_response_tokens,
        gpu_memory_utilization=cfg.gpu_memory_utilization, vllm_url=cfg.vllm_url, seed=cfg.seed, log=print,
        load_in_4bit=cfg.load_in_4bit, vocab_guard=cfg.vocab_guard)
    problems = data.prompts_that_fit(tok, run_problems(cfg)[0], cfg.max_prompt_tokens)
    random.Random(seed + 4242).shuffle(problems)
    world = cfg.train_data if cfg.train_data in WORLD_NAMES else None
    return Setup(label, world, cfg, model, tok, generator, problems[:n_prompts],
                 lambda p: data.encode_prompt(tok, p))


def measure(setup: Setup, n_prompts: int, seed: int, grader: Grader, rows: tuple[str, ...] = tuple(ROWS)) -> dict:
    """One batch of initial responses, branched by each of `rows` (names of ROWS); the module docstring's
    measurements per row."""
    s = setup

    def trainer(cfg):
        t = Trainer(cfg, s.model, s.tok, s.generator, grader, s.problems, s.encode, log=lambda m: None)
        t.prompt_batch_size = n_prompts
        return t

    t0 = time.time()
    first = trainer(s.cfg)
    batch = first._new_batch()
    comps = s.generator.generate(first._initial_requests(batch), temperature=s.cfg.temperature, seed=seed)
    texts, answers = first._texts(batch, comps, branch=False)
    first._attach_initials(batch, comps, grader.grade(texts, answers))
    out = {"world": s.label, "prompts": len(batch.groups), "G": s.cfg.n_initial, "T": s.cfg.n_continuations,
           "initial_accuracy": sum(g.accuracy for g in batch.groups) / len(batch.groups),
           "initial_correct": sum(r.reward > 0 for g in batch.groups for r in g.rollouts),
           "valid_before": sum(mixed([r.reward for r in g.rollouts]) for g in batch.groups) / len(batch.groups),
           "rows": {}}
    for name in rows:
        cfg = dataclasses.replace(s.cfg, **ROWS[name])
        validate(cfg)
        t = trainer(cfg)
        b = copy.deepcopy(batch)
        t._score_and_plan(b)
        bcomps = s.generator.generate(t._branch_requests(b), temperature=cfg.temperature, seed=seed + 1)
        texts, answers = t._texts(b, bcomps, branch=True)
        rewards = grader.grade(texts, answers)
        forks: list[list[dict]] = [[] for _ in b.groups]                  # per prompt
        leaves = [[r.reward for r in g.rollouts] for g in b.groups]
        spans: dict[tuple[int, int], list] = {}
        k = 0
        for br, cs in zip(b.branches, bcomps):
            rs = rewards[k:k + len(cs)]
            k += len(cs)
            leaves[br.prompt_idx] += rs
            g = b.groups[br.prompt_idx]
            r = g.rollouts[br.response_idx]
            key = (br.prompt_idx, br.response_idx)
            if key not in spans:
                spans[key] = decision_spans(s.tok, r.response_ids, g.steps[br.response_idx], s.world)
            suffixes = [tuple(r.response_ids[br.offset:])] + [tuple(c.token_ids) for c in cs]
            forks[br.prompt_idx].append({
                "mixed": mixed([r.reward] + rs), "place": fork_place(br.offset, spans[key]),
                "distinct": len(set(suffixes)), "tokens": sum(len(c.token_ids) for c in cs)})
        row = {"branch_points": sum(map(len, forks)),
               "mixed_forks": sum(f["mixed"] for fs in forks for f in fs),
               "valid_after": sum(mixed(lv) for lv in leaves) / len(leaves),
               "prompts_filtered": sum(g.dropped for g in b.groups),
               "mixed": bootstrap_ratio(forks, lambda f: f["mixed"], lambda f: 1, seed=seed),
               "distinct": bootstrap_ratio(forks, lambda f: f["distinct"], lambda f: 1, seed=seed),
               "tokens_per_mixed_fork": bootstrap_ratio(forks, lambda f: f["tokens"], lambda f: f["mixed"], seed=seed)}
        if s.world is not None and any(f["place"] for fs in forks for f in fs):
            row["place_share"] = {pl: pooled_ratio(forks, lambda f, pl=pl: f["place"] == pl, lambda f: 1) for pl in PLACES}
            row["place_counts"] = {pl: sum(f["place"] == pl for fs in forks for f in fs) for pl in PLACES}
            row["mixed_by_place_counts"] = {pl: sum(f["place"] == pl and f["mixed"] for fs in forks for f in fs)
                                            for pl in PLACES}
            row["mixed_by_place"] = {pl: bootstrap_ratio(forks, lambda f, pl=pl: f["mixed"] and f["place"] == pl,
                                                         lambda f, pl=pl: f["place"] == pl, seed=seed)
                                     for pl in PLACES}
        out["rows"][name] = row
    out["seconds"] = time.time() - t0
    return out


def table(results: list[dict]) -> str:
    def ci(v):
        value, lo, hi = v
        return "–" if value is None else f"{value:.2f} [{lo:.2f}, {hi:.2f}]" if lo is not None else f"{value:.2f}"

    def places(row):
        if "place_share" not in row:
            return "–"
        return " / ".join(f"{row['place_share'][pl]:.2f}" for pl in PLACES)

    def mixed_places(row):
        if "mixed_by_place" not in row:
            return "–"
        return " / ".join("–" if row["mixed_by_place"][pl][0] is None else f"{row['mixed_by_place'][pl][0]:.2f}"
                          for pl in PLACES)

    lines = ["| world | selector | branch points | forks before / at / between / after a decision | **mixed** [95%] | "
             "mixed before / at / between / after | distinct siblings [95%] | tokens per mixed fork [95%] | "
             "prompt valid ratio before → after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name, row in r["rows"].items():
            lines.append(f"| `{r['world']}` | {name} | {row['branch_points']} | {places(row)} | **{ci(row['mixed'])}** | "
                         f"{mixed_places(row)} | {ci(row['distinct'])} | {ci(row['tokens_per_mixed_fork'])} | "
                         f"{r['valid_before']:.2f} → {row['valid_after']:.2f} |")
    lines.append("")
    lines.append("(" + "; ".join(f"{r['world']}: {r['prompts']} prompts × {r.get('G', 6)}, initial accuracy "
                                 f"{r['initial_accuracy']:.2f}" for r in results)
                 + "; all rows of a world branch the same initial responses; intervals: bootstrap over prompts.)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", default="toy,toy-plan,early,late", help="built-in worlds, each run with train.py --model WORLD")
    ap.add_argument("--train-args", default="", help="instead of / besides the worlds: a train.py command line "
                    "(e.g. \"--model DIR --train-data FILE.jsonl\"), measured under the label `custom`")
    ap.add_argument("--selectors", default=",".join(ROW_OF_FLAG),
                    help=f"the rows to branch, comma-separated (default all: {','.join(ROW_OF_FLAG)})")
    ap.add_argument("--prompts", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "selector_study"))
    args = ap.parse_args(argv)
    targets = ",".join(filter(None, [args.worlds, "custom" if args.train_args else ""]))
    rows = rows_of(args.selectors)

    def one(label, grader):
        argv_ = shlex.split(args.train_args) if label == "custom" else ["--model", label]
        return measure(make_setup(label, argv_, args.prompts, args.seed), args.prompts, args.seed, grader, rows)

    measure_worlds(args.out, targets, one, table)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
