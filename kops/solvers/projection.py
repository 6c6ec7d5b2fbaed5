"""The projection onto the centers and the set-up shared by EigenPro 3 and 4.

* :class:`CenterProjector`: ``w ~ K(Z, Z)^{-1} h``, stopped by tolerance: the relative
  residual ``||K(Z, Z) w - h|| / ||h||`` falls below ``tol`` or ``max_steps`` steps have run.
* :class:`ProjectedEigenPro`: the estimator base of EigenPro 3 / 4 (centers, data
  preconditioner, projector, batch and step size).

The projection's solver, for the full batch of p centers (p <= 10,000, or ``K(Z, Z)``
formed): conjugate gradients (one CG per output column) preconditioned by the Nystrom
approximation of ``K(Z, Z)`` on the sample X_S of the centers,
``K_ZS K_SS^{-1} K_SZ = U S^2 U^T`` (U orthonormal p x q, from the sample's eigenpairs),
with ``P^{-1} = sigma_q^2 U S^{-2} U^T + (I - U U^T)``: the top q directions flattened to
``sigma_q^2``, the rest left alone (randomized Nystrom preconditioning). CG needs no step
size (no power iteration at set-up), minimises the error in the K-norm over its Krylov
space (so every projection is non-expansive, unlike a fixed-step iteration, which overshoots
where ``eta lambda > 1``), and converges as ``sqrt(kappa)`` instead of ``kappa``. One step
is one product with ``K(Z, Z)`` and two thin products with U.

``K(Z, Z)`` (and its rows at the sample) is formed once (in the training dtype) when
``(p + s) p`` entries fit half the memory budget; every CG step is then a GEMM. Otherwise
each step is a fused product (``O(p^2 d)``), and when p exceeds the batch cap (10,000)
steps are EigenPro 2 epochs over mini-batches of the centers.
"""
from __future__ import annotations

import torch

from ..config import get_memory_budget
from ..ops import kmv
from ._sampling import nystrom_sample, select_centers
from ._validation import check_fraction, default_count
from .base import KernelModel
from .conjugate_gradients import preconditioned_cg
from .dense import formed_kernel_matrix
from .center_preconditioner import CholeskyProjector, SampleCorrection, SpanPreconditioner, cholesky_factor
from .iterations import eigenpro2_epoch
from .preconditioner import NystromPreconditioner
from .stepsize import DIAG_ROWS, MAX_BATCH, batch_size_for, full_gradient_step_size, measured_step, use_full_gradient

__all__ = ["CenterProjector", "NystromPCG", "ProjectedEigenPro", "PROJECTION_TOL"]

#: default relative residual of each projection
PROJECTION_TOL = 1e-3
#: relative jitter of the float64 factor of K(Z, Z) when the model is trained in float32 or below
FLOAT32_JITTER = 1e-6


