"""What does exact FCI cost on top of the scoring forward? (docs/algorithm.md §b.3)

Three ways to run the no-grad scoring forward of one (prompt, response) of T tokens:
  plain  `score_responses(..., steps=None)`: sdpa attention, log-probs + entropies (the normal path)
  fci    `score_responses(..., steps=...)`: the same, with attention through `fci_attention`
         (exact probabilities block by block, P@V from them, step matrix accumulated) -> + FCI
  naive  `naive_fci`: eager attention with output_attentions=True (every [H, T, T] matrix of every
         layer is kept), then the step aggregation. (The release also materialises [H, T, T] per
         layer, but frees each layer's before the next: between naive and fci in memory.)

Memory: each (method, T) runs in its own fresh `spawn` child process, so peak memory is honest:
the child builds the model, runs one short warm-up forward (lazy kernel initialisation), reads the
resident-set high-water mark `ru_maxrss` as a baseline, runs the configuration and reads it again.
The difference is the peak *extra* memory of that forward (torch's CPU allocator frees large
blocks back to the OS, and tracemalloc cannot see torch allocations). On CUDA the child reports
`torch.cuda.max_memory_allocated` above the baseline instead.
Time: one more child per T runs plain, fci, naive round-robin --repeats times (after a warm-up)
and reports each one's median, so load changes on a shared machine hit all three alike.

    python bench/fci_cost.py --out docs/fci_cost.md
    python bench/fci_cost.py --quick                 # smoke test, a few seconds
    python bench/fci_cost.py --device cuda --dtype bfloat16 --shape qwen2.5-1.5b --seq-lens 2048,4096,8192
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

SHAPES = {
    # the default: small enough for a 2-core CPU, attention-heavy like the real model at long T
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, vocab_size=512),
    # Qwen2.5-Math-1.5B / R1-Distill-1.5B shape (random weights: the real memory and speed), for a GPU
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, head_dim=128, vocab_size=151936, tie_word_embeddings=True),
}
TOKENS_PER_STEP = 64
METHODS = ("plain", "fci", "naive")


def build_case(seq_len: int, device: str, dtype: str, shape: str = "small"):
    """A random Qwen2 of SHAPES[shape] and one (prompt, response, steps) of seq_len tokens."""
    import copy

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    cfg = Qwen2Config(**SHAPES[shape], max_position_embeddings=max(8192, seq_len), attn_implementation="sdpa")
    with torch.device(device):   # initialise the weights where they will live
        model = Qwen2ForCausalLM(copy.deepcopy(cfg)).to(dtype=getattr(torch, dtype)).eval()
    prompt_len = seq_len // 8
    ids = torch.randint(0, SHAPES[shape]["vocab_size"], (seq_len,)).tolist()
    prompt, response = ids[:prompt_len], ids[prompt_len:]
    R = len(response)
    steps = [(s, min(s + TOKENS_PER_STEP, R)) for s in range(0, R, TOKENS_PER_STEP)]
    return model, prompt, response, steps


def run_method(method: str, model, prompt, response, steps, query_chunk: int):
    from attnrl_mini.algorithm.fci import naive_fci, score_responses
    if method == "plain":
        return score_responses(model, [prompt], [response])
    if method == "fci":
        return score_responses(model, [prompt], [response], [steps], query_chunk=query_chunk)
    if method == "naive":
        return naive_fci(model, [prompt], [response], [steps])
    raise ValueError(f"unknown method {method!r}")


def _setup(seq_len: int, args):
    import torch
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, prompt, response, steps = build_case(seq_len, args.device, args.dtype, args.shape)
    cuda = args.device.startswith("cuda")

    def run(method, model, short=False):
        """One scoring forward (short=True: a 128-token warm-up that initialises kernels and code paths)."""
        if short:
            n = min(128, seq_len)
            p, r = prompt[: n // 8], response[: n - n // 8]
            run_method(method, model, p, r, [(s, min(s + 16, len(r))) for s in range(0, len(r), 16)], args.query_chunk)
        else:
            run_method(method, model, prompt, response, steps, args.query_chunk)
        if cuda:
            torch.cuda.synchronize()
    return torch, model, steps, cuda, run


def memory_child(method: str, seq_len: int, args, queue) -> None:
    """Peak extra memory of one forward of `method`, in a fresh process."""
    torch, model, steps, cuda, run = _setup(seq_len, args)
    if method == "naive":  # its own eager model, not a deep copy made inside the measured run
        model.model.set_attn_implementation("eager")
    run(method, model, short=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss       # KiB on Linux
    run(method, model)
    if cuda:
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    queue.put(dict(peak_mib=peak_mib, steps=len(steps)))


def timing_child(seq_len: int, args, queue) -> None:
    """Median time of each method, run round-robin (plain, fci, naive, plain, ...) so that a change
    in the machine's load during the run hits all three alike."""
    from attnrl_mini.algorithm.fci import eager_copy
    torch, model, steps, cuda, run = _setup(seq_len, args)
    models = {"plain": model, "fci": model, "naive": eager_copy(model)}
    for method in METHODS:
        run(method, models[method], short=True)
    times = {method: [] for method in METHODS}
    for _ in range(args.repeats):
        for method in METHODS:
            t0 = time.perf_counter()
            run(method, models[method])
            times[method].append(time.perf_counter() - t0)
    queue.put({method: statistics.median(t) for method, t in times.items()})


