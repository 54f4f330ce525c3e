"""Regression tests for what users' machines and runs do to a training run (issue #14): a kill or a
full disk during a checkpoint write, a partial log line, extending a finished run, changed flags on
resume, a second process on the same --out, flipped bytes in a checkpoint, bad flags, bad data.

Runs are in-process and tiny (the toy model, 3 steps of 2 prompts); exactness is checked against one
uninterrupted reference run, as in test_trainer's kill-and-resume test."""
from __future__ import annotations

import dataclasses
import errno
import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import train as train_cli
from attnrl_mini.run import checkpoint, run_dir
from attnrl_mini.worlds import data
from attnrl_mini.run.checkpoint import CheckpointError
from attnrl_mini.run.writes import WriteError
from attnrl_mini.config import Config, ConfigError, make_config, validate
from attnrl_mini.run.driver import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(steps=3, prompts_per_step=2, n_initial=3, max_response_tokens=32, eval_problems=4, eval_every=2,
            save_every=1, target_sequences=30, max_prompts_per_step=4, mini_batch_sequences=16, threads=1,
            generator="hf", seed=3)
TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


def tiny(out, **kw) -> Config:
    return make_config("toy", **{**TINY, "out": str(out), **kw})


def deterministic(out) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if not k.startswith(("seconds", "grader_timeouts"))} for r in rows]


@pytest.fixture(scope="module", autouse=True)
def fast_setup():
    """200 toy training problems instead of 20,000 (making and tokenizing those dominates a tiny run)
    and no PNG curves: neither is what these tests check."""
    from attnrl_mini.worlds import toy
    from attnrl_mini.run.runlog import RunLog
    real = toy.train_problems
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(toy, "train_problems", lambda n, seed: real(200, seed))
        mp.setattr(RunLog, "plot", lambda self: "")
        yield


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted 3-step run: the reference every resumed run must equal."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    train(tiny(out))
    return out


