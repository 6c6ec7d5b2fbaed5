"""EigenPro 2: preconditioned SGD for kernel regression with the training points as centers.

Solves ``(K(X, X) + r I) alpha = Y`` (``r`` = ridge, default 0: interpolation), the same
model as :class:`kops.ExactKernelRidge` without centers. Each epoch visits random batches
``B`` of ``m`` points (:func:`kops.solvers.iterations.eigenpro2_epoch`)::

    g         = K(X_B, X) alpha + r alpha_B - Y_B        # one fused product, m x c
    alpha[B] -= eta g
    alpha[S] += eta E D E^T K(X_S, X_B) g                # one fused product, s x c

Preconditioner, batch and step (:mod:`kops.solvers.preconditioner`, :mod:`kops.solvers.stepsize`),
with the ridge: ``mu_i = lambda_i + r / n``, ``d_i = (1 - mu_{q+1} / mu_i) / (lambda_i s)``,
``m = min(m*, 10000, n)`` with ``m* = (beta + r) / mu_{q+1}``, and
``eta = min(1 / beta_G, 1 / (top(G) + r))``, ``G = K_BB - K_BS E D E^T K_SB`` measured on one
batch and ``beta_G = max_i G_ii + r`` (:mod:`kops.solvers.stepsize`).
With ``sample_weight`` the rows of weight 0 are dropped (the centers are the other rows, as
in :class:`kops.ExactKernelRidge`), the residual's rows are scaled by the normalised weights,
``g = W_B (K(X_B, X) alpha - Y_B) + r alpha_B``, and the step is divided by the largest
(:mod:`kops.solvers.loss_weights`); the fixed point ``W (K alpha - Y) + r alpha = 0`` is the
weighted exact model.
Cost per batch O(m n d) kernel work; memory O(n (d + c)) plus the O(s q) preconditioner.
"""
from __future__ import annotations

import torch

from ..config import get_memory_budget
from ._sampling import nystrom_sample
from ._validation import check_epochs, check_ridge
from .base import KernelModel
from .iterations import eigenpro2_step
from .preconditioner import NystromPreconditioner
from .stepsize import DIAG_ROWS, batch_size_for, measured_step

__all__ = ["EigenPro2"]


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
        The step size is measured for this m (module docstring).
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
        Training dtype; the eigensystem is always float64. float16 / bfloat16 are refused
        (ValueError): half-precision weights cannot hold the updates.
    random_state : int, torch.Generator or None
        Seeds the Nystrom sample, the batch order and the eigensolver start.
    memory_budget : int or str, optional
        Bytes for temporaries (default :func:`kops.get_memory_budget`); bounds the batch.
        A budget that cannot hold 32 rows raises ValueError naming the minimum.
    eig_method : {"auto", "dense", "subspace"}
        Eigensolver path (:func:`kops.solvers.top_eigensystem`).
    warm_start : bool, default False
        Refit starting from the previous fit's weights (and centers), when its features and
        outputs match (ValueError naming ``warm_start`` otherwise). EigenPro 2's centers are
        the training points, so its warm start needs the same X.
    callback : callable, optional
        ``callback(estimator, record)`` after each epoch with that epoch's metrics
        record; returning True stops training.
    verbose : int, default 0
        1: one line of metrics per epoch on stderr, and a progress bar when stderr is a
        terminal.

    Attributes
    ----------
    centers_ : Tensor (n, d)
        The training points (those of positive weight with ``sample_weight``).
    weights_ : Tensor (n, c)
    preconditioner_ : NystromPreconditioner
    batch_size_ : int
    step_size_ : float
        With unequal sample weights, divided by the largest ``w_i / mean(w)``.
    lambda_max_ : float
        The measured top eigenvalue of the preconditioned batch operator (ridge included).
    history_ : list of dict
        Per-epoch metrics (see :class:`kops.solvers.base.KernelModel`).

    Raises
    ------
    DivergenceError
        From fit, when the objective grows (the last good weights are kept).
    """

    def __init__(self, kernel="laplacian", bandwidth=None, *, epochs=10, batch_size=None, n_nystrom=None,
                 n_components=None, ridge=0.0, task="auto", device=None, dtype="float32", random_state=None,
                 memory_budget=None, eig_method="auto", warm_start=False, callback=None, verbose=0):
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
        self.warm_start = warm_start
        self.callback = callback
        self.verbose = verbose

    def _fit(self, X, Y):
        epochs = check_epochs(self.epochs)
        X, Y, weights = self._loss_weights(X, Y, check_ridge(self.ridge))  # rows of weight 0 dropped
        ridge, w = weights.ridge, weights.rows
        idx, P, m, eta = self._setup_eigenpro2(X, Y, ridge, weights)
        n, c = X.shape[0], Y.shape[1]
        warm = self._warm_start_weights(X, Y)
        if warm is not None and not (warm[0].shape == X.shape and torch.equal(warm[0], X)):
            raise ValueError("warm_start: EigenPro2's centers are its training points, so a warm start needs the "
                             "same X as the previous fit")
        self.centers_ = X
        self.weights_ = torch.zeros(n, c, dtype=X.dtype, device=X.device) if warm is None else warm[1]

        def step(rows):
            return eigenpro2_step(X, Y, self.weights_, P, idx, rows, eta, ridge=ridge, sample_weight=w)

        self._run_epochs(epochs, n, step, m, ridge=ridge)
        return self

    def _setup_eigenpro2(self, X, Y, ridge, weights=None):
        """The Nystrom sample ``idx``, the preconditioner, the batch size and the step size.

        ``weights`` (:class:`~kops.solvers.loss_weights.LossWeights`): the step is divided by
        their largest; None (the sharded solvers) refuses sample weights other than ones.
        """
        if weights is None:
            self._refuse_row_weights()
        n, d = X.shape
        c = Y.shape[1]
        gen = self.generator_
        budget = get_memory_budget(self.device_)
        idx, s, q = nystrom_sample(n, self.n_nystrom, self.n_components, gen, budget=budget)
        idx = idx.to(self.device_)
        self.preconditioner_ = P = NystromPreconditioner(X[idx], self.kernel_, n_components=q, shift=ridge / n,
                                                         diag_ridge=ridge, eig_method=self.eig_method,
                                                         generator=gen)
        m = batch_size_for(P, n, self.batch_size, X.element_size() * (d + 4 * c), budget // 4)
        self.batch_size_ = m
        if m >= n and s >= n:  # the whole problem in one batch: the top eigenvalue is n mu_{q+1}
            self.step_size_ = eta = P.step_size(m, n)
            self.lambda_max_ = 1.0 / eta
        else:
            perm = torch.randperm(n, generator=gen)
            xb = X[perm[:m].to(X.device)]
            dx = X[perm[:DIAG_ROWS].to(X.device)] if m < DIAG_ROWS else None
            self.step_size_, self.lambda_max_ = measured_step(xb, P, rho=ridge, rho1=ridge, budget=budget // 2, generator=gen,
                                                              full_batch=m >= n, diag_points=dx)
            eta = self.step_size_
        if weights is not None and weights.largest != 1.0:
            self.step_size_ = eta = weights.step(eta)
        return idx, P, m, eta
