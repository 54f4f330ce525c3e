"""--report-to: TensorBoard event files, W&B's offline run files and trackio's local SQLite database
hold the same scalars as metrics.jsonl, each step once, also across a --resume that redoes steps; a
tracker whose package is missing is refused in one line before the run writes anything."""
from __future__ import annotations

import collections
import glob
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys

import pytest

from attnrl_mini.config import make_config
from attnrl_mini.run.tracking import TrackerError, parse_report_to, scalars
from attnrl_mini.run.driver import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scalars_flatten_numbers_and_skip_the_rest():
    record = {"step": 3, "reward": 0.5, "generator": "hf", "valid_ratio": None, "ok": True,
              "branch_stats": {"n": 4, "mixed_outcome": None}}
    assert scalars(record) == {"step": 3.0, "reward": 0.5, "ok": 1.0, "branch_stats/n": 4.0}


def test_tensorboard_event_files_equal_metrics_jsonl(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    cfg = make_config("toy", out=str(out), steps=1, prompts_per_step=2, n_initial=4, max_response_tokens=48,
                      eval_problems=2, eval_every=1, save_every=10, mini_batch_sequences=16, threads=1,
                      one_step_stale=False, generator="hf", report_to="tensorboard")
    train(cfg)
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    logged = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    expected: dict[str, dict[int, float]] = {}
    for r in records:
        for tag, value in scalars(r).items():
            expected.setdefault(tag, {})[r["step"]] = value
    assert set(logged) == set(expected) and "eval_accuracy" in logged and "branch_stats/n" in logged
    for tag in expected:   # event files store float32
        assert logged[tag] == pytest.approx(expected[tag], rel=1e-6, abs=1e-6), tag
    summaries = acc.Tensors("step_summary/text_summary")
    assert [e.step for e in summaries] == [r["step"] for r in records]


@pytest.mark.parametrize("name", ["wandb", "trackio"])
def test_a_missing_tracker_package_is_a_one_line_error(tmp_path, name, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)   # import fails as if not installed (wandb is, for the tests)
    with pytest.raises(TrackerError, match=f"pip install {name}"):
        parse_report_to(f"tensorboard,{name}")
    sys.path.insert(0, ROOT)
    import train as train_cli
    with pytest.raises(SystemExit) as err:
        train_cli.main(["--report-to", name, "--out", str(tmp_path / "run"), "--steps", "1"])
    assert str(err.value) == (f"error: --report-to {name}: the package {name!r} is not installed; "
                              f"pip install {name} (or drop it from --report-to)")
    assert not os.path.exists(tmp_path / "run")
    with pytest.raises(TrackerError, match="unknown tracker 'tensorbored'"):
        parse_report_to("tensorbored")


def test_trackers_are_imported_only_when_asked_for():
    code = ("import sys, attnrl_mini.run.tracking, attnrl_mini.run.runlog; "
            "from attnrl_mini.run.tracking import parse_report_to; assert parse_report_to('none') == []; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'wandb', 'trackio')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def wandb_history(run_file: str) -> list[dict]:
    """The history rows of a W&B run file (.wandb): a LevelDB-style log of protobuf Records.

    Blocks of 32 KiB after a 7-byte ':W&B' header; each record has a 7-byte header (crc32c, length,
    type: 1 full, 2 first, 3 middle, 4 last). wandb 0.31 ships no Python reader (its core is in Go)."""
    from wandb.proto import wandb_internal_pb2

    buf = open(run_file, "rb").read()
    assert buf[:4] == b":W&B", run_file
    block, header = 32768, 7
    pos, records, pending = 7, [], b""
    while pos + header <= len(buf):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", buf[pos:pos + header])
        if left < header or (length == 0 and kind == 0):     # block padding
            pos += left
            continue
        data = buf[pos + header:pos + header + length]
        pos += header + length
        if kind in (1, 2):
            pending = data
        else:
            pending += data
        if kind in (1, 4):
            records.append(pending)
    rows = []
    for data in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_wandb_offline_and_tensorboard_get_each_step_once_across_a_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (requirements.txt pins it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)                # offline: no account, no network
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    cfg = make_config("toy", out=str(out), steps=2, prompts_per_step=2, n_initial=4, max_response_tokens=48,
                      eval_problems=2, eval_every=1, save_every=1, mini_batch_sequences=16, threads=1,
                      one_step_stale=False, generator="hf", report_to="wandb,tensorboard")
    train(cfg)
    shutil.rmtree(out / "checkpoints" / "step_000002")    # the resume redoes step 2, then runs step 3
    train(make_config(None, **{**cfg.__dict__, "steps": 3}), resume=True)

    with open(out / "metrics.jsonl") as f:
        records = {r["step"]: r for r in map(json.loads, f)}
    assert sorted(records) == [0, 1, 2, 3]
    timing = lambda key: key.startswith("seconds") or key.startswith("_")   # noqa: E731  (differ between sessions)
    run_files = sorted(glob.glob(str(out / "wandb" / "*run-*" / "run-*.wandb")))
    assert len(run_files) == 2                                # one per session, one run id
    assert len({os.path.basename(f) for f in run_files}) == 1
    rows = [row for f in run_files for row in wandb_history(f)]
    assert collections.Counter(row["step"] for row in rows) == {0: 1, 1: 1, 2: 1, 3: 1}
    for row in rows:
        expected = {k: v for k, v in scalars(records[row["step"]]).items() if not timing(k)}
        got = {k: v for k, v in row.items() if not timing(k)}
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), row["step"]

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    for tag in ("eval_accuracy", "reward", "step"):
        steps = [e.step for e in acc.Scalars(tag)]
        assert len(steps) == len(set(steps)), (tag, steps)   # no step sent twice
        assert set(steps) == {s for s, r in records.items() if tag in r}, tag


def trackio_rows(db: str) -> list[tuple[str, str, int, dict]]:
    """(run id, run name, step, metrics) of each row of trackio's local database, in the order logged:
    table `metrics`, one JSON object per trackio.log call (trackio 0.43)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT run_id, run_name, step, metrics FROM metrics ORDER BY id").fetchall()
    return [(run_id, name, step, json.loads(metrics)) for run_id, name, step, metrics in rows]


def test_trackio_local_database_gets_each_step_once_across_a_resume(tmp_path):
    pytest.importorskip("trackio", reason="trackio is not installed (requirements.txt pins it)")
    # trackio reads TRACKIO_DIR when imported, so the runs are separate processes (train.py) with their own
    # environment: the database in tmp_path, never the user's ~/.cache, no Space, no server, no network
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_PROJECT", "HF_TOKEN")}
    env.update(TRACKIO_DIR=str(tmp_path / "trackio"), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    flags = ["--prompts-per-step", "2", "--n-initial", "4", "--max-response-tokens", "48", "--eval-problems", "2",
             "--eval-every", "1", "--save-every", "1", "--mini-batch-sequences", "16", "--threads", "1",
             "--one-step-stale", "false", "--generator", "hf", "--report-to", "trackio"]

    def train_py(*args: str) -> None:
        done = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    out = tmp_path / "run"
    train_py("--out", str(out), "--steps", "2", *flags)
    shutil.rmtree(out / "checkpoints" / "step_000002")    # the resume redoes step 2, then runs step 3
    train_py("--out", str(out), "--resume", "--steps", "3")
    other = tmp_path / "other" / "run"                    # a new run directory of the same name
    train_py("--out", str(other), "--steps", "1", *flags)

    rows = trackio_rows(str(tmp_path / "trackio" / "attnrl-mini.db"))
    assert not os.path.exists(tmp_path / "hf" / "trackio")
    run_ids = list(dict.fromkeys(run_id for run_id, *_ in rows))
    assert len(run_ids) == 2 and {name for _, name, *_ in rows} == {"run"}   # the resume continued its run
    for run_id, run_dir, steps in ((run_ids[0], out, [0, 1, 2, 3]), (run_ids[1], other, [0, 1])):
        with open(run_dir / "metrics.jsonl") as f:
            records = {r["step"]: r for r in map(json.loads, f)}
        assert sorted(records) == steps
        logged = [(step, metrics) for rid, _, step, metrics in rows if rid == run_id]
        assert collections.Counter(step for step, _ in logged) == {s: 1 for s in steps}   # each step once
        for step, metrics in logged:      # seconds*: timing, differs between the sessions of a redone step
            expected = {k: v for k, v in scalars(records[step]).items() if k != "step" and not k.startswith("seconds")}
            got = {k: v for k, v in metrics.items() if not k.startswith("seconds")}
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), step
        assert "eval_accuracy" in logged[0][1] and "branch_stats/n" in logged[1][1]
