"""Kernel-machine solvers built on the fused kernel products (EigenPro 2 / 3 / 4, exact ridge).

Every kernel product here goes through the public ops (:func:`kops.kmv`,
:func:`kops.kernel_matrix`), so the solvers run on whatever backend dispatch picks.

* :func:`top_eigensystem`: top eigenpairs of ``K(X_S, X_S) / s`` (dense or matrix-free).
* :class:`NystromPreconditioner`: EigenPro's preconditioner, step size and critical batch size.
* :class:`EigenPro2` (centers = data), :class:`EigenPro3` (projected),
  :class:`EigenPro4` (delayed projection), :class:`ExactKernelRidge` (Cholesky baseline):
  scikit-learn style estimators (``fit`` / ``predict`` / ``score``).
"""
from .eigenpro2 import EigenPro2
from .eigenpro3 import EigenPro3
from .eigenpro4 import EigenPro4
from .eigensystem import Eigensystem, top_eigensystem
from .estimators import (EigenPro2Classifier, EigenPro2Regressor, EigenPro3Classifier, EigenPro3Regressor,
                         EigenPro4Classifier, EigenPro4Regressor, ExactKernelRidgeClassifier,
                         ExactKernelRidgeRegressor, FalkonClassifier, FalkonRegressor)
from .exact import ExactKernelRidge
from .falkon import Falkon
from .base import DivergenceError, NotFittedError
from .checkpoint import Checkpointer, checkpointing
from .preconditioner import NystromPreconditioner

__all__ = [
    "EigenPro2",
    "EigenPro3",
    "EigenPro4",
    "ExactKernelRidge",
    "Falkon",
    "EigenPro2Regressor",
    "EigenPro2Classifier",
    "EigenPro3Regressor",
    "EigenPro3Classifier",
    "EigenPro4Regressor",
    "EigenPro4Classifier",
    "ExactKernelRidgeRegressor",
    "ExactKernelRidgeClassifier",
    "FalkonRegressor",
    "FalkonClassifier",
    "NotFittedError",
    "DivergenceError",
    "NystromPreconditioner",
    "Eigensystem",
    "top_eigensystem",
    "Checkpointer",
    "checkpointing",
]
