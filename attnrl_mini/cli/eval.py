"""Evaluate a model, with or without a trained LoRA adapter: Avg@K and Pass@K per benchmark.

    python eval.py                                        # the toy model on 500 held-out toy problems
    python eval.py --adapter runs/toy                     # ... with a toy run's latest adapter
    python eval.py --model Qwen2.5-Math-1.5B --adapter runs/qwen1.5b --json results/qwen.json
    python eval.py --model DIR --benchmarks aime24,amc23 --k 8 --limit 10 --generator hf

Defaults follow the paper (docs/algorithm.md §g, §i): temperature 0.6 and top-p 1; K = 32 samples per
problem on AIME24/AIME25/AMC23 and K = 4 on MATH-500/Minerva/OlympiadBench; the headline is the
mean of the benchmarks' Avg@K. The paper's responses may be 32,768 tokens long; here the default is
that, capped by the model's context window minus 1,024 prompt tokens (3,072 for Qwen2.5-Math).
The toy model defaults to the toy benchmark, temperature 1.0 and K = 1 (the numbers docs/results.md and
the trainer's held-out evaluation report) with the toy preset's response budget.

--adapter takes a LoRA directory (adapter_config.json), a checkpoint (…/checkpoints/step_N, holding
adapter/), or a training run's directory (its latest checkpoint's adapter is used).
Outputs: a table on stdout; --json FILE with the numbers; the graded generations as JSONL
(one line per problem and sample) in --out-dir, or next to the JSON file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

MATH_BENCHMARKS = ["math500", "aime24", "aime25", "amc23", "minerva", "olympiad"]
TOY_BENCHMARK_SIZE = 500


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        sys.exit(f"error: {message} (python eval.py --help describes every flag)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy", help="a built-in world (toy, toy-plan, early, late), a local model directory or a hub id (default: toy)")
    p.add_argument("--adapter", default=None, help="LoRA adapter dir, checkpoint dir, or training run dir")
    p.add_argument("--benchmarks", default=None,
                   help=f"comma-separated, from {','.join(MATH_BENCHMARKS)},toy,toy-plan,early,late "
                        "(default: a toy model's own world, the six math sets otherwise)")
    p.add_argument("--k", type=int, default=None, help="samples per problem (default: the paper's K per benchmark; toy 1)")
    p.add_argument("--temperature", type=float, default=None, help="default 0.6 (paper); 1.0 for the toy model")
    p.add_argument("--max-new-tokens", type=int, default=None, help="response budget (default: see above)")
    p.add_argument("--generator", choices=["auto", "vllm", "hf"], default=None,
                   help="auto = the vLLM sidecar when vllm is installed, else in-process HF sampling (default: hf "
                        "for the built-in worlds, as train.py's toy presets, where it is faster; auto otherwise)")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems of each benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="samples (problems x k) per generation call")
    p.add_argument("--json", default=None, help="write the numbers to this JSON file")
    p.add_argument("--out-dir", default=None, help="write eval.json and generations.jsonl here")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto = bfloat16 on a GPU of compute capability >= 8.0, float16 below, float32 on CPU")
    p.add_argument("--vllm-url", default="", help="use a vLLM server started elsewhere")
    p.add_argument("--vllm-connect-timeout", type=float, default=30.0,
                   help="seconds to wait for the --vllm-url server to answer /health")
    p.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help="vLLM's share of GPU memory (default 0.85 on CUDA, 0.2 on CPU)")
    p.add_argument("--grader-workers", type=int, default=2, help="grader worker processes")
    p.add_argument("--grader-timeout", type=float, default=5.0, help="seconds per Math-Verify call (release: 5)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument("--verbose", action="store_true", help="show the libraries' start-up chatter (loading bars, notices)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("k", "limit", "max_new_tokens", "batch_size", "grader_workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not args.grader_timeout > 0:
        p.error(f"--grader-timeout must be > 0, got {args.grader_timeout}")
    if args.temperature is not None and not args.temperature >= 0:
        p.error(f"--temperature must be >= 0, got {args.temperature}")
    if args.gpu_memory_utilization is not None and not 0 < args.gpu_memory_utilization <= 1:
        p.error(f"--gpu-memory-utilization must be in (0, 1], got {args.gpu_memory_utilization}")
    from attnrl_mini.config import MAX_SEED, unwritable_folder
    if not 0 <= args.seed <= MAX_SEED:
        p.error(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    # the output paths are checked now, not after the whole evaluation
    for flag, path in (("--json", args.json), ("--out-dir", args.out_dir)):
        if path is None:
            continue
        if flag == "--json" and os.path.isdir(path):
            p.error(f"--json {path} is a folder; name a file")
        problem = unwritable_folder(path if flag == "--out-dir" else os.path.dirname(os.path.abspath(path)))
        if problem:
            p.error(f"{flag} {path}: {problem}")
    return args


# ----------------------------------------------------------------------------------------------
# Resolving what to evaluate


def resolve_adapter(path: str) -> str:
    """The adapter directory for --adapter: itself, a checkpoint's adapter/, or a run's newest finished
    checkpoint's (checked against its checksums)."""
    from attnrl_mini.run.checkpoint import resolve_adapter as resolve
    return resolve(path, flag="--adapter")


