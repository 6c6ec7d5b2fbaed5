"""The Nystrom preconditioner of EigenPro.

From a Nystrom sample ``X_S`` (s x d) of the points a solver iterates over:

* ``lambda_1 >= ... >= lambda_{q+1}``, ``E`` (s x q): top eigenpairs of ``K(X_S, X_S) / s``
  (float64, :func:`kops.solvers.top_eigensystem`);
* ``D = diag(d_i)``, ``d_i = (1 - lambda_{q+1} / lambda_i) / (lambda_i s)``;
* ``beta = max_i K(x_i, x_i)`` (1 for every kops kernel);
* critical batch size ``m* = beta / lambda_{q+1}``;
* step size for a summed batch residual of ``m`` rows:
  ``eta = 1 / beta`` if ``m < m*`` else ``eta = 2 / (beta + (m - 1) lambda_{q+1})``.

A preconditioned step on a batch ``X_B`` with residual ``g`` (m x c) changes the model
``f = K(., Z) alpha`` by ``-eta [K(., X_B) g - K(., X_S) E D E^T K(X_S, X_B) g]``: the
batch's weights get ``-eta g`` and the Nystrom points' weights ``+eta E D E^T K(X_S, X_B) g``
(:meth:`NystromPreconditioner.correction`). The correction damps the top q eigendirections
of the kernel operator down to ``lambda_{q+1}``, which is what allows a step ``m* `` times
larger than plain SGD's.
"""
from __future__ import annotations

import torch

from ..ops import kmv
from ._utils import kernel_of
from .eigensystem import Eigensystem, top_eigensystem

__all__ = ["NystromPreconditioner"]


