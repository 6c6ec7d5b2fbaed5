"""EigenPro 2: preconditioned SGD for kernel regression with the training points as centers.

Solves ``(K(X, X) + r I) alpha = Y`` (``r`` = ridge, default 0: interpolation). Each epoch
visits random batches ``B`` of ``m`` points::

    g         = K(X_B, X) alpha + r alpha_B - Y_B        # one fused product, m x c
    alpha[B] -= eta g
    alpha[S] += eta E D E^T K(X_S, X_B) g                # one fused product, s x c

with the Nystrom preconditioner (X_S, E, D, eta) of :mod:`kops.solvers.preconditioner`.
Cost per batch O(m n d) kernel work; memory O(n (d + c)) plus the O(s q) preconditioner.
"""
from __future__ import annotations

import time

import torch

from ..config import get_memory_budget
from ..ops import kmv
from ._utils import Progress, batches, default_count
from .base import KernelModel
from .preconditioner import NystromPreconditioner

__all__ = ["EigenPro2", "eigenpro2_epoch", "nystrom_sample", "batch_size_for"]

#: upper limit of the default batch size (larger batches do not converge faster per epoch)
MAX_BATCH = 10_000


def nystrom_sample(n: int, n_nystrom, n_components, generator, name_s="n_nystrom",
                   name_q="n_components"):
    """Indices S of the Nystrom sample and the clipped (s, q).

    ``s`` defaults to min(3000, n); a user value above n is clipped with a warning.
    ``q`` defaults to min(150, s - 1); a user value >= s raises ValueError.
    """
    s = default_count(n_nystrom, 3000, n, name_s)
    if s < 2:
        raise ValueError(f"the Nystrom preconditioner needs at least 2 points, got {name_s} = {s}")
    if n_components is not None and not isinstance(n_components, bool) and isinstance(n_components, int) \
            and n_components >= s:
        raise ValueError(f"{name_q} must be smaller than {name_s} (s = {s}), got {n_components}")
    q = default_count(n_components, 150, s - 1, name_q)
    idx = torch.randperm(n, generator=generator)[:s]
    return idx, s, q


def batch_size_for(precond: NystromPreconditioner, n: int, batch_size, bytes_per_row: int, budget: int,
                   name="batch_size") -> int:
    """The batch size: the user's (clipped to n with a warning) or min(m*, 10000, n, budget)."""
    cap = max(1, budget // max(1, bytes_per_row))
    if batch_size is None:
        return int(max(1, min(int(precond.critical_batch_size), MAX_BATCH, n, cap)))
    return default_count(batch_size, n, n, name)


def eigenpro2_epoch(x, targets, weights, precond, nystrom_idx, batch_size, eta, generator, *,
                    ridge=0.0, kernel=None, progress=None):
    """One EigenPro 2 epoch on ``(K(x, x) + ridge I) weights = targets``, in place on ``weights``.

    Parameters
    ----------
    x : Tensor (n, d)
        Points, which are also the centers.
    targets : Tensor (n, c)
    weights : Tensor (n, c)
        Updated in place.
    precond : NystromPreconditioner
        Built on ``x[nystrom_idx]``.
    nystrom_idx : Tensor (s,), long, on x's device
    batch_size : int
    eta : float
        ``precond.step_size(batch_size)``.
    generator : torch.Generator
        Batch order.
    """
    kernel = precond.kernel if kernel is None else kernel
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator).to(x.device)
    done = 0
    for b in batches(perm, batch_size):
        xb = x[b]
        g = kmv(xb, x, weights, kernel)
        g -= targets[b]
        if ridge:
            g += ridge * weights[b]
        corr = precond.correction(xb, g)
        weights.index_add_(0, b, g, alpha=-eta)
        weights.index_add_(0, nystrom_idx, corr, alpha=eta)
        done += b.shape[0]
        if progress is not None:
            progress.update(done)