def in_fresh_process(target, *target_args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=target, args=(*target_args, queue))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"{target.__name__}{target_args[:2]} failed in its child process (exit code {p.exitcode})")
    return queue.get()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq-lens", default="1024,2048,4096")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads in each child (0 = torch default)")
    ap.add_argument("--query-chunk", type=int, default=64,
                    help="FCI query rows per block (64: the fastest of 32-256 on a CPU, docs/performance.md)")
    ap.add_argument("--shape", default="small", choices=sorted(SHAPES))
    ap.add_argument("--quick", action="store_true", help="smoke test: T = 256, 512, one repeat")
    ap.add_argument("--out", default="", help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    seq_lens = [256, 512] if args.quick else [int(t) for t in args.seq_lens.split(",")]
    if args.quick:
        args.repeats = 1

    rows = {}
    for T in seq_lens:
        for method in METHODS:
            rows[(method, T)] = in_fresh_process(memory_child, method, T, args)
        for method, t in in_fresh_process(timing_child, T, args).items():
            rows[(method, T)]["time_s"] = t
        print("  T=%5d: " % T + ", ".join(f"{m} {rows[(m, T)]['time_s']:.3f} s +{rows[(m, T)]['peak_mib']:.1f} MiB"
                                           for m in METHODS), flush=True)

    mem_label = "peak GPU memory above baseline" if args.device.startswith("cuda") else "peak RSS above baseline"
    lines = [
        f"Model: random Qwen2 {SHAPES[args.shape]}; batch 1; prompt T/8 tokens; one step per {TOKENS_PER_STEP} "
        f"response tokens; device {args.device}, {args.dtype}, threads {args.threads}, "
        f"query_chunk {args.query_chunk}; time = median of {args.repeats} round-robin runs (one process "
        f"per T); memory = {mem_label} of one run (a fresh process per row).",
        "",
        "| T | steps | method | time (s) | time / plain | peak extra memory (MiB) | memory / fci |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for T in seq_lens:
        plain, fci = rows[("plain", T)], rows[("fci", T)]
        for method in METHODS:
            r = rows[(method, T)]
            lines.append(f"| {T} | {r['steps']} | {method} | {r['time_s']:.3f} | {r['time_s'] / plain['time_s']:.2f} "
                         f"| {r['peak_mib']:.1f} | {r['peak_mib'] / max(fci['peak_mib'], 1e-9):.2f} |")
    t_mem = 4096 if 4096 in seq_lens else seq_lens[-1]
    time_ratios = ", ".join(f"{rows[('fci', T)]['time_s'] / rows[('plain', T)]['time_s']:.2f}x at T={T}"
                            for T in seq_lens if T >= 2048) or "no T >= 2048 measured"
    mem_ratio = rows[("naive", t_mem)]["peak_mib"] / max(rows[("fci", t_mem)]["peak_mib"], 1e-9)
    lines += ["", f"FCI/plain time: {time_ratios} (target <= 1.10x); "
                  f"naive/FCI peak memory at T={t_mem}: {mem_ratio:.1f}x (target >= 4x)"]
    table = "\n".join(lines)
    print()
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
