"""Kernel functions of kops.

Every kernel is radial, ``k(x, z) = f(u)`` with ``u = |x - z|^2 * scale^2`` the squared
distance after dividing the inputs by a kernel-specific length (``1 / scale``). Backends
divide the inputs by that length *before* computing distances, so the kernel itself is a
function of one scaled squared distance ``u`` (this is what keeps the GEMM trick accurate:
the norms it subtracts are O(1) instead of O(bandwidth^2)).

============  =======================================  ========================  =======
name          formula, r = |x - z|, s = bandwidth      f(u)                      scale
============  =======================================  ========================  =======
gaussian      exp(-r^2 / (2 s^2))                      exp(-u)                   1/(s*sqrt2)
laplacian     exp(-r / s)                              exp(-sqrt u)              1/s
matern32      (1 + sqrt3 r/s) exp(-sqrt3 r/s)          (1 + sqrt u) exp(-sqrt u) sqrt3/s
matern52      (1 + t + t^2/3) exp(-t), t = sqrt5 r/s   (1 + t + u/3) exp(-t)     sqrt5/s
cauchy        1 / (1 + r^2 / s^2)                      1 / (1 + u)               1/s
============  =======================================  ========================  =======

This module is the kernel table: each class carries its name, a stable integer ``code``
(the native and Triton kernels' switch value, csrc/kernel_codes.h), its scale convention
(``scale_factor``), its smoothness at zero and its profile f(u) with derivative f'(u). The
backends read these attributes; none re-derives them from the name. Adding a kernel is a class
here, a row in csrc/kernel_codes.h and its profile in each compiled backend
(tests/test_kernel_table.py checks that they agree). This module imports nothing of kops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

__all__ = [
    "Kernel",
    "Gaussian",
    "Laplacian",
    "Matern32",
    "Matern52",
    "Cauchy",
    "KERNELS",
    "KERNELS_BY_CODE",
    "resolve_kernel",
    "check_bandwidth",
]


def check_bandwidth(bandwidth, name: str = "bandwidth"):
    """Validate a bandwidth; returns a float, or a tensor when it must stay one.

    A Python number, or a one-element tensor that does not require grad, becomes a float. A
    tensor that requires grad (a learnt lengthscale) or has shape (d,) (one lengthscale per
    feature: ARD) is returned as a floating tensor. Every value must be > 0 and finite.
    """
    if isinstance(bandwidth, bool) or bandwidth is None:
        raise TypeError(f"{name} must be a positive finite number, got {bandwidth!r}")
    if isinstance(bandwidth, torch.Tensor):
        if bandwidth.dim() > 1 or (bandwidth.dim() == 1 and bandwidth.numel() == 0):
            raise ValueError(
                f"{name} must be a number, a 0-d tensor or a (d,) tensor of lengthscales, "
                f"got a tensor of shape {tuple(bandwidth.shape)}"
            )
        if not bandwidth.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {bandwidth.dtype}")
        with torch.no_grad():
            ok = bool((torch.isfinite(bandwidth) & (bandwidth > 0)).all())
        if not ok:
            raise ValueError(f"{name} must hold positive finite values, got {bandwidth.detach().tolist()!r}")
        if bandwidth.dim() == 0 and not bandwidth.requires_grad:
            return float(bandwidth.item())
        return bandwidth
    try:
        value = float(bandwidth)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive finite number, got {bandwidth!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


#: The ops' Python entry points, filled in by kops.ops when it is imported, so that this module
#: (the bottom of the op layer) imports nothing of kops.
_ENTRY_POINTS: dict = {}


def _differentiated(u: torch.Tensor) -> bool:
    """Whether autograd (reverse or forward mode) may differentiate through u."""
    return (u.requires_grad and torch.is_grad_enabled()) or torch.autograd.forward_ad._current_level >= 0


def _sqrt0(u: torch.Tensor) -> torch.Tensor:
    """sqrt(u) for u >= 0, with derivative 0 (not infinity) at u = 0 when u is differentiated.

    Every use multiplies the derivative by du/dx = 2 (x - z), which is 0 where u is, so 0 is
    the right limit and keeps higher-order gradients free of NaN.
    """
    if not _differentiated(u):  # the fast path of the backends' blocks
        return u.sqrt()
    pos = u > 0
    return torch.where(pos, torch.where(pos, u, torch.ones_like(u)).sqrt(), torch.zeros_like(u))


@dataclass(frozen=True, eq=False)
class Kernel:
    """A radial kernel with a bandwidth; see the module docstring for the formulas.

    Calling a kernel object computes the kernel matrix, ``kernel(x, z)`` = K(x, z), and
    ``kernel.mv(x, z, v)`` the fused product K(x, z) @ v without forming K.

    The bandwidth is a float, or a tensor (0-d, or (d,) lengthscales per feature) through
    which gradients flow: the ops then divide the inputs by it once and evaluate the kernel
    with bandwidth 1.

    Class attributes, read by every backend (none re-derives them from the name):

    name : str
        the key of :data:`KERNELS`.
    code : int
        stable integer passed to the native and Triton kernels (csrc/kernel_codes.h).
    scale_factor : float
        the scale convention: ``scale = scale_factor / bandwidth``, ``u = |scale (x - z)|^2``.
    smooth_at_zero : bool
        whether f is differentiable at u = 0 in r = |x - z| (False for the Laplacian, whose
        gradient at coincident points is taken as 0, the symmetric subgradient).
    """

    bandwidth: object
    name: ClassVar[str] = ""
    code: ClassVar[int] = -1
    formula: ClassVar[str] = ""
    scale_factor: ClassVar[float] = 1.0
    smooth_at_zero: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "bandwidth", check_bandwidth(self.bandwidth))

    def __eq__(self, other):
        if type(self) is not type(other):
            return NotImplemented
        a, b = self.bandwidth, other.bandwidth
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return a is b
        return a == b

    def __hash__(self):
        return hash((type(self), id(self.bandwidth) if isinstance(self.bandwidth, torch.Tensor) else self.bandwidth))

    @property
    def learnable(self) -> bool:
        """Whether the bandwidth is a tensor (differentiable, or per-feature lengthscales)."""
        return isinstance(self.bandwidth, torch.Tensor)

    @property
    def scale(self) -> float:
        """Factor applied to the inputs so that ``u = |scale * (x - z)|^2`` (float bandwidths)."""
        if self.learnable:
            raise TypeError("the scale of a kernel with a tensor bandwidth is a tensor; use unit()")
        return self.scale_factor / self.bandwidth

    def unit(self) -> "Kernel":
        """The same kernel with bandwidth 1 (applied to inputs already divided by the bandwidth)."""
        return type(self)(1.0)

    # -- the profile as a function of the scaled squared distance u (torch reference) --
    # Differentiable when u is (the higher-order derivatives of the ops use them); otherwise
    # profile may overwrite u, which the backends' blocks allow, to save memory and passes.
    def profile(self, u: torch.Tensor) -> torch.Tensor:
        """f(u); may overwrite u when u is not being differentiated."""
        raise NotImplementedError

    def profile_derivative(self, u: torch.Tensor) -> torch.Tensor:
        """df/du, with the value at u = 0 taken as 0 where f is not differentiable there."""
        raise NotImplementedError

    # -- conveniences ------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, z: torch.Tensor, **kwargs) -> torch.Tensor:
        return _ENTRY_POINTS["kernel_matrix"](x, z, self, **kwargs)

    def mv(self, x: torch.Tensor, z: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
        return _ENTRY_POINTS["kmv"](x, z, v, self, **kwargs)


@dataclass(frozen=True, eq=False)
class Gaussian(Kernel):
    """Gaussian (RBF) kernel ``exp(-|x - z|^2 / (2 s^2))``."""

    name: ClassVar[str] = "gaussian"
    code: ClassVar[int] = 0
    formula: ClassVar[str] = "exp(-|x - z|^2 / (2 s^2))"
    scale_factor: ClassVar[float] = 1.0 / math.sqrt(2.0)

    def profile(self, u):
        return torch.exp(-u) if _differentiated(u) else u.neg_().exp_()

    def profile_derivative(self, u):
        return -torch.exp(-u) if _differentiated(u) else u.neg().exp_().neg_()


@dataclass(frozen=True, eq=False)
class Laplacian(Kernel):
    """Laplacian kernel ``exp(-|x - z| / s)``."""

    name: ClassVar[str] = "laplacian"
    code: ClassVar[int] = 1
    formula: ClassVar[str] = "exp(-|x - z| / s)"
    scale_factor: ClassVar[float] = 1.0
    smooth_at_zero: ClassVar[bool] = False

    def profile(self, u):
        return torch.exp(-_sqrt0(u)) if _differentiated(u) else u.sqrt_().neg_().exp_()

    def profile_derivative(self, u):
        r = _sqrt0(u)
        pos = r > 0
        safe = torch.where(pos, r, torch.ones_like(r))  # no 0 / 0, so no NaN to mask
        return torch.where(pos, torch.exp(-r) / (-2.0 * safe), torch.zeros_like(r))


@dataclass(frozen=True, eq=False)
class Matern32(Kernel):
    """Matern kernel with nu = 3/2: ``(1 + sqrt3 r/s) exp(-sqrt3 r/s)``."""

    name: ClassVar[str] = "matern32"
    code: ClassVar[int] = 2
    formula: ClassVar[str] = "(1 + sqrt(3) |x - z| / s) exp(-sqrt(3) |x - z| / s)"
    scale_factor: ClassVar[float] = math.sqrt(3.0)

    def profile(self, u):
        t = _sqrt0(u) if _differentiated(u) else u.sqrt_()
        return (1.0 + t) * torch.exp(-t)

    def profile_derivative(self, u):
        return -0.5 * torch.exp(-_sqrt0(u))


@dataclass(frozen=True, eq=False)
class Matern52(Kernel):
    """Matern kernel with nu = 5/2: ``(1 + t + t^2/3) exp(-t)``, ``t = sqrt5 |x - z| / s``."""

    name: ClassVar[str] = "matern52"
    code: ClassVar[int] = 3
    formula: ClassVar[str] = "(1 + t + t^2 / 3) exp(-t), t = sqrt(5) |x - z| / s"
    scale_factor: ClassVar[float] = math.sqrt(5.0)

    def profile(self, u):
        t = _sqrt0(u)
        return (1.0 + t + u / 3.0) * torch.exp(-t)

    def profile_derivative(self, u):
        t = _sqrt0(u)
        return (1.0 + t) * torch.exp(-t) / -6.0


@dataclass(frozen=True, eq=False)
class Cauchy(Kernel):
    """Cauchy kernel ``1 / (1 + |x - z|^2 / s^2)`` (the rational quadratic kernel with alpha = 1)."""

    name: ClassVar[str] = "cauchy"
    code: ClassVar[int] = 4
    formula: ClassVar[str] = "1 / (1 + |x - z|^2 / s^2)"
    scale_factor: ClassVar[float] = 1.0

    def profile(self, u):
        return 1.0 / (1.0 + u) if _differentiated(u) else u.add_(1.0).reciprocal_()

    def profile_derivative(self, u):
        return -1.0 / (1.0 + u).square() if _differentiated(u) else u.add(1.0).square_().reciprocal_().neg_()


#: the kernel table: name -> class, in code order
KERNELS: dict[str, type[Kernel]] = {
    cls.name: cls for cls in sorted((Gaussian, Laplacian, Matern32, Matern52, Cauchy), key=lambda k: k.code)
}
#: code -> class
KERNELS_BY_CODE: dict[int, type[Kernel]] = {cls.code: cls for cls in KERNELS.values()}
_ALIASES = {"rational_quadratic": "cauchy", "rbf": "gaussian", "exponential": "laplacian", "matern15": "matern32", "matern25": "matern52"}


def _same_bandwidth(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    return a == b


def resolve_kernel(kernel, bandwidth=None) -> Kernel:
    """Turn ``kernel`` (a :class:`Kernel` or a name) and ``bandwidth`` into a Kernel object.

    Raises
    ------
    ValueError
        unknown kernel name, missing bandwidth for a name, or a bandwidth that contradicts
        the kernel object's.
    TypeError
        ``kernel`` is neither a Kernel nor a string.
    """
    if isinstance(kernel, Kernel):
        if bandwidth is not None and not _same_bandwidth(check_bandwidth(bandwidth), kernel.bandwidth):
            raise ValueError(
                f"bandwidth={bandwidth!r} contradicts the kernel object's bandwidth "
                f"{kernel.bandwidth!r}; pass one or the other"
            )
        return kernel
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a kops.Kernel or a name, got {type(kernel).__name__}")
    key = _ALIASES.get(kernel.lower(), kernel.lower())
    if key not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known kernels: {', '.join(sorted(KERNELS))}")
    if bandwidth is None:
        raise ValueError(f"bandwidth is required when kernel is given by name ({kernel!r})")
    return KERNELS[key](bandwidth)
