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
============  =======================================  ========================  =======
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
    "KERNELS",
    "resolve_kernel",
    "check_bandwidth",
]


def check_bandwidth(bandwidth, name: str = "bandwidth") -> float:
    """Return ``bandwidth`` as a float, or raise naming the argument if it is not > 0 and finite."""
    if isinstance(bandwidth, bool) or bandwidth is None:
        raise TypeError(f"{name} must be a positive finite number, got {bandwidth!r}")
    if isinstance(bandwidth, torch.Tensor):
        if bandwidth.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(bandwidth.shape)}")
        bandwidth = bandwidth.item()
    try:
        value = float(bandwidth)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive finite number, got {bandwidth!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


@dataclass(frozen=True)
class Kernel:
    """A radial kernel with a bandwidth; see the module docstring for the formulas.

    Calling a kernel object computes the kernel matrix, ``kernel(x, z)`` = K(x, z), and
    ``kernel.mv(x, z, v)`` the fused product K(x, z) @ v without forming K.
    """

    bandwidth: float
    name: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    #: whether f is differentiable at u = 0 in r (False for the Laplacian, whose gradient at
    #: coincident points is taken as 0, the symmetric subgradient).
    smooth_at_zero: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "bandwidth", check_bandwidth(self.bandwidth))

    @property
    def scale(self) -> float:
        """Factor applied to the inputs so that ``u = |scale * (x - z)|^2``."""
        raise NotImplementedError

    # -- the profile as a function of the scaled squared distance u (torch reference) --
    def profile(self, u: torch.Tensor) -> torch.Tensor:
        """f(u); may work in place on ``u``."""
        raise NotImplementedError

    def profile_derivative(self, u: torch.Tensor) -> torch.Tensor:
        """df/du, with the value at u = 0 taken as 0 where f is not differentiable there."""
        raise NotImplementedError

    # -- conveniences ------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, z: torch.Tensor, **kwargs) -> torch.Tensor:
        from .ops import kernel_matrix

        return kernel_matrix(x, z, self, **kwargs)

    def mv(self, x: torch.Tensor, z: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
        from .ops import kmv

        return kmv(x, z, v, self, **kwargs)


@dataclass(frozen=True)
class Gaussian(Kernel):
    """Gaussian (RBF) kernel ``exp(-|x - z|^2 / (2 s^2))``."""

    name: ClassVar[str] = "gaussian"
    formula: ClassVar[str] = "exp(-|x - z|^2 / (2 s^2))"

    @property
    def scale(self) -> float:
        return 1.0 / (self.bandwidth * math.sqrt(2.0))

    def profile(self, u):
        return u.neg_().exp_()

    def profile_derivative(self, u):
        return u.neg().exp_().neg_()


@dataclass(frozen=True)
class Laplacian(Kernel):
    """Laplacian kernel ``exp(-|x - z| / s)``."""

    name: ClassVar[str] = "laplacian"
    formula: ClassVar[str] = "exp(-|x - z| / s)"
    smooth_at_zero: ClassVar[bool] = False

    @property
    def scale(self) -> float:
        return 1.0 / self.bandwidth

    def profile(self, u):
        return u.sqrt_().neg_().exp_()

    def profile_derivative(self, u):
        r = u.sqrt()
        d = torch.exp(-r) / (-2.0 * r)
        return torch.where(r > 0, d, torch.zeros_like(d))


@dataclass(frozen=True)
class Matern32(Kernel):
    """Matern kernel with nu = 3/2: ``(1 + sqrt3 r/s) exp(-sqrt3 r/s)``."""

    name: ClassVar[str] = "matern32"
    formula: ClassVar[str] = "(1 + sqrt(3) |x - z| / s) exp(-sqrt(3) |x - z| / s)"

    @property
    def scale(self) -> float:
        return math.sqrt(3.0) / self.bandwidth

    def profile(self, u):
        t = u.sqrt_()
        return (1.0 + t) * torch.exp(-t)

    def profile_derivative(self, u):
        return torch.exp(-u.sqrt()).mul_(-0.5)


@dataclass(frozen=True)
class Matern52(Kernel):
    """Matern kernel with nu = 5/2: ``(1 + t + t^2/3) exp(-t)``, ``t = sqrt5 |x - z| / s``."""

    name: ClassVar[str] = "matern52"
    formula: ClassVar[str] = "(1 + t + t^2 / 3) exp(-t), t = sqrt(5) |x - z| / s"

    @property
    def scale(self) -> float:
        return math.sqrt(5.0) / self.bandwidth

    def profile(self, u):
        t = u.sqrt()
        return (1.0 + t + u / 3.0) * torch.exp(-t)

    def profile_derivative(self, u):
        t = u.sqrt()
        return (1.0 + t) * torch.exp(-t) / -6.0


KERNELS: dict[str, type[Kernel]] = {
    cls.name: cls for cls in (Gaussian, Laplacian, Matern32, Matern52)
}
_ALIASES = {"rbf": "gaussian", "exponential": "laplacian", "matern15": "matern32", "matern25": "matern52"}


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
        if bandwidth is not None and check_bandwidth(bandwidth) != kernel.bandwidth:
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
