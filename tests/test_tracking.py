"""--report-to: TensorBoard event files hold the same scalars as metrics.jsonl; a tracker whose
package is missing is refused in one line before the run writes anything."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from attnrl_mini.run.config import make_config
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
def test_a_missing_tracker_package_is_a_one_line_error(tmp_path, name):
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
