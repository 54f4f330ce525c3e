"""Pre-train the toy model by supervised fine-tuning on gold solutions (reproduces toy/model/).

    python -m attnrl_mini.worlds.toy.pretrain                 # rebuild attnrl_mini/worlds/toy/model/ (4-9 min, 1 CPU thread)
    python -m attnrl_mini.worlds.toy.pretrain --out /tmp/toy  # somewhere else

A small Qwen2ForCausalLM (the architecture class of Qwen2.5-Math) is trained from scratch with the
next-token loss on the solution tokens only (the prompt is context, not target):

    L = - (1 / #solution tokens) * sum_t log pi(y_t | prompt, y_<t)

for a FIXED number of steps on freshly generated training problems.

Deliberately imperfect: in the training solutions each step's result is, with probability
`slip_prob`, written off by 1 or 2 (an "arithmetic slip"; later steps carry on from it). The model
learns the task (greedy decoding is nearly always right) *and* learns to slip at about that rate,
so at temperature 1 it solves a problem of L operations with probability about (1 - slip_prob)^L:
harder levels lower, and plenty for RL to gain by unlearning the slips. Because this ceiling, not
the amount of training, sets the accuracy, the result hardly depends on the seed or the machine
(an undertrained model instead sat on a steep learning curve whose timing varied by seed).
`slip_prob` and `steps` were calibrated once (accuracy near the ceiling after 800 steps in 3
of 3 seeds) and are then fixed: the run never looks at test accuracy to decide anything. At the
end it prints the sampled accuracy (temperature 1.0, fixed seed) per level on the 500 held-out
test problems. The gold solutions (`gold_solution`) never slip.

Everything is seeded and runs on the CPU with a fixed thread count, so a rebuild on the same
machine gives the same weights bit for bit.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from attnrl_mini.worlds.reward import is_correct
from attnrl_mini.worlds.toy.problems import LEVELS, MAX_VALUE, solution_steps, test_problems, train_problems
from attnrl_mini.worlds.toy.tokenizer import build_tokenizer, toy_prompt_ids

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")


@dataclass
class PretrainConfig:
    # model: head_dim = 128 / 4 = 32, the smallest head size vLLM's CPU backend accepts
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 256
    # optimisation: AdamW, linear warm-up then cosine decay to 10% of lr
    steps: int = 800
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    slip_prob: float = 0.22    # chance that a training step's result is written off by 1 or 2
    weight_decay: float = 0.01
    seed: int = 0
    # One thread: on a shared 2-core machine, 2 OpenMP threads ran ~12x SLOWER than 1 whenever another
    # process was busy (0.25 s vs 2.9 s per step, measured), and only ~1.3x faster on an idle machine.
    # The thread count changes float summation order, so it is part of what makes a rebuild exact.
    threads: int = 1
    # evaluation at the end
    eval_problems: int = 500
    eval_temperature: float = 1.0
    eval_seed: int = 0


def build_model(cfg: PretrainConfig, tokenizer) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-6,
        bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, dtype="float32",
    )
    return Qwen2ForCausalLM(config)


def slipped_solution(problem, rng: random.Random, slip_prob: float) -> str:
    """A training solution with arithmetic slips: each step's result is off by 1 or 2 w.p. slip_prob.

    This is how the model is made *deliberately imperfect* in a controlled way: it learns to slip
    at about this rate, so at temperature 1 a problem of L steps comes out right with probability
    about (1 - slip_prob)^L (harder levels lower) once the task itself is learnt. RL then gains by
    unlearning the slips. Later steps carry on from the slipped value; a draw that pushes a value
    out of 0..MAX_VALUE is redrawn.
    """
    def slip(result: int) -> int:
        offsets = [d for d in (-2, -1, 1, 2) if 0 <= result + d <= MAX_VALUE]
        return result + rng.choice(offsets) if offsets and rng.random() < slip_prob else result

    for _ in range(20):
        steps = solution_steps(problem, slip)
        written = [int(step.rsplit("=", 1)[1]) for step in steps[:-1]]
        if all(0 <= v <= MAX_VALUE for v in written):
            return "\n\n".join(steps)
    return "\n\n".join(solution_steps(problem))


def sft_batch(tokenizer, problems, rng: random.Random | None = None,
              slip_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded [B, T] input ids and labels (-100 on prompt and padding).

    Right padding needs no attention mask: causal attention never lets a real token see the pads
    that come after it.
    """
    texts = [slipped_solution(p, rng, slip_prob) if slip_prob > 0 else "\n\n".join(solution_steps(p)) for p in problems]
    return pack_sft_batch(tokenizer, problems, texts)


