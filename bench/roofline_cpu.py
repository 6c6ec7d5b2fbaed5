"""Roofline floor of the CPU kernel products, with the machine's rates measured in the same run.

The GPU model (bench/roofline.py) takes the largest single limit, because tensor cores, the
special-function unit and memory work concurrently. On a CPU the distance products, the value
products and the vectorised exp polynomial all issue to the same FMA pipes, so their times
add; only memory traffic overlaps with them. For X (n, d), Z (m, d), V (m, c):

    forward   floor = max(2 n m (d + c) / gemm(d) + n m / exp,  bytes / bandwidth)
    gradient  floor = max(2 n m (3 d + c) / gemm(d) + n m / exp, bytes / bandwidth)

The gradient needs three n x m x d products (the distances, q @ Z and q^T @ X), so at large d
its floor is three times the forward's: "within 2x of the forward" cannot hold there.

Rates, all measured with the current torch thread count, each the best of several timings
(on a shared machine other processes only ever slow a timing down):

- ``gemm(d)``: torch.mm (the BLAS torch links) at the shape of the kernel's work per thread
  (rows x 512 columns x d, rows = 256 per thread), float32 and float64; at small d such a
  product is bound by memory, not by the FMA pipes, so the floor uses the larger of gemm(d)
  and gemm(256) (what the pipes allow, not what one algorithm gets);
- ``fma``: the FMA pipes' peak for the widest ISA of the native kernels (twelve independent
  FMA chains per thread, ``torch.ops.kops._cpu_fma_rate``): the BLAS may use narrower vectors
  than the CPU has (MKL on AMD runs its AVX2 code), so the floor's matrix rate is the larger
  of gemm and fma;
- ``exp``: the faster of torch.exp and the native kernels' vector exp
  (``torch.ops.kops._cpu_exp_neg``) on an L2-resident buffer (256 KiB per thread, no memory
  traffic), and sqrt followed by torch.exp for the Laplacian / Matern kernels;
- ``bandwidth``: read + write bytes/s of a 256 MiB copy.

    python bench/roofline_cpu.py            # print the rates (about 5 s)
"""
from __future__ import annotations

import json
import os
import time

import torch

try:
    import kops  # noqa: F401 - registers the native ops whose rates are measured
except ImportError:  # the roofline still measures torch's rates
    pass

__all__ = ["measure_rates", "refresh_peak", "floor_time", "gemm_rate"]

_SQRT_KERNELS = ("laplacian", "matern32", "matern52")


