"""Falkon against EigenPro 4 and the exact solver: time to the same accuracy on the same problems.

Every solver gets the same centers (one random draw of p training points), kernel, bandwidth
and ridge, so all three target one model: the exact restricted model of
:class:`kops.ExactKernelRidge` (float64 Cholesky on the centers). Its test metric defines the
target: accuracy within half a point of it (classification) or test MSE within 1% of it
(regression). The iterative solvers report their test metric after every iteration (Falkon)
or epoch (EigenPro 4) through the callback; time is measured from the call to ``fit`` (set-up
included) with the solvers' own metric evaluation and the callback excluded, and each run
stops once it reaches the target (or its iteration limit).

Problems (float32 training; EigenPro 4 and Falkon at their defaults otherwise):

* ``digits``: scikit-learn's bundled digits (1437 train / 360 test, d = 64, 10 classes, pixels
  in [0, 1]), Laplacian bandwidth 10, p = 1000, ridge 0 (the main job's set-up).
* ``mixture``: the 10-class Gaussian mixture of bench_solvers.py, n = 20000, d = 64,
  Laplacian bandwidth sqrt(2 d), p = 2000, ridge 0.
* ``regression``: y = sin(x_0 + x_1) + cos(2 x_2) + 0.1 noise on 8 uniform features,
  n = 20000, Gaussian bandwidth 1.5, p = 2000, ridge 1 (Falkon's lambda = 5e-5).

    python bench/bench_falkon.py --json bench/results/
    python bench/bench_falkon.py --problems digits --max-iter 30 --epochs 10

Writes bench/results/falkon_<date>.json (machine, versions, git commit: harness.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_solvers import make_data  # noqa: E402
from harness import format_table, machine_info, write_json  # noqa: E402

PROBLEMS = ("digits", "mixture", "regression")


def load_problem(name: str, n: int, seed: int = 0):
    """(X_train, y_train, X_test, y_test, settings) of one problem (module docstring)."""
    rng = np.random.default_rng(seed)
    if name == "digits":
        from kops.solvers.main_job import load_digits_split

        Xtr, Xte, ytr, yte = load_digits_split(seed)
        return Xtr, ytr, Xte, yte, dict(kernel="laplacian", bandwidth=10.0, centers=1000, ridge=0.0,
                                        task="classification")
    if name == "mixture":
        d = 64
        Xtr, ytr, Xte, yte = make_data(n, d, seed=seed)
        return Xtr, ytr, Xte, yte, dict(kernel="laplacian", bandwidth=float(np.sqrt(2 * d)), centers=2000,
                                        ridge=0.0, task="classification")
    X = rng.uniform(-2, 2, size=(n + 2000, 8)).astype(np.float32)
    y = (np.sin(X[:, 0] + X[:, 1]) + np.cos(2 * X[:, 2]) + 0.1 * rng.normal(size=len(X))).astype(np.float32)
    return X[:n], y[:n], X[n:], y[n:], dict(kernel="gaussian", bandwidth=1.5, centers=2000, ridge=1.0,
                                            task="regression")


def _metric(model, X, y, task):
    pred = np.asarray(model.predict(X))
    return float(np.mean(pred == y)) if task == "classification" else float(np.mean((pred - y) ** 2))


def _reached(value, target, task):
    return value >= target if task == "classification" else value <= target


def run_problem(name: str, args) -> list[dict]:
    import torch

    import kops

    Xtr, ytr, Xte, yte, cfg = load_problem(name, args.n, args.seed)
    task = cfg["task"]
    g = torch.Generator().manual_seed(args.seed)
    Z = Xtr[torch.randperm(len(Xtr), generator=g)[: min(cfg["centers"], len(Xtr))].numpy()]
    common = dict(centers=Z, ridge=cfg["ridge"], task=task)
    rows = []

    t0 = time.perf_counter()
    exact = kops.ExactKernelRidge(cfg["kernel"], cfg["bandwidth"], **common).fit(Xtr, ytr)
    exact_seconds = time.perf_counter() - t0
    exact_metric = _metric(exact, Xte, yte, task)
    target = exact_metric - 0.005 if task == "classification" else exact_metric * 1.01
    base = {"problem": name, "n": len(Xtr), "d": Xtr.shape[1], "p": len(Z), "kernel": cfg["kernel"],
            "bandwidth": cfg["bandwidth"], "ridge": cfg["ridge"], "task": task, "target": target,
            "metric": "accuracy" if task == "classification" else "mse"}
    rows.append(dict(base, solver="exact", seconds_to_target=exact_seconds, total_seconds=exact_seconds,
                     final_metric=exact_metric, steps=1, curve=[[exact_seconds, exact_metric]]))

    solvers = {
        "falkon": lambda cb: kops.Falkon(cfg["kernel"], cfg["bandwidth"], max_iter=args.max_iter, tol=0.0,
                                         random_state=args.seed, callback=cb, **common),
        "eigenpro4": lambda cb: kops.EigenPro4(cfg["kernel"], cfg["bandwidth"], epochs=args.epochs,
                                               random_state=args.seed, callback=cb, **common),
    }
    for solver, make in solvers.items():
        state = {"excluded": 0.0, "curve": [], "hit": None}

        def callback(est, record, state=state):
            t_cb = time.perf_counter()
            elapsed = t_cb - state["start"] - state["excluded"] - est._eval_seconds
            value = _metric(est, Xte, yte, task)
            state["curve"].append([elapsed, value])
            done = _reached(value, target, task)
            if done and state["hit"] is None:
                state["hit"] = elapsed
            state["excluded"] += time.perf_counter() - t_cb
            return done

        model = make(callback)
        state["start"] = time.perf_counter()
        model.fit(Xtr, ytr)
        curve = state["curve"]
        rows.append(dict(base, solver=solver, seconds_to_target=state["hit"], total_seconds=curve[-1][0],
                         final_metric=curve[-1][1], steps=len(curve), curve=curve))
        print(f"{name} {solver}: {len(curve)} steps, metric {curve[-1][1]:.4g} (target {target:.4g}), "
              f"to target {state['hit']}", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    ap.add_argument("--n", type=int, default=20000, help="training points of the synthetic problems")
    ap.add_argument("--max-iter", type=int, default=40, help="Falkon's most iterations")
    ap.add_argument("--epochs", type=int, default=10, help="EigenPro 4's most epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="a .json file or a directory for a dated file")
    args = ap.parse_args(argv)
    rows = []
    for name in args.problems:
        rows.extend(run_problem(name, args))
    cols = [("problem", "problem", "s"), ("solver", "solver", "s"), ("n", "n", "d"), ("p", "p", "d"),
            ("seconds_to_target", "to target s", ".3g"), ("total_seconds", "total s", ".3g"),
            ("final_metric", "final", ".4g"), ("target", "target", ".4g"), ("steps", "steps", "d")]
    print(format_table(rows, cols))
    if args.json:
        payload = {"benchmark": "falkon", "machine": machine_info(), "args": vars(args),
                   "load_average": list(os.getloadavg()), "rows": rows}
        print("wrote", write_json(payload, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
