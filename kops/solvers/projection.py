"""Shared machinery of the projected solvers (EigenPro 3 and 4) with general centers Z.

* :func:`select_centers`: Z from an int (a random subset of X) or an array.
* :class:`CenterProjector`: the inexact projection ``w ~ K(Z, Z)^{-1} h`` by EigenPro 2
  epochs on the centers, with a Nystrom preconditioner drawn from Z.
* :class:`ProjectedEigenPro`: the estimator base holding the common parameters and set-up
  (the Nystrom preconditioner, ``M = K(Z, X_S) E D``, the projector).

The model these solvers converge to minimises
``1/2 ||K(X, Z) alpha - Y||^2 + ridge/2 alpha^T K(Z, Z) alpha``, i.e. the least-squares kernel
model on the centers (:class:`kops.ExactKernelRidge` with the same centers).
"""
from __future__ import annotations


import torch

from ..config import get_memory_budget
from ..ops import kmv
from ._utils import check_X, default_count
from .base import KernelModel
from .eigenpro2 import batch_size_for, eigenpro2_epoch, nystrom_sample
from .preconditioner import NystromPreconditioner

__all__ = ["select_centers", "CenterProjector", "ProjectedEigenPro"]


def select_centers(centers, X: torch.Tensor, generator, default: int = 10_000):
    """The centers Z (p, d) and, when drawn from X, their row indices.

    ``centers`` is None (min(default, n) random training points), an int p (p random
    training points; p > n raises ValueError) or an array (p, d).
    """
    n = X.shape[0]
    if centers is None:
        centers = min(default, n)
    if isinstance(centers, bool):
        raise ValueError(f"centers must be an int, an array (p, d) or None, got {centers!r}")
    if isinstance(centers, int) or (hasattr(centers, "ndim") and getattr(centers, "ndim") == 0):
        p = int(centers)
        if p < 2:
            raise ValueError(f"centers must be at least 2 (the projection needs a preconditioner), got {p}")
        if p > n:
            raise ValueError(f"centers={p} is larger than the number of training points n = {n}; "
                             "pass p <= n or an array of centers")
        idx = torch.randperm(n, generator=generator)[:p].to(X.device)
        return X[idx].contiguous(), idx
    Z = check_X(centers, "centers", X.device, X.dtype, d=X.shape[1])
    if Z.shape[0] < 2:
        raise ValueError(f"centers must hold at least 2 points, got shape {tuple(Z.shape)}")
    return Z, None


class CenterProjector:
    """Approximately solve ``K(Z, Z) w = h`` by EigenPro 2 epochs on the centers.

    Parameters
    ----------
    Z : Tensor (p, d)
    preconditioner : NystromPreconditioner
        Built on ``Z[nystrom_idx]`` (a sample of the centers).
    nystrom_idx : Tensor (s,), long
    generator : torch.Generator
    budget : int
        Bytes for one batch's temporaries.

    Each epoch costs O(p^2 d) kernel work and forms nothing of size p x p.
    """

    def __init__(self, Z, preconditioner, nystrom_idx, *, generator, budget):
        p = Z.shape[0]
        self.Z = Z
        self.preconditioner = preconditioner
        self.kernel = preconditioner.kernel
        self.idx = nystrom_idx
        self.batch_size = batch_size_for(preconditioner, p, None, Z.element_size() * (Z.shape[1] + 8), budget)
        self.step_size = preconditioner.step_size(self.batch_size, p)
        self.generator = generator

    def solve(self, h: torch.Tensor, epochs: int = 1) -> torch.Tensor:
        """w (p, c) with ``K(Z, Z) w ~ h``, starting from w = 0."""
        w = torch.zeros_like(h)
        for _ in range(epochs):
            eigenpro2_epoch(self.Z, h, w, self.preconditioner, self.idx, self.batch_size, self.step_size,
                            self.generator, kernel=self.kernel)
        return w


class ProjectedEigenPro(KernelModel):
    """Common parameters and set-up of :class:`EigenPro3` and :class:`EigenPro4`."""

    def _setup_projected(self, X, Y):
        """Centers, data preconditioner, M, the projector, batch size and step size."""
        n, d = X.shape
        c = Y.shape[1]
        gen = self.generator_
        Z, _ = select_centers(self.centers, X, gen)
        p = Z.shape[0]
        # The Nystrom sample is drawn from the centers: then the preconditioner maps the span
        # of the centers to itself, commutes with the projection, and the iteration's fixed
        # point is exactly the least-squares model on Z (a sample from outside span Z would
        # bias it). With centers drawn from X it is also a random sample of X, so the step
        # size bounds hold. The same eigensystem serves the projection's EigenPro 2 solver.
        idx, s, q = nystrom_sample(p, self.n_nystrom, self.n_components, gen)
        idx = idx.to(self.device_)
        budget = get_memory_budget(self.device_)
        P = NystromPreconditioner(Z[idx], self.kernel_, n_components=q, eig_method=self.eig_method, generator=gen)
        # M = K(Z, X_S) E D: the data correction's values on the centers, p x q.
        M = P.mixed(Z)
        projector = CenterProjector(Z, P, idx, generator=gen, budget=budget // 4)
        m = batch_size_for(P, n, self.batch_size, X.element_size() * (d + 4 * c), budget // 4)
        self.preconditioner_ = P
        self.projector_ = projector
        self.batch_size_ = m
        self.step_size_ = P.step_size(m, n)
        self.centers_ = Z
        return Z, idx, P, M, projector, m

    @staticmethod
    def _preconditioned_on_centers(P, ZS, p, M, x, v):
        """Values on Z of ``P K(., x) v``: ``K(Z, x) v - M E^T K(X_S, x) v`` (p x c).

        ``ZS`` is one buffer holding [Z; X_S], so both products are ONE fused call.
        """
        u = kmv(ZS, x, v, P.kernel)
        return u[:p] - M @ P.project(u[p:])

    def _projection_epochs(self) -> int:
        return default_count(self.projection_epochs, 1, 10**9, "projection_epochs")
