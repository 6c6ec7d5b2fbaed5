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
from .precision import PRECISIONS
from .serialization import load_model as load
from .solvers import EigenPro2, EigenPro3, EigenPro4, ExactKernelRidge

__all__ = [
    "__version__",
    "kmv",
    "kmv_accumulate",
    "kernel_matrix",
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
    "load",
]
