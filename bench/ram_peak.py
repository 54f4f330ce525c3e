"""Peak system RAM (RSS) of the trainer, of the vLLM sidecar, and of the 1.5B loading path.

    # a toy run: the trainer process and every process it starts (the vLLM sidecar's server + engine)
    python bench/ram_peak.py train -- --steps 10 --eval-problems 100 --out /tmp/ram_toy
    python bench/ram_peak.py train -- --steps 10 --eval-problems 100 --generator vllm --out /tmp/ram_vllm
    # the 1.5B presets' loading path on the CPU: a random model of Qwen2.5-Math-1.5B's shape, saved in bf16,
    # then policy.load_model + add_lora (rank 32, 7 projections) + AdamW state + one forward/backward
    python bench/ram_peak.py load --model-dir /tmp/qwen15_random --dtype bfloat16

Each measured command runs as a child process; this one polls it and its descendants every 0.1 s
(/proc). `trainer_gib` is the command's own VmHWM, the kernel's high-water mark of its RSS (exact,
except growth in the last 0.1 s before it exits); `trainer_anon_gib` the largest sampled RssAnon, its
private memory without file pages (a memory-mapped weight file, libraries). `sidecar` is the vLLM
server with every descendant (engine core, ...), `other` the rest it starts (the grader's workers);
for each: the largest member's VmHWM, the sum of the members' VmHWMs, and the largest sampled sum
of their RSS at one moment; `together_gib` is that largest sum over all processes. RSS counts shared pages (libraries, a model file mapped by two processes)
once per process, so sums are upper bounds. Linux only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024 ** 3


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


SIDECAR = "vllm.entrypoints"   # the vLLM server's command line; its descendants (engine core, ...) belong to it


def peak_rss(cmd: list[str], interval: float = 0.1, env: dict | None = None) -> dict:
    """Run `cmd`; the peak RSS (GiB) of its own process, of the vLLM sidecar (its server and every
    descendant) and of the other processes it starts (the grader's workers, compiler helpers)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    hwm: dict[int, int] = {}          # pid -> VmHWM KiB (last read)
    kind: dict[int, str] = {}         # pid -> "sidecar" | "other"
    peak_now = {"sidecar": 0, "other": 0}   # largest sampled RSS sum of each kind at one moment
    together = anon = 0
    t0 = time.time()
    while proc.poll() is None:
        anon = max(anon, _status_kib(proc.pid, "RssAnon"))
        now = {"trainer": 0, "sidecar": 0, "other": 0}
        todo = [(proc.pid, "trainer")]
        while todo:
            p, k = todo.pop()
            if p != proc.pid:   # the command line is read each time: a fresh fork shows its parent's until exec
                k = "sidecar" if k == "sidecar" or SIDECAR in _cmdline(p) else "other"
                kind[p] = k
            rss = _status_kib(p, "VmRSS")
            if rss:   # a zombie reads 0: keep its last high-water mark
                hwm[p] = max(hwm.get(p, 0), _status_kib(p, "VmHWM"))
                now[k] += rss
            todo += [(c, k) for c in _children(p)]
        for k in peak_now:
            peak_now[k] = max(peak_now[k], now[k])
        together = max(together, sum(now.values()))
        time.sleep(interval)
    gib = lambda kib: round(kib * 1024 / GIB, 2)   # noqa: E731
    out = {"command": " ".join(cmd), "returncode": proc.returncode, "seconds": round(time.time() - t0, 1),
           "trainer_gib": gib(hwm.get(proc.pid, 0)), "trainer_anon_gib": gib(anon)}
    for k in ("sidecar", "other"):
        members = [p for p in kind if kind[p] == k]
        out[k] = {"processes": len(members), "largest_process_gib": gib(max([hwm.get(p, 0) for p in members] or [0])),
                  "sum_of_peaks_gib": gib(sum(hwm.get(p, 0) for p in members)), "peak_together_gib": gib(peak_now[k])}
    out["together_gib"] = gib(together)
    return out


LOAD = """
import sys, torch
sys.path.insert(0, {root!r})
from attnrl_mini.models import policy
model = policy.load_model({model_dir!r}, dtype={dtype!r}, device="cpu")
model = policy.add_lora(model, 32, 64, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", True)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
for p in model.parameters():   # AdamW's two fp32 moments exist after the first step
    if p.requires_grad:
        p.grad = torch.zeros_like(p)
opt.step()
print("loaded", sum(p.numel() for p in model.parameters()), "parameters")
# the weights are memory-mapped from the safetensors file: only a pass reads them all in (as the trainer's
# first forward does, or .to("cuda") on a GPU machine); one LoRA forward + backward over 32 tokens
ids = torch.randint(0, 151643, (1, 32))
model.train()
model(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
print("one forward + backward done")
"""

BUILD = """
import sys, torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
from memory_budget import model_config, save_random_model
from attnrl_mini.models import qwen25
config, _ = model_config("qwen2.5-math-1.5b", None)
print("parameters", save_random_model(config, {model_dir!r}, torch.device("cpu"), seed=0))
qwen25.build_tokenizer_dir({model_dir!r})
"""


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["train", "load"])
    ap.add_argument("--model-dir", default="/tmp/qwen15_random", help="load: where the random 1.5B model is (built if missing)")
    ap.add_argument("--dtype", default="bfloat16", help="load: the preset's dtype")
    ap.add_argument("--json", default="", help="also write the result here")
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)   # train: `-- train.py's flags`
    args, rest = ap.parse_args(argv[:cut]), argv[cut + 1:]
    if args.what == "train":
        result = peak_rss([sys.executable, "train.py", *rest])
    else:
        if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
            subprocess.run([sys.executable, "-c", BUILD.format(root=ROOT, bench=os.path.join(ROOT, "bench"),
                                                               model_dir=args.model_dir)],
                           check=True, cwd=ROOT)
        result = peak_rss([sys.executable, "-c", LOAD.format(root=ROOT, model_dir=args.model_dir, dtype=args.dtype)])
        result["command"] = f"load {args.model_dir} ({args.dtype}) + add_lora r32 + AdamW step"
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
