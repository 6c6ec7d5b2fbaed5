#!/usr/bin/env bash
# Installs kops and its dependencies into the current Python (idempotent, a few minutes on a
# fresh machine). A torch that is already installed (for example a CUDA build on a GPU
# machine) is kept; otherwise the CPU build of torch 2.13.0 is installed, never a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  pip_install "torch==2.13.0"
fi
if ! "$PYTHON" -c "import triton" >/dev/null 2>&1; then
  # torch 2.13's own pin; the Triton backend also runs on CPU tensors in its interpreter.
  pip_install "triton==3.7.1"
fi
# Build requirements (the extension is built against the installed torch, without isolation).
pip_install "scikit-build-core>=0.10" "pybind11>=2.12" numpy
command -v cmake >/dev/null 2>&1 || pip_install "cmake>=3.18"
command -v ninja >/dev/null 2>&1 || pip_install ninja
pip_install --no-build-isolation -e ".[test]"
"$PYTHON" -c "import kops; print('kops', kops.__version__, 'installed')"
