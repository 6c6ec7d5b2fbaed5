"""Native CPU backend versus the torch reference (and pykeops when installed), side by side.

Forward (kmv) and gradient (kmv_grad_xz), float32 or float64, at each d and c, for each
thread count. On a shared machine the backends are timed in interleaved rounds (torch, cpu,
pykeops, torch, cpu, ...) so that a burst of load from other processes hits all of them
alike; the JSON records the load average before and after each case so contended runs can
be recognised. Every row carries the roofline floor of bench/roofline_cpu.py (rates
measured at the start of the same run, per thread count) and the fraction of it reached,
and says which native path ran (the ISA; "emulated" for the tf32 / bf16 rounding modes).
Errors are measured against the float64 reference (kops.testing.kmv_error) on the first
``--check-rows`` rows. pykeops' first call (its compilation) is reported separately and not
timed; its gradient is the autograd of the same LazyTensor formula.

Examples::

    python bench/bench_cpu.py --grad --d 3 64 784 2048 --threads 1 2   # JSON in bench/results/
    python bench/bench_cpu.py --n 4096 --d 64 --c 1 --repeats 3 --no-json
    python bench/bench_cpu.py --grad --n 4096       # also the gradient kmv_grad_xz
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import roofline_cpu  # noqa: E402
from bench_kmv import keops_kmv  # noqa: E402

import kops  # noqa: E402
from kops.testing import kmv_error, random_problem  # noqa: E402

COLUMNS = [
    ("kernel", "kernel", ""), ("n", "n", "d"), ("d", "d", "d"), ("c", "c", "d"), ("op", "op", ""),
    ("backend", "backend", ""), ("median_s", "median_s", ".4f"), ("min_s", "min_s", ".4f"),
    ("pairs_per_s", "pairs/s", ".3e"), ("speedup_vs_torch", "x torch", ".2f"),
    ("speedup_vs_torch_min", "x torch min", ".2f"),
    ("speedup_vs_pykeops", "x keops", ".2f"), ("floor_s", "floor_s", ".4f"),
    ("floor_fraction", "of floor", ".2f"), ("floor_fraction_min", "of floor min", ".2f"),
    ("path", "path", ""), ("threads", "threads", "d"),
    ("error", "error", ".1e"),
]


def keops_grad(keops):
    """Gradients (x, z) of <g, K v> through pykeops' autograd of the same formula."""
    def run(x, z, v, g, kernel, bandwidth):
        xr, zr = x.detach().requires_grad_(True), z.detach().requires_grad_(True)
        out = keops(xr, zr, v, kernel, bandwidth)
        return torch.autograd.grad(out, (xr, zr), g)
    return run


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def interleaved(candidates, repeats: int, max_seconds: float) -> dict:
    """Time every candidate once per round, for ``repeats`` rounds; returns name -> timing.

    A candidate whose total time passes ``max_seconds`` stops being repeated (at least one
    timed call each).
    """
    times = {name: [] for name, _ in candidates}
    for _ in range(repeats):
        for name, fn in candidates:
            if times[name] and sum(times[name]) >= max_seconds:
                continue
            times[name].extend(harness.time_call(fn, warmup=0, repeats=1)["times_s"])
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "times_s": t, "repeats": len(t)}
            for name, t in times.items()}


def _path(backend: str, precision: str = "ieee", op: str = "kmv") -> str:
    if backend == "cpu":
        isa = str(torch.ops.kops._cpu_isa())
        if precision == "bf16" and op == "kmv":
            return f"{isa}+{torch.ops.kops._cpu_bf16_path()}"
        return isa if precision == "ieee" else f"{isa}+emulated"
    if backend == "torch":
        return "blas"
    return backend


def _set_floor(row: dict, rates: dict, precision: str) -> None:
    floor = roofline_cpu.floor_time(rates, n=row["n"], m=row["m"], d=row["d"], c=row["c"], op=row["op"],
                                    kernel=row["kernel"], dtype=getattr(torch, row["dtype"]), precision=precision)
    row.update(floor, floor_fraction=floor["floor_s"] / row["median_s"],
               floor_fraction_min=floor["floor_s"] / row["min_s"])