def copy_run(src, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


# ---- checkpoints ------------------------------------------------------------------------------
class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it in the process runs (BaseException skips `except Exception`)."""


@pytest.mark.parametrize("fault", ["kill", "disk_full"])
def test_fault_during_the_step_3_checkpoint_write_resumes_exactly(finished, tmp_path, monkeypatch, fault):
    out = tmp_path / "run"
    real_save = torch.save

    def failing_save(obj, path, *a, **kw):
        if isinstance(obj, dict) and obj.get("step") == 3:
            with open(path, "wb") as f:  # half a file, as a kill or a full disk leaves it
                f.write(b"PK\x03\x04 partial")
            raise Killed() if fault == "kill" else OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(Killed if fault == "kill" else WriteError, match=None if fault == "kill" else
                       r"writing .*step_000003.tmp failed: No space left on device \([\d.]+ MB free there\)"):
        train(tiny(out))
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    tmp = out / "checkpoints" / "step_000003.tmp"
    assert tmp.exists() == (fault == "kill")   # a full disk cleans up after itself; a kill cannot
    assert checkpoint.latest_checkpoint(str(out)).endswith("step_000002")  # never the unfinished one
    import eval as eval_cli
    assert eval_cli.resolve_adapter(str(out)).endswith(os.path.join("step_000002", "adapter"))

    train(tiny(out), resume=True)
    assert not tmp.exists(), "the unfinished checkpoint was not removed"
    assert deterministic(out) == deterministic(finished)


def test_flipped_bytes_are_caught_and_resume_falls_back_to_the_previous_checkpoint(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    state = out / "checkpoints" / "step_000003" / checkpoint.STATE_FILE
    raw = bytearray(state.read_bytes())
    for i in range(64):
        raw[len(raw) // 2 + i] ^= 0xFF
    state.write_bytes(bytes(raw))
    with open(out / "metrics.jsonl") as f:
        keep = [line for line in f if json.loads(line)["step"] < 3]
    (out / "metrics.jsonl").write_text("".join(keep))  # as if killed right after saving step 3
    import eval as eval_cli
    with pytest.raises(CheckpointError, match=r"step_000003/trainer_state.pt: checksum mismatch"):
        eval_cli.resolve_adapter(str(out))

    train(tiny(out), resume=True)
    log = capsys.readouterr().out
    assert f"checkpoint {out}/checkpoints/step_000003 cannot be loaded: {state}: checksum mismatch" in log
    assert (out / "checkpoints" / "step_000003.bad").is_dir()   # set aside, step 3 redone from step 2
    assert deterministic(out) == deterministic(finished)


def test_no_loadable_checkpoint_is_a_one_line_error(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    for ckpt in checkpoint.finished_checkpoints(str(out)):
        adapter = os.path.join(ckpt, "adapter", "adapter_model.safetensors")
        with open(adapter, "r+b") as f:
            f.seek(100)
            f.write(b"\x00" * 8)
    with pytest.raises(SystemExit, match=r"^error: no checkpoint of .* can be loaded; the newest: .*step_000003/"
                                         r"adapter/adapter_model.safetensors: checksum mismatch"):
        train_cli.main(["--out", str(out), "--resume"])


# ---- logs and extending -------------------------------------------------------------------------
def test_partial_last_log_lines_are_dropped_with_a_warning(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    for name in ("metrics.jsonl", "trees.jsonl"):
        with open(out / name, "a") as f:
            f.write('{"step": 3, "reward": 0.')   # killed mid-write
    train(tiny(out), resume=True)
    log = capsys.readouterr().out
    for name in ("metrics.jsonl", "trees.jsonl"):
        assert f"{out / name}: dropped the partial last line" in log
        with open(out / name) as f:
            [json.loads(line) for line in f]
    assert deterministic(out) == deterministic(finished)


def test_a_broken_line_inside_a_log_is_an_error_naming_file_and_line(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    (out / "metrics.jsonl").write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    from attnrl_mini.run.runlog import RunLog
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not a step record"):
        RunLog(str(out)).truncate_after(3)


def test_a_finished_run_is_extended_and_a_new_lr_takes_effect(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    train_cli.main(["--out", str(out), "--resume", "--steps", "4", "--lr", "1e-3"])  # flags checked vs config.json
    rows = deterministic(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4] and rows[:4] == deterministic(finished)
    state = torch.load(out / "checkpoints" / "step_000004" / checkpoint.STATE_FILE, weights_only=False)
    assert {g["lr"] for g in state["optimizer"]["param_groups"]} == {1e-3}
    stored = json.loads((out / "config.json").read_text())
    assert (stored["steps"], stored["lr"]) == (4, 1e-3)
    assert stored["resume_changes"] == [{"step": 3, "field": "steps", "from": 3, "to": 4},
                                        {"step": 3, "field": "lr", "from": 0.0002, "to": 0.001}]


def test_flags_that_would_change_the_run_are_refused_on_resume(finished):
    before = (finished / "config.json").read_text()
    with pytest.raises(SystemExit) as error:
        train_cli.main(["--out", str(finished), "--resume", "--seed", "4", "--algo", "grpo", "--lora-rank", "8",
                        "--eval-every", "1"])
    message = str(error.value.code)
    assert message.startswith("error: --resume continues the run")
    for diff in ("--algo 'grpo' (the run has 'attnrl')", "--lora-rank 8 (the run has 16)", "--seed 4 (the run has 3)"):
        assert diff in message
    assert "eval-every" not in message                   # may change
    assert (finished / "config.json").read_text() == before


# ---- the lock -----------------------------------------------------------------------------------
def test_a_second_process_on_the_same_out_gets_a_one_line_error(tmp_path):
    lock = run_dir.RunLock(str(tmp_path))
    try:
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--out", str(tmp_path), "--resume"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        lock.release()
    assert proc.returncode == 1
    assert proc.stderr == (f"error: --out {tmp_path} is in use by another process (PID {os.getpid()}, lock file "
                           f"{tmp_path}/.lock); wait for it to finish or choose another --out\n")


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(str(dead.pid))
    warnings = []
    lock = run_dir.RunLock(str(tmp_path), warn=warnings.append)
    assert warnings == [f"[attnrl] warning: took over the stale lock {tmp_path}/.lock of process {dead.pid}, "
                        "which is gone"]
    assert (tmp_path / ".lock").read_text() == str(os.getpid())
    lock.release()


def test_releasing_the_lock_of_a_removed_run_folder_is_quiet(tmp_path):
    """train.py releases its lock in a `finally`: a folder removed mid-run must not replace the run's own
    error with a FileNotFoundError from the release."""
    out = tmp_path / "run"
    lock = run_dir.RunLock(str(out))
    shutil.rmtree(out)
    lock.release()
    assert not out.exists()
    lock.release()                                         # a second release does nothing


# ---- bad values and bad data --------------------------------------------------------------------
def test_every_config_field_has_a_description_and_the_parser_shows_it():
    help_text = train_cli.build_parser().format_help()
    for f in dataclasses.fields(Config):
        assert len(f.metadata.get("help", "").strip()) >= 10, f"Config.{f.name} has no description"
        assert f.metadata["help"].split()[0] in help_text
    assert "{attnrl,treerl,grpo}" in help_text and "same flags" in help_text


@pytest.mark.parametrize("flags, message", [
    (["--eval-every", "0"], "--eval-every must be >= 1, got 0"),
    (["--save-every", "0"], "--save-every must be >= 1, got 0"),
    (["--dtype", "float8"], "argument --dtype: invalid choice: 'float8' (choose from 'auto', 'float32', 'bfloat16', 'float16')"),
    (["--grad-clip=-1"], "--grad-clip must be > 0, got -1.0"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--steps", "-3"], "--steps must be >= 1, got -3"),
    (["--max-response-tokens", "0"], "--max-response-tokens must be >= 1, got 0"),
    (["--lora-alpha", "0"], "--lora-alpha must be >= 1, got 0"),
    (["--fci-quantile", "1.5"], "--fci-quantile must be in (0, 1), got 1.5"),
    (["--n-initial", "0"], "--n-initial must be >= 1, got 0"),
    (["--n-continuations", "0"], "--n-continuations must be >= 1, got 0"),
    (["--mini-batch-sequences", "0"], "--mini-batch-sequences must be >= 1, got 0"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--algo", "ppo"], "argument --algo: invalid choice: 'ppo'"),
    (["--eval-data", "/nonexistent"], "--eval-data '/nonexistent': no such file"),
    (["--prompts-per-step", "64", "--max-prompts-per-step", "8"], "--max-prompts-per-step (8) must be >= --prompts-per-step (64)"),
])
def test_bad_values_are_refused_before_any_work(tmp_path, flags, message):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as error:
        train_cli.main(["--out", str(out), *flags])
    assert str(error.value.code).startswith("error: ") and message in str(error.value.code)
    assert not out.exists()


def test_a_bad_value_exits_in_a_subprocess_with_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--out", str(tmp_path / "x"),
                           "--fci-quantile", "1.5", "--eval-every", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == "error: --fci-quantile must be in (0, 1), got 1.5; --eval-every must be >= 1, got 0\n"


def test_a_missing_gpu_is_a_one_line_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: --device cuda is valid here")
    with pytest.raises(SystemExit) as error:
        train_cli.main(["--out", str(tmp_path / "run"), "--device", "cuda", "--eval-problems", "4"])
    assert str(error.value.code).startswith("error: --device cuda was asked for but no CUDA GPU is visible")


def test_validate_accepts_every_preset():
    from attnrl_mini.config import PRESETS
    for preset in PRESETS:
        validate(make_config(preset, train_data=PRESETS[preset].get("train_data", "toy")
                             if preset.startswith("toy") else "toy"))
    with pytest.raises(ConfigError, match="--branch-selector must be one of"):
        validate(make_config("toy", branch_selector="attention"))


def _parquet(path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize("name, write, message", [
    ("latin1.jsonl", lambda p: p.write_bytes('{"problem": "caf\xe9", "answer": "1"}\n'.encode("latin-1")),
     "latin1.jsonl: not UTF-8 text, at or after line 1"),
    ("corrupt.jsonl.gz", lambda p: p.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 40),
     "corrupt.jsonl.gz: after line 0: cannot be decompressed"),
    ("truncated.jsonl.gz", lambda p: p.write_bytes(gzip.compress(b'{"problem": "x", "answer": "1"}\n' * 50)[:60]),
     "truncated.jsonl.gz: after line"),
    ("row.jsonl", lambda p: p.write_text('{"problem": "x", "answer": "1"}\n{"problem": "y"}\n'),
     "row.jsonl: line 2: field 'answer' must be"),
    ("columns.parquet", lambda p: _parquet(p, {"question": ["x"], "answer": ["1"]}),
     "columns.parquet: missing column(s) prompt, reward_model"),
    ("fake.parquet", lambda p: p.write_text("not parquet"), "fake.parquet: not a readable parquet file"),
])
def test_bad_data_files_name_the_file_and_line(tmp_path, name, write, message):
    path = tmp_path / name
    write(path)
    with pytest.raises(data.DataError) as error:
        data.load_problems(path)
    assert message in str(error.value)


def test_bad_training_data_through_train_py_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x", "answer": "1"}\n{"problem": 3, "answer": "1"}\n')
    with pytest.raises(SystemExit, match=rf"^error: {bad}: line 2: field 'problem' must be a non-empty string"):
        train_cli.main(["--out", str(tmp_path / "run"), "--train-data", str(bad), *TINY_FLAGS])


def test_a_model_directory_without_weights_is_a_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SystemExit, match="has a config.json but no weights"):
        train_cli.main(["--out", str(tmp_path / "run"), "--model", str(tmp_path)])
