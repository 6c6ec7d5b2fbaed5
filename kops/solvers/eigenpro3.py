"""EigenPro 3: projected preconditioned SGD for a kernel model on general centers Z.

Minimises ``1/2 ||K(X, Z) alpha - Y||^2 + r/2 alpha^T K(Z, Z) alpha`` (the model of
:class:`kops.ExactKernelRidge` with the same centers and ridge). With the Nystrom sample X_S
drawn from the centers (rows ``idx`` of Z), each batch B
(:func:`kops.solvers.iterations.projected_step`)::

    g      = K(X_B, Z) alpha - Y_B;   u = K(Z, X_B) g
    h      = eta (u - M E^T u[idx])                   # preconditioned; M = K(Z, X_S) E D
    ridge (c = eta m r / n): alpha = (1 - c) alpha;  h -= c M E^T f(X_S)
    alpha -= K(Z, Z)^{-1} h                            # the projection, to tolerance

Step: ``eta = min(1 / beta_G, 1 / (top(G_Z) + m r / n))`` for the preconditioned batch operator on the span
of the centers (:mod:`kops.solvers.stepsize`); the preconditioner's spectrum is shifted by
``r / n``. When the ridge dominates that spectrum (``mu_{q+1} <= 2 r / n``), each epoch is one
step on the full gradient instead (the same products, no sampling noise; ``full_gradient``). The projection costs O(p^2 d) per batch (two GEMMs when ``K(Z, Z)`` fits the
budget), which is what EigenPro 4 amortises.

With ``sample_weight`` the rows of weight 0 are dropped, each batch's residual g is scaled by
the normalised weights before ``K(Z, X_B)`` (the full gradient's line search uses the
weighted Gram) and the step is divided by the largest (:mod:`kops.solvers.loss_weights`):
the fixed point is :class:`kops.ExactKernelRidge` with the same weights and centers.
"""
from __future__ import annotations

import torch

from ..config import get_memory_budget
from ._validation import check_epochs, check_ridge
from .iterations import FullGradientDescent, projected_step, reuse_kernel_block
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
    random_state, memory_budget, eig_method, warm_start, callback, verbose
        As in :class:`kops.EigenPro2` (n_nystrom / n_components: the data preconditioner's).
    centers : int, array (p, d) or None
        An int p picks p random training points (p > n is an error); None picks
        min(10000, n).
    projection_tol : float, default 1e-3
        Each projection stops at this relative residual ``||K(Z, Z) w - h|| / ||h||``.
    projection_steps : int, optional
        Most steps per projection (default 10 with ``K(Z, Z)`` formed, else 4).
    ridge : float, default 0
        The ridge term of the objective above.
    full_gradient : {"auto", True, False}, default "auto"
        One step per epoch on the gradient of all n points (accumulated over batches of
        ``batch_size``) instead of a step per batch. "auto": when the ridge dominates the
        preconditioned spectrum, ``kappa_r = mu_{q+1} / (r / n) <= 2``, where mini-batch steps
        keep the batches' sampling noise and a full step at least halves the error per epoch
        (:mod:`kops.solvers.stepsize`).

    Attributes
    ----------
    centers_ : Tensor (p, d)
    weights_ : Tensor (p, c)
    preconditioner_ : NystromPreconditioner
        The Nystrom preconditioner (its sample drawn from the centers).
    projector_ : CenterProjector
        The projection's solver with its preconditioner from Z (``steps_``, ``residuals_``).
    batch_size_, step_size_, lambda_max_, history_
    full_gradient_ : bool
        Whether the epochs took full-gradient steps.
    block_reuse_ : bool
        Whether each batch formed its kernel block once for both products
        (:func:`kops.solvers.iterations.reuse_kernel_block`).
    """

    def __init__(self, kernel="laplacian", bandwidth=None, *, centers=None, epochs=5, batch_size=None,
                 n_nystrom=None, n_components=None, projection_tol=1e-3, projection_steps=None, ridge=0.0,
                 full_gradient="auto", task="auto", device=None, dtype="float32", random_state=None,
                 memory_budget=None, eig_method="auto", warm_start=False, callback=None, verbose=0):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.centers = centers
        self.epochs = epochs
        self.batch_size = batch_size
        self.n_nystrom = n_nystrom
        self.n_components = n_components
        self.projection_tol = projection_tol
        self.projection_steps = projection_steps
        self.ridge = ridge
        self.full_gradient = full_gradient
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
        Z, corr, projector, m = self._setup_projected(X, Y, ridge, weights)
        n, p, c = X.shape[0], Z.shape[0], Y.shape[1]
        eta = self.step_size_
        del self._probe
        tile_budget = get_memory_budget(self.device_) // 4
        form = reuse_kernel_block(m, p, X.shape[1], X.element_size(), tile_budget, X.device)
        self.block_reuse_ = form
        warm = self._warm_weights
        del self._warm_weights
        if self.full_gradient_:
            descent = FullGradientDescent(Z, c, corr, projector, step=eta, ridge=ridge, kernel=self.kernel_,
                                          chunk=m, form=form, budget=tile_budget, sample_weight=w)
            if warm is not None:
                descent.alpha.copy_(warm)
            self.weights_ = descent.alpha
            self._run_epochs(epochs, n, run_epoch=lambda progress: descent.epoch(X, Y, progress), state=descent,
                             ridge=ridge)
            return self
        self.weights_ = alpha = torch.zeros(p, c, dtype=X.dtype, device=X.device)
        if warm is not None:
            alpha.copy_(warm)

        def step(rows):
            return projected_step(Z, alpha, corr, projector, X[rows], Y[rows], eta, ridge=ridge, n=n,
                                  kernel=self.kernel_, form=form, budget=tile_budget,
                                  weight=None if w is None else w[rows])

        self._run_epochs(epochs, n, step, m, ridge=ridge)
        return self
