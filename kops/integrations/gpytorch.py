"""GPyTorch kernels whose covariance is a kops operator (never formed for CG / Lanczos).

``KopsRBFKernel``, ``KopsLaplacianKernel`` (= ``KopsMatern12Kernel``), ``KopsMatern32Kernel``
and ``KopsMatern52Kernel`` are ``gpytorch.kernels.Kernel`` subclasses with a learnable
lengthscale (one, or one per feature with ``ard_num_dims=d``) and a built-in learnable
outputscale c, so each stands for GPyTorch's ``ScaleKernel(RBFKernel(...))`` (or the Matern
kernel with nu = 1/2, 3/2, 5/2) with the same parameters, constraints (softplus
``Positive``) and initial values:

* RBF:        ``c exp(-r^2 / (2 l^2))``                  (kops "gaussian")
* Matern 1/2: ``c exp(-r / l)``                           (kops "laplacian")
* Matern 3/2: ``c (1 + sqrt3 r/l) exp(-sqrt3 r/l)``       (kops "matern32")
* Matern 5/2: ``c (1 + t + t^2/3) exp(-t)``, t = sqrt5 r/l (kops "matern52")

with r the distance of the two inputs divided feature-wise by the lengthscales. Their
``forward`` returns a :class:`~kops.integrations.linear_operator.KopsLinearOperator`, so
an ExactGP under ``gpytorch.settings.max_cholesky_size(0)`` trains by conjugate gradients
and Lanczos quadrature on fused kops products, and the gradients of the marginal likelihood
with respect to the lengthscale and outputscale go through kops' fused backward. Smaller
problems (above ``max_cholesky_size``) are formed by :func:`kops.kernel_matrix` and
factorised by Cholesky, as GPyTorch does with its own kernels.

``preconditioner=EigenProPreconditioner(q)`` makes GPyTorch's CG on ``K + sigma^2 I`` use
EigenPro's Nystrom preconditioner (:mod:`kops.integrations.nystrom_preconditioner`) instead
of the pivoted Cholesky one. ``ScaleKernel(KopsRBFKernel(preconditioner=...))`` keeps it:
the ScaleKernel's outputscale multiplies the kops operator's own
(:meth:`~kops.integrations.linear_operator.KopsLinearOperator._mul_constant`), so the two
outputscales are redundant there (fix one, e.g. ``raw_outputscale.requires_grad_(False)``).

Batch dimensions (``batch_shape``, batched inputs, ``last_dim_is_batch``) are refused with
a ValueError: the kops operator is one n x m matrix.
"""
from __future__ import annotations

import torch
from gpytorch.constraints import Positive
from gpytorch.kernels import Kernel
from gpytorch.priors import Prior

from .linear_operator import KopsLinearOperator
from .nystrom_preconditioner import EigenProPreconditioner

__all__ = ["KopsKernel", "KopsRBFKernel", "KopsLaplacianKernel", "KopsMatern12Kernel", "KopsMatern32Kernel",
           "KopsMatern52Kernel", "EigenProPreconditioner"]


def _refuse_batch(what: str):
    raise ValueError(f"kops GPyTorch kernels support no batch dimensions ({what}); use one GP per batch "
                     "element, or GPyTorch's own kernels for batched GPs")


class KopsKernel(Kernel):
    """Base class: a kops kernel with lengthscale and outputscale (see the module docstring).

    Parameters
    ----------
    ard_num_dims : int, optional
        d for one lengthscale per feature (ARD); one shared lengthscale otherwise.
    outputscale_prior : gpytorch.priors.Prior, optional
    outputscale_constraint : gpytorch.constraints.Interval, optional
        Default ``Positive()`` (softplus), as in ``ScaleKernel``.
    precision, backend : str
        Passed to :func:`kops.kmv`.
    preconditioner : callable, optional
        A ``preconditioner_override`` for the covariance plus noise, e.g.
        :class:`EigenProPreconditioner`.
    **kwargs
        ``lengthscale_prior``, ``lengthscale_constraint``, ``active_dims``, ``eps`` as for
        any GPyTorch kernel. ``batch_shape`` must be empty.
    """

    has_lengthscale = True
    kops_kernel: str = ""

    def __init__(self, ard_num_dims=None, outputscale_prior=None, outputscale_constraint=None, *,
                 precision="ieee", backend="auto", preconditioner=None, **kwargs):
        batch_shape = kwargs.pop("batch_shape", None)
        if batch_shape is not None and len(torch.Size(batch_shape)):
            _refuse_batch(f"batch_shape={tuple(batch_shape)}")
        super().__init__(ard_num_dims=ard_num_dims, **kwargs)
        self.precision, self.backend, self.preconditioner = precision, backend, preconditioner
        self.register_parameter(name="raw_outputscale", parameter=torch.nn.Parameter(torch.tensor(0.0)))
        self.register_constraint("raw_outputscale", Positive() if outputscale_constraint is None
                                 else outputscale_constraint)
        if outputscale_prior is not None:
            if not isinstance(outputscale_prior, Prior):
                raise TypeError(f"outputscale_prior must be a gpytorch.priors.Prior, got {type(outputscale_prior).__name__}")
            self.register_prior("outputscale_prior", outputscale_prior, lambda m: m.outputscale,
                                lambda m, v: m._set_outputscale(v))

    @property
    def outputscale(self) -> torch.Tensor:
        return self.raw_outputscale_constraint.transform(self.raw_outputscale)

    @outputscale.setter
    def outputscale(self, value):
        self._set_outputscale(value)

    def _set_outputscale(self, value):
        value = torch.as_tensor(value).to(self.raw_outputscale)
        self.initialize(raw_outputscale=self.raw_outputscale_constraint.inverse_transform(value))

    def forward(self, x1, x2, diag=False, last_dim_is_batch=False, **params):
        if last_dim_is_batch:
            _refuse_batch("last_dim_is_batch=True")
        if x1.dim() != 2 or x2.dim() != 2:
            _refuse_batch(f"inputs of shapes {tuple(x1.shape)} and {tuple(x2.shape)}; expected (n, d) and (m, d)")
        lengthscale = self.lengthscale.reshape(-1)
        if lengthscale.numel() == 1:
            lengthscale = lengthscale.reshape(())
        op = KopsLinearOperator(x1, x2, lengthscale, self.outputscale, kernel=self.kops_kernel,
                                precision=self.precision, backend=self.backend, preconditioner=self.preconditioner)
        return op._diagonal() if diag else op


class KopsRBFKernel(KopsKernel):
    """``c exp(-|x - z|^2 / (2 l^2))``: GPyTorch's ``ScaleKernel(RBFKernel())`` on kops."""

    kops_kernel = "gaussian"


class KopsLaplacianKernel(KopsKernel):
    """``c exp(-|x - z| / l)``: GPyTorch's ``ScaleKernel(MaternKernel(nu=0.5))`` on kops."""

    kops_kernel = "laplacian"


KopsMatern12Kernel = KopsLaplacianKernel


class KopsMatern32Kernel(KopsKernel):
    """``c (1 + sqrt3 r/l) exp(-sqrt3 r/l)``: GPyTorch's ``ScaleKernel(MaternKernel(nu=1.5))`` on kops."""

    kops_kernel = "matern32"


class KopsMatern52Kernel(KopsKernel):
    """``c (1 + t + t^2/3) exp(-t)``, ``t = sqrt5 r/l``: ``ScaleKernel(MaternKernel(nu=2.5))`` on kops."""

    kops_kernel = "matern52"
