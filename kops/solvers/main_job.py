"""The main job (``python -m kops train``): EigenPro 4 on scikit-learn's bundled digits data.

Trains :class:`kops.EigenPro4` (p = 1000 centers drawn from the training split) on the 8x8
digits (1797 images, 10 classes; pixel values scaled to [0, 1]; a stratified 80/20 split),
prints training and test accuracy after every epoch, then fits :class:`kops.ExactKernelRidge`
on the same centers and kernel and prints its accuracy and time for comparison.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .eigenpro4 import EigenPro4
from .exact import ExactKernelRidge


def load_digits_split(seed: int = 0):
    """(X_train, X_test, y_train, y_test) of the bundled digits data, X scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)


def run_train(epochs: int = 5, centers: int = 1000, kernel: str = "laplacian", bandwidth: float = 10.0,
              batch_size: int | None = 256, device: str | None = None, seed: int = 0) -> int:
    """Train EigenPro 4 on digits and compare with the exact solver; returns an exit status."""
    start = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        Xtr, Xte, ytr, yte = load_digits_split(seed)
    except ImportError:
        print("kops train needs scikit-learn for its bundled digits data: pip install scikit-learn")
        return 1
    rng = np.random.default_rng(seed)
    Z = Xtr[rng.permutation(len(Xtr))[:centers]]
    print(f"kops train: EigenPro4 on digits (n_train = {len(Xtr)}, n_test = {len(Xte)}, d = {Xtr.shape[1]}, "
          f"10 classes), {kernel} kernel, bandwidth {bandwidth}, p = {len(Z)} centers, {device}")

    def report(model, record):
        print(f"  epoch {record['epoch']:2d}: train accuracy {100 * record['train_accuracy']:6.2f}%  "
              f"test accuracy {100 * record['val_accuracy']:6.2f}%  ({record['seconds']:.2f} s)", flush=True)
        return False

    model = EigenPro4(kernel, bandwidth, centers=Z, epochs=epochs, batch_size=batch_size, device=device,
                      random_state=seed, callback=report)
    t0 = time.perf_counter()
    model.fit(Xtr, ytr, Xte, yte)
    fit_s = time.perf_counter() - t0
    ep4_acc = model.score(Xte, yte)
    P = model.preconditioner_
    print(f"  EigenPro4: batch {model.batch_size_}, T = {model.projection_interval_} batches per projection, "
          f"{model.n_projections_} projections, preconditioner s = {P.n_nystrom}, q = {P.n_components}, "
          f"m* = {P.critical_batch_size:.0f}; fit {fit_s:.2f} s")
    t0 = time.perf_counter()
    exact = ExactKernelRidge(kernel, bandwidth, centers=Z, device=device).fit(Xtr, ytr)
    exact_s = time.perf_counter() - t0
    exact_acc = exact.score(Xte, yte)
    print(f"  exact solver (Cholesky, float64, same centers): test accuracy {100 * exact_acc:6.2f}%  "
          f"({exact_s:.2f} s)")
    print(f"  EigenPro4 test accuracy {100 * ep4_acc:.2f}% vs exact {100 * exact_acc:.2f}% "
          f"(difference {100 * (ep4_acc - exact_acc):+.2f} points)")
    print(f"total time {time.perf_counter() - start:.1f} s")
    return 0