def _best_time(fn, repeats: int = 7) -> float:
    """The fastest of ``repeats`` calls: the machine's capability, which load from other
    processes on a shared machine only ever hides (it never makes a call faster)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _gemm(rows: int, cols: int, d: int, dtype) -> float:
    a = torch.randn(rows, d, dtype=dtype)
    b = torch.randn(cols, d, dtype=dtype)
    out = torch.empty(rows, cols, dtype=dtype)
    reps = max(1, int(2e8 / (rows * cols * max(d, 8))))  # about 0.2 GFLOP per timing

    def run():
        for _ in range(reps):
            torch.mm(a, b.T, out=out)

    return 2.0 * rows * cols * d * reps / _best_time(run, repeats=5)


def gemm_rate(rates: dict, d: int, dtype=torch.float32) -> float:
    """FLOP/s of the tile-shaped product at ``d`` (measured on demand, cached in ``rates``)."""
    tag = {torch.float64: "fp64", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    key = f"gemm_{tag}_d{d}"
    if key not in rates:
        rows = 256 * torch.get_num_threads()
        rates[key] = _gemm(rows, 512, d, dtype)
    return rates[key]


def _special_rate(dtype, with_sqrt: bool) -> float:
    size = 65536 * torch.get_num_threads() // (2 if dtype == torch.float64 else 1)
    x = torch.rand(size, dtype=dtype)
    y = torch.empty_like(x)
    reps = 200

    def run():
        for _ in range(reps):
            if with_sqrt:
                torch.sqrt(x, out=y)
                torch.exp(y, out=y)
            else:
                torch.exp(x, out=y)

    return size * reps / _best_time(run, repeats=5)


def _native_exp_rate(dtype) -> float | None:
    if not hasattr(torch.ops.kops, "_cpu_exp_neg"):
        return None
    size = 65536 * torch.get_num_threads() // (2 if dtype == torch.float64 else 1)
    x = torch.rand(size, dtype=dtype)
    reps = 200

    def run():
        for _ in range(reps):
            torch.ops.kops._cpu_exp_neg(x)

    return size * reps / _best_time(run, repeats=5)


def _bandwidth(nbytes: int = 2**28) -> float:
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    return 2.0 * nbytes / _best_time(lambda: dst.copy_(src), repeats=5)


def measure_rates(ds=()) -> dict:
    """The machine's rates (see the module docstring); ``ds``: gemm rates to measure now."""
    rates = dict(threads=torch.get_num_threads(), load_avg=list(os.getloadavg()),
                 exp_fp32=_special_rate(torch.float32, False),
                 sqrt_exp_fp32=_special_rate(torch.float32, True),
                 exp_fp64=_special_rate(torch.float64, False),
                 sqrt_exp_fp64=_special_rate(torch.float64, True),
                 copy_bytes=_bandwidth())
    for dtype, tag in ((torch.float32, "fp32"), (torch.float64, "fp64")):
        native = _native_exp_rate(dtype)
        rates[f"exp_native_{tag}"] = native
        rates[f"exp_{tag}"] = max(rates[f"exp_{tag}"], native or 0.0)
    if hasattr(torch.ops.kops, "_cpu_fma_rate"):
        rates["fma_isa"] = str(torch.ops.kops._cpu_isa())
        rates["fma_fp32"] = max(torch.ops.kops._cpu_fma_rate(False, 5_000_000) for _ in range(9))
        rates["fma_fp64"] = max(torch.ops.kops._cpu_fma_rate(True, 5_000_000) for _ in range(9))
    for d in ds:
        gemm_rate(rates, d, torch.float32)
    return rates


def refresh_peak(rates: dict) -> None:
    """Measure the FMA peak again and keep the best seen (see measure_rates)."""
    if "fma_fp32" in rates:
        rates["fma_fp32"] = max([rates["fma_fp32"]] + [torch.ops.kops._cpu_fma_rate(False, 5_000_000) for _ in range(5)])
        rates["fma_fp64"] = max([rates["fma_fp64"]] + [torch.ops.kops._cpu_fma_rate(True, 5_000_000) for _ in range(5)])


def floor_time(rates: dict, *, n: int, m: int, d: int, c: int, op: str = "kmv",
               kernel: str = "gaussian", dtype=torch.float32, precision: str = "ieee") -> dict:
    """The floor of one product: ``floor_s``, its parts and which one bounds it.

    ``op`` is "kmv" or "kmv_grad_xz". The bf16 mode's forward distance products are charged
    at the larger of the fp32 rate and torch's bf16 product rate (oneDNN on AVX512-BF16 /
    AMX where present); everything else, and the tf32 mode, at the fp32 rate.
    """
    pairs = float(n) * float(m)
    tag = "fp64" if dtype == torch.float64 else "fp32"
    size = 8 if dtype == torch.float64 else 4
    flops = max(gemm_rate(rates, d, dtype), gemm_rate(rates, 256, dtype), rates.get(f"fma_{tag}", 0.0))
    if precision == "bf16" and op == "kmv" and dtype != torch.float64:
        flops = max(flops, gemm_rate(rates, max(d, 256), torch.bfloat16))
    special = rates[("sqrt_exp_" if kernel in _SQRT_KERNELS else "exp_") + tag]
    matrix_products = 3 if op == "kmv_grad_xz" else 1
    compute = 2.0 * pairs * (matrix_products * d + c) / flops + pairs / special
    nbytes = size * (n * d + m * d + m * c + 2 * n * c)
    if op == "kmv_grad_xz":
        nbytes += size * 2 * (n * d + m * d)
    memory = nbytes / rates["copy_bytes"]
    return dict(floor_s=max(compute, memory), floor_bound="compute" if compute >= memory else "memory",
                floor_compute_s=compute, floor_memory_s=memory, gemm_flops=flops)


if __name__ == "__main__":
    print(json.dumps(measure_rates(ds=(3, 64, 784, 2048)), indent=1))
