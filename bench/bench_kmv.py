"""Kernel-product benchmark: every available backend side by side, with pykeops if present.

For each case (kernel, n, m, d, c, dtype, precision) and backend it reports the median time,
kernel evaluations ("pairs") per second, the speed-up over the torch reference backend
measured in the same run, the error against the float64 reference on a subsample of rows,
and, on CUDA when bench/roofline.py provides it, the achieved fraction of the roofline floor.

Examples::

    python bench/bench_kmv.py --preset cpu --json bench/results/
    python bench/bench_kmv.py --device cuda --preset gpu --time-budget 240 --json OUTDIR
    python bench/bench_kmv.py --n 20000 --d 64 --c 1 10 --backends torch cpu
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

import kops  # noqa: E402
from kops.backends.base import Case  # noqa: E402
from kops.dispatch import backends as registered_backends  # noqa: E402
from kops.testing import kmv_error, random_problem  # noqa: E402

# A preset is a list of sweeps; each sweep is the product of its lists. Cases run in order,
# so the most important come first when a time budget cuts the run short.
PRESETS = {
    # the CPU reference case (n = m = 20000, d = 64, c = 1 and 10), plus small and large d
    "cpu": [dict(n=[20000], d=[64, 3, 784], c=[1, 10], precisions=["ieee"])],
    "cpu-small": [dict(n=[4096], d=[3, 64], c=[1, 10], precisions=["ieee"])],
    # GPU sweep; the torch reference only runs up to TORCH_MAX_PAIRS pairs
    "gpu": [
        dict(n=[2**16], d=[3, 16, 64, 256, 784], c=[1, 10, 128], precisions=["ieee"]),
        dict(n=[2**16], d=[64, 256, 784], c=[1, 10, 128], precisions=["tf32", "bf16"]),
        dict(n=[2**18], d=[3, 16, 64, 256, 784], c=[10], precisions=["ieee", "bf16"]),
        dict(n=[2**20], d=[3, 64], c=[10], precisions=["ieee", "bf16"]),
        dict(n=[2**18], d=[16, 64, 256], c=[1, 128], precisions=["ieee", "tf32", "bf16"]),
    ],
    "gpu-quick": [dict(n=[2**16], d=[3, 64, 784], c=[1, 128], precisions=["ieee", "bf16"])],
}
TORCH_MAX_PAIRS = {"cpu": 4.1e8, "cuda": 2**32 + 1}  # 20000^2 on CPU, 65536^2 on GPU
OTHER_MAX_PAIRS = {"cpu": 4.1e8, "cuda": 2**40 + 1}


def keops_kmv():
    """A pykeops implementation of the same product, or None when pykeops is missing."""
    try:
        from pykeops.torch import LazyTensor
    except Exception:  # noqa: BLE001 - any failure to import means "not available"
        return None

    def run(x, z, v, kernel, bandwidth):
        xi, zj = LazyTensor(x[:, None, :]), LazyTensor(z[None, :, :])
        d2 = ((xi - zj) ** 2).sum(-1)
        if kernel == "gaussian":
            k = (-d2 / (2 * bandwidth**2)).exp()
        elif kernel == "laplacian":
            k = (-(d2.sqrt()) / bandwidth).exp()
        else:
            raise ValueError(kernel)
        return k @ v

    return run


def runnable_backends(case: Case, wanted):
    """Backends that are available, support the case, and are not the Triton interpreter."""
    names = []
    for name, backend in registered_backends().items():
        if wanted and name not in wanted:
            continue
        if backend.unavailable_reason() is not None or backend.unsupported_reason(case) is not None:
            continue
        if name == "triton" and case.device.type == "cpu":
            continue  # the interpreter is a test vehicle: its timings mean nothing
        names.append(name)
    return names


def load_roofline(device):
    """bench/roofline.py's rate measurement and floor model, when present and on CUDA."""
    if torch.device(device).type != "cuda":
        return None, None
    try:
        import roofline
    except ImportError:
        return None, None
    rates = roofline.measure_rates(device)
    return roofline, rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--n", type=int, nargs="+", help="n = m values")
    parser.add_argument("--d", type=int, nargs="+")
    parser.add_argument("--c", type=int, nargs="+")
    parser.add_argument("--precisions", nargs="+", choices=kops.PRECISIONS)
    parser.add_argument("--kernels", nargs="+", default=["gaussian"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--backends", nargs="+", help="subset of backends (default: all that run here)")
    parser.add_argument("--no-keops", action="store_true", help="skip pykeops even if installed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check-rows", type=int, default=256, help="rows checked against float64 (0: none)")
    parser.add_argument("--time-budget", type=float, default=None, help="stop starting new cases after this many s")
    parser.add_argument("--json", default=None, help="output file or directory")
    args = parser.parse_args(argv)

    sweeps = [dict(s) for s in PRESETS[args.preset]] if args.preset else [dict(n=[4096], d=[64], c=[1], precisions=["ieee"])]
    for sweep in sweeps:
        for key in ("n", "d", "c", "precisions"):
            if getattr(args, key):
                sweep[key] = getattr(args, key)
    cases = [case for sweep in sweeps for case in itertools.product(
        args.kernels, sweep["n"], sweep["d"], sweep["c"], sweep["precisions"])]
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    keops = None if args.no_keops else keops_kmv()
    roofline, rates = load_roofline(device)
    started = time.perf_counter()
    rows, skipped = [], []

    for kernel, n, d, c, precision in cases:
        if args.time_budget is not None and time.perf_counter() - started > args.time_budget:
            skipped.append(dict(kernel=kernel, n=n, d=d, c=c, precision=precision, reason="time budget"))
            continue
        x, z, v, bw = random_problem(n, n, d, c, dtype=dtype, device=device,
                                     generator=torch.Generator().manual_seed(n + d + c))
        case = Case("kmv", device, dtype, n, n, d, c, kernel, precision)
        limit_torch, limit_other = TORCH_MAX_PAIRS[device.type], OTHER_MAX_PAIRS[device.type]
        case_rows = []
        candidates = [(name, lambda name=name: kops.kmv(x, z, v, kernel, bw, precision=precision, backend=name))
                      for name in runnable_backends(case, args.backends)]
        if keops is not None and precision == "ieee" and kernel in ("gaussian", "laplacian"):
            candidates.append(("pykeops", lambda: keops(x, z, v, kernel, bw)))
        for name, fn in candidates:
            if n * n > (limit_torch if name == "torch" else limit_other):
                skipped.append(dict(kernel=kernel, n=n, d=d, c=c, precision=precision, backend=name,
                                    reason="too large for this backend in the benchmark's time"))
                continue
            try:
                timing = harness.time_call(fn, device=device, repeats=args.repeats, max_seconds=20.0)
                out = fn()
            except Exception as exc:  # noqa: BLE001 - record and go on with the other backends
                skipped.append(dict(kernel=kernel, n=n, d=d, c=c, precision=precision, backend=name,
                                    reason=f"{type(exc).__name__}: {exc}"[:300]))
                continue
            row = dict(kernel=kernel, n=n, m=n, d=d, c=c, dtype=args.dtype, precision=precision, backend=name,
                       median_s=timing["median_s"], min_s=timing["min_s"], repeats=timing["repeats"],
                       pairs_per_s=n * n / timing["median_s"])
            if args.check_rows:
                k = min(args.check_rows, n)
                row["error"] = kmv_error(out[:k].float().cpu(), x[:k].cpu(), z.cpu(), v.cpu(), kernel, bw)
            if roofline is not None:
                row.update(roofline.floor_time(rates, n=n, m=n, d=d, c=c, kernel=kernel, precision=precision,
                                               dtype=dtype))
                row["fraction_of_floor"] = row["floor_s"] / timing["median_s"]
            case_rows.append(row)
            del out
        reference = next((r["median_s"] for r in case_rows if r["backend"] == "torch"), None)
        for row in case_rows:
            row["speedup_vs_torch"] = None if reference is None else reference / row["median_s"]
        rows.extend(case_rows)
        for row in case_rows:
            print(harness.format_table([row], COLUMNS).splitlines()[1], flush=True)

    payload = dict(benchmark=f"kmv_{device.type}", machine=harness.machine_info(),
                   config=dict(vars(args), sweeps=sweeps, keops_available=keops is not None, roofline_rates=rates),
                   rows=rows, skipped=skipped)
    print(harness.format_table(rows, COLUMNS))
    if skipped:
        print(f"{len(skipped)} case/backend pairs skipped (see JSON 'skipped')")
    if keops is None and not args.no_keops:
        print("pykeops is not installed: no KeOps comparison in this run")
    if args.json:
        print("wrote", harness.write_json(payload, args.json))
    return 0


COLUMNS = [
    ("kernel", "kernel", ""), ("n", "n", "d"), ("d", "d", "d"), ("c", "c", "d"), ("precision", "precision", ""),
    ("backend", "backend", ""), ("median_s", "median_s", ".4f"), ("pairs_per_s", "pairs/s", ".3e"),
    ("speedup_vs_torch", "x torch", ".2f"), ("error", "error", ".1e"), ("fraction_of_floor", "of floor", ".2f"),
]

if __name__ == "__main__":
    sys.exit(main())
