"""The test suite cleans up after itself: when the session ends, nothing is new in the checkout (no
stray results.json, run directory, lock file or build output; untracked and ignored files alike, less
caches) and no sidecar log of this checkout is left in the temporary directory. Anything new fails the
session, named."""
import glob
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHES = ("__pycache__", ".pytest_cache")


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
    session.config._leftovers_before = _leftovers()


def pytest_sessionfinish(session, exitstatus):
    before, after = getattr(session.config, "_leftovers_before", None), _leftovers()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"the tests left {len(new)} file(s) behind: " + ", ".join(new[:20]), red=True)
        session.exitstatus = 1
