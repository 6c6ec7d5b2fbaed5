"""The projection onto the centers and the set-up shared by EigenPro 3 and 4.

* :class:`CenterProjector`: ``w ~ K(Z, Z)^{-1} h`` by preconditioned EigenPro iterations on
  the centers, stopped by tolerance: the relative residual ``||K(Z, Z) w - h|| / ||h||``
  falls below ``tol`` or ``max_steps`` steps have run.
* :class:`ProjectedEigenPro`: the estimator base of EigenPro 3 / 4 (centers, data
  preconditioner, projector, batch and step size).

The projection's own step follows the same rule as the outer one
(:mod:`kops.solvers.stepsize`): for the full batch of p centers the residual evolves as
``g <- (I - eta G) g`` with ``G = K_ZZ - K_ZS E D E^T K_SZ`` (p x p, symmetric), and
``eta = STEP_FACTOR / lambda_max(G)`` with ``lambda_max(G)`` measured by power iteration
(exactly ``p mu_{q+1}`` when the sample is all of Z).

``K(Z, Z)`` is formed once (in the training dtype) when ``p^2`` entries fit half the memory
budget; every projection step is then two GEMMs, so the projection is cheap and accurate.
Otherwise each step is fused products (``O(p^2 d)``), and when p exceeds the batch cap
(10,000) steps are EigenPro 2 epochs over mini-batches.
"""
from __future__ import annotations

import torch

from ..config import get_memory_budget
from ..ops import kernel_matrix, kmv
from ._sampling import nystrom_sample, select_centers
from ._validation import default_count
from .base import KernelModel
from .iterations import eigenpro2_epoch
from .preconditioner import STEP_FACTOR, NystromPreconditioner, top_eigenvalue
from .stepsize import MAX_BATCH, batch_size_for, measured_step

__all__ = ["CenterProjector", "ProjectedEigenPro", "PROJECTION_TOL"]

#: default relative residual of each projection
PROJECTION_TOL = 1e-3