def toy_world_of(model_arg: str, model_dir: str) -> str | None:
    """The built-in world ("toy", "toy-plan") whose shipped model this is, else None."""
    from attnrl_mini.worlds import WORLD_NAMES, get_world
    if model_arg in WORLD_NAMES:
        return model_arg
    return next((w for w in WORLD_NAMES if os.path.realpath(model_dir) == os.path.realpath(get_world(w).model_dir)), None)


def default_max_new_tokens(model_dir: str, is_toy: bool) -> int:
    """The paper's 32,768, capped by the model's context window minus 1,024 prompt tokens."""
    from attnrl_mini.config import PRESETS

    if is_toy:
        return PRESETS["toy"]["max_response_tokens"]
    context = 32768 + 1024
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            context = int(json.load(f).get("max_position_embeddings", context))
    except (OSError, ValueError):
        pass
    return max(256, min(32768, context - 1024))


def load_benchmark_problems(name: str, limit: int | None):
    from attnrl_mini.worlds import WORLD_NAMES, data

    from attnrl_mini.worlds import WORLD_NAMES, get_world
    if name in WORLD_NAMES:
        problems = get_world(name).test_problems(TOY_BENCHMARK_SIZE)
    elif name in data.BENCHMARKS:
        problems = data.load_problems(data.BENCHMARKS[name])
    else:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(MATH_BENCHMARKS)}, {', '.join(WORLD_NAMES)}")
    return problems[:limit] if limit else problems


def default_generator(args, toy: bool) -> str:
    """--generator, or train.py's choice for the model: hf for a built-in world (its presets' generator; at toy
    scale in-process sampling is faster than starting vLLM), auto otherwise (or with --vllm-url)."""
    return args.generator or ("hf" if toy and not args.vllm_url else "auto")


def default_k(name: str) -> int:
    from attnrl_mini.worlds.data import DEFAULT_K
    return DEFAULT_K.get(name, 1)     # the toy worlds: 1


def build_generator(args, model_dir: str, tokenizer, adapter_dir: str | None, device, dtype: str,
                    max_model_len: int, log=print):
    """The sampler: vLLM (the base model in the sidecar, the adapter hot-loaded) or in-process HF."""
    from attnrl_mini.models import policy
    from attnrl_mini.generation import make_generator, vllm_available

    lora_rank = 16
    if adapter_dir:
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            lora_rank = int(json.load(f).get("r", 16))
    if args.generator in ("vllm", "auto") and (args.vllm_url or vllm_available() or args.generator == "vllm"):
        from attnrl_mini.generation.vllm_sidecar import SidecarError
        utilization = args.gpu_memory_utilization or (0.85 if device.type == "cuda" else 0.2)
        try:
            generator = make_generator("vllm", tokenizer=tokenizer, model_dir=model_dir, dtype=dtype,
                                       device=str(device), max_lora_rank=lora_rank, max_model_len=max_model_len,
                                       gpu_memory_utilization=utilization, vllm_url=args.vllm_url,
                                       seed=args.seed, log=log, connect_timeout_s=args.vllm_connect_timeout)
            if adapter_dir:
                generator.load_adapter(adapter_dir, version=1)
            return generator
        except SidecarError as error:
            if args.generator == "vllm":
                raise
            log(f"generator: in-process HF sampling, because the vLLM sidecar failed: {str(error).splitlines()[0]}")
    model = policy.load_model(model_dir, dtype=dtype, device=device)
    if adapter_dir:
        model = policy.load_adapter(model, adapter_dir)
    model.eval()
    return make_generator("hf", tokenizer=tokenizer, model_dir=model_dir, model=model, dtype=dtype,
                          device=str(device), seed=args.seed, log=log)


