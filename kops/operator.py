"""A lazy kernel matrix: ``A = K(x, z) + r I`` applied through the fused kops ops.

:class:`KernelOperator` holds the points, the kernel (with its float, 0-d or per-feature
(ARD) tensor bandwidth) and an optional ridge (jitter) ``r`` on the diagonal of a square
operator. It never forms K: ``A @ v`` is one :func:`kops.kmv` (``K(x, z) v + r v``), and
``u @ A`` / ``A.T @ u`` is ``K(z, x) u + r u``. Gradients with respect to x, z, v and a
tensor bandwidth flow through the products (the ops' fused backward).

The adapters of :mod:`kops.integrations` (SciPy, linear_operator, GPyTorch) wrap it.
"""
from __future__ import annotations

import torch

from .config import get_memory_budget, parse_bytes
from .kernels import Kernel, resolve_kernel
from .ops import kernel_matrix, kmv
from .dispatch import check_backend_name
from .precision import check_precision
from .solvers._validation import check_ridge
from .validation import check_matrix

__all__ = ["KernelOperator", "paired_kernel_values"]


def paired_kernel_values(x: torch.Tensor, z: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    """``k(x_i, z_i)`` for each row i, exactly (no GEMM trick), differentiable.

    Parameters
    ----------
    x, z : Tensor, shape (n, d)
    kernel : kops.Kernel

    Returns
    -------
    Tensor, shape (n,)
        ``f(|scale (x_i - z_i)|^2)``; 1 where the rows coincide.
    """
    if kernel.learnable:
        lengths = kernel.bandwidth.to(device=x.device, dtype=x.dtype)
        diff = (x - z) / lengths
        kernel = kernel.unit()
    else:
        diff = x - z
    u = (diff * kernel.scale).square().sum(-1)
    return kernel.profile(u)


class KernelOperator:
    """The lazy matrix ``A = K(x, z) + r I`` (n x m; the ridge needs n = m).

    ``K_ij = k(x_i, z_j)`` for one of the kops kernels (see :mod:`kops.kernels`).

    Parameters
    ----------
    x : Tensor, shape (n, d)
    z : Tensor, shape (m, d), optional
        Defaults to ``x`` (the symmetric ``K(x, x)``). Same dtype and device as x.
    kernel : str or kops.Kernel
        A kernel object (which carries its bandwidth) or a name with ``bandwidth``.
    bandwidth : float or Tensor, optional
        A float, a 0-d tensor or a (d,) tensor of lengthscales (ARD); a tensor that
        requires grad receives gradients through every product.
    ridge : float
        ``r >= 0`` added to the diagonal (a jitter, or the ridge of ``(K + r I) a = y``);
        only for a square operator (n = m).
    precision, backend : str
        Passed to :func:`kops.kmv` (see there).
    check_finite : bool
        Raise ValueError if x or z hold NaN or infinity.

    Examples
    --------
    >>> x = torch.randn(500, 3)
    >>> A = kops.KernelOperator(x, kernel="gaussian", bandwidth=1.0, ridge=1e-2)
    >>> (A @ torch.randn(500, 2)).shape
    torch.Size([500, 2])
    """

    def __init__(self, x, z=None, kernel="gaussian", bandwidth=None, *, ridge=0.0, precision="ieee",
                 backend="auto", check_finite=False):
        check_matrix(x, "x")
        symmetric = z is None or z is x
        z = x if z is None else z
        check_matrix(z, "z")
        if x.shape[1] != z.shape[1]:
            raise ValueError(f"x and z must have the same number of features d, got x {tuple(x.shape)} "
                             f"and z {tuple(z.shape)}")
        if z.dtype != x.dtype:
            raise TypeError(f"z has dtype {z.dtype} but x has {x.dtype}; use one dtype")
        if z.device != x.device:
            raise ValueError(f"z is on {z.device} but x is on {x.device}; move them to one device")
        if check_finite:
            for name, t in (("x", x), ("z", z)):
                if t.numel() and not bool(torch.isfinite(t).all()):
                    raise ValueError(f"{name} contains NaN or infinite values")
        self.kernel = resolve_kernel(kernel, bandwidth)
        lengths = self.kernel.bandwidth
        if isinstance(lengths, torch.Tensor) and lengths.dim() == 1 and lengths.shape[0] != x.shape[1]:
            raise ValueError(f"bandwidth has {lengths.shape[0]} lengthscales but x and z have "
                             f"d = {x.shape[1]} features")
        self.ridge = check_ridge(ridge)
        if self.ridge and x.shape[0] != z.shape[0]:
            raise ValueError(f"ridge = {self.ridge} needs a square operator, but K(x, z) is "
                             f"{x.shape[0]} x {z.shape[0]}")
        self.precision = check_precision(precision)
        self.backend = check_backend_name(backend)
        self.x, self.z = x, z
        self._symmetric = symmetric

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> torch.Size:
        """(n, m)."""
        return torch.Size((self.x.shape[0], self.z.shape[0]))

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def bandwidth(self):
        """The kernel's bandwidth (float or tensor)."""
        return self.kernel.bandwidth

    @property
    def is_square(self) -> bool:
        return self.x.shape[0] == self.z.shape[0]

    @property
    def is_symmetric(self) -> bool:
        """Whether the operator is ``K(x, x) + r I`` (z is x)."""
        return self._symmetric

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def __repr__(self) -> str:
        bw = self.bandwidth
        bw = f"tensor{tuple(bw.shape)}" if isinstance(bw, torch.Tensor) else f"{bw:g}"
        ridge = f", ridge={self.ridge:g}" if self.ridge else ""
        return (f"KernelOperator({self.shape[0]} x {self.shape[1]}, {self.kernel.name}, bandwidth={bw}{ridge}, "
                f"{self.dtype}, {self.device})")

    # -------------------------------------------------------------------- products
    def _check_operand(self, v, rows: int, name: str, side: str):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
        if v.dim() not in (1, 2) or v.shape[0] != rows:
            raise ValueError(f"{name} must have shape ({rows},) or ({rows}, c) to multiply the {self.shape[0]} x "
                             f"{self.shape[1]} operator {side}, got {tuple(v.shape)}")
        if v.dtype != self.dtype:
            raise TypeError(f"{name} has dtype {v.dtype} but the operator has {self.dtype}; use one dtype "
                            "(or move the operator with .to)")
        if v.device != self.device:
            raise ValueError(f"{name} is on {v.device} but the operator is on {self.device}")

    def matmul(self, v: torch.Tensor) -> torch.Tensor:
        """``A v = K(x, z) v + r v``.

        Parameters
        ----------
        v : Tensor, shape (m,) or (m, c)

        Returns
        -------
        Tensor, shape (n,) or (n, c)
        """
        self._check_operand(v, self.shape[1], "v", "on the right")
        out = kmv(self.x, self.z, v, self.kernel, precision=self.precision, backend=self.backend)
        return out + self.ridge * v if self.ridge else out

    def rmatmul(self, u: torch.Tensor) -> torch.Tensor:
        """``A^T u = K(z, x) u + r u`` (for a row vector, ``u^T A`` transposed).

        Parameters
        ----------
        u : Tensor, shape (n,) or (n, c)

        Returns
        -------
        Tensor, shape (m,) or (m, c)
        """
        self._check_operand(u, self.shape[0], "u", "on the left")
        out = kmv(self.z, self.x, u, self.kernel, precision=self.precision, backend=self.backend)
        return out + self.ridge * u if self.ridge else out

    def __matmul__(self, v):
        if not isinstance(v, torch.Tensor):
            return NotImplemented
        return self.matmul(v)

    def __rmatmul__(self, u):
        """``u @ A`` for u of shape (n,) or (c, n)."""
        if not isinstance(u, torch.Tensor):
            return NotImplemented
        if u.dim() == 1:
            return self.rmatmul(u)
        if u.dim() == 2:
            return self.rmatmul(u.T).T
        raise ValueError(f"u must have shape ({self.shape[0]},) or (c, {self.shape[0]}) for u @ A, got {tuple(u.shape)}")

    # ------------------------------------------------------------- derived operators
    def _with(self, x, z, symmetric):
        out = KernelOperator.__new__(KernelOperator)
        out.__dict__.update(self.__dict__)
        out.x, out.z, out._symmetric = x, z, symmetric
        return out

    def transpose(self) -> "KernelOperator":
        """``A^T = K(z, x) + r I`` (the same points and kernel, swapped)."""
        return self._with(self.z, self.x, self._symmetric)

    @property
    def T(self) -> "KernelOperator":
        return self.transpose()

    def to(self, *args, **kwargs) -> "KernelOperator":
        """Move the points (and a tensor bandwidth) as ``Tensor.to`` does (device and/or dtype).

        The moves are differentiable: gradients reach the original x, z and bandwidth.
        """
        x = self.x.to(*args, **kwargs)
        check_matrix(x, "x")  # an integer dtype would be refused by the ops later, less clearly
        z = x if self._symmetric else self.z.to(*args, **kwargs)
        out = self._with(x, z, self._symmetric)
        if self.kernel.learnable:
            out.kernel = type(self.kernel)(self.kernel.bandwidth.to(device=x.device, dtype=x.dtype))
        return out

    # ---------------------------------------------------------------- small results
    def diagonal(self) -> torch.Tensor:
        """The diagonal ``k(x_i, z_i) + r`` of a square operator, exactly.

        ``K(x, x)`` has ``k(0) = 1`` on its diagonal (every kops kernel); otherwise each entry
        is evaluated from its pair of rows (O(n d), differentiable).

        Returns
        -------
        Tensor, shape (n,)
        """
        if not self.is_square:
            raise ValueError(f"diagonal needs a square operator, this one is {self.shape[0]} x {self.shape[1]}")
        if self._symmetric:
            diag = torch.ones(self.shape[0], dtype=self.dtype, device=self.device)
        else:
            diag = paired_kernel_values(self.x, self.z, self.kernel)
        return diag + self.ridge if self.ridge else diag

    def to_dense(self, max_bytes=None) -> torch.Tensor:
        """Form ``K(x, z) + r I`` (n x m), for small blocks.

        Parameters
        ----------
        max_bytes : int or str, optional
            Refuse above this size; default: the memory budget
            (:func:`kops.get_memory_budget` of the operator's device).

        Returns
        -------
        Tensor, shape (n, m), differentiable in x, z and a tensor bandwidth.

        Raises
        ------
        MemoryError
            When the matrix would exceed ``max_bytes``; the message names the size.
        """
        limit = get_memory_budget(self.device) if max_bytes is None else parse_bytes(max_bytes)
        n, m = self.shape
        need = n * m * self.x.element_size()
        if need > limit:
            raise MemoryError(
                f"to_dense would form a {n} x {m} {self.dtype} matrix ({need / 2**20:.1f} MiB), above the "
                f"limit of {limit / 2**20:.1f} MiB (the memory budget: kops.set_memory_budget, or pass "
                "max_bytes); use matmul instead")
        k = kernel_matrix(self.x, self.z, self.kernel, precision=self.precision, backend=self.backend)
        if self.ridge:
            k = k + self.ridge * torch.eye(n, dtype=k.dtype, device=k.device)
        return k
