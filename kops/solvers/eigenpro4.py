"""EigenPro 4: EigenPro 3 with delayed projection.

The model is ``f = K(., Z) alpha + K(., Z_tmp) a_tmp + K(., X_S) a_S``: the centers' part and
a pending part (the visited batches as temporary centers, and the Nystrom points' correction
weights), projected onto the centers every T batches. X_S is a subset of Z, so a_S lives in
rows of the weight buffer and ``K(X_S, X_B) g`` is read from ``K(Z, X_B) g``. The steps live
in :class:`kops.solvers.iterations.DelayedProjection`::

    setup: Nystrom preconditioner (X_S, E, D), X_S drawn from Z; the projector on Z;
           m and eta as in EigenPro 3 (measured, ridge included);  T (below)
    each batch B:
        g   = K(X_B, [Z; Z_tmp]) [alpha; a_tmp] + K(X_B, X_S) a_S - Y_B;   u = K(Z, X_B) g
        v   = E^T u[idx];  h -= eta (u - M v)      # M = K(Z, X_S) E D: cached predictions on Z
        append X_B to Z_tmp with weights -eta g;  a_S += eta E D v
        every T batches and at the end of each epoch:
            alpha += w ~ K(Z, Z)^{-1} h  (to projection_tol);  clear Z_tmp, a_tmp, a_S, h

Cadence rules (the paper's, with its defects fixed):

* ``T = max(1, floor((coeff - 1) p / m))`` with ``coeff = 2``: the pending buffer (T m rows)
  is at most ``(coeff - 1) p``, so a prediction costs at most ``coeff`` times the centers'.
  When ``p < m`` (T would be 0), T = 1: every batch is projected (EigenPro 3).
* The pending buffer is also bounded by half the memory budget.
* With the span preconditioner (p small enough for a float64 factor of ``K(Z, Z)``, see
  :class:`~kops.solvers.projection.ProjectedEigenPro`) every projection is exact and costs
  ``2 p^2 c`` flops, less than a batch's ``m p d`` kernel work, so the default T is 1.
* With T > 1 the step also holds for the operator without the projection (the pending
  part lives outside the span of the centers between projections).
* The end of every epoch projects, so the fitted model lives on the centers only.
* When the ridge dominates the preconditioned spectrum (``mu_{q+1} <= 2 r / n``) each epoch is
  one full-gradient step with its projection (T = 1; :mod:`kops.solvers.stepsize`, "The
  ridge"): mini-batch steps would keep the batches' sampling noise.

Per batch one kernel block ``K(X_B, [Z; Z_tmp])`` serves both products when the budget holds
a tile of it and forming is cheaper than a second fused pass
(:func:`kops.solvers.iterations.reuse_kernel_block`); otherwise two fused products.
The per-batch cost is O(m (p + T m) d), i.e. O(p) per point amortised, plus one projection
every T batches.

Sample weights enter as in :class:`kops.EigenPro3` (:mod:`kops.solvers.loss_weights`): the
pending part's weights are ``-eta W_B g``.
"""
from __future__ import annotations

from ..config import get_memory_budget
from ._validation import check_epochs, check_ridge
from .iterations import DelayedProjection, FullGradientDescent, reuse_kernel_block
from .projection import ProjectedEigenPro

__all__ = ["EigenPro4", "projection_interval"]


