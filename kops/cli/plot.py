"""Plots of the command line (matplotlib, the kops[plot] extra), written as PNG files.

* :func:`plot_history`: the train / validation metric of a fit against the epoch and
  against the elapsed time (1000 x 400 pixels).
* :func:`plot_bench`: ``kops bench``'s throughput (kernel evaluations per second) per
  backend against d, with the floor line of the measured GEMM rate (1000 x 400 pixels).
"""
from __future__ import annotations

from .errors import require

__all__ = ["plot_history", "plot_bench", "SIZE_INCHES", "DPI", "check_plotting"]

SIZE_INCHES, DPI = (10.0, 4.0), 100


def check_plotting():
    """pyplot with the non-interactive backend, or UsageError naming the extra."""
    matplotlib = require("matplotlib", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _metric(history):
    if any("train_accuracy" in r or "val_accuracy" in r for r in history):
        return "accuracy", ("train_accuracy", "val_accuracy")
    return "MSE", ("train_mse", "val_mse")


def plot_history(history: list[dict], path, title: str = "") -> None:
    """Train / validation metric against epoch (left) and elapsed seconds (right)."""
    plt = check_plotting()
    label, keys = _metric(history)
    fig, axes = plt.subplots(1, 2, figsize=SIZE_INCHES, dpi=DPI)
    for ax, x_key, x_label in ((axes[0], "epoch", "epoch"), (axes[1], "elapsed", "time since fit start (s)")):
        for key in keys:
            points = [(r[x_key], r[key]) for r in history if key in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=key.replace("_", " "))
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
        if label == "MSE":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_bench(rows: list[dict], path, title: str = "") -> None:
    """Kernel evaluations per second against d, one line per backend, plus the floor."""
    plt = check_plotting()
    fig, ax = plt.subplots(figsize=SIZE_INCHES, dpi=DPI)
    for backend in sorted({r["backend"] for r in rows}):
        pts = sorted((r["d"], r["pairs_per_second"]) for r in rows if r["backend"] == backend)
        ax.plot(*zip(*pts), marker="o", label=backend)
    floor = sorted({(r["d"], r["floor_pairs_per_second"]) for r in rows if r.get("floor_pairs_per_second")})
    if floor:
        ax.plot(*zip(*floor), linestyle="--", color="black", label="floor (measured GEMM rate)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d (features)")
    ax.set_ylabel("kernel evaluations per second")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
