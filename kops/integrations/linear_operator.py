"""A ``linear_operator.LinearOperator`` whose products are kops' fused kernel products.

:class:`KopsLinearOperator` represents ``A = c K(x / l, z / l)`` (n x m): a kops kernel with
lengthscale ``l`` (a 0-d tensor, or (d,) per feature: ARD) and outputscale ``c`` (0-d
tensor). Following linear_operator's rules, every tensor it is built from is a positional
argument (``x, z, lengthscale, outputscale``: its representation, through which the library
differentiates) and the kernel name, precision and backend are keyword arguments. It defines
``_matmul`` (one :func:`kops.kmv`), ``_size``, ``_transpose_nonbatch`` (``K(z, x)``), an exact
``_diagonal``, ``_getitem`` / ``_get_indices`` on the points, and ``to_dense`` through
:func:`kops.kernel_matrix`. The derivatives with respect to the representation
(``_bilinear_derivative``, used by solve, inv_quad_logdet and GPyTorch's marginal
likelihood) are those of linear_operator's default, autograd through ``_matmul``: kops'
fused backward, so no n x m matrix is formed for them.

Batch dimensions are refused with a clear error: the operator is one (n x m) matrix.

A positive constant times the operator (``A * k``, ``A.mul(k)``, GPyTorch's ``ScaleKernel``) is
the same operator with the outputscale ``k c``, so it keeps its ``preconditioner``.

``to_linear_operator(kops.KernelOperator(...))`` converts a kops operator (its ridge becomes
a constant added diagonal).
"""
from __future__ import annotations

import torch
from linear_operator.operators import (AddedDiagLinearOperator, ConstantDiagLinearOperator, DiagLinearOperator,
                                       LinearOperator)

from ..kernels import resolve_kernel
from ..operator import KernelOperator, paired_kernel_values
from ..ops import kernel_matrix

__all__ = ["KopsLinearOperator", "to_linear_operator"]

_BATCH_REFUSED = ("KopsLinearOperator has no batch dimensions: x and z must be 2-D (n, d) and (m, d), "
                  "lengthscale 0-d or (d,), outputscale 0-d")


