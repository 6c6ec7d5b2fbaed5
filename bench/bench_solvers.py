"""Solver benchmark: EigenPro 2 / 3 / 4 and the exact solver on synthetic data that scales.

Data: a 10-class Gaussian mixture in d dimensions (class means with per-coordinate standard
deviation 5 / sqrt(2 d), unit noise, so classes overlap for every d), float32, plus 2000
test points; Laplacian kernel with bandwidth sqrt(2 d) (about the typical distance).

For each (n, d) the exact solver (Cholesky on p centers, float64) runs first; its test
accuracy minus 1 point is the target accuracy of the iterative solvers. Each (n, d, solver)
runs in its own subprocess, so that its peak memory is the child's ``ru_maxrss`` on CPU
(which includes the Python + torch baseline, reported as the "baseline" row) or
``torch.cuda.max_memory_allocated`` on CUDA. Rows: time per epoch (median), time to reach
the target (set-up included, metric evaluation excluded), final test accuracy, peak memory.

    python bench/bench_solvers.py                       # a modest CPU configuration
    python bench/bench_solvers.py --n 10000 100000 --d 64 784 --epochs 3 --centers 4000

Writes bench/results/solvers_<date>.json (machine, torch version, git commit: harness.py).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SOLVERS = ("exact", "eigenpro2", "eigenpro3", "eigenpro4")


def make_data(n, d, n_test=2000, classes=10, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(classes, d)) * (5.0 / np.sqrt(2 * d))
    y = rng.integers(0, classes, size=n + n_test)
    X = (mu[y] + rng.normal(size=(n + n_test, d))).astype(np.float32)
    return X[:n], y[:n], X[n:], y[n:]


def run_case(case: dict) -> dict:
    """Run one (solver, n, d) case in this process and return its row."""
    import numpy as np
    import torch

    import kops

    device = case["device"]
    Xtr, ytr, Xte, yte = make_data(case["n"], case["d"], seed=case["seed"])
    bw = float(np.sqrt(2 * case["d"]))
    p = min(case["centers"], case["n"])
    row = {k: case[k] for k in ("solver", "n", "d", "device")}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if case["solver"] == "baseline":
        torch.zeros(1)
        row["test_accuracy"] = None
    else:
        common = dict(random_state=case["seed"], device=device)
        if case["solver"] == "exact":
            model = kops.ExactKernelRidge("laplacian", bw, centers=p, **common)
        elif case["solver"] == "eigenpro2":
            model = kops.EigenPro2("laplacian", bw, epochs=case["epochs"], **common)
        elif case["solver"] == "eigenpro3":
            model = kops.EigenPro3("laplacian", bw, centers=p, epochs=case["epochs"], **common)
        else:
            model = kops.EigenPro4("laplacian", bw, centers=p, epochs=case["epochs"], **common)
        model.fit(Xtr, ytr, Xte, yte)
        row["fit_s"] = time.perf_counter() - t0
        row["test_accuracy"] = model.score(Xte, yte)
        row["centers"] = int(model.centers_.shape[0])
        hist = model.history_
        if case["solver"] != "exact":
            row["epoch_s"] = float(np.median([h["epoch_seconds"] for h in hist]))
            row["batch_size"] = model.batch_size_
            row["projection_interval"] = getattr(model, "projection_interval_", None)
            row["history"] = [{k: h[k] for k in ("epoch", "elapsed", "epoch_seconds", "val_accuracy")} for h in hist]
            target = case.get("target")
            hit = [h["elapsed"] for h in hist if target is not None and h["val_accuracy"] >= target]
            row["time_to_target_s"] = hit[0] if hit else None
        else:
            row["time_to_target_s"] = row["fit_s"]
    if device == "cuda":
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        row["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def run_in_subprocess(case: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", json.dumps(case)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**{k: case[k] for k in ("solver", "n", "d", "device")}, "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {**{k: case[k] for k in ("solver", "n", "d", "device")},
                "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, nargs="+", default=[10000, 20000])
    parser.add_argument("--d", type=int, nargs="+", default=[64, 784])
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--centers", type=int, default=2000)
    parser.add_argument("--max-n-eigenpro2", type=int, default=20000, help="skip EigenPro 2 above this n")
    parser.add_argument("--max-n-eigenpro3", type=int, default=20000, help="skip EigenPro 3 above this n")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)

    if args.case:  # child process: one case, one JSON line on stdout
        print(json.dumps(run_case(json.loads(args.case))))
        return 0

    import torch

    from harness import format_table, machine_info, write_json

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = dict(device=device, epochs=args.epochs, centers=args.centers, seed=args.seed)
    rows = [run_in_subprocess({**base, "solver": "baseline", "n": 0, "d": 0}, args.timeout)]
    for d in args.d:
        for n in args.n:
            target = None
            for solver in args.solvers:
                if (solver == "eigenpro2" and n > args.max_n_eigenpro2) or \
                        (solver == "eigenpro3" and n > args.max_n_eigenpro3):
                    continue
                row = run_in_subprocess({**base, "solver": solver, "n": n, "d": d, "target": target}, args.timeout)
                if solver == "exact" and row.get("test_accuracy") is not None:
                    target = row["test_accuracy"] - 0.01
                row["target_accuracy"] = target
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
    columns = [("solver", "solver", ""), ("n", "n", "d"), ("d", "d", "d"), ("centers", "p", "d"),
               ("batch_size", "batch", "d"), ("projection_interval", "T", "d"), ("epoch_s", "s/epoch", ".2f"),
               ("time_to_target_s", "to target s", ".2f"), ("fit_s", "fit s", ".2f"),
               ("test_accuracy", "test acc", ".4f"), ("target_accuracy", "target", ".4f"),
               ("peak_mem_mb", "peak MB", ".0f"), ("error", "error", "")]
    print(format_table(rows, columns))
    payload = {"machine": machine_info(), "benchmark": "solvers",
               "config": {**vars(args), "device": device, "kernel": "laplacian", "bandwidth": "sqrt(2 d)"},
               "rows": rows}
    path = write_json(payload, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
