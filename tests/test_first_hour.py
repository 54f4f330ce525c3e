"""What a new user meets first: --help with the values a command line really uses, --world, --print-config,
a quiet start and clean piped logs, eval's generator default, what inspect prints, full exercise titles,
and no files left behind by a failed run or by the vLLM sidecar."""
import json
import os
import subprocess
import sys
from argparse import Namespace

import pytest

from attnrl_mini.cli import eval as eval_cli
from attnrl_mini.cli import train as train_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flag_help(argv: list[str], flag: str) -> str:
    parser = train_cli.build_parser(argv)
    action = next(a for a in parser._actions if flag in a.option_strings)
    return action.help


def test_help_shows_the_presets_value_next_to_the_papers_default():
    assert "(preset toy: 60; paper default: 100)" in _flag_help([], "--steps")
    assert "(preset toy: 0.0002; paper default: 1e-06)" in _flag_help([], "--lr")
    assert "(preset qwen2.5-math-1.5b-24gb: 1e-05; paper default: 1e-06)" in \
        _flag_help(["--model", "Qwen2.5-Math-1.5B"], "--lr")
    assert "(paper default: 0.01)" in _flag_help([], "--weight-decay")          # the preset keeps the paper's value
    assert "preset toy --algo grpo: 'none'" in _flag_help(["--algo", "grpo"], "--branch-selector")
    assert "'toy-plan'" in _flag_help([], "--model")                             # the built-in worlds are named


def test_world_is_the_same_as_model_and_picks_its_preset():
    cfg, _ = train_cli.parse_args(["--world", "toy-plan"])
    assert (cfg.model, cfg.train_data, cfg.out) == ("toy-plan", "toy-plan", "runs/toy-plan")
    assert train_cli.parse_args(["--model", "toy-plan"])[0] == cfg
    with pytest.raises(SystemExit, match="--world toy and --model toy-plan name different models"):
        train_cli.parse_args(["--world", "toy", "--model", "toy-plan"])


def test_print_config_prints_the_resolved_config_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    train_cli.main(["--print-config", "--out", str(out), "--lr", "3e-4"])
    printed = json.loads(capsys.readouterr().out)
    assert (printed["lr"], printed["steps"], printed["out"]) == (3e-4, 60, str(out))
    assert not out.exists()


def test_a_failed_run_leaves_no_lock_and_no_empty_run_directory(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="error: "):
        train_cli.main(["--out", str(out), "--model", str(tmp_path / "no_such_model")])
    assert not out.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(SystemExit):
        train_cli.main(["--out", str(existing), "--model", str(tmp_path / "no_such_model")])
    assert existing.is_dir() and os.listdir(existing) == []          # a folder the user made is kept, lock gone


def test_quiet_start_and_no_progress_bars_when_piped():
    code = ("import logging, os; from attnrl_mini.cli.quiet import quiet_libraries; quiet_libraries(verbose={v}); "
            "print(os.environ.get('TQDM_DISABLE'), os.environ.get('HF_HUB_DISABLE_PROGRESS_BARS'), "
            "logging.getLogger('bitsandbytes.backends.cpu.ops').level)")
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    run = lambda v: subprocess.run([sys.executable, "-c", code.format(v=v)], cwd=ROOT, env=env,  # noqa: E731
                                   capture_output=True, text=True, check=True).stdout.split()
    assert run(False) == ["1", "1", "40"]          # piped: no bars; chatter hidden (40 = logging.ERROR)
    assert run(True) == ["1", "None", "0"]         # --verbose: the libraries speak; still no bars in a pipe


def test_eval_generator_default_follows_train_py_per_model():
    args = lambda **kw: Namespace(**{"generator": None, "vllm_url": "", **kw})   # noqa: E731
    assert eval_cli.default_generator(args(), toy=True) == "hf"          # the toy presets' generator
    assert eval_cli.default_generator(args(), toy=False) == "auto"
    assert eval_cli.default_generator(args(generator="vllm"), toy=True) == "vllm"
    assert eval_cli.default_generator(args(vllm_url="http://127.0.0.1:8000"), toy=True) == "auto"
    assert eval_cli.parse_args([]).generator is None


def test_inspect_report_explains_its_fields():
    from attnrl_mini.tools.inspect import format_report
    steps = [dict(start=0, end=4, text="a\n\n", fci=0.0), dict(start=4, end=8, text="b\n\n", fci=0.2),
             dict(start=8, end=9, text="c", fci=0.0)]
    text = format_report(dict(steps=steps, branch_points=[4, 8], think_end_step=-1, candidates=[1]), prompt_len=5)
    assert "</think> step" not in text and "no </think> in the response" in text
    assert "  Bc     1" in text and "  B      2" in text                 # a branch step that is not a candidate
    assert "a B without c is the fallback" in text
    text = format_report(dict(steps=steps, branch_points=[4, 8], think_end_step=2, candidates=[1]), prompt_len=5)
    assert "step 2 holds the last </think>: it and the steps after it get FCI 0" in text


def test_grade_table_prints_full_exercise_titles():
    from attnrl_mini.assignment.grade import ExerciseScore, Graded, table
    title = "the exact chunked FCI attention with a title well over fifty characters long"
    rows = table(Graded("student", [ExerciseScore("C10", title, 15.0)], refused=[])).splitlines()
    assert title in rows[1] and rows[1].endswith("0/15")


def test_the_sidecar_removes_its_own_log_on_close(tmp_path):
    from attnrl_mini.generation.vllm_sidecar import VLLMSidecar, start_server_process
    log = tmp_path / "attnrl_vllm_test.log"
    sidecar = VLLMSidecar.__new__(VLLMSidecar)                  # only what close() reads; a real server is slow
    sidecar._closed, sidecar._own_log, sidecar.log_path = False, True, str(log)
    sidecar.proc = start_server_process(["sleep", "30"], env=None, log_path=str(log))
    assert log.exists()
    sidecar.close()
    assert not log.exists() and sidecar.proc.poll() is not None
    given = tmp_path / "given.log"                              # a log the caller named is the caller's
    sidecar = VLLMSidecar.__new__(VLLMSidecar)
    sidecar._closed, sidecar._own_log, sidecar.log_path = False, False, str(given)
    sidecar.proc = start_server_process(["sleep", "30"], env=None, log_path=str(given))
    sidecar.close()
    assert given.exists()
