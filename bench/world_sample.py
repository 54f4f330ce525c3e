"""What the mechanism benches share: a world's shipped model, G samples per prompt, their grades,
steps, token entropies and FCI (the trainer's own scoring pass), and where each world's decisions are.

Used by bench/world_properties.py, bench/disruption.py and bench/branch_outcomes.py.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from attnrl_mini.config import Config, make_config  # noqa: E402
from attnrl_mini.worlds.data import Problem  # noqa: E402
from attnrl_mini.algorithm.fci import score_responses  # noqa: E402
from attnrl_mini.generation import GenRequest  # noqa: E402
from attnrl_mini.generation.hf import HFGenerator  # noqa: E402
from attnrl_mini.models.policy import load_model, load_tokenizer  # noqa: E402
from attnrl_mini.worlds.reward import Grader  # noqa: E402
from attnrl_mini.algorithm.steps import newline_token_ids, segment_steps, separator_token_ids  # noqa: E402
from attnrl_mini.worlds.toy import toy_prompt_ids  # noqa: E402
from attnrl_mini.worlds import get_world  # noqa: E402


@dataclass
class Sample:                       # one sampled response, scored
    problem: Problem
    prompt_ids: list[int]
    response_ids: list[int]
    text: str                       # the decoded response
    reward: float
    steps: list[tuple[int, int]]    # response-relative [start, end) per step
    fci: torch.Tensor               # [S] FCI per step (Eq. 6, the preset's Δ)
    entropies: torch.Tensor         # [R] token entropy at each response position
    decision_tokens: set[int]       # response positions where this world's outcome is decided


@dataclass
class WorldModel:
    name: str
    cfg: Config
    model: torch.nn.Module
    tokenizer: object
    generator: HFGenerator
    sep_ids: set[int]
    nl_ids: set[int]


def load(world_name: str, threads: int = 1) -> WorldModel:
    torch.set_num_threads(threads)
    world = get_world(world_name)
    tok = load_tokenizer(world.model_dir)
    model = load_model(world.model_dir, dtype="float32", device="cpu").eval()
    return WorldModel(world_name, make_config(world_name), model, tok, HFGenerator(model, tok),
                      separator_token_ids(tok), newline_token_ids(tok))


def decision_step_indices(world_name: str, step_texts: list[str]) -> list[int]:
    """The steps where the outcome is decided, by construction: toy-plan, its decision step (step 2);
    early / late, the steps that say "x is N." / "y is N." (wherever the sampled response put them);
    toy, none (its outcome is decided by every written result)."""
    if world_name == "toy-plan":
        from attnrl_mini.worlds.toy_plan.problems import DECISION_STEP
        return [DECISION_STEP] if len(step_texts) > DECISION_STEP else []
    if world_name in ("early", "late"):
        return [k for k, t in enumerate(step_texts) if re.match(r"\s*[xy] is \d", t)]
    return []


def decisions_right(world_name: str, problem: Problem, text: str) -> list[bool | None]:
    """Per decision of the world (toy-plan: x; early / late: x, y), did the response pick the larger
    number? None where the response has no such decision step."""
    steps = text.split("\n\n")
    if world_name == "toy-plan":
        from attnrl_mini.worlds.toy_plan.problems import DECISION_STEP, parse_problem
        a, b, _ = parse_problem(problem.problem)
        m = re.search(r"x is (\d+)\.", steps[DECISION_STEP]) if len(steps) > DECISION_STEP else None
        return [None if m is None else int(m.group(1)) == max(a, b)]
    if world_name in ("early", "late"):
        from attnrl_mini.worlds.compass.problems import parse_problem
        pairs, _ = parse_problem(problem.problem)
        out = []
        for var, pair in zip("xy", pairs):
            m = next((re.match(rf"\s*{var} is (\d+)\.", t) for t in steps if re.match(rf"\s*{var} is \d", t)), None)
            out.append(None if m is None else int(m.group(1)) == max(pair))
        return out
    return []


def decision_positions(world_name: str, token_texts: list[str], steps: list[tuple[int, int]]) -> set[int]:
    """Where the outcome is decided, by construction.
    toy-plan, early, late: the digits of the decision steps (the chosen x, y; decision_step_indices).
    toy: the written result digits after "=" in each operation step (where its slips happen)."""
    if world_name in ("toy-plan", "early", "late"):
        texts = ["".join(token_texts[s:e]) for s, e in steps]
        return {t for k in decision_step_indices(world_name, texts) for t in range(*steps[k])
                if token_texts[t].strip().isdigit()}
    out = set()
    for s, e in steps[:-1]:
        after_eq = False
        for t in range(s, e):
            after_eq = after_eq or token_texts[t] == "="
            if after_eq and token_texts[t].strip().isdigit():
                out.add(t)
    return out


def sample_and_score(wm: WorldModel, problems: list[Problem], G: int, seed: int, grader: Grader) -> list[list[Sample]]:
    """G responses per problem at temperature 1, graded and scored; returns one list per problem."""
    prompts = [toy_prompt_ids(wm.tokenizer, p) for p in problems]
    comps = wm.generator.generate([GenRequest(p, G, wm.cfg.max_response_tokens) for p in prompts], seed=seed)
    flat = [(i, c.token_ids) for i, cs in enumerate(comps) for c in cs]
    texts = [wm.tokenizer.decode(r, skip_special_tokens=True) for _, r in flat]
    rewards = grader.grade(texts, [problems[i].answer for i, _ in flat])
    segs = [segment_steps(r, wm.sep_ids, wm.nl_ids).steps for _, r in flat]
    scored = score_responses(wm.model, [prompts[i] for i, _ in flat], [r for _, r in flat], steps=segs,
                             delta=wm.cfg.fci_delta, query_chunk=wm.cfg.fci_query_chunk,
                             batch_size=wm.cfg.score_batch_size, pad_id=wm.tokenizer.pad_token_id)
    out: list[list[Sample]] = [[] for _ in problems]
    for (i, r), text, reward, steps, sc in zip(flat, texts, rewards, segs, scored):
        token_texts = [wm.tokenizer.decode([t]) for t in r]
        out[i].append(Sample(problems[i], prompts[i], list(r), text, reward, steps, sc.fci, sc.entropies,
                             decision_positions(wm.name, token_texts, steps)))
    return out


def top_fraction(values: torch.Tensor, fraction: float = 0.2) -> set[int]:
    """Indices at or above the (1 - fraction) quantile of `values` (the paper's top 20%)."""
    if values.numel() == 0:
        return set()
    tau = torch.quantile(values.double(), 1.0 - fraction).item()
    return {i for i, v in enumerate(values.tolist()) if v >= tau}


def save_world(out_dir: str, result: dict) -> None:
    with open(os.path.join(out_dir, f"{result['world']}.json"), "w") as f:
        json.dump(result, f, indent=1)


def load_worlds(out_dir: str) -> list[dict]:
    """The per-world results saved in out_dir: the built-in worlds first, in WORLD_NAMES order, then any
    other (a bench's `custom` setup)."""
    from attnrl_mini.worlds import WORLD_NAMES
    others = sorted(f[:-5] for f in os.listdir(out_dir) if f.endswith(".json") and f[:-5] not in WORLD_NAMES)
    paths = [os.path.join(out_dir, f"{w}.json") for w in (*WORLD_NAMES, *others)]
    return [json.load(open(p)) for p in paths if os.path.exists(p)]


def measure_worlds(out_dir: str, worlds: str, measure_one, table) -> list[dict]:
    """measure_one(world, grader) for each world, saved to out_dir/<world>.json; then the table over
    every world measured into out_dir so far (so the worlds can be run apart), printed and saved."""
    os.makedirs(out_dir, exist_ok=True)
    with Grader(timeout=5.0) as grader:
        for w in filter(None, worlds.split(",")):   # --worlds "": only re-tabulate what out_dir holds
            save_world(out_dir, measure_one(w, grader))
    results = load_worlds(out_dir)
    text = table(results)
    print(text)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(text)
    return results
