"""How long does the vLLM sidecar take to become healthy on a CPU, with the model in its own worker
process (vLLM's default "mp" executor) or inside the engine process ("uni", what the sidecar uses on CPU)?

    python bench/sidecar_start.py              # 2 rounds, alternating, on the toy model

Each start is a real server on the shipped toy model; both configurations are started alternately in
one invocation (so load changes hit both), and each one's first completion (seed 0) is printed: they
must be the same tokens.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

CONFIGS = {"mp": ("1", []), "uni": ("0", ["--distributed-executor-backend", "uni"])}


def start_once(model_dir: str, eos_id: int, multiprocessing: str, extra: list[str]) -> tuple[float, list]:
    from attnrl_mini.generation import GenRequest
    from attnrl_mini.generation import vllm_sidecar
    real_spawn = vllm_sidecar.start_server_process

    def spawn(cmd, env, log_path):   # the sidecar's own command line, with this configuration's executor
        cmd = list(cmd)
        if "--distributed-executor-backend" in cmd:
            i = cmd.index("--distributed-executor-backend")
            del cmd[i:i + 2]
        return real_spawn(cmd + extra, {**env, "VLLM_ENABLE_V1_MULTIPROCESSING": multiprocessing}, log_path)

    vllm_sidecar.start_server_process = spawn
    try:
        t0 = time.monotonic()
        sidecar = vllm_sidecar.VLLMSidecar(model_dir, max_lora_rank=8, max_model_len=256, seed=0,
                                           eos_token_ids=[eos_id], log=lambda s: None)
        ready = time.monotonic() - t0
        tokens = sidecar.generate([GenRequest([5, 6, 7, 8], 1, 10)], seed=0)[0][0].token_ids
        sidecar.close()
    finally:
        vllm_sidecar.start_server_process = real_spawn
    return ready, tokens


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    from transformers import AutoTokenizer
    from attnrl_mini.worlds import get_world
    model_dir = get_world("toy").model_dir
    eos_id = AutoTokenizer.from_pretrained(model_dir).eos_token_id
    times = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, (multiprocessing, extra) in CONFIGS.items():
            ready, tokens = start_once(model_dir, eos_id, multiprocessing, extra)
            times[name].append(ready)
            print(f"{name}: healthy after {ready:.1f} s; first completion {tokens}", flush=True)
    mp, uni = statistics.median(times["mp"]), statistics.median(times["uni"])
    print(f"median start: mp {mp:.1f} s, uni {uni:.1f} s ({mp / uni:.2f}x); load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
