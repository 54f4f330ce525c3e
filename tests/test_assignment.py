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
