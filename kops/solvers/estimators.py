"""scikit-learn regressors and classifiers of every solver: ``<Solver>Regressor`` / ``<Solver>Classifier``.

Design: one regressor and one classifier class per solver, each the solver with its ``task``
fixed and scikit-learn's mixin in front (``RegressorMixin`` / ``ClassifierMixin``), so that
``is_classifier``, ``cross_val_score`` (stratified folds for classifiers), scorers such as
``roc_auc`` and ``check_estimator`` see a static estimator type, as scikit-learn's own
estimators have. The solver classes (``kops.EigenPro4`` ...) keep working unchanged: their
``task`` ("auto" by default) decides at fit, and their tags follow ``task`` when it is
"regression" or "classification". The classes here take every parameter of their solver
except ``task`` (their ``__init__`` is generated from the solver's signature, so the two
cannot drift apart) and only store them.

Classifiers regress one-vs-all 0/1 targets and predict the class of the largest output;
``decision_function`` is (n, c) for c > 2 classes and the 1-D ``f_1 - f_0`` for two.
There is no ``predict_proba``: least-squares one-vs-all outputs are not probabilities (they
leave [0, 1] and are not calibrated), and a softmax or clipping of them would pretend to be.
Wrap a classifier in ``sklearn.calibration.CalibratedClassifierCV`` for calibrated
probabilities (it calibrates ``decision_function`` on held-out folds).
"""
from __future__ import annotations

from .base import KernelModel
from .eigenpro2 import EigenPro2
from .eigenpro3 import EigenPro3
from .eigenpro4 import EigenPro4
from .exact import ExactKernelRidge
from .falkon import Falkon
from .sklearn_compat import HAVE_SKLEARN, fixed_task_init

if HAVE_SKLEARN:
    from sklearn.base import ClassifierMixin, RegressorMixin
else:  # pragma: no cover - exercised only without scikit-learn
    class ClassifierMixin:
        """Stand-in: the estimator type only."""

    class RegressorMixin:
        """Stand-in: the estimator type only."""

__all__ = [
    "EigenPro2Regressor", "EigenPro2Classifier", "EigenPro3Regressor", "EigenPro3Classifier",
    "EigenPro4Regressor", "EigenPro4Classifier", "ExactKernelRidgeRegressor", "ExactKernelRidgeClassifier",
    "FalkonRegressor", "FalkonClassifier",
]


class _Unavailable:
    """A method a class does not offer: ``hasattr`` is False and access says why."""

    def __init__(self, reason: str):
        self.reason = reason

    def __get__(self, obj, owner=None):
        raise AttributeError(self.reason)


class _Regressor(RegressorMixin):
    """RegressorMixin with the solvers' own score (tensors on any device, multi-output R^2).

    Regressors have no ``decision_function`` (scikit-learn's convention: ``predict`` gives the
    outputs)."""

    score = KernelModel.score
    decision_function = _Unavailable("a regressor has no decision_function: predict returns the outputs")


class _Classifier(ClassifierMixin):
    """ClassifierMixin with the solvers' own score (accuracy; tensors on any device)."""

    score = KernelModel.score


class EigenPro2Regressor(_Regressor, EigenPro2):
    """:class:`kops.EigenPro2` for regression, with scikit-learn's RegressorMixin (module docstring).

    Parameters and attributes: those of :class:`kops.EigenPro2`, except ``task``.
    """

    __init__ = fixed_task_init(EigenPro2)
    task = "regression"


class EigenPro2Classifier(_Classifier, EigenPro2):
    """:class:`kops.EigenPro2` for classification (one-vs-all, argmax), with scikit-learn's ClassifierMixin (module docstring).

    Parameters and attributes: those of :class:`kops.EigenPro2`, except ``task``.
    """

    __init__ = fixed_task_init(EigenPro2)
    task = "classification"


class EigenPro3Regressor(_Regressor, EigenPro3):
    """:class:`kops.EigenPro3` for regression, with scikit-learn's RegressorMixin (module docstring).

    Parameters and attributes: those of :class:`kops.EigenPro3`, except ``task``.
    """

    __init__ = fixed_task_init(EigenPro3)
    task = "regression"


class EigenPro3Classifier(_Classifier, EigenPro3):
    """:class:`kops.EigenPro3` for classification (one-vs-all, argmax), with scikit-learn's ClassifierMixin (module docstring).

    Parameters and attributes: those of :class:`kops.EigenPro3`, except ``task``.
    """

    __init__ = fixed_task_init(EigenPro3)
    task = "classification"


class EigenPro4Regressor(_Regressor, EigenPro4):
    """:class:`kops.EigenPro4` for regression, with scikit-learn's RegressorMixin (module docstring).

    Parameters and attributes: those of :class:`kops.EigenPro4`, except ``task``.
    """

    __init__ = fixed_task_init(EigenPro4)
    task = "regression"


class EigenPro4Classifier(_Classifier, EigenPro4):
    """:class:`kops.EigenPro4` for classification (one-vs-all, argmax), with scikit-learn's ClassifierMixin (module docstring).

    Parameters and attributes: those of :class:`kops.EigenPro4`, except ``task``.
    """

    __init__ = fixed_task_init(EigenPro4)
    task = "classification"


class ExactKernelRidgeRegressor(_Regressor, ExactKernelRidge):
    """:class:`kops.ExactKernelRidge` for regression, with scikit-learn's RegressorMixin (module docstring).

    Parameters and attributes: those of :class:`kops.ExactKernelRidge`, except ``task``.
    """

    __init__ = fixed_task_init(ExactKernelRidge)
    task = "regression"


class ExactKernelRidgeClassifier(_Classifier, ExactKernelRidge):
    """:class:`kops.ExactKernelRidge` for classification (one-vs-all, argmax), with scikit-learn's ClassifierMixin (module docstring).

    Parameters and attributes: those of :class:`kops.ExactKernelRidge`, except ``task``.
    """

    __init__ = fixed_task_init(ExactKernelRidge)
    task = "classification"


class FalkonRegressor(_Regressor, Falkon):
    """:class:`kops.Falkon` for regression, with scikit-learn's RegressorMixin (module docstring).

    Parameters and attributes: those of :class:`kops.Falkon`, except ``task``.
    """

    __init__ = fixed_task_init(Falkon)
    task = "regression"


class FalkonClassifier(_Classifier, Falkon):
    """:class:`kops.Falkon` for classification (one-vs-all, argmax), with scikit-learn's ClassifierMixin (module docstring).

    Parameters and attributes: those of :class:`kops.Falkon`, except ``task``.
    """

    __init__ = fixed_task_init(Falkon)
    task = "classification"
