"""The Nystrom preconditioner of EigenPro and the step-size rule, ridge included.

From a Nystrom sample ``X_S`` (s x d) of the points a solver iterates over:

* ``lambda_1 >= ... >= lambda_{q+1}``, ``E`` (s x q): top eigenpairs of ``K(X_S, X_S) / s``
  (float64, :func:`kops.solvers.top_eigensystem`);
* the ridge shifts every eigenvalue of the normalised operator: ``mu_i = lambda_i + shift``
  with ``shift = r / n`` (ridge ``r``, ``n`` points iterated over);
* ``D = diag(d_i)``, ``d_i = (1 - mu_{q+1} / mu_i) / (lambda_i s)``, which maps the top q
  shifted eigenvalues ``mu_i`` to ``mu_{q+1}`` (without a ridge: EigenPro's
  ``(1 - lambda_{q+1} / lambda_i) / (lambda_i s)``);
* ``beta = max_i K(x_i, x_i) + rho_1`` with ``rho_1`` the ridge on one point's diagonal
  (``r`` for EigenPro 2's ``K + r I``; ``r / n`` for the projected solvers, whose ridge
  ``r ||f||^2`` is spread over the n points);
* critical batch size ``m* = beta / mu_{q+1}``;
* a-priori step size for a summed batch residual of ``m`` rows
  (:meth:`NystromPreconditioner.step_size`):
  ``eta = min(1 / beta, 2 / (beta + (m - 1) mu_{q+1}))``, i.e. EigenPro's
  ``1 / beta`` below m* and ``2 / (beta + (m - 1) lambda_{q+1})`` above, shifted by the ridge.

A preconditioned step on a batch ``X_B`` with residual ``g`` (m x c) changes the model by
``-eta [K(., X_B) g - K(., X_S) E D E^T K(X_S, X_B) g]``: the batch's weights get
``-eta g`` and the Nystrom points' weights ``+eta E D E^T K(X_S, X_B) g``.

The a-priori rule assumes the sample's spectrum is the data's. It is not when s is small
against the data's effective dimension (few centers, Gaussian kernels), where the top
eigenvalue of the preconditioned batch operator was measured at up to 15x the rule's
estimate. The solvers therefore measure it (:func:`top_eigenvalue`, a few block power
iterations on one batch) and take ``eta = STEP_FACTOR / lambda_max(m)`` (``STEP_FACTOR = 1``).
"""
from __future__ import annotations

import time

import torch

from ..ops import kmv
from ._validation import kernel_of
from .eigensystem import Eigensystem, top_eigensystem

__all__ = ["NystromPreconditioner", "top_eigenvalue", "STEP_FACTOR"]

