r"""Look at one response the way AttnRL does: its steps, their FCI, and where it would branch.

    python -m attnrl_mini.tools.inspect --model toy --prompt $'Start with 7.\n(a) Add 5.\n(b) Multiply by 2.\n(c) Subtract 9.\nWhat is the result?'
    python -m attnrl_mini.tools.inspect --model toy --prompt "..." --response "..." --json out.json --png out.png

A toy prompt must be in the toy world's own format (attnrl_mini/worlds/toy/problems.py: one labelled
operation per line); anything else is out of distribution and the model answers nonsense.

Without --response a response is sampled from the model (temperature 1, --seed). The response is
cut into steps (steps.py), scored with one forward (fci.py: Eq. 4-6) and given its ATB branch
points (branching.py: Eq. 7) with the config defaults (the `toy` preset for --model toy, whose
Δ in Eq. 5 is 1, not the paper's 4: toy solutions have only 3-6 steps).
With --trees RUN --step N --png FILE it draws instead one prompt's rollout tree from the run's
trees.jsonl (tree_picture.py): segments, continuations, step FCI, advantages, leaf rewards.
--json writes {"model", "preset", "fci_delta", "prompt_ids", "response_ids",
"steps": [{"start", "end", "text", "fci"}], "branch_points"} (token offsets within the response,
end exclusive; preset null = the paper's defaults); --png draws the step-level
attention matrix (max over layers and heads) and the FCI bars.
"""
from __future__ import annotations

import argparse
import json

import torch

from attnrl_mini.algorithm.branching import fci_branch_points, fci_candidate_steps
from attnrl_mini.config import make_config
from attnrl_mini.worlds import WORLD_NAMES
from attnrl_mini.algorithm.fci import score_responses
from attnrl_mini.models.policy import load_model, load_tokenizer, resolve_device, resolve_model
from attnrl_mini.algorithm.steps import newline_token_ids, segment_steps, separator_token_ids, think_end_token_id


def encode_prompt_text(tokenizer, text: str, toy: bool) -> list[int]:
    """The prompt through the model's prompt template (the toy template for the toy model)."""
    if toy:
        from attnrl_mini.worlds.toy import toy_prompt_ids
        return list(toy_prompt_ids(tokenizer, text))
    from attnrl_mini.worlds.data import Problem, encode_prompt
    return encode_prompt(tokenizer, Problem(id="inspect", problem=text, answer="", source="inspect"))


@torch.no_grad()
def sample_response(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, seed: int) -> list[int]:
    """One response sampled with HF generate at temperature 1 (no top-p/top-k), EOS kept."""
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    ids = torch.tensor([prompt_ids], device=device)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                         top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return out[0, len(prompt_ids):].tolist()


def inspect_response(model, tokenizer, prompt_ids: list[int], response_ids: list[int], cfg) -> dict:
    """Steps, FCI, branch points and the step-attention matrix of one response."""
    seg = segment_steps(response_ids, separator_token_ids(tokenizer), newline_token_ids(tokenizer),
                        think_end_token_id(tokenizer))
    if not seg.steps:
        raise ValueError("the response is empty: there is nothing to score")
    scored = score_responses(model, [prompt_ids], [response_ids], [seg.steps], [seg.think_end_step],
                             delta=cfg.fci_delta, query_chunk=cfg.fci_query_chunk,
                             pad_id=tokenizer.pad_token_id or 0, return_step_attention=True,
                             kernel=cfg.fci_kernel)[0]
    branch_points = fci_branch_points(scored.fci, seg.steps, len(prompt_ids), n=cfg.n_branch_points,
                                      quantile=cfg.fci_quantile, min_gap=cfg.min_branch_gap,
                                      min_start=cfg.min_branch_start)
    steps = [dict(start=s, end=e, text=tokenizer.decode(response_ids[s:e]), fci=float(y))
             for (s, e), y in zip(seg.steps, scored.fci.tolist())]
    return dict(steps=steps, branch_points=branch_points, think_end_step=seg.think_end_step,
                candidates=fci_candidate_steps(scored.fci, cfg.fci_quantile),
                step_attention=scored.step_attention)


