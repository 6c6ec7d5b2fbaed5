"""Per-row sample weights as the EigenPro solvers use them: a row scaling of the residual.

The weighted objective on centers Z (:class:`kops.ExactKernelRidge` and :class:`kops.Falkon`
have the same)::

    L(alpha) = 1/2 sum_i w_i ||K(x_i, Z) alpha - y_i||^2 + r/2 alpha^T K(Z, Z) alpha

The rows of weight 0 drop out of L, so they are removed before the fit (they are then not
drawn as centers either). Dividing L by the mean weight ``w_bar = sum_i w_i / n`` (n the rows
left) changes nothing but the scale: the solvers minimise the same problem with the
normalised weights ``w_i / w_bar`` (mean 1) and the ridge ``r / w_bar``. With them:

* the batch gradient ``K(Z, X_B) W_B (K(X_B, Z) alpha - Y_B)`` is the unweighted one with
  its residual's rows scaled by the normalised weights;
* the preconditioner (an eigen-system of the kernel, not of the loss) is unchanged and sees
  the ridge ``r / w_bar`` (its shift is ``r / sum_i w_i``, as Falkon's);
* the weighted operator is at most ``max_i w_i / w_bar`` times the unweighted one, so the
  unweighted problem's step divided by that largest normalised weight keeps the iteration
  stable.

Equal weights are the unweighted problem with the ridge ``r / w`` (exact; no row scaling).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LossWeights", "loss_weights"]


@dataclass(frozen=True)
class LossWeights:
    """The normalised per-row weights of a fit (module docstring).

    Attributes
    ----------
    rows : Tensor (n,) or None
        ``w_i / w_bar`` for the rows kept (mean 1), None when the loss is unweighted (no
        weights, or equal weights).
    ridge : float
        The ridge of the normalised problem, ``r / w_bar``.
    largest : float
        ``max_i w_i / w_bar`` (1 when unweighted): the step sizes are divided by it.
    """

    rows: torch.Tensor | None
    ridge: float
    largest: float = 1.0

    def step(self, eta: float) -> float:
        """The stable step for the weighted loss from the unweighted problem's ``eta``."""
        return eta / self.largest


def loss_weights(X: torch.Tensor, Y: torch.Tensor, sample_weight: torch.Tensor | None, ridge: float):
    """The rows of positive weight and the normalised weights of the loss on them.

    Parameters
    ----------
    X : Tensor (n, d)
    Y : Tensor (n, c)
    sample_weight : Tensor (n,) or None
        Validated weights (finite, non-negative, not all zero), in X's dtype.
    ridge : float
        r, the ridge of the weighted objective.

    Returns
    -------
    X : Tensor (n', d)
    Y : Tensor (n', c)
        The rows of positive weight (the inputs themselves when none is 0).
    weights : LossWeights
        For those rows: ``rows = w / w_bar``, ``ridge = r / w_bar``, ``w_bar = mean(w)``.
    """
    if sample_weight is None:
        return X, Y, LossWeights(None, ridge)
    w = sample_weight
    keep = w > 0
    if not bool(keep.all()):
        X, Y, w = X[keep], Y[keep], w[keep]
    first = float(w[0])
    if bool((w == first).all()):  # equal weights: the unweighted problem with ridge r / w
        return X, Y, LossWeights(None, ridge / first)
    w64 = w.to(torch.float64)
    mean = float(w64.mean())
    rows = (w64 / mean).to(w.dtype)
    return X, Y, LossWeights(rows, ridge / mean, float(rows.max()))