def _form(Z, kernel, budget):
    """``K(Z, Z)`` formed in row tiles of at most ``budget`` bytes of temporaries."""
    p = Z.shape[0]
    K = torch.empty(p, p, dtype=Z.dtype, device=Z.device)
    rows = max(1, budget // max(1, 4 * p * Z.element_size()))
    for r0 in range(0, p, rows):
        K[r0 : r0 + rows] = kernel_matrix(Z[r0 : r0 + rows], Z, kernel)
    return K


class CenterProjector:
    """Approximately solve ``K(Z, Z) w = h`` (module docstring).

    Parameters
    ----------
    Z : Tensor (p, d)
    preconditioner : NystromPreconditioner
        Built on ``Z[nystrom_idx]``.
    nystrom_idx : Tensor (s,), long
    generator : torch.Generator
    budget : int
        Bytes: ``K(Z, Z)`` is formed when ``p^2`` entries fit half of it.
    tol : float
        Relative residual at which a projection stops.
    max_steps : int, optional
        Most steps per projection (default 100 with ``K(Z, Z)`` formed, 8 without).

    Attributes
    ----------
    formed : bool
    step_size : float
    steps_ : list of int
        Steps taken by each projection.
    residuals_ : list of float
        Relative residual at the end of each projection.
    """

    def __init__(self, Z, preconditioner, nystrom_idx, *, generator, budget, tol=PROJECTION_TOL, max_steps=None):
        p = Z.shape[0]
        self.Z, self.P, self.idx = Z, preconditioner, nystrom_idx
        self.kernel = preconditioner.kernel
        self.generator = generator
        self.tol = float(tol)
        self.formed = p * p * Z.element_size() <= budget // 2
        self.K = _form(Z, self.kernel, budget // 2) if self.formed else None
        self.max_steps = default_count(max_steps, 100 if self.formed else 8, 10**6, "projection_steps")
        self.full_batch = p <= MAX_BATCH
        if self.full_batch:
            top = top_eigenvalue(self._G, p, dtype=Z.dtype, device=Z.device, generator=generator, iterations=16)
            self.step_size = STEP_FACTOR / top if top > 0 else 1.0 / p
            self.batch_size = p
        else:
            self.batch_size = batch_size_for(preconditioner, p, None, Z.element_size() * (Z.shape[1] + 8),
                                             budget // 4)
            xb = Z[torch.randperm(p, generator=generator)[: self.batch_size].to(Z.device)]
            self.step_size, _ = measured_step(xb, preconditioner, rho=0.0, budget=budget // 4, generator=generator)
        self.steps_, self.residuals_ = [], []

    # products with K(Z, Z) and its rows at the sample
    def _K(self, V):
        return self.K @ V if self.formed else kmv(self.Z, self.Z, V, self.kernel)

    def _KS(self, V):  # K(X_S, Z) V
        return self.K[self.idx] @ V if self.formed else kmv(self.Z[self.idx], self.Z, V, self.kernel)

    def _G(self, V):
        KV = self._K(V)
        corr = self.P.coefficients(self.P.project(KV[self.idx]))
        return KV - self._K_cols(corr)

    def cols(self, idx, a):
        """``K(Z, Z[idx]) a``."""
        return self.K[:, idx] @ a if self.formed else kmv(self.Z, self.Z[idx], a, self.kernel)

    def _K_cols(self, a):  # K(Z, X_S) a
        return self.K[:, self.idx] @ a if self.formed else kmv(self.Z, self.Z[self.idx], a, self.kernel)

    def rows(self, idx, alpha):
        """``K(Z[idx], Z) alpha``."""
        return self.K[idx] @ alpha if self.formed else kmv(self.Z[idx], self.Z, alpha, self.kernel)

    def rows_of_sample(self, idx, a):
        """``K(Z[idx], Z[idx]) a``."""
        if self.formed:
            return self.K[idx][:, idx] @ a
        return kmv(self.Z[idx], self.Z[idx], a, self.kernel)

    def solve(self, h: torch.Tensor) -> torch.Tensor:
        """w (p, c) with ``||K(Z, Z) w - h|| <= tol ||h||`` (or ``max_steps`` steps), from w = 0."""
        w = torch.zeros_like(h)
        norm = float(h.norm())
        if norm == 0.0:
            return w
        eta = self.step_size
        rel, steps = 1.0, 0
        if self.full_batch:
            g = -h  # the residual K w - h
            while steps < self.max_steps:
                # w -= eta (g - S E D E^T K_S g): the preconditioned full-batch step
                corr = self.P.coefficients(self.P.project(self._KS(g)))
                w.sub_(g, alpha=eta)
                w.index_add_(0, self.idx, corr, alpha=eta)
                g = self._K(w) - h
                steps += 1
                rel = float(g.norm()) / norm
                if rel <= self.tol:
                    break
        else:
            while steps < self.max_steps:
                seen = eigenpro2_epoch(self.Z, h, w, self.P, self.idx, self.batch_size, eta, self.generator,
                                       kernel=self.kernel)
                steps += 1
                rel = (seen ** 0.5) / norm  # the residual met during the epoch
                if rel <= self.tol:
                    break
        self.steps_.append(steps)
        self.residuals_.append(rel)
        return w


class ProjectedEigenPro(KernelModel):
    """Common parameters and set-up of :class:`EigenPro3` and :class:`EigenPro4`."""

    def _setup_projected(self, X, Y, ridge):
        """Centers, data preconditioner, projector, batch size and step size."""
        n, d = X.shape
        c = Y.shape[1]
        gen = self.generator_
        Z, _ = select_centers(self.centers, X, gen)
        p = Z.shape[0]
        # The Nystrom sample is drawn from the centers: then the preconditioner maps the span
        # of the centers to itself, commutes with the projection, and the iteration's fixed
        # point is exactly the least-squares model on Z (a sample from outside span Z would
        # bias it). With centers drawn from X it is also a random sample of X, so its spectrum
        # estimates the data's. The same eigensystem serves the projection (without shift).
        idx, s, q = nystrom_sample(p, self.n_nystrom, self.n_components, gen)
        idx = idx.to(self.device_)
        budget = get_memory_budget(self.device_)
        P = NystromPreconditioner(Z[idx], self.kernel_, n_components=q, shift=ridge / n, diag_ridge=ridge / n,
                                  eig_method=self.eig_method, generator=gen)
        m = batch_size_for(P, n, self.batch_size, X.element_size() * (d + 4 * c), budget // 4)
        # The projection solves K(Z, Z) w = h: no ridge, so its own (unshifted) preconditioner.
        P_proj = P if not ridge else NystromPreconditioner(Z[idx], self.kernel_, n_components=q,
                                                           eigensystem=P.eigensystem)
        tol = getattr(self, "projection_tol", PROJECTION_TOL)
        projector = CenterProjector(Z, P_proj, idx, generator=gen, budget=budget, tol=tol,
                                    max_steps=getattr(self, "projection_steps", None))
        xb = X[torch.randperm(n, generator=gen)[:m].to(X.device)]
        eta, top = measured_step(xb, P, rho=m * ridge / n, budget=budget // 2, generator=gen, centers=Z,
                                 sample_in_centers=idx, full_batch=m >= n)
        self.preconditioner_ = P
        self.projector_ = projector
        self.batch_size_ = m
        self.step_size_ = eta
        self.lambda_max_ = top
        self.centers_ = Z
        M = projector.cols(idx, P.ED)  # K(Z, X_S) E D: the correction's values on the centers
        return Z, idx, P, M, projector, m
