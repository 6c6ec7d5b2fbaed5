"""The estimator base shared by the kops solvers: scikit-learn conventions without requiring it.

Every solver fits a model ``f(x) = K(x, Z) @ alpha`` (centers ``Z`` (p x d), weights ``alpha``
(p x c)); prediction is one fused product :func:`kops.kmv`, so it never forms ``K``.

Targets (``task``):

* ``"regression"``: y of shape (n,) or (n, c); predictions have y's shape.
* ``"classification"``: 1-D labels; the model regresses one-vs-all 0/1 targets (n x c for
  c classes) and predicts the class of the largest output (argmax). ``classes_`` holds the
  sorted labels. A single class is an error.
* ``"auto"`` (default): classification for 1-D integer, boolean or string labels,
  regression for floating or 2-D y.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch

from ..config import memory_budget
from ..ops import kmv
from ._sampling import make_generator
from .loss_weights import loss_weights
from ._validation import (check_sample_weight, check_X, check_y, encode_targets, kernel_of, resolve_device,
                          resolve_dtype)

from .sklearn_compat import (BaseEstimator as _Base, NotFittedBase, estimator_tags, validate_fit_input,
                             validate_predict_input)

__all__ = ["KernelModel", "NotFittedError", "DivergenceError", "Progress"]

#: training points on which per-epoch training metrics are measured (a fixed random subset)
EVAL_SAMPLES = 10_000
#: the fit stops with DivergenceError when the objective exceeds this factor times its best
DIVERGENCE_FACTOR = 2.0


class NotFittedError(NotFittedBase):
    """Raised by predict / score before fit: scikit-learn's NotFittedError (a ValueError and
    AttributeError) when it is installed, a subclass of it here."""


class DivergenceError(RuntimeError):
    """Raised when the objective becomes non-finite or grows; the estimator keeps the weights
    of its last good epoch (``weights_``, ``history_``), so it can still predict."""


class Progress:
    """A one-line progress display on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label = total, label
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, done: int, residual: float | None = None) -> None:
        """``done`` points of ``total`` visited; ``residual`` is the last batch's ``||g||^2``."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.2 and done < self.total:
            return
        self._last = now
        frac = done / max(1, self.total)
        bar = "#" * int(20 * frac)
        sys.stderr.write(f"\r{self.label} [{bar:20s}] {done}/{self.total} {now - self.start:6.1f} s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()




def median_bandwidth(X: torch.Tensor, generator: torch.Generator, sample: int = 1000) -> float:
    """The median pairwise distance of up to ``sample`` random rows of X (the default bandwidth)."""
    idx = torch.randperm(X.shape[0], generator=generator)[:sample].to(X.device)
    xs = X[idx].to(torch.float64)
    dist = torch.cdist(xs, xs)
    off = dist[~torch.eye(xs.shape[0], dtype=torch.bool, device=X.device)]
    med = float(off.median()) if off.numel() else 1.0
    return med if med > 0 and math.isfinite(med) else 1.0


class KernelModel(_Base):
    """Base of the kops kernel solvers (not used directly).

    Subclasses define ``__init__`` (which only stores its arguments, as scikit-learn
    requires) and ``_fit(X, Y, val)``; the base class provides validation, the target
    encoding, ``predict``, ``decision_function``, ``score``, per-epoch metrics, the
    callback and progress output.

    Fitted attributes
    -----------------
    centers_ : Tensor (p, d)
    weights_ : Tensor (p, c)
    kernel_ : kops.Kernel
    classes_ : ndarray (c,)  (classification only)
    n_features_in_ : int
    history_ : list of dict
        One record per epoch: ``epoch``, ``seconds`` (cumulative time in the epochs),
        ``epoch_seconds``, ``elapsed`` (time since fit started, set-up included, metrics
        excluded), ``train_mse`` and, for classification,
        ``train_accuracy``; ``val_mse`` / ``val_accuracy`` with validation data.
        Training metrics use a fixed random subset of at most 10,000 training points.
    fit_seconds_ : float
    """

    _default_dtype = "float32"

    # ------------------------------------------------------------------ set-up helpers
    def _setup(self, X_raw):
        self.device_ = resolve_device(getattr(self, "device", None))
        self.dtype_ = resolve_dtype(getattr(self, "dtype", None) or self._default_dtype)
        self.generator_ = make_generator(getattr(self, "random_state", None))
        X = check_X(X_raw, "X", self.device_, self.dtype_)
        bandwidth = self.bandwidth
        if bandwidth is None and isinstance(self.kernel, str):
            bandwidth = median_bandwidth(X, self.generator_)
        self.kernel_ = kernel_of(self.kernel, bandwidth)
        return X

    def _targets(self, y, n):
        y = check_y(y, "y", n)
        Y, classes, single = encode_targets(y, getattr(self, "task", "auto"), self.device_, self.dtype_)
        self.classes_ = classes
        self._single_output = single
        if classes is None and hasattr(self, "classes_"):
            del self.classes_
        return Y

    def _validation(self, X_val, y_val, d):
        if X_val is None and y_val is None:
            return None
        if X_val is None or y_val is None:
            raise ValueError("pass both X_val and y_val (validation data), or neither")
        Xv = check_X(X_val, "X_val", self.device_, self.dtype_, d=d)
        yv = check_y(y_val, "y_val", Xv.shape[0])
        return Xv, yv

    def _is_classifier(self) -> bool:
        return getattr(self, "classes_", None) is not None

    # -------------------------------------------------------------------------- fit
    def fit(self, X, y, X_val=None, y_val=None, sample_weight=None):
        """Fit the model.

        Parameters
        ----------
        X : array-like or Tensor, shape (n, d)
            Dense only: a scipy sparse matrix is refused with scikit-learn's TypeError.
        y : array-like or Tensor, shape (n,) or (n, c)
            Labels (classification) or targets (regression); see the module docstring.
        X_val, y_val : optional
            Validation data for the per-epoch metrics in ``history_``.
        sample_weight : array-like or Tensor (n,), optional
            Non-negative weights ``w`` of the loss ``1/2 sum_i w_i ||f(x_i) - y_i||^2`` (the
            ridge term is unchanged): integer weights are the same model as repeated rows,
            and a row of weight 0 has no effect (:mod:`kops.solvers.loss_weights`).

        Returns
        -------
        self
        """
        with memory_budget(getattr(self, "memory_budget", None)):
            return self._fit_within_budget(X, y, X_val, y_val, sample_weight)

    def _fit_within_budget(self, X, y, X_val, y_val, sample_weight=None):
        t0 = time.perf_counter()
        X, y, sample_weight = validate_fit_input(self, X, y, sample_weight)
        X = self._setup(X)
        Y = self._targets(y, X.shape[0])
        self._sample_weight = check_sample_weight(sample_weight, X.shape[0], self.device_, self.dtype_)
        if self._sample_weight is not None and self._is_classifier():
            weighted = Y[self._sample_weight > 0].amax(0)
            if int((weighted > 0).sum()) < 2:
                raise ValueError("sample_weight leaves a single class with positive weight; classification "
                                 "needs at least 2 classes")
        self.n_features_in_ = X.shape[1]
        val = self._validation(X_val, y_val, X.shape[1])
        self.history_ = []
        self._train_seconds = 0.0
        self._fit_start = t0
        self._eval_seconds = 0.0
        idx = torch.randperm(X.shape[0], generator=self.generator_)[:EVAL_SAMPLES].to(self.device_)
        self._eval = (X[idx], Y[idx])
        w = self._sample_weight
        # the objective's weights on the metrics subset, normalised by the mean over all rows
        self._eval_weight = None if w is None else w[idx] / float(w.to(torch.float64).mean())
        self._val = val
        checkpointer = getattr(self, "_checkpointer", None)
        if checkpointer is not None:  # identifies the data the checkpoints belong to
            checkpointer.begin(self, X, Y)
        try:
            self._fit(X, Y)
        finally:
            del self._eval, self._eval_weight, self._val, self._sample_weight
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _sample_weight_tensor(self):
        """The fit's sample weights (n,) in the training dtype, or None (no weights given)."""
        return getattr(self, "_sample_weight", None)

    def _loss_weights(self, X, Y, ridge: float):
        """The rows of positive weight, and the fit's normalised loss weights on them.

        Returns ``(X, Y, LossWeights)`` (:func:`kops.solvers.loss_weights.loss_weights`): the
        EigenPro solvers fit those rows with ``weights.rows`` scaling the residual, the ridge
        ``weights.ridge`` and their step divided by ``weights.largest``.
        """
        return loss_weights(X, Y, self._sample_weight_tensor(), ridge)

    def _refuse_row_weights(self) -> None:
        """For a set-up called without loss weights (the sharded solvers of kops.distributed,
        which take none): ValueError naming ``sample_weight`` unless every weight is 1."""
        w = self._sample_weight_tensor()
        if w is not None and not bool((w == 1).all()):
            cls = type(self)
            raise ValueError(f"sample_weight: {cls.__module__}.{cls.__name__} takes no sample weights (only "
                             "sample_weight=None or all ones); the single-process solvers (kops.EigenPro2, "
                             "kops.EigenPro3, kops.EigenPro4) take them")

    def _warm_start_weights(self, X, Y):
        """The previous fit's centers (p, d) and weights (p, c) to start from, or None.

        With ``warm_start=True`` and a fitted model; its centers must have X's features and
        its weights Y's outputs (ValueError naming ``warm_start`` otherwise).
        """
        if not getattr(self, "warm_start", False) or not hasattr(self, "weights_"):
            return None
        Z, W = self.centers_, self.weights_
        if Z.shape[1] != X.shape[1] or W.shape[1] != Y.shape[1]:
            raise ValueError(f"warm_start: the previous fit had {Z.shape[1]} features and {W.shape[1]} outputs, "
                             f"this one has {X.shape[1]} and {Y.shape[1]}; pass warm_start=False to start afresh")
        return Z.to(X.device, X.dtype), W.detach().to(X.device, X.dtype).clone()

    def _fit(self, X, Y):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ epoch loop
    def _run_epochs(self, epochs: int, n: int, step=None, batch_size: int | None = None, *, run_epoch=None,
                    end_epoch=None, state=None, ridge: float = 0.0) -> None:
        """The epoch loop shared by the iterative solvers.

        The loop owns the batch order: each epoch draws a permutation of the ``n`` training
        points from ``generator_`` and calls ``step(rows)`` for its consecutive slices of
        ``batch_size`` rows (``rows``: a long tensor on the device; ``step`` returns the
        batch's squared residual ``||g||^2``), then ``end_epoch()`` (EigenPro 4 projects
        there), so that after each epoch ``weights_`` is current. Whole-epoch solvers (full
        gradient descent) pass ``run_epoch(progress)`` instead of ``step``; they are
        checkpointed at epoch ends. After each epoch:
        metrics and the objective (``history_``), the divergence check, the callback.

        ``state`` (``state_dict()`` / ``load_state_dict()``; default: ``weights_``) is the
        iteration state a checkpoint (:mod:`kops.solvers.checkpoint`) saves with the loop's
        position: the epoch, the batch, the generator's state at the start of the epoch (it
        redraws the epoch's order on resume) and its current state.

        The objective is ``1/2 mean_i (f(x_i) - y_i)^2 + r / (2 n) alpha^T K(Z, Z) alpha``
        (summed over outputs; the mean over the metrics subset), i.e. ``L(alpha) / n``; with
        sample weights ``w`` the mean is weighted by ``w_i / mean(w)`` and ``n`` is ``sum_i w_i``
        (``L(alpha) / sum_i w_i``), for which ``ridge`` and ``n`` are the normalised
        problem's (:mod:`kops.solvers.loss_weights`). When it
        is not finite, or larger than ``DIVERGENCE_FACTOR`` times its best value so far (and
        above ``1000 eps`` times the zero model's objective, below which changes are
        rounding), the weights of the last good epoch are restored and DivergenceError is
        raised.
        """
        from .checkpoint import LoopPosition, WeightsState

        name = type(self).__name__
        self._ridge, self._n = ridge, n
        gen = self.generator_
        state = WeightsState(self) if state is None else state
        good = self.weights_.clone()
        # The fit starts from the zero model: its objective is the first "best", so a first
        # epoch that makes the model worse than predicting 0 is divergence too. Growth below
        # sqrt(eps) of that objective (residuals below eps^(1/4) of the targets') is noise of
        # the stochastic steps at the minimum, not divergence: an interpolating float64 fit
        # (EigenPro 3, ridge 0, all points as centers) went from 3.0e-11 to 8.1e-11 in one
        # epoch, which the former 1e3 eps floor reported as a divergence.
        Ye = self._eval[1]
        best = self._data_objective(torch.zeros_like(Ye), Ye) if not bool(good.any()) else float("inf")
        floor = (best if math.isfinite(best) else 0.0) * math.sqrt(torch.finfo(Ye.dtype).eps)
        position = LoopPosition(best=best)
        checkpointer = getattr(self, "_checkpointer", None)
        if checkpointer is not None:
            position = checkpointer.start(self, state, good)
        make_progress = getattr(self, "_progress_factory", None) or Progress
        for epoch in range(position.epoch, epochs + 1):
            first = 0
            if run_epoch is not None:  # a whole-epoch solver (full gradient): no batch order
                epoch_rng = perm = None
            elif position.epoch_rng is not None:  # resumed mid-epoch: redraw the epoch's order
                current = gen.get_state()
                epoch_rng = position.epoch_rng
                gen.set_state(epoch_rng)
                perm = torch.randperm(n, generator=gen).to(self.device_)
                gen.set_state(current)
                first, position.epoch_rng = position.batch, None
            else:
                epoch_rng = gen.get_state()
                perm = torch.randperm(n, generator=gen).to(self.device_)
            t0 = time.perf_counter()
            progress = make_progress(n, f"{name} epoch {epoch}", bool(getattr(self, "verbose", 0)))
            if run_epoch is not None:
                run_epoch(progress)
            done = min(n, first * batch_size) if run_epoch is None else n
            for i in range(first, 0 if run_epoch is not None else -(-n // batch_size)):
                rows = perm[i * batch_size : (i + 1) * batch_size]
                residual = step(rows)
                done += rows.shape[0]
                progress.update(done, residual)
                if checkpointer is not None:
                    checkpointer.after_batch(self, state, good, LoopPosition(epoch, i + 1, epoch_rng, position.best))
            if end_epoch is not None:
                end_epoch()
            progress.close()
            stop = self._end_epoch(epoch, time.perf_counter() - t0, check=False)
            objective = self.history_[-1]["objective"]
            best = position.best
            if not math.isfinite(objective) or objective > max(DIVERGENCE_FACTOR * best, floor):
                self.weights_.copy_(good)
                kept = f"epoch {epoch - 1}" if epoch > 1 else "the initial (zero) model"
                raise DivergenceError(
                    f"{name} diverged in epoch {epoch}: the objective went from {best:.4g} to {objective:.4g}. "
                    f"The weights of {kept} are kept. Pass a smaller batch_size, or a smaller "
                    "projection_tol (EigenPro 3 / 4), or check the data for outliers and the bandwidth")
            if objective <= best:
                position.best = objective
            good.copy_(self.weights_)
            stop = stop or self._callback(self.history_[-1])
            if checkpointer is not None and run_epoch is not None:  # an epoch is its one "batch"
                checkpointer.after_batch(self, state, good, LoopPosition(epochs + 1 if stop else epoch + 1, 0, None,
                                                                         position.best))
            elif checkpointer is not None:
                checkpointer.after_epoch(self, state, good, LoopPosition(epochs + 1 if stop else epoch + 1, 0, None,
                                                                         position.best))
            if stop:
                break
        if checkpointer is not None:
            checkpointer.finish(self, state, good, LoopPosition(epochs + 1, 0, None, position.best))

    def _callback(self, record) -> bool:
        callback = getattr(self, "callback", None)
        return bool(callback(self, record)) if callback is not None else False

    # ----------------------------------------------------------------- epoch records
    def _end_epoch(self, epoch: int, epoch_seconds: float, check: bool = True) -> bool:
        """Record metrics after an epoch and print them; with ``check``, call the callback
        (True means stop)."""
        t_eval = time.perf_counter()
        self._train_seconds += epoch_seconds
        record = {"epoch": epoch, "seconds": self._train_seconds, "epoch_seconds": epoch_seconds,
                  "elapsed": t_eval - self._fit_start - self._eval_seconds}
        Xe, Ye = self._eval
        out = self._raw(Xe)
        record["train_mse"] = float((out - Ye).square().mean())
        record["objective"] = self._data_objective(out, Ye) + self._ridge_term()
        if self._is_classifier():
            record["train_accuracy"] = float((out.argmax(1) == Ye.argmax(1)).float().mean())
        if self._val is not None:
            Xv, yv = self._val
            out = self._raw(Xv)
            if self._is_classifier():
                pred = self.classes_[out.argmax(1).cpu().numpy()]
                labels = yv.numpy() if isinstance(yv, torch.Tensor) else np.asarray(yv)
                record["val_accuracy"] = float(np.mean(pred == labels))
            else:
                yt = torch.as_tensor(np.asarray(yv) if not isinstance(yv, torch.Tensor) else yv)
                yt = yt.to(out.device, out.dtype).reshape(out.shape)
                record["val_mse"] = float((out - yt).square().mean())
        self.history_.append(record)
        self._eval_seconds += time.perf_counter() - t_eval
        if getattr(self, "verbose", 0):
            parts = [f"{k} {v:.4g}" for k, v in record.items() if k not in ("epoch",)]
            print(f"{type(self).__name__} epoch {epoch}: " + ", ".join(parts), file=sys.stderr)
        return self._callback(record) if check else False

    def _data_objective(self, out, Y) -> float:
        """``1/2 mean_i w_i ||out_i - Y_i||^2`` on the metrics subset (out, Y: (k, c)), with the
        sample weights normalised to mean 1 over all rows (``w_i = 1`` without weights)."""
        sq = (out - Y).square().sum(1)
        w = getattr(self, "_eval_weight", None)
        return 0.5 * float((sq if w is None else sq * w.to(sq.dtype)).mean())

    def _ridge_term(self) -> float:
        """``r / (2 n) sum_c alpha_c^T K(Z, Z) alpha_c`` (0 without a ridge)."""
        ridge = getattr(self, "_ridge", 0.0)
        if not ridge:
            return 0.0
        a = self.weights_
        Z = self.centers_.to(a.dtype)  # ExactKernelRidge keeps float64 weights whatever the dtype
        return 0.5 * ridge / self._n * float((a * kmv(Z, Z, a, self.kernel_)).sum())

    # ------------------------------------------------------------------- model files
    def save(self, path) -> None:
        """Write the fitted model to ``path`` (safetensors with a JSON header; see
        :mod:`kops.serialization`); :func:`kops.load` reads it back."""
        from ..serialization import save_model

        save_model(self, path)

    # ---------------------------------------------------------------------- predict
    def _check_fitted(self):
        if not hasattr(self, "weights_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")

    def _raw(self, X: torch.Tensor) -> torch.Tensor:
        return kmv(X, self.centers_, self.weights_.to(X.dtype), self.kernel_)

    def _outputs(self, X):
        """The raw outputs of validated X, and whether X was a tensor."""
        self._check_fitted()
        is_tensor = isinstance(X, torch.Tensor)
        X = validate_predict_input(self, X)
        return self._raw(check_X(X, "X", self.device_, self.dtype_, d=self.n_features_in_)), is_tensor

    def decision_function(self, X):
        """The raw outputs ``K(X, Z) @ alpha``, shape (n, c); (n,) for 1-D regression targets,
        and for two classes ``f_1 - f_0`` (positive: ``classes_[1]``), scikit-learn's convention.

        Returns a float64 numpy array for array-like input, a tensor (on X's device, in the
        training dtype) for tensor input.
        """
        return self._decision_values(X)

    def _decision_values(self, X):
        out, is_tensor = self._outputs(X)
        if self._single_output:
            out = out[:, 0]
        elif self._is_classifier() and out.shape[1] == 2:
            out = out[:, 1] - out[:, 0]
        if is_tensor:
            return out.to(X.device)
        return out.cpu().numpy().astype(np.float64, copy=False)

    def predict(self, X):
        """Predictions for X (n, d): class labels (classification) or outputs (regression).

        Returns a numpy array for array-like input; a tensor on X's device for tensor input
        (class labels stay numpy when they are not numeric).
        """
        if not self._is_classifier():
            return self._decision_values(X)
        out, is_tensor = self._outputs(X)
        labels = self.classes_[out.argmax(1).cpu().numpy()]
        if is_tensor and labels.dtype.kind in "biuf":
            return torch.from_numpy(labels).to(X.device)
        return labels

    def score(self, X, y, sample_weight=None):
        """Accuracy (classification) or the coefficient of determination R^2 (regression,
        averaged over outputs), weighted by ``sample_weight`` (n,) when given."""
        pred = self.predict(X)
        pred = pred.cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        truth = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if truth.shape[0] != pred.shape[0]:
            raise ValueError(f"y has {truth.shape[0]} rows but X has {pred.shape[0]}")
        w = np.ones(pred.shape[0]) if sample_weight is None else (
            sample_weight.detach().cpu().numpy() if isinstance(sample_weight, torch.Tensor)
            else np.asarray(sample_weight, dtype=np.float64)).reshape(-1)
        if w.shape[0] != pred.shape[0]:
            raise ValueError(f"sample_weight has {w.shape[0]} entries but X has {pred.shape[0]} rows")
        if self._is_classifier():
            return float(np.average(pred == truth.reshape(pred.shape), weights=w))
        truth = truth.reshape(pred.shape).astype(np.float64)
        wc = w.reshape((-1,) + (1,) * (pred.ndim - 1))
        ss_res = (wc * (truth - pred) ** 2).sum(0)
        ss_tot = (wc * (truth - np.average(truth, axis=0, weights=w)) ** 2).sum(0)
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), 0.0)
        return float(np.mean(r2))

    def __sklearn_tags__(self):
        return estimator_tags(self, super().__sklearn_tags__())
