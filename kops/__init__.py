"""kops: fused kernel-matrix products and kernel-machine solvers for PyTorch.

The ops (``kmv``, ``kmv_accumulate``, ``kernel_matrix``) are also registered as torch custom
ops under ``torch.ops.kops``; see kops.ops for the NaN policy and kops.precision for the
precision modes.
"""
__version__ = "0.1.0"

from .config import get_memory_budget, memory_budget, set_memory_budget
from .info import info
from .kernels import KERNELS, Cauchy, Gaussian, Kernel, Laplacian, Matern32, Matern52
from .ops import kernel_matrix, kmv, kmv_accumulate
from .operator import KernelOperator
from .precision import PRECISIONS
from .serialization import load_model as load
from .solvers import EigenPro2, EigenPro3, EigenPro4, ExactKernelRidge
from .solvers import (DivergenceError, EigenPro2Classifier, EigenPro2Regressor, EigenPro3Classifier,
                      EigenPro3Regressor, EigenPro4Classifier, EigenPro4Regressor, ExactKernelRidgeClassifier,
                      ExactKernelRidgeRegressor, Falkon, FalkonClassifier, FalkonRegressor, NotFittedError)

__all__ = [
    "__version__",
    "kmv",
    "kmv_accumulate",
    "kernel_matrix",
    "KernelOperator",
    "Kernel",
    "Gaussian",
    "Laplacian",
    "Matern32",
    "Matern52",
    "Cauchy",
    "KERNELS",
    "PRECISIONS",
    "info",
    "get_memory_budget",
    "set_memory_budget",
    "memory_budget",
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
    "load",
]
