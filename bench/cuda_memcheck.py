"""A few small calls of every CUDA-backend kernel variant family, for compute-sanitizer.

Run on a GPU machine (bench/gpu_check.sh does)::

    compute-sanitizer --tool memcheck --error-exitcode 3 python bench/cuda_memcheck.py
    compute-sanitizer --tool racecheck --error-exitcode 3 python bench/cuda_memcheck.py --quick

The calls cover partial row blocks and z tiles, d below each compiled bucket, c = 1 and c
across 16-column chunks, split z ranges (m of several thousand with few rows), strided
inputs, float32 and float64, the four kernels, ``kmv_accumulate`` and the gradient kernel.
Sizes are small because the sanitizer slows kernels down by one to two orders of magnitude.
Exit status: 0 when every call ran and matched the float64 reference, 1 otherwise (including
when the CUDA backend is unavailable, so that a memcheck that checked nothing is not "clean").
"""
from __future__ import annotations

import argparse
import sys

import torch

import kops
from kops.dispatch import backends
from kops.testing import kmv_error, random_problem, tolerance


def main(argv=None) -> int:
    """Run the calls; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one kernel, fewer sizes (for racecheck)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("cuda_memcheck: no CUDA device; nothing checked")
        return 1
    reason = backends()["cuda"].unavailable_reason()
    if reason is not None:
        print(f"cuda_memcheck: CUDA backend unavailable ({reason}); nothing checked")
        return 1

    g = torch.Generator().manual_seed(0)
    kernels = ("gaussian",) if args.quick else ("gaussian", "laplacian", "matern32", "matern52")
    shapes = [(1, 1, 1, 1), (131, 70, 5, 17), (200, 4099, 3, 1)]
    if not args.quick:
        shapes += [(129, 300, 16, 3), (70, 2100, 33, 2), (257, 129, 64, 16)]
    failures = 0
    calls = 0
    for dtype in (torch.float32, torch.float64):
        for kernel in kernels:
            for n, m, d, c in shapes:
                x, z, v, bw = random_problem(n, m, d, c, dtype=dtype, device="cuda", generator=g)
                xs = x.T.contiguous().T  # column-major: strided loads
                out = torch.zeros((n, c), dtype=dtype, device="cuda")
                kops.kmv_accumulate(out, xs, z, v, kernel, bw, backend="cuda")  # read-modify-write
                calls += 1
                err = kmv_error(out.cpu(), x.cpu(), z.cpu(), v.cpu(), kernel, bw)
                if not err <= tolerance(dtype):
                    failures += 1
                    print(f"FAIL kmv {dtype} {kernel} n={n} m={m} d={d} c={c}: error {err:.2e}")
                if d <= 32 and c <= 16:
                    gout = torch.randn(n, c, dtype=dtype, device="cuda")
                    gx, gz = torch.ops.kops.kmv_grad_xz(x, z, v, gout, kernel, bw, "ieee", "cuda")
                    calls += 1
                    if not (torch.isfinite(gx).all() and torch.isfinite(gz).all()):
                        failures += 1
                        print(f"FAIL grad {dtype} {kernel} n={n} m={m} d={d} c={c}: non-finite")
    torch.cuda.synchronize()
    print(f"cuda_memcheck: {calls} calls, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
