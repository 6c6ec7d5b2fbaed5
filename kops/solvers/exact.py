"""Exact kernel ridge regression by Cholesky in float64: the baseline of the iterative solvers.

* centers = None (all training points): solve ``(K(X, X) + r I) alpha = Y``.
* centers Z (p x d): the least-squares model on Z,
  ``(K(Z, X) K(X, Z) + r K(Z, Z)) alpha = K(Z, X) Y``, the fixed point of EigenPro 3 / 4.
* sample weights w (the loss ``1/2 sum_i w_i ||f(x_i) - y_i||^2``): with centers,
  ``K(Z, X) W K(X, Z) + r K(Z, Z)`` and ``K(Z, X) W Y`` (a row scaling); without, the points
  of positive weight are the centers and ``(K + r W^{-1}) alpha = Y`` on them (the
  minimiser's stationarity ``W (K alpha - Y) + r alpha = 0``; zero weights drop out).
  ``K(Z, X) K(X, Z)`` is accumulated over row blocks of X no larger than the memory budget.

O(p^2) memory and O(p^3) time (p = n without centers): for small and moderate problems.
The system is always assembled and factorised in float64, whatever ``dtype``, and the
weights stay float64 (prediction accumulates in float64 and returns ``dtype``): interpolating
weights are large and cancel, and rounding them to float32 destroys the model (measured:
train accuracy 0.51 instead of 1.00). Peak memory is two p x p float64 matrices (the system,
whose lower triangle is all the factorisation reads, and its factor). When the matrix is
numerically singular (ridge 0), a jitter ``eps * mean diag`` growing by 10x is added to its
diagonal in place until the Cholesky factorisation succeeds; the jitter used is ``jitter_``.
"""
from __future__ import annotations


import torch

from ..config import get_memory_budget
from ..ops import kernel_matrix, kmv
from .base import KernelModel
from .dense import formed_kernel_matrix
from ._validation import check_ridge
from ._sampling import select_centers

__all__ = ["ExactKernelRidge", "cholesky_solve_psd"]


def cholesky_solve_psd(A: torch.Tensor, B: torch.Tensor, max_tries: int = 12):
    """Solve ``A x = B`` for symmetric PSD ``A`` (float64) by Cholesky, with growing jitter.

    Only the lower triangle of ``A`` is read; a jitter is added to its diagonal in place
    (and left there). Returns ``(x, jitter)``.
    """
    diag = A.diagonal()
    scale = float(diag.abs().mean()) or 1.0
    jitter = 0.0
    for attempt in range(max_tries):
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            return torch.cholesky_solve(B, L), jitter
        del L
        step = scale * 1e-13 * 10 ** attempt
        diag.add_(step - jitter)
        jitter = step
    raise ValueError("the kernel system is not positive definite even with jitter; pass ridge > 0")


class ExactKernelRidge(KernelModel):
    """Exact kernel ridge regression / classification (Cholesky, float64).

    Parameters
    ----------
    kernel : str or kops.Kernel, default "laplacian"
    bandwidth : float, optional
        With a kernel name; None takes the median pairwise distance of (a sample of) X.
    centers : None, int or array (p, d)
        None: all training points (``(K + r I) alpha = Y``). An int p: p random training
        points; an array: those centers (least squares on the centers, module docstring).
    ridge : float, default 0
    task : {"auto", "regression", "classification"}
    device : optional
    dtype : default "float64"
        The dtype of the inputs and of the predictions. The solve, the weights and the
        prediction's accumulation are float64 whatever it is.
    random_state : int, torch.Generator or None
        For ``centers`` given as an int (and the default bandwidth's sample).
    memory_budget : int or str, optional
        Bytes for each block of K(X, Z) (default :func:`kops.get_memory_budget`).
    verbose : int

    Attributes
    ----------
    centers_ : Tensor (p, d)
    weights_ : Tensor (p, c)
    jitter_ : float
    fit_seconds_ : float
    """

    _default_dtype = "float64"

    def __init__(self, kernel="laplacian", bandwidth=None, *, centers=None, ridge=0.0, task="auto", device=None,
                 dtype="float64", random_state=None, memory_budget=None, verbose=0):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.centers = centers
        self.ridge = ridge
        self.task = task
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.memory_budget = memory_budget
        self.verbose = verbose

    def _fit(self, X, Y):
        import time

        t0 = time.perf_counter()
        ridge = check_ridge(self.ridge)
        X64, Y64 = X.to(torch.float64), Y.to(torch.float64)
        k = self.kernel_
        budget = get_memory_budget(X.device)
        w = self._sample_weight_tensor()
        w64 = None if w is None else w.to(torch.float64)
        if self.centers is None:
            if w64 is not None:  # the points of positive weight are the centers
                keep = w64 > 0
                X, X64, Y64, w64 = X[keep], X64[keep], Y64[keep], w64[keep]
            Z = X
            A = formed_kernel_matrix(X64, X64, k, budget)
            if ridge:
                A.diagonal().add_(ridge if w64 is None else ridge / w64)
            rhs = Y64
        else:
            Z, _ = select_centers(self.centers, X, self.generator_)
            Z64 = Z.to(torch.float64)
            p = Z.shape[0]
            A = torch.zeros(p, p, dtype=torch.float64, device=X.device)
            rhs = torch.zeros(p, Y.shape[1], dtype=torch.float64, device=X.device)
            rows = max(1, budget // (8 * p))
            for start in range(0, X.shape[0], rows):  # K(X_B, Z) blocks within the budget
                Kb = kernel_matrix(X64[start : start + rows], Z64, k)
                KbW = Kb.T if w64 is None else Kb.T * w64[start : start + rows]
                A.addmm_(KbW, Kb)
                rhs.addmm_(KbW, Y64[start : start + rows])
            if ridge:
                rows = max(1, budget // (8 * p))
                for start in range(0, p, rows):  # r K(Z, Z), added in row tiles
                    A[start : start + rows].add_(kernel_matrix(Z64[start : start + rows], Z64, k), alpha=ridge)
        alpha, self.jitter_ = cholesky_solve_psd(A, rhs)
        del A
        self.centers_ = Z
        self.weights_ = alpha  # float64: see the module docstring
        self._ridge, self._n = ridge, X.shape[0] if w64 is None else float(w64.sum())  # the objective's scale
        self._end_epoch(1, time.perf_counter() - t0)
        return self

    def _raw(self, X: torch.Tensor) -> torch.Tensor:
        out = kmv(X.to(torch.float64), self.centers_.to(torch.float64), self.weights_, self.kernel_)
        return out.to(X.dtype)