# ----------------------------------------------------------------------------------------------
# Reporting


def format_table(summaries: dict[str, dict], overall: dict) -> str:
    lines = [f"{'benchmark':<10} {'n':>5} {'k':>3} {'avg@k':>7} {'pass@k':>7}"]
    for name, s in summaries.items():
        lines.append(f"{name:<10} {s['n']:>5} {s['k']:>3} {100 * s['avg_at_k']:>6.1f}% {100 * s['pass_at_k']:>6.1f}%")
        for level, acc in s.get("per_level", {}).items():
            lines.append(f"{'  level ' + level:<10} {'':>5} {'':>3} {100 * acc:>6.1f}%")
    if len(summaries) > 1:
        lines.append(f"{'overall':<10} {'':>5} {'':>3} {100 * overall['avg_at_k']:>6.1f}% {100 * overall['pass_at_k']:>6.1f}%")
    return "\n".join(lines)


def output_paths(args) -> tuple[str | None, str | None]:
    """(JSON path, generations JSONL path) from --json / --out-dir."""
    json_path = args.json or (os.path.join(args.out_dir, "eval.json") if args.out_dir else None)
    if args.out_dir:
        generations = os.path.join(args.out_dir, "generations.jsonl")
    elif args.json:
        stem = os.path.splitext(args.json)[0]
        generations = stem + "_generations.jsonl"
    else:
        generations = None
    return json_path, generations


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = parse_args(argv)
    from attnrl_mini.cli.quiet import quiet_libraries
    quiet_libraries(verbose=args.verbose)
    from tqdm import tqdm

    from attnrl_mini.worlds import WORLD_NAMES, data

    from attnrl_mini.models import policy
    from attnrl_mini.tools.evaluate import evaluate_problems, record_to_json
    from attnrl_mini.worlds.reward import Grader

    log = tqdm.write
    model_dir = policy.resolve_model(args.model)   # fails within seconds with what to pass instead
    world = toy_world_of(args.model, model_dir)
    toy = world is not None
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else \
        ([world] if toy else list(MATH_BENCHMARKS))
    for name in benchmarks:
        if name not in WORLD_NAMES and name not in data.BENCHMARKS:
            raise SystemExit(f"error: unknown benchmark {name!r}; choose from {', '.join(MATH_BENCHMARKS)}, {', '.join(WORLD_NAMES)}")
        if toy and name != world:
            raise SystemExit(f"error: the {world} model only knows the {world} world; it cannot do {name!r}: use --benchmarks "
                             f"{world} or pass --model with a real model")
    adapter_dir = resolve_adapter(args.adapter) if args.adapter else None
    if adapter_dir:
        policy.check_adapter_files(adapter_dir)   # garbage or NaN weights: refused before any work
    args.generator = default_generator(args, toy)
    temperature = args.temperature if args.temperature is not None else (1.0 if toy else 0.6)
    max_new_tokens = args.max_new_tokens or default_max_new_tokens(model_dir, toy)
    device = policy.resolve_device(args.device)
    from attnrl_mini.models.precision import resolve_dtype
    dtype = resolve_dtype(args.dtype, device)   # auto: bf16 on a GPU of compute capability >= 8.0, fp16 below, fp32 on CPU

    tokenizer = policy.load_tokenizer(model_dir)
    suites = []   # (name, problems, k, encode)
    prompt_ids: dict[tuple[str, str], list[int]] = {}
    for name in benchmarks:
        problems = load_benchmark_problems(name, args.limit)
        for problem in problems:
            prompt_ids[(name, problem.id)] = data.encode_prompt(tokenizer, problem)
        suites.append((name, problems, args.k or default_k(name)))
    longest_prompt = max(len(ids) for ids in prompt_ids.values())
    context = policy.context_length(model_dir)
    if args.max_new_tokens is None and context and longest_prompt < context:   # a default fits the context
        max_new_tokens = min(max_new_tokens, context - longest_prompt)
    check_eval_limits(longest_prompt, max_new_tokens, context,
                      sum(len(problems) * k for _, problems, k in suites), args.max_new_tokens is not None)

    log(f"[eval] model {model_dir}{' + adapter ' + adapter_dir if adapter_dir else ''} | "
        f"benchmarks {','.join(benchmarks)} | temperature {temperature} | max_new_tokens {max_new_tokens}")
    generator = build_generator(args, model_dir, tokenizer, adapter_dir, device, dtype,
                                max_model_len=longest_prompt + max_new_tokens, log=log)
    json_path, generations_path = output_paths(args)
    summaries, all_records = {}, []
    t0 = time.time()
    try:
        with Grader(workers=args.grader_workers, timeout=args.grader_timeout) as grader:
            total = sum(len(problems) * k for _, problems, k in suites)
            with tqdm(total=total, desc="eval", unit="sample") as bar:
                for name, problems, k in suites:
                    bar.set_description(f"eval {name}")
                    result = evaluate_problems(
                        generator, tokenizer, problems, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                        grader=grader, seed=args.seed, batch_size=args.batch_size,
                        encode=lambda p, name=name: prompt_ids[(name, p.id)], progress=bar.update)
                    summaries[name] = result.summary()
                    all_records += [record_to_json(r, name) for r in result.records]
            grader_stats = grader.stats()
    finally:
        generator.close()

    overall = {key: sum(s[key] for s in summaries.values()) / len(summaries) for key in ("avg_at_k", "pass_at_k")}
    print(format_table(summaries, overall))
    print(f"[eval] {len(all_records)} samples in {time.time() - t0:.0f} s with the {generator.name} generator | "
          f"grader: {grader_stats['parse_failures']} without a boxed answer, {grader_stats['timeouts']} timeouts")
    report = {
        "benchmarks": summaries, "overall": overall,
        "config": {"model": model_dir, "adapter": adapter_dir, "temperature": temperature,
                   "max_new_tokens": max_new_tokens, "generator": generator.name, "seed": args.seed,
                   "limit": args.limit},
        "grader": grader_stats,
    }
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    if generations_path:
        os.makedirs(os.path.dirname(os.path.abspath(generations_path)), exist_ok=True)
        with open(generations_path, "w") as f:
            for record in all_records:
                f.write(json.dumps(record) + "\n")
    if json_path or generations_path:
        print(f"[eval] wrote {', '.join(p for p in (json_path, generations_path) if p)}")
    return report


