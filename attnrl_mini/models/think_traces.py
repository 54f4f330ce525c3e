"""Nudge a random tiny model to *think*: a short SFT on synthetic `<think> ... </think> answer` traces.

The test models of the reasoning families (r1_distill.py, qwen3.py) have random weights, so left
alone they never write `</think>`. A few dozen AdamW steps on synthetic traces after real prompts
make them sample responses shaped like a reasoning model's:

    [<think>\\n]  step.\\n\\n  step.\\n\\n ... </think>\\n\\nThe answer is \\boxed{4}.<eos>

with 2-5 thinking steps drawn from a small pool (some hold a \\boxed{} of their own, so an answer
read from the wrong side of `</think>` shows), and a final answer 4 or 3. Long traces run past a
short response budget, which gives responses cut before their `</think>`. Sampled at temperature 1
the model still wanders off these traces now and then; the tests only rely on what it did sample.

The loss: next-token cross-entropy on the trace tokens only (the prompt is context), with a
sampled softmax over the output layer (the trace's own ids + `negatives` random ids whose logits
are offset by log(others / negatives), an estimate of the full 151,936-way normaliser): a full
softmax made each step cost seconds on a CPU. This is test scaffolding, not part of the algorithm.
"""
from __future__ import annotations

import math
import random

THOUGHTS = ["First, read the problem again.", "Let x be the unknown number.", "Then 2 + 2 = 4.",
            "Check: is it \\boxed{3}? No, too small.", "Maybe \\boxed{4} works.", "So the value is 4.",
            "Wait, let me check the units."]
ANSWERS = ["The answer is \\boxed{4}.", "The answer is \\boxed{3}.", "So \\boxed{4}."]
PROMPT_TAIL = 32   # prompt tokens of context per trace (the template's end matters, and it keeps the SFT cheap)


def synthetic_trace(rng: random.Random, opens_think: bool) -> str:
    """One trace's text; `opens_think`: the response writes its own <think> (Qwen3), else the
    prompt already ends in "<think>\\n" (R1-Distill)."""
    steps = "".join(rng.choice(THOUGHTS) + "\n\n" for _ in range(rng.randint(2, 5)))
    return ("<think>\n" if opens_think else "") + steps + "</think>\n\n" + rng.choice(ANSWERS)


def nudge_to_think(model, tokenizer, *, steps: int = 80, opens_think: bool, batch_size: int = 8,
                   lr: float = 5e-3, negatives: int = 4096, seed: int = 0) -> list[float]:
    """SFT `model` in place on synthetic traces after MATH-500 prompts; returns the loss per step."""
    import torch

    from attnrl_mini.worlds import data

    rng = random.Random(seed)
    torch.manual_seed(seed)
    prompts = [data.encode_prompt(tokenizer, p)[-PROMPT_TAIL:] for p in data.load_benchmark("math500")[:64]]
    eos = int(tokenizer.eos_token_id)
    n_rows = model.lm_head.weight.shape[0]
    # fused: one pass over the 151,936-row embedding per step (2.9x faster than the default loop on a CPU)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=True)
    model.train()
    losses = []
    for _ in range(steps):
        rows = [(rng.choice(prompts), tokenizer.encode(synthetic_trace(rng, opens_think), add_special_tokens=False)
                 + [eos]) for _ in range(batch_size)]
        width = PROMPT_TAIL + max(len(t) for _, t in rows)
        ids = torch.full((batch_size, width), eos, dtype=torch.long)           # [B, L], right-padded
        target_mask = torch.zeros(batch_size, width, dtype=torch.bool)         # [B, L], trace positions
        for b, (p, t) in enumerate(rows):
            ids[b, :len(p) + len(t)] = torch.tensor(p + t)
            target_mask[b, len(p):len(p) + len(t)] = True
        hidden = model.model(input_ids=ids).last_hidden_state                 # [B, L, D]; pads only follow
        # position i predicts token i+1: only the trace tokens' predictions go through the output layer
        predicting = target_mask[:, 1:]                                         # [B, L-1]
        targets = ids[:, 1:][predicting]                                        # [N]
        positives = targets.unique()                                            # [P]
        others = torch.ones(n_rows, dtype=torch.bool)
        others[positives] = False
        pool = others.nonzero().squeeze(1)
        sampled = pool[torch.randint(len(pool), (negatives,))]                  # [K], with replacement
        candidates = torch.cat([positives, sampled])                            # [P + K]
        logits = hidden[:, :-1][predicting] @ model.lm_head.weight[candidates].T  # [N, P + K]
        logits[:, len(positives):] += math.log(len(pool) / negatives)          # each stands for pool/K rows
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.searchsorted(positives, targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
