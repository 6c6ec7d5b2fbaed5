#!/usr/bin/env bash
# Builds kops with its CUDA backend against a CUDA build of torch, without a GPU, and tests it.
#
# In a throwaway venv: install a CUDA build of torch (KOPS_CUDA_TORCH, default torch==2.14.1),
# build kops from this checkout with KOPS_WITH_CUDA=ON, import it, check kops.info() (the
# extension has CUDA, the cuda backend says why it cannot run: no device) and the linked
# libraries (torch's CUDA libraries, no nvrtc), then run the test suite against the build.
# Skips with a one-line reason (exit 0) where nvcc is missing or no CUDA torch can be
# installed. KOPS_CUDA_VENV reuses a venv that already holds the CUDA torch; KOPS_CUDA_WORK
# names the work folder (default: a new temporary folder, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TORCH_SPEC=${KOPS_CUDA_TORCH:-torch==2.14.1}
skip() { echo "check_cuda_build.sh: skipped: $*"; exit 0; }
now() { date +%s; }

command -v nvcc >/dev/null 2>&1 || skip "no nvcc on PATH"
WORK=${KOPS_CUDA_WORK:-$(mktemp -d -t kops-cuda-build-XXXXXX)}
[ -n "${KOPS_CUDA_WORK:-}" ] || trap 'rm -rf "$WORK"' EXIT
VENV=${KOPS_CUDA_VENV:-$WORK/venv}
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

t0=$(now)
[ -x "$PY" ] || python3 -m venv "$VENV"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" >/dev/null 2>&1; then
  pip_install "$TORCH_SPEC" >/dev/null 2>&1 || skip "a CUDA build of torch ($TORCH_SPEC) cannot be installed here"
  "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" \
    || skip "$TORCH_SPEC as installed here is not a CUDA build"
fi
# The build requirements and the project's own test extra (read from pyproject.toml, so a
# test dependency added there is installed here too).
mapfile -t TEST_DEPS < <("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]))')
pip_install "scikit-build-core>=0.10" "pybind11>=2.12" numpy "${TEST_DEPS[@]}"
command -v cmake >/dev/null 2>&1 || pip_install "cmake>=3.18"
command -v ninja >/dev/null 2>&1 || pip_install ninja
t1=$(now)
echo "check_cuda_build.sh: venv ready ($("$PY" -c 'import torch; print(torch.__version__)')), $((t1 - t0)) s"

# Build from a copy of the checkout (tracked and untracked, not ignored) so that nothing of
# the CPU build is reused.
mkdir -p "$WORK/src"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$WORK/src"
CMAKE_ARGS="-DKOPS_WITH_CUDA=ON ${CMAKE_ARGS:-}" "$PY" -m pip install --disable-pip-version-check -q \
  --no-build-isolation "$WORK/src" > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
t2=$(now)
echo "check_cuda_build.sh: built with KOPS_WITH_CUDA=ON in $((t2 - t1)) s"

cd "$WORK"  # so that `import kops` finds the installed build, not a source folder
"$PY" - <<'PYEOF'
import subprocess, sys
import torch
import kops
from kops import _native

info = kops.info()
ext = info["extension"]
assert ext.get("cuda") is True, f"extension built without CUDA: {ext}"
assert "cuda" in ext["compiled_backends"].split(","), ext
cuda = info["backends"]["cuda"]
if not torch.cuda.is_available():
    assert not cuda["available"] and "no CUDA device" in cuda["reason"], cuda
# the libraries kops._C itself needs (ldd would also list torch's own dependencies)
dynamic = subprocess.run(["readelf", "-d", _native._C.__file__], capture_output=True, text=True, check=True).stdout
libs = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
assert not any("nvrtc" in lib for lib in libs), f"kops._C links libnvrtc: {libs}"
for want in ("libc10_cuda", "libtorch_cuda", "libcudart"):
    assert any(lib.startswith(want) for lib in libs), f"kops._C does not link {want}: {libs}"
print("check_cuda_build.sh: import, kops.info() and linked libraries OK; cuda backend:",
      cuda["reason"] or "available")
PYEOF
export TRITON_CACHE_DIR="$WORK/triton-cache" TORCHINDUCTOR_CACHE_DIR="$WORK/inductor-cache"
"$PY" -m pytest -q -p no:cacheprovider "$WORK/src/tests" ${KOPS_CUDA_PYTEST_ARGS:-}
t3=$(now)
echo "check_cuda_build.sh: passed (venv $((t1 - t0)) s, build $((t2 - t1)) s, tests $((t3 - t2)) s, total $((t3 - t0)) s)"
