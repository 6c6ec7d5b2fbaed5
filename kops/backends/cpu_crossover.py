"""When "auto" prefers the native CPU kernels over the torch reference: a rule measured here.

Which backend is faster depends on the machine, not on kops: the native kernels run at the
FMA rate of the widest vector ISA they find (AVX-512, AVX2 or portable), the torch reference
at the rate of the BLAS torch links, which on some CPUs uses narrower vectors than the CPU has
(MKL on AMD) and on others is the faster of the two at large d. So the rule is measured once
per machine, ISA, kernel revision, thread count and torch version by a short calibration (both backends on a
768 x 768 problem at d = 16, 256 and 1024, forward and gradient, the fastest of 5 alternated
calls each; 9 s on our 2-core machine at load average 4), cached as JSON, and interpolated in
log d. float64 cases use the float32 measurement.

``KOPS_CPU_NATIVE`` overrides it: "always", "never", or "measure" (the default). The cache
lives in ``$KOPS_CACHE_DIR`` (default ``~/.cache/kops``); delete the file to measure again.
Small problems (under 2^16 pairs) and the tf32 / bf16 modes (emulated the same way by both
backends, fused only by the native one) always go native; kernel_matrix too (it writes K,
bound by memory either way).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

__all__ = ["native_preferred", "decide", "calibrate", "CALIBRATION_D"]

CALIBRATION_D = (16, 256, 1024)
# Part of the cache key: raised whenever the native kernels' speed changes (a new tiling, a
# new gradient path), so that a ratio measured with older kernels is not reused.
KERNEL_REVISION = 2
_N = 768
_SMALL_PAIRS = 1 << 16
_cached: dict | None = None


def _key() -> str:
    isa = str(torch.ops.kops._cpu_isa())
    return f"{isa}-r{KERNEL_REVISION}-t{torch.get_num_threads()}-torch{torch.__version__}"


def _cache_file() -> Path:
    root = Path(os.environ.get("KOPS_CACHE_DIR", Path.home() / ".cache" / "kops"))
    return root / f"cpu_crossover-{_key()}.json"


def _ratio(reference, native, repeats: int = 5) -> float:
    """torch time / native time: calls alternated, the fastest of each, so that load from
    other processes (which only ever adds time) biases neither side."""
    reference(), native()
    best_ref = best_nat = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        reference()
        t1 = time.perf_counter()
        native()
        t2 = time.perf_counter()
        best_ref, best_nat = min(best_ref, t1 - t0), min(best_nat, t2 - t1)
    return best_ref / best_nat


def calibrate() -> dict:
    """Measure the ratio torch time / native time per op at each d of CALIBRATION_D.

    Returns ``{"kmv": {d: ratio}, "kmv_grad_xz": {d: ratio}, "key": ...}`` (d as strings).
    """
    from ..kernels import resolve_kernel
    from .cpu_native import CpuNativeBackend
    from .torch_reference import TorchBackend

    reference, native = TorchBackend(), CpuNativeBackend()
    gen = torch.Generator().manual_seed(0)
    ratios: dict = {"kmv": {}, "kmv_grad_xz": {}, "key": _key()}
    for d in CALIBRATION_D:
        x = torch.randn(_N, d, generator=gen)
        z = torch.randn(_N, d, generator=gen)
        v = torch.randn(_N, 1, generator=gen)
        g = torch.randn(_N, 1, generator=gen)
        bw = math.sqrt(d)
        kernel = resolve_kernel("gaussian", bw)
        out = torch.zeros(_N, 1)
        ratios["kmv"][str(d)] = _ratio(
            lambda: reference.kmv(x, z, v, kernel, "ieee", out, 1.0),
            lambda: native.kmv(x, z, v, kernel, "ieee", out, 1.0))
        ratios["kmv_grad_xz"][str(d)] = _ratio(
            lambda: reference.kmv_grad_xz(x, z, v, g, kernel, "ieee"),
            lambda: native.kmv_grad_xz(x, z, v, g, kernel, "ieee"))
    return ratios


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch._guards.detect_fake_mode() is not None


def measured() -> dict | None:
    """The calibration of this machine: from the cache file, else measured now and cached
    (None when it cannot be measured now; asked again next time)."""
    global _cached
    if _cached is not None and _cached.get("key") == _key():
        return _cached
    path = _cache_file()
    try:
        data = json.loads(path.read_text())
        if data.get("key") == _key():
            _cached = data
            return data
    except (OSError, ValueError):
        pass
    if _tracing():  # fake tensors or a compiler trace: nothing can be timed now
        return None
    with torch.no_grad():
        data = calibrate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
    except OSError:
        pass  # a read-only home: measure again next process
    _cached = data
    return data


def interpolated_ratio(ratios: dict, d: int) -> float:
    """torch time / native time at ``d``: linear in log d between measured points, flat outside."""
    points = sorted((int(k), float(r)) for k, r in ratios.items())
    if d <= points[0][0]:
        return points[0][1]
    for (d0, r0), (d1, r1) in zip(points, points[1:]):
        if d <= d1:
            w = (math.log(d) - math.log(d0)) / (math.log(d1) - math.log(d0))
            return r0 + w * (r1 - r0)
    return points[-1][1]


def decide(case, ratios: dict | None) -> bool:
    """The rule, given the calibration ``ratios`` (None: not measurable, prefer native)."""
    if case.op == "kernel_matrix" or case.precision != "ieee" or case.n * case.m < _SMALL_PAIRS:
        return True
    if ratios is None or case.op not in ratios:
        return True
    return interpolated_ratio(ratios[case.op], case.d) >= 1.0


def native_preferred(case) -> bool:
    """Whether "auto" should run ``case`` (fields op, device, dtype, n, m, d, c, kernel,
    precision; already known to be supported) on the native CPU kernels."""
    mode = os.environ.get("KOPS_CPU_NATIVE", "measure").lower()
    if mode == "always":
        return True
    if mode == "never":
        return False
    if case.op == "kernel_matrix" or case.precision != "ieee" or case.n * case.m < _SMALL_PAIRS:
        return True
    return decide(case, measured())
