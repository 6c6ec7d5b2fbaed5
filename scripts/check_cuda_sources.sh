#!/usr/bin/env bash
# Compile-checks the CUDA sources without a GPU (and without a CUDA build of torch).
#
#   bash scripts/check_cuda_sources.sh [--no-binding]
#
# 1. Every torch-free CUDA source (csrc/cuda/*.cu; each instantiates all of its template
#    variants, see csrc/cuda/kmv_dispatch.cuh) is compiled with nvcc to a cubin for each
#    architecture in KOPS_CHECK_ARCHS (default "80 90"), with warnings as errors and
#    `-Xptxas -v`. The check FAILS if ptxas reports a register spill or a stack frame (both mean
#    local memory in the hot loops) for any kernel, or if a .cu/.cuh/.h file includes a torch
#    header. A register table is printed.
# 2. Unless --no-binding: the torch binding (csrc/cuda/*.cpp) is syntax-checked with the host
#    compiler against the installed torch's headers; a CPU-only torch lacks one generated CUDA
#    header (c10/cuda/impl/cuda_cmake_macros.h), which is then stubbed for the check.
#
# Cost: about 80 s of CPU time (nvcc 13.0: 228 kernels x 2 architectures, plus the binding),
# run KOPS_CHECK_JOBS at a time (default: the CPU count): about 40 s on two idle cores.
#
# Exit status: 0 passed, 1 failed, 77 nvcc not found (nothing checked).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
NVCC=${NVCC:-nvcc}
ARCHS=${KOPS_CHECK_ARCHS:-"80 90"}
BINDING=1
[ "${1:-}" = "--no-binding" ] && BINDING=0

if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "check_cuda_sources: nvcc not found; nothing checked" >&2
  exit 77
fi
start=$(date +%s)
work=$(mktemp -d -t kops-cuda-check-XXXXXX)
trap 'rm -rf "$work"' EXIT
status=0

# Torch-free means torch-free: the kernels must build where only the CUDA toolkit exists.
if grep -nE '#include *[<"](torch|ATen|c10)/' csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.h 2>/dev/null; then
  echo "check_cuda_sources: FAIL: a torch-free CUDA source includes a torch header (above)" >&2
  status=1
fi

# Compilations run in parallel, at most KOPS_CHECK_JOBS at a time (default: the CPU count):
# nvcc once per source and architecture, and the binding's syntax check. Each job leaves its
# output in a .log and its exit status in a .rc file.
JOBS=${KOPS_CHECK_JOBS:-$(nproc 2>/dev/null || echo 2)}
throttle() { while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 0.2; done; }
logs=()
if [ "$BINDING" = 1 ]; then  # first: the longest single job
  blog="$work/binding.log"
  logs+=("$blog")
  (
    if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
      echo "SKIP: torch is not importable"; echo 0 >"$blog.rc"; exit 0
    fi
    tinc=$("$PYTHON" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
    if [ ! -f "$tinc/c10/cuda/impl/cuda_cmake_macros.h" ]; then
      mkdir -p "$work/stub/c10/cuda/impl"
      printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$work/stub/c10/cuda/impl/cuda_cmake_macros.h"
    fi
    cudainc=$(dirname "$(readlink -f "$(command -v "$NVCC")")")/../include
    [ -f "$cudainc/cuda_runtime.h" ] || cudainc=${CUDA_HOME:-/usr/local/cuda}/include
    pyinc=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    rc=0
    for src in csrc/cuda/*.cpp; do
      [ -f "$src" ] || continue
      # -isystem: warnings inside torch's and CUDA's headers are theirs, not errors here.
      "${CXX:-c++}" -std=c++20 -fsyntax-only -Wall -Wextra -Wno-unused-parameter -Werror \
        -isystem "$work/stub" -isystem "$tinc" -isystem "$tinc/torch/csrc/api/include" \
        -isystem "$cudainc" -isystem "$pyinc" -Icsrc/cuda "$src" || rc=1
    done
    echo $rc >"$blog.rc"
  ) >"$blog" 2>&1 &
fi
for src in csrc/cuda/*.cu; do
  for arch in $ARCHS; do
    log="$work/$(basename "$src" .cu).sm_$arch.log"
    logs+=("$log")
    throttle
    (
      "$NVCC" -std=c++20 -O3 -arch="sm_$arch" -cubin -Werror all-warnings -Xptxas -v \
        -o "${log%.log}.cubin" "$src" >"$log" 2>&1
      echo $? >"$log.rc"
    ) &
  done
done
wait
for log in "${logs[@]}"; do
  if [ "$(cat "$log.rc" 2>/dev/null)" != 0 ]; then
    echo "check_cuda_sources: FAIL: $(basename "$log" .log) did not compile:" >&2
    cat "$log" >&2
    status=1
  fi
done
[ "$BINDING" = 1 ] && grep -q "^SKIP" "$work/binding.log" && cat "$work/binding.log"

# Registers, spills and stack frames per kernel, from the ptxas reports.
"$PYTHON" - "$work"/*.sm_*.log <<'EOF' || status=1
import re, shutil, subprocess, sys

failed = False
rows = []
for path in sys.argv[1:]:
    arch = re.search(r"\.(sm_\d+)\.log$", path).group(1)
    text = open(path).read()
    # ptxas prints "Compiling entry function '<name>' for 'sm_XX'", then the function's
    # properties ("N bytes stack frame, S bytes spill stores, L bytes spill loads") and usage.
    for block in re.split(r"ptxas info\s*: Compiling entry function ", text)[1:]:
        name = block.split("'")[1]
        props = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", block)
        regs = re.search(r"Used (\d+) registers", block)
        smem = re.search(r"(\d+) bytes smem", block)
        stack, stores, loads = (int(g) for g in props.groups()) if props else (0, 0, 0)
        rows.append([arch, name, int(regs.group(1)) if regs else -1, int(smem.group(1)) if smem else 0,
                     stack, stores, loads])
if shutil.which("c++filt"):
    names = subprocess.run(["c++filt"], input="\n".join(r[1] for r in rows), capture_output=True,
                           text=True).stdout.splitlines()
    if len(names) == len(rows):
        for r, n in zip(rows, names):
            r[1] = n
for r in rows:
    r[1] = re.sub(r">\(.*$", ">", r[1])
    r[1] = re.sub(r"kops::cuda::detail::|kops::cuda::|void ", "", r[1]).replace(", ", ",")
    r[1] = re.sub(r"\(KernelKind\)(\d)", lambda m: ["gaussian", "laplacian", "matern32", "matern52"][int(m.group(1))], r[1])
rows.sort(key=lambda r: (r[1], r[0]))
print(f"{'kernel<dtype,profile,D,CC>':58s} {'arch':6s} {'regs':>4s} {'smem':>6s} {'stack':>5s} {'spill st/ld':>11s}")
for arch, name, regs, smem, stack, st, ld in rows:
    bad = stack or st or ld
    failed |= bool(bad)
    print(f"{name:58s} {arch:6s} {regs:4d} {smem:6d} {stack:5d} {st:5d}/{ld:<5d}{'  <-- SPILL/LOCAL MEMORY' if bad else ''}")
print(f"{len(rows)} kernels checked")
if not rows:
    print("check_cuda_sources: no ptxas report found", file=sys.stderr)
    failed = True
if failed:
    print("check_cuda_sources: FAIL: register spills or stack frames (see the table)", file=sys.stderr)
sys.exit(1 if failed else 0)
EOF

echo "check_cuda_sources: $([ $status = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start )) s"
exit $status