def bench_case(kernel, n, d, c, dtype, args, keops, rates, op="kmv"):
    """Rows (one per backend) for one case."""
    # the FMA peak again before every case: on a loaded machine the first measurement can
    # be low, and the floor should be what the hardware allows (the best seen in the run)
    roofline_cpu.refresh_peak(rates)
    x, z, v, bw = random_problem(n, n, d, c, dtype=dtype, generator=torch.Generator().manual_seed(n + d + c))
    candidates, extra = [], {}
    g = torch.randn(n, c, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for name in args.backends:
        if op == "kmv":
            candidates.append((name, lambda name=name: kops.kmv(x, z, v, kernel, bw, precision=args.precision,
                                                                backend=name)))
        else:  # gradient with respect to x and z of <g, K v>
            candidates.append((name, lambda name=name, g=g: torch.ops.kops.kmv_grad_xz(
                x, z, v, g, kernel, bw, args.precision, name)))
    if keops is not None and kernel in ("gaussian", "laplacian") and not args.no_keops_for(d) \
            and args.precision == "ieee":
        if op == "kmv":
            run = lambda: keops(x, z, v, kernel, bw)  # noqa: E731
        else:
            run = lambda g=g: keops_grad(keops)(x, z, v, g, kernel, bw)  # noqa: E731
        t0 = time.perf_counter()
        run()  # compiles the formula (cached afterwards)
        extra["pykeops_first_call_s"] = time.perf_counter() - t0
        candidates.append(("pykeops", run))
    for name, fn in candidates:  # warm-up (allocations, thread pools, caches)
        if name != "pykeops":  # its first call above was the warm-up
            fn()
    load_before = _load()
    timings = interleaved(candidates, args.repeats, args.max_seconds)
    load_after = _load()
    rows = []
    for name, fn in candidates:
        t = timings[name]
        row = dict(kernel=kernel, n=n, m=n, d=d, c=c, dtype=str(dtype).replace("torch.", ""), op=op,
                   backend=name, median_s=t["median_s"], min_s=t["min_s"], times_s=t["times_s"],
                   repeats=t["repeats"], pairs_per_s=n * n / t["median_s"],
                   load_before=load_before, load_after=load_after, threads=torch.get_num_threads(),
                   path=_path(name, args.precision, op), precision=args.precision, **extra)
        _set_floor(row, rates, args.precision)
        if op == "kmv" and args.check_rows:
            k = min(args.check_rows, n)
            out = fn()
            row["error"] = kmv_error(out[:k], x[:k], z, v, kernel, bw)
        rows.append(row)
    ref = {r["backend"]: r["median_s"] for r in rows}
    ref_min = {r["backend"]: r["min_s"] for r in rows}
    for row in rows:
        row["speedup_vs_torch"] = ref["torch"] / row["median_s"] if "torch" in ref else None
        # fastest against fastest: the least disturbed timings of a loaded machine
        row["speedup_vs_torch_min"] = ref_min["torch"] / row["min_s"] if "torch" in ref else None
        row["speedup_vs_pykeops"] = ref["pykeops"] / row["median_s"] if "pykeops" in ref else None
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[20000], help="n = m values")
    parser.add_argument("--d", type=int, nargs="+", default=[64, 3, 784])
    parser.add_argument("--c", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--kernels", nargs="+", default=["gaussian"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--precision", default="ieee", choices=["ieee", "tf32", "bf16"])
    parser.add_argument("--backends", nargs="+", default=["torch", "cpu"])
    parser.add_argument("--no-keops", action="store_true", help="skip pykeops even if installed")
    parser.add_argument("--grad", action="store_true", help="also time kmv_grad_xz")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per backend and case")
    parser.add_argument("--check-rows", type=int, default=256, help="rows checked against float64 (0: none)")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="torch.set_num_threads values")
    parser.add_argument("--keops-max-d", type=int, default=100000, help="skip pykeops above this d")
    parser.add_argument("--json", default=str(harness.ROOT / "bench" / "results"), help="output file or directory")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args(argv)
    args.no_keops_for = lambda d: d > args.keops_max_d
    dtype = getattr(torch, args.dtype)
    keops = None if args.no_keops else keops_kmv()

    rows, rates_by_threads = [], {}
    ops = ["kmv", "kmv_grad_xz"] if args.grad else ["kmv"]
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        rates = roofline_cpu.measure_rates(ds=args.d)
        rates_by_threads[threads] = rates
        for op in ops:
            for kernel in args.kernels:
                for n in args.n:
                    for d in args.d:
                        for c in args.c:
                            case_rows = bench_case(kernel, n, d, c, dtype, args, keops, rates, op)
                            rows.extend(case_rows)
                            print(harness.format_table(case_rows, COLUMNS), flush=True)
        for row in rows:  # every floor from the best rates of the whole run at this thread count
            if row["threads"] == threads:
                _set_floor(row, rates, args.precision)

    payload = dict(benchmark="kmv_cpu", machine=harness.machine_info(),
                   config=dict({k: v for k, v in vars(args).items() if k != "no_keops_for"},
                               keops_available=keops is not None, isa=str(torch.ops.kops._cpu_isa())),
                   rates=rates_by_threads, rows=rows)
    print()
    print(harness.format_table(rows, COLUMNS))
    if keops is None and not args.no_keops:
        print("pykeops is not installed: no KeOps comparison in this run")
    if not args.no_json:
        print("wrote", harness.write_json(payload, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