def pack_sft_batch(tokenizer, problems, solutions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt + solution + eos per row, right-padded [B, T]; labels -100 except on solution and eos."""
    rows = []
    for p, text in zip(problems, solutions):
        prompt = toy_prompt_ids(tokenizer, p)
        solution = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        rows.append((prompt, solution))
    T = max(len(a) + len(b) for a, b in rows)
    input_ids = torch.full((len(rows), T), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    for i, (prompt, solution) in enumerate(rows):
        ids = prompt + solution
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, len(prompt):len(ids)] = torch.tensor(solution)  # loss on the solution (+ eos) only
    return input_ids, labels


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to 0.1 * cfg.lr at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def batch_problems(step: int, cfg: PretrainConfig):
    """The training problems of one step: all of one level (levels in turn), so little padding."""
    level = LEVELS[step % len(LEVELS)]
    return train_problems(cfg.batch_size, seed=cfg.seed * 1_000_003 + step, levels=(level,))


def toy_batch(step: int, cfg: PretrainConfig, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's SFT batch of the toy world: slipped solutions of one level's problems."""
    slip_rng = random.Random(f"slips {cfg.seed} {step}")
    return sft_batch(tokenizer, batch_problems(step, cfg), slip_rng, cfg.slip_prob)


def train(cfg: PretrainConfig, log=print, eval_every: int = 0, eval_fn=None, device: str = "cpu",
          tokenizer=None, make_batch=toy_batch):
    """SFT from scratch for cfg.steps steps; returns (model, tokenizer).

    `tokenizer` and `make_batch(step, cfg, tokenizer) -> (input_ids, labels)` default to the toy
    world's; another world (toy_plan/pretrain.py) passes its own."""
    torch.manual_seed(cfg.seed)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    model = build_model(cfg, tokenizer).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98),
                                  weight_decay=cfg.weight_decay)
    t0 = time.time()
    model.train()
    for step in range(cfg.steps):
        input_ids, labels = make_batch(step, cfg, tokenizer)
        input_ids, labels = input_ids.to(device), labels.to(device)
        logits = model(input_ids=input_ids).logits                     # [B, T, V]
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            log(f"step {step:5d}  loss {loss.item():.4f}  lr {lr_at(step, cfg):.2e}  {time.time() - t0:6.1f}s")
        if eval_every and eval_fn is not None and (step + 1) % eval_every == 0:
            model.eval()
            eval_fn(step + 1, model, tokenizer)
            model.train()
    model.eval()
    return model, tokenizer


@torch.no_grad()
def sampled_accuracy(model, tokenizer, problems, temperature: float = 1.0, seed: int = 0,
                     batch_size: int = 125, max_new_tokens: int = 96) -> dict:
    """Fraction of problems solved by ONE sample each (pure temperature sampling, no top-k/top-p).

    Returns {"overall": acc, "per_level": {level: acc}, "n": {level: count}, "n_total": count}.
    Deterministic for a fixed seed, batch_size and machine.
    """
    if not problems:
        raise ValueError("sampled_accuracy needs at least one problem")
    was_training = model.training
    model.eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    correct: list[bool] = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(problems), batch_size):
        chunk = problems[start:start + batch_size]
        prompts = [toy_prompt_ids(tokenizer, p) for p in chunk]
        T = max(len(x) for x in prompts)
        input_ids = torch.tensor([[pad] * (T - len(x)) + x for x in prompts], device=model.device)  # [B, T] left-padded
        attention_mask = torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in prompts], device=model.device)
        kwargs = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 \
            else dict(do_sample=False)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=pad, **kwargs)
        for p, row in zip(chunk, out[:, T:].tolist()):
            text = tokenizer.decode(row, skip_special_tokens=True)
            correct.append(bool(is_correct(text, p.answer)))
    torch.random.set_rng_state(generator_state)
    model.train(was_training)
    levels = sorted({p.level for p in problems})
    per_level = {lv: [c for p, c in zip(problems, correct) if p.level == lv] for lv in levels}
    return {
        "overall": sum(correct) / len(correct),
        "per_level": {lv: sum(cs) / len(cs) for lv, cs in per_level.items()},
        "n": {lv: len(cs) for lv, cs in per_level.items()},
        "n_total": len(correct),
    }


def format_accuracy_table(result: dict, title: str = "") -> str:
    lines = [title] if title else []
    lines.append("level (operations) | problems | accuracy")
    for lv, acc in result["per_level"].items():
        lines.append(f"{lv:>18} | {result['n'][lv]:>8} | {100 * acc:7.1f}%")
    lines.append(f"{'all':>18} | {result['n_total']:>8} | {100 * result['overall']:7.1f}%")
    return "\n".join(lines)


def save(model, tokenizer, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
        max_new_tokens=96,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def main(argv=None, *, description: str = __doc__.split("\n")[0], default_out: str = DEFAULT_OUT,
         num_layers: int = PretrainConfig.num_layers, test_set=test_problems, tokenizer=None,
         make_batch=toy_batch) -> None:
    """The pretrain command; the keywords let another world (toy_plan/pretrain.py) reuse it with its own data."""
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=default_out, help=f"output directory (default: the shipped {default_out})")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="torch CPU threads (the shipped model was built with the default)")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="calibration only: also print test accuracy every N steps")
    args = parser.parse_args(argv)
    cfg = PretrainConfig(steps=args.steps, threads=args.threads, num_layers=num_layers)
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    tests = test_set(cfg.eval_problems)

    def report(step, model, tokenizer):
        r = sampled_accuracy(model, tokenizer, tests, temperature=cfg.eval_temperature, seed=cfg.eval_seed)
        print(f"[eval] step {step}: overall {100 * r['overall']:.1f}%  per level "
              + "  ".join(f"L{lv} {100 * a:.1f}%" for lv, a in r["per_level"].items()), flush=True)

    model, tokenizer = train(cfg, log=lambda s: print(s, flush=True), eval_every=args.eval_every, eval_fn=report,
                             tokenizer=tokenizer, make_batch=make_batch)
    train_s = time.time() - t0
    save(model, tokenizer, args.out)
    result = sampled_accuracy(model, tokenizer, tests, temperature=cfg.eval_temperature, seed=cfg.eval_seed)
    print(format_accuracy_table(result, f"held-out test set, temperature {cfg.eval_temperature}, one sample "
                                        f"per problem, seed {cfg.eval_seed}:"))
    print(f"saved to {args.out}; training {train_s:.0f}s, total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
