"""The main job (``python -m kops train``): EigenPro 4 on scikit-learn's bundled digits data,
through the same path as ``kops fit`` / ``kops evaluate``.

The 8x8 digits (1797 images, 10 classes, pixels scaled to [0, 1]) are split 80/20
(stratified, seeded). :class:`kops.EigenPro4` (p = 1000 centers drawn from the training
split) is fitted with the held-out 20 % as its validation split (accuracy after every
epoch), the model is saved, read back from its file and evaluated on the held-out split,
and :class:`kops.ExactKernelRidge` on the same centers and kernel is fitted for comparison.
The model file, the per-epoch metrics (JSON) and their plot (PNG, when matplotlib is
installed) go to ``--out-dir``.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from .commands import fit_arrays, metrics_of

__all__ = ["run_main_job"]


def run_main_job(args) -> int:
    """Fit, save, evaluate and compare (module docstring); returns the exit status."""
    from ..serialization import load_model
    from ..solvers import ExactKernelRidge
    from ..solvers.main_job import load_digits_split
    from .errors import require

    start = time.perf_counter()
    require("sklearn.datasets", "the main job's bundled digits data")
    Xtr, Xte, ytr, yte = load_digits_split(args.seed)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / "history.png" if importlib.util.find_spec("matplotlib") else None
    fit_args = argparse.Namespace(
        solver="eigenpro4", kernel=args.kernel, bandwidth=args.bandwidth, centers=args.centers,
        epochs=args.epochs, batch_size=args.batch_size, ridge=0.0, task="auto", device=args.device, dtype=None,
        memory_budget=None, seed=args.seed, out=str(out_dir / "digits-eigenpro4.safetensors"),
        checkpoint=None, checkpoint_every=None, resume=False, metrics=str(out_dir / "history.json"),
        plot=None if plot is None else str(plot), json=False, quiet=args.quiet)
    print(f"kops train: EigenPro4 on digits (n_train = {len(Xtr)}, held out = {len(Xte)}, d = {Xtr.shape[1]}, "
          f"10 classes), {args.kernel} kernel, bandwidth {args.bandwidth}, p = {args.centers} centers", flush=True)
    model, summary = fit_arrays(fit_args, Xtr, ytr, Xte, yte)
    P = model.preconditioner_
    print(f"  EigenPro4: batch {model.batch_size_}, T = {model.projection_interval_} batches per projection, "
          f"{model.n_projections_} projections, preconditioner s = {P.n_nystrom}, q = {P.n_components}, "
          f"m* = {P.critical_batch_size:.0f}, {model.device_}; fit {summary['fit_seconds']:.2f} s", flush=True)
    loaded = load_model(fit_args.out)
    held_out = metrics_of(loaded, Xte, yte)
    print(f"  evaluate (the model read back from its file): held-out accuracy {100 * held_out['accuracy']:.2f}% "
          f"on {held_out['samples']} images", flush=True)
    t0 = time.perf_counter()
    exact = ExactKernelRidge(args.kernel, args.bandwidth, centers=model.centers_.cpu().numpy(),
                             device=args.device).fit(Xtr, ytr)
    exact_s = time.perf_counter() - t0
    exact_acc = exact.score(Xte, yte)
    print(f"  exact solver (Cholesky, float64, same centers): held-out accuracy {100 * exact_acc:.2f}% "
          f"({exact_s:.2f} s); EigenPro4 - exact = {100 * (held_out['accuracy'] - exact_acc):+.2f} points")
    print(f"  model: {fit_args.out}")
    print(f"  metrics (JSON, one record per epoch and a summary): {fit_args.metrics}")
    print(f"  plot: {plot}" if plot is not None else
          "  plot: not drawn (matplotlib is not installed: pip install '.[plot]')")
    print(f"total time {time.perf_counter() - start:.1f} s")
    return 0
