"""Roofline floor of a fused kernel product, with the machine's rates measured in the same run.

For ``out = K(X, Z) V`` with X (n, d), Z (m, d), V (m, c) the floor time is the largest of

- distance FLOPs ``2 n m d`` / matrix rate of the precision mode,
- value FLOPs ``2 n m c`` / the same matrix rate,
- special functions (one exp per pair; a square root too for the Laplacian and Matern
  kernels) / the special-function rate,
- bytes moved once (X, Z, V read, out read and written) / copy bandwidth,

where the direct-difference path of small d is still charged as tensor-core work (the floor
is what the hardware allows, not what one algorithm needs). The rates are measured, not
taken from data sheets: a large matrix product per mode (bf16, tf32, exact fp32, fp64), a
large device-to-device copy, and a Triton micro-kernel of independent exp (and sqrt + exp)
chains.

Used by bench/bench_kmv.py (``measure_rates`` once, ``floor_time`` per row) and by hand::

    python bench/roofline.py            # print the measured rates (CUDA only)
"""
from __future__ import annotations

import json
import sys

import torch

__all__ = ["measure_rates", "floor_time", "fraction_of_floor"]

#: matrix-rate entry of measure_rates() per (dtype, precision)
_MATRIX_RATE = {"ieee": "fp32_flops", "tf32": "tf32_flops", "bf16": "bf16_flops"}
_SQRT_KERNELS = ("laplacian", "matern32", "matern52")


def _time(fn, device, repeats=10) -> float:
    """Median seconds of fn() by CUDA events, after one warm-up call."""
    fn()
    torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def _matmul_rate(dtype, size, device, tf32=False) -> float:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        seconds = _time(lambda: torch.mm(a, b), device, repeats=5)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return 2.0 * size**3 / seconds


def _copy_bandwidth(device, nbytes=2**30) -> float:
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = _time(lambda: dst.copy_(src), device)
    return 2.0 * nbytes / seconds  # read + write


_CHAINS = None


def chains_kernel():
    """The Triton micro-kernel of :func:`_special_rate` (built on first use)."""
    global _CHAINS
    if _CHAINS is not None:
        return _CHAINS
    import triton
    import triton.language as tl

    @triton.jit
    def chains(X, Y, N, REPS: tl.constexpr, SQRT: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        x = tl.load(X + offs, mask=mask, other=0.0)
        # Four independent chains per element keep the special-function unit, not latency,
        # the bound; each step maps its value back into (0, 1].
        a, b, c, e = x, x + 0.25, x + 0.5, x + 0.75
        for _ in range(REPS):
            if SQRT:
                a = tl.exp(-tl.sqrt(a))
                b = tl.exp(-tl.sqrt(b))
                c = tl.exp(-tl.sqrt(c))
                e = tl.exp(-tl.sqrt(e))
            else:
                a = tl.exp(-a)
                b = tl.exp(-b)
                c = tl.exp(-c)
                e = tl.exp(-e)
        tl.store(Y + offs, a + b + c + e, mask=mask)

    _CHAINS = chains
    return chains


def _special_rate(device, dtype, with_sqrt: bool) -> float:
    """Special-function evaluations (exp, or sqrt + exp pairs) per second, by a Triton kernel."""
    import triton

    chains = chains_kernel()
    n, reps, block = 2**24, 64, 1024
    x = torch.rand(n, device=device, dtype=dtype)
    y = torch.empty_like(x)
    grid = (triton.cdiv(n, block),)
    seconds = _time(lambda: chains[grid](x, y, n, REPS=reps, SQRT=with_sqrt, BLOCK=block), device, repeats=5)
    return 4.0 * reps * n / seconds


def measure_rates(device="cuda") -> dict:
    """Measure the rates the floor model needs on ``device`` (about 5 s on an H100).

    Returns
    -------
    dict
        ``bf16_flops``, ``tf32_flops``, ``fp32_flops`` (exact fp32 product, no tensor cores),
        ``fp64_flops`` (FLOP/s of large square products), ``copy_bytes`` (bytes/s read plus
        written by a 1 GiB copy), ``exp_fp32``, ``sqrt_exp_fp32``, ``exp_fp64``,
        ``sqrt_exp_fp64`` (evaluations per second), and the device name.
    """
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError("the roofline rates are measured on a CUDA device")
    rates = dict(
        device_name=torch.cuda.get_device_name(device),
        bf16_flops=_matmul_rate(torch.bfloat16, 8192, device),
        tf32_flops=_matmul_rate(torch.float32, 8192, device, tf32=True),
        fp32_flops=_matmul_rate(torch.float32, 4096, device, tf32=False),
        fp64_flops=_matmul_rate(torch.float64, 4096, device),
        copy_bytes=_copy_bandwidth(device),
    )
    for dtype, tag in ((torch.float32, "fp32"), (torch.float64, "fp64")):
        rates[f"exp_{tag}"] = _special_rate(device, dtype, False)
        rates[f"sqrt_exp_{tag}"] = _special_rate(device, dtype, True)
    return rates


def floor_time(rates: dict, *, n: int, m: int, d: int, c: int, kernel: str = "gaussian",
               precision: str = "ieee", dtype=torch.float32) -> dict:
    """The roofline floor of one kernel product and which limit sets it.

    Parameters
    ----------
    rates : dict
        From :func:`measure_rates`.
    n, m, d, c : int
        Rows of x, rows of z, features, columns of v.
    kernel, precision : str
        A kops kernel name and precision mode.
    dtype : torch.dtype
        Input dtype (float64 uses the fp64 rates in every mode).

    Returns
    -------
    dict
        ``floor_s`` = the largest of ``floor_distance_s``, ``floor_value_s``,
        ``floor_special_s`` and ``floor_bytes_s``; ``floor_bound`` names it;
        ``floor_mma_sum_s`` is distance + value time (both on the same matrix units).
    """
    pairs = float(n) * float(m)
    if dtype == torch.float64:
        flops, special, size = rates["fp64_flops"], "fp64", 8
    else:
        flops, special = rates[_MATRIX_RATE[precision]], "fp32"
        size = 2 if precision == "bf16" or dtype in (torch.float16, torch.bfloat16) else 4
    sfu = rates[("sqrt_exp_" if kernel in _SQRT_KERNELS else "exp_") + special]
    # The definition: the largest single limit. Distance and value products share the
    # tensor cores, so (distance + value) / rate would be a tighter floor; it is reported too.
    parts = dict(
        floor_distance_s=2.0 * pairs * d / flops,
        floor_value_s=2.0 * pairs * c / flops,
        floor_special_s=pairs / sfu,
        floor_bytes_s=(size * (n * d + m * d + m * c) + 2 * 4 * n * c) / rates["copy_bytes"],
    )
    bound = max(parts, key=parts.get)
    return dict(parts, floor_s=parts[bound], floor_bound=bound[len("floor_"):-len("_s")],
                floor_mma_sum_s=parts["floor_distance_s"] + parts["floor_value_s"])


def fraction_of_floor(row: dict, rates: dict) -> float:
    """Achieved fraction of the floor (floor time / measured time) of a bench_kmv.py row."""
    dtype = getattr(torch, row.get("dtype", "float32"))
    floor = floor_time(rates, n=row["n"], m=row.get("m", row["n"]), d=row["d"], c=row["c"],
                       kernel=row.get("kernel", "gaussian"), precision=row.get("precision", "ieee"), dtype=dtype)
    return floor["floor_s"] / row["median_s"]


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("no CUDA device: the rates can only be measured on a GPU")
        sys.exit(0)
    print(json.dumps(measure_rates("cuda"), indent=1))
