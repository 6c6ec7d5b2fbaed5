"""A ``scipy.sparse.linalg.LinearOperator`` whose products are kops' fused kernel products.

``aslinearoperator(kops.KernelOperator(...))`` gives an operator on which SciPy's iterative
methods work (``cg``, ``minres``, ``gmres``, ``eigsh``, ``svds``, ``lsqr``, ``lsmr``): its
``matvec`` / ``matmat`` are ``(K(x, z) + r I) V`` and ``rmatvec`` / ``rmatmat`` / the adjoint
``(K(z, x) + r I) U``, each one :func:`kops.kmv`. NumPy inputs are copied to the operator's
dtype and device and the result comes back as a NumPy array of the operator's dtype, so
SciPy's arithmetic runs in that precision (use a float64 operator for tight tolerances).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

from ..operator import KernelOperator

__all__ = ["KernelLinearOperator", "aslinearoperator"]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


class KernelLinearOperator(LinearOperator):
    """SciPy view of a :class:`kops.KernelOperator` ``A`` (n x m).

    Parameters
    ----------
    operator : kops.KernelOperator
        float32 or float64 (SciPy has no bfloat16; convert with ``operator.to(torch.float64)``).

    Attributes
    ----------
    operator : kops.KernelOperator
    shape : (n, m)
    dtype : numpy.dtype
    """

    def __init__(self, operator: KernelOperator):
        if not isinstance(operator, KernelOperator):
            raise TypeError(f"operator must be a kops.KernelOperator, got {type(operator).__name__}")
        if operator.dtype not in _NUMPY_DTYPES:
            raise TypeError(f"the operator's dtype must be float32 or float64 for SciPy, got {operator.dtype}; "
                            "convert it with operator.to(torch.float64)")
        self.operator = operator
        super().__init__(dtype=np.dtype(_NUMPY_DTYPES[operator.dtype]), shape=tuple(operator.shape))

    def _apply(self, product, values) -> np.ndarray:
        v = torch.as_tensor(np.asarray(values), device=self.operator.device).to(self.operator.dtype)
        with torch.no_grad():
            return product(v).cpu().numpy()

    def _matvec(self, v):
        return self._apply(self.operator.matmul, np.ravel(v))

    def _matmat(self, V):
        return self._apply(self.operator.matmul, V)

    def _rmatvec(self, u):
        return self._apply(self.operator.rmatmul, np.ravel(u))

    def _rmatmat(self, U):
        return self._apply(self.operator.rmatmul, U)

    def _adjoint(self):
        # Real kernels: the adjoint is the transpose K(z, x) + r I, itself a kops operator.
        return KernelLinearOperator(self.operator.T)

    _transpose = _adjoint


def aslinearoperator(operator: KernelOperator) -> KernelLinearOperator:
    """``scipy.sparse.linalg.LinearOperator`` of a :class:`kops.KernelOperator` (see the module)."""
    return KernelLinearOperator(operator)
