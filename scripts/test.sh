#!/usr/bin/env bash
# The test command of README.md (after scripts/install.sh). Extra arguments select tests:
#   bash scripts/test.sh tests/test_fci.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 VLLM_HOST_IP=127.0.0.1 TOKENIZERS_PARALLELISM=false
# Two workers, one test file each at a time (tests/conftest.py hands out the longest files first). Each
# worker's torch uses one thread, and a vLLM server started by a test does not pin itself to core 0
# (two servers of two workers would share it). TEST_WORKERS=0 runs in one process.
export OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind
# glibc malloc: blocks up to 32 MiB come from the heap and stay there for the next tensor, instead of a
# fresh mmap (and its page faults) for each one; fewer page faults, less system time (docs/performance.md).
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456
WORKERS="${TEST_WORKERS:-2}"
[ $# -eq 0 ] && set -- tests
if [ "$WORKERS" = "0" ]; then
  exec python3 -m pytest -q -rs "$@"   # -rs: every skipped test says why
fi
exec python3 -m pytest -q -rs -n "$WORKERS" --dist loadfile --no-loadscope-reorder "$@"
