#!/usr/bin/env bash
# The test command of README.md (after scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 VLLM_HOST_IP=127.0.0.1 TOKENIZERS_PARALLELISM=false
exec python3 -m pytest -q tests "$@"