class EigenPro2(KernelModel):
    """EigenPro 2 kernel regression / classification with centers = training points.

    Fits ``f(x) = K(x, X) alpha`` by solving ``(K(X, X) + ridge I) alpha = Y`` with
    Nystrom-preconditioned SGD (module docstring). Without ridge it converges to the
    interpolating solution, the same as :class:`ExactKernelRidge`.

    Parameters
    ----------
    kernel : str or kops.Kernel, default "laplacian"
        A kernel object or a name ("gaussian", "laplacian", "matern32", "matern52").
    bandwidth : float, optional
        With a kernel name; None takes the median pairwise distance of (a sample of) X.
    epochs : int, default 10
    batch_size : int, optional
        m; default ``min(m*, 10000, n)`` with m* the critical batch size of the
        preconditioner (and within the memory budget). Clipped to n with a warning.
    n_nystrom : int, optional
        s, the Nystrom sample size; default min(3000, n); clipped to n with a warning.
    n_components : int, optional
        q, the damped eigendirections; default min(150, s - 1); must be < s.
    ridge : float, default 0
        r >= 0 in ``(K + r I) alpha = Y``.
    task : {"auto", "regression", "classification"}
        See :mod:`kops.solvers.base`.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    dtype : {"float32", "float64"} or torch dtype, default float32
        Training dtype; the eigensystem is always float64.
    random_state : int, torch.Generator or None
        Seeds the Nystrom sample, the batch order and the eigensolver start.
    memory_budget : int or str, optional
        Bytes for temporaries (default :func:`kops.get_memory_budget`); bounds the batch.
    eig_method : {"auto", "dense", "subspace"}
        Eigensolver path (:func:`kops.solvers.top_eigensystem`).
    callback : callable, optional
        ``callback(estimator, record)`` after each epoch with that epoch's metrics
        record; returning True stops training.
    verbose : int, default 0
        1: one line of metrics per epoch on stderr, and a progress bar when stderr is a
        terminal.

    Attributes
    ----------
    centers_ : Tensor (n, d)
        The training points.
    weights_ : Tensor (n, c)
    preconditioner_ : NystromPreconditioner
    batch_size_ : int
    step_size_ : float
    history_ : list of dict
        Per-epoch metrics (see :class:`kops.solvers.base.KernelModel`).
    """

    def __init__(self, kernel="laplacian", bandwidth=None, *, epochs=10, batch_size=None, n_nystrom=None,
                 n_components=None, ridge=0.0, task="auto", device=None, dtype="float32", random_state=None,
                 memory_budget=None, eig_method="auto", callback=None, verbose=0):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.epochs = epochs
        self.batch_size = batch_size
        self.n_nystrom = n_nystrom
        self.n_components = n_components
        self.ridge = ridge
        self.task = task
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.memory_budget = memory_budget
        self.eig_method = eig_method
        self.callback = callback
        self.verbose = verbose

    def _fit(self, X, Y):
        epochs = check_epochs(self.epochs)
        ridge = check_ridge(self.ridge)
        n, d = X.shape
        c = Y.shape[1]
        idx, s, q = nystrom_sample(n, self.n_nystrom, self.n_components, self.generator_)
        idx = idx.to(self.device_)
        self.preconditioner_ = P = NystromPreconditioner(X[idx], self.kernel_, n_components=q, ridge=ridge,
                                                         eig_method=self.eig_method, generator=self.generator_)
        bytes_row = X.element_size() * (d + 4 * c)
        m = batch_size_for(P, n, self.batch_size, bytes_row, get_memory_budget(self.device_) // 4)
        self.batch_size_ = m
        self.step_size_ = eta = P.step_size(m, n)
        self.centers_ = X
        self.weights_ = torch.zeros(n, c, dtype=X.dtype, device=X.device)
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            progress = Progress(n, f"EigenPro2 epoch {epoch}", bool(self.verbose))
            eigenpro2_epoch(X, Y, self.weights_, P, idx, m, eta, self.generator_, ridge=ridge, progress=progress)
            progress.close()
            if self._end_epoch(epoch, time.perf_counter() - t0):
                break
        return self


def check_epochs(epochs) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    return epochs


def check_ridge(ridge) -> float:
    try:
        r = float(ridge)
    except (TypeError, ValueError):
        raise ValueError(f"ridge must be a number >= 0, got {ridge!r}") from None
    if not r >= 0 or r == float("inf"):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    return r