def check_eval_limits(longest_prompt: int, max_new_tokens: int, context: int | None, samples: int,
                      explicit: bool) -> None:
    """--max-new-tokens against the model's context, and every sample's tokens against the machine's
    memory (config.BYTES_PER_ROLLOUT_TOKEN each, at full length), before the model is loaded."""
    from attnrl_mini.config import BYTES_PER_ROLLOUT_TOKEN, ConfigError
    if context and longest_prompt + max_new_tokens > context:
        what = "--max-new-tokens" if explicit else "the default response budget"
        raise ConfigError(f"{what} {max_new_tokens} + the longest prompt's {longest_prompt} tokens exceed the "
                          f"model's context of {context} tokens; pass --max-new-tokens {max(1, context - longest_prompt)} "
                          "or less")
    need = samples * (longest_prompt + max_new_tokens) * BYTES_PER_ROLLOUT_TOKEN
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    if memory and need > memory:
        raise ConfigError(f"{samples} samples of up to {longest_prompt + max_new_tokens} tokens may need "
                          f"{need / 2**30:.1f} GiB, more than this machine's {memory / 2**30:.1f} GiB; lower --k, "
                          "--limit or --max-new-tokens")


def run(argv=None) -> None:
    """main() as a command line: a user's error as one `error:` line (`--debug` keeps the traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        from attnrl_mini.run.errors import exit_with, is_user_error
        if "--debug" in argv or not is_user_error(error):
            raise
        exit_with(error)


if __name__ == "__main__":
    run()