def format_report(report: dict, prompt_len: int) -> str:
    think = report["think_end_step"]
    think_text = (f"step {think} holds the last </think>: it and the steps after it get FCI 0" if think >= 0 else
                  "no </think> in the response: every step but step 0 can score")
    lines = [f"prompt: {prompt_len} tokens; response: {report['steps'][-1]['end']} tokens, "
             f"{len(report['steps'])} steps; {think_text}",
             "", "        step  tokens        FCI     text"]
    branch_starts = set(report["branch_points"])
    for k, step in enumerate(report["steps"]):
        mark = ("B" if step["start"] in branch_starts else " ") + ("c" if k in report["candidates"] else " ")
        text = repr(step["text"])
        text = text if len(text) <= 60 else text[:57] + "..."
        lines.append(f"  {mark}  {k:4d}  [{step['start']:4d},{step['end']:4d})  {step['fci']:.5f}  {text}")
    lines += ["", f"branch points (response offsets): {report['branch_points']}",
              "  c = FCI candidate: a step in the top 20% of the response's FCI (Eq. 7); step 0 (FCI 0) never is",
              "  B = a branch point starts this step: the earliest candidates whose start and spacing pass the",
              "      preset's min_branch_start / min_branch_gap; a B without c is the fallback (steps 1, 2, ...) used",
              "      when too few candidates pass"]
    return "\n".join(lines)


def draw_png(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alpha = report["step_attention"].numpy()                 # [S+1, S+1], range 0 = prompt
    fci = [s["fci"] for s in report["steps"]]
    S = len(fci)
    fig, (ax_m, ax_b) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw=dict(width_ratios=[1, 1.3]))
    im = ax_m.imshow(alpha, cmap="viridis")
    labels = ["P"] + [str(k) for k in range(S)]
    ticks = range(0, S + 1, max(1, round((S + 1) / 12)))   # about a dozen labels
    ax_m.set_xticks(list(ticks), [labels[t] for t in ticks])
    ax_m.set_yticks(list(ticks), [labels[t] for t in ticks])
    ax_m.set_xlabel("key step (P = prompt)")
    ax_m.set_ylabel("query step")
    ax_m.set_title("step attention α, max over layers and heads")
    fig.colorbar(im, ax=ax_m, fraction=0.046)
    branch_starts = set(report["branch_points"])
    colors = ["tab:red" if s["start"] in branch_starts else "tab:blue" for s in report["steps"]]
    ax_b.bar(range(S), fci, color=colors)
    ax_b.set_xlabel("response step")
    ax_b.set_ylabel("FCI y_k (Eq. 6)")
    ax_b.set_title("FCI per step (red = branch point)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy", help="a built-in world (toy, toy-plan, early, late), a local model directory, or a hub id")
    ap.add_argument("--world", choices=WORLD_NAMES, default=None, help="a built-in world: the same as --model NAME")
    ap.add_argument("--prompt", default=None, help="problem text (put through the prompt template)")
    ap.add_argument("--trees", default="", help="draw a rollout tree of this run directory's trees.jsonl to --png")
    ap.add_argument("--step", type=int, default=None, help="with --trees: the training step (default: the last)")
    ap.add_argument("--tree-index", type=int, default=0, help="with --trees: which of the step's dumped trees")
    ap.add_argument("--response", default=None, help="response text; default: sample one from the model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the config's max_response_tokens")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--json", default="", help="write steps/FCI/branch points to this file")
    ap.add_argument("--png", default="", help="draw the step attention and FCI to this file")
    args = ap.parse_args(argv)
    from attnrl_mini.cli.quiet import quiet_libraries
    quiet_libraries()
    args.model = args.world or args.model
    if args.trees:
        from attnrl_mini.tools import tree_picture
        try:
            return tree_picture.main(args.trees, args.step, args.tree_index, args.png or "tree.png")
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}") from None
    if args.prompt is None:
        ap.error("--prompt is required (or --trees RUN to draw a rollout tree)")

    toy = args.model in WORLD_NAMES                  # the built-in worlds; each has a preset of its name
    preset = args.model if toy else None
    cfg = make_config(preset)
    model_dir = resolve_model(args.model)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, dtype=args.dtype, device=resolve_device(args.device)).eval()
    prompt_ids = encode_prompt_text(tokenizer, args.prompt, toy)
    if args.response is not None:
        response_ids = tokenizer.encode(args.response, add_special_tokens=False)
    else:
        response_ids = sample_response(model, tokenizer, prompt_ids, args.max_new_tokens or cfg.max_response_tokens,
                                       args.seed)
    report = inspect_response(model, tokenizer, prompt_ids, response_ids, cfg)
    print(f"model: {model_dir}   preset: {preset or 'none (paper defaults)'}   FCI Δ (Eq. 5): {cfg.fci_delta}")
    print(format_report(report, len(prompt_ids)))

    result = {"model": model_dir, "preset": preset, "fci_delta": cfg.fci_delta, "prompt_ids": prompt_ids, "response_ids": response_ids,
              "steps": report["steps"], "branch_points": report["branch_points"]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}: the steps, their FCI and the branch points")
    if args.png:
        draw_png(report, args.png)
        print(f"wrote {args.png}: the step attention matrix (left) and FCI per step (right, red = branch step)")
    return result


if __name__ == "__main__":
    main()