#: eta * lambda_max(m) of the measured rule. 1 takes the damped top directions (where a good
#: preconditioner puts most of the spectrum) to their solution in one step, and stays far
#: from 2 (the edge of stability) whatever the batch-to-batch spread of lambda_max (about
#: 10%), the power iteration's underestimate, or an inexact projection. (1.5 was measured to
#: leave a 2^-k error after k full-batch steps on a flat preconditioned spectrum.)
STEP_FACTOR = 1.0


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
    shift : float
        ``r / n``: the ridge's shift of the normalised spectrum (0 without a ridge).
    diag_ridge : float
        ``rho_1``: the ridge on one point's diagonal, added to ``beta``.
    eig_method : {"auto", "dense", "subspace"}
        Passed to :func:`top_eigensystem`.
    eig_tol : float
        Relative eigen-residual of the subspace path (see :func:`top_eigensystem`).
    generator : torch.Generator, optional
    eigensystem : Eigensystem, optional
        Reuse these eigenpairs of the same sample (at least q + 1 of them).

    Attributes
    ----------
    x : Tensor (s, d)
    eigensystem : Eigensystem
        The q + 1 float64 eigenpairs.
    E, D, ED : Tensor (s, q), (q,), (s, q)
        Solver dtype (float64 copies ``E64``, ``D64``).
    lambda_q1, mu_q1 : float
        ``lambda_{q+1}`` and ``mu_{q+1} = lambda_{q+1} + shift``.
    kernel_diag, beta : float
        ``max K(x, x)`` and ``beta = kernel_diag + diag_ridge``.
    critical_batch_size : float
        ``m* = beta / mu_{q+1}``.
    setup_seconds : float
    """

    def __init__(self, x_s, kernel, bandwidth=None, n_components: int = 150, *, shift: float = 0.0,
                 diag_ridge: float = 0.0, eig_method: str = "auto", eig_tol: float = 1e-3, generator=None,
                 eigensystem: Eigensystem | None = None):
        t0 = time.perf_counter()
        self.kernel = kernel_of(kernel, bandwidth)
        s = x_s.shape[0]
        q = n_components
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q < s:
            raise ValueError(f"n_components must be an int with 1 <= n_components < n_nystrom = {s}, got {q!r}")
        if not shift >= 0 or not diag_ridge >= 0:
            raise ValueError(f"shift and diag_ridge must be >= 0, got {shift!r} and {diag_ridge!r}")
        self.x = x_s
        self.dtype = x_s.dtype
        es = eigensystem if eigensystem is not None else top_eigensystem(
            x_s, self.kernel, k=q + 1, method=eig_method, tol=eig_tol, generator=generator)
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
        self.shift = float(shift)
        self.mu_q1 = lam_q1 + self.shift
        top = lam[:q].clamp_min(tiny)
        self.D64 = ((1.0 - self.mu_q1 / (top + self.shift)) / (top * s)).clamp_min(0.0)
        self.E64 = es.eigenvectors[:, :q]
        self.E = self.E64.to(self.dtype)
        self.D = self.D64.to(self.dtype)
        self.ED = (self.E64 * self.D64).to(self.dtype)
        one = torch.ones(1, 1, dtype=self.dtype, device=x_s.device)
        self.kernel_diag = float(kmv(x_s[:1], x_s[:1], one, self.kernel).max())
        self.diag_ridge = float(diag_ridge)
        self.beta = self.kernel_diag + self.diag_ridge
        self.critical_batch_size = self.beta / self.mu_q1
        self.setup_seconds = time.perf_counter() - t0

    @property
    def n_nystrom(self) -> int:
        return self.x.shape[0]

    @property
    def n_components(self) -> int:
        return self.E.shape[1]

    def step_size(self, m: int, n: int | None = None) -> float:
        """The a-priori eta for a summed residual over ``m`` rows (module docstring).

        With ``n``: when the batch is all ``n`` points and the Nystrom sample is all of them
        too, the preconditioned operator's top eigenvalue is exactly ``n mu_{q+1}`` and the
        step is its inverse.
        """
        if n is not None and m >= n and self.n_nystrom >= n:
            return 1.0 / (n * self.mu_q1)
        return min(1.0 / self.beta, 2.0 / (self.beta + (m - 1) * self.mu_q1))

    def project(self, kg: torch.Tensor) -> torch.Tensor:
        """``v = E^T kg`` (q x c) for ``kg = K(X_S, X_B) g`` (s x c)."""
        return self.E.T @ kg

    def coefficients(self, v: torch.Tensor) -> torch.Tensor:
        """``E D v`` (s x c): the Nystrom points' weights of the correction."""
        return self.ED @ v

    def correction(self, x_b: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``E D E^T K(X_S, X_B) g`` (s x c) by one fused product ``K(X_S, X_B) g``.

        Parameters
        ----------
        x_b : Tensor (m, d)
        g : Tensor (m, c)
        """
        return self.coefficients(self.project(kmv(self.x, x_b, g, self.kernel)))

    def __repr__(self) -> str:
        return (f"NystromPreconditioner(s={self.n_nystrom}, q={self.n_components}, "
                f"lambda_q+1={self.lambda_q1:.3g}, mu_q+1={self.mu_q1:.3g}, beta={self.beta:.3g}, "
                f"m*={self.critical_batch_size:.0f})")


def top_eigenvalue(apply, size: int, *, dtype, device, generator, iterations: int = 12, block: int = 4) -> float:
    """Largest eigenvalue of a symmetric PSD operator by block power iteration + Rayleigh-Ritz.

    Parameters
    ----------
    apply : callable
        ``apply(V)`` returns ``A @ V`` for V of shape (size, b).
    size : int
    iterations : int
        Power steps; the top Ritz value is a lower bound that converges geometrically.
    block : int
        Columns of the block (a block converges faster on clustered top eigenvalues).

    Returns
    -------
    float
        The top Ritz value (0.0 for an operator that maps everything to 0).
    """
    b = max(1, min(block, size))
    V = torch.randn(size, b, generator=generator, dtype=torch.float64).to(device=device)
    V, _ = torch.linalg.qr(V)
    top = 0.0
    for _ in range(iterations):
        W = apply(V.to(dtype)).to(torch.float64)
        H = V.T @ W
        top = float(torch.linalg.eigvalsh(0.5 * (H + H.T))[-1])
        if not W.abs().max() > 0:
            return 0.0
        V, _ = torch.linalg.qr(W)
    return max(top, 0.0)