def projection_interval(p: int, m: int, coeff: float = 2.0, interval=None, max_rows=None) -> int:
    """T, the batches between projections: ``max(1, (coeff - 1) p // m)``, never 0.

    ``interval`` (a user's T) overrides the formula; ``max_rows`` caps ``T m`` (the pending
    buffer) when memory is short.
    """
    if interval is not None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"projection_interval must be an int >= 1 or None, got {interval!r}")
        T = interval
    else:
        if not coeff >= 1:
            raise ValueError(f"projection_coeff must be >= 1, got {coeff!r}")
        T = int((coeff - 1) * p // max(1, m))
    if max_rows is not None:
        T = min(T, max_rows // max(1, m))
    return max(1, T)


class EigenPro4(ProjectedEigenPro):
    """EigenPro 4 (delayed projection) kernel regression / classification on centers Z.

    Converges to the same model as :class:`kops.EigenPro3` (and :class:`kops.ExactKernelRidge`
    on the same centers and ridge) at a per-batch cost that does not grow with p^2.
    ``T = 1`` is EigenPro 3.

    Parameters
    ----------
    kernel, bandwidth, centers, epochs, batch_size, n_nystrom, n_components, ridge, task,
    device, dtype, random_state, memory_budget, eig_method, warm_start, callback, verbose
        As in :class:`kops.EigenPro3`.
    projection_interval : int, optional
        T, batches between projections; default ``max(1, (projection_coeff - 1) p // m)``
        (1 with the exact projection of small p), reduced if the pending buffer (T m rows)
        would exceed half the memory budget.
        The end of every epoch also projects.
    projection_coeff : float, default 2
        The coefficient of the default T.
    projection_tol : float, default 1e-3
        Each projection stops at this relative residual ``||K(Z, Z) w - h|| / ||h||``
        (the accuracy knob: 1e-3 reaches the exact model on the centers).
    projection_steps : int, optional
        Most steps per projection (default 10 with ``K(Z, Z)`` formed, else 4).
    full_gradient : {"auto", True, False}, default "auto"
        As in :class:`kops.EigenPro3`: one full-gradient step per epoch (T = 1) when the
        ridge dominates the preconditioned spectrum.

    Attributes
    ----------
    centers_ : Tensor (p, d)
    weights_ : Tensor (p, c)
        A view of the first p rows of the weight buffer.
    projection_interval_ : int
        T in use.
    n_projections_ : int
    preconditioner_, projector_, batch_size_, step_size_, lambda_max_, history_
        As in :class:`kops.EigenPro3`.

    block_reuse_ : bool
        Whether each batch formed its kernel block once (the cost model).
    full_gradient_ : bool
        Whether the epochs took full-gradient steps.
    """

    def __init__(self, kernel="laplacian", bandwidth=None, *, centers=None, epochs=5, batch_size=None,
                 n_nystrom=None, n_components=None, projection_interval=None, projection_coeff=2.0,
                 projection_tol=1e-3, projection_steps=None, ridge=0.0, full_gradient="auto", task="auto",
                 device=None, dtype="float32", random_state=None, memory_budget=None, eig_method="auto",
                 warm_start=False, callback=None, verbose=0):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.centers = centers
        self.epochs = epochs
        self.batch_size = batch_size
        self.n_nystrom = n_nystrom
        self.n_components = n_components
        self.projection_interval = projection_interval
        self.projection_coeff = projection_coeff
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
        n, d = X.shape
        p, c = Z.shape[0], Y.shape[1]
        budget = get_memory_budget(self.device_)
        row_bytes = X.element_size() * (d + c)
        interval = self.projection_interval
        if self.full_gradient_ or (interval is None and self.span_preconditioner_):
            # one step per epoch; or an exact projection, which costs less than a batch
            interval = 1
        T = projection_interval(p, m, self.projection_coeff, interval, max_rows=budget // 2 // row_bytes)
        self.projection_interval_ = T
        if T > 1:
            self._delayed_step(ridge, n)
        del self._probe
        tile_budget = budget // 4
        self.block_reuse_ = reuse_kernel_block(m, p + T * m, d, X.element_size(), tile_budget, X.device)
        if self.full_gradient_:
            return self._fit_full_gradient(X, Y, Z, corr, projector, m, ridge, epochs, tile_budget, w)
        state = DelayedProjection(Z, c, corr, projector, interval=T, batch_size=m, eta=self.step_size_,
                                  ridge=ridge, n=n, kernel=self.kernel_, budget=tile_budget,
                                  form=self.block_reuse_)
        self.weights_ = state.alpha
        if self._warm_weights is not None:  # start from the previous fit: as after a projection
            state.alpha.copy_(self._warm_weights)
            if state.f_rows is not None:
                state.f_rows.copy_(projector.rows(corr.rows, state.alpha))
        del self._warm_weights

        def step(rows):
            return state.step(X[rows], Y[rows], None if w is None else w[rows])

        def end_epoch():
            state.project()  # every epoch ends with the model on the centers only
            self.n_projections_ = state.n_projections

        self.n_projections_ = 0
        self._run_epochs(epochs, n, step, m, end_epoch=end_epoch, state=state, ridge=ridge)
        self.n_projections_ = state.n_projections
        return self

    def _fit_full_gradient(self, X, Y, Z, corr, projector, m, ridge, epochs, tile_budget, sample_weight=None):
        self.block_reuse_ = reuse_kernel_block(m, Z.shape[0], X.shape[1], X.element_size(), tile_budget, X.device)
        descent = FullGradientDescent(Z, Y.shape[1], corr, projector, step=self.step_size_, ridge=ridge,
                                      kernel=self.kernel_, chunk=m, form=self.block_reuse_, budget=tile_budget,
                                      sample_weight=sample_weight)
        if self._warm_weights is not None:  # start from the previous fit
            descent.alpha.copy_(self._warm_weights)
        del self._warm_weights
        self.weights_ = descent.alpha
        self.n_projections_ = 0

        def run_epoch(progress):
            descent.epoch(X, Y, progress)

        self._run_epochs(epochs, X.shape[0], run_epoch=run_epoch, state=descent, ridge=ridge)
        self.n_projections_ = len(self.history_)  # one projection per epoch
        return self
