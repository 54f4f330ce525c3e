"""Fault injection on real `train.py` processes: kills at chosen moments, damaged files, bad inputs.

    python bench/faults.py --out runs/faults          # ~10 tiny toy runs, then ~25 bad commands

1. Kill points: a tiny toy run (4 steps, a checkpoint every step) is sent a signal by PID when a
   file that marks a moment appears (polled every 20 ms), then resumed with the same command +
   --resume. "exact" = its metrics.jsonl (without timings) equals an uninterrupted run's. The
   state seen at the kill is printed, since polling can land a little after the moment.
2. Faults: damage to a finished run's files, then --resume: what happens.
3. Bad inputs: each command must end with exit code != 0 and a last stderr line starting "error:",
   without a traceback (libraries' progress bars may come before it); its seconds are printed.
4. Bad state, bad servers, full disks, extreme values (issue #27): NaN checkpoints, checkpoints without
   checksums, edited or missing config.json, changed data, servers that are not vLLM (a stub on
   127.0.0.1, tests/stub_vllm.py), a real 3 MB tmpfs, a SIGKILLed trainer's /dev/shm folder, paths,
   extreme values, model and adapter files, the grader's verdicts. Each case must end in one `error:`
   line without a traceback, or in the recovery it names; counts are printed by category.
Every command runs without --debug; the last line printed counts the commands whose stderr held a
traceback (it must be 0). Writes the tables as Markdown to faults.md in --out (docs/reliability.md
comes from it).
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


TRACEBACKS: list[str] = []   # commands whose stderr held a traceback


def run(cmd, timeout=900):
    """(result, wall seconds, CPU seconds): CPU time is what the wall time would be on an idle machine,
    roughly, for these single-threaded commands."""
    t0, before = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    if "Traceback" in p.stderr:
        TRACEBACKS.append(" ".join(cmd[1:3]))
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
    shutil.copy(os.path.join(ROOT, "attnrl_mini", "worlds", "toy", "model", "config.json"), nomodel)
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


# ---- 4. bad state, bad servers, full disks, extreme values (issue #27) ------------------------------
def one_line(cmd, timeout=300) -> tuple[bool, str, float]:
    """(held: exit != 0, last stderr line "error: ...", no traceback; that line; seconds)."""
    p, secs, _ = run(cmd, timeout=timeout)
    lines = p.stderr.strip().splitlines()
    held = p.returncode != 0 and bool(lines) and lines[-1].startswith("error:") and "Traceback" not in p.stderr
    return held, (lines[-1] if lines else f"(exit {p.returncode}, no stderr)"), secs


def _rewrite_checksums(ckpt):
    sys.path.insert(0, ROOT)
    from attnrl_mini.run import checkpoint
    sums = {name: checkpoint._sha256(os.path.join(ckpt, name)) for name in checkpoint._files(ckpt)}
    with open(os.path.join(ckpt, checkpoint.CHECKSUM_FILE), "w") as f:
        json.dump(sums, f)


def bad_state(root, reference_dir, reference) -> list[tuple]:
    """(category, case, outcome, held) rows."""
    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from stub_vllm import StubServer

    rows = []

    def fresh(name, drop_last=True):
        out = os.path.join(root, "i27", name)
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(reference_dir, out)
        if drop_last:   # as if killed right after the last checkpoint, before its metrics row
            with open(os.path.join(out, "metrics.jsonl")) as f:
                keep = [line for line in f if json.loads(line)["step"] < 4]
            with open(os.path.join(out, "metrics.jsonl"), "w") as f:
                f.writelines(keep)
        return out

    def short(text):
        return text.replace(root + "/", "")[:230]

    def add(category, case, held, outcome):
        rows.append((category, case, short(outcome), "yes" if held else "NO"))
        print(rows[-1], flush=True)

    def recovered(out, *flags, expect=""):
        p, _, _ = run(train_cmd(out, "--resume", *flags))
        text = p.stdout + p.stderr
        exact = p.returncode == 0 and metrics(out) == reference and expect in text
        named = next((line for line in text.splitlines() if expect and expect in line), "")
        return exact, (f"resumed exactly; {named.strip()}" if exact else f"exit {p.returncode}: {p.stderr[-200:]}")

    def expect_error(category, case, cmd, must=""):
        held, line, secs = one_line(cmd)
        add(category, case, held and must in line, f"`{line}` ({secs:.1f} s)")

    newest = lambda out: os.path.join(out, "checkpoints", "step_000004")  # noqa: E731

    # bad state: non-finite weights and optimiser state that pass their checksums
    out = fresh("nan_adapter")
    file = os.path.join(newest(out), "adapter", "adapter_model.safetensors")
    weights = load_file(file)
    weights[sorted(weights)[0]].view(-1)[0] = float("nan")
    save_file(weights, file)
    _rewrite_checksums(newest(out))
    add("bad state", "NaN in the newest checkpoint's LoRA weights, checksums recomputed",
        *recovered(out, expect="hold NaN or infinity"))
    out = fresh("nan_optimizer")
    file = os.path.join(newest(out), "trainer_state.pt")
    state = torch.load(file, weights_only=False)
    state["optimizer"]["state"][0]["exp_avg"].view(-1)[0] = float("nan")
    torch.save(state, file)
    _rewrite_checksums(newest(out))
    add("bad state", "NaN in the newest checkpoint's optimiser state, checksums recomputed",
        *recovered(out, expect="is not finite"))
    out = fresh("no_checksums_flipped")
    for ck in os.listdir(os.path.join(out, "checkpoints")):
        os.remove(os.path.join(out, "checkpoints", ck, "checksums.json"))
    file = os.path.join(newest(out), "trainer_state.pt")
    with open(file, "r+b") as f:
        f.seek(os.path.getsize(file) // 2)
        chunk = f.read(64)
        f.seek(-64, 1)
        f.write(bytes(b ^ 0xFF for b in chunk))
    p, _, _ = run(train_cmd(out, "--resume"))
    text = p.stdout + p.stderr
    said = "has no checksums.json" in text
    exact = p.returncode == 0 and metrics(out) == reference and "cannot be loaded" in text
    line = next((ln for ln in text.splitlines() if "cannot be loaded" in ln), p.stderr.strip().splitlines()[-1:])
    add("bad state", "no checksums.json and 64 flipped bytes in the newest trainer_state.pt",
        said and (exact or one_line_ok(p)), f"told it has no checksums; {'resumed exactly; ' if exact else ''}{line}")
    for case, edit in [('"lora_rank": "16"', {"lora_rank": "16"}), ('"lora_alpha": null', {"lora_alpha": None}),
                       ('"zero_adv_filter": "false"', {"zero_adv_filter": "false"}), ("a JSON array", [])]:
        out = fresh("config_edit", drop_last=False)
        with open(os.path.join(out, "config.json")) as f:
            stored = json.load(f)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(edit if isinstance(edit, list) else {**stored, **edit}, f)
        expect_error("bad state", f"config.json edited: {case}", train_cmd(out, "--resume"), "config.json")
    out = fresh("no_config", drop_last=False)
    os.remove(os.path.join(out, "config.json"))
    expect_error("bad state", "config.json missing, `--resume --seed 1`", train_cmd(out, "--resume", "--seed", "1"),
                 "no config.json")
    p, _, _ = run(train_cmd(out, "--resume", "--rebuild-config"))
    with open(os.path.join(out, "config.json")) as f:
        changes = json.load(f).get("resume_changes", [])
    add("bad state", "config.json missing, `--resume --rebuild-config`",
        p.returncode == 0 and changes and changes[0]["field"] == "config.json",
        f"rebuilt; resume_changes: {[c['field'] for c in changes]}" if p.returncode == 0 else p.stderr[-200:])
    # the run's data changed on disk
    data_dir = os.path.join(root, "i27", "data")
    os.makedirs(data_dir, exist_ok=True)
    from attnrl_mini.worlds import get_world
    train_file = os.path.join(data_dir, "train.jsonl")
    with open(train_file, "w") as f:
        for problem in get_world("toy").train_problems(40, seed=0):
            f.write(json.dumps({"problem": problem.problem, "answer": problem.answer, "source": "toy"}) + "\n")
    out = os.path.join(root, "i27", "data_run")
    shutil.rmtree(out, ignore_errors=True)
    p, _, _ = run(train_cmd(out, "--train-data", train_file, "--steps", "2"))
    with open(train_file, "a") as f:
        f.write(json.dumps({"problem": "Start with 1.\n(a) Add 1.\nWhat is the result?", "answer": "2",
                            "source": "toy"}) + "\n")
    expect_error("bad state", "training file changed between a kill and --resume",
                 train_cmd(out, "--train-data", train_file, "--steps", "3", "--resume"), "data changed on disk")
    p, _, _ = run(train_cmd(out, "--train-data", train_file, "--steps", "3", "--resume", "--accept-changed-data"))
    with open(os.path.join(out, "config.json")) as f:
        changes = json.load(f).get("resume_changes", [])
    add("bad state", "the same with --accept-changed-data", p.returncode == 0 and any("content" in c["field"]
                                                                                    for c in changes),
        f"went on; resume_changes: {[(c['field'], c['step']) for c in changes]}" if p.returncode == 0 else p.stderr[-200:])

    # bad servers: a stub on 127.0.0.1 that is not vLLM
    for mode in ("non_json", "empty_data", "string_ids", "http500", "hang_health"):
        with StubServer(mode, max_requests=300, max_seconds=120) as stub:
            expect_error("bad servers", f"`--vllm-url` at a stub answering {mode}",
                         train_cmd(os.path.join(root, "i27", f"stub_{mode}"), "--generator", "vllm", "--vllm-url",
                                   stub.url))
    expect_error("bad servers", "`--vllm-url` with nothing listening",
                 train_cmd(os.path.join(root, "i27", "stub_none"), "--generator", "vllm", "--vllm-url",
                           "http://127.0.0.1:9"), "not healthy")
    with StubServer("non_json", max_requests=300, max_seconds=120) as stub:
        expect_error("bad servers", "`eval.py --vllm-url` at a stub answering non_json",
                     [sys.executable, "eval.py", "--generator", "vllm", "--vllm-url", stub.url, "--limit", "2"])

    # stale adapter folders: SIGKILL a trainer that uses a (stub) vLLM server
    with StubServer("ok", max_requests=5000, max_seconds=300) as stub:
        out = os.path.join(root, "i27", "sigkill")
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out + "2", ignore_errors=True)
        cmd = train_cmd(out, "--generator", "vllm", "--vllm-url", stub.url, "--steps", "50")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mine = lambda pid: [d for d in os.listdir("/dev/shm") if d.startswith(f"attnrl_adapters_{pid}_")]  # noqa: E731
        deadline = time.time() + 240
        while proc.poll() is None and not mine(proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        proc.kill()
        proc.wait()
        left = mine(proc.pid)
        p, _, _ = run(train_cmd(out + "2", "--generator", "vllm", "--vllm-url", stub.url, "--steps", "1"))
        gone = left and not mine(proc.pid)
        add("stale state", "SIGKILL of a trainer using the sidecar, then a new run", bool(gone),
            f"{len(left)} folder left by the killed PID {proc.pid}; removed by the next run: {bool(gone)} "
            f"(exit {p.returncode})")

    # full disk, for real: a 3 MB tmpfs
    disk = os.path.join(root, "i27", "disk")
    os.makedirs(disk, exist_ok=True)
    subprocess.run(["umount", "-l", disk], capture_output=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", disk], capture_output=True, text=True)
    if mounted.returncode != 0:
        add("full disk", "a real 3 MB tmpfs", True, f"skipped: cannot mount one here ({mounted.stderr.strip()})")
    else:
        try:
            out = os.path.join(disk, "run")
            held, line, secs = one_line([sys.executable, "train.py", "--steps", "6", "--eval-problems", "20",
                                         "--eval-every", "3", "--save-every", "1", "--out", out])
            tmps = [os.path.join(d, n) for d, names, files in os.walk(out) for n in names + files if n.endswith(".tmp")]
            add("full disk", "the issue's command on a 3 MB tmpfs (`--steps 6 --save-every 1`)",
                held and "free there" in line and not tmps, f"`{line}` ({secs:.1f} s); .tmp left: {len(tmps)}")
            # a save killed when it had filled the disk, then --resume on the still-full disk
            ckpts = sorted(os.listdir(os.path.join(out, "checkpoints")))
            tmp = os.path.join(out, "checkpoints", "step_000099.tmp")
            os.makedirs(tmp, exist_ok=True)
            with open(os.path.join(tmp, "filler"), "wb") as f:
                try:
                    f.write(b"\0" * shutil.disk_usage(disk).free)
                except OSError:
                    pass
            free_before = shutil.disk_usage(disk).free
            p, _, _ = run([sys.executable, "train.py", "--out", out, "--resume"])
            lines = p.stderr.strip().splitlines()
            cleaned = not os.path.exists(tmp)
            add("full disk", f"a killed save's .tmp filling the disk ({free_before} bytes free), then --resume",
                cleaned and "Traceback" not in p.stderr and (p.returncode == 0 or lines[-1].startswith("error:")),
                f".tmp removed first: {cleaned}; then {'finished' if p.returncode == 0 else lines[-1]} "
                f"(checkpoints before: {', '.join(ckpts) or 'none'})")
        finally:
            subprocess.run(["umount", "-l", disk], capture_output=True)

    # paths
    d = os.path.join(root, "i27", "paths")
    os.makedirs(d, exist_ok=True)
    regular = os.path.join(d, "a_file")
    with open(regular, "w") as f:
        f.write("x")
    expect_error("paths", "`--out` under a regular file", train_cmd(os.path.join(regular, "run")), "is a file")
    expect_error("paths", "`eval.py --json` under a regular file",
                 [sys.executable, "eval.py", "--json", os.path.join(regular, "eval.json")], "is a file")

    # extreme values
    for case, cmd, must in [
            ("`--max-response-tokens 1000000000`", train_cmd(os.path.join(d, "x"), "--max-response-tokens", "1000000000"),
             "context"),
            ("`eval.py --max-new-tokens 100000000`", [sys.executable, "eval.py", "--max-new-tokens", "100000000"],
             "context"),
            ("`--seed 2**64`", train_cmd(os.path.join(d, "x"), "--seed", str(2**64)), "--seed"),
            ("`--eval-problems 1000000000`", train_cmd(os.path.join(d, "x"), "--eval-problems", "1000000000"),
             "held-out problems"),
            ("`--n-initial 1000000`", train_cmd(os.path.join(d, "x"), "--n-initial", "1000000"), "GiB")]:
        expect_error("extreme values", case, cmd, must)

    # model and adapter files
    model = os.path.join(d, "garbage_model")
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "attnrl_mini", "worlds", "toy", "model"), model)
    with open(os.path.join(model, "model.safetensors"), "wb") as f:
        f.write(os.urandom(4096))
    expect_error("model files", "`--model` with a garbage model.safetensors",
                 train_cmd(os.path.join(d, "x"), "--model", model, "--preset", "toy"), "cannot be loaded")
    expect_error("model files", "`eval.py --model` with a garbage model.safetensors",
                 [sys.executable, "eval.py", "--model", model, "--benchmarks", "toy", "--limit", "2"], "cannot be loaded")
    expect_error("model files", "`--lora-target-modules nosuchmodule`",
                 train_cmd(os.path.join(d, "x"), "--lora-target-modules", "nosuchmodule"), "nosuchmodule")
    expect_error("model files", "`--max-prompt-tokens 1`", train_cmd(os.path.join(d, "x"), "--max-prompt-tokens", "1"),
                 "--max-prompt-tokens 1")
    for damage in ("garbage", "NaN"):
        adapter = os.path.join(d, f"adapter_{damage}")
        shutil.rmtree(adapter, ignore_errors=True)
        shutil.copytree(os.path.join(reference_dir, "checkpoints", "step_000004", "adapter"), adapter)
        file = os.path.join(adapter, "adapter_model.safetensors")
        if damage == "garbage":
            with open(file, "wb") as f:
                f.write(os.urandom(2048))
        else:
            weights = load_file(file)
            weights[sorted(weights)[-1]].fill_(float("nan"))
            save_file(weights, file)
        expect_error("model files", f"`eval.py --adapter` with {damage} weights",
                     [sys.executable, "eval.py", "--adapter", adapter, "--limit", "2"], "--adapter")

    # the grader's verdicts
    from attnrl_mini.worlds.reward import Grader
    long_product = "*".join(["x"] * 30_000)
    with Grader(workers=1, timeout=5.0) as grader:
        t0 = time.time()
        verdicts = grader.grade(["\\boxed{100,200}", "\\boxed{" + long_product + "}"], ["100200", "x^{30000}"])
        stats = grader.stats()
    add("grader", "`\\boxed{100,200}` against gold 100200", verdicts[0] == 0.0, f"reward {verdicts[0]}")
    add("grader", "30,000 `x*x*...` against `x^{30000}`", verdicts[1] == 1.0 and stats["timeouts"] == 0,
        f"reward {verdicts[1]}, {stats['timeouts']} timeouts, {time.time() - t0:.1f} s")
    return rows


def one_line_ok(p) -> bool:
    lines = p.stderr.strip().splitlines()
    return p.returncode != 0 and bool(lines) and lines[-1].startswith("error:") and "Traceback" not in p.stderr


def by_category(rows) -> str:
    counts: dict[str, list[int]] = {}
    for category, *_, held in rows:
        counts.setdefault(category, [0, 0])
        counts[category][0] += held == "yes"
        counts[category][1] += 1
    return ", ".join(f"{c} {h}/{n}" for c, (h, n) in counts.items())


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/faults")
    ap.add_argument("--only", choices=["kills", "faults", "inputs", "state"], default=None)
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
    if args.only in (None, "state"):
        rows = bad_state(root, reference_dir, reference)
        parts.append(f"Bad state, bad servers, full disks, extreme values ({sum(r[3] == 'yes' for r in rows)} of "
                     f"{len(rows)} held; by category: {by_category(rows)}):\n\n" +
                     table(["category", "case", "outcome", "held"], rows))
    parts.append(f"Commands whose stderr held a traceback (none ran with --debug): {len(TRACEBACKS)}"
                 + (f" ({'; '.join(TRACEBACKS)})" if TRACEBACKS else ""))
    report = f"faults_{args.only}.md" if args.only else "faults.md"
    with open(os.path.join(root, report), "w") as f:
        f.write("\n\n".join(parts) + "\n")
    print("\n\n".join(parts))


if __name__ == "__main__":
    main()
