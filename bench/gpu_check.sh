#!/usr/bin/env bash
# The prepared GPU check: build, GPU tests, memcheck, benchmarks, JSON out. Every step has a
# timeout; together they bound the run at under 10 minutes (240 + 110 + 45 + 90 + 40 + 35 + 30 s
# = 590 s; a typical run takes less).
#
#   bash bench/gpu_check.sh OUTDIR
#
# Writes into OUTDIR: build.log, info.json, gpu_tests.log, memcheck.log (when the CUDA
# backend and compute-sanitizer are present), kmv_cuda_*.json (backends side by side with the
# roofline fraction), solvers_*.json (when bench/bench_solvers.py exists), distributed_*.json
# (the sharded EigenPro 4 on NCCL, one process) and summary.txt.
# Copy the JSON files to bench/results/ and commit them.
set -uo pipefail
OUTDIR=${1:?usage: bash bench/gpu_check.sh OUTDIR}
mkdir -p "$OUTDIR"
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$(mktemp -d -t kops-triton-XXXXXX)}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$(mktemp -d -t kops-inductor-XXXXXX)}
start=$(date +%s)
step() { echo "== [$(( $(date +%s) - start )) s] $*" | tee -a "$OUTDIR/summary.txt"; }

step "build (CUDA torch: $("$PYTHON" -c 'import torch; print(torch.__version__, torch.version.cuda)'))"
# The GPU image has scikit-build-core, pybind11, cmake and ninja; nothing is downloaded.
# The CUDA build took 147 s on one core (csrc/cuda/*.cu instantiate every kernel template); give
# it 240 s, with ninja using every core.
if ! CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) timeout 240 "$PYTHON" -m pip install --no-build-isolation --no-deps --no-index -e . >"$OUTDIR/build.log" 2>&1; then
  step "BUILD FAILED (tail of build.log follows)"; tail -40 "$OUTDIR/build.log" | tee -a "$OUTDIR/summary.txt"
fi
"$PYTHON" -m kops info | tee -a "$OUTDIR/summary.txt"
"$PYTHON" -m kops info --json >"$OUTDIR/info.json"

step "GPU tests (pytest -m gpu)"
KOPS_TRITON_AUTOTUNE=0 timeout 110 "$PYTHON" -m pytest tests -m gpu -q --maxfail=10 -p no:cacheprovider >"$OUTDIR/gpu_tests.log" 2>&1
echo "pytest exit $?" | tee -a "$OUTDIR/summary.txt"; tail -5 "$OUTDIR/gpu_tests.log" | tee -a "$OUTDIR/summary.txt"

if [ -f bench/cuda_memcheck.py ] && command -v compute-sanitizer >/dev/null 2>&1; then
  step "compute-sanitizer memcheck"
  timeout 45 compute-sanitizer --tool memcheck --error-exitcode 3 "$PYTHON" bench/cuda_memcheck.py >"$OUTDIR/memcheck.log" 2>&1
  echo "memcheck exit $?" | tee -a "$OUTDIR/summary.txt"; tail -3 "$OUTDIR/memcheck.log" | tee -a "$OUTDIR/summary.txt"
fi

step "kernel-product benchmark, Gaussian"
timeout 90 "$PYTHON" bench/bench_kmv.py --device cuda --preset gpu --kernels gaussian \
  --time-budget 80 --repeats 5 --json "$OUTDIR/kmv_cuda.json" >"$OUTDIR/bench_kmv.log" 2>&1
echo "bench exit $?" | tee -a "$OUTDIR/summary.txt"; tail -60 "$OUTDIR/bench_kmv.log" | tee -a "$OUTDIR/summary.txt"
step "kernel-product benchmark, Laplacian"
timeout 40 "$PYTHON" bench/bench_kmv.py --device cuda --preset gpu-quick --kernels laplacian \
  --time-budget 30 --repeats 5 --json "$OUTDIR/kmv_cuda_laplacian.json" >"$OUTDIR/bench_kmv_laplacian.log" 2>&1
echo "bench exit $?" | tee -a "$OUTDIR/summary.txt"; tail -14 "$OUTDIR/bench_kmv_laplacian.log" | tee -a "$OUTDIR/summary.txt"

if [ -f bench/bench_solvers.py ]; then
  step "solver benchmark"
  timeout 35 "$PYTHON" bench/bench_solvers.py --device cuda --quick --json "$OUTDIR" >"$OUTDIR/bench_solvers.log" 2>&1
  echo "solver bench exit $?" | tee -a "$OUTDIR/summary.txt"; tail -15 "$OUTDIR/bench_solvers.log" | tee -a "$OUTDIR/summary.txt"
fi
if [ -f bench/bench_distributed.py ]; then
  step "sharded EigenPro 4 on NCCL (world size 1: the NCCL code path on one GPU)"
  timeout 30 "$PYTHON" bench/bench_distributed.py --backend nccl --device cuda --world-sizes 1 --epochs 2 \
    --json "$OUTDIR" >"$OUTDIR/bench_distributed.log" 2>&1
  echo "distributed bench exit $?" | tee -a "$OUTDIR/summary.txt"; tail -6 "$OUTDIR/bench_distributed.log" | tee -a "$OUTDIR/summary.txt"
fi
step "done"