class NystromPCG:
    """The Nystrom preconditioner of ``K(Z, Z)`` for CG (module docstring).

    Parameters
    ----------
    KZS_E : Tensor (p, q)
        ``K(Z, X_S) E`` for the sample's top eigenvectors E (s x q) of ``K(X_S, X_S) / s``.
    eigenvalues : Tensor (q,), float64
        Their eigenvalues (of ``K(X_S, X_S) / s``).
    s : int
        The sample size.
    """

    def __init__(self, KZS_E, eigenvalues, s):
        dt = KZS_E.dtype
        lam = eigenvalues.to(torch.float64)
        keep = lam > float(lam[0]) * (1e-10 if dt == torch.float64 else 1e-6)
        B = KZS_E.to(torch.float64)[:, keep] / (s * lam[keep]).sqrt()  # K_nys = B B^T
        Q, R = torch.linalg.qr(B)
        W, sigma, _ = torch.linalg.svd(R)
        sigma2 = sigma.square()
        self.U = (Q @ W).to(dt)
        self.scale = (sigma2[-1] / sigma2 - 1.0).to(dt)  # sigma_q^2 / sigma_i^2 - 1

    def __call__(self, R):
        """``P^{-1} R = R + U diag(sigma_q^2 / sigma_i^2 - 1) U^T R``."""
        return R + self.U @ ((self.U.T @ R) * self.scale[:, None])


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
        Most steps per projection (default 10 with ``K(Z, Z)`` formed, 4 without; CG steps,
        or EigenPro 2 epochs when p > 10,000 and ``K(Z, Z)`` is not formed).

    Attributes
    ----------
    formed : bool
    method : str
        "cg" or "epochs".
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
        self.K = formed_kernel_matrix(Z, Z, self.kernel, budget // 2, tile_factor=4) if self.formed else None
        self.KS = self.K[nystrom_idx].contiguous() if self.formed else None  # K(X_S, Z), read every step
        self.max_steps = default_count(max_steps, 10 if self.formed else 4, 10**6, "projection_steps")
        self.method = "cg" if self.formed or p <= MAX_BATCH else "epochs"
        if self.method == "cg":
            P = preconditioner
            E64, lam = P.E64, P.eigensystem.eigenvalues[: P.E64.shape[1]]
            E = E64.to(Z.dtype)
            KZS_E = self.KS.T @ E if self.formed else kmv(Z, Z[nystrom_idx], E, self.kernel)
            self.pcg = NystromPCG(KZS_E, lam, s)
        else:
            self.batch_size = batch_size_for(preconditioner, p, None, Z.element_size() * (Z.shape[1] + 8),
                                             budget // 4)
            xb = Z[torch.randperm(p, generator=generator)[: self.batch_size].to(Z.device)]
            self.step_size, _ = measured_step(xb, preconditioner, rho=0.0, rho1=0.0, budget=budget // 4, generator=generator)
        self.steps_, self.residuals_ = [], []

    # products with K(Z, Z) and its rows at the sample
    def _K(self, V):
        return self.K @ V if self.formed else kmv(self.Z, self.Z, V, self.kernel)

    def matmul(self, V):
        """``K(Z, Z) V``."""
        return self._K(V)

    def cols(self, idx, a):
        """``K(Z, Z[idx]) a``."""
        return self.K[:, idx] @ a if self.formed else kmv(self.Z, self.Z[idx], a, self.kernel)

    def rows(self, idx, alpha):
        """``K(Z[idx], Z) alpha``."""
        return self.K[idx] @ alpha if self.formed else kmv(self.Z[idx], self.Z, alpha, self.kernel)

    def solve(self, h: torch.Tensor) -> torch.Tensor:
        """w (p, c) with ``||K(Z, Z) w - h|| <= tol ||h||`` (or ``max_steps`` steps), from w = 0."""
        norm = float(h.norm())
        if norm == 0.0:
            return torch.zeros_like(h)
        if self.method == "cg":
            w, rel, steps = preconditioned_cg(h, self._K, self.pcg, tol=self.tol, max_steps=self.max_steps,
                                              norm_h=norm)
        else:
            w = torch.zeros_like(h)
            rel, steps = 1.0, 0
            while steps < self.max_steps:
                seen = eigenpro2_epoch(self.Z, h, w, self.P, self.idx, self.batch_size, self.step_size,
                                       self.generator, kernel=self.kernel)
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

    def _setup_projected(self, X, Y, ridge, weights=None):
        """Centers, the correction on the centers, the projector, batch size and step size.

        ``weights`` (:class:`~kops.solvers.loss_weights.LossWeights`): the step is divided by
        their largest; None (the sharded solvers) refuses sample weights other than ones.
        """
        if weights is None:
            self._refuse_row_weights()
        self._step_divisor = 1.0 if weights is None else weights.largest
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
            # In float32 the directions of K(Z, Z) below the dtype's resolution cannot be
            # represented by the model's products (their coefficients blow up rounding errors
            # by 1 / lambda_min: few Gaussian centers diverged); a jitter of FLOAT32_JITTER
            # times the mean diagonal (GPyTorch's float32 default) leaves them out.
            L, jitter = cholesky_factor(Z, self.kernel_, budget // 4,
                                        min_jitter=FLOAT32_JITTER if Z.dtype != torch.float64 else 0.0)
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
        perm = torch.randperm(n, generator=gen)
        xb = X[perm[:m].to(X.device)]
        dx = X[perm[:DIAG_ROWS].to(X.device)] if m < DIAG_ROWS else None  # beta_G beyond a small batch
        if inverse is not None:
            eta, top = measured_step(xb, corr, rho=m * ridge / n, rho1=ridge / n, budget=budget, generator=gen, centers=Z,
                                     correction=corr, inverse=inverse, full_batch=m >= n, diag_points=dx)
        else:  # the upper bound without the projection
            eta, top = measured_step(xb, P_data, rho=m * ridge / n, rho1=ridge / n, budget=budget, generator=gen,
                                     full_batch=m >= n, diag_points=dx)
        self.full_gradient_ = use_full_gradient(corr, ridge, n, getattr(self, "full_gradient", "auto"))
        if self.full_gradient_:
            eta, top = full_gradient_step_size(top, m, n)
        eta /= self._step_divisor
        self._probe = (xb, corr, inverse, dx)
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
        xb, corr, inverse, dx = self._probe
        if inverse is None:  # the sample set-up already measured the unprojected bound
            return self.step_size_
        m = xb.shape[0]
        eta, top = measured_step(xb, corr, rho=m * ridge / n, rho1=ridge / n,
                                 budget=get_memory_budget(self.device_) // 2, generator=self.generator_,
                                 centers=self.centers_, correction=corr, inverse=inverse, projected=False,
                                 diag_points=dx)
        eta /= getattr(self, "_step_divisor", 1.0)
        if eta < self.step_size_:
            self.step_size_, self.lambda_max_ = eta, top
        return self.step_size_