class NystromPreconditioner:
    """EigenPro's Nystrom preconditioner for the points ``X_S`` (see the module docstring).

    Parameters
    ----------
    x_s : Tensor, shape (s, d)
        The Nystrom sample, already on the solver's device and in its dtype.
    kernel : str or kops.Kernel
    bandwidth : float, optional
        Required when ``kernel`` is a name.
    n_components : int
        q, the number of damped eigendirections; ``1 <= q < s``.
    ridge : float
        Optional ridge term ``r >= 0`` of the system the solver iterates on (``K + r I``);
        it adds to ``beta`` in the step size (a safe bound on the diagonal).
    eig_method : {"auto", "dense", "subspace"}
        Passed to :func:`top_eigensystem`.
    eig_tol : float
        Relative eigen-residual of the subspace path (see :func:`top_eigensystem`).
    generator : torch.Generator, optional

    Attributes
    ----------
    x : Tensor (s, d)
        ``X_S`` in the solver dtype.
    eigensystem : Eigensystem
        The q + 1 float64 eigenpairs.
    E : Tensor (s, q)
        Top q eigenvectors, solver dtype.
    D : Tensor (q,)
        ``d_i``, solver dtype (float64 copies: ``E64``, ``D64``).
    ED : Tensor (s, q)
        ``E diag(D)``, solver dtype.
    lambda_q1 : float
        ``lambda_{q+1}``.
    beta : float
        ``max_i K(x_i, x_i) + ridge``.
    critical_batch_size : float
        ``m* = beta / lambda_{q+1}``.
    setup_seconds : float
    """

    def __init__(self, x_s, kernel, bandwidth=None, n_components: int = 150, *, ridge: float = 0.0,
                 eig_method: str = "auto", eig_tol: float = 1e-2, generator=None):
        import time

        t0 = time.perf_counter()
        self.kernel = kernel_of(kernel, bandwidth)
        s = x_s.shape[0]
        q = n_components
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q < s:
            raise ValueError(f"n_components must be an int with 1 <= n_components < n_nystrom = {s}, got {q!r}")
        self.x = x_s
        self.dtype = x_s.dtype
        # tol 1e-2 relative to each eigenvalue: lambda_{q+1}, which sets the step size, to about 1%.
        es: Eigensystem = top_eigensystem(x_s, self.kernel, k=q + 1, method=eig_method, tol=eig_tol,
                                          generator=generator)
        self.eigensystem = es
        lam = es.eigenvalues
        tiny = torch.finfo(torch.float64).tiny
        # Directions below the training dtype's resolution are not damped: their eigenvalues
        # are rounding noise, and damping to one of them would make the step size unsafe.
        floor = float(lam[0]) * (1e-10 if self.dtype == torch.float64 else 1e-5)
        q = max(1, min(q, int((lam[1:] >= floor).sum())))
        lam = lam[: q + 1]
        lam_q1 = float(lam[q])
        if lam_q1 <= 0.0:  # a rank-deficient sample (duplicates): fall back to the smallest positive
            positive = lam[lam > 0]
            lam_q1 = float(positive[-1]) if positive.numel() else 1.0
        self.lambda_q1 = lam_q1
        top = lam[:q].clamp_min(tiny)
        self.D64 = ((1.0 - lam_q1 / top) / (top * s)).clamp_min(0.0)
        self.E64 = es.eigenvectors[:, :q]
        self.E = self.E64.to(self.dtype)
        self.D = self.D64.to(self.dtype)
        self.ED = (self.E64 * self.D64).to(self.dtype)
        one = torch.ones(1, 1, dtype=self.dtype, device=x_s.device)
        self.kernel_diag = float(kmv(x_s[:1], x_s[:1], one, self.kernel).max())
        self.ridge = float(ridge)
        self.beta = self.kernel_diag + self.ridge
        self.critical_batch_size = self.beta / lam_q1
        self.setup_seconds = time.perf_counter() - t0

    @property
    def n_nystrom(self) -> int:
        return self.x.shape[0]

    @property
    def n_components(self) -> int:
        return self.E.shape[1]

    def step_size(self, m: int, n: int | None = None) -> float:
        """eta for a summed residual over a batch of ``m`` rows (formula in the module docstring).

        With ``n`` (the number of points iterated over): when the batch is all ``n`` points
        and the Nystrom sample is all of them too, the preconditioned operator's top
        eigenvalue is exactly ``n lambda_{q+1} (+ ridge)`` and the step is its inverse, which
        is larger than the mini-batch bound (small problems, m* > n, inner projections).
        """
        if n is not None and m >= n and self.n_nystrom >= n:
            return 1.0 / (n * self.lambda_q1 + self.ridge)
        if m < self.critical_batch_size:
            return 1.0 / self.beta
        return 2.0 / (self.beta + (m - 1) * self.lambda_q1)

    def project(self, kg: torch.Tensor) -> torch.Tensor:
        """``v = E^T kg`` (q x c) for ``kg = K(X_S, X_B) g`` (s x c)."""
        return self.E.T @ kg

    def coefficients(self, v: torch.Tensor) -> torch.Tensor:
        """``E D v`` (s x c): the Nystrom points' weights of the correction, for ``v = E^T K(X_S, X_B) g``."""
        return self.ED @ v

    def correction(self, x_b: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``E D E^T K(X_S, X_B) g`` (s x c) by one fused product ``K(X_S, X_B) g``.

        Parameters
        ----------
        x_b : Tensor (m, d)
        g : Tensor (m, c)
        """
        return self.coefficients(self.project(kmv(self.x, x_b, g, self.kernel)))

    def mixed(self, z: torch.Tensor) -> torch.Tensor:
        """``M = K(Z, X_S) E D`` (p x q), computed in float64 and returned in the solver dtype.

        ``M v`` is the correction's value on the centers Z, used by EigenPro 3 and 4.
        """
        ed64 = self.E64 * self.D64
        return kmv(z.to(torch.float64), self.x.to(torch.float64), ed64, self.kernel).to(self.dtype)

    def __repr__(self) -> str:
        return (f"NystromPreconditioner(s={self.n_nystrom}, q={self.n_components}, "
                f"lambda_q+1={self.lambda_q1:.3g}, beta={self.beta:.3g}, m*={self.critical_batch_size:.0f})")
