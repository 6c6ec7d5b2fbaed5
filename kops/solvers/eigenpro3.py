"""EigenPro 3: projected preconditioned SGD for a kernel model on general centers Z.

With the Nystrom preconditioner (X_S, E, D, eta) and ``M = K(Z, X_S) E D``::

    each batch B:
        g     = K(X_B, Z) alpha - Y_B                      # m x c
        h     = K(Z, X_B) g - M E^T K(X_S, X_B) g          # p x c, ONE fused call on [Z; X_S]
        theta ~ K(Z, Z)^{-1} h                             # EigenPro 2 epochs on the centers
        alpha -= eta theta

The projection costs O(p^2 d) per batch, which is what EigenPro 4 amortises.

The Nystrom sample X_S is drawn from the centers (a random sample of X when the centers
are): the preconditioner then maps span{K(., z)} to itself and commutes with the
projection, so the fixed point is exactly the least-squares model on Z. (With X_S drawn
from X outside span Z, the fixed point ``Pi_Z P grad = 0`` differs from ``Pi_Z grad = 0``.)
The same eigensystem, with its own step size, preconditions the projection's EigenPro 2.
"""
from __future__ import annotations

import time

import torch

from ..ops import kmv
from ._utils import Progress, batches
from .eigenpro2 import check_epochs, check_ridge
from .projection import ProjectedEigenPro

__all__ = ["EigenPro3"]


class EigenPro3(ProjectedEigenPro):
    """EigenPro 3 kernel regression / classification on centers Z.

    Converges to the least-squares kernel model on the centers,
    ``argmin_alpha 1/2 ||K(X, Z) alpha - Y||^2 + ridge/2 alpha^T K(Z, Z) alpha``
    (:class:`kops.ExactKernelRidge` with the same centers).

    Parameters
    ----------
    kernel, bandwidth, epochs, batch_size, n_nystrom, n_components, task, device, dtype,
    random_state, memory_budget, eig_method, callback, verbose
        As in :class:`kops.EigenPro2` (n_nystrom / n_components: the data preconditioner's).
    centers : int, array (p, d) or None
        An int p picks p random training points (p > n is an error); None picks
        min(10000, n).
    projection_epochs : int, default 2
        EigenPro 2 epochs of each inexact projection (each O(p^2 d)).
    ridge : float, default 0
        The ridge term of the objective above.

    Attributes
    ----------
    centers_ : Tensor (p, d)
    weights_ : Tensor (p, c)
    preconditioner_ : NystromPreconditioner
        The Nystrom preconditioner (its sample drawn from the centers).
    projector_ : CenterProjector
        The projection's solver with its preconditioner from Z.
    batch_size_, step_size_, history_
    """

    def __init__(self, kernel="laplacian", bandwidth=None, *, centers=None, epochs=5, batch_size=None,
                 n_nystrom=None, n_components=None, projection_epochs=2, ridge=0.0, task="auto", device=None,
                 dtype="float32", random_state=None, memory_budget=None, eig_method="auto", callback=None,
                 verbose=0):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.centers = centers
        self.epochs = epochs
        self.batch_size = batch_size
        self.n_nystrom = n_nystrom
        self.n_components = n_components
        self.projection_epochs = projection_epochs
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
        inner = self._projection_epochs()
        Z, idx, P, M, projector, m = self._setup_projected(X, Y)
        n, p, c = X.shape[0], Z.shape[0], Y.shape[1]
        ZS = torch.cat([Z, P.x])  # [Z; X_S] once, so h is one fused product per batch
        eta = self.step_size_
        self.weights_ = alpha = torch.zeros(p, c, dtype=X.dtype, device=X.device)
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            progress = Progress(n, f"EigenPro3 epoch {epoch}", bool(self.verbose))
            perm = torch.randperm(n, generator=self.generator_).to(X.device)
            done = 0
            for b in batches(perm, m):
                xb = X[b]
                g = kmv(xb, Z, alpha, self.kernel_)
                g -= Y[b]
                h = self._preconditioned_on_centers(P, ZS, p, M, xb, g)
                if ridge:  # the ridge gradient (m/n) r f, preconditioned like the data term
                    h += (ridge * b.shape[0] / n) * self._preconditioned_on_centers(P, ZS, p, M, Z, alpha)
                alpha.sub_(projector.solve(h, inner), alpha=eta)
                done += b.shape[0]
                progress.update(done)
            progress.close()
            if self._end_epoch(epoch, time.perf_counter() - t0):
                break
        return self
