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

``K(Z, Z)`` (and its rows at the sample) is formed once (in the training dtype) when
``(p + s) p`` entries fit half the memory budget; every projection step is then two GEMMs.
Otherwise each step is fused products (``O(p^2 d)``), and when p exceeds the batch cap
(10,000) steps are EigenPro 2 epochs over mini-batches.
"""
from __future__ import annotations

import torch

from ..config import get_memory_budget
from ..ops import kernel_matrix, kmv
from ._sampling import nystrom_sample, select_centers
from ._validation import check_fraction, default_count
from .base import KernelModel
from .center_preconditioner import CholeskyProjector, SampleCorrection, SpanPreconditioner, cholesky_factor
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
        Most steps per projection (default 10 with ``K(Z, Z)`` formed, 4 without).

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
        s = nystrom_idx.shape[0]
        self.formed = (p + s) * p * Z.element_size() <= budget // 2
        self.K = _form(Z, self.kernel, budget // 2) if self.formed else None
        self.KS = self.K[nystrom_idx].contiguous() if self.formed else None  # K(X_S, Z), read every step
        self.max_steps = default_count(max_steps, 10 if self.formed else 4, 10**6, "projection_steps")
        self.full_batch = p <= MAX_BATCH
        if self.full_batch:
            top = top_eigenvalue(self._G, p, dtype=Z.dtype, device=Z.device, generator=generator,
                                 iterations=12 if self.formed else 6)
            self.step_size = STEP_FACTOR / top if top > 0 else 1.0 / p
            self.batch_size = p
        else:
            self.batch_size = batch_size_for(preconditioner, p, None, Z.element_size() * (Z.shape[1] + 8),
                                             budget // 4)
            xb = Z[torch.randperm(p, generator=generator)[: self.batch_size].to(Z.device)]
            self.step_size, _ = measured_step(xb, preconditioner, rho=0.0, rho1=0.0, budget=budget // 4, generator=generator)
        self.steps_, self.residuals_ = [], []

    # products with K(Z, Z) and its rows at the sample
    def _K(self, V):
        return self.K @ V if self.formed else kmv(self.Z, self.Z, V, self.kernel)

    def _KS(self, V):  # K(X_S, Z) V
        return self.KS @ V if self.formed else kmv(self.Z[self.idx], self.Z, V, self.kernel)

    def _G(self, V):
        KV = self._K(V)
        corr = self.P.coefficients(self.P.project(KV[self.idx]))
        return KV - (self.KS.T @ corr if self.formed else self._K_cols(corr))

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
    """Common parameters and set-up of :class:`EigenPro3` and :class:`EigenPro4`.

    Two set-ups, chosen by the memory budget:

    * ``8 p^2`` bytes fit a quarter of the budget (small and moderate p): a float64
      Cholesky factor of ``K(Z, Z)`` gives the span preconditioner (the data's top
      eigenfunctions on the span of the centers, from a sample of X) and exact projections
      (:mod:`kops.solvers.center_preconditioner`).
    * otherwise: EigenPro's Nystrom preconditioner on a sample of the centers and the
      iterative :class:`CenterProjector` (tolerance ``projection_tol``).
    """

    def _setup_projected(self, X, Y, ridge):
        """Centers, the correction on the centers, the projector, batch size and step size."""
        n, d = X.shape
        c = Y.shape[1]
        gen = self.generator_
        warm = self._warm_start_weights(X, Y)  # (centers, weights) of the previous fit, or None
        Z = warm[0] if warm is not None else select_centers(self.centers, X, gen)[0]
        self._warm_weights = None if warm is None else warm[1]
        p = Z.shape[0]
        budget = get_memory_budget(self.device_)
        tol = check_fraction(getattr(self, "projection_tol", PROJECTION_TOL), "projection_tol")
        # The Nystrom sample is drawn from the centers: then the preconditioner maps the span
        # of the centers to itself, commutes with the projection, and the iteration's fixed
        # point is exactly the least-squares model on Z (a sample from outside span Z would
        # bias it). With centers drawn from X it is also a random sample of X.
        idx, s, q = nystrom_sample(p, self.n_nystrom, self.n_components, gen, budget=budget)
        idx = idx.to(self.device_)
        self.span_preconditioner_ = 8 * p * p <= budget // 4
        if self.span_preconditioner_:
            L, jitter = cholesky_factor(Z, self.kernel_, budget // 4)
            data_idx, s_data, _ = nystrom_sample(n, self.n_nystrom, self.n_components, gen, budget=budget)
            corr = SpanPreconditioner(Z, X[data_idx.to(self.device_)], self.kernel_, q, L, shift=ridge / n,
                                      diag_ridge=ridge / n)
            corr.kernel = self.kernel_
            projector = CholeskyProjector(Z, self.kernel_, L, jitter)

            def inverse(v):
                return torch.cholesky_solve(v, L)
        else:
            P = NystromPreconditioner(Z[idx], self.kernel_, n_components=q, eig_method=self.eig_method,
                                      generator=gen)
            # The data correction is shifted by the ridge; the projection (K(Z, Z) w = h) is not.
            P_data = P if not ridge else NystromPreconditioner(Z[idx], self.kernel_, n_components=q,
                                                               shift=ridge / n, diag_ridge=ridge / n,
                                                               eigensystem=P.eigensystem)
            projector = CenterProjector(Z, P, idx, generator=gen, budget=budget, tol=tol,
                                        max_steps=getattr(self, "projection_steps", None))
            M = projector.cols(idx, P_data.ED)  # K(Z, X_S) E D: the correction's values on Z
            corr = SampleCorrection(P_data, idx, M)
            corr.kernel = self.kernel_
            inverse = None
        m = batch_size_for(corr, n, self.batch_size, X.element_size() * (d + 4 * c), budget // 4)
        xb = X[torch.randperm(n, generator=gen)[:m].to(X.device)]
        if inverse is not None:
            eta, top = measured_step(xb, corr, rho=m * ridge / n, rho1=ridge / n, budget=budget, generator=gen, centers=Z,
                                     correction=corr, inverse=inverse, full_batch=m >= n)
        else:  # the upper bound without the projection
            eta, top = measured_step(xb, P_data, rho=m * ridge / n, rho1=ridge / n, budget=budget, generator=gen,
                                     full_batch=m >= n)
        self._probe = (xb, corr, inverse)
        self.preconditioner_ = corr if self.span_preconditioner_ else P_data
        self.projector_ = projector
        self.batch_size_ = m
        self.step_size_ = eta
        self.lambda_max_ = top
        self.centers_ = Z
        return Z, corr, projector, m


    def _delayed_step(self, ridge, n):
        """EigenPro 4 with T > 1: the step must also hold between projections, where the
        pending part lives outside the span of the centers (the unprojected operator)."""
        xb, corr, inverse = self._probe
        if inverse is None:  # the sample set-up already measured the unprojected bound
            return self.step_size_
        m = xb.shape[0]
        eta, top = measured_step(xb, corr, rho=m * ridge / n, rho1=ridge / n,
                                 budget=get_memory_budget(self.device_) // 2, generator=self.generator_,
                                 centers=self.centers_, correction=corr, inverse=inverse, projected=False)
        if eta < self.step_size_:
            self.step_size_, self.lambda_max_ = eta, top
        return self.step_size_
