"""Sharded EigenPro 4 on 1 and 2 processes against the single-process fit (digits, p = 1000).

The data and model of ``kops train``: scikit-learn's digits (8x8 pixels scaled to [0, 1], a
stratified 80/20 split), Laplacian kernel with bandwidth 10, p = 1000 centers drawn from the
training split, batch 256, float32 (``--dtype``), ``random_state`` 0. Rows:

* ``single``: :class:`kops.EigenPro4` in this process;
* ``sharded P``: :class:`kops.distributed.EigenPro4` on P fresh processes
  (:func:`kops.distributed.launch`; Gloo on CPU, NCCL with ``--backend nccl``), each with
  ``--threads`` torch threads; the fit time is the slowest rank's ``fit_seconds_``.

Every row reports the fit time (and its set-up and epochs parts), the test accuracy and the largest difference of its test
outputs (``decision_function``) from the single-process fit's and from the first sharded
row's, relative to the single fit's largest magnitude. In float32 the single-process fit's
distance from the float64 fit is reported too: the rounding floor of the comparison (the
float32 Laplacian kernel is off by up to about 1e-4 at coincident points, and which entries
are off depends on the shape of the product). The single-process fit uses the same thread
count as one rank.

    python bench/bench_distributed.py                          # 1 and 2 Gloo processes on CPU
    python bench/bench_distributed.py --backend nccl --device cuda --world-sizes 1   # GPU check

Writes bench/results/distributed_<date>.json (machine, torch version, git commit: harness.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def model_params(args) -> dict:
    return dict(kernel="laplacian", bandwidth=10.0, centers=args.centers, epochs=args.epochs,
                batch_size=args.batch_size, dtype=args.dtype, random_state=0, device=args.device)


def fit(params: dict, distributed: bool) -> dict:
    """Fit on digits (every rank the same data); the test outputs and timings."""
    import numpy as np

    import kops
    import kops.distributed as kd
    from kops.solvers.main_job import load_digits_split

    Xtr, Xte, ytr, yte = load_digits_split(0)
    cls = kd.EigenPro4 if distributed else kops.EigenPro4
    model = cls(**params).fit(Xtr, ytr)
    raw = np.asarray(model.decision_function(Xte))
    return {"raw": raw, "accuracy": float(model.score(Xte, yte)), "fit_seconds": model.fit_seconds_,
            "epoch_seconds": [r["epoch_seconds"] for r in model.history_],
            "setup_seconds": model.history_[0]["elapsed"] - model.history_[0]["epoch_seconds"],
            "epochs_seconds": model.history_[-1]["seconds"], "batch_size": model.batch_size_,
            "projection_interval": model.projection_interval_, "n_projections": model.n_projections_,
            "span_preconditioner": bool(model.span_preconditioner_), "block_reuse": bool(model.block_reuse_),
            "rows_per_rank": int(model.weights_.shape[0])}


def fit_rank(params: dict) -> dict:
    return fit(params, distributed=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (and for the single fit)")
    parser.add_argument("--centers", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--json", default=str(HERE / "results"), help="output file or directory")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from harness import machine_info, write_json

    import kops.distributed as kd

    if args.backend == "nccl" and args.device == "cpu":
        parser.error("--backend nccl needs --device cuda")
    params = model_params(args)
    torch.set_num_threads(args.threads)
    single = fit(params, distributed=False)
    scale = float(np.abs(single["raw"]).max())
    rows = [{"name": "single", "processes": 1, **{k: v for k, v in single.items() if k != "raw"},
             "max_rel_diff_vs_single": 0.0}]
    if args.dtype == "float32":  # the float32 fit's own rounding: its distance from the float64 fit
        exact = fit({**params, "dtype": "float64"}, distributed=False)
        rows[0]["max_rel_diff_vs_float64_single"] = float(np.abs(single["raw"] - exact["raw"]).max()) / scale
    first_sharded = None
    for world in args.world_sizes:
        results = kd.launch(fit_rank, world, (params,), timeout=900, collective_timeout=120, backend=args.backend,
                            threads=args.threads)
        first = results[0]
        diff = max(float(np.abs(r["raw"] - single["raw"]).max()) for r in results) / scale
        norm_diff = max(float(np.linalg.norm(r["raw"] - single["raw"])) for r in results) / float(
            np.linalg.norm(single["raw"]))
        same_class = min(float(np.mean(r["raw"].argmax(1) == single["raw"].argmax(1))) for r in results)
        rows.append({"name": f"sharded {world}", "processes": world, "backend": args.backend,
                     **{k: v for k, v in first.items() if k not in ("raw", "fit_seconds")},
                     "fit_seconds": max(r["fit_seconds"] for r in results),
                     "fit_seconds_per_rank": [r["fit_seconds"] for r in results],
                     "max_rel_diff_vs_single": diff, "norm_rel_diff_vs_single": norm_diff,
                     "same_predicted_class": same_class})
        if first_sharded is None:
            first_sharded = first["raw"]
        rows[-1]["max_rel_diff_vs_first_sharded"] = max(
            float(np.abs(r["raw"] - first_sharded).max()) for r in results) / scale
    print(f"{'row':>12} {'fit s':>8} {'set-up s':>9} {'epochs s':>9} {'accuracy':>9} {'vs single':>10} "
          f"{'vs first sharded':>17}")
    for row in rows:
        print(f"{row['name']:>12} {row['fit_seconds']:8.2f} {row['setup_seconds']:9.2f} {row['epochs_seconds']:9.2f} "
              f"{row['accuracy']:9.4f} "
              f"{row['max_rel_diff_vs_single']:10.2e} {row.get('max_rel_diff_vs_first_sharded', 0.0):17.2e}")
    if "max_rel_diff_vs_float64_single" in rows[0]:
        print(f"single float32 vs single float64: {rows[0]['max_rel_diff_vs_float64_single']:.2e}")
    config = {**params, "threads": args.threads, "world_sizes": args.world_sizes, "data": "sklearn digits, 80/20",
              "note": "CPU processes share the machine's cores; see machine.cpu_count"}
    path = write_json({"machine": machine_info(), "benchmark": "distributed", "config": config, "rows": rows},
                      args.json)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
