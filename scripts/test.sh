#!/usr/bin/env bash
# Runs the whole test suite. "No tests ran" (pytest exit code 5) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$(mktemp -d -t kops-triton-XXXXXX)}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$(mktemp -d -t kops-inductor-XXXXXX)}
"$PYTHON" -m pytest tests -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; failing" >&2
  exit 1
fi
exit "$status"
