"""When "auto" prefers the native CPU kernels over the torch reference: a rule measured here.

Which backend is faster depends on the machine, not on kops: the native kernels run at the
FMA rate of the widest vector ISA they find (AVX-512, AVX2 or portable), the torch reference
at the rate of the BLAS torch links, which on some CPUs uses narrower vectors than the CPU has
(MKL on AMD) and on others is the faster of the two at large d. So the rule is measured once
per machine, ISA, kernel revision, thread count and torch version by a short calibration (both backends on a
768 x 768 problem at d = 16, 256 and 1024, forward and gradient), cached as JSON, and
interpolated in log d. float64 cases use the float32 measurement.

The calibration has to survive a shared machine, where another process can slow any one
call several-fold. Each ratio is the median of per-round ratios (one torch call and one
native call per round, their order alternating) and is checked against the ratio of the
fastest calls: when the two disagree about which backend wins, or the rounds scatter widely,
another set of rounds is measured (three sets at most, no new set after 12 s in all; when
none settles, all of them pooled). A ratio still unsettled after that is cached as such and
measured again by the next process (twice at most), keeping the settled measurements.

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
import statistics
import time
from pathlib import Path

import torch

__all__ = ["native_preferred", "decide", "calibrate", "CALIBRATION_D"]

CALIBRATION_D = (16, 256, 1024)
# Part of the cache key: raised whenever the native kernels' speed changes (a new tiling, a
# new gradient path), so that a ratio measured with older kernels is not reused.
KERNEL_REVISION = 5
_N = 768
_ROUNDS = 5  # per set of rounds
_SETS = 3  # sets of rounds at most per ratio
_SPREAD = 1.5  # upper / lower quartile of the per-round ratios that still counts as settled
_TIE = 1.1  # both estimates within this factor of 1: either backend is as fast, settled
_REMEASURES = 2  # later processes that measure unsettled ratios again
# Seconds after which a calibration stops adding sets of rounds (its first set of each ratio
# always runs): the first product of a process, possibly one rank of a distributed fit whose
# peers wait for it in a collective, must not stall for long on a loaded machine.
_BUDGET_S = 12.0
_SMALL_PAIRS = 1 << 16
_cached: dict | None = None


def _key() -> str:
    isa = str(torch.ops.kops._cpu_isa())
    return f"{isa}-r{KERNEL_REVISION}-t{torch.get_num_threads()}-torch{torch.__version__}"


def _cache_file() -> Path:
    root = Path(os.environ.get("KOPS_CACHE_DIR", Path.home() / ".cache" / "kops"))
    return root / f"cpu_crossover-{_key()}.json"


def _timed(fn, clock) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def timed_rounds(reference, native, rounds: int, clock=time.perf_counter) -> list[tuple[float, float]]:
    """``rounds`` pairs (torch seconds, native seconds), the call order alternating per round
    so that neither side always runs right after the other."""
    pairs = []
    for i in range(rounds):
        if i % 2 == 0:
            t_ref = _timed(reference, clock)
            t_nat = _timed(native, clock)
        else:
            t_nat = _timed(native, clock)
            t_ref = _timed(reference, clock)
        pairs.append((t_ref, t_nat))
    return pairs


def summarize(pairs: list[tuple[float, float]]) -> dict:
    """The ratio torch time / native time of timed pairs, and whether it is settled.

    ``ratio``: the median of the per-round ratios (a slowed call spoils one round, not the
    estimate); ``best``: fastest torch call / fastest native call. Settled when both say the
    same backend wins (or both call it a tie within ``_TIE``) and the quartiles of the
    per-round ratios lie within a factor ``_SPREAD``.
    """
    per_round = sorted(r / n for r, n in pairs)
    median = statistics.median(per_round)
    best = min(r for r, _ in pairs) / min(n for _, n in pairs)
    tie = max(median, 1.0 / median, best, 1.0 / best) <= _TIE
    agree = tie or (median >= 1.0) == (best >= 1.0)
    if len(per_round) >= 4:
        q1, _, q3 = statistics.quantiles(per_round, n=4)
        tight = q3 <= _SPREAD * q1
    else:
        tight = False
    return dict(ratio=median, best=best, settled=bool(agree and tight), rounds=len(pairs))


def measure_ratio(reference, native, *, rounds: int = _ROUNDS, sets: int = _SETS,
                  clock=time.perf_counter, deadline: float = math.inf) -> dict:
    """:func:`summarize` of the first settled of up to ``sets`` sets of ``rounds`` alternated
    pairs (after one warm-up call each); when none settles, of all of them pooled (marked
    unsettled). No further set starts after ``deadline`` (a ``clock()`` value)."""
    reference(), native()
    pairs: list[tuple[float, float]] = []
    for _ in range(sets):
        new = timed_rounds(reference, native, rounds, clock)
        summary = summarize(new)
        if summary["settled"]:
            return summary
        pairs += new
        if clock() >= deadline:
            break
    return dict(summarize(pairs), settled=False)


def calibrate() -> dict:
    """Measure the ratio torch time / native time per op at each d of CALIBRATION_D.

    Returns ``{"kmv": {d: ratio}, "kmv_grad_xz": {d: ratio}, "key": ..., "unsettled":
    [[op, d], ...], "load": ...}`` (d as strings), ``"detail"`` holding every
    :func:`measure_ratio` summary.
    """
    from ..kernels import resolve_kernel
    from .cpu_native import CpuNativeBackend
    from .torch_reference import TorchBackend

    reference, native = TorchBackend(), CpuNativeBackend()
    deadline = time.perf_counter() + _BUDGET_S
    gen = torch.Generator().manual_seed(0)
    ratios: dict = {"kmv": {}, "kmv_grad_xz": {}, "key": _key(), "detail": {"kmv": {}, "kmv_grad_xz": {}}}
    try:
        ratios["load"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    for d in CALIBRATION_D:
        x = torch.randn(_N, d, generator=gen)
        z = torch.randn(_N, d, generator=gen)
        v = torch.randn(_N, 1, generator=gen)
        g = torch.randn(_N, 1, generator=gen)
        bw = math.sqrt(d)
        kernel = resolve_kernel("gaussian", bw)
        out = torch.zeros(_N, 1)
        pairs = {
            "kmv": (lambda: reference.kmv(x, z, v, kernel, "ieee", out, 1.0),
                    lambda: native.kmv(x, z, v, kernel, "ieee", out, 1.0)),
            "kmv_grad_xz": (lambda: reference.kmv_grad_xz(x, z, v, g, kernel, "ieee"),
                            lambda: native.kmv_grad_xz(x, z, v, g, kernel, "ieee")),
        }
        for op, (ref_fn, nat_fn) in pairs.items():
            summary = measure_ratio(ref_fn, nat_fn, deadline=deadline)
            ratios[op][str(d)] = summary["ratio"]
            ratios["detail"][op][str(d)] = summary
    ratios["unsettled"] = _unsettled(ratios)
    return ratios


def _unsettled(ratios: dict) -> list:
    return [[op, d] for op, entries in ratios.get("detail", {}).items()
            for d, summary in entries.items() if not summary.get("settled", True)]


def merge(old: dict, new: dict) -> dict:
    """``new``, except that a settled ratio of ``old`` stands where ``new`` is unsettled."""
    merged = json.loads(json.dumps(new))
    for op, d in new.get("unsettled", []):
        before = old.get("detail", {}).get(op, {}).get(d)
        if before is not None and before.get("settled", False):
            merged[op][d] = old[op][d]
            merged["detail"][op][d] = before
    merged["unsettled"] = _unsettled(merged)
    merged["measurements"] = old.get("measurements", 1) + 1
    return merged


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch._guards.detect_fake_mode() is not None


def measured() -> dict | None:
    """The calibration of this machine: from the cache file, else measured now and cached
    (None when it cannot be measured now; asked again next time)."""
    global _cached
    if _cached is not None and _cached.get("key") == _key():
        return _cached
    path = _cache_file()
    previous = None
    try:
        data = json.loads(path.read_text())
        if data.get("key") == _key():
            if not data.get("unsettled") or data.get("measurements", 1) > _REMEASURES:
                _cached = data
                return data
            previous = data  # measured under too much disturbance: once more, this process
    except (OSError, ValueError):
        pass
    if _tracing():  # fake tensors or a compiler trace: nothing can be timed now
        return previous
    with torch.no_grad():
        data = calibrate()
    data = merge(previous, data) if previous is not None else dict(data, measurements=1)
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
