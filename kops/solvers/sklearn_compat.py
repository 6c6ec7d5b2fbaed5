"""scikit-learn conventions for the kops estimators, with scikit-learn optional.

With scikit-learn installed (>= 1.6, the version of ``__sklearn_tags__``):

* the estimators derive from its ``BaseEstimator`` (get_params / set_params / clone / repr);
* array-like input (numpy, lists, pandas) goes through scikit-learn's ``validate_data``, so
  errors and warnings are scikit-learn's own: sparse matrices are refused with its
  ``TypeError`` (the fused products need dense rows), complex, object or empty data, one
  sample, 1-D X, a wrong number of features (``n_features_in_``) and DataFrame columns in
  another order or with other names than at fit (``feature_names_in_``) are its
  ``ValueError``; sample weights go through ``_check_sample_weight`` (negative weights
  refused: the weighted least squares would not be convex);
* torch tensors bypass it (they may live on a GPU) and are checked by
  :mod:`kops.solvers._validation`; they carry no feature names;
* ``NotFittedError`` is a subclass of scikit-learn's.

Without scikit-learn a minimal ``get_params`` / ``set_params`` base stands in and only the
tensor checks run.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

try:
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError as _NotFittedBase
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import _check_sample_weight, validate_data

    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    HAVE_SKLEARN = False

    class _NotFittedBase(ValueError, AttributeError):
        """Stand-in for scikit-learn's NotFittedError."""

    class BaseEstimator:
        """Minimal get_params / set_params, as scikit-learn's BaseEstimator defines them."""

        @classmethod
        def _get_param_names(cls):
            sig = inspect.signature(cls.__init__)
            return sorted(p.name for p in sig.parameters.values()
                          if p.name != "self" and p.kind != p.VAR_KEYWORD)

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for key, value in params.items():
                if key not in valid:
                    raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}; valid: {valid}")
                setattr(self, key, value)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

__all__ = ["HAVE_SKLEARN", "BaseEstimator", "NotFittedBase", "validate_fit_input", "validate_predict_input",
           "estimator_tags", "fixed_task_init"]

NotFittedBase = _NotFittedBase


def _task_of(estimator) -> str:
    return getattr(estimator, "task", "auto")


def validate_fit_input(estimator, X, y, sample_weight):
    """``(X, y, sample_weight)`` for fit: array-likes through scikit-learn's validation.

    Tensors are returned unchanged (checked later by :mod:`kops.solvers._validation`) and
    clear ``feature_names_in_``. ``sample_weight`` comes back as a float64 numpy array or a
    tensor, or None.
    """
    task = _task_of(estimator)
    if isinstance(X, torch.Tensor) or not HAVE_SKLEARN:
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
        return X, y, sample_weight
    if y is None:  # scikit-learn's message for a supervised estimator
        validate_data(estimator, X, y, reset=True)
    y_in = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y
    X, y_out = validate_data(estimator, X, y_in, reset=True, accept_sparse=False, dtype="numeric",
                             ensure_min_samples=2, multi_output=task != "classification",
                             y_numeric=task == "regression")
    if task == "classification":
        check_classification_targets(y_out)
    if sample_weight is not None and not isinstance(sample_weight, torch.Tensor):
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    return X, y_out, sample_weight


def validate_predict_input(estimator, X):
    """X for predict / decision_function: array-likes through scikit-learn's validation
    (feature count and names against fit); tensors unchanged."""
    if isinstance(X, torch.Tensor) or not HAVE_SKLEARN:
        return X
    return validate_data(estimator, X, reset=False, accept_sparse=False, dtype="numeric")


def estimator_tags(estimator, tags):
    """Complete scikit-learn's tags for a kops estimator.

    The estimator type follows ``task`` for the estimators that take it ("auto" declares
    none: it is decided by the labels at fit); dense input only; y is required;
    regression takes multi-output targets.
    """
    from sklearn.utils import ClassifierTags, RegressorTags

    task = _task_of(estimator)
    if tags.estimator_type is None and task == "classification":
        tags.estimator_type, tags.classifier_tags = "classifier", ClassifierTags()
    elif tags.estimator_type is None and task == "regression":
        tags.estimator_type, tags.regressor_tags = "regressor", RegressorTags()
    tags.input_tags.sparse = False
    tags.input_tags.allow_nan = False
    tags.target_tags.required = True
    tags.target_tags.multi_output = tags.estimator_type != "classifier"
    tags.target_tags.single_output = True
    return tags


def fixed_task_init(solver):
    """An ``__init__`` with ``solver.__init__``'s parameters except ``task``, storing them only.

    Generated from the solver's signature so the regressor / classifier classes can never
    drift from it; it only stores its arguments, as scikit-learn requires, and exposes the
    reduced signature to ``get_params`` through ``__signature__``.
    """
    full = inspect.signature(solver.__init__)
    signature = full.replace(parameters=[p for name, p in full.parameters.items() if name != "task"])

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature
    __init__.__doc__ = f"Store the parameters of :class:`{solver.__name__}` (all but ``task``)."
    __init__.__qualname__ = f"{solver.__name__}.__init__"
    return __init__
