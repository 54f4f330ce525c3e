"""Peak system RAM (RSS) of the trainer, of the vLLM sidecar, and of the 1.5B loading path.

    # a toy run: the trainer process and every process it starts (the vLLM sidecar's server + engine)
    python bench/ram_peak.py train -- --steps 10 --eval-problems 100 --out /tmp/ram_toy
    python bench/ram_peak.py train -- --steps 10 --eval-problems 100 --generator vllm --out /tmp/ram_vllm
    # the 1.5B presets' loading path on the CPU: a random model of Qwen2.5-Math-1.5B's shape, saved in
    # the preset's dtype, then policy.load_model + add_lora (rank 32, 7 projections) + AdamW state
    python bench/ram_peak.py load --model-dir /tmp/qwen15_random --dtype bfloat16

Each measured command runs as a child process; this one polls it and its descendants every 0.1 s
(/proc). Per process it reports VmHWM, the kernel's own high-water mark of that process's RSS (exact,
except growth in the last 0.1 s before it exits); "together" is the largest sum of the sampled RSS of
all of them at one moment. RSS counts shared pages (libraries, a model file mapped by two processes)
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


def peak_rss(cmd: list[str], interval: float = 0.1, env: dict | None = None) -> dict:
    """Run `cmd`; the peak RSS (GiB) of its process, of each descendant, and of all of them together."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    hwm: dict[int, int] = {}          # pid -> VmHWM KiB (last read)
    names: dict[int, str] = {proc.pid: "trainer"}
    together = 0
    t0 = time.time()
    while proc.poll() is None:
        tree, todo = [], [proc.pid]
        while todo:
            p = todo.pop()
            tree.append(p)
            todo += _children(p)
        now = 0
        for p in tree:
            if p not in names:
                names[p] = _cmdline(p)[:120]
            rss = _status_kib(p, "VmRSS")
            if rss:   # a zombie reads 0: keep its last high-water mark
                hwm[p] = max(hwm.get(p, 0), _status_kib(p, "VmHWM"))
                now += rss
        together = max(together, now)
        time.sleep(interval)
    gib = lambda kib: round(kib * 1024 / GIB, 2)   # noqa: E731
    return {"command": " ".join(cmd), "returncode": proc.returncode, "seconds": round(time.time() - t0, 1),
            "trainer_gib": gib(hwm.get(proc.pid, 0)),
            "children": [{"pid": p, "cmd": names[p], "peak_gib": gib(k)} for p, k in hwm.items() if p != proc.pid],
            "children_sum_gib": gib(sum(k for p, k in hwm.items() if p != proc.pid)),
            "together_gib": gib(together)}


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
