"""A short kernel-product demo: K(x, z) @ v on every backend that can run here."""
from __future__ import annotations

import time

import torch

from .backends.base import Case
from .dispatch import backends
from .ops import kmv
from .testing import kmv_error, random_problem


def run_demo(n: int = 20000, d: int = 64, c: int = 10) -> int:
    """Time K(x, z) @ v (Gaussian, float32, n = m) on each available backend and check it.

    The error is measured on 256 rows against the float64 reference.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, z, v, bandwidth = random_problem(n, n, d, c, device=device, generator=torch.Generator().manual_seed(0))
    print(f"kops demo: Gaussian kernel product, n = m = {n}, d = {d}, c = {c}, float32, {device}")
    case = Case("kmv", x.device, x.dtype, n, n, d, c, "gaussian", "ieee")
    for name, backend in backends().items():
        if backend.unavailable_reason() is not None or backend.unsupported_reason(case) is not None:
            continue
        if not backend.preferred(case) and name != "torch":
            continue  # e.g. the Triton interpreter on CPU: a test vehicle, not a backend to time
        kmv(x[:8], z, v, "gaussian", bandwidth, backend=name)  # warm-up (compilation, caches)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = kmv(x, z, v, "gaussian", bandwidth, backend=name)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        err = kmv_error(out[:256].cpu(), x[:256].cpu(), z.cpu(), v.cpu(), "gaussian", bandwidth)
        print(f"  {name:7s} {seconds:8.3f} s   {n * n / seconds / 1e9:7.2f} G pairs/s   error {err:.1e}")
    return 0
