"""The commands: ``fit``, ``predict``, ``evaluate``, ``info``, ``bench``, ``demo``, ``train``.

Each takes the parsed arguments and returns an exit status; user errors raise
:class:`~kops.cli.errors.UsageError` (printed as one line by :func:`kops.cli.main`).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .data_io import load_data, write_predictions
from .errors import UsageError
from .progress import FitReporter, json_line

__all__ = ["fit", "predict", "evaluate", "info", "bench", "demo", "train", "fit_arrays"]


def _solvers():
    from ..solvers import EigenPro2, EigenPro3, EigenPro4, ExactKernelRidge

    return {"eigenpro4": EigenPro4, "eigenpro3": EigenPro3, "eigenpro2": EigenPro2, "exact": ExactKernelRidge}


def _say(args, *parts) -> None:
    """A human-readable line: stdout, or stderr when stdout carries JSON; none with --quiet."""
    if getattr(args, "quiet", False):
        return
    print(*parts, file=sys.stderr if getattr(args, "json", False) else sys.stdout, flush=True)


def _split(X, y, fraction: float, seed: int):
    """A random held-out split (stratified for class labels so each class is in both parts)."""
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    n_val = int(round(fraction * n))
    if n_val == 0 or n_val >= n:
        raise UsageError(f"{fraction} of {n} samples leaves {n - n_val} for training and {n_val} for "
                         "validation; both must be at least 1", "--val-split")
    perm = rng.permutation(n)
    return X[perm[n_val:]], y[perm[n_val:]], X[perm[:n_val]], y[perm[:n_val]]


def build_estimator(args, n_train: int, sharded: bool = False):
    """The estimator of ``--solver`` with the command line's parameters (checked against n);
    with ``sharded``, its :mod:`kops.distributed` version (the default group)."""
    cls = _solvers()[args.solver]
    if sharded:
        from ..distributed import sharded_estimator

        cls = sharded_estimator(cls)
    kw = dict(kernel=args.kernel, bandwidth=args.bandwidth, ridge=args.ridge, task=args.task, device=args.device,
              memory_budget=args.memory_budget, random_state=args.seed)
    if args.dtype is not None:
        kw["dtype"] = args.dtype
    if args.solver == "eigenpro2":
        if args.centers is not None:
            raise UsageError("eigenpro2 uses the training points as centers; drop --centers or pick "
                             "--solver eigenpro4", "--centers")
    else:
        if args.centers is not None and args.centers > n_train:
            raise UsageError(f"{args.centers} centers but only {n_train} training points "
                             f"(after the validation split); pass at most {n_train}", "--centers")
        if args.centers is not None and args.centers < 2:
            raise UsageError("the projected solvers need at least 2 centers", "--centers")
        kw["centers"] = args.centers
    if args.solver != "exact":
        kw.update(epochs=args.epochs, batch_size=args.batch_size)
    elif args.checkpoint:
        raise UsageError("the exact solver has no epochs to checkpoint; use an iterative --solver", "--checkpoint")
    return cls(**kw)


def _checkpointer(args):
    if args.resume and not args.checkpoint:
        raise UsageError("--resume needs --checkpoint DIR", "--resume")
    if args.checkpoint_every and not args.checkpoint:
        raise UsageError("--checkpoint-every needs --checkpoint DIR", "--checkpoint-every")
    if not args.checkpoint:
        return None
    from ..solvers.checkpoint import Checkpointer

    unit, value = args.checkpoint_every or ("seconds", 60.0)
    try:
        ckpt = Checkpointer(args.checkpoint, every=value if unit == "batches" else None,
                            every_seconds=float(value) if unit == "seconds" else None, resume=args.resume)
    except ValueError as exc:
        raise UsageError(str(exc), "--checkpoint") from None
    return ckpt


def _summary(model, X_val, y_val, seconds: float, out, ckpt=None) -> dict:
    summary = {"event": "summary", "estimator": type(model).__name__, "model": str(out),
               "fit_seconds": seconds, "epochs": len(getattr(model, "history_", []))}
    if ckpt is not None:
        pos = ckpt.resumed_from
        summary["checkpoint"] = str(ckpt.directory)
        summary["resumed_from"] = None if pos is None else {"epoch": pos.epoch, "batch": pos.batch}
    if X_val is not None:
        summary["val_" + ("accuracy" if model._is_classifier() else "r2")] = model.score(X_val, y_val)
    for key in ("batch_size_", "step_size_", "projection_interval_", "n_projections_"):
        if hasattr(model, key):
            summary[key.rstrip("_")] = getattr(model, key)
    summary["centers"] = int(model.centers_.shape[0])
    return summary


def fit_arrays(args, X, y, X_val, y_val):
    """Fit, checkpoint, save, report: the body of ``kops fit`` on arrays. Returns the model
    and the summary record."""
    if args.plot:
        from .plot import check_plotting

        check_plotting()  # a missing matplotlib fails now, not after the fit
    sharded = getattr(args, "sharded", False)
    model = build_estimator(args, X.shape[0], sharded)
    reporter = FitReporter(args.epochs, quiet=args.quiet, as_json=args.json)
    reporter.attach(model)
    ckpt = _checkpointer(args)
    if ckpt is not None:
        model._checkpointer = ckpt
    _say(args, f"kops fit: {type(model).__name__}, {X.shape[0]} training points, d = {X.shape[1]}"
         + (f", {X_val.shape[0]} validation points" if X_val is not None else "")
         + (f", sharded over {model_world(args)} processes" if sharded else "")
         + (f", checkpoints in {args.checkpoint}" + (" (at epoch ends)" if sharded else "")
            if ckpt is not None else ""))
    t0 = time.perf_counter()
    try:
        model.fit(X, y, X_val, y_val)
    finally:
        reporter.close()
        model.__dict__.pop("_checkpointer", None)
        model.__dict__.pop("_progress_factory", None)
        if "callback" in model.get_params(deep=False):
            model.set_params(callback=None)
    seconds = time.perf_counter() - t0
    if sharded:  # the single-process model (a collective); rank 0 reports and saves it
        from .distributed import silent_rank

        model = model.gathered()
        if silent_rank():
            return model, None
    if ckpt is not None and ckpt.resumed_from is not None:
        pos = ckpt.resumed_from
        _say(args, f"resumed from {args.checkpoint} at epoch {pos.epoch}, batch {pos.batch}")
    model.save(args.out)
    summary = _summary(model, X_val, y_val, seconds, args.out, ckpt)
    if args.json:
        json_line(summary)
    if args.metrics:
        Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
        Path(args.metrics).write_text(json.dumps({"history": model.history_, "summary": summary}, indent=1))
    if args.plot:
        from .plot import plot_history

        plot_history(model.history_, args.plot, f"{type(model).__name__}, {X.shape[0]} points")
    return model, summary


def model_world(args) -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def fit(args) -> int:
    from .distributed import join, silent_rank, under_torchrun

    args.sharded = under_torchrun()
    if args.sharded:
        join(args)  # refuses what the sharded fit cannot honour; ranks > 0 go quiet
    X, y = load_data(args.data, target=args.target, y_path=args.y_file, fmt=args.format)
    if args.val:
        X_val, y_val = load_data(args.val, target=args.target, fmt=args.format, n_features=X.shape[1])
        if X_val.shape[1] != X.shape[1]:
            raise UsageError(f"{X_val.shape[1]} features but DATA has {X.shape[1]}", "--val")
    elif args.val_split > 0:
        X, y, X_val, y_val = _split(X, y, args.val_split, args.seed)
    else:
        X_val = y_val = None
    model, summary = fit_arrays(args, X, y, X_val, y_val)
    if args.sharded and silent_rank():
        return 0
    metric = next((k for k in summary if k.startswith("val_")), None)
    _say(args, f"fit {summary['fit_seconds']:.2f} s" + (f", {metric} {summary[metric]:.4f}" if metric else "")
         + f"; model saved to {args.out}" + (f", metrics in {args.metrics}" if args.metrics else "")
         + (f", plot in {args.plot}" if args.plot else ""))
    return 0


def _load(args):
    from ..serialization import load_model

    try:
        return load_model(args.model, device=args.device)
    except FileNotFoundError as exc:
        raise UsageError(str(exc), "MODEL") from None


def predict(args) -> int:
    model = _load(args)
    X, _ = load_data(args.data, target=args.target, y_path=args.y_file, fmt=args.format,
                     n_features=model.n_features_in_, need_y=False)
    if X.shape[1] != model.n_features_in_:
        raise UsageError(f"{args.data!r} has {X.shape[1]} features, the model {model.n_features_in_} "
                         "(pass --target COL to drop a target column)", "DATA")
    pred = model.predict(X)
    if args.out:
        write_predictions(args.out, pred)
    else:
        for row in np.asarray(pred).reshape(len(pred), -1):
            print(",".join(str(v) for v in row.tolist()))
    return 0


def metrics_of(model, X, y) -> dict:
    """Accuracy (classification) or MSE and R^2 (regression) of a fitted model on (X, y)."""
    out = {"samples": int(X.shape[0])}
    if model._is_classifier():
        out["accuracy"] = model.score(X, y)
        return out
    pred = np.asarray(model.predict(X), dtype=np.float64)
    truth = np.asarray(y, dtype=np.float64).reshape(pred.shape)
    out["mse"] = float(np.mean((pred - truth) ** 2))
    out["r2"] = model.score(X, y)
    return out


def evaluate(args) -> int:
    model = _load(args)
    X, y = load_data(args.data, target=args.target, y_path=args.y_file, fmt=args.format,
                     n_features=model.n_features_in_)
    if X.shape[1] != model.n_features_in_:
        raise UsageError(f"{args.data!r} has {X.shape[1]} features, the model {model.n_features_in_}", "DATA")
    metrics = metrics_of(model, X, y)
    if args.json:
        json_line({"event": "evaluate", "model": args.model, **metrics})
    else:
        print("  ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return 0


def info(args) -> int:
    from ..info import format_info
    from ..info import info as report

    print(json.dumps(report(), indent=2) if args.json else format_info())
    return 0


def demo(args) -> int:
    from ..demo import run_demo

    return run_demo(n=args.n, d=args.d, c=args.c)


def bench(args) -> int:
    from .bench import run_bench

    if args.plot:
        from .plot import check_plotting

        check_plotting()
    result = run_bench(n=args.n, ds=args.d, c=args.c, kernel=args.kernel, repeats=args.repeats,
                       device=args.device, log=None if args.quiet else sys.stderr)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        if not args.quiet:
            print(f"results in {args.out}", file=sys.stderr)
    else:
        print(text)
    if args.plot:
        from .plot import plot_bench

        plot_bench(result["rows"], args.plot, f"K(x, z) @ v, {args.kernel}, n = m = {args.n}, c = {args.c}")
        if not args.quiet:
            print(f"plot in {args.plot}", file=sys.stderr)
    return 0


def train(args) -> int:
    from .main_job import run_main_job

    return run_main_job(args)
