"""The test suite cleans up after itself: when the session ends, nothing is new in the checkout (no
stray results.json, run directory, lock file or build output; untracked and ignored files alike, less
caches) and no sidecar log of this checkout is left in the temporary directory. Anything new fails the
session, named.

scripts/test.sh runs the suite on two pytest-xdist workers, a test file per worker at a time
(`--dist loadfile`: a file's module fixtures, e.g. its vLLM server, are built once). The files are
handed out longest first (SLOWEST_FIRST), so that the two workers finish at about the same time."""
import glob
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHES = ("__pycache__", ".pytest_cache")
# The longest files (idle 2-core machine, `bash scripts/test.sh --durations=0`), longest first; the rest follow
# in their usual order. A file missing here only costs balance, never a test.
SLOWEST_FIRST = ("test_reasoning_models.py", "test_qwen25_path.py", "test_bad_state.py", "test_vllm_sidecar.py",
                 "test_assignment.py", "test_tracking.py", "test_trainer.py", "test_faults_runtime.py",
                 "test_notebook.py", "test_reward.py", "test_grading.py", "test_install.py", "test_faults.py",
                 "test_part_d_grading.py", "test_compare_methods.py", "test_qwen3_fci.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: tests keep their order in a file


def _worker(config) -> bool:
    """True in a pytest-xdist worker: the leftovers are checked once, by the controller, after all workers."""
    return hasattr(config, "workerinput")


def _leftovers() -> set[str] | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None                                   # not a git checkout: nothing to compare
    files = {line[3:] for line in out.splitlines() if line[:2] in ("??", "!!")}
    files = {f for f in files if not any(c in f.split("/") for c in CACHES)}
    return files | {log for log in glob.glob(os.path.join(tempfile.gettempdir(), "attnrl_vllm_*.log")) if _ours(log)}


def _ours(log: str) -> bool:
    """A sidecar log of this checkout (its start names the model directory). Other checkouts on a shared
    machine write the same names; a sidecar of a model outside the checkout (a tmp_path model) is missed."""
    try:
        with open(log, "rb") as f:
            return str(ROOT).encode() in f.read(1 << 18)
    except OSError:
        return False


def pytest_sessionstart(session):
    if _worker(session.config):
        return
    session.config._leftovers_before = _leftovers()


def pytest_sessionfinish(session, exitstatus):
    if _worker(session.config):
        return
    before, after = getattr(session.config, "_leftovers_before", None), _leftovers()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"the tests left {len(new)} file(s) behind: " + ", ".join(new[:20]), red=True)
        session.exitstatus = 1
