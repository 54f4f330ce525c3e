"""CI runs the assignment's own check: `python -m attnrl_mini.assignment check` (see its module docstring)."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_assignment_check_passes():
    proc = subprocess.run([sys.executable, "-m", "attnrl_mini.assignment", "check"], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    report = "\n".join(line for line in proc.stdout.splitlines() if line.startswith(("[check]", "  FAIL", "  note")))
    print(report)
    assert proc.returncode == 0, report + proc.stderr[-3000:]
    assert "[check] OK" in report


def test_first_divergence_names_step_and_metric():
    from attnrl_mini.assignment.e2e import first_divergence
    ref = [{"step": 0, "eval_accuracy": 0.4}, {"step": 1, "reward": 0.5, "pg_loss": 0.01},
           {"step": 2, "reward": 0.6, "pg_loss": 0.02}]
    assert first_divergence(ref, ref) == (None, "")
    drift = [ref[0], {"step": 1, "reward": 0.5, "pg_loss": 0.01 + 5e-5}, {"step": 2, "reward": 0.55, "pg_loss": 0.02}]
    assert first_divergence(drift, ref) == (2, "reward: 0.55 vs reference 0.6")   # pg_loss within 1e-4
    assert first_divergence(ref[:2], ref) == (2, "2 steps vs reference 3")
