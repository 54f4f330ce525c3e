"""pyproject.toml: the package installs into a fresh venv and its toy eval runs from outside the repository.

The venv reuses the system's torch, transformers, ... (--system-site-packages) and installs only this
package (--no-deps, --no-build-isolation: no network). It is built from a copy of the package's files,
so neither install writes build/ or *.egg-info into the checkout. The plain install is the one that
proves the package data (toy models, benchmark files) ship with it: its files are copied into the venv.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ""}


def _venv(where: Path) -> Path:
    # --without-pip: the venv's bundled setuptools is too old to build without `wheel`; the system pip and
    # setuptools are visible through --system-site-packages.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(where)], check=True)
    return where / "bin"


def _copy_package(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "attnrl_mini", dst / "attnrl_mini", ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "pip-install-e"])
def test_installed_copy_runs_the_toy_eval_from_another_directory(tmp_path, editable):
    src = _copy_package(tmp_path / "src")
    bin_dir = _venv(tmp_path / "venv")
    cmd = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           *(["-e"] if editable else []), str(src)]
    subprocess.run(cmd, check=True, cwd=tmp_path, env=ENV)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(bin_dir / "python"), "-c", "import attnrl_mini, sys; print(attnrl_mini.__file__)"],
                           cwd=elsewhere, env=ENV, capture_output=True, text=True, check=True).stdout.strip()
    assert not where.startswith(str(ROOT)), where                     # not the checkout's copy
    if not editable:
        shutil.rmtree(src)                                            # the venv must hold everything it needs
        assert "site-packages" in where
    for script in ("attnrl-train", "attnrl-eval", "attnrl-inspect", "attnrl-assignment"):
        assert (bin_dir / script).exists(), script
    proc = subprocess.run([str(bin_dir / "attnrl-eval"), "--model", "toy", "--benchmarks", "toy", "--limit", "4",
                           "--generator", "hf", "--grader-workers", "1"],
                          cwd=elsewhere, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = [line.split() for line in proc.stdout.splitlines() if line.startswith("toy ")]
    assert table and table[0][:3] == ["toy", "4", "1"], proc.stdout      # benchmark, n, k
    assert os.listdir(elsewhere) == []                                  # eval wrote nothing where it ran
    help_text = subprocess.run([str(bin_dir / "attnrl-train"), "--help"], cwd=elsewhere, env=ENV,
                               capture_output=True, text=True, check=True).stdout
    assert "--lora-rank" in help_text