def _as_tensor(value, like: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a tensor or a number, got {type(value).__name__}") from None


class KopsLinearOperator(LinearOperator):
    """``A = outputscale * K(x, z)`` with a kops kernel, as a linear_operator LinearOperator.

    Parameters
    ----------
    x : Tensor, shape (n, d)
    z : Tensor, shape (m, d)
    lengthscale : Tensor, shape () or (d,), or float
        The kernel's bandwidth s (see :mod:`kops.kernels` for each kernel's formula);
        (d,) gives one lengthscale per feature (ARD).
    outputscale : Tensor, shape (), or float
        ``c > 0`` multiplying the kernel (default 1).
    kernel : str
        A kops kernel name ("gaussian", "laplacian", "matern32", "matern52", "cauchy").
    precision, backend : str
        Passed to :func:`kops.kmv`.
    preconditioner : callable, optional
        A ``preconditioner_override`` (such as
        :class:`kops.integrations.nystrom_preconditioner.EigenProPreconditioner`) given to the
        ``AddedDiagLinearOperator`` that adding a diagonal (``A + D``, ``A.add_diagonal(d)``,
        GPyTorch's Gaussian noise) returns, so that CG on ``A + D`` uses it.
    """

    def __init__(self, x, z, lengthscale, outputscale=1.0, *, kernel="gaussian", precision="ieee",
                 backend="auto", preconditioner=None):
        for name, t in (("x", x), ("z", z)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 2:
                raise ValueError(f"{_BATCH_REFUSED}; got {name} of shape {tuple(t.shape)}")
        lengthscale = _as_tensor(lengthscale, x, "lengthscale")
        outputscale = _as_tensor(outputscale, x, "outputscale")
        if lengthscale.dim() > 1:
            raise ValueError(f"{_BATCH_REFUSED}; got lengthscale of shape {tuple(lengthscale.shape)}")
        if outputscale.dim() != 0:
            raise ValueError(f"{_BATCH_REFUSED}; got outputscale of shape {tuple(outputscale.shape)}")
        # The product's own checks (shapes, dtypes, devices, positive bandwidth) run here once.
        self._kops = KernelOperator(x, z, kernel, lengthscale, precision=precision, backend=backend)
        if preconditioner is not None and not callable(preconditioner):
            raise TypeError(f"preconditioner must be callable (a preconditioner_override), got {preconditioner!r}")
        super().__init__(x, z, lengthscale, outputscale, kernel=kernel, precision=precision, backend=backend,
                         preconditioner=preconditioner)
        self.x, self.z, self.lengthscale, self.outputscale = x, z, lengthscale, outputscale
        self.kernel_name = self._kops.kernel.name

    # ---------------------------------------------------------------- required rules
    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        if rhs.dim() <= 2:
            return self._kops.matmul(rhs) * self.outputscale
        # Batched right-hand sides (..., m, c): one product with the batch folded into columns.
        m = rhs.shape[-2]
        folded = rhs.movedim(-2, 0).reshape(m, -1)
        out = self._kops.matmul(folded) * self.outputscale
        return out.reshape(self.x.shape[0], *rhs.shape[:-2], rhs.shape[-1]).movedim(0, -2)

    def _size(self) -> torch.Size:
        return torch.Size((self.x.shape[0], self.z.shape[0]))

    def _transpose_nonbatch(self) -> "KopsLinearOperator":
        return self._rebuilt(self.z, self.x)

    # ------------------------------------------------------------- efficient extras
    def _rebuilt(self, x, z) -> "KopsLinearOperator":
        return type(self)(x, z, self.lengthscale, self.outputscale, **self._kwargs)

    def _diagonal(self) -> torch.Tensor:
        if self.x.shape[0] != self.z.shape[0]:
            raise ValueError(f"the diagonal needs a square operator, this one is {self.x.shape[0]} x {self.z.shape[0]}")
        return paired_kernel_values(self.x, self.z, self._kops.kernel) * self.outputscale

    def to_dense(self) -> torch.Tensor:
        """``c K(x, z)`` formed by :func:`kops.kernel_matrix` (n x m: for small blocks)."""
        k = kernel_matrix(self.x, self.z, self._kops.kernel, precision=self._kops.precision,
                          backend=self._kops.backend)
        return k * self.outputscale

    def _getitem(self, row_index, col_index, *batch_indices):
        if batch_indices:
            raise ValueError(_BATCH_REFUSED)
        # Rows and columns of K(x, z) are kernels of the selected points.
        return self._rebuilt(self.x[row_index], self.z[col_index])

    def _get_indices(self, row_index, col_index, *batch_indices):
        if batch_indices:
            raise ValueError(_BATCH_REFUSED)
        row_index, col_index = torch.broadcast_tensors(row_index, col_index)
        shape = row_index.shape
        values = paired_kernel_values(self.x[row_index.reshape(-1)], self.z[col_index.reshape(-1)], self._kops.kernel)
        return (values * self.outputscale).reshape(shape)

    # -------------------------------------------------- the added diagonal's preconditioner
    def _with_preconditioner(self, result):
        hook = self._kwargs["preconditioner"]
        if hook is not None and isinstance(result, AddedDiagLinearOperator) and result._linear_op is self:
            return AddedDiagLinearOperator(self, result._diag_tensor, preconditioner_override=hook)
        return result

    def __add__(self, other):
        if isinstance(other, DiagLinearOperator):
            return self._with_preconditioner(AddedDiagLinearOperator(self, other))
        return super().__add__(other)

    def add_diagonal(self, diag):
        return self._with_preconditioner(super().add_diagonal(diag))

    def _mul_constant(self, other):
        """``k A`` for a positive scalar k: the same operator with outputscale ``k c``.

        linear_operator would wrap it in a ``ConstantMulLinearOperator``, whose added diagonal
        knows nothing of this operator's ``preconditioner``; GPyTorch's ``ScaleKernel`` scales
        its base kernel's operator this way, so ``ScaleKernel(KopsRBFKernel(preconditioner=...))``
        keeps EigenPro's preconditioner (and one fused product per matmul).
        """
        k = _as_tensor(other, self.x, "constant")
        if k.numel() != 1 or not bool((k.detach() > 0).all()):
            return super()._mul_constant(other)
        return type(self)(self.x, self.z, self.lengthscale, self.outputscale * k.reshape(()), **self._kwargs)

    def _expand_batch(self, batch_shape):
        raise ValueError(f"{_BATCH_REFUSED}; cannot expand to batch shape {tuple(batch_shape)}")

    def _unsqueeze_batch(self, dim):
        raise ValueError(_BATCH_REFUSED)

    def _permute_batch(self, *dims):
        raise ValueError(_BATCH_REFUSED)


def to_linear_operator(operator: KernelOperator) -> LinearOperator:
    """``A = K(x, z) + r I`` of a :class:`kops.KernelOperator` as a linear_operator LinearOperator.

    The kernel part is a :class:`KopsLinearOperator`; a ridge ``r > 0`` is added as a
    ``ConstantDiagLinearOperator`` (so the result is linear_operator's ``AddedDiagLinearOperator``).
    """
    if not isinstance(operator, KernelOperator):
        raise TypeError(f"operator must be a kops.KernelOperator, got {type(operator).__name__}")
    kernel = resolve_kernel(operator.kernel)
    op = KopsLinearOperator(operator.x, operator.z, _as_tensor(kernel.bandwidth, operator.x, "bandwidth"),
                            kernel=kernel.name, precision=operator.precision, backend=operator.backend)
    if operator.ridge:
        ridge = torch.full((1,), operator.ridge, dtype=operator.dtype, device=operator.device)
        return op + ConstantDiagLinearOperator(ridge, diag_shape=operator.shape[0])
    return op

