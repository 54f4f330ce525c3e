"""What does sharing tree prefixes save in the PPO update? (packing.py, docs/performance.md)

One batch of rollout trees (random tokens, random rewards; the shape of AttnRL's trees: G responses
per prompt, `--branched` of them forked at N = 2 points in the first half of the response, T = 2
continuations per point that run to the response length), turned into root-to-leaf training paths
by tree.py exactly as in training. The same paths then go through `Trainer._update` (reference
log-probs with the adapter off, loss, backward, AdamW step on the LoRA weights) with each
`update_packing`, round-robin, `--repeats` times, in one process; reported: the median seconds per
update, its peak memory above what was held before it (GPU: the allocator's peak, in the same
process; CPU: the sampled resident set's peak over one update above its size before, in a fresh process per
mode, since the allocator keeps pages freed by an earlier update), and the share of trained response tokens that were shared prefixes (trained − computed) / trained.

    python bench/update_cost.py --shape toy                       # the toy model and batch shape
    python bench/update_cost.py --shape medium --threads 1        # random Qwen2, hidden 512, 8 layers, R = 1024
    python bench/update_cost.py --shape qwen2.5-math-1.5b --device cuda --dtype bfloat16 --gradient-checkpointing
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # the repo, when run from anywhere
sys.path.insert(0, HERE)                    # memory_budget's PeakMemory and shapes

import torch  # noqa: E402

from attnrl_mini.algorithm import tree  # noqa: E402
from attnrl_mini.config import make_config  # noqa: E402
from attnrl_mini.models.policy import add_lora, load_model, load_tokenizer  # noqa: E402
from attnrl_mini.worlds.toy import TOY_MODEL_DIR  # noqa: E402
from attnrl_mini.trainer import Trainer  # noqa: E402
from memory_budget import GIB, SHAPES, PeakMemory, save_random_model  # noqa: E402

# batch shapes: prompts, G, branched responses per prompt, prompt tokens, response tokens, LoRA, micro-batch
BATCHES = {
    "toy": dict(prompts=16, G=6, branched=3, prompt_tokens=30, response_tokens=60, lora_rank=16,
                micro_batch_tokens=8192, logprob_chunk_tokens=1024),
    "medium": dict(prompts=1, G=6, branched=2, prompt_tokens=128, response_tokens=1024, lora_rank=16,
                   micro_batch_tokens=8192, logprob_chunk_tokens=1024),
    "qwen2.5-math-1.5b": dict(prompts=2, G=6, branched=2, prompt_tokens=256, response_tokens=2048, lora_rank=32,
                              micro_batch_tokens=8192, logprob_chunk_tokens=512),
}
MODEL_SHAPES = {
    "medium": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                   num_key_value_heads=2, vocab_size=4096, max_position_embeddings=4096, rope_theta=10000.0,
                   tie_word_embeddings=True, rms_norm_eps=1e-6),
    "qwen2.5-math-1.5b": SHAPES["qwen2.5-math-1.5b"],
    "tiny": SHAPES["tiny"],
}
BATCHES["tiny"] = dict(BATCHES["toy"], prompts=2, response_tokens=40)
MODES = ("per_path", "shared", "shared_trees")


def make_paths(b: dict, vocab: int, seed: int) -> list[tree.TrainSequence]:
    """Root-to-leaf training paths of `prompts` random trees (tree.py, as in training)."""
    from attnrl_mini.algorithm.tree import Continuation, Rollout
    rng = random.Random(seed)
    R, seqs = b["response_tokens"], []

    def toks(n):
        return [rng.randrange(3, vocab) for _ in range(n)]

    for i in range(b["prompts"]):
        rollouts = []
        for g in range(b["G"]):
            points = sorted(rng.sample(range(1, R // 2), 2)) if g < b["branched"] else []
            conts = [[Continuation(toks(R - p), [-rng.random()] * (R - p), float(rng.random() < 0.5))
                      for _ in range(2)] for p in points]
            rollouts.append(Rollout(toks(R), [-rng.random() for _ in range(R)], float(rng.random() < 0.5),
                                    points, conts))
        root = tree.build_prompt_tree(rollouts)
        tree.assign_values_and_advantages(root)
        seqs += tree.training_sequences(root, toks(b["prompt_tokens"]), i)
    return seqs


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="toy", choices=sorted(BATCHES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--response-tokens", type=int, default=0, help="override the shape's response length")
    ap.add_argument("--micro-batch-tokens", type=int, default=0, help="override the shape's micro-batch size")
    ap.add_argument("--json", default="", help="also write the result here")
    ap.add_argument("--memory-child", default="", help=argparse.SUPPRESS)   # CPU memory: one update of this mode
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    b = dict(BATCHES[args.shape])
    b.update({k: v for k, v in (("response_tokens", args.response_tokens),
                                ("micro_batch_tokens", args.micro_batch_tokens)) if v})
    with tempfile.TemporaryDirectory() as tmp:
        if args.shape == "toy":
            model_dir = TOY_MODEL_DIR
        else:
            from transformers import AutoConfig
            model_dir = tmp
            save_random_model(AutoConfig.for_model("qwen2", **MODEL_SHAPES[args.shape]), tmp, device, seed=0)
        model = load_model(model_dir, dtype=args.dtype, device=device)
    vocab = model.config.vocab_size
    model = add_lora(model, b["lora_rank"], 2 * b["lora_rank"], "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                     args.gradient_checkpointing)
    tok = load_tokenizer(TOY_MODEL_DIR)   # only its pad id and separator ids are read by the update
    seqs = make_paths(b, vocab, seed=0)
    trained = sum(len(s.response_ids) for s in seqs)
    modes = args.modes.split(",")
    trainers = {}
    for mode in modes:   # one mini-batch holding the batch: every mode computes the same update
        cfg = make_config("toy", update_packing=mode, mini_batch_sequences=len(seqs), kl_coef=0.001,
                          micro_batch_tokens=b["micro_batch_tokens"], logprob_chunk_tokens=b["logprob_chunk_tokens"])
        trainers[mode] = Trainer(cfg, model, tok, None, None, [], lambda p: [])
    if not args.memory_child:
        print(f"update_cost: shape {args.shape}, {len(seqs)} paths, {trained} trained response tokens, device {device}, "
              f"{args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)

    if args.memory_child:
        with PeakMemory(device) as mem:
            trainers[args.memory_child]._update(list(seqs))
        print("MEMORY_GIB", (mem.peak_allocated - mem.before) / GIB)
        return {}

    def one(mode):
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            stats = trainers[mode]._update(list(seqs))
            if device.type == "cuda":
                torch.cuda.synchronize()
            sec = time.perf_counter() - t0
        return sec, (mem.peak_allocated - mem.before) / GIB, stats["update_computed_tokens"]

    for mode in modes:   # warm-up (kernels, optimiser state)
        one(mode)
    samples = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode in modes:
            samples[mode].append(one(mode))
            print(f"  {mode}: {samples[mode][-1][0]:.3f} s", flush=True)
    rows = {}
    for mode, s in samples.items():
        peak = max(x[1] for x in s) if device.type == "cuda" else _cpu_memory_in_child(argv, mode)
        rows[mode] = dict(seconds=statistics.median(x[0] for x in s), peak_gib=peak,
                          computed_tokens=s[0][2], shared_fraction=1 - s[0][2] / trained)
    base = rows["per_path"] if "per_path" in rows else None
    print(f"\n| update_packing | seconds (median of {args.repeats}) | peak memory of one update (GiB) | "
          "per_path / this: time | memory | trained tokens that were shared prefixes |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        tr = f"{base['seconds'] / r['seconds']:.2f}x" if base else "-"
        mr = f"{base['peak_gib'] / max(r['peak_gib'], 1e-9):.2f}x" if base else "-"
        print(f"| {mode} | {r['seconds']:.3f} | {r['peak_gib']:.3f} | {tr} | {mr} | {r['shared_fraction']:.1%} |")
    result = dict(shape=args.shape, device=str(device), dtype=args.dtype, torch=torch.__version__,
                  paths=len(seqs), trained_tokens=trained, rows=rows, batch=b)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def _cpu_memory_in_child(argv, mode: str) -> float:
    import subprocess
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:]), "--memory-child", mode],
                         capture_output=True, text=True, check=True).stdout
    return float(out.split("MEMORY_GIB")[-1])


if __name__ == "__main__":
    main()
