"""``kops bench``: the kernel-product microbenchmark on this machine.

Times ``K(x, z) @ v`` (n = m, float32) on every backend that runs the case here, for each
d, and measures the machine's GEMM rate at the same shapes for the floor line: a kernel
product needs ``2 (d + c)`` flops per pair of points (distance and value products; the
kernel's exp is ignored), so at the measured rate R no backend exceeds ``R / (2 (d + c))``
pairs per second. Times are medians of ``repeats`` calls after a warm-up call.
"""
from __future__ import annotations

import os
import platform
import statistics
import time

import torch

__all__ = ["run_bench"]


def _synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, device, repeats: int) -> float:
    fn()  # warm-up: compilation, caches, calibration
    _synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _machine(device) -> dict:
    from .. import __version__

    return {"kops": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def run_bench(*, n: int, ds, c: int, kernel: str, repeats: int, device=None, log=None) -> dict:
    """Time the kernel product on each available backend for each d.

    Returns
    -------
    dict
        ``{"machine": {...}, "case": {...}, "rows": [{"backend", "d", "seconds",
        "pairs_per_second", "floor_pairs_per_second", "gemm_flops"}, ...]}``.
    """
    from ..backends.base import Case
    from ..dispatch import backends
    from ..ops import kmv
    from ..testing import random_problem

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = []
    for d in ds:
        x, z, v, bandwidth = random_problem(n, n, d, c, device=device, generator=torch.Generator().manual_seed(d))
        xt = x.T.contiguous()
        gemm = _median_seconds(lambda: x @ xt, device, repeats)
        rate = 2.0 * n * n * d / gemm
        case = Case("kmv", x.device, x.dtype, n, n, d, c, kernel, "ieee")
        for name, backend in backends().items():
            if backend.unavailable_reason() is not None or backend.unsupported_reason(case) is not None:
                continue
            if not backend.preferred(case) and name != "torch":
                continue  # a test vehicle here (the Triton interpreter on CPU), not a backend to time
            seconds = _median_seconds(lambda: kmv(x, z, v, kernel, bandwidth, backend=name), device, repeats)
            row = {"backend": name, "d": d, "n": n, "m": n, "c": c, "seconds": seconds,
                   "pairs_per_second": n * n / seconds, "floor_pairs_per_second": rate / (2.0 * (d + c)),
                   "gemm_flops": rate}
            rows.append(row)
            if log is not None:
                print(f"  d = {d:5d}  {name:7s} {seconds:9.4f} s  {row['pairs_per_second'] / 1e9:8.3f} G pairs/s  "
                      f"(floor {row['floor_pairs_per_second'] / 1e9:.3f})", file=log, flush=True)
    return {"machine": _machine(device), "case": {"n": n, "m": n, "c": c, "kernel": kernel, "dtype": "float32",
                                                   "repeats": repeats}, "rows": rows}
