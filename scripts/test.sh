#!/usr/bin/env bash
# The test command of README.md (after scripts/install.sh). Extra arguments select tests:
#   bash scripts/test.sh tests/test_fci.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 VLLM_HOST_IP=127.0.0.1 TOKENIZERS_PARALLELISM=false
[ $# -eq 0 ] && set -- tests
exec python3 -m pytest -q -rs "$@"   # -rs: every skipped test says why
