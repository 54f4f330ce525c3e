"""Fault injection on real `train.py` processes: kills at chosen moments, damaged files, bad inputs.

    python bench/faults.py --out runs/faults          # ~10 tiny toy runs, then ~25 bad commands

1. Kill points: a tiny toy run (4 steps, a checkpoint every step) is sent a signal by PID when a
   file that marks a moment appears (polled every 20 ms), then resumed with the same command +
   --resume. "exact" = its metrics.jsonl (without timings) equals an uninterrupted run's. The
   state seen at the kill is printed, since polling can land a little after the moment.
2. Faults: damage to a finished run's files, then --resume: what happens.
3. Bad inputs: each command must end with exit code != 0 and a last stderr line starting "error:",
   without a traceback (libraries' progress bars may come before it); its seconds are printed.
Writes the tables as Markdown to faults.md in --out (docs/reliability.md comes from it).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--steps", "4", "--save-every", "1", "--eval-every", "2", "--eval-problems", "4", "--prompts-per-step", "2",
        "--n-initial", "3", "--max-response-tokens", "32", "--target-sequences", "30", "--max-prompts-per-step", "4",
        "--mini-batch-sequences", "16", "--threads", "1", "--generator", "hf", "--seed", "3"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def train_cmd(out, *extra):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--out", str(out), *TINY, *extra]


def run(cmd, timeout=900):
    """(result, wall seconds, CPU seconds): CPU time is what the wall time would be on an idle machine,
    roughly, for these single-threaded commands."""
    t0, before = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return p, time.time() - t0, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if not k.startswith(("seconds", "grader_timeouts"))} for r in rows]


def state_of(out) -> str:
    ck = os.path.join(out, "checkpoints")
    names = sorted(os.listdir(ck)) if os.path.isdir(ck) else []
    n = sum(1 for _ in open(os.path.join(out, "metrics.jsonl"))) if os.path.exists(os.path.join(out, "metrics.jsonl")) else 0
    return f"{n} metrics rows; checkpoints: {', '.join(names) or 'none'}"


# (name, signal, file whose appearance triggers the kill, extra delay in s)
KILL_POINTS = [
    ("before the step-0 evaluation ends", signal.SIGKILL, "config.json", 0.0),
    ("during the stale warm-up (after the step-0 row)", signal.SIGKILL, "metrics.jsonl", 0.0),
    ("during the step-2 checkpoint write (SIGKILL)", signal.SIGKILL, "checkpoints/step_000002.tmp", 0.0),
    ("during the step-2 checkpoint write (SIGTERM)", signal.SIGTERM, "checkpoints/step_000002.tmp", 0.0),
    ("during the step-2 checkpoint write (Ctrl-C)", signal.SIGINT, "checkpoints/step_000002.tmp", 0.0),
    ("right after checkpoint 2 (mid step 3)", signal.SIGKILL, "checkpoints/step_000002/checksums.json", 0.3),
    ("after the last checkpoint, before exit", signal.SIGKILL, "checkpoints/step_000004/checksums.json", 0.0),
]


def kill_points(root, reference) -> list[tuple]:
    rows = []
    for i, (name, sig, marker, delay) in enumerate(KILL_POINTS):
        out = os.path.join(root, f"kill{i}")
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.Popen(train_cmd(out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        path = os.path.join(out, marker)
        while not os.path.exists(path) and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, sig)
        proc.wait()
        seen = state_of(out)
        p, _, _ = run(train_cmd(out, "--resume"))
        exact = p.returncode == 0 and metrics(out) == reference
        rows.append((name, signal.Signals(sig).name if killed else "(ended first)", seen,
                     "yes" if exact else f"NO (exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]})"))
        print(rows[-1], flush=True)
    return rows


def faults(root, reference_dir, reference) -> list[tuple]:
    def fresh(name):
        out = os.path.join(root, name)
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(reference_dir, out)
        return out

    def drop_last_step(out):  # as if killed right after the last checkpoint, before its log lines
        with open(os.path.join(out, "metrics.jsonl")) as f:
            keep = [line for line in f if json.loads(line)["step"] < 4]
        with open(os.path.join(out, "metrics.jsonl"), "w") as f:
            f.writelines(keep)

    rows = []
    out = fresh("partial_line")
    for name in ("metrics.jsonl", "trees.jsonl"):
        with open(os.path.join(out, name), "a") as f:
            f.write('{"step": 4, "rew')
    p, _, _ = run(train_cmd(out, "--resume"))
    rows.append(("partial last line in metrics.jsonl and trees.jsonl",
                 "resumed, both dropped with a warning" if p.returncode == 0 and "dropped the partial last line"
                 in p.stdout + p.stderr and metrics(out) == reference else f"FAILED: {p.stderr[-300:]}"))

    out = fresh("flipped")
    drop_last_step(out)
    state = os.path.join(out, "checkpoints", "step_000004", "trainer_state.pt")
    with open(state, "r+b") as f:
        f.seek(os.path.getsize(state) // 2)
        chunk = f.read(64)
        f.seek(-64, 1)
        f.write(bytes(b ^ 0xFF for b in chunk))
    p, _, _ = run(train_cmd(out, "--resume"))
    rows.append(("64 flipped bytes in the newest trainer_state.pt",
                 "checksum mismatch named; resumed from step 3, exact" if p.returncode == 0 and "checksum mismatch"
                 in p.stdout + p.stderr and metrics(out) == reference else f"FAILED: {p.stderr[-300:]}"))

    out = fresh("extend")
    p, _, _ = run(train_cmd(out, "--resume", "--steps", "5", "--lr", "1e-3"))
    cfg = json.load(open(os.path.join(out, "config.json")))
    rows.append(("`--resume --steps 5 --lr 1e-3` on the finished 4-step run",
                 f"extended to step {metrics(out)[-1]['step']}; config.json resume_changes: "
                 f"{[(c['field'], c['step']) for c in cfg.get('resume_changes', [])]}" if p.returncode == 0
                 else f"FAILED: {p.stderr[-300:]}"))

    out = fresh("second")
    first = subprocess.Popen(train_cmd(out, "--resume", "--steps", "8"), cwd=ROOT, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = os.path.join(out, ".lock")
    while first.poll() is None and not (os.path.exists(lock) and open(lock).read() == str(first.pid)):
        time.sleep(0.02)
    p, secs, _ = run(train_cmd(out, "--resume", "--steps", "8"))
    first.kill()
    first.wait()
    rows.append(("a second process on the same --out", f"`{p.stderr.strip().replace(root + '/', '')}` ({secs:.1f} s)"))
    p, _, _ = run(train_cmd(out, "--resume", "--steps", "4"))
    rows.append(("the lock left by that SIGKILLed first process", "taken over with a warning" if p.returncode == 0 and
                 "took over the stale lock" in p.stderr else f"FAILED: {p.stderr[-300:]}"))
    for row in rows:
        print(row, flush=True)
    return rows


def bad_inputs(root, reference_dir) -> list[tuple]:
    d = os.path.join(root, "bad")
    os.makedirs(d, exist_ok=True)
    files = {
        "latin1.jsonl": '{"problem": "caf\xe9", "answer": "1"}\n'.encode("latin-1"),
        "corrupt.jsonl.gz": b"\x1f\x8b\x08\x00" + b"\x00" * 40,
        "truncated.jsonl.gz": gzip.compress(b'{"problem": "x", "answer": "1"}\n' * 50)[:60],
        "row.jsonl": b'{"problem": "x", "answer": "1"}\n{"problem": "y"}\n',
        "fake.parquet": b"not parquet",
    }
    for name, raw in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(raw)
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"question": ["x"], "answer": ["1"]}), os.path.join(d, "columns.parquet"))
    nomodel = os.path.join(d, "model_without_weights")
    os.makedirs(nomodel, exist_ok=True)
    shutil.copy(os.path.join(ROOT, "attnrl_mini", "toy", "model", "config.json"), nomodel)
    corrupt = os.path.join(d, "all_corrupt")
    shutil.rmtree(corrupt, ignore_errors=True)
    shutil.copytree(reference_dir, corrupt)
    for ck in os.listdir(os.path.join(corrupt, "checkpoints")):
        with open(os.path.join(corrupt, "checkpoints", ck, "adapter", "adapter_model.safetensors"), "r+b") as f:
            f.seek(100)
            f.write(b"\0" * 8)
    out = os.path.join(d, "run")
    train = [sys.executable, "train.py", "--out", out]
    cases = [[*train, "--eval-every", "0"], [*train, "--save-every", "0"], [*train, "--dtype", "float8"],
             [*train, "--grad-clip=-1"], [*train, "--steps", "0"], [*train, "--steps", "-3"],
             [*train, "--max-response-tokens", "0"], [*train, "--lora-alpha", "0"], [*train, "--fci-quantile", "1.5"],
             [*train, "--n-initial", "0"], [*train, "--n-continuations", "0"], [*train, "--mini-batch-sequences", "0"],
             [*train, "--algo", "ppo"], [*train, "--eval-data", "/nonexistent"],
             *[[*train, "--train-data", os.path.join(d, name)] for name in [*files, "columns.parquet"]],
             [*train, "--model", nomodel],
             [sys.executable, "train.py", "--out", corrupt, "--resume"],
             [sys.executable, "train.py", "--out", reference_dir, "--resume", "--seed", "4", "--lora-rank", "8"],
             [sys.executable, "eval.py", "--adapter", "/nonexistent"],
             [sys.executable, "eval.py", "--adapter", corrupt],
             [sys.executable, "eval.py", "--model", nomodel], [sys.executable, "eval.py", "--k", "0"]]
    rows = []
    for cmd in cases:
        p, secs, cpu = run(cmd, timeout=300)
        lines = p.stderr.strip().splitlines()
        ok = p.returncode != 0 and lines and lines[-1].startswith("error:") and "Traceback" not in p.stderr
        shown = " ".join(c if not c.startswith(root) else os.path.relpath(c, root) for c in cmd[1:])
        error = lines[-1].replace(root + "/", "") if lines else f"(exit {p.returncode}, no stderr)"
        rows.append((shown, error, f"{secs:.1f} / {cpu:.1f}", "yes" if ok else "NO"))
        print(rows[-1], flush=True)
    return rows


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/faults")
    ap.add_argument("--only", choices=["kills", "faults", "inputs"], default=None)
    args = ap.parse_args()
    # a shell starts background jobs with SIGINT ignored, and children inherit that: give them Ctrl-C back
    signal.signal(signal.SIGINT, signal.default_int_handler)
    root = os.path.abspath(args.out)
    os.makedirs(root, exist_ok=True)
    reference_dir = os.path.join(root, "reference")
    if not os.path.exists(os.path.join(reference_dir, "checkpoints", "step_000004")):
        shutil.rmtree(reference_dir, ignore_errors=True)
        p, secs, _ = run(train_cmd(reference_dir))
        assert p.returncode == 0, p.stderr[-2000:]
        print(f"reference run: {secs:.0f} s", flush=True)
    reference = metrics(reference_dir)
    parts = []
    if args.only in (None, "kills"):
        rows = kill_points(root, reference)
        parts.append(f"Kill points ({sum(r[3] == 'yes' for r in rows)} of {len(rows)} exact resumes):\n\n" +
                     table(["kill point", "signal", "state at the kill", "exact resume"], rows))
    if args.only in (None, "faults"):
        parts.append(table(["fault", "outcome"], faults(root, reference_dir, reference)))
    if args.only in (None, "inputs"):
        rows = bad_inputs(root, reference_dir)
        parts.append(f"Bad inputs ({sum(r[3] == 'yes' for r in rows)} of {len(rows)} one-line errors):\n\n" +
                     table(["command", "last stderr line", "seconds wall / CPU", "one error line, no traceback"], rows))
    report = f"faults_{args.only}.md" if args.only else "faults.md"
    with open(os.path.join(root, report), "w") as f:
        f.write("\n\n".join(parts) + "\n")
    print("\n\n".join(parts))


if __name__ == "__main__":
    main()
